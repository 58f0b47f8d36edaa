//! The upload half of the backup pipeline: seal workers and the packer.
//!
//! ```text
//! archiver ──(batches)──▶ deduper: "missing?" ──(bounded)──▶ seal workers ×N: compress + encrypt
//!     ──(bounded)──▶ packer: 16 MiB packs ──(one waiting pack)──▶ uploader
//! ```
//!
//! Every channel is bounded, so a slow upload slows reading; the packer
//! fills the next pack while the previous one uploads. The first
//! failure is kept in [`Pipe::failure`]; a stage that sees its neighbour gone
//! stops, and the archiver reports the kept failure.
//!
//! A checkpoint needs everything queued so far to be stored: the archiver
//! sets [`Pipe::flush`], waits until the deduper has passed on every batch
//! it sent ([`Pipe::batches`]), then until [`Pipe::uploaded`] reaches the
//! number of items the deduper passed on ([`Pipe::queued`]); the packer
//! hands over its partial pack when its queue runs dry while a flush is
//! requested.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use haven_format::blob::{self, BlobKind};
use haven_format::keys::Keys;
use haven_format::pack::{PackWriter, TARGET_PACK_SIZE};
use haven_format::{BlobId, PackId};
use haven_proto::ErrorCode;

use crate::{ClientError, Remote, Result};

/// A blob on its way to the server.
pub struct Item {
    pub id: BlobId,
    pub kind: BlobKind,
    /// Plaintext until sealed, then the sealed bytes.
    pub data: Vec<u8>,
    pub sealed: bool,
}

/// State shared by the stages.
#[derive(Default)]
pub struct Pipe {
    /// The first failure of any stage.
    pub failure: Mutex<Option<ClientError>>,
    /// Items in packs the server acknowledged.
    pub uploaded: AtomicU64,
    /// Items the deduper passed on to be sealed and uploaded.
    pub queued: AtomicU64,
    /// Batches the deduper finished.
    pub batches: AtomicU64,
    /// Upload the partial pack as soon as the queue is empty.
    pub flush: AtomicBool,
}

impl Pipe {
    /// Records a failure (the first one wins).
    pub fn fail(&self, e: ClientError) {
        if let Ok(mut f) = self.failure.lock() {
            f.get_or_insert(e);
        }
    }

    /// The recorded failure, or a generic one.
    pub fn failure(&self) -> ClientError {
        self.failure
            .lock()
            .ok()
            .and_then(|f| f.clone())
            .unwrap_or_else(|| {
                ClientError::new(
                    ErrorCode::Internal,
                    "The upload pipeline stopped unexpectedly.",
                )
            })
    }

    /// True once a stage failed.
    pub fn failed(&self) -> bool {
        self.failure.lock().map(|f| f.is_some()).unwrap_or(true)
    }
}

/// Asks the server which blobs of each batch it lacks and passes those on,
/// in order. The walk hands batches over and goes on reading instead of
/// waiting for the answer.
pub fn deduper(remote: &dyn Remote, rx: Receiver<Vec<Item>>, tx: Sender<Item>, pipe: &Pipe) {
    for batch in rx {
        let ids: Vec<BlobId> = batch.iter().map(|i| i.id).collect();
        let missing: HashSet<BlobId> = match remote.missing(&ids) {
            Ok(m) => m.into_iter().collect(),
            Err(e) => {
                pipe.fail(e);
                return;
            }
        };
        for item in batch.into_iter().filter(|i| missing.contains(&i.id)) {
            pipe.queued.fetch_add(1, Ordering::SeqCst);
            if tx.send(item).is_err() {
                return;
            }
        }
        pipe.batches.fetch_add(1, Ordering::SeqCst);
    }
}

/// Compresses and encrypts items.
pub fn seal_worker(keys: &Keys, level: i32, rx: Receiver<Item>, tx: Sender<Item>, pipe: &Pipe) {
    for mut item in rx {
        if !item.sealed {
            match blob::seal(keys, item.kind, &item.id, &item.data, level) {
                Ok(s) => {
                    item.data = s;
                    item.sealed = true;
                }
                Err(e) => {
                    pipe.fail(ClientError::new(
                        ErrorCode::Internal,
                        format!("Sealing a chunk failed: {e}."),
                    ));
                    return;
                }
            }
        }
        if tx.send(item).is_err() {
            return;
        }
    }
}

/// A finished pack and the number of items in it.
pub struct Pack {
    id: PackId,
    bytes: Vec<u8>,
    items: u64,
}

struct Packer<'a> {
    pipe: &'a Pipe,
    out: Sender<Pack>,
    pack: PackWriter,
    items: u64,
}

impl Packer<'_> {
    fn upload(&mut self) -> Result<()> {
        if self.pack.is_empty() {
            return Ok(());
        }
        let (id, bytes, _) = std::mem::replace(&mut self.pack, PackWriter::new()).finish();
        let items = std::mem::take(&mut self.items);
        if self.out.send(Pack { id, bytes, items }).is_err() {
            return Err(self.pipe.failure());
        }
        Ok(())
    }

    fn add(&mut self, item: Item) -> Result<()> {
        // Close the pack before a blob that would take it past the target,
        // so a large tree blob never makes a pack the server must refuse.
        if !self.pack.is_empty() && self.pack.len() + item.data.len() > TARGET_PACK_SIZE {
            self.upload()?;
        }
        self.pack.add(item.kind, item.id, &item.data);
        self.items += 1;
        if self.pack.len() >= TARGET_PACK_SIZE {
            self.upload()?;
        }
        Ok(())
    }
}

/// Fills packs and hands them to the uploader.
pub fn packer(rx: Receiver<Item>, out: Sender<Pack>, pipe: &Pipe) {
    let mut p = Packer {
        out,
        pipe,
        pack: PackWriter::new(),
        items: 0,
    };
    loop {
        let step = match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(item) => p.add(item),
            Err(RecvTimeoutError::Timeout) if pipe.flush.load(Ordering::SeqCst) => p.upload(),
            Err(RecvTimeoutError::Timeout) => Ok(()),
            Err(RecvTimeoutError::Disconnected) => break,
        };
        if let Err(e) = step {
            pipe.fail(e);
            return;
        }
    }
    if let Err(e) = p.upload() {
        pipe.fail(e);
    }
}

/// Uploads finished packs, one at a time.
pub fn uploader(remote: &dyn Remote, rx: Receiver<Pack>, pipe: &Pipe) {
    for pack in rx {
        if let Err(e) = remote.put_pack(pack.id, pack.bytes) {
            pipe.fail(e);
            return;
        }
        haven_proto::fault::point("after-pack-upload");
        pipe.uploaded.fetch_add(pack.items, Ordering::SeqCst);
    }
}

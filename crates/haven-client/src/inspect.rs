//! Looking into a backup from the device: which paths a damaged backup
//! lost, and `haven verify` (the structure, or every blob decrypted and
//! hashed). The server knows only blob ids; the paths come from the trees,
//! which only the device can read.

use std::collections::HashSet;

use haven_format::BlobId;
use haven_format::blob::{self, BlobKind};
use haven_format::keys::Keys;
use haven_format::tree::{NodeKind, Tree};
use haven_proto::SnapshotRecord;
use serde::Serialize;

use crate::backup::load_snapshot;
use crate::{ClientError, Remote, Result};

/// Blobs per fetch while verifying data.
const FETCH_BATCH: usize = 256;

/// A file and its content chunks.
struct FileRef {
    path: String,
    chunks: Vec<BlobId>,
}

/// Everything a backup references, as read from the server.
struct Walk {
    trees: u64,
    files: Vec<FileRef>,
    /// Directories whose listing could not be read (missing or corrupt).
    lost_dirs: Vec<String>,
}

fn open_tree(remote: &dyn Remote, keys: &Keys, id: &BlobId) -> Result<Tree> {
    let sealed = remote
        .fetch(&[*id])?
        .pop()
        .flatten()
        .ok_or_else(|| ClientError::corrupted(format!("directory tree {id} is missing")))?;
    let plain = blob::open(keys, BlobKind::Tree, id, &sealed)
        .map_err(|e| ClientError::corrupted(format!("directory tree {id}: {e}")))?;
    Tree::decode(&plain).map_err(|e| ClientError::corrupted(format!("directory tree {id}: {e}")))
}

fn walk(remote: &dyn Remote, keys: &Keys, record: &SnapshotRecord) -> Result<Walk> {
    let snap = load_snapshot(remote, keys, record)?;
    let mut w = Walk {
        trees: 0,
        files: Vec::new(),
        lost_dirs: Vec::new(),
    };
    let mut stack = vec![(String::new(), snap.root.0)];
    while let Some((path, id)) = stack.pop() {
        let tree = match open_tree(remote, keys, &id) {
            Ok(t) => t,
            Err(e) if e.code() == haven_proto::ErrorCode::Corrupted => {
                w.lost_dirs
                    .push(if path.is_empty() { "/".into() } else { path });
                continue;
            }
            Err(e) => return Err(e),
        };
        w.trees += 1;
        for n in tree.nodes {
            let p = format!("{path}/{}", String::from_utf8_lossy(&n.name));
            match n.kind {
                NodeKind::Dir => {
                    if let Some(sub) = n.subtree {
                        stack.push((p, sub.0));
                    }
                }
                NodeKind::File => w.files.push(FileRef {
                    path: p,
                    chunks: n.content.iter().map(|c| c.0).collect(),
                }),
                _ => {}
            }
        }
    }
    Ok(w)
}

/// Paths of a backup that a set of bad blobs makes unrestorable:
/// directories whose listing is lost and files with a bad chunk.
fn affected(w: &Walk, bad: &HashSet<BlobId>) -> Vec<String> {
    let mut out: Vec<String> = w.lost_dirs.iter().map(|d| format!("{d}/")).collect();
    out.extend(
        w.files
            .iter()
            .filter(|f| f.chunks.iter().any(|c| bad.contains(c)))
            .map(|f| f.path.clone()),
    );
    out.sort();
    out
}

/// The paths a damaged backup cannot restore (empty for a healthy one).
pub fn damaged_paths(
    remote: &dyn Remote,
    keys: &Keys,
    record: &SnapshotRecord,
) -> Result<Vec<String>> {
    if record.damaged_blobs == 0 {
        return Ok(Vec::new());
    }
    let bad: HashSet<BlobId> = remote.snapshot_damaged(&record.id)?.into_iter().collect();
    let w = walk(remote, keys, record)?;
    Ok(affected(&w, &bad))
}

/// What `haven verify` found.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    pub snapshot: String,
    /// Data was downloaded, decrypted and hashed (`--read-data`).
    pub read_data: bool,
    pub trees: u64,
    pub files: u64,
    /// Distinct data blobs checked.
    pub blobs: u64,
    /// Blobs the server does not have intact.
    pub missing: u64,
    /// Blobs that failed decryption or whose content does not match its id.
    pub corrupt: u64,
    /// Paths that cannot be restored.
    pub affected: Vec<String>,
    pub ok: bool,
}

/// Checks a backup; see the module doc.
pub fn verify(
    remote: &dyn Remote,
    keys: &Keys,
    record: &SnapshotRecord,
    read_data: bool,
) -> Result<VerifyReport> {
    let w = walk(remote, keys, record)?;
    let mut ids: Vec<BlobId> = w
        .files
        .iter()
        .flat_map(|f| f.chunks.iter().copied())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let mut bad = HashSet::new();
    let (mut missing, mut corrupt) = (0, 0);
    if read_data {
        for batch in ids.chunks(FETCH_BATCH) {
            for (id, sealed) in batch.iter().zip(remote.fetch(batch)?) {
                let intact = match sealed {
                    None => {
                        missing += 1;
                        false
                    }
                    Some(s) => {
                        let good = blob::open(keys, BlobKind::Data, id, &s)
                            .is_ok_and(|p| blob::blob_id(keys, BlobKind::Data, &p) == *id);
                        if !good {
                            corrupt += 1;
                        }
                        good
                    }
                };
                if !intact {
                    bad.insert(*id);
                }
            }
        }
    } else {
        for id in remote.missing(&ids)? {
            missing += 1;
            bad.insert(id);
        }
    }
    let affected = affected(&w, &bad);
    Ok(VerifyReport {
        snapshot: record.id.clone(),
        read_data,
        trees: w.trees,
        files: w.files.len() as u64,
        blobs: ids.len() as u64,
        missing,
        corrupt,
        ok: affected.is_empty(),
        affected,
    })
}

//! The reading half of the backup: walk, read, chunk, hash, deduplicate,
//! build trees, and commit checkpoints as it goes.
//!
//! The walk keeps one [`Frame`] per directory it is inside, holding the
//! entries finished so far. A checkpoint turns those frames into partial
//! trees (each with the finished entries plus the directory being walked),
//! waits until everything queued is stored, and commits them as an
//! incomplete snapshot: what was uploaded is restorable from then on, and a
//! backup interrupted later resumes from it without reading those files
//! again.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, File, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use haven_format::blob::{self, BlobKind};
use haven_format::chunker::Chunker;
use haven_format::keys::Keys;
use haven_format::tree::{Node, NodeKind, Timestamp, Tree};
use haven_format::{BlobId, ChunkId, TreeId};
use haven_proto::ErrorCode;
use serde_bytes::ByteBuf;

use crate::backup::{Committer, Counters, Progress};
use crate::cache::Cache;
use crate::categories::Categorizer;
use crate::fsmeta;
use crate::pipeline::{Item, Pipe};
use crate::selection::{Excluder, PathTree, is_cache_dir};
use crate::space::Filter;
use crate::{ClientError, Remote, Result};

/// Pending "missing?" queries are sent when this many blobs…
const QUERY_BATCH: usize = 512;
/// …or this many plaintext bytes wait.
const QUERY_BYTES: usize = 4 << 20;

/// When to commit a checkpoint.
pub struct CheckpointPolicy {
    pub every: Duration,
    pub every_bytes: u64,
}

impl CheckpointPolicy {
    /// Every 10 minutes or 2 GiB uploaded; `HAVEN_CHECKPOINT_BYTES` lowers
    /// the byte threshold (tests).
    pub fn from_env() -> Self {
        let every_bytes = std::env::var("HAVEN_CHECKPOINT_BYTES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2 << 30);
        CheckpointPolicy {
            every: Duration::from_secs(600),
            every_bytes,
        }
    }
}

/// A directory being walked.
struct Frame {
    /// The directory's own node (for its parent); `None` for `/`.
    node: Option<Node>,
    /// Entries finished so far, in name order.
    nodes: Vec<Node>,
    /// The id of the previous backup's listing of this directory, which
    /// the server holds: an unchanged listing is not sealed again.
    known: Option<BlobId>,
}

pub struct Archiver<'a> {
    pub keys: &'a Keys,
    pub remote: &'a dyn Remote,
    pub cache: &'a Cache,
    pub excluder: &'a Excluder,
    pub counters: &'a Counters,
    pub progress: &'a dyn Fn(&Progress),
    pub pipe: &'a Pipe,
    /// Batches for the deduper (closed when the walk is done).
    pub work: Option<Sender<Vec<Item>>>,
    pub committer: Committer<'a>,
    pub policy: CheckpointPolicy,
    pub uploaded_at_start: u64,
    pub last_progress: Instant,
    pub last_checkpoint: Instant,
    pub sent_at_checkpoint: u64,
    pub checkpoints: u64,
    pub seen: HashSet<BlobId>,
    pub refs: HashSet<BlobId>,
    pub pending: Vec<Item>,
    pub pending_bytes: usize,
    /// Batches handed to the deduper.
    pub batches: u64,
    pub dirs: u64,
    pub files_read: u64,
    pub warnings: Vec<String>,
    /// Categories and what to do with each (none: every file is backed up).
    pub categories: Option<(&'a Categorizer, Vec<Filter>)>,
    /// Files and bytes backed up per category.
    pub stats: Vec<(u64, u64)>,
    /// Blobs the server reported damaged or missing: files that hold them
    /// are read again even when unchanged, which uploads them again.
    pub damaged: HashSet<BlobId>,
    /// Read every file, even unchanged ones.
    pub read_all: bool,
    /// When set, the walk commits a checkpoint and stops (`backup_paused`).
    pub stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    frames: Vec<Frame>,
}

impl<'a> Archiver<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        keys: &'a Keys,
        remote: &'a dyn Remote,
        cache: &'a Cache,
        excluder: &'a Excluder,
        counters: &'a Counters,
        progress: &'a dyn Fn(&Progress),
        pipe: &'a Pipe,
        work: Sender<Vec<Item>>,
        committer: Committer<'a>,
        warnings: Vec<String>,
    ) -> Self {
        let uploaded_at_start = remote.bytes_sent();
        Archiver {
            keys,
            remote,
            cache,
            excluder,
            counters,
            progress,
            pipe,
            work: Some(work),
            committer,
            policy: CheckpointPolicy::from_env(),
            uploaded_at_start,
            last_progress: Instant::now(),
            last_checkpoint: Instant::now(),
            sent_at_checkpoint: uploaded_at_start,
            checkpoints: 0,
            seen: HashSet::new(),
            refs: HashSet::new(),
            pending: Vec::new(),
            pending_bytes: 0,
            batches: 0,
            dirs: 0,
            files_read: 0,
            warnings,
            categories: None,
            stats: Vec::new(),
            damaged: HashSet::new(),
            stop: None,
            read_all: false,
            frames: Vec::new(),
        }
    }

    pub fn warn(&mut self, w: String) {
        tracing::warn!("{w}");
        self.warnings.push(w);
    }

    pub fn report_progress(&mut self, force: bool) {
        if !force && self.last_progress.elapsed().as_millis() < 100 {
            return;
        }
        self.last_progress = Instant::now();
        let c = self.counters;
        (self.progress)(&Progress {
            files: c.files.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            total_files: c.total_files.load(Ordering::Relaxed),
            total_bytes: c.total_bytes.load(Ordering::Relaxed),
            scan_done: c.scan_done.load(Ordering::Relaxed),
            uploaded_bytes: self
                .remote
                .bytes_sent()
                .saturating_sub(self.uploaded_at_start),
        });
    }

    /// Queues a blob for upload unless this run already handled it; the
    /// server is asked in batches which ones it lacks.
    pub fn add_blob(
        &mut self,
        id: BlobId,
        kind: BlobKind,
        data: Vec<u8>,
        sealed: bool,
    ) -> Result<()> {
        self.refs.insert(id);
        self.queue_blob(id, kind, data, sealed)
    }

    fn queue_blob(
        &mut self,
        id: BlobId,
        kind: BlobKind,
        data: Vec<u8>,
        sealed: bool,
    ) -> Result<()> {
        if !self.seen.insert(id) {
            return Ok(());
        }
        self.pending_bytes += data.len();
        self.pending.push(Item {
            id,
            kind,
            data,
            sealed,
        });
        if self.pending.len() >= QUERY_BATCH || self.pending_bytes >= QUERY_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let work = self.work.as_ref().ok_or_else(|| self.pipe.failure())?;
        if work.send(std::mem::take(&mut self.pending)).is_err() {
            return Err(self.pipe.failure());
        }
        self.batches += 1;
        self.pending_bytes = 0;
        Ok(())
    }

    /// Waits until everything queued so far is stored on the server.
    fn barrier(&mut self) -> Result<()> {
        self.flush()?;
        self.pipe.flush.store(true, Ordering::SeqCst);
        let result = loop {
            if self.pipe.failed() {
                break Err(self.pipe.failure());
            }
            // The deduper counts a batch's items before it counts the batch.
            if self.pipe.batches.load(Ordering::SeqCst) >= self.batches
                && self.pipe.uploaded.load(Ordering::SeqCst)
                    >= self.pipe.queued.load(Ordering::SeqCst)
            {
                break Ok(());
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        self.pipe.flush.store(false, Ordering::SeqCst);
        result
    }

    fn seal_tree(&mut self, tree: &Tree) -> Result<(BlobId, Vec<u8>)> {
        let enc = tree.encode();
        let id = blob::blob_id(self.keys, BlobKind::Tree, &enc);
        Ok((id, self.seal_encoded(id, &enc)?))
    }

    fn seal_encoded(&mut self, id: BlobId, enc: &[u8]) -> Result<Vec<u8>> {
        let sealed = blob::seal(self.keys, BlobKind::Tree, &id, enc, 3).map_err(|e| {
            ClientError::new(
                ErrorCode::LocalIo,
                format!("A directory is too large to back up: {e}."),
            )
            .fix("Split the directory into several smaller ones.")
        })?;
        self.cache.put_tree(&id, &sealed);
        Ok(sealed)
    }

    fn store_tree(&mut self, tree: &Tree, known: Option<BlobId>) -> Result<TreeId> {
        let enc = tree.encode();
        let id = blob::blob_id(self.keys, BlobKind::Tree, &enc);
        self.dirs += 1;
        if known == Some(id) {
            // Unchanged since the previous backup, so cached already: it is
            // sealed only if the server turns out to lack it.
            self.add_blob(id, BlobKind::Tree, enc, false)?;
            return Ok(TreeId(id));
        }
        let sealed = self.seal_encoded(id, &enc)?;
        self.add_blob(id, BlobKind::Tree, sealed, true)?;
        Ok(TreeId(id))
    }

    /// The id of `old`'s listing, if `tree` (its loaded listing) exists.
    fn known(old: Option<&Node>, tree: &Option<Tree>) -> Option<BlobId> {
        tree.as_ref()?;
        old.and_then(|o| o.subtree).map(|t| t.0)
    }

    fn parent_tree(&mut self, node: Option<&Node>) -> Option<Tree> {
        let id = node.filter(|n| n.kind == NodeKind::Dir)?.subtree?;
        match self.cache.load_tree(self.remote, self.keys, &id) {
            Ok(t) => Some(t),
            Err(e) => {
                // A damaged earlier backup never blocks this one: read everything again.
                self.warn(format!("the previous backup's listing of a directory is unreadable ({e}); its files are read again"));
                None
            }
        }
    }

    fn push_node(&mut self, n: Node) {
        if let Some(f) = self.frames.last_mut() {
            f.nodes.push(n);
        }
    }

    fn pop_tree(&mut self) -> Result<TreeId> {
        let frame = self.frames.pop().unwrap_or(Frame {
            node: None,
            nodes: Vec::new(),
            known: None,
        });
        self.store_tree(&Tree { nodes: frame.nodes }, frame.known)
    }

    /// `/` and the directories above the selected paths: only the selected children.
    pub fn virtual_dir(
        &mut self,
        path: &Path,
        sel: &PathTree,
        parent: Option<Tree>,
        known: Option<BlobId>,
        me: Option<Node>,
    ) -> Result<TreeId> {
        self.frames.push(Frame {
            node: me,
            nodes: Vec::new(),
            known,
        });
        for (name, child) in &sel.children {
            let child_path = path.join(OsStr::from_bytes(name));
            let meta = fs::symlink_metadata(&child_path)
                .map_err(|e| ClientError::io("read", &child_path, e))?;
            let old = parent.as_ref().and_then(|t| t.get(name)).cloned();
            if child.full {
                if let Some(n) = self.entry(&child_path, name, &meta, old.as_ref())? {
                    self.push_node(n);
                }
            } else {
                let old_tree = self.parent_tree(old.as_ref());
                let known = Self::known(old.as_ref(), &old_tree);
                let mut n = fsmeta::node(name, NodeKind::Dir, &meta);
                n.subtree =
                    Some(self.virtual_dir(&child_path, child, old_tree, known, Some(n.clone()))?);
                self.push_node(n);
            }
            self.maybe_checkpoint()?;
        }
        self.pop_tree()
    }

    fn dir(
        &mut self,
        path: &Path,
        parent: Option<Tree>,
        known: Option<BlobId>,
        me: Node,
    ) -> Result<TreeId> {
        let mut entries: Vec<(Vec<u8>, fs::DirEntry)> = match fs::read_dir(path) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .map(|e| (e.file_name().as_bytes().to_vec(), e))
                .collect(),
            Err(e) => {
                self.warn(format!(
                    "cannot list {}: {e}; it is backed up empty",
                    path.display()
                ));
                Vec::new()
            }
        };
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        self.frames.push(Frame {
            node: Some(me),
            nodes: Vec::with_capacity(entries.len()),
            known,
        });
        for (name, e) in entries {
            let p = e.path();
            if self.excluder.excluded(&p, OsStr::from_bytes(&name)) {
                continue;
            }
            // Relative to the open directory (fstatat), not resolved again
            // from `/` as a full path would be.
            let meta = match e.metadata() {
                Ok(m) => m,
                Err(e) => {
                    self.warn(format!("cannot read {}: {e}; skipped", p.display()));
                    continue;
                }
            };
            let old = parent.as_ref().and_then(|t| t.get(&name));
            if let Some(n) = self.entry(&p, &name, &meta, old)? {
                self.push_node(n);
            }
            self.maybe_checkpoint()?;
        }
        self.pop_tree()
    }

    fn entry(
        &mut self,
        path: &Path,
        name: &[u8],
        meta: &Metadata,
        old: Option<&Node>,
    ) -> Result<Option<Node>> {
        let ft = meta.file_type();
        let node = if ft.is_dir() {
            if self.excluder.cachedir_tags && is_cache_dir(path) {
                return Ok(None);
            }
            let old_tree = self.parent_tree(old);
            let known = Self::known(old, &old_tree);
            let mut n = fsmeta::node(name, NodeKind::Dir, meta);
            n.subtree = Some(self.dir(path, old_tree, known, n.clone())?);
            n
        } else if ft.is_symlink() {
            match fs::read_link(path) {
                Ok(t) => {
                    let mut n = fsmeta::node(name, NodeKind::Symlink, meta);
                    n.target = Some(ByteBuf::from(t.as_os_str().as_bytes().to_vec()));
                    n
                }
                Err(e) => {
                    self.warn(format!(
                        "cannot read the symlink {}: {e}; skipped",
                        path.display()
                    ));
                    return Ok(None);
                }
            }
        } else if ft.is_file() {
            let mut category = None;
            let mut keep_old = false;
            if let Some((c, filter)) = &self.categories {
                let i = c.category(path);
                match filter[i] {
                    Filter::Include => {}
                    Filter::Disabled => return Ok(None),
                    // No room for its new content: the previous backup's copy stays.
                    Filter::Skipped => match old {
                        Some(o) if o.kind == NodeKind::File => keep_old = true,
                        _ => return Ok(None),
                    },
                }
                category = Some(i);
            }
            let node = match old {
                Some(o) if keep_old => {
                    for c in &o.content {
                        self.refs.insert(c.0);
                        if !self.damaged.contains(&c.0) {
                            self.seen.insert(c.0);
                        }
                    }
                    o.clone()
                }
                Some(o)
                    if !self.read_all
                        && fsmeta::unchanged(o, meta)
                        && !o.content.iter().any(|c| self.damaged.contains(&c.0)) =>
                {
                    for c in &o.content {
                        self.refs.insert(c.0);
                        self.seen.insert(c.0);
                    }
                    let mut n = fsmeta::node(name, NodeKind::File, meta);
                    n.content = o.content.clone();
                    n
                }
                _ => match self.file(path, name)? {
                    Some(n) => n,
                    None => return Ok(None),
                },
            };
            haven_proto::fault::point("after-file");
            if let Some(i) = category {
                if self.stats.len() <= i {
                    self.stats.resize(i + 1, (0, 0));
                }
                self.stats[i].0 += 1;
                self.stats[i].1 += node.size;
            }
            self.counters.files.fetch_add(1, Ordering::Relaxed);
            self.counters.bytes.fetch_add(node.size, Ordering::Relaxed);
            self.report_progress(false);
            node
        } else {
            let what = if ft.is_fifo() {
                "a named pipe"
            } else if ft.is_socket() {
                "a socket"
            } else {
                "a device node"
            };
            self.warn(format!(
                "{} is {what}; skipped (only files, directories and symlinks are backed up)",
                path.display()
            ));
            return Ok(None);
        };
        Ok(Some(node))
    }

    /// Reads a file's content. A file that changes while it is read is read
    /// again (up to three times); if it never holds still, what was read
    /// last is kept with a warning, and marked so the next backup reads it
    /// again.
    fn file(&mut self, path: &Path, name: &[u8]) -> Result<Option<Node>> {
        const ATTEMPTS: usize = 3;
        for attempt in 1..=ATTEMPTS {
            let f = match File::options()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(path)
            {
                Ok(f) => f,
                Err(e) => {
                    self.warn(format!("cannot read {}: {e}; skipped", path.display()));
                    return Ok(None);
                }
            };
            // O_NONBLOCK above and this check: a file swapped for a fifo
            // after the directory was listed must not hang the backup.
            let before = match f.metadata() {
                Ok(m) if m.is_file() => m,
                Ok(_) => {
                    self.warn(format!("{} changed into something that is not a file while it was backed up; skipped", path.display()));
                    return Ok(None);
                }
                Err(e) => {
                    self.warn(format!("cannot read {}: {e}; skipped", path.display()));
                    return Ok(None);
                }
            };
            let mut content = Vec::new();
            let mut size = 0u64;
            for chunk in Chunker::new(&f, self.keys).expecting(before.len()) {
                let data = match chunk {
                    Ok(d) => d,
                    Err(e) => {
                        self.warn(format!("reading {} failed: {e}; skipped", path.display()));
                        return Ok(None);
                    }
                };
                size += data.len() as u64;
                let id = blob::blob_id(self.keys, BlobKind::Data, &data);
                content.push(ChunkId(id));
                self.add_blob(id, BlobKind::Data, data, false)?;
            }
            self.files_read += 1;
            let after = f.metadata().unwrap_or_else(|_| before.clone());
            let still = size == after.len()
                && fsmeta::mtime(&before) == fsmeta::mtime(&after)
                && fsmeta::ctime(&before) == fsmeta::ctime(&after);
            if still || attempt == ATTEMPTS {
                if !still {
                    self.warn(format!(
                        "{} kept changing while it was read; the copy may mix old and new content, back it up again when it is idle",
                        path.display()
                    ));
                }
                let mut n = fsmeta::node(name, NodeKind::File, &after);
                n.size = size;
                n.content = content;
                if !still {
                    // A ctime no file has: the next backup reads it again
                    // instead of keeping a possibly mixed copy for good.
                    n.ctime = Timestamp::default();
                }
                return Ok(Some(n));
            }
        }
        Ok(None)
    }

    fn maybe_checkpoint(&mut self) -> Result<()> {
        if self.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst)) {
            // Keep what is done: the next run continues from here.
            self.checkpoint()?;
            return Err(ClientError::new(
                ErrorCode::BackupPaused,
                "The backup paused at a checkpoint because a condition of automatic backups stopped holding.",
            )
            .fix("Nothing to do: the next run resumes where this one stopped."));
        }
        let sent = self
            .remote
            .bytes_sent()
            .saturating_sub(self.sent_at_checkpoint);
        if sent >= self.policy.every_bytes
            || (self.last_checkpoint.elapsed() >= self.policy.every && sent > 0)
        {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Commits what is finished so far as an incomplete snapshot.
    fn checkpoint(&mut self) -> Result<()> {
        // Partial trees, innermost first: each frame's finished entries plus
        // the directory being walked inside it (which sorts after them).
        let mut extra = Vec::new();
        let mut child: Option<Node> = None;
        let frames: Vec<(Option<Node>, Vec<Node>)> = self
            .frames
            .iter()
            .rev()
            .map(|f| (f.node.clone(), f.nodes.clone()))
            .collect();
        let mut root = None;
        for (node, mut nodes) in frames {
            nodes.extend(child.take());
            let (id, sealed) = self.seal_tree(&Tree { nodes })?;
            self.queue_blob(id, BlobKind::Tree, sealed, true)?;
            extra.push(id);
            match node {
                Some(mut n) => {
                    n.subtree = Some(TreeId(id));
                    child = Some(n);
                }
                None => root = Some(TreeId(id)),
            }
        }
        let Some(root) = root else { return Ok(()) };
        let files = self.counters.files.load(Ordering::Relaxed);
        let bytes = self.counters.bytes.load(Ordering::Relaxed);
        let (snap_id, snap_blob) = self.committer.snapshot_blob(self.keys, root, files, bytes);
        self.queue_blob(snap_id, BlobKind::Snapshot, snap_blob, false)?;
        extra.push(snap_id);
        self.barrier()?;
        let mut refs: Vec<BlobId> = self.refs.iter().copied().chain(extra).collect();
        refs.sort_unstable();
        refs.dedup();
        let record = self.committer.commit(snap_id, &refs, files, bytes, true)?;
        // A run killed after this resumes from the checkpoint's trees.
        self.cache.flush();
        tracing::info!(checkpoint = %record.id, files, "checkpoint committed");
        self.checkpoints += 1;
        self.last_checkpoint = Instant::now();
        self.sent_at_checkpoint = self.remote.bytes_sent();
        Ok(())
    }
}

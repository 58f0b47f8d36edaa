//! The backup pipeline.
//!
//! ```text
//! main thread: walk ─ read ─ chunk ─ hash ─ dedup (seen set; batched "missing?" queries)
//!      │ bounded channel (plaintext chunks the server lacks)
//! seal workers ×N: compress + encrypt
//!      │ bounded channel (sealed blobs)
//! packer: fill 16 MiB packs ─ upload
//! ```
//!
//! Every channel is bounded, so a slow upload slows reading; memory does
//! not grow with the size of the tree or of a file. A failure on one file
//! is a warning in the report; a failure of the server or the upload is
//! fatal, and nothing is committed (invariant 1).

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, File, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender, bounded};
use haven_format::blob::{self, BlobKind};
use haven_format::chunker::Chunker;
use haven_format::keys::Keys;
use haven_format::pack::{PackWriter, TARGET_PACK_SIZE};
use haven_format::snapshot::Snapshot;
use haven_format::tree::{Node, NodeKind, Timestamp, Tree};
use haven_format::{BlobId, ChunkId, TreeId};
use haven_proto::{CommitRequest, ErrorCode, SnapshotRecord};
use serde::Serialize;
use serde_bytes::ByteBuf;

use crate::cache::{Cache, diff_sorted};
use crate::fsmeta;
use crate::profile::{ConfigDir, Profile};
use crate::selection::{Excluder, PathTree, is_cache_dir};
use crate::{ClientError, Remote, Result, VERSION};

/// Pending "missing?" queries are sent when this many blobs…
const QUERY_BATCH: usize = 512;
/// …or this many plaintext bytes wait.
const QUERY_BYTES: usize = 32 << 20;

/// What to back up.
#[derive(Clone, Debug)]
pub struct BackupOptions {
    /// Absolute paths.
    pub paths: Vec<PathBuf>,
    /// Glob patterns to skip (see `Config::exclude`).
    pub exclude: Vec<String>,
    /// Skip caches (see `Config::exclude_caches`).
    pub exclude_caches: bool,
    /// zstd level.
    pub compression_level: i32,
}

/// Live figures for a progress display.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    pub files: u64,
    pub bytes: u64,
    /// Totals from the concurrent scan; final once `scan_done`.
    pub total_files: u64,
    pub total_bytes: u64,
    pub scan_done: bool,
    pub uploaded_bytes: u64,
}

/// The result of a backup.
#[derive(Clone, Debug, Serialize)]
pub struct BackupReport {
    pub id: String,
    pub device: String,
    pub time: String,
    pub files: u64,
    pub dirs: u64,
    /// Logical size of the files backed up.
    pub bytes: u64,
    /// Bytes sent to the server, data and metadata.
    pub uploaded_bytes: u64,
    /// Files whose content was read (new or changed).
    pub files_read: u64,
    pub parent: Option<String>,
    pub duration_secs: f64,
    pub warnings: Vec<String>,
}

struct Item {
    id: BlobId,
    kind: BlobKind,
    data: Vec<u8>,
    sealed: bool,
}

#[derive(Default)]
struct Counters {
    files: AtomicU64,
    bytes: AtomicU64,
    total_files: AtomicU64,
    total_bytes: AtomicU64,
    scan_done: AtomicBool,
}

struct Archiver<'a> {
    keys: &'a Keys,
    remote: &'a dyn Remote,
    cache: &'a Cache,
    excluder: &'a Excluder,
    counters: &'a Counters,
    progress: &'a dyn Fn(&Progress),
    last_progress: Instant,
    uploaded_at_start: u64,
    work: Option<Sender<Item>>,
    failure: &'a Mutex<Option<ClientError>>,
    seen: HashSet<BlobId>,
    refs: HashSet<BlobId>,
    pending: Vec<Item>,
    pending_bytes: usize,
    dirs: u64,
    files_read: u64,
    warnings: Vec<String>,
}

fn pipeline_failure(failure: &Mutex<Option<ClientError>>) -> ClientError {
    failure
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

impl Archiver<'_> {
    fn warn(&mut self, w: String) {
        tracing::warn!("{w}");
        self.warnings.push(w);
    }

    fn report_progress(&mut self, force: bool) {
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
            uploaded_bytes: self.remote.bytes_sent() - self.uploaded_at_start,
        });
    }

    /// Queues a blob for upload unless this run already handled it; the
    /// server is asked in batches which ones it lacks.
    fn add_blob(&mut self, id: BlobId, kind: BlobKind, data: Vec<u8>, sealed: bool) -> Result<()> {
        self.refs.insert(id);
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

    fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let ids: Vec<BlobId> = self.pending.iter().map(|i| i.id).collect();
        let missing: HashSet<BlobId> = self.remote.missing(&ids)?.into_iter().collect();
        let work = self
            .work
            .as_ref()
            .ok_or_else(|| pipeline_failure(self.failure))?;
        for item in self.pending.drain(..) {
            if missing.contains(&item.id) && work.send(item).is_err() {
                return Err(pipeline_failure(self.failure));
            }
        }
        self.pending_bytes = 0;
        Ok(())
    }

    fn store_tree(&mut self, tree: &Tree) -> Result<TreeId> {
        let enc = tree.encode();
        let id = blob::blob_id(self.keys, BlobKind::Tree, &enc);
        let sealed = blob::seal(self.keys, BlobKind::Tree, &id, &enc, 3).map_err(|e| {
            ClientError::new(
                ErrorCode::LocalIo,
                format!("A directory is too large to back up: {e}."),
            )
            .fix("Split the directory into several smaller ones.")
        })?;
        self.cache.put_tree(&id, &sealed);
        self.add_blob(id, BlobKind::Tree, sealed, true)?;
        self.dirs += 1;
        Ok(TreeId(id))
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

    /// The directories above the selected paths: only the selected children.
    fn virtual_dir(&mut self, path: &Path, sel: &PathTree, parent: Option<Tree>) -> Result<TreeId> {
        let mut nodes = Vec::new();
        for (name, child) in &sel.children {
            let child_path = path.join(OsStr::from_bytes(name));
            let meta = fs::symlink_metadata(&child_path)
                .map_err(|e| ClientError::io("read", &child_path, e))?;
            let old = parent.as_ref().and_then(|t| t.get(name)).cloned();
            if child.full {
                if let Some(n) = self.entry(&child_path, name, &meta, old.as_ref())? {
                    nodes.push(n);
                }
            } else {
                let old_tree = self.parent_tree(old.as_ref());
                let mut n = fsmeta::node(name, NodeKind::Dir, &meta);
                n.subtree = Some(self.virtual_dir(&child_path, child, old_tree)?);
                nodes.push(n);
            }
        }
        self.store_tree(&Tree { nodes })
    }

    fn dir(&mut self, path: &Path, parent: Option<Tree>) -> Result<TreeId> {
        let mut entries: Vec<(Vec<u8>, PathBuf)> = match fs::read_dir(path) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .map(|e| (e.file_name().as_bytes().to_vec(), e.path()))
                .collect(),
            Err(e) => {
                self.warn(format!(
                    "cannot list {}: {e}; it is backed up empty",
                    path.display()
                ));
                Vec::new()
            }
        };
        entries.sort();
        let mut nodes = Vec::with_capacity(entries.len());
        for (name, p) in entries {
            if self.excluder.excluded(&p, OsStr::from_bytes(&name)) {
                continue;
            }
            let meta = match fs::symlink_metadata(&p) {
                Ok(m) => m,
                Err(e) => {
                    self.warn(format!("cannot read {}: {e}; skipped", p.display()));
                    continue;
                }
            };
            let old = parent.as_ref().and_then(|t| t.get(&name));
            if let Some(n) = self.entry(&p, &name, &meta, old)? {
                nodes.push(n);
            }
        }
        self.store_tree(&Tree { nodes })
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
            let mut n = fsmeta::node(name, NodeKind::Dir, meta);
            n.subtree = Some(self.dir(path, old_tree)?);
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
            let node = match old {
                Some(o) if fsmeta::unchanged(o, meta) => {
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
    /// last is kept with a warning.
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
            for chunk in Chunker::new(&f, self.keys) {
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
}

fn seal_worker(
    keys: &Keys,
    level: i32,
    rx: Receiver<Item>,
    tx: Sender<Item>,
    failure: &Mutex<Option<ClientError>>,
) {
    for mut item in rx {
        if !item.sealed {
            match blob::seal(keys, item.kind, &item.id, &item.data, level) {
                Ok(s) => {
                    item.data = s;
                    item.sealed = true;
                }
                Err(e) => {
                    if let Ok(mut f) = failure.lock() {
                        f.get_or_insert(ClientError::new(
                            ErrorCode::Internal,
                            format!("Sealing a chunk failed: {e}."),
                        ));
                    }
                    return;
                }
            }
        }
        if tx.send(item).is_err() {
            return;
        }
    }
}

fn packer(remote: &dyn Remote, rx: Receiver<Item>, failure: &Mutex<Option<ClientError>>) {
    let mut pack = PackWriter::new();
    let upload = |pack: PackWriter| -> Result<()> {
        let (id, bytes, _) = pack.finish();
        remote.put_pack(id, bytes)
    };
    for item in rx {
        // Close the pack before a blob that would take it past the target,
        // so a large tree blob never makes a pack the server must refuse.
        if !pack.is_empty() && pack.len() + item.data.len() > TARGET_PACK_SIZE {
            if let Err(e) = upload(std::mem::take(&mut pack)) {
                if let Ok(mut f) = failure.lock() {
                    f.get_or_insert(e);
                }
                return;
            }
            pack = PackWriter::new();
        }
        pack.add(item.kind, item.id, &item.data);
        if pack.len() >= TARGET_PACK_SIZE {
            if let Err(e) = upload(std::mem::take(&mut pack)) {
                if let Ok(mut f) = failure.lock() {
                    f.get_or_insert(e);
                }
                return;
            }
            pack = PackWriter::new();
        }
    }
    if !pack.is_empty()
        && let Err(e) = upload(pack)
        && let Ok(mut f) = failure.lock()
    {
        f.get_or_insert(e);
    }
}

/// Counts what a backup will cover, for the progress display's totals.
fn scan(path: &Path, sel: Option<&PathTree>, excluder: &Excluder, c: &Counters) {
    if let Some(sel) = sel.filter(|s| !s.full) {
        for name in sel.children.keys() {
            scan(
                &path.join(OsStr::from_bytes(name)),
                sel.children.get(name),
                excluder,
                c,
            );
        }
        return;
    }
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    if meta.is_file() {
        c.total_files.fetch_add(1, Ordering::Relaxed);
        c.total_bytes.fetch_add(meta.len(), Ordering::Relaxed);
    } else if meta.is_dir()
        && !(excluder.cachedir_tags && is_cache_dir(path))
        && let Ok(rd) = fs::read_dir(path)
    {
        for e in rd.flatten() {
            let p = e.path();
            if !excluder.excluded(&p, &e.file_name()) {
                scan(&p, None, excluder, c);
            }
        }
    }
}

fn now_rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Backs up `opts.paths` as this device. One backup per device runs at a
/// time (a lock in the state directory).
pub fn backup(
    dir: &ConfigDir,
    profile: &Profile,
    remote: &dyn Remote,
    opts: &BackupOptions,
    progress: &dyn Fn(&Progress),
) -> Result<BackupReport> {
    let _lock = dir.lock_backup()?;
    let mut paths = Vec::new();
    for p in &opts.paths {
        let abs = crate::config::absolute(p)?;
        fs::symlink_metadata(&abs).map_err(|e| ClientError::io("back up", &abs, e))?;
        paths.push(fs::canonicalize(&abs).map_err(|e| ClientError::io("resolve", &abs, e))?);
    }
    let excluder = Excluder::new(
        &opts.exclude,
        opts.exclude_caches,
        &[dir.path().to_path_buf()],
    )?;
    let keys = profile.master_key()?.keys();
    let cache = Cache::new(dir.cache(), profile.account_id);
    let parent = remote.snapshots(Some(&profile.device))?.into_iter().next();
    match run(
        profile,
        remote,
        &keys,
        &cache,
        &excluder,
        &paths,
        parent.as_ref(),
        opts,
        progress,
    ) {
        Err(e) if e.code() == ErrorCode::BlobsMissing && parent.is_some() => {
            // The server lost blobs the previous backup referenced: read
            // everything again so that this backup re-uploads them.
            tracing::warn!(
                "the server is missing data of the previous backup; reading every file again"
            );
            run(
                profile, remote, &keys, &cache, &excluder, &paths, None, opts, progress,
            )
        }
        other => other,
    }
}

#[allow(clippy::too_many_arguments)]
fn run(
    profile: &Profile,
    remote: &dyn Remote,
    keys: &Keys,
    cache: &Cache,
    excluder: &Excluder,
    paths: &[PathBuf],
    parent: Option<&SnapshotRecord>,
    opts: &BackupOptions,
    progress: &dyn Fn(&Progress),
) -> Result<BackupReport> {
    let started = Instant::now();
    let start_time = SystemTime::now();
    let sel = PathTree::new(paths);
    let mut warnings = Vec::new();
    let parent_root = match parent {
        Some(p) => match load_snapshot(remote, keys, p) {
            Ok(s) => cache
                .load_tree(remote, keys, &s.root)
                .map_err(|e| {
                    warnings.push(format!(
                        "the previous backup is unreadable ({e}); every file is read again"
                    ))
                })
                .ok(),
            Err(e) => {
                warnings.push(format!(
                    "the previous backup is unreadable ({e}); every file is read again"
                ));
                None
            }
        },
        None => None,
    };
    let counters = Counters::default();
    let failure = Mutex::new(None);
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let (work_tx, work_rx) = bounded::<Item>(workers * 4);
    let (sealed_tx, sealed_rx) = bounded::<Item>(workers * 4);
    let uploaded_at_start = remote.bytes_sent();

    let outcome = std::thread::scope(|s| {
        s.spawn(|| {
            scan(Path::new("/"), Some(&sel), excluder, &counters);
            counters.scan_done.store(true, Ordering::Relaxed);
        });
        for _ in 0..workers {
            let (rx, tx) = (work_rx.clone(), sealed_tx.clone());
            let failure = &failure;
            s.spawn(move || seal_worker(keys, opts.compression_level, rx, tx, failure));
        }
        drop((work_rx, sealed_tx));
        let failure_ref = &failure;
        let packer_handle = s.spawn(move || packer(remote, sealed_rx, failure_ref));

        let mut a = Archiver {
            keys,
            remote,
            cache,
            excluder,
            counters: &counters,
            progress,
            last_progress: Instant::now(),
            uploaded_at_start,
            work: Some(work_tx),
            failure: &failure,
            seen: HashSet::new(),
            refs: HashSet::new(),
            pending: Vec::new(),
            pending_bytes: 0,
            dirs: 0,
            files_read: 0,
            warnings,
        };
        let walked = (|| -> Result<(TreeId, BlobId)> {
            let root = a.virtual_dir(Path::new("/"), &sel, parent_root)?;
            let snap = Snapshot {
                time: Timestamp {
                    secs: start_time
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map(|d| d.as_secs() as i64)
                        .unwrap_or(0),
                    nanos: start_time
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map(|d| d.subsec_nanos())
                        .unwrap_or(0),
                },
                device: profile.device.clone(),
                hostname: gethost(),
                paths: paths
                    .iter()
                    .map(|p| ByteBuf::from(p.as_os_str().as_bytes().to_vec()))
                    .collect(),
                root,
                parent: parent.map(|p| p.id.clone()),
                client_version: VERSION.to_string(),
                files: counters.files.load(Ordering::Relaxed),
                bytes: counters.bytes.load(Ordering::Relaxed),
            };
            let enc = snap.encode();
            let id = blob::blob_id(keys, BlobKind::Snapshot, &enc);
            a.add_blob(id, BlobKind::Snapshot, enc, false)?;
            a.flush()?;
            Ok((root, id))
        })();
        a.work = None; // closes the pipeline
        if packer_handle.join().is_err()
            && let Ok(mut f) = failure.lock()
        {
            f.get_or_insert(ClientError::new(
                ErrorCode::Internal,
                "The upload thread crashed; nothing was committed.",
            ));
        }
        a.report_progress(true);
        walked.map(|w| (w, a))
    });
    let ((_root, snapshot_blob), a) = outcome?;
    if let Some(e) = failure.lock().ok().and_then(|mut f| f.take()) {
        return Err(e);
    }

    let mut refs: Vec<BlobId> = a.refs.into_iter().collect();
    refs.sort_unstable();
    let id = hex::encode(rand::random::<[u8; 16]>());
    let cached_parent_refs = parent.and_then(|p| cache.refs(&p.id));
    let mut req = CommitRequest {
        id: id.clone(),
        snapshot_blob,
        time: now_rfc3339(start_time),
        files: counters.files.load(Ordering::Relaxed),
        bytes: counters.bytes.load(Ordering::Relaxed),
        client_version: VERSION.to_string(),
        parent: None,
        added: refs.clone(),
        removed: Vec::new(),
    };
    if let (Some(p), Some(old)) = (parent, cached_parent_refs) {
        let (added, removed) = diff_sorted(&old, &refs);
        req.parent = Some(p.id.clone());
        req.added = added;
        req.removed = removed;
    }
    let record = match remote.commit(&req) {
        Err(e) if e.code() == ErrorCode::NotFound && req.parent.is_some() => {
            // The parent was deleted meanwhile: send the whole set.
            req.parent = None;
            req.added = refs.clone();
            req.removed.clear();
            remote.commit(&req)?
        }
        other => other?,
    };
    cache.put_refs(&record.id, &refs);
    Ok(BackupReport {
        id: record.id,
        device: record.device,
        time: record.time,
        files: record.files,
        dirs: a.dirs,
        bytes: record.bytes,
        uploaded_bytes: remote.bytes_sent() - uploaded_at_start,
        files_read: a.files_read,
        parent: parent.map(|p| p.id.clone()),
        duration_secs: started.elapsed().as_secs_f64(),
        warnings: a.warnings,
    })
}

/// Downloads and opens a snapshot's description.
pub fn load_snapshot(
    remote: &dyn Remote,
    keys: &Keys,
    record: &SnapshotRecord,
) -> Result<Snapshot> {
    let id = record.snapshot_blob;
    let sealed = remote.fetch(&[id])?.pop().flatten().ok_or_else(|| {
        ClientError::corrupted(format!(
            "the description of backup {} is missing on the server",
            record.id
        ))
    })?;
    let plain = blob::open(keys, BlobKind::Snapshot, &id, &sealed)
        .map_err(|e| ClientError::corrupted(format!("backup {}: {e}", record.id)))?;
    Snapshot::decode(&plain)
        .map_err(|e| ClientError::corrupted(format!("backup {}: {e}", record.id)))
}

fn gethost() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

//! Backup: the orchestration of one run.
//!
//! ```text
//! archiver (this thread): walk ─ read ─ chunk ─ hash ─ dedup (seen set; batched "missing?" queries)
//!      │ bounded channel (blobs the server lacks)
//! seal workers ×N: compress + encrypt        (pipeline.rs)
//!      │ bounded channel
//! packer: fill 16 MiB packs ─ upload in resumable parts
//! ```
//!
//! Memory does not grow with the size of the tree or of a file. A failure
//! on one file is a warning in the report; a failure of the server or the
//! upload is fatal, and nothing but the checkpoints already committed is
//! visible (invariant 1). Each run has an upload session on the server
//! (kept in the state directory, so a run that was killed resumes it), and
//! commits checkpoints every 10 minutes or 2 GiB uploaded.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use crossbeam_channel::bounded;
use haven_format::BlobId;
use haven_format::TreeId;
use haven_format::blob::{self, BlobKind};
use haven_format::keys::Keys;
use haven_format::snapshot::Snapshot;
use haven_format::tree::Timestamp;
use haven_proto::{CommitRequest, ErrorCode, SnapshotRecord};
use serde::Serialize;
use serde_bytes::ByteBuf;

use crate::archiver::Archiver;
use crate::cache::{Cache, diff_sorted};
use crate::pipeline::{Item, Pipe, packer, seal_worker};
use crate::profile::{ConfigDir, Profile};
use crate::selection::{Excluder, PathTree, is_cache_dir};
use crate::{ClientError, Remote, Result, VERSION};

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
    /// Checkpoints committed during this run.
    pub checkpoints: u64,
    pub parent: Option<String>,
    pub duration_secs: f64,
    pub warnings: Vec<String>,
}

/// Shared counters of a run.
#[derive(Default)]
pub struct Counters {
    pub files: AtomicU64,
    pub bytes: AtomicU64,
    pub total_files: AtomicU64,
    pub total_bytes: AtomicU64,
    pub scan_done: AtomicBool,
}

/// Builds snapshot descriptions and commits them, each as a delta against
/// the previous commit of the run (or the parent) when its referenced set
/// is known locally.
pub struct Committer<'a> {
    remote: &'a dyn Remote,
    cache: &'a Cache,
    device: String,
    paths: Vec<ByteBuf>,
    start: SystemTime,
    parent: Option<String>,
    session: Option<String>,
    base: Option<(String, Vec<BlobId>)>,
}

impl Committer<'_> {
    /// The id and plaintext of a snapshot description.
    pub fn snapshot_blob(
        &self,
        keys: &Keys,
        root: TreeId,
        files: u64,
        bytes: u64,
    ) -> (BlobId, Vec<u8>) {
        let since = self
            .start
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let snap = Snapshot {
            time: Timestamp {
                secs: since.as_secs() as i64,
                nanos: since.subsec_nanos(),
            },
            device: self.device.clone(),
            hostname: gethost(),
            paths: self.paths.clone(),
            root,
            parent: self.parent.clone(),
            client_version: VERSION.to_string(),
            files,
            bytes,
        };
        let enc = snap.encode();
        (blob::blob_id(keys, BlobKind::Snapshot, &enc), enc)
    }

    /// Commits; `refs` is sorted and deduplicated.
    pub fn commit(
        &mut self,
        snapshot_blob: BlobId,
        refs: &[BlobId],
        files: u64,
        bytes: u64,
        checkpoint: bool,
    ) -> Result<SnapshotRecord> {
        let mut req = CommitRequest {
            id: hex::encode(rand::random::<[u8; 16]>()),
            snapshot_blob,
            time: humantime::format_rfc3339_seconds(self.start).to_string(),
            files,
            bytes,
            client_version: VERSION.to_string(),
            parent: None,
            added: refs.to_vec(),
            removed: Vec::new(),
            session: self.session.clone(),
            checkpoint,
        };
        if let Some((base, old)) = &self.base {
            let (added, removed) = diff_sorted(old, refs);
            req.parent = Some(base.clone());
            req.added = added;
            req.removed = removed;
        }
        haven_proto::fault::point("before-commit");
        let record = match self.remote.commit(&req) {
            Err(e) if e.code() == ErrorCode::NotFound && req.parent.is_some() => {
                // The base was deleted meanwhile: send the whole set.
                req.parent = None;
                req.added = refs.to_vec();
                req.removed.clear();
                self.remote.commit(&req)?
            }
            other => other?,
        };
        haven_proto::fault::point("after-commit");
        self.cache.put_refs(&record.id, refs);
        self.base = Some((record.id.clone(), refs.to_vec()));
        Ok(record)
    }
}

fn session_file(dir: &ConfigDir) -> PathBuf {
    dir.path().join("session")
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
    // A run that was interrupted left its session id: continue it, so that
    // what it uploaded stays protected and counted as one run.
    let resume = fs::read_to_string(session_file(dir))
        .ok()
        .map(|s| s.trim().to_string());
    let session = remote.open_session(resume.as_deref())?;
    crate::profile::write_private(&session_file(dir), session.as_bytes())?;
    // The newest snapshot of the device, checkpoints included: a resumed
    // run does not read again what its checkpoint holds.
    let parent = remote.snapshots(Some(&profile.device))?.into_iter().next();
    let result = match run(
        profile,
        remote,
        &keys,
        &cache,
        &excluder,
        &paths,
        parent.as_ref(),
        &session,
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
                profile, remote, &keys, &cache, &excluder, &paths, None, &session, opts, progress,
            )
        }
        other => other,
    };
    if result.is_ok() {
        let _ = fs::remove_file(session_file(dir));
    }
    result
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
    session: &str,
    opts: &BackupOptions,
    progress: &dyn Fn(&Progress),
) -> Result<BackupReport> {
    let started = Instant::now();
    let sel = PathTree::new(paths);
    let mut warnings = Vec::new();
    let parent_root = match parent.map(|p| {
        load_snapshot(remote, keys, p).and_then(|s| cache.load_tree(remote, keys, &s.root))
    }) {
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => {
            warnings.push(format!(
                "the previous backup is unreadable ({e}); every file is read again"
            ));
            None
        }
        None => None,
    };
    let committer = Committer {
        remote,
        cache,
        device: profile.device.clone(),
        paths: paths
            .iter()
            .map(|p| ByteBuf::from(p.as_os_str().as_bytes().to_vec()))
            .collect(),
        start: SystemTime::now(),
        parent: parent.map(|p| p.id.clone()),
        session: Some(session.to_string()),
        base: parent.and_then(|p| cache.refs(&p.id).map(|r| (p.id.clone(), r))),
    };
    let counters = Counters::default();
    let pipe = Pipe::default();
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let (work_tx, work_rx) = bounded::<Item>(workers * 4);
    let (sealed_tx, sealed_rx) = bounded::<Item>(workers * 4);

    let outcome = std::thread::scope(|s| {
        s.spawn(|| {
            scan(Path::new("/"), Some(&sel), excluder, &counters);
            counters.scan_done.store(true, Ordering::Relaxed);
        });
        for _ in 0..workers {
            let (rx, tx, pipe) = (work_rx.clone(), sealed_tx.clone(), &pipe);
            s.spawn(move || seal_worker(keys, opts.compression_level, rx, tx, pipe));
        }
        drop((work_rx, sealed_tx));
        let pipe_ref = &pipe;
        let packer_handle = s.spawn(move || packer(remote, sealed_rx, pipe_ref));

        let mut a = Archiver::new(
            keys, remote, cache, excluder, &counters, progress, &pipe, work_tx, committer, warnings,
        );
        let walked = (|| -> Result<BlobId> {
            let root = a.virtual_dir(Path::new("/"), &sel, parent_root, None)?;
            let files = counters.files.load(Ordering::Relaxed);
            let bytes = counters.bytes.load(Ordering::Relaxed);
            let (id, enc) = a.committer.snapshot_blob(keys, root, files, bytes);
            a.add_blob(id, BlobKind::Snapshot, enc, false)?;
            a.flush()?;
            Ok(id)
        })();
        a.work = None; // closes the pipeline
        if packer_handle.join().is_err() {
            pipe.fail(ClientError::new(
                ErrorCode::Internal,
                "The upload thread crashed; nothing was committed.",
            ));
        }
        a.report_progress(true);
        walked.map(|w| (w, a))
    });
    let (snapshot_blob, mut a) = outcome?;
    if let Some(e) = pipe.failure.lock().ok().and_then(|mut f| f.take()) {
        return Err(e);
    }
    let mut refs: Vec<BlobId> = a.refs.iter().copied().collect();
    refs.sort_unstable();
    let files = counters.files.load(Ordering::Relaxed);
    let bytes = counters.bytes.load(Ordering::Relaxed);
    let record = a
        .committer
        .commit(snapshot_blob, &refs, files, bytes, false)?;
    Ok(BackupReport {
        id: record.id,
        device: record.device,
        time: record.time,
        files: record.files,
        dirs: a.dirs,
        bytes: record.bytes,
        uploaded_bytes: remote.bytes_sent().saturating_sub(a.uploaded_at_start),
        files_read: a.files_read,
        checkpoints: a.checkpoints,
        parent: parent.map(|p| p.id.clone()),
        duration_secs: started.elapsed().as_secs_f64(),
        warnings: std::mem::take(&mut a.warnings),
    })
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

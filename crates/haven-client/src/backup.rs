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

use std::collections::HashSet;
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
use haven_format::tree::{Timestamp, Tree};
use haven_proto::{CategoryStat, CommitRequest, ErrorCode, SessionResponse, SnapshotRecord};
use serde::Serialize;
use serde_bytes::ByteBuf;

use crate::archiver::Archiver;
use crate::cache::{Cache, diff_sorted};
use crate::categories::{Categorizer, CategoryRule};
use crate::pipeline::{Item, Pipe, deduper, packer, seal_worker, uploader};
use crate::profile::{ConfigDir, Profile};
use crate::scan::{Scan, Scanner};
use crate::selection::{Excluder, PathTree};
use crate::space::{self, Filter};
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
    /// Category rules (see [`crate::categories::merged_rules`]).
    pub categories: Vec<CategoryRule>,
    /// Category order when storage is short.
    pub priority: Vec<String>,
    /// When storage is short, back up what fits (else nothing).
    pub partial: bool,
    /// Set by the agent when a condition stops holding: the backup commits
    /// a checkpoint and stops with `backup_paused`.
    pub stop: Option<std::sync::Arc<AtomicBool>>,
}

impl BackupOptions {
    /// `paths` with the defaults of an empty config.
    pub fn new(paths: Vec<PathBuf>) -> Self {
        BackupOptions {
            paths,
            exclude: Vec::new(),
            exclude_caches: true,
            compression_level: 3,
            categories: crate::categories::default_rules(),
            priority: crate::categories::default_priority(),
            partial: true,
            stop: None,
        }
    }
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
    /// Categories were left out because the storage was short.
    pub partial: bool,
    /// Those categories, with what each needed.
    pub skipped_categories: Vec<SkippedCategory>,
    /// Categories switched off for this device.
    pub disabled_categories: Vec<String>,
    /// With a quota: what the whole backup needed at most, and what was free.
    pub needed: Option<u64>,
    pub available: Option<u64>,
    /// For a partial backup: ways to make room, biggest effect first.
    pub fix: Vec<String>,
    /// What the backup holds per category.
    pub categories: Vec<CategoryStat>,
    /// Older backups the retention policy removed after this one.
    pub pruned: Vec<String>,
}

/// A category a partial backup left out.
#[derive(Clone, Debug, Serialize)]
pub struct SkippedCategory {
    pub name: String,
    /// What backing it up needed at most.
    pub bytes: u64,
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
    /// Marks the commits of a partial backup.
    pub partial: bool,
    /// Per-category figures for the final commit.
    pub categories: Vec<CategoryStat>,
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
            partial: self.partial,
            categories: if checkpoint {
                Vec::new()
            } else {
                self.categories.clone()
            },
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
/// time (a lock in the state directory). The attempt, whatever its
/// outcome, goes to the device's history on the server.
pub fn backup(
    dir: &ConfigDir,
    profile: &Profile,
    remote: &dyn Remote,
    opts: &BackupOptions,
    progress: &dyn Fn(&Progress),
) -> Result<BackupReport> {
    let started = SystemTime::now();
    let result = backup_locked(dir, profile, remote, opts, progress);
    crate::history::record(dir, remote, started, &result);
    result
}

/// The time a backup is recorded as taken: now, or `HAVEN_BACKUP_TIME`
/// (RFC 3339), which tests use to build a history.
fn start_time() -> SystemTime {
    std::env::var("HAVEN_BACKUP_TIME")
        .ok()
        .and_then(|t| humantime::parse_rfc3339(&t).ok())
        .unwrap_or_else(SystemTime::now)
}

fn backup_locked(
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
    let tried = dir.path().join("dictionary-tried");
    let (keys, train) =
        crate::dictionary::for_backup(profile.master_key()?.keys(), remote, &tried)?;
    let cache = Cache::new(dir.cache(), profile.account_id);
    // A run that was interrupted left its session id: continue it, so that
    // what it uploaded stays protected and counted as one run.
    let resume = fs::read_to_string(session_file(dir))
        .ok()
        .map(|s| s.trim().to_string());
    let session = remote.open_session(resume.as_deref(), None)?;
    // A hint: without it, an interrupted run's next attempt opens a new
    // session and re-sends what the old one's packs held.
    if resume.as_deref() != Some(session.session.as_str()) {
        crate::profile::write_private_hint(&session_file(dir), session.session.as_bytes())?;
    }
    let categorizer = Categorizer::new(&opts.categories, crate::config::home())?;
    // The newest snapshot of the device, checkpoints included: a resumed
    // run does not read again what its checkpoint holds.
    let parent = remote.latest(&profile.device)?;
    let ctx = RunContext {
        profile,
        remote,
        keys: &keys,
        cache: &cache,
        excluder: &excluder,
        categorizer: &categorizer,
        paths: &paths,
        session: &session,
        opts,
        progress,
    };
    // The account's first dictionary is trained beside the run: blobs
    // sealed once it is there use it.
    let result = std::thread::scope(|s| {
        if train {
            s.spawn(|| {
                let level = opts.compression_level;
                crate::dictionary::train(&keys, remote, &paths, &excluder, level, &tried)
            });
        }
        run_with_retries(&ctx, parent.as_ref())
    });
    if result.is_ok() {
        let _ = fs::remove_file(session_file(dir));
    }
    result
}

/// A run, and the runs again from scratch that a server which lost data
/// this run relied on calls for.
fn run_with_retries(ctx: &RunContext<'_>, parent: Option<&SnapshotRecord>) -> Result<BackupReport> {
    let mut result = run(ctx, parent, false);
    // The server no longer has blobs this run relied on: lost data of the
    // previous backup, or unreferenced data that GC collected between the
    // "missing?" answer and the commit (the commit is refused then, never
    // accepted with holes). Read everything again: the "missing?" answers
    // are fresh, so this run uploads them.
    // The first retry keeps the parent for planning and for the previous
    // copies of categories left out, and only stops trusting unchanged
    // files; the last one starts from nothing.
    for last_resort in [false, true] {
        match &result {
            Err(e) if e.code() == ErrorCode::BlobsMissing => {
                tracing::warn!(
                    "the server is missing data this backup relies on; reading every file again"
                );
                let p = if last_resort { None } else { parent };
                result = run(ctx, p, true);
            }
            _ => break,
        }
    }
    result
}

/// What a run works with.
struct RunContext<'a> {
    profile: &'a Profile,
    remote: &'a dyn Remote,
    keys: &'a Keys,
    cache: &'a Cache,
    excluder: &'a Excluder,
    categorizer: &'a Categorizer,
    paths: &'a [PathBuf],
    session: &'a SessionResponse,
    opts: &'a BackupOptions,
    progress: &'a dyn Fn(&Progress),
}

/// One run; `read_all` reads every file even when the parent has it
/// unchanged (the server lost some of its data).
fn run(
    ctx: &RunContext<'_>,
    parent: Option<&SnapshotRecord>,
    read_all: bool,
) -> Result<BackupReport> {
    let RunContext {
        profile,
        remote,
        keys,
        cache,
        excluder,
        categorizer,
        paths,
        session,
        opts,
        progress,
    } = *ctx;
    let started = Instant::now();
    let sel = PathTree::new(paths);
    let mut warnings = Vec::new();
    let parent_root = match parent.map(|p| {
        load_snapshot(remote, keys, p)
            .and_then(|s| Ok((cache.load_tree(remote, keys, &s.root)?, s.root.0)))
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

    // Plan before uploading anything: what is new per category, what is
    // switched off, what fits in the quota. Without a quota the scan
    // decides nothing (every category that is switched on goes in), so it
    // runs beside the backup and only feeds the progress totals and the
    // figures the server shows.
    let phase = |what: &str| tracing::debug!(ms = started.elapsed().as_millis() as u64, "{what}");
    let beside = session.quota.is_none() && session.available.is_none();
    let scan_tree = |parent: Option<&Tree>| {
        let mut scanner = Scanner::new(keys, remote, cache, excluder, categorizer);
        scanner.virtual_dir(Path::new("/"), &sel, parent);
        phase("scanned");
        scanner.scan
    };
    let (scan, switches) = if beside {
        (Scan::empty(categorizer), remote.switches())
    } else {
        let scan = scan_tree(parent_root.as_ref().map(|(t, _)| t));
        let switches = remote.report_scan(&scan.report(categorizer));
        (scan, switches)
    };
    // A server without categories (older than this client): all are on.
    let switches = match switches {
        Err(e) if e.code() == ErrorCode::NotFound => Vec::new(),
        other => other?,
    };
    let disabled: HashSet<String> = switches
        .iter()
        .filter(|c| !c.enabled)
        .map(|c| c.name.clone())
        .collect();
    let plan = space::plan(
        &scan,
        categorizer,
        &disabled,
        &opts.priority,
        session.available,
    );
    let skipped = plan.skipped(categorizer, &scan);
    let available = session.available.unwrap_or(u64::MAX);
    if !skipped.is_empty() && (!opts.partial || available < scan.metadata_need()) {
        let fixes = space::fixes(remote, categorizer, &scan, &plan, session.quota, available);
        return Err(space::quota_error(plan.needed, available, fixes));
    }
    if session.quota.is_some() {
        // Another device may have taken the space since the session opened.
        if let Err(e) = remote.open_session(Some(&session.session), Some(plan.reserve)) {
            if e.code() == ErrorCode::QuotaExceeded {
                let fixes =
                    space::fixes(remote, categorizer, &scan, &plan, session.quota, available);
                return Err(space::quota_error(
                    plan.reserve,
                    e.body().available.unwrap_or(0),
                    fixes,
                ));
            }
            return Err(e);
        }
    }
    let fix = if skipped.is_empty() {
        Vec::new()
    } else {
        space::fixes(remote, categorizer, &scan, &plan, session.quota, available)
    };

    let committer = Committer {
        remote,
        cache,
        device: profile.device.clone(),
        paths: paths
            .iter()
            .map(|p| ByteBuf::from(p.as_os_str().as_bytes().to_vec()))
            .collect(),
        start: start_time(),
        parent: parent.map(|p| p.id.clone()),
        session: Some(session.session.clone()),
        base: parent.and_then(|p| cache.refs(&p.id).map(|r| (p.id.clone(), r))),
        partial: !skipped.is_empty(),
        categories: Vec::new(),
    };
    let counters = Counters::default();
    let totals = |scan: &Scan| {
        for (t, f) in scan.categories.iter().zip(&plan.filter) {
            if *f == Filter::Include {
                counters.total_files.fetch_add(t.files, Ordering::Relaxed);
                counters.total_bytes.fetch_add(t.bytes, Ordering::Relaxed);
            }
        }
        counters.scan_done.store(true, Ordering::Relaxed);
    };
    if !beside {
        totals(&scan);
    }
    let scan_parent = beside
        .then(|| parent_root.as_ref().map(|(t, _)| t.clone()))
        .flatten();
    let pipe = Pipe::default();
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    // One batch waits while the deduper asks about the one before.
    let (batch_tx, batch_rx) = bounded::<Vec<Item>>(1);
    let (work_tx, work_rx) = bounded::<Item>(workers * 4);
    let (sealed_tx, sealed_rx) = bounded::<Item>(workers * 4);

    let outcome = std::thread::scope(|s| {
        for _ in 0..workers {
            let (rx, tx, pipe) = (work_rx.clone(), sealed_tx.clone(), &pipe);
            s.spawn(move || seal_worker(keys, opts.compression_level, rx, tx, pipe));
        }
        drop((work_rx, sealed_tx));
        let pipe_ref = &pipe;
        s.spawn(move || deduper(remote, batch_rx, work_tx, pipe_ref));
        let (pack_tx, pack_rx) = bounded(1);
        let packer_handle = s.spawn(move || packer(sealed_rx, pack_tx, pipe_ref));
        let uploader_handle = s.spawn(move || uploader(remote, pack_rx, pipe_ref));
        let scanner_handle = beside.then(|| {
            s.spawn(|| {
                let scan = scan_tree(scan_parent.as_ref());
                totals(&scan);
                if let Err(e) = remote.report_scan(&scan.report(categorizer)) {
                    tracing::warn!("cannot send the category figures to the server: {e}");
                }
                scan
            })
        });

        let mut a = Archiver::new(
            keys, remote, cache, excluder, &counters, progress, &pipe, batch_tx, committer,
            warnings,
        );
        a.categories = Some((categorizer, plan.filter.clone()));
        a.damaged = session.damaged.iter().copied().collect();
        a.stop = opts.stop.clone();
        a.read_all = read_all;
        let walked = (|| -> Result<BlobId> {
            let (root_tree, root_id) = parent_root.unzip();
            let root = a.virtual_dir(Path::new("/"), &sel, root_tree, root_id, None)?;
            let files = counters.files.load(Ordering::Relaxed);
            let bytes = counters.bytes.load(Ordering::Relaxed);
            let (id, enc) = a.committer.snapshot_blob(keys, root, files, bytes);
            a.add_blob(id, BlobKind::Snapshot, enc, false)?;
            a.flush()?;
            Ok(id)
        })();
        a.work = None; // closes the pipeline
        if packer_handle.join().is_err() || uploader_handle.join().is_err() {
            pipe.fail(ClientError::new(
                ErrorCode::Internal,
                "The upload thread crashed; nothing was committed.",
            ));
        }
        a.report_progress(true);
        // Figures only: a scan that crashed leaves them at zero.
        let scanned = scanner_handle.and_then(|h| h.join().ok());
        walked.map(|w| (w, a, scanned))
    });
    let (snapshot_blob, mut a, scanned) = outcome?;
    let figures = !beside || scanned.is_some();
    let scan = scanned.unwrap_or(scan);
    phase("walked and uploaded");
    if let Some(e) = pipe.failure.lock().ok().and_then(|mut f| f.take()) {
        return Err(e);
    }
    let mut refs: Vec<BlobId> = a.refs.iter().copied().collect();
    refs.sort_unstable();
    let files = counters.files.load(Ordering::Relaxed);
    let bytes = counters.bytes.load(Ordering::Relaxed);
    let categories: Vec<CategoryStat> = categorizer
        .names()
        .iter()
        .zip(a.stats.iter().chain(std::iter::repeat(&(0, 0))))
        .filter(|(_, (files, _))| *files > 0)
        .map(|(name, (files, bytes))| CategoryStat {
            name: name.clone(),
            files: *files,
            bytes: *bytes,
        })
        .collect();
    a.committer.categories = categories.clone();
    let record = a
        .committer
        .commit(snapshot_blob, &refs, files, bytes, false)?;
    phase("committed");
    // What is backed up now is no longer new: the next backup's estimate
    // shrinks to what was left out.
    let mut after = scan.report(categorizer);
    for (r, f) in after.iter_mut().zip(&plan.filter) {
        if *f == Filter::Include {
            r.new_bytes = 0;
        }
    }
    if figures && let Err(e) = remote.report_scan(&after) {
        tracing::warn!("cannot update the category figures on the server: {e}");
    }
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
        partial: !skipped.is_empty(),
        skipped_categories: skipped
            .into_iter()
            .map(|(name, bytes)| SkippedCategory { name, bytes })
            .collect(),
        disabled_categories: categorizer
            .names()
            .iter()
            .filter(|n| disabled.contains(*n))
            .cloned()
            .collect(),
        needed: session.quota.map(|_| plan.needed),
        available: session.available,
        fix,
        categories,
        pruned: record.pruned,
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

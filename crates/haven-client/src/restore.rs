//! Restore.
//!
//! ```text
//! walker thread: trees ─ create dirs, symlinks ─▶ file jobs
//! fetcher thread: batch chunk ids ─▶ download threads (two) ─▶ sealed chunks, in order
//! opener thread (and its helper): authenticate, decompress, hash ─▶ pieces
//! main thread: hand files to the writers ─▶ writer threads: write files ─▶ results
//! main thread, at the end: hard links, then directory metadata (deepest first)
//! ```
//!
//! The stages overlap: while one batch is written, the next is opened and
//! the two after that download. A large file goes to one writer, its
//! chunks following through a channel of its own, while the other writers
//! go on with the small files after it. Every hand-off is bounded, so memory stays
//! a few batches whatever the snapshot's size.
//!
//! A directory the restore creates is filled under a hidden staging name
//! and renamed into place at the end (see [`staging_name`]).
//!
//! Invariant 6: nothing is written outside the target. Names are checked
//! (no empty, `.`, `..`, `/` or NUL), the walker only descends into real
//! directories (never through a symlink, whether the snapshot or the
//! target directory holds it), files are created with `O_EXCL` (which
//! never follows a symlink) and hard links only point at files this
//! restore wrote. Every chunk is verified before it is written.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use filetime::FileTime;
use haven_format::blob::{self, BlobKind};
use haven_format::keys::Keys;
use haven_format::tree::{Node, NodeKind, Timestamp, Tree};
use haven_format::{BlobId, TreeId};
use haven_proto::{ErrorCode, SnapshotRecord};
use serde::Serialize;

use crate::cache::Cache;
use crate::selection::PathTree;
use crate::{ClientError, Remote, Result};

/// Files up to this size are fetched together with others.
const SMALL_FILE: u64 = 8 << 20;
/// A batch of small files is fetched when it reaches this many bytes…
const BATCH_BYTES: u64 = 8 << 20;
/// …or this many files.
const BATCH_FILES: usize = 256;
/// Chunks of a large file fetched per request.
const BIG_WINDOW: usize = 8;
/// Most chunks fetched for one batch of small files (at most 4 MiB each,
/// so a batch never holds more than 512 MiB whatever sizes a snapshot
/// claims; a real one stops at BATCH_BYTES). Each batch is one request:
/// 32 chunks per batch made a restore of the Linux tree 9% slower.
const BATCH_CHUNKS: usize = 128;

/// True for a file fetched with others. Bounded by chunk count too:
/// memory never depends on a size the snapshot merely claims.
fn batched(node: &Node) -> bool {
    node.size <= SMALL_FILE && node.content.len() <= BIG_WINDOW
}

/// True once a batch of small files is to be fetched.
fn batch_full(files: usize, bytes: u64, chunks: usize) -> bool {
    files >= BATCH_FILES || bytes >= BATCH_BYTES || chunks >= BATCH_CHUNKS
}

/// What to restore where.
#[derive(Clone, Debug)]
pub struct RestoreOptions {
    /// Target directory; backed-up absolute paths are recreated below it.
    pub target: PathBuf,
    /// Only these backed-up absolute paths (all if empty).
    pub paths: Vec<PathBuf>,
    /// Replace existing files instead of leaving them alone.
    pub overwrite: bool,
}

/// The outcome of a restore.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RestoreReport {
    pub snapshot: String,
    pub target: String,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub bytes: u64,
    /// Existing files left alone (no `--overwrite`).
    pub skipped_existing: u64,
    /// Files found already restored (same content), e.g. by an interrupted
    /// earlier run of the same restore.
    pub already_restored: u64,
    /// Paths that could not be restored, with the reason.
    pub failed: Vec<String>,
    pub warnings: Vec<String>,
    pub duration_secs: f64,
    /// Requests this restore sent the server (retries included).
    pub requests: u64,
}

/// Live figures for a progress display.
#[derive(Clone, Debug, Default)]
pub struct RestoreProgress {
    pub files: u64,
    pub bytes: u64,
    pub total_files: u64,
    pub total_bytes: u64,
}

struct FileJob {
    /// Where it is written.
    path: PathBuf,
    /// Where it ends up, for reports and hard links: differs from `path`
    /// inside a staging directory.
    shown: PathBuf,
    node: Node,
    /// Its directory was created by this restore, so nothing is there yet
    /// and the checks for what an earlier run left can be skipped.
    fresh: bool,
    /// It lies inside a staging directory (see [`staging_name`]): it is
    /// written under its own name, and whatever an earlier run left there
    /// is this restore's to replace.
    staged: bool,
}

/// A unit of the restore, in order: a batch of small files, or the start,
/// a window of chunks, or the end of a large file. `D` is its download.
enum Unit<D> {
    Whole(Vec<FileJob>, D),
    Start(Box<FileJob>),
    Window(D),
    End,
}

/// Downloads, done or under way, not yet opened: what the fetcher hands
/// the opener.
type Sealed = Unit<Pending>;
/// A unit whose download, if it has one, has arrived.
type Arrived = Unit<Chunks>;

/// Chunks, still sealed, in order (`None`: missing or damaged).
type Chunks = Vec<(BlobId, Option<Bytes>)>;
/// A download under way: its chunks once it is done.
type Pending = Receiver<Result<Chunks>>;

/// Downloads running at once. With one, the server's work on a request
/// and the client's on the previous answer took turns more than they
/// overlapped.
const DOWNLOADS: usize = 2;

/// A small file with all its chunks (`None`: missing or damaged).
type SmallFile = (FileJob, Vec<Option<Vec<u8>>>);

enum Piece {
    /// Small files.
    Files(Vec<SmallFile>),
    /// The start of a large file, its chunks one by one, its end.
    Start(Box<FileJob>),
    Chunk(Option<Vec<u8>>),
    End,
}

/// True for a name that is safe to join to a directory path.
pub fn safe_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

fn filetime(t: Timestamp) -> FileTime {
    FileTime::from_unix_time(t.secs, t.nanos.min(999_999_999))
}

/// The hidden name under which a directory this restore creates is filled:
/// `.NAME.haven-part-TAG` beside where it belongs. Everything below it is
/// written under its own name, and the directory is renamed into place
/// once every file in it is complete. So an interrupted restore never
/// leaves a half-written file under its final path, and what a restore
/// creates costs one rename per new top directory instead of one per file
/// (a rename was 15% of a restore's CPU). `tag` ([`staging_tag`]) names
/// the restore: only a run of the same restore continues in it.
pub fn staging_name(name: &[u8], tag: &str) -> Vec<u8> {
    let mut t = b".".to_vec();
    t.extend_from_slice(name);
    t.extend_from_slice(b".haven-part-");
    t.extend_from_slice(tag.as_bytes());
    t
}

/// What makes two restores the same one: the snapshot and the selected
/// paths. A run of another snapshot or selection leaves an earlier run's
/// staging directories alone (it warns about them) instead of finishing
/// them with its own content.
pub fn staging_tag(snapshot: &str, paths: &[PathBuf]) -> String {
    let mut paths: Vec<&[u8]> = paths.iter().map(|p| p.as_os_str().as_bytes()).collect();
    paths.sort_unstable();
    let mut h = blake3::Hasher::new();
    h.update(snapshot.as_bytes());
    for p in paths {
        h.update(b"\0");
        h.update(p);
    }
    h.finalize().to_hex()[..12].to_string()
}

/// Renames `from` to `to` unless something is at `to` already: a
/// directory a user made there during the restore is never replaced.
/// File systems without `RENAME_NOREPLACE` (NFS, many FUSE ones) get a
/// check, then a plain rename.
fn rename_new(from: &Path, to: &Path) -> std::io::Result<()> {
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
    };
    let (cfrom, cto) = (c(from)?, c(to)?);
    // SAFETY: both are NUL-terminated paths that outlive the call.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            cfrom.as_ptr(),
            libc::AT_FDCWD,
            cto.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if !matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) {
        return Err(e);
    }
    match fs::symlink_metadata(to) {
        Ok(_) => Err(std::io::ErrorKind::AlreadyExists.into()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => fs::rename(from, to),
        Err(e) => Err(e),
    }
}

/// Sets a restored file's owner (as root), mode and times through its open
/// descriptor. The owner goes first: changing it clears set-id bits.
fn set_file_meta(f: &File, node: &Node) -> std::io::Result<()> {
    if is_root() {
        std::os::unix::fs::fchown(f, Some(node.uid), Some(node.gid))?;
    }
    f.set_permissions(fs::Permissions::from_mode(node.mode))?;
    let t = filetime(node.mtime);
    filetime::set_file_handle_times(f, Some(t), Some(t))
}

/// Directories and files are created private and get their backed-up
/// mode only once complete: nobody can open a half-restored private file.
fn private_dir(path: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new().mode(0o700).create(path)
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

fn is_root() -> bool {
    euid() == 0
}

#[derive(Default)]
struct Shared {
    failed: Vec<String>,
    warnings: Vec<String>,
    already_restored: u64,
    /// Existing files left alone (no `--overwrite`).
    skipped_existing: u64,
    /// Files found already restored that other paths hard-link to.
    kept_link_targets: Vec<PathBuf>,
}

/// Records a failed write; a full disk ends the restore.
fn write_failed(
    fatal: &mut Option<ClientError>,
    report: &mut RestoreReport,
    path: &Path,
    e: std::io::Error,
) {
    if e.kind() == std::io::ErrorKind::StorageFull {
        fatal.get_or_insert_with(|| {
            ClientError::new(ErrorCode::LocalIo, format!("The disk under {} is full; the restore stopped.", path.display()))
                .fix("Free some space (or restore to another disk with --to), then run the same restore again: what is restored so far waits in hidden .NAME.haven-part-TAG directories, and the next run keeps it and goes on.")
        });
    } else {
        report.failed.push(format!("{}: {e}", path.display()));
    }
}

struct Walker<'a> {
    keys: &'a Keys,
    remote: &'a dyn Remote,
    cache: &'a Cache,
    overwrite: bool,
    jobs: Sender<FileJob>,
    shared: &'a Mutex<Shared>,
    dirs: Vec<(PathBuf, Node)>,
    links: Vec<(PathBuf, PathBuf)>,
    first_link: HashMap<(u64, u64), PathBuf>,
    symlinks: u64,
    unmatched: Vec<PathBuf>,
    /// Staging directories and where each goes once complete.
    staged_roots: Vec<(PathBuf, PathBuf)>,
    /// This restore's [`staging_tag`].
    tag: &'a str,
}

impl Walker<'_> {
    fn fail(&self, path: &Path, why: impl std::fmt::Display) {
        if let Ok(mut s) = self.shared.lock() {
            s.failed.push(format!("{}: {why}", path.display()));
        }
    }

    /// Makes `path` a real directory we may write into: `Some(true)` if
    /// this restore created it (directly, when its parent is `fresh`).
    /// Something else there is replaced only if `replace`.
    fn ensure_dir(&self, path: &Path, shown: &Path, fresh: bool, replace: bool) -> Option<bool> {
        let created =
            |r: std::io::Result<()>| r.map_err(|e| self.fail(shown, e)).ok().map(|()| true);
        if fresh {
            return created(private_dir(path));
        }
        match fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => Some(false),
            Ok(_) if replace => created(fs::remove_file(path).and_then(|_| private_dir(path))),
            Ok(m) => {
                let what = if m.file_type().is_symlink() {
                    "a symlink"
                } else {
                    "not a directory"
                };
                self.fail(shown, format!("exists and is {what}; left alone with everything below it (use --overwrite to replace it)"));
                None
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => created(private_dir(path)),
            Err(e) => {
                self.fail(shown, e);
                None
            }
        }
    }

    /// The directory `name` in `dir`, made ready to write into: where it is
    /// written, whether this restore created it, and whether it lies in a
    /// staging directory. A directory that is not there yet is filled under
    /// its staging name, unless its parent is staged already.
    fn place_dir(
        &mut self,
        dir: &Path,
        name: &[u8],
        shown: &Path,
        fresh: bool,
        staged: bool,
    ) -> Option<(PathBuf, bool, bool)> {
        let path = dir.join(OsStr::from_bytes(name));
        if staged {
            let created = self.ensure_dir(&path, shown, fresh, true)?;
            return Some((path, created, true));
        }
        if !fresh && fs::symlink_metadata(&path).is_ok() {
            let created = self.ensure_dir(&path, shown, false, self.overwrite)?;
            return Some((path, created, false));
        }
        let staging = dir.join(OsStr::from_bytes(&staging_name(name, self.tag)));
        let created = if fresh {
            self.ensure_dir(&staging, shown, true, false)?
        } else {
            self.warn_stale(dir, name);
            match fs::symlink_metadata(&staging) {
                // An earlier run of this restore: continue in it. Only a
                // private directory of ours: nothing else is written into.
                Ok(m) if m.is_dir() && m.uid() == euid() && m.mode() & 0o077 == 0 => false,
                Ok(_) => {
                    self.fail(
                        shown,
                        format!(
                            "{} is in the way (this restore did not make it); remove it and run the restore again",
                            staging.display()
                        ),
                    );
                    return None;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    self.ensure_dir(&staging, shown, true, false)?
                }
                Err(e) => {
                    self.fail(shown, e);
                    return None;
                }
            }
        };
        self.staged_roots.push((staging.clone(), path));
        Some((staging, created, true))
    }

    /// Warns about staging directories of `name` that another restore (of
    /// another backup or selection) left when it was interrupted.
    fn warn_stale(&self, dir: &Path, name: &[u8]) {
        let prefix = staging_name(name, "");
        let mine = staging_name(name, self.tag);
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let n = e.file_name();
            if n.as_bytes().starts_with(&prefix)
                && n.as_bytes() != mine.as_slice()
                && let Ok(mut s) = self.shared.lock()
            {
                s.warnings.push(format!(
                    "{} was left by an interrupted restore of another backup or selection; it is not used, remove it when you no longer need it",
                    e.path().display()
                ));
            }
        }
    }

    fn tree(&self, id: &TreeId, path: &Path) -> Option<Tree> {
        self.cache
            .load_tree(self.remote, self.keys, id)
            .map_err(|e| {
                self.fail(
                    path,
                    format!("its listing is unreadable ({e}); nothing below it was restored"),
                )
            })
            .ok()
    }

    /// Restores `tree` into `dir` (written there, reported as `shown`).
    #[allow(clippy::too_many_arguments)]
    fn walk(
        &mut self,
        dir: &Path,
        shown: &Path,
        tree: Tree,
        sel: Option<&PathTree>,
        sel_path: &Path,
        fresh: bool,
        staged: bool,
    ) -> std::result::Result<(), ()> {
        if let Some(sel) = sel.filter(|s| !s.full) {
            for name in sel.children.keys() {
                if tree.get(name).is_none() {
                    self.unmatched.push(sel_path.join(OsStr::from_bytes(name)));
                }
            }
        }
        // The listings of the directories below, in one request when this
        // device has not cached them (a restore onto a new device).
        let subtrees =
            listings(tree.nodes.iter().filter(|n| {
                sel.is_none_or(|s| s.full || s.children.contains_key(n.name.as_slice()))
            }));
        if subtrees.len() > 1 {
            self.cache.fetch_trees(self.remote, &subtrees);
        }
        for node in tree.nodes {
            let child_sel = match sel {
                Some(s) if !s.full => match s.children.get(node.name.as_slice()) {
                    Some(c) => Some(c),
                    None => continue,
                },
                _ => None,
            };
            if !safe_name(&node.name) {
                self.fail(
                    shown,
                    format!(
                        "the backup holds an entry with the unsafe name {:?}; skipped",
                        String::from_utf8_lossy(&node.name)
                    ),
                );
                continue;
            }
            let path = dir.join(OsStr::from_bytes(&node.name));
            let shown_path = shown.join(OsStr::from_bytes(&node.name));
            match node.kind {
                NodeKind::Dir => {
                    let Some((at, created, in_staging)) =
                        self.place_dir(dir, &node.name, &shown_path, fresh, staged)
                    else {
                        continue;
                    };
                    let subtree = node.subtree;
                    let sel_child_path = sel_path.join(OsStr::from_bytes(&node.name));
                    self.dirs.push((shown_path.clone(), node));
                    let Some(id) = subtree else {
                        self.fail(&shown_path, "the directory has no listing in the backup");
                        continue;
                    };
                    if let Some(t) = self.tree(&id, &shown_path) {
                        self.walk(
                            &at,
                            &shown_path,
                            t,
                            child_sel,
                            &sel_child_path,
                            created,
                            in_staging,
                        )?;
                    }
                }
                NodeKind::Symlink => {
                    if child_sel.is_some_and(|s| !s.full) {
                        continue;
                    }
                    self.symlink(&path, &shown_path, &node, self.overwrite || staged);
                }
                NodeKind::File => {
                    if child_sel.is_some_and(|s| !s.full) {
                        continue;
                    }
                    if node.nlink > 1 {
                        let key = (node.dev, node.ino);
                        // Hard links are made once the staging directories
                        // are in place: they name final paths.
                        if let Some(first) = self.first_link.get(&key) {
                            self.links.push((shown_path, first.clone()));
                            continue;
                        }
                        self.first_link.insert(key, shown_path.clone());
                    }
                    if self
                        .jobs
                        .send(FileJob {
                            path,
                            shown: shown_path,
                            node,
                            fresh,
                            staged,
                        })
                        .is_err()
                    {
                        return Err(());
                    }
                }
            }
        }
        Ok(())
    }

    fn symlink(&mut self, path: &Path, shown: &Path, node: &Node, replace: bool) {
        let Some(target) = &node.target else {
            self.fail(shown, "the symlink has no target in the backup");
            return;
        };
        if fs::symlink_metadata(path).is_ok() {
            if !replace {
                return;
            }
            if fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
                self.fail(shown, "exists and is a directory; left alone");
                return;
            }
            let _ = fs::remove_file(path);
        }
        if let Err(e) = std::os::unix::fs::symlink(OsStr::from_bytes(target), path) {
            self.fail(shown, e);
            return;
        }
        if is_root() {
            let _ = std::os::unix::fs::lchown(path, Some(node.uid), Some(node.gid));
        }
        let t = filetime(node.mtime);
        if let Err(e) = filetime::set_symlink_file_times(path, t, t) {
            self.fail(
                shown,
                format!("restored, but its time could not be set: {e}"),
            );
        }
        self.symlinks += 1;
    }
}

/// The listings of the directories among `nodes`.
fn listings<'a>(nodes: impl Iterator<Item = &'a Node>) -> Vec<BlobId> {
    nodes
        .filter(|n| n.kind == NodeKind::Dir)
        .filter_map(|n| n.subtree.map(|t| t.0))
        .collect()
}

/// Downloads the backup's directory listings a level at a time, ahead of
/// the walk, when this device has not cached them (a new device): a few
/// requests instead of one per directory, each of which the walk would
/// wait a round trip for. Nothing is done when the top level's are cached
/// (the device made the backup); it stops when the walk is over. Best
/// effort: the walk loads whatever is not here yet itself.
fn prefetch_trees(
    cache: &Cache,
    remote: &dyn Remote,
    keys: &Keys,
    root: &Tree,
    walked: &AtomicBool,
) {
    let mut level = listings(root.nodes.iter());
    if cache.kept_all(&level) {
        return;
    }
    let mut seen = HashSet::new();
    while !level.is_empty() && !walked.load(Ordering::Relaxed) {
        // A directory stored twice (the same contents) is one listing.
        level.retain(|id| seen.insert(*id));
        cache.fetch_trees(remote, &level);
        let mut next = Vec::new();
        for id in &level {
            if walked.load(Ordering::Relaxed) {
                return;
            }
            if let Some(t) = cache.cached_tree(keys, &TreeId(*id)) {
                next.extend(listings(t.nodes.iter()));
            }
        }
        level = next;
    }
}

/// Opens downloaded chunks (`None`: missing or damaged), in order.
fn open_part(keys: &Keys, part: Chunks) -> Vec<Option<Vec<u8>>> {
    part.into_iter()
        .map(|(id, s)| blob::open(keys, BlobKind::Data, &id, &s?).ok())
        .collect()
}

/// Threads opening units at once, and units between download and writers
/// at most (each up to `BATCH_BYTES` of small files, or a window of a
/// large file).
const OPENERS: usize = 2;
const OPENING: usize = 3;

/// The pieces for the writers of one unit, its chunks opened.
fn open_unit(keys: &Keys, unit: Arrived) -> Vec<Piece> {
    match unit {
        Unit::Whole(jobs, sealed) => {
            let mut chunks = open_part(keys, sealed).into_iter();
            let files = jobs
                .into_iter()
                .map(|job| {
                    let mine = chunks.by_ref().take(job.node.content.len()).collect();
                    (job, mine)
                })
                .collect();
            vec![Piece::Files(files)]
        }
        Unit::Start(job) => vec![Piece::Start(job)],
        Unit::Window(sealed) => open_part(keys, sealed)
            .into_iter()
            .map(Piece::Chunk)
            .collect(),
        Unit::End => vec![Piece::End],
    }
}

/// Turns downloaded chunks into verified pieces for the writers, in order.
/// Units are opened by [`OPENERS`] threads side by side, each a whole unit,
/// and handed on in their order: before, the two threads split each unit
/// and met at its end, so one waited whenever its half was the smaller
/// (a large file's window, a batch's halves of different sizes).
fn opener(
    keys: &Keys,
    rx: Receiver<Sealed>,
    out: Sender<Piece>,
    failed: &Mutex<Option<ClientError>>,
) {
    std::thread::scope(|s| {
        let (work_tx, work_rx) = bounded::<(usize, Arrived)>(0);
        let (done_tx, done_rx) = bounded::<(usize, std::thread::Result<Vec<Piece>>)>(OPENERS);
        // A unit takes a slot when it is handed to an opener and gives it
        // back once its pieces are handed on: this bounds what is held.
        let (slot_tx, slot_rx) = bounded::<()>(OPENING);
        for _ in 0..OPENING {
            let _ = slot_tx.send(());
        }
        for _ in 0..OPENERS {
            let (work_rx, done_tx) = (work_rx.clone(), done_tx.clone());
            s.spawn(move || {
                for (n, unit) in work_rx {
                    // Only a bug panics here; it is passed on below, so
                    // that the restore stops instead of waiting for this
                    // unit for ever.
                    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        open_unit(keys, unit)
                    }));
                    if done_tx.send((n, opened)).is_err() {
                        return;
                    }
                }
            });
        }
        drop((work_rx, done_tx));
        s.spawn(move || {
            let mut next = 0;
            let mut held = HashMap::new();
            for (n, opened) in done_rx {
                match opened {
                    Ok(pieces) => held.insert(n, pieces),
                    Err(panic) => std::panic::resume_unwind(panic),
                };
                while let Some(pieces) = held.remove(&next) {
                    for piece in pieces {
                        if out.send(piece).is_err() {
                            return;
                        }
                    }
                    next += 1;
                    let _ = slot_tx.send(());
                }
            }
        });
        // The chunks of a download, or why it failed: then the restore stops.
        let arrived = |pending: Pending| match pending.recv() {
            Ok(Ok(sealed)) => Some(sealed),
            Ok(Err(e)) => {
                if let Ok(mut f) = failed.lock() {
                    f.get_or_insert(e);
                }
                None
            }
            Err(_) => None,
        };
        for (n, unit) in rx.into_iter().enumerate() {
            if slot_rx.recv().is_err() {
                return;
            }
            let unit = match unit {
                Unit::Whole(jobs, pending) => match arrived(pending) {
                    Some(sealed) => Unit::Whole(jobs, sealed),
                    None => return,
                },
                Unit::Start(job) => Unit::Start(job),
                Unit::Window(pending) => match arrived(pending) {
                    Some(sealed) => Unit::Window(sealed),
                    None => return,
                },
                Unit::End => Unit::End,
            };
            if work_tx.send((n, unit)).is_err() {
                return;
            }
        }
    });
}

/// Downloads chunks, still sealed, in order.
fn download(remote: &dyn Remote, ids: Vec<BlobId>) -> Result<Chunks> {
    let mut out = Vec::with_capacity(ids.len());
    for part in ids.chunks(1000) {
        out.extend(part.iter().copied().zip(remote.fetch(part)?));
    }
    Ok(out)
}

/// A download asked of the download threads, and where its answer goes.
type Request = (Vec<BlobId>, Sender<Result<Chunks>>);

/// A download thread.
fn downloader(remote: &dyn Remote, requests: Receiver<Request>) {
    for (ids, reply) in requests {
        let _ = reply.send(download(remote, ids));
    }
}

/// Hands the opener a download of `ids` in `wrap`, then starts it on a
/// free download thread (waiting for one). In that order, nothing is
/// downloaded once the opener has stopped, and the fetcher never holds an
/// answer. False once the restore is stopping.
fn start(
    requests: &Sender<Request>,
    out: &Sender<Sealed>,
    ids: Vec<BlobId>,
    wrap: impl FnOnce(Pending) -> Sealed,
) -> bool {
    let (reply, pending) = bounded(1);
    // If the download threads are gone (only a bug ends them early), the
    // opener finds the reply dropped and stops.
    out.send(wrap(pending)).is_ok() && requests.send((ids, reply)).is_ok()
}

/// Batches file jobs into downloads, handed on in order.
fn fetcher(
    keys: &Keys,
    jobs: Receiver<FileJob>,
    requests: Sender<Request>,
    out: Sender<Sealed>,
    overwrite: bool,
    shared: &Mutex<Shared>,
) {
    let mut batch: Vec<FileJob> = Vec::new();
    let mut batch_bytes = 0u64;
    let mut batch_chunks = 0usize;
    let flush = |batch: &mut Vec<FileJob>| -> bool {
        let ids: Vec<BlobId> = batch
            .iter()
            .flat_map(|j| j.node.content.iter().map(|c| c.0))
            .collect();
        if ids.is_empty() && batch.is_empty() {
            return true;
        }
        let files = std::mem::take(batch);
        start(&requests, &out, ids, |pending| {
            Sealed::Whole(files, pending)
        })
    };
    for job in jobs {
        if !job.fresh && fs::symlink_metadata(&job.path).is_ok() {
            if let Some(f) = already_restored(keys, &job.path, &job.node) {
                // In a staging directory an earlier run may have been
                // stopped between a file's last byte and its metadata.
                let meta = if job.staged {
                    set_file_meta(&f, &job.node)
                } else {
                    Ok(())
                };
                if let Ok(mut s) = shared.lock() {
                    match meta {
                        Ok(()) => {
                            s.already_restored += 1;
                            if job.node.nlink > 1 {
                                s.kept_link_targets.push(job.shown.clone());
                            }
                        }
                        Err(e) => s.failed.push(format!(
                            "{}: restored, but its metadata could not be set: {e}",
                            job.shown.display()
                        )),
                    }
                }
                continue;
            }
            // In a staging directory, what is there is an earlier run's.
            if !overwrite && !job.staged {
                if let Ok(mut s) = shared.lock() {
                    s.skipped_existing += 1;
                    s.warnings
                        .push(format!("{} exists; left alone", job.shown.display()));
                }
                continue;
            }
        }
        if batched(&job.node) {
            batch_bytes += job.node.size;
            batch_chunks += job.node.content.len();
            batch.push(job);
            if batch_full(batch.len(), batch_bytes, batch_chunks) && !flush(&mut batch) {
                return;
            }
            if batch.is_empty() {
                batch_bytes = 0;
                batch_chunks = 0;
            }
            continue;
        }
        if !flush(&mut batch) {
            return;
        }
        batch_bytes = 0;
        batch_chunks = 0;
        let ids: Vec<BlobId> = job.node.content.iter().map(|c| c.0).collect();
        if out.send(Sealed::Start(Box::new(job))).is_err() {
            return;
        }
        for window in ids.chunks(BIG_WINDOW) {
            if !start(&requests, &out, window.to_vec(), Sealed::Window) {
                return;
            }
        }
        if out.send(Sealed::End).is_err() {
            return;
        }
    }
    flush(&mut batch);
}

/// Writes one file from its verified chunks into a hidden temp file beside
/// it, and renames it into place only when it is complete and its
/// metadata is set: an interrupted restore (kill, disk full) never leaves a
/// half-written file under its final name, and a re-run can trust any file
/// it finds there. In a staging directory, which is out of sight itself,
/// the file is written under its own name.
struct FileWriter {
    job: FileJob,
    /// Where the data goes: the temp file, or in a staging directory the
    /// file itself.
    temp: PathBuf,
    file: Option<File>,
    written: u64,
    damaged: bool,
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.as_bytes().to_vec())
        .unwrap_or_default();
    let mut t = b".".to_vec();
    t.extend_from_slice(&name);
    t.extend_from_slice(b".haven-part");
    path.with_file_name(OsStr::from_bytes(&t))
}

impl FileWriter {
    fn create(job: FileJob) -> std::result::Result<Self, Box<(FileJob, std::io::Error)>> {
        if !job.fresh && fs::symlink_metadata(&job.path).is_ok_and(|m| m.is_dir()) {
            let e = std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists and is a directory",
            );
            return Err(Box::new((job, e)));
        }
        let temp = if job.staged {
            job.path.clone()
        } else {
            temp_path(&job.path)
        };
        // A stale temp file from an interrupted run (never followed if it
        // is a symlink: remove_file removes the link itself).
        if !job.fresh {
            let _ = fs::remove_file(&temp);
        }
        match File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
        {
            Ok(f) => Ok(FileWriter {
                job,
                temp,
                file: Some(f),
                written: 0,
                damaged: false,
            }),
            Err(e) => Err(Box::new((job, e))),
        }
    }

    fn chunk(&mut self, data: Option<Vec<u8>>) -> std::io::Result<()> {
        let Some(f) = self.file.as_mut() else {
            return Ok(());
        };
        match data {
            // More data than the recorded size: a forged node; stop writing.
            Some(d) if !self.damaged && self.written + d.len() as u64 <= self.job.node.size => {
                if let Err(e) = f.write_all(&d) {
                    self.abandon();
                    return Err(e);
                }
                self.written += d.len() as u64;
            }
            _ => self.damaged = true,
        }
        Ok(())
    }

    fn abandon(&mut self) {
        self.file = None;
        let _ = fs::remove_file(&self.temp);
    }

    /// Sets metadata and renames into place; returns the bytes written or
    /// why the file could not be restored.
    fn finish(mut self) -> (FileJob, std::result::Result<u64, String>) {
        let Some(f) = self.file.take() else {
            return (self.job, Err("not created".into()));
        };
        let node = &self.job.node;
        if self.damaged || self.written != node.size {
            let _ = fs::remove_file(&self.temp);
            let why = if self.damaged {
                "some of its data is missing or damaged on the server, so it was not restored"
                    .to_string()
            } else {
                format!(
                    "the backup holds {} of its {} bytes, so it was not restored",
                    self.written, node.size
                )
            };
            return (self.job, Err(why));
        }
        let res = (|| -> std::io::Result<()> {
            set_file_meta(&f, node)?;
            drop(f);
            if self.job.staged {
                Ok(())
            } else {
                fs::rename(&self.temp, &self.job.path)
            }
        })();
        if res.is_err() {
            let _ = fs::remove_file(&self.temp);
        }
        let written = self.written;
        (
            self.job,
            res.map(|_| written)
                .map_err(|e| format!("could not be put in place: {e}")),
        )
    }
}

/// What writing one file came to.
enum Written {
    Done(Box<FileJob>, std::result::Result<u64, String>),
    NotCreated(PathBuf, std::io::Error),
    WriteFailed(PathBuf, std::io::Error),
}

/// Work for a writer thread.
enum Task {
    /// Small files, each with all its chunks.
    Files(Vec<SmallFile>),
    /// A large file; its chunks follow through the receiver, which closes
    /// at the file's end.
    Large(Box<FileJob>, Receiver<Option<Vec<u8>>>),
}

/// Writer threads. Creating and writing files is most of a restore's
/// time, and the kernel's part of it runs on whichever core calls it.
const WRITERS: usize = 2;
/// A batch of small files is split into this many tasks, so the writers
/// share it evenly.
const BATCH_PARTS: usize = 4;
/// What creating a file costs, counted in bytes written, when a batch is
/// split.
const FILE_COST: u64 = 16 << 10;

fn write_file(job: FileJob, chunks: impl IntoIterator<Item = Option<Vec<u8>>>) -> Written {
    match FileWriter::create(job) {
        Ok(mut fw) => {
            for c in chunks {
                if let Err(e) = fw.chunk(c) {
                    return Written::WriteFailed(fw.job.shown.clone(), e);
                }
            }
            let (job, res) = fw.finish();
            Written::Done(Box::new(job), res)
        }
        Err(b) => Written::NotCreated(b.0.shown, b.1),
    }
}

/// The writer threads: hands them the pieces in order (a batch of small
/// files split among them, a large file's chunks to the one writing it)
/// and gives `take` what each file came to, until the pieces end, a
/// writer is gone or a full disk set `halted`.
fn write_pieces(
    pieces: impl IntoIterator<Item = Piece>,
    halted: &AtomicBool,
    mut take: impl FnMut(Written),
) -> std::thread::Result<()> {
    std::thread::scope(|s| {
        let (task_tx, task_rx) = bounded::<Task>(WRITERS);
        let (written_tx, written_rx) = unbounded::<Written>();
        let writers: Vec<_> = (0..WRITERS)
            .map(|_| {
                let (tasks, results) = (task_rx.clone(), written_tx.clone());
                s.spawn(move || writer(tasks, results, halted))
            })
            .collect();
        // Only the writers hold these now: when they are all gone, sends fail.
        drop((task_rx, written_tx));
        // The chunks of the large file being written.
        let mut large: Option<Sender<Option<Vec<u8>>>> = None;
        for piece in pieces {
            let sent = match piece {
                Piece::Files(batch) => split_files(batch, BATCH_PARTS)
                    .into_iter()
                    .all(|part| task_tx.send(Task::Files(part)).is_ok()),
                Piece::Start(job) => {
                    let (tx, rx) = bounded(BIG_WINDOW);
                    large = Some(tx);
                    task_tx.send(Task::Large(job, rx)).is_ok()
                }
                Piece::Chunk(c) => {
                    // Fails only if the file failed already: that is reported.
                    if let Some(tx) = &large {
                        let _ = tx.send(c);
                    }
                    true
                }
                Piece::End => {
                    large = None;
                    true
                }
            };
            written_rx.try_iter().for_each(&mut take);
            if !sent || halted.load(Ordering::Relaxed) {
                // Dropping the pieces stops the download and the walk.
                break;
            }
        }
        drop((large, task_tx));
        written_rx.into_iter().for_each(&mut take);
        // Every writer joined, whichever failed: a scope whose thread
        // panicked unjoined panics itself.
        join_all(writers)
    })
}

/// The write stage alone, for `cargo bench -p haven-client`: writes each
/// file (a name and its chunks) into the empty directory `dir` as a
/// restore writes into a directory it created (see [`staging_name`]), in
/// the same batches, by the same writer threads, with owner (as root),
/// mode and times set; returns the bytes written.
#[doc(hidden)]
pub fn write_stage(dir: &Path, files: Vec<(String, Vec<Vec<u8>>)>) -> std::io::Result<u64> {
    let owner = fs::metadata(dir)?;
    let time = Timestamp {
        secs: 1_700_000_000,
        nanos: 0,
    };
    let mut pieces = Vec::new();
    let mut batch: Vec<SmallFile> = Vec::new();
    let (mut bytes, mut chunks) = (0u64, 0usize);
    let flush = |pieces: &mut Vec<Piece>, batch: &mut Vec<SmallFile>| {
        if !batch.is_empty() {
            pieces.push(Piece::Files(std::mem::take(batch)));
        }
    };
    for (name, data) in files {
        let path = dir.join(&name);
        let node = Node {
            name: serde_bytes::ByteBuf::from(name.into_bytes()),
            kind: NodeKind::File,
            mode: 0o644,
            uid: owner.uid(),
            gid: owner.gid(),
            mtime: time,
            ctime: time,
            dev: 0,
            ino: 0,
            nlink: 1,
            size: data.iter().map(|c| c.len() as u64).sum(),
            content: vec![haven_format::ChunkId(BlobId([0; 32])); data.len()],
            subtree: None,
            target: None,
        };
        let job = FileJob {
            shown: path.clone(),
            path,
            node,
            fresh: true,
            staged: true,
        };
        if batched(&job.node) {
            bytes += job.node.size;
            chunks += data.len();
            batch.push((job, data.into_iter().map(Some).collect()));
            if batch_full(batch.len(), bytes, chunks) {
                flush(&mut pieces, &mut batch);
                (bytes, chunks) = (0, 0);
            }
            continue;
        }
        flush(&mut pieces, &mut batch);
        (bytes, chunks) = (0, 0);
        pieces.push(Piece::Start(Box::new(job)));
        pieces.extend(data.into_iter().map(|c| Piece::Chunk(Some(c))));
        pieces.push(Piece::End);
    }
    flush(&mut pieces, &mut batch);
    let mut written = 0;
    let mut failed = None;
    write_pieces(pieces, &AtomicBool::new(false), |w| match w {
        Written::Done(_, Ok(n)) => written += n,
        Written::Done(job, Err(why)) => {
            let why = format!("{}: {why}", job.shown.display());
            failed.get_or_insert(std::io::Error::other(why));
        }
        Written::NotCreated(_, e) | Written::WriteFailed(_, e) => {
            failed.get_or_insert(e);
        }
    })
    .map_err(|_| std::io::Error::other("a writer thread panicked"))?;
    failed.map_or(Ok(written), Err)
}

/// Splits a batch of small files into about `parts` runs of similar cost.
fn split_files(batch: Vec<SmallFile>, parts: usize) -> Vec<Vec<SmallFile>> {
    let cost = |j: &FileJob| j.node.size.saturating_add(FILE_COST);
    let total: u64 = batch.iter().map(|(j, _)| cost(j)).sum();
    let share = total / parts as u64 + 1;
    let mut out = Vec::with_capacity(parts);
    let mut run = Vec::new();
    let mut acc = 0u64;
    for file in batch {
        acc = acc.saturating_add(cost(&file.0));
        run.push(file);
        if acc >= share {
            out.push(std::mem::take(&mut run));
            acc = 0;
        }
    }
    if !run.is_empty() {
        out.push(run);
    }
    out
}

/// A writer thread: writes files until the tasks end or a full disk
/// (`halted`) makes going on pointless.
fn writer(tasks: Receiver<Task>, results: Sender<Written>, halted: &AtomicBool) {
    let write = |job: FileJob, chunks: &mut dyn Iterator<Item = Option<Vec<u8>>>| {
        if halted.load(Ordering::Relaxed) {
            return false;
        }
        let w = write_file(job, chunks);
        if let Written::WriteFailed(_, e) = &w
            && e.kind() == std::io::ErrorKind::StorageFull
        {
            halted.store(true, Ordering::Relaxed);
        }
        results.send(w).is_ok()
    };
    for task in tasks {
        let going = match task {
            Task::Files(files) => files
                .into_iter()
                .all(|(job, chunks)| write(job, &mut chunks.into_iter())),
            Task::Large(job, chunks) => write(*job, &mut chunks.into_iter()),
        };
        if !going && !halted.load(Ordering::Relaxed) {
            return;
        }
    }
}

/// The file at `path`, if it already holds exactly the content of `node`
/// (same size and the same chunk ids when re-chunked here): a previous,
/// interrupted restore finished it.
fn already_restored(keys: &Keys, path: &Path, node: &Node) -> Option<File> {
    let f = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    if !f
        .metadata()
        .is_ok_and(|m| m.is_file() && m.len() == node.size)
    {
        return None;
    }
    let mut ids = node.content.iter();
    for chunk in haven_format::chunker::Chunker::new(&f, keys).expecting(node.size) {
        let data = chunk.ok()?;
        if ids.next().map(|c| c.0) != Some(blob::blob_id(keys, BlobKind::Data, &data)) {
            return None;
        }
    }
    ids.next().is_none().then_some(f)
}

/// Joins every thread; an error if any panicked.
fn join_all(threads: Vec<std::thread::ScopedJoinHandle<'_, ()>>) -> std::thread::Result<()> {
    let joined: Vec<_> = threads.into_iter().map(|t| t.join()).collect();
    joined.into_iter().collect()
}

/// Restores a snapshot.
pub fn restore(
    profile: &crate::profile::Profile,
    cache_base: PathBuf,
    remote: &dyn Remote,
    record: &SnapshotRecord,
    opts: &RestoreOptions,
    progress: &dyn Fn(&RestoreProgress),
) -> Result<RestoreReport> {
    let started = Instant::now();
    let requests_before = remote.requests();
    let keys = crate::dictionary::for_reading(profile.master_key()?.keys(), remote)?;
    let cache = Cache::new(cache_base, profile.account_id).opening_each_tree_once();
    let snap = crate::backup::load_snapshot(remote, &keys, record)?;
    let root = cache.load_tree(remote, &keys, &snap.root)?;
    // An empty target holds nothing an earlier run left.
    let fresh = match fs::read_dir(&opts.target) {
        Ok(mut d) => d.next().is_none(),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    };
    fs::create_dir_all(&opts.target).map_err(|e| ClientError::io("create", &opts.target, e))?;
    let target =
        fs::canonicalize(&opts.target).map_err(|e| ClientError::io("open", &opts.target, e))?;
    let mut sel_paths = Vec::new();
    for p in &opts.paths {
        if !p.is_absolute() {
            return Err(ClientError::new(ErrorCode::BadRequest, format!("{} is not an absolute path.", p.display()))
                .fix("Name paths as they were backed up, e.g. /home/ann/Documents (see `haven backups list`)."));
        }
        sel_paths.push(crate::config::absolute(p)?);
    }
    let sel = (!sel_paths.is_empty()).then(|| PathTree::new(&sel_paths));
    let tag = staging_tag(&record.id, &sel_paths);
    let shared = Mutex::new(Shared::default());
    let (job_tx, job_rx) = bounded::<FileJob>(1024);
    let (sealed_tx, sealed_rx) = bounded::<Sealed>(2);
    // A piece of small files holds up to BATCH_BYTES.
    let (piece_tx, piece_rx) = bounded::<Piece>(3);
    let mut report = RestoreReport {
        snapshot: record.id.clone(),
        target: target.display().to_string(),
        ..Default::default()
    };
    let mut live = RestoreProgress {
        total_files: record.files,
        total_bytes: record.bytes,
        ..Default::default()
    };
    let mut last = Instant::now();
    // A failure that makes going on pointless (the disk is full).
    let mut fatal: Option<ClientError> = None;
    // Files written by this restore that other paths may hard-link to.
    let mut link_targets: HashSet<PathBuf> = HashSet::new();

    let halted = AtomicBool::new(false);
    // Why a download failed, which stops the restore.
    let download_failed: Mutex<Option<ClientError>> = Mutex::new(None);

    // Set once the walk is over: listings fetched after that are wasted.
    let walked = AtomicBool::new(false);

    let (walker_out, fetch_out, open_out, writers_out) = std::thread::scope(|s| {
        if sel.is_none() {
            s.spawn(|| prefetch_trees(&cache, remote, &keys, &root, &walked));
        }
        let walker = s.spawn(|| {
            let mut w = Walker {
                keys: &keys,
                remote,
                cache: &cache,
                overwrite: opts.overwrite,
                jobs: job_tx,
                shared: &shared,
                dirs: Vec::new(),
                links: Vec::new(),
                first_link: HashMap::new(),
                symlinks: 0,
                unmatched: Vec::new(),
                staged_roots: Vec::new(),
                tag: &tag,
            };
            let _ = w.walk(
                &target,
                &target,
                root.clone(),
                sel.as_ref(),
                Path::new("/"),
                fresh,
                false,
            );
            walked.store(true, Ordering::Relaxed);
            (w.dirs, w.links, w.symlinks, w.unmatched, w.staged_roots)
        });
        let (request_tx, request_rx) = bounded::<Request>(0);
        let downloaders: Vec<_> = (0..DOWNLOADS)
            .map(|_| {
                let requests = request_rx.clone();
                s.spawn(move || downloader(remote, requests))
            })
            .collect();
        drop(request_rx);
        let fetch = s.spawn(|| {
            fetcher(
                &keys,
                job_rx,
                request_tx,
                sealed_tx,
                opts.overwrite,
                &shared,
            )
        });
        let open = s.spawn(|| opener(&keys, sealed_rx, piece_tx, &download_failed));
        let mut take = |w: Written, report: &mut RestoreReport, live: &mut RestoreProgress| match w
        {
            Written::Done(job, Ok(n)) => {
                if job.node.nlink > 1 {
                    link_targets.insert(job.shown);
                }
                report.files += 1;
                report.bytes += n;
                live.files += 1;
                live.bytes += n;
            }
            Written::Done(job, Err(why)) => report
                .failed
                .push(format!("{}: {why}", job.shown.display())),
            Written::NotCreated(path, e) => report.failed.push(format!("{}: {e}", path.display())),
            Written::WriteFailed(path, e) => write_failed(&mut fatal, report, &path, e),
        };
        let writers_out = write_pieces(piece_rx, &halted, |w| {
            take(w, &mut report, &mut live);
            if last.elapsed().as_millis() >= 100 {
                last = Instant::now();
                progress(&live);
            }
        });
        progress(&live);
        // Every thread joined, whichever failed: a scope whose thread
        // panicked unjoined panics itself.
        let fetch_out = join_all(downloaders).and(fetch.join());
        (walker.join(), fetch_out, open.join(), writers_out)
    });
    let (dirs, links, symlinks, unmatched, staged_roots) = walker_out
        .map_err(|_| ClientError::new(ErrorCode::Internal, "The restore walker crashed."))?;
    fetch_out
        .map_err(|_| ClientError::new(ErrorCode::Internal, "The restore download crashed."))?;
    open_out.map_err(|_| {
        ClientError::new(
            ErrorCode::Internal,
            "The restore's decryption thread crashed.",
        )
    })?;
    writers_out
        .map_err(|_| ClientError::new(ErrorCode::Internal, "A restore writer thread crashed."))?;
    // Failed: the staging directories stay, and a re-run continues in them.
    // A full disk first: it stopped the rest.
    if let Some(e) = fatal.or(download_failed.into_inner().ok().flatten()) {
        return Err(e);
    }
    let mut unplaced = Vec::new();
    for (staging, path) in staged_roots {
        if let Err(e) = rename_new(&staging, &path) {
            report.failed.push(format!(
                "{}: restored, but left in {} because it could not be renamed into place ({e}); rename it yourself",
                path.display(),
                staging.display()
            ));
            unplaced.push(path);
        }
    }

    let kept = shared
        .lock()
        .map(|mut s| std::mem::take(&mut s.kept_link_targets))
        .unwrap_or_default();
    link_targets.extend(kept);
    for (link, first) in links {
        // Something else took the place of a staging directory's final
        // path: nothing is linked into it or out of it.
        if unplaced
            .iter()
            .any(|u| link.starts_with(u) || first.starts_with(u))
        {
            continue;
        }
        if fs::symlink_metadata(&link).is_ok() {
            if !opts.overwrite {
                continue;
            }
            let _ = fs::remove_file(&link);
        }
        if !link_targets.contains(&first) {
            report.failed.push(format!(
                "{}: not restored, because {} (the file it is a hard link of) was not",
                link.display(),
                first.display()
            ));
            continue;
        }
        match fs::hard_link(&first, &link) {
            Ok(()) => report.hardlinks += 1,
            Err(e) => report.failed.push(format!(
                "{}: cannot link to {}: {e}",
                link.display(),
                first.display()
            )),
        }
    }
    for (path, node) in dirs.iter().rev() {
        if unplaced.iter().any(|u| path.starts_with(u)) {
            continue;
        }
        let res = (|| -> std::io::Result<()> {
            if is_root() {
                std::os::unix::fs::lchown(path, Some(node.uid), Some(node.gid))?;
            }
            fs::set_permissions(path, fs::Permissions::from_mode(node.mode))?;
            let t = filetime(node.mtime);
            filetime::set_file_times(path, t, t)
        })();
        if let Err(e) = res {
            report.failed.push(format!(
                "{}: restored, but its metadata could not be set: {e}",
                path.display()
            ));
        }
    }
    report.dirs = dirs
        .iter()
        .filter(|(p, _)| !unplaced.iter().any(|u| p.starts_with(u)))
        .count() as u64;
    report.symlinks = symlinks;
    for p in sel_paths
        .iter()
        .filter(|p| unmatched.iter().any(|u| p.starts_with(u)))
    {
        report
            .failed
            .push(format!("{}: not in this backup", p.display()));
    }
    if let Ok(s) = shared.into_inner() {
        report.failed.extend(s.failed);
        report.skipped_existing = s.skipped_existing;
        report.already_restored = s.already_restored;
        report.warnings.extend(s.warnings);
    }
    report.duration_secs = started.elapsed().as_secs_f64();
    report.requests = remote.requests() - requests_before;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The benchmark's write stage writes what it is given, bit for bit:
    /// small files in batches split among the writers, a large file in a
    /// window of its chunks, with mode and times set.
    #[test]
    fn the_write_stage_writes_every_file_whole() {
        let dir = tempfile::tempdir().expect("temp dir");
        let content = |i: usize, len: usize| -> Vec<u8> {
            (0..len).map(|j| (i * 31 + j * 7 % 251) as u8).collect()
        };
        let mut files: Vec<(String, Vec<Vec<u8>>)> = (0..300)
            .map(|i| (format!("small-{i}"), vec![content(i, i * 13)]))
            .collect();
        let large: Vec<Vec<u8>> = (0..BIG_WINDOW * 2 + 1)
            .map(|k| content(1000 + k, 1 << 20))
            .collect();
        files.insert(150, ("large".into(), large));
        let expected = files.clone();
        let total: usize = files.iter().flat_map(|(_, c)| c).map(Vec::len).sum();
        let written = write_stage(dir.path(), files).expect("written");
        assert_eq!(written as usize, total);
        for (name, chunks) in expected {
            let path = dir.path().join(&name);
            assert_eq!(fs::read(&path).expect("read"), chunks.concat(), "{name}");
            let meta = fs::metadata(&path).expect("metadata");
            assert_eq!(meta.mode() & 0o7777, 0o644, "{name}");
            assert_eq!(meta.mtime(), 1_700_000_000, "{name}");
        }
        assert_eq!(fs::read_dir(dir.path()).expect("list").count(), 301);
    }
}

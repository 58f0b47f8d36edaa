//! The embedded object store: files under a directory.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;

use crate::{ObjectStore, StoreError, check_key};

/// Objects as files under `root/objects`, written durably: a temp file in
/// `root/tmp`, fsync, rename into place, fsync the directory. A crash at
/// any point leaves either no object or the whole object, plus at worst a
/// stray temp file that [`LocalDirStore::open`] removes.
#[derive(Clone, Debug)]
pub struct LocalDirStore {
    objects: PathBuf,
    tmp: PathBuf,
    /// Directories whose own entry is known durable (fsynced in their
    /// parent after they were created): a put there fsyncs only the
    /// directory it renames into, not the whole chain up to the root.
    durable: Arc<Mutex<HashSet<PathBuf>>>,
}

impl LocalDirStore {
    /// Opens (creating) a store rooted at `root`.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        let objects = root.join("objects");
        let tmp = root.join("tmp");
        fs::create_dir_all(&objects)?;
        fs::create_dir_all(&tmp)?;
        // Temp files untouched for an hour belong to puts that never
        // finished (the process died). Younger ones may be a running
        // server's: `haven-server scrub`, `gc` and `user` open the store
        // while it serves.
        let cutoff = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        for e in fs::read_dir(&tmp)? {
            let e = e?;
            let stale = e
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < cutoff);
            if stale {
                let _ = fs::remove_file(e.path());
            }
        }
        Ok(LocalDirStore {
            objects,
            tmp,
            durable: Arc::default(),
        })
    }

    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        check_key(key)?;
        Ok(self.objects.join(key))
    }
}

fn not_found(e: io::Error) -> StoreError {
    if e.kind() == io::ErrorKind::NotFound {
        StoreError::NotFound
    } else {
        StoreError::Io(e)
    }
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

type Durable = Mutex<HashSet<PathBuf>>;

fn put_blocking(
    tmp_dir: &Path,
    root: &Path,
    durable: &Durable,
    path: &Path,
    bytes: &[u8],
) -> io::Result<()> {
    let parent = path
        .parent()
        .ok_or_else(|| io::Error::other("object path without parent"))?;
    fs::create_dir_all(parent)?;
    let tmp_path = tmp_dir.join(format!("put-{:016x}", rand::random::<u64>()));
    let result = (|| {
        let mut f = File::create(&tmp_path)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp_path, path)?;
        sync_dirs(parent, root, durable)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp_path);
    }
    result
}

/// `dir` (the new entry in it), then every directory above it up to the
/// store root that is not known durable yet: a fresh
/// `packs/<account>/<xx>/` chain must survive power loss too, and a
/// concurrent put may have created it without syncing it yet.
fn sync_dirs(dir: &Path, root: &Path, durable: &Durable) -> io::Result<()> {
    let known = |d: &Path| durable.lock().map(|s| s.contains(d)).unwrap_or(false);
    let mut synced = Vec::new();
    let mut next = Some(dir);
    while let Some(d) = next {
        fsync_dir(d)?;
        synced.push(d.to_path_buf());
        if d == root || known(d) {
            break;
        }
        next = d.parent();
    }
    // Each of these is durable in its parent now: the loop went on to the
    // parent of every one except the last, which is the root or known.
    if let Ok(mut s) = durable.lock() {
        s.extend(synced);
    }
    Ok(())
}

/// Moves `from` into place as `path`: fsync it, rename it (no copy), sync
/// the directories. Across filesystems it falls back to a durable copy.
fn put_file_blocking(
    tmp_dir: &Path,
    root: &Path,
    durable: &Durable,
    path: &Path,
    from: &Path,
) -> io::Result<()> {
    let parent = path
        .parent()
        .ok_or_else(|| io::Error::other("object path without parent"))?;
    fs::create_dir_all(parent)?;
    File::open(from)?.sync_all()?;
    match fs::rename(from, path) {
        Ok(()) => sync_dirs(parent, root, durable),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            let bytes = fs::read(from)?;
            put_blocking(tmp_dir, root, durable, path, &bytes)?;
            fs::remove_file(from)
        }
        Err(e) => Err(e),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Io(io::Error::other(e)))?
}

#[async_trait]
impl ObjectStore for LocalDirStore {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        let path = self.path(key)?;
        let (tmp, root) = (self.tmp.clone(), self.objects.clone());
        let durable = self.durable.clone();
        blocking(move || Ok(put_blocking(&tmp, &root, &durable, &path, &bytes)?)).await
    }

    async fn put_file(&self, key: &str, from: &Path, _len: u64) -> Result<(), StoreError> {
        let path = self.path(key)?;
        let (tmp, root, from) = (self.tmp.clone(), self.objects.clone(), from.to_path_buf());
        let durable = self.durable.clone();
        blocking(move || Ok(put_file_blocking(&tmp, &root, &durable, &path, &from)?)).await
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        let path = self.path(key)?;
        blocking(move || fs::read(&path).map_err(not_found)).await
    }

    async fn get_ranges(
        &self,
        key: &str,
        ranges: Vec<(u64, u32)>,
    ) -> Result<Vec<Bytes>, StoreError> {
        let path = self.path(key)?;
        blocking(move || {
            let f = File::open(&path).map_err(not_found)?;
            let size = f.metadata()?.len();
            for &(offset, len) in &ranges {
                if offset.checked_add(len as u64).is_none_or(|end| end > size) {
                    return Err(StoreError::Invalid(format!(
                        "range {offset}+{len} beyond {size} bytes"
                    )));
                }
            }
            let mut out = Vec::with_capacity(ranges.len());
            for run in runs(&ranges) {
                let (start, end) = (run[0].0, run[run.len() - 1].0 + run[run.len() - 1].1 as u64);
                let mut buf = vec![0u8; (end - start) as usize];
                f.read_exact_at(&mut buf, start)?;
                let buf = Bytes::from(buf);
                for &(offset, len) in run {
                    let at = (offset - start) as usize;
                    out.push(buf.slice(at..at + len as usize));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn size(&self, key: &str) -> Result<Option<u64>, StoreError> {
        let path = self.path(key)?;
        blocking(move || match fs::metadata(&path) {
            Ok(m) => Ok(m.is_file().then_some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path(key)?;
        blocking(move || match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        })
        .await
    }

    async fn total_bytes(&self) -> Result<u64, StoreError> {
        let root = self.objects.clone();
        blocking(move || {
            let mut total = 0;
            let mut stack = vec![root];
            while let Some(dir) = stack.pop() {
                for e in fs::read_dir(&dir)? {
                    let e = e?;
                    let m = e.metadata()?;
                    if m.is_dir() {
                        stack.push(e.path());
                    } else {
                        total += m.len();
                    }
                }
            }
            Ok(total)
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let root = self.objects.clone();
        let prefix = prefix.to_string();
        // Walk from the prefix's own directory, not the whole store.
        let start = match prefix.rfind('/') {
            Some(i) => {
                check_key(&prefix[..i])?;
                root.join(&prefix[..i])
            }
            None => root.clone(),
        };
        blocking(move || {
            let mut out = Vec::new();
            let mut stack = vec![start];
            while let Some(dir) = stack.pop() {
                let entries = match fs::read_dir(&dir) {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e.into()),
                };
                for e in entries {
                    let e = e?;
                    let p = e.path();
                    if e.file_type()?.is_dir() {
                        stack.push(p);
                    } else if let Ok(rel) = p.strip_prefix(&root) {
                        let key = rel.to_string_lossy().into_owned();
                        if key.starts_with(&prefix) {
                            out.push(key);
                        }
                    }
                }
            }
            out.sort();
            Ok(out)
        })
        .await
    }
}

/// Bytes between two ranges that a read still spans rather than being
/// split in two, and the most one read spans.
const RUN_GAP: u64 = 64 << 10;
const RUN_SPAN: u64 = 8 << 20;

/// Splits ranges (already checked to lie in the object) into runs that are
/// each read with one `pread`: a restore asks for a pack's blobs in the
/// order they were written, mostly back to back. A run only goes forward,
/// skips at most `RUN_GAP` bytes at a time and spans at most `RUN_SPAN`
/// (or one range, however long). The gaps read in all come to at most the
/// bytes asked for, so a call never holds more than twice what it returns,
/// whatever the ranges (a fetch may repeat ids to make many short runs).
fn runs(ranges: &[(u64, u32)]) -> Vec<&[(u64, u32)]> {
    let mut gap_budget: u64 = ranges.iter().map(|r| r.1 as u64).sum();
    let mut out = Vec::new();
    let mut first = 0;
    for i in 1..=ranges.len() {
        let join = ranges.get(i).and_then(|&(offset, len)| {
            let (start, prev) = (ranges[first].0, ranges[i - 1]);
            let prev_end = prev.0 + prev.1 as u64;
            let gap = offset.checked_sub(prev_end)?;
            (gap <= RUN_GAP.min(gap_budget) && offset + len as u64 - start <= RUN_SPAN)
                .then_some(gap)
        });
        match join {
            Some(gap) => gap_budget -= gap,
            None => {
                out.push(&ranges[first..i]);
                first = i;
            }
        }
    }
    out
}

#[cfg(test)]
mod run_tests {
    use super::*;

    #[test]
    fn runs_go_forward_within_their_limits() {
        let r = [
            (0, 10),
            (10, 10),
            (30, 5),
            (5, 5),
            (100_000, 4),
            (100_004, 1),
        ];
        let got: Vec<usize> = runs(&r).iter().map(|run| run.len()).collect();
        // A gap of 10 is spanned, a step back splits, a gap over 64 KiB splits.
        assert_eq!(got, vec![3, 1, 2]);
        assert!(runs(&[]).is_empty());
    }

    #[test]
    fn the_gaps_read_never_exceed_the_bytes_asked_for() {
        // Two small blobs far apart in a pack, asked for again and again.
        let r: Vec<(u64, u32)> = (0..10_000)
            .map(|i| if i % 2 == 0 { (0, 100) } else { (60_000, 100) })
            .collect();
        let read: u64 = runs(&r)
            .iter()
            .map(|run| run[run.len() - 1].0 + run[run.len() - 1].1 as u64 - run[0].0)
            .sum();
        let asked: u64 = r.iter().map(|x| x.1 as u64).sum();
        assert!(read <= 2 * asked, "read {read} for {asked}");
    }
}

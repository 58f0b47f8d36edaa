//! Local caches under the state directory, per account. They only speed
//! things up: every cached tree is opened (authenticated and hashed) like a
//! downloaded one, and the server stays the authority on what it stores.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use haven_format::blob::{self, BlobKind};
use haven_format::keys::Keys;
use haven_format::pack::{self, PackWriter, TARGET_PACK_SIZE};
use haven_format::tree::Tree;
use haven_format::{BlobId, TreeId};

use crate::{ClientError, Remote, Result};

/// Plaintext bytes of opened trees kept in memory for the rest of the run.
const OPENED_BUDGET: usize = 64 << 20;
/// Beyond this many local tree packs (one per run), a flush merges them.
const MAX_TREE_PACKS: usize = 32;

/// Sealed trees and the referenced-blob set of the latest snapshot.
///
/// Trees are kept in local packs (the upload pack format) under
/// `treepacks/`, written once per run (or per 16 MiB): one file per tree
/// cost a third of a first backup's CPU in inode allocation on ext4.
/// Their indexes are read on first use.
pub struct Cache {
    dir: PathBuf,
    /// Trees opened during this run: the backup's walk reads the parent's
    /// trees that its scan opened just before.
    opened: Mutex<Opened>,
    /// Plaintext bytes of trees `opened` may hold.
    opened_budget: usize,
    /// Where each cached tree is: built from the packs' indexes on first use.
    index: Mutex<Option<HashMap<BlobId, Place>>>,
    /// Trees stored this run and not yet written, and their bytes.
    pending: Mutex<(HashMap<BlobId, Vec<u8>>, usize)>,
}

#[derive(Clone)]
struct Place {
    file: Arc<PathBuf>,
    offset: u64,
    length: u32,
}

#[derive(Default)]
struct Opened {
    trees: HashMap<BlobId, Tree>,
    bytes: usize,
}

fn add_places(
    index: &mut HashMap<BlobId, Place>,
    file: &Arc<PathBuf>,
    entries: Vec<pack::PackEntry>,
) {
    for en in entries {
        index.insert(
            en.id,
            Place {
                file: file.clone(),
                offset: en.offset,
                length: en.length,
            },
        );
    }
}

/// The entries of a local tree pack, from its tail.
fn read_index(path: &std::path::Path) -> std::io::Result<Vec<pack::PackEntry>> {
    let mut f = fs::File::open(path)?;
    let total = f.metadata()?.len();
    let bad = |e| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    let mut trailer = [0u8; 8];
    f.seek(SeekFrom::End(-8))?;
    f.read_exact(&mut trailer)?;
    let tail_len = pack::tail_len(&trailer, total).map_err(bad)?;
    let mut tail = vec![0u8; tail_len];
    f.seek(SeekFrom::End(-(tail_len as i64)))?;
    f.read_exact(&mut tail)?;
    pack::parse_index(&tail, total).map_err(bad)
}

impl Cache {
    /// The cache of one account under `base`.
    pub fn new(base: PathBuf, account_id: i64) -> Self {
        Cache {
            dir: base.join(account_id.to_string()),
            opened: Mutex::default(),
            opened_budget: OPENED_BUDGET,
            index: Mutex::default(),
            pending: Mutex::default(),
        }
    }

    /// Keeps no opened trees in memory: for a run that opens each tree
    /// once, as a restore does. Keeping them cost a restore of the
    /// benchmark dataset a copy of every tree, and freeing those copies at
    /// its end.
    pub fn opening_each_tree_once(mut self) -> Self {
        self.opened_budget = 0;
        self
    }

    fn packs_dir(&self) -> PathBuf {
        self.dir.join("treepacks")
    }

    /// Runs `f` on the index, reading the packs' indexes the first time.
    /// An unreadable pack is removed (its trees are downloaded again).
    fn with_index<T>(&self, f: impl FnOnce(&mut HashMap<BlobId, Place>) -> T) -> Option<T> {
        let mut guard = self.index.lock().ok()?;
        let index = guard.get_or_insert_with(|| {
            // One file per tree, as clients before 0.1 kept them.
            let _ = fs::remove_dir_all(self.dir.join("trees"));
            let mut index = HashMap::new();
            for e in fs::read_dir(self.packs_dir())
                .into_iter()
                .flatten()
                .flatten()
            {
                let path = Arc::new(e.path());
                // Another run's write in progress.
                if path.extension().is_some() {
                    continue;
                }
                match read_index(&path) {
                    Ok(entries) => add_places(&mut index, &path, entries),
                    Err(_) => {
                        let _ = fs::remove_file(path.as_ref());
                    }
                }
            }
            index
        });
        Some(f(index))
    }

    /// Whether every one of `ids` was cached before this run: the device
    /// made the backup, or restored it before.
    pub fn kept_all(&self, ids: &[BlobId]) -> bool {
        self.with_index(|i| ids.iter().all(|id| i.contains_key(id)))
            .unwrap_or(false)
    }

    /// Downloads those of `ids` this cache lacks, one request per
    /// thousand, and keeps them for [`Cache::load_tree`]. Best effort: a
    /// tree that does not arrive is asked for again, alone, when it is
    /// loaded, and its error reported then.
    pub fn fetch_trees(&self, remote: &dyn Remote, ids: &[BlobId]) {
        let mut absent: Vec<BlobId> = self
            .with_index(|i| {
                ids.iter()
                    .filter(|id| !i.contains_key(id))
                    .copied()
                    .collect()
            })
            .unwrap_or_default();
        if let Ok(pending) = self.pending.lock() {
            absent.retain(|id| !pending.0.contains_key(id));
        }
        for part in absent.chunks(1000) {
            let Ok(sealed) = remote.fetch(part) else {
                break;
            };
            for (id, s) in part.iter().zip(sealed) {
                if let Some(s) = s {
                    self.put_tree(id, &s);
                }
            }
        }
    }

    /// Stores a sealed tree (best effort: a failed cache write costs only a
    /// download later). It is written with the others of this run.
    pub fn put_tree(&self, id: &BlobId, sealed: &[u8]) {
        if self.with_index(|i| i.contains_key(id)).unwrap_or(true) {
            return;
        }
        let full = match self.pending.lock() {
            Ok(mut p) => {
                if !p.0.contains_key(id) {
                    p.0.insert(*id, sealed.to_vec());
                    p.1 += sealed.len();
                }
                p.1 >= TARGET_PACK_SIZE
            }
            Err(_) => false,
        };
        if full {
            self.flush();
        }
    }

    /// Writes the trees stored so far into one local pack.
    pub fn flush(&self) {
        let Some(mut trees) = self
            .pending
            .lock()
            .ok()
            .map(|mut p| std::mem::take(&mut *p).0)
        else {
            return;
        };
        if trees.is_empty() {
            return;
        }
        let old: Vec<PathBuf> = fs::read_dir(self.packs_dir())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_none())
            .collect();
        // One pack per run adds up: merge them all (older runs' trees
        // included, which unchanged directories still use).
        let merge = old.len() >= MAX_TREE_PACKS;
        if merge {
            let ids: Vec<BlobId> = self
                .with_index(|i| i.keys().copied().collect())
                .unwrap_or_default();
            for id in ids {
                if !trees.contains_key(&id)
                    && let Some(sealed) = self.cached(&id)
                {
                    trees.insert(id, sealed);
                }
            }
        }
        let mut w = PackWriter::new();
        for (id, sealed) in &trees {
            w.add(BlobKind::Tree, *id, sealed);
        }
        let (pack_id, bytes, entries) = w.finish();
        let dir = self.packs_dir();
        let path = Arc::new(dir.join(pack_id.to_hex()));
        let tmp = dir.join(format!("{}.tmp", pack_id.to_hex()));
        let written = fs::create_dir_all(&dir)
            .and_then(|_| fs::write(&tmp, &bytes))
            .and_then(|_| fs::rename(&tmp, path.as_ref()));
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
            return;
        }
        if merge {
            for p in old.iter().filter(|p| **p != *path) {
                let _ = fs::remove_file(p);
            }
        }
        self.with_index(|index| {
            if merge {
                index.clear();
            }
            add_places(index, &path, entries);
        });
    }

    /// A cached sealed tree, if any.
    fn cached(&self, id: &BlobId) -> Option<Vec<u8>> {
        if let Some(s) = self.pending.lock().ok()?.0.get(id) {
            return Some(s.clone());
        }
        let place = self.with_index(|i| i.get(id).cloned())??;
        let read = || -> std::io::Result<Vec<u8>> {
            let mut f = fs::File::open(place.file.as_ref())?;
            f.seek(SeekFrom::Start(place.offset))?;
            let mut buf = vec![0u8; place.length as usize];
            f.read_exact(&mut buf)?;
            Ok(buf)
        };
        match read() {
            Ok(buf) => Some(buf),
            Err(_) => {
                // Gone or cut short: downloaded (and cached) again.
                self.with_index(|i| i.remove(id));
                None
            }
        }
    }

    /// Loads and opens a tree: from the cache, else from the server.
    pub fn load_tree(&self, remote: &dyn Remote, keys: &Keys, id: &TreeId) -> Result<Tree> {
        if let Some(t) = self
            .opened
            .lock()
            .ok()
            .and_then(|o| o.trees.get(&id.0).cloned())
        {
            return Ok(t);
        }
        if let Some(t) = self.cached_tree(keys, id) {
            return Ok(t);
        }
        let sealed = remote.fetch(&[id.0])?.pop().flatten().ok_or_else(|| {
            ClientError::corrupted(format!("directory tree {} is missing on the server", id.0))
        })?;
        let plain = blob::open(keys, BlobKind::Tree, &id.0, &sealed)
            .map_err(|e| ClientError::corrupted(format!("directory tree {}: {e}", id.0)))?;
        let tree = Tree::decode(&plain)
            .map_err(|e| ClientError::corrupted(format!("directory tree {}: {e}", id.0)))?;
        self.put_tree(&id.0, &sealed);
        self.remember(id.0, &tree, plain.len());
        Ok(tree)
    }

    /// A tree from this cache (nothing is downloaded); a damaged copy is
    /// forgotten, so that the server's replaces it.
    pub fn cached_tree(&self, keys: &Keys, id: &TreeId) -> Option<Tree> {
        let sealed = self.cached(&id.0)?;
        let opened = blob::open(keys, BlobKind::Tree, &id.0, &sealed)
            .ok()
            .and_then(|plain| Some((Tree::decode(&plain).ok()?, plain.len())));
        match opened {
            Some((t, size)) => {
                self.remember(id.0, &t, size);
                Some(t)
            }
            None => {
                self.with_index(|i| i.remove(&id.0));
                None
            }
        }
    }

    fn remember(&self, id: BlobId, tree: &Tree, size: usize) {
        if let Ok(mut o) = self.opened.lock()
            && o.bytes + size <= self.opened_budget
        {
            o.bytes += size;
            o.trees.insert(id, tree.clone());
        }
    }

    fn refs_path(&self, snapshot: &str) -> Option<PathBuf> {
        haven_proto::is_valid_id(snapshot).then(|| self.dir.join("refs").join(snapshot))
    }

    /// The sorted referenced-blob set recorded for `snapshot`, if cached.
    pub fn refs(&self, snapshot: &str) -> Option<Vec<BlobId>> {
        let bytes = fs::read(self.refs_path(snapshot)?).ok()?;
        if bytes.len() % 32 != 0 {
            return None;
        }
        Some(
            bytes
                .chunks_exact(32)
                .map(|c| BlobId(c.try_into().unwrap_or([0; 32])))
                .collect(),
        )
    }

    /// Records the set of `snapshot` and forgets older ones.
    pub fn put_refs(&self, snapshot: &str, refs: &[BlobId]) {
        let Some(path) = self.refs_path(snapshot) else {
            return;
        };
        let dir = self.dir.join("refs");
        let _ = fs::create_dir_all(&dir);
        if let Ok(entries) = fs::read_dir(&dir) {
            for e in entries.flatten() {
                let _ = fs::remove_file(e.path());
            }
        }
        let bytes: Vec<u8> = refs.iter().flat_map(|id| id.0).collect();
        let tmp = path.with_extension("tmp");
        if fs::write(&tmp, bytes)
            .and_then(|_| fs::rename(&tmp, &path))
            .is_err()
        {
            let _ = fs::remove_file(&tmp);
        }
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        self.flush();
    }
}

/// `(added, removed)` between two sorted, deduplicated sets.
pub fn diff_sorted(old: &[BlobId], new: &[BlobId]) -> (Vec<BlobId>, Vec<BlobId>) {
    let (mut added, mut removed) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        match (old.get(i), new.get(j)) {
            (Some(a), Some(b)) if a == b => {
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if a < b => {
                removed.push(*a);
                i += 1;
            }
            (Some(_), Some(b)) | (None, Some(b)) => {
                added.push(*b);
                j += 1;
            }
            (Some(a), None) => {
                removed.push(*a);
                i += 1;
            }
            (None, None) => break,
        }
    }
    (added, removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_packs_are_merged_and_every_tree_stays_readable() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let id = |n: u32| {
            let mut b = [0u8; 32];
            b[..4].copy_from_slice(&n.to_le_bytes());
            BlobId(b)
        };
        for run in 0..40u32 {
            let c = Cache::new(tmp.path().to_path_buf(), 1);
            c.put_tree(&id(run), &[run as u8; 100]);
            // A tree cached by an earlier run is not stored twice.
            c.put_tree(&id(0), &[9; 100]);
        }
        let packs = fs::read_dir(tmp.path().join("1/treepacks"))
            .expect("dir")
            .count();
        assert!(packs <= MAX_TREE_PACKS, "{packs} packs");
        let c = Cache::new(tmp.path().to_path_buf(), 1);
        for run in 0..40u32 {
            assert_eq!(c.cached(&id(run)), Some(vec![run as u8; 100]), "tree {run}");
        }
    }

    #[test]
    fn diff_of_sorted_sets() {
        let id = |n: u8| BlobId([n; 32]);
        let (a, r) = diff_sorted(&[id(1), id(2), id(4)], &[id(2), id(3), id(4), id(5)]);
        assert_eq!(a, vec![id(3), id(5)]);
        assert_eq!(r, vec![id(1)]);
        assert_eq!(diff_sorted(&[], &[id(1)]), (vec![id(1)], vec![]));
    }
}

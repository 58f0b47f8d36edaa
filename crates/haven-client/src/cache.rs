//! Local caches under the state directory, per account. They only speed
//! things up: every cached tree is opened (authenticated and hashed) like a
//! downloaded one, and the server stays the authority on what it stores.

use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;
use std::sync::Mutex;

use haven_format::blob::{self, BlobKind};
use haven_format::keys::Keys;
use haven_format::tree::Tree;
use haven_format::{BlobId, TreeId};

use crate::{ClientError, Remote, Result};

/// Plaintext bytes of opened trees kept in memory for the rest of the run.
const OPENED_BUDGET: usize = 64 << 20;

/// Sealed trees and the referenced-blob set of the latest snapshot.
pub struct Cache {
    dir: PathBuf,
    /// Trees opened during this run: the backup's walk reads the parent's
    /// trees that its scan opened just before.
    opened: Mutex<Opened>,
}

#[derive(Default)]
struct Opened {
    trees: HashMap<BlobId, Tree>,
    bytes: usize,
}

impl Cache {
    /// The cache of one account under `base`.
    pub fn new(base: PathBuf, account_id: i64) -> Self {
        Cache {
            dir: base.join(account_id.to_string()),
            opened: Mutex::default(),
        }
    }

    fn tree_path(&self, id: &BlobId) -> PathBuf {
        let h = id.to_hex();
        self.dir.join("trees").join(&h[..2]).join(h)
    }

    /// Stores a sealed tree (best effort: a failed cache write costs only a
    /// download later).
    pub fn put_tree(&self, id: &BlobId, sealed: &[u8]) {
        let p = self.tree_path(id);
        if p.exists() {
            return;
        }
        if let Some(parent) = p.parent() {
            let _ = fs::create_dir_all(parent);
        }
        let tmp = p.with_extension("tmp");
        if fs::write(&tmp, sealed)
            .and_then(|_| fs::rename(&tmp, &p))
            .is_err()
        {
            let _ = fs::remove_file(&tmp);
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
        let p = self.tree_path(&id.0);
        if let Ok(sealed) = fs::read(&p) {
            if let Ok(plain) = blob::open(keys, BlobKind::Tree, &id.0, &sealed)
                && let Ok(t) = Tree::decode(&plain)
            {
                self.remember(id.0, &t, plain.len());
                return Ok(t);
            }
            let _ = fs::remove_file(&p);
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

    fn remember(&self, id: BlobId, tree: &Tree, size: usize) {
        if let Ok(mut o) = self.opened.lock()
            && o.bytes + size <= OPENED_BUDGET
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
    fn diff_of_sorted_sets() {
        let id = |n: u8| BlobId([n; 32]);
        let (a, r) = diff_sorted(&[id(1), id(2), id(4)], &[id(2), id(3), id(4), id(5)]);
        assert_eq!(a, vec![id(3), id(5)]);
        assert_eq!(r, vec![id(1)]);
        assert_eq!(diff_sorted(&[], &[id(1)]), (vec![id(1)], vec![]));
    }
}

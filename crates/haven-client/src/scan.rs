//! The planning scan: before a backup uploads anything, it walks what it
//! will cover (metadata only, nothing is read) and compares it with the
//! parent backup. Per category it counts files and bytes, and the bytes of
//! new or changed files: an upper bound of the data the backup can store
//! (dedup and compression only make it smaller). The backup reserves that
//! much quota, or leaves out the categories that do not fit.

use std::ffi::OsStr;
use std::fs::{self, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use haven_format::keys::Keys;
use haven_format::tree::{Node, NodeKind, Tree};
use haven_proto::CategoryScan;

use crate::Remote;
use crate::cache::Cache;
use crate::categories::Categorizer;
use crate::fsmeta;
use crate::selection::{Excluder, PathTree, is_cache_dir};

/// Sealing adds at most this much to a blob.
const BLOB_OVERHEAD: u64 = 64;
/// A file's entry in its directory's tree, generously.
const ENTRY_BYTES: u64 = 256;
/// Smallest chunk: a file of `n` bytes has at most `n / MIN_CHUNK + 1` chunks.
const MIN_CHUNK: u64 = 256 << 10;

/// One category's figures.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CategoryTotals {
    pub files: u64,
    pub bytes: u64,
    /// New or changed files (not in the parent backup as they are now).
    pub new_files: u64,
    pub new_bytes: u64,
}

impl CategoryTotals {
    /// Upper bound of what storing this category's new files takes:
    /// their bytes plus sealing and tree entries.
    pub fn need(&self) -> u64 {
        self.new_bytes
            + self.new_files * (BLOB_OVERHEAD + ENTRY_BYTES)
            + (self.new_bytes / MIN_CHUNK) * (BLOB_OVERHEAD + 32)
    }
}

/// What a backup will cover.
#[derive(Clone, Debug, Default)]
pub struct Scan {
    /// Indexed like [`Categorizer::names`].
    pub categories: Vec<CategoryTotals>,
    /// Entries of directories whose tree changes.
    pub dirty_entries: u64,
}

impl Scan {
    /// No files yet, in `c`'s categories.
    pub fn empty(c: &Categorizer) -> Scan {
        Scan {
            categories: vec![CategoryTotals::default(); c.names().len()],
            dirty_entries: 0,
        }
    }

    /// Upper bound of the metadata (trees, snapshot) a backup stores.
    pub fn metadata_need(&self) -> u64 {
        (64 << 10) + self.dirty_entries * ENTRY_BYTES
    }

    /// The figures as the server records them.
    pub fn report(&self, c: &Categorizer) -> Vec<CategoryScan> {
        c.names()
            .iter()
            .zip(&self.categories)
            .map(|(name, t)| CategoryScan {
                name: name.clone(),
                files: t.files,
                bytes: t.bytes,
                new_bytes: t.new_bytes,
            })
            .collect()
    }
}

/// Walks like the backup does; see the module doc.
pub struct Scanner<'a> {
    pub keys: &'a Keys,
    pub remote: &'a dyn Remote,
    pub cache: &'a Cache,
    pub excluder: &'a Excluder,
    pub categorizer: &'a Categorizer,
    pub scan: Scan,
}

impl<'a> Scanner<'a> {
    pub fn new(
        keys: &'a Keys,
        remote: &'a dyn Remote,
        cache: &'a Cache,
        excluder: &'a Excluder,
        categorizer: &'a Categorizer,
    ) -> Self {
        Scanner {
            keys,
            remote,
            cache,
            excluder,
            categorizer,
            scan: Scan::empty(categorizer),
        }
    }

    fn subtree(&self, old: Option<&Node>) -> Option<Tree> {
        let id = old.filter(|n| n.kind == NodeKind::Dir)?.subtree?;
        self.cache.load_tree(self.remote, self.keys, &id).ok()
    }

    /// `/` and the directories above the selected paths. Returns whether
    /// the directory's tree changes.
    pub fn virtual_dir(&mut self, path: &Path, sel: &PathTree, parent: Option<&Tree>) -> bool {
        let mut dirty = parent.is_none();
        for (name, child) in &sel.children {
            let child_path = path.join(OsStr::from_bytes(name));
            let Ok(meta) = fs::symlink_metadata(&child_path) else {
                continue;
            };
            let old = parent.and_then(|t| t.get(name));
            dirty |= if child.full {
                self.entry(&child_path, &meta, old)
            } else {
                let t = self.subtree(old);
                self.virtual_dir(&child_path, child, t.as_ref())
            };
        }
        if dirty {
            self.scan.dirty_entries += sel.children.len() as u64;
        }
        dirty
    }

    fn dir(&mut self, path: &Path, parent: Option<&Tree>) -> bool {
        let Ok(rd) = fs::read_dir(path) else {
            return true;
        };
        let mut dirty = parent.is_none();
        let mut entries = 0u64;
        for e in rd.flatten() {
            let p = e.path();
            let name = e.file_name();
            if self.excluder.excluded(&p, &name) {
                continue;
            }
            // Relative to the open directory (fstatat), not resolved
            // again from `/` as a full path would be.
            let Ok(meta) = e.metadata() else {
                continue;
            };
            entries += 1;
            let old = parent.and_then(|t| t.get(name.as_bytes()));
            dirty |= self.entry(&p, &meta, old);
        }
        if parent.is_some_and(|t| t.nodes.len() as u64 != entries) {
            dirty = true;
        }
        if dirty {
            self.scan.dirty_entries += entries;
        }
        dirty
    }

    fn entry(&mut self, path: &Path, meta: &Metadata, old: Option<&Node>) -> bool {
        let ft = meta.file_type();
        if ft.is_dir() {
            if self.excluder.cachedir_tags && is_cache_dir(path) {
                return false;
            }
            let t = self.subtree(old);
            self.dir(path, t.as_ref())
        } else if ft.is_file() {
            let t = &mut self.scan.categories[self.categorizer.category(path)];
            t.files += 1;
            t.bytes += meta.len();
            let unchanged = old.is_some_and(|o| fsmeta::unchanged(o, meta));
            if !unchanged {
                t.new_files += 1;
                t.new_bytes += meta.len();
            }
            !unchanged
        } else {
            old.is_none()
        }
    }
}

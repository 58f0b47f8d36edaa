//! Which paths a backup or restore covers: a prefix tree of selected
//! absolute paths, and the exclusion rules.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use globset::{Glob, GlobSet, GlobSetBuilder};
use haven_proto::ErrorCode;

use crate::{ClientError, Result};

/// Selected absolute paths as a tree of components. A `full` node selects
/// everything below it.
#[derive(Debug, Default, Clone)]
pub struct PathTree {
    pub full: bool,
    pub children: BTreeMap<Vec<u8>, PathTree>,
}

impl PathTree {
    /// Builds the tree from absolute paths.
    pub fn new(paths: &[PathBuf]) -> Self {
        let mut root = PathTree::default();
        for p in paths {
            root.insert(p);
        }
        root
    }

    fn insert(&mut self, path: &Path) {
        let mut node = self;
        for c in path.components() {
            if let std::path::Component::Normal(n) = c {
                if node.full {
                    return;
                }
                node = node.children.entry(n.as_bytes().to_vec()).or_default();
            }
        }
        node.full = true;
        node.children.clear();
    }
}

const CACHEDIR_SIGNATURE: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";

/// True if `dir` holds a valid `CACHEDIR.TAG` (bford.info/cachedir).
pub fn is_cache_dir(dir: &Path) -> bool {
    use std::io::Read;
    let mut buf = [0u8; 43];
    std::fs::File::open(dir.join("CACHEDIR.TAG"))
        .and_then(|mut f| f.read_exact(&mut buf))
        .is_ok()
        && buf == CACHEDIR_SIGNATURE
}

/// Exclusion rules.
pub struct Excluder {
    full: GlobSet,
    names: GlobSet,
    paths: Vec<PathBuf>,
    pub cachedir_tags: bool,
}

impl Excluder {
    /// From the configured patterns; `always` are paths never backed up
    /// (Haven's own state directory).
    pub fn new(patterns: &[String], exclude_caches: bool, always: &[PathBuf]) -> Result<Self> {
        let mut full = GlobSetBuilder::new();
        let mut names = GlobSetBuilder::new();
        for p in patterns {
            let expanded = crate::config::expand_tilde(p);
            let glob = Glob::new(expanded.trim_end_matches('/')).map_err(|e| {
                ClientError::new(
                    ErrorCode::ConfigInvalid,
                    format!("The exclude pattern {p:?} is invalid: {e}."),
                )
                .fix("Fix the pattern in config.toml or on the command line.")
            })?;
            if expanded.contains('/') {
                full.add(glob)
            } else {
                names.add(glob)
            };
        }
        let mut paths = always.to_vec();
        if exclude_caches && let Some(h) = crate::config::home() {
            paths.push(h.join(".cache"));
            paths.push(h.join(".local/share/Trash"));
        }
        let build = |b: GlobSetBuilder| {
            b.build().map_err(|e| {
                ClientError::new(
                    ErrorCode::ConfigInvalid,
                    format!("Invalid exclude patterns: {e}."),
                )
            })
        };
        Ok(Excluder {
            full: build(full)?,
            names: build(names)?,
            paths,
            cachedir_tags: exclude_caches,
        })
    }

    /// True if the entry at `path` (named `name`) is excluded.
    pub fn excluded(&self, path: &Path, name: &OsStr) -> bool {
        self.paths.iter().any(|p| p == path)
            || self.names.is_match(name)
            || self.full.is_match(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestors_absorb_descendants() {
        let t = PathTree::new(&[
            PathBuf::from("/a/b/c"),
            PathBuf::from("/a/b"),
            PathBuf::from("/a/x/y"),
        ]);
        let a = &t.children[&b"a".to_vec()];
        assert!(!a.full);
        assert!(a.children[&b"b".to_vec()].full);
        assert!(a.children[&b"b".to_vec()].children.is_empty());
        assert!(a.children[&b"x".to_vec()].children[&b"y".to_vec()].full);
    }

    #[test]
    fn patterns_match_names_and_paths() {
        let e = Excluder::new(
            &["*.iso".into(), "**/node_modules".into(), "/data/tmp".into()],
            false,
            &[PathBuf::from("/cfg")],
        )
        .expect("valid");
        assert!(e.excluded(Path::new("/x/big.iso"), OsStr::new("big.iso")));
        assert!(e.excluded(Path::new("/x/y/node_modules"), OsStr::new("node_modules")));
        assert!(e.excluded(Path::new("/data/tmp"), OsStr::new("tmp")));
        assert!(e.excluded(Path::new("/cfg"), OsStr::new("cfg")));
        assert!(!e.excluded(Path::new("/data/tmp2"), OsStr::new("tmp2")));
        assert!(Excluder::new(&["a[".into()], false, &[]).is_err());
    }
}

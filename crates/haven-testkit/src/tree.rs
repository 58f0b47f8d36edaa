//! Tree generators and a comparison that covers contents, modes, mtimes
//! (nanoseconds, symlinks' own), symlink targets, hard links and empty
//! directories.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;

use filetime::FileTime;
use rand::{Rng, RngCore, SeedableRng};

/// Deterministic pseudo-random bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// Text that compresses well.
pub fn text(len: usize, seed: u64) -> Vec<u8> {
    let words = [
        "haven", "backup", "restore", "chunk", "family", "laptop", "photo", "tree", "pack", "blob",
    ];
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    let mut s = Vec::with_capacity(len + 16);
    while s.len() < len {
        s.extend_from_slice(words[r.gen_range(0..words.len())].as_bytes());
        s.push(if r.gen_ratio(1, 12) { b'\n' } else { b' ' });
    }
    s.truncate(len);
    s
}

fn set_mtime(p: &Path, secs: i64, nanos: u32) {
    let t = FileTime::from_unix_time(secs, nanos);
    filetime::set_symlink_file_times(p, t, t).unwrap();
}

/// A tree with every kind of thing Haven must restore exactly.
pub fn populate(root: &Path, secret: &str) {
    fs::create_dir_all(root.join("docs/deep/deeper")).unwrap();
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    fs::create_dir_all(root.join("photos")).unwrap();
    fs::write(root.join("docs/note.txt"), format!("my secret: {secret}\n")).unwrap();
    fs::write(root.join("docs/deep/deeper/story.txt"), text(300_000, 1)).unwrap();
    fs::write(root.join("docs/empty.txt"), b"").unwrap();
    fs::write(root.join("photos/big.raw"), noise(12 << 20, 2)).unwrap();
    fs::write(root.join("photos/small.jpg"), noise(70_000, 3)).unwrap();
    fs::write(root.join("script.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    // Set-id bits, and bits a usual umask takes off a new file: a restore
    // must set both after creating the file.
    fs::set_permissions(root.join("script.sh"), fs::Permissions::from_mode(0o4750)).unwrap();
    fs::write(root.join("private.key"), b"k").unwrap();
    fs::set_permissions(root.join("private.key"), fs::Permissions::from_mode(0o600)).unwrap();
    let weird = std::ffi::OsStr::from_bytes(b"caf\xe9-latin1-\xff.txt");
    fs::write(root.join(weird), b"not utf-8 name").unwrap();
    fs::write(root.join("spaces and ünïcödé.txt"), b"unicode").unwrap();
    fs::set_permissions(
        root.join("spaces and ünïcödé.txt"),
        fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    symlink("docs/note.txt", root.join("link-to-note")).unwrap();
    symlink("/nonexistent/dangling", root.join("dangling")).unwrap();
    fs::hard_link(root.join("docs/note.txt"), root.join("hardlink-to-note")).unwrap();
    fs::set_permissions(root.join("docs/deep"), fs::Permissions::from_mode(0o700)).unwrap();
    set_mtime(&root.join("docs/note.txt"), 1_600_000_000, 123_456_789);
    set_mtime(&root.join("link-to-note"), 1_500_000_000, 987_654_321);
    set_mtime(&root.join("empty-dir"), 1_400_000_000, 1);
    set_mtime(&root.join("docs/deep/deeper"), 1_300_000_000, 999_999_999);
}

/// Everything about one entry that a restore must reproduce.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: &'static str,
    pub mode: u32,
    pub mtime: (i64, i64),
    pub content: Option<Vec<u8>>,
    pub target: Option<Vec<u8>>,
    /// Index of the first path of this entry's hard-link group.
    pub link_group: Option<Vec<u8>>,
}

/// Snapshot of a tree below `root`, keyed by relative path bytes.
pub fn describe(root: &Path) -> BTreeMap<Vec<u8>, Entry> {
    let mut out = BTreeMap::new();
    let mut groups: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for p in names {
            let m = fs::symlink_metadata(&p).unwrap();
            let rel = p
                .strip_prefix(root)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec();
            let ft = m.file_type();
            let (kind, content, target) = if ft.is_dir() {
                stack.push(p.clone());
                ("dir", None, None)
            } else if ft.is_symlink() {
                (
                    "symlink",
                    None,
                    Some(fs::read_link(&p).unwrap().as_os_str().as_bytes().to_vec()),
                )
            } else {
                ("file", Some(fs::read(&p).unwrap()), None)
            };
            let link_group = (ft.is_file() && m.nlink() > 1).then(|| {
                groups
                    .entry((m.dev(), m.ino()))
                    .or_insert_with(|| rel.clone())
                    .clone()
            });
            out.insert(
                rel,
                Entry {
                    kind,
                    mode: if ft.is_symlink() {
                        0
                    } else {
                        m.mode() & 0o7777
                    },
                    mtime: (m.mtime(), m.mtime_nsec()),
                    content,
                    target,
                    link_group,
                },
            );
        }
    }
    out
}

/// Panics with the first difference between two trees.
pub fn assert_same_tree(expected: &Path, actual: &Path) {
    let a = describe(expected);
    let b = describe(actual);
    for (k, v) in &a {
        match b.get(k) {
            None => panic!("{} is missing from the restore", String::from_utf8_lossy(k)),
            Some(w) => {
                assert_eq!(v.kind, w.kind, "kind of {}", String::from_utf8_lossy(k));
                assert_eq!(
                    v.content,
                    w.content,
                    "content of {}",
                    String::from_utf8_lossy(k)
                );
                assert_eq!(
                    v.target,
                    w.target,
                    "symlink target of {}",
                    String::from_utf8_lossy(k)
                );
                assert_eq!(v.mode, w.mode, "mode of {}", String::from_utf8_lossy(k));
                assert_eq!(v.mtime, w.mtime, "mtime of {}", String::from_utf8_lossy(k));
            }
        }
    }
    for k in b.keys() {
        assert!(
            a.contains_key(k),
            "{} is in the restore but was not backed up",
            String::from_utf8_lossy(k)
        );
    }
    // Hard-link groups must be the same partition of paths.
    let groups = |d: &BTreeMap<Vec<u8>, Entry>| {
        let mut g: BTreeMap<Vec<u8>, Vec<Vec<u8>>> = BTreeMap::new();
        for (k, e) in d {
            if let Some(l) = &e.link_group {
                g.entry(l.clone()).or_default().push(k.clone());
            }
        }
        // A group of one is a file whose other links lie outside the
        // compared tree (e.g. a partial restore).
        let mut v: Vec<Vec<Vec<u8>>> = g.into_values().filter(|g| g.len() > 1).collect();
        v.sort();
        v
    };
    assert_eq!(groups(&a), groups(&b), "hard-link groups differ");
}

/// Copies a tree with `cp -a` (keeps everything `describe` compares).
pub fn copy_tree(from: &Path, to: &Path) {
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

/// Where a restore into `target` fills the backed-up absolute path
/// `backed_up` until it is complete: below the hidden staging directory of
/// its first component (`/tmp/x/data` → `target/.tmp.haven-part-TAG/x/data`),
/// if there is one.
pub fn staged_path(target: &Path, backed_up: &Path) -> Option<std::path::PathBuf> {
    let mut parts = backed_up
        .strip_prefix("/")
        .unwrap_or(backed_up)
        .components();
    let top = parts.next()?.as_os_str().as_bytes().to_vec();
    let mut prefix = b".".to_vec();
    prefix.extend_from_slice(&top);
    prefix.extend_from_slice(b".haven-part-");
    let staging = fs::read_dir(target)
        .ok()?
        .flatten()
        .find(|e| e.file_name().as_bytes().starts_with(&prefix))?;
    Some(staging.path().join(parts.as_path()))
}

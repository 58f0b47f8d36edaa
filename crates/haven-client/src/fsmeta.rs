//! File metadata as stored in trees.

use std::fs::Metadata;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use haven_format::tree::{Node, NodeKind, Timestamp};
use serde_bytes::ByteBuf;

/// Modification time of `m`.
pub fn mtime(m: &Metadata) -> Timestamp {
    Timestamp {
        secs: m.mtime(),
        nanos: m.mtime_nsec() as u32,
    }
}

/// Status-change time of `m`.
pub fn ctime(m: &Metadata) -> Timestamp {
    Timestamp {
        secs: m.ctime(),
        nanos: m.ctime_nsec() as u32,
    }
}

/// A node for `name` with `m`'s metadata and no content yet.
pub fn node(name: &[u8], kind: NodeKind, m: &Metadata) -> Node {
    Node {
        name: ByteBuf::from(name.to_vec()),
        kind,
        mode: m.permissions().mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        mtime: mtime(m),
        ctime: ctime(m),
        dev: m.dev(),
        ino: m.ino(),
        nlink: m.nlink(),
        size: if kind == NodeKind::File { m.len() } else { 0 },
        content: Vec::new(),
        subtree: None,
        target: None,
    }
}

/// True if a file with metadata `m` is unchanged since `old` was recorded:
/// same size, mtime, ctime and inode. Then its content is not read again.
pub fn unchanged(old: &Node, m: &Metadata) -> bool {
    old.kind == NodeKind::File
        && old.size == m.len()
        && old.mtime == mtime(m)
        && old.ctime == ctime(m)
        && old.ino == m.ino()
}

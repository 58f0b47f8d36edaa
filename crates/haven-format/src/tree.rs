//! Directory trees. One tree blob per directory, entries sorted by name;
//! a directory entry points to its subtree by id, so unchanged
//! subdirectories dedup to the same blob.
//!
//! Encoding: `version(1)=1 | postcard(Tree)`.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::FormatError;
use crate::id::{ChunkId, TreeId};

/// Version byte of an encoded tree.
pub const TREE_VERSION: u8 = 1;

/// A point in time: seconds and nanoseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timestamp {
    /// Seconds (may be negative).
    pub secs: i64,
    /// Nanoseconds, below 1e9.
    pub nanos: u32,
}

/// What a node is. Fifos, sockets and devices are not backed up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeKind {
    /// A regular file; its content is `Node::content`.
    File,
    /// A directory; its entries are the tree `Node::subtree`.
    Dir,
    /// A symbolic link to `Node::target`.
    Symlink,
}

/// One directory entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// The name as raw bytes (Unix names need not be UTF-8). Restore
    /// rejects empty names, `.`, `..` and names containing `/` or NUL.
    pub name: ByteBuf,
    /// Kind of entry.
    pub kind: NodeKind,
    /// Permission and special bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time.
    pub mtime: Timestamp,
    /// Status-change time, for change detection only.
    pub ctime: Timestamp,
    /// Device and inode, for change detection and hard links.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Number of hard links when backed up.
    pub nlink: u64,
    /// Size in bytes (files).
    pub size: u64,
    /// Content chunks in order (files).
    pub content: Vec<ChunkId>,
    /// Entries (directories).
    pub subtree: Option<TreeId>,
    /// Link target (symlinks), raw bytes.
    pub target: Option<ByteBuf>,
}

/// The entries of one directory, sorted by name, names unique.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    /// Entries sorted by `name`.
    pub nodes: Vec<Node>,
}

impl Tree {
    /// Encodes the tree; entries must already be sorted.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![TREE_VERSION];
        // Serializing plain structs into a Vec cannot fail.
        out.extend(postcard::to_allocvec(self).unwrap_or_default());
        out
    }

    /// Decodes a tree and checks that names are sorted and unique, so a
    /// reader can binary-search and never sees two entries with one name.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        match bytes.first() {
            None => return Err(FormatError::Length { what: "tree" }),
            Some(&TREE_VERSION) => {}
            Some(&v) => {
                return Err(FormatError::Version {
                    what: "tree",
                    found: v,
                });
            }
        }
        let tree: Tree =
            postcard::from_bytes(&bytes[1..]).map_err(|_| FormatError::Malformed("tree"))?;
        if tree.nodes.windows(2).any(|w| w[0].name >= w[1].name) {
            return Err(FormatError::Malformed("tree order"));
        }
        Ok(tree)
    }

    /// The entry with this name.
    pub fn get(&self, name: &[u8]) -> Option<&Node> {
        self.nodes
            .binary_search_by(|n| n.name.as_slice().cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::BlobId;
    use proptest::prelude::*;

    fn node(name: &[u8], kind: NodeKind) -> Node {
        Node {
            name: ByteBuf::from(name.to_vec()),
            kind,
            mode: 0o644,
            uid: 1000,
            gid: 1000,
            mtime: Timestamp {
                secs: 1_700_000_000,
                nanos: 123_456_789,
            },
            ctime: Timestamp { secs: -5, nanos: 0 },
            dev: 1,
            ino: 2,
            nlink: 1,
            size: 3,
            content: vec![ChunkId(BlobId([9; 32]))],
            subtree: (kind == NodeKind::Dir).then_some(TreeId(BlobId([3; 32]))),
            target: (kind == NodeKind::Symlink).then(|| ByteBuf::from(b"../x".to_vec())),
        }
    }

    #[test]
    fn unsorted_or_duplicate_names_are_rejected() {
        let t = Tree {
            nodes: vec![node(b"b", NodeKind::File), node(b"a", NodeKind::File)],
        };
        assert!(Tree::decode(&t.encode()).is_err());
        let t = Tree {
            nodes: vec![node(b"a", NodeKind::File), node(b"a", NodeKind::Dir)],
        };
        assert!(Tree::decode(&t.encode()).is_err());
        assert!(Tree::decode(&[]).is_err());
        assert!(Tree::decode(&[2]).is_err());
    }

    proptest! {
        #[test]
        fn round_trip(names in proptest::collection::btree_set(proptest::collection::vec(any::<u8>(), 1..20), 0..20), kinds in proptest::collection::vec(0u8..3, 20)) {
            let nodes: Vec<Node> = names.iter().zip(kinds).map(|(n, k)| node(n, [NodeKind::File, NodeKind::Dir, NodeKind::Symlink][k as usize])).collect();
            let t = Tree { nodes };
            let enc = t.encode();
            prop_assert_eq!(Tree::decode(&enc).expect("decode"), t.clone());
            for cut in 0..enc.len() {
                // Every truncation fails or (rarely) decodes a different,
                // still well-formed tree; it never panics.
                if let Ok(d) = Tree::decode(&enc[..cut]) { prop_assert_ne!(d, t.clone()); }
            }
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Tree::decode(&bytes);
        }
    }
}

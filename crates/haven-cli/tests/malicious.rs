//! Restore never writes outside the target directory, whatever a snapshot
//! holds (invariant 6). The snapshots here are crafted by hand with the
//! account's real keys, as a compromised client or a buggy one could.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use haven_client::{HttpRemote, Remote};
use haven_format::blob::{BlobKind, blob_id, seal};
use haven_format::keys::{Keys, MasterKey};
use haven_format::pack::PackWriter;
use haven_format::snapshot::Snapshot;
use haven_format::tree::{Node, NodeKind, Timestamp, Tree};
use haven_format::{BlobId, ChunkId, TreeId};
use haven_proto::CommitRequest;
use haven_testkit::{Device, TestServer};
use serde_bytes::ByteBuf;

const BIN: &str = env!("CARGO_BIN_EXE_haven");

struct Crafter {
    keys: Keys,
    pack: PackWriter,
    refs: Vec<BlobId>,
}

impl Crafter {
    fn new(dev: &Device) -> Self {
        Crafter {
            keys: MasterKey::from_hex(&dev.master_key()).unwrap().keys(),
            pack: PackWriter::new(),
            refs: Vec::new(),
        }
    }

    fn blob(&mut self, kind: BlobKind, plain: &[u8]) -> BlobId {
        let id = blob_id(&self.keys, kind, plain);
        self.pack
            .add(kind, id, &seal(&self.keys, kind, &id, plain, 3).unwrap());
        self.refs.push(id);
        id
    }

    /// Stores a tree as given (unsorted or duplicate names included).
    fn tree(&mut self, nodes: Vec<Node>) -> TreeId {
        TreeId(self.blob(BlobKind::Tree, &Tree { nodes }.encode()))
    }

    fn file(&mut self, name: &[u8], content: &[u8]) -> Node {
        let id = self.blob(BlobKind::Data, content);
        let mut n = node(name, NodeKind::File);
        n.size = content.len() as u64;
        n.content = vec![ChunkId(id)];
        n
    }

    fn commit(mut self, dev: &Device, root: TreeId) -> String {
        let snap = Snapshot {
            time: Timestamp {
                secs: 1_700_000_000,
                nanos: 0,
            },
            device: "d".into(),
            hostname: "h".into(),
            paths: vec![],
            root,
            parent: None,
            client_version: "evil".into(),
            files: 1,
            bytes: 1,
        };
        let sid = self.blob(BlobKind::Snapshot, &snap.encode());
        let remote = HttpRemote::new(&dev.server, Some(dev.token())).unwrap();
        let (pid, bytes, _) = std::mem::take(&mut self.pack).finish();
        remote.put_pack(pid, bytes).unwrap();
        let id = hex::encode(rand_id());
        let rec = remote
            .commit(&CommitRequest {
                id,
                snapshot_blob: sid,
                time: "2026-01-01T00:00:00Z".into(),
                files: 1,
                bytes: 1,
                client_version: "evil".into(),
                parent: None,
                added: self.refs.clone(),
                removed: vec![],
                session: None,
                checkpoint: false,
                partial: false,
                categories: vec![],
            })
            .unwrap();
        rec.id
    }
}

fn rand_id() -> [u8; 16] {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let mut out = [0u8; 16];
    out.copy_from_slice(&t.to_le_bytes());
    out
}

fn node(name: &[u8], kind: NodeKind) -> Node {
    Node {
        name: ByteBuf::from(name.to_vec()),
        kind,
        mode: 0o755,
        uid: 0,
        gid: 0,
        mtime: Timestamp::default(),
        ctime: Timestamp::default(),
        dev: 0,
        ino: 0,
        nlink: 1,
        size: 0,
        content: vec![],
        subtree: None,
        target: None,
    }
}

fn dir(name: &[u8], subtree: TreeId) -> Node {
    let mut n = node(name, NodeKind::Dir);
    n.subtree = Some(subtree);
    n
}

fn symlink(name: &[u8], target: &Path) -> Node {
    let mut n = node(name, NodeKind::Symlink);
    n.target = Some(ByteBuf::from(target.to_str().unwrap().as_bytes().to_vec()));
    n
}

fn setup() -> (tempfile::TempDir, TestServer, Device, PathBuf) {
    let (tmp, server, dev) = haven_testkit::signed_up(Path::new(BIN), "evil@example.org");
    let outside = tmp.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    (tmp, server, dev, outside)
}

fn assert_empty(dir: &Path) {
    let entries: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        entries.is_empty(),
        "restore wrote outside its target: {entries:?}"
    );
}

fn restore(dev: &Device, id: &str, target: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let mut args = vec!["restore", id, "--to", target.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = dev.run(&args);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn unsafe_names_are_refused_and_nothing_escapes() {
    let (tmp, _server, dev, outside) = setup();
    let mut c = Crafter::new(&dev);
    let escape = format!("../outside/escaped-{}", 1);
    let abs = format!("{}/absolute", outside.display());
    let mut nodes = vec![
        c.file(escape.as_bytes(), b"x"),
        c.file(abs.as_bytes(), b"x"),
        c.file(b"..", b"x"),
        c.file(b".", b"x"),
        c.file(b"", b"x"),
        c.file(b"nul\0byte", b"x"),
        c.file(b"good.txt", b"fine"),
    ];
    let inner = c.tree(vec![nodes[0].clone()]);
    nodes.push(dir(b"../outside", inner));
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let root = c.tree(nodes);
    let id = c.commit(&dev, root);
    let target = tmp.path().join("target");
    let (code, err) = restore(&dev, &id, &target, &[]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("unsafe name"), "{err}");
    assert_eq!(fs::read(target.join("good.txt")).unwrap(), b"fine");
    assert_empty(&outside);
}

#[test]
fn a_symlink_in_the_snapshot_or_in_the_target_is_never_followed() {
    let (tmp, _server, dev, outside) = setup();
    let target = tmp.path().join("target");

    // Backup 1: "link" is a symlink to the outside directory.
    let mut c = Crafter::new(&dev);
    let root = c.tree(vec![symlink(b"link", &outside)]);
    let first = c.commit(&dev, root);
    // Backup 2: "link" is a directory with a file in it.
    let mut c = Crafter::new(&dev);
    let f = c.file(b"pwned.txt", b"pwned");
    let sub = c.tree(vec![f]);
    let root = c.tree(vec![dir(b"link", sub)]);
    let second = c.commit(&dev, root);

    let (code, err) = restore(&dev, &first, &target, &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        fs::symlink_metadata(target.join("link"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    // Restoring backup 2 on top must not write through the symlink.
    let (code, err) = restore(&dev, &second, &target, &[]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("symlink"), "{err}");
    assert_empty(&outside);
    // With --overwrite the symlink is replaced by a real directory.
    let (code, err) = restore(&dev, &second, &target, &["--overwrite"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(fs::read(target.join("link/pwned.txt")).unwrap(), b"pwned");
    assert_empty(&outside);

    // A symlink planted in the target where a file will be restored.
    let target2 = tmp.path().join("target2");
    fs::create_dir_all(target2.join("link")).unwrap();
    std::os::unix::fs::symlink(outside.join("planted"), target2.join("link/pwned.txt")).unwrap();
    let (code, _) = restore(&dev, &second, &target2, &["--overwrite"]);
    assert_eq!(code, Some(0));
    assert!(
        fs::symlink_metadata(target2.join("link/pwned.txt"))
            .unwrap()
            .is_file()
    );
    assert_empty(&outside);
}

#[test]
fn a_planted_staging_directory_is_never_written_through() {
    let (tmp, _server, dev, outside) = setup();
    let mut c = Crafter::new(&dev);
    let f = c.file(b"pwned.txt", b"pwned");
    let sub = c.tree(vec![f]);
    let root = c.tree(vec![dir(b"docs", sub)]);
    let id = c.commit(&dev, root);
    let tag = haven_client::restore::staging_tag(&id, &[]);
    let name = haven_client::restore::staging_name(b"docs", &tag);
    let staging = |target: &Path| target.join(std::str::from_utf8(&name).unwrap());

    // Where this restore would fill "docs": a symlink to the outside, in a
    // target that is not empty (so a run of it may have been interrupted).
    let target = tmp.path().join("target");
    fs::create_dir_all(&target).unwrap();
    fs::write(target.join("other"), b"x").unwrap();
    std::os::unix::fs::symlink(&outside, staging(&target)).unwrap();
    let (code, err) = restore(&dev, &id, &target, &[]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("in the way"), "{err}");
    assert!(!target.join("docs").exists());
    assert_empty(&outside);

    // A directory others can write to is not taken for one either.
    let target2 = tmp.path().join("target2");
    fs::create_dir_all(staging(&target2)).unwrap();
    fs::set_permissions(staging(&target2), fs::Permissions::from_mode(0o777)).unwrap();
    let (code, err) = restore(&dev, &id, &target2, &[]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("in the way"), "{err}");
    assert!(fs::read_dir(staging(&target2)).unwrap().next().is_none());

    // A private one of ours is continued in and moved into place.
    fs::set_permissions(staging(&target2), fs::Permissions::from_mode(0o700)).unwrap();
    let (code, err) = restore(&dev, &id, &target2, &[]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(fs::read(target2.join("docs/pwned.txt")).unwrap(), b"pwned");
    assert!(!staging(&target2).exists());
}

#[test]
fn forged_hard_links_and_broken_trees_do_not_escape_or_crash() {
    let (tmp, _server, dev, outside) = setup();
    let mut c = Crafter::new(&dev);
    // Two files claiming the same inode: the second becomes a hard link to
    // the first *restored* file, never to anything else.
    let mut a = c.file(b"a.txt", b"first");
    a.nlink = 2;
    a.dev = 7;
    a.ino = 7;
    let mut b = c.file(b"b.txt", b"second");
    b.nlink = 2;
    b.dev = 7;
    b.ino = 7;
    // A tree whose names are not sorted (rejected on decode) and a file
    // whose chunk is a tree blob (fails authentication as data).
    let x = c.file(b"x", b"x");
    let y = c.file(b"y", b"y");
    let unsorted = c.tree(vec![y, x]);
    let mut liar = node(b"liar.txt", NodeKind::File);
    liar.size = 5;
    liar.content = vec![ChunkId(unsorted.0)];
    let root = c.tree(vec![a, b, dir(b"broken", unsorted), liar]);
    let id = c.commit(&dev, root);
    let target = tmp.path().join("target");
    let (code, err) = restore(&dev, &id, &target, &[]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("broken") && err.contains("liar.txt"), "{err}");
    assert_eq!(fs::read(target.join("b.txt")).unwrap(), b"first");
    assert_empty(&outside);
}

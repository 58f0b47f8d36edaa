//! Exact usage: `used` is the stored size of the referenced blobs counted
//! once, checked against the packs on the server's disk; deleting a backup
//! lowers it by exactly its `freed_if_deleted`, at once.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use haven_format::pack::parse_pack;
use haven_testkit::tree::{noise, text};
use haven_testkit::{Device, TestServer};

const BIN: &str = env!("CARGO_BIN_EXE_haven");

/// Stored length of every distinct blob in the server's pack files.
fn blobs_on_disk(data: &Path) -> HashMap<[u8; 32], u64> {
    let mut out = HashMap::new();
    let mut stack = vec![data.join("objects/packs")];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                for entry in parse_pack(&fs::read(&p).unwrap()).unwrap() {
                    out.insert(entry.id.0, entry.length as u64);
                }
            }
        }
    }
    out
}

#[test]
fn usage_is_exact_and_deleting_frees_exactly_what_was_announced() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("server"));
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("photo.raw"), noise(5 << 20, 1)).unwrap();
    fs::write(src.join("notes.txt"), text(200_000, 2)).unwrap();
    let dev = Device::new(
        Path::new(BIN),
        &tmp.path().join("dev"),
        &server.url(),
        "correct horse battery",
    );
    dev.signup("usage@example.org", "laptop");
    let first = dev.json(&["backup", src.to_str().unwrap(), "--json"]);

    let u = dev.json(&["storage", "--json"]);
    let on_disk: u64 = blobs_on_disk(&server.data_dir).values().sum();
    assert_eq!(u["used"].as_u64().unwrap(), on_disk, "{u}");
    assert!(u["stored_physical"].as_u64().unwrap() >= on_disk);
    assert_eq!(u["devices"][0]["device"], "laptop");
    assert_eq!(u["devices"][0]["bytes"].as_u64().unwrap(), on_disk);
    for key in ["plan", "quota", "free"] {
        assert!(
            u.get(key).is_some(),
            "{key} is present (null without plans)"
        );
    }
    assert!(u["categories"].is_array());

    // A second backup shares most of the first.
    fs::write(src.join("new.bin"), noise(2 << 20, 3)).unwrap();
    fs::remove_file(src.join("notes.txt")).unwrap();
    dev.json(&["backup", src.to_str().unwrap(), "--json"]);
    let u = dev.json(&["storage", "--json"]);
    let used = u["used"].as_u64().unwrap();
    assert_eq!(
        used,
        blobs_on_disk(&server.data_dir).values().sum::<u64>(),
        "every stored blob is referenced"
    );

    let list = dev.json(&["backups", "list", "--json"]);
    let old = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == first["id"])
        .unwrap()
        .clone();
    let freed = old["freed_if_deleted"].as_u64().unwrap();
    assert!(
        freed > 10_000,
        "the (compressed) notes only the first backup holds: {old}"
    );
    assert!(
        freed < 1_000_000,
        "the photo is shared and not freed: {old}"
    );
    let shown = dev.json(&["backups", "show", first["id"].as_str().unwrap(), "--json"]);
    assert_eq!(
        shown["freed_if_deleted"].as_u64().unwrap(),
        freed,
        "backups show says what deleting frees: {shown}"
    );
    dev.json(&[
        "backups",
        "delete",
        first["id"].as_str().unwrap(),
        "--yes",
        "--json",
    ]);
    let after = dev.json(&["storage", "--json"])["used"].as_u64().unwrap();
    assert_eq!(
        after,
        used - freed,
        "deleting lowers used by exactly freed_if_deleted"
    );

    let last = dev.json(&["backups", "list", "--json"])[0].clone();
    assert_eq!(
        last["freed_if_deleted"].as_u64().unwrap(),
        after,
        "the only backup frees everything"
    );
    dev.json(&[
        "backups",
        "delete",
        last["id"].as_str().unwrap(),
        "--yes",
        "--json",
    ]);
    assert_eq!(dev.json(&["storage", "--json"])["used"], 0);
}

//! Scrub, self-healing and damaged backups, end to end: pack files on the
//! server's disk are damaged by hand, scrub must find exactly that, the
//! next backup must repair what the device still has, and restores must
//! be bit-exact again.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use haven_format::blob::BlobKind;
use haven_format::pack::parse_pack;
use haven_testkit::tree::{assert_same_tree, copy_tree, noise, populate};
use haven_testkit::{Device, TestServer, signed_up};

const BIN: &str = env!("CARGO_BIN_EXE_haven");

fn pack_files(data: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![data.join("objects/packs")];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

fn scrub(server: &TestServer) -> serde_json::Value {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let r = rt
        .block_on(haven_server::run_scrub(&server.config))
        .unwrap();
    serde_json::to_value(r).unwrap()
}

fn health(dev: &Device) -> BTreeMap<String, String> {
    dev.json(&["backups", "list", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_string(),
                s["health"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn scrub_finds_exactly_the_damage_and_the_next_backup_heals_it() {
    let (tmp, server, dev) = signed_up(Path::new(BIN), "scrub@example.org");
    let src = tmp.path().join("src");
    populate(&src, "s3cret");
    for i in 0..4 {
        fs::write(
            src.join(format!("photos/v{i}.raw")),
            noise(14 << 20, 10 + i),
        )
        .unwrap();
    }
    let keep = tmp.path().join("keep");
    copy_tree(&src, &keep);
    let first = dev.json(&["backup", src.to_str().unwrap(), "--json"]);
    let first_id = first["id"].as_str().unwrap().to_string();

    let clean = scrub(&server);
    let total = clean["checked"].as_u64().unwrap();
    assert!(total > 10, "{clean}");
    assert_eq!(
        (clean["damaged"].as_u64(), clean["missing"].as_u64()),
        (Some(0), Some(0)),
        "no false positives: {clean}"
    );

    // Three packs holding only file data: flip a byte in one blob of the
    // first, truncate the second in its middle, delete the third.
    let data_packs: Vec<(PathBuf, Vec<haven_format::pack::PackEntry>)> =
        pack_files(&server.data_dir)
            .into_iter()
            .map(|p| {
                let entries = parse_pack(&fs::read(&p).unwrap()).unwrap();
                (p, entries)
            })
            .filter(|(_, e)| e.iter().all(|e| e.kind == BlobKind::Data))
            .collect();
    assert!(
        data_packs.len() >= 3,
        "need three data packs, got {}",
        data_packs.len()
    );
    let (flip, flip_entries) = &data_packs[0];
    let mut bytes = fs::read(flip).unwrap();
    let victim = &flip_entries[0];
    bytes[(victim.offset + victim.length as u64 / 2) as usize] ^= 0x40;
    fs::write(flip, &bytes).unwrap();

    let (trunc, trunc_entries) = &data_packs[1];
    let bytes = fs::read(trunc).unwrap();
    let cut = trunc_entries[trunc_entries.len() / 2].offset as usize + 10;
    fs::write(trunc, &bytes[..cut]).unwrap();
    let truncated = trunc_entries
        .iter()
        .filter(|e| e.offset + e.length as u64 > cut as u64)
        .count() as u64;

    let (gone, gone_entries) = &data_packs[2];
    fs::remove_file(gone).unwrap();
    let expected_missing = truncated + gone_entries.len() as u64;

    let found = scrub(&server);
    assert_eq!(found["checked"].as_u64().unwrap(), total, "{found}");
    assert_eq!(found["damaged"].as_u64().unwrap(), 1, "{found}");
    assert_eq!(
        found["missing"].as_u64().unwrap(),
        expected_missing,
        "{found}"
    );
    assert_eq!(found["damaged_backups"].as_u64().unwrap(), 1, "{found}");
    assert_eq!(health(&dev)[&first_id], "damaged");

    let shown = dev.json(&["backups", "show", &first_id, "--json"]);
    let paths: Vec<String> = shown["damaged_paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    assert!(!paths.is_empty());
    assert!(
        paths.iter().all(|p| p.contains("/photos/")),
        "only the big data files are affected: {paths:?}"
    );
    assert!(!dev.run(&["verify", &first_id, "--json"]).status.success());

    // A restore of the damaged backup restores all it can and names the rest.
    let out = tmp.path().join("damaged-restore");
    let r = dev.run(&[
        "restore",
        &first_id,
        "--to",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(r.status.code(), Some(3));
    let report: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    let failed: Vec<String> = report["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    assert_eq!(failed.len(), paths.len(), "{failed:?} vs {paths:?}");
    let restored = out.join(src.strip_prefix("/").unwrap());
    assert_eq!(
        fs::read(restored.join("docs/deep/deeper/story.txt")).unwrap(),
        fs::read(src.join("docs/deep/deeper/story.txt")).unwrap()
    );

    // One damaged file is gone from the device before the next backup: its
    // data cannot come back; everything else heals.
    let lost = paths.iter().find(|p| p.ends_with(".raw")).unwrap().clone();
    let lost_local = PathBuf::from(&lost);
    let lost_copy = fs::read(&lost_local).unwrap();
    fs::remove_file(&lost_local).unwrap();
    let second = dev.json(&["backup", src.to_str().unwrap(), "--json"]);
    let h = health(&dev);
    assert_eq!(h[second["id"].as_str().unwrap()], "ok");
    let shown = dev.json(&["backups", "show", &first_id, "--json"]);
    assert_eq!(
        shown["damaged_paths"],
        serde_json::json!([lost]),
        "only the file no device has any more stays damaged"
    );

    // Put it back: the next backup heals the first backup completely.
    fs::write(&lost_local, &lost_copy).unwrap();
    dev.json(&["backup", src.to_str().unwrap(), "--json"]);
    assert!(
        health(&dev).values().all(|h| h == "ok"),
        "{:?}",
        health(&dev)
    );
    dev.json(&["verify", &first_id, "--read-data", "--json"]);
    let out = tmp.path().join("healed-restore");
    dev.json(&[
        "restore",
        &first_id,
        "--to",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert_same_tree(&keep, &out.join(src.strip_prefix("/").unwrap()));

    let after = scrub(&server);
    assert_eq!(
        (after["damaged"].as_u64(), after["missing"].as_u64()),
        (Some(0), Some(0)),
        "healed blobs live in new packs now: {after}"
    );
}

#[test]
fn a_damaged_parent_backup_never_blocks_the_next_one() {
    let (tmp, server, dev) = signed_up(Path::new(BIN), "parent@example.org");
    let src = tmp.path().join("src");
    populate(&src, "p");
    let keep = tmp.path().join("keep");
    copy_tree(&src, &keep);
    dev.json(&["backup", src.to_str().unwrap(), "--json"]);
    // Delete every pack that holds a directory listing or the description.
    for p in pack_files(&server.data_dir) {
        let entries = parse_pack(&fs::read(&p).unwrap()).unwrap();
        if entries.iter().any(|e| e.kind != BlobKind::Data) {
            fs::remove_file(&p).unwrap();
        }
    }
    let found = scrub(&server);
    assert!(found["missing"].as_u64().unwrap() > 0);
    // A fresh state directory: no local copy of the old trees either.
    let fresh = Device::new(
        Path::new(BIN),
        &tmp.path().join("dev2"),
        &server.url(),
        "correct horse battery",
    );
    fresh.login("parent@example.org", "d");
    let next = fresh.json(&["backup", src.to_str().unwrap(), "--json"]);
    assert_eq!(
        next["files_read"].as_u64().unwrap(),
        next["files"].as_u64().unwrap(),
        "everything is read again"
    );
    let out = tmp.path().join("restored");
    fresh.json(&["restore", "latest", "--to", out.to_str().unwrap(), "--json"]);
    assert_same_tree(&keep, &out.join(src.strip_prefix("/").unwrap()));
}

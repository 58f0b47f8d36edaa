//! The database can be lost: after deleting it, `reindex` rebuilds it from
//! the packs and the metadata copies, and everything works as before.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;

use haven_testkit::tree::{assert_same_tree, copy_tree, noise, populate};
use haven_testkit::{Device, TestServer};

const BIN: &str = env!("CARGO_BIN_EXE_haven");

#[test]
fn a_deleted_database_is_rebuilt_and_every_backup_restores() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("server");
    let server = TestServer::start(&data);
    let dev = Device::new(
        Path::new(BIN),
        &tmp.path().join("dev"),
        &server.url(),
        "correct horse battery",
    );
    dev.signup("lost@example.org", "laptop");
    let other = Device::new(
        Path::new(BIN),
        &tmp.path().join("dev2"),
        &server.url(),
        "correct horse battery",
    );
    other.login("lost@example.org", "desktop");

    let src = tmp.path().join("src");
    populate(&src, "r");
    let mut versions = Vec::new();
    for round in 0..3u64 {
        fs::write(src.join(format!("round{round}.bin")), noise(300_000, round)).unwrap();
        let v = dev.json(&["backup", src.to_str().unwrap(), "--json"]);
        let keep = tmp.path().join(format!("keep{round}"));
        copy_tree(&src, &keep);
        versions.push((v["id"].as_str().unwrap().to_string(), keep));
    }
    let src2 = tmp.path().join("src2");
    fs::create_dir_all(&src2).unwrap();
    fs::write(src2.join("a.bin"), noise(100_000, 99)).unwrap();
    other.json(&["backup", src2.to_str().unwrap(), "--json"]);
    // The first backup is deleted: it must stay deleted.
    dev.json(&["backups", "delete", &versions[0].0, "--yes", "--json"]);
    let (deleted, _) = versions.remove(0);
    // Deleting that base made the newest of its dependents a full copy and
    // the other a delta against it; the next backup's copy is a delta too.
    // The rebuild must resolve both.
    fs::write(src.join("round3.bin"), noise(300_000, 3)).unwrap();
    let v = dev.json(&["backup", src.to_str().unwrap(), "--json"]);
    let keep = tmp.path().join("keep3");
    copy_tree(&src, &keep);
    versions.push((v["id"].as_str().unwrap().to_string(), keep));
    let copies: Vec<String> = fs::read_dir(data.join("objects/meta/snapshots"))
        .unwrap()
        .flat_map(|acct| fs::read_dir(acct.unwrap().path()).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let deltas = copies.iter().filter(|n| n.contains(".delta.")).count();
    assert_eq!(deltas, 2, "{copies:?}");
    assert!(
        !copies.iter().any(|n| n.contains(&deleted)),
        "the deleted backup's copy is gone: {copies:?}"
    );
    dev.json(&["categories", "off", "Photos", "--json"]);

    let list_before = dev.json(&["backups", "list", "--all", "--json"]);
    let usage_before = dev.json(&["storage", "--json"]);
    let config = server.config.clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let refused = rt.block_on(haven_server::reindex(&config)).unwrap_err();
    assert!(refused.to_string().contains("stop it first"), "{refused}");
    drop(rt);
    let (server, report) = server.lose_database_and_reindex();
    assert_eq!(report.accounts, 1);
    assert_eq!(report.devices, 2);
    assert_eq!(report.snapshots, 4, "{report:?}");
    assert!(report.incomplete_snapshots.is_empty(), "{report:?}");
    // The devices' sign-ins survived: no login needed.
    let list_after = dev.json(&["backups", "list", "--all", "--json"]);
    let ids = |v: &serde_json::Value| {
        let mut ids: Vec<(String, String, bool)> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["id"].as_str().unwrap().to_string(),
                    s["device"].as_str().unwrap().to_string(),
                    s["complete"].as_bool().unwrap(),
                )
            })
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&list_after), ids(&list_before));
    assert!(!ids(&list_after).iter().any(|(id, _, _)| *id == deleted));
    let usage_after = dev.json(&["storage", "--json"]);
    assert_eq!(usage_after["used"], usage_before["used"]);
    let cats = dev.json(&["categories", "--json"]);
    assert!(
        cats.as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "Photos" && c["enabled"] == false),
        "switches survive: {cats}"
    );
    for (i, (id, keep)) in versions.iter().enumerate() {
        let out = tmp.path().join(format!("restored{i}"));
        dev.json(&["restore", id, "--to", out.to_str().unwrap(), "--json"]);
        assert_same_tree(keep, &out.join(src.strip_prefix("/").unwrap()));
    }
    // Backups go on incrementally, and the password still works.
    let next = dev.json(&["backup", src.to_str().unwrap(), "--json"]);
    assert!(next["uploaded_bytes"].as_u64().unwrap() < 200_000, "{next}");
    let fresh = Device::new(
        Path::new(BIN),
        &tmp.path().join("dev3"),
        &server.url(),
        "correct horse battery",
    );
    fresh.login("lost@example.org", "laptop");
}

//! `haven-server scrub` on the real binary: its exit status tells a clean
//! store (0) from a damaged one (3), for monitoring scripts.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::SERVER;

fn scrub(data: &Path) -> (Option<i32>, serde_json::Value) {
    let out = Command::new(SERVER)
        .args(["scrub", "--json", "--data-dir"])
        .arg(data)
        .output()
        .unwrap();
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("no JSON report: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code(), report)
}

#[test]
fn scrub_exits_0_on_a_clean_store_and_3_when_it_finds_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (mut child, url) = common::serve(&data, &["--allow-signup"]);
    // SAFETY: the test sets this before any thread reads it.
    unsafe { std::env::set_var("HAVEN_INSECURE_ALLOW_WEAK_KDF", "1") };
    let plains: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 50_000]).collect();
    let uploaded =
        common::sign_up_and_upload(&tmp.path().join("dev"), &url, "scrub@example.org", &plains);
    let _ = child.kill();
    let _ = child.wait();
    uploaded.unwrap();

    let (code, clean) = scrub(&data);
    assert_eq!(clean["checked"], 3, "{clean}");
    assert_eq!(clean["damaged"], 0, "{clean}");
    assert_eq!(code, Some(0), "{clean}");

    // One flipped byte in the middle of the (only) pack file.
    let packs = data.join("objects/packs");
    let file = walk(&packs).pop().expect("a pack file");
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&file, bytes).unwrap();

    let (code, found) = scrub(&data);
    assert_eq!(found["damaged"], 1, "{found}");
    assert_eq!(code, Some(3), "{found}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

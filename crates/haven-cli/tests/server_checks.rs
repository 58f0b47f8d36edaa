//! The server checks what it receives and bounds what it sends.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;

use haven_client::{HttpRemote, Remote};
use haven_format::PackId;
use haven_format::blob::{BlobKind, blob_id, seal};
use haven_format::keys::MasterKey;
use haven_format::pack::PackWriter;
use haven_testkit::tree::noise;
use haven_testkit::{Device, TestServer};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_haven");

fn setup() -> (tempfile::TempDir, TestServer, Device) {
    haven_testkit::signed_up(Path::new(BIN), "checks@example.org")
}

fn put(server: &TestServer, token: &str, id: &str, body: Vec<u8>) -> (u16, Value) {
    let r = reqwest::blocking::Client::new()
        .put(format!("{}/v1/packs/{id}", server.url()))
        .bearer_auth(token)
        .body(body)
        .send()
        .unwrap();
    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
}

#[test]
fn damaged_or_forged_packs_are_refused_before_anything_is_stored() {
    let (_tmp, server, dev) = setup();
    let token = dev.token();
    let keys = MasterKey::from_hex(&dev.master_key()).unwrap().keys();
    let data = b"some chunk".to_vec();
    let id = blob_id(&keys, BlobKind::Data, &data);
    let mut w = PackWriter::new();
    w.add(
        BlobKind::Data,
        id,
        &seal(&keys, BlobKind::Data, &id, &data, 3).unwrap(),
    );
    let (pid, bytes, _) = w.finish();

    // A bit flipped in transit: the pack no longer matches its id.
    let mut flipped = bytes.clone();
    flipped[10] ^= 1;
    let (status, body) = put(&server, &token, &pid.to_hex(), flipped);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("pack_invalid"))
    );
    // Garbage under its own correct id: the structure is checked.
    let garbage = noise(1000, 1);
    let (status, body) = put(&server, &token, &PackId::of(&garbage).to_hex(), garbage);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("pack_invalid"))
    );
    // A malformed id.
    let (status, _) = put(&server, &token, "not-hex", bytes.clone());
    assert_eq!(status, 400);
    // Nothing of that was stored or indexed.
    let remote = HttpRemote::new(&server.url(), Some(token.clone())).unwrap();
    assert_eq!(remote.missing(&[id]).unwrap(), vec![id]);
    let packs = server.data_dir.join("objects/packs");
    let stored = walk_files(&packs);
    assert!(stored.is_empty(), "{stored:?}");
    // The intact pack is accepted, upper-case id or not, and its blob is known.
    let (status, _) = put(&server, &token, &pid.to_hex().to_uppercase(), bytes);
    assert_eq!(status, 200);
    assert!(remote.missing(&[id]).unwrap().is_empty());
}

fn walk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk_files(&p))
            } else {
                out.push(p)
            }
        }
    }
    out
}

#[test]
fn a_fetch_answer_is_bounded_and_the_client_gets_everything_anyway() {
    let (tmp, server, dev) = setup();
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("big"), noise(4 << 20, 5)).unwrap();
    dev.json(&["backup", src.to_str().unwrap(), "--json"]);
    // The file's chunks, from the snapshot.
    let keys = MasterKey::from_hex(&dev.master_key()).unwrap().keys();
    let data = noise(4 << 20, 5);
    let mut ids = Vec::new();
    for chunk in haven_format::chunker::Chunker::new(&data[..], &keys) {
        ids.push(blob_id(&keys, BlobKind::Data, &chunk.unwrap()));
    }
    // The same chunks asked for many times: ~120 MiB if sent at once.
    let many: Vec<_> = ids.iter().cycle().take(ids.len() * 30).copied().collect();
    let raw = reqwest::blocking::Client::new()
        .post(format!("{}/v1/blobs/fetch", server.url()))
        .bearer_auth(dev.token())
        .json(&serde_json::json!({ "ids": many }))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    assert!(
        raw.len() <= (64 << 20) + (5 << 20) + 37 * many.len(),
        "answer of {} bytes",
        raw.len()
    );
    let remote = HttpRemote::new(&server.url(), Some(dev.token())).unwrap();
    let got = remote.fetch(&many).unwrap();
    assert_eq!(got.len(), many.len());
    assert!(
        got.iter().all(|b| b.is_some()),
        "every blob arrives, over several answers"
    );
}

#[test]
fn a_full_server_disk_fails_the_backup_clearly_and_the_next_one_completes_once_space_is_freed() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("server");
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..3 {
        fs::write(src.join(format!("a{i}")), noise(2 << 20, i)).unwrap();
    }
    let dev = Device::new(
        Path::new(BIN),
        &tmp.path().join("dev"),
        "",
        "correct horse battery",
    );
    let first;
    {
        let server = TestServer::start_with(&data, |c| {
            c.allow_signup = true;
            c.max_store_bytes = Some("12 MB".into());
        });
        let dev = Device::new(
            Path::new(BIN),
            &dev.config_dir,
            &server.url(),
            "correct horse battery",
        );
        dev.signup("full@example.org", "d");
        first = dev.json(&["backup", src.to_str().unwrap(), "--json"]);
        for i in 0..3 {
            fs::write(src.join(format!("b{i}")), noise(4 << 20, 10 + i)).unwrap();
        }
        assert_eq!(
            dev.error_code(&["backup", src.to_str().unwrap(), "--json"]),
            "server_storage_full"
        );
        // What was committed before is intact.
        let out = tmp.path().join("out1");
        let r = dev.json(&[
            "restore",
            first["id"].as_str().unwrap(),
            "--to",
            out.to_str().unwrap(),
            "--json",
        ]);
        assert_eq!(r["files"], 3);
        assert_eq!(r["failed"].as_array().unwrap().len(), 0);
    }
    // The operator frees space (here: raises the cap) and restarts the server.
    let server = TestServer::start_with(&data, |c| {
        c.allow_signup = true;
        c.max_store_bytes = Some("100 MB".into());
    });
    let mut profile: Value =
        serde_json::from_slice(&fs::read(dev.config_dir.join("device.json")).unwrap()).unwrap();
    profile["server"] = server.url().into();
    fs::write(
        dev.config_dir.join("device.json"),
        serde_json::to_vec(&profile).unwrap(),
    )
    .unwrap();
    let b = dev.json(&["backup", src.to_str().unwrap(), "--json"]);
    assert_eq!(b["files"], 6);
    let out = tmp.path().join("out2");
    dev.json(&["restore", "--to", out.to_str().unwrap(), "--json"]);
    haven_testkit::tree::assert_same_tree(&src, &out.join(src.strip_prefix("/").unwrap()));
}

#[test]
fn requests_the_server_cannot_read_get_the_json_error_with_a_code() {
    let (_tmp, server, dev) = setup();
    let http = reqwest::blocking::Client::new();
    let url = server.url();
    let call = |r: reqwest::blocking::RequestBuilder| {
        let r = r.bearer_auth(dev.token()).send().unwrap();
        let status = r.status().as_u16();
        let kind = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        let v: Value = r.json().unwrap_or(Value::Null);
        assert_eq!(kind.as_deref(), Some("application/json"), "{v}");
        assert!(
            !v["error"]["message"].as_str().unwrap().is_empty() && v["error"]["fix"].is_array(),
            "{v}"
        );
        (status, v["error"]["code"].as_str().unwrap().to_string(), v)
    };
    let json = "application/json";
    // Not JSON at all.
    let (status, code, v) = call(
        http.post(format!("{url}/v1/blobs/missing"))
            .header("content-type", json)
            .body("{not json"),
    );
    assert_eq!((status, code.as_str()), (400, "bad_request"), "{v}");
    // JSON of the wrong shape.
    let (status, code, v) = call(
        http.post(format!("{url}/v1/blobs/missing"))
            .header("content-type", json)
            .body(r#"{"ids": 7}"#),
    );
    assert_eq!((status, code.as_str()), (422, "bad_request"), "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("ids"),
        "{v}"
    );
    // No content type.
    let (status, code, v) = call(http.post(format!("{url}/v1/blobs/missing")).body("{}"));
    assert_eq!((status, code.as_str()), (415, "bad_request"), "{v}");
    // A method the route does not take.
    let (status, code, v) = call(http.delete(format!("{url}/v1/blobs/missing")));
    assert_eq!((status, code.as_str()), (405, "bad_request"), "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("DELETE"),
        "{v}"
    );
    // A pack larger than any the server takes, refused on its declared length.
    let big = vec![0u8; haven_format::pack::MAX_PACK_SIZE + 1];
    let (status, code, v) = call(
        http.put(format!("{url}/v1/packs/{}", "a".repeat(64)))
            .body(big),
    );
    assert_eq!((status, code.as_str()), (413, "too_large"), "{v}");
    // The server is fine afterwards.
    dev.json(&["status", "--json"]);
}

//! The account's compression dictionary: trained by the first backup that
//! has enough small files, kept once, handed to every device, and brought
//! back by `reindex`.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;

use haven_testkit::tree::{assert_same_tree, copy_tree, noise, populate, text};
use haven_testkit::{Device, signed_up};

const BIN: &str = env!("CARGO_BIN_EXE_haven");

fn device(dir: &Path, url: &str) -> Device {
    Device::new(Path::new(BIN), dir, url, "correct horse battery")
}

/// 320 small files of 1–8 KB over 8 directories, as a source tree has,
/// made by `content(length, seed)`; `set` picks other directories and
/// content.
fn small_files(root: &Path, set: u64, content: fn(usize, u64) -> Vec<u8>) {
    for d in set * 8..set * 8 + 8 {
        let dir = root.join(format!("src/module{d}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..40u64 {
            let seed = d * 100 + f;
            fs::write(
                dir.join(format!("file{f}.rs")),
                content(1000 + (seed as usize * 37) % 7000, seed),
            )
            .unwrap();
        }
    }
}

fn stored_dictionary(data: &Path) -> Option<Vec<u8>> {
    fs::read(data.join("objects/meta/accounts/1.dictionary")).ok()
}

fn api_dictionary(url: &str, dev: &Device) -> reqwest::blocking::Response {
    reqwest::blocking::Client::new()
        .get(format!("{url}/v1/dictionary"))
        .bearer_auth(dev.token())
        .send()
        .unwrap()
}

#[test]
fn the_first_backup_with_enough_small_files_trains_the_dictionary_every_device_uses() {
    let (tmp, server, laptop) = signed_up(Path::new(BIN), "dee@example.org");
    let data = server.data_dir.clone();

    // Ten files are too few to learn from: no dictionary yet.
    let src = tmp.path().join("home");
    populate(&src, "first");
    let first = laptop.json(&["backup", src.to_str().unwrap(), "--json"]);
    let keep_first = tmp.path().join("keep-first");
    copy_tree(&src, &keep_first);
    assert!(stored_dictionary(&data).is_none(), "no dictionary yet");
    assert_eq!(api_dictionary(&server.url(), &laptop).status(), 204);

    // The try is remembered: a day passes before the next one walks the
    // selection again.
    small_files(&src, 0, text);
    laptop.json(&["backup", src.to_str().unwrap(), "--json"]);
    assert!(stored_dictionary(&data).is_none(), "no dictionary yet");
    let tried = laptop.config_dir.join("dictionary-tried");
    let day_ago = filetime::FileTime::from_unix_time(
        filetime::FileTime::now().unix_seconds() - 24 * 3600 - 60,
        0,
    );
    filetime::set_file_mtime(&tried, day_ago).unwrap();

    // With a source tree, the next backup trains one while it runs; the
    // backup after it seals new small files with it.
    laptop.json(&["backup", src.to_str().unwrap(), "--json"]);
    let sealed = stored_dictionary(&data).expect("the dictionary's copy");
    small_files(&src, 1, text);
    let second = laptop.json(&["backup", src.to_str().unwrap(), "--json"]);
    let answer = api_dictionary(&server.url(), &laptop);
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.bytes().unwrap().to_vec(), sealed);

    // It is written once: another offer gets the first back, and bytes
    // that are not a sealed dictionary are refused.
    let http = reqwest::blocking::Client::new();
    let mut other = sealed.clone();
    other[40] ^= 1;
    let r = http
        .put(format!("{}/v1/dictionary", server.url()))
        .bearer_auth(laptop.token())
        .body(other)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().unwrap().to_vec(), sealed);
    let r = http
        .put(format!("{}/v1/dictionary", server.url()))
        .bearer_auth(laptop.token())
        .body(vec![9u8; 100])
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    let err: serde_json::Value = r.json().unwrap();
    assert_eq!(err["error"]["code"], "bad_request", "{err}");
    assert_eq!(stored_dictionary(&data).unwrap(), sealed);

    // Blobs sealed with it pass a full read, and a new device restores
    // both backups (the one from before the dictionary and the one with
    // it) exactly: it fetched the dictionary.
    let v = laptop.json(&["verify", "--read-data", "--json"]);
    assert_eq!(v["ok"], true, "{v}");
    let phone = device(&tmp.path().join("phone"), &server.url());
    phone.login("dee@example.org", "phone");
    for (id, expected) in [(&first["id"], &keep_first), (&second["id"], &src)] {
        let out = tmp.path().join(format!("out-{}", id.as_str().unwrap()));
        let r = phone.json(&[
            "restore",
            id.as_str().unwrap(),
            "--device",
            "d",
            "--to",
            out.to_str().unwrap(),
            "--json",
        ]);
        assert_eq!(r["failed"].as_array().unwrap().len(), 0, "{r}");
        assert_same_tree(expected, &out.join(src.strip_prefix("/").unwrap()));
    }

    // The phone's own first backup keeps the account's dictionary.
    let phone_src = tmp.path().join("phone-home");
    small_files(&phone_src, 2, text);
    phone.json(&["backup", phone_src.to_str().unwrap(), "--json"]);
    assert_eq!(stored_dictionary(&data).unwrap(), sealed);

    // A lost database comes back with the dictionary.
    let (server, report) = server.lose_database_and_reindex();
    assert_eq!(report.dictionaries, 1, "{report:?}");
    let answer = api_dictionary(&server.url(), &laptop);
    assert_eq!(answer.bytes().unwrap().to_vec(), sealed);
    let fresh = device(&tmp.path().join("fresh"), &server.url());
    fresh.login("dee@example.org", "d");
    let out = tmp.path().join("after-reindex");
    // By id: the backups were taken within the same second.
    fresh.json(&[
        "restore",
        second["id"].as_str().unwrap(),
        "--to",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert_same_tree(&src, &out.join(src.strip_prefix("/").unwrap()));
}

#[test]
fn files_a_dictionary_would_not_shrink_get_none() {
    let (tmp, server, dev) = signed_up(Path::new(BIN), "rand@example.org");
    // Random bytes: zstd stores them raw with or without a dictionary.
    let src = tmp.path().join("home");
    small_files(&src, 0, noise);
    dev.json(&["backup", src.to_str().unwrap(), "--json"]);
    assert!(
        stored_dictionary(&server.data_dir).is_none(),
        "no dictionary yet"
    );
    assert!(
        dev.config_dir.join("dictionary-tried").exists(),
        "the try is remembered"
    );
}

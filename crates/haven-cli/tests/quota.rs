//! Plans and quotas, categories, partial backups and retention, end to end
//! with the real server and the real `haven` binary. Each device backs up
//! its fake home directory (`HOME` is set), where categories apply.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use haven_format::blob::BlobKind;
use haven_format::pack::PackWriter;
use haven_format::{BlobId, PackId};
use haven_server::config::PlanConfig;
use haven_testkit::tree::{noise, text};
use haven_testkit::{Device, TestServer};

const BIN: &str = env!("CARGO_BIN_EXE_haven");
const MB: u64 = 1_000_000;

fn plan(name: &str, quota: &str) -> PlanConfig {
    PlanConfig {
        name: name.into(),
        quota: quota.into(),
        selectable: true,
        quota_bytes: 0,
    }
}

/// A server whose default plan is `small` with `quota`, and a selectable
/// `big` plan of 100 MB.
fn server_with_quota(dir: &Path, quota: &str) -> TestServer {
    let quota = quota.to_string();
    TestServer::start_with(dir, move |c| {
        c.allow_signup = true;
        c.plans = vec![plan("small", &quota), plan("big", "100 MB")];
        c.default_plan = Some("small".into());
    })
}

fn write(path: &Path, content: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

/// `haven ARGS --json` with `HOME=home`.
fn run(dev: &Device, home: &Path, args: &[&str]) -> Output {
    dev.run_env(args, &[("HOME", home.to_str().unwrap())])
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn backup(dev: &Device, home: &Path, extra: &[&str]) -> (i32, serde_json::Value) {
    let mut args = vec!["backup", "--json"];
    args.extend(extra);
    let out = run(dev, home, &args);
    (out.status.code().unwrap(), json(&out))
}

fn pack_files(data: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![data.join("objects/packs")];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                n += 1;
            }
        }
    }
    n
}

fn setup(quota: Option<&str>) -> (tempfile::TempDir, TestServer, Device, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let server = match quota {
        Some(q) => server_with_quota(&tmp.path().join("server"), q),
        None => TestServer::start(&tmp.path().join("server")),
    };
    let dev = Device::new(
        Path::new(BIN),
        &tmp.path().join("dev"),
        &server.url(),
        "correct horse battery",
    );
    dev.signup("quota@example.org", "laptop");
    let home = tmp.path().join("home");
    fs::create_dir_all(&home).unwrap();
    (tmp, server, dev, home)
}

#[test]
fn a_backup_that_does_not_fit_uploads_nothing_under_no_partial() {
    let (_tmp, server, dev, home) = setup(Some("3 MB"));
    write(&home.join("Pictures/trip.raw"), &noise(5 << 20, 1));
    write(&home.join("Documents/a.txt"), &text(20_000, 2));

    let (code, v) = backup(&dev, &home, &["--no-partial"]);
    assert_eq!(code, 1, "{v}");
    let e = &v["error"];
    assert_eq!(e["code"], "quota_exceeded", "{v}");
    assert!(e["needed"].as_u64().unwrap() >= 5 << 20, "{v}");
    assert!(e["available"].as_u64().unwrap() <= 3 * MB, "{v}");
    let fixes: Vec<&str> = e["fix"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    // Biggest effect first: 97 MB more quota, then Photos.
    assert!(fixes[0].contains("haven plan set big"), "{fixes:?}");
    assert!(fixes[1].contains("Photos"), "{fixes:?}");
    assert_eq!(fixes.len(), 2, "a 20 kB saving is noise here: {fixes:?}");

    assert_eq!(pack_files(&server.data_dir), 0, "nothing was uploaded");
    let u = dev.json(&["storage", "--json"]);
    assert_eq!(u["used"], 0);
    assert_eq!(u["plan"], "small");
    assert_eq!(u["quota"], 3 * MB);
    let status = json(&run(&dev, &home, &["status", "--json"]));
    assert_eq!(status["last_failure"]["code"], "quota_exceeded", "{status}");
    assert!(status["last_success"].is_null());

    // The doctor says the same, with the same fixes.
    let out = run(&dev, &home, &["doctor", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let checks = json(&out);
    let storage = checks["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "storage")
        .unwrap()
        .clone();
    assert_eq!(storage["status"], "fail", "{checks}");
    assert!(
        storage["fix"][0]
            .as_str()
            .unwrap()
            .contains("haven plan set big"),
        "{checks}"
    );

    // The human message says the same.
    let out = run(&dev, &home, &["backup", "--no-partial"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Not enough storage") && err.contains("what to do"),
        "{err}"
    );

    // A bigger plan fixes it.
    dev.json(&["plan", "set", "big", "--json"]);
    let (code, v) = backup(&dev, &home, &["--no-partial"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["partial"], false);
    assert_eq!(dev.json(&["storage", "--json"])["plan"], "big");
    // Back to the small plan is refused: the data does not fit in it.
    assert_eq!(
        dev.error_code(&["plan", "set", "small", "--json"]),
        "quota_exceeded"
    );
}

#[test]
fn a_partial_backup_saves_categories_by_priority_and_keeps_old_copies() {
    let (tmp, _server, dev, home) = setup(Some("4 MB"));
    write(&home.join("Documents/report.txt"), &text(300_000, 1));
    write(&home.join(".config/app/settings.ini"), &text(5_000, 2));
    write(&home.join("Pictures/old.jpg"), &noise(200_000, 3));
    let (code, v) = backup(&dev, &home, &[]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["partial"], false);

    // Now Photos grows past the quota; Documents change; Music appears.
    write(&home.join("Pictures/big.raw"), &noise(6 << 20, 4));
    write(&home.join("Documents/report.txt"), &text(310_000, 5));
    write(&home.join("Music/song.flac"), &noise(1 << 20, 6));
    let (code, v) = backup(&dev, &home, &[]);
    assert_eq!(code, 3, "a partial backup exits 3: {v}");
    assert_eq!(v["partial"], true);
    let skipped: Vec<&str> = v["skipped_categories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(skipped, vec!["Photos"], "{v}");
    assert!(!v["fix"].as_array().unwrap().is_empty());

    let u = dev.json(&["storage", "--json"]);
    assert!(u["used"].as_u64().unwrap() <= 4 * MB, "{u}");
    let list = dev.json(&["backups", "list", "--json"]);
    assert_eq!(list[0]["partial"], true);

    let out = tmp.path().join("restored");
    dev.json(&["restore", "latest", "--to", out.to_str().unwrap(), "--json"]);
    let r = out.join(home.strip_prefix("/").unwrap());
    assert_eq!(
        fs::read(r.join("Documents/report.txt")).unwrap(),
        text(310_000, 5),
        "the new Documents are in"
    );
    assert_eq!(
        fs::read(r.join("Music/song.flac")).unwrap(),
        noise(1 << 20, 6),
        "a smaller category after Photos still fit"
    );
    assert_eq!(
        fs::read(r.join("Pictures/old.jpg")).unwrap(),
        noise(200_000, 3),
        "the previous copy of a skipped category is kept"
    );
    assert!(!r.join("Pictures/big.raw").exists());

    let status = json(&run(&dev, &home, &["status", "--json"]));
    assert_eq!(status["last_success"]["result"], "partial", "{status}");
    assert_eq!(status["last_failure"]["code"], "quota_exceeded");
}

#[test]
fn switching_a_category_off_shrinks_the_next_backup() {
    let (tmp, _server, dev, home) = setup(None);
    write(&home.join("Documents/a.txt"), &text(50_000, 1));
    write(&home.join("Pictures/p.jpg"), &noise(2 << 20, 2));
    let (code, first) = backup(&dev, &home, &[]);
    assert_eq!(code, 0, "{first}");

    let cats = dev.json(&["categories", "--json"]);
    let photos = cats
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "Photos")
        .unwrap()
        .clone();
    assert_eq!(photos["enabled"], true);
    assert_eq!(photos["files"], 1);
    assert_eq!(photos["bytes"], 2 << 20);
    assert_eq!(photos["new_bytes"], 0, "backed up: nothing new");

    write(&home.join("Pictures/q.jpg"), &noise(1 << 20, 3));
    let out = run(&dev, &home, &["categories", "off", "photos"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cats = dev.json(&["categories", "--json"]);
    assert!(
        cats.as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "Photos" && c["enabled"] == false)
    );
    assert_eq!(
        dev.error_code(&["categories", "off", "Nope", "--json"]),
        "not_found"
    );

    let (code, second) = backup(&dev, &home, &[]);
    assert_eq!(code, 0, "{second}");
    assert_eq!(second["disabled_categories"][0], "Photos");
    assert!(second["bytes"].as_u64().unwrap() < first["bytes"].as_u64().unwrap());
    assert_eq!(second["files"], 1);
    let u = dev.json(&["storage", "--json"]);
    let cats: Vec<&str> = u["categories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["category"].as_str().unwrap())
        .collect();
    assert_eq!(cats, vec!["Documents"], "{u}");
    assert_eq!(u["next_backup_bytes"], 0, "{u}");

    let out = tmp.path().join("restored");
    dev.json(&["restore", "latest", "--to", out.to_str().unwrap(), "--json"]);
    let r = out.join(home.strip_prefix("/").unwrap());
    assert!(r.join("Documents/a.txt").exists());
    assert!(!r.join("Pictures").join("p.jpg").exists());

    // On again: the next backup has Photos back.
    dev.json(&["categories", "on", "Photos", "--json"]);
    let (_, third) = backup(&dev, &home, &[]);
    assert_eq!(third["files"], 3);
}

#[test]
fn two_devices_racing_never_push_the_account_over_its_quota() {
    let (tmp, server, dev_a, home_a) = setup(Some("10 MB"));
    let dev_b = Device::new(
        Path::new(BIN),
        &tmp.path().join("dev-b"),
        &server.url(),
        "correct horse battery",
    );
    dev_b.login("quota@example.org", "desktop");
    let home_b = tmp.path().join("home-b");
    write(&home_a.join("Documents/a.bin"), &noise(7 << 20, 1));
    write(&home_b.join("Documents/b.bin"), &noise(7 << 20, 2));

    let results: Vec<(i32, serde_json::Value)> = std::thread::scope(|s| {
        let a = s.spawn(|| backup(&dev_a, &home_a, &["--no-partial"]));
        let b = s.spawn(|| backup(&dev_b, &home_b, &["--no-partial"]));
        vec![a.join().unwrap(), b.join().unwrap()]
    });
    let ok = results.iter().filter(|(c, _)| *c == 0).count();
    assert_eq!(ok, 1, "exactly one fits: {results:?}");
    for (c, v) in &results {
        if *c != 0 {
            assert_eq!(v["error"]["code"], "quota_exceeded", "{v}");
        }
    }
    let u = dev_a.json(&["storage", "--json"]);
    assert!(u["used"].as_u64().unwrap() <= 10 * MB, "{u}");
}

/// The per-pack check itself: sessions without reservations upload packs
/// at once; the server accepts packs only while they fit.
#[test]
fn concurrent_pack_uploads_stop_at_the_quota() {
    let (_tmp, server, dev, _home) = setup(Some("10 MB"));
    let token = dev.token();
    let accepted: Vec<usize> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2u8)
            .map(|t| {
                let (url, token) = (server.url(), token.clone());
                s.spawn(move || {
                    use haven_client::Remote;
                    let remote = haven_client::HttpRemote::new(&url, Some(token)).unwrap();
                    remote.open_session(None, None).unwrap();
                    let mut ok = 0;
                    for i in 0..8u8 {
                        let mut w = PackWriter::new();
                        let mut id = [t; 32];
                        id[1] = i;
                        // A well-framed sealed blob: the format version, then bytes
                        // the server cannot tell from ciphertext.
                        let mut sealed = vec![1u8];
                        sealed.extend(noise(1 << 20, (t as u64) << 8 | i as u64));
                        w.add(BlobKind::Data, BlobId(id), &sealed);
                        let (pid, bytes, _): (PackId, Vec<u8>, _) = w.finish();
                        match remote.put_pack(pid, bytes) {
                            Ok(()) => ok += 1,
                            Err(e) => assert_eq!(e.code().as_str(), "quota_exceeded", "{e}"),
                        }
                    }
                    ok
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let total: usize = accepted.iter().sum();
    assert_eq!(
        total, 9,
        "9 × 1 MiB fit in 10 MB, the 10th does not: {accepted:?}"
    );
    let u = dev.json(&["storage", "--json"]);
    assert!(u["used"].as_u64().unwrap() <= 10 * MB, "{u}");
    assert_eq!(
        pack_files(&server.data_dir),
        9,
        "refused packs leave no file behind"
    );
}

#[test]
fn retention_prunes_what_the_policy_says_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(&tmp.path().join("server"), |c| {
        c.allow_signup = true;
        c.keep_last = 2;
        c.keep_weekly = 2;
    });
    let dev = Device::new(
        Path::new(BIN),
        &tmp.path().join("dev"),
        &server.url(),
        "correct horse battery",
    );
    dev.signup("keep@example.org", "laptop");
    let home = tmp.path().join("home");
    let mut ids = Vec::new();
    let mut pruned = Vec::new();
    // Ages count from when the server received each backup, by its clock.
    for (i, days) in [20i64, 10, 9, 2, 1].into_iter().enumerate() {
        write(&home.join("Documents/log.txt"), &text(10_000 + i, i as u64));
        let out = dev.backup_received_ago(&server, &home, days * 86_400 + 60);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v = json(&out);
        ids.push(v["id"].as_str().unwrap().to_string());
        pruned.push(
            v["pruned"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap().to_string())
                .collect::<Vec<_>>(),
        );
    }
    // Keep the last 2, plus the newest of each of the last 2 weeks, by
    // the server's clock at each commit.
    assert_eq!(pruned[0], Vec::<String>::new());
    assert_eq!(pruned[1], Vec::<String>::new());
    assert_eq!(
        pruned[2],
        Vec::<String>::new(),
        "at day -9, the 20-day-old backup is 11 days old: the newest of week 1"
    );
    assert_eq!(
        pruned[3],
        vec![ids[1].clone(), ids[0].clone()],
        "at day -2: 10 days is neither last nor newest of week 1; 20 days is past week 1"
    );
    assert_eq!(pruned[4], Vec::<String>::new());
    let left: Vec<String> = dev
        .json(&["backups", "list", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(left, vec![ids[4].clone(), ids[3].clone(), ids[2].clone()]);
    // What is left restores.
    let out = tmp.path().join("restored");
    dev.json(&["restore", &ids[2], "--to", out.to_str().unwrap(), "--json"]);
    let r = out.join(home.strip_prefix("/").unwrap());
    assert_eq!(
        fs::read(r.join("Documents/log.txt")).unwrap(),
        text(10_002, 2)
    );
}

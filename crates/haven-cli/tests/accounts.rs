//! Accounts, keys and isolation between accounts, through the real server
//! and the real `haven` binary.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;

use haven_testkit::tree::populate;
use haven_testkit::{Device, TestServer};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_haven");

fn device(tmp: &Path, name: &str, server: &TestServer, password: &str) -> Device {
    Device::new(Path::new(BIN), &tmp.join(name), &server.url(), password)
}

#[test]
fn wrong_password_says_so_and_signs_nothing_in() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("server"));
    device(tmp.path(), "a", &server, "the right password").signup("pw@example.org", "a");
    let wrong = device(tmp.path(), "b", &server, "the wrong password");
    assert_eq!(
        wrong.error_code(&[
            "login",
            "--server",
            &server.url(),
            "--email",
            "pw@example.org",
            "--json"
        ]),
        "wrong_password"
    );
    assert!(!tmp.path().join("b/device.json").exists());
    // An unknown email gets the same answer (emails cannot be probed).
    assert_eq!(
        wrong.error_code(&[
            "login",
            "--server",
            &server.url(),
            "--email",
            "nobody@example.org",
            "--json"
        ]),
        "wrong_password"
    );
    // Without a sign-in, commands say how to sign in.
    assert_eq!(
        wrong.error_code(&["backups", "list", "--json"]),
        "not_signed_in"
    );
    // The human form is a sentence with a fix, on stderr, and a non-zero exit.
    let out = wrong.run(&[
        "login",
        "--server",
        &server.url(),
        "--email",
        "pw@example.org",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("password is wrong") && err.contains("what to do:"),
        "{err}"
    );
}

#[test]
fn prelogin_does_not_reveal_whether_an_account_exists() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("server"));
    device(tmp.path(), "a", &server, "the right password").signup("real@example.org", "a");
    let http = reqwest::blocking::Client::new();
    let pre = |email: &str| -> Value {
        http.post(format!("{}/v1/auth/prelogin", server.url()))
            .json(&json!({ "email": email }))
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    let real = pre("real@example.org");
    let fake = pre("fake@example.org");
    assert_eq!(fake, pre("fake@example.org"), "fake answers are stable");
    for key in ["algorithm", "memory_kib", "iterations", "parallelism"] {
        assert_eq!(real["kdf"][key], fake["kdf"][key]);
    }
    assert_eq!(fake["kdf"]["salt"].as_str().unwrap().len(), 32);
    assert_ne!(real["kdf"]["salt"], fake["kdf"]["salt"]);
}

#[test]
fn recovery_key_sets_a_new_password_and_data_stays_readable() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("server"));
    let dev = device(tmp.path(), "a", &server, "forgotten password");
    let s = dev.signup("rec@example.org", "a");
    let key = s["recovery_key"].as_str().unwrap().to_string();
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f.txt"), "keep me").unwrap();
    dev.json(&["backup", src.to_str().unwrap(), "--json"]);
    // A browser signed in to the console, and a link not used yet.
    let http = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let used = dev.json(&["console", "--json"]);
    let r = http.get(used["url"].as_str().unwrap()).send().unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_string();
    let devices = |cookie: &str| {
        http.get(format!("{}/devices", server.url()))
            .header("cookie", cookie)
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(devices(&cookie), 200);
    let unused = dev.json(&["console", "--json"]);

    let new = device(tmp.path(), "b", &server, "a brand new password");
    let bad_key = "0".repeat(64);
    assert_eq!(
        new.error_code(&[
            "recover",
            "--server",
            &server.url(),
            "--email",
            "rec@example.org",
            "--recovery-key",
            &bad_key,
            "--json"
        ]),
        "wrong_password"
    );
    assert_eq!(
        new.error_code(&[
            "recover",
            "--server",
            &server.url(),
            "--email",
            "rec@example.org",
            "--recovery-key",
            "nonsense",
            "--json"
        ]),
        "wrong_password"
    );
    new.json(&[
        "recover",
        "--server",
        &server.url(),
        "--email",
        "rec@example.org",
        "--recovery-key",
        &key.to_uppercase(),
        "--json",
    ]);

    // The browser was signed out, and the link is worthless.
    assert_eq!(
        devices(&cookie),
        303,
        "the console session outlived the reset"
    );
    assert_eq!(
        http.get(unused["url"].as_str().unwrap())
            .send()
            .unwrap()
            .status(),
        410
    );
    // The old device was signed out, and is told why; the old password
    // no longer works.
    assert_eq!(
        dev.error_code(&["backups", "list", "--json"]),
        "token_revoked"
    );
    let old = device(tmp.path(), "c", &server, "forgotten password");
    assert_eq!(
        old.error_code(&[
            "login",
            "--server",
            &server.url(),
            "--email",
            "rec@example.org",
            "--json"
        ]),
        "wrong_password"
    );
    new.login("rec@example.org", "a");
    let out = tmp.path().join("out");
    new.json(&["restore", "--to", out.to_str().unwrap(), "--json"]);
    assert_eq!(
        fs::read(out.join(src.strip_prefix("/").unwrap()).join("f.txt")).unwrap(),
        b"keep me"
    );
}

#[test]
fn sign_up_needs_an_invite_unless_open() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(&tmp.path().join("server"), |c| c.allow_signup = false);
    let dev = device(tmp.path(), "a", &server, "invited person pw");
    let url = server.url();
    let signup = |extra: &[&str]| {
        let mut args = vec![
            "signup",
            "--server",
            &url,
            "--email",
            "inv@example.org",
            "--json",
        ];
        args.extend_from_slice(extra);
        dev.error_code(&args)
    };
    assert_eq!(signup(&[]), "signup_closed");
    assert_eq!(signup(&["--invite", "deadbeef"]), "invite_invalid");
    let for_other = server.invite(Some("other@example.org"));
    assert_eq!(signup(&["--invite", &for_other]), "invite_invalid");
    let code = server.invite(Some("inv@example.org"));
    dev.json(&[
        "signup",
        "--server",
        &server.url(),
        "--email",
        "inv@example.org",
        "--invite",
        &code,
        "--json",
    ]);
    let second = device(tmp.path(), "b", &server, "someone else pw");
    assert_eq!(
        second.error_code(&[
            "signup",
            "--server",
            &server.url(),
            "--email",
            "x@example.org",
            "--invite",
            &code,
            "--json"
        ]),
        "invite_invalid"
    );
    assert_eq!(
        second.error_code(&[
            "signup",
            "--server",
            &server.url(),
            "--email",
            "inv@example.org",
            "--invite",
            &code,
            "--json"
        ]),
        "invite_invalid",
        "a used invite says nothing about whether the email has an account"
    );
}

#[test]
fn the_server_never_sees_plaintext_names_or_plaintext_hashes() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("server"));
    let src = tmp.path().join("secret-folder-name");
    let secret = "zebra-unicorn-4711-never-on-server";
    populate(&src, secret);
    let dev = device(tmp.path(), "a", &server, "correct horse battery");
    dev.signup("plain@example.org", "a");
    dev.json(&["backup", src.to_str().unwrap(), "--json"]);
    let note = fs::read(src.join("docs/note.txt")).unwrap();
    let plain_hash = blake3::hash(&note);
    let needles: Vec<Vec<u8>> = vec![
        secret.as_bytes().to_vec(),
        b"secret-folder-name".to_vec(),
        b"story.txt".to_vec(),
        plain_hash.as_bytes().to_vec(),
        plain_hash.to_hex().as_bytes().to_vec(),
    ];
    let mut scanned = 0;
    let mut stack = vec![server.data_dir.clone()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let bytes = fs::read(&p).unwrap();
            scanned += bytes.len();
            for n in &needles {
                assert!(
                    !bytes.windows(n.len()).any(|w| w == n.as_slice()),
                    "{} holds {:?}",
                    p.display(),
                    String::from_utf8_lossy(n)
                );
            }
        }
    }
    assert!(
        scanned > 12 << 20,
        "the packs were scanned ({scanned} bytes)"
    );
}

#[test]
fn one_account_cannot_touch_another_accounts_data() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("server"));
    let alice = device(tmp.path(), "alice", &server, "alice password");
    alice.signup("alice@example.org", "laptop");
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("diary.txt"), "dear diary").unwrap();
    let b = alice.json(&["backup", src.to_str().unwrap(), "--json"]);
    let id = b["id"].as_str().unwrap();
    let record: Value = alice.json(&["backups", "list", "--json"])[0].clone();
    let blob = record["snapshot_blob"].as_str().unwrap().to_string();

    let mallory = device(tmp.path(), "mallory", &server, "mallory password");
    mallory.signup("mallory@example.org", "laptop");
    assert_eq!(
        mallory
            .json(&["backups", "list", "--all", "--json"])
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        mallory.error_code(&[
            "restore",
            id,
            "--to",
            tmp.path().join("m").to_str().unwrap(),
            "--json"
        ]),
        "not_found"
    );
    assert_eq!(
        mallory.error_code(&["backups", "delete", id, "--yes", "--json"]),
        "not_found"
    );

    let http = reqwest::blocking::Client::new();
    let url = server.url();
    let token = mallory.token();
    let get = http
        .get(format!("{url}/v1/snapshots/{id}"))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(get.status(), 404);
    // A token alone deletes nothing, whoever's the id (and so tells
    // nothing about it either).
    let del = http
        .delete(format!("{url}/v1/snapshots/{id}"))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(del.status(), 403);
    let missing: Value = http
        .post(format!("{url}/v1/blobs/missing"))
        .bearer_auth(&token)
        .json(&json!({"ids": [blob]}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        missing["missing"],
        json!([blob]),
        "alice's blob looks absent to mallory"
    );
    let fetched = http
        .post(format!("{url}/v1/blobs/fetch"))
        .bearer_auth(&token)
        .json(&json!({"ids": [blob]}))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    assert_eq!(fetched.len(), 37, "only a 'missing' record");
    assert_eq!(fetched[32], 1);
    let commit = http
        .post(format!("{url}/v1/snapshots"))
        .bearer_auth(&token)
        .json(&json!({"id": "0".repeat(32), "snapshot_blob": blob, "time": "2026-01-01T00:00:00Z", "files": 1, "bytes": 1,
                      "client_version": "x", "parent": null, "added": [blob], "removed": []}))
        .send()
        .unwrap();
    assert_eq!(commit.status(), 409);
    let body: Value = commit.json().unwrap();
    assert_eq!(body["error"]["code"], "blobs_missing");
    let with_parent = http
        .post(format!("{url}/v1/snapshots"))
        .bearer_auth(&token)
        .json(&json!({"id": "1".repeat(32), "snapshot_blob": blob, "time": "2026-01-01T00:00:00Z", "files": 1, "bytes": 1,
                      "client_version": "x", "parent": id, "added": [], "removed": []}))
        .send()
        .unwrap();
    assert_eq!(
        with_parent.status(),
        404,
        "alice's snapshot cannot be a parent for mallory"
    );

    // Alice's data is untouched.
    let out = tmp.path().join("out");
    alice.json(&["restore", id, "--to", out.to_str().unwrap(), "--json"]);
    assert_eq!(
        fs::read(out.join(src.strip_prefix("/").unwrap()).join("diary.txt")).unwrap(),
        b"dear diary"
    );
}

#[test]
fn every_route_but_sign_in_needs_a_token_and_old_clients_are_told_to_update() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(&tmp.path().join("server"), |c| {
        c.allow_signup = true;
        c.min_client_version = "0.1.0".into();
    });
    let http = reqwest::blocking::Client::new();
    let url = server.url();
    for (method, path) in [
        ("GET", "/v1/devices"),
        ("GET", "/v1/snapshots"),
        ("POST", "/v1/blobs/missing"),
        ("POST", "/v1/blobs/fetch"),
        ("POST", "/v1/snapshots"),
        ("PUT", &format!("/v1/packs/{}", "a".repeat(64))),
    ] {
        let r = http
            .request(method.parse().unwrap(), format!("{url}{path}"))
            .bearer_auth("not-a-token")
            .body("{}")
            .header("content-type", "application/json")
            .send()
            .unwrap();
        assert_eq!(r.status(), 401, "{method} {path}");
        let v: Value = r.json().unwrap();
        assert_eq!(v["error"]["code"], "unauthorized");
    }
    let health = http.get(format!("{url}/v1/health")).send().unwrap();
    assert_eq!(health.status(), 200);
    let old = http
        .get(format!("{url}/v1/health"))
        .header("haven-client-version", "0.0.9")
        .send()
        .unwrap();
    assert_eq!(old.status(), 426);
    let v: Value = old.json().unwrap();
    assert_eq!(v["error"]["code"], "client_too_old");
    assert_eq!(v["error"]["details"]["min_client_version"], "0.1.0");
}

#[test]
fn an_outdated_client_is_told_which_version_to_install() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(&tmp.path().join("server"), |c| {
        c.allow_signup = true;
        c.min_client_version = "9.0.0".into();
    });
    let dev = Device::new(
        Path::new(BIN),
        &tmp.path().join("dev"),
        &server.url(),
        "correct horse battery",
    );
    let args = [
        "signup",
        "--server",
        &server.url(),
        "--email",
        "old@example.org",
        "--device",
        "d",
    ];
    let out = dev.run(&args);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Update Haven to 9.0.0 or later"), "{err}");
    let mut json_args = args.to_vec();
    json_args.push("--json");
    assert_eq!(dev.error_code(&json_args), "client_too_old");
}

#[test]
fn doctor_checks_everything_and_says_what_is_wrong() {
    let (tmp, server, dev) = haven_testkit::signed_up(Path::new(BIN), "doc@example.org");
    let src = tmp.path().join("src");
    populate(&src, "doc");
    // Never backed up: the doctor says so, and how to fix it.
    let out = dev.run(&["doctor", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    dev.json(&["backup", src.to_str().unwrap(), "--json"]);
    let v = dev.json(&["doctor", "--json"]);
    let checks = v["checks"].as_array().unwrap();
    let names: Vec<&str> = checks.iter().map(|c| c["name"].as_str().unwrap()).collect();
    for want in [
        "signed in",
        "server reachable",
        "versions",
        "storage",
        "upload speed",
        "automatic backups",
        "last backup",
        "backup health",
        "local state",
        "free disk",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    assert!(checks.iter().all(|c| c["status"] != "fail"), "{v}");
    let human = dev.run(&["doctor"]);
    assert!(String::from_utf8_lossy(&human.stdout).contains("✓ server reachable"));

    drop(server);
    let out = dev.run_env(&["doctor", "--json"], &[("HAVEN_RETRY_SCALE", "0.01")]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let reach = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "server reachable")
        .unwrap()
        .clone();
    assert_eq!(reach["status"], "fail");
    assert!(!reach["fix"].as_array().unwrap().is_empty());
}

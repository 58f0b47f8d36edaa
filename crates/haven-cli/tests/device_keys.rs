//! A device's key adds backups and reads; it never destroys (invariant 10).
//! Attacked as a thief with a laptop would: the stolen token straight at
//! the API, and the real `haven` binary without the password. Then device
//! sign-out, sign-in replacement, expiry by the server's clock, password
//! change, and retention and expiry against devices whose clock is wrong.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};

use haven_format::keys::{KdfParams, derive_login_keys};
use haven_testkit::tree::text;
use haven_testkit::{Device, TestServer};
use reqwest::blocking::Client;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_haven");
const PW: &str = "correct horse battery";
const DAY: i64 = 86_400;

fn device(tmp: &Path, name: &str, server: &TestServer) -> Device {
    Device::new(Path::new(BIN), &tmp.join(name), &server.url(), PW)
}

/// A laptop that signed `email` up and a phone signed in to it.
fn laptop_and_phone(tmp: &Path, server: &TestServer, email: &str) -> (Device, Device) {
    let laptop = device(tmp, "laptop", server);
    laptop.signup(email, "laptop");
    let phone = device(tmp, "phone", server);
    phone.login(email, "phone");
    (laptop, phone)
}

fn home(tmp: &Path, name: &str, seed: u64) -> PathBuf {
    let h = tmp.join(name);
    fs::create_dir_all(h.join("Documents")).unwrap();
    fs::write(h.join("Documents/notes.txt"), text(20_000, seed)).unwrap();
    h
}

fn backup(dev: &Device, home: &Path) -> Value {
    let out = dev.run_env(&["backup", "--json"], &[("HOME", home.to_str().unwrap())]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// One raw API request as a hostile client sends it: status and JSON body.
fn api(
    server: &TestServer,
    token: &str,
    grant: Option<&str>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = Client::new()
        .request(method.parse().unwrap(), format!("{}{path}", server.url()))
        .bearer_auth(token);
    if let Some(g) = grant {
        r = r.header("haven-grant", g);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The auth key the password derives, as the client computes it.
fn auth_key(server: &TestServer, email: &str, password: &str) -> String {
    let pre: Value = Client::new()
        .post(format!("{}/v1/auth/prelogin", server.url()))
        .json(&json!({ "email": email }))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let kdf: KdfParams = serde_json::from_value(pre["kdf"].clone()).unwrap();
    derive_login_keys(password.as_bytes(), &kdf)
        .unwrap()
        .auth
        .to_hex()
}

/// `name` as `haven devices --json` on `dev` lists it.
fn listed_device(dev: &Device, name: &str) -> Value {
    let devs = dev.json(&["devices", "--json"]);
    devs.as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no device {name}: {devs}"))
}

/// Every category of `dev` is switched on.
fn all_categories_on(dev: &Device) -> bool {
    let cats = dev.json(&["categories", "--json"]);
    cats.as_array()
        .unwrap()
        .iter()
        .all(|c| c["enabled"] == true)
}

fn ids(dev: &Device, args: &[&str]) -> Vec<String> {
    dev.json(args)
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

fn with_plans(c: &mut haven_server::Config) {
    c.allow_signup = true;
    c.plans = vec![
        haven_server::config::PlanConfig {
            name: "small".into(),
            quota: "50 MB".into(),
            selectable: true,
            quota_bytes: 0,
        },
        haven_server::config::PlanConfig {
            name: "family".into(),
            quota: "100 MB".into(),
            selectable: true,
            quota_bytes: 0,
        },
        haven_server::config::PlanConfig {
            name: "huge".into(),
            quota: "1 GB".into(),
            selectable: true,
            quota_bytes: 0,
        },
    ];
    c.default_plan = Some("family".into());
}

#[test]
fn a_stolen_token_adds_and_reads_but_destroys_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(&tmp.path().join("server"), with_plans);
    let (laptop, phone) = laptop_and_phone(tmp.path(), &server, "thief@example.org");
    let lh = home(tmp.path(), "lhome", 1);
    let ph = home(tmp.path(), "phome", 2);
    let mine = backup(&laptop, &lh)["id"].as_str().unwrap().to_string();
    let theirs = backup(&phone, &ph)["id"].as_str().unwrap().to_string();
    let stolen = laptop.token();
    let all = ids(&laptop, &["backups", "list", "--all", "--json"]);
    assert_eq!(all.len(), 2);

    // Reads and additions work with the token alone.
    assert_eq!(
        api(&server, &stolen, None, "GET", "/v1/snapshots", None).0,
        200
    );
    assert_eq!(api(&server, &stolen, None, "GET", "/v1/usage", None).0, 200);
    let (s, _) = api(
        &server,
        &stolen,
        None,
        "PUT",
        "/v1/categories/Documents",
        Some(json!({"enabled": true})),
    );
    assert_eq!(s, 200, "switching a category on adds, it is allowed");
    assert_eq!(
        api(
            &server,
            &stolen,
            None,
            "PUT",
            "/v1/plan",
            Some(json!({"plan": "huge"}))
        )
        .0,
        204,
        "a bigger plan weakens nothing"
    );

    // Everything that deletes or weakens is refused, and changes nothing.
    let refused: Vec<(&str, String, Option<Value>)> = vec![
        ("DELETE", format!("/v1/snapshots/{mine}"), None),
        ("DELETE", format!("/v1/snapshots/{theirs}"), None),
        (
            "PUT",
            "/v1/categories/Documents?device=phone".into(),
            Some(json!({"enabled": false})),
        ),
        (
            "PUT",
            "/v1/categories/Documents".into(),
            Some(json!({"enabled": false})),
        ),
        ("PUT", "/v1/plan".into(), Some(json!({"plan": "small"}))),
        ("DELETE", "/v1/devices/phone".into(), None),
        ("DELETE", "/v1/devices/laptop".into(), None),
        (
            "POST",
            "/v1/auth/password".into(),
            Some(
                json!({"new_password": {"kdf": {"algorithm": "argon2id", "memory_kib": 256,
                "iterations": 1, "parallelism": 1, "salt": "00112233445566778899aabbccddeeff"},
                "auth_key": "00".repeat(32), "wrapped_master_key": "00".repeat(72)}}),
            ),
        ),
    ];
    let forged = format!("{}.{}", i64::MAX, "ab".repeat(32));
    for grant in [None, Some(forged.as_str()), Some("garbage")] {
        for (method, path, body) in &refused {
            let (s, v) = api(&server, &stolen, grant, method, path, body.clone());
            assert_eq!(s, 403, "{method} {path} with {grant:?}: {v}");
            assert_eq!(v["error"]["code"], "password_required", "{v}");
            assert!(
                v["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("Nothing was changed")
            );
        }
    }
    assert_eq!(ids(&laptop, &["backups", "list", "--all", "--json"]), all);
    assert!(all_categories_on(&phone));
    assert_eq!(phone.json(&["plan", "--json"])["current"], "huge");
    assert_eq!(
        ids(&phone, &["backups", "list", "--json"]),
        vec![theirs.clone()]
    );

    // A forged "ok" attempt for the phone, dated 2030: recorded as the
    // laptop's, with the time the server received it.
    let (s, _) = api(
        &server,
        &stolen,
        None,
        "POST",
        "/v1/attempts",
        Some(json!({"device": "phone", "started": "2030-01-01T00:00:00Z",
            "finished": "2030-01-01T00:01:00Z", "result": "ok", "code": null,
            "message": "", "snapshot": null})),
    );
    assert_eq!(s, 201);
    let (_, list) = api(&server, &stolen, None, "GET", "/v1/attempts", None);
    let forged_attempt = list
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["started"] == "2030-01-01T00:00:00Z")
        .unwrap();
    assert_eq!(forged_attempt["device"], "laptop", "{forged_attempt}");
    let received = humantime::parse_rfc3339(forged_attempt["received"].as_str().unwrap()).unwrap();
    let age = std::time::SystemTime::now()
        .duration_since(received)
        .unwrap_or_default();
    assert!(
        age.as_secs() < 600,
        "received by the server's clock: {forged_attempt}"
    );

    // A wrong password earns no grant; the right one does, for this
    // device only, for a few minutes.
    let (s, v) = api(
        &server,
        &stolen,
        None,
        "POST",
        "/v1/auth/elevate",
        Some(json!({"auth_key": auth_key(&server, "thief@example.org", "guess guess guess")})),
    );
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("wrong_password"))
    );
    let (s, v) = api(
        &server,
        &stolen,
        None,
        "POST",
        "/v1/auth/elevate",
        Some(json!({"auth_key": auth_key(&server, "thief@example.org", PW)})),
    );
    assert_eq!(s, 200, "{v}");
    let grant = v["grant"].as_str().unwrap().to_string();
    let (s, _) = api(
        &server,
        &phone.token(),
        Some(&grant),
        "DELETE",
        &format!("/v1/snapshots/{theirs}"),
        None,
    );
    assert_eq!(
        s, 403,
        "the laptop's grant does not serve the phone's token"
    );
    let (s, _) = api(
        &server,
        &stolen,
        Some(&grant),
        "DELETE",
        &format!("/v1/snapshots/{mine}"),
        None,
    );
    assert_eq!(s, 204);
    server.advance_clock(6 * 60);
    let (s, v) = api(
        &server,
        &stolen,
        Some(&grant),
        "DELETE",
        &format!("/v1/snapshots/{theirs}"),
        None,
    );
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (403, Some("password_required"))
    );
    assert_eq!(
        ids(&laptop, &["backups", "list", "--all", "--json"]),
        vec![theirs]
    );
}

#[test]
fn the_cli_without_the_password_deletes_nothing_and_with_it_asks_once() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(&tmp.path().join("server"), with_plans);
    let (laptop, phone) = laptop_and_phone(tmp.path(), &server, "cli@example.org");
    let lh = home(tmp.path(), "lhome", 3);
    let id = backup(&laptop, &lh)["id"].as_str().unwrap().to_string();
    let no_pw = [("HAVEN_PASSWORD", "")];
    for args in [
        vec!["backups", "delete", &id[..8], "--yes", "--json"],
        vec!["categories", "off", "Documents", "--json"],
        vec!["plan", "set", "small", "--json"],
        vec!["devices", "remove", "phone", "--yes", "--json"],
    ] {
        let out = laptop.run_env(&args, &no_pw);
        assert!(!out.status.success(), "{args:?}");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["error"]["code"], "password_required", "{args:?}: {v}");
        assert!(
            v["error"]["fix"][0]
                .as_str()
                .unwrap()
                .contains("HAVEN_PASSWORD"),
            "{v}"
        );
    }
    assert_eq!(
        ids(&laptop, &["backups", "list", "--json"]),
        vec![id.clone()]
    );
    assert!(all_categories_on(&laptop));
    assert_eq!(laptop.json(&["plan", "--json"])["current"], "family");
    assert_eq!(phone.json(&["backups", "list", "--json"]), json!([]));

    // A wrong password is refused too.
    let out = laptop.run_env(
        &["backups", "delete", &id, "--yes", "--json"],
        &[("HAVEN_PASSWORD", "not the password")],
    );
    assert!(!out.status.success());
    assert_eq!(
        ids(&laptop, &["backups", "list", "--json"]),
        vec![id.clone()]
    );

    // With the password (HAVEN_PASSWORD, or a file), each goes through.
    let pwfile = tmp.path().join("pw");
    fs::write(&pwfile, format!("{PW}\n")).unwrap();
    laptop.json(&["categories", "off", "Documents", "--json"]);
    laptop.json(&["plan", "set", "small", "--json"]);
    let out = laptop.run_env(
        &[
            "backups",
            "delete",
            &id,
            "--yes",
            "--json",
            "--password-file",
            pwfile.to_str().unwrap(),
        ],
        &no_pw,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(ids(&laptop, &["backups", "list", "--json"]).is_empty());
    assert_eq!(laptop.json(&["plan", "--json"])["current"], "small");
}

#[test]
fn a_removed_device_is_signed_out_at_once_and_stays_out_after_reindex() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("server"));
    let (laptop, phone) = laptop_and_phone(tmp.path(), &server, "lost@example.org");
    let ph = home(tmp.path(), "phome", 4);
    // The phone's clock runs a year ahead.
    let ahead = std::time::SystemTime::now() + std::time::Duration::from_secs(365 * DAY as u64);
    assert!(phone.backup_at(&ph, ahead).status.success());
    let before = laptop.json(&["backups", "list", "--all", "--json"]);
    let devs = laptop.json(&["devices", "--json"]);
    assert!(
        devs.as_array()
            .unwrap()
            .iter()
            .all(|d| d["signed_in"] == true),
        "{devs}"
    );

    let removed = laptop.json(&["devices", "remove", "phone", "--yes", "--json"]);
    assert_eq!(removed["signed_in"], false, "{removed}");
    let out = phone.run(&["backups", "list", "--json"]);
    assert!(!out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["code"], "token_revoked", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("signed out from another device"),
        "{v}"
    );
    let fix = v["error"]["fix"][0].as_str().unwrap();
    assert!(
        fix.contains(&format!(
            "haven login --server {} --email lost@example.org --device \"phone\"",
            server.url()
        )),
        "the exact command: {v}"
    );
    let p = listed_device(&laptop, "phone");
    assert_eq!(p["signed_in"], false, "{p}");
    assert!(p["last_backup"].is_string(), "its backups stay: {p}");
    // Nor can the phone's old token be used directly.
    let stolen = phone.token();
    assert_eq!(api(&server, &stolen, None, "GET", "/v1/usage", None).0, 401);

    // A rebuilt database, a day later, does not sign it back in.
    server.advance_clock(DAY);
    let (server, _) = server.lose_database_and_reindex();
    let (s, v) = api(&server, &stolen, None, "GET", "/v1/usage", None);
    assert_eq!(s, 401, "{v}");
    let after = laptop.json(&["backups", "list", "--all", "--json"]);
    assert_eq!(after.as_array().unwrap().len(), 1);
    assert_eq!(
        after[0]["received"], before[0]["received"],
        "a rebuilt record keeps when the server received the backup, not the time the phone claimed"
    );
    assert_ne!(after[0]["received"], after[0]["time"]);
    // With the password, the phone signs in again and continues.
    assert_eq!(
        phone.login("lost@example.org", "phone")["existing_device"],
        true
    );
    assert_eq!(
        phone
            .json(&["backups", "list", "--json"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn signing_in_again_replaces_the_old_sign_in() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("server"));
    let laptop = device(tmp.path(), "laptop", &server);
    laptop.signup("again@example.org", "laptop");
    let old = laptop.token();
    let copy = device(tmp.path(), "copy", &server);
    copy.login("again@example.org", "laptop");
    let (s, v) = api(&server, &old, None, "GET", "/v1/usage", None);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("token_revoked"))
    );
    assert_eq!(v["error"]["details"]["reason"], "replaced");
    assert_eq!(
        api(&server, &copy.token(), None, "GET", "/v1/usage", None).0,
        200
    );
}

#[test]
fn sign_ins_unused_for_ninety_days_expire_by_the_servers_clock() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("server"));
    let (laptop, phone) = laptop_and_phone(tmp.path(), &server, "idle@example.org");
    // Used every 60 days: never expires.
    for _ in 0..2 {
        server.advance_clock(60 * DAY);
        laptop.json(&["backups", "list", "--json"]);
    }
    // The phone was last used 120 days ago; the laptop 0 days ago.
    assert_eq!(
        phone.error_code(&["backups", "list", "--json"]),
        "token_revoked"
    );
    let out = phone.run(&["backups", "list", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not used for 90 days"),
        "{v}"
    );
    let p = listed_device(&laptop, "phone");
    assert_eq!(p["signed_in"], false, "{p}");
    // The sweep ends them too, without a request.
    server.advance_clock(91 * DAY);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(haven_server::run_expiry(&server.config))
        .unwrap();
    let (s, v) = api(&server, &laptop.token(), None, "GET", "/v1/usage", None);
    assert_eq!(
        (s, v["error"]["details"]["reason"].as_str()),
        (401, Some("expired"))
    );
    assert!(
        fs::read_dir(server.data_dir.join("meta/tokens"))
            .map(|d| d
                .flat_map(|a| fs::read_dir(a.unwrap().path()).unwrap())
                .count())
            .unwrap_or(0)
            == 0,
        "no copy of an expired sign-in is left for a rebuild"
    );
}

#[test]
fn a_password_change_keeps_the_data_and_the_recovery_key_and_signs_others_out() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("server"));
    let laptop = device(tmp.path(), "laptop", &server);
    let s = laptop.signup("newpw@example.org", "laptop");
    let recovery = s["recovery_key"].as_str().unwrap().to_string();
    let phone = device(tmp.path(), "phone", &server);
    phone.login("newpw@example.org", "phone");
    let lh = home(tmp.path(), "lhome", 5);
    backup(&laptop, &lh);

    let new_pw = "a brand new passphrase";
    let out = laptop.run_env(&["password", "--json"], &[("HAVEN_NEW_PASSWORD", new_pw)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["signed_out_devices"], 1, "{v}");
    assert_eq!(
        phone.error_code(&["backups", "list", "--json"]),
        "token_revoked"
    );
    // This device goes on without signing in again.
    backup(&laptop, &lh);
    // The old password no longer signs in; the new one does, and opens the data.
    let fresh_old = device(tmp.path(), "fresh-old", &server);
    assert_eq!(
        fresh_old.error_code(&[
            "login",
            "--server",
            &server.url(),
            "--email",
            "newpw@example.org",
            "--json"
        ]),
        "wrong_password"
    );
    let fresh = Device::new(
        Path::new(BIN),
        &tmp.path().join("fresh"),
        &server.url(),
        new_pw,
    );
    fresh.login("newpw@example.org", "desktop");
    let out_dir = tmp.path().join("out");
    fresh.json(&[
        "restore",
        "latest",
        "--device",
        "laptop",
        "--to",
        out_dir.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(
        fs::read(
            out_dir
                .join(lh.strip_prefix("/").unwrap())
                .join("Documents/notes.txt")
        )
        .unwrap(),
        text(20_000, 5)
    );
    // The recovery key still sets a password.
    let rec = Device::new(
        Path::new(BIN),
        &tmp.path().join("rec"),
        &server.url(),
        "third password here",
    );
    rec.json(&[
        "recover",
        "--server",
        &server.url(),
        "--email",
        "newpw@example.org",
        "--recovery-key",
        &recovery,
        "--json",
    ]);
    rec.login("newpw@example.org", "rec");

    // --keep-other-devices leaves them signed in; a KDF below the floor is refused.
    let other = Device::new(
        Path::new(BIN),
        &tmp.path().join("other"),
        &server.url(),
        "third password here",
    );
    other.login("newpw@example.org", "other");
    let out = rec.run_env(
        &["password", "--keep-other-devices", "--json"],
        &[("HAVEN_NEW_PASSWORD", "fourth password here")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        other
            .json(&["backups", "list", "--json"])
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let (s, v) = api(
        &server,
        &rec.token(),
        None,
        "POST",
        "/v1/auth/elevate",
        Some(json!({"auth_key": auth_key(&server, "newpw@example.org", "fourth password here")})),
    );
    assert_eq!(s, 200);
    let (s, v) = api(
        &server,
        &rec.token(),
        v["grant"].as_str(),
        "POST",
        "/v1/auth/password",
        Some(
            json!({"new_password": {"kdf": {"algorithm": "argon2id", "memory_kib": 8,
            "iterations": 1, "parallelism": 1, "salt": "00112233445566778899aabbccddeeff"},
            "auth_key": "00".repeat(32), "wrapped_master_key": "00".repeat(72)}}),
        ),
    );
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("bad_request")),
        "{v}"
    );
}

#[test]
fn retention_and_expiry_count_the_servers_clock_whatever_a_device_claims() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(&tmp.path().join("server"), |c| {
        c.allow_signup = true;
        c.keep_last = 2;
        c.keep_weekly = 0;
        c.expire_days = 60;
    });
    let slow = device(tmp.path(), "slow", &server);
    slow.signup("clock@example.org", "slow");
    let fast = device(tmp.path(), "fast", &server);
    fast.login("clock@example.org", "fast");
    let now = std::time::SystemTime::now();
    let year = std::time::Duration::from_secs(400 * DAY as u64);
    let sh = home(tmp.path(), "shome", 6);
    let fh = home(tmp.path(), "fhome", 7);

    // A device whose clock runs backwards claims each backup is older
    // than the last: retention still deletes the one received first.
    let mut slow_ids = Vec::new();
    for (i, back) in [400u64, 500, 600].into_iter().enumerate() {
        fs::write(sh.join("Documents/notes.txt"), text(20_000 + i, 6)).unwrap();
        let at = now - std::time::Duration::from_secs(back * DAY as u64);
        let out = slow.backup_at(&sh, at);
        assert!(out.status.success());
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        slow_ids.push(v["id"].as_str().unwrap().to_string());
        if i == 2 {
            assert_eq!(v["pruned"], json!([slow_ids[0]]), "{v}");
        }
        server.advance_clock(60);
    }
    let out = fast.backup_at(&fh, now + year);
    assert!(out.status.success());
    let list = slow.json(&["backups", "list", "--all", "--json"]);
    for b in list.as_array().unwrap() {
        // The device's time is shown; the server's is kept beside it.
        let received = humantime::parse_rfc3339(b["received"].as_str().unwrap()).unwrap();
        let shown = humantime::parse_rfc3339(b["time"].as_str().unwrap()).unwrap();
        assert!(
            received.duration_since(now).unwrap_or_default().as_secs() < 3600,
            "{b}"
        );
        assert!(
            shown
                .duration_since(now)
                .is_ok_and(|d| d.as_secs() > 300 * DAY as u64)
                || now
                    .duration_since(shown)
                    .is_ok_and(|d| d.as_secs() > 300 * DAY as u64),
            "{b}"
        );
    }
    // No warning yet: expiry is 60 days after the server received them.
    assert_eq!(slow.json(&["storage", "--json"])["expiring"], json!([]));
    server.advance_clock(40 * DAY);
    let rt = tokio::runtime::Runtime::new().unwrap();
    assert_eq!(
        rt.block_on(haven_server::run_expiry(&server.config))
            .unwrap(),
        0
    );
    let warn = slow.json(&["storage", "--json"])["expiring"].clone();
    assert_eq!(warn.as_array().unwrap().len(), 2, "{warn}");
    for w in warn.as_array().unwrap() {
        let expires = humantime::parse_rfc3339(w["expires"].as_str().unwrap()).unwrap();
        let server_now =
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(server.now() as u64);
        let left = expires.duration_since(server_now).unwrap().as_secs() as i64;
        assert!(
            (19 * DAY..=20 * DAY + 3600).contains(&left),
            "a date to come: {w}"
        );
    }
    assert_eq!(
        slow.json(&["backups", "list", "--all", "--json"])
            .as_array()
            .unwrap()
            .len(),
        3
    );
    // Neither device keeps its backups past the expiry, whatever it claims.
    server.advance_clock(21 * DAY);
    // Both devices' sign-ins are 61 days unused: still valid (90), so
    // they can see what is left: nothing.
    assert_eq!(
        rt.block_on(haven_server::run_expiry(&server.config))
            .unwrap(),
        3
    );
    assert_eq!(
        slow.json(&["backups", "list", "--all", "--json"]),
        json!([])
    );
}

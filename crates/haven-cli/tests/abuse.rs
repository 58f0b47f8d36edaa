//! The server against a hostile client that speaks the API directly:
//! password guessing meets a limit per account and per address (while
//! successes never do), unauthenticated routes take small bodies and echo
//! little, an invite-only server does not tell which emails have
//! accounts, and every path that sets a password enforces the KDF floor.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use haven_format::keys::{KdfParams, RecoveryKey, derive_login_keys};
use haven_testkit::{Device, TestServer};
use reqwest::blocking::Client;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_haven");
const PW: &str = "correct horse battery";

fn post(server: &TestServer, path: &str, body: &Value) -> (u16, Option<String>, Value) {
    let r = Client::new()
        .post(format!("{}{path}", server.url()))
        .json(body)
        .send()
        .unwrap();
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (status, retry, r.json().unwrap_or(Value::Null))
}

fn kdf(server: &TestServer, email: &str) -> KdfParams {
    let (_, _, v) = post(server, "/v1/auth/prelogin", &json!({ "email": email }));
    serde_json::from_value(v["kdf"].clone()).unwrap()
}

fn auth_key(server: &TestServer, email: &str, password: &str) -> String {
    derive_login_keys(password.as_bytes(), &kdf(server, email))
        .unwrap()
        .auth
        .to_hex()
}

fn login(server: &TestServer, email: &str, key: &str) -> (u16, Option<String>, Value) {
    post(
        server,
        "/v1/auth/login",
        &json!({ "email": email, "auth_key": key, "device": "probe" }),
    )
}

/// A sign-up as a script makes it, with the server's cheap test KDF.
fn signup(server: &TestServer, email: &str, invite: Option<&str>) -> (u16, Value) {
    let k = kdf(server, email);
    let keys = derive_login_keys(PW.as_bytes(), &k).unwrap();
    let (s, _, v) = post(
        server,
        "/v1/auth/signup",
        &json!({"email": email, "invite": invite, "kdf": k, "auth_key": keys.auth.to_hex(),
            "wrapped_master_key": "00".repeat(72), "recovery_auth_key": "11".repeat(32),
            "recovery_wrapped_master_key": "00".repeat(72), "device": "d"}),
    );
    (s, v)
}

#[test]
fn guessing_meets_a_limit_per_account_and_per_address_and_successes_never_do() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("server"));
    let dev = Device::new(Path::new(BIN), &tmp.path().join("dev"), &server.url(), PW);
    dev.signup("victim@example.org", "laptop");
    let wrong = "ab".repeat(32);
    for i in 0..20 {
        let (s, _, v) = login(&server, "victim@example.org", &wrong);
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (401, Some("wrong_password")),
            "{i}"
        );
    }
    // The 21st is not even checked: the right password is refused too.
    let right = auth_key(&server, "victim@example.org", PW);
    for key in [&wrong, &right] {
        let (s, retry, v) = login(&server, "victim@example.org", key);
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (429, Some("rate_limited")),
            "{v}"
        );
        let secs: u64 = retry.unwrap().parse().unwrap();
        assert!((1..=900).contains(&secs), "{secs}");
        assert_eq!(v["error"]["details"]["retry_after"], secs);
    }
    // The console's sign-in, recovery and the CLI meet the same limit.
    let (s, _, _) = post(
        &server,
        "/signin",
        &json!({"email": "victim@example.org", "auth_key": right}),
    );
    assert_eq!(s, 429);
    let (s, _, _) = post(
        &server,
        "/v1/auth/recover",
        &json!({"email": "victim@example.org", "recovery_auth_key": wrong, "new_password": null}),
    );
    assert_eq!(s, 429);
    let fresh = Device::new(Path::new(BIN), &tmp.path().join("fresh"), &server.url(), PW);
    let code = fresh.error_code(&[
        "login",
        "--server",
        &server.url(),
        "--email",
        "victim@example.org",
        "--json",
    ]);
    assert_eq!(code, "rate_limited");
    // A signed-in device goes on: its token is not a password.
    dev.json(&["backups", "list", "--json"]);
    // Once the window has passed, the device that knows the password signs in.
    server.advance_clock(15 * 60);
    assert_eq!(
        fresh.login("victim@example.org", "laptop")["existing_device"],
        true
    );

    // Per address: 20 failures on 20 different emails, then even a new
    // email is refused from that address.
    let other = TestServer::start(&tmp.path().join("other"));
    for i in 0..20 {
        let (s, _, _) = login(&other, &format!("nobody{i}@example.org"), &wrong);
        assert_eq!(s, 401);
    }
    let (s, _, v) = login(&other, "someone-else@example.org", &wrong);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (429, Some("rate_limited"))
    );
}

#[test]
fn a_schools_first_morning_from_one_address_is_never_limited() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("server"));
    for i in 0..40 {
        let email = format!("pupil{i}@school.example");
        let (s, v) = signup(&server, &email, None);
        assert_eq!(s, 201, "{i}: {v}");
        let (s, _, v) = login(&server, &email, &auth_key(&server, &email, PW));
        assert_eq!(s, 200, "{i}: {v}");
    }
}

#[test]
fn an_invite_only_server_answers_a_bad_invite_the_same_for_any_email() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(&tmp.path().join("server"), |c| c.allow_signup = false);
    let code = server.invite(Some("ann@example.org"));
    let (s, _) = signup(&server, "ann@example.org", Some(&code));
    assert_eq!(s, 201);
    let (s1, taken) = signup(&server, "ann@example.org", Some("bogus"));
    let (s2, free) = signup(&server, "bob@example.org", Some("bogus"));
    assert_eq!((s1, s2), (403, 403));
    assert_eq!(taken, free, "the answer must not depend on the email");
    assert_eq!(taken["error"]["code"], "invite_invalid");
    // An invite for another email says nothing about either.
    let for_carol = server.invite(Some("carol@example.org"));
    let (s, v) = signup(&server, "ann@example.org", Some(&for_carol));
    assert_eq!((s, v), (403, free));
}

#[test]
fn every_path_that_sets_a_password_enforces_the_kdf_floor() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("server"));
    let dev = Device::new(Path::new(BIN), &tmp.path().join("dev"), &server.url(), PW);
    let recovery = dev.signup("floor@example.org", "laptop")["recovery_key"]
        .as_str()
        .unwrap()
        .to_string();
    let rk = RecoveryKey::parse(&recovery).unwrap().login_keys();
    let weak = json!({"algorithm": "argon2id", "memory_kib": 8, "iterations": 1,
        "parallelism": 1, "salt": "00112233445566778899aabbccddeeff"});
    let (s, _, v) = post(
        &server,
        "/v1/auth/recover",
        &json!({"email": "floor@example.org", "recovery_auth_key": rk.auth.to_hex(),
            "new_password": {"kdf": weak, "auth_key": "00".repeat(32),
                "wrapped_master_key": "00".repeat(72)}}),
    );
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("bad_request")),
        "{v}"
    );
    // Nothing changed: the password still signs in.
    let (s, _, _) = login(
        &server,
        "floor@example.org",
        &auth_key(&server, "floor@example.org", PW),
    );
    assert_eq!(s, 200);
    // Sign-up too.
    let (s, _, v) = post(
        &server,
        "/v1/auth/signup",
        &json!({"email": "weak@example.org", "invite": null, "kdf": weak,
            "auth_key": "00".repeat(32), "wrapped_master_key": "00".repeat(72),
            "recovery_auth_key": "11".repeat(32), "recovery_wrapped_master_key": "00".repeat(72),
            "device": "d"}),
    );
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("bad_request")),
        "{v}"
    );
}

#[test]
fn routes_without_a_token_take_small_bodies_and_echo_little() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("server"));
    let huge = "a".repeat(100 << 10);
    for path in [
        "/v1/auth/prelogin",
        "/v1/auth/login",
        "/v1/auth/signup",
        "/v1/auth/recover",
        "/signin",
    ] {
        let (s, _, v) = post(&server, path, &json!({ "email": huge }));
        assert_eq!(s, 413, "{path}: {v}");
        if path.starts_with("/v1/") {
            assert_eq!(v["error"]["code"], "too_large", "{path}: {v}");
        }
    }
    // Under the limit, a bad email is refused without its 60,000 bytes.
    let big = "b".repeat(60_000);
    let (s, _, v) = post(&server, "/v1/auth/prelogin", &json!({ "email": big }));
    assert_eq!(s, 400);
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.len() < 300, "{} bytes echoed", message.len());
    // A body of the wrong shape: the parser's words, cut short.
    let (s, _, v) = post(&server, "/v1/auth/login", &json!({ "email": [big] }));
    assert_eq!(s, 422);
    assert!(v["error"]["message"].as_str().unwrap().len() < 400, "{v}");
}

/// Bytes of pack files the server holds for every account.
fn pack_bytes(data: &Path) -> u64 {
    let mut n = 0;
    let mut stack = vec![data.join("objects/packs")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                n += e.metadata().unwrap().len();
            }
        }
    }
    n
}

/// A well-framed sealed blob of `len` bytes (the server cannot tell it
/// from ciphertext) under an id made of `tag`.
fn blob(tag: u8, len: usize) -> (haven_format::BlobId, Vec<u8>) {
    let mut sealed = vec![1u8];
    sealed.extend(haven_testkit::tree::noise(len - 1, u64::from(tag)));
    (haven_format::BlobId([tag; 32]), sealed)
}

fn pack_of(blobs: &[&(haven_format::BlobId, Vec<u8>)]) -> (haven_format::PackId, Vec<u8>) {
    let mut w = haven_format::pack::PackWriter::new();
    for (id, sealed) in blobs {
        w.add(haven_format::blob::BlobKind::Data, *id, sealed);
    }
    let (id, bytes, _) = w.finish();
    (id, bytes)
}

/// Packs repeating blobs the account already holds cost no quota (only
/// new blobs count), so the server never stores them: such a pack is
/// stored without them, or not at all; the same pack again (an honest
/// retry) is still a success and adds nothing.
#[test]
fn packs_of_blobs_the_account_holds_store_nothing_twice() {
    use haven_client::Remote;
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("server"));
    let dev = Device::new(Path::new(BIN), &tmp.path().join("dev"), &server.url(), PW);
    dev.signup("dup@example.org", "laptop");
    let remote = haven_client::HttpRemote::new(&server.url(), Some(dev.token())).unwrap();
    let known = blob(1, 1 << 20);
    let (first, bytes) = pack_of(&[&known]);
    remote.put_pack(first, bytes.clone()).unwrap();
    let after_first = pack_bytes(&server.data_dir);
    assert!(after_first > 1 << 20);
    // The same pack again, whole and in parts: success, nothing added.
    remote.put_pack(first, bytes.clone()).unwrap();
    haven_client::HttpRemote::new(&server.url(), Some(dev.token()))
        .unwrap()
        .with_upload_limit(Some(64 << 20))
        .put_pack(first, bytes)
        .unwrap();
    assert_eq!(pack_bytes(&server.data_dir), after_first);
    // Packs of known blobs only, under ids of their own: nothing stored.
    let known2 = blob(2, 1 << 20);
    let (second, bytes) = pack_of(&[&known2]);
    remote.put_pack(second, bytes).unwrap();
    let after_two = pack_bytes(&server.data_dir);
    for i in 0..20u8 {
        let padding = blob(100 + i, 1000);
        // The padding blob is new the first time only.
        let (id, bytes) = pack_of(&[&known, &known2, &padding]);
        remote.put_pack(id, bytes).unwrap();
        let (id, bytes) = pack_of(&[&known2, &known, &padding]);
        remote.put_pack(id, bytes).unwrap();
    }
    let grown = pack_bytes(&server.data_dir) - after_two;
    assert!(
        grown < 20 * 2000,
        "40 packs of 2 MiB of known blobs added {grown} bytes"
    );
    // One new blob named 40 times in a pack is stored once.
    let before = pack_bytes(&server.data_dir);
    let repeated = blob(3, 100_000);
    let (id, bytes) = pack_of(&[&repeated; 40]);
    remote.put_pack(id, bytes).unwrap();
    let grown = pack_bytes(&server.data_dir) - before;
    assert!(
        grown < 2 * 100_000,
        "40 copies of one blob added {grown} bytes"
    );
    assert!(remote.missing(&[repeated.0]).unwrap().is_empty());
    // What was stored stripped is whole: every blob is there once.
    let ids: Vec<_> = (0..20u8).map(|i| blob(100 + i, 1000).0).collect();
    assert!(remote.missing(&ids).unwrap().is_empty());
    assert!(remote.missing(&[known.0, known2.0]).unwrap().is_empty());
    let fetched = remote.fetch(&[known.0, ids[7]]).unwrap();
    assert_eq!(fetched[0].as_deref(), Some(&known.1[..]));
    assert_eq!(fetched[1].as_deref(), Some(&blob(107, 1000).1[..]));
}

/// Every row a client makes the server keep is bounded per account:
/// attempts (the newest 1,000 per device are kept), categories (256 per
/// device), devices (100), one-time links (10 unused) and console
/// sessions (20).
#[test]
fn rows_a_client_creates_are_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("server"));
    let dev = Device::new(Path::new(BIN), &tmp.path().join("dev"), &server.url(), PW);
    dev.signup("rows@example.org", "laptop");
    let http = Client::new();
    let token = dev.token();
    let call = |method: &str, path: &str, body: Option<Value>| {
        let mut r = http
            .request(method.parse().unwrap(), format!("{}{path}", server.url()))
            .bearer_auth(&token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().unwrap();
        (
            r.status().as_u16(),
            r.json::<Value>().unwrap_or(Value::Null),
        )
    };
    for i in 0..1_050 {
        let t = format!("2026-01-01T00:{:02}:{:02}Z", i / 60 % 60, i % 60);
        let (s, _) = call(
            "POST",
            "/v1/attempts",
            Some(
                json!({"started": t, "finished": t, "result": "failed", "code": "x",
                "message": format!("attempt {i}"), "snapshot": null}),
            ),
        );
        assert_eq!(s, 201);
    }
    let (_, list) = call("GET", "/v1/attempts?limit=1000", None);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1000);
    assert!(
        list.iter().all(|a| a["message"] != "attempt 0"),
        "the oldest went"
    );
    assert!(list.iter().any(|a| a["message"] == "attempt 1049"));

    for i in 0..256 {
        let (s, v) = call(
            "PUT",
            &format!("/v1/categories/c{i}"),
            Some(json!({"enabled": true})),
        );
        assert_eq!(s, 200, "{i}: {v}");
    }
    let (s, v) = call(
        "PUT",
        "/v1/categories/one-more",
        Some(json!({"enabled": true})),
    );
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("limit_reached")),
        "{v}"
    );
    let (s, _) = call("PUT", "/v1/categories/c7", Some(json!({"enabled": true})));
    assert_eq!(s, 200, "an existing category stays switchable");

    let key = auth_key(&server, "rows@example.org", PW);
    for i in 1..100 {
        let (s, _, v) = post(
            &server,
            "/v1/auth/login",
            &json!({"email": "rows@example.org", "auth_key": key, "device": format!("d{i}")}),
        );
        assert_eq!(s, 200, "{i}: {v}");
    }
    let (s, _, v) = post(
        &server,
        "/v1/auth/login",
        &json!({"email": "rows@example.org", "auth_key": key, "device": "d100"}),
    );
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("limit_reached")),
        "{v}"
    );
    let (s, _, _) = post(
        &server,
        "/v1/auth/login",
        &json!({"email": "rows@example.org", "auth_key": key, "device": "d42"}),
    );
    assert_eq!(s, 200, "an existing device still signs in");

    // One-time links: a new one ends the oldest unused beyond 10.
    let links: Vec<String> = (0..15)
        .map(|_| {
            let (s, v) = call("POST", "/v1/console/link", Some(json!({})));
            assert_eq!(s, 200);
            v["token"].as_str().unwrap().to_string()
        })
        .collect();
    let open = |t: &str| {
        Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .get(format!("{}/link/{t}", server.url()))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(open(&links[0]), 410);
    assert_eq!(open(&links[4]), 410);
    assert_eq!(open(&links[5]), 303);
    assert_eq!(open(&links[14]), 303);

    // Console sessions: the 21st sign-in ends the first.
    let cookies: Vec<String> = (0..21)
        .map(|_| {
            let r = Client::new()
                .post(format!("{}/signin", server.url()))
                .json(&json!({"email": "rows@example.org", "auth_key": key}))
                .send()
                .unwrap();
            assert_eq!(r.status(), 204);
            r.headers()["set-cookie"]
                .to_str()
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    let page = |c: &str| {
        Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .get(format!("{}/devices", server.url()))
            .header("cookie", c)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(page(&cookies[0]), 303, "the oldest session was ended");
    assert_eq!(page(&cookies[1]), 200);
    assert_eq!(page(&cookies[20]), 200);
}

/// Sends 1 MiB parts, each the first part of another 2 MiB pack that is
/// never finished, until the server refuses one; returns how many it took
/// and the refusal.
fn park_parts(server: &TestServer, dev: &Device, at_most: u8) -> (u32, Option<Value>) {
    let http = Client::new();
    let part = haven_testkit::tree::noise(1 << 20, 9);
    let mut accepted = 0;
    for i in 0..at_most {
        let r = http
            .put(format!(
                "{}/v1/uploads/{}?offset=0&total={}",
                server.url(),
                hex::encode([i; 32]),
                2 << 20
            ))
            .bearer_auth(dev.token())
            .body(part.clone())
            .send()
            .unwrap();
        match r.status().as_u16() {
            200 => accepted += 1,
            _ => return (accepted, Some(r.json().unwrap())),
        }
    }
    (accepted, None)
}

fn staged_bytes(data: &Path) -> u64 {
    std::fs::read_dir(data.join("uploads"))
        .map(|d| d.flatten().map(|e| e.metadata().unwrap().len()).sum())
        .unwrap_or(0)
}

/// The first parts of packs that never finish: they count against the
/// quota (and `max_store_bytes`) from their first byte, so they cannot
/// park more than the quota leaves plus 16 MiB; idle for an hour, they go.
#[test]
fn unfinished_uploads_cannot_park_data_outside_the_quota() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(&tmp.path().join("server"), |c| {
        c.allow_signup = true;
        c.plans = vec![haven_server::config::PlanConfig {
            name: "tiny".into(),
            quota: "3 MB".into(),
            selectable: true,
            quota_bytes: 0,
        }];
        c.default_plan = Some("tiny".into());
    });
    let dev = Device::new(Path::new(BIN), &tmp.path().join("dev"), &server.url(), PW);
    dev.signup("park@example.org", "laptop");
    let (accepted, refused) = park_parts(&server, &dev, 60);
    let v = refused.expect("parking stops");
    assert_eq!(v["error"]["code"], "quota_exceeded", "{v}");
    let staged = staged_bytes(&server.data_dir);
    assert!(
        staged <= 3_000_000 + (16 << 20),
        "{accepted} parts staged {staged} bytes"
    );
    assert!(accepted >= 10, "an honest amount is accepted: {accepted}");
    // Idle for an hour: the maintenance job drops them.
    let uploads = server.data_dir.join("uploads");
    let old = filetime::FileTime::from_system_time(
        std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 3600),
    );
    let mut files: Vec<_> = std::fs::read_dir(&uploads)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let fresh = files.pop().unwrap();
    for f in &files {
        filetime::set_file_mtime(f, old).unwrap();
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let freed = rt
        .block_on(haven_server::sweep_uploads(&server.config))
        .unwrap();
    assert_eq!(freed, files.len() as u64 * (1 << 20));
    assert_eq!(staged_bytes(&server.data_dir), 1 << 20);
    assert!(fresh.exists(), "a recent upload stays");
}

/// Without plans, an account is bounded by `max_store_bytes`: staged parts
/// count against it before they are written.
#[test]
fn unfinished_uploads_count_against_max_store_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(&tmp.path().join("server"), |c| {
        c.allow_signup = true;
        c.max_store_bytes = Some("12 MB".into());
    });
    let dev = Device::new(Path::new(BIN), &tmp.path().join("dev"), &server.url(), PW);
    dev.signup("full@example.org", "laptop");
    let (_, refused) = park_parts(&server, &dev, 20);
    let v = refused.expect("parking stops");
    assert_eq!(v["error"]["code"], "server_storage_full", "{v}");
    assert!(staged_bytes(&server.data_dir) <= 12_000_000);
}

/// Routes with a token take at most 1 MiB of JSON; a commit (whose blob
/// list a new device sends whole) and the upload probe take more.
#[test]
fn routes_with_a_token_take_a_mebibyte_but_commits_take_their_blob_lists() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("server"));
    let dev = Device::new(Path::new(BIN), &tmp.path().join("dev"), &server.url(), PW);
    dev.signup("big@example.org", "laptop");
    let ids: Vec<String> = (0..20_000u32)
        .map(|i| hex::encode(blake3::hash(&i.to_le_bytes()).as_bytes()))
        .collect();
    let body = json!({ "ids": ids });
    let send = |path: &str| {
        Client::new()
            .post(format!("{}{path}", server.url()))
            .bearer_auth(dev.token())
            .json(&body)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(send("/v1/blobs/missing"), 413);
    assert_eq!(send("/v1/attempts"), 413);
    // The same 1.3 MB reaches the commit's own checks (not a commit).
    assert_eq!(send("/v1/snapshots"), 422);
}

/// Guesses sent all at once meet the same limit: each counts before it
/// is checked, so no burst gets more than 20 through.
#[test]
fn a_burst_of_parallel_guesses_gets_no_more_than_twenty() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("server"));
    let dev = Device::new(Path::new(BIN), &tmp.path().join("dev"), &server.url(), PW);
    dev.signup("burst@example.org", "laptop");
    let wrong = "ab".repeat(32);
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..60)
            .map(|_| s.spawn(|| login(&server, "burst@example.org", &wrong).0))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let checked = statuses.iter().filter(|s| **s == 401).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(checked + limited, 60, "{statuses:?}");
    assert!(checked <= 20, "{checked} guesses were checked");
}

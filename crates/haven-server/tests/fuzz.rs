//! A bounded fuzz of every API route, as a hostile client would call it:
//! 5,000 requests with random methods, paths, queries, headers and bodies
//! (JSON of every shape, bytes, nothing), with and without a token and a
//! forged grant, from four clients at once, then 50 concurrent
//! maximum-size bodies on the routes without a token. No answer may be a
//! 5xx, the server keeps answering, and its peak memory stays under
//! 200 MB. The seed is fixed: a failure reproduces.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

mod common;

const ROUTES: &[(&str, &str)] = &[
    ("GET", "/v1/health"),
    ("POST", "/v1/auth/prelogin"),
    ("POST", "/v1/auth/signup"),
    ("POST", "/v1/auth/login"),
    ("POST", "/v1/auth/recover"),
    ("POST", "/v1/auth/elevate"),
    ("POST", "/v1/auth/password"),
    ("GET", "/v1/devices"),
    ("DELETE", "/v1/devices/{}"),
    ("POST", "/v1/blobs/missing"),
    ("POST", "/v1/blobs/fetch"),
    ("PUT", "/v1/packs/{}"),
    ("PUT", "/v1/uploads/{}"),
    ("GET", "/v1/uploads/{}"),
    ("POST", "/v1/sessions"),
    ("GET", "/v1/usage"),
    ("POST", "/v1/speedtest"),
    ("GET", "/v1/plans"),
    ("PUT", "/v1/plan"),
    ("GET", "/v1/dictionary"),
    ("PUT", "/v1/dictionary"),
    ("GET", "/v1/categories"),
    ("POST", "/v1/categories"),
    ("PUT", "/v1/categories/{}"),
    ("GET", "/v1/attempts"),
    ("POST", "/v1/attempts"),
    ("POST", "/v1/snapshots"),
    ("GET", "/v1/snapshots"),
    ("GET", "/v1/snapshots/{}"),
    ("DELETE", "/v1/snapshots/{}"),
    ("GET", "/v1/snapshots/{}/damaged"),
    ("POST", "/v1/console/link"),
    ("POST", "/signin"),
    ("GET", "/signin"),
    ("POST", "/signout"),
    ("GET", "/devices/{}"),
    ("POST", "/devices/{}/signout"),
    ("POST", "/devices/{}/categories/{}"),
    ("GET", "/link/{}"),
    ("GET", "/static/{}"),
    ("POST", "/plan"),
];

fn word(rng: &mut StdRng) -> String {
    match rng.gen_range(0..8) {
        0 => "a".repeat(rng.gen_range(0..3000)),
        1 => hex(rng, 32),
        2 => hex(rng, 16),
        3 => "..%2F..%2Fetc%2Fpasswd".into(),
        4 => "%00%ff%c3%28".into(),
        5 => "d".into(),
        6 => rng.r#gen::<i64>().to_string(),
        _ => "caf%C3%A9 %E2%9C%93".into(),
    }
}

fn hex(rng: &mut StdRng, bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rng.r#gen::<u8>()))
        .collect()
}

fn value(rng: &mut StdRng, depth: u32) -> Value {
    match rng.gen_range(0..if depth > 3 { 6 } else { 9 }) {
        0 => Value::Null,
        1 => json!(rng.r#gen::<bool>()),
        2 => json!(rng.r#gen::<i64>()),
        3 => json!(rng.r#gen::<u64>()),
        4 => json!(rng.r#gen::<f64>()),
        5 => json!(word(rng)),
        6 => Value::Array(
            (0..rng.gen_range(0..20))
                .map(|_| value(rng, depth + 1))
                .collect(),
        ),
        _ => {
            let keys = [
                "email",
                "auth_key",
                "device",
                "ids",
                "id",
                "plan",
                "enabled",
                "kdf",
                "invite",
                "new_password",
                "resume",
                "reserve",
                "categories",
                "result",
                "started",
                "time",
                "snapshot_blob",
                "added",
                "removed",
                "parent",
                "max_bytes",
            ];
            let mut m = serde_json::Map::new();
            for _ in 0..rng.gen_range(0..8) {
                let k = keys[rng.gen_range(0..keys.len())];
                m.insert(k.into(), value(rng, depth + 1));
            }
            Value::Object(m)
        }
    }
}

fn status_of(r: reqwest::Result<reqwest::blocking::Response>) -> Option<u16> {
    r.ok().map(|r| r.status().as_u16())
}

#[test]
fn every_route_survives_five_thousand_hostile_requests() {
    let tmp = tempfile::tempdir().unwrap();
    let (child, base) = common::serve(
        &tmp.path().join("data"),
        &[
            "--allow-signup",
            "--set",
            "kdf_memory_kib=256",
            "--set",
            "kdf_iterations=1",
        ],
    );
    let mut server = common::Killed(child);
    // A fresh connection per request: an error is this request's, never
    // a pooled connection's that the server closed after an earlier one.
    let http = reqwest::blocking::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while status_of(http.get(format!("{base}/v1/health")).send()) != Some(200) {
        assert!(Instant::now() < deadline, "the server never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A real account, so that the routes behind a token are reached too.
    let salt = "00112233445566778899aabbccddeeff";
    let signed: Value = http
        .post(format!("{base}/v1/auth/signup"))
        .json(&json!({"email": "fuzz@example.org", "invite": null,
            "kdf": {"algorithm": "argon2id", "memory_kib": 256, "iterations": 1,
                "parallelism": 1, "salt": salt},
            "auth_key": "ab".repeat(32), "wrapped_master_key": "00".repeat(72),
            "recovery_auth_key": "cd".repeat(32), "recovery_wrapped_master_key": "00".repeat(72),
            "device": "fuzzer"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let token = signed["token"].as_str().unwrap().to_string();

    let failures: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4u64)
            .map(|t| {
                let (http, base, token) = (http.clone(), base.clone(), token.clone());
                s.spawn(move || {
                    let mut rng = StdRng::seed_from_u64(0x4a7e + t);
                    let mut bad = Vec::new();
                    for _ in 0..1_250 {
                        let (method, route) = ROUTES[rng.gen_range(0..ROUTES.len())];
                        let mut path = route.to_string();
                        while path.contains("{}") {
                            path = path.replacen("{}", &word(&mut rng), 1);
                        }
                        if rng.gen_bool(0.3) {
                            path.push_str(&format!(
                                "?device={}&limit={}&offset={}&total={}&session={}",
                                word(&mut rng),
                                rng.r#gen::<i64>(),
                                rng.r#gen::<u64>(),
                                rng.r#gen::<u64>(),
                                word(&mut rng)
                            ));
                        }
                        let method = if rng.gen_bool(0.1) {
                            ["PATCH", "PUT", "DELETE", "GET", "POST"][rng.gen_range(0..5)]
                        } else {
                            method
                        };
                        let mut req =
                            http.request(method.parse().unwrap(), format!("{base}{path}"));
                        if rng.gen_bool(0.7) {
                            req = req.bearer_auth(&token);
                        }
                        if rng.gen_bool(0.2) {
                            req = req.header(
                                "haven-grant",
                                format!("{}.{}", rng.r#gen::<i64>(), hex(&mut rng, 32)),
                            );
                        }
                        if rng.gen_bool(0.1) {
                            req = req.header("haven-client-version", word(&mut rng));
                        }
                        req = match rng.gen_range(0..4) {
                            0 => req.json(&value(&mut rng, 0)),
                            1 => {
                                let n = rng.gen_range(0..200_000);
                                let bytes: Vec<u8> = (0..n).map(|_| rng.r#gen()).collect();
                                req.body(bytes)
                            }
                            2 => req
                                .header("content-type", "application/json")
                                .body(word(&mut rng)),
                            _ => req,
                        };
                        match req.send() {
                            Ok(r) if r.status().is_server_error() => bad.push(format!(
                                "{method} {} -> {}: {}",
                                path.chars().take(120).collect::<String>(),
                                r.status(),
                                r.text()
                                    .unwrap_or_default()
                                    .chars()
                                    .take(300)
                                    .collect::<String>()
                            )),
                            Ok(_) => {}
                            // The server answered (a 401, a 413) before the
                            // body was sent, and closed: not a server error.
                            Err(e) if format!("{e:?}").contains("BodyWrite") => {}
                            Err(e) => bad.push(format!("{method} {path:.120}: {e:?}")),
                        }
                    }
                    bad
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{} bad answers: {failures:#?}",
        failures.len()
    );

    // 50 bodies of the largest size routes without a token take, at once.
    let big = json!({ "email": "x".repeat(64 * 1024 - 20) });
    let statuses: Vec<Option<u16>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|i| {
                let (http, base, big) = (http.clone(), base.clone(), big.clone());
                let path = [
                    "/v1/auth/prelogin",
                    "/v1/auth/login",
                    "/v1/auth/signup",
                    "/v1/auth/recover",
                    "/signin",
                ][i % 5];
                s.spawn(move || status_of(http.post(format!("{base}{path}")).json(&big).send()))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        statuses.iter().all(|s| s.is_some_and(|s| s < 500)),
        "{statuses:?}"
    );
    assert_eq!(
        status_of(http.get(format!("{base}/v1/health")).send()),
        Some(200)
    );

    // Peak resident memory of the server process.
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.0.id())).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    eprintln!("server peak memory: {} MiB", peak_kib / 1024);
    assert!(peak_kib < 200 * 1000, "peak {peak_kib} KiB");
    let _ = server.0.kill();
}

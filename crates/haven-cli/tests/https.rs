//! HTTPS end to end: the server serves TLS with certificates the test
//! makes (a private CA, RSA and ECDSA keys in the encodings openssl and
//! rcgen write), the real `haven` binary trusts that CA with `--ca-cert`,
//! and a certificate it does not trust fails at once with `tls_untrusted`.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use haven_testkit::tls::{self, KeyKind};
use haven_testkit::tree::{assert_same_tree, populate};
use haven_testkit::{Device, TestServer};

const BIN: &str = env!("CARGO_BIN_EXE_haven");

fn https_server(dir: &Path, pki: &tls::Pki) -> TestServer {
    TestServer::start_with(dir, |c| {
        c.allow_signup = true;
        c.tls_cert = Some(pki.cert.clone());
        c.tls_key = Some(pki.key.clone());
    })
}

fn device(tmp: &Path, server: &TestServer) -> Device {
    Device::new(
        Path::new(BIN),
        &tmp.join("dev"),
        &server.url(),
        "correct horse battery",
    )
}

fn signup_args<'a>(server: &'a str, email: &'a str, ca: &'a str) -> Vec<&'a str> {
    vec![
        "signup",
        "--server",
        server,
        "--email",
        email,
        "--device",
        "d",
        "--ca-cert",
        ca,
        "--json",
    ]
}

#[test]
fn sign_up_back_up_and_restore_over_https_with_each_kind_of_key() {
    for kind in [KeyKind::Ecdsa, KeyKind::RsaPkcs1, KeyKind::RsaPkcs8] {
        let tmp = tempfile::tempdir().unwrap();
        let pki = tls::make(&tmp.path().join("pki"), kind);
        let server = https_server(&tmp.path().join("server"), &pki);
        assert!(server.url().starts_with("https://"), "{}", server.url());
        let dev = Device::new(
            Path::new(BIN),
            &tmp.path().join("dev"),
            &server.url(),
            "correct horse battery",
        );
        let url = server.url();
        let ca = pki.ca_cert.to_str().unwrap();
        dev.json(&signup_args(&url, "tls@example.org", ca));
        let src = tmp.path().join("home");
        populate(&src, "over-tls");
        let b = dev.json(&["backup", src.to_str().unwrap(), "--json"]);
        assert_eq!(b["files"], 10, "{kind:?}: {b}");
        let out = tmp.path().join("out");
        // The CA is remembered: no --ca-cert after sign-up.
        let r = dev.json(&["restore", "latest", "--to", out.to_str().unwrap(), "--json"]);
        assert_eq!(r["failed"].as_array().unwrap().len(), 0, "{kind:?}: {r}");
        assert_same_tree(&src, &out.join(src.strip_prefix("/").unwrap()));
        if kind == KeyKind::Ecdsa {
            // Signing in again to the same server keeps the CA it trusted.
            dev.json(&[
                "login",
                "--server",
                &url,
                "--email",
                "tls@example.org",
                "--device",
                "d",
                "--json",
            ]);
            dev.json(&["backups", "list", "--json"]);
        }
    }
}

#[test]
fn a_certificate_the_device_does_not_trust_fails_at_once_and_sends_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tls::make(&tmp.path().join("pki"), KeyKind::Ecdsa);
    let other = tls::make(&tmp.path().join("other"), KeyKind::Ecdsa);
    let server = https_server(&tmp.path().join("server"), &pki);
    let dev = device(tmp.path(), &server);
    let url = server.url();
    // Another CA's certificate, then the platform's roots alone.
    let wrong_ca = signup_args(&url, "mitm@example.org", other.ca_cert.to_str().unwrap());
    let roots_only = [
        "signup",
        "--server",
        &url,
        "--email",
        "mitm@example.org",
        "--json",
    ];
    for args in [&wrong_ca[..], &roots_only[..]] {
        let out = dev.run_env(args, &[("HAVEN_LOG", "haven_client=debug")]);
        assert!(!out.status.success());
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["error"]["code"], "tls_untrusted", "{v}");
        assert!(
            v["error"]["fix"][0].as_str().unwrap().contains("--ca-cert"),
            "{v}"
        );
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(
            !log.contains("retrying"),
            "a certificate that does not verify is never retried: {log}"
        );
    }
    assert!(!tmp.path().join("dev/device.json").exists());
    // Nothing reached the server: no account was created.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let users = rt
        .block_on(haven_server::list_users(&server.config))
        .unwrap();
    assert!(users.is_empty(), "{users:?}");

    // A device signed in with the right CA meets a server whose
    // certificate changed to one it does not trust: the same error.
    let pki_url = server.url();
    dev.json(&signup_args(
        &pki_url,
        "ok@example.org",
        pki.ca_cert.to_str().unwrap(),
    ));
    let port = server.addr.port();
    drop(server);
    let _server = TestServer::start_with(&tmp.path().join("server"), |c| {
        c.allow_signup = true;
        c.listen = format!("127.0.0.1:{port}").parse().unwrap();
        c.tls_cert = Some(other.cert.clone());
        c.tls_key = Some(other.key.clone());
    });
    assert_eq!(
        dev.error_code(&["backups", "list", "--json"]),
        "tls_untrusted"
    );
}

#[test]
fn the_password_never_crosses_plain_http_to_another_machine() {
    let tmp = tempfile::tempdir().unwrap();
    let dev = Device::new(
        Path::new(BIN),
        &tmp.path().join("dev"),
        "http://192.0.2.1:8420",
        "correct horse battery",
    );
    // 192.0.2.1 (TEST-NET-1) is never contacted: the refusal comes first.
    for cmd in ["signup", "login"] {
        let code = dev.error_code(&[
            cmd,
            "--server",
            "http://192.0.2.1:8420",
            "--email",
            "x@example.org",
            "--json",
        ]);
        assert_eq!(code, "insecure_transport");
    }
    let code = dev.error_code(&[
        "recover",
        "--server",
        "http://192.0.2.1:8420",
        "--email",
        "x@example.org",
        "--recovery-key",
        &"ab".repeat(32),
        "--json",
    ]);
    assert_eq!(code, "insecure_transport");
    assert!(!tmp.path().join("dev/device.json").exists());
}

/// The console over HTTPS: the page's sign-in (prelogin, the derivation,
/// `POST /signin`) gets a `Secure` session cookie, which then opens the
/// pages over the same connection kind.
#[test]
fn the_console_signs_in_over_https_with_a_secure_cookie() {
    use haven_format::keys::{KdfParams, derive_login_keys};
    let tmp = tempfile::tempdir().unwrap();
    let pki = tls::make(&tmp.path().join("pki"), KeyKind::Ecdsa);
    let server = https_server(&tmp.path().join("server"), &pki);
    let dev = device(tmp.path(), &server);
    let url = server.url();
    dev.json(&signup_args(
        &url,
        "web@example.org",
        pki.ca_cert.to_str().unwrap(),
    ));
    let http = reqwest::blocking::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&pki.ca_cert).unwrap()).unwrap(),
        )
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let pre: serde_json::Value = http
        .post(format!("{url}/v1/auth/prelogin"))
        .json(&serde_json::json!({ "email": "web@example.org" }))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let kdf: KdfParams = serde_json::from_value(pre["kdf"].clone()).unwrap();
    let keys = derive_login_keys(b"correct horse battery", &kdf).unwrap();
    let r = http
        .post(format!("{url}/signin"))
        .json(&serde_json::json!({ "email": "web@example.org", "auth_key": keys.auth.to_hex() }))
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        set.contains("; Secure") && set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_string();
    let r = http
        .get(format!("{url}/devices"))
        .header("cookie", &cookie)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().unwrap().contains("href=\"/devices/d\""));
    // A one-time link from the device is an https:// link, and signs in with a Secure cookie too.
    let link = dev.json(&["console", "--json"]);
    let link_url = link["url"].as_str().unwrap();
    assert!(link_url.starts_with("https://localhost:"), "{link_url}");
    let r = http.get(link_url).send().unwrap();
    assert_eq!(r.status(), 303);
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("; Secure")
    );
}

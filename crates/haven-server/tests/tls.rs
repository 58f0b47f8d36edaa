//! `haven-server serve` over HTTPS, as an operator runs it: the binary,
//! PEM files, SIGHUP after a renewal.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use haven_testkit::tls::{self, KeyKind};

const SERVER_BIN: &str = env!("CARGO_BIN_EXE_haven-server");

/// `haven-server serve --tls-cert --tls-key` serves HTTPS and re-reads the
/// files on SIGHUP: a renewed certificate is served to new connections
/// without a restart, and a broken renewal keeps the old one serving.
#[test]
fn the_server_binary_serves_https_and_reloads_its_certificate_on_sighup() {
    let tmp = tempfile::tempdir().unwrap();
    let first = tls::make(&tmp.path().join("first"), KeyKind::RsaPkcs1);
    let second = tls::make(&tmp.path().join("second"), KeyKind::Ecdsa);
    let live = tmp.path().join("live");
    std::fs::create_dir_all(&live).unwrap();
    let (cert, key) = (live.join("cert.pem"), live.join("key.pem"));
    std::fs::copy(&first.cert, &cert).unwrap();
    std::fs::copy(&first.key, &key).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(SERVER_BIN)
        .args(["serve", "--data-dir"])
        .arg(tmp.path().join("data"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .env("HAVEN_LOG", "info")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let pid = child.id();
    let guard = Kill(std::mem::replace(
        &mut child,
        Command::new("true").spawn().unwrap(),
    ));
    let url = format!("https://localhost:{port}/v1/health");
    let trusting = |ca: &Path| {
        reqwest::blocking::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap(),
            )
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    };
    let healthy = |ca: &Path| {
        trusting(ca)
            .get(&url)
            .send()
            .is_ok_and(|r| r.status().is_success())
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !healthy(&first.ca_cert) {
        assert!(
            std::time::Instant::now() < deadline,
            "the server never answered over HTTPS"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!healthy(&second.ca_cert));

    let hup = || {
        assert!(
            Command::new("kill")
                .args(["-HUP", &pid.to_string()])
                .status()
                .unwrap()
                .success()
        )
    };
    // A broken renewal (a key that is not PEM) keeps the old certificate.
    std::fs::write(&key, "not a key").unwrap();
    hup();
    std::thread::sleep(Duration::from_millis(500));
    assert!(healthy(&first.ca_cert), "the old certificate keeps serving");
    // A good renewal is served to new connections.
    std::fs::copy(&second.cert, &cert).unwrap();
    std::fs::copy(&second.key, &key).unwrap();
    hup();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !healthy(&second.ca_cert) {
        assert!(
            std::time::Instant::now() < deadline,
            "the new certificate was never served"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!healthy(&first.ca_cert));
    drop(guard);
}

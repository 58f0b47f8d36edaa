//! Connections that send nothing, or their headers too slowly, cannot
//! starve the server: the real binary, limited to 1,024 file descriptors
//! as systemd's usual soft limit would, keeps answering `/v1/health` while
//! 2,000 such connections are attempted.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

fn health(url: &str) -> Result<(), String> {
    let r = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap()
        .get(format!("{url}/v1/health"))
        .send()
        .map_err(|e| e.to_string())?;
    if r.status().is_success() {
        Ok(())
    } else {
        Err(r.status().to_string())
    }
}

#[test]
fn idle_and_slow_connections_cannot_starve_the_server() {
    let tmp = tempfile::tempdir().unwrap();
    // This test holds ~2,100 sockets itself: raise its own soft limit.
    let raised = Command::new("prlimit")
        .args(["--pid", &std::process::id().to_string(), "--nofile=4096:"])
        .status();
    assert!(
        raised.is_ok_and(|s| s.success()),
        "prlimit (util-linux) is needed to raise this test's descriptor limit"
    );
    let (child, url) = common::serve_under(
        &["prlimit", "--nofile=1024:1024"],
        &tmp.path().join("data"),
        &[],
    );
    let _server = common::Killed(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while health(&url).is_err() {
        assert!(Instant::now() < deadline, "the server never answered");
        std::thread::sleep(Duration::from_millis(100));
    }
    let addr: std::net::SocketAddr = url.trim_start_matches("http://").parse().unwrap();

    // Each attempt waits at most 2 s to connect: a server that stopped
    // accepting shows as failed attempts and a health check that times
    // out, not as a test that waits for the server's own timeouts.
    let mut held = Vec::new();
    for i in 0..2_000 {
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
            continue;
        };
        // One in ten starts a request and never finishes its headers.
        if i % 10 == 0 {
            let _ = s.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n");
        }
        held.push(s);
        if i % 250 == 249 {
            health(&url).unwrap_or_else(|e| panic!("after {} connections: {e}", i + 1));
        }
    }
    for _ in 0..3 {
        health(&url).unwrap_or_else(|e| panic!("with 2,000 connections attempted: {e}"));
    }
    // The oldest idle connections were closed to make room.
    let mut first = held.swap_remove(0);
    first
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        first.read(&mut buf).unwrap_or(0),
        0,
        "the oldest idle connection was closed"
    );
}

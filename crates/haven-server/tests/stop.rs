//! SIGTERM (systemd, Docker, `kill`) stops the real server binary cleanly:
//! it answers until then, exits with success instead of dying of the
//! signal, and leaves its database in one file.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::time::{Duration, Instant};

use haven_client::Remote;

#[test]
fn sigterm_stops_the_server_cleanly_and_folds_its_log_in() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (mut server, url) = common::serve(&data, &["--allow-signup"]);
    // SAFETY: the only test of this binary sets this before any thread
    // reads it.
    unsafe { std::env::set_var("HAVEN_INSECURE_ALLOW_WEAK_KDF", "1") };
    // A device signs up and uploads a pack: requests that read through the
    // server's lookup connections and write through its pool, as a
    // backup's do. Before the store was closed on stop, these left the
    // write-ahead log behind (350 KB here, 4.2 MB after the benchmark).
    let (remote, ids) = common::sign_up_and_upload(
        &tmp.path().join("dev"),
        &url,
        "stop@example.org",
        &[vec![7u8; 50_000]],
    )
    .unwrap();
    assert!(remote.missing(&ids).unwrap().is_empty());
    let wal = data.join("haven.db-wal");
    assert!(fs::metadata(&wal).unwrap().len() > 0);

    // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(server.id() as i32, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = server.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    // A stopped server holds its database alone: the log was folded in
    // (SQLite removes the emptied file when its last connection closes,
    // which may come after the process ends its work; an empty one holds
    // nothing).
    let left = fs::metadata(&wal).map_or(0, |m| m.len());
    assert_eq!(left, 0, "the write-ahead log outlived the server");
    let db = rusqlite::Connection::open(data.join("haven.db")).unwrap();
    let blobs: i64 = db
        .query_row("SELECT COUNT(*) FROM blobs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(blobs, 1, "the uploaded blob is in the database file");
}

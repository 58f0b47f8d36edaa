//! GC while backups and deletions run: GC runs in a loop on the live
//! server while three devices back up, change files and delete their old
//! backups; afterwards every remaining backup is verified by downloading,
//! decrypting and hashing every blob, and each device's newest backup
//! restores bit for bit.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use haven_testkit::tree::{assert_same_tree, copy_tree, noise, text};
use haven_testkit::{Device, TestServer};

const BIN: &str = env!("CARGO_BIN_EXE_haven");

#[test]
fn gc_during_backups_and_deletions_loses_nothing_referenced() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("server"));
    let first = Device::new(
        Path::new(BIN),
        &tmp.path().join("dev0"),
        &server.url(),
        "correct horse battery",
    );
    first.signup("gc@example.org", "d0");
    let mut devices = vec![first];
    for i in 1..3 {
        let d = Device::new(
            Path::new(BIN),
            &tmp.path().join(format!("dev{i}")),
            &server.url(),
            "correct horse battery",
        );
        d.login("gc@example.org", &format!("d{i}"));
        devices.push(d);
    }

    let stop = AtomicBool::new(false);
    let gc_runs = AtomicU64::new(0);
    let removed = AtomicU64::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Runtime::new().unwrap();
            while !stop.load(Ordering::SeqCst) {
                let r = rt.block_on(haven_server::run_gc(&server.config)).unwrap();
                removed.fetch_add(r.blobs_removed, Ordering::SeqCst);
                gc_runs.fetch_add(1, Ordering::SeqCst);
            }
        });
        let workers: Vec<_> = devices
            .iter()
            .enumerate()
            .map(|(i, dev)| {
                let src = tmp.path().join(format!("src{i}"));
                s.spawn(move || {
                    fs::create_dir_all(&src).unwrap();
                    // Shared by every device: dedup across devices.
                    fs::write(src.join("shared.bin"), noise(1 << 20, 7)).unwrap();
                    for round in 0..4u64 {
                        let seed = 100 * i as u64 + round;
                        fs::write(src.join(format!("r{round}.bin")), noise(600_000, seed)).unwrap();
                        fs::write(src.join("notes.txt"), text(50_000, seed)).unwrap();
                        if round >= 2 {
                            fs::remove_file(src.join(format!("r{}.bin", round - 2))).unwrap();
                        }
                        dev.json(&["backup", src.to_str().unwrap(), "--json"]);
                        // Delete the oldest backup once there are three.
                        let list = dev.json(&["backups", "list", "--json"]);
                        let list = list.as_array().unwrap();
                        if list.len() >= 3 {
                            let oldest = list.last().unwrap()["id"].as_str().unwrap();
                            dev.json(&["backups", "delete", oldest, "--yes", "--json"]);
                        }
                    }
                    src
                })
            })
            .collect();
        let srcs: Vec<_> = workers.into_iter().map(|w| w.join().unwrap()).collect();
        stop.store(true, Ordering::SeqCst);
        srcs
    });
    assert!(
        gc_runs.load(Ordering::SeqCst) > 3,
        "GC ran during the backups"
    );

    // One more pass with nothing running, then check everything. An
    // upload abandoned 30 days ago left its staging file; a fresh one may
    // still be resumed.
    let uploads = server.config.data_dir.join("uploads");
    fs::create_dir_all(&uploads).unwrap();
    let (stale, fresh) = (
        uploads.join(format!("1-{}", "ab".repeat(32))),
        uploads.join(format!("1-{}", "cd".repeat(32))),
    );
    fs::write(&stale, b"half a pack").unwrap();
    fs::write(&fresh, b"half a pack").unwrap();
    fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(30 * 86_400))
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let last = rt.block_on(haven_server::run_gc(&server.config)).unwrap();
    assert_eq!(last.staging_removed, 1, "{last:?}");
    assert!(!stale.exists() && fresh.exists());
    assert!(
        removed.load(Ordering::SeqCst) + last.blobs_removed > 0,
        "deleted backups left garbage for GC to remove"
    );
    let all = devices[0].json(&["backups", "list", "--all", "--json"]);
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 3 * 2, "two backups per device remain");
    for b in all {
        let id = b["id"].as_str().unwrap();
        let v = devices[0].json(&["verify", id, "--read-data", "--json"]);
        assert_eq!(v["ok"], true, "{v}");
    }
    for (i, dev) in devices.iter().enumerate() {
        let src = tmp.path().join(format!("src{i}"));
        let keep = tmp.path().join(format!("keep{i}"));
        copy_tree(&src, &keep);
        let out = tmp.path().join(format!("restored{i}"));
        dev.json(&["restore", "latest", "--to", out.to_str().unwrap(), "--json"]);
        assert_same_tree(&keep, &out.join(src.strip_prefix("/").unwrap()));
    }
    // Usage is exact after GC: the packs on disk hold no unreferenced blob.
    let u = devices[0].json(&["storage", "--json"]);
    assert!(u["stored_physical"].as_u64().unwrap() >= u["used"].as_u64().unwrap());
}

//! kill -9 of the client at points that cover every phase of a backup
//! (reading files, uploading parts, after a pack, around checkpoint and
//! final commits) and at random times. Afterwards the next backup
//! completes, every committed backup restores completely, and the newest
//! one is bit-for-bit the data. `HAVEN_FAULT_ITERATIONS` raises the count.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;
use std::time::Duration;

use haven_testkit::tree::{assert_same_tree, noise, text};
use haven_testkit::{Device, TestServer};
use rand::{Rng, SeedableRng};

const BIN: &str = env!("CARGO_BIN_EXE_haven");

const POINTS: &[(&str, u32)] = &[
    ("after-file", 3),
    ("after-file", 30),
    ("after-upload-part", 1),
    ("after-upload-part", 3),
    ("after-pack-upload", 1),
    ("before-commit", 1),
    ("after-commit", 1),
    ("before-commit", 2),
    ("after-commit", 2),
];

fn iterations() -> usize {
    std::env::var("HAVEN_FAULT_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(22)
}

#[test]
fn the_client_killed_anywhere_never_damages_a_backup_and_the_next_one_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("server"));
    let src = tmp.path().join("data");
    fs::create_dir_all(src.join("small")).unwrap();
    for i in 0..60 {
        fs::write(
            src.join("small").join(format!("note-{i}.txt")),
            text(20_000, i),
        )
        .unwrap();
    }
    let dev = Device::new(
        Path::new(BIN),
        &tmp.path().join("dev"),
        &server.url(),
        "correct horse battery",
    );
    dev.signup("crash@example.org", "d");
    let env = [
        ("HAVEN_CHECKPOINT_BYTES", "1000000"),
        ("HAVEN_RETRY_SCALE", "0.05"),
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut crashed = 0;
    for it in 0..iterations() {
        // New data every round, so every round has something to upload.
        fs::write(
            src.join(format!("big-{}.bin", it % 3)),
            noise(3 << 20, 1000 + it as u64),
        )
        .unwrap();
        fs::write(
            src.join("small").join(format!("note-{}.txt", it % 60)),
            text(30_000, 500 + it as u64),
        )
        .unwrap();

        let mut cmd = std::process::Command::new(BIN);
        cmd.args(["backup", src.to_str().unwrap(), "--json"])
            .env("HAVEN_CONFIG_DIR", &dev.config_dir)
            .env("HAVEN_INSECURE_ALLOW_WEAK_KDF", "1")
            .envs(env)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let (point, n) = POINTS[it % POINTS.len()];
        let status = if it % 2 == 0 {
            cmd.env("HAVEN_FAULT_CRASH_AT", format!("{point}:{n}"))
                .status()
                .unwrap()
        } else {
            // A kill -9 at a random moment of the run. The upload limit
            // stretches the run over the kill's window: unlimited, on
            // loopback, 10 of 22 runs ended first (below the 11 required).
            let mut child = cmd.args(["--upload-limit", "8MiB"]).spawn().unwrap();
            std::thread::sleep(Duration::from_millis(rng.gen_range(20..400)));
            let _ = child.kill();
            child.wait().unwrap()
        };
        if !status.success() {
            crashed += 1;
        }

        // The next backup completes and is the data, bit for bit.
        let out = dev.run_env(&["backup", src.to_str().unwrap(), "--json"], &env);
        assert!(
            out.status.success(),
            "round {it} ({}): {}\n{}",
            if it % 2 == 0 {
                format!("crashed at {point}:{n}")
            } else {
                "killed at a random time".to_string()
            },
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let list = dev.json(&["backups", "list", "--json"]);
        assert!(
            list.as_array()
                .unwrap()
                .iter()
                .all(|s| s["complete"] == true),
            "round {it}: a checkpoint survived a complete backup: {list}"
        );
        let restored = tmp.path().join(format!("r{it}"));
        let r = dev.json(&[
            "restore",
            "latest",
            "--to",
            restored.to_str().unwrap(),
            "--json",
        ]);
        assert_eq!(r["failed"].as_array().unwrap().len(), 0, "round {it}: {r}");
        assert_same_tree(&src, &restored.join(src.strip_prefix("/").unwrap()));
        fs::remove_dir_all(&restored).unwrap();
    }
    assert!(
        crashed * 2 >= iterations(),
        "only {crashed} of {} runs were interrupted",
        iterations()
    );
    // Every backup ever committed still restores completely.
    let list = dev.json(&["backups", "list", "--json"]);
    for s in list.as_array().unwrap() {
        let id = s["id"].as_str().unwrap();
        let out = tmp.path().join(format!("all-{id}"));
        let r = dev.json(&["restore", id, "--to", out.to_str().unwrap(), "--json"]);
        assert_eq!(r["failed"].as_array().unwrap().len(), 0, "{id}: {r}");
        fs::remove_dir_all(&out).unwrap();
    }
    eprintln!(
        "{} rounds, {crashed} interrupted, {} backups restore",
        iterations(),
        list.as_array().unwrap().len()
    );
}

#[test]
fn a_long_first_backup_is_restorable_from_its_checkpoints() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("server"));
    let src = tmp.path().join("data");
    fs::create_dir_all(src.join("a")).unwrap();
    fs::create_dir_all(src.join("b")).unwrap();
    // More than the pipeline's queues hold, so uploads (and checkpoints)
    // happen while files are still being read.
    for i in 0..15 {
        fs::write(src.join("a").join(format!("{i:02}.bin")), noise(3 << 20, i)).unwrap();
        fs::write(
            src.join("b").join(format!("{i:02}.bin")),
            noise(3 << 20, 100 + i),
        )
        .unwrap();
    }
    let dev = Device::new(
        Path::new(BIN),
        &tmp.path().join("dev"),
        &server.url(),
        "correct horse battery",
    );
    dev.signup("ckpt@example.org", "d");
    // Crash right after the second checkpoint is committed.
    let out = dev.run_env(
        &["backup", src.to_str().unwrap(), "--json"],
        &[
            ("HAVEN_CHECKPOINT_BYTES", "5000000"),
            ("HAVEN_FAULT_CRASH_AT", "after-commit:2"),
        ],
    );
    assert!(!out.status.success());
    let list = dev.json(&["backups", "list", "--json"]);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["complete"], false);
    // What the checkpoint holds restores, and is a prefix of the data.
    let part = tmp.path().join("part");
    let r = dev.json(&[
        "restore",
        "latest",
        "--to",
        part.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(r["failed"].as_array().unwrap().len(), 0, "{r}");
    let files = r["files"].as_u64().unwrap();
    assert!(
        files > 0 && files < 30,
        "the checkpoint holds {files} files"
    );
    let restored = part.join(src.strip_prefix("/").unwrap());
    for d in ["a", "b"] {
        for e in fs::read_dir(restored.join(d))
            .into_iter()
            .flatten()
            .flatten()
        {
            assert_eq!(
                fs::read(e.path()).unwrap(),
                fs::read(src.join(d).join(e.file_name())).unwrap()
            );
        }
    }
    // The resumed run reads only what the checkpoint does not hold.
    let b = dev.json(&["backup", src.to_str().unwrap(), "--json"]);
    assert_eq!(b["files_read"].as_u64().unwrap(), 30 - files, "{b}");
    let list = dev.json(&["backups", "list", "--json"]);
    assert_eq!(
        list.as_array().unwrap().len(),
        1,
        "the final backup replaced the checkpoint: {list}"
    );
    assert_eq!(list[0]["complete"], true);
    let full = tmp.path().join("full");
    dev.json(&["restore", "--to", full.to_str().unwrap(), "--json"]);
    assert_same_tree(&src, &full.join(src.strip_prefix("/").unwrap()));
}

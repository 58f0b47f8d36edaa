//! kill -9 of the server (the real binary) at points that cover pack
//! writes, index updates and snapshot commits, and at random times, while
//! the real client library backs up over HTTP. The server is restarted on
//! the same port at once: the client's retries carry the backup through
//! the restart, the server starts cleanly on what the crash left, no
//! acknowledged pack is lost, a commit retried after the crash creates
//! exactly one snapshot, and every backup restores bit for bit.
//! `HAVEN_FAULT_ITERATIONS` raises the count.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use haven_client::backup::{BackupOptions, backup};
use haven_client::profile::ConfigDir;
use haven_client::restore::{RestoreOptions, restore};
use haven_client::{Remote, account};
use rand::{Rng, RngCore, SeedableRng};

const SERVER: &str = env!("CARGO_BIN_EXE_haven-server");

const POINTS: &[(&str, u32)] = &[
    ("after-part-append", 1),
    ("after-pack-store", 1),
    ("after-pack-index", 1),
    ("after-part-append", 2),
    ("after-pack-store", 2),
    ("before-commit", 1),
    ("after-commit", 1),
    ("after-pack-index", 2),
];

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(data: &Path, config: &Path, port: u16, fault: Option<String>) -> Child {
    let mut cmd = Command::new(SERVER);
    cmd.args([
        "serve",
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        &format!("127.0.0.1:{port}"),
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    if let Some(f) = fault {
        cmd.env("HAVEN_FAULT_CRASH_AT", f);
    }
    let child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the server did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push((
                p.strip_prefix(dir).unwrap().to_path_buf(),
                fs::read(&p).unwrap(),
            ));
        }
    }
    out.sort();
    out
}

#[test]
fn the_server_killed_anywhere_loses_nothing_acknowledged() {
    // SAFETY: set before this test starts any thread of its own; nothing
    // else in this test binary reads the environment concurrently.
    unsafe {
        std::env::set_var("HAVEN_INSECURE_ALLOW_WEAK_KDF", "1");
        std::env::set_var("HAVEN_RETRY_SCALE", "0.1");
    }
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("server.toml");
    fs::write(
        &config,
        "allow_signup = true\nkdf_memory_kib = 256\nkdf_iterations = 1\n",
    )
    .unwrap();
    let data = tmp.path().join("server");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut server = start(&data, &config, port, None);
    let dir = ConfigDir::at(tmp.path().join("device"));
    account::signup(
        &dir,
        &url,
        "srv@example.org",
        "correct horse battery",
        "d",
        None,
        &Default::default(),
    )
    .unwrap();
    let profile = dir.profile().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let iterations = std::env::var("HAVEN_FAULT_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12usize);
    let mut crashes = 0;
    for it in 0..iterations {
        let mut blob = vec![0u8; (1 << 20) + rng.gen_range(0..(2 << 20))];
        rng.fill_bytes(&mut blob);
        // New data every round; the tree stays small so rounds stay fast.
        fs::write(src.join(format!("file-{}.bin", it % 4)), &blob).unwrap();

        let _ = server.kill();
        let _ = server.wait();
        let (point, n) = POINTS[it % POINTS.len()];
        let random_kill = it % 3 == 2;
        server = start(
            &data,
            &config,
            port,
            (!random_kill).then(|| format!("{point}:{n}")),
        );
        let opts = BackupOptions {
            exclude_caches: false,
            ..BackupOptions::new(vec![src.clone()])
        };
        let (d, p, o) = (dir.clone(), profile.clone(), opts.clone());
        let client = std::thread::spawn(move || {
            let remote = p.remote().unwrap();
            backup(&d, &p, &remote, &o, &|_| {})
        });
        let crashed = if random_kill {
            std::thread::sleep(Duration::from_millis(rng.gen_range(10..600)));
            let _ = server.kill();
            let _ = server.wait();
            true
        } else {
            // Wait for the crash (or for the backup to finish without one).
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Some(st) = server.try_wait().unwrap() {
                    break !st.success();
                }
                if client.is_finished() || Instant::now() > deadline {
                    break false;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        if crashed {
            crashes += 1;
            // Restart at once on what the crash left; the client is retrying.
            server = start(&data, &config, port, None);
        }
        let report = client.join().unwrap();
        let report = match report {
            Ok(r) => r,
            // Retries can run out if the crash hit between attempts at a
            // bad moment; the next backup must then complete.
            Err(e) => {
                eprintln!(
                    "round {it}: the backup failed across the crash ({}); backing up again",
                    e.body().message
                );
                let remote = profile.remote().unwrap();
                backup(&dir, &profile, &remote, &opts, &|_| {}).unwrap()
            }
        };
        let remote = profile.remote().unwrap();
        let list = remote.snapshots(Some("d")).unwrap_or_else(|e| {
            panic!(
                "round {it} ({point}:{n}, random kill {random_kill}, crashed {crashed}): {}",
                e.body().message
            )
        });
        assert_eq!(
            list.iter().filter(|s| s.id == report.id).count(),
            1,
            "round {it}: the commit exists exactly once"
        );
        assert!(
            list.iter().all(|s| s.complete),
            "round {it}: no checkpoint outlives a complete backup"
        );
        let out = tmp.path().join(format!("r{it}"));
        let r = restore(
            &profile,
            dir.cache(),
            &remote,
            &list[0],
            &RestoreOptions {
                target: out.clone(),
                paths: vec![],
                overwrite: false,
            },
            &|_| {},
        )
        .unwrap();
        assert!(r.failed.is_empty(), "round {it}: {:?}", r.failed);
        assert_eq!(
            files(&out.join(src.strip_prefix("/").unwrap())),
            files(&src),
            "round {it}: the restore differs"
        );
        fs::remove_dir_all(&out).unwrap();
    }
    assert!(
        crashes * 2 >= iterations,
        "only {crashes} of {iterations} rounds crashed the server"
    );
    // Every backup ever committed restores completely.
    let remote = profile.remote().unwrap();
    let all = remote.snapshots(None).unwrap();
    for s in &all {
        let out = tmp.path().join(format!("all-{}", s.id));
        let r = restore(
            &profile,
            dir.cache(),
            &remote,
            s,
            &RestoreOptions {
                target: out.clone(),
                paths: vec![],
                overwrite: false,
            },
            &|_| {},
        )
        .unwrap();
        assert!(r.failed.is_empty(), "{}: {:?}", s.id, r.failed);
        fs::remove_dir_all(&out).unwrap();
    }
    let _ = server.kill();
    eprintln!(
        "{iterations} rounds, {crashes} server crashes, {} backups restore",
        all.len()
    );
}

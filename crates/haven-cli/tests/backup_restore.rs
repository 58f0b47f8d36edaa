//! End to end: the real server on a loopback port, the real `haven` binary,
//! real files, bit-for-bit comparisons including metadata.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;

use haven_testkit::tree::{assert_same_tree, copy_tree, noise, populate, staged_path};
use haven_testkit::{Device, TestServer};

const BIN: &str = env!("CARGO_BIN_EXE_haven");

/// A device with the tests' password, its state in `dir`.
fn device(dir: &Path, url: &str) -> Device {
    Device::new(Path::new(BIN), dir, url, "correct horse battery")
}

fn restored(root: &Path, original: &Path) -> std::path::PathBuf {
    root.join(original.strip_prefix("/").unwrap())
}

#[test]
fn wiped_laptop_gets_everything_back_on_a_new_device() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("server"));
    let src = tmp.path().join("home");
    populate(&src, "zebra-unicorn-4711");
    let laptop = device(&tmp.path().join("laptop"), &server.url());
    laptop.signup("ann@example.org", "laptop");

    let b = laptop.json(&["backup", src.to_str().unwrap(), "--json"]);
    assert_eq!(b["device"], "laptop");
    assert_eq!(b["files"], 10, "{b}");
    let logical = b["bytes"].as_u64().unwrap();
    assert!(logical > 12 << 20);
    assert!(b["uploaded_bytes"].as_u64().unwrap() > 0);
    assert!(b["id"].as_str().unwrap().len() == 32);

    // The laptop is wiped: a fresh state directory, signed in with the password.
    let fresh = device(&tmp.path().join("fresh"), &server.url());
    let login = fresh.login("ann@example.org", "laptop");
    assert_eq!(login["existing_device"], true);
    let list = fresh.json(&["backups", "list", "--json"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], b["id"]);
    assert_eq!(list[0]["files"], 10);
    assert_eq!(list[0]["bytes"].as_u64().unwrap(), logical);
    let out = tmp.path().join("out");
    let r = fresh.json(&["restore", "latest", "--to", out.to_str().unwrap(), "--json"]);
    assert_eq!(r["failed"].as_array().unwrap().len(), 0, "{r}");
    assert_same_tree(&src, &restored(&out, &src));

    // A different device of the same account restores it too, with --device.
    let phone = device(&tmp.path().join("phone"), &server.url());
    assert_eq!(
        phone.login("ann@example.org", "desktop")["existing_device"],
        false
    );
    let out2 = tmp.path().join("out2");
    phone.json(&[
        "restore",
        "--device",
        "laptop",
        "--to",
        out2.to_str().unwrap(),
        "--json",
    ]);
    assert_same_tree(&src, &restored(&out2, &src));
}

/// A new device has none of the backup's directory listings cached: the
/// restore asks for those of a directory's subdirectories together, not
/// one request per directory (which made a restore of the benchmark's
/// 5,000 directories take 5–6 s instead of 3).
#[test]
fn a_restore_on_a_new_device_fetches_directory_listings_together() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("server"));
    let src = tmp.path().join("tree");
    // 1 + 3 + 60 directories, a file in each of the 60.
    for a in 0..3 {
        for b in 0..20 {
            let d = src.join(format!("part{a}/dir{b}"));
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("file.txt"), format!("{a}/{b}")).unwrap();
        }
    }
    let laptop = device(&tmp.path().join("laptop"), &server.url());
    laptop.signup("ann@example.org", "laptop");
    laptop.json(&["backup", src.to_str().unwrap(), "--json"]);

    let fresh = device(&tmp.path().join("fresh"), &server.url());
    fresh.login("ann@example.org", "laptop");
    let out = tmp.path().join("out");
    let r = fresh.json(&["restore", "latest", "--to", out.to_str().unwrap(), "--json"]);
    assert_eq!(r["failed"].as_array().unwrap().len(), 0, "{r}");
    assert_same_tree(&src, &restored(&out, &src));
    // The directories above the tree, the tree's own 64 listings in a few
    // requests, the files in one, the snapshot: far fewer than 64.
    let requests = r["requests"].as_u64().unwrap();
    assert!(
        requests <= 30,
        "{requests} requests for 64 directories: {r}"
    );
}

#[test]
fn incremental_backups_send_only_what_changed_and_every_version_restores() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("server"));
    let src = tmp.path().join("data");
    populate(&src, "first-version");
    fs::write(src.join("log.bin"), noise(10 << 20, 9)).unwrap();
    let dev = device(&tmp.path().join("dev"), &server.url());
    dev.signup("bob@example.org", "desk");
    let first = dev.json(&["backup", src.to_str().unwrap(), "--json"]);
    let v1 = tmp.path().join("v1");
    copy_tree(&src, &v1);

    // Unchanged: under 1% of the size goes over the wire, no file is read.
    let second = dev.json(&["backup", src.to_str().unwrap(), "--json"]);
    let size = second["bytes"].as_u64().unwrap();
    let sent = second["uploaded_bytes"].as_u64().unwrap();
    assert!(
        sent * 100 < size,
        "unchanged backup sent {sent} of {size} bytes"
    );
    assert_eq!(second["files_read"], 0);
    assert_eq!(second["parent"], first["id"]);

    // Appending 1 KiB to a 10 MiB file uploads about one chunk.
    let mut log = fs::read(src.join("log.bin")).unwrap();
    log.extend_from_slice(&noise(1024, 10));
    fs::write(src.join("log.bin"), &log).unwrap();
    let third = dev.json(&["backup", src.to_str().unwrap(), "--json"]);
    let sent = third["uploaded_bytes"].as_u64().unwrap();
    assert!(sent < 7_000_000, "appending 1 KiB sent {sent} bytes");
    assert_eq!(third["files_read"], 1);

    // Modify, add, delete, rename.
    fs::write(src.join("docs/note.txt"), "changed content").unwrap();
    fs::write(src.join("new-file.txt"), "brand new").unwrap();
    fs::remove_file(src.join("photos/small.jpg")).unwrap();
    fs::rename(src.join("docs/deep"), src.join("docs/renamed-deep")).unwrap();
    let fourth = dev.json(&["backup", src.to_str().unwrap(), "--json"]);
    assert!(
        fourth["uploaded_bytes"].as_u64().unwrap() < 1_000_000,
        "{fourth}"
    );

    let out = tmp.path().join("latest");
    dev.json(&["restore", "latest", "--to", out.to_str().unwrap(), "--json"]);
    assert_same_tree(&src, &restored(&out, &src));
    let out1 = tmp.path().join("first");
    dev.json(&[
        "restore",
        first["id"].as_str().unwrap(),
        "--to",
        out1.to_str().unwrap(),
        "--json",
    ]);
    assert_same_tree(&v1, &restored(&out1, &src));

    let list = dev.json(&["backups", "list", "--json"]);
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 4);
    assert_eq!(ids[0], fourth["id"].as_str().unwrap(), "newest first");
}

#[test]
fn restore_selects_paths_and_leaves_existing_files_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("server"));
    let src = tmp.path().join("data");
    populate(&src, "select");
    let dev = device(&tmp.path().join("dev"), &server.url());
    dev.signup("sel@example.org", "d");
    dev.json(&["backup", src.to_str().unwrap(), "--json"]);

    let out = tmp.path().join("out");
    let docs = src.join("docs");
    dev.json(&[
        "restore",
        "--to",
        out.to_str().unwrap(),
        docs.to_str().unwrap(),
        "--json",
    ]);
    assert_same_tree(&docs, &restored(&out, &docs));
    assert!(
        !restored(&out, &src.join("photos")).exists(),
        "only the selected path is restored"
    );

    // An existing file is left alone unless --overwrite.
    let note = restored(&out, &src.join("docs/note.txt"));
    fs::write(&note, "local edit").unwrap();
    let r = dev.json(&[
        "restore",
        "--to",
        out.to_str().unwrap(),
        docs.to_str().unwrap(),
        "--json",
    ]);
    assert!(r["skipped_existing"].as_u64().unwrap() >= 1);
    assert_eq!(fs::read(&note).unwrap(), b"local edit");
    dev.json(&[
        "restore",
        "--to",
        out.to_str().unwrap(),
        "--overwrite",
        docs.to_str().unwrap(),
        "--json",
    ]);
    assert_same_tree(&docs, &restored(&out, &docs));

    // A path that was never backed up is named, and the exit code says so.
    let missing = dev.run(&["restore", "--to", out.to_str().unwrap(), "/not/backed/up"]);
    assert_eq!(missing.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/not/backed/up"));
}

#[test]
fn special_files_are_skipped_with_a_warning_and_the_backup_succeeds() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("server"));
    let src = tmp.path().join("data");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.txt"), "a").unwrap();
    let fifo = std::ffi::CString::new(src.join("pipe").to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let _sock = std::os::unix::net::UnixListener::bind(src.join("sock")).unwrap();
    fs::create_dir_all(src.join("cache-dir")).unwrap();
    fs::write(
        src.join("cache-dir/CACHEDIR.TAG"),
        "Signature: 8a477f597d28d172789f06886806bc55\n",
    )
    .unwrap();
    fs::write(src.join("cache-dir/junk"), "junk").unwrap();
    fs::write(src.join("skip.iso"), "iso").unwrap();
    let dev = device(&tmp.path().join("dev"), &server.url());
    dev.signup("fifo@example.org", "d");
    let b = dev.json(&[
        "backup",
        src.to_str().unwrap(),
        "--exclude",
        "*.iso",
        "--json",
    ]);
    assert_eq!(b["files"], 1, "{b}");
    let warnings = b["warnings"].to_string();
    assert!(
        warnings.contains("named pipe") && warnings.contains("socket"),
        "{warnings}"
    );
    let out = tmp.path().join("out");
    dev.json(&["restore", "--to", out.to_str().unwrap(), "--json"]);
    let r = restored(&out, &src);
    assert!(r.join("a.txt").exists());
    assert!(
        !r.join("pipe").exists() && !r.join("cache-dir").exists() && !r.join("skip.iso").exists()
    );
}

#[test]
fn a_second_backup_of_the_same_device_is_refused_while_one_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("server"));
    let src = tmp.path().join("data");
    fs::create_dir_all(&src).unwrap();
    let dev = device(&tmp.path().join("dev"), &server.url());
    dev.signup("lock@example.org", "d");
    // Hold the lock as a running backup does.
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(tmp.path().join("dev/backup.lock"))
        .unwrap();
    lock.lock().unwrap();
    assert_eq!(
        dev.error_code(&["backup", src.to_str().unwrap(), "--json"]),
        "backup_in_progress"
    );
    drop(lock);
    dev.json(&["backup", src.to_str().unwrap(), "--json"]);
}

#[test]
fn deleting_a_backup_needs_confirmation_without_a_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("server"));
    let src = tmp.path().join("data");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), "x").unwrap();
    let dev = device(&tmp.path().join("dev"), &server.url());
    dev.signup("del@example.org", "d");
    let b = dev.json(&["backup", src.to_str().unwrap(), "--json"]);
    let id = b["id"].as_str().unwrap();
    assert_eq!(
        dev.error_code(&["backups", "delete", &id[..8], "--json"]),
        "confirmation_needed"
    );
    dev.json(&["backups", "delete", &id[..8], "--yes", "--json"]);
    assert_eq!(
        dev.json(&["backups", "list", "--json"])
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        dev.error_code(&["backups", "delete", id, "--yes", "--json"]),
        "not_found"
    );
}

#[test]
fn versions_are_printed() {
    let out = std::process::Command::new(BIN)
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("haven "));
}

#[test]
fn a_plain_backup_covers_home_without_caches_or_havens_own_state() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("server"));
    let home = tmp.path().join("home");
    fs::create_dir_all(home.join(".cache/thumbnails")).unwrap();
    fs::write(home.join(".cache/thumbnails/t.png"), "cache").unwrap();
    fs::create_dir_all(home.join(".local/share/Trash/files")).unwrap();
    fs::write(home.join(".local/share/Trash/files/old.txt"), "trash").unwrap();
    fs::create_dir_all(home.join("Documents")).unwrap();
    fs::write(home.join("Documents/cv.txt"), "cv").unwrap();
    // The device's own state lives in the home directory here.
    let dev = device(&home.join(".config/haven"), &server.url());
    dev.signup("home@example.org", "d");
    let home_s = home.to_str().unwrap();
    let out = dev.run_env(&["backup", "--json"], &[("HOME", home_s)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let b: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(b["files"], 1, "only Documents/cv.txt: {b}");
    // The human form of the same.
    let out = dev.run_env(&["backup"], &[("HOME", home_s)]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 files"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn nothing_waits_for_a_password_without_a_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("server"));
    let dev = Device::new(
        Path::new(BIN),
        &tmp.path().join("d"),
        &server.url(),
        "unused",
    );
    let out = dev.run_env(
        &[
            "signup",
            "--server",
            &server.url(),
            "--email",
            "np@example.org",
            "--json",
        ],
        &[("HAVEN_PASSWORD", "")],
    );
    assert!(!out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["code"], "confirmation_needed");
    let pw = tmp.path().join("pw");
    fs::write(&pw, "from a file 123\n").unwrap();
    let out = dev.run_env(
        &[
            "signup",
            "--server",
            &server.url(),
            "--email",
            "np@example.org",
            "--password-file",
            pw.to_str().unwrap(),
            "--json",
        ],
        &[("HAVEN_PASSWORD", "")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let login = Device::new(
        Path::new(BIN),
        &tmp.path().join("e"),
        &server.url(),
        "from a file 123",
    );
    login.login("np@example.org", "other");
}

/// Backs up `files` (name, size, seed), restores them onto a 7 MiB tmpfs
/// and checks that nothing appears under the final path (a restore that
/// stops leaves its staging directory for the next run) and that every file
/// left in the staging directory is complete. Returns the exit code, the
/// JSON answer and the names restored; `None` without root (mounting needs
/// it).
fn restore_onto_a_small_disk(
    email: &str,
    files: &[(&str, usize, u64)],
) -> Option<(Option<i32>, serde_json::Value, Vec<String>)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("server"));
    let src = tmp.path().join("data");
    fs::create_dir_all(&src).unwrap();
    for (name, size, seed) in files {
        fs::write(src.join(name), noise(*size, *seed)).unwrap();
    }
    let dev = device(&tmp.path().join("dev"), &server.url());
    dev.signup(email, "d");
    dev.json(&["backup", src.to_str().unwrap(), "--json"]);
    let small = tmp.path().join("small");
    fs::create_dir_all(&small).unwrap();
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=7m", "tmpfs"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(st.success(), "mounting a tmpfs failed");
    let out = dev.run(&["restore", "--to", small.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert!(!small.join(src.strip_prefix("/").unwrap()).exists());
    // Every file kept for the next run is complete; no temp file is left.
    let mut names = Vec::new();
    let staged = staged_path(&small, &src).expect("a staging directory");
    for e in fs::read_dir(staged).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with('.'), "a temp file was left: {name}");
        assert_eq!(
            fs::read(e.path()).unwrap(),
            fs::read(src.join(&name)).unwrap(),
            "{name} is complete"
        );
        names.push(name);
    }
    let _ = std::process::Command::new("umount").arg(&small).status();
    Some((out.status.code(), v, names))
}

#[test]
fn a_full_disk_during_restore_stops_with_a_clear_error_and_leaves_no_half_file() {
    let files = [
        ("f0", 3 << 20, 0),
        ("f1", 3 << 20, 1),
        ("f2", 3 << 20, 2),
        ("f3", 3 << 20, 3),
    ];
    let Some((code, v, names)) = restore_onto_a_small_disk("fulldisk@example.org", &files) else {
        return;
    };
    assert_ne!(code, Some(0));
    assert_eq!(v["error"]["code"], "local_io", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("full"),
        "{v}"
    );
    let complete = names.len();
    assert!((1..4).contains(&complete), "{complete} files fit");
}

/// The same with a file too large to be fetched in one batch: its chunks
/// stream to a writer thread of its own while the disk fills.
#[test]
fn a_full_disk_in_the_middle_of_a_large_file_leaves_no_half_file() {
    let files = [
        ("a-small", 2 << 20, 11),
        ("b-large", 12 << 20, 12),
        ("c-small", 1 << 20, 13),
    ];
    let Some((code, v, names)) = restore_onto_a_small_disk("fulldisk-large@example.org", &files)
    else {
        return;
    };
    assert!(!names.contains(&"b-large".to_string()), "{names:?}");
    assert!(names.contains(&"a-small".to_string()), "{names:?}");
    assert_ne!(code, Some(0));
    assert_eq!(v["error"]["code"], "local_io", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("full"),
        "{v}"
    );
}

//! Flaky and slow networks: the real client and server through a
//! fault-injecting TCP proxy on loopback.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use haven_testkit::proxy::{FaultProxy, Faults};
use haven_testkit::tree::{assert_same_tree, noise, staged_path};
use haven_testkit::{Device, TestServer};

const BIN: &str = env!("CARGO_BIN_EXE_haven");
const MIB: u64 = 1 << 20;

fn device(dir: &Path, url: &str) -> Device {
    Device::new(Path::new(BIN), dir, url, "correct horse battery")
}

/// Makes a device talk to the server at `url` from now on.
fn point_at(d: &Device, url: &str) {
    let path = d.config_dir.join("device.json");
    let mut profile: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    profile["server"] = url.into();
    fs::write(path, serde_json::to_vec(&profile).unwrap()).unwrap();
}

/// A command that failed because the server could not be reached, saying
/// so (`--json`) with a fix.
fn assert_server_out_of_reach(out: &std::process::Output) {
    assert!(!out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let code = v["error"]["code"].as_str().unwrap();
    assert!(
        code == "server_unavailable" || code == "network_unreachable",
        "{v}"
    );
    assert!(!v["error"]["fix"].as_array().unwrap().is_empty(), "{v}");
}

fn fast_retries(d: &Device, args: &[&str]) -> serde_json::Value {
    let out = d.run_env(args, &[("HAVEN_RETRY_SCALE", "0.2")]);
    assert!(
        out.status.success(),
        "haven {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_200_mib_backup_survives_a_slow_line_that_breaks_every_8_mib_and_restores_through_it() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("server"));
    let src = tmp.path().join("data");
    fs::create_dir_all(&src).unwrap();
    for i in 0..4 {
        fs::write(src.join(format!("video-{i}.bin")), noise(50 << 20, 100 + i)).unwrap();
    }

    // A clean run, for the byte count.
    let clean = FaultProxy::start(server.addr, Faults::default());
    let a = device(&tmp.path().join("a"), &clean.url());
    a.signup("clean@example.org", "a");
    let before = clean.bytes_up();
    fast_retries(&a, &["backup", src.to_str().unwrap(), "--json"]);
    let clean_bytes = clean.bytes_up() - before;

    // 4 MiB/s, every connection cut at a random point every ~8 MiB.
    let flaky = FaultProxy::start(
        server.addr,
        Faults {
            rate: Some(4 * MIB),
            cut_every: Some(8 * MIB),
            random_cuts: true,
            ..Default::default()
        },
    );
    let b = device(&tmp.path().join("b"), &flaky.url());
    b.signup("flaky@example.org", "b");
    let before = flaky.bytes_up();
    let r = fast_retries(&b, &["backup", src.to_str().unwrap(), "--json"]);
    let flaky_bytes = flaky.bytes_up() - before;
    assert!(flaky.cuts() >= 15, "only {} cuts", flaky.cuts());
    assert!(
        flaky_bytes * 100 <= clean_bytes * 110,
        "the flaky run sent {flaky_bytes} bytes, the clean one {clean_bytes} (+{:.1}%)",
        (flaky_bytes as f64 / clean_bytes as f64 - 1.0) * 100.0
    );
    eprintln!(
        "clean {clean_bytes} B, flaky {flaky_bytes} B (+{:.2}%), {} cuts, backup reported {} B sent",
        (flaky_bytes as f64 / clean_bytes as f64 - 1.0) * 100.0,
        flaky.cuts(),
        r["uploaded_bytes"]
    );

    // The restore goes through a line that breaks too.
    let down = FaultProxy::start(
        server.addr,
        Faults {
            rate: Some(16 * MIB),
            cut_every: Some(8 * MIB),
            random_cuts: true,
            ..Default::default()
        },
    );
    let c = device(&tmp.path().join("c"), &down.url());
    c.login("flaky@example.org", "c");
    let out = tmp.path().join("out");
    let r = fast_retries(
        &c,
        &[
            "restore",
            "--device",
            "b",
            "--to",
            out.to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(r["failed"].as_array().unwrap().len(), 0, "{r}");
    assert!(
        down.cuts() >= 10,
        "only {} cuts on the way down",
        down.cuts()
    );
    assert_same_tree(&src, &out.join(src.strip_prefix("/").unwrap()));
}

/// A backup of `files` MiB-sized files from device "a", and a restore of
/// it by device "b" through a 4 MiB/s proxy, running in the background
/// into `out`. The server and proxy live as long as this.
struct SlowRestore {
    _server: TestServer,
    _proxy: FaultProxy,
    src: std::path::PathBuf,
    out: std::path::PathBuf,
    b: Device,
    child: std::process::Child,
}

fn slow_restore(
    tmp: &Path,
    email: &str,
    sizes: &[usize],
    seed: u64,
    stdout: std::process::Stdio,
) -> SlowRestore {
    let server = TestServer::start(&tmp.join("server"));
    let src = tmp.join("data");
    fs::create_dir_all(&src).unwrap();
    for (i, &size) in sizes.iter().enumerate() {
        fs::write(src.join(format!("f{i:02}")), noise(size, seed + i as u64)).unwrap();
    }
    let a = device(&tmp.join("a"), &server.url());
    a.signup(email, "a");
    a.json(&["backup", src.to_str().unwrap(), "--json"]);
    let proxy = FaultProxy::start(
        server.addr,
        Faults {
            rate: Some(4 * MIB),
            ..Default::default()
        },
    );
    let b = device(&tmp.join("b"), &proxy.url());
    b.login(email, "b");
    let out = tmp.join("out");
    let child = std::process::Command::new(BIN)
        .args(restore_args(&out))
        .env("HAVEN_CONFIG_DIR", &b.config_dir)
        // A test that takes the line away needs no minutes of retries.
        .env("HAVEN_RETRY_SCALE", "0.01")
        .stdout(stdout)
        .spawn()
        .unwrap();
    SlowRestore {
        _server: server,
        _proxy: proxy,
        src,
        out,
        b,
        child,
    }
}

/// Files of the restore of `src` into `out` that are complete, bit for
/// bit, in its staging directory.
fn staged_complete(out: &Path, src: &Path) -> usize {
    staged_path(out, src)
        .and_then(|staged| fs::read_dir(staged).ok())
        .map(|d| {
            d.flatten()
                .filter(|e| fs::read(e.path()).ok() == fs::read(src.join(e.file_name())).ok())
                .count()
        })
        .unwrap_or(0)
}

/// Waits (up to a minute) until the restore of `src` into `out` has
/// completed its first files; the caller checks that it has.
/// Where the restore of `src` into `out` puts its tree once complete (the
/// tree is filled under a hidden staging name until then).
fn final_top(out: &Path, src: &Path) -> std::path::PathBuf {
    out.join(src.components().nth(1).unwrap())
}

/// The command line of a restore of device "a"'s newest backup into `out`.
fn restore_args(out: &Path) -> [&str; 6] {
    let to = out.to_str().unwrap();
    ["restore", "--device", "a", "--to", to, "--json"]
}

/// Device `b`'s restore of device "a"'s newest backup into `out`.
fn restore_into(b: &Device, out: &Path) -> serde_json::Value {
    b.json(&restore_args(out))
}

/// Takes the line to the server away in the middle of the restore of
/// `src` into `out`: open connections break and new ones are refused. The
/// restore must fail saying so, with nothing under its final name.
fn take_the_line_away(proxy: FaultProxy, child: std::process::Child, out: &Path, src: &Path) {
    drop(proxy);
    let done = child.wait_with_output().unwrap();
    assert_server_out_of_reach(&done);
    assert!(
        !final_top(out, src).exists(),
        "nothing is under its final name"
    );
}

fn wait_for_first_files(out: &Path, src: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while staged_complete(out, src) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_interrupted_restore_run_again_keeps_what_it_finished() {
    let tmp = tempfile::tempdir().unwrap();
    let SlowRestore {
        src,
        out,
        b,
        mut child,
        // Bound, so they live to the end of the test.
        _server,
        _proxy,
    } = slow_restore(
        tmp.path(),
        "int@example.org",
        &[MIB as usize; 40],
        0,
        std::process::Stdio::null(),
    );
    let restored = out.join(src.strip_prefix("/").unwrap());
    // The restore fills the tree under a hidden staging name and renames it
    // into place when it is complete.
    let top = final_top(&out, &src);
    let complete = || staged_complete(&out, &src);
    // Kill as soon as the first files are complete.
    wait_for_first_files(&out, &src);
    child.kill().unwrap();
    child.wait().unwrap();
    // Nothing sits under a final name: the tree appears whole or not at all.
    assert!(!top.exists(), "the kill should land mid-restore");
    let done = complete();
    assert!(
        done > 0 && done < 40,
        "the kill should land mid-restore ({done} files done)"
    );
    // As if the kill had landed between files' last bytes and their
    // metadata: the next run must still give them their mode and time.
    let staged = staged_path(&out, &src).unwrap();
    for e in fs::read_dir(&staged).unwrap().flatten() {
        fs::set_permissions(e.path(), fs::Permissions::from_mode(0o600)).unwrap();
        filetime::set_file_mtime(e.path(), filetime::FileTime::now()).unwrap();
    }
    let r = restore_into(&b, &out);
    assert_eq!(r["already_restored"].as_u64().unwrap(), done as u64, "{r}");
    assert_eq!(r["files"].as_u64().unwrap(), 40 - done as u64);
    assert_eq!(r["skipped_existing"], 0);
    assert_same_tree(&src, &restored);
    assert_eq!(
        staged_path(&out, &src),
        None,
        "the staging directory is gone"
    );
}

/// The server goes away in the middle of a restore: the restore stops
/// with an error that names the cause and what to do, nothing appears
/// under its final name, and a run against the server again keeps what the
/// first one finished and restores the rest.
#[test]
fn a_restore_whose_server_goes_away_stops_with_the_cause_and_a_rerun_finishes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let SlowRestore {
        src,
        out,
        b,
        child,
        _server: server,
        _proxy: proxy,
    } = slow_restore(
        tmp.path(),
        "gone@example.org",
        &[MIB as usize; 40],
        100,
        std::process::Stdio::piped(),
    );
    wait_for_first_files(&out, &src);
    take_the_line_away(proxy, child, &out, &src);
    let finished = staged_complete(&out, &src);
    assert!(
        finished > 0 && finished < 40,
        "the line should go mid-restore ({finished} files done)"
    );

    point_at(&b, &server.url());
    let r = restore_into(&b, &out);
    let kept = r["already_restored"].as_u64().unwrap();
    assert!(kept >= finished as u64, "{r}");
    assert_eq!(kept + r["files"].as_u64().unwrap(), 40, "{r}");
    assert_same_tree(&src, &out.join(src.strip_prefix("/").unwrap()));
    assert_eq!(staged_path(&out, &src), None);
}

/// The same in the middle of a large file, whose chunks come in windows
/// of their own: the part written is removed, nothing appears under its
/// final name, and the next run writes the file whole.
#[test]
fn a_restore_whose_server_goes_away_mid_file_leaves_no_half_file() {
    let tmp = tempfile::tempdir().unwrap();
    let size = 24 * MIB as usize;
    let SlowRestore {
        src,
        out,
        b,
        child,
        _server: server,
        _proxy: proxy,
    } = slow_restore(
        tmp.path(),
        "midfile@example.org",
        &[size],
        200,
        std::process::Stdio::piped(),
    );
    // Cut once a few MiB of the file are written.
    let written = || {
        staged_path(&out, &src)
            .and_then(|staged| fs::metadata(staged.join("f00")).ok())
            .map_or(0, |m| m.len())
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while written() < 4 * MIB && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let seen = written();
    take_the_line_away(proxy, child, &out, &src);
    assert!(
        seen >= 4 * MIB && seen < size as u64,
        "the line should go mid-file ({seen} bytes written)"
    );
    // The part written is removed: a file is whole or absent.
    assert_eq!(written(), 0, "a half-written file was left");

    point_at(&b, &server.url());
    let r = restore_into(&b, &out);
    assert_eq!(r["files"], 1, "{r}");
    assert_eq!(r["already_restored"], 0, "{r}");
    assert_same_tree(&src, &out.join(src.strip_prefix("/").unwrap()));
}

/// Something takes a staging directory's final place while the restore
/// fills it: the rename refuses to replace it (`RENAME_NOREPLACE`), what
/// is there is left alone, and the restored tree stays whole where it is,
/// named in the report.
#[test]
fn a_final_path_taken_during_the_restore_is_left_alone_and_nothing_is_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let SlowRestore {
        src,
        out,
        child,
        _server,
        _proxy,
        ..
    } = slow_restore(
        tmp.path(),
        "taken@example.org",
        &[MIB as usize; 12],
        50,
        std::process::Stdio::piped(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while staged_path(&out, &src).is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    // Someone else's directory appears where the restore's will go.
    let top = final_top(&out, &src);
    fs::create_dir(&top).unwrap();
    fs::write(top.join("mine.txt"), "keep me").unwrap();
    let done = child.wait_with_output().unwrap();
    assert!(!done.status.success(), "a path that failed fails the run");
    let r: serde_json::Value = serde_json::from_slice(&done.stdout).unwrap();
    let failed = r["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{r}");
    let why = failed[0].as_str().unwrap();
    assert!(why.contains("could not be renamed into place"), "{why}");
    // Theirs, untouched.
    let theirs: Vec<_> = fs::read_dir(&top)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(theirs, ["mine.txt"]);
    assert_eq!(fs::read_to_string(top.join("mine.txt")).unwrap(), "keep me");
    // Ours, whole, where the report says.
    let staged = staged_path(&out, &src).unwrap();
    let staging_root = out.join(
        staged
            .strip_prefix(&out)
            .unwrap()
            .components()
            .next()
            .unwrap(),
    );
    assert!(why.contains(staging_root.to_str().unwrap()), "{why}");
    assert_same_tree(&src, &staged);
}

#[test]
fn the_upload_limit_caps_the_rate() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("server"));
    let src = tmp.path().join("data");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), noise(8 << 20, 1)).unwrap();
    let a = device(&tmp.path().join("a"), &server.url());
    a.signup("limit@example.org", "a");
    let started = Instant::now();
    let r = a.json(&[
        "backup",
        src.to_str().unwrap(),
        "--upload-limit",
        "2MiB",
        "--json",
    ]);
    let took = started.elapsed();
    // 8 MiB at 2 MiB/s cannot take less than ~3.5 s (the first part goes at once).
    assert!(
        took >= Duration::from_millis(3400),
        "8 MiB went up in {took:?} under a 2 MiB/s cap"
    );
    assert!(r["uploaded_bytes"].as_u64().unwrap() >= 8 << 20);
    assert_eq!(
        a.error_code(&[
            "backup",
            src.to_str().unwrap(),
            "--upload-limit",
            "fast",
            "--json"
        ]),
        "config_invalid"
    );
}

#[test]
fn when_the_network_never_recovers_the_error_names_the_cause() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("server"));
    let src = tmp.path().join("data");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), noise(3 << 20, 1)).unwrap();
    let proxy = FaultProxy::start(server.addr, Faults::default());
    let a = device(&tmp.path().join("a"), &proxy.url());
    a.signup("down@example.org", "a");
    drop(proxy); // the server's address now refuses connections
    let out = a.run_env(
        &["backup", src.to_str().unwrap(), "--json"],
        &[("HAVEN_RETRY_SCALE", "0.01")],
    );
    assert_server_out_of_reach(&out);

    // A line that breaks after every few bytes never lets a request through.
    let hopeless = FaultProxy::start(
        server.addr,
        Faults {
            cut_every: Some(100),
            ..Default::default()
        },
    );
    let b = device(&tmp.path().join("b"), &server.url());
    b.signup("hopeless@example.org", "b");
    point_at(&b, &hopeless.url());
    let out = b.run_env(
        &["backup", src.to_str().unwrap(), "--json"],
        &[("HAVEN_RETRY_SCALE", "0.01")],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["code"], "network_unreachable", "{v}");
}

/// Answers every request on a loopback port with `status` and `body`, as
/// a server whose storage is failing (or a proxy in front of a dead
/// server) does.
fn always_answering(status: &'static str, body: &'static str) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            // The whole request, so that closing never resets the
            // connection under unread bytes: headers, then the body.
            let mut request = Vec::new();
            let mut buf = [0u8; 16 << 10];
            let complete = |r: &[u8]| {
                let Some(end) = r.windows(4).position(|w| w == b"\r\n\r\n") else {
                    return false;
                };
                let head = String::from_utf8_lossy(&r[..end]).to_ascii_lowercase();
                let body: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                r.len() >= end + 4 + body
            };
            while !complete(&request) {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

/// The JSON error of a `login` against a server that always answers
/// `status` and `body`, once the retries are spent.
fn login_error(dir: &Path, status: &'static str, body: &'static str) -> serde_json::Value {
    let url = always_answering(status, body);
    let out = device(dir, &url).run_env(
        &[
            "login",
            "--server",
            &url,
            "--email",
            "x@example.org",
            "--device",
            "d",
            "--json",
        ],
        &[("HAVEN_RETRY_SCALE", "0.01")],
    );
    assert!(!out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_server_that_keeps_failing_is_reported_with_its_own_error() {
    let tmp = tempfile::tempdir().unwrap();
    // The server said what failed: that is what the user reads, not just
    // "HTTP 503", once the retries are spent.
    let v = login_error(
        &tmp.path().join("a"),
        "503 Service Unavailable",
        r#"{"error":{"code":"storage_unavailable","message":"The server could not read or write its storage.","fix":["Try again in a few minutes; nothing was lost."]}}"#,
    );
    assert_eq!(v["error"]["code"], "storage_unavailable", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("storage"),
        "{v}"
    );
    let fixes = v["error"]["fix"].to_string();
    assert!(fixes.contains("Try again in a few minutes"), "{v}");
    assert!(fixes.contains("retried"), "{v}");

    // A 502 without a Haven error (a proxy's page): the generic answer.
    let v = login_error(
        &tmp.path().join("b"),
        "502 Bad Gateway",
        "<html>bad gateway</html>",
    );
    assert_eq!(v["error"]["code"], "server_unavailable", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("HTTP 502"),
        "{v}"
    );
}

//! The agent with a conditions file and the real server on loopback.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use haven_testkit::tree::{noise, text};
use haven_testkit::{Device, TestServer, signed_up};

const BIN: &str = env!("CARGO_BIN_EXE_haven");

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn conditions(path: &Path, on_power: bool, idle: bool, metered: bool) {
    let tmp = path.with_extension("tmp");
    fs::write(
        &tmp,
        format!(r#"{{"on_power": {on_power}, "idle": {idle}, "metered": {metered}}}"#),
    )
    .unwrap();
    fs::rename(tmp, path).unwrap();
}

fn start(dev: &Device, home: &Path, cond: &Path, extra_env: &[(&str, &str)]) -> Agent {
    let mut cmd = Command::new(BIN);
    cmd.args(["agent", "--conditions-file", cond.to_str().unwrap()])
        .args(["--interval", "1h", "--check-every", "100ms"])
        .env("HAVEN_CONFIG_DIR", &dev.config_dir)
        .env("HAVEN_INSECURE_ALLOW_WEAK_KDF", "1")
        .env("HAVEN_RETRY_SCALE", "0.01")
        .env("HOME", home)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    Agent(cmd.spawn().unwrap())
}

fn agent_state(dev: &Device) -> serde_json::Value {
    dev.json(&["agent", "status", "--json"])
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn backups(dev: &Device) -> Vec<serde_json::Value> {
    dev.json(&["backups", "list", "--json"])
        .as_array()
        .unwrap()
        .clone()
}

fn home_with<S: AsRef<str>>(tmp: &Path, files: &[(S, Vec<u8>)]) -> PathBuf {
    let home = tmp.join("home");
    for (name, content) in files {
        let p = home.join(name.as_ref());
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }
    home
}

#[test]
fn no_backup_while_a_condition_fails_then_one_when_all_hold() {
    let (tmp, _server, dev) = signed_up(Path::new(BIN), "agent@example.org");
    let home = home_with(tmp.path(), &[("Documents/a.txt", text(10_000, 1))]);
    let cond = tmp.path().join("conditions.json");
    // No conditions file at all: "not met", and no crash.
    let _agent = start(&dev, &home, &cond, &[]);
    wait_for("the agent to wait", 20, || {
        agent_state(&dev)["agent"]["state"] == "waiting"
    });
    assert_eq!(agent_state(&dev)["running"], true);
    assert!(
        agent_state(&dev)["agent"]["reason"]
            .as_str()
            .unwrap()
            .contains("conditions unknown")
    );
    // A second agent for the same device refuses to start.
    let second = dev.run_env(
        &[
            "agent",
            "--conditions-file",
            cond.to_str().unwrap(),
            "--json",
        ],
        &[("HOME", home.to_str().unwrap())],
    );
    assert!(!second.status.success());
    let e: serde_json::Value = serde_json::from_slice(&second.stdout).unwrap();
    assert_eq!(e["error"]["code"], "agent_running");

    for (p, i, m, why) in [
        (false, true, false, "battery"),
        (true, false, false, "in use"),
        (true, true, true, "metered"),
    ] {
        conditions(&cond, p, i, m);
        wait_for(why, 20, || {
            agent_state(&dev)["agent"]["reason"]
                .as_str()
                .unwrap_or_default()
                .contains(why)
        });
        std::thread::sleep(Duration::from_millis(400));
        assert!(backups(&dev).is_empty(), "no backup while {why}");
    }
    conditions(&cond, true, true, false);
    wait_for("a backup", 30, || {
        backups(&dev).iter().any(|b| b["complete"] == true)
    });
    // Done for the interval: it waits, and makes no second backup.
    wait_for("the agent to call the backup recent", 20, || {
        agent_state(&dev)["agent"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("recent")
    });
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(backups(&dev).len(), 1);
    let st = agent_state(&dev);
    assert_eq!(st["agent"]["state"], "waiting", "{st}");
    assert!(
        st["agent"]["reason"].as_str().unwrap().contains("recent"),
        "{st}"
    );
    // A manual backup while the agent runs is fine (one at a time).
    let manual = dev.run_env(&["backup", "--json"], &[("HOME", home.to_str().unwrap())]);
    assert!(manual.status.success());
}

#[test]
fn a_backup_pauses_when_power_drops_and_resumes_without_sending_twice() {
    let (tmp, _server, dev) = signed_up(Path::new(BIN), "pause@example.org");
    // Far more than the pipeline reads ahead of the uploads (its channels
    // and two packs: with 20 such files, 80 MiB, the whole walk was done
    // before the pause), so the pause lands in the middle of the walk.
    let files: Vec<(String, Vec<u8>)> = (0..36)
        .map(|i| (format!("Documents/part{i}.bin"), noise(4 << 20, i)))
        .collect();
    let home = home_with(tmp.path(), &files);
    let total: u64 = files.iter().map(|(_, c)| c.len() as u64).sum();
    fs::write(
        dev.config_dir.join("config.toml"),
        "upload_limit = \"8MiB\"\n",
    )
    .unwrap();
    let cond = tmp.path().join("conditions.json");
    conditions(&cond, true, true, false);
    let _agent = start(&dev, &home, &cond, &[]);
    wait_for("the backup to start sending", 30, || {
        agent_state(&dev)["agent"]["state"] == "backing up"
    });
    std::thread::sleep(Duration::from_millis(2500));
    conditions(&cond, false, true, false);
    wait_for("the pause", 60, || {
        agent_state(&dev)["agent"]["state"] == "paused"
    });
    let list = backups(&dev);
    assert!(
        list.iter().all(|b| b["complete"] == false) && !list.is_empty(),
        "what was done is kept as a checkpoint: {list:?}"
    );
    let sent_before = agent_state(&dev)["agent"]["uploaded_bytes"]
        .as_u64()
        .unwrap();
    assert!(
        sent_before < total,
        "paused before the end ({sent_before} of {total})"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        agent_state(&dev)["agent"]["state"],
        "paused",
        "stays paused on battery"
    );

    conditions(&cond, true, true, false);
    wait_for("the backup to complete", 90, || {
        backups(&dev).iter().any(|b| b["complete"] == true)
    });
    wait_for("the agent to record it", 20, || {
        agent_state(&dev)["agent"]["state"] == "waiting"
    });
    let sent = agent_state(&dev)["agent"]["uploaded_bytes"]
        .as_u64()
        .unwrap();
    assert!(
        sent < total + total / 20,
        "nothing was sent twice: {sent} bytes for {total}"
    );
    let out = tmp.path().join("restored");
    dev.json(&["restore", "latest", "--to", out.to_str().unwrap(), "--json"]);
    for (name, content) in &files {
        let p = out.join(home.strip_prefix("/").unwrap()).join(name);
        assert!(fs::read(&p).unwrap() == *content, "{name}");
    }
}

#[test]
fn failures_back_off_and_notify_once_per_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(&tmp.path().join("server"), |c| {
        c.allow_signup = true;
        c.plans = vec![haven_server::config::PlanConfig {
            name: "tiny".into(),
            quota: "1 MB".into(),
            selectable: true,
            quota_bytes: 0,
        }];
        c.default_plan = Some("tiny".into());
    });
    let dev = Device::new(
        Path::new(BIN),
        &tmp.path().join("dev"),
        &server.url(),
        "correct horse battery",
    );
    dev.signup("full@example.org", "d");
    let home = home_with(tmp.path(), &[("Documents/big.bin", noise(3 << 20, 1))]);
    fs::write(dev.config_dir.join("config.toml"), "partial = false\n").unwrap();
    let cond = tmp.path().join("conditions.json");
    conditions(&cond, true, true, false);
    let sink = tmp.path().join("notifications.jsonl");
    let _agent = start(
        &dev,
        &home,
        &cond,
        &[("HAVEN_NOTIFY_FILE", sink.to_str().unwrap())],
    );
    wait_for("three failures", 30, || {
        agent_state(&dev)["agent"]["failures"].as_u64().unwrap_or(0) >= 3
    });
    std::thread::sleep(Duration::from_secs(2));
    let st = agent_state(&dev)["agent"].clone();
    let failures = st["failures"].as_u64().unwrap();
    // Without backoff, a 100 ms check would have tried about 30 times.
    assert!(failures <= 7, "backoff doubles the wait: {st}");
    // Between retries it backs off; a retry may be running right now.
    assert!(
        st["state"] == "backing off" || st["state"] == "backing up",
        "{st}"
    );
    assert!(st["backoff_until"].as_i64().is_some(), "{st}");
    let lines = fs::read_to_string(&sink).unwrap();
    let notes: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        notes.len(),
        1,
        "one notification per reason per day: {notes:?}"
    );
    assert_eq!(notes[0]["summary"], "Backup failed");
    let body = notes[0]["body"].as_str().unwrap();
    assert!(
        body.starts_with("Not enough storage — 3.2 MB needed, 1.0 MB free. Switch off Documents"),
        "{body}"
    );
    // The attempts went to the server's history.
    let status = dev.json(&["status", "--json"]);
    assert_eq!(status["last_failure"]["code"], "quota_exceeded", "{status}");
}

#[test]
fn a_device_without_a_recent_backup_warns_once() {
    let (tmp, server, dev) = signed_up(Path::new(BIN), "stale@example.org");
    let home = home_with(tmp.path(), &[("Documents/a.txt", text(1000, 1))]);
    let out = dev.backup_received_ago(&server, &home, 4 * 86_400);
    assert!(out.status.success());
    let cond = tmp.path().join("conditions.json");
    conditions(&cond, false, true, false);
    let sink = tmp.path().join("notifications.jsonl");
    let _agent = start(
        &dev,
        &home,
        &cond,
        &[("HAVEN_NOTIFY_FILE", sink.to_str().unwrap())],
    );
    wait_for("the warning", 20, || sink.exists());
    std::thread::sleep(Duration::from_secs(1));
    let lines = fs::read_to_string(&sink).unwrap();
    assert_eq!(lines.lines().count(), 1, "{lines}");
    assert!(lines.contains("not been backed up for 4 days"), "{lines}");
}

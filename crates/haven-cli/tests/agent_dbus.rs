//! The agent's system sources for real: a private `dbus-daemon` on which
//! this test serves mock logind, NetworkManager and notification services,
//! flipping their properties, and recorded sysfs trees for power.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use haven_testkit::signed_up;
use haven_testkit::tree::text;
use zbus::zvariant::OwnedValue;

const BIN: &str = env!("CARGO_BIN_EXE_haven");

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Session {
    locked: Arc<AtomicBool>,
    idle: Arc<AtomicBool>,
}

#[zbus::interface(name = "org.freedesktop.login1.Session")]
impl Session {
    #[zbus(property)]
    fn locked_hint(&self) -> bool {
        self.locked.load(Ordering::SeqCst)
    }
    #[zbus(property)]
    fn idle_hint(&self) -> bool {
        self.idle.load(Ordering::SeqCst)
    }
}

struct NetworkManager {
    metered: Arc<AtomicU32>,
}

#[zbus::interface(name = "org.freedesktop.NetworkManager")]
impl NetworkManager {
    #[zbus(property)]
    fn metered(&self) -> u32 {
        self.metered.load(Ordering::SeqCst)
    }
    #[zbus(property)]
    fn primary_connection_type(&self) -> String {
        "802-11-wireless".into()
    }
}

struct Notifications {
    seen: Arc<Mutex<Vec<(String, String)>>>,
}

#[zbus::interface(name = "org.freedesktop.Notifications")]
impl Notifications {
    #[allow(clippy::too_many_arguments)]
    fn notify(
        &self,
        _app_name: &str,
        _replaces_id: u32,
        _app_icon: &str,
        summary: &str,
        body: &str,
        _actions: Vec<String>,
        _hints: HashMap<String, OwnedValue>,
        _expire_timeout: i32,
    ) -> u32 {
        let mut seen = self.seen.lock().unwrap();
        seen.push((summary.to_string(), body.to_string()));
        seen.len() as u32
    }
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_agent_reads_logind_networkmanager_and_sysfs_and_notifies_over_dbus() {
    let (tmp, server, dev) = signed_up(Path::new(BIN), "dbus@example.org");
    let home = tmp.path().join("home");
    fs::create_dir_all(home.join("Documents")).unwrap();
    fs::write(home.join("Documents/a.txt"), text(5000, 1)).unwrap();

    // One private bus stands in for both the system and the session bus.
    let mut daemon = Command::new("dbus-daemon")
        .args(["--session", "--nofork", "--print-address=1"])
        .arg(format!(
            "--address=unix:path={}",
            tmp.path().join("bus").display()
        ))
        .stdout(Stdio::piped())
        .spawn()
        .expect("dbus-daemon (Debian package dbus-daemon) is needed for this test");
    let mut line = String::new();
    BufReader::new(daemon.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _daemon = Kill(daemon);
    let address = line.trim().to_string();

    let locked = Arc::new(AtomicBool::new(false));
    let idle = Arc::new(AtomicBool::new(false));
    let metered = Arc::new(AtomicU32::new(1));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let _login = zbus::blocking::connection::Builder::address(address.as_str())
        .unwrap()
        .name("org.freedesktop.login1")
        .unwrap()
        .serve_at(
            "/org/freedesktop/login1/session/auto",
            Session {
                locked: locked.clone(),
                idle: idle.clone(),
            },
        )
        .unwrap()
        .build()
        .unwrap();
    let _nm = zbus::blocking::connection::Builder::address(address.as_str())
        .unwrap()
        .name("org.freedesktop.NetworkManager")
        .unwrap()
        .serve_at(
            "/org/freedesktop/NetworkManager",
            NetworkManager {
                metered: metered.clone(),
            },
        )
        .unwrap()
        .build()
        .unwrap();
    let _notes = zbus::blocking::connection::Builder::address(address.as_str())
        .unwrap()
        .name("org.freedesktop.Notifications")
        .unwrap()
        .serve_at(
            "/org/freedesktop/Notifications",
            Notifications { seen: seen.clone() },
        )
        .unwrap()
        .build()
        .unwrap();

    // A laptop on battery, recorded from sysfs.
    let sys = tmp.path().join("power_supply");
    for (dir, files) in [
        ("AC", vec![("type", "Mains"), ("online", "0")]),
        ("BAT0", vec![("type", "Battery"), ("status", "Discharging")]),
    ] {
        fs::create_dir_all(sys.join(dir)).unwrap();
        for (f, v) in files {
            fs::write(sys.join(dir).join(f), format!("{v}\n")).unwrap();
        }
    }
    // Backed up 4 days ago: the agent warns over D-Bus.
    let out = dev.backup_received_ago(&server, &home, 4 * 86_400);
    assert!(out.status.success());

    let _agent = Kill(
        Command::new(BIN)
            .args(["agent", "--interval", "1h", "--check-every", "100ms"])
            .env("HAVEN_CONFIG_DIR", &dev.config_dir)
            .env("HAVEN_INSECURE_ALLOW_WEAK_KDF", "1")
            .env("HOME", &home)
            .env("HAVEN_POWER_SUPPLY_DIR", &sys)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &address)
            .env("DBUS_SESSION_BUS_ADDRESS", &address)
            .env_remove("HAVEN_NOTIFY_FILE")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let reason = || {
        dev.json(&["agent", "status", "--json"])["agent"]["reason"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let count = || {
        dev.json(&["backups", "list", "--json"])
            .as_array()
            .unwrap()
            .len()
    };
    wait_for("the battery to block", 20, || reason().contains("battery"));
    wait_for("the stale warning over D-Bus", 20, || {
        !seen.lock().unwrap().is_empty()
    });
    {
        let s = seen.lock().unwrap();
        assert_eq!(s[0].0, "No recent backup");
        assert!(s[0].1.contains("4 days"), "{s:?}");
    }

    fs::write(sys.join("AC/online"), "1\n").unwrap();
    wait_for("logind to block (user active)", 20, || {
        reason().contains("in use")
    });
    locked.store(true, Ordering::SeqCst);
    wait_for("NetworkManager to block (metered)", 20, || {
        reason().contains("metered")
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(count(), 1, "no backup while metered");
    metered.store(4, Ordering::SeqCst); // guessed not metered
    wait_for("the backup", 30, || count() == 2);
    assert_eq!(seen.lock().unwrap().len(), 1, "the warning came once");
}

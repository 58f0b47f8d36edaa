//! Test support (dev-only): a real `haven-server` on a loopback port, a
//! runner for the real `haven` binary, tree generators and a bit-for-bit
//! tree comparison that includes metadata.
#![allow(clippy::unwrap_used)]

pub mod proxy;
pub mod tls;
pub mod tree;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use haven_server::Config;

/// A running server: the real HTTP server on 127.0.0.1, in its own thread
/// and Tokio runtime, with cheap KDF parameters so tests stay fast.
pub struct TestServer {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub config: Config,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server with open sign-up.
    pub fn start(data_dir: &Path) -> Self {
        Self::start_with(data_dir, |c| c.allow_signup = true)
    }

    /// Starts a server after `tweak` adjusted its config.
    pub fn start_with(data_dir: &Path, tweak: impl FnOnce(&mut Config)) -> Self {
        capture_server_log();
        let mut config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: data_dir.to_path_buf(),
            kdf_memory_kib: 256,
            kdf_iterations: 1,
            // Tests keep every backup unless they test retention.
            keep_last: 1000,
            // Tests move the server's clock with `advance_clock`.
            clock: haven_store_clock(),
            ..Config::default()
        };
        tweak(&mut config);
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let c = config.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let bound = haven_server::bind(c).await.unwrap();
                addr_tx.send(bound.addr).unwrap();
                bound
                    .serve(async {
                        let _ = stop_rx.await;
                    })
                    .await
                    .unwrap();
            });
        });
        let addr = addr_rx.recv().unwrap();
        TestServer {
            addr,
            data_dir: data_dir.to_path_buf(),
            config,
            shutdown: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Stops the server, deletes its database, rebuilds it with `reindex`
    /// and starts the server again at the same address (devices know the
    /// server by it).
    pub fn lose_database_and_reindex(self) -> (Self, haven_server::journal::ReindexReport) {
        let config = self.config.clone();
        let data = self.data_dir.clone();
        let addr = self.addr;
        drop(self);
        for f in ["haven.db", "haven.db-wal", "haven.db-shm"] {
            let _ = std::fs::remove_file(data.join(f));
        }
        let rt = tokio::runtime::Runtime::new().unwrap();
        let report = rt.block_on(haven_server::reindex(&config)).unwrap();
        drop(rt);
        let server = Self::start_with(&data, |c| {
            *c = config;
            c.listen = addr;
        });
        (server, report)
    }

    /// `http://127.0.0.1:PORT`, or `https://localhost:PORT` when the
    /// server serves TLS (the test certificates name `localhost`).
    pub fn url(&self) -> String {
        if self.config.tls_cert.is_some() {
            format!("https://localhost:{}", self.addr.port())
        } else {
            format!("http://{}", self.addr)
        }
    }

    /// Moves the server's clock by `secs` (negative: back). Devices keep
    /// the real time: the server alone decides retention and expiry.
    pub fn advance_clock(&self, secs: i64) {
        self.config.clock.advance(secs);
    }

    /// Now by the server's clock.
    pub fn now(&self) -> i64 {
        self.config.clock.now()
    }

    /// Creates an invite through the server library (what `haven-server
    /// user invite` does), with the server running.
    pub fn invite(&self, email: Option<&str>) -> String {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(haven_server::create_invite(&self.config, email, None))
            .unwrap()
    }
}

fn haven_store_clock() -> haven_server::config::Clock {
    haven_server::config::Clock::movable()
}

/// Sends the server's log (warnings and errors; `HAVEN_LOG` sets the
/// filter) through the test harness's capture, so a failing test shows
/// what the server said, and a passing one stays quiet. The server's
/// threads are spawned from the test's, so they inherit its capture.
fn capture_server_log() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HAVEN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Already set by an earlier server in this test binary: fine.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One device: a state directory and the password, driving the real
/// `haven` binary.
pub struct Device {
    pub bin: PathBuf,
    pub config_dir: PathBuf,
    pub password: String,
    pub server: String,
}

impl Device {
    pub fn new(bin: &Path, config_dir: &Path, server: &str, password: &str) -> Self {
        Device {
            bin: bin.to_path_buf(),
            config_dir: config_dir.to_path_buf(),
            password: password.into(),
            server: server.into(),
        }
    }

    /// Runs `haven ARGS` with this device's environment; stdin is empty.
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_env(args, &[])
    }

    /// Runs with extra environment variables (an empty value removes one).
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .env("HAVEN_CONFIG_DIR", &self.config_dir)
            .env("HAVEN_PASSWORD", &self.password)
            .env("HAVEN_INSECURE_ALLOW_WEAK_KDF", "1")
            .env_remove("HAVEN_SERVER")
            .stdin(std::process::Stdio::null());
        for (k, v) in env {
            if v.is_empty() {
                cmd.env_remove(k);
            } else {
                cmd.env(k, v);
            }
        }
        cmd.output().unwrap()
    }

    /// Backs up `home` (as `$HOME`, so its default selection) as if the
    /// time were `at` (`HAVEN_BACKUP_TIME`).
    pub fn backup_at(&self, home: &Path, at: std::time::SystemTime) -> Output {
        let at = humantime::format_rfc3339_seconds(at).to_string();
        self.run_env(
            &["backup", "--json"],
            &[("HOME", home.to_str().unwrap()), ("HAVEN_BACKUP_TIME", &at)],
        )
    }

    /// Backs up `home` (as `$HOME`) while the server's clock reads `secs`
    /// earlier than now: the server records the backup as received then.
    /// The device's own clock is untouched.
    pub fn backup_received_ago(&self, server: &TestServer, home: &Path, secs: i64) -> Output {
        server.advance_clock(-secs);
        let out = self.run_env(&["backup", "--json"], &[("HOME", home.to_str().unwrap())]);
        server.advance_clock(secs);
        out
    }

    /// Runs and expects success; returns stdout parsed as JSON.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "haven {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "haven {args:?}: not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Runs and expects failure with a JSON error; returns its code.
    pub fn error_code(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "haven {args:?} unexpectedly succeeded"
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "haven {args:?}: error is not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        let code = v["error"]["code"].as_str().unwrap().to_string();
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
        assert!(v["error"]["fix"].is_array());
        code
    }

    pub fn signup(&self, email: &str, device: &str) -> serde_json::Value {
        self.json(&[
            "signup",
            "--server",
            &self.server,
            "--email",
            email,
            "--device",
            device,
            "--json",
        ])
    }

    pub fn login(&self, email: &str, device: &str) -> serde_json::Value {
        self.json(&[
            "login",
            "--server",
            &self.server,
            "--email",
            email,
            "--device",
            device,
            "--json",
        ])
    }

    /// The device token from the state directory.
    pub fn token(&self) -> String {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.config_dir.join("device.json")).unwrap())
                .unwrap();
        v["token"].as_str().unwrap().to_string()
    }

    /// The account master key (hex) from the state directory.
    pub fn master_key(&self) -> String {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.config_dir.join("device.json")).unwrap())
                .unwrap();
        v["master_key"].as_str().unwrap().to_string()
    }
}

/// A temp directory holding a running server (`server/`) and one device
/// (`dev/`, device name `d`) signed up as `email` with the password
/// "correct horse battery": the setup most end-to-end tests start from.
pub fn signed_up(bin: &Path, email: &str) -> (tempfile::TempDir, TestServer, Device) {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("server"));
    let dev = Device::new(
        bin,
        &tmp.path().join("dev"),
        &server.url(),
        "correct horse battery",
    );
    dev.signup(email, "d");
    (tmp, server, dev)
}

/// The `haven` binary next to the test executable (cargo builds it for the
/// integration tests of the crate that defines it).
pub fn haven_bin(env_path: &str) -> PathBuf {
    PathBuf::from(env_path)
}

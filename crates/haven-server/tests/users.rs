//! `haven-server user add / list / set-plan` on the real binary, and the
//! plan an invite carries reaching the account that redeems it.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use haven_client::account;
use haven_client::profile::ConfigDir;

use common::SERVER;

const CONFIG: &str = r#"
default_plan = "free"
kdf_memory_kib = 256
kdf_iterations = 1
[[plans]]
name = "free"
quota = "5 GB"
[[plans]]
name = "family"
quota = "200 GB"
selectable = false
"#;

fn server(args: &[&str], config: &Path, data: &Path) -> Output {
    Command::new(SERVER)
        .args(args)
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap()
}

fn users(config: &Path, data: &Path) -> serde_json::Value {
    let out = server(&["user", "list", "--json"], config, data);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn operators_add_users_on_a_plan_list_them_and_change_their_plan() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("server.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let data = tmp.path().join("data");

    let out = server(
        &["user", "add", "gran@example.org", "--plan", "family"],
        &config,
        &data,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let code = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(String::from_utf8_lossy(&out.stderr).contains("haven signup"));
    let bad = server(
        &["user", "add", "x@example.org", "--plan", "gold"],
        &config,
        &data,
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no plan \"gold\""));

    let config_arg = config.to_string_lossy().into_owned();
    let (mut child, url) = common::serve(&data, &["--config", &config_arg]);
    // SAFETY: the test sets this before any thread reads it.
    unsafe { std::env::set_var("HAVEN_INSECURE_ALLOW_WEAK_KDF", "1") };
    let dir = ConfigDir::at(tmp.path().join("dev"));
    let signed = account::signup(
        &dir,
        &url,
        "gran@example.org",
        "correct horse battery",
        "tablet",
        Some(&code),
        &Default::default(),
    );
    let _ = child.kill();
    let _ = child.wait();
    signed.unwrap();

    let list = users(&config, &data);
    assert_eq!(list[0]["email"], "gran@example.org");
    assert_eq!(list[0]["plan"], "family", "the invite's plan");
    assert_eq!(list[0]["quota"], 200_000_000_000u64);
    assert_eq!(list[0]["devices"], 1);

    let out = server(
        &["user", "set-plan", "gran@example.org", "free"],
        &config,
        &data,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(users(&config, &data)[0]["plan"], "free");
    let out = server(
        &["user", "set-plan", "nobody@example.org", "free"],
        &config,
        &data,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no account"));
}

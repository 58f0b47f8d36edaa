//! The console end to end in real Chromium (Debian's `chromium`, driven by
//! `playwright-core` from npm; `.ci/run` installs both): sign in with the
//! password, the storage figures match `haven storage --json`, a category
//! switched off in the page is what `haven categories --json` reports and
//! the next backup leaves it out, deleting a backup frees what the page
//! said, and a one-time link signs in once. Screenshots of every page go
//! to `target/console-screenshots`.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use haven_testkit::tree::{noise, text};
use haven_testkit::{Device, TestServer};

const BIN: &str = env!("CARGO_BIN_EXE_haven");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn the_console_in_chromium() {
    let web = repo().join("web");
    assert!(
        web.join("node_modules/playwright-core").exists(),
        "run `npm ci --prefix web` first (.ci/run does)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("server"));
    let url = server.url();
    let dev = Device::new(
        Path::new(BIN),
        &tmp.path().join("dev"),
        &url,
        "correct horse battery",
    );
    dev.signup("browser@example.org", "laptop");
    let home = tmp.path().join("home");
    fs::create_dir_all(home.join("Documents")).unwrap();
    fs::create_dir_all(home.join("Pictures")).unwrap();
    fs::write(home.join("Documents/report.txt"), text(40_000, 1)).unwrap();
    fs::write(home.join("Pictures/beach.jpg"), noise(400_000, 2)).unwrap();
    let env = [("HOME", home.to_str().unwrap())];
    assert!(dev.run_env(&["backup", "--json"], &env).status.success());
    fs::write(home.join("Documents/notes.txt"), text(25_000, 3)).unwrap();
    fs::write(home.join("Pictures/sunset.jpg"), noise(300_000, 4)).unwrap();
    assert!(dev.run_env(&["backup", "--json"], &env).status.success());
    // Something new for the next backup, in Photos.
    fs::write(home.join("Pictures/new.jpg"), noise(200_000, 5)).unwrap();
    let scan = dev.run_env(&["categories", "--json"], &env);
    assert!(scan.status.success());

    let usage = dev.json(&["storage", "--json"]);
    let link = dev.json(&["console", "--json"]);
    let shots = repo().join("target/console-screenshots");
    let out = Command::new("node")
        .arg("e2e/console.mjs")
        .current_dir(&web)
        .env("HAVEN_URL", &url)
        .env("HAVEN_EMAIL", "browser@example.org")
        .env("HAVEN_PASSWORD", "correct horse battery")
        .env("HAVEN_DEVICE", "laptop")
        .env("HAVEN_LINK", link["url"].as_str().unwrap())
        .env("HAVEN_SCREENSHOTS", &shots)
        .output()
        .expect("node is needed for this test");
    assert!(
        out.status.success(),
        "the browser run failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    assert_eq!(
        r["used"], usage["used"],
        "the page shows haven storage's figures"
    );
    assert_eq!(
        r["external_requests"],
        serde_json::json!([]),
        "no request leaves the server"
    );
    assert_eq!(
        r["csp_violations"],
        serde_json::json!([]),
        "the console works within its Content-Security-Policy"
    );
    assert_eq!(r["photos_before"], true);
    assert_eq!(r["photos_after"], false);
    let cats = dev.json(&["categories", "--json"]);
    let photos = cats
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "Photos")
        .unwrap();
    assert_eq!(photos["enabled"], false, "the page's switch is the CLI's");

    let after = dev.json(&["storage", "--json"]);
    let freed = r["freed"].as_u64().unwrap();
    assert!(freed > 0);
    assert_eq!(
        usage["used"].as_u64().unwrap() - after["used"].as_u64().unwrap(),
        freed,
        "deleting in the page freed what it said"
    );
    let next = dev.run_env(&["backup", "--json"], &env);
    let next: serde_json::Value = serde_json::from_slice(&next.stdout).unwrap();
    assert_eq!(next["disabled_categories"][0], "Photos");
    assert_eq!(
        next["files"], 2,
        "the next backup leaves Photos out: {next}"
    );

    assert_eq!(r["link_first"], true, "the link signs in");
    assert_eq!(r["link_second_status"], 410, "and never twice");
    assert!(
        r["link_second_text"]
            .as_str()
            .unwrap()
            .contains("already used")
    );
    for name in [
        "signin",
        "storage",
        "devices",
        "device",
        "confirm-delete",
        "history",
        "admin",
        "storage-phone",
    ] {
        assert!(shots.join(format!("{name}.png")).exists(), "{name}");
    }
}

//! `haven doctor`: the troubleshooting checklist in one command. Each check
//! is `ok`, `fail` (with what to do) or `info` (a fact that is not a
//! fault). Checks never stop at the first failure: the user gets the whole
//! picture.

use std::os::unix::fs::PermissionsExt;

use haven_proto::{Attempt, Health};
use serde::Serialize;

use crate::profile::ConfigDir;
use crate::{HttpRemote, Remote, VERSION, human_bytes};

/// Bytes sent to measure the upload rate.
const PROBE_BYTES: usize = 4 << 20;

/// One line of the checklist.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    /// `ok`, `fail` or `info`.
    pub status: String,
    pub detail: String,
    pub fix: Vec<String>,
}

fn check(name: &str, status: &str, detail: String, fix: Vec<String>) -> Check {
    Check {
        name: name.into(),
        status: status.into(),
        detail,
        fix,
    }
}

fn ok(name: &str, detail: String) -> Check {
    check(name, "ok", detail, Vec::new())
}

fn info(name: &str, detail: String) -> Check {
    check(name, "info", detail, Vec::new())
}

fn fail(name: &str, detail: String, fix: Vec<String>) -> Check {
    check(name, "fail", detail, fix)
}

fn error_check(name: &str, e: &crate::ClientError) -> Check {
    fail(name, e.body().message.clone(), e.body().fix.clone())
}

/// Runs every check.
pub fn run(dir: &ConfigDir) -> Vec<Check> {
    let mut out = Vec::new();
    let profile = match dir.profile() {
        Ok(p) => p,
        Err(e) => {
            out.push(error_check("signed in", &e));
            out.extend(local_state(dir));
            return out;
        }
    };
    let remote = match profile.remote() {
        Ok(r) => r,
        Err(e) => {
            out.push(error_check("signed in", &e));
            return out;
        }
    };
    out.push(ok(
        "signed in",
        format!(
            "{} as device {:?} on {}",
            profile.email, profile.device, profile.server
        ),
    ));
    match remote.probe() {
        Ok((health, rtt)) => {
            out.push(ok(
                "server reachable",
                format!(
                    "{} answers in {:.0} ms (Haven server {})",
                    profile.server,
                    rtt.as_secs_f64() * 1000.0,
                    health.version
                ),
            ));
            out.push(versions(&health));
        }
        Err(e) => {
            out.push(error_check("server reachable", &e));
            out.extend(local_state(dir));
            return out;
        }
    }
    let next_bytes = match remote.categories(None) {
        Ok(cats) => {
            let next: u64 = cats.iter().filter(|c| c.enabled).map(|c| c.new_bytes).sum();
            out.push(storage(&remote, next, &cats));
            Some(next)
        }
        Err(e) => {
            out.push(error_check("storage", &e));
            None
        }
    };
    match remote.measure_upload(PROBE_BYTES) {
        Ok(rate) => {
            let eta = next_bytes
                .filter(|b| *b > 0)
                .map(|b| {
                    format!(
                        "; the next backup (up to {}) takes about {}",
                        human_bytes(b),
                        humantime::format_duration(std::time::Duration::from_secs(
                            (b as f64 / rate).ceil() as u64
                        ))
                    )
                })
                .unwrap_or_default();
            out.push(ok(
                "upload speed",
                format!("{}/s measured{eta}", human_bytes(rate as u64)),
            ));
        }
        Err(e) => out.push(error_check("upload speed", &e)),
    }
    out.push(automatic(dir));
    match remote.attempts(Some(&profile.device), 20) {
        Ok(a) => out.push(last_backup(&a)),
        Err(e) => out.push(error_check("last backup", &e)),
    }
    match remote.snapshots(Some(&profile.device)) {
        Ok(list) => {
            let damaged: Vec<_> = list.iter().filter(|s| s.health != "ok").collect();
            out.push(if damaged.is_empty() {
                ok(
                    "backup health",
                    format!("{} backups, none damaged", list.len()),
                )
            } else {
                fail(
                    "backup health",
                    format!(
                        "{} of {} backups of this device reference data the server lost or found damaged",
                        damaged.len(),
                        list.len()
                    ),
                    vec![
                        "Run `haven backup`: it uploads again whatever this device still has, which repairs those backups.".into(),
                        format!("`haven backups show {}` lists the affected files.", &damaged[0].id[..8]),
                    ],
                )
            });
        }
        Err(e) => out.push(error_check("backup health", &e)),
    }
    out.extend(local_state(dir));
    out
}

fn automatic(dir: &ConfigDir) -> Check {
    use crate::agent::conditions::Source;
    let now = match Source::system().read() {
        Ok(c) => format!(
            "now: {}, {}, {}",
            if c.on_power { "on power" } else { "on battery" },
            if c.idle { "idle" } else { "in use" },
            if c.metered {
                "metered network"
            } else {
                "unmetered network"
            }
        ),
        Err(e) => format!("conditions unknown: {e}"),
    };
    match (crate::agent::running(dir), crate::agent::read_state(dir)) {
        (true, Some(s)) => info(
            "automatic backups",
            format!("the agent is {}: {}; {now}", s.state, s.reason),
        ),
        _ => check(
            "automatic backups",
            "info",
            format!("no agent runs for this device; {now}"),
            vec!["Start automatic backups with `haven agent install` (systemd user service) or `haven agent`.".into()],
        ),
    }
}

fn versions(h: &Health) -> Check {
    if haven_proto::units::version_less(VERSION, &h.min_client_version) {
        fail(
            "versions",
            format!(
                "this device runs Haven {VERSION}; the server needs {} or later",
                h.min_client_version
            ),
            vec![format!(
                "Update Haven to {} or later.",
                h.min_client_version
            )],
        )
    } else {
        ok(
            "versions",
            format!(
                "client {VERSION}, server {} (needs {} or later)",
                h.version, h.min_client_version
            ),
        )
    }
}

fn storage(remote: &HttpRemote, next: u64, cats: &[haven_proto::CategoryInfo]) -> Check {
    let u = match remote.usage() {
        Ok(u) => u,
        Err(e) => return error_check("storage", &e),
    };
    let Some(free) = u.free else {
        return ok(
            "storage",
            format!(
                "{} used, no quota; next backup up to {}",
                human_bytes(u.used),
                human_bytes(next)
            ),
        );
    };
    if next <= free {
        return ok(
            "storage",
            format!(
                "{} used of {}, {} free; the next backup needs up to {}",
                human_bytes(u.used),
                human_bytes(u.quota.unwrap_or(0)),
                human_bytes(free),
                human_bytes(next)
            ),
        );
    }
    let mut fixes: Vec<(u64, String)> = cats
        .iter()
        .filter(|c| c.enabled && c.new_bytes > 0)
        .map(|c| {
            (
                c.new_bytes,
                format!(
                    "Switch off {} (saves {}): haven categories off {:?}",
                    c.name,
                    human_bytes(c.new_bytes),
                    c.name
                ),
            )
        })
        .collect();
    fixes.extend(crate::space::other_fixes(remote, u.quota));
    fail(
        "storage",
        format!(
            "the next backup needs up to {} and {} is free ({} used of {})",
            human_bytes(next),
            human_bytes(free),
            human_bytes(u.used),
            human_bytes(u.quota.unwrap_or(0))
        ),
        crate::space::rank(fixes, next - free),
    )
}

fn last_backup(attempts: &[Attempt]) -> Check {
    match attempts.first() {
        None => fail(
            "last backup",
            "this device has never backed up".into(),
            vec!["Run `haven backup`.".into()],
        ),
        Some(a) if a.result == "ok" => ok(
            "last backup",
            format!("{} succeeded ({})", a.finished, a.message),
        ),
        Some(a) if a.result == "paused" => info(
            "last backup",
            format!(
                "{} paused by the agent: it resumes when the conditions hold again",
                a.finished
            ),
        ),
        Some(a) if a.result == "partial" => fail(
            "last backup",
            format!("{} was partial: {}", a.finished, a.message),
            a.fix.clone(),
        ),
        Some(a) => fail(
            "last backup",
            format!(
                "{} failed ({}): {}",
                a.finished,
                a.code.as_deref().unwrap_or("error"),
                a.message
            ),
            a.fix.clone(),
        ),
    }
}

/// The state directory: permissions, cache, free disk.
fn local_state(dir: &ConfigDir) -> Vec<Check> {
    let mut out = Vec::new();
    let device = dir.path().join("device.json");
    match std::fs::metadata(&device) {
        Ok(m) if m.permissions().mode() & 0o077 != 0 => out.push(fail(
            "local state",
            format!(
                "{} (holds the account key) is readable by other users (mode {:o})",
                device.display(),
                m.permissions().mode() & 0o777
            ),
            vec![format!("chmod 600 {}", device.display())],
        )),
        Ok(_) => out.push(ok(
            "local state",
            format!(
                "{} is private; cache {}",
                dir.path().display(),
                human_bytes(dir_size(&dir.cache()))
            ),
        )),
        Err(_) => {}
    }
    match free_disk(dir.path()) {
        Some(free) if free < 100 << 20 => out.push(fail(
            "free disk",
            format!(
                "{} free where Haven keeps its state ({})",
                human_bytes(free),
                dir.path().display()
            ),
            vec!["Free some disk space: backups need room for their cache and restores for the files.".into()],
        )),
        Some(free) => out.push(ok("free disk", format!("{} free", human_bytes(free)))),
        None => {}
    }
    out
}

fn dir_size(p: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

fn free_disk(p: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (rc == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

/// True when no check failed.
pub fn healthy(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.status != "fail")
}

//! The agent: backs this device up on its own, like a phone does when it
//! is charging, locked and on Wi-Fi.
//!
//! Every `check_every` it looks at the last good backup (the newest
//! complete one the server has for this device) and at the conditions. A
//! backup is due when the last good one is older than `interval`; it
//! starts at the first check where the conditions hold. While it runs, a
//! watcher re-reads the conditions; when one stops holding, the backup
//! commits a checkpoint of what it finished and stops ("paused"). The next
//! run resumes from that checkpoint in the same upload session, so nothing
//! is sent twice.
//!
//! Failures are retried after a backoff that doubles (from `check_every`
//! up to 6 hours). The user is notified of a failure or a partial backup
//! at most once per reason per day, and once a day when no backup has
//! succeeded for 3 days. What the agent is doing and why is in
//! `agent.json` in the state directory (`haven agent status`).

pub mod conditions;
pub mod notify;

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use haven_proto::ErrorCode;
use serde::{Deserialize, Serialize};

use crate::backup::{BackupOptions, BackupReport};
use crate::profile::ConfigDir;
use crate::{ClientError, HttpRemote, Remote, Result, human_bytes};
use conditions::{Requirements, Source};

const DAY: i64 = 86_400;
/// Longest wait between retries of a failing backup.
const MAX_BACKOFF: Duration = Duration::from_secs(6 * 3600);
/// No successful backup for this long: the user is warned.
const STALE_AFTER: i64 = 3 * DAY;

/// How the agent runs.
pub struct AgentOptions {
    pub source: Source,
    pub requirements: Requirements,
    pub interval: Duration,
    pub check_every: Duration,
    /// Lower the CPU and I/O priority of the process.
    pub background_priority: bool,
    /// Stop after this many backup runs (tests); `None`: run until killed.
    pub max_runs: Option<u64>,
}

/// What `haven agent status` shows (`agent.json`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AgentState {
    pub pid: u32,
    /// `waiting`, `backing up`, `paused`, `backing off`.
    pub state: String,
    /// Why, in a sentence.
    pub reason: String,
    /// RFC 3339 time of this state.
    pub updated: String,
    /// RFC 3339 time of the newest complete backup of this device.
    pub last_success: Option<String>,
    /// RFC 3339 time the next backup is due.
    pub next_due: Option<String>,
    /// Failures in a row.
    pub failures: u32,
    /// Unix time before which no retry starts.
    pub backoff_until: Option<i64>,
    /// Per reason, the Unix time of the last notification.
    pub notified: BTreeMap<String, i64>,
    /// Backup runs started by this agent (completed, partial, paused or failed).
    pub runs: u64,
    /// Bytes those runs sent.
    pub uploaded_bytes: u64,
    /// Unix time the agent first ran here.
    #[serde(default)]
    pub since: i64,
}

fn now() -> i64 {
    crate::profile::unix_now()
}

fn rfc3339(secs: i64) -> String {
    humantime::format_rfc3339_seconds(
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64),
    )
    .to_string()
}

fn state_file(dir: &ConfigDir) -> PathBuf {
    dir.path().join("agent.json")
}

/// The agent's last written state, if an agent ever ran here.
pub fn read_state(dir: &ConfigDir) -> Option<AgentState> {
    serde_json::from_slice(&fs::read(state_file(dir)).ok()?).ok()
}

/// True if an agent holds the lock of this state directory now.
pub fn running(dir: &ConfigDir) -> bool {
    fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join("agent.lock"))
        .is_ok_and(|f| matches!(f.try_lock(), Err(fs::TryLockError::WouldBlock)))
}

fn write_state(dir: &ConfigDir, s: &AgentState) {
    let bytes = serde_json::to_vec_pretty(s).unwrap_or_default();
    if let Err(e) = crate::profile::write_private(&state_file(dir), &bytes) {
        tracing::warn!("cannot write the agent state: {e}");
    }
}

/// Lowest CPU priority and the idle I/O class, so the machine stays usable.
fn background_priority() {
    // SAFETY: plain syscalls on the calling process with constant arguments.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 19);
        const IOPRIO_CLASS_IDLE: libc::c_long = 3;
        const IOPRIO_WHO_PROCESS: libc::c_long = 1;
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            0 as libc::c_long,
            IOPRIO_CLASS_IDLE << 13,
        );
    }
}

/// Runs the agent until killed (or `max_runs`). One agent per state
/// directory: a second one gets `agent_running`.
pub fn run(
    dir: &ConfigDir,
    opts: &AgentOptions,
    backup_opts: &dyn Fn() -> Result<(BackupOptions, HttpRemote)>,
) -> Result<()> {
    dir.ensure()?;
    let lock_path = dir.path().join("agent.lock");
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| ClientError::io("open", &lock_path, e))?;
    if let Err(fs::TryLockError::WouldBlock) = lock.try_lock() {
        return Err(ClientError::new(
            ErrorCode::AgentRunning,
            "An agent already runs for this device.",
        )
        .fix("See what it does with `haven agent status`; stop it before starting another."));
    }
    if opts.background_priority {
        background_priority();
    }
    let profile = dir.profile()?;
    let mut st = read_state(dir).unwrap_or_default();
    st.pid = std::process::id();
    if st.since == 0 {
        st.since = now();
    }
    let mut runs = 0u64;
    loop {
        let remote = profile.remote()?;
        // The newest complete backup on the server, when the server
        // received it (a device's clock may be wrong; the server's decides
        // expiry); the last known one if the server cannot be asked.
        let last_good: Option<i64> = match remote.snapshots(Some(&profile.device)) {
            Ok(list) => list
                .iter()
                .find(|s| s.complete)
                .and_then(|s| {
                    humantime::parse_rfc3339(s.received.as_deref().unwrap_or(&s.time)).ok()
                })
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map(|d| d.as_secs() as i64),
            Err(_) => st
                .last_success
                .as_deref()
                .and_then(|t| humantime::parse_rfc3339(t).ok())
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map(|d| d.as_secs() as i64),
        };
        st.last_success = last_good.map(rfc3339);
        let due_at = last_good.map_or(0, |t| t + opts.interval.as_secs() as i64);
        st.next_due = Some(rfc3339(due_at.max(now())));
        if last_good.is_none_or(|t| now() - t >= STALE_AFTER) {
            let days = last_good.map(|t| (now() - t) / DAY);
            let body = match days {
                Some(d) => format!(
                    "This device has not been backed up for {d} days. `haven status` says what stopped it."
                ),
                None => "This device has never been backed up. `haven status` says what stops it."
                    .into(),
            };
            // A device that never backed up warns once the agent has
            // tried for as long.
            if last_good.is_some() || now() - st.since >= STALE_AFTER {
                notify_once(&mut st, "stale", "No recent backup", &body);
            }
        }
        let conditions = opts.source.read();
        let blocker = match &conditions {
            Ok(c) => c.blocker(&opts.requirements).map(String::from),
            Err(e) => {
                tracing::warn!("{e}; treating the conditions as not met");
                Some(format!("conditions unknown ({e})"))
            }
        };
        let backing_off = st.backoff_until.is_some_and(|t| now() < t);
        if now() < due_at {
            set(
                &mut st,
                "waiting",
                format!(
                    "the last backup is recent; next one due {}",
                    rfc3339(due_at)
                ),
            );
        } else if backing_off {
            let why = format!(
                "{} failures in a row; next try after {}",
                st.failures,
                rfc3339(st.backoff_until.unwrap_or_default())
            );
            set(&mut st, "backing off", why);
        } else if let Some(b) = blocker {
            if st.state == "paused" {
                let why = format!(
                    "the backup paused because {b}; it resumes where it stopped once that changes"
                );
                set(&mut st, "paused", why);
            } else {
                set(&mut st, "waiting", format!("a backup is due, but {b}"));
            }
        } else {
            set(
                &mut st,
                "backing up",
                "a backup is due and the conditions hold".into(),
            );
            write_state(dir, &st);
            runs += 1;
            st.runs += 1;
            let (outcome, sent) = run_backup(dir, &profile, opts, backup_opts);
            st.uploaded_bytes += sent;
            handle(&mut st, opts, outcome);
        }
        write_state(dir, &st);
        if opts.max_runs.is_some_and(|m| runs >= m) {
            return Ok(());
        }
        std::thread::sleep(opts.check_every);
    }
}

fn set(st: &mut AgentState, state: &str, reason: String) {
    if st.state != state || st.reason != reason {
        tracing::info!(state, %reason, "agent");
    }
    st.state = state.into();
    st.reason = reason;
    st.updated = rfc3339(now());
}

/// One backup with a watcher that pauses it when a condition stops holding.
fn run_backup(
    dir: &ConfigDir,
    profile: &crate::profile::Profile,
    opts: &AgentOptions,
    backup_opts: &dyn Fn() -> Result<(BackupOptions, HttpRemote)>,
) -> (Result<BackupReport>, u64) {
    let (mut bopts, remote) = match backup_opts() {
        Ok(x) => x,
        Err(e) => return (Err(e), 0),
    };
    let stop = Arc::new(AtomicBool::new(false));
    bopts.stop = Some(stop.clone());
    let done = AtomicBool::new(false);
    let poll = opts.check_every.min(Duration::from_secs(10));
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::SeqCst) {
                let ok = opts
                    .source
                    .read()
                    .ok()
                    .is_some_and(|c| c.blocker(&opts.requirements).is_none());
                if !ok {
                    tracing::info!("a condition stopped holding: pausing the backup");
                    stop.store(true, Ordering::SeqCst);
                    return;
                }
                std::thread::sleep(poll);
            }
        });
        let r = crate::backup::backup(dir, profile, &remote, &bopts, &|_| {});
        done.store(true, Ordering::SeqCst);
        // What the run sent, whatever its outcome (paused runs count too).
        (r, remote.bytes_sent())
    })
}

fn handle(st: &mut AgentState, opts: &AgentOptions, outcome: Result<BackupReport>) {
    match outcome {
        Ok(r) => {
            st.failures = 0;
            st.backoff_until = None;
            st.last_success = Some(rfc3339(now()));
            if r.partial {
                let left: Vec<String> = r
                    .skipped_categories
                    .iter()
                    .map(|c| format!("{} ({})", c.name, human_bytes(c.bytes)))
                    .collect();
                let body = format!(
                    "Not enough storage — {} needed, {} free. Left out: {}. {}",
                    human_bytes(r.needed.unwrap_or(0)),
                    human_bytes(r.available.unwrap_or(0)),
                    left.join(", "),
                    r.fix.first().cloned().unwrap_or_default()
                );
                notify_once(
                    st,
                    "quota_exceeded",
                    "Backup incomplete: not enough storage",
                    &body,
                );
                set(
                    st,
                    "waiting",
                    "the last backup was partial: storage is short".into(),
                );
            } else {
                set(st, "waiting", format!("backed up {} files", r.files));
            }
        }
        Err(e) if e.code() == ErrorCode::BackupPaused => {
            set(
                st,
                "paused",
                "a condition stopped holding; the backup resumes where it stopped".into(),
            );
        }
        Err(e) if e.code() == ErrorCode::BackupInProgress => {
            set(
                st,
                "waiting",
                "another backup of this device is running".into(),
            );
        }
        Err(e) => {
            st.failures += 1;
            let backoff = opts
                .check_every
                .saturating_mul(1 << st.failures.min(16).saturating_sub(1))
                .min(MAX_BACKOFF);
            st.backoff_until = Some(now() + backoff.as_secs().max(1) as i64);
            let body = failure_text(&e);
            notify_once(st, e.code().as_str(), "Backup failed", &body);
            set(
                st,
                "backing off",
                format!(
                    "the backup failed ({}): {}",
                    e.code().as_str(),
                    e.body().message
                ),
            );
        }
    }
}

/// "not enough storage — 2.1 GB needed, 0.4 GB free. Switch off Photos …"
fn failure_text(e: &ClientError) -> String {
    let b = e.body();
    let first = b.fix.first().cloned().unwrap_or_default();
    match (b.code, b.needed, b.available) {
        (ErrorCode::QuotaExceeded, Some(n), Some(a)) => format!(
            "Not enough storage — {} needed, {} free. {first}",
            human_bytes(n),
            human_bytes(a)
        ),
        _ => format!("{} {first}", b.message),
    }
}

/// Notifies unless the same reason was notified in the last day.
fn notify_once(st: &mut AgentState, reason: &str, summary: &str, body: &str) {
    if st.notified.get(reason).is_some_and(|t| now() - t < DAY) {
        return;
    }
    if let Err(e) = notify::send(summary, body) {
        tracing::warn!("cannot show a notification ({e}): {summary}: {body}");
    }
    // Counted either way: a machine without a notification service is not
    // retried (and logged) at every check.
    st.notified.insert(reason.to_string(), now());
}

/// The systemd user unit that keeps the agent running.
pub fn systemd_unit(haven: &std::path::Path) -> String {
    format!(
        "[Unit]\nDescription=Haven automatic backups\nAfter=network-online.target\n\n\
         [Service]\nExecStart={} agent\nRestart=on-failure\nRestartSec=60\nEnvironment=HAVEN_LOG=info\n\
         Nice=19\nIOSchedulingClass=idle\n\n[Install]\nWantedBy=default.target\n",
        haven.display()
    )
}

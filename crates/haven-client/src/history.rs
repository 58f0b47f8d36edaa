//! The device's backup history on the server: every attempt, success or
//! failure, with its reason. An attempt that cannot be sent (the server is
//! unreachable: the very failure it records) waits in the state directory
//! and goes with the next one.

use std::io::Write;
use std::path::PathBuf;
use std::time::SystemTime;

use haven_proto::{Attempt, ErrorCode};

use crate::backup::BackupReport;
use crate::profile::ConfigDir;
use crate::{Remote, Result};

/// Attempts kept while the server cannot be reached.
const MAX_PENDING: usize = 100;

fn pending_file(dir: &ConfigDir) -> PathBuf {
    dir.path().join("attempts-pending.jsonl")
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The attempt a backup's outcome describes; `None` for outcomes that are
/// not attempts (another backup was running).
pub fn attempt(started: SystemTime, result: &Result<BackupReport>) -> Option<Attempt> {
    let finished = rfc3339(SystemTime::now());
    let started = rfc3339(started);
    Some(match result {
        Ok(r) if r.partial => Attempt {
            device: String::new(),
            started,
            finished,
            result: "partial".into(),
            code: Some(ErrorCode::QuotaExceeded.as_str().into()),
            message: format!(
                "Backed up partially: not enough storage for {}.",
                r.skipped_categories
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            fix: r.fix.clone(),
            snapshot: Some(r.id.clone()),
            uploaded_bytes: r.uploaded_bytes,
            received: None,
        },
        Ok(r) => Attempt {
            device: String::new(),
            started,
            finished,
            result: "ok".into(),
            code: None,
            message: format!("Backed up {} files.", r.files),
            fix: Vec::new(),
            snapshot: Some(r.id.clone()),
            uploaded_bytes: r.uploaded_bytes,
            received: None,
        },
        Err(e)
            if matches!(
                e.code(),
                ErrorCode::BackupInProgress | ErrorCode::NotSignedIn
            ) =>
        {
            return None;
        }
        Err(e) if e.code() == ErrorCode::BackupPaused => Attempt {
            device: String::new(),
            started,
            finished,
            result: "paused".into(),
            code: Some(e.code().as_str().into()),
            message: e.body().message.clone(),
            fix: Vec::new(),
            snapshot: None,
            uploaded_bytes: 0,
            received: None,
        },
        Err(e) => Attempt {
            device: String::new(),
            started,
            finished,
            result: "failed".into(),
            code: Some(e.code().as_str().into()),
            message: e.body().message.clone(),
            fix: e.body().fix.clone(),
            snapshot: None,
            uploaded_bytes: 0,
            received: None,
        },
    })
}

/// Sends the attempt (and any that waited); keeps what cannot be sent.
pub fn record(
    dir: &ConfigDir,
    remote: &dyn Remote,
    started: SystemTime,
    result: &Result<BackupReport>,
) {
    let Some(now) = attempt(started, result) else {
        return;
    };
    let path = pending_file(dir);
    let mut queue: Vec<Attempt> = std::fs::read_to_string(&path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    queue.push(now);
    let mut left = Vec::new();
    for a in queue {
        if !left.is_empty() || remote.record_attempt(&a).is_err() {
            left.push(a);
        }
    }
    if left.is_empty() {
        let _ = std::fs::remove_file(&path);
        return;
    }
    let skip = left.len().saturating_sub(MAX_PENDING);
    let mut text = String::new();
    for a in &left[skip..] {
        if let Ok(l) = serde_json::to_string(a) {
            text.push_str(&l);
            text.push('\n');
        }
    }
    let written = std::fs::File::create(&path).and_then(|mut f| f.write_all(text.as_bytes()));
    if let Err(e) = written {
        tracing::warn!("cannot keep the backup history for later: {e}");
    }
}

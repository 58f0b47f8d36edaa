//! The limit on guessing: at most [`MAX_FAILURES`] failed proofs of a
//! password (sign-in, console sign-in, a destructive action's proof),
//! recovery key or invite per account and per address in
//! [`WINDOW_SECS`]; past it, `429 rate_limited` with `Retry-After`, and the
//! password is not even checked. Only failures count, so a school's first
//! morning (hundreds of sign-ups and sign-ins from one address) is never
//! limited, and the device that knows the password signs in again once
//! the window has passed.
//!
//! Failures are rows in the database, not counters in memory, so the
//! limit holds across restarts and across instances (invariant 12).

use std::net::IpAddr;

use haven_store::meta::AuthAttempt;

use crate::error::{ApiError, ApiResult};
use crate::state::SharedState;

/// Failures per account and per address…
pub const MAX_FAILURES: u32 = 20;
/// …in this many seconds.
pub const WINDOW_SECS: i64 = 15 * 60;

/// An attempt being checked: counted as a failure until it succeeds.
pub struct Guard {
    rows: Vec<i64>,
}

/// Refuses when the account (by email) or the address has failed
/// [`MAX_FAILURES`] times within the window; otherwise counts this attempt
/// as a failure, in the same transaction, until [`Guard::succeeded`]: a
/// burst of parallel guesses cannot all pass the count.
pub async fn check(
    state: &SharedState,
    email: Option<&str>,
    addr: Option<IpAddr>,
) -> ApiResult<Guard> {
    let mut keys = Vec::with_capacity(2);
    if let Some(e) = email {
        keys.push(format!("account:{e}"));
    }
    check_keys(state, keys, addr).await
}

/// [`check`] for a signed-in device proving its password: its failures
/// count for the device, not the account, so a thief with a stolen token
/// cannot lock the owner out of signing that device out.
pub async fn check_device(
    state: &SharedState,
    device_id: i64,
    addr: Option<IpAddr>,
) -> ApiResult<Guard> {
    check_keys(state, vec![format!("device:{device_id}")], addr).await
}

async fn check_keys(
    state: &SharedState,
    mut keys: Vec<String>,
    addr: Option<IpAddr>,
) -> ApiResult<Guard> {
    if let Some(a) = addr {
        keys.push(format!("addr:{}", canonical(a)));
    }
    let now = state.now();
    match state
        .meta
        .auth_attempt(&keys, now, now - WINDOW_SECS + 1, MAX_FAILURES)
        .await?
    {
        AuthAttempt::Counted(rows) => Ok(Guard { rows }),
        AuthAttempt::Limited { failures, oldest } => {
            let until = oldest + WINDOW_SECS;
            tracing::warn!(keys = ?keys, failures, "rate limited: too many failed attempts");
            Err(ApiError::rate_limited(
                failures,
                WINDOW_SECS / 60,
                (until - now).max(1) as u64,
            ))
        }
    }
}

impl Guard {
    /// The attempt succeeded: it is not a failure.
    pub async fn succeeded(&self, state: &SharedState) -> ApiResult<()> {
        state.meta.auth_attempt_succeeded(&self.rows).await?;
        Ok(())
    }
}

/// An IPv4 address mapped into IPv6 counts as itself; an IPv6 address
/// counts by its /64, which one machine usually has whole.
fn canonical(a: IpAddr) -> String {
    match a {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

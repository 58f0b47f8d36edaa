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

use crate::error::{ApiError, ApiResult};
use crate::state::SharedState;

/// Failures per account and per address…
pub const MAX_FAILURES: u32 = 20;
/// …in this many seconds.
pub const WINDOW_SECS: i64 = 15 * 60;

/// The keys a request's failures count under.
pub struct Guard {
    keys: Vec<String>,
}

/// Refuses when the account (by email) or the address has failed
/// [`MAX_FAILURES`] times within the window; otherwise the guard that
/// records this request's failure, if it fails.
pub async fn check(
    state: &SharedState,
    email: Option<&str>,
    addr: Option<IpAddr>,
) -> ApiResult<Guard> {
    let mut keys = Vec::with_capacity(2);
    if let Some(e) = email {
        keys.push(format!("account:{e}"));
    }
    if let Some(a) = addr {
        keys.push(format!("addr:{}", canonical(a)));
    }
    let now = state.now();
    let counts = state
        .meta
        .auth_failures(&keys, now - WINDOW_SECS + 1)
        .await?;
    for (key, (n, oldest)) in keys.iter().zip(&counts) {
        if *n >= MAX_FAILURES {
            let until = oldest.unwrap_or(now) + WINDOW_SECS;
            tracing::warn!(key = %key, failures = n, "rate limited: too many failed attempts");
            return Err(ApiError::rate_limited(
                *n,
                WINDOW_SECS / 60,
                (until - now).max(1) as u64,
            ));
        }
    }
    Ok(Guard { keys })
}

impl Guard {
    /// Counts a failure of this request.
    pub async fn failed(&self, state: &SharedState) -> ApiResult<()> {
        let now = state.now();
        state
            .meta
            .auth_failure_add(&self.keys, now, now - WINDOW_SECS)
            .await?;
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

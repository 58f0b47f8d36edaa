//! Which backups a device keeps, and expiry of devices that stopped
//! backing up.
//!
//! After each complete backup, a device keeps its newest `keep_last`
//! complete backups plus the newest one of each of the last `keep_weekly`
//! weeks (7-day windows counted back from now); the others are deleted.
//! Checkpoints are not counted: the next complete backup replaces them.

use std::collections::HashSet;

use haven_proto::ExpiryWarning;
use haven_store::StoreError;
use haven_store::meta::Device;

use crate::state::SharedState;

const DAY: i64 = 86_400;
/// Warnings start this many days before a device's backups expire.
pub const WARN_DAYS: i64 = 30;

/// The ids to delete: `snaps` are `(id, time)` of a device's complete
/// backups, newest first.
pub fn to_prune(
    keep_last: u32,
    keep_weekly: u32,
    now: i64,
    snaps: &[(String, i64)],
) -> Vec<String> {
    let mut keep: HashSet<&str> = snaps
        .iter()
        .take(keep_last as usize)
        .map(|(id, _)| id.as_str())
        .collect();
    let mut weeks = HashSet::new();
    for (id, time) in snaps {
        let week = (now - time).max(0) / (7 * DAY);
        if week < i64::from(keep_weekly) && weeks.insert(week) {
            keep.insert(id);
        }
    }
    snaps
        .iter()
        .filter(|(id, _)| !keep.contains(id.as_str()))
        .map(|(id, _)| id.clone())
        .collect()
}

/// Applies the retention policy to a device after the backup `just`
/// committed; returns the deleted ids. A backup's age counts from when the
/// server received it, by the server's clock: whatever time a device
/// claims, it can neither make its backups look old enough to be pruned
/// nor young enough to be kept. The backup just committed is never deleted.
pub async fn prune_device(
    state: &SharedState,
    account_id: i64,
    device_id: i64,
    just: &str,
) -> Result<Vec<String>, StoreError> {
    let mut snaps: Vec<(String, i64)> = state
        .meta
        .snapshots(account_id, Some(device_id))
        .await?
        .into_iter()
        .filter(|s| s.complete)
        .map(|s| (s.id, s.created))
        .collect();
    snaps.sort_by_key(|(_, t)| std::cmp::Reverse(*t));
    let c = &state.config;
    let mut doomed = to_prune(c.keep_last, c.keep_weekly, state.now(), &snaps);
    doomed.retain(|id| id != just);
    for id in &doomed {
        crate::journal::delete_snapshot(state, account_id, id).await?;
        tracing::info!(account_id, device_id, snapshot = %id, "pruned by the retention policy");
    }
    Ok(doomed)
}

/// When a device's backups expire, if it has any and expiry is on.
fn expires_at(expire_days: u32, d: &Device) -> Option<i64> {
    let last = d.last_backup?;
    (expire_days > 0).then(|| last + i64::from(expire_days) * DAY)
}

/// Devices whose backups expire within [`WARN_DAYS`].
pub fn expiring(expire_days: u32, now: i64, devices: &[Device]) -> Vec<ExpiryWarning> {
    devices
        .iter()
        .filter_map(|d| {
            let at = expires_at(expire_days, d)?;
            (at - now <= WARN_DAYS * DAY).then(|| ExpiryWarning {
                device: d.name.clone(),
                last_backup: crate::api::rfc3339(d.last_backup.unwrap_or_default()),
                expires: crate::api::rfc3339(at),
            })
        })
        .collect()
}

/// Deletes the backups of every device that has not backed up for
/// `expire_days` by the server's clock (when the server received its
/// newest backup, whatever the device's clock said); returns how many
/// backups were deleted.
pub async fn expire(state: &SharedState) -> Result<u64, StoreError> {
    if state.config.expire_days == 0 {
        return Ok(0);
    }
    let now = state.now();
    let cutoff = now - i64::from(state.config.expire_days) * DAY;
    let mut deleted = 0;
    for account in state.meta.accounts().await? {
        for d in state.meta.devices(account.id).await? {
            // The decision and the deletions use the same list: a backup
            // committed meanwhile is not in it, and is not deleted.
            let snaps = state.meta.snapshots(account.id, Some(d.id)).await?;
            let newest = snaps.iter().map(|s| s.created).max();
            if newest.is_none_or(|t| t > cutoff) {
                continue;
            }
            for s in snaps {
                crate::journal::delete_snapshot(state, account.id, &s.id).await?;
                deleted += 1;
            }
            tracing::warn!(account_id = account.id, device = %d.name, "backups expired: the device has not backed up for {} days", state.config.expire_days);
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snaps(days_ago: &[i64], now: i64) -> Vec<(String, i64)> {
        days_ago
            .iter()
            .map(|d| (format!("{d}"), now - d * DAY - 60))
            .collect()
    }

    #[test]
    fn keeps_the_last_three_and_one_a_week_for_a_month() {
        let now = 100 * 7 * DAY;
        // Daily backups for 40 days, newest first.
        let all: Vec<i64> = (0..40).collect();
        let doomed = to_prune(3, 4, now, &snaps(&all, now));
        let kept: Vec<i64> = all
            .iter()
            .copied()
            .filter(|d| !doomed.contains(&d.to_string()))
            .collect();
        // Days 0, 1, 2 (last three), then the newest of weeks 1, 2, 3
        // (days 7, 14, 21); week 0's newest is day 0.
        assert_eq!(kept, vec![0, 1, 2, 7, 14, 21]);
    }

    #[test]
    fn a_device_that_paused_keeps_its_last_backups() {
        let now = 100 * 7 * DAY;
        let doomed = to_prune(3, 4, now, &snaps(&[60, 61, 62, 63], now));
        assert_eq!(doomed, vec!["63".to_string()]);
        assert!(to_prune(3, 4, now, &snaps(&[0, 1], now)).is_empty());
    }

    #[test]
    fn expiry_warns_in_the_last_month() {
        let now = 1000 * DAY;
        let dev = |name: &str, days_ago: Option<i64>| Device {
            id: 1,
            account_id: 1,
            name: name.into(),
            created: 0,
            last_backup: days_ago.map(|d| now - d * DAY),
            ..Device::default()
        };
        let devices = [
            dev("fresh", Some(1)),
            dev("old", Some(160)),
            dev("never", None),
        ];
        let w = expiring(180, now, &devices);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].device, "old");
        assert!(expiring(0, now, &devices).is_empty(), "expiry off");
    }
}

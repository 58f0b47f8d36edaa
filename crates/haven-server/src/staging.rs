//! What unfinished resumable uploads may hold. A pack's parts are staged
//! in `uploads/` until the last one arrives; without a bound, a client
//! could send the first parts of many packs and never the rest, and park
//! any amount of data outside its quota and `max_store_bytes`.
//!
//! So staged bytes count from the first byte: before a part is written,
//! the account's staged files (each counted at its pack's full declared
//! size while a part of it is being written) plus this pack's size must
//! fit in what its quota leaves, plus [`SLACK`]; an account without a
//! quota may stage [`NO_QUOTA_CAP`]; and everything staged must fit in
//! what `max_store_bytes` leaves. Staged files idle for [`IDLE_SECS`] are
//! deleted by the maintenance job.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use haven_format::PackId;
use haven_format::pack::MAX_PACK_SIZE;

use crate::error::{ApiError, ApiResult};
use crate::state::SharedState;

/// What staged parts may hold beyond what the quota leaves: a part in
/// flight of an honest client whose quota is nearly used.
pub const SLACK: u64 = 16 << 20;
/// What an account without a quota may stage: two packs.
pub const NO_QUOTA_CAP: u64 = 2 * MAX_PACK_SIZE as u64;
/// A staged file not written to for this long is deleted.
pub const IDLE_SECS: u64 = 3600;

/// The packs whose parts are being written now, per account, with their
/// declared sizes.
#[derive(Default)]
pub struct InFlight(Mutex<HashMap<(i64, PackId), (u64, usize)>>);

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(i64, PackId), (u64, usize)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The directory of staged uploads.
pub fn dir(state: &SharedState) -> PathBuf {
    state.config.data_dir.join("uploads")
}

/// The staging file of a pack of an account.
pub fn path(state: &SharedState, account_id: i64, pack: &PackId) -> PathBuf {
    dir(state).join(format!("{account_id}-{}", pack.to_hex()))
}

/// Staged files: `(account, pack, size, seconds since last written)`.
fn staged(dir: &Path) -> Vec<(i64, PackId, u64, u64)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let (account, pack) = name.split_once('-')?;
            let meta = e.metadata().ok()?;
            let idle = meta
                .modified()
                .ok()
                .and_then(|m| m.elapsed().ok())
                .map_or(0, |d| d.as_secs());
            Some((
                account.parse().ok()?,
                PackId::from_hex(pack).ok()?,
                meta.len(),
                idle,
            ))
        })
        .collect()
}

/// Held while a part is written; counts the pack at its declared size.
pub struct Claim<'a> {
    inflight: &'a InFlight,
    key: (i64, PackId),
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut map = self.inflight.lock();
        if let Some(e) = map.get_mut(&self.key) {
            e.1 -= 1;
            if e.1 == 0 {
                map.remove(&self.key);
            }
        }
    }
}

/// Admits a part of `pack` (declared `total` bytes) of an account, or
/// refuses with `quota_exceeded` or `server_storage_full` before a byte
/// is written.
pub async fn admit<'a>(
    state: &'a SharedState,
    account_id: i64,
    pack: PackId,
    total: u64,
) -> ApiResult<Claim<'a>> {
    let allowance = match crate::api::quota(state, account_id).await? {
        Some(q) => {
            let used = state.meta.used(account_id).await?;
            q.saturating_sub(used) + SLACK
        }
        None => NO_QUOTA_CAP,
    };
    let free = state.objects.free_bytes();
    let d = dir(state);
    let files = tokio::task::spawn_blocking(move || staged(&d))
        .await
        .unwrap_or_default();
    let mut map = state.uploads_in_flight.lock();
    // A pack being written counts at its declared size, others at what
    // they hold; this one at its declared size.
    let count = |only: Option<i64>| -> u64 {
        let on_disk: u64 = files
            .iter()
            .filter(|(a, p, _, _)| {
                only.is_none_or(|o| o == *a)
                    && !map.contains_key(&(*a, *p))
                    && (*a, *p) != (account_id, pack)
            })
            .map(|(_, _, len, _)| *len)
            .sum();
        let writing: u64 = map
            .iter()
            .filter(|((a, p), _)| only.is_none_or(|o| o == *a) && (*a, *p) != (account_id, pack))
            .map(|(_, (t, _))| *t)
            .sum();
        on_disk + writing
    };
    let mine = count(Some(account_id));
    if mine + total > allowance {
        tracing::warn!(
            account_id,
            staged = mine,
            part_of = total,
            allowance,
            "upload refused: staged parts would exceed what the quota leaves"
        );
        return Err(ApiError::quota_exceeded(
            (mine + total).saturating_sub(allowance),
            allowance.saturating_sub(mine),
        ));
    }
    if let Some(free) = free
        && count(None) + total > free
    {
        tracing::error!(
            free,
            "upload refused: staged uploads would pass max_store_bytes"
        );
        return Err(haven_store::StoreError::Io(std::io::Error::from(
            std::io::ErrorKind::StorageFull,
        ))
        .into());
    }
    let e = map.entry((account_id, pack)).or_insert((total, 0));
    e.0 = e.0.max(total);
    e.1 += 1;
    Ok(Claim {
        inflight: &state.uploads_in_flight,
        key: (account_id, pack),
    })
}

/// Deletes staged files idle for [`IDLE_SECS`] and not being written;
/// returns how many files and bytes went.
pub async fn sweep(state: &SharedState) -> (u64, u64) {
    let d = dir(state);
    let files = tokio::task::spawn_blocking(move || staged(&d))
        .await
        .unwrap_or_default();
    let (mut n, mut freed) = (0, 0);
    for (account, pack, len, idle) in files {
        if idle < IDLE_SECS
            || state
                .uploads_in_flight
                .lock()
                .contains_key(&(account, pack))
        {
            continue;
        }
        if tokio::fs::remove_file(path(state, account, &pack))
            .await
            .is_ok()
        {
            tracing::info!(account_id = account, pack = %pack, bytes = len, "an upload idle for an hour was dropped");
            n += 1;
            freed += len;
        }
    }
    (n, freed)
}

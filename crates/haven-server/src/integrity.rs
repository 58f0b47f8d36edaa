//! Scrub and GC: the two maintenance passes over the stored packs.
//!
//! **Scrub** re-reads every indexed pack and re-hashes each blob's
//! ciphertext against the hash taken at upload. Blobs that no longer match
//! are marked damaged, blobs whose pack or range is gone missing: they are
//! quarantined, never deleted. Backups that reference them are `damaged`;
//! the next backup of a device is told which blobs those are and uploads
//! them again from the device's files, which heals every backup at once.
//!
//! **GC** removes, account by account, index entries of blobs that no
//! backup and no open upload session references (in one transaction that
//! commits serialize with: see docs/CONCURRENCY.md), deletes packs left
//! empty, and rewrites packs whose live blobs fill less than half of them.
//! Both are safe to run while the server serves requests, and while each
//! other runs.

use std::time::Instant;

use haven_format::PackId;
use haven_format::blob::BlobKind;
use haven_format::pack::{PackEntry, PackWriter};
use haven_store::StoreError;
use haven_store::meta::{BLOB_DAMAGED, BLOB_MISSING, BLOB_OK, PackBlob, PackRow, hash_matches};
use serde::Serialize;

use crate::state::SharedState;

/// The object key of a pack.
pub fn object_key(account_id: i64, pack: &PackId) -> String {
    let hex = pack.to_hex();
    format!("packs/{account_id}/{}/{hex}", &hex[..2])
}

/// The index entries of a parsed pack, with the BLAKE3 hash of each
/// blob's ciphertext (what scrub checks later). Entries whose range lies
/// outside `bytes` are left out.
pub fn pack_blobs(bytes: &[u8], entries: &[PackEntry]) -> Vec<PackBlob> {
    entries
        .iter()
        .filter_map(|e| {
            let range = e.offset as usize..e.offset as usize + e.length as usize;
            Some(PackBlob {
                id: e.id,
                kind: e.kind,
                offset: e.offset,
                length: e.length,
                hash: *blake3::hash(bytes.get(range)?).as_bytes(),
            })
        })
        .collect()
}

/// What a scrub found.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct ScrubReport {
    pub packs: u64,
    /// Blobs checked.
    pub checked: u64,
    /// Blobs whose bytes no longer match.
    pub damaged: u64,
    /// Blobs whose pack or range is gone.
    pub missing: u64,
    /// Blobs found damaged before and intact now.
    pub recovered: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Backups that reference a damaged or missing blob.
    pub damaged_backups: u64,
    pub duration_secs: f64,
}

/// Checks every stored blob; see the module doc.
pub async fn scrub(state: &SharedState) -> Result<ScrubReport, StoreError> {
    let started = Instant::now();
    let started_at = state.now();
    let mut r = ScrubReport::default();
    for pack in state.meta.packs_all().await? {
        let blobs = state.meta.pack_blobs(pack.account_id, pack.id).await?;
        if blobs.is_empty() {
            continue;
        }
        r.packs += 1;
        let data = match state.objects.get(&pack.object_key).await {
            Ok(d) => Some(d),
            Err(StoreError::NotFound) => None,
            Err(e) => return Err(e),
        };
        r.bytes += data.as_ref().map_or(0, |d| d.len() as u64);
        let mut states = Vec::with_capacity(blobs.len());
        for b in &blobs {
            let start = b.offset as usize;
            let end = start + b.length as usize;
            let verdict = match data.as_deref().and_then(|d| d.get(start..end)) {
                None => BLOB_MISSING,
                Some(bytes) if hash_matches(&b.hash, bytes) => BLOB_OK,
                Some(_) => BLOB_DAMAGED,
            };
            r.checked += 1;
            match verdict {
                BLOB_DAMAGED => r.damaged += 1,
                BLOB_MISSING => r.missing += 1,
                _ if b.state != BLOB_OK => r.recovered += 1,
                _ => {}
            }
            if verdict != b.state {
                states.push((b.id, verdict));
            }
        }
        if !states.is_empty() {
            tracing::warn!(pack = %pack.object_key, changed = states.len(), "scrub: blob states changed");
            state
                .meta
                .blobs_mark(pack.account_id, pack.id, &states)
                .await?;
        }
    }
    for account in state.meta.accounts().await? {
        r.damaged_backups += state
            .meta
            .snapshots(account.id, None)
            .await?
            .iter()
            .filter(|s| s.damaged > 0)
            .count() as u64;
    }
    r.duration_secs = started.elapsed().as_secs_f64();
    let report = serde_json::to_string(&r).unwrap_or_default();
    state
        .meta
        .job_record("scrub", started_at, state.now(), &report)
        .await?;
    Ok(r)
}

/// What a GC pass did.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct GcReport {
    pub sessions_expired: u64,
    /// Index entries of unreferenced blobs removed, and their stored size.
    pub blobs_removed: u64,
    pub bytes_removed: u64,
    pub packs_deleted: u64,
    pub packs_rewritten: u64,
    /// Staging files of uploads idle for an hour (removed).
    pub staging_removed: u64,
    pub duration_secs: f64,
}

/// Collects garbage; see the module doc.
pub async fn gc(state: &SharedState) -> Result<GcReport, StoreError> {
    let started = Instant::now();
    let started_at = state.now();
    let cutoff = started_at - i64::from(state.config.session_days) * 86_400;
    let mut r = GcReport::default();
    for account in state.meta.accounts().await? {
        let out = state.meta.gc_account(account.id, cutoff).await?;
        r.sessions_expired += out.sessions_expired;
        r.blobs_removed += out.blobs_removed;
        r.bytes_removed += out.bytes_removed;
        for key in &out.dead_objects {
            state.objects.delete(key).await?;
            r.packs_deleted += 1;
        }
        for p in &out.sparse {
            if rewrite(state, p).await? {
                r.packs_rewritten += 1;
            }
        }
    }
    r.staging_removed = crate::staging::sweep(state).await.0;
    r.duration_secs = started.elapsed().as_secs_f64();
    let report = serde_json::to_string(&r).unwrap_or_default();
    state
        .meta
        .job_record("gc", started_at, state.now(), &report)
        .await?;
    Ok(r)
}

/// Copies a sparse pack's intact live blobs into a new pack; the old one
/// is deleted once no index entry points into it (damaged blobs stay
/// where they are, quarantined).
async fn rewrite(state: &SharedState, p: &PackRow) -> Result<bool, StoreError> {
    let blobs = state.meta.pack_blobs(p.account_id, p.id).await?;
    let data = match state.objects.get(&p.object_key).await {
        Ok(d) => d,
        Err(StoreError::NotFound) => return Ok(false),
        Err(e) => return Err(e),
    };
    let mut w = PackWriter::new();
    let mut copied = 0;
    for b in blobs.iter().filter(|b| b.state == BLOB_OK) {
        let range = b.offset as usize..b.offset as usize + b.length as usize;
        let Some(bytes) = data.get(range) else {
            continue;
        };
        let Ok(kind) = BlobKind::from_u8(b.kind) else {
            continue;
        };
        if !hash_matches(&b.hash, bytes) {
            continue;
        }
        w.add(kind, b.id, bytes);
        copied += 1;
    }
    if copied == 0 {
        return Ok(false);
    }
    let (new_id, bytes, entries) = w.finish();
    let new_key = object_key(p.account_id, &new_id);
    let moved = pack_blobs(&bytes, &entries);
    let size = bytes.len() as u64;
    state.objects.put(&new_key, bytes).await?;
    let old_gone = state
        .meta
        .pack_rewritten(p.account_id, p.id, new_id, &new_key, size, &moved)
        .await?;
    if old_gone {
        state.objects.delete(&p.object_key).await?;
    }
    tracing::info!(old = %p.object_key, new = %new_key, blobs = copied, "pack rewritten");
    Ok(true)
}

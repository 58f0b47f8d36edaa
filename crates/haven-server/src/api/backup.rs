//! Devices, blobs, packs and snapshots.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use haven_format::BlobId;
use haven_proto::*;
use haven_store::StoreError;
use haven_store::meta::{NewSnapshot, SnapshotRow, hash_matches};
use serde::Deserialize;

use super::auth::Caller;
use super::{parse_rfc3339, rfc3339};
use crate::error::{ApiError, ApiResult};
use crate::state::SharedState;

fn check_ids(ids: &[BlobId]) -> ApiResult<()> {
    if ids.len() > MAX_IDS_PER_REQUEST {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::TooLarge,
            format!("At most {MAX_IDS_PER_REQUEST} ids fit in one request."),
        )
        .fix("Split the request."));
    }
    Ok(())
}

fn device_info(d: haven_store::meta::Device) -> DeviceInfo {
    DeviceInfo {
        id: d.id,
        name: d.name,
        created: rfc3339(d.created),
        last_backup: d.last_backup.map(rfc3339),
        last_seen: d.last_seen.map(rfc3339),
        signed_in: d.signed_in,
    }
}

/// `GET /v1/devices`.
pub async fn devices(
    State(state): State<SharedState>,
    caller: Caller,
) -> ApiResult<Json<Vec<DeviceInfo>>> {
    let devs = state.meta.devices(caller.account_id).await?;
    Ok(Json(devs.into_iter().map(device_info).collect()))
}

/// `DELETE /v1/devices/{name}` (password): signs the device out at once.
/// Its backups stay (they expire as any device's that stopped backing
/// up); the device can sign in again with the password.
pub async fn remove_device(
    State(state): State<SharedState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<DeviceInfo>> {
    caller.require_password()?;
    let device = super::device_id(&state, &caller, Some(&name)).await?;
    let n = super::auth::revoke(
        &state,
        caller.account_id,
        haven_store::meta::TokenScope::Device(device),
        "device_removed",
    )
    .await?;
    tracing::info!(account_id = caller.account_id, device_id = caller.device_id, addr = %caller.peer.text(), removed = %name, sign_ins = n, "device signed out");
    let d = state
        .meta
        .devices(caller.account_id)
        .await?
        .into_iter()
        .find(|d| d.id == device)
        .ok_or_else(|| ApiError::not_found("device"))?;
    Ok(Json(device_info(d)))
}

/// `POST /v1/blobs/missing`.
pub async fn missing(
    State(state): State<SharedState>,
    caller: Caller,
    Json(req): Json<MissingRequest>,
) -> ApiResult<Json<MissingResponse>> {
    check_ids(&req.ids)?;
    let missing = state
        .meta
        .blobs_missing(caller.account_id, &req.ids)
        .await?;
    Ok(Json(MissingResponse { missing }))
}

/// `POST /v1/blobs/fetch`: sealed blobs in request order, binary (see
/// `haven_proto::FetchRequest`). Blobs whose stored ciphertext no longer
/// matches the hash recorded at upload are reported as missing rather than
/// sent: the store is damaged there.
pub async fn fetch(
    State(state): State<SharedState>,
    caller: Caller,
    Json(req): Json<FetchRequest>,
) -> ApiResult<Vec<u8>> {
    check_ids(&req.ids)?;
    let locs = state
        .meta
        .blob_locations(caller.account_id, &req.ids)
        .await?;
    // Bounds the answer's size whatever the request (ids may repeat):
    // blobs past the budget are answered "deferred" and asked for again.
    let mut budget = req
        .max_bytes
        .map_or(FETCH_BUDGET, |m| (m as usize).min(FETCH_BUDGET));
    // Sized once: growing a buffer of many MiB copies it again and again.
    let found: usize = locs.iter().flatten().map(|l| l.length as usize).sum();
    let mut out = Vec::with_capacity(found.min(budget) + req.ids.len() * RECORD_HEAD);
    let mut i = 0;
    while i < locs.len() {
        let Some(first) = &locs[i] else {
            push_record(&mut out, &req.ids[i], Record::Missing);
            i += 1;
            continue;
        };
        // A run of blobs from the same pack, within the budget, is read with one open.
        let mut j = i;
        while j < locs.len()
            && let Some(l) = &locs[j]
            && l.object_key == first.object_key
            && (l.length as usize <= budget || (j == i && out.is_empty()))
        {
            budget = budget.saturating_sub(l.length as usize);
            j += 1;
        }
        if j == i {
            for id in &req.ids[i..] {
                push_record(&mut out, id, Record::Deferred);
            }
            break;
        }
        let ranges = locs[i..j]
            .iter()
            .flatten()
            .map(|l| (l.offset, l.length))
            .collect();
        match state.objects.get_ranges(&first.object_key, ranges).await {
            Ok(blobs) => {
                for (k, b) in blobs.iter().enumerate() {
                    let loc = locs[i + k].as_ref();
                    let intact = loc.is_some_and(|l| hash_matches(&l.hash, b));
                    if !intact {
                        tracing::warn!(blob = %req.ids[i + k], "stored blob does not match its recorded hash");
                    }
                    let rec = if intact {
                        Record::Found(b)
                    } else {
                        Record::Missing
                    };
                    push_record(&mut out, &req.ids[i + k], rec);
                }
            }
            Err(StoreError::NotFound) | Err(StoreError::Invalid(_)) => {
                // GC may have moved the blobs to a rewritten pack since
                // they were looked up: look again, one by one.
                for id in &req.ids[i..j] {
                    match read_again(&state, caller.account_id, id).await? {
                        Some(b) => push_record(&mut out, id, Record::Found(&b)),
                        None => {
                            tracing::warn!(pack = %first.object_key, blob = %id, "blob is missing or truncated");
                            push_record(&mut out, id, Record::Missing);
                        }
                    }
                }
            }
            Err(e) => return Err(e.into()),
        }
        i = j;
    }
    Ok(out)
}

/// A blob read from its current location, if intact.
async fn read_again(state: &SharedState, account_id: i64, id: &BlobId) -> ApiResult<Option<Bytes>> {
    let Some(Some(loc)) = state.meta.blob_locations(account_id, &[*id]).await?.pop() else {
        return Ok(None);
    };
    match state
        .objects
        .get_ranges(&loc.object_key, vec![(loc.offset, loc.length)])
        .await
    {
        Ok(mut v) => Ok(v.pop().filter(|b| hash_matches(&loc.hash, b))),
        Err(StoreError::NotFound) | Err(StoreError::Invalid(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Most blob bytes in one fetch answer.
const FETCH_BUDGET: usize = 64 << 20;

enum Record<'a> {
    Found(&'a [u8]),
    Missing,
    Deferred,
}

/// Bytes of a record before its blob: id, status, length.
const RECORD_HEAD: usize = haven_format::id::ID_LEN + 1 + 4;

fn push_record(out: &mut Vec<u8>, id: &BlobId, rec: Record<'_>) {
    out.extend_from_slice(&id.0);
    let (status, body): (u8, &[u8]) = match rec {
        Record::Found(b) => (FETCH_FOUND, b),
        Record::Missing => (FETCH_MISSING, &[]),
        Record::Deferred => (FETCH_DEFERRED, &[]),
    };
    out.push(status);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
}

fn record(r: SnapshotRow) -> SnapshotRecord {
    SnapshotRecord {
        id: r.id,
        device: r.device,
        device_id: r.device_id,
        time: rfc3339(r.time),
        received: Some(rfc3339(r.created)),
        files: r.files,
        bytes: r.bytes,
        snapshot_blob: r.snapshot_blob,
        parent: r.parent,
        client_version: r.client_version,
        blobs: r.blobs,
        complete: r.complete,
        freed_if_deleted: 0,
        partial: r.partial,
        categories: serde_json::from_str(&r.categories).unwrap_or_default(),
        health: if r.damaged > 0 { "damaged" } else { "ok" }.into(),
        damaged_blobs: r.damaged,
        pruned: Vec::new(),
    }
}

fn check_snapshot_id(id: &str) -> ApiResult<()> {
    if is_valid_id(id) {
        Ok(())
    } else {
        Err(ApiError::not_found("backup"))
    }
}

/// `POST /v1/snapshots`.
pub async fn commit(
    State(state): State<SharedState>,
    caller: Caller,
    Json(req): Json<CommitRequest>,
) -> ApiResult<(StatusCode, Json<SnapshotRecord>)> {
    check_snapshot_id(&req.id)
        .map_err(|_| ApiError::bad_request("A snapshot id is 32 lower-case hex characters."))?;
    if let Some(p) = &req.parent {
        check_snapshot_id(p)?;
    }
    let new = NewSnapshot {
        account_id: caller.account_id,
        device_id: caller.device_id,
        id: req.id,
        time: parse_rfc3339(&req.time)?,
        files: req.files,
        bytes: req.bytes,
        snapshot_blob: req.snapshot_blob,
        parent: req.parent,
        client_version: req.client_version.chars().take(64).collect(),
        added: req.added,
        removed: req.removed,
        complete: !req.checkpoint,
        session: req.session,
        partial: req.partial,
        categories: serde_json::to_string(&req.categories).unwrap_or_else(|_| "[]".into()),
        quota: super::quota(&state, caller.account_id).await?,
    };
    haven_proto::fault::point("before-commit");
    // The copy goes first, so an acknowledged commit always has one; the
    // checkpoints this commit replaces lose theirs after it. It all runs to
    // its end in its own task, under the lock, even if the client goes away.
    let task_state = state.clone();
    let result = tokio::spawn(async move { commit_locked(&task_state, caller, &new).await })
        .await
        .map_err(|_| {
            ApiError::storage(&haven_store::StoreError::Invalid("commit crashed".into()))
        })??;
    commit_answer(&state, caller, result).await
}

/// Writes the copy, commits and drops the copies the commit replaced,
/// holding `snapshot_lock`.
async fn commit_locked(
    state: &SharedState,
    caller: Caller,
    new: &NewSnapshot,
) -> ApiResult<Result<SnapshotRow, StoreError>> {
    let _lock = state.snapshot_lock.lock().await;
    let started = std::time::Instant::now();
    let phase =
        |what: &str| tracing::debug!(ms = started.elapsed().as_millis() as u64, "commit: {what}");
    let replaced: Vec<String> = state
        .meta
        .snapshots(caller.account_id, Some(caller.device_id))
        .await?
        .into_iter()
        .filter(|s| !s.complete && s.id != new.id)
        .map(|s| s.id)
        .collect();
    let retry = state
        .meta
        .snapshot(caller.account_id, &new.id)
        .await?
        .is_some();
    phase("listed");
    if !retry {
        crate::journal::snapshot_before_commit(state, new).await?;
    }
    phase("copy written");
    let result = state.meta.snapshot_commit(new).await;
    phase("committed");
    match &result {
        Ok(_) => {
            for id in &replaced {
                crate::journal::snapshot_deleted(state, caller.account_id, id).await?;
            }
        }
        Err(_) => {
            if state
                .meta
                .snapshot(caller.account_id, &new.id)
                .await?
                .is_none()
            {
                crate::journal::snapshot_deleted(state, caller.account_id, &new.id).await?;
            }
        }
    }
    Ok(result)
}

/// `POST /v1/snapshots`, continued: the result of the commit.
async fn commit_answer(
    state: &SharedState,
    caller: Caller,
    result: Result<SnapshotRow, StoreError>,
) -> ApiResult<(StatusCode, Json<SnapshotRecord>)> {
    match result {
        Ok(row) => {
            haven_proto::fault::point("after-commit");
            tracing::info!(account_id = caller.account_id, snapshot = %row.id, files = row.files, "snapshot committed");
            let complete = row.complete;
            let mut rec = record(row);
            if complete {
                rec.pruned = crate::retention::prune_device(
                    state,
                    caller.account_id,
                    caller.device_id,
                    &rec.id,
                )
                .await?;
            }
            Ok((StatusCode::CREATED, Json(rec)))
        }
        Err(StoreError::BlobsMissing(ids)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::BlobsMissing,
            format!(
                "The backup references {} blobs the server does not have, so it was not saved.",
                ids.len()
            ),
        )
        .fix("The client uploads the missing blobs and commits again.")
        .details(serde_json::json!({ "missing": ids }))),
        Err(StoreError::NotFound) => Err(ApiError::not_found("parent backup")),
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
pub struct ListQuery {
    device: Option<String>,
    /// At most this many, newest first (a backup asks only for its parent).
    limit: Option<usize>,
    /// `false`: leave `freed_if_deleted` at 0. Computing it looks up every
    /// blob a backup references; a backup asking for its parent and a
    /// restore resolving `latest` have no use for it.
    freed: Option<bool>,
}

/// `GET /v1/snapshots[?device=NAME][&limit=N][&freed=false]`.
pub async fn list(
    State(state): State<SharedState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Vec<SnapshotRecord>>> {
    let device_id = match &q.device {
        None => None,
        Some(name) => Some(super::device_id(&state, &caller, Some(name)).await?),
    };
    let rows = state.meta.snapshots(caller.account_id, device_id).await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows.into_iter().take(q.limit.unwrap_or(usize::MAX)) {
        out.push(match q.freed {
            Some(false) => record(r),
            _ => with_freed(&state, caller.account_id, r).await?,
        });
    }
    Ok(Json(out))
}

/// `GET /v1/snapshots/{id}`.
pub async fn get(
    State(state): State<SharedState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<SnapshotRecord>> {
    check_snapshot_id(&id)?;
    match state.meta.snapshot(caller.account_id, &id).await? {
        Some(r) => Ok(Json(with_freed(&state, caller.account_id, r).await?)),
        None => Err(ApiError::not_found("backup")),
    }
}

/// `GET /v1/snapshots/{id}/damaged`.
pub async fn damaged(
    State(state): State<SharedState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<DamagedResponse>> {
    check_snapshot_id(&id)?;
    if state.meta.snapshot(caller.account_id, &id).await?.is_none() {
        return Err(ApiError::not_found("backup"));
    }
    Ok(Json(DamagedResponse {
        blobs: state.meta.snapshot_damaged(caller.account_id, &id).await?,
    }))
}

/// `DELETE /v1/snapshots/{id}`.
pub async fn delete(
    State(state): State<SharedState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    check_snapshot_id(&id)?;
    caller.require_password()?;
    if crate::journal::delete_snapshot(&state, caller.account_id, &id).await? {
        tracing::info!(account_id = caller.account_id, device_id = caller.device_id, addr = %caller.peer.text(), snapshot = %id, "backup deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("backup"))
    }
}

/// `POST /v1/sessions`.
pub async fn open_session(
    State(state): State<SharedState>,
    caller: Caller,
    Json(req): Json<SessionRequest>,
) -> ApiResult<Json<SessionResponse>> {
    let resume = req.resume.filter(|r| check_snapshot_id(r).is_ok());
    let quota = super::quota(&state, caller.account_id).await?;
    let info = state
        .meta
        .session_open(
            caller.account_id,
            caller.device_id,
            resume.as_deref(),
            req.reserve,
            quota,
        )
        .await?;
    Ok(Json(SessionResponse {
        session: info.id,
        retention_days: state.config.session_days,
        quota,
        available: info.available,
        damaged: state.meta.damaged_blobs(caller.account_id).await?,
    }))
}

pub async fn with_freed(
    state: &SharedState,
    account_id: i64,
    row: SnapshotRow,
) -> ApiResult<SnapshotRecord> {
    let freed = state.meta.freed_if_deleted(account_id, &row.id).await?;
    let mut rec = record(row);
    rec.freed_if_deleted = freed;
    Ok(rec)
}

//! Pack uploads: whole (`PUT /v1/packs/{id}`) or resumable in parts
//! (`PUT /v1/uploads/{id}?offset=O&total=T`, `GET /v1/uploads/{id}`).
//!
//! A part is appended to a staging file only if it starts exactly where
//! the staging file ends. It is written as it arrives, so a connection
//! that breaks mid-part keeps what got through, and fsynced before it is
//! acknowledged; a client whose connection broke asks where to continue
//! and sends only the rest, even across a server restart. When the last
//! part arrives the whole pack is verified and stored exactly like a whole
//! upload, except that the staging file itself is moved into place (no
//! second write). A client sends the whole pack as one part unless it
//! limits its rate, so a pack costs one request and one fsync.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use haven_format::PackId;
use haven_format::pack::{MAX_PACK_SIZE, parse_pack};
use haven_proto::{ErrorCode, PackStored, UploadStatus};
use haven_store::meta::PackBlob;
use serde::Deserialize;

use super::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::state::SharedState;

/// A part whose body stalls this long is abandoned (what arrived is kept).
const PART_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

/// Serializes the parts of one staging file: a retry that overlaps a slow
/// first attempt must not interleave appends.
#[derive(Default)]
pub struct UploadLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl UploadLocks {
    fn get(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, l| Arc::strong_count(l) > 1);
        map.entry(key.to_string()).or_default().clone()
    }
}

fn parse_id(id: &str) -> ApiResult<PackId> {
    PackId::from_hex(id).map_err(|_| ApiError::bad_request("A pack id is 64 hex characters."))
}

use crate::integrity::object_key;

/// Verifies a complete pack, stores it durably, then indexes its blobs.
/// The id must be the hash of the bytes (catches damage in transit), and
/// the index must describe exactly the body with well-framed blobs (so
/// scrub and restore can trust the offsets). The hash of each blob's
/// ciphertext is recorded for scrub.
async fn store_pack(
    state: &SharedState,
    caller: Caller,
    pack_id: PackId,
    bytes: Vec<u8>,
    session: Option<&str>,
    staged: Option<&std::path::Path>,
) -> ApiResult<PackStored> {
    // An upload keeps its session alive; a session that is unknown,
    // closed or another account's protects nothing and is ignored.
    let session = match session {
        Some(s) if state.meta.session_touch(caller.account_id, s).await? => Some(s),
        _ => None,
    };
    let (bytes, blobs) =
        tokio::task::spawn_blocking(move || -> Result<(Vec<u8>, Vec<PackBlob>), ApiError> {
            if PackId::of(&bytes) != pack_id {
                return Err(ApiError::pack_invalid(
                    "its content does not match its id (damaged in transit?)",
                ));
            }
            let entries = parse_pack(&bytes).map_err(ApiError::pack_invalid)?;
            let blobs = crate::integrity::pack_blobs(&bytes, &entries);
            Ok((bytes, blobs))
        })
        .await
        .map_err(|_| ApiError::pack_invalid("verification crashed"))??;
    let all = blobs.len() as u32;
    let mut existed = state.meta.pack_exists(caller.account_id, pack_id).await?;
    // The blobs the account lacks (or holds only a damaged copy of).
    let ids: Vec<_> = blobs.iter().map(|b| b.id).collect();
    let missing: std::collections::HashSet<_> = state
        .meta
        .blobs_missing(caller.account_id, &ids)
        .await?
        .into_iter()
        .collect();
    let new_bytes: u64 = blobs
        .iter()
        .filter(|b| missing.contains(&b.id))
        .map(|b| u64::from(b.length))
        .sum();
    // A pack is never stored with blobs the account already holds: packs
    // repeating known blobs would fill the disk while costing no quota
    // (only new blobs count). An honest client sends such a pack only
    // when another of its devices stored the same blob meanwhile; the
    // pack is then stored without them, under the id of what is stored.
    // The same pack again (a retry after a lost answer) is stored as
    // before: its blobs point into it, and a damaged copy is replaced.
    // A pack naming one blob twice is a pack with a known blob too.
    let unique = blobs
        .iter()
        .map(|b| b.id)
        .collect::<std::collections::HashSet<_>>()
        .len();
    let (pack_id, bytes, blobs, staged) = if existed
        || (unique == blobs.len() && missing.len() == blobs.len())
    {
        (pack_id, bytes, blobs, staged)
    } else if missing.is_empty() {
        tracing::info!(account_id = caller.account_id, pack = %pack_id, blobs = all, "a pack of blobs the account holds: nothing stored");
        return Ok(PackStored {
            pack: pack_id,
            blobs: all,
            duplicate_blobs: all,
        });
    } else {
        let (id, bytes, blobs) = tokio::task::spawn_blocking(move || {
            let mut w = haven_format::pack::PackWriter::new();
            let mut seen = std::collections::HashSet::new();
            for b in blobs
                .iter()
                .filter(|b| missing.contains(&b.id) && seen.insert(b.id))
            {
                let range = b.offset as usize..b.offset as usize + b.length as usize;
                w.add(b.kind, b.id, &bytes[range]);
            }
            let (id, bytes, entries) = w.finish();
            let blobs = crate::integrity::pack_blobs(&bytes, &entries);
            (id, bytes, blobs)
        })
        .await
        .map_err(|_| ApiError::pack_invalid("repacking crashed"))?;
        tracing::info!(account_id = caller.account_id, pack = %pack_id, stored_as = %id, kept = blobs.len(), of = all, "a pack with blobs the account holds: stored without them");
        existed = state.meta.pack_exists(caller.account_id, id).await?;
        (id, bytes, blobs, None)
    };
    let key = object_key(caller.account_id, &pack_id);
    let size = bytes.len() as u64;
    let quota = super::quota(state, caller.account_id).await?;
    if let Some(q) = quota {
        // Uploads outside a session would not count until a commit: on an
        // account with a quota they could fill the disk between GC runs.
        if session.is_none() {
            return Err(ApiError::bad_request(
                "On an account with a quota, packs are uploaded within an open upload session (POST /v1/sessions).",
            ));
        }
        // Refuse before writing anything when the new blobs cannot fit
        // even ignoring other backups' reservations; `pack_insert` makes
        // the exact check.
        let used = state.meta.used(caller.account_id).await?;
        if new_bytes > 0 && used + new_bytes > q {
            return Err(ApiError::quota_exceeded(new_bytes, q.saturating_sub(used)));
        }
    }
    // Store first, index second: an index entry never points at a pack
    // that is not durably stored. A crash in between leaves an unindexed
    // object, which a retried upload replaces.
    match staged {
        Some(path) => {
            drop(bytes);
            state.objects.put_file(&key, path, size).await?;
        }
        None => state.objects.put(&key, bytes).await?,
    }
    haven_proto::fault::point("after-pack-store");
    let dup = match state
        .meta
        .pack_insert(
            caller.account_id,
            pack_id,
            &key,
            size,
            &blobs,
            session,
            quota,
        )
        .await
    {
        Ok(dup) => dup,
        Err(e @ haven_store::StoreError::QuotaExceeded { .. }) => {
            // Refused: the file must not stay behind, unindexed.
            if !existed {
                state.objects.delete(&key).await?;
            }
            return Err(e.into());
        }
        Err(e) => return Err(e.into()),
    };
    haven_proto::fault::point("after-pack-index");
    Ok(PackStored {
        pack: pack_id,
        blobs: all,
        duplicate_blobs: dup + (all - blobs.len() as u32),
    })
}

/// `PUT /v1/packs/{id}`: a whole pack in one request.
pub async fn put_pack(
    State(state): State<SharedState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<SessionQuery>,
    body: Bytes,
) -> ApiResult<Json<PackStored>> {
    let pack_id = parse_id(&id)?;
    Ok(Json(
        store_pack(
            &state,
            caller,
            pack_id,
            Vec::from(body),
            q.session.as_deref(),
            None,
        )
        .await?,
    ))
}

#[derive(Deserialize, Clone)]
pub struct PartQuery {
    offset: u64,
    total: u64,
    session: Option<String>,
}

#[derive(Deserialize)]
pub struct SessionQuery {
    session: Option<String>,
}

fn offset_mismatch(expected: u64) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        ErrorCode::UploadOffset,
        format!("The upload continues at byte {expected}."),
    )
    .fix("The client resumes from that offset.")
    .details(serde_json::json!({ "offset": expected }))
}

/// `PUT /v1/uploads/{id}?offset=O&total=T`: one part of a pack.
pub async fn put_part(
    State(state): State<SharedState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<PartQuery>,
    body: Body,
) -> ApiResult<Json<UploadStatus>> {
    let pack_id = parse_id(&id)?;
    if q.total == 0 || q.total > MAX_PACK_SIZE as u64 || q.offset > q.total {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::TooLarge,
            format!("A pack is at most {MAX_PACK_SIZE} bytes and a part must lie within it."),
        )
        .fix("This is a client bug: update the client."));
    }
    // The part runs to its end in its own task, holding the staging file's
    // lock: a client that disconnects drops this handler, and a retry must
    // not see the file while the abandoned part still writes to it.
    let lock = state
        .uploads
        .get(&crate::staging::path(&state, caller.account_id, &pack_id).to_string_lossy());
    let guard = lock.lock_owned().await;
    tokio::spawn(async move {
        let _guard = guard;
        part(&state, caller, pack_id, q, body).await
    })
    .await
    .map_err(|_| ApiError::storage(&haven_store::StoreError::Invalid("upload crashed".into())))?
}

async fn part(
    state: &SharedState,
    caller: Caller,
    pack_id: PackId,
    q: PartQuery,
    body: Body,
) -> ApiResult<Json<UploadStatus>> {
    let path = crate::staging::path(state, caller.account_id, &pack_id);
    let current = tokio::fs::metadata(&path)
        .await
        .map(|m| m.len())
        .unwrap_or(0);
    // The last part was stored and its answer lost (the staging file is
    // gone or short): the retry is done.
    if (current != q.offset || current == 0) && pack_indexed(state, caller, &pack_id).await? {
        return Ok(Json(UploadStatus {
            offset: q.total,
            complete: true,
        }));
    }
    if current != q.offset {
        return Err(offset_mismatch(current));
    }
    // Staged bytes count from the first one (staging.rs).
    let _claim = crate::staging::admit(state, caller.account_id, pack_id, q.total).await?;
    let end = append_part(&path, q.offset, q.total, body).await?;
    haven_proto::fault::point("after-part-append");
    if end < q.total {
        return Ok(Json(UploadStatus {
            offset: end,
            complete: false,
        }));
    }
    let whole = tokio::fs::read(&path)
        .await
        .map_err(|e| ApiError::from(haven_store::StoreError::Io(e)))?;
    let result = store_pack(
        state,
        caller,
        pack_id,
        whole,
        q.session.as_deref(),
        Some(&path),
    )
    .await;
    // Stored (moved into place), or not a valid pack: either way the
    // staging file is done.
    if !matches!(&result, Err(e) if e.body.code == ErrorCode::StorageUnavailable || e.body.code == ErrorCode::ServerStorageFull)
    {
        let _ = tokio::fs::remove_file(&path).await;
    }
    result.map(|_| {
        Json(UploadStatus {
            offset: q.total,
            complete: true,
        })
    })
}

/// Appends a part's body to the staging file as it arrives and fsyncs it
/// (acknowledged parts survive a server crash). What arrived before the
/// body broke off is kept too: the client's retry continues after it.
/// Returns the staging file's new length.
async fn append_part(
    path: &std::path::Path,
    offset: u64,
    total: u64,
    body: Body,
) -> ApiResult<u64> {
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    let io = |e: std::io::Error| ApiError::from(haven_store::StoreError::Io(e));
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await.map_err(io)?;
    }
    let file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
        .map_err(io)?;
    let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
    let mut stream = body.into_data_stream();
    let mut end = offset;
    let outcome = loop {
        let chunk = match tokio::time::timeout(PART_IDLE, stream.next()).await {
            Ok(None) => break Ok(()),
            Ok(Some(Ok(chunk))) => chunk,
            // Kept what arrived: a client that still listens continues
            // from there.
            Ok(Some(Err(_))) | Err(_) => break Err(offset_mismatch(end)),
        };
        if end + chunk.len() as u64 > total {
            break Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::TooLarge,
                format!("A part must lie within its pack of {total} bytes."),
            )
            .fix("This is a client bug: update the client."));
        }
        if let Err(e) = out.write_all(&chunk).await {
            break Err(io(e));
        }
        end += chunk.len() as u64;
    };
    out.flush().await.map_err(io)?;
    out.into_inner().sync_data().await.map_err(io)?;
    outcome.map(|()| end)
}

async fn pack_indexed(state: &SharedState, caller: Caller, pack: &PackId) -> ApiResult<bool> {
    Ok(state.meta.pack_exists(caller.account_id, *pack).await?)
}

/// `GET /v1/uploads/{id}`: where an interrupted upload continues.
pub async fn status(
    State(state): State<SharedState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<UploadStatus>> {
    let pack_id = parse_id(&id)?;
    if pack_indexed(&state, caller, &pack_id).await? {
        return Ok(Json(UploadStatus {
            offset: 0,
            complete: true,
        }));
    }
    let path = crate::staging::path(&state, caller.account_id, &pack_id);
    let offset = tokio::fs::metadata(&path)
        .await
        .map(|m| m.len())
        .unwrap_or(0);
    Ok(Json(UploadStatus {
        offset,
        complete: false,
    }))
}

//! A copy of the metadata in the object store, so that a lost or corrupted
//! database can be rebuilt (`haven-server reindex`).
//!
//! The blob index needs no copy: packs describe themselves. Everything
//! else is written under `meta/` as it changes:
//!
//! | key | content |
//! |---|---|
//! | `meta/settings/{key}` | the setting's bytes |
//! | `meta/accounts/{id}.json` | the account: email, KDF, credential hashes, wrapped keys, plan |
//! | `meta/accounts/{id}.dictionary` | its compression dictionary, sealed (written once) |
//! | `meta/devices/{account}/{id}.json` | a device |
//! | `meta/tokens/{account}/{hash}.json` | a device sign-in (the token's hash) |
//! | `meta/snapshots/{account}/{id}.json` | a snapshot record |
//! | `meta/snapshots/{account}/{id}.refs` | the blob ids it references, 32 bytes each |
//! | `meta/snapshots/{account}/{id}.delta.{base}` | or: how they differ from `base`'s (see below) |
//! | `meta/categories/{account}/{device}.json` | a device's category switches |
//!
//! A snapshot's copy is written before its commit (and removed if the
//! commit is refused), so an acknowledged backup always has one.
//!
//! Reference sets are large (32 bytes per blob: 32 MB for a million) and
//! successive backups share nearly all of them, so most copies are a delta
//! against a *base*: a complete snapshot of the same device whose copy is
//! a full `.refs`. The delta holds a little-endian `u32` count of removed
//! ids, the removed ids, then the added ids. A snapshot gets a full copy
//! when it has no base or its delta would exceed half of its full set.
//! Deleting a base first rewrites its dependents as full copies; commits
//! and deletions of snapshots hold `snapshot_lock`, so a delta is never
//! written against a base being deleted. Not
//! copied: upload sessions, invites, scan figures, attempt history and
//! scrub verdicts, which the next backup or scrub recreates.

use std::collections::BTreeSet;

use haven_format::{BlobId, PackId};
use haven_store::StoreError;
use haven_store::meta::{Account, Device, NewSnapshot, SnapshotRow, TokenScope};
use haven_store::refset::differences;
use serde::{Deserialize, Serialize};

use crate::state::SharedState;

#[derive(Serialize, Deserialize)]
struct AccountDoc {
    id: i64,
    email: String,
    kdf: String,
    auth_hash: String,
    wrapped_key: String,
    recovery_auth_hash: String,
    recovery_wrapped_key: String,
    is_admin: bool,
    plan: Option<String>,
    created: i64,
}

#[derive(Serialize, Deserialize)]
struct DeviceDoc {
    id: i64,
    account_id: i64,
    name: String,
    created: i64,
}

#[derive(Serialize, Deserialize)]
struct TokenDoc {
    account_id: i64,
    device_id: i64,
    /// When it was last used, to the day (absent in older copies: the
    /// rebuild counts them as used then).
    #[serde(default)]
    last_used: Option<i64>,
}

#[derive(Serialize, Deserialize)]
struct SnapshotDoc {
    account_id: i64,
    id: String,
    device_id: i64,
    time: i64,
    files: u64,
    bytes: u64,
    snapshot_blob: BlobId,
    parent: Option<String>,
    client_version: String,
    complete: bool,
    partial: bool,
    categories: String,
    session: Option<String>,
    /// When the server received it, by its clock (absent in older copies).
    #[serde(default)]
    received: Option<i64>,
}

#[derive(Serialize, Deserialize)]
struct CategoriesDoc {
    account_id: i64,
    device_id: i64,
    switches: Vec<(String, bool)>,
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

fn parse<T: for<'a> Deserialize<'a>>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Invalid(format!("journal object {key} is unreadable: {e}")))
}

/// Records a setting.
pub async fn setting(state: &SharedState, key: &str, value: &[u8]) -> Result<(), StoreError> {
    state
        .objects
        .put(&format!("meta/settings/{key}"), value.to_vec())
        .await
}

/// Records an account as the database has it now.
pub async fn account(state: &SharedState, account_id: i64) -> Result<(), StoreError> {
    let Some(a) = state.meta.account(account_id).await? else {
        return Ok(());
    };
    let doc = AccountDoc {
        id: a.id,
        email: a.email,
        kdf: a.kdf,
        auth_hash: hex::encode(a.auth_hash),
        wrapped_key: hex::encode(a.wrapped_key),
        recovery_auth_hash: hex::encode(a.recovery_auth_hash),
        recovery_wrapped_key: hex::encode(a.recovery_wrapped_key),
        is_admin: a.is_admin,
        plan: a.plan,
        created: a.created,
    };
    state
        .objects
        .put(&format!("meta/accounts/{}.json", a.id), json(&doc))
        .await
}

fn dictionary_key(account_id: i64) -> String {
    format!("meta/accounts/{account_id}.dictionary")
}

/// Records an account's compression dictionary. The caller holds
/// `dictionary_lock` and has seen that the account has none.
pub async fn dictionary(
    state: &SharedState,
    account_id: i64,
    sealed: &[u8],
) -> Result<(), StoreError> {
    state
        .objects
        .put(&dictionary_key(account_id), sealed.to_vec())
        .await
}

/// Records a device.
pub async fn device(state: &SharedState, d: &Device) -> Result<(), StoreError> {
    let doc = DeviceDoc {
        id: d.id,
        account_id: d.account_id,
        name: d.name.clone(),
        created: d.created,
    };
    state
        .objects
        .put(
            &format!("meta/devices/{}/{}.json", d.account_id, d.id),
            json(&doc),
        )
        .await
}

fn token_key(account_id: i64, hash: &[u8; 32]) -> String {
    format!("meta/tokens/{account_id}/{}.json", hex::encode(hash))
}

/// Records a sign-in, or when it was last used.
pub async fn token(
    state: &SharedState,
    hash: &[u8; 32],
    account_id: i64,
    device_id: i64,
    last_used: i64,
) -> Result<(), StoreError> {
    let doc = TokenDoc {
        account_id,
        device_id,
        last_used: Some(last_used),
    };
    state
        .objects
        .put(&token_key(account_id, hash), json(&doc))
        .await
}

/// Forgets the sign-ins of an account in `scope`. Called before the
/// database ends them, so that a rebuilt database never signs a removed
/// device back in; [`tokens_gone`] then removes any created meanwhile.
pub async fn tokens_revoked(
    state: &SharedState,
    account_id: i64,
    scope: TokenScope,
) -> Result<(), StoreError> {
    for key in state
        .objects
        .list(&format!("meta/tokens/{account_id}/"))
        .await?
    {
        let device = parse::<TokenDoc>(&key, &state.objects.get(&key).await?)
            .map(|d| d.device_id)
            .ok();
        let doomed = match scope {
            TokenScope::Device(d) => device.is_none_or(|x| x == d),
            TokenScope::AllExcept(keep) => keep.is_none() || device != keep,
        };
        if doomed {
            state.objects.delete(&key).await?;
        }
    }
    Ok(())
}

/// Forgets these sign-ins (ended by the database).
pub async fn tokens_gone(
    state: &SharedState,
    tokens: &[(i64, [u8; 32])],
) -> Result<(), StoreError> {
    for (account_id, hash) in tokens {
        match state.objects.delete(&token_key(*account_id, hash)).await {
            Ok(()) | Err(StoreError::NotFound) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn snapshot_keys(account_id: i64, id: &str) -> (String, String) {
    (
        format!("meta/snapshots/{account_id}/{id}.json"),
        format!("meta/snapshots/{account_id}/{id}.refs"),
    )
}

fn delta_prefix(account_id: i64, id: &str) -> String {
    format!("meta/snapshots/{account_id}/{id}.delta.")
}

fn ids_bytes<'a>(ids: impl Iterator<Item = &'a BlobId>) -> Vec<u8> {
    ids.flat_map(|r| r.0).collect()
}

fn bytes_ids(b: &[u8]) -> Vec<BlobId> {
    b.chunks_exact(32)
        .filter_map(|c| <[u8; 32]>::try_from(c).ok().map(BlobId))
        .collect()
}

/// A delta's bytes: how `set` differs from `base` (both sorted, without
/// repeats).
fn encode_delta(base: &[BlobId], set: &[BlobId]) -> Vec<u8> {
    let (removed, added) = differences(base, set);
    let mut out = (removed.len() as u32).to_le_bytes().to_vec();
    out.extend(ids_bytes(removed.into_iter()));
    out.extend(ids_bytes(added.into_iter()));
    out
}

/// Applies a delta to its base's set.
fn apply_delta(key: &str, base: Vec<BlobId>, delta: &[u8]) -> Result<Vec<BlobId>, StoreError> {
    let bad = || StoreError::Invalid(format!("journal object {key} is malformed"));
    let head: [u8; 4] = delta
        .get(..4)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(bad)?;
    let removed_len = (u32::from_le_bytes(head) as usize)
        .checked_mul(32)
        .filter(|n| 4 + n <= delta.len() && (delta.len() - 4 - n).is_multiple_of(32))
        .ok_or_else(bad)?;
    let removed: BTreeSet<BlobId> = bytes_ids(&delta[4..4 + removed_len]).into_iter().collect();
    let mut set: BTreeSet<BlobId> = base.into_iter().filter(|b| !removed.contains(b)).collect();
    set.extend(bytes_ids(&delta[4 + removed_len..]));
    Ok(set.into_iter().collect())
}

/// Whether `id`'s copy is a full `.refs` of a complete snapshot.
async fn is_base(state: &SharedState, account_id: i64, id: &str) -> Result<bool, StoreError> {
    let complete = state
        .meta
        .snapshot(account_id, id)
        .await?
        .is_some_and(|s| s.complete);
    if !complete {
        return Ok(false);
    }
    let (_, refs_key) = snapshot_keys(account_id, id);
    Ok(!state.objects.list(&refs_key).await?.is_empty())
}

/// The base a child of `parent` is stored against: the parent itself if
/// its copy is full, else the parent's own base.
async fn base_for(
    state: &SharedState,
    account_id: i64,
    parent: &str,
) -> Result<Option<String>, StoreError> {
    if is_base(state, account_id, parent).await? {
        return Ok(Some(parent.to_string()));
    }
    let prefix = delta_prefix(account_id, parent);
    for key in state.objects.list(&prefix).await? {
        let base = key[prefix.len()..].to_string();
        if is_base(state, account_id, &base).await? {
            return Ok(Some(base));
        }
    }
    Ok(None)
}

/// Writes a snapshot's copy before its commit: its full reference set is
/// the parent's plus `added`, less `removed`, plus its own description.
/// The caller holds `snapshot_lock`.
pub async fn snapshot_before_commit(
    state: &SharedState,
    new: &NewSnapshot,
) -> Result<(), StoreError> {
    // Sorted vectors, not sets: 200,000 references are merged in one pass.
    let parent_set: Vec<BlobId> = match &new.parent {
        Some(p) => state.meta.snapshot_refs(new.account_id, p).await?,
        None => Vec::new(),
    };
    let mut removed = new.removed.clone();
    removed.sort_unstable();
    let mut refs: Vec<BlobId> = parent_set
        .iter()
        .filter(|r| removed.binary_search(r).is_err())
        .copied()
        .collect();
    refs.extend(new.added.iter().copied());
    refs.push(new.snapshot_blob);
    refs.sort_unstable();
    refs.dedup();
    let a = new.account_id;
    let mut copy = None;
    if let Some(parent) = &new.parent
        && let Some(base) = base_for(state, a, parent).await?
    {
        let base_set: Vec<BlobId> = if &base == parent {
            parent_set
        } else {
            state.meta.snapshot_refs(a, &base).await?
        };
        let delta = encode_delta(&base_set, &refs);
        if delta.len() * 2 <= refs.len() * 32 {
            copy = Some((format!("{}{base}", delta_prefix(a, &new.id)), delta));
        }
    }
    let copy = copy.unwrap_or_else(|| (snapshot_keys(a, &new.id).1, ids_bytes(refs.iter())));
    let doc = SnapshotDoc {
        account_id: new.account_id,
        id: new.id.clone(),
        device_id: new.device_id,
        time: new.time,
        files: new.files,
        bytes: new.bytes,
        snapshot_blob: new.snapshot_blob,
        parent: new.parent.clone(),
        client_version: new.client_version.clone(),
        complete: new.complete,
        partial: new.partial,
        categories: new.categories.clone(),
        session: new.session.clone(),
        received: Some(state.now()),
    };
    // Two independent writes: their fsyncs overlap.
    let doc_key = snapshot_keys(a, &new.id).0;
    tokio::try_join!(
        state.objects.put(&copy.0, copy.1),
        state.objects.put(&doc_key, json(&doc))
    )
    .map(|_| ())
}

/// Removes a snapshot's copy (after it was refused or replaced, or before
/// it is deleted). Copies stored against it are first rewritten in full.
/// The caller holds `snapshot_lock`.
pub async fn snapshot_deleted(
    state: &SharedState,
    account_id: i64,
    id: &str,
) -> Result<(), StoreError> {
    let (doc_key, refs_key) = snapshot_keys(account_id, id);
    rebase_dependents(state, account_id, id).await?;
    state.objects.delete(&doc_key).await?;
    state.objects.delete(&refs_key).await?;
    for key in state.objects.list(&delta_prefix(account_id, id)).await? {
        state.objects.delete(&key).await?;
    }
    Ok(())
}

/// Gives the copies stored as deltas against `base` a new base before
/// `base`'s copy goes: the newest complete one is written in full and the
/// others are re-encoded against it, so deleting a base (what retention
/// does to the oldest backup) costs one full copy, not one per dependent.
async fn rebase_dependents(
    state: &SharedState,
    account_id: i64,
    base: &str,
) -> Result<(), StoreError> {
    let dir = format!("meta/snapshots/{account_id}/");
    let suffix = format!(".delta.{base}");
    let mut alive = Vec::new();
    for key in state.objects.list(&dir).await? {
        let Some(child) = key
            .strip_suffix(suffix.as_str())
            .and_then(|k| k.strip_prefix(dir.as_str()))
        else {
            continue;
        };
        match state.meta.snapshot(account_id, child).await? {
            Some(row) => alive.push((row, key)),
            None => state.objects.delete(&key).await?,
        }
    }
    alive.sort_by_key(|(row, _)| (row.complete, row.created, row.time));
    let new_base = match alive.last() {
        Some((row, _)) if row.complete => Some(row.id.clone()),
        _ => None,
    };
    let base_set: Vec<BlobId> = match &new_base {
        Some(b) => state.meta.snapshot_refs(account_id, b).await?,
        None => Vec::new(),
    };
    for (row, old_key) in alive.iter().rev() {
        let refs = state.meta.snapshot_refs(account_id, &row.id).await?;
        let delta = encode_delta(&base_set, &refs);
        let (key, bytes) = match &new_base {
            Some(b) if *b != row.id && delta.len() * 2 <= refs.len() * 32 => {
                (format!("{}{b}", delta_prefix(account_id, &row.id)), delta)
            }
            _ => (snapshot_keys(account_id, &row.id).1, ids_bytes(refs.iter())),
        };
        // The new copy is in place before the old one goes.
        state.objects.put(&key, bytes).await?;
        state.objects.delete(old_key).await?;
    }
    Ok(())
}

/// Deletes a snapshot: its copy first (a rebuilt database never brings
/// back a deleted backup), then its record. False if there was none. It
/// runs to its end in its own task, even if the request that asked for it
/// goes away.
pub async fn delete_snapshot(
    state: &SharedState,
    account_id: i64,
    id: &str,
) -> Result<bool, StoreError> {
    let (state, id) = (state.clone(), id.to_string());
    tokio::spawn(async move {
        let _lock = state.snapshot_lock.lock().await;
        if state.meta.snapshot(account_id, &id).await?.is_none() {
            return Ok(false);
        }
        snapshot_deleted(&state, account_id, &id).await?;
        state.meta.snapshot_delete(account_id, &id).await
    })
    .await
    .map_err(|e| StoreError::Io(std::io::Error::other(e)))?
}

/// Records a device's category switches.
pub async fn categories(
    state: &SharedState,
    account_id: i64,
    device_id: i64,
) -> Result<(), StoreError> {
    let switches = state
        .meta
        .categories(account_id, device_id)
        .await?
        .into_iter()
        .map(|c| (c.name, c.enabled))
        .collect();
    let doc = CategoriesDoc {
        account_id,
        device_id,
        switches,
    };
    state
        .objects
        .put(
            &format!("meta/categories/{account_id}/{device_id}.json"),
            json(&doc),
        )
        .await
}

/// Writes the copies of everything the database holds once (for data
/// from before the copies existed), remembered by a setting. Device
/// sign-ins from before are not copied: those devices sign in again after
/// a rebuild.
pub async fn backfill(state: &SharedState) -> Result<(), StoreError> {
    if state.meta.setting("journal_backfilled").await?.is_some() {
        return Ok(());
    }
    for a in state.meta.accounts().await? {
        account(state, a.id).await?;
        for d in state.meta.devices(a.id).await? {
            device(state, &d).await?;
            categories(state, a.id, d.id).await?;
        }
        for s in state.meta.snapshots(a.id, None).await? {
            let refs = state.meta.snapshot_refs(a.id, &s.id).await?;
            let doc = SnapshotDoc {
                account_id: a.id,
                id: s.id.clone(),
                device_id: s.device_id,
                time: s.time,
                files: s.files,
                bytes: s.bytes,
                snapshot_blob: s.snapshot_blob,
                parent: s.parent.clone(),
                client_version: s.client_version.clone(),
                complete: s.complete,
                partial: s.partial,
                categories: s.categories.clone(),
                session: None,
                received: Some(s.created),
            };
            let (doc_key, refs_key) = snapshot_keys(a.id, &s.id);
            state
                .objects
                .put(&refs_key, refs.iter().flat_map(|r| r.0).collect())
                .await?;
            state.objects.put(&doc_key, json(&doc)).await?;
        }
    }
    state.meta.setting_init("journal_backfilled", b"1").await?;
    Ok(())
}

/// What a rebuild found.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ReindexReport {
    pub accounts: u64,
    /// Accounts' compression dictionaries.
    pub dictionaries: u64,
    pub devices: u64,
    pub sign_ins: u64,
    pub packs: u64,
    pub blobs: u64,
    /// Pack files that could not be parsed (left in place, not indexed).
    pub unreadable_packs: u64,
    pub snapshots: u64,
    /// Snapshots left out because blobs they reference are in no pack.
    pub incomplete_snapshots: Vec<String>,
    /// Records left out because what they belong to has no copy (an
    /// account or device unknown to `meta/`).
    pub orphans: u64,
}

fn unhex(key: &str, s: &str) -> Result<Vec<u8>, StoreError> {
    hex::decode(s).map_err(|_| StoreError::Invalid(format!("journal object {key}: bad hex")))
}

/// A snapshot's reference set from its copy (full, or a delta applied to
/// its base's full copy); `None` when the copy or its base is gone.
async fn stored_refs(
    state: &SharedState,
    account_id: i64,
    id: &str,
) -> Result<Option<Vec<BlobId>>, StoreError> {
    let full = |key: String| async move {
        match state.objects.get(&key).await {
            Ok(b) => Ok(Some(bytes_ids(&b))),
            Err(StoreError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    };
    if let Some(refs) = full(snapshot_keys(account_id, id).1).await? {
        return Ok(Some(refs));
    }
    let prefix = delta_prefix(account_id, id);
    for key in state.objects.list(&prefix).await? {
        let base = &key[prefix.len()..];
        if let Some(base_refs) = full(snapshot_keys(account_id, base).1).await? {
            let delta = state.objects.get(&key).await?;
            return Ok(Some(apply_delta(&key, base_refs, &delta)?));
        }
    }
    Ok(None)
}

/// Fills an empty database from the packs and the `meta/` copies.
pub async fn rebuild(state: &SharedState) -> Result<ReindexReport, StoreError> {
    let mut r = ReindexReport::default();
    let objects = &state.objects;
    for key in objects.list("meta/settings/").await? {
        let name = key.trim_start_matches("meta/settings/").to_string();
        let value = objects.get(&key).await?;
        state.meta.setting_init(&name, &value).await?;
    }
    let account_keys: BTreeSet<String> =
        objects.list("meta/accounts/").await?.into_iter().collect();
    for key in account_keys.iter().filter(|k| k.ends_with(".json")) {
        let d: AccountDoc = parse(key, &objects.get(key).await?)?;
        state
            .meta
            .import_account(&Account {
                id: d.id,
                auth_hash: unhex(key, &d.auth_hash)?,
                wrapped_key: unhex(key, &d.wrapped_key)?,
                recovery_auth_hash: unhex(key, &d.recovery_auth_hash)?,
                recovery_wrapped_key: unhex(key, &d.recovery_wrapped_key)?,
                email: d.email,
                kdf: d.kdf,
                is_admin: d.is_admin,
                plan: d.plan,
                created: d.created,
            })
            .await?;
        r.accounts += 1;
        let dict = dictionary_key(d.id);
        if account_keys.contains(&dict) {
            let sealed = objects.get(&dict).await?;
            state.meta.account_dictionary_init(d.id, &sealed).await?;
            r.dictionaries += 1;
        }
    }
    for key in objects.list("meta/devices/").await? {
        let d: DeviceDoc = parse(&key, &objects.get(&key).await?)?;
        let imported = state
            .meta
            .import_device(&Device {
                id: d.id,
                account_id: d.account_id,
                name: d.name,
                created: d.created,
                ..Device::default()
            })
            .await;
        match imported {
            Ok(()) => r.devices += 1,
            Err(StoreError::Db(e)) => {
                tracing::warn!(object = %key, "device left out: {e}");
                r.orphans += 1;
            }
            Err(e) => return Err(e),
        }
    }
    for key in objects.list("meta/tokens/").await? {
        let d: TokenDoc = parse(&key, &objects.get(&key).await?)?;
        let hash = key
            .rsplit('/')
            .next()
            .and_then(|f| f.strip_suffix(".json"))
            .and_then(|h| hex::decode(h).ok())
            .and_then(|h| <[u8; 32]>::try_from(h).ok())
            .ok_or_else(|| StoreError::Invalid(format!("journal object {key}: bad name")))?;
        // A sign-in unused for longer than sign-ins live stays ended.
        let last_used = d.last_used.unwrap_or_else(|| state.now());
        let days = i64::from(state.config.token_days);
        if days > 0 && state.now() - last_used > days * 86_400 {
            continue;
        }
        match state
            .meta
            .token_create(hash, d.account_id, d.device_id)
            .await
        {
            Ok(()) => {
                state.meta.token_touch(hash, d.device_id, last_used).await?;
                r.sign_ins += 1
            }
            Err(StoreError::Db(_)) => r.orphans += 1,
            Err(e) => return Err(e),
        }
    }
    for key in objects.list("packs/").await? {
        let Some(account_id) = key.split('/').nth(1).and_then(|a| a.parse::<i64>().ok()) else {
            continue;
        };
        let bytes = objects.get(&key).await?;
        let Ok(entries) = haven_format::pack::parse_pack(&bytes) else {
            tracing::warn!(pack = %key, "unreadable pack left out of the index");
            r.unreadable_packs += 1;
            continue;
        };
        let blobs = crate::integrity::pack_blobs(&bytes, &entries);
        let size = bytes.len() as u64;
        let inserted = state
            .meta
            .pack_insert(
                account_id,
                PackId::of(&bytes),
                &key,
                size,
                &blobs,
                None,
                None,
            )
            .await;
        match inserted {
            Ok(_) => {
                r.packs += 1;
                r.blobs += blobs.len() as u64;
            }
            Err(StoreError::Db(e)) => {
                tracing::warn!(pack = %key, "pack of an unknown account left out: {e}");
                r.orphans += 1;
            }
            Err(e) => return Err(e),
        }
    }
    for key in objects.list("meta/snapshots/").await? {
        if !key.ends_with(".json") {
            continue;
        }
        let d: SnapshotDoc = parse(&key, &objects.get(&key).await?)?;
        let Some(refs) = stored_refs(state, d.account_id, &d.id).await? else {
            r.incomplete_snapshots.push(d.id);
            continue;
        };
        let row = SnapshotRow {
            id: d.id.clone(),
            device_id: d.device_id,
            device: String::new(),
            time: d.time,
            files: d.files,
            bytes: d.bytes,
            snapshot_blob: d.snapshot_blob,
            parent: d.parent,
            client_version: d.client_version,
            blobs: refs.len() as u64,
            complete: d.complete,
            partial: d.partial,
            categories: d.categories,
            damaged: 0,
            // Expiry counts from when the server received it; an older
            // copy without that time gets the device's, never later than now.
            created: d.received.unwrap_or(d.time.min(state.now())),
        };
        match state
            .meta
            .import_snapshot(d.account_id, &row, d.session.as_deref(), &refs)
            .await
        {
            Ok(true) => r.snapshots += 1,
            Ok(false) => r.incomplete_snapshots.push(d.id),
            Err(StoreError::Db(e)) => {
                tracing::warn!(snapshot = %d.id, "backup of an unknown device left out: {e}");
                r.orphans += 1;
            }
            Err(e) => return Err(e),
        }
    }
    for key in objects.list("meta/categories/").await? {
        let d: CategoriesDoc = parse(&key, &objects.get(&key).await?)?;
        for (name, enabled) in d.switches {
            if let Err(e) = state
                .meta
                .category_set(d.account_id, d.device_id, &name, enabled)
                .await
            {
                tracing::warn!(object = %key, "category switch left out: {e}");
                r.orphans += 1;
            }
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(ns: &[u8]) -> Vec<BlobId> {
        ns.iter().map(|&n| BlobId([n; 32])).collect()
    }

    #[test]
    fn a_delta_applied_to_its_base_gives_the_set_back() {
        let base = ids(&[1, 2, 3, 4]);
        let set = ids(&[2, 3, 5, 6, 7]);
        let delta = encode_delta(&base, &set);
        // 2 removed, 3 added: a count and five ids.
        assert_eq!(delta.len(), 4 + 5 * 32);
        let back = apply_delta("k", base, &delta).expect("a valid delta");
        assert_eq!(back, set);
    }

    #[test]
    fn a_malformed_delta_is_an_error_not_a_panic() {
        let base = ids(&[1]);
        for bad in [
            vec![],
            vec![1, 0, 0],
            vec![2, 0, 0, 0, 1],
            vec![0xff; 4],
            vec![0, 0, 0, 0, 9],
        ] {
            assert!(apply_delta("k", base.clone(), &bad).is_err(), "{bad:?}");
        }
    }
}

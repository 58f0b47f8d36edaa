//! The metadata store: accounts, devices, tokens, the blob index and
//! snapshots.
//!
//! Guarantees every implementation gives (checked by the conformance
//! suite):
//! * Every method is one transaction: it happens entirely or not at all.
//! * Every query is scoped by account: no method returns, counts or
//!   changes another account's rows, whatever ids it is given.
//! * `snapshot_commit` is atomic and checked: the snapshot becomes visible
//!   only if every blob it references is indexed for the account, in the
//!   same transaction (invariant 1). It is idempotent by snapshot id.

use async_trait::async_trait;
use haven_format::{BlobId, PackId, blob::BlobKind};

use crate::StoreError;

/// A new account's credentials, all produced by the client.
#[derive(Clone, Debug)]
pub struct NewAccount {
    pub email: String,
    /// The KDF parameters as JSON.
    pub kdf: String,
    pub auth_hash: [u8; 32],
    pub wrapped_key: Vec<u8>,
    pub recovery_auth_hash: [u8; 32],
    pub recovery_wrapped_key: Vec<u8>,
}

/// A stored account.
#[derive(Clone, Debug)]
pub struct Account {
    pub id: i64,
    pub email: String,
    pub kdf: String,
    pub auth_hash: Vec<u8>,
    pub wrapped_key: Vec<u8>,
    pub recovery_auth_hash: Vec<u8>,
    pub recovery_wrapped_key: Vec<u8>,
    pub is_admin: bool,
    /// `None`: the server's default plan.
    pub plan: Option<String>,
    pub created: i64,
}

/// A device of an account.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Device {
    pub id: i64,
    pub account_id: i64,
    pub name: String,
    pub created: i64,
    /// When the server received the device's newest backup.
    pub last_backup: Option<i64>,
    /// When one of its sign-ins was last used (to the hour).
    pub last_seen: Option<i64>,
    /// It has a sign-in that works.
    pub signed_in: bool,
}

/// A device sign-in (a token's hash).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenRow {
    pub account_id: i64,
    pub device_id: i64,
    /// When it was last used (updated at most hourly).
    pub last_used: i64,
}

/// Which sign-ins of an account [`MetaStore::tokens_revoke`] ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenScope {
    /// Every sign-in of one device.
    Device(i64),
    /// Every sign-in of the account but those of this device, if any.
    AllExcept(Option<i64>),
}

/// What [`MetaStore::auth_attempt`] decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthAttempt {
    /// A key has this many failures in the window, the oldest at `oldest`.
    Limited { failures: u32, oldest: i64 },
    /// Counted as a failure, in these rows, until it succeeds.
    Counted(Vec<i64>),
}

/// A console session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsoleSession {
    pub account_id: i64,
    pub csrf: String,
    /// When it last proved the password; 0 for a one-time link's.
    pub password_at: i64,
}

/// One blob of an uploaded pack, with the BLAKE3 hash of its ciphertext
/// computed by the server.
#[derive(Clone, Debug)]
pub struct PackBlob {
    pub id: BlobId,
    pub kind: BlobKind,
    pub offset: u64,
    pub length: u32,
    pub hash: [u8; 32],
}

/// Where a blob is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobLocation {
    pub object_key: String,
    pub offset: u64,
    pub length: u32,
    pub hash: Vec<u8>,
}

/// A snapshot to commit.
#[derive(Clone, Debug)]
pub struct NewSnapshot {
    pub account_id: i64,
    pub device_id: i64,
    pub id: String,
    pub time: i64,
    pub files: u64,
    pub bytes: u64,
    pub snapshot_blob: BlobId,
    pub parent: Option<String>,
    pub client_version: String,
    pub added: Vec<BlobId>,
    pub removed: Vec<BlobId>,
    /// False for a checkpoint of a running backup.
    pub complete: bool,
    /// The upload session of the run.
    pub session: Option<String>,
    /// Categories were left out for lack of space.
    pub partial: bool,
    /// Per-category figures, JSON.
    pub categories: String,
    /// The account's quota: a commit that would raise `used` above it is
    /// refused with `QuotaExceeded`.
    pub quota: Option<u64>,
}

/// A committed snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotRow {
    pub id: String,
    pub device_id: i64,
    pub device: String,
    pub time: i64,
    pub files: u64,
    pub bytes: u64,
    pub snapshot_blob: BlobId,
    pub parent: Option<String>,
    pub client_version: String,
    pub blobs: u64,
    pub complete: bool,
    pub partial: bool,
    /// Referenced blobs that scrub found damaged or missing.
    pub damaged: u64,
    /// When the server committed it (server clock; `time` is the device's).
    pub created: i64,
    /// Per-category figures, JSON.
    pub categories: String,
}

/// Stored bytes of an account.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Stored size (after dedup and compression) of every blob a snapshot
    /// or an open upload session references, each counted once.
    pub used: u64,
    /// Bytes of the account's pack files, garbage included.
    pub stored_physical: u64,
    /// Per device: stored size of the blobs its snapshots reference (a blob
    /// shared by two devices counts for each).
    pub devices: Vec<(String, u64)>,
    /// Quota that open sessions reserved beyond what they stored so far.
    pub reserved: u64,
    /// Per device: the category figures (JSON) of its newest complete snapshot.
    pub categories: Vec<(String, String)>,
}

/// An upload session as opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    pub id: String,
    /// What the session may still store under the quota (quota less used
    /// less other sessions' reservations); `None` without a quota.
    pub available: Option<u64>,
}

/// A category of a device.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct CategoryRow {
    pub name: String,
    pub enabled: bool,
    pub files: u64,
    pub bytes: u64,
    pub new_bytes: u64,
    pub scanned: Option<i64>,
}

/// A backup attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptRow {
    /// Device name (filled in lists).
    pub device: String,
    pub started: i64,
    pub finished: i64,
    pub result: String,
    pub code: Option<String>,
    pub message: String,
    /// JSON array of strings.
    pub fix: String,
    pub snapshot: Option<String>,
    pub uploaded: u64,
    /// When the server received it (its own clock).
    pub received: i64,
}

/// A pack as the index knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackRow {
    pub account_id: i64,
    pub id: PackId,
    pub object_key: String,
    pub size: u64,
}

/// A blob's index entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredBlob {
    pub id: BlobId,
    pub kind: u8,
    pub offset: u64,
    pub length: u32,
    pub hash: Vec<u8>,
    /// See [`BLOB_OK`], [`BLOB_DAMAGED`], [`BLOB_MISSING`].
    pub state: u8,
}

/// Scrub verdicts.
pub const BLOB_OK: u8 = 0;
pub const BLOB_DAMAGED: u8 = 1;
pub const BLOB_MISSING: u8 = 2;

/// What one GC pass over an account removed from the index, and what it
/// left for the caller to do with the pack files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcOutcome {
    pub sessions_expired: u64,
    pub blobs_removed: u64,
    pub bytes_removed: u64,
    /// Objects of packs left with no blob: delete them.
    pub dead_objects: Vec<String>,
    /// Packs whose live blobs fill less than half of them: rewrite them.
    pub sparse: Vec<PackRow>,
}

/// How long a reservation holds without activity of its session: a
/// backup that died does not block the quota for days.
pub const RESERVATION_SECS: i64 = 6 * 3600;

/// Why an invite could not be redeemed.
pub const INVITE_INVALID: &str = "invite";
/// The email is taken.
pub const EMAIL_TAKEN: &str = "email";
/// `Conflict`: the account has [`MAX_DEVICES`] devices.
pub const TOO_MANY_DEVICES: &str = "devices";
/// `Conflict`: the device has [`MAX_CATEGORIES`] categories.
pub const TOO_MANY_CATEGORIES: &str = "categories";

/// Devices per account: a family's or a class's, with room to spare. Rows
/// a client creates are bounded, so that no account can grow the
/// database without end (invariant 11).
pub const MAX_DEVICES: i64 = 100;
/// Categories per device (a scan reports at most 256 too).
pub const MAX_CATEGORIES: i64 = 256;
/// Backup attempts kept per device; older ones are forgotten.
pub const MAX_ATTEMPTS: i64 = 1000;
/// Unused one-time console links per account; a new one ends the oldest.
pub const MAX_LINKS: i64 = 10;
/// Ended sign-ins whose reason an account keeps (for `token_revoked`).
pub const MAX_REVOKED: i64 = 200;
/// Console sessions per account; a new one ends the oldest.
pub const MAX_CONSOLE_SESSIONS: i64 = 20;

/// Bytes of a sealed blob's BLAKE3 hash the index keeps, to tell an
/// intact stored copy from a damaged one. 128 bits: a corrupted copy
/// passes with probability 2^-128, and the client's AEAD checks every blob
/// again anyway. Rows written before 2026-12-07 hold all 32 bytes; both
/// lengths compare by [`hash_matches`].
pub const STORED_HASH_LEN: usize = 16;

/// Whether `bytes` are the sealed blob whose recorded hash is `stored`.
pub fn hash_matches(stored: &[u8], bytes: &[u8]) -> bool {
    stored.len() >= STORED_HASH_LEN && blake3::hash(bytes).as_bytes().starts_with(stored)
}

#[async_trait]
pub trait MetaStore: Send + Sync + 'static {
    /// Finishes with the store when the server stops: what the database
    /// keeps beside itself (SQLite's write-ahead log) is folded into it
    /// and emptied (SQLite removes the file once its last connection
    /// closes), so a stopped server holds only its database file.
    /// Requests after this fail.
    async fn close(&self) -> Result<(), StoreError>;
    /// A server-wide setting.
    async fn setting(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Sets `key` unless it is set; returns the value in force.
    async fn setting_init(&self, key: &str, value: &[u8]) -> Result<Vec<u8>, StoreError>;

    /// Records a one-time invite (its hash), optionally bound to an email.
    async fn invite_create(
        &self,
        code_hash: [u8; 32],
        email: Option<&str>,
        expires: i64,
        plan: Option<&str>,
    ) -> Result<(), StoreError>;
    /// Creates an account, consuming the invite if one is given, in one
    /// transaction. `Conflict(INVITE_INVALID)` for an invite that is not
    /// valid for this email, checked before `Conflict(EMAIL_TAKEN)`.
    async fn account_create(
        &self,
        new: &NewAccount,
        invite_hash: Option<[u8; 32]>,
    ) -> Result<i64, StoreError>;
    /// The account with this email.
    async fn account_by_email(&self, email: &str) -> Result<Option<Account>, StoreError>;
    /// The account with this id.
    async fn account(&self, account_id: i64) -> Result<Option<Account>, StoreError>;
    /// Every account, by email.
    async fn accounts(&self) -> Result<Vec<Account>, StoreError>;
    /// Sets the plan (`None`: the default plan).
    async fn account_set_plan(&self, account_id: i64, plan: Option<&str>)
    -> Result<(), StoreError>;
    /// The account's compression dictionary, sealed (`None` until a device
    /// set one).
    async fn account_dictionary(&self, account_id: i64) -> Result<Option<Vec<u8>>, StoreError>;
    /// Sets the account's compression dictionary unless it has one, and
    /// returns the one it has now: a dictionary is never replaced, since
    /// blobs need the one they were compressed with. `NotFound` for an
    /// unknown account.
    async fn account_dictionary_init(
        &self,
        account_id: i64,
        sealed: &[u8],
    ) -> Result<Vec<u8>, StoreError>;
    /// Replaces the password credentials and ends every console session
    /// and link; device sign-ins are ended first with [`MetaStore::tokens_revoke`].
    async fn account_set_password(
        &self,
        account_id: i64,
        kdf: &str,
        auth_hash: [u8; 32],
        wrapped_key: &[u8],
    ) -> Result<(), StoreError>;

    /// The device of this name, created if absent; `true` if it existed.
    async fn device_upsert(
        &self,
        account_id: i64,
        name: &str,
    ) -> Result<(Device, bool), StoreError>;
    /// The account's devices by name.
    async fn devices(&self, account_id: i64) -> Result<Vec<Device>, StoreError>;

    /// Stores a token hash for a device.
    async fn token_create(
        &self,
        hash: [u8; 32],
        account_id: i64,
        device_id: i64,
    ) -> Result<(), StoreError>;
    /// The sign-in of a token hash.
    async fn token_lookup(&self, hash: [u8; 32]) -> Result<Option<TokenRow>, StoreError>;
    /// Records that a sign-in was used at `now` (and its device seen).
    async fn token_touch(&self, hash: [u8; 32], device_id: i64, now: i64)
    -> Result<(), StoreError>;
    /// Ends sign-ins of an account, remembering `reason` for each, in one
    /// transaction; returns their hashes.
    async fn tokens_revoke(
        &self,
        account_id: i64,
        scope: TokenScope,
        reason: &str,
    ) -> Result<Vec<[u8; 32]>, StoreError>;
    /// Ends every sign-in of any account last used before `unused_since`
    /// (reason `expired`); returns `(account_id, hash)` of each.
    async fn tokens_expire(&self, unused_since: i64) -> Result<Vec<(i64, [u8; 32])>, StoreError>;
    /// Why an ended sign-in was ended, if it was.
    async fn token_revoked(&self, hash: [u8; 32]) -> Result<Option<String>, StoreError>;

    /// The subset of `ids` the account has no blob for, in input order.
    async fn blobs_missing(
        &self,
        account_id: i64,
        ids: &[BlobId],
    ) -> Result<Vec<BlobId>, StoreError>;
    /// Opens an upload session for a device, or keeps `resume` open if it
    /// is an open session of that device. With `reserve`, sets the
    /// session's reservation, refused with `QuotaExceeded` (changing
    /// nothing) if it does not fit under `quota`.
    async fn session_open(
        &self,
        account_id: i64,
        device_id: i64,
        resume: Option<&str>,
        reserve: Option<u64>,
        quota: Option<u64>,
    ) -> Result<SessionInfo, StoreError>;
    /// Marks a session active now (it expires `session_days` after its last activity).
    async fn session_touch(&self, account_id: i64, session: &str) -> Result<bool, StoreError>;
    /// Indexes a stored pack's blobs; blobs already indexed keep their
    /// first location. Returns how many were already indexed. Refused with
    /// `QuotaExceeded`, indexing nothing, if the new blobs plus what is
    /// used plus other sessions' reservations exceed `quota`: two devices
    /// uploading at once cannot overshoot it.
    #[allow(clippy::too_many_arguments)]
    async fn pack_insert(
        &self,
        account_id: i64,
        pack: PackId,
        object_key: &str,
        size: u64,
        blobs: &[PackBlob],
        session: Option<&str>,
        quota: Option<u64>,
    ) -> Result<u32, StoreError>;
    /// True if the account has indexed this pack.
    async fn pack_exists(&self, account_id: i64, pack: PackId) -> Result<bool, StoreError>;
    /// Locations of blobs, `None` where the account has no such blob.
    async fn blob_locations(
        &self,
        account_id: i64,
        ids: &[BlobId],
    ) -> Result<Vec<Option<BlobLocation>>, StoreError>;

    /// Commits a snapshot (see the trait's guarantees).
    async fn snapshot_commit(&self, new: &NewSnapshot) -> Result<SnapshotRow, StoreError>;
    /// Snapshots of the account (of one device if given), newest first.
    async fn snapshots(
        &self,
        account_id: i64,
        device_id: Option<i64>,
    ) -> Result<Vec<SnapshotRow>, StoreError>;
    /// One snapshot.
    async fn snapshot(&self, account_id: i64, id: &str) -> Result<Option<SnapshotRow>, StoreError>;
    /// `usage(..).used` alone, without the per-device and per-category
    /// figures: what the checks of every upload need.
    async fn used(&self, account_id: i64) -> Result<u64, StoreError>;
    /// The account's usage, consistent with the last committed transaction.
    async fn usage(&self, account_id: i64) -> Result<Usage, StoreError>;
    /// Bytes that deleting the snapshot would free at once: its blobs that
    /// no other snapshot and no open upload session references.
    async fn freed_if_deleted(&self, account_id: i64, id: &str) -> Result<u64, StoreError>;
    /// Deletes a snapshot record and its references; `false` if absent.
    async fn snapshot_delete(&self, account_id: i64, id: &str) -> Result<bool, StoreError>;

    /// The device's categories: switches and last scan figures, by name.
    async fn categories(
        &self,
        account_id: i64,
        device_id: i64,
    ) -> Result<Vec<CategoryRow>, StoreError>;
    /// Switches a category of a device on or off.
    async fn category_set(
        &self,
        account_id: i64,
        device_id: i64,
        name: &str,
        enabled: bool,
    ) -> Result<(), StoreError>;
    /// Records a scan's figures (`enabled` of `rows` is ignored); categories
    /// missing from it keep their switch and get zero figures.
    async fn categories_scanned(
        &self,
        account_id: i64,
        device_id: i64,
        rows: &[CategoryRow],
    ) -> Result<(), StoreError>;

    /// Every indexed pack of every account.
    async fn packs_all(&self) -> Result<Vec<PackRow>, StoreError>;
    /// The blobs indexed in a pack, by offset.
    async fn pack_blobs(
        &self,
        account_id: i64,
        pack: PackId,
    ) -> Result<Vec<StoredBlob>, StoreError>;
    /// Records scrub verdicts for blobs still located in `pack` (a blob
    /// healed or moved meanwhile keeps its state). Returns how many changed.
    async fn blobs_mark(
        &self,
        account_id: i64,
        pack: PackId,
        states: &[(BlobId, u8)],
    ) -> Result<u64, StoreError>;
    /// The account's damaged or missing blobs.
    async fn damaged_blobs(&self, account_id: i64) -> Result<Vec<BlobId>, StoreError>;
    /// The damaged or missing blobs a snapshot references.
    async fn snapshot_damaged(&self, account_id: i64, id: &str) -> Result<Vec<BlobId>, StoreError>;
    /// One GC pass over an account, in one transaction: closes sessions
    /// inactive since `session_cutoff`, removes index entries of blobs no
    /// snapshot and no open session references, and drops packs left
    /// empty. A commit is serialized with it: it either references blobs
    /// before they are removed (then they stay) or is refused after.
    async fn gc_account(
        &self,
        account_id: i64,
        session_cutoff: i64,
    ) -> Result<GcOutcome, StoreError>;
    /// Points the blobs of `old` that are still there at their copies in
    /// the rewritten pack `new`, and drops `old` from the index if no blob
    /// is left in it (then its object may be deleted: returns true).
    async fn pack_rewritten(
        &self,
        account_id: i64,
        old: PackId,
        new: PackId,
        new_key: &str,
        new_size: u64,
        blobs: &[PackBlob],
    ) -> Result<bool, StoreError>;
    /// Records a run of a maintenance job.
    async fn job_record(
        &self,
        kind: &str,
        started: i64,
        finished: i64,
        report: &str,
    ) -> Result<(), StoreError>;
    /// The last run of a job: `(started, finished, report)`.
    async fn job_last(&self, kind: &str) -> Result<Option<(i64, i64, String)>, StoreError>;

    /// The blobs a snapshot references, sorted.
    async fn snapshot_refs(&self, account_id: i64, id: &str) -> Result<Vec<BlobId>, StoreError>;
    /// Rebuilding a lost database: inserts an account as it was (same id).
    async fn import_account(&self, a: &Account) -> Result<(), StoreError>;
    /// Rebuilding: inserts a device as it was (same id).
    async fn import_device(&self, d: &Device) -> Result<(), StoreError>;
    /// Rebuilding: inserts a snapshot with its references, unless one of
    /// them is not indexed (returns false then, inserting nothing).
    async fn import_snapshot(
        &self,
        account_id: i64,
        row: &SnapshotRow,
        session: Option<&str>,
        refs: &[BlobId],
    ) -> Result<bool, StoreError>;

    /// Stores a console session (the hash of its cookie).
    async fn console_session_create(
        &self,
        hash: [u8; 32],
        account_id: i64,
        csrf: &str,
        expires: i64,
        password_at: i64,
    ) -> Result<(), StoreError>;
    /// An unexpired console session.
    async fn console_session(&self, hash: [u8; 32]) -> Result<Option<ConsoleSession>, StoreError>;
    /// Ends a console session.
    async fn console_session_delete(&self, hash: [u8; 32]) -> Result<(), StoreError>;
    /// Stores a one-time sign-in link (the hash of its token).
    async fn console_link_create(
        &self,
        hash: [u8; 32],
        account_id: i64,
        expires: i64,
    ) -> Result<(), StoreError>;
    /// Uses a link: its account if it is unused and unexpired, once.
    async fn console_link_redeem(&self, hash: [u8; 32]) -> Result<Option<i64>, StoreError>;

    /// One attempt to prove a password (or a recovery key, or an invite),
    /// counted under each of `keys` (an account, an address) before it is
    /// checked, in one transaction: `Limited` if a key already has `max`
    /// failures since `since`, else the attempt counts as a failure until
    /// [`MetaStore::auth_attempt_succeeded`] forgets it. Parallel guesses
    /// therefore cannot all pass the count. Failures before `since` are
    /// forgotten.
    async fn auth_attempt(
        &self,
        keys: &[String],
        now: i64,
        since: i64,
        max: u32,
    ) -> Result<AuthAttempt, StoreError>;
    /// Forgets an attempt that succeeded.
    async fn auth_attempt_succeeded(&self, rows: &[i64]) -> Result<(), StoreError>;

    /// Records a backup attempt.
    async fn attempt_add(
        &self,
        account_id: i64,
        device_id: i64,
        attempt: &AttemptRow,
    ) -> Result<(), StoreError>;
    /// Attempts of the account (of one device if given), newest first.
    async fn attempts(
        &self,
        account_id: i64,
        device_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AttemptRow>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_hash_matches_its_bytes_whole_or_cut_and_nothing_else() {
        let full = *blake3::hash(b"sealed").as_bytes();
        assert!(hash_matches(&full, b"sealed"));
        assert!(hash_matches(&full[..STORED_HASH_LEN], b"sealed"));
        assert!(!hash_matches(&full[..STORED_HASH_LEN], b"sealeD"));
        assert!(!hash_matches(&full, b"sealeD"));
        // A record too short to tell is no match.
        assert!(!hash_matches(&full[..8], b"sealed"));
        assert!(!hash_matches(&[], b"sealed"));
    }
}

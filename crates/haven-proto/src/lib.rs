//! The HTTP API between `haven` and `haven-server`: request and response
//! types and the stable error codes, shared by both sides. `docs/API.md`
//! describes the routes.

use serde::{Deserialize, Serialize};

pub use haven_format::keys::KdfParams;
use haven_format::{BlobId, PackId};

mod error;
pub mod fault;
pub mod units;
pub use error::{ErrorBody, ErrorCode, ErrorEnvelope};

/// Header carrying the client's version; a server that needs a newer client
/// answers `client_too_old`.
pub const CLIENT_VERSION_HEADER: &str = "haven-client-version";

/// Header carrying a proof of the password (the `grant` of
/// [`ElevateResponse`]); routes that delete or weaken backups need it.
pub const GRANT_HEADER: &str = "haven-grant";

/// True for a well-formed snapshot or session id: 32 lower-case hex
/// characters. Both sides check it: the server before a lookup, the client
/// before an id from the server goes into a local path.
pub fn is_valid_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Most ids a client may put in one `missing` or `fetch` request.
pub const MAX_IDS_PER_REQUEST: usize = 10_000;

/// `GET /v1/health`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Health {
    /// `"ok"` when the server is ready.
    pub status: String,
    /// Server version.
    pub version: String,
    /// Oldest client version the server accepts.
    pub min_client_version: String,
}

/// `POST /v1/auth/prelogin`: which KDF to run for this email. Unknown
/// emails get stable, plausible fake parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreloginRequest {
    pub email: String,
}

/// Answer to [`PreloginRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreloginResponse {
    pub kdf: KdfParams,
}

/// `POST /v1/auth/signup`. Keys are hex.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignupRequest {
    pub email: String,
    /// Required unless the server allows open sign-up.
    pub invite: Option<String>,
    pub kdf: KdfParams,
    pub auth_key: String,
    pub wrapped_master_key: String,
    pub recovery_auth_key: String,
    pub recovery_wrapped_master_key: String,
    /// Name of the device signing up.
    pub device: String,
}

/// `POST /v1/auth/login`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginRequest {
    pub email: String,
    pub auth_key: String,
    /// Device to sign in as; created if the account has none of that name.
    pub device: String,
}

/// Answer to sign-up and login.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginResponse {
    /// Bearer token for this device.
    pub token: String,
    pub account_id: i64,
    pub device_id: i64,
    pub device: String,
    /// True when the device already existed (a re-install or a wiped laptop).
    pub existing_device: bool,
    /// The master key wrapped by the password (hex).
    pub wrapped_master_key: String,
}

/// `POST /v1/auth/recover`: proves the recovery key and gets its copy of
/// the master key; with `new_password` set, also replaces the password.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecoverRequest {
    pub email: String,
    pub recovery_auth_key: String,
    pub new_password: Option<NewPassword>,
}

/// A new password's KDF parameters, auth key and wrapped master key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewPassword {
    pub kdf: KdfParams,
    pub auth_key: String,
    pub wrapped_master_key: String,
}

/// Answer to [`RecoverRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecoverResponse {
    pub recovery_wrapped_master_key: String,
    pub password_changed: bool,
}

/// A device of the account.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeviceInfo {
    pub id: i64,
    pub name: String,
    /// RFC 3339.
    pub created: String,
    /// RFC 3339 time the server received the newest backup, if any.
    pub last_backup: Option<String>,
    /// RFC 3339 time the device last used its sign-in (to the hour).
    #[serde(default)]
    pub last_seen: Option<String>,
    /// The device has a working sign-in.
    #[serde(default)]
    pub signed_in: bool,
}

/// `POST /v1/auth/elevate` (with the device's token): proves the password
/// again, for the routes that delete or weaken backups.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ElevateRequest {
    /// The auth key derived from the password (hex).
    pub auth_key: String,
}

/// Answer to [`ElevateRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ElevateResponse {
    /// Sent as the `haven-grant` header; valid for this device until `expires`.
    pub grant: String,
    /// RFC 3339.
    pub expires: String,
}

/// `POST /v1/auth/password` (token and grant): a new password. The
/// recovery key stays valid.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChangePasswordRequest {
    pub new_password: NewPassword,
    /// Also sign out every other device of the account (default true).
    #[serde(default = "yes")]
    pub sign_out_other_devices: bool,
}

fn yes() -> bool {
    true
}

/// Answer to [`ChangePasswordRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChangePasswordResponse {
    /// Sign-ins of other devices that were ended.
    pub signed_out: u32,
}

/// `POST /v1/blobs/missing`: which of these does the server lack?
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MissingRequest {
    pub ids: Vec<BlobId>,
}

/// Answer to [`MissingRequest`]: the subset the account does not have.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MissingResponse {
    pub missing: Vec<BlobId>,
}

/// Answer to `PUT /v1/packs/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PackStored {
    pub pack: PackId,
    pub blobs: u32,
    /// Blobs the server already had from an earlier pack (not counted twice).
    pub duplicate_blobs: u32,
}

/// Answer to a part of a resumable pack upload (`PUT /v1/uploads/{id}`)
/// and to `GET /v1/uploads/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadStatus {
    /// Bytes of the pack the server holds; the next part starts here.
    pub offset: u64,
    /// The pack is stored and indexed.
    pub complete: bool,
}

/// Size of the parts of a resumable upload.
pub const UPLOAD_PART: usize = 1 << 20;

/// `POST /v1/blobs/fetch`: the body of the answer is binary, one record
/// per requested id in request order: `id(32) | status(1) | length u32le |
/// sealed blob`, status 0 = found, 1 = missing, 2 = deferred (length 0:
/// the answer is full, ask again). An answer carries at most 64 MiB of blobs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FetchRequest {
    pub ids: Vec<BlobId>,
    /// Most blob bytes the client wants in this answer (the server also
    /// caps it at 64 MiB); at least one blob is always sent. Small answers
    /// get through links that break every few MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
}

/// Status byte of a fetch record: found.
pub const FETCH_FOUND: u8 = 0;
/// Status byte of a fetch record: the server has no such blob (or only a
/// damaged copy).
pub const FETCH_MISSING: u8 = 1;
/// Status byte of a fetch record: not sent because the answer reached its
/// size limit; ask again.
pub const FETCH_DEFERRED: u8 = 2;

/// `POST /v1/snapshots`: commit a backup. Idempotent by `id`: a retry
/// after a lost answer returns the first commit's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommitRequest {
    /// 32 hex characters chosen by the client.
    pub id: String,
    /// The encrypted snapshot description.
    pub snapshot_blob: BlobId,
    /// Backup start, RFC 3339.
    pub time: String,
    pub files: u64,
    pub bytes: u64,
    pub client_version: String,
    /// The snapshot whose referenced set `added` and `removed` are relative
    /// to; `None` means `added` is the whole set.
    pub parent: Option<String>,
    /// Blob ids referenced now and not by `parent`.
    pub added: Vec<BlobId>,
    /// Blob ids referenced by `parent` and not now.
    pub removed: Vec<BlobId>,
    /// The upload session of this backup run.
    #[serde(default)]
    pub session: Option<String>,
    /// A checkpoint of a running backup (incomplete). A complete snapshot
    /// replaces the device's checkpoints.
    #[serde(default)]
    pub checkpoint: bool,
    /// Some categories were left out because the storage was short.
    #[serde(default)]
    pub partial: bool,
    /// What the backup holds per category (logical sizes).
    #[serde(default)]
    pub categories: Vec<CategoryStat>,
}

/// Files and logical bytes of one category in a backup or a scan.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct CategoryStat {
    pub name: String,
    pub files: u64,
    pub bytes: u64,
}

/// `POST /v1/sessions`: open an upload session for this device's backup,
/// or keep `resume` open if it still is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionRequest {
    pub resume: Option<String>,
    /// Quota to reserve for this run: an upper bound of the bytes it will
    /// store. Refused with `quota_exceeded` if it does not fit; replaces
    /// the session's earlier reservation. The reservation ends when the
    /// run commits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserve: Option<u64>,
}

/// Answer to [`SessionRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionResponse {
    pub session: String,
    /// Days an inactive session and what it uploaded are kept.
    pub retention_days: u32,
    /// The account's quota; `null` means none.
    #[serde(default)]
    pub quota: Option<u64>,
    /// Bytes this session may still store: the quota less what is used
    /// and what other running backups reserved. `null` without a quota.
    #[serde(default)]
    pub available: Option<u64>,
    /// Blobs of the account that scrub found damaged or missing: the
    /// backup uploads them again from files that still have them, even
    /// unchanged ones.
    #[serde(default)]
    pub damaged: Vec<BlobId>,
}

/// `GET /v1/snapshots/{id}/damaged`: the damaged or missing blobs a backup
/// references (the client maps them to paths).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DamagedResponse {
    pub blobs: Vec<BlobId>,
}

/// A committed backup as the server records it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SnapshotRecord {
    pub id: String,
    pub device: String,
    pub device_id: i64,
    /// RFC 3339: when the backup started, by the device's clock (shown).
    pub time: String,
    /// RFC 3339: when the server received it, by the server's clock
    /// (retention and expiry count from it).
    #[serde(default)]
    pub received: Option<String>,
    pub files: u64,
    pub bytes: u64,
    pub snapshot_blob: BlobId,
    pub parent: Option<String>,
    pub client_version: String,
    /// Number of distinct blobs the backup references.
    pub blobs: u64,
    /// False for a checkpoint of a backup that has not finished (yet).
    pub complete: bool,
    /// Bytes deleting this backup would free at once.
    #[serde(default)]
    pub freed_if_deleted: u64,
    /// Some categories were left out because the storage was short.
    #[serde(default)]
    pub partial: bool,
    /// What the backup holds per category (logical sizes).
    #[serde(default)]
    pub categories: Vec<CategoryStat>,
    /// `ok`, or `damaged` when scrub found blobs it references damaged or
    /// missing (the next backup of a device that has them heals it).
    #[serde(default = "ok")]
    pub health: String,
    /// How many referenced blobs are damaged or missing.
    #[serde(default)]
    pub damaged_blobs: u64,
    /// In a commit's answer: older backups of the device that the
    /// retention policy removed after this one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pruned: Vec<String>,
}

fn ok() -> String {
    "ok".into()
}

/// `GET /v1/usage`: where the account's storage went.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UsageResponse {
    /// The account's plan; `null` on a server without plans.
    pub plan: Option<String>,
    /// Quota in bytes; `null` means none.
    pub quota: Option<u64>,
    /// Stored size (after dedup and compression) of every blob a backup or
    /// an open upload session references, each counted once.
    pub used: u64,
    /// `quota - used - reserved`, or `null` without a quota.
    pub free: Option<u64>,
    /// Quota reserved by backups running now, beyond what they stored yet.
    #[serde(default)]
    pub reserved: u64,
    /// Bytes of the account's pack files on the server, garbage included.
    pub stored_physical: u64,
    /// Stored size referenced by each device's backups (shared data counts for each).
    pub devices: Vec<DeviceUsage>,
    /// Per device and category: what the device's newest complete backup
    /// holds (logical sizes, before dedup and compression).
    pub categories: Vec<CategoryUsage>,
    /// Devices whose backups expire soon because they stopped backing up.
    #[serde(default)]
    pub expiring: Vec<ExpiryWarning>,
}

/// A device that has not backed up for a long time.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExpiryWarning {
    pub device: String,
    /// RFC 3339.
    pub last_backup: String,
    /// RFC 3339: when its backups are deleted unless it backs up again.
    pub expires: String,
}

/// `GET /v1/plans`: the plans of this server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PlansResponse {
    /// The account's plan; `null` on a server without plans.
    pub current: Option<String>,
    pub plans: Vec<PlanInfo>,
}

/// One plan.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PlanInfo {
    pub name: String,
    pub quota: u64,
    /// Users may move to it themselves (`haven plan set`).
    pub selectable: bool,
}

/// `PUT /v1/plan`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetPlanRequest {
    pub plan: String,
}

/// A category of a device: its switch and the figures of its last scan.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CategoryInfo {
    pub name: String,
    pub enabled: bool,
    /// Files and logical bytes in the last scan.
    pub files: u64,
    pub bytes: u64,
    /// Of those, bytes in new or changed files: what the next backup
    /// would store at most (before dedup and compression).
    pub new_bytes: u64,
    /// RFC 3339 time of the last scan, `null` if never scanned.
    pub scanned: Option<String>,
}

/// `POST /v1/categories`: a device reports its scan; the answer is the
/// device's categories with their switches.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScanReport {
    pub categories: Vec<CategoryScan>,
}

/// One category in a [`ScanReport`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct CategoryScan {
    pub name: String,
    pub files: u64,
    pub bytes: u64,
    pub new_bytes: u64,
}

/// `PUT /v1/categories/{name}[?device=NAME]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetCategoryRequest {
    pub enabled: bool,
}

/// One backup attempt, as `POST /v1/attempts` records it and
/// `GET /v1/attempts` lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Attempt {
    /// Filled by the server in lists.
    #[serde(default)]
    pub device: String,
    /// RFC 3339.
    pub started: String,
    /// RFC 3339.
    pub finished: String,
    /// `ok`, `partial` or `failed`.
    pub result: String,
    /// The error code of a failure, or `quota_exceeded` for a partial backup.
    pub code: Option<String>,
    pub message: String,
    #[serde(default)]
    pub fix: Vec<String>,
    /// The backup it saved, if any.
    pub snapshot: Option<String>,
    #[serde(default)]
    pub uploaded_bytes: u64,
    /// RFC 3339, filled by the server in lists: when it received the
    /// attempt, by its own clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received: Option<String>,
}

/// One device's share of [`UsageResponse`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeviceUsage {
    pub device: String,
    pub bytes: u64,
}

/// One category of one device.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CategoryUsage {
    pub device: String,
    pub category: String,
    pub bytes: u64,
    pub files: u64,
}

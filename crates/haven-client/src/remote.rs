use bytes::Bytes;
use haven_format::{BlobId, PackId};
use haven_proto::{
    Attempt, CategoryInfo, CategoryScan, CommitRequest, DeviceInfo, PlansResponse, SessionResponse,
    SnapshotRecord,
};

use crate::Result;

/// What the backup engine needs from a server. [`crate::HttpRemote`] is the
/// real one; the trait keeps the engine free of HTTP.
pub trait Remote: Send + Sync {
    /// The subset of `ids` the server lacks.
    fn missing(&self, ids: &[BlobId]) -> Result<Vec<BlobId>>;
    /// Opens (or, with `resume`, continues) the upload session of a backup
    /// run; later uploads belong to it. With `reserve`, reserves that much
    /// quota for it (`quota_exceeded` if it does not fit).
    fn open_session(&self, resume: Option<&str>, reserve: Option<u64>) -> Result<SessionResponse>;
    /// Uploads a finished pack.
    fn put_pack(&self, id: PackId, pack: Vec<u8>) -> Result<()>;
    /// Sealed blobs in request order; `None` where the server has none (or
    /// only a damaged copy).
    fn fetch(&self, ids: &[BlobId]) -> Result<Vec<Option<Bytes>>>;
    /// Commits a snapshot.
    fn commit(&self, req: &CommitRequest) -> Result<SnapshotRecord>;
    /// Snapshots of the account, or of one device, newest first.
    fn snapshots(&self, device: Option<&str>) -> Result<Vec<SnapshotRecord>>;
    /// A device's newest snapshot (complete or a checkpoint).
    fn latest(&self, device: &str) -> Result<Option<SnapshotRecord>> {
        Ok(self.snapshots(Some(device))?.into_iter().next())
    }
    /// Like [`Remote::snapshots`] for a caller that only picks one: the
    /// server may leave `freed_if_deleted` at 0, which saves it a lookup
    /// of every blob of every backup listed.
    fn snapshots_brief(&self, device: Option<&str>) -> Result<Vec<SnapshotRecord>> {
        self.snapshots(device)
    }
    /// One snapshot.
    fn snapshot(&self, id: &str) -> Result<SnapshotRecord>;
    /// Deletes a snapshot.
    fn delete_snapshot(&self, id: &str) -> Result<()>;
    /// Where the account's storage went.
    fn usage(&self) -> Result<haven_proto::UsageResponse>;
    /// The account's devices.
    fn devices(&self) -> Result<Vec<DeviceInfo>>;
    /// The damaged or missing blobs a snapshot references.
    fn snapshot_damaged(&self, id: &str) -> Result<Vec<haven_format::BlobId>>;
    /// Records this device's scan; returns its categories and switches.
    fn report_scan(&self, scan: &[CategoryScan]) -> Result<Vec<CategoryInfo>>;
    /// This device's categories and switches, as last reported.
    fn switches(&self) -> Result<Vec<CategoryInfo>>;
    /// Records a backup attempt in the device's history.
    fn record_attempt(&self, attempt: &Attempt) -> Result<()>;
    /// The server's plans.
    fn plans(&self) -> Result<PlansResponse>;
    /// The account's sealed compression dictionary; `None` while no device
    /// has set one. A server from before dictionaries answers `NotFound`.
    fn dictionary(&self) -> Result<Option<Vec<u8>>>;
    /// Sets the account's sealed compression dictionary unless it has one;
    /// returns the one it has now.
    fn set_dictionary(&self, sealed: Vec<u8>) -> Result<Vec<u8>>;
    /// Bytes sent so far (request bodies), for reports.
    fn bytes_sent(&self) -> u64;
    /// Requests sent so far, retries included, for reports.
    fn requests(&self) -> u64;
}

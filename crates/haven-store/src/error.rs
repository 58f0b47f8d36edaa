use thiserror::Error;

/// Storage failures. `NotFound` and `Conflict` are answers about the data;
/// `Io` and `Db` are failures of the backend, which callers report as
/// "storage unavailable" and may retry.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The object or record does not exist.
    #[error("not found")]
    NotFound,
    /// A uniqueness rule was violated (e.g. the email is taken).
    #[error("conflict: {0}")]
    Conflict(&'static str),
    /// The request breaks a rule of the store (bad key, bad reference).
    #[error("invalid: {0}")]
    Invalid(String),
    /// A commit references blobs that are not stored.
    #[error("{} referenced blobs are missing", .0.len())]
    BlobsMissing(Vec<haven_format::BlobId>),
    /// The account's quota cannot hold the bytes asked for.
    #[error("quota exceeded: {needed} bytes needed, {available} available")]
    QuotaExceeded { needed: u64, available: u64 },
    /// The local filesystem failed.
    #[error("object store I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The database failed.
    #[error("metadata database: {0}")]
    Db(#[from] sqlx::Error),
    /// The database failed a lookup ([`crate::SqliteMeta`]'s read-only
    /// connections).
    #[error("metadata database: {0}")]
    Lookup(#[from] rusqlite::Error),
}

//! Server-side storage: the [`ObjectStore`] that holds packs and the
//! [`MetaStore`] that indexes accounts, blobs and snapshots.
//!
//! Both are traits whose guarantees are written on them; the server only
//! talks to the traits, so the embedded backends (a local directory and
//! SQLite) and the scale-out ones (S3 and PostgreSQL, later) are
//! configuration, not forks. `tests/conformance.rs` is the suite every
//! implementation must pass.

mod error;
mod limit;
mod local;
pub mod meta;
mod object;
pub mod refset;
mod sqlite;

pub use error::StoreError;
pub use limit::CapacityLimit;
pub use local::LocalDirStore;
pub use meta::MetaStore;
pub use object::{ObjectStore, check_key};
pub use sqlite::{MIGRATIONS, SqliteMeta};

/// Seconds since the Unix epoch, the time unit of every stored record.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

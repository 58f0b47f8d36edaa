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

/// The clock of the server's records and time rules (retention, expiry,
/// sign-ins): the system's, or in tests the system's moved by an offset
/// the test sets. Clones share the offset.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    offset: Option<std::sync::Arc<std::sync::atomic::AtomicI64>>,
}

impl Clock {
    /// A clock that tests can move with [`Clock::advance`].
    pub fn movable() -> Self {
        Clock {
            offset: Some(Default::default()),
        }
    }

    /// Seconds since the Unix epoch by this clock.
    pub fn now(&self) -> i64 {
        let offset = self
            .offset
            .as_ref()
            .map_or(0, |o| o.load(std::sync::atomic::Ordering::Relaxed));
        now_secs() + offset
    }

    /// Moves a movable clock by `secs` (negative: back); a system clock
    /// does not move.
    pub fn advance(&self, secs: i64) {
        if let Some(o) = &self.offset {
            o.fetch_add(secs, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

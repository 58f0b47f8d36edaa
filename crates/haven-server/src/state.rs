use std::sync::Arc;

use haven_store::{MetaStore, ObjectStore};

use crate::config::Config;

/// What every request handler shares.
pub struct AppState {
    pub meta: Arc<dyn MetaStore>,
    pub objects: Arc<dyn ObjectStore>,
    pub config: Config,
    /// Keys the fake KDF salts of unknown emails (stable across restarts).
    pub prelogin_secret: [u8; 32],
    /// One lock per staging file of a resumable upload.
    pub uploads: crate::api::upload::UploadLocks,
    /// The staged packs being written now (staging.rs).
    pub uploads_in_flight: crate::staging::InFlight,
    /// Held while a snapshot's copy is written and committed, or while a
    /// snapshot is deleted: a copy stored as a delta never loses its base.
    pub snapshot_lock: tokio::sync::Mutex<()>,
    /// Held while an account's first compression dictionary is copied and
    /// stored: the copy always holds the dictionary the database keeps.
    pub dictionary_lock: tokio::sync::Mutex<()>,
}

impl AppState {
    /// Now, by the server's clock (see [`Config::clock`]).
    pub fn now(&self) -> i64 {
        self.config.clock.now()
    }
}

pub type SharedState = Arc<AppState>;

//! The Haven server: the HTTP API over a [`MetaStore`](haven_store::MetaStore)
//! and an [`ObjectStore`](haven_store::ObjectStore).

pub mod api;
pub mod config;
pub mod error;
pub mod state;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use haven_store::{CapacityLimit, LocalDirStore, MetaStore, ObjectStore, SqliteMeta};
use rand::RngCore;

pub use config::Config;
use state::{AppState, SharedState};

/// Opens the embedded backends under `config.data_dir`.
pub async fn open_state(config: Config) -> anyhow::Result<SharedState> {
    let dir = &config.data_dir;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    let meta = SqliteMeta::open(&dir.join("haven.db"))
        .await
        .with_context(|| format!("cannot open the database in {}", dir.display()))?;
    let local = LocalDirStore::open(dir)
        .with_context(|| format!("cannot open the pack store in {}", dir.display()))?;
    let objects: Arc<dyn ObjectStore> = match &config.max_store_bytes {
        Some(text) => {
            let max = haven_proto::units::parse_bytes(text).with_context(|| {
                format!("max_store_bytes = {text:?} is not a size such as \"500 GB\"")
            })?;
            Arc::new(CapacityLimit::new(local, max).await?)
        }
        None => Arc::new(local),
    };
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let stored = meta.setting_init("prelogin_secret", &secret).await?;
    let prelogin_secret = stored
        .as_slice()
        .try_into()
        .context("the stored prelogin secret is damaged")?;
    Ok(Arc::new(AppState {
        meta: Arc::new(meta),
        objects,
        config,
        prelogin_secret,
        uploads: Default::default(),
    }))
}

/// A server bound to its port, not yet serving.
pub struct Bound {
    pub addr: SocketAddr,
    listener: tokio::net::TcpListener,
    state: SharedState,
}

/// Opens the stores and binds the listen address.
pub async fn bind(config: Config) -> anyhow::Result<Bound> {
    let listen = config.listen;
    let state = open_state(config).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (is another server running there?)"))?;
    Ok(Bound {
        addr: listener.local_addr()?,
        listener,
        state,
    })
}

impl Bound {
    /// Serves until `shutdown` resolves.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let app = api::router(self.state);
        axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await?;
        Ok(())
    }
}

/// Creates a one-time invite and returns its code.
pub async fn create_invite(config: &Config, email: Option<&str>) -> anyhow::Result<String> {
    let state = open_state(config.clone()).await?;
    let mut code = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut code);
    let code = hex::encode(code);
    let expires = haven_store::now_secs() + i64::from(config.invite_days) * 86_400;
    let email = email.map(|e| e.trim().to_lowercase());
    state
        .meta
        .invite_create(
            *blake3::hash(code.as_bytes()).as_bytes(),
            email.as_deref(),
            expires,
        )
        .await?;
    Ok(code)
}

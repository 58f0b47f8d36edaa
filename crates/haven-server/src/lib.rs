//! The Haven server: the HTTP API over a [`MetaStore`](haven_store::MetaStore)
//! and an [`ObjectStore`](haven_store::ObjectStore).

pub mod admission;
pub mod api;
pub mod config;
pub mod console;
pub mod error;
pub mod heap;
pub mod integrity;
pub mod journal;
pub mod retention;
pub mod staging;
pub mod state;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use haven_store::{CapacityLimit, LocalDirStore, MetaStore, ObjectStore, SqliteMeta};
use rand::RngCore;

pub use config::Config;
use state::{AppState, SharedState};

/// Opens the embedded backends under `config.data_dir`.
pub async fn open_state(mut config: Config) -> anyhow::Result<SharedState> {
    config.validate()?;
    let dir = &config.data_dir;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    let meta = SqliteMeta::open(&dir.join("haven.db"))
        .await
        .with_context(|| format!("cannot open the database in {}", dir.display()))?
        .with_clock(config.clock.clone());
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
    // A rebuilt database keeps the secret it had (fake salts stay stable).
    let mut secret = [0u8; 32];
    match objects.get("meta/settings/prelogin_secret").await {
        Ok(old) if old.len() == 32 => secret.copy_from_slice(&old),
        _ => rand::rngs::OsRng.fill_bytes(&mut secret),
    }
    let stored = meta.setting_init("prelogin_secret", &secret).await?;
    let prelogin_secret = stored
        .as_slice()
        .try_into()
        .context("the stored prelogin secret is damaged")?;
    let state = Arc::new(AppState {
        meta: Arc::new(meta),
        objects,
        config,
        prelogin_secret,
        uploads: Default::default(),
        uploads_in_flight: Default::default(),
        snapshot_lock: Default::default(),
        dictionary_lock: Default::default(),
    });
    journal::setting(&state, "prelogin_secret", &stored).await?;
    journal::backfill(&state).await?;
    Ok(state)
}

/// How long a new connection may take to send its first request's
/// headers (the TLS handshake included).
const FIRST_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A server bound to its port, not yet serving.
pub struct Bound {
    pub addr: SocketAddr,
    listener: tokio::net::TcpListener,
    state: SharedState,
    /// The TLS configuration when the server serves HTTPS itself.
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
    /// Held while serving: `reindex` refuses to run under a live server.
    _lock: std::fs::File,
}

/// Locks the data directory against a rebuild while a server runs.
fn serving_lock(config: &Config) -> anyhow::Result<std::fs::File> {
    std::fs::create_dir_all(&config.data_dir)?;
    let path = config.data_dir.join("server.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "a Haven server is running on {} (or a reindex is): stop it first",
            config.data_dir.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => Err(e.into()),
    }
}

/// Opens the stores and binds the listen address.
pub async fn bind(config: Config) -> anyhow::Result<Bound> {
    let listen = config.listen;
    let lock = serving_lock(&config)?;
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(axum_server::tls_rustls::RustlsConfig::from_config(
            tls::load(cert, key)?,
        )),
        _ => None,
    };
    let state = open_state(config).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (is another server running there?)"))?;
    Ok(Bound {
        addr: listener.local_addr()?,
        listener,
        state,
        tls,
        _lock: lock,
    })
}

/// Re-reads the certificate and key files of a server that serves HTTPS.
#[derive(Clone)]
pub struct TlsReloader {
    config: axum_server::tls_rustls::RustlsConfig,
    state: SharedState,
}

impl TlsReloader {
    /// Loads the files again; on success new connections get the new
    /// certificate, on failure the old one keeps serving.
    pub fn reload(&self) -> anyhow::Result<()> {
        let c = &self.state.config;
        let (Some(cert), Some(key)) = (&c.tls_cert, &c.tls_key) else {
            anyhow::bail!("this server does not serve HTTPS");
        };
        self.config.reload_from_config(tls::load(cert, key)?);
        Ok(())
    }
}

impl Bound {
    /// `https` when the server serves TLS itself, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// What re-reads the certificate (SIGHUP in `haven-server serve`).
    pub fn tls_reloader(&self) -> Option<TlsReloader> {
        self.tls.clone().map(|config| TlsReloader {
            config,
            state: self.state.clone(),
        })
    }

    /// Serves until `shutdown` resolves, then finishes the requests under
    /// way (for at most 30 s).
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let jobs = tokio::spawn(maintenance(self.state.clone()));
        let meta = self.state.meta.clone();
        let max = match self.state.config.max_connections {
            0 => admission::default_max(),
            n => n as usize,
        };
        let admission = admission::Admission::new(max);
        let app =
            api::router(self.state).into_make_service_with_connect_info::<std::net::SocketAddr>();
        let handle = axum_server::Handle::new();
        let stopper = handle.clone();
        tokio::spawn(async move {
            shutdown.await;
            stopper.graceful_shutdown(Some(std::time::Duration::from_secs(30)));
        });
        let listener = self.listener.into_std()?;
        // Timeouts that free a connection which sends nothing, or its
        // headers too slowly (admission.rs).
        macro_rules! limited {
            ($server:expr) => {{
                let mut server = $server
                    .handle(handle)
                    .first_request_timeout(FIRST_REQUEST_TIMEOUT);
                server
                    .http_builder()
                    .http1()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(FIRST_REQUEST_TIMEOUT);
                server.serve(app).await?
            }};
        }
        match self.tls {
            Some(tls) => limited!(
                axum_server::from_tcp(listener)?.acceptor(
                    axum_server::tls_rustls::RustlsAcceptor::new(tls)
                        .handshake_timeout(FIRST_REQUEST_TIMEOUT)
                        .acceptor(admission)
                )
            ),
            None => limited!(axum_server::from_tcp(listener)?.acceptor(admission)),
        }
        jobs.abort();
        // A maintenance job cut off mid-transaction rolls back; the store
        // then folds its log into the database file.
        let _ = jobs.await;
        meta.close().await?;
        Ok(())
    }
}

/// Periodic work: expiry of devices that stopped backing up, and scrub
/// and GC when their last run (recorded in the database, so restarts do
/// not reset the schedule) is older than their interval.
async fn maintenance(state: SharedState) {
    let every =
        std::time::Duration::from_secs(u64::from(state.config.maintenance_minutes.max(1)) * 60);
    loop {
        match api::auth::expire_tokens(&state).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(expired = n, "unused device sign-ins expired"),
            Err(e) => {
                tracing::error!(error = %e.body.message, "expiring sign-ins failed; it runs again later")
            }
        }
        let (_, freed) = staging::sweep(&state).await;
        if freed > 0 {
            tracing::info!(bytes = freed, "idle uploads dropped");
        }
        match retention::expire(&state).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "expired backups deleted"),
            Err(e) => tracing::error!(error = %e, "expiry failed; it runs again later"),
        }
        if due(&state, "gc", i64::from(state.config.gc_hours) * 3600).await {
            match integrity::gc(&state).await {
                Ok(r) => tracing::info!(?r, "gc done"),
                Err(e) => tracing::error!(error = %e, "gc failed; it runs again later"),
            }
        }
        if due(&state, "scrub", i64::from(state.config.scrub_days) * 86_400).await {
            match integrity::scrub(&state).await {
                Ok(r) if r.damaged + r.missing > 0 => tracing::error!(
                    damaged = r.damaged,
                    missing = r.missing,
                    backups = r.damaged_backups,
                    "scrub found damaged or missing data; the next backup of each device re-uploads what it still has"
                ),
                Ok(r) => tracing::info!(checked = r.checked, "scrub: every blob is intact"),
                Err(e) => tracing::error!(error = %e, "scrub failed; it runs again later"),
            }
        }
        tokio::time::sleep(every).await;
    }
}

async fn due(state: &SharedState, job: &str, interval_secs: i64) -> bool {
    if interval_secs == 0 {
        return false;
    }
    match state.meta.job_last(job).await {
        Ok(Some((_, finished, _))) => state.now() - finished >= interval_secs,
        Ok(None) => true,
        Err(_) => false,
    }
}

/// Runs a scrub with the server's stores (also while the server runs).
pub async fn run_scrub(config: &Config) -> anyhow::Result<integrity::ScrubReport> {
    let state = open_state(config.clone()).await?;
    Ok(integrity::scrub(&state).await?)
}

/// Runs a GC pass with the server's stores (also while the server runs).
pub async fn run_gc(config: &Config) -> anyhow::Result<integrity::GcReport> {
    let state = open_state(config.clone()).await?;
    Ok(integrity::gc(&state).await?)
}

/// Runs the expiry of devices that stopped backing up, and of unused
/// sign-ins, now (the maintenance job runs it hourly); returns how many
/// backups were deleted.
pub async fn run_expiry(config: &Config) -> anyhow::Result<u64> {
    let state = open_state(config.clone()).await?;
    api::auth::expire_tokens(&state)
        .await
        .map_err(|e| anyhow::anyhow!(e.body.message))?;
    Ok(retention::expire(&state).await?)
}

/// Deletes staged uploads idle for an hour (the maintenance job does it
/// too); returns the bytes freed.
pub async fn sweep_uploads(config: &Config) -> anyhow::Result<u64> {
    let state = open_state(config.clone()).await?;
    Ok(staging::sweep(&state).await.1)
}

/// Creates a one-time invite (for `plan`, or the default plan) and
/// returns its code.
pub async fn create_invite(
    config: &Config,
    email: Option<&str>,
    plan: Option<&str>,
) -> anyhow::Result<String> {
    if let Some(p) = plan
        && !config.plans.iter().any(|x| x.name == p)
    {
        anyhow::bail!(
            "there is no plan {p:?} in the configuration (plans: {})",
            plan_names(config)
        );
    }
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
            plan,
        )
        .await?;
    Ok(code)
}

fn plan_names(config: &Config) -> String {
    if config.plans.is_empty() {
        return "none".into();
    }
    config
        .plans
        .iter()
        .map(|p| p.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// An account as `haven-server user list` shows it.
#[derive(Debug, serde::Serialize)]
pub struct UserSummary {
    pub email: String,
    pub admin: bool,
    pub plan: Option<String>,
    pub quota: Option<u64>,
    pub used: u64,
    pub devices: usize,
    pub created: String,
}

/// Every account with its plan and usage.
pub async fn list_users(config: &Config) -> anyhow::Result<Vec<UserSummary>> {
    let state = open_state(config.clone()).await?;
    let mut out = Vec::new();
    for a in state.meta.accounts().await? {
        let plan = config.plan(a.plan.as_deref());
        out.push(UserSummary {
            used: state.meta.usage(a.id).await?.used,
            devices: state.meta.devices(a.id).await?.len(),
            email: a.email,
            admin: a.is_admin,
            plan: plan.map(|p| p.name.clone()),
            quota: plan.map(|p| p.quota_bytes),
            created: api::rfc3339(a.created),
        });
    }
    Ok(out)
}

/// Puts an account on a plan (any configured plan, selectable or not).
pub async fn set_user_plan(config: &Config, email: &str, plan: &str) -> anyhow::Result<()> {
    if !config.plans.iter().any(|p| p.name == plan) {
        anyhow::bail!(
            "there is no plan {plan:?} in the configuration (plans: {})",
            plan_names(config)
        );
    }
    let state = open_state(config.clone()).await?;
    let email = email.trim().to_lowercase();
    let Some(a) = state.meta.account_by_email(&email).await? else {
        anyhow::bail!("there is no account {email:?} (see `haven-server user list`)");
    };
    state.meta.account_set_plan(a.id, Some(plan)).await?;
    journal::account(&state, a.id).await?;
    Ok(())
}

/// Rebuilds a lost or corrupted database from the packs and the metadata
/// copies in the object store. The old database file, if any, is kept
/// beside it as `haven.db.broken-<time>`. The server must not be running.
pub async fn reindex(config: &Config) -> anyhow::Result<journal::ReindexReport> {
    let _lock = serving_lock(config)?;
    let db = config.data_dir.join("haven.db");
    if db.exists() {
        let aside = config
            .data_dir
            .join(format!("haven.db.broken-{}", haven_store::now_secs()));
        std::fs::rename(&db, &aside)
            .with_context(|| format!("cannot move the old database {} aside", db.display()))?;
        for ext in ["-wal", "-shm"] {
            let side = config.data_dir.join(format!("haven.db{ext}"));
            if side.exists() {
                let _ = std::fs::rename(&side, format!("{}{ext}", aside.display()));
            }
        }
        eprintln!("The old database was moved to {}.", aside.display());
    }
    let state = open_state(config.clone()).await?;
    Ok(journal::rebuild(&state).await?)
}

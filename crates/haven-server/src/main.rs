use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use haven_server::config::{Config, Overrides};

/// The Haven backup server.
#[derive(Parser)]
#[command(name = "haven-server", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct Common {
    /// TOML config file (see docs/OPERATIONS.md).
    #[arg(long, env = "HAVEN_CONFIG")]
    config: Option<PathBuf>,
    /// Directory for the database and the packs.
    #[arg(long, env = "HAVEN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Set any config key, e.g. `--set keep_last=5` (repeatable; see docs/OPERATIONS.md).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        #[command(flatten)]
        common: Common,
        /// Address to listen on [default: 127.0.0.1:8420].
        #[arg(long, env = "HAVEN_LISTEN")]
        listen: Option<SocketAddr>,
        /// Let anyone who can reach the server create an account.
        #[arg(long, env = "HAVEN_ALLOW_SIGNUP")]
        allow_signup: bool,
        /// Serve HTTPS with this PEM certificate chain (with --tls-key;
        /// re-read on SIGHUP).
        #[arg(long, env = "HAVEN_TLS_CERT", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
        #[arg(long, env = "HAVEN_TLS_KEY", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
    /// Check every stored blob; mark damaged and missing ones (also while
    /// the server runs).
    Scrub {
        #[command(flatten)]
        common: Common,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove data no backup and no running upload references (also while
    /// the server runs).
    Gc {
        #[command(flatten)]
        common: Common,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rebuild a lost or corrupted database from the packs and the
    /// metadata copies in the data directory. Stop the server first.
    Reindex {
        #[command(flatten)]
        common: Common,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Manage accounts.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Print a one-time invite code for `haven signup --invite CODE`.
    Invite {
        #[command(flatten)]
        common: Common,
        /// Only this email may redeem the invite.
        #[arg(long)]
        email: Option<String>,
        /// The plan of the account it creates [default: default_plan].
        #[arg(long)]
        plan: Option<String>,
    },
    /// Add an account for EMAIL: prints the invite its owner signs up
    /// with (the password never reaches the server, so the owner chooses it).
    Add {
        #[command(flatten)]
        common: Common,
        email: String,
        /// The account's plan [default: default_plan].
        #[arg(long)]
        plan: Option<String>,
    },
    /// List accounts with their plan and usage.
    List {
        #[command(flatten)]
        common: Common,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Put an account on a plan.
    SetPlan {
        #[command(flatten)]
        common: Common,
        email: String,
        plan: String,
    },
}

fn load(common: Common, listen: Option<SocketAddr>, allow_signup: bool) -> anyhow::Result<Config> {
    Config::load(
        common.config.as_deref(),
        Overrides {
            listen,
            data_dir: common.data_dir,
            allow_signup,
            set: common.set,
        },
    )
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            common,
            listen,
            allow_signup,
            tls_cert,
            tls_key,
        } => {
            let mut config = load(common, listen, allow_signup)?;
            if tls_cert.is_some() {
                config.tls_cert = tls_cert;
                config.tls_key = tls_key;
            }
            config.validate()?;
            let data_dir = config.data_dir.clone();
            let signup = config.allow_signup;
            let bound = haven_server::bind(config).await?;
            tracing::info!(addr = %bound.addr, data_dir = %data_dir.display(), open_signup = signup, scheme = bound.scheme(), "haven-server ready");
            eprintln!(
                "haven-server {} listening on {}://{} (data in {})",
                env!("CARGO_PKG_VERSION"),
                bound.scheme(),
                bound.addr,
                data_dir.display()
            );
            if let Some(reloader) = bound.tls_reloader() {
                tokio::spawn(reload_on_sighup(reloader));
            }
            bound.serve(stop_requested()).await
        }
        Command::User { command } => user(command).await,
        Command::Scrub { common, json } => {
            let config = load(common, None, false)?;
            let r = haven_server::run_scrub(&config).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "Checked {} blobs in {} packs ({:.2} GB) in {:.1} s: {} damaged, {} missing, {} backups affected.",
                    r.checked,
                    r.packs,
                    r.bytes as f64 / 1e9,
                    r.duration_secs,
                    r.damaged,
                    r.missing,
                    r.damaged_backups
                );
                if r.damaged + r.missing > 0 {
                    println!(
                        "The damaged data is quarantined. The next backup of each device uploads again what the device still has; `haven backups list` shows which backups are affected."
                    );
                }
            }
            // Monitoring tells a clean store from a damaged one by the
            // exit status, like `haven verify`.
            if r.damaged + r.missing > 0 {
                return Err(Exit(3).into());
            }
            Ok(())
        }
        Command::Reindex { common, json } => {
            let config = load(common, None, false)?;
            let r = haven_server::reindex(&config).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "Rebuilt the database: {} accounts ({} with a compression dictionary), {} devices, {} sign-ins, {} packs with {} blobs, {} backups.",
                    r.accounts,
                    r.dictionaries,
                    r.devices,
                    r.sign_ins,
                    r.packs,
                    r.blobs,
                    r.snapshots
                );
                if r.unreadable_packs > 0 {
                    println!(
                        "{} pack files could not be read and were left out; run `haven-server scrub` after starting the server.",
                        r.unreadable_packs
                    );
                }
                if !r.incomplete_snapshots.is_empty() {
                    println!(
                        "{} backups reference data that is in no pack and were left out: {}",
                        r.incomplete_snapshots.len(),
                        r.incomplete_snapshots.join(", ")
                    );
                }
            }
            Ok(())
        }
        Command::Gc { common, json } => {
            let config = load(common, None, false)?;
            let r = haven_server::run_gc(&config).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "Removed {} unreferenced blobs ({:.2} GB); deleted {} packs, rewrote {}; expired {} abandoned uploads; {:.1} s.",
                    r.blobs_removed,
                    r.bytes_removed as f64 / 1e9,
                    r.packs_deleted,
                    r.packs_rewritten,
                    r.sessions_expired,
                    r.duration_secs
                );
            }
            Ok(())
        }
    }
}

fn size(n: Option<u64>) -> String {
    n.map_or("no quota".into(), |n| format!("{:.2} GB", n as f64 / 1e9))
}

async fn user(command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Invite {
            common,
            email,
            plan,
        } => {
            let config = load(common, None, false)?;
            let code =
                haven_server::create_invite(&config, email.as_deref(), plan.as_deref()).await?;
            println!("{code}");
            eprintln!(
                "One-time invite, valid {} days{}. Sign up with: haven signup --server URL --email EMAIL --invite {code}",
                config.invite_days,
                email.map(|e| format!(" for {e}")).unwrap_or_default()
            );
        }
        UserCommand::Add {
            common,
            email,
            plan,
        } => {
            let config = load(common, None, false)?;
            let code = haven_server::create_invite(&config, Some(&email), plan.as_deref()).await?;
            println!("{code}");
            eprintln!(
                "Account for {email} ready to claim within {} days{}: on their device, run\n  haven signup --server URL --email {email} --invite {code}\nThey choose the password there; it never reaches this server.",
                config.invite_days,
                plan.map(|p| format!(" on plan {p}")).unwrap_or_default()
            );
        }
        UserCommand::List { common, json } => {
            let config = load(common, None, false)?;
            let users = haven_server::list_users(&config).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&users)?);
            } else {
                for u in users {
                    println!(
                        "{:<32} {:<10} {:>10} used of {:<10} {} devices{}",
                        u.email,
                        u.plan.as_deref().unwrap_or("-"),
                        size(Some(u.used)),
                        size(u.quota),
                        u.devices,
                        if u.admin { "  (admin)" } else { "" }
                    );
                }
            }
        }
        UserCommand::SetPlan {
            common,
            email,
            plan,
        } => {
            let config = load(common, None, false)?;
            haven_server::set_user_plan(&config, &email, &plan).await?;
            println!("{email} is now on plan {plan}.");
        }
    }
    Ok(())
}

/// A run that did its job and reports a finding by its exit status (the
/// report is already printed).
#[derive(Debug)]
struct Exit(u8);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit status {}", self.0)
    }
}

impl std::error::Error for Exit {}

#[tokio::main]
async fn main() -> ExitCode {
    haven_server::heap::return_large_frees();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HAVEN_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<Exit>().is_some() => {
            ExitCode::from(e.downcast_ref::<Exit>().map_or(1, |x| x.0))
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Re-reads the TLS certificate and key on each SIGHUP (what certbot's
/// and acme.sh's renewal hooks send).
async fn reload_on_sighup(reloader: haven_server::TlsReloader) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(
                "cannot listen for SIGHUP ({e}); restart the server to load a renewed certificate"
            );
            return;
        }
    };
    while hup.recv().await.is_some() {
        match reloader.reload() {
            Ok(()) => {
                tracing::info!("TLS certificate reloaded");
                eprintln!("haven-server: TLS certificate reloaded");
            }
            Err(e) => {
                tracing::error!(
                    "the TLS certificate was not reloaded, the old one keeps serving: {e:#}"
                );
                eprintln!(
                    "haven-server: the TLS certificate was not reloaded, the old one keeps serving: {e:#}"
                );
            }
        }
    }
}

/// Resolves when the server is asked to stop: Ctrl-C, or SIGTERM, which
/// is how systemd, Docker and `kill` stop it. The server then finishes the
/// requests under way instead of cutting them off.
async fn stop_requested() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            tracing::warn!("cannot listen for SIGTERM ({e}); only Ctrl-C stops the server cleanly");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("stopping: finishing the requests under way");
}

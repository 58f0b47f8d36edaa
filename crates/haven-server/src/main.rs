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
    },
}

fn load(common: Common, listen: Option<SocketAddr>, allow_signup: bool) -> anyhow::Result<Config> {
    Config::load(
        common.config.as_deref(),
        Overrides {
            listen,
            data_dir: common.data_dir,
            allow_signup,
        },
    )
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            common,
            listen,
            allow_signup,
        } => {
            let config = load(common, listen, allow_signup)?;
            let data_dir = config.data_dir.clone();
            let signup = config.allow_signup;
            let bound = haven_server::bind(config).await?;
            tracing::info!(addr = %bound.addr, data_dir = %data_dir.display(), open_signup = signup, "haven-server ready");
            eprintln!(
                "haven-server {} listening on http://{} (data in {})",
                env!("CARGO_PKG_VERSION"),
                bound.addr,
                data_dir.display()
            );
            bound
                .serve(async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await
        }
        Command::User {
            command: UserCommand::Invite { common, email },
        } => {
            let config = load(common, None, false)?;
            let code = haven_server::create_invite(&config, email.as_deref()).await?;
            println!("{code}");
            eprintln!(
                "One-time invite, valid {} days{}. Sign up with: haven signup --server URL --email EMAIL --invite {code}",
                config.invite_days,
                email.map(|e| format!(" for {e}")).unwrap_or_default()
            );
            Ok(())
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HAVEN_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

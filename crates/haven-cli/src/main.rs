//! `haven`: the device client. A thin layer over `haven-client`.

mod agent;
mod commands;
mod output;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Haven: automatic, encrypted backups of this device to your Haven server.
#[derive(Parser)]
#[command(name = "haven", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Args, Clone)]
pub struct AccountArgs {
    /// Server URL, e.g. http://127.0.0.1:8420.
    #[arg(long, env = "HAVEN_SERVER")]
    pub server: String,
    /// Account email.
    #[arg(long)]
    pub email: String,
    /// Read the password from this file instead of a prompt or HAVEN_PASSWORD.
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// Trust this CA certificate (PEM) for the server besides the system's
    /// roots; remembered for this device.
    #[arg(long, env = "HAVEN_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Send the key derived from the password over plain HTTP to a host
    /// that is not this machine (only on a network you fully trust).
    #[arg(long)]
    pub allow_insecure_http: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum Command {
    /// Create an account and sign this device in.
    Signup {
        #[command(flatten)]
        account: AccountArgs,
        /// Name of this device [default: the host name].
        #[arg(long)]
        device: Option<String>,
        /// Invite code from the server's operator.
        #[arg(long)]
        invite: Option<String>,
    },
    /// Sign this device in (naming an existing device continues as it).
    Login {
        #[command(flatten)]
        account: AccountArgs,
        /// Name of this device [default: the host name].
        #[arg(long)]
        device: Option<String>,
    },
    /// Set a new password with the recovery key.
    Recover {
        #[command(flatten)]
        account: AccountArgs,
        /// The recovery key shown at sign-up.
        #[arg(long)]
        recovery_key: String,
    },
    /// Back up now.
    Backup {
        /// Paths to back up [default: the configured paths, or the home directory].
        paths: Vec<PathBuf>,
        /// Glob pattern to skip (repeatable), in addition to config.toml's.
        #[arg(long)]
        exclude: Vec<String>,
        /// Cap the upload rate, e.g. 8MiB (per second).
        #[arg(long)]
        upload_limit: Option<String>,
        /// When storage is short, upload nothing instead of the categories
        /// that fit.
        #[arg(long)]
        no_partial: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List or delete backups.
    Backups {
        #[command(subcommand)]
        command: BackupsCommand,
    },
    /// Restore a backup into a directory.
    Restore {
        /// Backup id (or a unique prefix), or `latest`.
        #[arg(default_value = "latest")]
        id: String,
        /// Directory to restore into; backed-up paths are recreated below it.
        #[arg(long)]
        to: PathBuf,
        /// Restore from this device's backups [default: this device].
        #[arg(long)]
        device: Option<String>,
        /// Replace existing files.
        #[arg(long)]
        overwrite: bool,
        /// Only these paths, as they were backed up (absolute).
        paths: Vec<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show where the account's storage went: used, per device, and what
    /// deleting each backup would free.
    Storage {
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check a backup: every directory listing, and that the server holds
    /// every blob (with --read-data: download, decrypt and hash them all).
    Verify {
        /// Backup id (or a unique prefix), or `latest`.
        #[arg(default_value = "latest")]
        id: String,
        /// Download and check every blob.
        #[arg(long)]
        read_data: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Back up automatically: when a backup is due and the computer is on
    /// power, idle and on an unmetered network. Runs until stopped.
    Agent {
        #[command(subcommand)]
        command: Option<AgentCommand>,
        /// JSON file standing in for the system's conditions:
        /// {"on_power": true, "idle": true, "metered": false}.
        #[arg(long)]
        conditions_file: Option<PathBuf>,
        /// Back up when the last backup is older than this [default: config `interval`, 24h].
        #[arg(long)]
        interval: Option<String>,
        /// Look at the conditions this often [default: config `check_every`, 5m].
        #[arg(long)]
        check_every: Option<String>,
        /// Stop after this many backup runs.
        #[arg(long, hide = true)]
        max_runs: Option<u64>,
        /// Print the result as JSON (`agent status`).
        #[arg(long, global = true)]
        json: bool,
    },
    /// Print a one-time link that signs this account in to the web console.
    Console {
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check everything a backup depends on, and say what to fix.
    Doctor {
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show or switch the categories backed up from this device.
    Categories {
        #[command(subcommand)]
        command: Option<CategoriesCommand>,
        /// Another device's categories.
        #[arg(long, global = true)]
        device: Option<String>,
        /// Read the account's password from this file (switching off needs it).
        #[arg(long, global = true)]
        password_file: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Show the server's plans or move to one.
    Plan {
        #[command(subcommand)]
        command: Option<PlanCommand>,
        /// Read the account's password from this file (a smaller plan needs it).
        #[arg(long, global = true)]
        password_file: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Show this device's last backup, last failure and next backup.
    Status {
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the account's devices, or sign one out.
    Devices {
        #[command(subcommand)]
        command: Option<DevicesCommand>,
        /// Read the account's password from this file (removing needs it).
        #[arg(long, global = true)]
        password_file: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Change the account's password. The recovery key stays valid; every
    /// other device is signed out unless --keep-other-devices.
    Password {
        /// Read the current password from this file (or HAVEN_PASSWORD).
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// Read the new password from this file (or HAVEN_NEW_PASSWORD).
        #[arg(long)]
        new_password_file: Option<PathBuf>,
        /// Leave the other devices signed in.
        #[arg(long)]
        keep_other_devices: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum CategoriesCommand {
    /// List categories with their size and whether they are backed up.
    List,
    /// Back up this category again.
    On { name: String },
    /// Stop backing up this category (existing backups keep it).
    Off { name: String },
}

#[derive(Subcommand)]
pub enum AgentCommand {
    /// Show what the agent is doing and why.
    Status,
    /// Install the systemd user unit that keeps the agent running.
    Install,
}

#[derive(Subcommand)]
pub enum PlanCommand {
    /// List the plans.
    List,
    /// Move to a plan.
    Set { name: String },
}

#[derive(Subcommand)]
pub enum BackupsCommand {
    /// List backups, newest first.
    List {
        /// Another device's backups.
        #[arg(long, conflicts_with = "all")]
        device: Option<String>,
        /// Every device's backups.
        #[arg(long)]
        all: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a backup, with the paths it cannot restore if it is damaged.
    Show {
        /// Backup id or a unique prefix, or `latest`.
        id: String,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a backup.
    Delete {
        /// Backup id or a unique prefix.
        id: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// Read the account's password from this file (deleting needs it).
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum DevicesCommand {
    /// List the account's devices: last seen, last backup, signed in or not.
    List,
    /// Sign a device out at once (a lost or stolen one); needs the password.
    Remove {
        /// The device's name, as `haven devices` lists it.
        name: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HAVEN_LOG")
                .unwrap_or_else(|_| "error".into()),
        )
        .with_writer(std::io::stderr)
        .without_time()
        .init();
    let cli = Cli::parse();
    let json = commands::wants_json(&cli.command);
    match commands::run(cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(e) => ExitCode::from(output::print_error(&e, json)),
    }
}

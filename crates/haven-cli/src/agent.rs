//! `haven agent`, `haven agent status`, `haven agent install`.

use std::path::PathBuf;
use std::time::Duration;

use haven_client::agent::conditions::{Requirements, Source};
use haven_client::agent::{AgentOptions, read_state, running, systemd_unit};
use haven_client::config::Config;
use haven_client::profile::ConfigDir;
use haven_client::{ClientError, Result};
use haven_proto::ErrorCode;

use crate::AgentCommand;
use crate::output::print_json;

fn duration(key: &str, text: &str) -> Result<Duration> {
    humantime::parse_duration(text).map_err(|e| {
        ClientError::new(
            ErrorCode::ConfigInvalid,
            format!("{key} {text:?} is not a duration: {e}."),
        )
        .fix("Write it like 24h, 30m or 45s.")
    })
}

pub fn agent(
    command: Option<AgentCommand>,
    conditions_file: Option<PathBuf>,
    interval: Option<String>,
    check_every: Option<String>,
    max_runs: Option<u64>,
    json: bool,
) -> Result<u8> {
    let dir = ConfigDir::from_env()?;
    match command {
        Some(AgentCommand::Status) => status(&dir, json),
        Some(AgentCommand::Install) => install(&dir, json),
        None => {
            let config = Config::load(&dir)?;
            let opts = AgentOptions {
                source: match conditions_file {
                    Some(f) => Source::File(f),
                    None => Source::system(),
                },
                requirements: Requirements {
                    power: config.require_power,
                    idle: config.require_idle,
                    allow_metered: config.allow_metered,
                },
                interval: duration("interval", interval.as_deref().unwrap_or(&config.interval))?,
                check_every: duration(
                    "check_every",
                    check_every.as_deref().unwrap_or(&config.check_every),
                )?,
                background_priority: config.background_priority,
                max_runs,
            };
            let setup = || crate::commands::backup_setup(&dir, Vec::new(), Vec::new(), None, false);
            eprintln!(
                "Haven agent started: backs up every {} when the conditions hold (`haven agent status` shows why it waits).",
                humantime::format_duration(opts.interval)
            );
            haven_client::agent::run(&dir, &opts, &setup)?;
            Ok(0)
        }
    }
}

fn status(dir: &ConfigDir, json: bool) -> Result<u8> {
    let state = read_state(dir);
    let alive = running(dir);
    if json {
        print_json(&serde_json::json!({ "running": alive, "agent": state }));
        return Ok(0);
    }
    match (&state, alive) {
        (_, false) => println!(
            "No agent is running for this device. Start one with `haven agent` (or `haven agent install` for a systemd user service)."
        ),
        (Some(s), true) => {
            println!("Agent (pid {}) is {}: {}.", s.pid, s.state, s.reason);
            println!(
                "  Last backup: {}",
                s.last_success.as_deref().unwrap_or("never")
            );
            if let Some(n) = &s.next_due {
                println!("  Next due:    {n}");
            }
            if s.failures > 0 {
                println!("  Failures in a row: {}", s.failures);
            }
        }
        (None, true) => println!("The agent is starting."),
    }
    Ok(0)
}

fn install(dir: &ConfigDir, json: bool) -> Result<u8> {
    let exe = std::env::current_exe().map_err(|e| {
        ClientError::new(
            ErrorCode::LocalIo,
            format!("Cannot find the haven program: {e}."),
        )
    })?;
    let home = haven_client::config::home().ok_or_else(|| {
        ClientError::new(ErrorCode::ConfigInvalid, "HOME is not set.")
            .fix("Run `haven agent install` as the user whose files are backed up.")
    })?;
    let unit_dir = home.join(".config/systemd/user");
    std::fs::create_dir_all(&unit_dir).map_err(|e| ClientError::io("create", &unit_dir, e))?;
    let unit = unit_dir.join("haven-agent.service");
    let mut text = systemd_unit(&exe);
    if let Ok(cfg) = std::env::var("HAVEN_CONFIG_DIR") {
        text = text.replace(
            "[Service]\n",
            &format!("[Service]\nEnvironment=HAVEN_CONFIG_DIR={cfg}\n"),
        );
    }
    std::fs::write(&unit, text).map_err(|e| ClientError::io("write", &unit, e))?;
    let _ = dir;
    if json {
        print_json(&serde_json::json!({ "unit": unit }));
    } else {
        println!("Wrote {}.", unit.display());
        println!("Start it now and at every login with:");
        println!("  systemctl --user daemon-reload && systemctl --user enable --now haven-agent");
    }
    Ok(0)
}

//! `haven categories`, `haven plan` and `haven status`.

use haven_client::config::Config;
use haven_client::{ClientError, Remote, Result};
use haven_proto::{Attempt, ErrorCode};
use serde_json::json;

use crate::commands::{short, signed_in};
use crate::output::{human_bytes, print_json};
use crate::{CategoriesCommand, PlanCommand};

pub fn categories(
    command: Option<CategoriesCommand>,
    device: Option<String>,
    password_file: Option<std::path::PathBuf>,
    json: bool,
) -> Result<u8> {
    let (_, profile, remote) = signed_in()?;
    let list = match command.unwrap_or(CategoriesCommand::List) {
        CategoriesCommand::List => remote.categories(device.as_deref())?,
        CategoriesCommand::On { name } | CategoriesCommand::Off { name } if name.is_empty() => {
            return Err(
                ClientError::new(ErrorCode::BadRequest, "The category name is empty.")
                    .fix("Name a category from `haven categories`."),
            );
        }
        c @ (CategoriesCommand::On { .. } | CategoriesCommand::Off { .. }) => {
            let (name, on) = match c {
                CategoriesCommand::On { name } => (name, true),
                CategoriesCommand::Off { name } => (name, false),
                CategoriesCommand::List => unreachable!("matched above"),
            };
            let known = remote.categories(device.as_deref())?;
            let Some(exact) = known.iter().find(|k| k.name.eq_ignore_ascii_case(&name)) else {
                let names: Vec<&str> = known.iter().map(|k| k.name.as_str()).collect();
                return Err(ClientError::new(
                    ErrorCode::NotFound,
                    format!("There is no category {name:?} on this device."),
                )
                .fix(if names.is_empty() {
                    "Run `haven backup` once: it scans the device and lists its categories."
                        .to_string()
                } else {
                    format!("Categories: {}.", names.join(", "))
                }));
            };
            let list = crate::commands::with_password(
                &profile,
                &remote,
                password_file.as_deref(),
                json,
                || remote.set_category(&exact.name, on, device.as_deref()),
            )?;
            if !json {
                println!(
                    "{} is {} for {}.",
                    exact.name,
                    if on {
                        "backed up again"
                    } else {
                        "no longer backed up (existing backups keep it)"
                    },
                    device.as_deref().unwrap_or("this device")
                );
            }
            list
        }
    };
    if json {
        print_json(&list);
        return Ok(0);
    }
    if list.is_empty() {
        println!("No scan yet: run `haven backup` once to see the categories of this device.");
    }
    let mut next = 0;
    for c in &list {
        if c.enabled {
            next += c.new_bytes;
        }
        println!(
            "  [{}] {:<12} {:>10} in {:>7} files{}",
            if c.enabled { "on " } else { "off" },
            c.name,
            human_bytes(c.bytes),
            c.files,
            if c.enabled && c.new_bytes > 0 {
                format!(", {} new", human_bytes(c.new_bytes))
            } else {
                String::new()
            }
        );
    }
    if !list.is_empty() {
        println!(
            "Next backup: up to {} (as of the last scan).",
            human_bytes(next)
        );
    }
    Ok(0)
}

pub fn plan(
    command: Option<PlanCommand>,
    password_file: Option<std::path::PathBuf>,
    json: bool,
) -> Result<u8> {
    let (_, profile, remote) = signed_in()?;
    if let Some(PlanCommand::Set { name }) = &command {
        crate::commands::with_password(&profile, &remote, password_file.as_deref(), json, || {
            remote.set_plan(name)
        })?;
        if !json {
            println!("Your account is now on the plan {name}.");
        }
    }
    let plans = remote.plans()?;
    if json {
        print_json(&plans);
        return Ok(0);
    }
    if command.is_some() {
        return Ok(0);
    }
    if plans.plans.is_empty() {
        println!("This server has no plans: storage is not limited per account.");
    }
    for p in &plans.plans {
        let current = plans.current.as_deref() == Some(p.name.as_str());
        println!(
            "{} {:<16} {:>10}{}",
            if current { "*" } else { " " },
            p.name,
            human_bytes(p.quota),
            if p.selectable {
                ""
            } else {
                "  (given by the operator)"
            }
        );
    }
    Ok(0)
}

pub fn status(json: bool) -> Result<u8> {
    let (dir, profile, remote) = signed_in()?;
    let config = Config::load(&dir)?;
    let attempts = remote.attempts(Some(&profile.device), 200)?;
    let usage = remote.usage()?;
    let last_ok = attempts
        .iter()
        .find(|a| matches!(a.result.as_str(), "ok" | "partial"));
    let last_failure = attempts
        .iter()
        .find(|a| matches!(a.result.as_str(), "failed" | "partial"));
    let interval = humantime::parse_duration(&config.interval).map_err(|e| {
        ClientError::new(
            ErrorCode::ConfigInvalid,
            format!("interval = {:?} is not a duration: {e}.", config.interval),
        )
        .fix("Write it like 24h, 12h or 30m in config.toml.")
    })?;
    let next = match last_ok {
        Some(a) => humantime::parse_rfc3339(&a.finished)
            .map(|t| humantime::format_rfc3339_seconds(t + interval).to_string())
            .unwrap_or_default(),
        None => "as soon as possible".into(),
    };
    let expiring: Vec<_> = usage
        .expiring
        .iter()
        .filter(|e| e.device == profile.device)
        .collect();
    if json {
        print_json(&json!({
            "device": profile.device,
            "last_success": last_ok,
            "last_failure": last_failure.filter(|f| last_ok.is_none_or(|o| f.finished >= o.finished)),
            "next_backup": next,
            "expiring": expiring,
            "used": usage.used,
            "quota": usage.quota,
            "free": usage.free,
        }));
        return Ok(0);
    }
    println!("Device {:?}", profile.device);
    match last_ok {
        Some(a) => println!(
            "  Last backup:   {} ({}{})",
            a.finished,
            a.snapshot.as_deref().map(short).unwrap_or("-"),
            if a.result == "partial" {
                ", partial"
            } else {
                ""
            }
        ),
        None => println!("  Last backup:   never"),
    }
    if let Some(f) = last_failure.filter(|f| last_ok.is_none_or(|o| f.finished >= o.finished)) {
        print_failure(f);
    }
    println!("  Next backup:   {next}");
    match (usage.quota, usage.free) {
        (Some(q), Some(free)) => println!(
            "  Storage:       {} used of {} ({} free)",
            human_bytes(usage.used),
            human_bytes(q),
            human_bytes(free)
        ),
        _ => println!("  Storage:       {} used", human_bytes(usage.used)),
    }
    for e in &expiring {
        println!(
            "  Warning: this device has not backed up since {}; its backups expire on {} unless it backs up.",
            e.last_backup, e.expires
        );
    }
    Ok(0)
}

fn print_failure(f: &Attempt) {
    println!(
        "  Last problem:  {} ({}): {}",
        f.finished,
        f.code.as_deref().unwrap_or(&f.result),
        f.message
    );
    for fix in &f.fix {
        println!("    what to do: {fix}");
    }
}

/// `haven storage`'s categories section and the next backup's estimate.
pub fn storage_categories(remote: &haven_client::HttpRemote, usage: &haven_proto::UsageResponse) {
    if !usage.categories.is_empty() {
        println!("By category (newest backup of each device, before dedup and compression):");
        for c in &usage.categories {
            println!(
                "  {:<16} {:<12} {:>10} in {} files",
                c.device,
                c.category,
                human_bytes(c.bytes),
                c.files
            );
        }
    }
    if let Ok(cats) = remote.categories(None) {
        let next: u64 = cats.iter().filter(|c| c.enabled).map(|c| c.new_bytes).sum();
        let off: Vec<&str> = cats
            .iter()
            .filter(|c| !c.enabled)
            .map(|c| c.name.as_str())
            .collect();
        if !cats.is_empty() {
            println!(
                "Next backup of this device: up to {}{}.",
                human_bytes(next),
                if off.is_empty() {
                    String::new()
                } else {
                    format!(" ({} switched off)", off.join(", "))
                }
            );
        }
    }
    for e in &usage.expiring {
        println!(
            "Warning: {} has not backed up since {}; its backups expire on {}.",
            e.device, e.last_backup, e.expires
        );
    }
}

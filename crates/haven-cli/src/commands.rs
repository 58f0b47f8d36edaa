//! One function per command.

use std::time::Instant;

use haven_client::backup::{BackupOptions, Progress};
use haven_client::config::Config;
use haven_client::profile::{ConfigDir, Profile};
use haven_client::restore::{RestoreOptions, RestoreProgress};
use haven_client::{ClientError, HttpRemote, Remote, Result, account};
use haven_proto::{ErrorCode, SnapshotRecord};
use serde_json::json;

use crate::output::{confirm, human_bytes, password, print_json, progress_bar};
use crate::{AccountArgs, BackupsCommand, Command, DevicesCommand};

/// How to reach the server given at sign-in: `--ca-cert`'s contents and
/// `--allow-insecure-http`. Without `--ca-cert`, a device signing in again
/// to the same server keeps the CA it trusted.
fn transport(a: &AccountArgs) -> Result<haven_client::http::Transport> {
    let ca_pem = match &a.ca_cert {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| ClientError::io("read the CA certificate", p, e))?,
        ),
        None => ConfigDir::from_env()
            .and_then(|d| d.profile())
            .ok()
            .filter(|p| p.server == a.server.trim_end_matches('/'))
            .and_then(|p| p.ca_cert),
    };
    Ok(haven_client::http::Transport {
        ca_pem,
        allow_insecure_http: a.allow_insecure_http,
    })
}

/// Runs `op`; if the server answers that it needs the password (it deletes
/// or weakens backups), proves the password and runs it once more. The
/// password comes from `file`, `HAVEN_PASSWORD` or the terminal; with none
/// of them, `op` has changed nothing and the error says so.
pub fn with_password<T>(
    profile: &Profile,
    remote: &HttpRemote,
    file: Option<&std::path::Path>,
    json: bool,
    op: impl Fn() -> Result<T>,
) -> Result<T> {
    match op() {
        Err(e) if e.code() == ErrorCode::PasswordRequired => {
            let pw = password(file, "Account password (to confirm): ", false, json).map_err(|p| {
                if p.code() != ErrorCode::ConfirmationNeeded {
                    return p;
                }
                ClientError::new(
                    ErrorCode::PasswordRequired,
                    "This deletes or weakens the account's backups, so it needs the account's password, and there is no terminal to ask for it. Nothing was changed.",
                )
                .fix("Run it in a terminal, or give the password with HAVEN_PASSWORD or --password-file FILE.")
            })?;
            account::confirm_password(profile, remote, &pw)?;
            op()
        }
        other => other,
    }
}

pub fn wants_json(c: &Command) -> bool {
    match c {
        Command::Signup { account, .. }
        | Command::Login { account, .. }
        | Command::Recover { account, .. } => account.json,
        Command::Backup { json, .. }
        | Command::Restore { json, .. }
        | Command::Devices { json, .. }
        | Command::Password { json, .. }
        | Command::Storage { json }
        | Command::Categories { json, .. }
        | Command::Plan { json, .. }
        | Command::Status { json }
        | Command::Verify { json, .. }
        | Command::Doctor { json }
        | Command::Agent { json, .. }
        | Command::Console { json } => *json,
        Command::Backups {
            command:
                BackupsCommand::List { json, .. }
                | BackupsCommand::Delete { json, .. }
                | BackupsCommand::Show { json, .. },
        } => *json,
    }
}

fn device_name(given: Option<String>) -> String {
    given.unwrap_or_else(|| {
        let h = gethostname::gethostname()
            .to_string_lossy()
            .trim()
            .to_string();
        if h.is_empty() { "device".into() } else { h }
    })
}

pub fn signed_in() -> Result<(ConfigDir, Profile, HttpRemote)> {
    let dir = ConfigDir::from_env()?;
    let profile = dir.profile()?;
    let remote = profile.remote()?;
    Ok((dir, profile, remote))
}

pub fn run(command: Command) -> Result<u8> {
    run_command(command).map_err(sign_in_again)
}

/// A device whose sign-in was ended is told the exact command that signs
/// it in again, with its own server, email and name.
fn sign_in_again(mut e: ClientError) -> ClientError {
    if e.code() != ErrorCode::TokenRevoked {
        return e;
    }
    if let Ok(p) = ConfigDir::from_env().and_then(|d| d.profile()) {
        let ca = if p.ca_cert.is_some() {
            " (the CA certificate is remembered)"
        } else {
            ""
        };
        e.0.fix.insert(
            0,
            format!(
                "Sign this device in again with the account's password: haven login --server {} --email {} --device {:?}{ca}",
                p.server, p.email, p.device
            ),
        );
    }
    e
}

fn run_command(command: Command) -> Result<u8> {
    match command {
        Command::Signup {
            account: a,
            device,
            invite,
        } => {
            let dir = ConfigDir::from_env()?;
            let pw = password(
                a.password_file.as_deref(),
                "Choose a password: ",
                true,
                a.json,
            )?;
            let s = account::signup(
                &dir,
                &a.server,
                &a.email,
                &pw,
                &device_name(device),
                invite.as_deref(),
                &transport(&a)?,
            )?;
            if a.json {
                print_json(&json!({
                    "account_id": s.profile.account_id, "email": s.profile.email, "device": s.profile.device,
                    "server": s.profile.server, "recovery_key": s.recovery_key,
                }));
            } else {
                println!(
                    "Account {} created; this device is signed in as {:?}.",
                    s.profile.email, s.profile.device
                );
                println!();
                println!(
                    "Your recovery key (shown only now; keep it somewhere safe, away from this device):"
                );
                println!();
                println!("    {}", s.recovery_key);
                println!();
                println!(
                    "With it you can set a new password if you forget yours: haven recover --server URL --email EMAIL --recovery-key KEY"
                );
                println!("Back up now with: haven backup");
            }
            Ok(0)
        }
        Command::Login { account: a, device } => {
            let dir = ConfigDir::from_env()?;
            let pw = password(a.password_file.as_deref(), "Password: ", false, a.json)?;
            let (p, existing) = account::login(
                &dir,
                &a.server,
                &a.email,
                &pw,
                &device_name(device),
                &transport(&a)?,
            )?;
            if a.json {
                print_json(
                    &json!({"account_id": p.account_id, "email": p.email, "device": p.device, "server": p.server, "existing_device": existing}),
                );
            } else if existing {
                println!(
                    "Signed in as the existing device {:?}: backups continue from its last one.",
                    p.device
                );
            } else {
                println!("Signed in as the new device {:?}.", p.device);
            }
            Ok(0)
        }
        Command::Recover {
            account: a,
            recovery_key,
        } => {
            let pw = password(a.password_file.as_deref(), "New password: ", true, a.json)?;
            account::recover(&a.server, &a.email, &recovery_key, &pw, &transport(&a)?)?;
            if a.json {
                print_json(&json!({"password_changed": true}));
            } else {
                println!(
                    "The password of {} was changed. Every device was signed out: sign each in again with `haven login`.",
                    a.email
                );
            }
            Ok(0)
        }
        Command::Backup {
            paths,
            exclude,
            upload_limit,
            no_partial,
            json,
        } => backup(paths, exclude, upload_limit, no_partial, json),
        Command::Categories {
            command,
            device,
            password_file,
            json,
        } => crate::status::categories(command, device, password_file, json),
        Command::Plan {
            command,
            password_file,
            json,
        } => crate::status::plan(command, password_file, json),
        Command::Status { json } => crate::status::status(json),
        Command::Agent {
            command,
            conditions_file,
            interval,
            check_every,
            max_runs,
            json,
        } => crate::agent::agent(
            command,
            conditions_file,
            interval,
            check_every,
            max_runs,
            json,
        ),
        Command::Console { json } => {
            let (_, profile, remote) = signed_in()?;
            let mut v: serde_json::Value = remote.post("/v1/console/link", &json!({}))?;
            // The link is built from the address this device knows the
            // server by, never from what the server says (only the token,
            // which is checked to be hex, comes from it).
            let token = v["token"].as_str().unwrap_or_default().to_string();
            if token.is_empty() || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ClientError::corrupted(
                    "the server sent a malformed sign-in token",
                ));
            }
            let url = format!("{}/link/{token}", profile.server.trim_end_matches('/'));
            v["url"] = url.clone().into();
            if json {
                print_json(&v);
            } else {
                println!(
                    "Open this link to sign in to the Haven console (once, within 10 minutes):"
                );
                println!("  {url}");
                let desktop = std::env::var_os("DISPLAY").is_some()
                    || std::env::var_os("WAYLAND_DISPLAY").is_some();
                if desktop {
                    let _ = std::process::Command::new("xdg-open")
                        .arg(&url)
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .spawn();
                }
            }
            Ok(0)
        }
        Command::Doctor { json } => {
            let dir = ConfigDir::from_env()?;
            let checks = haven_client::doctor::run(&dir);
            if json {
                print_json(&json!({ "checks": checks }));
            } else {
                for c in &checks {
                    let mark = match c.status.as_str() {
                        "ok" => "✓",
                        "fail" => "✗",
                        _ => "ℹ",
                    };
                    println!("{mark} {}: {}", c.name, c.detail);
                    for f in &c.fix {
                        println!("    what to do: {f}");
                    }
                }
            }
            Ok(if haven_client::doctor::healthy(&checks) {
                0
            } else {
                1
            })
        }
        Command::Verify {
            id,
            read_data,
            json,
        } => {
            let (_, profile, remote) = signed_in()?;
            let snap = resolve(&remote, &profile, &id, None)?;
            let keys =
                haven_client::dictionary::for_reading(profile.master_key()?.keys(), &remote)?;
            let r = haven_client::inspect::verify(&remote, &keys, &snap, read_data)?;
            if json {
                print_json(&r);
            } else {
                println!(
                    "Backup {}: {} directories, {} files, {} blobs {}: {} missing, {} corrupt.",
                    short(&r.snapshot),
                    r.trees,
                    r.files,
                    r.blobs,
                    if r.read_data {
                        "downloaded, decrypted and hashed"
                    } else {
                        "present on the server"
                    },
                    r.missing,
                    r.corrupt
                );
                for p in r.affected.iter().take(50) {
                    println!("  cannot be restored: {p}");
                }
            }
            if r.ok {
                Ok(0)
            } else if json {
                // The report on stdout says what is wrong; the exit code says it failed.
                Ok(1)
            } else {
                Err(ClientError::new(
                    ErrorCode::Corrupted,
                    format!("Backup {} is damaged: {} paths cannot be restored.", short(&r.snapshot), r.affected.len()),
                )
                .fix("Run `haven backup`: it uploads again whatever this device still has, which repairs every backup that shares it.")
                .fix("Everything else in the backup still restores.")
                .fix("Tell the server's operator: the server's disk may be failing (`haven-server scrub`)."))
            }
        }
        Command::Backups {
            command: BackupsCommand::Show { id, json },
        } => {
            let (_, profile, remote) = signed_in()?;
            // Asked for by id: the answer says what deleting it frees.
            let snap = remote.snapshot(&resolve(&remote, &profile, &id, None)?.id)?;
            let keys = profile.master_key()?.keys();
            let paths = haven_client::inspect::damaged_paths(&remote, &keys, &snap)?;
            if json {
                let mut v = serde_json::to_value(&snap).unwrap_or_default();
                v["damaged_paths"] = serde_json::to_value(&paths).unwrap_or_default();
                print_json(&v);
            } else {
                println!(
                    "Backup {} of {:?} from {}: {} files, {}, health {}{}.",
                    snap.id,
                    snap.device,
                    snap.time,
                    snap.files,
                    human_bytes(snap.bytes),
                    snap.health,
                    if snap.partial { ", partial" } else { "" }
                );
                println!("Deleting it frees {}.", human_bytes(snap.freed_if_deleted));
                for c in &snap.categories {
                    println!(
                        "  {:<12} {:>10} in {} files",
                        c.name,
                        human_bytes(c.bytes),
                        c.files
                    );
                }
                if !paths.is_empty() {
                    println!(
                        "Damaged: {} paths cannot be restored until a device that has them backs up again:",
                        paths.len()
                    );
                    for p in paths.iter().take(100) {
                        println!("  {p}");
                    }
                }
            }
            Ok(0)
        }
        Command::Backups {
            command: BackupsCommand::List { device, all, json },
        } => list(device, all, json),
        Command::Backups {
            command:
                BackupsCommand::Delete {
                    id,
                    yes,
                    password_file,
                    json,
                },
        } => {
            let (_, profile, remote) = signed_in()?;
            let snap = resolve(&remote, &profile, &id, None)?;
            let q = format!(
                "Delete backup {} of {:?} from {} ({} files, {})?",
                short(&snap.id),
                snap.device,
                snap.time,
                snap.files,
                human_bytes(snap.bytes)
            );
            if !confirm(&q, yes, json)? {
                println!("Nothing was deleted.");
                return Ok(1);
            }
            with_password(&profile, &remote, password_file.as_deref(), json, || {
                remote.delete_snapshot(&snap.id)
            })?;
            if json {
                print_json(&json!({"deleted": snap.id}));
            } else {
                println!("Deleted backup {}.", short(&snap.id));
            }
            Ok(0)
        }
        Command::Restore {
            id,
            to,
            device,
            overwrite,
            paths,
            json,
        } => restore(id, to, device, overwrite, paths, json),
        Command::Storage { json } => storage(json),
        Command::Devices {
            command,
            password_file,
            json,
        } => devices(command, password_file, json),
        Command::Password {
            password_file,
            new_password_file,
            keep_other_devices,
            json,
        } => change_password(password_file, new_password_file, keep_other_devices, json),
    }
}

fn devices(
    command: Option<DevicesCommand>,
    password_file: Option<std::path::PathBuf>,
    json: bool,
) -> Result<u8> {
    let (_, profile, remote) = signed_in()?;
    if let Some(DevicesCommand::Remove { name, yes }) = command {
        let q = if name == profile.device {
            format!("Sign this device ({name:?}) out? It stops backing up until it signs in again.")
        } else {
            format!(
                "Sign the device {name:?} out? It stops backing up until it signs in again with the password."
            )
        };
        if !confirm(&q, yes, json)? {
            println!("Nothing was changed.");
            return Ok(1);
        }
        let d = with_password(&profile, &remote, password_file.as_deref(), json, || {
            remote.remove_device(&name)
        })?;
        if json {
            print_json(&d);
        } else {
            println!(
                "{} is signed out: its sign-in no longer works. Its backups stay; it can sign in again with `haven login` and the password.",
                d.name
            );
        }
        return Ok(0);
    }
    let devs = remote.devices()?;
    if json {
        print_json(&devs);
        return Ok(0);
    }
    for d in devs {
        let me = if d.id == profile.device_id {
            " (this device)"
        } else {
            ""
        };
        println!(
            "{}{me}: {}, last seen {}, last backup {}",
            d.name,
            if d.signed_in {
                "signed in"
            } else {
                "signed out"
            },
            d.last_seen.as_deref().unwrap_or("never"),
            d.last_backup.as_deref().unwrap_or("never")
        );
    }
    Ok(0)
}

fn change_password(
    password_file: Option<std::path::PathBuf>,
    new_password_file: Option<std::path::PathBuf>,
    keep_other_devices: bool,
    json: bool,
) -> Result<u8> {
    let (_, profile, remote) = signed_in()?;
    let current = password(password_file.as_deref(), "Current password: ", false, json)?;
    let new = match (&new_password_file, std::env::var("HAVEN_NEW_PASSWORD")) {
        (Some(f), _) => password(Some(f), "", false, json)?,
        (None, Ok(p)) => p,
        (None, Err(_)) => {
            // The prompt, never HAVEN_PASSWORD (that is the current one).
            crate::output::prompt_password("New password: ", true, json)?
        }
    };
    account::confirm_password(&profile, &remote, &current)?;
    let signed_out = account::change_password(&profile, &remote, &new, !keep_other_devices)?;
    if json {
        print_json(&json!({"password_changed": true, "signed_out_devices": signed_out}));
    } else {
        println!(
            "The password of {} was changed. The recovery key stays valid.",
            profile.email
        );
        if keep_other_devices {
            println!("The other devices stay signed in.");
        } else {
            println!(
                "{signed_out} other device sign-ins were ended: sign each device in again with `haven login`."
            );
        }
    }
    Ok(0)
}

pub fn short(id: &str) -> &str {
    &id[..id.len().min(8)]
}

/// A backup by id, unique id prefix, or `latest` (of `device`, default this one).
fn resolve(
    remote: &dyn Remote,
    profile: &Profile,
    id: &str,
    device: Option<&str>,
) -> Result<SnapshotRecord> {
    if id == "latest" {
        let dev = device.unwrap_or(&profile.device);
        let all = remote.snapshots_brief(Some(dev))?;
        // The newest complete backup; a checkpoint only if nothing completed yet.
        let pick = all.iter().find(|s| s.complete).or(all.first()).cloned();
        return pick.ok_or_else(|| {
            ClientError::new(ErrorCode::NotFound, format!("The device {dev:?} has no backups yet."))
                .fix("Run `haven backup` on it first, or pick another device with --device NAME (see `haven devices`).")
        });
    }
    let lower = id.to_ascii_lowercase();
    let all = remote.snapshots_brief(device)?;
    let mut matches = all.into_iter().filter(|s| s.id.starts_with(&lower));
    match (matches.next(), matches.next()) {
        (Some(s), None) if !lower.is_empty() => Ok(s),
        (Some(_), Some(_)) => Err(ClientError::new(
            ErrorCode::BadRequest,
            format!("{id:?} matches several backups."),
        )
        .fix("Give more characters of the id.")),
        _ => Err(ClientError::new(
            ErrorCode::NotFound,
            format!("No backup {id:?} exists in your account."),
        )
        .fix("List backups with `haven backups list --all`.")),
    }
}

/// What a backup runs with: config.toml merged with the command line.
pub fn backup_setup(
    dir: &ConfigDir,
    paths: Vec<std::path::PathBuf>,
    exclude: Vec<String>,
    upload_limit: Option<String>,
    no_partial: bool,
) -> Result<(BackupOptions, HttpRemote)> {
    let profile = dir.profile()?;
    let config = Config::load(dir)?;
    let limit = upload_limit
        .or(config.upload_limit.clone())
        .map(|l| haven_client::config::parse_bytes(&l))
        .transpose()?;
    let remote = profile.remote()?.with_upload_limit(limit);
    let paths = if paths.is_empty() {
        config.default_paths()?
    } else {
        paths
    };
    let mut all_excludes = config.exclude.clone();
    all_excludes.extend(exclude);
    let opts = BackupOptions {
        paths,
        exclude: all_excludes,
        exclude_caches: config.exclude_caches,
        compression_level: config.compression_level,
        categories: haven_client::categories::merged_rules(&config.categories),
        priority: config.category_priority.clone(),
        partial: config.partial && !no_partial,
        stop: None,
    };
    Ok((opts, remote))
}

fn backup(
    paths: Vec<std::path::PathBuf>,
    exclude: Vec<String>,
    upload_limit: Option<String>,
    no_partial: bool,
    json: bool,
) -> Result<u8> {
    let (dir, profile, _) = signed_in()?;
    let (opts, remote) = backup_setup(&dir, paths, exclude, upload_limit, no_partial)?;
    let pb = progress_bar(json);
    let on_progress = |p: &Progress| {
        if let Some(pb) = &pb {
            pb.set_length(p.total_bytes.max(p.bytes));
            pb.set_position(p.bytes);
            let total = if p.scan_done {
                p.total_files.to_string()
            } else {
                format!("{}+", p.total_files)
            };
            pb.set_message(format!(
                "{}/{total} files, sent {}",
                p.files,
                human_bytes(p.uploaded_bytes)
            ));
        }
    };
    let report = haven_client::backup::backup(&dir, &profile, &remote, &opts, &on_progress);
    if let Some(pb) = &pb {
        pb.finish_and_clear();
    }
    let r = report?;
    if json {
        print_json(&r);
    } else {
        for w in &r.warnings {
            eprintln!("warning: {w}");
        }
        let what = if r.partial { "saved partially" } else { "done" };
        println!(
            "Backup {} of {:?} {what}: {} files, {} ({} files read, {} sent) in {:.1} s.",
            short(&r.id),
            r.device,
            r.files,
            human_bytes(r.bytes),
            r.files_read,
            human_bytes(r.uploaded_bytes),
            r.duration_secs
        );
        if r.partial {
            let left: Vec<String> = r
                .skipped_categories
                .iter()
                .map(|c| format!("{} ({})", c.name, human_bytes(c.bytes)))
                .collect();
            println!(
                "Not enough storage for everything: {} needed, {} free. Left out (their previous backup is kept): {}.",
                human_bytes(r.needed.unwrap_or(0)),
                human_bytes(r.available.unwrap_or(0)),
                left.join(", ")
            );
            for f in &r.fix {
                println!("  what to do: {f}");
            }
        }
        if !r.disabled_categories.is_empty() {
            println!(
                "Switched off on this device: {}.",
                r.disabled_categories.join(", ")
            );
        }
        if !r.pruned.is_empty() {
            println!(
                "{} older backups were removed by the retention policy.",
                r.pruned.len()
            );
        }
    }
    // Scripts tell a partial backup from a complete one by the exit code.
    Ok(if r.partial { 3 } else { 0 })
}

fn list(device: Option<String>, all: bool, json: bool) -> Result<u8> {
    let (_, profile, remote) = signed_in()?;
    let dev = if all {
        None
    } else {
        Some(device.unwrap_or_else(|| profile.device.clone()))
    };
    let snaps = remote.snapshots(dev.as_deref())?;
    if json {
        print_json(&snaps);
        return Ok(0);
    }
    if snaps.is_empty() {
        println!("No backups yet.");
    }
    for s in snaps {
        let mark = if s.health != "ok" {
            "  (DAMAGED: `haven backups show` lists what; the next backup repairs what this device still has)"
        } else if !s.complete {
            "  (checkpoint of an unfinished backup)"
        } else if s.partial {
            "  (partial: storage was short)"
        } else {
            ""
        };
        println!(
            "{}  {}  {:<16} {:>8} files  {:>10}{mark}",
            short(&s.id),
            s.time,
            s.device,
            s.files,
            human_bytes(s.bytes)
        );
    }
    Ok(0)
}

fn restore(
    mut id: String,
    to: std::path::PathBuf,
    device: Option<String>,
    overwrite: bool,
    mut paths: Vec<std::path::PathBuf>,
    json: bool,
) -> Result<u8> {
    // `haven restore --to DIR /some/path`: the id is optional, paths are absolute.
    if id.starts_with('/') {
        paths.insert(
            0,
            std::path::PathBuf::from(std::mem::replace(&mut id, "latest".into())),
        );
    }
    let (dir, profile, remote) = signed_in()?;
    let snap = resolve(&remote, &profile, &id, device.as_deref())?;
    let pb = progress_bar(json);
    let started = Instant::now();
    let on_progress = |p: &RestoreProgress| {
        if let Some(pb) = &pb {
            pb.set_length(p.total_bytes);
            pb.set_position(p.bytes);
            pb.set_message(format!("{}/{} files", p.files, p.total_files));
        }
    };
    let opts = RestoreOptions {
        target: to,
        paths,
        overwrite,
    };
    let report =
        haven_client::restore::restore(&profile, dir.cache(), &remote, &snap, &opts, &on_progress);
    if let Some(pb) = &pb {
        pb.finish_and_clear();
    }
    let r = report?;
    if json {
        print_json(&r);
    } else {
        for w in r.warnings.iter().take(20) {
            eprintln!("note: {w}");
        }
        println!(
            "Restored {} files ({}), {} directories, {} symlinks from backup {} into {} in {:.1} s.",
            r.files,
            human_bytes(r.bytes),
            r.dirs,
            r.symlinks,
            short(&r.snapshot),
            r.target,
            started.elapsed().as_secs_f64()
        );
        if r.already_restored > 0 {
            println!(
                "{} files were already restored (same content) and were kept.",
                r.already_restored
            );
        }
        if r.skipped_existing > 0 {
            println!(
                "{} existing files were left alone (use --overwrite to replace them).",
                r.skipped_existing
            );
        }
    }
    if !r.failed.is_empty() {
        let list = r
            .failed
            .iter()
            .take(50)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n  ");
        let e = ClientError::new(ErrorCode::RestoreIncomplete, format!("{} paths could not be restored:\n  {list}", r.failed.len()))
            .fix("Everything else was restored. Run `haven restore` again later for these paths; if the server lost their data, a new backup from a device that still has them heals it.");
        if json {
            // The report is already on stdout; the exit code says it is incomplete.
            return Ok(3);
        }
        return Err(e);
    }
    Ok(0)
}

fn storage(json: bool) -> Result<u8> {
    let (_, _, remote) = signed_in()?;
    let u = remote.usage()?;
    let backups = remote.snapshots(None)?;
    let next = remote.categories(None)?;
    if json {
        let mut v = serde_json::to_value(&u).unwrap_or_default();
        v["backups"] = serde_json::to_value(&backups).unwrap_or_default();
        v["next_backup_bytes"] = next
            .iter()
            .filter(|c| c.enabled)
            .map(|c| c.new_bytes)
            .sum::<u64>()
            .into();
        print_json(&v);
        return Ok(0);
    }
    let quota = match (u.quota, u.free) {
        (Some(q), Some(f)) => format!(" of {} ({} free)", human_bytes(q), human_bytes(f)),
        _ => String::new(),
    };
    println!(
        "Used: {}{quota}{}",
        human_bytes(u.used),
        u.plan
            .as_ref()
            .map(|p| format!(", plan {p}"))
            .unwrap_or_default()
    );
    for d in &u.devices {
        println!("  {:<20} {:>10}", d.device, human_bytes(d.bytes));
    }
    crate::status::storage_categories(&remote, &u);
    if !backups.is_empty() {
        println!("Backups (deleting one frees at once):");
    }
    for s in &backups {
        println!(
            "  {}  {}  {:<16} frees {:>10}",
            short(&s.id),
            s.time,
            s.device,
            human_bytes(s.freed_if_deleted)
        );
    }
    Ok(0)
}

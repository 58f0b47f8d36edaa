//! The device's backup settings (`config.toml` in the state directory).

use std::path::{Path, PathBuf};

use haven_proto::ErrorCode;
use serde::{Deserialize, Serialize};

use crate::profile::ConfigDir;
use crate::{ClientError, Result};

/// What to back up and how. Every key is optional.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Absolute paths backed up by a plain `haven backup`; empty means the
    /// home directory.
    pub paths: Vec<PathBuf>,
    /// Glob patterns to skip. A pattern with a `/` matches the whole path
    /// (`/home/*/Downloads`, `**/node_modules`); one without matches the
    /// file name (`*.iso`).
    pub exclude: Vec<String>,
    /// Skip the usual caches: `~/.cache`, the trash, and directories that
    /// hold a `CACHEDIR.TAG`.
    pub exclude_caches: bool,
    /// zstd level for compressible chunks (0 stores everything raw).
    pub compression_level: i32,
    /// Cap on the upload rate, e.g. `"8MiB"` (per second).
    pub upload_limit: Option<String>,
    /// Category rules that replace built-in ones of the same name or add
    /// new ones (see docs/CLIENT.md).
    pub categories: Vec<crate::categories::CategoryRule>,
    /// Order in which categories are backed up when storage is short.
    pub category_priority: Vec<String>,
    /// When storage is short, back up the categories that fit (a partial
    /// backup) rather than nothing.
    pub partial: bool,
    /// How often backups are due, e.g. `"24h"` (for `haven status` and the agent).
    pub interval: String,
    /// The agent backs up only on AC power.
    pub require_power: bool,
    /// The agent backs up only while the session is locked or idle.
    pub require_idle: bool,
    /// The agent may back up on a metered network.
    pub allow_metered: bool,
    /// How often the agent checks, e.g. `"5m"`.
    pub check_every: String,
    /// The agent runs with the lowest CPU and I/O priority.
    pub background_priority: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            paths: Vec::new(),
            exclude: Vec::new(),
            exclude_caches: true,
            compression_level: 3,
            upload_limit: None,
            categories: Vec::new(),
            category_priority: crate::categories::default_priority(),
            partial: true,
            interval: "24h".into(),
            require_power: true,
            require_idle: true,
            allow_metered: false,
            check_every: "5m".into(),
            background_priority: true,
        }
    }
}

impl Config {
    /// Reads `config.toml`; a missing file means the defaults.
    pub fn load(dir: &ConfigDir) -> Result<Config> {
        let p = dir.config_file();
        match std::fs::read_to_string(&p) {
            Ok(text) => toml::from_str(&text).map_err(|e| {
                ClientError::new(ErrorCode::ConfigInvalid, format!("{} is invalid: {e}", p.display()))
                    .fix("Fix the file (see docs/CLIENT.md for the keys) or remove it to use the defaults.")
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(ClientError::io("read", &p, e)),
        }
    }

    /// The paths to back up when none are given.
    pub fn default_paths(&self) -> Result<Vec<PathBuf>> {
        if !self.paths.is_empty() {
            return Ok(self.paths.clone());
        }
        match home() {
            Some(h) => Ok(vec![h]),
            None => Err(ClientError::new(ErrorCode::ConfigInvalid, "HOME is not set and no paths are configured, so there is nothing to back up.")
                .fix("Name the paths: `haven backup /path/one /path/two`, or set `paths` in config.toml.")),
        }
    }
}

/// The user's home directory.
pub fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}

/// Expands a leading `~/`.
pub fn expand_tilde(p: &str) -> String {
    match (p.strip_prefix("~/"), home()) {
        (Some(rest), Some(h)) => format!("{}/{rest}", h.display()),
        _ => p.to_string(),
    }
}

/// Makes `p` absolute against the current directory, without following
/// symlinks, and removes `.` and `..` lexically.
pub fn absolute(p: &Path) -> Result<PathBuf> {
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| ClientError::io("read", Path::new("."), e))?
            .join(p)
    };
    let mut out = PathBuf::from("/");
    for c in joined.components() {
        match c {
            std::path::Component::Normal(n) => out.push(n),
            std::path::Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Parses a size or rate such as `8MiB` (see [`haven_proto::units::parse_bytes`]).
pub fn parse_bytes(text: &str) -> Result<u64> {
    haven_proto::units::parse_bytes(text).ok_or_else(|| {
        ClientError::new(
            ErrorCode::ConfigInvalid,
            format!("{text:?} is not a size such as 8MiB or 500kB."),
        )
        .fix("Write a number with a unit: B, kB, KiB, MB, MiB, GB or GiB.")
    })
}

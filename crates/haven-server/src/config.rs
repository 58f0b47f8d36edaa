//! Server configuration: one struct, read from an optional TOML file, then
//! overridden by `HAVEN_*` environment variables and flags (clap merges
//! those two), in [`Config::load`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Everything the server can be configured with. See docs/OPERATIONS.md.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where the database and packs live.
    pub data_dir: PathBuf,
    /// Anyone who can reach the server may create an account.
    pub allow_signup: bool,
    /// Argon2id memory (KiB) for new accounts and fake prelogin answers.
    pub kdf_memory_kib: u32,
    /// Argon2id passes for new accounts.
    pub kdf_iterations: u32,
    /// Clients older than this get `client_too_old`.
    pub min_client_version: String,
    /// Days an invite stays valid.
    pub invite_days: u32,
    /// Days an inactive upload session, and what it uploaded, is kept for
    /// the backup to resume.
    pub session_days: u32,
    /// Cap on the bytes the pack store may hold (e.g. "500 GB"); past it,
    /// uploads fail as on a full disk. Unset: the disk is the limit.
    pub max_store_bytes: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8420)),
            data_dir: PathBuf::from("haven-data"),
            allow_signup: false,
            kdf_memory_kib: haven_format::keys::KdfParams::DEFAULT_MEMORY_KIB,
            kdf_iterations: haven_format::keys::KdfParams::DEFAULT_ITERATIONS,
            min_client_version: "0.1.0".into(),
            invite_days: 7,
            session_days: 7,
            max_store_bytes: None,
        }
    }
}

/// Values given on the command line or in the environment; `None` keeps
/// the file's (or the default) value.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub allow_signup: bool,
}

impl Config {
    /// File, then overrides.
    pub fn load(file: Option<&Path>, o: Overrides) -> anyhow::Result<Config> {
        let mut c = match file {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| {
                    anyhow::anyhow!("cannot read the config file {}: {e}", p.display())
                })?;
                toml::from_str(&text).map_err(|e| {
                    anyhow::anyhow!("the config file {} is invalid: {e}", p.display())
                })?
            }
            None => Config::default(),
        };
        if let Some(l) = o.listen {
            c.listen = l;
        }
        if let Some(d) = o.data_dir {
            c.data_dir = d;
        }
        c.allow_signup |= o.allow_signup;
        Ok(c)
    }
}

/// Compares dotted version numbers ("0.10.1" > "0.9.9"); non-numeric parts count as 0.
pub fn version_less(a: &str, b: &str) -> bool {
    let parse = |s: &str| -> Vec<u64> {
        s.split(['.', '-', '+'])
            .take(3)
            .map(|p| p.parse().unwrap_or(0))
            .collect()
    };
    parse(a) < parse(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        assert!(version_less("0.9.9", "0.10.0"));
        assert!(!version_less("0.1.0", "0.1.0"));
        assert!(version_less("garbage", "0.0.1"));
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(toml::from_str::<Config>("listne = \"1.2.3.4:5\"").is_err());
        let c: Config = toml::from_str("allow_signup = true").expect("parse");
        assert!(c.allow_signup);
    }
}

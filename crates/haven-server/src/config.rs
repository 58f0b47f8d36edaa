//! Server configuration: one struct, read from an optional TOML file, then
//! overridden by `HAVEN_<KEY>` environment variables, then by flags
//! (`--set key=value` for any key), in [`Config::load`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

pub use haven_store::Clock;

/// A storage plan.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PlanConfig {
    pub name: String,
    /// Quota, e.g. `"50 GB"`.
    pub quota: String,
    /// Users may move to this plan themselves (`haven plan set`).
    #[serde(default = "yes")]
    pub selectable: bool,
    /// `quota` in bytes, filled by [`Config::validate`].
    #[serde(skip)]
    pub quota_bytes: u64,
}

fn yes() -> bool {
    true
}

/// Every key of [`Config`], for `HAVEN_<KEY>` and `--set KEY=VALUE`.
pub const KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "allow_signup",
    "kdf_memory_kib",
    "kdf_iterations",
    "min_client_version",
    "invite_days",
    "session_days",
    "max_store_bytes",
    "default_plan",
    "plans",
    "keep_last",
    "keep_weekly",
    "expire_days",
    "maintenance_minutes",
    "scrub_days",
    "gc_hours",
    "tls_cert",
    "tls_key",
    "token_days",
    "grant_minutes",
    "trust_forwarded_for",
    "max_connections",
];

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
    /// The plan of new accounts (required when `plans` is not empty).
    pub default_plan: Option<String>,
    /// Storage plans; none means accounts have no quota.
    pub plans: Vec<PlanConfig>,
    /// Retention: each device keeps its newest `keep_last` backups…
    pub keep_last: u32,
    /// …plus the newest backup of each of the last `keep_weekly` weeks.
    pub keep_weekly: u32,
    /// Backups of a device that has not backed up for this many days
    /// expire (0: never).
    pub expire_days: u32,
    /// How often the maintenance job looks for due work (expiry, scrub, GC).
    pub maintenance_minutes: u32,
    /// Days between scrubs (0: only `haven-server scrub`).
    pub scrub_days: u32,
    /// Hours between GC passes (0: only `haven-server gc`).
    pub gc_hours: u32,
    /// PEM certificate chain: with `tls_key`, the server serves HTTPS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert` (PKCS#8, PKCS#1 or SEC1).
    pub tls_key: Option<PathBuf>,
    /// A device sign-in not used for this many days expires (0: never).
    pub token_days: u32,
    /// Minutes a proof of the password lets a device (or a console
    /// sign-in) delete or weaken backups.
    pub grant_minutes: u32,
    /// Behind a reverse proxy: take a request's address from the last
    /// entry of `X-Forwarded-For` (for the log and the rate limits).
    pub trust_forwarded_for: bool,
    /// Connections kept open at most (0: the file-descriptor limit less
    /// 256); past it the oldest that has sent no request is closed.
    pub max_connections: u32,
    /// The clock of retention, expiry and sign-ins. Tests move it; no file,
    /// variable, flag or request can set it.
    #[serde(skip)]
    pub clock: haven_store::Clock,
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
            default_plan: None,
            plans: Vec::new(),
            keep_last: 3,
            keep_weekly: 4,
            expire_days: 180,
            maintenance_minutes: 60,
            scrub_days: 7,
            gc_hours: 24,
            tls_cert: None,
            tls_key: None,
            token_days: 90,
            grant_minutes: 5,
            trust_forwarded_for: false,
            max_connections: 0,
            clock: haven_store::Clock::default(),
        }
    }
}

/// Values given on the command line; `None` keeps the environment's, the
/// file's or the default value.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub allow_signup: bool,
    /// `KEY=VALUE` pairs from `--set`.
    pub set: Vec<String>,
}

/// A value from the environment or `--set`: TOML if it parses as TOML
/// (`3`, `true`, `[{name = "free", quota = "5 GB"}]`), else a string.
fn env_value(text: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {text}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(text.to_string()))
}

impl Config {
    /// File, then `HAVEN_<KEY>` variables, then flags; validated.
    pub fn load(file: Option<&Path>, o: Overrides) -> anyhow::Result<Config> {
        let mut table = match file {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read the config file {}", p.display()))?;
                toml::from_str::<toml::Table>(&text)
                    .with_context(|| format!("the config file {} is invalid", p.display()))?
            }
            None => toml::Table::new(),
        };
        for key in KEYS {
            if let Ok(v) = std::env::var(format!("HAVEN_{}", key.to_uppercase())) {
                table.insert(key.to_string(), env_value(&v));
            }
        }
        for pair in &o.set {
            let Some((k, v)) = pair.split_once('=') else {
                bail!("--set {pair:?}: write KEY=VALUE, e.g. --set keep_last=5");
            };
            let k = k.trim();
            if !KEYS.contains(&k) {
                bail!(
                    "--set {pair:?}: {k:?} is not a config key (keys: {})",
                    KEYS.join(", ")
                );
            }
            table.insert(k.to_string(), env_value(v.trim()));
        }
        let mut c: Config = table.try_into().map_err(|e| {
            anyhow::anyhow!(
                "the configuration is invalid{}: {e}",
                file.map(|p| format!(" ({})", p.display()))
                    .unwrap_or_default()
            )
        })?;
        if let Some(l) = o.listen {
            c.listen = l;
        }
        if let Some(d) = o.data_dir {
            c.data_dir = d;
        }
        c.allow_signup |= o.allow_signup;
        c.validate()?;
        Ok(c)
    }

    /// Checks the plans and fills their sizes in bytes.
    pub fn validate(&mut self) -> anyhow::Result<()> {
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            bail!(
                "HTTPS needs both tls_cert (the PEM certificate chain) and tls_key (its PEM private key); only one is set"
            );
        }
        if self.grant_minutes == 0 {
            bail!("grant_minutes = 0 would make deleting backups impossible: give at least 1");
        }
        if self.keep_last == 0 {
            bail!("keep_last = 0 would delete the backup just made: keep at least 1");
        }
        for i in 0..self.plans.len() {
            let p = &self.plans[i];
            if p.name.trim().is_empty() {
                bail!("a plan has an empty name");
            }
            if self.plans[..i].iter().any(|q| q.name == p.name) {
                bail!("the plan {:?} is defined twice", p.name);
            }
            let bytes = haven_proto::units::parse_bytes(&p.quota).with_context(|| {
                format!(
                    "the quota of plan {:?}, {:?}, is not a size such as \"50 GB\"",
                    p.name, p.quota
                )
            })?;
            self.plans[i].quota_bytes = bytes;
        }
        match &self.default_plan {
            Some(d) if !self.plans.iter().any(|p| &p.name == d) => {
                bail!("default_plan = {d:?} names no plan in [[plans]]")
            }
            None if !self.plans.is_empty() => {
                bail!(
                    "plans are configured but default_plan is not: set it to the plan of new accounts"
                )
            }
            _ => Ok(()),
        }
    }

    /// The plan an account is on: its own if it still exists, else the
    /// default; `None` on a server without plans.
    pub fn plan(&self, account_plan: Option<&str>) -> Option<&PlanConfig> {
        account_plan
            .and_then(|n| self.plans.iter().find(|p| p.name == n))
            .or_else(|| {
                let d = self.default_plan.as_deref()?;
                self.plans.iter().find(|p| p.name == d)
            })
    }
}

pub use haven_proto::units::version_less;

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
    fn plans_parse_and_validate() {
        let text = "default_plan = \"free\"\n[[plans]]\nname = \"free\"\nquota = \"5 GB\"\n\
                    [[plans]]\nname = \"family\"\nquota = \"200 GB\"\nselectable = false\n";
        let mut c: Config = toml::from_str(text).expect("parse");
        c.validate().expect("valid");
        assert_eq!(c.plans[0].quota_bytes, 5_000_000_000);
        assert!(!c.plans[1].selectable);
        assert_eq!(c.plan(None).map(|p| p.name.as_str()), Some("free"));
        assert_eq!(
            c.plan(Some("family")).map(|p| p.name.as_str()),
            Some("family")
        );
        assert_eq!(
            c.plan(Some("removed")).map(|p| p.name.as_str()),
            Some("free")
        );
        c.default_plan = Some("gold".into());
        assert!(c.validate().is_err());
        c.default_plan = None;
        assert!(c.validate().is_err(), "plans need a default");
        c.plans[1].quota = "lots".into();
        c.default_plan = Some("free".into());
        assert!(c.validate().is_err());
    }

    #[test]
    fn set_flags_override_keys() {
        let c = Config::load(
            None,
            Overrides {
                set: vec![
                    "keep_last=7".into(),
                    "plans=[{name = \"p\", quota = \"1 MB\"}]".into(),
                    "default_plan=p".into(),
                ],
                ..Overrides::default()
            },
        )
        .expect("load");
        assert_eq!(c.keep_last, 7);
        assert_eq!(c.plans[0].quota_bytes, 1_000_000);
        assert!(
            Config::load(
                None,
                Overrides {
                    set: vec!["nope=1".into()],
                    ..Overrides::default()
                }
            )
            .is_err()
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(toml::from_str::<Config>("listne = \"1.2.3.4:5\"").is_err());
        let c: Config = toml::from_str("allow_signup = true").expect("parse");
        assert!(c.allow_signup);
    }
}

//! The client's state directory (`HAVEN_CONFIG_DIR`, default
//! `~/.config/haven`): the device's sign-in and keys, its settings and its
//! caches. Several devices can live on one machine with several dirs.
//!
//! `device.json` holds the server URL, the device token and the account's
//! master key, so that backups run unattended without the password. It is
//! written with mode 0600 in a 0700 directory; docs/SECURITY.md says what
//! that means if the device is stolen.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use haven_format::keys::MasterKey;
use haven_proto::ErrorCode;
use serde::{Deserialize, Serialize};

use crate::{ClientError, HttpRemote, Result};

/// What a signed-in device keeps.
#[derive(Clone, Serialize, Deserialize)]
pub struct Profile {
    pub server: String,
    pub email: String,
    pub account_id: i64,
    pub device_id: i64,
    pub device: String,
    pub token: String,
    /// The account master key, hex.
    pub master_key: String,
    /// A private CA's certificate (PEM) trusted for this server besides
    /// the platform's roots (`--ca-cert`, `HAVEN_CA_CERT` at sign-in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<String>,
    /// The user allowed plain HTTP to a host that is not this machine.
    #[serde(default)]
    pub allow_insecure_http: bool,
}

impl Profile {
    /// The master key.
    pub fn master_key(&self) -> Result<MasterKey> {
        MasterKey::from_hex(&self.master_key).map_err(|_| {
            ClientError::new(
                ErrorCode::ConfigInvalid,
                "The key stored for this device is damaged.",
            )
            .fix("Sign this device in again with `haven login --server URL --email EMAIL`.")
        })
    }

    /// How this device reaches its server.
    pub fn transport(&self) -> crate::http::Transport {
        crate::http::Transport {
            ca_pem: self.ca_cert.clone(),
            allow_insecure_http: self.allow_insecure_http,
        }
    }

    /// A remote signed in as this device.
    pub fn remote(&self) -> Result<HttpRemote> {
        HttpRemote::with_transport(&self.server, Some(self.token.clone()), &self.transport())
    }
}

/// The state directory.
#[derive(Clone, Debug)]
pub struct ConfigDir {
    path: PathBuf,
}

/// Writes a file atomically with mode 0600: temp file, fsync, rename.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    write_private_file(path, bytes, true)
}

/// Like [`write_private`] without the fsyncs, for hints whose loss in a
/// power cut costs nothing but a little work (~20 ms less here).
pub fn write_private_hint(path: &Path, bytes: &[u8]) -> Result<()> {
    write_private_file(path, bytes, false)
}

fn write_private_file(path: &Path, bytes: &[u8], durable: bool) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let res = (|| -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        if durable {
            f.sync_all()?;
        }
        fs::rename(&tmp, path)?;
        if durable && let Some(dir) = path.parent() {
            fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    res.map_err(|e| ClientError::io("write", path, e))
}

impl ConfigDir {
    /// `HAVEN_CONFIG_DIR`, else `$XDG_CONFIG_HOME/haven`, else `~/.config/haven`.
    pub fn from_env() -> Result<Self> {
        let path = if let Some(p) = std::env::var_os("HAVEN_CONFIG_DIR") {
            PathBuf::from(p)
        } else if let Some(p) = std::env::var_os("XDG_CONFIG_HOME") {
            PathBuf::from(p).join("haven")
        } else if let Some(h) = std::env::var_os("HOME") {
            PathBuf::from(h).join(".config/haven")
        } else {
            return Err(ClientError::new(ErrorCode::ConfigInvalid, "Neither HAVEN_CONFIG_DIR nor HOME is set, so Haven does not know where to keep its state.")
                .fix("Set HAVEN_CONFIG_DIR to a directory Haven may use."));
        };
        Ok(ConfigDir { path })
    }

    /// A given directory.
    pub fn at(path: impl Into<PathBuf>) -> Self {
        ConfigDir { path: path.into() }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the directory (0700) if needed.
    pub fn ensure(&self) -> Result<()> {
        fs::create_dir_all(&self.path).map_err(|e| ClientError::io("create", &self.path, e))?;
        fs::set_permissions(&self.path, fs::Permissions::from_mode(0o700))
            .map_err(|e| ClientError::io("protect", &self.path, e))
    }

    fn profile_path(&self) -> PathBuf {
        self.path.join("device.json")
    }

    /// The signed-in device, or `not_signed_in`.
    pub fn profile(&self) -> Result<Profile> {
        let p = self.profile_path();
        let text = match fs::read(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ClientError::new(ErrorCode::NotSignedIn, format!("This device is not signed in to a Haven server (no {}).", p.display()))
                    .fix("Create an account with `haven signup --server URL --email EMAIL`, or sign in with `haven login --server URL --email EMAIL`.")
                    .fix("If you use several devices on this machine, set HAVEN_CONFIG_DIR to the right one."));
            }
            Err(e) => return Err(ClientError::io("read", &p, e)),
        };
        serde_json::from_slice(&text).map_err(|e| {
            ClientError::new(
                ErrorCode::ConfigInvalid,
                format!("{} is damaged: {e}.", p.display()),
            )
            .fix("Sign this device in again with `haven login`; it continues as the same device.")
        })
    }

    /// Saves the signed-in device (0600).
    pub fn save_profile(&self, profile: &Profile) -> Result<()> {
        self.ensure()?;
        let bytes = serde_json::to_vec_pretty(profile).unwrap_or_default();
        write_private(&self.profile_path(), &bytes)
    }

    /// The local cache directory (trees, referenced-blob sets).
    pub fn cache(&self) -> PathBuf {
        self.path.join("cache")
    }

    /// Path of the user settings file.
    pub fn config_file(&self) -> PathBuf {
        self.path.join("config.toml")
    }

    /// Takes the backup lock: one backup per device at a time. The lock is
    /// released when the returned file is dropped or the process dies.
    pub fn lock_backup(&self) -> Result<fs::File> {
        self.ensure()?;
        let p = self.path.join("backup.lock");
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&p)
            .map_err(|e| ClientError::io("open", &p, e))?;
        match f.try_lock() {
            Ok(()) => Ok(f),
            Err(fs::TryLockError::WouldBlock) => Err(ClientError::new(ErrorCode::BackupInProgress, "Another backup of this device is running.")
                .fix("Wait for it to finish (its progress shows where it was started), then run this one again if still needed.")),
            Err(fs::TryLockError::Error(e)) => Err(ClientError::io("lock", &p, e)),
        }
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

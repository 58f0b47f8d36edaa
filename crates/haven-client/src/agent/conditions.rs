//! When may the agent back up? On AC power, with the session locked or
//! idle, on an unmetered network. Each condition comes from the system
//! (sysfs, logind and NetworkManager over D-Bus) or from a conditions file
//! that stands in for all of them.
//!
//! When a source is absent the condition takes a documented default that
//! lets backups happen on machines without it: no battery in sysfs means
//! mains power (a desktop); no logind means idle (a headless machine); no
//! NetworkManager means unmetered (a wired server).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What the agent looks at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conditions {
    pub on_power: bool,
    pub idle: bool,
    pub metered: bool,
}

/// Which conditions the user requires (config keys `require_power`,
/// `require_idle`, `allow_metered`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Requirements {
    pub power: bool,
    pub idle: bool,
    pub allow_metered: bool,
}

impl Conditions {
    /// `None` if they allow a backup, else why not.
    pub fn blocker(&self, req: &Requirements) -> Option<&'static str> {
        if req.power && !self.on_power {
            Some("on battery power")
        } else if req.idle && !self.idle {
            Some("the computer is in use")
        } else if !req.allow_metered && self.metered {
            Some("the network is metered")
        } else {
            None
        }
    }
}

/// Where conditions come from.
pub enum Source {
    /// A JSON file `{"on_power": true, "idle": true, "metered": false}`,
    /// re-read at every check.
    File(PathBuf),
    /// The system: sysfs under `power_supply` and the D-Bus system bus.
    System { power_supply: PathBuf },
}

impl Source {
    /// The system's sources (`HAVEN_POWER_SUPPLY_DIR` replaces
    /// `/sys/class/power_supply`, for tests).
    pub fn system() -> Self {
        Source::System {
            power_supply: std::env::var_os("HAVEN_POWER_SUPPLY_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/sys/class/power_supply")),
        }
    }

    /// Reads the conditions now. An error (unreadable conditions file)
    /// means "not met".
    pub fn read(&self) -> Result<Conditions, String> {
        match self {
            Source::File(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| format!("cannot read the conditions file {}: {e}", p.display()))?;
                serde_json::from_str(&text)
                    .map_err(|e| format!("the conditions file {} is invalid: {e}", p.display()))
            }
            Source::System { power_supply } => Ok(Conditions {
                on_power: on_power(power_supply),
                idle: session_idle().unwrap_or(true),
                metered: network_metered().unwrap_or(false),
            }),
        }
    }
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

/// On mains power: an AC adapter (or USB supply) is online, or a battery
/// says it is charging or full, or there is no battery at all.
pub fn on_power(power_supply: &Path) -> bool {
    let Ok(rd) = std::fs::read_dir(power_supply) else {
        return true;
    };
    let mut battery = false;
    for e in rd.flatten() {
        let dir = e.path();
        match read_trim(&dir.join("type")).as_deref() {
            Some("Mains") | Some("USB") | Some("USB_C") | Some("USB_PD")
                if read_trim(&dir.join("online")).as_deref() == Some("1") =>
            {
                return true;
            }
            Some("Battery") => {
                // A peripheral's battery (mouse, headset) does not count.
                if read_trim(&dir.join("scope")).as_deref() == Some("Device") {
                    continue;
                }
                battery = true;
                if matches!(
                    read_trim(&dir.join("status")).as_deref(),
                    Some("Charging") | Some("Full")
                ) {
                    return true;
                }
            }
            _ => {}
        }
    }
    !battery
}

/// logind: the caller's session is locked or idle. `None` without logind.
fn session_idle() -> Option<bool> {
    let conn = zbus::blocking::Connection::system().ok()?;
    let proxy = zbus::blocking::Proxy::new(
        &conn,
        "org.freedesktop.login1",
        "/org/freedesktop/login1/session/auto",
        "org.freedesktop.login1.Session",
    )
    .ok()?;
    let locked: bool = proxy.get_property("LockedHint").ok()?;
    let idle: bool = proxy.get_property("IdleHint").ok()?;
    Some(locked || idle)
}

/// NetworkManager: the primary connection is metered (known or guessed),
/// or goes over a mobile or Bluetooth link. `None` without NetworkManager.
fn network_metered() -> Option<bool> {
    let conn = zbus::blocking::Connection::system().ok()?;
    let proxy = zbus::blocking::Proxy::new(
        &conn,
        "org.freedesktop.NetworkManager",
        "/org/freedesktop/NetworkManager",
        "org.freedesktop.NetworkManager",
    )
    .ok()?;
    // NMMetered: 0 unknown, 1 yes, 2 no, 3 guessed yes, 4 guessed no.
    let metered: u32 = proxy.get_property("Metered").ok()?;
    let kind: String = proxy
        .get_property("PrimaryConnectionType")
        .unwrap_or_default();
    Some(matches!(metered, 1 | 3) || matches!(kind.as_str(), "gsm" | "cdma" | "bluetooth"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn supply(root: &Path, name: &str, files: &[(&str, &str)]) {
        let d = root.join(name);
        std::fs::create_dir_all(&d).expect("mkdir");
        for (f, v) in files {
            std::fs::write(d.join(f), format!("{v}\n")).expect("write");
        }
    }

    /// Trees as recorded from real machines' /sys/class/power_supply.
    #[test]
    fn power_from_sysfs_trees() {
        let t = tempfile::tempdir().expect("tempdir");
        let desktop = t.path().join("desktop");
        std::fs::create_dir_all(&desktop).expect("mkdir");
        assert!(on_power(&desktop), "no battery: mains");
        assert!(on_power(&t.path().join("absent")), "no sysfs: mains");

        let plugged = t.path().join("plugged");
        supply(&plugged, "AC", &[("type", "Mains"), ("online", "1")]);
        supply(
            &plugged,
            "BAT0",
            &[
                ("type", "Battery"),
                ("status", "Charging"),
                ("capacity", "57"),
            ],
        );
        assert!(on_power(&plugged));

        let unplugged = t.path().join("unplugged");
        supply(&unplugged, "AC", &[("type", "Mains"), ("online", "0")]);
        supply(
            &unplugged,
            "BAT0",
            &[("type", "Battery"), ("status", "Discharging")],
        );
        supply(
            &unplugged,
            "hidpp_battery_0",
            &[
                ("type", "Battery"),
                ("scope", "Device"),
                ("status", "Charging"),
            ],
        );
        assert!(
            !on_power(&unplugged),
            "a charging mouse does not power the laptop"
        );

        let usbc = t.path().join("usbc");
        supply(
            &usbc,
            "ucsi-source-psy-USBC000:001",
            &[("type", "USB"), ("online", "1")],
        );
        supply(
            &usbc,
            "BAT1",
            &[("type", "Battery"), ("status", "Not charging")],
        );
        assert!(on_power(&usbc));
    }

    #[test]
    fn requirements_decide() {
        let c = Conditions {
            on_power: false,
            idle: true,
            metered: true,
        };
        let all = Requirements {
            power: true,
            idle: true,
            allow_metered: false,
        };
        assert_eq!(c.blocker(&all), Some("on battery power"));
        let relaxed = Requirements {
            power: false,
            idle: true,
            allow_metered: true,
        };
        assert_eq!(c.blocker(&relaxed), None);
    }

    #[test]
    fn a_bad_conditions_file_means_not_met() {
        let t = tempfile::tempdir().expect("tempdir");
        let p = t.path().join("c.json");
        assert!(Source::File(p.clone()).read().is_err());
        std::fs::write(&p, "{not json").expect("write");
        assert!(Source::File(p.clone()).read().is_err());
        std::fs::write(&p, r#"{"on_power": true, "idle": false, "metered": false}"#)
            .expect("write");
        assert!(!Source::File(p).read().expect("read").idle);
    }
}

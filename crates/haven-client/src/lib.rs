//! The Haven device client: account set-up, the backup pipeline and
//! restore, over the [`Remote`] trait (HTTP in [`HttpRemote`]).
//!
//! The CLI (`haven`) is a thin layer over this crate; everything a user can
//! do is a function here that returns a report or a [`ClientError`] that
//! says what happened and what to do.

pub mod account;
pub mod agent;
mod archiver;
pub mod backup;
mod cache;
pub mod categories;
pub mod config;
pub mod doctor;
mod error;
mod fsmeta;
pub mod history;
mod http;
pub mod inspect;
mod pipeline;
pub mod profile;
mod remote;
pub mod restore;
pub mod scan;
mod selection;
pub mod space;

pub use error::{ClientError, Result};
pub use http::HttpRemote;
pub use remote::Remote;

/// This client's version, sent to the server with every request.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `1.5 MB` style sizes (SI units, as file managers show them).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

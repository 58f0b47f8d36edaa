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
pub mod dictionary;
pub mod doctor;
mod error;
mod fsmeta;
pub mod history;
pub mod http;
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

pub use haven_proto::units::human_bytes;

//! The Haven device client: account set-up, the backup pipeline and
//! restore, over the [`Remote`] trait (HTTP in [`HttpRemote`]).
//!
//! The CLI (`haven`) is a thin layer over this crate; everything a user can
//! do is a function here that returns a report or a [`ClientError`] that
//! says what happened and what to do.

pub mod account;
mod archiver;
pub mod backup;
mod cache;
pub mod config;
mod error;
mod fsmeta;
mod http;
mod pipeline;
pub mod profile;
mod remote;
pub mod restore;
mod selection;

pub use error::{ClientError, Result};
pub use http::HttpRemote;
pub use remote::Remote;

/// This client's version, sent to the server with every request.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

//! The one place where errors become HTTP answers: a status, a stable
//! code, a message that says what happened, and what to do. Internal
//! details (paths, SQL) are logged, never sent.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use haven_proto::{ErrorBody, ErrorCode, ErrorEnvelope};
use haven_store::{StoreError, meta};

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: Box<ErrorBody>,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: Box::new(ErrorBody {
                code,
                message: message.into(),
                fix: Vec::new(),
                details: None,
                needed: None,
                available: None,
            }),
            retry_after: None,
        }
    }

    pub fn fix(mut self, fix: impl Into<String>) -> Self {
        self.body.fix.push(fix.into());
        self
    }

    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.body.details = Some(details);
        self
    }

    /// The same error under another status (a 405 or 415 is a bad
    /// request too).
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message)
            .fix("This is a bug in the client or a request made by hand; check the request against docs/API.md.")
    }

    /// Not found, and also the answer for other accounts' objects, so that
    /// ids cannot be probed (invariant 7).
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("No {what} with this id exists in your account."),
        )
        .fix("List what exists with `haven backups list --all`.")
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "This device is not signed in, or its sign-in was revoked (for example after a password change).",
        )
        .fix("Sign in again with `haven login --server URL --email EMAIL`.")
    }

    /// A device's token alone may add backups and read, never delete or
    /// weaken them (invariant 10).
    pub fn password_required() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            ErrorCode::PasswordRequired,
            "This deletes or weakens the account's backups, so it needs the account's password, and the request carried no recent proof of it. Nothing was changed.",
        )
        .fix("Run the command where you can type the password, or give it with HAVEN_PASSWORD or --password-file; `haven` asks for it.")
        .fix("Over the API: POST /v1/auth/elevate with the auth key, then send its grant in the haven-grant header (docs/API.md).")
    }

    /// Too many failures to prove a password; try again in `secs`.
    pub fn rate_limited(failures: u32, window_minutes: i64, secs: u64) -> Self {
        let minutes = secs.div_ceil(60).max(1);
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            format!("Too many failed attempts: {failures} wrong passwords, recovery keys or invites for this account or from this address in the last {window_minutes} minutes, so this one was not checked."),
        )
        .fix(format!("Wait {minutes} minutes, then try again with the right password."))
        .fix("If you forgot the password, set a new one with `haven recover` and the recovery key once the wait is over.")
        .details(serde_json::json!({ "retry_after": secs }));
        e.retry_after = Some(secs);
        e
    }

    /// A sign-in that was ended, with why.
    pub fn token_revoked(reason: &str, token_days: u32) -> Self {
        let why = match reason {
            "device_removed" => "This device was signed out from another device of the account.".to_string(),
            "password_changed" => "The account's password was changed, which signed this device out.".to_string(),
            "replaced" => "This device was signed in again (here or on another machine with the same device name), which replaced this sign-in.".to_string(),
            "expired" => format!("This device's sign-in expired: it was not used for {token_days} days."),
            _ => "This device's sign-in was ended.".to_string(),
        };
        Self::new(StatusCode::UNAUTHORIZED, ErrorCode::TokenRevoked, why)
            .fix("Sign in again with `haven login --server URL --email EMAIL --device NAME` (the account's password is needed); the device keeps its backups and continues as before.")
            .details(serde_json::json!({ "reason": reason }))
    }

    pub fn wrong_password() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorCode::WrongPassword, "The email or password is wrong.")
            .fix("Check the email and type the password again.")
            .fix("If you forgot the password, set a new one with `haven recover --server URL --email EMAIL --recovery-key KEY`.")
    }

    pub fn pack_invalid(why: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::PackInvalid, format!("The uploaded pack was rejected: {why}."))
            .fix("The data was damaged in transit or by the client; the client retries the upload. If it keeps failing, update the client.")
    }

    /// The quota cannot hold what was asked for.
    pub fn quota_exceeded(needed: u64, available: u64) -> Self {
        let mut e = Self::new(
            StatusCode::INSUFFICIENT_STORAGE,
            ErrorCode::QuotaExceeded,
            format!(
                "Your storage is full: this needs {needed} bytes more and {available} bytes are free under your plan."
            ),
        )
        .fix("Delete backups you no longer need: `haven storage` shows what deleting each one frees.")
        .fix("Switch off categories you do not need backed up: `haven categories off NAME`.")
        .fix("Move to a bigger plan: `haven plan list`.");
        e.body.needed = Some(needed);
        e.body.available = Some(available);
        e
    }

    pub fn storage(e: &StoreError) -> Self {
        tracing::error!(error = %e, "storage failure");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::StorageUnavailable,
            "The server could not read or write its storage.",
        )
        .fix("Try again in a few minutes; nothing was lost.")
        .fix("If this persists, the server operator should check the server's log and its disk.")
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::not_found("object"),
            StoreError::Invalid(m) => ApiError::bad_request(m),
            StoreError::QuotaExceeded { needed, available } => {
                ApiError::quota_exceeded(needed, available)
            }
            StoreError::Conflict(meta::TOO_MANY_DEVICES) => ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::LimitReached,
                format!("This account has {} devices, the most this server keeps for one account, so no new device was added.", meta::MAX_DEVICES),
            )
            .fix("Sign this device in under the name of a device you no longer use: `haven devices` lists them; pass it with --device NAME.")
            .details(serde_json::json!({ "limit": "devices", "max": meta::MAX_DEVICES })),
            StoreError::Conflict(meta::TOO_MANY_CATEGORIES) => ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::LimitReached,
                format!("This device has {} categories, the most this server keeps for one device, so no new one was added.", meta::MAX_CATEGORIES),
            )
            .fix("Switch one of the listed categories instead (`haven categories`); category names come from the device's scan.")
            .details(serde_json::json!({ "limit": "categories", "max": meta::MAX_CATEGORIES })),
            StoreError::Io(ref io) if io.kind() == std::io::ErrorKind::StorageFull => {
                tracing::error!(
                    "the data directory's disk is full (ENOSPC): free space or grow the volume; nothing acknowledged was lost"
                );
                ApiError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    ErrorCode::ServerStorageFull,
                    "The server's disk is full, so it cannot store this backup.",
                )
                .fix("Tell the server's operator; the backup resumes where it stopped once space is freed.")
            }
            other => ApiError::storage(&other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(ErrorEnvelope { error: *self.body })).into_response();
        if let Some(secs) = self.retry_after {
            r.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        r
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

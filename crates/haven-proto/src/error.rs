use serde::{Deserialize, Serialize};

/// Stable machine-readable error codes. Clients match on these; the
/// strings never change meaning once released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is malformed (bad JSON, bad id, bad field).
    BadRequest,
    /// No or an unknown/expired token.
    Unauthorized,
    /// Email or password (or recovery key) is wrong.
    WrongPassword,
    /// Sign-up needs an invite on this server.
    SignupClosed,
    /// The invite code is unknown, used or expired.
    InviteInvalid,
    /// An account with this email exists.
    EmailTaken,
    /// The object does not exist (or belongs to another account).
    NotFound,
    /// A commit references blobs the server does not have.
    BlobsMissing,
    /// An uploaded pack failed verification.
    PackInvalid,
    /// A request body is larger than allowed.
    TooLarge,
    /// Another backup of this device is running.
    BackupInProgress,
    /// The client is older than the server accepts.
    ClientTooOld,
    /// A resumable upload part does not start where the server's copy ends.
    UploadOffset,
    /// The server's disk is full.
    ServerStorageFull,
    /// The server's storage failed; retrying later may work.
    StorageUnavailable,
    /// An unexpected server error.
    Internal,
    /// Client side: the server cannot be reached.
    NetworkUnreachable,
    /// Client side: the connection is too slow for requests to finish.
    NetworkTooSlow,
    /// Client side: the server answered with something that is not Haven.
    ServerUnavailable,
    /// Client side: this device is not signed in.
    NotSignedIn,
    /// Client side: the server offered key-derivation parameters below the floor.
    WeakKdf,
    /// Client side: data from the server failed authentication.
    Corrupted,
    /// Client side: a local file or directory could not be read or written.
    LocalIo,
    /// Client side: a restore finished with files it could not restore.
    RestoreIncomplete,
    /// Client side: a confirmation is needed and no terminal can give it.
    ConfirmationNeeded,
    /// Client side: the configuration is invalid.
    ConfigInvalid,
    /// The account's quota cannot hold what the backup needs.
    QuotaExceeded,
    /// The plan does not exist or users may not choose it themselves.
    PlanNotAllowed,
    /// Client side: the backup stopped at a checkpoint because a condition
    /// of automatic backups stopped holding; the next run resumes it.
    BackupPaused,
    /// Client side: an agent already runs for this state directory.
    AgentRunning,
    /// The action deletes or weakens backups and needs a fresh proof of
    /// the password (`POST /v1/auth/elevate`).
    PasswordRequired,
    /// The device's sign-in was ended: removed from another device,
    /// password changed, signed in again, or unused for too long.
    TokenRevoked,
    /// Client side: the server's TLS certificate does not verify.
    TlsUntrusted,
    /// Too many failed attempts to prove a password, for the account or
    /// from the address; `Retry-After` says when to try again.
    RateLimited,
    /// The account reached a per-account limit on rows it creates
    /// (devices, categories); `details.limit` says which and how many.
    LimitReached,
    /// Client side: a password-derived secret would cross the network
    /// unencrypted (plain HTTP to a host that is not this machine).
    InsecureTransport,
}

impl ErrorCode {
    /// The wire string, e.g. `"wrong_password"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::WrongPassword => "wrong_password",
            ErrorCode::SignupClosed => "signup_closed",
            ErrorCode::InviteInvalid => "invite_invalid",
            ErrorCode::EmailTaken => "email_taken",
            ErrorCode::NotFound => "not_found",
            ErrorCode::BlobsMissing => "blobs_missing",
            ErrorCode::PackInvalid => "pack_invalid",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::BackupInProgress => "backup_in_progress",
            ErrorCode::ClientTooOld => "client_too_old",
            ErrorCode::UploadOffset => "upload_offset",
            ErrorCode::ServerStorageFull => "server_storage_full",
            ErrorCode::StorageUnavailable => "storage_unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::NetworkUnreachable => "network_unreachable",
            ErrorCode::NetworkTooSlow => "network_too_slow",
            ErrorCode::ServerUnavailable => "server_unavailable",
            ErrorCode::NotSignedIn => "not_signed_in",
            ErrorCode::WeakKdf => "weak_kdf",
            ErrorCode::Corrupted => "corrupted",
            ErrorCode::LocalIo => "local_io",
            ErrorCode::RestoreIncomplete => "restore_incomplete",
            ErrorCode::ConfirmationNeeded => "confirmation_needed",
            ErrorCode::ConfigInvalid => "config_invalid",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::PlanNotAllowed => "plan_not_allowed",
            ErrorCode::BackupPaused => "backup_paused",
            ErrorCode::AgentRunning => "agent_running",
            ErrorCode::PasswordRequired => "password_required",
            ErrorCode::TokenRevoked => "token_revoked",
            ErrorCode::TlsUntrusted => "tls_untrusted",
            ErrorCode::InsecureTransport => "insecure_transport",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::LimitReached => "limit_reached",
        }
    }
}

/// The JSON body of every error answer, and of the CLI's `--json` errors.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    /// Stable machine code.
    pub code: ErrorCode,
    /// What happened and why, in one or two sentences.
    pub message: String,
    /// What to do next, most likely first. Always present, possibly empty.
    #[serde(default)]
    pub fix: Vec<String>,
    /// Extra data for machines (e.g. the missing blob ids).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
    /// `quota_exceeded`: bytes needed (an upper bound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needed: Option<u64>,
    /// `quota_exceeded`: bytes the quota has left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available: Option<u64>,
}

/// `{"error": ErrorBody}`: how errors travel.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_their_stable_strings() {
        for code in [
            ErrorCode::WrongPassword,
            ErrorCode::BlobsMissing,
            ErrorCode::ClientTooOld,
            ErrorCode::RestoreIncomplete,
        ] {
            let json = serde_json::to_string(&code).expect("serialize");
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }
}

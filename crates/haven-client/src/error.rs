use std::fmt;
use std::path::Path;

use haven_proto::{ErrorBody, ErrorCode};

/// Every failure the client reports: a stable code, what happened, and
/// what to do. The CLI prints it as sentences or as `{"error": …}`.
#[derive(Debug, Clone)]
pub struct ClientError(pub Box<ErrorBody>);

/// Client result.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

impl ClientError {
    /// An error with a message and no fix yet.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ClientError(Box::new(ErrorBody {
            code,
            message: message.into(),
            fix: Vec::new(),
            details: None,
            needed: None,
            available: None,
        }))
    }

    /// Adds a suggestion of what to do.
    pub fn fix(mut self, fix: impl Into<String>) -> Self {
        self.0.fix.push(fix.into());
        self
    }

    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        self.0.code
    }

    /// The body, for JSON output.
    pub fn body(&self) -> &ErrorBody {
        &self.0
    }

    /// A local file operation failed.
    pub fn io(what: &str, path: &Path, e: std::io::Error) -> Self {
        let hint = match e.kind() {
            std::io::ErrorKind::PermissionDenied => {
                "Check the permissions of that path, or run Haven as a user who may access it."
            }
            std::io::ErrorKind::NotFound => "Check that the path exists.",
            _ if e.raw_os_error() == Some(libc::ENOSPC) => {
                "The disk is full: free some space and run the command again."
            }
            _ => "Check the path and the disk, then run the command again.",
        };
        Self::new(
            ErrorCode::LocalIo,
            format!("Cannot {what} {}: {e}.", path.display()),
        )
        .fix(hint)
    }

    /// The server sent something that fails authentication.
    pub fn corrupted(what: impl fmt::Display) -> Self {
        Self::new(ErrorCode::Corrupted, format!("Data from the server failed its integrity check: {what}."))
            .fix("The server's copy is damaged, or something between you and the server altered it. Run the command again; if it keeps failing, tell the server's operator.")
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.message)
    }
}

impl std::error::Error for ClientError {}

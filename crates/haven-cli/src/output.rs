//! How results and errors reach the user: sentences on a terminal, one
//! JSON object on stdout with `--json`.

use std::io::IsTerminal;

use haven_client::ClientError;
use haven_proto::{ErrorCode, ErrorEnvelope};
use indicatif::{ProgressBar, ProgressStyle};

pub use haven_client::human_bytes;

/// Prints an error and returns the process exit code.
pub fn print_error(e: &ClientError, json: bool) -> u8 {
    if json {
        let env = ErrorEnvelope {
            error: e.body().clone(),
        };
        println!("{}", serde_json::to_string(&env).unwrap_or_default());
    } else {
        eprintln!("error: {}", e.body().message);
        for f in &e.body().fix {
            eprintln!("  what to do: {f}");
        }
    }
    match e.code() {
        ErrorCode::RestoreIncomplete => 3,
        ErrorCode::BackupInProgress => 4,
        _ => 1,
    }
}

/// Prints a value as JSON on stdout.
pub fn print_json<T: serde::Serialize>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// A progress bar on stderr when it is a terminal and output is not JSON.
pub fn progress_bar(json: bool) -> Option<ProgressBar> {
    if json || !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = ProgressBar::new(0);
    pb.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    Some(pb)
}

/// True when the user can be asked a question.
pub fn interactive() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// The password: `HAVEN_PASSWORD`, `--password-file`, or a prompt.
pub fn password(
    file: Option<&std::path::Path>,
    prompt: &str,
    confirm: bool,
    json: bool,
) -> Result<String, ClientError> {
    if let Some(p) = file {
        let text = std::fs::read_to_string(p)
            .map_err(|e| ClientError::io("read the password file", p, e))?;
        return Ok(text.trim_end_matches(['\n', '\r']).to_string());
    }
    if let Ok(p) = std::env::var("HAVEN_PASSWORD") {
        return Ok(p);
    }
    prompt_password(prompt, confirm, json)
}

/// Asks for a password on the terminal (twice with `confirm`).
pub fn prompt_password(prompt: &str, confirm: bool, json: bool) -> Result<String, ClientError> {
    if json || !interactive() {
        return Err(ClientError::new(
            ErrorCode::ConfirmationNeeded,
            "A password is needed and there is no terminal to ask for it.",
        )
        .fix("Set HAVEN_PASSWORD (HAVEN_NEW_PASSWORD for `haven password`'s new one), or pass --password-file FILE."));
    }
    let read = |p: &str| {
        rpassword::prompt_password(p).map_err(|e| {
            ClientError::new(
                ErrorCode::LocalIo,
                format!("Cannot read the password: {e}."),
            )
        })
    };
    let pw = read(prompt)?;
    if confirm && read("Repeat the password: ")? != pw {
        return Err(
            ClientError::new(ErrorCode::BadRequest, "The two passwords differ.")
                .fix("Run the command again and type the same password twice."),
        );
    }
    Ok(pw)
}

/// Asks a yes/no question; without a terminal, `--yes` is required.
pub fn confirm(question: &str, yes: bool, json: bool) -> Result<bool, ClientError> {
    if yes {
        return Ok(true);
    }
    if json || !interactive() {
        return Err(ClientError::new(
            ErrorCode::ConfirmationNeeded,
            format!("{question} needs a confirmation, and there is no terminal to ask."),
        )
        .fix("Add --yes to confirm."));
    }
    eprint!("{question} [y/N] ");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).map_err(|e| {
        ClientError::new(ErrorCode::LocalIo, format!("Cannot read the answer: {e}."))
    })?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

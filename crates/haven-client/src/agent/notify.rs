//! Desktop notifications: org.freedesktop.Notifications on the session
//! bus. `HAVEN_NOTIFY_FILE` sends them to a file instead (one JSON object
//! per line), for tests and for machines without a desktop.

use std::io::Write;

use serde::Serialize;

#[derive(Serialize)]
struct Line<'a> {
    summary: &'a str,
    body: &'a str,
}

/// Shows a notification; an error says why it could not.
pub fn send(summary: &str, body: &str) -> Result<(), String> {
    if let Some(path) = std::env::var_os("HAVEN_NOTIFY_FILE") {
        let line = serde_json::to_string(&Line { summary, body }).map_err(|e| e.to_string())?;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| e.to_string())?;
        return writeln!(f, "{line}").map_err(|e| e.to_string());
    }
    let conn = zbus::blocking::Connection::session().map_err(|e| e.to_string())?;
    let hints: std::collections::HashMap<&str, zbus::zvariant::Value<'_>> =
        std::collections::HashMap::new();
    conn.call_method(
        Some("org.freedesktop.Notifications"),
        "/org/freedesktop/Notifications",
        Some("org.freedesktop.Notifications"),
        "Notify",
        &(
            "Haven",
            0u32,
            "drive-harddisk",
            summary,
            body,
            Vec::<&str>::new(),
            hints,
            -1i32,
        ),
    )
    .map_err(|e| e.to_string())?;
    Ok(())
}

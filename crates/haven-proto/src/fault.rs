//! Crash points for the fault tests. `HAVEN_FAULT_CRASH_AT=NAME[:N]` makes
//! the process (server or client) abort (as a kill -9 would) the N-th time (default: first) it
//! reaches the point called NAME. Unset, a point costs one atomic load.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

struct Armed {
    name: String,
    at: u64,
    hits: AtomicU64,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let v = std::env::var("HAVEN_FAULT_CRASH_AT").ok()?;
            let (name, at) = match v.split_once(':') {
                Some((n, k)) => (n.to_string(), k.parse().unwrap_or(1)),
                None => (v, 1),
            };
            Some(Armed {
                name,
                at,
                hits: AtomicU64::new(0),
            })
        })
        .as_ref()
}

/// A place where a crash is tested.
pub fn point(name: &str) {
    if let Some(a) = armed()
        && a.name == name
        && a.hits.fetch_add(1, Ordering::SeqCst) + 1 == a.at
    {
        eprintln!("fault injection: crashing at {name}");
        std::process::abort();
    }
}

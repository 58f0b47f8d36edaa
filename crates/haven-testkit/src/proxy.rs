//! A fault-injecting TCP proxy for the network tests: it forwards
//! 127.0.0.1 connections to an upstream address, and can throttle them,
//! delay them, and cut every connection after a number of bytes.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the proxy does to the traffic.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Bytes per second, both directions together.
    pub rate: Option<u64>,
    /// Added before each forwarded read.
    pub latency: Duration,
    /// Cut the connection carrying the traffic once this many bytes (both
    /// directions) went through since the previous cut.
    pub cut_every: Option<u64>,
    /// Cut at a random point between `cut_every / 2` and `cut_every * 3 / 2`.
    pub random_cuts: bool,
}

#[derive(Default)]
struct Shared {
    up: AtomicU64,
    down: AtomicU64,
    cuts: AtomicU64,
    since_cut: AtomicU64,
    next_cut: AtomicU64,
    stop: AtomicBool,
    bucket: Mutex<Option<Instant>>,
}

/// A running proxy.
pub struct FaultProxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream`.
    pub fn start(upstream: SocketAddr, faults: Faults) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        reset_cut(&s, &faults);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                let cut = Arc::new(AtomicBool::new(false));
                for (from, to, up) in [
                    (client.try_clone(), server.try_clone(), true),
                    (server.try_clone(), client.try_clone(), false),
                ] {
                    let (Ok(from), Ok(to)) = (from, to) else {
                        continue;
                    };
                    let (s, f, cut) = (s.clone(), faults.clone(), cut.clone());
                    std::thread::spawn(move || pump(from, to, up, &s, &f, &cut));
                }
            }
        });
        FaultProxy { addr, shared }
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Bytes forwarded from clients to the server.
    pub fn bytes_up(&self) -> u64 {
        self.shared.up.load(Ordering::Relaxed)
    }

    /// Bytes forwarded from the server to clients.
    pub fn bytes_down(&self) -> u64 {
        self.shared.down.load(Ordering::Relaxed)
    }

    /// Connections cut so far.
    pub fn cuts(&self) -> u64 {
        self.shared.cuts.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

fn reset_cut(s: &Shared, f: &Faults) {
    if let Some(every) = f.cut_every {
        let at = if f.random_cuts {
            every / 2 + rand::random::<u64>() % every.max(1)
        } else {
            every
        };
        s.next_cut.store(at, Ordering::Relaxed);
    }
    s.since_cut.store(0, Ordering::Relaxed);
}

fn throttle(s: &Shared, rate: u64, n: usize) {
    let wait = {
        let mut next = s.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let start = next.unwrap_or(now).max(now);
        *next = Some(start + Duration::from_secs_f64(n as f64 / rate as f64));
        start - now
    };
    std::thread::sleep(wait);
}

fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    up: bool,
    s: &Shared,
    f: &Faults,
    cut: &AtomicBool,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if cut.load(Ordering::Relaxed) || s.stop.load(Ordering::Relaxed) {
            break;
        }
        if !f.latency.is_zero() {
            std::thread::sleep(f.latency);
        }
        if let Some(rate) = f.rate {
            throttle(s, rate, n);
        }
        let mut send = n;
        let mut cutting = false;
        if f.cut_every.is_some() {
            let before = s.since_cut.fetch_add(n as u64, Ordering::SeqCst);
            let at = s.next_cut.load(Ordering::SeqCst);
            if before + n as u64 >= at {
                // Forward up to the cut point, then break the connection.
                send = at.saturating_sub(before).min(n as u64) as usize;
                cutting = true;
            }
        }
        if send > 0 && to.write_all(&buf[..send]).is_err() {
            break;
        }
        let counter = if up { &s.up } else { &s.down };
        counter.fetch_add(send as u64, Ordering::Relaxed);
        if cutting {
            s.cuts.fetch_add(1, Ordering::Relaxed);
            reset_cut(s, f);
            cut.store(true, Ordering::Relaxed);
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

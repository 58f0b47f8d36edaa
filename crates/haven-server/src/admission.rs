//! Which connections the server keeps open. Each costs a file descriptor,
//! and a process has few (1,024 under systemd's usual soft limit): a client
//! that opens connections and sends nothing would otherwise use them all,
//! and then not even `/v1/health` gets through.
//!
//! So the server keeps at most `max` connections (below the descriptor
//! limit, leaving room for the database and the packs). When one more
//! arrives, the oldest connection that has not yet sent a request is
//! closed to make room; only when every open connection has sent one is
//! the newcomer refused. A connection that sends nothing is also closed
//! after `first_request_timeout`, and one that sends its headers too
//! slowly after hyper's `header_read_timeout` (see `lib.rs`).

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// One open connection.
struct Conn {
    id: u64,
    /// It has sent a request: it is in use, not a candidate to close.
    active: AtomicBool,
    /// Closed to make room: its next read ends the connection.
    evicted: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Conn {
    fn evict(&self) {
        self.evicted.store(true, Ordering::Release);
        if let Some(w) = self.waker.lock().unwrap_or_else(|e| e.into_inner()).take() {
            w.wake();
        }
    }
}

/// The connections open now, oldest first.
#[derive(Default)]
struct Open(Mutex<VecDeque<Arc<Conn>>>);

impl Open {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<Conn>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The acceptor that applies the limit (innermost: under TLS, so that a
/// handshake that never finishes counts too).
#[derive(Clone)]
pub struct Admission {
    max: usize,
    open: Arc<Open>,
    next: Arc<AtomicU64>,
}

impl Admission {
    /// Keeps at most `max` connections open.
    pub fn new(max: usize) -> Self {
        Admission {
            max: max.max(1),
            open: Arc::default(),
            next: Arc::default(),
        }
    }

    /// The connections open now.
    pub fn open(&self) -> usize {
        self.open.lock().len()
    }
}

/// The limit for this process: its descriptor limit less 256 for the
/// database, the packs being read and written, and the listener; at
/// least 64.
pub fn default_max() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
    let fds = if ok { lim.rlim_cur } else { 1024 };
    (fds.min(1 << 20) as usize).saturating_sub(256).max(64)
}

impl<I, S> Accept<I, S> for Admission {
    type Stream = Tracked<I>;
    type Service = MarkActive<S>;
    type Future = std::future::Ready<io::Result<(Self::Stream, Self::Service)>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let conn = Arc::new(Conn {
            id: self.next.fetch_add(1, Ordering::Relaxed),
            active: AtomicBool::new(false),
            evicted: AtomicBool::new(false),
            waker: Mutex::new(None),
        });
        {
            let mut open = self.open.lock();
            if open.len() >= self.max {
                match open.iter().position(|c| !c.active.load(Ordering::Acquire)) {
                    Some(i) => {
                        if let Some(victim) = open.remove(i) {
                            victim.evict();
                        }
                    }
                    None => {
                        tracing::warn!(
                            max = self.max,
                            "connection refused: every open connection is in use"
                        );
                        return std::future::ready(Err(io::Error::other(
                            "connection limit reached",
                        )));
                    }
                }
            }
            open.push_back(conn.clone());
        }
        std::future::ready(Ok((
            Tracked {
                inner: stream,
                conn: conn.clone(),
                open: self.open.clone(),
            },
            MarkActive {
                inner: service,
                conn,
            },
        )))
    }
}

/// A connection's stream: ends when the connection is closed to make room,
/// and leaves the set of open connections when dropped.
pub struct Tracked<I> {
    inner: I,
    conn: Arc<Conn>,
    open: Arc<Open>,
}

impl<I> Drop for Tracked<I> {
    fn drop(&mut self) {
        let id = self.conn.id;
        let mut open = self.open.lock();
        if let Some(i) = open.iter().position(|c| c.id == id) {
            open.remove(i);
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Tracked<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.conn.evicted.load(Ordering::Acquire) {
            // End of stream: hyper closes the connection.
            return Poll::Ready(Ok(()));
        }
        *self.conn.waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Tracked<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The connection's service: marks it in use at its first request.
#[derive(Clone)]
pub struct MarkActive<S> {
    inner: S,
    conn: Arc<Conn>,
}

impl<S: tower_service::Service<R>, R> tower_service::Service<R> for MarkActive<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        self.conn.active.store(true, Ordering::Release);
        self.inner.call(req)
    }
}

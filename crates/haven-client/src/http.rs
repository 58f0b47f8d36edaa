//! The HTTP implementation of [`Remote`] and the unauthenticated account
//! calls.
//!
//! Every request is idempotent, so a request that failed in transit
//! (connection refused, reset, timed out, answer cut short, 502/503/504) is
//! sent again after an exponential backoff with jitter. The retry budget
//! counts *consecutive* failures across all requests: any success resets
//! it, so a long backup over a line that keeps breaking goes on as long as
//! it makes progress, and gives up with a precise reason when it does not.
//! A pack is uploaded as one request that the server writes as it
//! arrives; after a failure the upload continues where the server's copy
//! ends. Under an upload limit it goes in parts of [`UPLOAD_PART`] bytes,
//! each spaced by the limiter.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use haven_format::{BlobId, PackId};
use haven_proto::*;
use reqwest::Method;
use reqwest::blocking::Client;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{ClientError, Remote, Result, VERSION};

/// Consecutive failed attempts (no request succeeded in between) before giving up.
const MAX_CONSECUTIVE_FAILURES: u32 = 8;
/// Blob bytes asked for per fetch answer.
const FETCH_ANSWER_BYTES: u64 = 4 << 20;
/// Longest pause between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(20);

/// A Haven server over HTTP(S).
pub struct HttpRemote {
    client: Client,
    base: String,
    token: Option<String>,
    sent: AtomicU64,
    requests: AtomicU64,
    failures: AtomicU32,
    /// Wakes the requests waiting to retry once the budget is spent, so
    /// that a restore or backup whose server went away stops with the
    /// error at once instead of after the longest pause of its threads.
    retry_lock: Mutex<()>,
    budget_spent: Condvar,
    limiter: Option<RateLimiter>,
    session: Mutex<Option<String>>,
    /// A proof of the password (`POST /v1/auth/elevate`) sent with every
    /// request once obtained.
    grant: Mutex<Option<String>>,
    /// The user allowed password-derived secrets over plain HTTP to a host
    /// that is not this machine.
    allow_insecure_http: bool,
}

/// How a device reaches its server: the URL and what to trust.
#[derive(Clone, Debug, Default)]
pub struct Transport {
    /// Certificates (PEM) trusted besides the platform's roots: a private CA.
    pub ca_pem: Option<String>,
    /// Send password-derived secrets over plain HTTP to a host that is not
    /// this machine (`--allow-insecure-http`).
    pub allow_insecure_http: bool,
}

enum Body {
    None,
    Json(Vec<u8>),
    Bytes(bytes::Bytes),
}

/// Spaces request bodies so that uploads average at most `rate` bytes/s.
struct RateLimiter {
    rate: f64,
    next_free: Mutex<Instant>,
}

impl RateLimiter {
    fn wait(&self, bytes: usize) {
        let delay = {
            let mut next = self.next_free.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let start = (*next).max(now);
            *next = start + Duration::from_secs_f64(bytes as f64 / self.rate);
            start - now
        };
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
    }
}

/// Why an attempt failed, for the final error if the budget runs out.
enum Transient {
    Refused,
    Timeout,
    Broken(String),
    /// A 502–504 answer, with the server's own error when it sent one.
    Status(u16, Option<ErrorEnvelope>),
}

/// `HAVEN_RETRY_SCALE` scales the pauses between retries (tests use a
/// small factor to stay fast); 1 when unset or invalid.
fn retry_scale() -> f64 {
    static SCALE: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *SCALE.get_or_init(|| {
        std::env::var("HAVEN_RETRY_SCALE")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|s: &f64| s.is_finite() && *s >= 0.0)
            .unwrap_or(1.0)
    })
}

enum TlsFailure {
    /// The certificate did not verify: why, in rustls's words.
    Untrusted(String),
    /// Another handshake failure (the peer does not speak TLS, say).
    Handshake,
}

/// Whether a request failed in the TLS handshake, and how: rustls's error
/// sits in the chain of sources, inside `io::Error`s.
fn tls_failure(e: &reqwest::Error) -> Option<TlsFailure> {
    let classify = |r: &rustls::Error| match r {
        rustls::Error::InvalidCertificate(_) => TlsFailure::Untrusted(r.to_string()),
        rustls::Error::NoCertificatesPresented => TlsFailure::Untrusted("it presented none".into()),
        _ => TlsFailure::Handshake,
    };
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if let Some(r) = s.downcast_ref::<rustls::Error>() {
            return Some(classify(r));
        }
        // An io::Error's source() is its inner error's source: step into
        // the inner error itself (hyper nests one io::Error in another).
        src = match s
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => s.source(),
        };
    }
    None
}

fn is_refused(e: &reqwest::Error) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        src = s.source();
    }
    false
}

impl HttpRemote {
    /// A remote for `server` (e.g. `http://127.0.0.1:8420`), signed in with
    /// `token` if given, trusting the platform's certificate roots.
    pub fn new(server: &str, token: Option<String>) -> Result<Self> {
        Self::with_transport(server, token, &Transport::default())
    }

    /// A remote that also trusts `transport`'s private CA.
    pub fn with_transport(
        server: &str,
        token: Option<String>,
        transport: &Transport,
    ) -> Result<Self> {
        let mut builder = Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .timeout(Duration::from_secs(120))
            .user_agent(format!("haven/{VERSION}"))
            .https_only(false);
        if let Some(pem) = &transport.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                .ok()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| {
                    ClientError::new(
                        ErrorCode::ConfigInvalid,
                        "The CA certificate given with --ca-cert or HAVEN_CA_CERT is not a PEM certificate.",
                    )
                    .fix("Give the file holding the private CA's certificate (-----BEGIN CERTIFICATE-----), e.g. the ca.pem the server's operator handed out.")
                })?;
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let client = builder.build().map_err(|e| {
            ClientError::new(
                ErrorCode::ConfigInvalid,
                format!("Cannot set up HTTPS: {e}."),
            )
            .fix("Check the CA certificate given with --ca-cert or HAVEN_CA_CERT, and this machine's certificate store (Debian: the ca-certificates package).")
        })?;
        let base = server.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::new(ErrorCode::ConfigInvalid, format!("{server:?} is not a server URL."))
                .fix("Give the server as http://HOST:PORT or https://HOST, e.g. --server http://127.0.0.1:8420."));
        }
        Ok(HttpRemote {
            client,
            base,
            token,
            sent: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU32::new(0),
            retry_lock: Mutex::new(()),
            budget_spent: Condvar::new(),
            limiter: None,
            session: Mutex::new(None),
            grant: Mutex::new(None),
            allow_insecure_http: transport.allow_insecure_http,
        })
    }

    /// Refuses to send a password-derived secret (an auth key) in the
    /// clear: over plain HTTP it is allowed only to this machine, unless
    /// the user said `--allow-insecure-http`.
    pub fn check_secret_transport(&self) -> Result<()> {
        if self.allow_insecure_http || !self.base.starts_with("http://") {
            return Ok(());
        }
        let local = reqwest::Url::parse(&self.base)
            .ok()
            .and_then(|u| {
                u.host_str().map(|h| {
                    let h = h.trim_start_matches('[').trim_end_matches(']');
                    // 0.0.0.0 and :: reach this machine too (a server
                    // told to listen on every address).
                    h.eq_ignore_ascii_case("localhost")
                        || h.parse::<std::net::IpAddr>()
                            .is_ok_and(|a| a.is_loopback() || a.is_unspecified())
                })
            })
            .unwrap_or(false);
        if local {
            return Ok(());
        }
        Err(ClientError::new(
            ErrorCode::InsecureTransport,
            format!("{} is plain HTTP to another machine: the key derived from your password would cross the network unencrypted, so nothing was sent.", self.base),
        )
        .fix("Use the server's https:// address (give a private CA's certificate with --ca-cert FILE if it has one).")
        .fix("On a network you trust completely, pass --allow-insecure-http to send it anyway."))
    }

    /// Proves the password to the server (the auth key derived from it)
    /// and sends the grant it answers with on every later request, which
    /// lets them delete or weaken backups.
    pub fn elevate(&self, auth_key_hex: &str) -> Result<()> {
        self.check_secret_transport()?;
        let r: ElevateResponse = self.post(
            "/v1/auth/elevate",
            &ElevateRequest {
                auth_key: auth_key_hex.to_string(),
            },
        )?;
        if let Ok(mut g) = self.grant.lock() {
            *g = Some(r.grant);
        }
        Ok(())
    }

    /// Caps the upload rate (request bodies) at `bytes_per_sec`.
    pub fn with_upload_limit(mut self, bytes_per_sec: Option<u64>) -> Self {
        self.limiter = bytes_per_sec.filter(|&r| r > 0).map(|r| RateLimiter {
            rate: r as f64,
            next_free: Mutex::new(Instant::now()),
        });
        self
    }

    /// The server URL.
    pub fn server(&self) -> &str {
        &self.base
    }

    /// One `GET /v1/health`, without retries: is the server there, and how
    /// long does a round trip take?
    pub fn probe(&self) -> Result<(Health, Duration)> {
        let started = Instant::now();
        let resp = self
            .client
            .get(format!("{}/v1/health", self.base))
            .timeout(Duration::from_secs(10))
            .send()
            .map_err(|e| {
                if tls_failure(&e).is_some() {
                    return self.tls_error(&e);
                }
                self.give_up(if is_refused(&e) {
                    Transient::Refused
                } else if e.is_timeout() {
                    Transient::Timeout
                } else {
                    Transient::Broken(e.to_string())
                })
            })?;
        let rtt = started.elapsed();
        let status = resp.status().as_u16();
        let bytes = resp
            .bytes()
            .map_err(|e| self.give_up(Transient::Broken(e.to_string())))?;
        if status != 200 {
            return Err(self.error_answer(status, &bytes));
        }
        Ok((self.parse(&bytes)?, rtt))
    }

    /// Sends `bytes` of filler to the server and returns the upload rate
    /// in bytes per second.
    pub fn measure_upload(&self, bytes: usize) -> Result<f64> {
        let started = Instant::now();
        self.send(
            Method::POST,
            "/v1/speedtest",
            Body::Bytes(vec![0x5a; bytes].into()),
            Duration::from_secs(120),
        )?;
        Ok(bytes as f64 / started.elapsed().as_secs_f64().max(1e-6))
    }

    fn tls_error(&self, e: &reqwest::Error) -> ClientError {
        let base = &self.base;
        match tls_failure(e) {
            Some(TlsFailure::Untrusted(why)) => ClientError::new(
                ErrorCode::TlsUntrusted,
                format!("The server at {base} presented a TLS certificate this device does not trust ({why}), so nothing was sent."),
            )
            .fix("If the server uses a private certificate authority, sign in with --ca-cert FILE (or HAVEN_CA_CERT=FILE) naming that CA's certificate.")
            .fix("Check the server URL: the certificate must be for exactly that host name or address.")
            .fix("If the certificate was just renewed or replaced, ask the server's operator whether it is theirs; a certificate that does not verify can mean someone is in between."),
            _ => ClientError::new(
                ErrorCode::TlsUntrusted,
                format!("The TLS handshake with {base} failed ({e}), so nothing was sent."),
            )
            .fix("Check that the server serves HTTPS at that address (an http:// server answers https:// with garbage), and that the URL is right."),
        }
    }

    fn give_up(&self, why: Transient) -> ClientError {
        let base = &self.base;
        match why {
            Transient::Refused => ClientError::new(ErrorCode::ServerUnavailable, format!("The Haven server at {base} refuses connections: it is not running, or not at that address."))
                .fix("Check that haven-server is running and that the URL is right.")
                .fix("Run the command again later: nothing already uploaded is lost."),
            Transient::Timeout => ClientError::new(ErrorCode::NetworkTooSlow, format!("Requests to {base} kept timing out: the connection is too slow or stalls."))
                .fix("Try again on a faster or more stable network; the backup resumes where it stopped.")
                .fix("If the link is shared, cap Haven's rate with --upload-limit so it stops stalling."),
            Transient::Broken(e) => ClientError::new(ErrorCode::NetworkUnreachable, format!("Cannot reach the Haven server at {base}: the connection kept failing ({e})."))
                .fix("Check this device's network connection and the server URL.")
                .fix("Run the command again: nothing already uploaded is lost, the backup resumes where it stopped."),
            // The server said what went wrong (a 503 for its storage, say):
            // that is the error, with what the server advises.
            Transient::Status(_, Some(env)) => ClientError(Box::new(env.error))
                .fix("This device retried for a while before giving up; run the command again later: nothing already uploaded is lost."),
            Transient::Status(code, None) => ClientError::new(ErrorCode::ServerUnavailable, format!("The server at {base} kept answering HTTP {code} (temporarily unavailable)."))
                .fix("Try again in a few minutes; if it persists, tell the server's operator."),
        }
    }

    /// Sends a request, retrying transient failures, and returns the body
    /// of a successful answer. An error answer becomes its `ClientError`.
    fn send(&self, method: Method, path: &str, body: Body, timeout: Duration) -> Result<Bytes> {
        let url = format!("{}{path}", self.base);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let mut req = self
                .client
                .request(method.clone(), &url)
                .header(CLIENT_VERSION_HEADER, VERSION)
                .timeout(timeout);
            if let Some(t) = &self.token {
                req = req.bearer_auth(t);
            }
            if let Some(g) = self.grant.lock().ok().and_then(|g| g.clone()) {
                req = req.header(GRANT_HEADER, g);
            }
            let len = match &body {
                Body::None => 0,
                Body::Json(b) => {
                    req = req
                        .header("content-type", "application/json")
                        .body(b.clone());
                    b.len()
                }
                Body::Bytes(b) => {
                    req = req
                        .header("content-type", "application/octet-stream")
                        .body(b.clone());
                    b.len()
                }
            };
            if let Some(l) = &self.limiter {
                l.wait(len);
            }
            self.sent
                .fetch_add(len as u64 + path.len() as u64 + 200, Ordering::Relaxed);
            self.requests.fetch_add(1, Ordering::Relaxed);
            let transient = match req.send() {
                Ok(resp) => {
                    let status = resp.status();
                    match resp.bytes() {
                        Ok(bytes) if status.is_success() => {
                            self.failures.store(0, Ordering::Relaxed);
                            return Ok(bytes);
                        }
                        Ok(bytes) if matches!(status.as_u16(), 502..=504) => {
                            let env = serde_json::from_slice::<ErrorEnvelope>(&bytes).ok();
                            if let Some(env) = &env {
                                tracing::debug!(path, code = ?env.error.code, message = %env.error.message, "the server is temporarily unavailable");
                            }
                            Transient::Status(status.as_u16(), env)
                        }
                        Ok(bytes) => {
                            self.failures.store(0, Ordering::Relaxed);
                            return Err(self.error_answer(status.as_u16(), &bytes));
                        }
                        Err(e) if e.is_timeout() => Transient::Timeout,
                        Err(e) => Transient::Broken(e.to_string()),
                    }
                }
                Err(e) if is_refused(&e) => Transient::Refused,
                Err(e) if e.is_timeout() => Transient::Timeout,
                Err(e) if tls_failure(&e).is_some() => return Err(self.tls_error(&e)),
                Err(e) if e.is_connect() || e.is_request() || e.is_body() => {
                    Transient::Broken(e.to_string())
                }
                Err(e) => return Err(self.give_up(Transient::Broken(e.to_string()))),
            };
            if self.count_failure() {
                return Err(self.give_up(transient));
            }
            let backoff = Duration::from_millis(250u64 << attempt.min(7))
                .min(MAX_BACKOFF)
                .mul_f64(retry_scale());
            let jitter =
                Duration::from_millis(rand::random::<u64>() % (backoff.as_millis() as u64 / 2 + 1));
            tracing::debug!(attempt, path, "retrying after a transient failure");
            if self.wait_to_retry(backoff + jitter) {
                return Err(self.give_up(transient));
            }
        }
    }

    /// Counts a failed attempt. True when that spends the retry budget;
    /// the requests waiting to retry are woken, and give up too.
    fn count_failure(&self) -> bool {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < MAX_CONSECUTIVE_FAILURES {
            return false;
        }
        // Taken after the count, so that a waiter either sees it before it
        // waits or is already waiting when woken.
        drop(self.retry_lock.lock().unwrap_or_else(|e| e.into_inner()));
        self.budget_spent.notify_all();
        true
    }

    /// Waits `pause` before a retry. True if the budget was spent
    /// meanwhile (another request gave up): this one gives up as well.
    fn wait_to_retry(&self, pause: Duration) -> bool {
        let spent = || self.failures.load(Ordering::Relaxed) >= MAX_CONSECUTIVE_FAILURES;
        let guard = self.retry_lock.lock().unwrap_or_else(|e| e.into_inner());
        drop(
            self.budget_spent
                .wait_timeout_while(guard, pause, |_| !spent())
                .unwrap_or_else(|e| e.into_inner()),
        );
        spent()
    }

    fn error_answer(&self, status: u16, body: &[u8]) -> ClientError {
        match serde_json::from_slice::<ErrorEnvelope>(body) {
            Ok(env) => ClientError(Box::new(env.error)),
            Err(_) => ClientError::new(ErrorCode::ServerUnavailable, format!("The server at {} answered HTTP {status} without a Haven error.", self.base))
                .fix("Check that the URL points at a Haven server (not a proxy's error page), then try again."),
        }
    }

    fn parse<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T> {
        serde_json::from_slice(bytes).map_err(|e| {
            ClientError::new(ErrorCode::ServerUnavailable, format!("The server at {} sent an answer this client does not understand: {e}.", self.base))
                .fix("The server may be a different version: update Haven on this device and on the server.")
        })
    }

    fn encode<B: Serialize>(body: &B) -> Body {
        Body::Json(serde_json::to_vec(body).unwrap_or_default())
    }

    /// `POST` JSON, expect JSON.
    pub fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        let bytes = self.send(
            Method::POST,
            path,
            Self::encode(body),
            Duration::from_secs(120),
        )?;
        self.parse(&bytes)
    }

    /// `GET`, expect JSON.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let bytes = self.send(Method::GET, path, Body::None, Duration::from_secs(120))?;
        self.parse(&bytes)
    }
}

/// Records of a fetch answer: `Some(Some(blob))` found, `Some(None)`
/// missing, `None` deferred (ask again).
type FetchRecord = Option<Option<Bytes>>;

/// The blobs are views into `body`, not copies.
fn parse_fetch(body: &Bytes, ids: &[BlobId]) -> Result<Vec<FetchRecord>> {
    let bad = || ClientError::corrupted("the blob download is malformed");
    let mut out = Vec::with_capacity(ids.len());
    let mut at = 0usize;
    for id in ids {
        let head = body.get(at..at + 37).ok_or_else(bad)?;
        if &head[..32] != id.as_bytes() {
            return Err(bad());
        }
        let len = u32::from_le_bytes([head[33], head[34], head[35], head[36]]) as usize;
        at += 37;
        match head[32] {
            FETCH_FOUND => {
                let end = at.checked_add(len).filter(|&e| e <= body.len());
                out.push(Some(Some(body.slice(at..end.ok_or_else(bad)?))));
                at += len;
            }
            FETCH_MISSING => out.push(Some(None)),
            FETCH_DEFERRED => out.push(None),
            _ => return Err(bad()),
        }
    }
    if at != body.len() {
        return Err(bad());
    }
    Ok(out)
}

impl Remote for HttpRemote {
    fn missing(&self, ids: &[BlobId]) -> Result<Vec<BlobId>> {
        let mut missing = Vec::new();
        for part in ids.chunks(MAX_IDS_PER_REQUEST) {
            let r: MissingResponse =
                self.post("/v1/blobs/missing", &MissingRequest { ids: part.to_vec() })?;
            missing.extend(r.missing);
        }
        Ok(missing)
    }

    fn open_session(&self, resume: Option<&str>, reserve: Option<u64>) -> Result<SessionResponse> {
        let r: SessionResponse = self.post(
            "/v1/sessions",
            &SessionRequest {
                resume: resume.map(String::from),
                reserve,
            },
        )?;
        if !is_valid_id(&r.session) {
            return Err(ClientError::corrupted(
                "the server sent a malformed session id",
            ));
        }
        if let Ok(mut s) = self.session.lock() {
            *s = Some(r.session.clone());
        }
        Ok(r)
    }

    fn put_pack(&self, id: PackId, pack: Vec<u8>) -> Result<()> {
        let total = pack.len();
        let pack = bytes::Bytes::from(pack);
        // The whole rest of the pack per request, unless a limiter spaces
        // the requests: then parts, so the limit holds within a pack.
        let part_size = if self.limiter.is_some() {
            UPLOAD_PART
        } else {
            total
        };
        let mut offset = 0usize;
        let mut restarted = false;
        loop {
            let end = (offset + part_size).min(total);
            let mut path = format!("/v1/uploads/{id}?offset={offset}&total={total}");
            if let Some(s) = self.session.lock().ok().and_then(|s| s.clone()) {
                path.push_str(&format!("&session={s}"));
            }
            let part = Body::Bytes(pack.slice(offset..end));
            // At least 64 KiB/s; a slower line times out and continues
            // where the server's copy ends.
            let timeout = Duration::from_secs(60 + (end - offset) as u64 / (64 << 10));
            let status: UploadStatus = match self.send(Method::PUT, &path, part, timeout) {
                Ok(bytes) => self.parse(&bytes)?,
                // The server's staged copy did not hash to the pack
                // (its disk lost an unacknowledged tail in a crash):
                // it dropped the copy; send the pack once more.
                Err(e) if e.code() == ErrorCode::PackInvalid && !restarted => {
                    restarted = true;
                    UploadStatus {
                        offset: 0,
                        complete: false,
                    }
                }
                // The server holds a different amount (a part acknowledged
                // but its answer lost, or a server restart): continue there.
                Err(e) if e.code() == ErrorCode::UploadOffset => {
                    let resume = e.body().details.as_ref().and_then(|d| d["offset"].as_u64());
                    match resume {
                        Some(o) if o <= total as u64 => UploadStatus {
                            offset: o,
                            complete: false,
                        },
                        _ => {
                            return Err(ClientError::corrupted(
                                "the server's upload offset is invalid",
                            ));
                        }
                    }
                }
                Err(e) => return Err(e),
            };
            haven_proto::fault::point("after-upload-part");
            if status.complete {
                return Ok(());
            }
            offset = status.offset as usize;
        }
    }

    fn fetch(&self, ids: &[BlobId]) -> Result<Vec<Option<Bytes>>> {
        let mut result: Vec<Option<Bytes>> = vec![None; ids.len()];
        let mut pending: Vec<usize> = (0..ids.len()).collect();
        while !pending.is_empty() {
            let want: Vec<BlobId> = pending.iter().map(|&i| ids[i]).collect();
            let body = self.send(
                Method::POST,
                "/v1/blobs/fetch",
                Self::encode(&FetchRequest {
                    ids: want.clone(),
                    max_bytes: Some(FETCH_ANSWER_BYTES),
                }),
                Duration::from_secs(600),
            )?;
            let mut deferred = Vec::new();
            for (k, rec) in parse_fetch(&body, &want)?.into_iter().enumerate() {
                match rec {
                    Some(blob) => result[pending[k]] = blob,
                    None => deferred.push(pending[k]),
                }
            }
            if deferred.len() == pending.len() {
                return Err(ClientError::corrupted(
                    "the server deferred every requested blob",
                ));
            }
            pending = deferred;
        }
        Ok(result)
    }

    fn commit(&self, req: &CommitRequest) -> Result<SnapshotRecord> {
        checked(self.post("/v1/snapshots", req)?)
    }

    fn snapshots(&self, device: Option<&str>) -> Result<Vec<SnapshotRecord>> {
        let list: Vec<SnapshotRecord> = match device {
            Some(d) => self.get(&snapshots_query(&[("device", d)])?)?,
            None => self.get("/v1/snapshots")?,
        };
        list.into_iter().map(checked).collect()
    }

    fn latest(&self, device: &str) -> Result<Option<SnapshotRecord>> {
        // An older server ignores `limit` and `freed` and sends them all,
        // newest first.
        let list: Vec<SnapshotRecord> = self.get(&snapshots_query(&[
            ("device", device),
            ("limit", "1"),
            ("freed", "false"),
        ])?)?;
        list.into_iter().next().map(checked).transpose()
    }

    fn snapshots_brief(&self, device: Option<&str>) -> Result<Vec<SnapshotRecord>> {
        let mut query = vec![("freed", "false")];
        if let Some(d) = device {
            query.push(("device", d));
        }
        let list: Vec<SnapshotRecord> = self.get(&snapshots_query(&query)?)?;
        list.into_iter().map(checked).collect()
    }

    fn snapshot(&self, id: &str) -> Result<SnapshotRecord> {
        checked(self.get(&format!("/v1/snapshots/{}", sanitize_id(id)))?)
    }

    fn dictionary(&self) -> Result<Option<Vec<u8>>> {
        let body = self.send(
            Method::GET,
            "/v1/dictionary",
            Body::None,
            Duration::from_secs(60),
        )?;
        // 204 when there is none: no body.
        Ok((!body.is_empty()).then(|| body.to_vec()))
    }

    fn set_dictionary(&self, sealed: Vec<u8>) -> Result<Vec<u8>> {
        let body = self.send(
            Method::PUT,
            "/v1/dictionary",
            Body::Bytes(sealed.into()),
            Duration::from_secs(60),
        )?;
        Ok(body.to_vec())
    }

    fn delete_snapshot(&self, id: &str) -> Result<()> {
        self.send(
            Method::DELETE,
            &format!("/v1/snapshots/{}", sanitize_id(id)),
            Body::None,
            Duration::from_secs(120),
        )?;
        Ok(())
    }

    fn usage(&self) -> Result<UsageResponse> {
        self.get("/v1/usage")
    }

    fn devices(&self) -> Result<Vec<DeviceInfo>> {
        self.get("/v1/devices")
    }

    fn snapshot_damaged(&self, id: &str) -> Result<Vec<BlobId>> {
        let r: DamagedResponse = self.get(&format!("/v1/snapshots/{}/damaged", sanitize_id(id)))?;
        Ok(r.blobs)
    }

    fn report_scan(&self, scan: &[CategoryScan]) -> Result<Vec<CategoryInfo>> {
        self.post(
            "/v1/categories",
            &ScanReport {
                categories: scan.to_vec(),
            },
        )
    }

    fn switches(&self) -> Result<Vec<CategoryInfo>> {
        self.categories(None)
    }

    fn record_attempt(&self, attempt: &Attempt) -> Result<()> {
        self.send(
            Method::POST,
            "/v1/attempts",
            Self::encode(attempt),
            Duration::from_secs(60),
        )?;
        Ok(())
    }

    fn plans(&self) -> Result<PlansResponse> {
        self.get("/v1/plans")
    }

    fn bytes_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

impl HttpRemote {
    /// Signs a device of the account out (needs [`HttpRemote::elevate`]).
    pub fn remove_device(&self, name: &str) -> Result<DeviceInfo> {
        let body = self.send(
            Method::DELETE,
            &format!("/v1/devices/{}", haven_proto::units::path_escape(name)),
            Body::None,
            Duration::from_secs(60),
        )?;
        self.parse(&body)
    }

    /// Replaces the password (needs [`HttpRemote::elevate`]).
    pub fn change_password(&self, req: &ChangePasswordRequest) -> Result<ChangePasswordResponse> {
        self.check_secret_transport()?;
        self.post("/v1/auth/password", req)
    }

    /// `path` with `?device=NAME` when a device is named.
    pub fn with_device(path: &str, device: Option<&str>) -> String {
        match device {
            Some(d) => {
                let mut q = reqwest::Url::parse("http://x/").map_or(String::new(), |mut u| {
                    u.query_pairs_mut().append_pair("device", d);
                    u.query().unwrap_or_default().to_string()
                });
                q.insert(0, '?');
                format!("{path}{q}")
            }
            None => path.to_string(),
        }
    }

    /// A device's categories (this device's by default).
    pub fn categories(&self, device: Option<&str>) -> Result<Vec<CategoryInfo>> {
        self.get(&Self::with_device("/v1/categories", device))
    }

    /// Switches a category on or off; returns the device's categories.
    pub fn set_category(
        &self,
        name: &str,
        enabled: bool,
        device: Option<&str>,
    ) -> Result<Vec<CategoryInfo>> {
        let path = format!("/v1/categories/{}", haven_proto::units::path_escape(name));
        let bytes = self.send(
            Method::PUT,
            &Self::with_device(&path, device),
            Self::encode(&SetCategoryRequest { enabled }),
            Duration::from_secs(60),
        )?;
        self.parse(&bytes)
    }

    /// Moves the account to a plan.
    pub fn set_plan(&self, plan: &str) -> Result<()> {
        self.send(
            Method::PUT,
            "/v1/plan",
            Self::encode(&SetPlanRequest {
                plan: plan.to_string(),
            }),
            Duration::from_secs(60),
        )?;
        Ok(())
    }

    /// Backup attempts, newest first (of one device if named).
    pub fn attempts(&self, device: Option<&str>, limit: u32) -> Result<Vec<Attempt>> {
        let path = Self::with_device("/v1/attempts", device);
        let sep = if path.contains('?') { '&' } else { '?' };
        self.get(&format!("{path}{sep}limit={limit}"))
    }
}

/// Snapshot ids end up in local paths (caches): never trust the server's.
/// `/v1/snapshots?…` with the pairs escaped.
fn snapshots_query(pairs: &[(&str, &str)]) -> Result<String> {
    let mut url = reqwest::Url::parse("http://x/v1/snapshots")
        .map_err(|e| ClientError::new(ErrorCode::Internal, e.to_string()))?;
    url.query_pairs_mut().extend_pairs(pairs);
    Ok(format!("/v1/snapshots?{}", url.query().unwrap_or_default()))
}

fn checked(r: SnapshotRecord) -> Result<SnapshotRecord> {
    if is_valid_id(&r.id) && r.parent.as_deref().is_none_or(is_valid_id) {
        Ok(r)
    } else {
        Err(ClientError::corrupted(format!(
            "the server sent a malformed backup id {:?}",
            r.id
        )))
    }
}

/// Ids go into URL paths: keep only what an id can contain.
fn sanitize_id(id: &str) -> String {
    id.chars().filter(|c| c.is_ascii_alphanumeric()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An auth key crosses plain HTTP only to this machine, or where the
    /// user said `--allow-insecure-http`; HTTPS always.
    #[test]
    fn secrets_cross_plain_http_only_to_this_machine() {
        let check = |url: &str, allow: bool| {
            let t = Transport {
                ca_pem: None,
                allow_insecure_http: allow,
            };
            HttpRemote::with_transport(url, None, &t)
                .expect("remote")
                .check_secret_transport()
                .map_err(|e| e.code())
        };
        for local in [
            "http://127.0.0.1:8420",
            "http://127.9.9.9",
            "http://localhost:8420/",
            "http://LOCALHOST",
            "http://[::1]:8420",
            "http://0.0.0.0:8420",
            "https://backup.example.org",
            "https://192.0.2.1:8420",
        ] {
            assert_eq!(check(local, false), Ok(()), "{local}");
        }
        for remote in [
            "http://192.0.2.1:8420",
            "http://backup.example.org",
            "http://localhost.example.org",
            "http://[2001:db8::1]:8420",
            "http://127.0.0.1.nip.io",
        ] {
            assert_eq!(
                check(remote, false),
                Err(ErrorCode::InsecureTransport),
                "{remote}"
            );
            assert_eq!(check(remote, true), Ok(()), "{remote} allowed");
        }
    }

    /// A request waiting to retry gives up as soon as another one spends
    /// the budget, not after its own pause.
    #[test]
    fn a_spent_budget_wakes_the_requests_waiting_to_retry() {
        let remote = HttpRemote::new("http://127.0.0.1:9", None).expect("remote");
        let pause = Duration::from_secs(60);
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                let started = Instant::now();
                (remote.wait_to_retry(pause), started.elapsed())
            });
            // Every failure but the last leaves the budget unspent.
            for _ in 1..MAX_CONSECUTIVE_FAILURES {
                assert!(!remote.count_failure());
            }
            std::thread::sleep(Duration::from_millis(100));
            assert!(remote.count_failure(), "the last failure spends the budget");
            let (gave_up, waited) = waiter.join().expect("waiter");
            assert!(gave_up);
            assert!(waited < pause / 4, "waited {waited:?}");
        });
    }

    /// Without that, a wait lasts its pause and the retry goes ahead.
    #[test]
    fn a_wait_to_retry_lasts_its_pause_while_the_budget_holds() {
        let remote = HttpRemote::new("http://127.0.0.1:9", None).expect("remote");
        assert!(!remote.count_failure());
        let started = Instant::now();
        assert!(!remote.wait_to_retry(Duration::from_millis(200)));
        assert!(started.elapsed() >= Duration::from_millis(200));
    }
}

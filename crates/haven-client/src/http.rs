//! The HTTP implementation of [`Remote`] and the unauthenticated account
//! calls. Transient failures (connection refused or reset, 502/503/504)
//! are retried with exponential backoff and jitter; every request is
//! idempotent, so a retry after a lost answer is safe.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use haven_format::{BlobId, PackId};
use haven_proto::*;
use reqwest::Method;
use reqwest::blocking::{Client, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{ClientError, Remote, Result, VERSION};

const ATTEMPTS: u32 = 5;

/// A Haven server over HTTP(S).
pub struct HttpRemote {
    client: Client,
    base: String,
    token: Option<String>,
    sent: AtomicU64,
}

enum Body {
    None,
    Json(Vec<u8>),
    Bytes(Vec<u8>),
}

impl HttpRemote {
    /// A remote for `server` (e.g. `http://127.0.0.1:8420`), signed in with
    /// `token` if given.
    pub fn new(server: &str, token: Option<String>) -> Result<Self> {
        let client = Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .timeout(Duration::from_secs(600))
            .user_agent(format!("haven/{VERSION}"))
            .build()
            .map_err(|e| {
                ClientError::new(
                    ErrorCode::ConfigInvalid,
                    format!("Cannot set up HTTP: {e}."),
                )
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
        })
    }

    /// The server URL.
    pub fn server(&self) -> &str {
        &self.base
    }

    fn unreachable(&self, e: &reqwest::Error) -> ClientError {
        let why = if e.is_timeout() {
            "the connection timed out"
        } else {
            "the connection failed"
        };
        ClientError::new(ErrorCode::NetworkUnreachable, format!("Cannot reach the Haven server at {}: {why} ({e}).", self.base))
            .fix("Check that the server is running and that the URL is right.")
            .fix("Check this device's network connection, then run the command again: nothing already uploaded is lost.")
    }

    fn send(&self, method: Method, path: &str, body: Body) -> Result<Response> {
        let url = format!("{}{path}", self.base);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = self
                .client
                .request(method.clone(), &url)
                .header(CLIENT_VERSION_HEADER, VERSION);
            if let Some(t) = &self.token {
                req = req.bearer_auth(t);
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
            let result = req.send();
            self.sent
                .fetch_add(len as u64 + path.len() as u64 + 200, Ordering::Relaxed);
            let retry = match &result {
                Ok(r) => matches!(r.status().as_u16(), 502..=504),
                Err(e) => e.is_connect() || e.is_timeout() || e.is_request(),
            };
            if !retry || attempt >= ATTEMPTS {
                let resp = result.map_err(|e| self.unreachable(&e))?;
                return self.check(resp);
            }
            let backoff = 200u64 << attempt.min(6);
            let jitter = rand::random::<u64>() % (backoff / 2 + 1);
            tracing::debug!(attempt, path, "retrying after a transient failure");
            std::thread::sleep(Duration::from_millis(backoff + jitter));
        }
    }

    fn check(&self, resp: Response) -> Result<Response> {
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().unwrap_or_default();
        match serde_json::from_str::<ErrorEnvelope>(&text) {
            Ok(env) => Err(ClientError(Box::new(env.error))),
            Err(_) => Err(ClientError::new(
                ErrorCode::ServerUnavailable,
                format!("The server at {} answered HTTP {status} without a Haven error.", self.base),
            )
            .fix("Check that the URL points at a Haven server (not a proxy's error page), then try again.")),
        }
    }

    fn json<T: DeserializeOwned>(&self, resp: Response) -> Result<T> {
        let bytes = resp.bytes().map_err(|e| self.unreachable(&e))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            ClientError::new(ErrorCode::ServerUnavailable, format!("The server at {} sent an answer this client does not understand: {e}.", self.base))
                .fix("The server may be a different version: update Haven on this device and on the server.")
        })
    }

    fn encode<B: Serialize>(body: &B) -> Body {
        Body::Json(serde_json::to_vec(body).unwrap_or_default())
    }

    /// `POST` JSON, expect JSON.
    pub fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        let resp = self.send(Method::POST, path, Self::encode(body))?;
        self.json(resp)
    }

    /// `GET`, expect JSON.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let resp = self.send(Method::GET, path, Body::None)?;
        self.json(resp)
    }
}

/// Records of a fetch answer: `Some(Some(blob))` found, `Some(None)`
/// missing, `None` deferred (ask again).
type FetchRecord = Option<Option<Vec<u8>>>;

fn parse_fetch(body: &[u8], ids: &[BlobId]) -> Result<Vec<FetchRecord>> {
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
                out.push(Some(Some(body.get(at..at + len).ok_or_else(bad)?.to_vec())));
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

    fn put_pack(&self, id: PackId, pack: Vec<u8>) -> Result<()> {
        let resp = self.send(Method::PUT, &format!("/v1/packs/{id}"), Body::Bytes(pack))?;
        let _: PackStored = self.json(resp)?;
        Ok(())
    }

    fn fetch(&self, ids: &[BlobId]) -> Result<Vec<Option<Vec<u8>>>> {
        let mut result: Vec<Option<Vec<u8>>> = vec![None; ids.len()];
        let mut pending: Vec<usize> = (0..ids.len()).collect();
        while !pending.is_empty() {
            let want: Vec<BlobId> = pending.iter().map(|&i| ids[i]).collect();
            let resp = self.send(
                Method::POST,
                "/v1/blobs/fetch",
                Self::encode(&FetchRequest { ids: want.clone() }),
            )?;
            let body = resp.bytes().map_err(|e| self.unreachable(&e))?;
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
            Some(d) => {
                let mut url = reqwest::Url::parse("http://x/v1/snapshots")
                    .map_err(|e| ClientError::new(ErrorCode::Internal, e.to_string()))?;
                url.query_pairs_mut().append_pair("device", d);
                self.get(&format!(
                    "/v1/snapshots?{}",
                    url.query().unwrap_or_default()
                ))?
            }
            None => self.get("/v1/snapshots")?,
        };
        list.into_iter().map(checked).collect()
    }

    fn snapshot(&self, id: &str) -> Result<SnapshotRecord> {
        checked(self.get(&format!("/v1/snapshots/{}", sanitize_id(id)))?)
    }

    fn delete_snapshot(&self, id: &str) -> Result<()> {
        self.send(
            Method::DELETE,
            &format!("/v1/snapshots/{}", sanitize_id(id)),
            Body::None,
        )?;
        Ok(())
    }

    fn devices(&self) -> Result<Vec<DeviceInfo>> {
        self.get("/v1/devices")
    }

    fn bytes_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

/// True for a well-formed snapshot id (32 lower-case hex characters).
pub fn valid_snapshot_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Snapshot ids end up in local paths (caches): never trust the server's.
fn checked(r: SnapshotRecord) -> Result<SnapshotRecord> {
    if valid_snapshot_id(&r.id) && r.parent.as_deref().is_none_or(valid_snapshot_id) {
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

//! The HTTP API (see docs/API.md).

pub mod auth;
pub mod backup;
pub mod ratelimit;
pub mod storage;
pub mod upload;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use haven_proto::{CLIENT_VERSION_HEADER, ErrorCode, Health};

use crate::config::version_less;
use crate::error::ApiError;
use crate::state::SharedState;

/// Bodies of routes with a token: 10,000 ids in hex (`missing`, `fetch`)
/// are 680 KB of JSON.
const TOKEN_LIMIT: usize = 1 << 20;
/// A commit: its full blob list for a million-blob backup is ~70 MB.
const COMMIT_LIMIT: usize = 128 << 20;
/// `haven doctor`'s upload probe is 4 MiB.
const SPEEDTEST_LIMIT: usize = 8 << 20;

/// Bodies of the routes anyone can call without a token (and of the
/// password routes): a sign-up is under 2 KiB, so 64 KiB leaves room and
/// keeps a flood of large bodies from costing memory.
pub const SMALL_LIMIT: usize = 64 << 10;

/// The body limit of [`SMALL_LIMIT`] routes.
pub fn small() -> DefaultBodyLimit {
    DefaultBodyLimit::max(SMALL_LIMIT)
}

pub fn router(state: SharedState) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/auth/prelogin", post(auth::prelogin).layer(small()))
        .route("/v1/auth/signup", post(auth::signup).layer(small()))
        .route("/v1/auth/login", post(auth::login).layer(small()))
        .route("/v1/auth/recover", post(auth::recover).layer(small()))
        .route("/v1/auth/elevate", post(auth::elevate).layer(small()))
        .route(
            "/v1/auth/password",
            post(auth::change_password).layer(small()),
        )
        .route("/v1/devices", get(backup::devices))
        .route(
            "/v1/devices/{name}",
            axum::routing::delete(backup::remove_device),
        )
        .route("/v1/blobs/missing", post(backup::missing))
        .route("/v1/blobs/fetch", post(backup::fetch))
        .route(
            "/v1/packs/{id}",
            put(upload::put_pack).layer(DefaultBodyLimit::max(haven_format::pack::MAX_PACK_SIZE)),
        )
        .route(
            "/v1/uploads/{id}",
            put(upload::put_part)
                .get(upload::status)
                .layer(DefaultBodyLimit::max(haven_format::pack::MAX_PACK_SIZE)),
        )
        .route("/v1/sessions", post(backup::open_session))
        .route("/v1/usage", get(storage::usage))
        .route(
            "/v1/speedtest",
            post(speedtest).layer(DefaultBodyLimit::max(SPEEDTEST_LIMIT)),
        )
        .route("/v1/plans", get(storage::plans))
        .route("/v1/plan", put(storage::set_plan))
        .route(
            "/v1/dictionary",
            get(storage::dictionary).put(storage::set_dictionary),
        )
        .route(
            "/v1/categories",
            get(storage::categories).post(storage::scanned),
        )
        .route("/v1/categories/{name}", put(storage::set_category))
        .route(
            "/v1/attempts",
            get(storage::attempts).post(storage::add_attempt),
        )
        .route(
            "/v1/snapshots",
            post(backup::commit)
                .layer(DefaultBodyLimit::max(COMMIT_LIMIT))
                .get(backup::list),
        )
        .route(
            "/v1/snapshots/{id}",
            get(backup::get).delete(backup::delete),
        )
        .route("/v1/snapshots/{id}/damaged", get(backup::damaged))
        .merge(crate::console::router())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(TOKEN_LIMIT))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            client_version,
        ))
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn(trace_request))
        .with_state(state)
}

/// Makes every error answer under `/v1` the JSON error of API.md, with a
/// code, however it arose: axum answers a body it cannot read (malformed
/// JSON, a wrong field type, no content type, a body past the limit, a
/// bad query, a method the route does not take) in plain text, and a
/// handler that panics (a bug) would drop the connection, which a client
/// takes for a network failure and retries.
async fn json_errors(req: Request, next: Next) -> Response {
    use futures_util::FutureExt;
    if !req.uri().path().starts_with("/v1/") {
        return next.run(req).await;
    }
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let resp = match std::panic::AssertUnwindSafe(next.run(req))
        .catch_unwind()
        .await
    {
        Ok(resp) => resp,
        Err(_) => {
            tracing::error!("a request handler panicked (a bug); answered 500 internal");
            return internal_error().into_response();
        }
    };
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    // The rejection's own words say what was wrong with the request.
    // At most 200 characters of it: the parser's words can quote the input.
    let text: String = axum::body::to_bytes(resp.into_body(), 4096)
        .await
        .map(|b| {
            String::from_utf8_lossy(&b)
                .trim()
                .chars()
                .take(200)
                .collect()
        })
        .unwrap_or_default();
    let error = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            status,
            ErrorCode::TooLarge,
            "The request body is larger than this server takes for this route.",
        )
        .fix(format!(
            "Send fewer ids per request (at most {}) or a smaller pack (at most {} MiB); docs/API.md has the limits.",
            haven_proto::MAX_IDS_PER_REQUEST,
            haven_format::pack::MAX_PACK_SIZE >> 20
        )),
        s if s.is_server_error() => internal_error(),
        StatusCode::METHOD_NOT_ALLOWED => {
            ApiError::bad_request(format!("{path} does not take {method} requests."))
                .with_status(status)
        }
        _ => ApiError::bad_request(format!(
            "The request could not be read: {}.",
            text.trim_end_matches('.')
        ))
        .with_status(status),
    };
    error.into_response()
}

fn internal_error() -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::Internal,
        "The server hit a bug answering this request.",
    )
    .fix("Try again; if it keeps happening, tell the server's operator: its log has the details.")
}

/// RFC 3339 (UTC, seconds) of a Unix time.
pub fn rfc3339(secs: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Parses an RFC 3339 UTC time into Unix seconds.
pub fn parse_rfc3339(s: &str) -> Result<i64, ApiError> {
    humantime::parse_rfc3339(s)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64)
        .ok_or_else(|| ApiError::bad_request(format!("{s:?} is not an RFC 3339 UTC time.")))
}

/// The quota of an account's plan; `None` on a server without plans.
pub async fn quota(state: &SharedState, account_id: i64) -> Result<Option<u64>, ApiError> {
    if state.config.plans.is_empty() {
        return Ok(None);
    }
    let account = state.meta.account(account_id).await?;
    Ok(state
        .config
        .plan(account.and_then(|a| a.plan).as_deref())
        .map(|p| p.quota_bytes))
}

/// The id of the caller's device named `name`, or of the caller's own device.
pub async fn device_id(
    state: &SharedState,
    caller: &auth::Caller,
    name: Option<&str>,
) -> Result<i64, ApiError> {
    let Some(name) = name else {
        return Ok(caller.device_id);
    };
    match state
        .meta
        .devices(caller.account_id)
        .await?
        .into_iter()
        .find(|d| d.name == name)
    {
        Some(d) => Ok(d.id),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("Your account has no device named {name:?}."),
        )
        .fix("List your devices with `haven devices`.")),
    }
}

/// `POST /v1/speedtest`: takes a body and discards it (`haven doctor`
/// measures the upload rate with it).
async fn speedtest(
    _caller: auth::Caller,
    body: axum::body::Bytes,
) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "received": body.len() }))
}

async fn health(State(state): State<SharedState>) -> axum::Json<Health> {
    axum::Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        min_client_version: state.config.min_client_version.clone(),
    })
}

/// One span per request; one log line per answer, with status and time.
async fn trace_request(req: Request, next: Next) -> Response {
    use tracing::Instrument;
    let span = tracing::info_span!("request", method = %req.method(), path = %req.uri().path());
    async move {
        let started = std::time::Instant::now();
        let resp = next.run(req).await;
        let status = resp.status().as_u16();
        let ms = started.elapsed().as_millis() as u64;
        if status >= 500 {
            tracing::warn!(status, ms, "answered");
        } else {
            tracing::debug!(status, ms, "answered");
        }
        resp
    }
    .instrument(span)
    .await
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        "There is no such API route.",
    )
    .fix("Check the server URL; the API lives under /v1.")
}

/// Refuses clients older than `min_client_version`, before they can write
/// data in a format the server no longer wants.
async fn client_version(State(state): State<SharedState>, req: Request, next: Next) -> Response {
    let version = req
        .headers()
        .get(CLIENT_VERSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    if let Some(v) = version {
        let min = &state.config.min_client_version;
        if version_less(&v, min) {
            return ApiError::new(
                StatusCode::UPGRADE_REQUIRED,
                ErrorCode::ClientTooOld,
                format!("This server needs Haven {min} or later; this device runs {v}."),
            )
            .fix(format!("Update Haven to {min} or later."))
            .details(serde_json::json!({ "min_client_version": min }))
            .into_response();
        }
    }
    next.run(req).await
}

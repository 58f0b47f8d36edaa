//! The web console: storage, devices, backups and history in the browser,
//! served by the server itself. Server-rendered HTML (maud) with htmx for
//! the category switches; every asset is vendored (`web/` builds them), so
//! the page makes no request to anywhere but this server.
//!
//! Sign-in keeps end-to-end encryption: the page runs Argon2id and the
//! BLAKE3 derivation itself (`assets/kdf.js`) and sends only the auth key,
//! exactly like the CLI. Sessions are a random cookie (HttpOnly,
//! SameSite=Strict, Secure behind TLS) whose hash the database keeps for
//! 12 hours; every form and htmx request carries the session's CSRF token.

// Errors here are the page to answer with, returned early by handlers.
#![allow(clippy::result_large_err)]

mod pages;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use haven_store::meta::Account;
use maud::{DOCTYPE, Markup, html};
use rand::RngCore;

use crate::api::auth::Caller;
use crate::error::ApiError;
use crate::state::SharedState;

/// How long a console session lasts.
const SESSION_SECS: i64 = 12 * 3600;
/// How long a one-time sign-in link is valid.
const LINK_SECS: i64 = 10 * 60;
const COOKIE: &str = "haven_session";

pub fn router() -> Router<SharedState> {
    Router::new()
        .route("/", get(pages::overview))
        .route(
            "/signin",
            get(pages::signin_page)
                .post(signin)
                .layer(crate::api::small()),
        )
        .route("/signout", post(signout))
        .route("/plan", post(pages::change_plan))
        .route("/devices", get(pages::devices))
        .route("/devices/{name}", get(pages::device))
        .route("/devices/{name}/categories", post(pages::save_categories))
        .route("/devices/{name}/signout", post(pages::sign_out_device))
        .route(
            "/devices/{name}/categories/{category}",
            post(pages::toggle_category),
        )
        .route(
            "/devices/{name}/backups/{id}/delete",
            get(pages::confirm_delete).post(pages::delete_backup),
        )
        .route("/history", get(pages::history))
        .route("/admin", get(pages::admin))
        .route("/link/{token}", get(link))
        .route("/v1/console/link", post(create_link))
        .route("/static/{file}", get(asset))
        .layer(axum::middleware::from_fn(security_headers))
}

/// What the console's pages may load and do: only this server's scripts
/// and styles (inline styles for the usage bars and htmx's indicator), the
/// WebAssembly of the Argon2id in `kdf.js`, no frames, no plugins, forms
/// only to this server.
const CSP: &str = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; \
    style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
    form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Headers on every console answer. An injected script or stylesheet from
/// elsewhere does not run (CSP); the page cannot be framed to trick a
/// click; a one-time sign-in link in the address bar is not sent on as a
/// referrer; no answer is sniffed into another type.
async fn security_headers(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// A signed-in browser.
pub struct WebUser {
    pub account: Account,
    pub session: [u8; 32],
    pub csrf: String,
    /// When this session last proved the password (0: a one-time link).
    pub password_at: i64,
}

impl WebUser {
    /// The password was proved within `grant_minutes`: what deletes or
    /// weakens backups may go ahead.
    pub fn password_is_recent(&self, state: &SharedState) -> bool {
        self.password_at > 0
            && state.now() - self.password_at <= i64::from(state.config.grant_minutes) * 60
    }
}

/// The user of a form that deletes or weakens backups: signed in, with
/// the form's CSRF token, and a password proved within `grant_minutes`;
/// otherwise the answer to send (the sign-in page, or to prove the
/// password and come back to `back`).
pub async fn destroying_user(
    state: &SharedState,
    headers: &HeaderMap,
    csrf: &str,
    back: &str,
) -> Result<WebUser, Response> {
    let user = web_user(state, headers).await?;
    check_csrf(&user, headers, Some(csrf))?;
    if !user.password_is_recent(state) {
        return Err(confirm_password(headers, back));
    }
    Ok(user)
}

/// Sends the browser to the sign-in page to prove the password again,
/// then back to `next` (a path of this console). An htmx request is told
/// to navigate instead of swapping the sign-in page into a fragment.
pub fn confirm_password(headers: &HeaderMap, next: &str) -> Response {
    let to = format!("/signin?next={}", haven_proto::units::path_escape(next));
    if headers.contains_key("hx-request") {
        let mut r = StatusCode::NO_CONTENT.into_response();
        if let Ok(v) = HeaderValue::from_str(&to) {
            r.headers_mut().insert("hx-redirect", v);
        }
        return r;
    }
    Redirect::to(&to).into_response()
}

fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == COOKIE).then(|| v.to_string())
        })
}

fn hash(token: &str) -> [u8; 32] {
    *blake3::hash(token.as_bytes()).as_bytes()
}

/// The signed-in user, or a redirect to the sign-in page.
pub async fn web_user(state: &SharedState, headers: &HeaderMap) -> Result<WebUser, Response> {
    let to_signin = || Redirect::to("/signin").into_response();
    let Some(token) = cookie(headers) else {
        return Err(to_signin());
    };
    let session = hash(&token);
    let found = state
        .meta
        .console_session(session)
        .await
        .map_err(|e| problem_from(ApiError::from(e)))?;
    let Some(found) = found else {
        return Err(to_signin());
    };
    match state.meta.account(found.account_id).await {
        Ok(Some(account)) => Ok(WebUser {
            account,
            session,
            csrf: found.csrf,
            password_at: found.password_at,
        }),
        Ok(None) => Err(to_signin()),
        Err(e) => Err(problem_from(ApiError::from(e))),
    }
}

/// Refuses a state-changing request without the session's CSRF token (a
/// form field, or the `x-csrf-token` header htmx sends).
pub fn check_csrf(user: &WebUser, headers: &HeaderMap, form: Option<&str>) -> Result<(), Response> {
    let sent = form.map(String::from).or_else(|| {
        headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    });
    if sent.as_deref() == Some(user.csrf.as_str()) {
        Ok(())
    } else {
        Err(problem(
            StatusCode::FORBIDDEN,
            "This request did not come from a Haven page you opened, so it was refused.",
            "Reload the page and try again.",
        ))
    }
}

/// The browser reached the console over HTTPS: served by this server
/// itself, or by a proxy in front that says so.
fn secure(state: &SharedState, headers: &HeaderMap) -> bool {
    state.config.tls_cert.is_some()
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// Starts a session; returns the `Set-Cookie` value.
async fn start_session(
    state: &SharedState,
    account_id: i64,
    headers: &HeaderMap,
    password_at: i64,
) -> Result<HeaderValue, ApiError> {
    let token = random_hex(32);
    state
        .meta
        .console_session_create(
            hash(&token),
            account_id,
            &random_hex(16),
            state.now() + SESSION_SECS,
            password_at,
        )
        .await?;
    let value = format!(
        "{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={SESSION_SECS}{}",
        if secure(state, headers) {
            "; Secure"
        } else {
            ""
        }
    );
    HeaderValue::from_str(&value).map_err(|_| ApiError::bad_request("cookie"))
}

#[derive(serde::Deserialize)]
struct SignIn {
    email: String,
    auth_key: String,
}

/// `POST /signin` (JSON from the sign-in page): the auth key the page
/// derived, checked like a login; answers with the session cookie.
async fn signin(
    State(state): State<SharedState>,
    from: crate::api::auth::Peer,
    headers: HeaderMap,
    axum::Json(req): axum::Json<SignIn>,
) -> Result<Response, ApiError> {
    let account = match crate::api::auth::check_password(&state, &req.email, &req.auth_key, &from)
        .await
    {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(addr = %from.text(), "console sign-in with a wrong email or password");
            return Err(e);
        }
    };
    let cookie = start_session(&state, account.id, &headers, state.now()).await?;
    tracing::info!(account_id = account.id, addr = %from.text(), "console sign-in");
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response())
}

#[derive(serde::Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn signout(
    State(state): State<SharedState>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<CsrfForm>,
) -> Response {
    let user = match web_user(&state, &headers).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    if let Err(r) = check_csrf(&user, &headers, Some(&form.csrf)) {
        return r;
    }
    let _ = state.meta.console_session_delete(user.session).await;
    (
        [(
            header::SET_COOKIE,
            HeaderValue::from_static(
                "haven_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
            ),
        )],
        Redirect::to("/signin"),
    )
        .into_response()
}

/// `POST /v1/console/link` (a signed-in device): a one-time sign-in link.
async fn create_link(
    State(state): State<SharedState>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let token = random_hex(32);
    let expires = state.now() + LINK_SECS;
    state
        .meta
        .console_link_create(hash(&token), caller.account_id, expires)
        .await?;
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1");
    let scheme = if secure(&state, &headers) {
        "https"
    } else {
        "http"
    };
    Ok(axum::Json(serde_json::json!({
        "url": format!("{scheme}://{host}/link/{token}"),
        "token": token,
        "expires": crate::api::rfc3339(expires),
    })))
}

/// `GET /link/{token}`: signs in once.
async fn link(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Response {
    match state.meta.console_link_redeem(hash(&token)).await {
        Ok(Some(account_id)) => match start_session(&state, account_id, &headers, 0).await {
            Ok(cookie) => ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response(),
            Err(e) => problem_from(e),
        },
        Ok(None) => problem(
            StatusCode::GONE,
            "This sign-in link was already used or has expired: each link signs in once, within 10 minutes.",
            "Run `haven console` on your device for a new link, or sign in with your email and password.",
        ),
        Err(e) => problem_from(ApiError::from(e)),
    }
}

async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind): (&'static [u8], &str) = match file.as_str() {
        "htmx.min.js" => (
            include_bytes!("../../assets/htmx.min.js"),
            "text/javascript",
        ),
        "kdf.js" => (include_bytes!("../../assets/kdf.js"), "text/javascript"),
        "signin.js" => (include_bytes!("../../assets/signin.js"), "text/javascript"),
        "style.css" => (include_bytes!("../../assets/style.css"), "text/css"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// A page with the navigation for a signed-in user.
pub fn page(title: &str, user: Option<&WebUser>, current: &str, body: Markup) -> Markup {
    let nav = [
        ("/", "Storage"),
        ("/devices", "Devices"),
        ("/history", "History"),
    ];
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Haven" }
                link rel="stylesheet" href="/static/style.css";
                script src="/static/htmx.min.js" defer {}
            }
            body hx-headers=(user.map(|u| format!(r#"{{"x-csrf-token": "{}"}}"#, u.csrf)).unwrap_or_default()) {
                header {
                    nav aria-label="Main" {
                        a.brand href="/" { "Haven" }
                        @if let Some(u) = user {
                            @for (href, label) in nav {
                                a href=(href) aria-current=[(current == href).then_some("page")] { (label) }
                            }
                            @if u.account.is_admin {
                                a href="/admin" aria-current=[(current == "/admin").then_some("page")] { "Admin" }
                            }
                            form method="post" action="/signout" {
                                input type="hidden" name="csrf" value=(u.csrf);
                                button.secondary type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// An error page: what happened and what to do.
pub fn problem(status: StatusCode, what: &str, fix: &str) -> Response {
    let body = html! {
        h1 { "Something went wrong" }
        div.error role="alert" {
            p { (what) }
            p { strong { "What to do: " } (fix) }
        }
        p { a href="/" { "Back to your storage" } }
    };
    (status, page("Error", None, "", body)).into_response()
}

pub fn problem_from(e: ApiError) -> Response {
    let fix = e.body.fix.join(" ");
    problem(e.status, &e.body.message, &fix)
}

pub use haven_proto::units::human_bytes as size;

//! Accounts and sign-in. The server never sees the password: clients send
//! an auth key derived from it (by Argon2id on the device), and the server
//! stores the BLAKE3 hash of that key.

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use haven_format::keys::{AuthKey, KdfParams};
use haven_proto::*;
use haven_store::StoreError;
use haven_store::meta::{Account, EMAIL_TAKEN, INVITE_INVALID, NewAccount, TokenScope};
use rand::RngCore;
use std::net::SocketAddr;

use crate::error::{ApiError, ApiResult};
use crate::state::SharedState;

/// The authenticated caller of a route.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    pub account_id: i64,
    pub device_id: i64,
    /// The request carried a valid proof of the password ([`GRANT_HEADER`]).
    pub elevated: bool,
    /// The peer's address, for the log and the rate limits.
    pub peer: Peer,
}

impl Caller {
    /// Refuses with `password_required` unless the request proved the
    /// password: what deletes or weakens backups needs more than a
    /// device's token, which a thief with the laptop has.
    pub fn require_password(&self) -> ApiResult<()> {
        if self.elevated {
            Ok(())
        } else {
            Err(ApiError::password_required())
        }
    }
}

pub fn token_hash(token: &str) -> [u8; 32] {
    *blake3::hash(token.as_bytes()).as_bytes()
}

const DAY: i64 = 86_400;

/// The address of a request's client, when the server knows it: the
/// connection's peer, or behind a trusted proxy (`trust_forwarded_for`)
/// the last address of `X-Forwarded-For`, which that proxy appended.
pub fn peer(parts: &Parts, state: &SharedState) -> Option<SocketAddr> {
    if state.config.trust_forwarded_for
        && let Some(ip) = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .next_back()
            .and_then(|a| a.trim().parse::<std::net::IpAddr>().ok())
    {
        return Some(SocketAddr::new(ip, 0));
    }
    parts
        .extensions
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
}

impl FromRequestParts<SharedState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &SharedState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(ApiError::unauthorized)?;
        let hash = token_hash(token.trim());
        let now = state.now();
        let Some(t) = state.meta.token_lookup(hash).await? else {
            return Err(match state.meta.token_revoked(hash).await? {
                Some(reason) => ApiError::token_revoked(&reason, state.config.token_days),
                None => ApiError::unauthorized(),
            });
        };
        let days = i64::from(state.config.token_days);
        if days > 0 && now - t.last_used > days * DAY {
            expire_tokens(state).await?;
            return Err(ApiError::token_revoked("expired", state.config.token_days));
        }
        // Last use is kept to the hour in the database and to the day in
        // the metadata copy: a request costs no write.
        if now - t.last_used >= 3600 {
            state.meta.token_touch(hash, t.device_id, now).await?;
            if now - t.last_used >= DAY {
                crate::journal::token(state, &hash, t.account_id, t.device_id, now).await?;
                // Revoked meanwhile: its copy was removed before this one
                // was written, so remove it again (a rebuild must not
                // bring the sign-in back).
                if state.meta.token_lookup(hash).await?.is_none() {
                    crate::journal::tokens_gone(state, &[(t.account_id, hash)]).await?;
                    return Err(ApiError::unauthorized());
                }
            }
        }
        let elevated = match parts.headers.get(GRANT_HEADER) {
            Some(v) => {
                check_grant(state, t.account_id, t.device_id, v.to_str().unwrap_or("")).await?
            }
            None => false,
        };
        Ok(Caller {
            account_id: t.account_id,
            device_id: t.device_id,
            elevated,
            peer: Peer(peer(parts, state)),
        })
    }
}

/// Ends every sign-in unused for `token_days` (metadata copies included);
/// returns how many.
pub async fn expire_tokens(state: &SharedState) -> ApiResult<usize> {
    let days = i64::from(state.config.token_days);
    if days == 0 {
        return Ok(0);
    }
    let gone = state.meta.tokens_expire(state.now() - days * DAY).await?;
    for (account_id, _) in &gone {
        tracing::info!(
            account_id,
            "a device sign-in expired: unused for {days} days"
        );
    }
    crate::journal::tokens_gone(state, &gone).await?;
    Ok(gone.len())
}

/// The MAC of a grant: keyed by the server's secret, bound to the account,
/// the device, the expiry and the account's current password hash (a new
/// password voids every grant).
fn grant_mac(state: &SharedState, account: &Account, device_id: i64, expires: i64) -> blake3::Hash {
    let mut h = blake3::Hasher::new_keyed(&state.prelogin_secret);
    h.update(b"haven grant\0");
    h.update(&account.id.to_le_bytes());
    h.update(&device_id.to_le_bytes());
    h.update(&expires.to_le_bytes());
    h.update(&account.auth_hash);
    h.finalize()
}

async fn check_grant(
    state: &SharedState,
    account_id: i64,
    device_id: i64,
    grant: &str,
) -> ApiResult<bool> {
    let Some((expires, mac)) = grant.split_once('.') else {
        return Ok(false);
    };
    let (Ok(expires), Ok(mac)) = (expires.parse::<i64>(), blake3::Hash::from_hex(mac)) else {
        return Ok(false);
    };
    if expires <= state.now() {
        return Ok(false);
    }
    let Some(account) = state.meta.account(account_id).await? else {
        return Ok(false);
    };
    // blake3::Hash compares in constant time.
    Ok(grant_mac(state, &account, device_id, expires) == mac)
}

/// `POST /v1/auth/elevate`: the password proved again by a signed-in
/// device, for a grant that lets it delete or weaken backups for
/// `grant_minutes`.
pub async fn elevate(
    State(state): State<SharedState>,
    caller: Caller,
    Json(req): Json<ElevateRequest>,
) -> ApiResult<Json<ElevateResponse>> {
    let key = key32(&req.auth_key, "auth_key")?;
    let account = state
        .meta
        .account(caller.account_id)
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    let guard = super::ratelimit::check_device(&state, caller.device_id, caller.peer.ip()).await?;
    if !hash_matches(&account.auth_hash, &key) {
        tracing::warn!(account_id = caller.account_id, device_id = caller.device_id, addr = %caller.peer.text(), "wrong password to confirm a destructive action");
        return Err(ApiError::wrong_password());
    }
    guard.succeeded(&state).await?;
    let expires = state.now() + i64::from(state.config.grant_minutes) * 60;
    let mac = grant_mac(&state, &account, caller.device_id, expires);
    Ok(Json(ElevateResponse {
        grant: format!("{expires}.{}", mac.to_hex()),
        expires: super::rfc3339(expires),
    }))
}

/// The KDF floor every path that sets a password enforces: the server's
/// own parameters, or the format's floor if those are lower.
fn check_kdf_floor(state: &SharedState, kdf: &KdfParams) -> ApiResult<()> {
    if kdf.memory_kib < state.config.kdf_memory_kib.min(KdfParams::FLOOR_MEMORY_KIB)
        || kdf.iterations < state.config.kdf_iterations.min(KdfParams::FLOOR_ITERATIONS)
    {
        return Err(ApiError::bad_request(
            "The key-derivation parameters are weaker than this server allows.",
        ));
    }
    kdf.check(true)
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

/// `POST /v1/auth/password` (token and grant): replaces the password. The
/// master key is re-wrapped by the client; the recovery key stays valid.
/// Every other device is signed out unless the request says not to.
pub async fn change_password(
    State(state): State<SharedState>,
    caller: Caller,
    Json(req): Json<ChangePasswordRequest>,
) -> ApiResult<Json<ChangePasswordResponse>> {
    caller.require_password()?;
    let np = &req.new_password;
    check_kdf_floor(&state, &np.kdf)?;
    let wrapped = hex::decode(&np.wrapped_master_key)
        .map_err(|_| ApiError::bad_request("wrapped_master_key must be hex."))?;
    if wrapped.len() > 256 {
        return Err(ApiError::bad_request("Wrapped keys are at most 256 bytes."));
    }
    let kdf = serde_json::to_string(&np.kdf).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let auth_hash = key32(&np.auth_key, "auth_key")?.server_hash();
    let mut signed_out = 0;
    if req.sign_out_other_devices {
        signed_out = revoke(
            &state,
            caller.account_id,
            TokenScope::AllExcept(Some(caller.device_id)),
            "password_changed",
        )
        .await?;
    }
    state
        .meta
        .account_set_password(caller.account_id, &kdf, auth_hash, &wrapped)
        .await?;
    crate::journal::account(&state, caller.account_id).await?;
    tracing::info!(account_id = caller.account_id, device_id = caller.device_id, addr = %caller.peer.text(), signed_out, "password changed");
    Ok(Json(ChangePasswordResponse {
        signed_out: signed_out as u32,
    }))
}

/// Ends sign-ins of an account: the metadata copies first, so that a
/// rebuilt database never brings them back, then the database, which
/// remembers why for the devices that try them.
pub async fn revoke(
    state: &SharedState,
    account_id: i64,
    scope: TokenScope,
    reason: &str,
) -> ApiResult<usize> {
    crate::journal::tokens_revoked(state, account_id, scope).await?;
    let gone: Vec<(i64, [u8; 32])> = state
        .meta
        .tokens_revoke(account_id, scope, reason)
        .await?
        .into_iter()
        .map(|h| (account_id, h))
        .collect();
    crate::journal::tokens_gone(state, &gone).await?;
    Ok(gone.len())
}

fn normalize_email(email: &str) -> ApiResult<String> {
    let e = email.trim().to_lowercase();
    let valid = e.len() <= 254
        && e.split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty())
        && !e.contains(char::is_whitespace);
    if valid {
        Ok(e)
    } else {
        // Never more than a few dozen characters of the input back.
        let shown: String = email.chars().take(64).collect();
        let more = if shown.len() < email.len() { "…" } else { "" };
        Err(ApiError::bad_request(format!(
            "{shown:?}{more} is not an email address."
        )))
    }
}

fn key32(hex_str: &str, what: &str) -> ApiResult<AuthKey> {
    AuthKey::from_hex(hex_str)
        .map_err(|_| ApiError::bad_request(format!("{what} must be 64 hex characters.")))
}

fn check_device_name(name: &str) -> ApiResult<()> {
    if name.trim().is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        return Err(
            ApiError::bad_request("A device name must be 1 to 128 printable characters.")
                .fix("Choose another name with --device NAME."),
        );
    }
    Ok(())
}

fn fake_salt(state: &SharedState, email: &str) -> String {
    let mut h = blake3::Hasher::new_keyed(&state.prelogin_secret);
    h.update(b"prelogin salt\0");
    h.update(email.as_bytes());
    hex::encode(&h.finalize().as_bytes()[..16])
}

/// `POST /v1/auth/prelogin`. An unknown email gets the salt a sign-up with
/// it would get and the server's default parameters: the answer does not
/// tell whether the account exists.
pub async fn prelogin(
    State(state): State<SharedState>,
    Json(req): Json<PreloginRequest>,
) -> ApiResult<Json<PreloginResponse>> {
    let email = normalize_email(&req.email)?;
    let kdf = match state.meta.account_by_email(&email).await? {
        Some(a) => serde_json::from_str(&a.kdf)
            .map_err(|_| ApiError::storage(&StoreError::Invalid("stored kdf".into())))?,
        None => KdfParams {
            algorithm: "argon2id".into(),
            memory_kib: state.config.kdf_memory_kib,
            iterations: state.config.kdf_iterations,
            parallelism: 1,
            salt: fake_salt(&state, &email),
        },
    };
    Ok(Json(PreloginResponse { kdf }))
}

async fn issue_token(
    state: &SharedState,
    account_id: i64,
    device: &str,
    wrapped: &[u8],
) -> ApiResult<LoginResponse> {
    let (dev, existed) = state.meta.device_upsert(account_id, device).await?;
    if !existed {
        crate::journal::device(state, &dev).await?;
    } else {
        // One sign-in per device: a new one replaces the old, so a device
        // signed in again (a wiped laptop, or a thief's copy of the old
        // state) leaves no second key behind.
        revoke(state, account_id, TokenScope::Device(dev.id), "replaced").await?;
    }
    let mut t = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut t);
    let token = hex::encode(t);
    let hash = token_hash(&token);
    crate::journal::token(state, &hash, account_id, dev.id, state.now()).await?;
    state.meta.token_create(hash, account_id, dev.id).await?;
    Ok(LoginResponse {
        token,
        account_id,
        device_id: dev.id,
        device: dev.name,
        existing_device: existed,
        wrapped_master_key: hex::encode(wrapped),
    })
}

fn signup_refused(code: &str, email: &str) -> ApiError {
    if code == EMAIL_TAKEN {
        ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::EmailTaken,
            format!("An account for {email} already exists."),
        )
        .fix("Sign this device in with `haven login --server URL --email EMAIL`.")
    } else {
        ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::InviteInvalid,
            "The invite code is unknown, already used, expired, or for another email.",
        )
        .fix("Ask the server's operator for a new invite for this email.")
    }
}

/// `POST /v1/auth/signup`.
pub async fn signup(
    State(state): State<SharedState>,
    from: Peer,
    Json(req): Json<SignupRequest>,
) -> ApiResult<(StatusCode, Json<LoginResponse>)> {
    let email = normalize_email(&req.email)?;
    check_device_name(&req.device)?;
    let invite_hash = match (&req.invite, state.config.allow_signup) {
        (Some(code), _) => Some(*blake3::hash(code.trim().as_bytes()).as_bytes()),
        (None, true) => None,
        (None, false) => {
            return Err(ApiError::new(StatusCode::FORBIDDEN, ErrorCode::SignupClosed, "This server does not allow sign-up without an invite.")
                .fix("Ask the server's operator for an invite (`haven-server user invite --email EMAIL`), then sign up with `--invite CODE`."));
        }
    };
    // The client chose the parameters from our prelogin answer; we refuse
    // ones weaker than what the server itself hands out.
    check_kdf_floor(&state, &req.kdf)?;
    let wrapped = hex::decode(&req.wrapped_master_key)
        .map_err(|_| ApiError::bad_request("wrapped_master_key must be hex."))?;
    let rwrapped = hex::decode(&req.recovery_wrapped_master_key)
        .map_err(|_| ApiError::bad_request("recovery_wrapped_master_key must be hex."))?;
    if wrapped.len() > 256 || rwrapped.len() > 256 {
        return Err(ApiError::bad_request("Wrapped keys are at most 256 bytes."));
    }
    let new = NewAccount {
        email: email.clone(),
        kdf: serde_json::to_string(&req.kdf).map_err(|e| ApiError::bad_request(e.to_string()))?,
        auth_hash: key32(&req.auth_key, "auth_key")?.server_hash(),
        wrapped_key: wrapped.clone(),
        recovery_auth_hash: key32(&req.recovery_auth_key, "recovery_auth_key")?.server_hash(),
        recovery_wrapped_key: rwrapped,
    };
    // Only an address's failures count here: a refused sign-up is no
    // guess at an account's password, but a run of them probes invites.
    let guard = super::ratelimit::check(&state, None, from.ip()).await?;
    let account_id = match state.meta.account_create(&new, invite_hash).await {
        Ok(id) => {
            guard.succeeded(&state).await?;
            id
        }
        Err(StoreError::Conflict(code @ (EMAIL_TAKEN | INVITE_INVALID))) => {
            tracing::warn!(addr = %from.text(), "sign-up refused: {code}");
            return Err(signup_refused(code, &email));
        }
        Err(e) => return Err(e.into()),
    };
    crate::journal::account(&state, account_id).await?;
    tracing::info!(account_id, addr = %from.text(), "account created");
    Ok((
        StatusCode::CREATED,
        Json(issue_token(&state, account_id, &req.device, &wrapped).await?),
    ))
}

fn hash_matches(stored: &[u8], key: &AuthKey) -> bool {
    // blake3::Hash compares in constant time.
    <[u8; 32]>::try_from(stored)
        .is_ok_and(|s| blake3::Hash::from(s) == blake3::Hash::from(key.server_hash()))
}

/// The account whose password derived `auth_key_hex` (the console's
/// sign-in; the same check as login).
pub async fn check_password(
    state: &SharedState,
    email: &str,
    auth_key_hex: &str,
    from: &Peer,
) -> ApiResult<haven_store::meta::Account> {
    let email = normalize_email(email)?;
    let key = key32(auth_key_hex, "auth_key")?;
    let guard = super::ratelimit::check(state, Some(&email), from.ip()).await?;
    match state.meta.account_by_email(&email).await? {
        Some(a) if hash_matches(&a.auth_hash, &key) => {
            guard.succeeded(state).await?;
            Ok(a)
        }
        _ => Err(ApiError::wrong_password()),
    }
}

/// The peer's address of a request, for the log and the rate limits.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub Option<SocketAddr>);

impl Peer {
    /// The address, or "-" when unknown.
    pub fn text(&self) -> String {
        self.0.map_or_else(|| "-".into(), |a| a.to_string())
    }
}

impl Peer {
    /// The address's IP, for the rate limits.
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        self.0.map(|a| a.ip())
    }
}

impl FromRequestParts<SharedState> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Peer(peer(parts, state)))
    }
}

/// `POST /v1/auth/login`.
pub async fn login(
    State(state): State<SharedState>,
    from: Peer,
    Json(req): Json<LoginRequest>,
) -> ApiResult<Json<LoginResponse>> {
    let email = normalize_email(&req.email)?;
    check_device_name(&req.device)?;
    let key = key32(&req.auth_key, "auth_key")?;
    let guard = super::ratelimit::check(&state, Some(&email), from.ip()).await?;
    let account = state.meta.account_by_email(&email).await?;
    match account {
        Some(a) if hash_matches(&a.auth_hash, &key) => {
            guard.succeeded(&state).await?;
            let r = issue_token(&state, a.id, &req.device, &a.wrapped_key).await?;
            tracing::info!(account_id = a.id, device_id = r.device_id, addr = %from.text(), "device signed in");
            Ok(Json(r))
        }
        _ => {
            tracing::warn!(email = %email, addr = %from.text(), "sign-in with a wrong email or password");
            Err(ApiError::wrong_password())
        }
    }
}

/// `POST /v1/auth/recover`.
pub async fn recover(
    State(state): State<SharedState>,
    from: Peer,
    Json(req): Json<RecoverRequest>,
) -> ApiResult<Json<RecoverResponse>> {
    let email = normalize_email(&req.email)?;
    let key = key32(&req.recovery_auth_key, "recovery_auth_key")?;
    let guard = super::ratelimit::check(&state, Some(&email), from.ip()).await?;
    let account = match state.meta.account_by_email(&email).await? {
        Some(a) if hash_matches(&a.recovery_auth_hash, &key) => {
            guard.succeeded(&state).await?;
            a
        }
        _ => {
            tracing::warn!(email = %email, addr = %from.text(), "recovery with a wrong email or recovery key");
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::WrongPassword, "The email or recovery key is wrong.")
                .fix("Check the email and the recovery key you saved at sign-up (64 hex digits; dashes and spaces do not matter)."));
        }
    };
    let mut changed = false;
    if let Some(np) = &req.new_password {
        check_kdf_floor(&state, &np.kdf)?;
        let wrapped = hex::decode(&np.wrapped_master_key)
            .map_err(|_| ApiError::bad_request("wrapped_master_key must be hex."))?;
        if wrapped.len() > 256 {
            return Err(ApiError::bad_request("Wrapped keys are at most 256 bytes."));
        }
        let kdf =
            serde_json::to_string(&np.kdf).map_err(|e| ApiError::bad_request(e.to_string()))?;
        revoke(
            &state,
            account.id,
            TokenScope::AllExcept(None),
            "password_changed",
        )
        .await?;
        state
            .meta
            .account_set_password(
                account.id,
                &kdf,
                key32(&np.auth_key, "auth_key")?.server_hash(),
                &wrapped,
            )
            .await?;
        crate::journal::account(&state, account.id).await?;
        tracing::info!(
            account_id = account.id,
            addr = %from.text(),
            "password reset with the recovery key"
        );
        changed = true;
    }
    Ok(Json(RecoverResponse {
        recovery_wrapped_master_key: hex::encode(&account.recovery_wrapped_key),
        password_changed: changed,
    }))
}

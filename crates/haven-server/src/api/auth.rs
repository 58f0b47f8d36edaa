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
use haven_store::meta::{EMAIL_TAKEN, INVITE_INVALID, NewAccount};
use rand::RngCore;

use crate::error::{ApiError, ApiResult};
use crate::state::SharedState;

/// The authenticated caller of a route.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    pub account_id: i64,
    pub device_id: i64,
}

pub fn token_hash(token: &str) -> [u8; 32] {
    *blake3::hash(token.as_bytes()).as_bytes()
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
        match state.meta.token_lookup(token_hash(token.trim())).await? {
            Some((account_id, device_id)) => Ok(Caller {
                account_id,
                device_id,
            }),
            None => Err(ApiError::unauthorized()),
        }
    }
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
        Err(ApiError::bad_request(format!(
            "{email:?} is not an email address."
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
    }
    let mut t = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut t);
    let token = hex::encode(t);
    let hash = token_hash(&token);
    crate::journal::token(state, &hash, account_id, dev.id).await?;
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

/// `POST /v1/auth/signup`.
pub async fn signup(
    State(state): State<SharedState>,
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
    if req.kdf.memory_kib < state.config.kdf_memory_kib.min(KdfParams::FLOOR_MEMORY_KIB)
        || req.kdf.iterations < state.config.kdf_iterations.min(KdfParams::FLOOR_ITERATIONS)
    {
        return Err(ApiError::bad_request(
            "The key-derivation parameters are weaker than this server allows.",
        ));
    }
    req.kdf
        .check(true)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
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
    let account_id = match state.meta.account_create(&new, invite_hash).await {
        Ok(id) => id,
        Err(StoreError::Conflict(EMAIL_TAKEN)) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::EmailTaken,
                format!("An account for {email} already exists."),
            )
            .fix("Sign this device in with `haven login --server URL --email EMAIL`."));
        }
        Err(StoreError::Conflict(INVITE_INVALID)) => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::InviteInvalid,
                "The invite code is unknown, already used, expired, or for another email.",
            )
            .fix("Ask the server's operator for a new invite for this email."));
        }
        Err(e) => return Err(e.into()),
    };
    crate::journal::account(&state, account_id).await?;
    tracing::info!(account_id, "account created");
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
) -> ApiResult<haven_store::meta::Account> {
    let email = normalize_email(email)?;
    let key = key32(auth_key_hex, "auth_key")?;
    match state.meta.account_by_email(&email).await? {
        Some(a) if hash_matches(&a.auth_hash, &key) => Ok(a),
        _ => Err(ApiError::wrong_password()),
    }
}

/// `POST /v1/auth/login`.
pub async fn login(
    State(state): State<SharedState>,
    Json(req): Json<LoginRequest>,
) -> ApiResult<Json<LoginResponse>> {
    let email = normalize_email(&req.email)?;
    check_device_name(&req.device)?;
    let key = key32(&req.auth_key, "auth_key")?;
    let account = state.meta.account_by_email(&email).await?;
    match account {
        Some(a) if hash_matches(&a.auth_hash, &key) => Ok(Json(
            issue_token(&state, a.id, &req.device, &a.wrapped_key).await?,
        )),
        _ => Err(ApiError::wrong_password()),
    }
}

/// `POST /v1/auth/recover`.
pub async fn recover(
    State(state): State<SharedState>,
    Json(req): Json<RecoverRequest>,
) -> ApiResult<Json<RecoverResponse>> {
    let email = normalize_email(&req.email)?;
    let key = key32(&req.recovery_auth_key, "recovery_auth_key")?;
    let account = match state.meta.account_by_email(&email).await? {
        Some(a) if hash_matches(&a.recovery_auth_hash, &key) => a,
        _ => {
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::WrongPassword, "The email or recovery key is wrong.")
                .fix("Check the email and the recovery key you saved at sign-up (64 hex digits; dashes and spaces do not matter)."));
        }
    };
    let mut changed = false;
    if let Some(np) = &req.new_password {
        np.kdf
            .check(true)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let wrapped = hex::decode(&np.wrapped_master_key)
            .map_err(|_| ApiError::bad_request("wrapped_master_key must be hex."))?;
        if wrapped.len() > 256 {
            return Err(ApiError::bad_request("Wrapped keys are at most 256 bytes."));
        }
        let kdf =
            serde_json::to_string(&np.kdf).map_err(|e| ApiError::bad_request(e.to_string()))?;
        // Sign-ins go from the copy first: a rebuilt database must never
        // bring back a sign-in that the password change revoked.
        crate::journal::tokens_cleared(&state, account.id).await?;
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
            "password reset with the recovery key"
        );
        changed = true;
    }
    Ok(Json(RecoverResponse {
        recovery_wrapped_master_key: hex::encode(&account.recovery_wrapped_key),
        password_changed: changed,
    }))
}

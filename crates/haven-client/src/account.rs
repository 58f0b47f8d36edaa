//! Sign-up, login and recovery. The password never leaves the device: it
//! goes through Argon2id with the parameters the server hands out, and
//! only the derived auth key is sent.

use haven_format::FormatError;
use haven_format::keys::{
    KdfParams, LoginKeys, MasterKey, RecoveryKey, WrapPurpose, derive_login_keys,
};
use haven_proto::*;

use crate::http::Transport;
use crate::profile::{ConfigDir, Profile};
use crate::{ClientError, HttpRemote, Result};

/// Test-only escape hatch: `HAVEN_INSECURE_ALLOW_WEAK_KDF=1` accepts KDF
/// parameters below the floor, so tests need not spend 0.2 s per login.
/// Never set it for real accounts.
pub fn allow_weak_kdf() -> bool {
    std::env::var("HAVEN_INSECURE_ALLOW_WEAK_KDF").is_ok_and(|v| v == "1")
}

fn kdf_for(remote: &HttpRemote, email: &str) -> Result<KdfParams> {
    let pre: PreloginResponse = remote.post(
        "/v1/auth/prelogin",
        &PreloginRequest {
            email: email.to_string(),
        },
    )?;
    pre.kdf.check(allow_weak_kdf()).map_err(|e| match e {
        FormatError::WeakKdf(why) => ClientError::new(
            ErrorCode::WeakKdf,
            format!("The server asks for password hashing weaker than Haven allows ({why}), which would make the password easy to guess for whoever runs or breaks into the server."),
        )
        .fix("Do not use this server until its operator restores the default key-derivation settings."),
        other => ClientError::new(ErrorCode::ServerUnavailable, format!("The server sent unusable key-derivation parameters: {other}."))
            .fix("Check that the URL points at a Haven server."),
    })?;
    Ok(pre.kdf)
}

fn derive(password: &str, kdf: &KdfParams) -> Result<LoginKeys> {
    derive_login_keys(password.as_bytes(), kdf)
        .map_err(|e| ClientError::new(ErrorCode::Internal, format!("Key derivation failed: {e}.")))
}

fn save(
    dir: &ConfigDir,
    server: &str,
    email: &str,
    r: &LoginResponse,
    mk: &MasterKey,
    transport: &Transport,
) -> Result<Profile> {
    let profile = Profile {
        server: server.trim_end_matches('/').to_string(),
        email: email.to_string(),
        account_id: r.account_id,
        device_id: r.device_id,
        device: r.device.clone(),
        token: r.token.clone(),
        master_key: mk.to_hex(),
        ca_cert: transport.ca_pem.clone(),
        allow_insecure_http: transport.allow_insecure_http,
    };
    dir.save_profile(&profile)?;
    Ok(profile)
}

/// What sign-up produced.
pub struct SignedUp {
    pub profile: Profile,
    /// The recovery key to show once.
    pub recovery_key: String,
}

/// Creates an account and signs this device in.
pub fn signup(
    dir: &ConfigDir,
    server: &str,
    email: &str,
    password: &str,
    device: &str,
    invite: Option<&str>,
    transport: &Transport,
) -> Result<SignedUp> {
    check_password(password)?;
    let remote = HttpRemote::with_transport(server, None, transport)?;
    remote.check_secret_transport()?;
    let kdf = kdf_for(&remote, email)?;
    let keys = derive(password, &kdf)?;
    let mk = MasterKey::generate();
    let rk = RecoveryKey::generate();
    let rkeys = rk.login_keys();
    let req = SignupRequest {
        email: email.to_string(),
        invite: invite.map(String::from),
        kdf,
        auth_key: keys.auth.to_hex(),
        wrapped_master_key: hex::encode(mk.wrap(&keys.wrap, WrapPurpose::Password)),
        recovery_auth_key: rkeys.auth.to_hex(),
        recovery_wrapped_master_key: hex::encode(mk.wrap(&rkeys.wrap, WrapPurpose::Recovery)),
        device: device.to_string(),
    };
    let resp: LoginResponse = remote.post("/v1/auth/signup", &req)?;
    let profile = save(dir, server, email, &resp, &mk, transport)?;
    Ok(SignedUp {
        profile,
        recovery_key: rk.display(),
    })
}

fn check_password(password: &str) -> Result<()> {
    if password.chars().count() < 8 {
        return Err(ClientError::new(
            ErrorCode::BadRequest,
            "The password is shorter than 8 characters.",
        )
        .fix("Choose a longer password; a few unrelated words make a strong one."));
    }
    Ok(())
}

/// Signs this device in. Naming an existing device continues as it.
pub fn login(
    dir: &ConfigDir,
    server: &str,
    email: &str,
    password: &str,
    device: &str,
    transport: &Transport,
) -> Result<(Profile, bool)> {
    let remote = HttpRemote::with_transport(server, None, transport)?;
    remote.check_secret_transport()?;
    let kdf = kdf_for(&remote, email)?;
    let keys = derive(password, &kdf)?;
    let resp: LoginResponse = remote.post(
        "/v1/auth/login",
        &LoginRequest {
            email: email.to_string(),
            auth_key: keys.auth.to_hex(),
            device: device.to_string(),
        },
    )?;
    let wrapped = hex::decode(&resp.wrapped_master_key)
        .map_err(|_| ClientError::corrupted("the wrapped key is not hex"))?;
    let mk = MasterKey::unwrap_with(&wrapped, &keys.wrap, WrapPurpose::Password)
        .map_err(|_| ClientError::corrupted("the account key does not open with this password"))?;
    let existing = resp.existing_device;
    Ok((save(dir, server, email, &resp, &mk, transport)?, existing))
}

/// Sets a new password with the recovery key. Every device is signed out.
pub fn recover(
    server: &str,
    email: &str,
    recovery_key: &str,
    new_password: &str,
    transport: &Transport,
) -> Result<()> {
    check_password(new_password)?;
    let rk = RecoveryKey::parse(recovery_key).map_err(|_| {
        ClientError::new(
            ErrorCode::WrongPassword,
            "That is not a recovery key: it has 64 hex digits (0-9, a-f), in groups of 8.",
        )
        .fix("Copy the recovery key exactly as it was shown at sign-up.")
    })?;
    let rkeys = rk.login_keys();
    let remote = HttpRemote::with_transport(server, None, transport)?;
    remote.check_secret_transport()?;
    let probe: RecoverResponse = remote.post(
        "/v1/auth/recover",
        &RecoverRequest {
            email: email.to_string(),
            recovery_auth_key: rkeys.auth.to_hex(),
            new_password: None,
        },
    )?;
    let wrapped = hex::decode(&probe.recovery_wrapped_master_key)
        .map_err(|_| ClientError::corrupted("the wrapped key is not hex"))?;
    let mk =
        MasterKey::unwrap_with(&wrapped, &rkeys.wrap, WrapPurpose::Recovery).map_err(|_| {
            ClientError::corrupted("the account key does not open with this recovery key")
        })?;
    // Same parameters as the account had, fresh salt.
    let mut kdf = kdf_for(&remote, email)?;
    kdf.salt = hex::encode(rand::random::<[u8; 16]>());
    let keys = derive(new_password, &kdf)?;
    let _: RecoverResponse = remote.post(
        "/v1/auth/recover",
        &RecoverRequest {
            email: email.to_string(),
            recovery_auth_key: rkeys.auth.to_hex(),
            new_password: Some(NewPassword {
                kdf,
                auth_key: keys.auth.to_hex(),
                wrapped_master_key: hex::encode(mk.wrap(&keys.wrap, WrapPurpose::Password)),
            }),
        },
    )?;
    Ok(())
}

/// Proves the password to the server for this device's later requests on
/// `remote`: what deletes or weakens backups needs it (invariant 10).
pub fn confirm_password(profile: &Profile, remote: &HttpRemote, password: &str) -> Result<()> {
    let kdf = kdf_for(remote, &profile.email)?;
    let keys = derive(password, &kdf)?;
    remote.elevate(&keys.auth.to_hex())
}

/// Changes the password: the master key is wrapped anew under the new
/// one; the recovery key stays valid. `remote` must have proved the old
/// password ([`confirm_password`]). Returns how many other devices were
/// signed out.
pub fn change_password(
    profile: &Profile,
    remote: &HttpRemote,
    new_password: &str,
    sign_out_other_devices: bool,
) -> Result<u32> {
    check_password(new_password)?;
    let mk = profile.master_key()?;
    // Same parameters as the account has, fresh salt.
    let mut kdf = kdf_for(remote, &profile.email)?;
    kdf.salt = hex::encode(rand::random::<[u8; 16]>());
    let keys = derive(new_password, &kdf)?;
    let r = remote.change_password(&ChangePasswordRequest {
        new_password: NewPassword {
            kdf,
            auth_key: keys.auth.to_hex(),
            wrapped_master_key: hex::encode(mk.wrap(&keys.wrap, WrapPurpose::Password)),
        },
        sign_out_other_devices,
    })?;
    Ok(r.signed_out)
}

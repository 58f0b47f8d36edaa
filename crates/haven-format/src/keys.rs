//! Keys: the account master key, what is derived from it, and how it is
//! wrapped by the password and by the recovery key.
//!
//! ```text
//! password ──Argon2id(salt, params)──▶ login root ─┬─ derive "auth" ──▶ AuthKey (sent to the server, which stores its hash)
//!                                                  └─ derive "wrap" ──▶ WrapKey (never leaves the device)
//! recovery key ─┬─ derive "recovery auth" ──▶ AuthKey for the recovery path
//!               └─ derive "recovery wrap" ──▶ WrapKey for the recovery copy
//! MasterKey (random) ─┬─ derive "blob id"  ──▶ keyed-BLAKE3 key for blob ids
//!                     ├─ derive "blob seal" ─▶ XChaCha20-Poly1305 key for blobs
//!                     └─ derive "chunker"  ──▶ FastCDC gear seed
//! ```

use std::sync::{Arc, OnceLock};

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::FormatError;
use crate::dict::Dictionary;

const CTX_AUTH: &str = "haven 2026-11 login auth key v1";
const CTX_WRAP: &str = "haven 2026-11 login wrap key v1";
const CTX_RECOVERY_AUTH: &str = "haven 2026-11 recovery auth key v1";
const CTX_RECOVERY_WRAP: &str = "haven 2026-11 recovery wrap key v1";
const CTX_BLOB_ID: &str = "haven 2026-11 blob id key v1";
const CTX_BLOB_SEAL: &str = "haven 2026-11 blob seal key v1";
const CTX_CHUNKER: &str = "haven 2026-11 chunker seed v1";

/// Version byte of a wrapped master key.
pub const WRAPPED_KEY_VERSION: u8 = 1;
const WRAPPED_KEY_LEN: usize = 1 + 24 + 32 + 16;

/// Argon2id parameters and salt for one account, handed out by the server
/// before login.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Always `"argon2id"`.
    pub algorithm: String,
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Number of passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
    /// 16 random bytes, hex.
    pub salt: String,
}

impl KdfParams {
    /// The parameters a new account gets unless the server is configured
    /// otherwise: 64 MiB, 3 passes, 1 lane (~0.2 s on the reference machine).
    pub const DEFAULT_MEMORY_KIB: u32 = 64 * 1024;
    /// Default passes.
    pub const DEFAULT_ITERATIONS: u32 = 3;
    /// Floor a real client accepts: OWASP's Argon2id minimum (19 MiB, 2
    /// passes). A malicious server must not be able to make a client derive
    /// a cheap-to-crack auth key.
    pub const FLOOR_MEMORY_KIB: u32 = 19 * 1024;
    /// Floor for the number of passes.
    pub const FLOOR_ITERATIONS: u32 = 2;

    /// Checks the parameters against the floor (unless `allow_weak`, which
    /// only tests use) and against sanity limits that keep a malicious server
    /// from making the client allocate unbounded memory.
    pub fn check(&self, allow_weak: bool) -> Result<(), FormatError> {
        if self.algorithm != "argon2id" {
            return Err(FormatError::WeakKdf(format!(
                "algorithm {:?}",
                self.algorithm
            )));
        }
        if self.memory_kib > 4 * 1024 * 1024 || self.iterations > 64 || self.parallelism > 16 {
            return Err(FormatError::Kdf(
                "parameters exceed the sanity limits".into(),
            ));
        }
        if self.salt_bytes().map(|s| s.len()) != Some(16) {
            return Err(FormatError::Malformed("KDF salt"));
        }
        if !allow_weak
            && (self.memory_kib < Self::FLOOR_MEMORY_KIB
                || self.iterations < Self::FLOOR_ITERATIONS)
        {
            return Err(FormatError::WeakKdf(format!(
                "{} KiB, {} passes; at least {} KiB and {} passes are required",
                self.memory_kib,
                self.iterations,
                Self::FLOOR_MEMORY_KIB,
                Self::FLOOR_ITERATIONS
            )));
        }
        Ok(())
    }

    fn salt_bytes(&self) -> Option<Vec<u8>> {
        hex::decode(&self.salt).ok()
    }
}

macro_rules! secret_key {
    ($(#[$m:meta])* $t:ident) => {
        $(#[$m])*
        #[derive(Clone, PartialEq, Eq)]
        pub struct $t(pub [u8; 32]);

        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!(stringify!($t), "(…)"))
            }
        }

        impl $t {
            /// Lower-case hex.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// Parses 64 hex characters.
            pub fn from_hex(s: &str) -> Result<Self, FormatError> {
                let mut out = [0u8; 32];
                hex::decode_to_slice(s.trim(), &mut out)
                    .map_err(|_| FormatError::Malformed(stringify!($t)))?;
                Ok(Self(out))
            }
        }
    };
}

secret_key!(
    /// The account's random 256-bit master key: every blob key derives from it.
    MasterKey
);
secret_key!(
    /// Proves knowledge of the password (or recovery key) to the server.
    /// The server stores only its BLAKE3 hash.
    AuthKey
);
secret_key!(
    /// Encrypts the master key; never leaves the device.
    WrapKey
);
secret_key!(
    /// The recovery key shown once at sign-up.
    RecoveryKey
);

impl AuthKey {
    /// What the server stores: the auth key is 256 bits of Argon2id output,
    /// so a fast hash is enough (guessing it means guessing the password
    /// through Argon2id anyway).
    pub fn server_hash(&self) -> [u8; 32] {
        *blake3::hash(&self.0).as_bytes()
    }
}

/// Keys derived from the password.
pub struct LoginKeys {
    /// Sent to the server at login.
    pub auth: AuthKey,
    /// Unwraps the master key.
    pub wrap: WrapKey,
}

/// Runs Argon2id over the password. The caller checks `params` first.
pub fn derive_login_keys(password: &[u8], params: &KdfParams) -> Result<LoginKeys, FormatError> {
    let salt = params
        .salt_bytes()
        .ok_or(FormatError::Malformed("KDF salt"))?;
    let p = Params::new(
        params.memory_kib,
        params.iterations,
        params.parallelism,
        Some(32),
    )
    .map_err(|e| FormatError::Kdf(e.to_string()))?;
    let mut root = [0u8; 32];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, p)
        .hash_password_into(password, &salt, &mut root)
        .map_err(|e| FormatError::Kdf(e.to_string()))?;
    Ok(LoginKeys {
        auth: AuthKey(blake3::derive_key(CTX_AUTH, &root)),
        wrap: WrapKey(blake3::derive_key(CTX_WRAP, &root)),
    })
}

impl RecoveryKey {
    /// A fresh random recovery key.
    pub fn generate() -> Self {
        let mut k = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut k);
        RecoveryKey(k)
    }

    /// Shown to the user: 64 hex digits in 8 groups of 8.
    pub fn display(&self) -> String {
        let h = self.to_hex();
        h.as_bytes()
            .chunks(8)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join("-")
    }

    /// Accepts what [`RecoveryKey::display`] printed, with or without dashes
    /// and spaces, in any case.
    pub fn parse(s: &str) -> Result<Self, FormatError> {
        let clean: String = s
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .collect();
        Self::from_hex(&clean.to_ascii_lowercase())
    }

    /// Keys for the recovery path.
    pub fn login_keys(&self) -> LoginKeys {
        LoginKeys {
            auth: AuthKey(blake3::derive_key(CTX_RECOVERY_AUTH, &self.0)),
            wrap: WrapKey(blake3::derive_key(CTX_RECOVERY_WRAP, &self.0)),
        }
    }
}

/// Which secret wrapped a master key; bound into the AEAD so a
/// password-wrapped copy cannot be presented as the recovery copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WrapPurpose {
    /// Wrapped with the password's wrap key.
    Password = 1,
    /// Wrapped with the recovery key.
    Recovery = 2,
}

fn wrap_aad(purpose: WrapPurpose) -> [u8; 21] {
    let mut aad = *b"haven-master-key\x00\x00\x00\x00\x00";
    aad[16] = WRAPPED_KEY_VERSION;
    aad[17] = purpose as u8;
    aad
}

impl MasterKey {
    /// A fresh random master key.
    pub fn generate() -> Self {
        let mut k = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut k);
        MasterKey(k)
    }

    /// `version(1) | nonce(24) | XChaCha20-Poly1305(master key)(48)`.
    pub fn wrap(&self, key: &WrapKey, purpose: WrapPurpose) -> Vec<u8> {
        let mut nonce = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let cipher = XChaCha20Poly1305::new(Key::from_slice(&key.0));
        let aad = wrap_aad(purpose);
        let ct = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &self.0,
                    aad: &aad,
                },
            )
            .unwrap_or_default(); // encryption of 32 bytes cannot fail
        let mut out = Vec::with_capacity(WRAPPED_KEY_LEN);
        out.push(WRAPPED_KEY_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// Opens a wrapped master key; fails with [`FormatError::Auth`] when the
    /// key (password) is wrong or the bytes were altered.
    pub fn unwrap_with(
        wrapped: &[u8],
        key: &WrapKey,
        purpose: WrapPurpose,
    ) -> Result<Self, FormatError> {
        if wrapped.len() != WRAPPED_KEY_LEN {
            return Err(FormatError::Length {
                what: "wrapped master key",
            });
        }
        if wrapped[0] != WRAPPED_KEY_VERSION {
            return Err(FormatError::Version {
                what: "wrapped master key",
                found: wrapped[0],
            });
        }
        let cipher = XChaCha20Poly1305::new(Key::from_slice(&key.0));
        let aad = wrap_aad(purpose);
        let pt = cipher
            .decrypt(
                XNonce::from_slice(&wrapped[1..25]),
                Payload {
                    msg: &wrapped[25..],
                    aad: &aad,
                },
            )
            .map_err(|_| FormatError::Auth)?;
        let arr: [u8; 32] = pt.as_slice().try_into().map_err(|_| FormatError::Auth)?;
        Ok(MasterKey(arr))
    }

    /// The working keys of the account.
    pub fn keys(&self) -> Keys {
        let seed = blake3::derive_key(CTX_CHUNKER, &self.0);
        let mut s8 = [0u8; 8];
        s8.copy_from_slice(&seed[..8]);
        Keys {
            id_key: blake3::derive_key(CTX_BLOB_ID, &self.0),
            seal_key: blake3::derive_key(CTX_BLOB_SEAL, &self.0),
            // fastcdc treats 0 as "unseeded"; never hand it that.
            chunker_seed: u64::from_le_bytes(s8).max(1),
            dictionary: Arc::default(),
        }
    }
}

/// Working keys derived from the master key, and the account's
/// compression dictionary once the server handed it out: everything that
/// sealing and opening blobs needs.
#[derive(Clone)]
pub struct Keys {
    pub(crate) id_key: [u8; 32],
    pub(crate) seal_key: [u8; 32],
    /// Seed of the FastCDC gear table.
    pub chunker_seed: u64,
    /// Shared by clones, so that a dictionary that arrives while a backup
    /// runs reaches every thread sealing blobs.
    pub(crate) dictionary: Arc<OnceLock<Dictionary>>,
}

impl Keys {
    /// These keys with the account's compression dictionary: small data
    /// blobs are sealed with it, and blobs that name it can be opened.
    pub fn with_dictionary(self, dictionary: Dictionary) -> Self {
        Keys {
            dictionary: Arc::new(OnceLock::from(dictionary)),
            ..self
        }
    }

    /// Gives these keys, and every clone of them, the account's compression
    /// dictionary unless they have one; `false` if they had. Blobs sealed
    /// from then on use it: a backup seals its first files while the
    /// dictionary is trained.
    pub fn set_dictionary(&self, dictionary: Dictionary) -> bool {
        self.dictionary.set(dictionary).is_ok()
    }

    /// The account's compression dictionary, if these keys have it.
    pub fn dictionary(&self) -> Option<&Dictionary> {
        self.dictionary.get()
    }
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(…)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The console's page derives the auth key in JavaScript
    /// (`web/kdf.js`); this vector is the one its bundle computes.
    #[test]
    fn auth_key_matches_the_browser_derivation() {
        let params = KdfParams {
            algorithm: "argon2id".into(),
            memory_kib: 256,
            iterations: 1,
            parallelism: 1,
            salt: "00112233445566778899aabbccddeeff".into(),
        };
        let keys = derive_login_keys(b"correct horse battery", &params).expect("derive");
        assert_eq!(
            keys.auth.to_hex(),
            "0c02df7b99c5d0e401166de23fc5144000d741489433202b18e0f884d3dfc0d4"
        );
    }

    fn weak_params() -> KdfParams {
        KdfParams {
            algorithm: "argon2id".into(),
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
            salt: "00112233445566778899aabbccddeeff".into(),
        }
    }

    #[test]
    fn wrong_password_cannot_unwrap() {
        let p = weak_params();
        let mk = MasterKey::generate();
        let good = derive_login_keys(b"correct horse", &p).expect("kdf");
        let bad = derive_login_keys(b"wrong horse", &p).expect("kdf");
        let wrapped = mk.wrap(&good.wrap, WrapPurpose::Password);
        assert_eq!(
            MasterKey::unwrap_with(&wrapped, &good.wrap, WrapPurpose::Password),
            Ok(mk.clone())
        );
        assert_eq!(
            MasterKey::unwrap_with(&wrapped, &bad.wrap, WrapPurpose::Password),
            Err(FormatError::Auth)
        );
        assert_eq!(
            MasterKey::unwrap_with(&wrapped, &good.wrap, WrapPurpose::Recovery),
            Err(FormatError::Auth)
        );
        assert_ne!(good.auth, bad.auth);
        assert_ne!(good.auth.0, good.wrap.0);
    }

    #[test]
    fn every_tampered_byte_of_a_wrapped_key_is_rejected() {
        let rk = RecoveryKey::generate();
        let keys = rk.login_keys();
        let wrapped = MasterKey::generate().wrap(&keys.wrap, WrapPurpose::Recovery);
        for i in 0..wrapped.len() {
            let mut w = wrapped.clone();
            w[i] ^= 0x01;
            assert!(
                MasterKey::unwrap_with(&w, &keys.wrap, WrapPurpose::Recovery).is_err(),
                "byte {i}"
            );
        }
    }

    #[test]
    fn recovery_key_display_parses_back() {
        let rk = RecoveryKey::generate();
        let shown = rk.display();
        assert_eq!(shown.len(), 64 + 7);
        assert_eq!(RecoveryKey::parse(&shown), Ok(rk.clone()));
        assert_eq!(
            RecoveryKey::parse(&shown.to_uppercase().replace('-', " ")),
            Ok(rk)
        );
        assert!(RecoveryKey::parse("not a key").is_err());
    }

    #[test]
    fn kdf_floor_is_enforced_unless_weak_allowed() {
        let mut p = weak_params();
        assert!(matches!(p.check(false), Err(FormatError::WeakKdf(_))));
        assert!(p.check(true).is_ok());
        p.memory_kib = KdfParams::DEFAULT_MEMORY_KIB;
        p.iterations = KdfParams::DEFAULT_ITERATIONS;
        assert!(p.check(false).is_ok());
        p.memory_kib = u32::MAX;
        assert!(p.check(true).is_err());
        p.memory_kib = KdfParams::DEFAULT_MEMORY_KIB;
        p.salt = "abcd".into();
        assert!(p.check(true).is_err());
    }
}

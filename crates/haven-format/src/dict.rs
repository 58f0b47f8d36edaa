//! The account's compression dictionary.
//!
//! Each blob is compressed alone, so zstd starts every small file with
//! nothing to refer back to. A dictionary trained on a sample of the
//! account's own small files gives it that start: on the benchmark's source
//! tree it stores files under 128 KiB 8% smaller (docs/PERFORMANCE.md,
//! round 16). An account has at most one; the server keeps it sealed under
//! the account's key, beside the wrapped master key. Sealed layout (see
//! docs/FORMAT.md):
//!
//! ```text
//! version(1)=1 | nonce(24) | XChaCha20-Poly1305( zstd dictionary ) | tag(16)
//! AAD = "haven-dictionary" | version
//! ```
//!
//! The dictionary's zstd id is written into every frame compressed with
//! it, so a blob names the dictionary it needs.

use std::num::NonZeroU32;

use rand::RngCore;

use crate::FormatError;
use crate::keys::Keys;
use crate::xaead;

/// Version byte of a sealed dictionary.
pub const DICTIONARY_VERSION: u8 = 1;
/// Size a trained dictionary aims at (zstd's own default).
pub const TRAINED_SIZE: usize = 110 << 10;
/// Largest dictionary accepted.
pub const MAX_DICTIONARY: usize = 256 << 10;
/// Largest sealed dictionary.
pub const MAX_SEALED_DICTIONARY: usize = MAX_DICTIONARY + 1 + 24 + xaead::TAG_LEN;
/// Data blobs shorter than this are compressed with the dictionary; longer
/// ones hold enough to compress well on their own.
pub const SMALL_BLOB: usize = 128 << 10;

const AAD: &[u8] = b"haven-dictionary\x01";

/// A zstd dictionary and its id.
#[derive(Clone, PartialEq, Eq)]
pub struct Dictionary {
    id: NonZeroU32,
    bytes: Vec<u8>,
}

impl std::fmt::Debug for Dictionary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Dictionary({}, {} bytes)", self.id, self.bytes.len())
    }
}

impl Dictionary {
    /// Takes a zstd dictionary (magic number and id included, as zstd's
    /// trainer writes them).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, FormatError> {
        if bytes.len() > MAX_DICTIONARY {
            return Err(FormatError::Length {
                what: "compression dictionary",
            });
        }
        let id = zstd::zstd_safe::get_dict_id_from_dict(&bytes)
            .ok_or(FormatError::Malformed("compression dictionary"))?;
        Ok(Dictionary { id, bytes })
    }

    /// Trains a dictionary on sample plaintexts. `None` when zstd finds too
    /// little in them to build one.
    pub fn train<S: AsRef<[u8]>>(samples: &[S]) -> Option<Self> {
        let bytes = zstd::dict::from_samples(samples, TRAINED_SIZE).ok()?;
        Self::from_bytes(bytes).ok()
    }

    /// The id zstd writes into every frame compressed with it.
    pub fn id(&self) -> u32 {
        self.id.get()
    }

    /// The dictionary's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Seals the dictionary under the account's key.
    pub fn seal(&self, keys: &Keys) -> Vec<u8> {
        let mut nonce = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let mut out = Vec::with_capacity(1 + 24 + self.bytes.len() + xaead::TAG_LEN);
        out.push(DICTIONARY_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&self.bytes);
        // At most MAX_DICTIONARY bytes, far below what the AEAD takes.
        let tag =
            xaead::seal_in_place(&keys.seal_key, &nonce, AAD, &mut out[25..]).unwrap_or_default();
        out.extend_from_slice(&tag);
        out
    }

    /// Opens a sealed dictionary: fails with [`FormatError::Auth`] when it
    /// was not sealed under this account's key or was altered.
    pub fn open(keys: &Keys, sealed: &[u8]) -> Result<Self, FormatError> {
        check_sealed_framing(sealed)?;
        let mut nonce = [0u8; 24];
        nonce.copy_from_slice(&sealed[1..25]);
        let (body, tag) = sealed[25..].split_at(sealed.len() - 25 - xaead::TAG_LEN);
        let mut tag_bytes = [0u8; xaead::TAG_LEN];
        tag_bytes.copy_from_slice(tag);
        let mut buf = body.to_vec();
        xaead::open_in_place(&keys.seal_key, &nonce, AAD, &mut buf, &tag_bytes)
            .map_err(|_| FormatError::Auth)?;
        Self::from_bytes(buf)
    }
}

/// Checks what a server can check of a sealed dictionary without the key:
/// version byte and length.
pub fn check_sealed_framing(sealed: &[u8]) -> Result<(), FormatError> {
    xaead::check_framing(
        sealed,
        "sealed compression dictionary",
        DICTIONARY_VERSION,
        1 + 24 + xaead::TAG_LEN,
        MAX_SEALED_DICTIONARY,
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::keys::MasterKey;

    /// Small "source files" that share vocabulary, as a home directory's
    /// text does.
    pub(crate) fn samples(n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| {
                let mut s = format!("// file {i}\nuse std::io;\n\n");
                for j in 0..(20 + i % 30) {
                    s.push_str(&format!(
                        "pub fn handler_{i}_{j}(request: &Request) -> Result<Response, Error> {{\n    let value = request.field_{}()?;\n    Ok(Response::new(value * {j}))\n}}\n\n",
                        (i * 7 + j) % 13
                    ));
                }
                s.into_bytes()
            })
            .collect()
    }

    #[test]
    fn a_trained_dictionary_seals_and_opens_under_its_account_only() {
        let keys = MasterKey([3u8; 32]).keys();
        let dict = Dictionary::train(&samples(300)).expect("trained");
        assert!(dict.bytes().len() <= TRAINED_SIZE);
        let sealed = dict.seal(&keys);
        assert_eq!(Dictionary::open(&keys, &sealed).expect("open"), dict);

        let other = MasterKey([4u8; 32]).keys();
        assert_eq!(Dictionary::open(&other, &sealed), Err(FormatError::Auth));
        for i in [0, 1, 30, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(Dictionary::open(&keys, &bad).is_err(), "byte {i}");
        }
        assert!(Dictionary::open(&keys, &sealed[..20]).is_err());
    }

    #[test]
    fn bytes_that_are_not_a_dictionary_are_refused() {
        assert_eq!(
            Dictionary::from_bytes(b"not a zstd dictionary".to_vec()),
            Err(FormatError::Malformed("compression dictionary"))
        );
        assert!(Dictionary::train(&[b"too little".to_vec()]).is_none());
    }
}

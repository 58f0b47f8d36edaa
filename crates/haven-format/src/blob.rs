//! Blobs: the unit of deduplication, compression and encryption.
//!
//! A blob's id is a keyed BLAKE3 hash of its kind and plaintext, so equal
//! content within one account dedups while the server, without the key,
//! learns nothing from ids. Sealed layout (see docs/FORMAT.md):
//!
//! ```text
//! version(1)=1 | nonce(24) | XChaCha20-Poly1305( codec(1) | body ) | tag(16)
//! AAD = "haven-blob" | version | kind | id(32)
//! ```
//!
//! The AAD binds a sealed blob to its id and kind: a server that answers a
//! request for blob A with blob B, or a data blob where a tree is expected,
//! is caught by the AEAD before any byte is used.

use std::io::Read;

use rand::RngCore;
use zstd::zstd_safe::{CParameter, DictAttachPref};

use crate::FormatError;
use crate::dict::{Dictionary, SMALL_BLOB};
use crate::id::BlobId;
use crate::keys::Keys;
use crate::xaead;

/// Version byte of a sealed blob.
pub const BLOB_VERSION: u8 = 1;
/// Bytes a sealed blob adds to its (compressed) body.
pub const SEAL_OVERHEAD: usize = 1 + 24 + 1 + 16;
/// Largest plaintext of any blob (trees of huge directories are the largest).
pub const MAX_BLOB_PLAINTEXT: usize = 64 << 20;
/// Largest sealed blob: a plaintext that did not compress, plus the overhead.
pub const MAX_SEALED_BLOB: usize = MAX_BLOB_PLAINTEXT + SEAL_OVERHEAD;

const CODEC_RAW: u8 = 0;
const CODEC_ZSTD: u8 = 1;
/// zstd with the account's dictionary (its id is in the frame header).
const CODEC_ZSTD_DICT: u8 = 2;

/// What a blob holds. Stored in pack indexes, so the server can tell data
/// from metadata (as restic's index does) but nothing more.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum BlobKind {
    /// A chunk of file content.
    Data = 0,
    /// An encoded directory tree.
    Tree = 1,
    /// An encoded snapshot description.
    Snapshot = 2,
}

impl BlobKind {
    /// Parses the kind byte.
    pub fn from_u8(b: u8) -> Result<Self, FormatError> {
        match b {
            0 => Ok(BlobKind::Data),
            1 => Ok(BlobKind::Tree),
            2 => Ok(BlobKind::Snapshot),
            _ => Err(FormatError::Malformed("blob kind")),
        }
    }
}

/// The id of a plaintext of this kind under this account's keys.
pub fn blob_id(keys: &Keys, kind: BlobKind, plaintext: &[u8]) -> BlobId {
    let mut h = blake3::Hasher::new_keyed(&keys.id_key);
    h.update(&[kind as u8]);
    h.update(plaintext);
    BlobId(*h.finalize().as_bytes())
}

fn aad(kind: BlobKind, id: &BlobId) -> [u8; 44] {
    let mut a = [0u8; 44];
    a[..10].copy_from_slice(b"haven-blob");
    a[10] = BLOB_VERSION;
    a[11] = kind as u8;
    a[12..].copy_from_slice(&id.0);
    a
}

thread_local! {
    /// One zstd context per thread and level, reused across blobs: a fresh
    /// context per blob spent more time allocating and clearing its tables
    /// than compressing (measured with perf on a 342 MB backup). Contexts
    /// with the dictionary loaded are kept apart, keyed by its id, so that a
    /// thread switching between small and large files does not load the
    /// dictionary again each time.
    static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
    static DICT_COMPRESSOR: std::cell::RefCell<Option<(i32, u32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
    static DICT_DECOMPRESSOR: std::cell::RefCell<Option<(u32, zstd::bulk::Decompressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
}

/// Decompresses a body with this thread's reused context, with `dict` when
/// the frame names one. The frame header states the plaintext size (the
/// compressor always writes it), so the output is allocated once at its
/// size; a header claiming more than [`MAX_BLOB_PLAINTEXT`] is refused
/// before anything is allocated.
fn decompress(body: &[u8], dict: Option<&Dictionary>) -> Result<Vec<u8>, FormatError> {
    let size = match zstd::zstd_safe::get_frame_content_size(body) {
        Ok(Some(n)) => n,
        // A frame without its size (streamed): decode it with a limit.
        Ok(None) if dict.is_none() => return decompress_unsized(body),
        Ok(None) | Err(_) => return Err(FormatError::Decompress),
    };
    if size > MAX_BLOB_PLAINTEXT as u64 {
        return Err(FormatError::TooLarge {
            max: MAX_BLOB_PLAINTEXT,
        });
    }
    let mut out = Vec::with_capacity(size as usize);
    let into = |d: &mut zstd::bulk::Decompressor<'static>, out: &mut Vec<u8>| {
        d.decompress_to_buffer(body, out)
            .map_err(|_| FormatError::Decompress)
    };
    match dict {
        None => DECOMPRESSOR.with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.is_none() {
                *slot = Some(zstd::bulk::Decompressor::new().map_err(|_| FormatError::Decompress)?);
            }
            into(slot.as_mut().ok_or(FormatError::Decompress)?, &mut out)
        })?,
        Some(dict) => DICT_DECOMPRESSOR.with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.as_ref().map(|(id, _)| *id) != Some(dict.id()) {
                let d = zstd::bulk::Decompressor::with_dictionary(dict.bytes())
                    .map_err(|_| FormatError::Decompress)?;
                *slot = Some((dict.id(), d));
            }
            into(
                &mut slot.as_mut().ok_or(FormatError::Decompress)?.1,
                &mut out,
            )
        })?,
    };
    if out.len() as u64 != size {
        return Err(FormatError::Decompress);
    }
    Ok(out)
}

/// Decompresses a body compressed with the account's dictionary: the
/// frame names the dictionary, and it must be the one `keys` carry.
fn decompress_with_dictionary(keys: &Keys, body: &[u8]) -> Result<Vec<u8>, FormatError> {
    let named = zstd::zstd_safe::get_dict_id_from_frame(body)
        .ok_or(FormatError::Malformed(
            "blob frame without its dictionary id",
        ))?
        .get();
    match keys.dictionary() {
        Some(d) if d.id() == named => decompress(body, Some(d)),
        _ => Err(FormatError::MissingDictionary { id: named }),
    }
}

fn decompress_unsized(body: &[u8]) -> Result<Vec<u8>, FormatError> {
    let mut out = Vec::new();
    zstd::stream::read::Decoder::new(body)
        .map_err(|_| FormatError::Decompress)?
        .take(MAX_BLOB_PLAINTEXT as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| FormatError::Decompress)?;
    if out.len() > MAX_BLOB_PLAINTEXT {
        return Err(FormatError::TooLarge {
            max: MAX_BLOB_PLAINTEXT,
        });
    }
    Ok(out)
}

/// Bytes taken from each of three places of a large plaintext to guess
/// whether it compresses.
const SAMPLE: usize = 4096;

/// True when three samples (start, middle, end) of a large plaintext do not
/// shrink by 3% at the same zstd level: photos, video, archives and
/// ciphertext are stored raw without running zstd over all of them. The
/// guess only ever costs a little space, never correctness.
fn incompressible(plaintext: &[u8], level: i32) -> bool {
    if plaintext.len() < 16 * SAMPLE {
        return false;
    }
    let mid = plaintext.len() / 2;
    let mut sample = Vec::with_capacity(3 * SAMPLE);
    sample.extend_from_slice(&plaintext[..SAMPLE]);
    sample.extend_from_slice(&plaintext[mid..mid + SAMPLE]);
    sample.extend_from_slice(&plaintext[plaintext.len() - SAMPLE..]);
    compress(&sample, level).is_none_or(|c| c.len() * 100 > sample.len() * 97)
}

fn compress(plaintext: &[u8], level: i32) -> Option<Vec<u8>> {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().map(|(l, _)| *l) != Some(level) {
            *slot = Some((level, zstd::bulk::Compressor::new(level).ok()?));
        }
        slot.as_mut()?.1.compress(plaintext).ok()
    })
}

fn compress_with(plaintext: &[u8], level: i32, dict: &Dictionary) -> Option<Vec<u8>> {
    DICT_COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().map(|(l, id, _)| (*l, *id)) != Some((level, dict.id())) {
            let mut c = zstd::bulk::Compressor::with_dictionary(level, dict.bytes()).ok()?;
            // Refer to the dictionary's tables instead of copying them into
            // the context for each blob, which zstd does by default above
            // 16 KiB: on the benchmark's 77,368 small files, one thread took
            // 4.42 s with copies, 3.66 s attached, 3.51 s without the
            // dictionary; attached stored 0.015% more.
            c.set_parameter(CParameter::ForceAttachDict(DictAttachPref::ForceAttach))
                .ok()?;
            *slot = Some((level, dict.id(), c));
        }
        slot.as_mut()?.2.compress(plaintext).ok()
    })
}

/// The compressed body [`seal`] keeps for `plaintext`, or `None` when it
/// stores it raw: level 0, under 64 bytes, incompressible by its samples,
/// or compressed by less than 1/32 of its size.
fn compressed(plaintext: &[u8], level: i32, dict: Option<&Dictionary>) -> Option<Vec<u8>> {
    if level == 0 || plaintext.len() < 64 || incompressible(plaintext, level) {
        return None;
    }
    match dict {
        Some(d) => compress_with(plaintext, level, d),
        None => compress(plaintext, level),
    }
    .filter(|c| c.len() + plaintext.len() / 32 < plaintext.len())
}

/// Seals a plaintext whose id the caller already computed with
/// [`blob_id`]. `zstd_level` 0 stores raw; otherwise the body is zstd unless
/// that saves less than 1/32 of the size. Data blobs under
/// [`SMALL_BLOB`] are compressed with the account's dictionary when `keys`
/// carry one.
pub fn seal(
    keys: &Keys,
    kind: BlobKind,
    id: &BlobId,
    plaintext: &[u8],
    zstd_level: i32,
) -> Result<Vec<u8>, FormatError> {
    if plaintext.len() > MAX_BLOB_PLAINTEXT {
        return Err(FormatError::TooLarge {
            max: MAX_BLOB_PLAINTEXT,
        });
    }
    let dict = keys
        .dictionary()
        .filter(|_| kind == BlobKind::Data && plaintext.len() < SMALL_BLOB);
    let compressed = compressed(plaintext, zstd_level, dict);
    let (codec, body) = match (&compressed, dict) {
        (Some(c), Some(_)) => (CODEC_ZSTD_DICT, c.as_slice()),
        (Some(c), None) => (CODEC_ZSTD, c.as_slice()),
        (None, _) => (CODEC_RAW, plaintext),
    };
    seal_body(keys, kind, id, codec, body)
}

/// What `plaintexts`, sealed as data blobs at `level`, would store without
/// a dictionary and with `dict`: the bodies as [`seal`] would keep them
/// (raw where compressing saves too little). To tell whether a dictionary
/// earns its time on an account's files before it is offered.
pub fn stored_without_and_with<S: AsRef<[u8]>>(
    plaintexts: &[S],
    level: i32,
    dict: &Dictionary,
) -> (u64, u64) {
    let stored = |p: &[u8], dict| compressed(p, level, dict).map_or(p.len(), |c| c.len()) as u64;
    plaintexts.iter().fold((0, 0), |(without, with), p| {
        let p = p.as_ref();
        (without + stored(p, None), with + stored(p, Some(dict)))
    })
}

/// Encrypts a codec byte and body into a sealed blob.
fn seal_body(
    keys: &Keys,
    kind: BlobKind,
    id: &BlobId,
    codec: u8,
    body: &[u8],
) -> Result<Vec<u8>, FormatError> {
    let mut out = Vec::with_capacity(SEAL_OVERHEAD + body.len());
    let mut nonce = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    out.push(BLOB_VERSION);
    out.extend_from_slice(&nonce);
    out.push(codec);
    out.extend_from_slice(body);
    let tag = xaead::seal_in_place(&keys.seal_key, &nonce, &aad(kind, id), &mut out[25..])
        .map_err(|_| FormatError::Malformed("blob too large to encrypt"))?;
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Checks the framing a server can check without keys: version byte and
/// minimum length. Returns the problem, if any.
pub fn check_sealed_framing(sealed: &[u8]) -> Result<(), FormatError> {
    xaead::check_framing(
        sealed,
        "sealed blob",
        BLOB_VERSION,
        SEAL_OVERHEAD,
        MAX_SEALED_BLOB,
    )
}

/// Opens a sealed blob: authenticates it against its id and kind,
/// decompresses it and checks that the plaintext hashes to `id`.
pub fn open(
    keys: &Keys,
    kind: BlobKind,
    id: &BlobId,
    sealed: &[u8],
) -> Result<Vec<u8>, FormatError> {
    check_sealed_framing(sealed)?;
    let (head, rest) = sealed.split_at(25);
    let (ct, tag) = rest.split_at(rest.len() - xaead::TAG_LEN);
    let mut nonce = [0u8; 24];
    nonce.copy_from_slice(&head[1..25]);
    let mut tag_bytes = [0u8; xaead::TAG_LEN];
    tag_bytes.copy_from_slice(tag);
    let mut buf = ct.to_vec();
    xaead::open_in_place(&keys.seal_key, &nonce, &aad(kind, id), &mut buf, &tag_bytes)
        .map_err(|_| FormatError::Auth)?;
    let plaintext = match buf[0] {
        CODEC_RAW => {
            buf.remove(0);
            buf
        }
        CODEC_ZSTD => decompress(&buf[1..], None)?,
        CODEC_ZSTD_DICT => decompress_with_dictionary(keys, &buf[1..])?,
        _ => return Err(FormatError::Malformed("blob codec")),
    };
    // The AEAD already proves the blob was sealed under this account's key
    // for this id; re-hashing also catches a client bug that sealed the
    // wrong bytes under an id, before they are written into a restore.
    if blob_id(keys, kind, &plaintext) != *id {
        return Err(FormatError::IdMismatch);
    }
    Ok(plaintext)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::MasterKey;
    use proptest::prelude::{any, prop_assert, prop_assert_eq, proptest};

    fn keys() -> Keys {
        MasterKey([7u8; 32]).keys()
    }

    #[test]
    fn compressible_data_is_compressed_and_random_is_not() {
        let k = keys();
        let text = b"hello haven ".repeat(1000);
        let id = blob_id(&k, BlobKind::Data, &text);
        let sealed = seal(&k, BlobKind::Data, &id, &text, 3).expect("seal");
        assert!(sealed.len() < text.len() / 10);
        let mut random = vec![0u8; 100_000];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut random);
        let rid = blob_id(&k, BlobKind::Data, &random);
        let rs = seal(&k, BlobKind::Data, &rid, &random, 3).expect("seal");
        assert_eq!(rs.len(), random.len() + SEAL_OVERHEAD);
        assert_eq!(open(&k, BlobKind::Data, &rid, &rs).expect("open"), random);
    }

    #[test]
    fn zstd_frames_without_a_size_open_and_oversized_claims_are_refused() {
        let k = keys();
        let text = b"streamed frames carry no size ".repeat(500);
        let id = blob_id(&k, BlobKind::Data, &text);
        let streamed = zstd::stream::encode_all(&text[..], 3).expect("encode");
        assert!(matches!(
            zstd::zstd_safe::get_frame_content_size(&streamed),
            Ok(None)
        ));
        let sealed = seal_body(&k, BlobKind::Data, &id, CODEC_ZSTD, &streamed).expect("seal");
        assert_eq!(open(&k, BlobKind::Data, &id, &sealed).expect("open"), text);

        // A tiny frame whose header states more than any blob may hold.
        let huge = vec![0u8; MAX_BLOB_PLAINTEXT + 1];
        let bomb = zstd::bulk::compress(&huge, 1).expect("compress");
        assert!(bomb.len() < 1 << 20);
        let sealed = seal_body(&k, BlobKind::Data, &id, CODEC_ZSTD, &bomb).expect("seal");
        assert_eq!(
            open(&k, BlobKind::Data, &id, &sealed),
            Err(FormatError::TooLarge {
                max: MAX_BLOB_PLAINTEXT
            })
        );
        // A body that is not zstd at all.
        let sealed = seal_body(&k, BlobKind::Data, &id, CODEC_ZSTD, b"not zstd").expect("seal");
        assert_eq!(
            open(&k, BlobKind::Data, &id, &sealed),
            Err(FormatError::Decompress)
        );
    }

    #[test]
    fn small_data_blobs_use_the_dictionary_and_need_it_to_open() {
        let samples = crate::dict::tests::samples(400);
        let dict = Dictionary::train(&samples[..300]).expect("trained");
        let plain = keys();
        let with = keys().with_dictionary(dict.clone());
        let file = &samples[350];
        let id = blob_id(&plain, BlobKind::Data, file);
        let without_dict = seal(&plain, BlobKind::Data, &id, file, 3).expect("seal");
        let sealed = seal(&with, BlobKind::Data, &id, file, 3).expect("seal");
        assert!(
            sealed.len() * 4 < without_dict.len() * 3,
            "{} bytes with the dictionary, {} without",
            sealed.len(),
            without_dict.len()
        );
        assert_eq!(
            open(&with, BlobKind::Data, &id, &sealed).expect("open"),
            *file
        );
        // Keys without it name the dictionary that is missing.
        assert_eq!(
            open(&plain, BlobKind::Data, &id, &sealed),
            Err(FormatError::MissingDictionary { id: dict.id() })
        );
        let other = Dictionary::train(&samples[100..]).expect("trained");
        assert_ne!(other.id(), dict.id());
        assert_eq!(
            open(&keys().with_dictionary(other), BlobKind::Data, &id, &sealed),
            Err(FormatError::MissingDictionary { id: dict.id() })
        );
        // Blobs sealed before the account had one still open.
        assert_eq!(
            open(&with, BlobKind::Data, &id, &without_dict).expect("open"),
            *file
        );

        // Trees and large data blobs are compressed without it: they open
        // with keys that lack it.
        let tid = blob_id(&plain, BlobKind::Tree, file);
        let tree = seal(&with, BlobKind::Tree, &tid, file, 3).expect("seal");
        assert_eq!(
            open(&plain, BlobKind::Tree, &tid, &tree).expect("open"),
            *file
        );
        let large: Vec<u8> = samples.concat();
        assert!(large.len() >= SMALL_BLOB);
        let lid = blob_id(&plain, BlobKind::Data, &large);
        let sealed = seal(&with, BlobKind::Data, &lid, &large, 3).expect("seal");
        assert_eq!(
            open(&plain, BlobKind::Data, &lid, &sealed).expect("open"),
            large
        );
    }

    #[test]
    fn a_dictionary_set_later_reaches_every_clone_once() {
        let samples = crate::dict::tests::samples(400);
        let dict = Dictionary::train(&samples[..300]).expect("trained");
        let k = keys();
        let sealing_thread = k.clone();
        let file = &samples[350];
        let id = blob_id(&k, BlobKind::Data, file);
        let before = seal(&sealing_thread, BlobKind::Data, &id, file, 3).expect("seal");
        assert!(k.set_dictionary(dict.clone()));
        let other = Dictionary::train(&samples[100..]).expect("trained");
        assert!(!k.set_dictionary(other), "the first one stays");
        assert_eq!(sealing_thread.dictionary(), Some(&dict));
        let after = seal(&sealing_thread, BlobKind::Data, &id, file, 3).expect("seal");
        assert!(after.len() < before.len());
        assert_eq!(
            open(&MasterKey([7u8; 32]).keys(), BlobKind::Data, &id, &after),
            Err(FormatError::MissingDictionary { id: dict.id() })
        );
        assert_eq!(open(&k, BlobKind::Data, &id, &after).expect("open"), *file);
    }

    #[test]
    fn wrong_kind_id_or_key_is_rejected() {
        let k = keys();
        let data = b"some file content".to_vec();
        let id = blob_id(&k, BlobKind::Data, &data);
        let sealed = seal(&k, BlobKind::Data, &id, &data, 3).expect("seal");
        assert_eq!(
            open(&k, BlobKind::Tree, &id, &sealed),
            Err(FormatError::Auth)
        );
        let other = blob_id(&k, BlobKind::Data, b"other");
        assert_eq!(
            open(&k, BlobKind::Data, &other, &sealed),
            Err(FormatError::Auth)
        );
        let k2 = MasterKey([8u8; 32]).keys();
        assert_eq!(
            open(&k2, BlobKind::Data, &id, &sealed),
            Err(FormatError::Auth)
        );
        assert_ne!(
            blob_id(&k, BlobKind::Tree, &data),
            id,
            "kinds are domain-separated"
        );
    }

    proptest! {
        #[test]
        fn round_trip(data in proptest::collection::vec(any::<u8>(), 0..5000), level in 0i32..4, rep in 1usize..4) {
            let k = keys();
            let data: Vec<u8> = data.repeat(rep);
            let id = blob_id(&k, BlobKind::Data, &data);
            let sealed = seal(&k, BlobKind::Data, &id, &data, level).expect("seal");
            prop_assert_eq!(open(&k, BlobKind::Data, &id, &sealed).expect("open"), data);
        }

        #[test]
        fn any_tampered_byte_is_rejected(data in proptest::collection::vec(any::<u8>(), 0..300), pos in any::<usize>(), bit in 0u8..8) {
            let k = keys();
            let id = blob_id(&k, BlobKind::Tree, &data);
            let mut sealed = seal(&k, BlobKind::Tree, &id, &data, 3).expect("seal");
            let i = pos % sealed.len();
            sealed[i] ^= 1 << bit;
            prop_assert!(open(&k, BlobKind::Tree, &id, &sealed).is_err());
        }

        #[test]
        fn truncation_is_rejected(data in proptest::collection::vec(any::<u8>(), 0..300), cut in any::<usize>()) {
            let k = keys();
            let id = blob_id(&k, BlobKind::Data, &data);
            let sealed = seal(&k, BlobKind::Data, &id, &data, 3).expect("seal");
            let n = cut % sealed.len();
            prop_assert!(open(&k, BlobKind::Data, &id, &sealed[..n]).is_err());
        }
    }
}

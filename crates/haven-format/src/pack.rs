//! Packs: the unit of upload and storage. A pack is a run of sealed blobs
//! followed by a plaintext index, so that a pack alone says which blobs it
//! holds (the metadata database can be rebuilt from the packs):
//!
//! ```text
//! "HVNP" | version(1)=1 | blob_0 | … | blob_n-1
//!       | index: count u32le | n × ( kind u8 | id 32 | length u32le )
//!       | index_length u32le | "HVNP"
//! ```
//!
//! Blob `i` starts at `5 + sum(length_0..i)`.

use crate::FormatError;
use crate::blob::{BlobKind, check_sealed_framing};
use crate::id::{BlobId, PackId};

/// Leading and trailing magic.
pub const PACK_MAGIC: &[u8; 4] = b"HVNP";
/// Version byte after the leading magic.
pub const PACK_VERSION: u8 = 1;
/// A pack is closed once it reaches this size.
pub const TARGET_PACK_SIZE: usize = 16 << 20;
/// Largest pack a server accepts (one maximal blob plus headroom).
pub const MAX_PACK_SIZE: usize = crate::blob::MAX_SEALED_BLOB + (4 << 20);
const HEADER: usize = 5;
const ENTRY: usize = 1 + 32 + 4;
const TRAILER: usize = 8;

/// One blob's place in a pack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackEntry {
    /// Kind of the blob.
    pub kind: BlobKind,
    /// Its id.
    pub id: BlobId,
    /// Offset of the sealed blob from the start of the pack.
    pub offset: u64,
    /// Length of the sealed blob.
    pub length: u32,
}

/// Builds a pack in memory.
#[derive(Default)]
pub struct PackWriter {
    buf: Vec<u8>,
    entries: Vec<PackEntry>,
}

impl PackWriter {
    /// An empty pack.
    pub fn new() -> Self {
        let mut buf = Vec::with_capacity(TARGET_PACK_SIZE + (1 << 20));
        buf.extend_from_slice(PACK_MAGIC);
        buf.push(PACK_VERSION);
        PackWriter {
            buf,
            entries: Vec::new(),
        }
    }

    /// Appends a sealed blob.
    pub fn add(&mut self, kind: BlobKind, id: BlobId, sealed: &[u8]) {
        self.entries.push(PackEntry {
            kind,
            id,
            offset: self.buf.len() as u64,
            length: sealed.len() as u32,
        });
        self.buf.extend_from_slice(sealed);
    }

    /// Bytes so far (without the index).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when no blob was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Writes the index and returns the pack's id, bytes and entries.
    pub fn finish(mut self) -> (PackId, Vec<u8>, Vec<PackEntry>) {
        let index_len = 4 + ENTRY * self.entries.len();
        self.buf
            .extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for e in &self.entries {
            self.buf.push(e.kind as u8);
            self.buf.extend_from_slice(&e.id.0);
            self.buf.extend_from_slice(&e.length.to_le_bytes());
        }
        self.buf
            .extend_from_slice(&(index_len as u32).to_le_bytes());
        self.buf.extend_from_slice(PACK_MAGIC);
        (PackId::of(&self.buf), self.buf, self.entries)
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

/// Parses and checks a whole pack: magic, version, index bounds, that the
/// blobs exactly fill the body, and each blob's framing. The server runs
/// this on every upload before storing it.
pub fn parse_pack(pack: &[u8]) -> Result<Vec<PackEntry>, FormatError> {
    const WHAT: &str = "pack";
    if pack.len() < HEADER + 4 + TRAILER || pack.len() > MAX_PACK_SIZE {
        return Err(FormatError::Length { what: WHAT });
    }
    if &pack[..4] != PACK_MAGIC || &pack[pack.len() - 4..] != PACK_MAGIC {
        return Err(FormatError::Malformed("pack magic"));
    }
    if pack[4] != PACK_VERSION {
        return Err(FormatError::Version {
            what: WHAT,
            found: pack[4],
        });
    }
    let index_len = u32_at(pack, pack.len() - TRAILER) as usize;
    if index_len < 4 || index_len > pack.len() - HEADER - TRAILER {
        return Err(FormatError::Length { what: "pack index" });
    }
    let index_start = pack.len() - TRAILER - index_len;
    let count = u32_at(pack, index_start) as usize;
    if count.checked_mul(ENTRY).and_then(|n| n.checked_add(4)) != Some(index_len) {
        return Err(FormatError::Length { what: "pack index" });
    }
    let mut entries = Vec::with_capacity(count);
    let mut offset = HEADER;
    for i in 0..count {
        let e = index_start + 4 + i * ENTRY;
        let kind = BlobKind::from_u8(pack[e])?;
        let mut id = [0u8; 32];
        id.copy_from_slice(&pack[e + 1..e + 33]);
        let length = u32_at(pack, e + 33);
        let end = offset
            .checked_add(length as usize)
            .filter(|&end| end <= index_start)
            .ok_or(FormatError::Length { what: "pack blob" })?;
        check_sealed_framing(&pack[offset..end])?;
        entries.push(PackEntry {
            kind,
            id: BlobId(id),
            offset: offset as u64,
            length,
        });
        offset = end;
    }
    if offset != index_start {
        return Err(FormatError::Length { what: "pack body" });
    }
    Ok(entries)
}

/// How many bytes from a pack's end hold its index and trailer, read from
/// the last 8 bytes (`trailer`) of a pack of `total` bytes.
pub fn tail_len(trailer: &[u8], total: u64) -> Result<usize, FormatError> {
    if trailer.len() != TRAILER || &trailer[4..] != PACK_MAGIC {
        return Err(FormatError::Malformed("pack magic"));
    }
    let index_len = u32_at(trailer, 0) as u64;
    if index_len < 4 || index_len + (HEADER + TRAILER) as u64 > total {
        return Err(FormatError::Length { what: "pack index" });
    }
    Ok(index_len as usize + TRAILER)
}

/// A pack's entries from its last [`tail_len`] bytes alone, without
/// reading its blobs (their framing is not checked).
pub fn parse_index(tail: &[u8], total: u64) -> Result<Vec<PackEntry>, FormatError> {
    let what = || FormatError::Length { what: "pack index" };
    let index_len = tail.len().checked_sub(TRAILER).ok_or_else(what)?;
    if tail_len(&tail[index_len..], total)? != tail.len() || index_len < 4 {
        return Err(what());
    }
    let count = u32_at(tail, 0) as usize;
    if count.checked_mul(ENTRY).and_then(|n| n.checked_add(4)) != Some(index_len) {
        return Err(what());
    }
    let body_end = total - tail.len() as u64;
    let mut entries = Vec::with_capacity(count);
    let mut offset = HEADER as u64;
    for i in 0..count {
        let e = 4 + i * ENTRY;
        let mut id = [0u8; 32];
        id.copy_from_slice(&tail[e + 1..e + 33]);
        let length = u32_at(tail, e + 33);
        entries.push(PackEntry {
            kind: BlobKind::from_u8(tail[e])?,
            id: BlobId(id),
            offset,
            length,
        });
        offset += u64::from(length);
        if offset > body_end {
            return Err(FormatError::Length { what: "pack blob" });
        }
    }
    if offset != body_end {
        return Err(FormatError::Length { what: "pack body" });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::{blob_id, seal};
    use crate::keys::MasterKey;
    use proptest::prelude::*;

    fn sample(n: usize) -> (Vec<u8>, Vec<PackEntry>) {
        let k = MasterKey([1; 32]).keys();
        let mut w = PackWriter::new();
        for i in 0..n {
            let data = format!("blob number {i}").repeat(i + 1).into_bytes();
            let id = blob_id(&k, BlobKind::Data, &data);
            w.add(
                BlobKind::Data,
                id,
                &seal(&k, BlobKind::Data, &id, &data, 3).expect("seal"),
            );
        }
        let (pid, bytes, entries) = w.finish();
        assert_eq!(pid, PackId::of(&bytes));
        (bytes, entries)
    }

    #[test]
    fn parse_returns_what_was_written() {
        let (bytes, entries) = sample(5);
        assert_eq!(parse_pack(&bytes).expect("parse"), entries);
        let total = bytes.len() as u64;
        let tail = tail_len(&bytes[bytes.len() - 8..], total).expect("trailer");
        assert_eq!(
            parse_index(&bytes[bytes.len() - tail..], total).expect("index"),
            entries
        );
        for cut in [1, tail - 1] {
            assert!(parse_index(&bytes[bytes.len() - cut..], total).is_err());
        }
        let (empty, e0) = sample(0);
        assert_eq!(parse_pack(&empty).expect("parse"), e0);
    }

    proptest! {
        #[test]
        fn damaged_structure_is_rejected(n in 1usize..6, pos in any::<usize>(), val in any::<u8>()) {
            let (mut bytes, entries) = sample(n);
            let body_end = entries.last().map(|e| e.offset as usize + e.length as usize).unwrap_or(5);
            // Changing any structural byte (header, index, trailer, or a
            // blob's version byte) must be caught; changes inside a blob's
            // ciphertext are caught by the AEAD instead.
            let structural: Vec<usize> = (0..5).chain(body_end..bytes.len()).chain(entries.iter().map(|e| e.offset as usize)).collect();
            let i = structural[pos % structural.len()];
            prop_assume!(bytes[i] != val);
            let old = bytes[i];
            bytes[i] = val;
            let parsed = parse_pack(&bytes);
            // An id byte may change and still parse: the id then no longer
            // matches the blob, which the AEAD (bound to the id) catches.
            let in_id = (0..n).any(|k| {
                let kind_at = body_end + 4 + k * ENTRY;
                (i == kind_at && val <= 2) || (i > kind_at && i <= kind_at + 32)
            });
            if in_id { prop_assert!(parsed.is_ok()); } else { prop_assert!(parsed.is_err(), "byte {} from {} to {}", i, old, val); }
        }

        #[test]
        fn truncated_or_extended_is_rejected(n in 0usize..4, cut in any::<usize>()) {
            let (bytes, _) = sample(n);
            let c = cut % bytes.len();
            prop_assert!(parse_pack(&bytes[..c]).is_err());
            let mut longer = bytes.clone();
            longer.insert(5, 0);
            prop_assert!(parse_pack(&longer).is_err());
        }
    }
}

//! Identifiers. One newtype per kind of object, so a tree id can never be
//! passed where a chunk id is expected. The server only ever sees
//! [`BlobId`]s and [`PackId`]s.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::FormatError;

/// Length in bytes of every id.
pub const ID_LEN: usize = 32;

/// The id of a blob of any kind, as stored and indexed by the server:
/// a keyed BLAKE3 hash of the blob's plaintext (see `blob::blob_id`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobId(pub [u8; ID_LEN]);

/// The id of a pack: the plain BLAKE3 hash of the pack's bytes, so that the
/// server can check it without any key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackId(pub [u8; ID_LEN]);

/// The id of a data chunk (a blob of kind `Data`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ChunkId(pub BlobId);

/// The id of a tree (a blob of kind `Tree`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TreeId(pub BlobId);

macro_rules! hex_id {
    ($t:ident) => {
        impl $t {
            /// Lower-case hex, 64 characters.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// Parses 64 hex characters.
            pub fn from_hex(s: &str) -> Result<Self, FormatError> {
                let mut out = [0u8; ID_LEN];
                hex::decode_to_slice(s, &mut out)
                    .map_err(|_| FormatError::Malformed(concat!(stringify!($t), " hex")))?;
                Ok(Self(out))
            }

            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; ID_LEN] {
                &self.0
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($t), &self.to_hex()[..16])
            }
        }

        impl FromStr for $t {
            type Err = FormatError;
            fn from_str(s: &str) -> Result<Self, FormatError> {
                Self::from_hex(s)
            }
        }

        /// Human-readable formats (JSON) get hex; binary ones (postcard)
        /// get the 32 raw bytes.
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.serialize_str(&self.to_hex())
                } else {
                    s.serialize_bytes(&self.0)
                }
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $t;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("a 32-byte id (64 hex characters)")
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$t, E> {
                        $t::from_hex(v).map_err(E::custom)
                    }
                    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<$t, E> {
                        let arr: [u8; ID_LEN] = v
                            .try_into()
                            .map_err(|_| E::invalid_length(v.len(), &self))?;
                        Ok($t(arr))
                    }
                }
                if d.is_human_readable() {
                    d.deserialize_str(V)
                } else {
                    d.deserialize_bytes(V)
                }
            }
        }
    };
}

hex_id!(BlobId);
hex_id!(PackId);

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Chunk{:?}", self.0)
    }
}

impl fmt::Debug for TreeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tree{:?}", self.0)
    }
}

impl PackId {
    /// The id of a pack with these bytes.
    pub fn of(bytes: &[u8]) -> Self {
        PackId(*blake3::hash(bytes).as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_rejects_bad_input() {
        let id = BlobId([0xab; 32]);
        assert_eq!(BlobId::from_hex(&id.to_hex()), Ok(id));
        assert!(BlobId::from_hex("ab").is_err());
        assert!(BlobId::from_hex(&"zz".repeat(32)).is_err());
        let json = serde_json_like(&id);
        assert_eq!(json.len(), 64);
    }

    fn serde_json_like(id: &BlobId) -> String {
        id.to_string()
    }

    #[test]
    fn postcard_uses_raw_bytes() {
        let id = TreeId(BlobId([0xff; 32]));
        let bytes = postcard::to_allocvec(&id).expect("encode");
        assert_eq!(bytes.len(), 33, "one length byte and 32 raw bytes");
        let back: TreeId = postcard::from_bytes(&bytes).expect("decode");
        assert_eq!(back, id);
        assert!(postcard::from_bytes::<TreeId>(&bytes[..20]).is_err());
    }
}

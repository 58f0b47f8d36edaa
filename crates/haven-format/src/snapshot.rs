//! Snapshot descriptions, stored as blobs of kind `Snapshot`. The server
//! keeps a plaintext record beside it (device, time, sizes, referenced
//! blobs) but only the client can read which paths were backed up.
//!
//! Encoding: `version(1)=1 | postcard(Snapshot)`.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::FormatError;
use crate::id::TreeId;
use crate::tree::Timestamp;

/// Version byte of an encoded snapshot.
pub const SNAPSHOT_VERSION: u8 = 1;

/// What a backup captured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// When the backup started.
    pub time: Timestamp,
    /// The device's name.
    pub device: String,
    /// Host name of the machine.
    pub hostname: String,
    /// The absolute paths that were backed up, as raw bytes.
    pub paths: Vec<ByteBuf>,
    /// The tree of `/`: the backed-up paths and their parent directories.
    pub root: TreeId,
    /// The server id of the snapshot this one was compared against.
    pub parent: Option<String>,
    /// Version of the client that wrote it.
    pub client_version: String,
    /// Number of files.
    pub files: u64,
    /// Logical bytes of the files.
    pub bytes: u64,
}

impl Snapshot {
    /// Encodes the snapshot.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![SNAPSHOT_VERSION];
        out.extend(postcard::to_allocvec(self).unwrap_or_default());
        out
    }

    /// Decodes a snapshot.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        match bytes.first() {
            None => Err(FormatError::Length { what: "snapshot" }),
            Some(&SNAPSHOT_VERSION) => {
                postcard::from_bytes(&bytes[1..]).map_err(|_| FormatError::Malformed("snapshot"))
            }
            Some(&v) => Err(FormatError::Version {
                what: "snapshot",
                found: v,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::BlobId;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(device in ".{0,20}", paths in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..30), 0..4), files in any::<u64>(), secs in any::<i64>()) {
            let s = Snapshot {
                time: Timestamp { secs, nanos: 5 },
                device: device.clone(),
                hostname: "h".into(),
                paths: paths.into_iter().map(ByteBuf::from).collect(),
                root: TreeId(BlobId([4; 32])),
                parent: Some("p".into()),
                client_version: "0.1.0".into(),
                files,
                bytes: 7,
            };
            prop_assert_eq!(Snapshot::decode(&s.encode()).expect("decode"), s);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Snapshot::decode(&bytes);
        }
    }
}

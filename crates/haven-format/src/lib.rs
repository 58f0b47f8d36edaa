//! Haven's on-disk and on-wire formats, as pure functions: bytes in, bytes out.
//!
//! No files, sockets, async or databases live here. Everything a server
//! stores or a client uploads is produced and checked by this crate, and
//! `docs/FORMAT.md` is its byte-level specification.
//!
//! * [`keys`]: the account master key, the keys derived from it, and the
//!   password / recovery-key wrapping of the master key.
//! * [`chunker`]: content-defined chunking (FastCDC 2020, seeded per account).
//! * [`blob`]: ids (keyed BLAKE3), compression and AEAD sealing of blobs.
//! * [`dict`]: the account's zstd dictionary for small files, sealed.
//! * [`pack`]: the self-describing container blobs are uploaded and stored in.
//! * [`tree`] and [`snapshot`]: directory trees and snapshot descriptions,
//!   which are themselves stored as blobs.

pub mod blob;
pub mod chunker;
pub mod dict;
mod error;
pub mod id;
pub mod keys;
pub mod pack;
pub mod snapshot;
pub mod tree;
pub mod xaead;

pub use error::FormatError;
pub use id::{BlobId, ChunkId, PackId, TreeId};

use std::path::Path;

use async_trait::async_trait;
use bytes::Bytes;

use crate::StoreError;

/// Where packs live: a flat namespace of immutable, content-addressed
/// objects.
///
/// Guarantees every implementation gives (checked by the conformance
/// suite):
/// * `put` is atomic and durable: once it returns, a crash of the process
///   or machine leaves the whole object readable; before it returns, readers
///   see either nothing or (for a re-put) the old, identical object.
/// * read-after-write: a `get` after a successful `put` returns the bytes.
/// * `get`/`get_range` of an absent key is `StoreError::NotFound`; a range
///   beyond the end is an error, never short data.
/// * `delete` is idempotent.
///
/// Exclusive decisions (is a pack committed, may it be deleted) are never
/// made here but in the [`MetaStore`](crate::MetaStore): S3-compatible
/// stores such as Garage do not honour conditional writes.
#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// Stores `bytes` under `key`, replacing any object of that key.
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError>;
    /// Stores the file at `path` (`len` bytes) under `key`, with `put`'s
    /// guarantees, and takes the file: on success it is gone. A store on
    /// the same filesystem moves it into place instead of copying it.
    async fn put_file(&self, key: &str, path: &Path, len: u64) -> Result<(), StoreError> {
        let _ = len;
        let from = path.to_path_buf();
        let bytes = tokio::task::spawn_blocking(move || std::fs::read(from))
            .await
            .map_err(|e| StoreError::Io(std::io::Error::other(e)))??;
        self.put(key, bytes).await?;
        let _ = tokio::fs::remove_file(path).await;
        Ok(())
    }
    /// Reads a whole object.
    async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError>;
    /// Reads several ranges `(offset, length)` of one object, in order.
    async fn get_ranges(
        &self,
        key: &str,
        ranges: Vec<(u64, u32)>,
    ) -> Result<Vec<Bytes>, StoreError>;
    /// The size of the object stored under `key`, if there is one.
    async fn size(&self, key: &str) -> Result<Option<u64>, StoreError>;
    /// Removes an object; absent objects are not an error.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// Keys that start with `prefix`, sorted.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;
    /// Total bytes of all objects.
    async fn total_bytes(&self) -> Result<u64, StoreError>;
    /// Bytes the store may still take before it refuses writes as full
    /// (`max_store_bytes`); `None` when only the disk limits it. Uploads
    /// staged outside the store count against it (the server checks).
    fn free_bytes(&self) -> Option<u64> {
        None
    }
}

/// Keys are `/`-separated segments of `[a-z0-9._-]`, none of them empty,
/// `.` or `..`: they can never name a path outside the store.
pub fn check_key(key: &str) -> Result<(), StoreError> {
    let ok = !key.is_empty()
        && key.len() <= 512
        && key.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        });
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!("bad object key {key:?}")))
    }
}

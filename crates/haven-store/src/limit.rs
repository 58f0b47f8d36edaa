//! A wrapper that caps the bytes an object store may hold: writes past the
//! cap fail exactly like a full disk (`ENOSPC`), so the server's disk-full
//! path is the same whether the disk or the operator's cap is reached.

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

use crate::{ObjectStore, StoreError};

/// An [`ObjectStore`] holding at most `max` bytes.
pub struct CapacityLimit<S> {
    inner: S,
    max: u64,
    used: AtomicU64,
}

impl<S: ObjectStore> CapacityLimit<S> {
    /// Wraps `inner`, counting what it already holds.
    pub async fn new(inner: S, max: u64) -> Result<Self, StoreError> {
        let used = inner.total_bytes().await?;
        Ok(CapacityLimit {
            inner,
            max,
            used: AtomicU64::new(used),
        })
    }
}

fn full() -> StoreError {
    StoreError::Io(std::io::Error::from(std::io::ErrorKind::StorageFull))
}

impl<S> CapacityLimit<S> {
    /// Counts `len` bytes in, or fails like a full disk.
    fn reserve(&self, len: u64) -> Result<(), StoreError> {
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| {
                (u + len <= self.max).then_some(u + len)
            })
            .map(|_| ())
            .map_err(|_| full())
    }

    /// Gives the reservation back if the write failed.
    fn settle(&self, r: Result<(), StoreError>, len: u64) -> Result<(), StoreError> {
        if r.is_err() {
            self.used.fetch_sub(len, Ordering::SeqCst);
        }
        r
    }
}

#[async_trait]
impl<S: ObjectStore> ObjectStore for CapacityLimit<S> {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        let len = bytes.len() as u64;
        self.reserve(len)?;
        let r = self.inner.put(key, bytes).await;
        self.settle(r, len)
    }

    async fn put_file(
        &self,
        key: &str,
        path: &std::path::Path,
        len: u64,
    ) -> Result<(), StoreError> {
        self.reserve(len)?;
        let r = self.inner.put_file(key, path, len).await;
        self.settle(r, len)
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        self.inner.get(key).await
    }

    async fn get_ranges(
        &self,
        key: &str,
        ranges: Vec<(u64, u32)>,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        self.inner.get_ranges(key, ranges).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        // The object's size is not known without a read; recount instead.
        self.inner.delete(key).await?;
        self.used
            .store(self.inner.total_bytes().await?, Ordering::SeqCst);
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.inner.list(prefix).await
    }

    async fn total_bytes(&self) -> Result<u64, StoreError> {
        self.inner.total_bytes().await
    }
}

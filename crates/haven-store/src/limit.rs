//! A wrapper that caps the bytes an object store may hold: writes past the
//! cap fail exactly like a full disk (`ENOSPC`), so the server's disk-full
//! path is the same whether the disk or the operator's cap is reached.

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;

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
        // Keys are content addresses: putting a stored key again (a
        // retried upload) replaces the object with the same bytes and the
        // total does not grow, so such a put is neither counted nor
        // refused. Two puts of one new key at once both count it: the
        // count errs on the full side until the server restarts.
        if self.inner.size(key).await?.is_some() {
            return self.inner.put(key, bytes).await;
        }
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
        if self.inner.size(key).await?.is_some() {
            return self.inner.put_file(key, path, len).await;
        }
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
    ) -> Result<Vec<Bytes>, StoreError> {
        self.inner.get_ranges(key, ranges).await
    }

    async fn size(&self, key: &str) -> Result<Option<u64>, StoreError> {
        self.inner.size(key).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        // Its size, not a recount of the whole store: a collection deletes
        // many packs, and a recount reads every object's size.
        let Some(len) = self.inner.size(key).await? else {
            return Ok(());
        };
        self.inner.delete(key).await?;
        let _ = self
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| {
                Some(u.saturating_sub(len))
            });
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.inner.list(prefix).await
    }

    fn free_bytes(&self) -> Option<u64> {
        Some(self.max.saturating_sub(self.used.load(Ordering::SeqCst)))
    }

    async fn total_bytes(&self) -> Result<u64, StoreError> {
        self.inner.total_bytes().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LocalDirStore;

    #[tokio::test]
    async fn putting_a_stored_object_again_takes_no_more_room() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalDirStore::open(dir.path()).expect("open");
        let s = CapacityLimit::new(store, 100).await.expect("limit");
        s.put("p/a", vec![1; 60]).await.expect("first put");
        // A retried upload of the same pack near the cap.
        s.put("p/a", vec![1; 60])
            .await
            .expect("the same object again");
        let staged = dir.path().join("staged");
        std::fs::write(&staged, vec![1; 60]).expect("stage");
        s.put_file("p/a", &staged, 60)
            .await
            .expect("and from a file");
        s.put("p/b", vec![2; 40]).await.expect("what is left fits");
        assert!(matches!(
            s.put("p/c", vec![3; 1]).await,
            Err(StoreError::Io(e)) if e.kind() == std::io::ErrorKind::StorageFull
        ));
        assert_eq!(s.total_bytes().await.expect("total"), 100);
    }

    #[tokio::test]
    async fn a_deleted_object_gives_its_room_back_exactly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalDirStore::open(dir.path()).expect("open");
        let s = CapacityLimit::new(store, 100).await.expect("limit");
        s.put("p/a", vec![1; 70]).await.expect("put");
        s.put("p/b", vec![2; 30]).await.expect("put");
        s.delete("p/a").await.expect("delete");
        s.delete("p/a")
            .await
            .expect("deleting it again changes nothing");
        s.delete("p/never")
            .await
            .expect("nor does an absent object");
        s.put("p/c", vec![3; 70])
            .await
            .expect("the room freed fits");
        assert!(matches!(
            s.put("p/d", vec![4; 1]).await,
            Err(StoreError::Io(e)) if e.kind() == std::io::ErrorKind::StorageFull
        ));
    }
}

//! A bounded in-memory cache of immutable blocks in front of a remote
//! store.
//!
//! Blocks and derived files are written once under a fresh ULID and never
//! changed, so a cached copy never goes stale: no validation requests.
//! Queries read a block's footer, page index and column chunks in several
//! ranged GETs; on an object store each is a round trip, so the first read
//! of a block fetches it whole (up to `max_object_bytes`) and later reads
//! of any range are served from memory. The cache holds at most
//! `max_bytes`; the least recently used blocks go first. Other objects
//! (metas, leases, marks, listings, writes) pass straight through.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};
use parking_lot::Mutex;

/// Hits and misses since start, for `/metrics`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BlobCacheStats {
    pub hits: u64,
    pub misses: u64,
    pub bytes: u64,
}

#[derive(Debug)]
struct Entry {
    bytes: Bytes,
    meta: ObjectMeta,
    last_used: u64,
}

#[derive(Debug, Default)]
struct Entries {
    by_path: HashMap<Path, Entry>,
    bytes: u64,
    clock: u64,
}

#[derive(Debug)]
pub struct BlobCache {
    inner: Arc<dyn ObjectStore>,
    max_bytes: u64,
    max_object_bytes: u64,
    entries: Mutex<Entries>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// Whether `location` names an immutable object: a Parquet file.
fn is_immutable(location: &Path) -> bool {
    location.as_ref().ends_with(".parquet")
}

impl BlobCache {
    pub fn new(inner: Arc<dyn ObjectStore>, max_bytes: u64) -> Self {
        Self {
            inner,
            max_bytes,
            // One block may take at most a quarter of the cache.
            max_object_bytes: max_bytes / 4,
            entries: Mutex::new(Entries::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub fn stats(&self) -> BlobCacheStats {
        BlobCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            bytes: self.entries.lock().bytes,
        }
    }

    fn lookup(&self, location: &Path) -> Option<(Bytes, ObjectMeta)> {
        let mut entries = self.entries.lock();
        entries.clock += 1;
        let now = entries.clock;
        let entry = entries.by_path.get_mut(location)?;
        entry.last_used = now;
        Some((entry.bytes.clone(), entry.meta.clone()))
    }

    fn insert(&self, location: &Path, bytes: Bytes, meta: ObjectMeta) {
        let size = bytes.len() as u64;
        if size > self.max_object_bytes {
            return;
        }
        let mut entries = self.entries.lock();
        entries.clock += 1;
        let now = entries.clock;
        if let Some(previous) = entries.by_path.insert(
            location.clone(),
            Entry {
                bytes,
                meta,
                last_used: now,
            },
        ) {
            entries.bytes -= previous.bytes.len() as u64;
        }
        entries.bytes += size;
        while entries.bytes > self.max_bytes {
            let Some(oldest) = entries
                .by_path
                .iter()
                .min_by_key(|(_, entry)| entry.last_used)
                .map(|(path, _)| path.clone())
            else {
                break;
            };
            if let Some(evicted) = entries.by_path.remove(&oldest) {
                entries.bytes -= evicted.bytes.len() as u64;
            }
        }
    }

    fn forget(&self, location: &Path) {
        let mut entries = self.entries.lock();
        if let Some(removed) = entries.by_path.remove(location) {
            entries.bytes -= removed.bytes.len() as u64;
        }
    }

    /// The whole object, from the cache or fetched into it; `None` when it
    /// is too large to cache.
    async fn whole(&self, location: &Path) -> Result<Option<(Bytes, ObjectMeta)>> {
        if let Some(found) = self.lookup(location) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(found));
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let head = self.inner.head(location).await?;
        if head.size > self.max_object_bytes {
            return Ok(None);
        }
        let fetched = self.inner.get_opts(location, GetOptions::default()).await?;
        let meta = fetched.meta.clone();
        let bytes = fetched.bytes().await?;
        self.insert(location, bytes.clone(), meta.clone());
        Ok(Some((bytes, meta)))
    }
}

fn plain(options: &GetOptions) -> bool {
    options.if_match.is_none()
        && options.if_none_match.is_none()
        && options.if_modified_since.is_none()
        && options.if_unmodified_since.is_none()
        && options.version.is_none()
}

impl fmt::Display for BlobCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobCache({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for BlobCache {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.forget(location);
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.forget(location);
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        if !is_immutable(location) || !plain(&options) {
            return self.inner.get_opts(location, options).await;
        }
        let Some((bytes, meta)) = self.whole(location).await? else {
            return self.inner.get_opts(location, options).await;
        };
        // Ranges are cut against the bytes held, so a store whose size
        // header disagrees with its body cannot make a slice panic.
        let size = bytes.len() as u64;
        let range = match &options.range {
            Some(range) => range
                .as_range(size)
                .map_err(|error| object_store::Error::Generic {
                    store: "BlobCache",
                    source: Box::new(error),
                })?,
            None => 0..size,
        };
        let payload = if options.head {
            Bytes::new()
        } else {
            // `as_range` keeps the range inside the object.
            bytes.slice(range.start as usize..range.end as usize)
        };
        let stream = futures::stream::once(async move { Ok(payload) });
        Ok(GetResult {
            payload: GetResultPayload::Stream(Box::pin(stream)),
            meta,
            range,
            attributes: Default::default(),
        })
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        if !is_immutable(location) {
            return self.inner.get_ranges(location, ranges).await;
        }
        let Some((bytes, _)) = self.whole(location).await? else {
            return self.inner.get_ranges(location, ranges).await;
        };
        let mut out = Vec::with_capacity(ranges.len());
        for range in ranges {
            if range.start > range.end || range.end > bytes.len() as u64 {
                // Let the store word the error as it would.
                return self.inner.get_ranges(location, ranges).await;
            }
            out.push(bytes.slice(range.start as usize..range.end as usize));
        }
        Ok(out)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        // Deleted blocks are never read again (their metas go first), so
        // their entries simply age out.
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        // S3's StartAfter: the store lists only what follows `offset`.
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.forget(to);
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counting_store::CountingStore;

    #[tokio::test]
    async fn serves_ranges_from_memory_and_stays_under_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let counting = Arc::new(CountingStore::new(crate::local_store(dir.path()).unwrap()));
        // 1000 bytes: four 240-byte blocks fit, a fifth evicts one.
        let cache = BlobCache::new(counting.clone(), 1000);
        let path = |name: &str| Path::from(format!("{name}.parquet"));
        for name in ["a", "b", "c", "d", "e"] {
            let body: Vec<u8> = (0..240u32).map(|index| index as u8).collect();
            cache.put(&path(name), body.into()).await.unwrap();
        }
        let first = cache.get_range(&path("a"), 10..20).await.unwrap();
        assert_eq!(first.as_ref(), &(10u8..20).collect::<Vec<_>>()[..]);
        counting.reset();
        let ranges = cache
            .get_ranges(&path("a"), &[0..3, 238..240])
            .await
            .unwrap();
        assert_eq!(ranges[0].as_ref(), &[0, 1, 2]);
        assert_eq!(ranges[1].as_ref(), &[238, 239]);
        let whole = cache.get(&path("a")).await.unwrap().bytes().await.unwrap();
        assert_eq!(whole.len(), 240);
        assert!(counting.reads().is_empty(), "served from memory");
        for name in ["b", "c", "d", "a", "e"] {
            cache.get_range(&path(name), 0..1).await.unwrap();
        }
        assert!(cache.stats().bytes <= 1000);
        counting.reset();
        for name in ["c", "d", "a", "e"] {
            cache.get_range(&path(name), 0..1).await.unwrap();
        }
        assert!(counting.reads().is_empty());
        cache.get_range(&path("b"), 0..1).await.unwrap();
        assert!(
            !counting.reads().is_empty(),
            "b, least recently used, was evicted"
        );
        // A range past the end is cut at the end, as S3 does; one that
        // starts past it is an error.
        assert_eq!(
            cache.get_range(&path("a"), 200..300).await.unwrap().len(),
            40
        );
        assert!(cache.get_range(&path("a"), 300..400).await.is_err());
    }
}

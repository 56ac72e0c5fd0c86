//! A bounded in-memory cache of immutable blocks in front of a remote
//! store.
//!
//! Blocks and derived files are written once under a fresh ULID and never
//! changed, so a cached copy never goes stale: no validation requests.
//! Queries read a block's footer, page index and column chunks in several
//! ranged GETs; on an object store each is a round trip, so the first read
//! of a block fetches it whole (up to `max_object_bytes`) and later reads
//! of any range are served from memory. The cache (`moka`) holds at most
//! `max_bytes`, weighed by the bytes held; the least recently used blocks
//! go first. Queries that miss the same block at once wait for one fetch.
//! Other objects (metas, leases, marks, listings, writes) pass straight
//! through.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use moka::future::Cache;
use moka::policy::EvictionPolicy;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

/// Hits and misses since start, for `/metrics`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BlobCacheStats {
    /// Reads served from memory, including those that waited for another
    /// query's fetch of the same block.
    pub hits: u64,
    /// Blocks fetched whole into the cache.
    pub misses: u64,
    /// Bytes held (eviction runs in the background, so this may stand a
    /// little over the bound between two maintenance runs).
    pub bytes: u64,
}

/// Why a block was not loaded into the cache: the caller reads the store
/// directly instead, which words any error as the store does.
#[derive(Debug)]
enum NotLoaded {
    TooLarge,
    Store,
}

pub struct BlobCache {
    inner: Arc<dyn ObjectStore>,
    max_object_bytes: u64,
    entries: Cache<Path, (Bytes, ObjectMeta)>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl fmt::Debug for BlobCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobCache")
            .field("inner", &self.inner)
            .field("max_object_bytes", &self.max_object_bytes)
            .field("bytes", &self.entries.weighted_size())
            .finish()
    }
}

/// Whether `location` names an immutable object: a Parquet file.
fn is_immutable(location: &Path) -> bool {
    location.as_ref().ends_with(".parquet")
}

impl BlobCache {
    pub fn new(inner: Arc<dyn ObjectStore>, max_bytes: u64) -> Self {
        let entries = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_: &Path, (bytes, _): &(Bytes, ObjectMeta)| {
                u32::try_from(bytes.len()).unwrap_or(u32::MAX)
            })
            .eviction_policy(EvictionPolicy::lru())
            .build();
        Self {
            inner,
            // One block may take at most a quarter of the cache (and no
            // more than a weight can say).
            max_object_bytes: (max_bytes / 4).min(u64::from(u32::MAX)),
            entries,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub fn stats(&self) -> BlobCacheStats {
        BlobCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            bytes: self.entries.weighted_size(),
        }
    }

    /// Applies pending evictions now (they otherwise run as the cache is
    /// used), so [`BlobCache::stats`] shows the bytes held exactly.
    pub async fn settle(&self) {
        self.entries.run_pending_tasks().await;
    }

    async fn forget(&self, location: &Path) {
        self.entries.invalidate(location).await;
    }

    /// Fetches `location` whole; refused past `max_object_bytes`.
    async fn load(&self, location: &Path) -> std::result::Result<(Bytes, ObjectMeta), NotLoaded> {
        let head = self
            .inner
            .head(location)
            .await
            .map_err(|_| NotLoaded::Store)?;
        if head.size > self.max_object_bytes {
            return Err(NotLoaded::TooLarge);
        }
        let fetched = self
            .inner
            .get_opts(location, GetOptions::default())
            .await
            .map_err(|_| NotLoaded::Store)?;
        let meta = fetched.meta.clone();
        let bytes = fetched.bytes().await.map_err(|_| NotLoaded::Store)?;
        if bytes.len() as u64 > self.max_object_bytes {
            return Err(NotLoaded::TooLarge);
        }
        Ok((bytes, meta))
    }

    /// The whole object, from the cache or fetched into it (one fetch
    /// however many callers miss it at once); `None` when it is too large
    /// to cache or the fetch failed, and the caller reads the store.
    async fn whole(&self, location: &Path) -> Option<(Bytes, ObjectMeta)> {
        let entry = self
            .entries
            .entry_by_ref(location)
            .or_try_insert_with(self.load(location))
            .await;
        match entry {
            Ok(entry) => {
                let counter = if entry.is_fresh() {
                    &self.misses
                } else {
                    &self.hits
                };
                counter.fetch_add(1, Ordering::Relaxed);
                Some(entry.into_value())
            }
            Err(reason) => {
                if matches!(*reason, NotLoaded::TooLarge) {
                    self.misses.fetch_add(1, Ordering::Relaxed);
                }
                None
            }
        }
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
        self.forget(location).await;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.forget(location).await;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        if !is_immutable(location) || !plain(&options) {
            return self.inner.get_opts(location, options).await;
        }
        let Some((bytes, meta)) = self.whole(location).await else {
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
        let Some((bytes, _)) = self.whole(location).await else {
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
        self.forget(to).await;
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
            cache.settle().await;
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

    #[tokio::test]
    async fn queries_missing_one_block_at_once_fetch_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let counting = Arc::new(CountingStore::new(crate::local_store(dir.path()).unwrap()));
        let cache = BlobCache::new(counting.clone(), 1 << 20);
        let path = Path::from("block.parquet");
        let body: Vec<u8> = (0..4096u32).map(|index| index as u8).collect();
        cache.put(&path, body.into()).await.unwrap();
        counting.reset();
        // Eight readers of the cold block, polled together: each reaches
        // the cache before any fetch has finished.
        let reads = (0..8u64).map(|reader| {
            let start = reader * 100;
            let cache = &cache;
            let path = &path;
            async move { cache.get_range(path, start..start + 10).await.unwrap() }
        });
        let answers = futures::future::join_all(reads).await;
        for (reader, answer) in answers.iter().enumerate() {
            let start = reader * 100;
            let expected: Vec<u8> = (start..start + 10).map(|index| index as u8).collect();
            assert_eq!(answer.as_ref(), &expected[..]);
        }
        // One head and one get of the whole block, not eight of each.
        assert_eq!(counting.reads().get(&path).copied(), Some(2));
        let stats = cache.stats();
        assert_eq!((stats.misses, stats.hits), (1, 7));
        // A block larger than a quarter of the cache is read from the
        // store each time, by range, and never held.
        let small = BlobCache::new(counting.clone(), 4096);
        counting.reset();
        assert_eq!(
            small.get_range(&path, 0..4).await.unwrap().as_ref(),
            &[0, 1, 2, 3]
        );
        small.settle().await;
        assert_eq!(small.stats().bytes, 0);
    }
}

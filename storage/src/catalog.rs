//! The block catalog: every visible block's meta, in memory, span and
//! metric blocks alike (a meta's path says its [`Signal`]).
//!
//! Loaded at start-up by listing `tenants/` in the store. A Parquet file
//! without its meta file is the leftover of a flush that crashed between
//! its two writes: it was never visible, so it is deleted. The metas carry
//! each block's time range and trace-id filter, which is the trace-id index:
//! a lookup by trace id alone tests the filters in memory and opens only the
//! blocks that may hold the trace.
//!
//! A flushed block whose `wal_through` is above the WAL's flushed mark
//! belongs to a flush that crashed before committing: it is deleted, and
//! the WAL replay stores its spans again (see `wal`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use parking_lot::RwLock;

use crate::block::{BlockMeta, is_block_path, is_meta_path};
use crate::{BlockRef, Result, Signal, SpanFilter};

/// What loading found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CatalogLoadStats {
    pub blocks: usize,
    pub orphans_removed: usize,
    /// Blocks a compaction had replaced but not yet deleted.
    pub replaced_removed: usize,
    /// Blocks of a flush that crashed before the WAL recorded it.
    pub uncommitted_removed: usize,
    pub unreadable_metas: usize,
}

/// What may be deleted while loading the catalog.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Cleanup {
    /// The only process on the store: replaced blocks, orphans and blocks
    /// of uncommitted flushes (above the WAL's flushed mark) go.
    Exclusive { wal_flushed: u64 },
    /// A reader (querier, compactor): nothing is deleted while loading.
    None,
}

/// The blocks a listing holds, before anything is deleted.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    /// Blocks no compacted block replaces.
    pub visible: Vec<Arc<BlockMeta>>,
    /// Blocks a compacted block replaces, with that block's creation time
    /// (unix ms).
    pub replaced: Vec<(Arc<BlockMeta>, i64)>,
    /// Parquet files without a meta file.
    pub orphans: Vec<ObjectMeta>,
    pub unreadable_metas: usize,
}

#[derive(Debug, Default)]
pub(crate) struct Catalog {
    by_tenant: RwLock<HashMap<String, Vec<Arc<BlockMeta>>>>,
}

impl Catalog {
    /// Every object under `tenants/`, the listing [`Catalog::load`] and the
    /// derived catalog start from.
    pub(crate) async fn list_tenants(store: &Arc<dyn ObjectStore>) -> Result<Vec<ObjectMeta>> {
        Ok(store
            .list(Some(&Path::from("tenants")))
            .try_collect()
            .await?)
    }

    /// Reads the metas among `objects` (a listing of `tenants/` or of one
    /// window's prefix), reusing those in `known` by path.
    pub(crate) async fn scan(
        store: &Arc<dyn ObjectStore>,
        objects: &[ObjectMeta],
        known: &HashMap<String, Arc<BlockMeta>>,
    ) -> Result<Scan> {
        let mut meta_paths = HashSet::new();
        let mut blocks: HashMap<String, &ObjectMeta> = HashMap::new();
        for object in objects {
            let location = object.location.as_ref();
            if is_meta_path(location) {
                meta_paths.insert(location.to_string());
            } else if is_block_path(location) {
                blocks.insert(location.to_string(), object);
            }
        }
        let mut scan = Scan::default();
        let mut metas = Vec::with_capacity(meta_paths.len());
        for meta_path in &meta_paths {
            let parquet_path = meta_path
                .strip_suffix(".meta.json")
                .map(|stem| format!("{stem}.parquet"));
            if let Some(meta) = parquet_path.as_ref().and_then(|path| known.get(path)) {
                metas.push(Arc::clone(meta));
                continue;
            }
            let bytes = match store.get(&Path::from(meta_path.as_str())).await {
                Ok(found) => found.bytes().await?,
                // Deleted (by a compactor) since the listing.
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(error) => return Err(error.into()),
            };
            match BlockMeta::decode(&bytes) {
                Ok(meta) if blocks.contains_key(&meta.path) => metas.push(Arc::new(meta)),
                Ok(meta) => {
                    tracing::warn!(meta = %meta_path, block = %meta.path, "block meta without its parquet file, ignored");
                    scan.unreadable_metas += 1;
                }
                Err(error) => {
                    tracing::warn!(meta = %meta_path, %error, "unreadable block meta, ignored");
                    scan.unreadable_metas += 1;
                }
            }
        }
        // A compacted block's meta hides its sources, even when the
        // compaction crashed before deleting them.
        let replaced_by: HashMap<&str, i64> = metas
            .iter()
            .flat_map(|meta| {
                meta.replaces
                    .iter()
                    .map(|path| (path.as_str(), meta.created_unix_ms))
            })
            .collect();
        let mut referenced = HashSet::new();
        for meta in &metas {
            referenced.insert(meta.path.clone());
            match replaced_by.get(meta.path.as_str()) {
                Some(replaced_at_ms) => scan.replaced.push((Arc::clone(meta), *replaced_at_ms)),
                None => scan.visible.push(Arc::clone(meta)),
            }
        }
        for (path, object) in blocks {
            // Only blocks whose meta file does not exist at all: a block
            // whose meta is unreadable is kept for a person to look at.
            let Some(meta_path) = BlockMeta::meta_path_for(&path) else {
                continue;
            };
            if !referenced.contains(&path) && !meta_paths.contains(&meta_path) {
                scan.orphans.push(object.clone());
            }
        }
        Ok(scan)
    }

    /// Loads every meta file among `objects` (see [`Catalog::list_tenants`])
    /// and cleans up per `cleanup`.
    pub(crate) async fn load(
        store: &Arc<dyn ObjectStore>,
        objects: &[ObjectMeta],
        cleanup: Cleanup,
    ) -> Result<(Self, CatalogLoadStats)> {
        let scan = Self::scan(store, objects, &HashMap::new()).await?;
        let catalog = Self::default();
        let mut stats = CatalogLoadStats {
            unreadable_metas: scan.unreadable_metas,
            ..CatalogLoadStats::default()
        };
        let exclusive = matches!(cleanup, Cleanup::Exclusive { .. });
        for (meta, _) in &scan.replaced {
            if exclusive {
                tracing::info!(block = %meta.path, "removing block replaced by compaction");
                crate::compact::delete_block(store, &meta.path).await?;
                stats.replaced_removed += 1;
            }
        }
        for meta in scan.visible {
            let uncommitted = match cleanup {
                Cleanup::Exclusive { wal_flushed } => meta
                    .wal_through
                    .is_some_and(|through| through > wal_flushed),
                Cleanup::None => false,
            };
            if uncommitted {
                tracing::info!(block = %meta.path, "removing block of an uncommitted flush (its spans are replayed)");
                crate::compact::delete_block(store, &meta.path).await?;
                stats.uncommitted_removed += 1;
                continue;
            }
            catalog.insert(meta);
            stats.blocks += 1;
        }
        if exclusive {
            for orphan in scan.orphans {
                tracing::info!(block = %orphan.location, "removing block without meta (flush interrupted)");
                store.delete(&orphan.location).await?;
                stats.orphans_removed += 1;
            }
        }
        Ok((catalog, stats))
    }

    /// Whether the block at `path` (Parquet) is visible.
    pub(crate) fn contains(&self, path: &str) -> bool {
        self.by_tenant
            .read()
            .values()
            .any(|blocks| blocks.iter().any(|meta| meta.path == path))
    }

    /// Every visible block by path, for [`Catalog::scan`]'s `known`.
    pub(crate) fn by_path(&self) -> HashMap<String, Arc<BlockMeta>> {
        self.all()
            .into_iter()
            .map(|meta| (meta.path.clone(), meta))
            .collect()
    }

    /// Makes `visible` the whole catalog (a refresh from the store). The
    /// caller holds the engine's view lock.
    pub(crate) fn set_all(&self, visible: Vec<Arc<BlockMeta>>) {
        let mut by_tenant: HashMap<String, Vec<Arc<BlockMeta>>> = HashMap::new();
        for meta in visible {
            by_tenant.entry(meta.tenant.clone()).or_default().push(meta);
        }
        *self.by_tenant.write() = by_tenant;
    }

    /// Adds blocks not yet present and drops `removed` ones (a reader's
    /// changes from the change log). The caller holds the view lock.
    pub(crate) fn apply(&self, added: Vec<Arc<BlockMeta>>, removed: &HashSet<String>) {
        let mut by_tenant = self.by_tenant.write();
        if !removed.is_empty() {
            for blocks in by_tenant.values_mut() {
                blocks.retain(|meta| !removed.contains(&meta.path));
            }
        }
        for meta in added {
            let blocks = by_tenant.entry(meta.tenant.clone()).or_default();
            if !blocks.iter().any(|known| known.path == meta.path) {
                blocks.push(meta);
            }
        }
    }

    /// Makes `visible` the blocks whose path starts with `prefix` (one
    /// window's directory, rescanned). The caller holds the view lock.
    pub(crate) fn set_prefix(&self, tenant: &str, prefix: &str, visible: Vec<Arc<BlockMeta>>) {
        let mut by_tenant = self.by_tenant.write();
        let blocks = by_tenant.entry(tenant.to_string()).or_default();
        blocks.retain(|meta| !meta.path.starts_with(prefix));
        blocks.extend(visible);
    }

    fn insert(&self, meta: Arc<BlockMeta>) {
        self.by_tenant
            .write()
            .entry(meta.tenant.clone())
            .or_default()
            .push(meta);
    }

    pub(crate) fn add(&self, meta: BlockMeta) {
        self.by_tenant
            .write()
            .entry(meta.tenant.clone())
            .or_default()
            .push(Arc::new(meta));
    }

    /// Drops the blocks at `paths` (expired by retention). The caller holds
    /// the engine's view lock.
    pub(crate) fn remove(&self, paths: &HashSet<String>) {
        for blocks in self.by_tenant.write().values_mut() {
            blocks.retain(|meta| !paths.contains(&meta.path));
        }
    }

    /// Swaps compaction's output for its sources. The caller holds the
    /// engine's view lock, so no snapshot sees both or neither.
    pub(crate) fn replace(&self, merged: BlockMeta) {
        let replaced: HashSet<&str> = merged.replaces.iter().map(String::as_str).collect();
        let mut by_tenant = self.by_tenant.write();
        let blocks = by_tenant.entry(merged.tenant.clone()).or_default();
        blocks.retain(|meta| !replaced.contains(meta.path.as_str()));
        drop(replaced);
        blocks.push(Arc::new(merged));
    }

    /// Blocks of `tenant` and `signal` that may hold rows matching
    /// `filter`, and how many blocks of `signal` the tenant has in all.
    pub(crate) fn find(
        &self,
        tenant: &str,
        signal: Signal,
        filter: &SpanFilter,
    ) -> (Vec<BlockRef>, usize) {
        let by_tenant = self.by_tenant.read();
        let Some(blocks) = by_tenant.get(tenant) else {
            return (Vec::new(), 0);
        };
        let of_signal: Vec<&Arc<BlockMeta>> = blocks
            .iter()
            .filter(|meta| meta.signal() == Some(signal))
            .collect();
        let total = of_signal.len();
        let matching = of_signal
            .into_iter()
            .filter(|meta| match filter.time_range_ns {
                Some((from, to)) => meta.overlaps(from, to),
                None => true,
            })
            .filter(|meta| filter.may_hold_trace(|trace_id| meta.may_contain(trace_id)))
            .map(|meta| BlockRef {
                path: Path::from(meta.path.as_str()),
                size_bytes: meta.size_bytes,
                span_count: meta.span_count,
            })
            .collect();
        (matching, total)
    }

    /// Every block's meta, for stats and maintenance.
    pub(crate) fn all(&self) -> Vec<Arc<BlockMeta>> {
        self.by_tenant.read().values().flatten().cloned().collect()
    }
}

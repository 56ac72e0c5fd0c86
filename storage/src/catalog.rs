//! The block catalog: every visible block's meta, in memory.
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
//! the WAL replay stores its spans again (see [`crate::wal`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use parking_lot::RwLock;

use crate::block::{BlockMeta, is_block_path, is_meta_path};
use crate::{BlockRef, Result, SpanFilter};

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

#[derive(Debug, Default)]
pub struct Catalog {
    by_tenant: RwLock<HashMap<String, Vec<Arc<BlockMeta>>>>,
}

impl Catalog {
    /// Every object under `tenants/`, the listing [`Catalog::load`] and the
    /// derived catalog start from.
    pub async fn list_tenants(store: &Arc<dyn ObjectStore>) -> Result<Vec<ObjectMeta>> {
        Ok(store
            .list(Some(&Path::from("tenants")))
            .try_collect()
            .await?)
    }

    /// Loads every meta file among `objects` (see [`Catalog::list_tenants`]);
    /// `wal_flushed` is the WAL's flushed mark ([`crate::wal::read_flushed`]).
    pub async fn load(
        store: &Arc<dyn ObjectStore>,
        objects: &[ObjectMeta],
        wal_flushed: u64,
    ) -> Result<(Self, CatalogLoadStats)> {
        let mut meta_paths = HashSet::new();
        let mut block_paths = HashSet::new();
        for object in objects {
            let location = object.location.as_ref();
            if is_meta_path(location) {
                meta_paths.insert(location.to_string());
            } else if is_block_path(location) {
                block_paths.insert(location.to_string());
            }
        }
        let catalog = Self::default();
        let mut stats = CatalogLoadStats::default();
        let mut metas = Vec::with_capacity(meta_paths.len());
        for meta_path in &meta_paths {
            let bytes = store
                .get(&Path::from(meta_path.as_str()))
                .await?
                .bytes()
                .await?;
            match BlockMeta::decode(&bytes) {
                Ok(meta) if block_paths.contains(&meta.path) => metas.push(meta),
                Ok(meta) => {
                    tracing::warn!(meta = %meta_path, block = %meta.path, "block meta without its parquet file, ignored");
                    stats.unreadable_metas += 1;
                }
                Err(error) => {
                    tracing::warn!(meta = %meta_path, %error, "unreadable block meta, ignored");
                    stats.unreadable_metas += 1;
                }
            }
        }
        // A compacted block's meta hides its sources, even when the
        // compaction crashed before deleting them.
        let replaced: HashSet<String> = metas
            .iter()
            .flat_map(|meta| meta.replaces.iter().cloned())
            .collect();
        let mut referenced = HashSet::new();
        for meta in metas {
            if replaced.contains(&meta.path) {
                tracing::info!(block = %meta.path, "removing block replaced by compaction");
                crate::compact::delete_block(store, &meta.path).await?;
                stats.replaced_removed += 1;
                continue;
            }
            if meta
                .wal_through
                .is_some_and(|through| through > wal_flushed)
            {
                tracing::info!(block = %meta.path, "removing block of an uncommitted flush (its spans are replayed)");
                crate::compact::delete_block(store, &meta.path).await?;
                stats.uncommitted_removed += 1;
                continue;
            }
            referenced.insert(meta.path.clone());
            catalog.add(meta);
            stats.blocks += 1;
        }
        for orphan in block_paths.difference(&referenced) {
            // Only orphans whose meta file does not exist at all: a block
            // whose meta is unreadable is kept for a person to look at.
            let Some(meta_path) = BlockMeta::meta_path_for(orphan) else {
                continue;
            };
            // (A replaced block with its meta was deleted above.)
            if meta_paths.contains(&meta_path) {
                continue;
            }
            tracing::info!(block = %orphan, "removing block without meta (flush interrupted)");
            store.delete(&Path::from(orphan.as_str())).await?;
            stats.orphans_removed += 1;
        }
        Ok((catalog, stats))
    }

    pub fn add(&self, meta: BlockMeta) {
        self.by_tenant
            .write()
            .entry(meta.tenant.clone())
            .or_default()
            .push(Arc::new(meta));
    }

    /// Drops the blocks at `paths` (expired by retention). The caller holds
    /// the engine's view lock.
    pub fn remove(&self, paths: &HashSet<String>) {
        for blocks in self.by_tenant.write().values_mut() {
            blocks.retain(|meta| !paths.contains(&meta.path));
        }
    }

    /// Swaps compaction's output for its sources. The caller holds the
    /// engine's view lock, so no snapshot sees both or neither.
    pub fn replace(&self, merged: BlockMeta) {
        let replaced: HashSet<&str> = merged.replaces.iter().map(String::as_str).collect();
        let mut by_tenant = self.by_tenant.write();
        let blocks = by_tenant.entry(merged.tenant.clone()).or_default();
        blocks.retain(|meta| !replaced.contains(meta.path.as_str()));
        drop(replaced);
        blocks.push(Arc::new(merged));
    }

    /// Blocks of `tenant` that may hold spans matching `filter`, and how
    /// many blocks the tenant has in all.
    pub fn find(&self, tenant: &str, filter: &SpanFilter) -> (Vec<BlockRef>, usize) {
        let by_tenant = self.by_tenant.read();
        let Some(blocks) = by_tenant.get(tenant) else {
            return (Vec::new(), 0);
        };
        let matching = blocks
            .iter()
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
        (matching, blocks.len())
    }

    /// Every block's meta, for stats and maintenance.
    pub fn all(&self) -> Vec<Arc<BlockMeta>> {
        self.by_tenant.read().values().flatten().cloned().collect()
    }
}

//! Re-reading what other nodes changed on a shared store: the catalog's
//! change log (`changes`), or a full listing, on a timer (`run_refresher`).

use super::*;

impl Storage {
    /// Re-reads the block and derived catalogs from the store (a reader on
    /// a shared store): new blocks appear, merged and deleted ones go. Metas
    /// already known are not fetched again. With `clean`, also deletes what
    /// the compactor owns: sources replaced more than `delete_delay` ago,
    /// and Parquet files without a meta an hour after they were written
    /// (a flush writes its meta seconds after its block).
    pub async fn refresh(&self, clean: bool) -> Result<RefreshStats> {
        let inner = &self.inner;
        let full_due = clean
            || inner
                .log_position
                .lock()
                .last_full_listing
                .is_none_or(|at| at.elapsed() >= inner.config.full_listing_interval);
        if !full_due {
            return self.refresh_from_changes().await;
        }
        let listing_started = std::time::Instant::now();
        let watermark = DerivedCatalog::read_watermark(&inner.store).await?;
        let objects = Catalog::list_tenants(&inner.store).await?;
        let scan = Catalog::scan(&inner.store, &objects, &inner.catalog.by_path()).await?;
        let derived = DerivedCatalog::load(&inner.store, &objects).await?;
        let mut stats = RefreshStats {
            full_listing: true,
            blocks: scan.visible.len(),
            ..RefreshStats::default()
        };
        {
            let _view = inner.view.write();
            inner.catalog.set_all(scan.visible);
            inner.derived.replace_with(derived, watermark);
        }
        inner.log_position.lock().last_full_listing = Some(listing_started);
        if !clean {
            return Ok(stats);
        }
        let keep_ms = u64::try_from(crate::changes::KEEP.as_millis()).unwrap_or(u64::MAX);
        let now_unix_ms = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
        crate::changes::prune(&inner.store, now_unix_ms.saturating_sub(keep_ms)).await?;
        let now_ms = chrono::Utc::now().timestamp_millis();
        let delay_ms =
            i64::try_from(inner.config.compaction_delete_delay.as_millis()).unwrap_or(i64::MAX);
        for (meta, replaced_at_ms) in &scan.replaced {
            if now_ms.saturating_sub(*replaced_at_ms) >= delay_ms {
                compact::delete_block(&inner.store, &meta.path).await?;
                stats.replaced_removed += 1;
            }
        }
        let orphan_age = chrono::Duration::hours(1);
        for orphan in &scan.orphans {
            if chrono::Utc::now() - orphan.last_modified >= orphan_age {
                tracing::info!(block = %orphan.location, "removing block without meta (flush interrupted)");
                inner.store.delete(&orphan.location).await?;
                stats.orphans_removed += 1;
            }
        }
        Ok(stats)
    }

    /// Refreshes every `every` until `shutdown` resolves (see
    /// [`Storage::refresh`]); failures are logged and retried next time.
    pub async fn run_refresher(
        &self,
        every: Duration,
        clean: bool,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        run_every(tokio::time::interval(every), shutdown, || async {
            match self.refresh(clean).await {
                Ok(stats) => tracing::debug!(?stats, "catalog refreshed"),
                Err(error) => tracing::warn!(%error, "catalog refresh failed; retrying"),
            }
        })
        .await;
    }

    /// Writes `change` to the change log when other processes read this
    /// store; a failure is logged (readers catch up at their next full
    /// listing).
    pub(super) async fn record_change(&self, change: crate::changes::Change) {
        let inner = &self.inner;
        let writer = match (&inner.config.sharing, &inner.wal) {
            (Sharing::Shared { node_id }, _) => node_id.as_str(),
            (Sharing::Exclusive, None) => "reader",
            (Sharing::Exclusive, Some(_)) => return,
        };
        if let Err(error) = crate::changes::record(&inner.store, writer, &change).await {
            tracing::warn!(%error, "could not record a catalog change; readers see it at their next full listing");
        }
    }

    /// A reader's refresh between full listings: applies the change log's
    /// records since `now - OVERLAP` not applied yet (`changes`).
    pub(super) async fn refresh_from_changes(&self) -> Result<RefreshStats> {
        use crate::changes::{KEEP, OVERLAP, older_than, read_since};
        let inner = &self.inner;
        // Read first: every derived file it covers was recorded before it.
        let watermark = DerivedCatalog::read_watermark(&inner.store).await?;
        let now_unix_ms = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
        let overlap_ms = u64::try_from(OVERLAP.as_millis()).unwrap_or(u64::MAX);
        let since = now_unix_ms.saturating_sub(overlap_ms);
        let seen = inner.log_position.lock().seen.clone();
        let changes = read_since(&inner.store, since, &seen).await?;
        let mut removed = std::collections::HashSet::new();
        let mut removed_derived = std::collections::HashSet::new();
        let mut added_derived = Vec::new();
        for (_, change) in &changes {
            removed.extend(change.removed_blocks.iter().cloned());
            removed_derived.extend(change.removed_derived.iter().cloned());
            added_derived.extend(change.added_derived.iter().cloned());
        }
        let tombstoned = {
            let mut position = inner.log_position.lock();
            let now = std::time::Instant::now();
            for path in &removed {
                position.removed.insert(path.clone(), now);
            }
            position.removed.retain(|_, at| at.elapsed() < KEEP);
            position
                .removed
                .keys()
                .cloned()
                .collect::<std::collections::HashSet<_>>()
        };
        let mut added = Vec::new();
        for meta_path in changes.iter().flat_map(|(_, change)| &change.added_blocks) {
            let Some(parquet_path) = meta_path
                .strip_suffix(".meta.json")
                .map(|stem| format!("{stem}.parquet"))
            else {
                continue;
            };
            // A few records per refresh: a scan each, not a map of every block.
            if tombstoned.contains(&parquet_path) || inner.catalog.contains(&parquet_path) {
                continue;
            }
            let bytes = match inner
                .store
                .get(&object_store::path::Path::from(meta_path.as_str()))
                .await
            {
                Ok(found) => found.bytes().await?,
                // Merged away and deleted since: a removal record says so.
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(error) => return Err(error.into()),
            };
            match crate::block::BlockMeta::decode(&bytes) {
                Ok(meta) => {
                    removed.extend(meta.replaces.iter().cloned());
                    added.push(Arc::new(meta));
                }
                Err(error) => {
                    tracing::warn!(meta = %meta_path, %error, "unreadable block meta, ignored")
                }
            }
        }
        {
            let _view = inner.view.write();
            inner.catalog.apply(added, &removed);
            inner
                .derived
                .apply(&added_derived, &removed_derived, watermark);
        }
        let mut position = inner.log_position.lock();
        position
            .seen
            .extend(changes.into_iter().map(|(key, _)| key));
        position.seen.retain(|key| !older_than(key, since));
        Ok(RefreshStats {
            full_listing: false,
            blocks: inner.catalog.all().len(),
            ..RefreshStats::default()
        })
    }
}

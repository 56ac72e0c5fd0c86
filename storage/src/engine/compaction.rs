//! Compaction and retention: merging a window's small blocks (one
//! compactor per window, by lease or static shard), expiring blocks past
//! their tenant's retention, deleting what merges replaced after a delay.

use super::*;

impl Storage {
    /// Applies retention, merges small blocks (`compact`) and
    /// deletes the sources of earlier merges whose delay has passed.
    ///
    /// Retention: a block of a tenant with a period goes once all its spans
    /// ended before `now - period`, a derived file once its hour did. Both
    /// leave the catalogs at once and are deleted after `delete_delay`, as
    /// compacted sources are, so queries already reading them finish.
    pub async fn compact(&self) -> Result<CompactionStats> {
        self.compact_with(&Coordination::Alone).await
    }

    /// [`Storage::compact`] on a store other processes share: each window
    /// (tenant + hour) is merged only once `coordination` claims it, after
    /// rescanning the window's blocks from the store (another compactor may
    /// have merged it since this catalog was read), and only blocks whose
    /// collector has published its flush as committed
    /// (`cluster`).
    pub async fn compact_with(&self, coordination: &Coordination) -> Result<CompactionStats> {
        let inner = &self.inner;
        let _compacting = inner.compaction_lock.lock().await;
        let expired = self.expire(chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX));
        let mut stats = CompactionStats {
            expired_blocks: expired.removed_blocks.len(),
            ..CompactionStats::default()
        };
        self.record_change(expired).await;
        let shared = !matches!(coordination, Coordination::Alone)
            || inner.config.sharing != Sharing::Exclusive;
        let marks = if shared {
            crate::cluster::read_flushed_marks(&inner.store).await?
        } else {
            Default::default()
        };
        let committed = |meta: &Arc<crate::block::BlockMeta>| match (&meta.writer, meta.wal_through)
        {
            (Some(writer), Some(through)) => marks.get(writer).is_some_and(|mark| *mark >= through),
            _ => true,
        };
        let eligible: Vec<_> = inner.catalog.all().into_iter().filter(committed).collect();
        let max_spans = inner.config.compaction_max_block_spans;
        let mut windows: Vec<(String, String)> = compact::plan(&eligible, max_spans)
            .iter()
            .filter_map(|group| {
                let first = group.first()?;
                let directory = first.path.rsplit_once('/')?.0;
                Some((first.tenant.clone(), format!("{directory}/")))
            })
            .collect();
        windows.dedup();
        // Metas this process already holds are not fetched again when a
        // window is rescanned.
        let known = shared.then(|| inner.catalog.by_path());
        // A lease's holder starts a merge only with half its TTL left, far
        // more than one merge of `max_block_spans` takes.
        let margin = coordination.ttl().map_or(Duration::ZERO, |ttl| ttl / 2);
        for (tenant, directory) in windows {
            let window = format!("compaction/{}", directory.trim_end_matches('/'));
            let Some(claim) = coordination.claim(&window).await? else {
                continue;
            };
            let outcome = match self
                .window_blocks(&tenant, &directory, known.as_ref())
                .await
            {
                Ok(blocks) => {
                    let eligible = blocks.into_iter().filter(committed).collect();
                    self.merge_window(&directory, eligible, &claim, margin, &mut stats)
                        .await
                }
                Err(error) => Err(error),
            };
            if let Err(error) = coordination.release(claim).await {
                tracing::warn!(%error, window, "could not release the compaction lease; it expires");
            }
            if let Err(error) = outcome {
                inner
                    .counters
                    .compaction_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(%error, window, "compaction failed; its blocks stay as they are");
                return Err(error);
            }
        }
        self.delete_replaced().await;
        if stats.written_blocks > 0 {
            tracing::debug!(?stats, "compacted blocks");
        }
        Ok(stats)
    }

    /// The blocks of one window (`directory`): rescanned from the store
    /// when other processes share it (`known` holds the metas to reuse),
    /// from the catalog otherwise.
    pub(super) async fn window_blocks(
        &self,
        tenant: &str,
        directory: &str,
        known: Option<&std::collections::HashMap<String, Arc<crate::block::BlockMeta>>>,
    ) -> Result<Vec<Arc<crate::block::BlockMeta>>> {
        let inner = &self.inner;
        let Some(known) = known else {
            return Ok(inner
                .catalog
                .all()
                .into_iter()
                .filter(|meta| meta.path.starts_with(directory))
                .collect());
        };
        let objects: Vec<_> = futures::TryStreamExt::try_collect(
            inner
                .store
                .list(Some(&object_store::path::Path::from(directory))),
        )
        .await?;
        let scan = Catalog::scan(&inner.store, &objects, known).await?;
        let _view = inner.view.write();
        inner
            .catalog
            .set_prefix(tenant, directory, scan.visible.clone());
        Ok(scan.visible)
    }

    /// Merges the small blocks among `eligible`, one window's, while
    /// `claim` holds with `margin` to spare.
    pub(super) async fn merge_window(
        &self,
        directory: &str,
        eligible: Vec<Arc<crate::block::BlockMeta>>,
        claim: &crate::cluster::Claim,
        margin: Duration,
        stats: &mut CompactionStats,
    ) -> Result<()> {
        let inner = &self.inner;
        for group in compact::plan(&eligible, inner.config.compaction_max_block_spans) {
            if !claim.holds_for(margin) {
                tracing::warn!(
                    window = directory,
                    "compaction lease running out; the rest of the window waits for the next pass"
                );
                break;
            }
            let merged = compact::merge(&inner.store, &group, inner.config.row_group_rows).await?;
            stats.source_blocks += group.len();
            stats.written_blocks += 1;
            stats.spans += merged.span_count;
            stats.bytes_before += group.iter().map(|block| block.size_bytes).sum::<u64>();
            stats.bytes_after += merged.size_bytes;
            let due = std::time::Instant::now() + inner.config.compaction_delete_delay;
            let change = crate::changes::Change {
                added_blocks: crate::block::BlockMeta::meta_path_for(&merged.path)
                    .into_iter()
                    .collect(),
                removed_blocks: merged.replaces.clone(),
                ..Default::default()
            };
            {
                let _view = inner.view.write();
                inner.catalog.replace(merged);
            }
            self.record_change(change).await;
            inner
                .replaced
                .lock()
                .extend(group.iter().map(|block| (due, block.path.clone())));
            inner
                .counters
                .compacted_blocks
                .fetch_add(group.len() as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Drops what retention says is past, as of `now_ns`; returns the span
    /// blocks dropped.
    pub(super) fn expire(&self, now_ns: i64) -> crate::changes::Change {
        let inner = &self.inner;
        let retention = &inner.config.retention;
        let cutoff_of = |tenant: &str| {
            retention.period(tenant).map(|period| {
                now_ns.saturating_sub(i64::try_from(period.as_nanos()).unwrap_or(i64::MAX))
            })
        };
        let expired: std::collections::HashSet<String> = inner
            .catalog
            .all()
            .iter()
            .filter(|meta| cutoff_of(&meta.tenant).is_some_and(|cutoff| meta.max_end_ns < cutoff))
            .map(|meta| meta.path.clone())
            .collect();
        let derived = {
            let _view = inner.view.write();
            inner.catalog.remove(&expired);
            inner.derived.expire(cutoff_of)
        };
        if expired.is_empty() && derived.is_empty() {
            return crate::changes::Change::default();
        }
        tracing::info!(
            blocks = expired.len(),
            derived_files = derived.len(),
            "retention: expired data"
        );
        let due = std::time::Instant::now() + inner.config.compaction_delete_delay;
        let mut replaced = inner.replaced.lock();
        replaced.extend(expired.iter().map(|path| (due, path.clone())));
        replaced.extend(derived.iter().map(|path| (due, path.to_string())));
        inner
            .counters
            .expired_blocks
            .fetch_add(expired.len() as u64, Ordering::Relaxed);
        crate::changes::Change {
            removed_blocks: expired.into_iter().collect(),
            removed_derived: derived.iter().map(ToString::to_string).collect(),
            ..Default::default()
        }
    }

    /// Deletes the replaced blocks whose delay has passed; a failed delete
    /// is retried on the next pass (and a restart deletes them anyway).
    pub(super) async fn delete_replaced(&self) {
        let now = std::time::Instant::now();
        let due: Vec<String> = {
            let mut replaced = self.inner.replaced.lock();
            let (due, later) = replaced.drain(..).partition(|(at, _)| *at <= now);
            *replaced = later;
            due.into_iter().map(|(_, path)| path).collect()
        };
        for path in due {
            if let Err(error) = compact::delete_block(&self.inner.store, &path).await {
                tracing::warn!(%error, block = %path, "could not delete a compacted block; retrying later");
                self.inner.replaced.lock().push((now, path));
            }
        }
    }

    /// Compacts every `config.compaction_interval` (never when zero), the
    /// first time one interval after start, until `shutdown` resolves.
    pub async fn run_compactor(&self, shutdown: impl std::future::Future<Output = ()>) {
        self.run_compactor_with(Coordination::Alone, shutdown).await;
    }

    /// [`Storage::run_compactor`] claiming each window per `coordination`.
    pub async fn run_compactor_with(
        &self,
        coordination: Coordination,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let every = self.inner.config.compaction_interval;
        if every.is_zero() {
            return;
        }
        let first = tokio::time::Instant::now() + every;
        run_every(tokio::time::interval_at(first, every), shutdown, || async {
            // Errors are logged and counted; the next tick retries.
            let _ = self.compact_with(&coordination).await;
        })
        .await;
    }
}

//! Flushing: sealing the heads and rotating the WAL under the append gate,
//! writing blocks, committing them to the catalog under the view lock, then
//! dropping the WAL segments (the ordering rules of the parent module).

use super::*;

impl Storage {
    /// Writes everything in the head to blocks. A failure at any step
    /// (sealing the WAL segment, writing blocks, the commit) is logged and
    /// counted; the spans stay in the head and the WAL for the next try.
    pub async fn flush(&self) -> Result<FlushStats> {
        let flushed = self.flush_once().await;
        if let Err(error) = &flushed {
            self.inner
                .counters
                .flush_failures
                .fetch_add(1, Ordering::Relaxed);
            tracing::error!(%error, "flush failed; spans stay in the head and the wal");
        }
        flushed
    }

    pub(super) async fn flush_once(&self) -> Result<FlushStats> {
        let inner = &self.inner;
        let _flushing = inner.flush_lock.lock().await;
        let started = std::time::Instant::now();
        let Some(wal) = &inner.wal else {
            return Ok(FlushStats::default());
        };
        let (sealed_segment, sealed, sealed_metrics) = {
            let _exclusive = inner.append_gate.write().await;
            let segment = wal.rotate().await?;
            (segment, inner.head.seal(), inner.metrics_head.seal())
        };
        if sealed.is_empty() && sealed_metrics.is_empty() {
            wal.remove_through(sealed_segment).await?;
            return Ok(FlushStats::default());
        }
        let mut written = Vec::new();
        let outcome = async {
            let mut stats = self
                .write_blocks(Signal::Spans, &sealed, sealed_segment, &mut written)
                .await?;
            let metric_stats = self
                .write_blocks(
                    Signal::Metrics,
                    &sealed_metrics,
                    sealed_segment,
                    &mut written,
                )
                .await?;
            stats.blocks += metric_stats.blocks;
            stats.points += metric_stats.points;
            stats.bytes += metric_stats.bytes;
            // The commit: once the WAL records the sealed segments as
            // flushed, a restart keeps these blocks and skips those
            // segments; before, it drops the blocks and replays.
            wal.remove_through(sealed_segment).await?;
            Ok(stats)
        }
        .await;
        let stats = match outcome {
            Ok(stats) => stats,
            Err(error) => {
                // A retry writes new blocks: these must not stay beside
                // them, to be committed by a later mark.
                for meta in &written {
                    if let Err(delete_error) =
                        crate::compact::delete_block(&inner.store, &meta.path).await
                    {
                        tracing::error!(block = %meta.path, %delete_error, "could not remove a block of a failed flush");
                    }
                }
                return Err(error);
            }
        };
        let added_metas: Vec<String> = written
            .iter()
            .filter_map(|meta| crate::block::BlockMeta::meta_path_for(&meta.path))
            .collect();
        let shared = inner.config.sharing != Sharing::Exclusive;
        if shared {
            let wal_dir = inner.config.data_dir.join("wal");
            let cleared =
                tokio::task::spawn_blocking(move || crate::wal::pending::clear(&wal_dir)).await;
            if !matches!(cleared, Ok(Ok(()))) {
                // Harmless: the entries are at or below the flushed mark now.
                tracing::warn!("could not clear wal/PENDING; it is cleared at the next flush");
            }
        }
        {
            let _view = inner.view.write();
            // A collector on a shared store keeps no catalog (see `open`).
            if !shared {
                for meta in written {
                    inner.catalog.add(meta);
                }
            }
            inner.head.remove_sealed(sealed.len());
            inner.metrics_head.remove_sealed(sealed_metrics.len());
        }
        // Recorded before the mark is published, so no compactor merges
        // these blocks before readers can learn of them.
        self.record_change(crate::changes::Change {
            added_blocks: added_metas,
            ..Default::default()
        })
        .await;
        if let Some(node_id) = inner.config.sharing.node_id() {
            // Compactors merge this collector's blocks once the published
            // mark covers them; a failure here only delays that.
            if let Err(error) =
                crate::cluster::publish_flushed_mark(&inner.store, node_id, sealed_segment).await
            {
                tracing::warn!(%error, "could not publish the wal flushed mark; retrying at the next flush");
            }
        }
        inner
            .counters
            .flush_latency
            .lock()
            .record_ns(elapsed_ns(started));
        inner
            .counters
            .flushed_blocks
            .fetch_add(stats.blocks as u64, Ordering::Relaxed);
        inner
            .counters
            .flushed_bytes
            .fetch_add(stats.bytes, Ordering::Relaxed);
        tracing::debug!(?stats, "flushed head");
        Ok(stats)
    }

    /// Writes the sealed batches (of `signal`) as blocks covering WAL
    /// segments through `wal_through`, not yet committed (see
    /// [`Storage::flush`]). Each block is pushed to `written` once stored,
    /// so a failure can remove what was written.
    pub(super) async fn write_blocks(
        &self,
        signal: Signal,
        sealed: &[HeadBatch],
        wal_through: u64,
        written: &mut Vec<crate::block::BlockMeta>,
    ) -> Result<FlushStats> {
        let mut tenants: Vec<Arc<str>> = sealed.iter().map(|batch| batch.tenant.clone()).collect();
        tenants.sort();
        tenants.dedup();
        let mut stats = FlushStats::default();
        for tenant in tenants {
            let batches: Vec<HeadRows> = sealed
                .iter()
                .filter(|batch| batch.tenant == tenant)
                .map(|batch| batch.rows.clone())
                .collect();
            let row_group_rows = self.inner.config.row_group_rows;
            let tenant_for_encode = tenant.clone();
            let encoded = tokio::task::spawn_blocking(move || {
                encode_head_of(signal, &tenant_for_encode, &batches, row_group_rows)
            })
            .await
            .map_err(|error| StorageError::Corrupt(format!("block encode task: {error}")))??;
            for (bytes, mut meta) in encoded {
                meta.wal_through = Some(wal_through);
                meta.writer = self.inner.config.sharing.node_id().map(str::to_string);
                if meta.writer.is_some() {
                    let wal_dir = self.inner.config.data_dir.join("wal");
                    let path = meta.path.clone();
                    tokio::task::spawn_blocking(move || {
                        crate::wal::pending::append(&wal_dir, wal_through, &path)
                    })
                    .await
                    .map_err(|error| {
                        StorageError::Corrupt(format!("pending note task: {error}"))
                    })??;
                }
                put_block(&self.inner.store, bytes, &meta).await?;
                stats.blocks += 1;
                match signal {
                    Signal::Spans => stats.spans += meta.span_count,
                    Signal::Metrics => stats.points += meta.span_count,
                }
                stats.bytes += meta.size_bytes;
                written.push(meta);
            }
        }
        Ok(stats)
    }

    /// Whether the head is due for a flush by size or age, or early because
    /// the process is over its memory limit's soft limit.
    /// Both heads count: one flush writes both.
    pub fn flush_due(&self) -> bool {
        let (spans, metrics) = (self.inner.head.stats(), self.inner.metrics_head.stats());
        let config = &self.inner.config;
        let active_bytes = (spans.active_bytes + metrics.active_bytes) as u64;
        let oldest = spans
            .oldest_active
            .into_iter()
            .chain(metrics.oldest_active)
            .min();
        spans.sealed_batches + metrics.sealed_batches > 0
            || active_bytes >= config.flush_max_bytes
            || oldest.is_some_and(|oldest| oldest.elapsed() >= config.flush_max_age)
            || (self.inner.memory.over_soft_limit().is_some()
                && active_bytes >= config.flush_max_bytes / MEMORY_FLUSH_FRACTION)
    }

    /// Flushes whenever due, checking every `tick`, until `shutdown` resolves.
    pub async fn run_flusher(
        &self,
        tick: Duration,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        run_every(tokio::time::interval(tick), shutdown, || async {
            if self.inner.memory.over_soft_limit().is_some() {
                let inner = Arc::clone(&self.inner);
                let _ =
                    tokio::task::spawn_blocking(move || inner.memory.release_free_memory()).await;
            }
            if self.flush_due() {
                // Errors are logged and counted; the next tick retries.
                let _ = self.flush().await;
            }
        })
        .await;
    }

    /// Refuses new appends and flushes the head to blocks.
    pub async fn shutdown(&self) -> Result<FlushStats> {
        self.inner.closed.store(true, Ordering::SeqCst);
        // Wait for appends in flight to reach the head.
        drop(self.inner.append_gate.write().await);
        self.flush().await
    }
}

//! The storage engine: WAL + head + blocks + catalog behind the
//! [`SpanWriter`], [`MetricWriter`] and [`SpanReader`] traits.
//!
//! Spans and OTLP metric points take one path, told apart by their
//! [`Signal`]:
//!
//! ```text
//!  SpanWriter::append          MetricWriter::append_metrics
//!        |  span batch               |  metric batch
//!        +-----------+   +-----------+
//!                    v   v
//!   WAL  one log, record kind 1 (spans) or 2 (metric points)   --> acked
//!                    |   |
//!        +-----------+   +-----------+
//!        v                           v
//!   head (spans)                head (metric points)        queryable at once
//!        |  one flush seals both heads and rotates the WAL once
//!        v                           v
//!   tenants/{t}/spans/{date}/{hh}/   tenants/{t}/metric_blocks/{date}/{hh}/
//!        |  catalog (one, metas of both)                     |
//!        +---> compaction per tenant, signal and hour; retention per tenant
//!        v
//!   SpanReader::snapshot (spans)   SpanReader::metrics_snapshot (`metrics`)
//! ```
//!
//! Ordering rules that make "acked" mean "durable" and keep snapshots exact:
//!
//! - An append holds the append gate (shared) from its WAL write until its
//!   batch is in the head. A flush takes the gate exclusively only to
//!   rotate the WAL and seal the head, so every record in a sealed WAL
//!   segment is in the sealed head, and vice versa.
//! - A flush writes blocks, then, under the view lock, adds them to the
//!   catalog and drops the sealed batches from the head; snapshots take the
//!   view lock too, so a span is never seen twice or missed. Only then are
//!   the sealed WAL segments deleted.
//! - A failed flush leaves the sealed batches in the head and their WAL
//!   segments on disk; the next flush retries them.
//!
//! A crash after blocks are written but before the WAL segments are deleted
//! does not store their spans twice: the flush commits with the WAL's
//! `FLUSHED` mark, and replay skips what it covers (see [`crate::wal`]).

use std::path::Path as FsPath;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use object_store::local::LocalFileSystem;
use object_store::{ObjectStore, ObjectStoreExt};
use tokio::sync::{Mutex, RwLock};

use crate::api::SpanSnapshot;
use crate::block::{encode_head_of, put_block};
use crate::catalog::{Catalog, CatalogLoadStats, Cleanup};
use crate::cluster::{Coordination, Sharing};
use crate::compact::{self, CompactionStats};
use crate::derived::{DerivedCatalog, DerivedTable};
use crate::head::{Head, HeadBatch, HeadRows, HeadStats};
use crate::memory::MemoryLimiter;
use crate::wal::{ReplayStats, Wal, encode_signal_payload};
use crate::{
    BlockRef, DerivedWriter, MetricWriter, Result, Signal, SpanFilter, SpanReader, SpanWriter,
    StorageConfig, StorageError, validate_tenant,
};
use tracelake_model::derived::LatencyHistogram;

/// What start-up found, for the log and for tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenStats {
    pub replay: ReplayStats,
    pub catalog: CatalogLoadStats,
}

/// What one flush did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlushStats {
    /// Blocks written, span and metric blocks.
    pub blocks: usize,
    pub spans: u64,
    /// Metric points written.
    pub points: u64,
    pub bytes: u64,
}

/// Where a reader is in the change log.
#[derive(Debug, Default)]
struct LogPosition {
    last_full_listing: Option<std::time::Instant>,
    /// Records applied that are still inside the overlap.
    seen: std::collections::HashSet<String>,
    /// Blocks removed lately, so an add read after the removal is ignored.
    removed: std::collections::HashMap<String, std::time::Instant>,
}

/// What a [`Storage::refresh`] found and cleaned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefreshStats {
    /// Whether the whole store was listed (else the change log was read).
    pub full_listing: bool,
    pub blocks: usize,
    pub replaced_removed: usize,
    pub orphans_removed: usize,
}

/// Counters since start.
#[derive(Debug, Default)]
struct Counters {
    appended_spans: AtomicU64,
    appended_batches: AtomicU64,
    flushed_blocks: AtomicU64,
    flushed_bytes: AtomicU64,
    flush_failures: AtomicU64,
    compacted_blocks: AtomicU64,
    expired_blocks: AtomicU64,
    compaction_failures: AtomicU64,
    refused_appends: AtomicU64,
    /// WAL append latency (write + fsync per the policy), per append.
    wal_latency: parking_lot::Mutex<LatencyHistogram>,
    /// Whole flush latency (seal, encode, write blocks), per flush that wrote.
    flush_latency: parking_lot::Mutex<LatencyHistogram>,
}

/// A snapshot of the counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StorageStats {
    pub appended_spans: u64,
    pub appended_batches: u64,
    pub flushed_blocks: u64,
    pub flushed_bytes: u64,
    pub flush_failures: u64,
    /// Blocks merged away by compaction.
    pub compacted_blocks: u64,
    /// Blocks dropped by retention.
    pub expired_blocks: u64,
    pub compaction_failures: u64,
    /// Appends refused over `max_head_bytes` or the memory limit.
    pub refused_appends: u64,
    /// The process's resident memory, as the memory limiter last saw it.
    pub resident_bytes: u64,
    /// `memory_limit_bytes`; 0 when off.
    pub memory_limit_bytes: u64,
    pub blocks: usize,
    pub head: HeadStats,
    /// The head of metric points.
    pub metrics_head: HeadStats,
    pub wal_latency: LatencyHistogram,
    pub flush_latency: LatencyHistogram,
}

/// The storage engine. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Storage {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: StorageConfig,
    store: Arc<dyn ObjectStore>,
    /// `None` when opened read-only ([`Storage::open_reader`]).
    wal: Option<Wal>,
    head: Head,
    /// Metric points in the WAL, not yet in a block.
    metrics_head: Head,
    catalog: Catalog,
    derived: DerivedCatalog,
    append_gate: RwLock<()>,
    flush_lock: Mutex<()>,
    compaction_lock: Mutex<()>,
    /// Compacted blocks' sources, deleted once their deadline passes.
    replaced: parking_lot::Mutex<Vec<(std::time::Instant, String)>>,
    view: parking_lot::RwLock<()>,
    closed: AtomicBool,
    counters: Counters,
    memory: MemoryLimiter,
    /// A reader's place in the change log ([`crate::changes`]).
    log_position: parking_lot::Mutex<LogPosition>,
    /// Held open while the engine lives: an exclusive lock on
    /// `wal/LOCK`, so a second server or `tracelake import` on the same
    /// data dir is refused instead of interleaving WAL segments.
    _lock: Option<std::fs::File>,
}

/// Over the memory limit, the head is flushed once it holds this fraction
/// of `flush_max_bytes`: enough to free memory, not a block per tick.
const MEMORY_FLUSH_FRACTION: u64 = 8;

fn elapsed_ns(started: std::time::Instant) -> i64 {
    i64::try_from(started.elapsed().as_nanos()).unwrap_or(i64::MAX)
}

/// Runs `work` at each tick of `interval` until `shutdown` resolves; ticks
/// missed while `work` runs are not made up.
pub async fn run_every<F: std::future::Future<Output = ()>>(
    mut interval: tokio::time::Interval,
    shutdown: impl std::future::Future<Output = ()>,
    mut work: impl FnMut() -> F,
) {
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = interval.tick() => work().await,
        }
    }
}

/// Deletes the blocks `wal/PENDING` notes for flushes after the WAL's
/// flushed mark (their spans are replayed) and records their removal for
/// readers that may have listed them.
async fn remove_uncommitted(
    store: &Arc<dyn ObjectStore>,
    wal_dir: &FsPath,
    wal_flushed: u64,
    node_id: &str,
) -> Result<CatalogLoadStats> {
    let mut stats = CatalogLoadStats::default();
    let mut removed = Vec::new();
    for (through, path) in crate::wal::pending::read(wal_dir)? {
        if through > wal_flushed {
            tracing::info!(block = %path, "removing block of an uncommitted flush (its spans are replayed)");
            compact::delete_block(store, &path).await?;
            stats.uncommitted_removed += 1;
            removed.push(path);
        }
    }
    let change = crate::changes::Change {
        removed_blocks: removed,
        ..Default::default()
    };
    crate::changes::record(store, node_id, &change).await?;
    crate::wal::pending::clear(wal_dir)?;
    Ok(stats)
}

/// The embedded default store: the local data directory.
pub fn local_store(data_dir: &FsPath) -> Result<Arc<dyn ObjectStore>> {
    std::fs::create_dir_all(data_dir).map_err(|source| StorageError::WalIo {
        path: data_dir.to_path_buf(),
        source,
    })?;
    Ok(Arc::new(LocalFileSystem::new_with_prefix(data_dir)?))
}

fn lock_data_dir(wal_dir: &FsPath) -> Result<std::fs::File> {
    let io_error = |source| StorageError::WalIo {
        path: wal_dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(wal_dir).map_err(io_error)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(wal_dir.join("LOCK"))
        .map_err(io_error)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StorageError::Locked(
            wal_dir.parent().unwrap_or(wal_dir).to_path_buf(),
        )),
        Err(std::fs::TryLockError::Error(source)) => Err(io_error(source)),
    }
}

impl Storage {
    /// Loads the catalog from `store`, replays the WAL under
    /// `config.data_dir/wal` into the head, and opens a fresh WAL segment.
    pub async fn open(
        config: StorageConfig,
        store: Arc<dyn ObjectStore>,
    ) -> Result<(Self, OpenStats)> {
        let wal_dir = config.data_dir.join("wal");
        let lock = lock_data_dir(&wal_dir)?;
        let wal_flushed = crate::wal::read_flushed(&wal_dir)?;
        let (catalog, catalog_stats, derived) = match &config.sharing {
            Sharing::Exclusive => {
                let objects = Catalog::list_tenants(&store).await?;
                let (catalog, stats) =
                    Catalog::load(&store, &objects, Cleanup::Exclusive { wal_flushed }).await?;
                (
                    catalog,
                    stats,
                    DerivedCatalog::load(&store, &objects).await?,
                )
            }
            // A collector on a shared store neither lists it nor keeps a
            // catalog (it serves no queries): it only removes the blocks of
            // its own flush that never committed, from `wal/PENDING`.
            Sharing::Shared { node_id } => {
                let stats = remove_uncommitted(&store, &wal_dir, wal_flushed, node_id).await?;
                (Catalog::default(), stats, DerivedCatalog::default())
            }
        };
        let (policy, interval, segment_bytes) = (
            config.fsync,
            config.fsync_interval,
            config.wal_segment_bytes,
        );
        let (wal, records, replay) = tokio::task::spawn_blocking(move || {
            Wal::open(&wal_dir, policy, interval, segment_bytes)
        })
        .await
        .map_err(|error| StorageError::Corrupt(format!("wal replay task: {error}")))??;
        let heads = [Head::default(), Head::default()];
        for record in records {
            let head = &heads[usize::from(record.signal == Signal::Metrics)];
            head.insert(HeadBatch::of(record.signal, &record.tenant, record.batch));
        }
        let storage = Self::assemble(
            config,
            store,
            Some(wal),
            heads,
            catalog,
            derived,
            Some(lock),
        );
        let stats = OpenStats {
            replay,
            catalog: catalog_stats,
        };
        tracing::info!(?stats, "storage opened");
        Ok((storage, stats))
    }

    /// Opens `store` without a WAL, for a querier or a compactor on a
    /// shared store: appends are refused, nothing is deleted at load, and
    /// [`Storage::refresh`] picks up what other processes write.
    pub async fn open_reader(
        config: StorageConfig,
        store: Arc<dyn ObjectStore>,
    ) -> Result<(Self, CatalogLoadStats)> {
        let objects = Catalog::list_tenants(&store).await?;
        let (catalog, stats) = Catalog::load(&store, &objects, Cleanup::None).await?;
        let derived = DerivedCatalog::load(&store, &objects).await?;
        let heads = [Head::default(), Head::default()];
        let storage = Self::assemble(config, store, None, heads, catalog, derived, None);
        tracing::info!(?stats, "storage opened read-only");
        Ok((storage, stats))
    }

    fn assemble(
        config: StorageConfig,
        store: Arc<dyn ObjectStore>,
        wal: Option<Wal>,
        [head, metrics_head]: [Head; 2],
        catalog: Catalog,
        derived: DerivedCatalog,
        lock: Option<std::fs::File>,
    ) -> Self {
        let memory_limit = config.memory_limit_bytes;
        Self {
            inner: Arc::new(Inner {
                config,
                store,
                wal,
                head,
                metrics_head,
                catalog,
                derived,
                append_gate: RwLock::new(()),
                flush_lock: Mutex::new(()),
                compaction_lock: Mutex::new(()),
                replaced: parking_lot::Mutex::new(Vec::new()),
                view: parking_lot::RwLock::new(()),
                closed: AtomicBool::new(false),
                counters: Counters::default(),
                memory: MemoryLimiter::new(memory_limit),
                log_position: parking_lot::Mutex::new(LogPosition::default()),
                _lock: lock,
            }),
        }
    }

    fn wal(&self) -> Result<&Wal> {
        self.inner.wal.as_ref().ok_or(StorageError::ReadOnly)
    }

    fn head(&self, signal: Signal) -> &Head {
        match signal {
            Signal::Spans => &self.inner.head,
            Signal::Metrics => &self.inner.metrics_head,
        }
    }

    /// Bytes of both heads, active and being flushed.
    fn head_bytes(&self) -> u64 {
        Signal::ALL
            .iter()
            .map(|signal| {
                let stats = self.head(*signal).stats();
                (stats.active_bytes + stats.sealed_bytes) as u64
            })
            .sum()
    }

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

    pub fn config(&self) -> &StorageConfig {
        &self.inner.config
    }

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

    async fn flush_once(&self) -> Result<FlushStats> {
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
    async fn write_blocks(
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

    /// Applies retention, merges small blocks ([`crate::compact`]) and
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
    /// ([`crate::cluster`]).
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
    async fn window_blocks(
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
    async fn merge_window(
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
    fn expire(&self, now_ns: i64) -> crate::changes::Change {
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

    /// Writes `change` to the change log when other processes read this
    /// store; a failure is logged (readers catch up at their next full
    /// listing).
    async fn record_change(&self, change: crate::changes::Change) {
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
    /// records since `now - OVERLAP` not applied yet ([`crate::changes`]).
    async fn refresh_from_changes(&self) -> Result<RefreshStats> {
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

    /// Deletes the replaced blocks whose delay has passed; a failed delete
    /// is retried on the next pass (and a restart deletes them anyway).
    async fn delete_replaced(&self) {
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

    /// Refuses new appends and flushes the head to blocks.
    pub async fn shutdown(&self) -> Result<FlushStats> {
        self.inner.closed.store(true, Ordering::SeqCst);
        // Wait for appends in flight to reach the head.
        drop(self.inner.append_gate.write().await);
        self.flush().await
    }

    pub fn stats(&self) -> StorageStats {
        let counters = &self.inner.counters;
        StorageStats {
            appended_spans: counters.appended_spans.load(Ordering::Relaxed),
            appended_batches: counters.appended_batches.load(Ordering::Relaxed),
            flushed_blocks: counters.flushed_blocks.load(Ordering::Relaxed),
            flushed_bytes: counters.flushed_bytes.load(Ordering::Relaxed),
            flush_failures: counters.flush_failures.load(Ordering::Relaxed),
            compacted_blocks: counters.compacted_blocks.load(Ordering::Relaxed),
            expired_blocks: counters.expired_blocks.load(Ordering::Relaxed),
            compaction_failures: counters.compaction_failures.load(Ordering::Relaxed),
            refused_appends: counters.refused_appends.load(Ordering::Relaxed),
            resident_bytes: self.inner.memory.resident(),
            memory_limit_bytes: self.inner.memory.limit(),
            blocks: self.inner.catalog.all().len(),
            head: self.inner.head.stats(),
            metrics_head: self.inner.metrics_head.stats(),
            wal_latency: counters.wal_latency.lock().clone(),
            flush_latency: counters.flush_latency.lock().clone(),
        }
    }

    /// Every visible block's meta.
    pub fn blocks(&self) -> Vec<Arc<crate::block::BlockMeta>> {
        self.inner.catalog.all()
    }
}

#[async_trait]
impl DerivedWriter for Storage {
    async fn write_derived(
        &self,
        tenant: &str,
        table: DerivedTable,
        batch: RecordBatch,
    ) -> Result<()> {
        validate_tenant(tenant)?;
        if batch.schema() != table.schema() {
            return Err(StorageError::Corrupt(format!(
                "write of a batch without the {} schema",
                table.name()
            )));
        }
        let written = self
            .inner
            .derived
            .write(&self.inner.store, tenant, table, batch)
            .await?;
        self.record_change(crate::changes::Change {
            added_derived: written,
            ..Default::default()
        })
        .await;
        Ok(())
    }

    async fn set_derived_complete_before(&self, complete_before_ns: i64) -> Result<()> {
        self.inner
            .derived
            .set_complete_before(&self.inner.store, complete_before_ns)
            .await
    }

    fn lower_derived_complete_before(&self, minute_ns: i64) {
        self.inner.derived.lower_complete_before(minute_ns);
    }
}

#[async_trait]
impl SpanWriter for Storage {
    fn check_capacity(&self) -> Result<()> {
        let inner = &self.inner;
        let head_bytes = self.head_bytes();
        let refusal = if head_bytes >= inner.config.max_head_bytes {
            Some(StorageError::Overloaded {
                what: "spans waiting for a flush (flush.max_head_bytes)",
                used: head_bytes,
                limit: inner.config.max_head_bytes,
            })
        } else {
            inner
                .memory
                .over_soft_limit()
                .map(|resident| StorageError::Overloaded {
                    what: "process memory (memory.limit_bytes, less 20% for requests in flight)",
                    used: resident,
                    limit: inner.memory.soft_limit(),
                })
        };
        match refusal {
            Some(refusal) => {
                inner
                    .counters
                    .refused_appends
                    .fetch_add(1, Ordering::Relaxed);
                Err(refusal)
            }
            None => Ok(()),
        }
    }

    async fn append(&self, tenant: &str, batch: RecordBatch) -> Result<()> {
        self.append_signal(Signal::Spans, tenant, batch).await
    }
}

#[async_trait]
impl MetricWriter for Storage {
    async fn append_metrics(&self, tenant: &str, batch: RecordBatch) -> Result<()> {
        self.append_signal(Signal::Metrics, tenant, batch).await
    }

    fn check_metrics_capacity(&self) -> Result<()> {
        SpanWriter::check_capacity(self)
    }
}

impl Storage {
    /// Appends a batch of `signal` rows: WAL (durable per the policy),
    /// then that signal's head, under the append gate (see the module
    /// docs). Spans and metric points share the gate, the WAL and the
    /// capacity limit.
    async fn append_signal(&self, signal: Signal, tenant: &str, batch: RecordBatch) -> Result<()> {
        validate_tenant(tenant)?;
        SpanWriter::check_capacity(self)?;
        if batch.schema() != signal.schema() {
            return Err(StorageError::Corrupt(format!(
                "append of a batch without the {signal:?} schema"
            )));
        }
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let inner = &self.inner;
        let rows = batch.num_rows() as u64;
        let head_batch_input = batch.clone();
        let tenant_owned = tenant.to_string();
        // IPC encoding and the head's summaries are CPU work: off the reactor.
        let (payload, head_batch) = tokio::task::spawn_blocking(move || {
            encode_signal_payload(signal, &tenant_owned, &batch).map(|payload| {
                (
                    payload,
                    HeadBatch::of(signal, &tenant_owned, head_batch_input),
                )
            })
        })
        .await
        .map_err(|error| StorageError::Corrupt(format!("wal encode task: {error}")))??;
        let _shared = inner.append_gate.read().await;
        if inner.closed.load(Ordering::SeqCst) {
            return Err(StorageError::ShuttingDown);
        }
        let started = std::time::Instant::now();
        self.wal()?.append(payload).await?;
        inner
            .counters
            .wal_latency
            .lock()
            .record_ns(elapsed_ns(started));
        self.head(signal).insert(head_batch);
        if signal == Signal::Spans {
            inner
                .counters
                .appended_spans
                .fetch_add(rows, Ordering::Relaxed);
        }
        inner
            .counters
            .appended_batches
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

impl SpanReader for Storage {
    fn object_store(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.inner.store)
    }

    fn snapshot(&self, tenant: &str, filter: &SpanFilter) -> SpanSnapshot {
        let _view = self.inner.view.read();
        let (blocks, total_blocks) = self.inner.catalog.find(tenant, Signal::Spans, filter);
        let (head, total_head_batches) = self.inner.head.snapshot(tenant, filter);
        SpanSnapshot {
            blocks,
            head,
            total_blocks,
            total_head_batches,
        }
    }

    fn metrics_snapshot(&self, tenant: &str, time_range_ns: Option<(i64, i64)>) -> SpanSnapshot {
        let filter = SpanFilter {
            time_range_ns,
            trace_ids: None,
        };
        let _view = self.inner.view.read();
        let (mut blocks, mut total_blocks) =
            self.inner.catalog.find(tenant, Signal::Metrics, &filter);
        // Files of points written one per request before points took the
        // WAL path: read as they are until retention drops them.
        let older = self
            .inner
            .derived
            .find(tenant, DerivedTable::Metrics, time_range_ns);
        total_blocks += self
            .inner
            .derived
            .find(tenant, DerivedTable::Metrics, None)
            .len();
        blocks.extend(older);
        let (head, total_head_batches) = self.inner.metrics_head.snapshot(tenant, &filter);
        SpanSnapshot {
            blocks,
            head,
            total_blocks,
            total_head_batches,
        }
    }

    fn derived_files(
        &self,
        tenant: &str,
        table: DerivedTable,
        time_range_ns: Option<(i64, i64)>,
    ) -> Vec<BlockRef> {
        self.inner.derived.find(tenant, table, time_range_ns)
    }

    fn derived_complete_before_ns(&self) -> i64 {
        self.inner.derived.complete_before_ns()
    }
}

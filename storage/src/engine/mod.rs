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
//! `FLUSHED` mark, and replay skips what it covers (see `wal`).
//!
//! This module opens the store and holds the state and the traits' entry
//! points; each duty over that state has its own child: [`flush`],
//! [`compaction`] (with retention) and [`refresh`] (what other nodes on a
//! shared store changed).

mod compaction;
mod flush;
mod refresh;

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
    /// A reader's place in the change log (`changes`).
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

    pub fn config(&self) -> &StorageConfig {
        &self.inner.config
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

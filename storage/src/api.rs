//! The two narrow faces of storage: what receivers write through and what
//! the query side reads through.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use object_store::ObjectStore;
use object_store::path::Path;

use crate::Result;
use crate::derived::DerivedTable;
use tracelake_model::TraceId;

/// The write side, used by the collector's pipeline.
///
/// Contract: [`SpanWriter::append`] returns `Ok` only once the batch is in
/// the WAL per the fsync policy (`always`: fsynced, so it survives `kill -9`
/// and power loss; `interval`: written to the OS, fsynced within the
/// interval). When it returns, the spans are already visible to
/// [`SpanReader`]. The batch must have [`tracelake_model::schema::span_schema`] and
/// every row must belong to `tenant`.
#[async_trait]
pub trait SpanWriter: Send + Sync + std::fmt::Debug {
    async fn append(&self, tenant: &str, batch: RecordBatch) -> Result<()>;

    /// Whether an append now would be refused as
    /// [`crate::StorageError::Overloaded`]: receivers ask before decoding a
    /// request, so shedding load costs no conversion work.
    fn check_capacity(&self) -> Result<()> {
        Ok(())
    }
}

/// The write side of OTLP metric points, used by the collector's metrics
/// ingest. Points take the spans' path (WAL, head, blocks, compaction,
/// retention; see `signal`).
///
/// Contract: as [`SpanWriter::append`]'s. [`MetricWriter::append_metrics`]
/// returns `Ok` only once the batch is in the WAL per the fsync policy, and
/// then its points are already visible to [`SpanReader::metrics_snapshot`].
/// The batch must have [`tracelake_model::otlp_metrics::metrics_schema`] and every row
/// must belong to `tenant`.
#[async_trait]
pub trait MetricWriter: Send + Sync + std::fmt::Debug {
    async fn append_metrics(&self, tenant: &str, batch: RecordBatch) -> Result<()>;

    /// Whether an append now would be refused as
    /// [`crate::StorageError::Overloaded`] (asked before converting a
    /// request).
    fn check_metrics_capacity(&self) -> Result<()> {
        Ok(())
    }
}

/// The write side of the derived tables (`derived`), used by the
/// collector's streaming aggregation.
///
/// Contract: rows are visible to [`SpanReader::derived_files`] once
/// [`DerivedWriter::write_derived`] returns; they skip the WAL (they can be
/// recomputed from spans), so rows not yet written when the process dies
/// are lost. [`DerivedWriter::set_derived_complete_before`] is called after
/// every row of the minutes before it is written (persisted);
/// [`DerivedWriter::lower_derived_complete_before`] before spans of an
/// earlier minute become visible, so readers recompute that minute until
/// its rows are written (memory only: a restart loses unwritten rows
/// anyway).
#[async_trait]
pub trait DerivedWriter: Send + Sync + std::fmt::Debug {
    async fn write_derived(
        &self,
        tenant: &str,
        table: DerivedTable,
        batch: RecordBatch,
    ) -> Result<()>;

    async fn set_derived_complete_before(&self, complete_before_ns: i64) -> Result<()>;

    /// Moves the watermark back to `minute_ns` if it is later.
    fn lower_derived_complete_before(&self, minute_ns: i64);
}

/// What a reader wants; everything is optional and only prunes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpanFilter {
    /// Spans whose `[start_time, end_time]` may overlap this inclusive
    /// nanosecond range.
    pub time_range_ns: Option<(i64, i64)>,
    /// Spans of these traces only (`trace_id = x` or `trace_id IN (...)`).
    pub trace_ids: Option<Vec<TraceId>>,
}

impl SpanFilter {
    /// Whether a block or head batch whose trace-id filter answers
    /// `may_contain` may hold a wanted span.
    pub fn may_hold_trace(&self, may_contain: impl Fn(&TraceId) -> bool) -> bool {
        match &self.trace_ids {
            Some(trace_ids) => trace_ids.iter().any(may_contain),
            None => true,
        }
    }
}

/// One immutable Parquet block the query side may open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockRef {
    pub path: Path,
    pub size_bytes: u64,
    pub span_count: u64,
}

/// A consistent view of one tenant's matching spans: a flush moves spans
/// from the head to a block atomically with respect to snapshots, so no
/// span is missing from or doubled in a snapshot.
#[derive(Debug, Clone, Default)]
pub struct SpanSnapshot {
    /// Blocks that may hold matching spans.
    pub blocks: Vec<BlockRef>,
    /// Head (not yet flushed) batches that may hold matching spans.
    pub head: Vec<crate::head::HeadRows>,
    /// Blocks of the tenant before pruning (for `EXPLAIN` and metrics).
    pub total_blocks: usize,
    /// Head batches of the tenant before pruning.
    pub total_head_batches: usize,
}

/// The read side, the only storage type the query crate depends on.
///
/// Contract: a snapshot holds every span of `tenant` that matches the
/// filter (it may hold more: pruning is inexact, callers filter again),
/// each once. A trace id consults the trace-id filters kept in memory, so no
/// block is opened to decide which blocks to open. Blocks are read through
/// [`SpanReader::object_store`].
pub trait SpanReader: Send + Sync + std::fmt::Debug {
    /// The store the block paths are relative to.
    fn object_store(&self) -> Arc<dyn ObjectStore>;

    /// The blocks and head batches that may hold matching spans.
    fn snapshot(&self, tenant: &str, filter: &SpanFilter) -> SpanSnapshot;

    /// The files and head batches that may hold `tenant`'s metric points
    /// (the `metrics` table) whose time is in the inclusive nanosecond
    /// range (all without one), with the same guarantee as
    /// [`SpanReader::snapshot`]: every matching point once. The files are
    /// metric blocks and the files metric points were written to, one per
    /// request, before they took the WAL path.
    fn metrics_snapshot(&self, tenant: &str, time_range_ns: Option<(i64, i64)>) -> SpanSnapshot;

    /// Files of a derived table (`derived`) that may hold rows of
    /// minutes in the inclusive nanosecond range (all files without one).
    fn derived_files(
        &self,
        tenant: &str,
        table: DerivedTable,
        time_range_ns: Option<(i64, i64)>,
    ) -> Vec<BlockRef>;

    /// The streaming aggregation's watermark: every derived row of minutes
    /// before it is in [`SpanReader::derived_files`]; 0 when none is.
    fn derived_complete_before_ns(&self) -> i64;
}

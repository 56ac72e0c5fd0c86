//! The head buffer: rows in the WAL but not yet in a block, queryable as
//! soon as their append is acked. The engine keeps one head per
//! [`Signal`] (spans, metric points); a batch knows its signal, which says
//! which column is its time.
//!
//! Batches move `active -> sealed` when a flush starts and leave the head
//! only when the blocks holding them are visible (the engine does both under
//! one lock, see `engine`).

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, MapArray, RecordBatch, UInt32Array, new_empty_array,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::compute::{concat, concat_batches, interleave, max, min, take};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimestampNanosecondType};
use datafusion::arrow::error::ArrowError;
use parking_lot::RwLock;

use crate::bloom::TraceIdFilter;
use crate::{Signal, SpanFilter};
use tracelake_model::TraceId;
use tracelake_model::attributes::MapRowComparator;
use tracelake_model::schema::col;

/// Span rows as the head holds them: each distinct `resource_attributes`
/// map is stored once.
///
/// Every span of a resource repeats its attributes (ten or so entries,
/// ~700 bytes of Arrow per span on the reference workload, as much as the
/// span's own attributes), so the head keeps the distinct maps and a row
/// index into them and materializes the column only for a query that
/// projects it and for the flush. Cloning is cheap (shared buffers).
#[derive(Debug, Clone)]
pub struct HeadRows {
    /// Span schema rows; when `resources` is set, `resource_attributes`
    /// holds empty maps.
    rows: RecordBatch,
    resources: Option<SharedResources>,
}

#[derive(Debug, Clone)]
struct SharedResources {
    column: usize,
    distinct: ArrayRef,
    row_to_distinct: UInt32Array,
}

impl HeadRows {
    /// Shares runs of equal adjacent resource maps (a request's spans come
    /// grouped by resource). A batch without the column is kept as is.
    pub fn new(batch: RecordBatch) -> Self {
        let shared = batch
            .schema()
            .index_of(col::RESOURCE_ATTRIBUTES)
            .ok()
            .and_then(|column| share_runs(&batch, column));
        match shared {
            Some((rows, resources)) => Self {
                rows,
                resources: Some(resources),
            },
            None => Self {
                rows: batch,
                resources: None,
            },
        }
    }

    pub fn num_rows(&self) -> usize {
        self.rows.num_rows()
    }

    /// Arrow memory held, shared maps counted once.
    pub fn memory_size(&self) -> usize {
        self.rows.get_array_memory_size()
            + self.resources.as_ref().map_or(0, |shared| {
                shared.distinct.get_array_memory_size()
                    + shared.row_to_distinct.get_array_memory_size()
            })
    }

    /// The rows with the columns of `projection` (all when `None`), in the
    /// span schema's order for those columns.
    pub fn project(&self, projection: Option<&[usize]>) -> Result<RecordBatch, ArrowError> {
        let mut rows = self.rows.clone();
        if let Some(shared) = &self.resources
            && projection.is_none_or(|columns| columns.contains(&shared.column))
        {
            let mut columns = rows.columns().to_vec();
            columns[shared.column] = take(&shared.distinct, &shared.row_to_distinct, None)?;
            rows = RecordBatch::try_new(rows.schema(), columns)?;
        }
        match projection {
            Some(columns) => rows.project(columns),
            None => Ok(rows),
        }
    }

    /// Every column, as stored in a block.
    pub fn to_batch(&self) -> Result<RecordBatch, ArrowError> {
        self.project(None)
    }

    /// Column `name` unless it is the shared one (which holds placeholders).
    pub(crate) fn plain_column(&self, name: &str) -> Option<&ArrayRef> {
        let index = self.rows.schema().index_of(name).ok()?;
        match &self.resources {
            Some(shared) if shared.column == index => None,
            _ => Some(self.rows.column(index)),
        }
    }

    /// All `sources` (of `schema`, which has a resource map column) as
    /// one: the rows concatenated, the resource maps still stored once
    /// each. The head merges runs of small batches with it.
    pub(crate) fn concat(schema: &SchemaRef, sources: &[HeadRows]) -> Result<HeadRows, ArrowError> {
        let column = schema.index_of(col::RESOURCE_ATTRIBUTES)?;
        let mut rows = Vec::with_capacity(sources.len());
        let mut distinct: Vec<ArrayRef> = Vec::with_capacity(sources.len());
        let mut row_to_distinct = Vec::with_capacity(sources.iter().map(Self::num_rows).sum());
        let mut offset = 0u32;
        for source in sources {
            match &source.resources {
                Some(shared) if shared.column == column => {
                    rows.push(source.rows.clone());
                    row_to_distinct.extend(
                        shared
                            .row_to_distinct
                            .values()
                            .iter()
                            .map(|index| index + offset),
                    );
                    offset += shared.distinct.len() as u32;
                    distinct.push(Arc::clone(&shared.distinct));
                }
                _ => {
                    // Unshared: every row is its own distinct map.
                    rows.push(with_empty_maps(&source.rows, column)?);
                    row_to_distinct.extend(offset..offset + source.num_rows() as u32);
                    offset += source.num_rows() as u32;
                    distinct.push(Arc::clone(source.rows.column(column)));
                }
            }
        }
        let distinct: Vec<&dyn Array> = distinct.iter().map(AsRef::as_ref).collect();
        Ok(HeadRows {
            rows: concat_batches(schema, &rows)?,
            resources: Some(SharedResources {
                column,
                distinct: concat(&distinct)?,
                row_to_distinct: UInt32Array::from(row_to_distinct),
            }),
        })
    }

    /// Rows `rows` (source, row) of `sources` (of `schema`) as one batch
    /// with every column, in that order; shared maps are read from their
    /// distinct values, so nothing is copied but the rows asked for.
    pub(crate) fn interleave(
        schema: &SchemaRef,
        sources: &[HeadRows],
        rows: &[(usize, usize)],
    ) -> Result<RecordBatch, ArrowError> {
        fn shared_at(source: &HeadRows, column: usize) -> Option<&SharedResources> {
            source
                .resources
                .as_ref()
                .filter(|shared| shared.column == column)
        }
        let columns = (0..schema.fields().len())
            .map(|column| {
                let arrays: Vec<&dyn Array> = sources
                    .iter()
                    .map(|source| match shared_at(source, column) {
                        Some(shared) => shared.distinct.as_ref(),
                        None => source.rows.column(column).as_ref(),
                    })
                    .collect();
                if sources
                    .iter()
                    .all(|source| shared_at(source, column).is_none())
                {
                    return interleave(&arrays, rows);
                }
                let distinct_rows: Vec<(usize, usize)> = rows
                    .iter()
                    .map(|&(source, row)| match shared_at(&sources[source], column) {
                        Some(shared) => (source, shared.row_to_distinct.value(row) as usize),
                        None => (source, row),
                    })
                    .collect();
                interleave(&arrays, &distinct_rows)
            })
            .collect::<Result<Vec<_>, _>>()?;
        RecordBatch::try_new(Arc::clone(schema), columns)
    }
}

/// `batch` with `column` (a map) replaced by empty maps, the placeholder
/// of a shared column.
fn with_empty_maps(batch: &RecordBatch, column: usize) -> Result<RecordBatch, ArrowError> {
    let DataType::Map(entries_field, sorted) = batch.schema().field(column).data_type().clone()
    else {
        return Err(ArrowError::InvalidArgumentError(
            "a shared column must be a map".into(),
        ));
    };
    let entries = new_empty_array(entries_field.data_type());
    let empty = MapArray::try_new(
        entries_field,
        OffsetBuffer::new_zeroed(batch.num_rows()),
        entries.as_struct().clone(),
        None,
        sorted,
    )?;
    let mut columns = batch.columns().to_vec();
    columns[column] = Arc::new(empty);
    RecordBatch::try_new(batch.schema(), columns)
}

/// Splits `column` (an attribute map) of `batch` into its distinct adjacent
/// runs; `None` when nothing repeats or the column is not a map.
fn share_runs(batch: &RecordBatch, column: usize) -> Option<(RecordBatch, SharedResources)> {
    let map: &MapArray = batch.column(column).as_map_opt()?;
    let comparator = MapRowComparator::new(map)?;
    let mut firsts: Vec<u32> = Vec::new();
    let mut row_to_distinct = Vec::with_capacity(map.len());
    for row in 0..map.len() {
        let run_start = firsts.last().copied();
        if run_start.is_none_or(|first| !comparator.rows_equal(first as usize, row)) {
            firsts.push(row as u32);
        }
        row_to_distinct.push(firsts.len() as u32 - 1);
    }
    if firsts.len() == map.len() {
        return None;
    }
    let distinct = take(map, &UInt32Array::from(firsts), None).ok()?;
    let rows = with_empty_maps(batch, column).ok()?;
    Some((
        rows,
        SharedResources {
            column,
            distinct,
            row_to_distinct: UInt32Array::from(row_to_distinct),
        },
    ))
}

/// One appended batch with what pruning needs to know of it.
#[derive(Debug, Clone)]
pub struct HeadBatch {
    pub signal: Signal,
    pub tenant: Arc<str>,
    pub rows: HeadRows,
    pub min_start_ns: i64,
    pub max_end_ns: i64,
    /// Arrow memory of `batch`, what the head's limits count.
    pub bytes: usize,
    trace_filter: TraceIdFilter,
}

impl HeadBatch {
    /// Summarises `batch` (span schema) for pruning.
    pub fn new(tenant: &str, batch: RecordBatch) -> Self {
        Self::of(Signal::Spans, tenant, batch)
    }

    /// Summarises `batch` (`signal`'s schema) for pruning: spans by their
    /// start and end times and trace ids, metric points by their `time`.
    pub fn of(signal: Signal, tenant: &str, batch: RecordBatch) -> Self {
        let times = |name: &str| {
            batch
                .column_by_name(name)
                .and_then(|array| array.as_primitive_opt::<TimestampNanosecondType>().cloned())
        };
        let (first, last) = match signal {
            Signal::Spans => (col::START_TIME, col::END_TIME),
            Signal::Metrics => (
                tracelake_model::otlp_metrics::TIME,
                tracelake_model::otlp_metrics::TIME,
            ),
        };
        let min_start_ns = times(first)
            .and_then(|array| min(&array))
            .unwrap_or(i64::MIN);
        let max_end_ns = times(last)
            .and_then(|array| max(&array))
            .unwrap_or(i64::MAX);
        let mut trace_filter = TraceIdFilter::with_capacity(batch.num_rows());
        if let Some(trace_ids) = batch
            .column_by_name(col::TRACE_ID)
            .and_then(|array| array.as_fixed_size_binary_opt())
        {
            for index in 0..trace_ids.len() {
                if let Ok(trace_id) = TraceId::try_from(trace_ids.value(index)) {
                    trace_filter.insert(&trace_id);
                }
            }
        }
        let rows = HeadRows::new(batch);
        Self {
            signal,
            tenant: Arc::from(tenant),
            bytes: rows.memory_size(),
            rows,
            min_start_ns,
            max_end_ns,
            trace_filter,
        }
    }

    fn matches(&self, tenant: &str, filter: &SpanFilter) -> bool {
        if &*self.tenant != tenant {
            return false;
        }
        if let Some((from, to)) = filter.time_range_ns
            && (self.min_start_ns > to || self.max_end_ns < from)
        {
            return false;
        }
        filter.may_hold_trace(|trace_id| self.trace_filter.may_contain(trace_id))
    }
}

#[derive(Debug, Default)]
struct HeadState {
    active: Vec<HeadBatch>,
    sealed: Vec<HeadBatch>,
    active_bytes: usize,
    sealed_bytes: usize,
    oldest_active: Option<Instant>,
}

impl HeadState {
    /// Merges the last [`MERGE_RUN`] active batches into one when all are
    /// small and of one tenant. X-Ray's daemon protocol sends a segment a
    /// datagram, so without this the head holds a batch of a few spans per
    /// datagram, and every query pays a snapshot and a projection per
    /// batch (thousands a minute). Only active batches merge: the sealed
    /// ones are counted by the flush that removes them.
    fn merge_small_tail(&mut self) {
        let Some(first) = self.active.len().checked_sub(MERGE_RUN) else {
            return;
        };
        let tail = &self.active[first..];
        let (signal, tenant) = (tail[0].signal, Arc::clone(&tail[0].tenant));
        if !tail.iter().all(|batch| {
            batch.rows.num_rows() < SMALL_BATCH_ROWS
                && batch.tenant == tenant
                && batch.signal == signal
        }) {
            return;
        }
        let sources: Vec<HeadRows> = tail.iter().map(|batch| batch.rows.clone()).collect();
        // Materialized and shared again (`HeadBatch::new`), not kept as the
        // concatenation: adjacent datagrams of one service carry equal
        // resource maps, which only a new pass over the rows stores once.
        // A batch that will not concatenate stays as it is.
        let Ok(rows) =
            HeadRows::concat(&signal.schema(), &sources).and_then(|rows| rows.to_batch())
        else {
            return;
        };
        let merged = HeadBatch::of(signal, &tenant, rows);
        let replaced: usize = tail.iter().map(|batch| batch.bytes).sum();
        self.active.truncate(first);
        self.active_bytes = self.active_bytes.saturating_sub(replaced) + merged.bytes;
        self.active.push(merged);
    }
}

/// Sizes reported to the flusher and to metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeadStats {
    pub active_batches: usize,
    pub active_bytes: usize,
    pub sealed_batches: usize,
    /// Arrow bytes of the sealed batches (being flushed).
    pub sealed_bytes: usize,
    pub oldest_active: Option<Instant>,
}

/// A batch with fewer rows than this counts as small.
const SMALL_BATCH_ROWS: usize = 256;
/// How many small batches in a row the head merges into one.
const MERGE_RUN: usize = 64;

#[derive(Debug, Default)]
pub(crate) struct Head {
    state: RwLock<HeadState>,
}

impl Head {
    pub(crate) fn insert(&self, batch: HeadBatch) {
        let mut state = self.state.write();
        state.active_bytes += batch.bytes;
        state.oldest_active.get_or_insert_with(Instant::now);
        state.active.push(batch);
        state.merge_small_tail();
    }

    /// Moves every active batch to the sealed list; returns all sealed
    /// batches (earlier failed flushes included), oldest first.
    pub(crate) fn seal(&self) -> Vec<HeadBatch> {
        let mut state = self.state.write();
        let active = std::mem::take(&mut state.active);
        state.sealed.extend(active);
        state.sealed_bytes += state.active_bytes;
        state.active_bytes = 0;
        state.oldest_active = None;
        state.sealed.clone()
    }

    /// Drops the first `count` sealed batches, now in blocks.
    pub(crate) fn remove_sealed(&self, count: usize) {
        let mut state = self.state.write();
        let count = count.min(state.sealed.len());
        let removed: usize = state.sealed.drain(..count).map(|batch| batch.bytes).sum();
        state.sealed_bytes = state.sealed_bytes.saturating_sub(removed);
    }

    /// The batches of `tenant` that may match `filter`, and how many
    /// batches the tenant has in the head.
    pub(crate) fn snapshot(&self, tenant: &str, filter: &SpanFilter) -> (Vec<HeadRows>, usize) {
        let state = self.state.read();
        let mut total = 0;
        let mut matching = Vec::new();
        for head_batch in state.sealed.iter().chain(state.active.iter()) {
            if &*head_batch.tenant != tenant {
                continue;
            }
            total += 1;
            if head_batch.matches(tenant, filter) {
                matching.push(head_batch.rows.clone());
            }
        }
        (matching, total)
    }

    pub(crate) fn stats(&self) -> HeadStats {
        let state = self.state.read();
        HeadStats {
            active_batches: state.active.len(),
            active_bytes: state.active_bytes,
            sealed_batches: state.sealed.len(),
            sealed_bytes: state.sealed_bytes,
            oldest_active: state.oldest_active,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracelake_model::otlp::resource_spans_to_batch;
    use tracelake_workload::Workload;

    fn workload_batch() -> RecordBatch {
        let resource_spans = Workload::new(5, 1_767_225_600_000_000_000, 1_000_000).batch(2_000);
        resource_spans_to_batch("t", &resource_spans)
            .unwrap()
            .batch
            .unwrap()
    }

    #[test]
    fn shared_resources_read_back_as_the_batch_they_came_from() {
        let batch = workload_batch();
        let rows = HeadRows::new(batch.clone());
        assert!(rows.resources.is_some(), "the workload repeats resources");
        assert!(rows.memory_size() < batch.get_array_memory_size() * 2 / 3);
        assert_eq!(rows.to_batch().unwrap(), batch);

        let resource = batch.schema().index_of(col::RESOURCE_ATTRIBUTES).unwrap();
        let name = batch.schema().index_of(col::NAME).unwrap();
        for projection in [vec![name], vec![resource, name], vec![resource]] {
            assert_eq!(
                rows.project(Some(&projection)).unwrap(),
                batch.project(&projection).unwrap(),
                "projection {projection:?}"
            );
        }
    }

    #[test]
    fn small_batches_merge_and_read_back_the_same() {
        let batch = workload_batch();
        let head = Head::default();
        let singles: Vec<RecordBatch> = (0..200).map(|row| batch.slice(row, 1)).collect();
        for single in &singles {
            head.insert(HeadBatch::new("t", single.clone()));
        }
        let stats = head.stats();
        assert!(
            stats.active_batches < 200 / 4,
            "{} batches",
            stats.active_batches
        );
        let (rows, total) = head.snapshot("t", &SpanFilter::default());
        assert_eq!(total, stats.active_batches);
        let read: Vec<RecordBatch> = rows.iter().map(|rows| rows.to_batch().unwrap()).collect();
        let schema = batch.schema();
        assert_eq!(
            concat_batches(&schema, &read).unwrap(),
            concat_batches(&schema, &singles).unwrap(),
            "the same rows in the same order"
        );
        let held: usize = head.seal().iter().map(|batch| batch.bytes).sum();
        assert_eq!(stats.active_bytes, held, "bytes follow the merges");
        // Another tenant's batch breaks a run: nothing of two tenants merges.
        let mixed = Head::default();
        for (index, single) in singles.iter().enumerate() {
            let tenant = if index % 2 == 0 { "a" } else { "b" };
            mixed.insert(HeadBatch::new(tenant, single.clone()));
        }
        assert_eq!(mixed.stats().active_batches, 200);
        assert_eq!(mixed.snapshot("a", &SpanFilter::default()).0.len(), 100);
    }

    #[test]
    fn distinct_resources_are_kept_whole() {
        // One span per resource: nothing to share, the batch stays as is.
        let resource_spans: Vec<_> = (0..3)
            .map(|seed| tracelake_workload::samples::sample_resource_spans(seed, 1, 1_000 + seed))
            .collect();
        let batch = resource_spans_to_batch("t", &resource_spans)
            .unwrap()
            .batch
            .unwrap();
        let rows = HeadRows::new(batch.clone());
        assert!(rows.resources.is_none());
        assert_eq!(rows.to_batch().unwrap(), batch);
    }
}

//! The head buffer: spans in the WAL but not yet in a block, queryable as
//! soon as their append is acked.
//!
//! Batches move `active -> sealed` when a flush starts and leave the head
//! only when the blocks holding them are visible (the engine does both under
//! one lock, see `engine`).

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::{max, min};
use datafusion::arrow::datatypes::TimestampNanosecondType;
use parking_lot::RwLock;

use crate::bloom::TraceIdFilter;
use crate::schema::col;
use crate::{SpanFilter, TraceId};

/// One appended batch with what pruning needs to know of it.
#[derive(Debug, Clone)]
pub struct HeadBatch {
    pub tenant: Arc<str>,
    pub batch: RecordBatch,
    pub min_start_ns: i64,
    pub max_end_ns: i64,
    /// Arrow memory of `batch`, what the head's limits count.
    pub bytes: usize,
    trace_filter: TraceIdFilter,
}

impl HeadBatch {
    /// Summarises `batch` (span schema) for pruning.
    pub fn new(tenant: &str, batch: RecordBatch) -> Self {
        let times = |name: &str| {
            batch
                .column_by_name(name)
                .and_then(|array| array.as_primitive_opt::<TimestampNanosecondType>().cloned())
        };
        let min_start_ns = times(col::START_TIME)
            .and_then(|array| min(&array))
            .unwrap_or(i64::MIN);
        let max_end_ns = times(col::END_TIME)
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
        Self {
            tenant: Arc::from(tenant),
            bytes: batch.get_array_memory_size(),
            batch,
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

#[derive(Debug, Default)]
pub struct Head {
    state: RwLock<HeadState>,
}

impl Head {
    pub fn insert(&self, batch: HeadBatch) {
        let mut state = self.state.write();
        state.active_bytes += batch.bytes;
        state.oldest_active.get_or_insert_with(Instant::now);
        state.active.push(batch);
    }

    /// Moves every active batch to the sealed list; returns all sealed
    /// batches (earlier failed flushes included), oldest first.
    pub fn seal(&self) -> Vec<HeadBatch> {
        let mut state = self.state.write();
        let active = std::mem::take(&mut state.active);
        state.sealed.extend(active);
        state.sealed_bytes += state.active_bytes;
        state.active_bytes = 0;
        state.oldest_active = None;
        state.sealed.clone()
    }

    /// Drops the first `count` sealed batches, now in blocks.
    pub fn remove_sealed(&self, count: usize) {
        let mut state = self.state.write();
        let count = count.min(state.sealed.len());
        let removed: usize = state.sealed.drain(..count).map(|batch| batch.bytes).sum();
        state.sealed_bytes = state.sealed_bytes.saturating_sub(removed);
    }

    /// The batches of `tenant` that may match `filter`, and how many
    /// batches the tenant has in the head.
    pub fn snapshot(&self, tenant: &str, filter: &SpanFilter) -> (Vec<RecordBatch>, usize) {
        let state = self.state.read();
        let mut total = 0;
        let mut matching = Vec::new();
        for head_batch in state.sealed.iter().chain(state.active.iter()) {
            if &*head_batch.tenant != tenant {
                continue;
            }
            total += 1;
            if head_batch.matches(tenant, filter) {
                matching.push(head_batch.batch.clone());
            }
        }
        (matching, total)
    }

    pub fn stats(&self) -> HeadStats {
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

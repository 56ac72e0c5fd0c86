//! Compaction: merges the small blocks of one tenant, signal and hour into
//! larger ones.
//!
//! ```text
//!  tenants/t/{spans|metric_blocks}/2026-01-01/05/  A.parquet B.parquet C.parquet  (one per flush)
//!        | plan: small blocks of one window, oldest first, up to max_block_spans
//!        v
//!  k-way merge (trace id, start time | time) --> BlockWriter --> D.parquet + D.meta.json {replaces: A B C}
//! ```
//!
//! Span and metric blocks take the same path; a metric block's rows are
//! ordered by `time` (its merge key is an all-zero trace id and the time),
//! and `max_block_spans` bounds its points.
//!
//! Flushes write one block per tenant and hour each time the head is
//! flushed, so a busy hour ends up as many small blocks. Small blocks cost
//! twice: every trace-id lookup tests each block's filter and opens every
//! block that may hold the trace, and Parquet compresses a large sorted
//! block better than many small ones (longer runs of one trace id, one
//! service, one dictionary).
//!
//! Planning ([`plan`]): within a tenant and hour, blocks holding fewer than
//! half of `max_block_spans` are candidates; taken oldest first, they are
//! grouped greedily so no merged block exceeds `max_block_spans`, and every
//! group of two or more is merged. A block that reached half the size is
//! left alone, so a span is rewritten only a few times.
//!
//! Merging streams: each source block is already sorted by trace id and
//! start time, so a k-way merge of their row groups feeds one
//! [`BlockWriter`] a chunk at a time. Memory is the sources' compressed
//! bytes, one decoded batch per source and one output chunk, not the
//! merged block's rows. The merged block's meta lists the paths it
//! `replaces`. Visibility is atomic the way a
//! flush's is: the merged Parquet file is written, then its meta, and the
//! meta's `replaces` hides the sources from then on, whether the engine
//! lives on (it swaps them in its catalog under the view lock) or crashes
//! (the next start drops and deletes every replaced block it finds). A
//! crash before the meta leaves an orphan Parquet file, removed at start.
//!
//! The sources' files are deleted `delete_delay` after the swap, so a query
//! that took its snapshot just before can still read them.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::compute::interleave_record_batch;
use datafusion::arrow::datatypes::TimestampNanosecondType;
use datafusion::parquet::arrow::arrow_reader::{
    ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder,
};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::block::time_column;
use crate::block::{BlockMeta, BlockWriter, COMPACTION_ZSTD_LEVEL, NANOS_PER_HOUR, put_block};
use crate::{Result, Signal, StorageError};
use tracelake_model::schema::col;

/// What one compaction pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactionStats {
    /// Blocks merged away.
    pub source_blocks: usize,
    /// Blocks written in their place.
    pub written_blocks: usize,
    pub spans: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Blocks dropped by retention.
    pub expired_blocks: usize,
}

/// What a merge never crosses: tenant, signal and hour.
type Window<'a> = (&'a str, Option<Signal>, i64);

/// Groups of blocks to merge, each group of one tenant, signal and hour.
pub(crate) fn plan(blocks: &[Arc<BlockMeta>], max_block_spans: u64) -> Vec<Vec<Arc<BlockMeta>>> {
    let mut by_window: BTreeMap<Window<'_>, Vec<&Arc<BlockMeta>>> = BTreeMap::new();
    for block in blocks {
        if block.span_count < max_block_spans / 2 {
            by_window
                .entry((&block.tenant, block.signal(), block.hour()))
                .or_default()
                .push(block);
        }
    }
    let mut groups = Vec::new();
    for (_, mut candidates) in by_window {
        // ULIDs sort by creation time: oldest first.
        candidates.sort_by(|a, b| a.id.cmp(&b.id));
        let mut group: Vec<Arc<BlockMeta>> = Vec::new();
        let mut spans = 0;
        for block in candidates {
            if !group.is_empty() && spans + block.span_count > max_block_spans {
                if group.len() > 1 {
                    groups.push(std::mem::take(&mut group));
                }
                group.clear();
                spans = 0;
            }
            spans += block.span_count;
            group.push(Arc::clone(block));
        }
        if group.len() > 1 {
            groups.push(group);
        }
    }
    groups
}

/// Reads `group`, merges it into one block and writes it (Parquet, then the
/// meta naming the sources it replaces). The caller swaps it into the
/// catalog and deletes the sources later.
pub(crate) async fn merge(
    store: &Arc<dyn ObjectStore>,
    group: &[Arc<BlockMeta>],
    row_group_rows: usize,
) -> Result<BlockMeta> {
    let first = group
        .first()
        .ok_or_else(|| StorageError::Corrupt("compaction of no blocks".into()))?;
    let (tenant, hour) = (first.tenant.clone(), first.hour());
    let signal = first.signal().ok_or_else(|| {
        StorageError::Corrupt(format!("compaction of {}: not a block path", first.path))
    })?;
    let mut files = Vec::with_capacity(group.len());
    for block in group {
        if block.tenant != tenant || block.hour() != hour || block.signal() != Some(signal) {
            return Err(StorageError::Corrupt(format!(
                "compaction group mixes windows: {} and {}",
                first.path, block.path
            )));
        }
        let bytes = store
            .get(&Path::from(block.path.as_str()))
            .await?
            .bytes()
            .await?;
        files.push(bytes);
    }
    let replaces = group.iter().map(|block| block.path.clone()).collect();
    let expected_traces = group.iter().map(|block| block.trace_count).sum();
    let (bytes, mut meta) = tokio::task::spawn_blocking(move || {
        let mut writer = BlockWriter::of(
            signal,
            expected_traces,
            row_group_rows,
            COMPACTION_ZSTD_LEVEL,
        )?;
        merge_sorted(signal, files, |chunk| writer.write(&chunk))?;
        writer.finish(&tenant, hour)
    })
    .await
    .map_err(|error| StorageError::Corrupt(format!("compaction task: {error}")))??;
    meta.replaces = replaces;
    put_block(store, bytes, &meta).await?;
    Ok(meta)
}

/// Rows per decoded source batch and per merged chunk.
const MERGE_BATCH_ROWS: usize = 8 * 1024;

/// The merge key of a row: trace id, then start time (metric points: a
/// zero trace id, then time).
type Key = ([u8; 16], i64);

/// One source block in a merge: its reader and the batch under its cursor.
struct Cursor {
    signal: Signal,
    reader: ParquetRecordBatchReader,
    batch: RecordBatch,
    row: usize,
    /// Index of `batch` in the current chunk's list of batches.
    slot: usize,
}

impl Cursor {
    fn open(signal: Signal, bytes: Bytes) -> Result<Option<Self>> {
        let mut reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?
            .with_batch_size(MERGE_BATCH_ROWS)
            .build()?;
        Ok(next_batch(signal, &mut reader)?.map(|batch| Self {
            signal,
            reader,
            batch,
            row: 0,
            slot: 0,
        }))
    }

    fn key(&self) -> Result<Key> {
        let corrupt = || StorageError::Corrupt("block without its sort columns".into());
        let mut id = [0u8; 16];
        if self.signal == Signal::Spans {
            let trace_id = self
                .batch
                .column_by_name(col::TRACE_ID)
                .and_then(|array| array.as_fixed_size_binary_opt())
                .ok_or_else(corrupt)?
                .value(self.row);
            let len = trace_id.len().min(16);
            id[..len].copy_from_slice(&trace_id[..len]);
        }
        let start = self
            .batch
            .column_by_name(time_column(self.signal))
            .and_then(|array| array.as_primitive_opt::<TimestampNanosecondType>())
            .ok_or_else(corrupt)?
            .value(self.row);
        Ok((id, start))
    }

    /// Moves past the current row; false once the block is exhausted.
    fn advance(&mut self, slots: &mut Vec<RecordBatch>) -> Result<bool> {
        self.row += 1;
        if self.row < self.batch.num_rows() {
            return Ok(true);
        }
        match next_batch(self.signal, &mut self.reader)? {
            Some(batch) => {
                self.batch = batch;
                self.row = 0;
                self.slot = slots.len();
                slots.push(self.batch.clone());
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// The next non-empty decoded batch, with `signal`'s schema (same columns
/// and types as written; the schema's metadata is the current one).
fn next_batch(
    signal: Signal,
    reader: &mut ParquetRecordBatchReader,
) -> Result<Option<RecordBatch>> {
    for batch in reader.by_ref() {
        let batch = batch?;
        if batch.num_rows() > 0 {
            // Blocks of every layout merge into today's.
            return Ok(Some(match signal {
                Signal::Spans => crate::layout::to_block(&batch)?,
                Signal::Metrics => RecordBatch::try_new(signal.schema(), batch.columns().to_vec())?,
            }));
        }
    }
    Ok(None)
}

/// Merges blocks of `signal`, each sorted by its key ([`Key`]), into
/// chunks in that order, handed to `emit` one at a time.
fn merge_sorted(
    signal: Signal,
    files: Vec<Bytes>,
    mut emit: impl FnMut(RecordBatch) -> Result<()>,
) -> Result<()> {
    let mut cursors = Vec::with_capacity(files.len());
    for bytes in files {
        cursors.extend(Cursor::open(signal, bytes)?);
    }
    // The batches the current chunk's rows point into, and the rows.
    let mut slots: Vec<RecordBatch> = Vec::new();
    let mut rows: Vec<(usize, usize)> = Vec::with_capacity(MERGE_BATCH_ROWS);
    let mut heap = BinaryHeap::with_capacity(cursors.len());
    let mut live = vec![true; cursors.len()];
    for (index, cursor) in cursors.iter_mut().enumerate() {
        cursor.slot = slots.len();
        slots.push(cursor.batch.clone());
        heap.push(Reverse((cursor.key()?, index)));
    }
    while let Some(Reverse((_, index))) = heap.pop() {
        // Take this source's rows while they sort before every other's next.
        let bound = heap.peek().map(|Reverse(top)| *top);
        loop {
            let cursor = &mut cursors[index];
            rows.push((cursor.slot, cursor.row));
            let more = cursor.advance(&mut slots)?;
            live[index] = more;
            if rows.len() >= MERGE_BATCH_ROWS {
                emit_chunk(&mut slots, &mut rows, &mut emit)?;
                // From here on, only the batches under live cursors.
                for (cursor, _) in cursors.iter_mut().zip(&live).filter(|(_, live)| **live) {
                    cursor.slot = slots.len();
                    slots.push(cursor.batch.clone());
                }
            }
            if !more {
                break;
            }
            let key = cursors[index].key()?;
            if bound.is_some_and(|bound| (key, index) > bound) {
                heap.push(Reverse((key, index)));
                break;
            }
        }
    }
    if !rows.is_empty() {
        emit_chunk(&mut slots, &mut rows, &mut emit)?;
    }
    Ok(())
}

fn emit_chunk(
    slots: &mut Vec<RecordBatch>,
    rows: &mut Vec<(usize, usize)>,
    emit: &mut impl FnMut(RecordBatch) -> Result<()>,
) -> Result<()> {
    let batches: Vec<&RecordBatch> = slots.iter().collect();
    let chunk = interleave_record_batch(&batches, rows)?;
    rows.clear();
    slots.clear();
    emit(chunk)
}

/// Deletes a block: its meta first (so it stops being visible to a later
/// start), then its Parquet file. Files already gone are not an error.
pub(crate) async fn delete_block(store: &Arc<dyn ObjectStore>, parquet_path: &str) -> Result<()> {
    let meta_path = BlockMeta::meta_path_for(parquet_path)
        .ok_or_else(|| StorageError::Corrupt(format!("block path {parquet_path} not .parquet")))?;
    for path in [meta_path.as_str(), parquet_path] {
        match store.delete(&Path::from(path)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}

impl BlockMeta {
    /// The UTC hour (since the epoch) whose spans the block holds.
    pub fn hour(&self) -> i64 {
        self.min_start_ns.div_euclid(NANOS_PER_HOUR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bloom::TraceIdFilter;

    fn meta(id: &str, tenant: &str, hour: i64, spans: u64) -> Arc<BlockMeta> {
        Arc::new(BlockMeta {
            id: id.into(),
            tenant: tenant.into(),
            path: format!("tenants/{tenant}/spans/{hour}/{id}.parquet"),
            size_bytes: spans * 60,
            span_count: spans,
            trace_count: spans / 10,
            min_start_ns: hour * NANOS_PER_HOUR + 5,
            max_end_ns: hour * NANOS_PER_HOUR + 10,
            created_unix_ms: 0,
            trace_filter: TraceIdFilter::with_capacity(1),
            replaces: Vec::new(),
            wal_through: None,
            writer: None,
        })
    }

    fn ids(groups: &[Vec<Arc<BlockMeta>>]) -> Vec<Vec<&str>> {
        groups
            .iter()
            .map(|group| group.iter().map(|block| block.id.as_str()).collect())
            .collect()
    }

    /// A block of `spans` reference-workload spans, as a flush writes it.
    fn block(seed: u64, spans: usize) -> (Bytes, Vec<(Key, [u8; 8])>) {
        let mut workload = tracelake_workload::Workload::new(seed, 1_767_225_600_000_000_000, 1000);
        let batch = tracelake_model::otlp::resource_spans_to_batch("t", &workload.batch(spans))
            .unwrap()
            .batch
            .unwrap();
        let hour = 1_767_225_600_000_000_000 / NANOS_PER_HOUR;
        let (bytes, _) = crate::block::encode_block("t", hour, &batch, 4096).unwrap();
        (Bytes::from(bytes), rows(&[batch]))
    }

    /// Every row's merge key and span id, in order.
    fn rows(batches: &[RecordBatch]) -> Vec<(Key, [u8; 8])> {
        let mut out = Vec::new();
        for batch in batches {
            let span_ids = batch
                .column_by_name(col::SPAN_ID)
                .unwrap()
                .as_fixed_size_binary();
            for row in 0..batch.num_rows() {
                let trace_id = batch
                    .column_by_name(col::TRACE_ID)
                    .unwrap()
                    .as_fixed_size_binary()
                    .value(row);
                let start = batch
                    .column_by_name(col::START_TIME)
                    .unwrap()
                    .as_primitive::<TimestampNanosecondType>()
                    .value(row);
                out.push((
                    (trace_id.try_into().unwrap(), start),
                    span_ids.value(row).try_into().unwrap(),
                ));
            }
        }
        out
    }

    #[test]
    fn merging_keeps_every_row_in_block_order_across_chunks() {
        // Random trace ids interleave the blocks row by row; three blocks of
        // 7,000 spans cross the 8,192-row chunks and the 4,096-row groups.
        let blocks: Vec<_> = (1..=3).map(|seed| block(seed, 7000)).collect();
        let mut expected: Vec<_> = blocks.iter().flat_map(|(_, rows)| rows.clone()).collect();
        expected.sort();
        let mut chunks = Vec::new();
        merge_sorted(
            Signal::Spans,
            blocks.iter().map(|(bytes, _)| bytes.clone()).collect(),
            |chunk| {
                assert!(chunk.num_rows() <= MERGE_BATCH_ROWS);
                chunks.push(chunk);
                Ok(())
            },
        )
        .unwrap();
        let merged = rows(&chunks);
        assert!(merged.windows(2).all(|pair| pair[0].0 <= pair[1].0));
        let mut sorted = merged.clone();
        sorted.sort();
        assert_eq!(sorted, expected);
        assert!(chunks.len() >= 3);
        // An empty input, and a single block, come through too.
        merge_sorted(Signal::Spans, Vec::new(), |_| panic!("nothing to emit")).unwrap();
        let mut single = 0;
        merge_sorted(Signal::Spans, vec![blocks[0].0.clone()], |chunk| {
            single += chunk.num_rows();
            Ok(())
        })
        .unwrap();
        assert_eq!(single, blocks[0].1.len());
    }

    /// Compaction writes the form spans keep: the same rows in fewer bytes
    /// than a flush's encoding of them (a higher zstd level).
    #[tokio::test]
    async fn a_merged_block_is_smaller_than_the_same_rows_flushed() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let hour = 1_767_225_600_000_000_000 / NANOS_PER_HOUR;
        let mut group = Vec::new();
        let mut batches = Vec::new();
        for seed in 1..=2 {
            let mut workload =
                tracelake_workload::Workload::new(seed, 1_767_225_600_000_000_000, 1000);
            let batch =
                tracelake_model::otlp::resource_spans_to_batch("t", &workload.batch(20_000))
                    .unwrap()
                    .batch
                    .unwrap();
            let (bytes, meta) = crate::block::encode_block("t", hour, &batch, 4096).unwrap();
            put_block(&store, bytes, &meta).await.unwrap();
            group.push(Arc::new(meta));
            batches.push(batch);
        }
        let merged = merge(&store, &group, 4096).await.unwrap();
        let all =
            datafusion::arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
        let (flushed, flushed_meta) = crate::block::encode_block("t", hour, &all, 4096).unwrap();
        assert_eq!(merged.span_count, flushed_meta.span_count);
        assert!(
            (merged.size_bytes as f64) < 0.97 * flushed.len() as f64,
            "merged {} bytes, flushed {}",
            merged.size_bytes,
            flushed.len()
        );
    }

    #[test]
    fn plans_per_tenant_and_hour_within_the_size_bound() {
        let blocks = vec![
            meta("03", "a", 7, 300),
            meta("01", "a", 7, 300),
            meta("02", "a", 7, 300),
            meta("04", "a", 7, 300),
            // Large enough already.
            meta("05", "a", 7, 600),
            // Alone in its hour, and in its tenant.
            meta("06", "a", 8, 10),
            meta("07", "b", 7, 10),
            meta("08", "b", 7, 10),
        ];
        let groups = plan(&blocks, 1000);
        // 300 + 300 + 300 fits in 1000, the fourth starts a group of one.
        assert_eq!(ids(&groups), vec![vec!["01", "02", "03"], vec!["07", "08"]]);
        assert!(plan(&blocks[..1], 1000).is_empty());
        assert!(plan(&[], 1000).is_empty());
    }
}

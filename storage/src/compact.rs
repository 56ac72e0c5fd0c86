//! Compaction: merges the small blocks of one tenant and hour into larger
//! ones.
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
//! Merging reads the group's blocks whole, sorts them again by trace id and
//! start time and encodes one block ([`crate::block::encode_block`]); its
//! meta lists the paths it `replaces`. Visibility is atomic the way a
//! flush's is: the merged Parquet file is written, then its meta, and the
//! meta's `replaces` hides the sources from then on, whether the engine
//! lives on (it swaps them in its catalog under the view lock) or crashes
//! (the next start drops and deletes every replaced block it finds). A
//! crash before the meta leaves an orphan Parquet file, removed at start.
//!
//! The sources' files are deleted `delete_delay` after the swap, so a query
//! that took its snapshot just before can still read them.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::concat_batches;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::block::{BlockMeta, NANOS_PER_HOUR, encode_block, put_block};
use crate::schema::span_schema;
use crate::{Result, StorageError};

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
}

/// Groups of blocks to merge, each group of one tenant and hour.
pub fn plan(blocks: &[Arc<BlockMeta>], max_block_spans: u64) -> Vec<Vec<Arc<BlockMeta>>> {
    let mut by_window: BTreeMap<(&str, i64), Vec<&Arc<BlockMeta>>> = BTreeMap::new();
    for block in blocks {
        if block.span_count < max_block_spans / 2 {
            by_window
                .entry((&block.tenant, block.hour()))
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
pub async fn merge(
    store: &Arc<dyn ObjectStore>,
    group: &[Arc<BlockMeta>],
    row_group_rows: usize,
) -> Result<BlockMeta> {
    let first = group
        .first()
        .ok_or_else(|| StorageError::Corrupt("compaction of no blocks".into()))?;
    let (tenant, hour) = (first.tenant.clone(), first.hour());
    let mut files = Vec::with_capacity(group.len());
    for block in group {
        if block.tenant != tenant || block.hour() != hour {
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
    let (bytes, mut meta) = tokio::task::spawn_blocking(move || {
        let merged = decode_blocks(files)?;
        encode_block(&tenant, hour, &merged, row_group_rows)
    })
    .await
    .map_err(|error| StorageError::Corrupt(format!("compaction task: {error}")))??;
    meta.replaces = replaces;
    put_block(store, bytes, &meta).await?;
    Ok(meta)
}

fn decode_blocks(files: Vec<Bytes>) -> Result<RecordBatch> {
    let schema = span_schema();
    let mut batches = Vec::new();
    for bytes in files {
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?
            .with_batch_size(64 * 1024)
            .build()?;
        for batch in reader {
            // Same columns and types as written; the schema's metadata is
            // taken from the current one.
            batches.push(RecordBatch::try_new(
                Arc::clone(&schema),
                batch?.columns().to_vec(),
            )?);
        }
    }
    Ok(concat_batches(&schema, &batches)?)
}

/// Deletes a block: its meta first (so it stops being visible to a later
/// start), then its Parquet file. Files already gone are not an error.
pub async fn delete_block(store: &Arc<dyn ObjectStore>, parquet_path: &str) -> Result<()> {
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
        })
    }

    fn ids(groups: &[Vec<Arc<BlockMeta>>]) -> Vec<Vec<&str>> {
        groups
            .iter()
            .map(|group| group.iter().map(|block| block.id.as_str()).collect())
            .collect()
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

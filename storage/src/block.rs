//! Immutable Parquet blocks and their meta files.
//!
//! ```text
//! tenants/{tenant}/{signal}/{yyyy-mm-dd}/{hh}/{ulid}.parquet    written first
//! tenants/{tenant}/{signal}/{yyyy-mm-dd}/{hh}/{ulid}.meta.json  written last
//!                  signal = spans | metric_blocks   (see [`Signal`])
//! ```
//!
//! A block is visible only once its meta file exists, so a crash between the
//! two writes leaves an orphan Parquet file that the catalog removes at the
//! next start, never a half-visible block. The hour is that of the spans'
//! start times (of the metric points' `time`): one flush writes one block per
//! tenant, signal and hour.
//!
//! Inside a span block rows are sorted by trace id, then start time; columns
//! are zstd-compressed (level 3 when flushed, 9 when compacted) and
//! dictionary-encoded (except the high-cardinality ids), with page-level
//! statistics (so the page index prunes), and a
//! Parquet bloom filter on `trace_id` for readers that open the file anyway.
//! A metric block holds the `metrics` table's rows sorted by `time`, with
//! the same compression and statistics; its meta's `span_count` counts
//! points, its time range is that of the points, its trace-id filter is
//! empty.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{Array, AsArray, FixedSizeBinaryArray, RecordBatch};
use datafusion::arrow::datatypes::TimestampNanosecondType;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, Encoding, ZstdLevel};
use datafusion::parquet::file::metadata::{KeyValue, SortingColumn};
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use datafusion::parquet::schema::types::ColumnPath;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use crate::bloom::TraceIdFilter;
use crate::head::HeadRows;
use crate::{Result, Signal, StorageError};
use tracelake_model::TraceId;
use tracelake_model::schema::col;

const META_SUFFIX: &str = ".meta.json";
const PARQUET_SUFFIX: &str = ".parquet";
pub(crate) const NANOS_PER_HOUR: i64 = 3_600_000_000_000;

/// What the catalog knows of a block without opening it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockMeta {
    pub id: String,
    pub tenant: String,
    /// The Parquet file, relative to the store root.
    pub path: String,
    pub size_bytes: u64,
    pub span_count: u64,
    pub trace_count: u64,
    pub min_start_ns: i64,
    pub max_end_ns: i64,
    pub created_unix_ms: i64,
    pub trace_filter: TraceIdFilter,
    /// Blocks (Parquet paths) this one was compacted from: once this meta
    /// exists they are hidden, and deleted (see `compact`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replaces: Vec<String>,
    /// A flushed block: the last WAL segment its flush covered. Until the
    /// WAL records that segment as flushed, the block is not committed: a
    /// start-up finding it removes it (the replay stores its spans again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_through: Option<u64>,
    /// The collector that flushed it, on a store shared by several
    /// (`cluster`); its `wal_through` is that collector's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer: Option<String>,
}

/// The meta file on disk, versioned.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "version")]
enum MetaFile {
    #[serde(rename = "1")]
    V1(BlockMeta),
}

impl BlockMeta {
    /// The meta file's location for a Parquet path.
    pub fn meta_path_for(parquet_path: &str) -> Option<String> {
        parquet_path
            .strip_suffix(PARQUET_SUFFIX)
            .map(|stem| format!("{stem}{META_SUFFIX}"))
    }

    pub fn encode(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(&MetaFile::V1(self.clone()))
            .map_err(|error| StorageError::Corrupt(format!("encoding block meta: {error}")))
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        match serde_json::from_slice::<MetaFile>(bytes) {
            Ok(MetaFile::V1(meta)) => Ok(meta),
            Err(error) => Err(StorageError::Corrupt(format!("block meta: {error}"))),
        }
    }

    /// What the block holds, from its path.
    pub fn signal(&self) -> Option<Signal> {
        Signal::of_path(&self.path)
    }

    /// Whether spans of this block may overlap `[from, to]` (ns, inclusive).
    pub fn overlaps(&self, from: i64, to: i64) -> bool {
        self.min_start_ns <= to && self.max_end_ns >= from
    }

    pub fn may_contain(&self, trace_id: &TraceId) -> bool {
        self.trace_filter.may_contain(trace_id)
    }
}

/// Whether a store path is a block's meta file / a block, of any signal
/// (`tenants/{tenant}/{spans|metric_blocks}/...`; derived tables live
/// beside them).
pub(crate) fn is_meta_path(path: &str) -> bool {
    Signal::of_path(path).is_some() && path.ends_with(META_SUFFIX)
}

pub(crate) fn is_block_path(path: &str) -> bool {
    Signal::of_path(path).is_some() && path.ends_with(PARQUET_SUFFIX)
}

/// zstd level of a block a flush writes. Flushes are on the ingest path,
/// where each span's CPU counts, and their blocks live until compaction
/// merges them.
pub(crate) const FLUSH_ZSTD_LEVEL: i32 = 3;

/// zstd level of a block compaction writes: the form spans keep for their
/// retention. Measured on the `api`, `serverless` and `mesh` workloads
/// (`scripts/bench-storage.sh`): level 9 stores 10-15 % fewer bytes than
/// level 3, and encodes at about 0.6x its speed, which compaction (in the
/// background, once per span) can afford; past 9 each level buys about
/// 1 % for another 20 % of CPU.
pub(crate) const COMPACTION_ZSTD_LEVEL: i32 = 9;

/// Rows gathered into the writer at a time by [`encode_head`].
const GATHER_ROWS: usize = 8 * 1024;

/// Where a row goes in block order: hour, trace id, start time, then its
/// place in the head: its source batch and row there (field order is the
/// sort order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct SortKey {
    hour: i64,
    trace_id: [u8; 16],
    start_ns: i64,
    source: u32,
    row: u32,
}

/// Encodes head rows as one block per UTC hour of the spans' start times;
/// CPU only.
///
/// Only the sort keys are sorted (48 bytes a row); rows are then gathered
/// from the head batches into the Parquet writer `GATHER_ROWS` at a time
/// ([`HeadRows::interleave`], resource maps read from their shared
/// values). A flush holds no copy of the head beside it: the head stays
/// readable while it is flushed, so a copy would be a second head.
pub fn encode_head(
    tenant: &str,
    sources: &[HeadRows],
    row_group_rows: usize,
) -> Result<Vec<(Vec<u8>, BlockMeta)>> {
    encode_head_of(Signal::Spans, tenant, sources, row_group_rows)
}

/// [`encode_head`] for rows of `signal`: metric points are sorted by hour
/// and `time`.
pub(crate) fn encode_head_of(
    signal: Signal,
    tenant: &str,
    sources: &[HeadRows],
    row_group_rows: usize,
) -> Result<Vec<(Vec<u8>, BlockMeta)>> {
    let keys = sort_keys(signal, sources, true)?;
    let mut blocks = Vec::new();
    for hour_keys in keys.chunk_by(|a, b| a.hour == b.hour) {
        blocks.push(write_sorted(
            signal,
            tenant,
            hour_keys[0].hour,
            sources,
            hour_keys,
            row_group_rows,
        )?);
    }
    Ok(blocks)
}

/// Sorts `batch` by trace id then start time and encodes it as one block
/// of `hour` (the caller has split by hour); CPU only.
///
/// Returns the Parquet bytes and the meta (with `path`/`id` filled from
/// `tenant`, `hour` and a fresh ULID; `size_bytes` of the encoded file).
pub fn encode_block(
    tenant: &str,
    hour: i64,
    batch: &RecordBatch,
    row_group_rows: usize,
) -> Result<(Vec<u8>, BlockMeta)> {
    let rows = [HeadRows::new(batch.clone())];
    let keys = sort_keys(Signal::Spans, &rows, false)?;
    write_sorted(Signal::Spans, tenant, hour, &rows, &keys, row_group_rows)
}

/// The column whose value files a row into its hour (and orders it after
/// the trace id, for spans).
pub(crate) fn time_column(signal: Signal) -> &'static str {
    match signal {
        Signal::Spans => col::START_TIME,
        Signal::Metrics => tracelake_model::otlp_metrics::TIME,
    }
}

fn sort_keys(signal: Signal, sources: &[HeadRows], by_hour: bool) -> Result<Vec<SortKey>> {
    let corrupt = |name: &str| StorageError::Corrupt(format!("{signal:?} rows without {name}"));
    let mut keys = Vec::with_capacity(sources.iter().map(HeadRows::num_rows).sum());
    for (source, rows) in sources.iter().enumerate() {
        // Metric points have no trace id: they sort by time alone.
        let trace_ids = match signal {
            Signal::Spans => Some(
                rows.plain_column(col::TRACE_ID)
                    .and_then(|array| array.as_fixed_size_binary_opt())
                    .ok_or_else(|| corrupt(col::TRACE_ID))?,
            ),
            Signal::Metrics => None,
        };
        let starts = rows
            .plain_column(time_column(signal))
            .and_then(|array| array.as_primitive_opt::<TimestampNanosecondType>())
            .ok_or_else(|| corrupt(time_column(signal)))?;
        for row in 0..rows.num_rows() {
            let mut trace_id = [0u8; 16];
            if let Some(trace_ids) = trace_ids {
                let value = trace_ids.value(row);
                let len = value.len().min(16);
                trace_id[..len].copy_from_slice(&value[..len]);
            }
            let start_ns = starts.value(row);
            keys.push(SortKey {
                hour: if by_hour {
                    start_ns.div_euclid(NANOS_PER_HOUR)
                } else {
                    0
                },
                trace_id,
                start_ns,
                source: source as u32,
                row: row as u32,
            });
        }
    }
    keys.sort_unstable();
    Ok(keys)
}

/// Writes the rows of `keys` (sorted) as one block.
fn write_sorted(
    signal: Signal,
    tenant: &str,
    hour: i64,
    sources: &[HeadRows],
    keys: &[SortKey],
    row_group_rows: usize,
) -> Result<(Vec<u8>, BlockMeta)> {
    let traces = match signal {
        Signal::Spans => keys.chunk_by(|a, b| a.trace_id == b.trace_id).count(),
        Signal::Metrics => 0,
    };
    let mut writer = BlockWriter::of(signal, traces as u64, row_group_rows, FLUSH_ZSTD_LEVEL)?;
    let schema = signal.schema();
    for chunk in keys.chunks(GATHER_ROWS) {
        let rows: Vec<(usize, usize)> = chunk
            .iter()
            .map(|key| (key.source as usize, key.row as usize))
            .collect();
        writer.write(&HeadRows::interleave(&schema, sources, &rows)?)?;
    }
    writer.finish(tenant, hour)
}

fn trace_ids(batch: &RecordBatch) -> Result<&FixedSizeBinaryArray> {
    batch
        .column_by_name(col::TRACE_ID)
        .and_then(|array| array.as_fixed_size_binary_opt())
        .ok_or_else(|| StorageError::Corrupt("batch without trace_id".into()))
}

/// Encodes one block from batches already in block order (trace id, then
/// start time, across batches too; `time` for metric points), gathering its
/// meta on the way, so a merge of sorted blocks (`compact`) never
/// holds all its rows.
pub(crate) struct BlockWriter {
    signal: Signal,
    writer: ArrowWriter<Vec<u8>>,
    trace_filter: TraceIdFilter,
    last_trace: Option<TraceId>,
    trace_count: u64,
    span_count: u64,
    min_start_ns: Option<i64>,
    max_end_ns: Option<i64>,
}

impl BlockWriter {
    /// A writer of a `signal` block; `expected_traces` (an upper bound is
    /// fine; 0 for metrics) sizes the trace-id filters.
    pub(crate) fn of(
        signal: Signal,
        expected_traces: u64,
        row_group_rows: usize,
        zstd_level: i32,
    ) -> Result<Self> {
        let compression = Compression::ZSTD(ZstdLevel::try_new(zstd_level)?);
        let properties = match signal {
            Signal::Spans => writer_properties(expected_traces, row_group_rows, compression)?,
            Signal::Metrics => metrics_writer_properties(row_group_rows, compression)?,
        };
        let schema = match signal {
            Signal::Spans => crate::layout::block_schema(),
            Signal::Metrics => signal.schema(),
        };
        Ok(Self {
            signal,
            writer: ArrowWriter::try_new(Vec::new(), schema, Some(properties))?,
            trace_filter: TraceIdFilter::with_capacity(expected_traces as usize),
            last_trace: None,
            trace_count: 0,
            span_count: 0,
            min_start_ns: None,
            max_end_ns: None,
        })
    }

    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if self.signal == Signal::Spans {
            let trace_ids = trace_ids(batch)?;
            for row in 0..trace_ids.len() {
                let Ok(trace_id) = TraceId::try_from(trace_ids.value(row)) else {
                    continue;
                };
                if self.last_trace != Some(trace_id) {
                    self.trace_count += 1;
                    self.trace_filter.insert(&trace_id);
                    self.last_trace = Some(trace_id);
                }
            }
        }
        let (first, last) = match self.signal {
            Signal::Spans => (col::START_TIME, col::END_TIME),
            Signal::Metrics => (
                tracelake_model::otlp_metrics::TIME,
                tracelake_model::otlp_metrics::TIME,
            ),
        };
        let time_bound = |name: &str, pick_max: bool| {
            batch
                .column_by_name(name)
                .and_then(|array| array.as_primitive_opt::<TimestampNanosecondType>())
                .and_then(|array| {
                    if pick_max {
                        datafusion::arrow::compute::max(array)
                    } else {
                        datafusion::arrow::compute::min(array)
                    }
                })
        };
        if let Some(start) = time_bound(first, false) {
            self.min_start_ns = Some(self.min_start_ns.map_or(start, |min| min.min(start)));
        }
        if let Some(end) = time_bound(last, true) {
            self.max_end_ns = Some(self.max_end_ns.map_or(end, |max| max.max(end)));
        }
        self.span_count += batch.num_rows() as u64;
        match self.signal {
            Signal::Spans => self.writer.write(&crate::layout::to_block(batch)?)?,
            Signal::Metrics => self.writer.write(batch)?,
        }
        Ok(())
    }

    /// The Parquet bytes and the meta of a new block of `tenant` and `hour`
    /// (a fresh ULID names it).
    pub(crate) fn finish(self, tenant: &str, hour: i64) -> Result<(Vec<u8>, BlockMeta)> {
        let bytes = self.writer.into_inner()?;
        let min_start_ns = self.min_start_ns.unwrap_or(hour * NANOS_PER_HOUR);
        let max_end_ns = self.max_end_ns.unwrap_or(min_start_ns);
        let id = ulid::Ulid::new().to_string();
        let hour_start = DateTime::<Utc>::from_timestamp_nanos(hour * NANOS_PER_HOUR);
        let path = format!(
            "tenants/{tenant}/{}/{}/{}{PARQUET_SUFFIX}",
            self.signal.directory(),
            hour_start.format("%Y-%m-%d/%H"),
            id
        );
        let meta = BlockMeta {
            id,
            tenant: tenant.to_string(),
            path,
            size_bytes: bytes.len() as u64,
            span_count: self.span_count,
            trace_count: self.trace_count,
            min_start_ns,
            max_end_ns: max_end_ns.max(min_start_ns),
            created_unix_ms: Utc::now().timestamp_millis(),
            trace_filter: self.trace_filter,
            replaces: Vec::new(),
            wal_through: None,
            writer: None,
        };
        Ok((bytes, meta))
    }
}

/// A metric block: sorted by `time`, delta-encoded times, page statistics.
fn metrics_writer_properties(
    row_group_rows: usize,
    compression: Compression,
) -> Result<WriterProperties> {
    let schema = Signal::Metrics.schema();
    let time = ColumnPath::from(tracelake_model::otlp_metrics::TIME);
    Ok(WriterProperties::builder()
        .set_compression(compression)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(row_group_rows.max(1)))
        .set_data_page_row_count_limit(8 * 1024)
        .set_column_dictionary_enabled(time.clone(), false)
        .set_column_encoding(time, Encoding::DELTA_BINARY_PACKED)
        .set_sorting_columns(Some(vec![SortingColumn {
            column_idx: schema.index_of(tracelake_model::otlp_metrics::TIME)? as i32,
            descending: false,
            nulls_first: false,
        }]))
        .build())
}

fn writer_properties(
    trace_count: u64,
    row_group_rows: usize,
    compression: Compression,
) -> Result<WriterProperties> {
    let schema = crate::layout::block_schema();
    let index_of = |name: &str| {
        schema
            .index_of(name)
            .map(|index| index as i32)
            .map_err(StorageError::from)
    };
    let trace_id = ColumnPath::from(col::TRACE_ID);
    let mut builder = WriterProperties::builder();
    // Times are distinct per span and close to their neighbours (rows are
    // sorted by trace, then start): delta encoding, not a dictionary.
    for column in [col::START_TIME, col::END_TIME] {
        builder = builder
            .set_column_dictionary_enabled(ColumnPath::from(column), false)
            .set_column_encoding(ColumnPath::from(column), Encoding::DELTA_BINARY_PACKED);
    }
    Ok(builder
        .set_key_value_metadata(Some(vec![KeyValue::new(
            crate::layout::LAYOUT_KEY.to_string(),
            crate::layout::LAYOUT.to_string(),
        )]))
        .set_compression(compression)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(row_group_rows.max(1)))
        .set_data_page_row_count_limit(8 * 1024)
        .set_column_dictionary_enabled(trace_id.clone(), false)
        .set_column_dictionary_enabled(ColumnPath::from(col::SPAN_ID), false)
        .set_column_dictionary_enabled(ColumnPath::from(col::PARENT_SPAN_ID), false)
        .set_column_bloom_filter_enabled(trace_id.clone(), true)
        .set_column_bloom_filter_fpp(trace_id.clone(), 0.01)
        .set_column_bloom_filter_max_ndv(trace_id, trace_count.max(1))
        .set_sorting_columns(Some(vec![
            SortingColumn {
                column_idx: index_of(col::TRACE_ID)?,
                descending: false,
                nulls_first: false,
            },
            SortingColumn {
                column_idx: index_of(col::START_TIME)?,
                descending: false,
                nulls_first: false,
            },
        ]))
        .build())
}

/// Objects larger than this are uploaded in parts (S3 multipart upload).
const MULTIPART_THRESHOLD: usize = 16 * 1024 * 1024;
const MULTIPART_PART_BYTES: usize = 8 * 1024 * 1024;

/// Uploads `bytes`: one PUT when small, a multipart upload of 8 MiB parts
/// when large. Requests are retried by the store's retry policy; an
/// upload that still fails is aborted when its completion fails, and
/// otherwise left to the bucket's `AbortIncompleteMultipartUpload` rule.
async fn put_large(store: &Arc<dyn ObjectStore>, path: &Path, bytes: Vec<u8>) -> Result<()> {
    if bytes.len() <= MULTIPART_THRESHOLD {
        store.put(path, PutPayload::from(bytes)).await?;
        return Ok(());
    }
    let upload = store.put_multipart(path).await?;
    let mut writer =
        object_store::WriteMultipart::new_with_chunk_size(upload, MULTIPART_PART_BYTES);
    writer.write(&bytes);
    writer.finish().await?;
    Ok(())
}

/// Writes the Parquet file, then the meta file that makes it visible.
pub async fn put_block(
    store: &Arc<dyn ObjectStore>,
    bytes: Vec<u8>,
    meta: &BlockMeta,
) -> Result<()> {
    let meta_path = BlockMeta::meta_path_for(&meta.path).ok_or_else(|| {
        StorageError::Corrupt(format!("block path {} is not .parquet", meta.path))
    })?;
    put_large(store, &Path::from(meta.path.as_str()), bytes).await?;
    store
        .put(
            &Path::from(meta_path.as_str()),
            PutPayload::from(meta.encode()?),
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_paths_and_versioned_encoding() {
        assert_eq!(
            BlockMeta::meta_path_for("tenants/t/spans/2026-01-01/05/01ABC.parquet").as_deref(),
            Some("tenants/t/spans/2026-01-01/05/01ABC.meta.json")
        );
        assert_eq!(BlockMeta::meta_path_for("x.json"), None);
        let meta = BlockMeta {
            id: "01ABC".into(),
            tenant: "t".into(),
            path: "tenants/t/spans/2026-01-01/05/01ABC.parquet".into(),
            size_bytes: 10,
            span_count: 2,
            trace_count: 1,
            min_start_ns: 1,
            max_end_ns: 5,
            created_unix_ms: 0,
            trace_filter: TraceIdFilter::with_capacity(1),
            replaces: vec!["tenants/t/spans/2026-01-01/05/01AAA.parquet".into()],
            wal_through: Some(7),
            writer: Some("collector-a".into()),
        };
        let encoded = meta.encode().unwrap();
        assert!(String::from_utf8_lossy(&encoded).starts_with(r#"{"version":"1""#));
        assert_eq!(BlockMeta::decode(&encoded).unwrap(), meta);
        assert!(BlockMeta::decode(br#"{"version":"9"}"#).is_err());
        assert!(meta.overlaps(5, 9) && meta.overlaps(0, 1) && !meta.overlaps(6, 9));
    }
}

#[cfg(test)]
mod encode_tests {
    use datafusion::arrow::datatypes::TimestampNanosecondType;
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    use super::*;
    use tracelake_model::otlp::resource_spans_to_batch;
    use tracelake_workload::Workload;

    /// (trace id, start, span id) of every row, in order.
    fn keys(batches: &[RecordBatch]) -> Vec<(Vec<u8>, i64, Vec<u8>)> {
        let mut out = Vec::new();
        for batch in batches {
            let column = |name: &str| batch.column_by_name(name).unwrap().clone();
            let (trace_ids, span_ids) = (column(col::TRACE_ID), column(col::SPAN_ID));
            let starts = column(col::START_TIME);
            let starts = starts.as_primitive::<TimestampNanosecondType>();
            for row in 0..batch.num_rows() {
                out.push((
                    trace_ids.as_fixed_size_binary().value(row).to_vec(),
                    starts.value(row),
                    span_ids.as_fixed_size_binary().value(row).to_vec(),
                ));
            }
        }
        out
    }

    #[test]
    fn a_head_is_written_one_sorted_block_per_hour_with_every_row_whole() {
        // Three request batches whose spans straddle an hour boundary, and
        // more rows than one gather chunk.
        let hour_start = 1_767_225_600_000_000_000;
        let mut workload = Workload::new(9, hour_start - 2_000_000_000, 200_000);
        let batches: Vec<RecordBatch> = (0..3)
            .map(|_| {
                resource_spans_to_batch("t", &workload.batch(GATHER_ROWS / 2))
                    .unwrap()
                    .batch
                    .unwrap()
            })
            .collect();
        let head: Vec<HeadRows> = batches.iter().cloned().map(HeadRows::new).collect();
        let blocks = encode_head("t", &head, 4096).unwrap();
        assert_eq!(blocks.len(), 2, "one block per hour");

        let mut written = Vec::new();
        let mut all_rows = Vec::new();
        for (bytes, meta) in &blocks {
            let read: Vec<RecordBatch> =
                ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes.clone()))
                    .unwrap()
                    .build()
                    .unwrap()
                    .map(Result::unwrap)
                    .collect();
            let block_keys = keys(&read);
            assert!(
                block_keys
                    .windows(2)
                    .all(|pair| (&pair[0].0, pair[0].1) <= (&pair[1].0, pair[1].1))
            );
            assert_eq!(meta.span_count as usize, block_keys.len());
            let hour = meta.min_start_ns.div_euclid(NANOS_PER_HOUR);
            assert!(
                block_keys
                    .iter()
                    .all(|(_, start, _)| start.div_euclid(NANOS_PER_HOUR) == hour)
            );
            written.extend(block_keys);
            all_rows.extend(read);
        }
        let mut expected = keys(&batches);
        expected.sort();
        written.sort();
        assert_eq!(written, expected);

        // Every stored column of every row comes back as it went in,
        // shared resources whole.
        let stored: Vec<String> = all_rows[0]
            .schema()
            .fields()
            .iter()
            .map(|field| field.name().clone())
            .collect();
        assert!(stored.iter().any(|name| name == col::RESOURCE_ATTRIBUTES));
        let by_span = |batches: &[RecordBatch]| {
            let mut rows: Vec<(Vec<u8>, Vec<String>)> = Vec::new();
            for batch in batches {
                let span_ids = batch.column_by_name(col::SPAN_ID).unwrap();
                for row in 0..batch.num_rows() {
                    let values = stored
                        .iter()
                        .map(|name| {
                            let column = batch.column_by_name(name).unwrap();
                            format!("{:?}", column.slice(row, 1))
                        })
                        .collect();
                    rows.push((span_ids.as_fixed_size_binary().value(row).to_vec(), values));
                }
            }
            rows.sort();
            rows
        };
        assert_eq!(by_span(&all_rows), by_span(&batches));
    }
}

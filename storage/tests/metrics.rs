//! OTLP metric points take the spans' path: WAL (replayed after a crash),
//! head (queryable at once), blocks per tenant and hour, compaction and
//! retention; files written one per request before that stay readable.

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::Int64Type;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tracelake_model::otlp_metrics::metrics_to_batch;
use tracelake_storage::DerivedTable;
use tracelake_storage::{
    DerivedWriter, MetricWriter, Retention, SpanFilter, SpanReader, SpanSnapshot, SpanWriter,
    Storage, StorageConfig, local_store,
};
use tracelake_workload::samples::{sample_resource_metrics, sample_resource_spans};

const T0: u64 = 1_767_225_600_000_000_000; // 2026-01-01T00:00:00Z
const HOUR: u64 = 3_600_000_000_000;

fn points(tenant: &str, seed: u64, count: u64, time_ns: u64) -> RecordBatch {
    metrics_to_batch(tenant, &[sample_resource_metrics(seed, count, time_ns)])
        .unwrap()
        .batch
        .unwrap()
}

fn config(dir: &std::path::Path) -> StorageConfig {
    StorageConfig {
        data_dir: dir.to_path_buf(),
        compaction_delete_delay: Duration::ZERO,
        ..StorageConfig::default()
    }
}

/// The `value_int` of every point a snapshot holds, head and files, sorted.
fn values(dir: &std::path::Path, snapshot: &SpanSnapshot) -> Vec<i64> {
    let mut batches: Vec<RecordBatch> = snapshot
        .head
        .iter()
        .map(|rows| rows.to_batch().unwrap())
        .collect();
    for block in &snapshot.blocks {
        let bytes = std::fs::read(dir.join(block.path.as_ref())).unwrap();
        batches.extend(
            ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
                .unwrap()
                .build()
                .unwrap()
                .map(Result::unwrap),
        );
    }
    let mut out: Vec<i64> = batches
        .iter()
        .flat_map(|batch| {
            batch
                .column_by_name("value_int")
                .unwrap()
                .as_primitive::<Int64Type>()
                .iter()
                .map(Option::unwrap)
                .collect::<Vec<_>>()
        })
        .collect();
    out.sort_unstable();
    out
}

fn expected(seeds: impl IntoIterator<Item = u64>, count: u64) -> Vec<i64> {
    let mut out: Vec<i64> = seeds
        .into_iter()
        .flat_map(|seed| (0..count).map(move |index| (seed * 1_000_000 + index) as i64))
        .collect();
    out.sort_unstable();
    out
}

/// Every file under `dir`.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn points_are_in_the_head_at_once_replayed_after_a_crash_then_in_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let store = local_store(dir.path()).unwrap();
    let (storage, _) = Storage::open(config(dir.path()), Arc::clone(&store))
        .await
        .unwrap();
    storage
        .append_metrics("t1", points("t1", 1, 3, T0))
        .await
        .unwrap();
    storage
        .append_metrics("t1", points("t1", 2, 2, T0 + HOUR))
        .await
        .unwrap();
    storage
        .append("t1", {
            tracelake_model::otlp::resource_spans_to_batch("t1", &[sample_resource_spans(9, 2, T0)])
                .unwrap()
                .batch
                .unwrap()
        })
        .await
        .unwrap();
    let snapshot = storage.metrics_snapshot("t1", None);
    assert_eq!((snapshot.head.len(), snapshot.blocks.len()), (2, 0));
    assert_eq!(
        values(dir.path(), &snapshot),
        [expected([1], 3), expected([2], 2)].concat()
    );
    // Pruned by time: the second hour holds the second request only.
    let second_hour = storage.metrics_snapshot("t1", Some(((T0 + HOUR) as i64, i64::MAX)));
    assert_eq!(values(dir.path(), &second_hour), expected([2], 2));
    assert!(storage.metrics_snapshot("t2", None).head.is_empty());
    // Spans and points stay apart.
    assert_eq!(storage.snapshot("t1", &SpanFilter::default()).head.len(), 1);
    assert!(
        files_under(&dir.path().join("tenants")).is_empty(),
        "nothing is written to the store before a flush"
    );

    // A crash (no shutdown, no flush): the WAL brings every point back.
    drop(storage);
    let (storage, stats) = Storage::open(config(dir.path()), Arc::clone(&store))
        .await
        .unwrap();
    assert_eq!(stats.replay.records, 3);
    assert_eq!(stats.replay.undecodable_records, 0);
    let snapshot = storage.metrics_snapshot("t1", None);
    assert_eq!(snapshot.head.len(), 2);
    assert_eq!(
        values(dir.path(), &snapshot),
        [expected([1], 3), expected([2], 2)].concat()
    );

    // A flush writes one metric block per tenant and hour, beside the spans'.
    let flushed = storage.flush().await.unwrap();
    assert_eq!((flushed.blocks, flushed.points, flushed.spans), (3, 5, 2));
    let snapshot = storage.metrics_snapshot("t1", None);
    assert_eq!((snapshot.head.len(), snapshot.blocks.len()), (0, 2));
    for block in &snapshot.blocks {
        assert!(
            block
                .path
                .as_ref()
                .starts_with("tenants/t1/metric_blocks/2026-01-01/0"),
            "{}",
            block.path
        );
    }
    assert_eq!(
        values(dir.path(), &snapshot),
        [expected([1], 3), expected([2], 2)].concat()
    );
    assert_eq!(
        storage.snapshot("t1", &SpanFilter::default()).blocks.len(),
        1
    );
    // After a restart the blocks are loaded, nothing is replayed twice.
    drop(storage);
    let (storage, stats) = Storage::open(config(dir.path()), store).await.unwrap();
    assert_eq!(stats.replay.records, 0);
    assert_eq!(stats.catalog.blocks, 3);
    assert_eq!(
        values(dir.path(), &storage.metrics_snapshot("t1", None)),
        [expected([1], 3), expected([2], 2)].concat()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_requests_leave_one_block_per_tenant_and_hour_after_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let store = local_store(dir.path()).unwrap();
    let (storage, _) = Storage::open(config(dir.path()), Arc::clone(&store))
        .await
        .unwrap();
    // 1,000 requests of 5 points, two tenants, two hours; a flush every
    // 100 requests, as a flusher would.
    for seed in 0..1_000u64 {
        let tenant = if seed % 2 == 0 { "a" } else { "b" };
        let time = T0 + (seed % 4 / 2) * HOUR + seed;
        storage
            .append_metrics(tenant, points(tenant, seed, 5, time))
            .await
            .unwrap();
        if seed % 100 == 99 {
            storage.flush().await.unwrap();
        }
    }
    let tenants_dir = dir.path().join("tenants");
    assert_eq!(
        files_under(&tenants_dir).len(),
        10 * 4 * 2,
        "10 flushes x 4 windows x 2 files"
    );
    let stats = storage.compact().await.unwrap();
    assert_eq!((stats.source_blocks, stats.written_blocks), (40, 4));
    // The sources go once their delay (zero here) passed: at the next pass.
    storage.compact().await.unwrap();
    let files = files_under(&tenants_dir);
    assert_eq!(
        files.len(),
        4 * 2,
        "one block (Parquet + meta) per tenant and hour: {files:?}"
    );
    let all_a: Vec<u64> = (0..1_000).filter(|seed| seed % 2 == 0).collect();
    assert_eq!(
        values(dir.path(), &storage.metrics_snapshot("a", None)),
        expected(all_a, 5)
    );
    // Merged blocks are ordered by time, as flushed ones are.
    let block = &storage.metrics_snapshot("b", None).blocks[0];
    let bytes = std::fs::read(dir.path().join(block.path.as_ref())).unwrap();
    let mut times = Vec::new();
    for batch in ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
        .unwrap()
        .build()
        .unwrap()
    {
        let batch = batch.unwrap();
        let column = batch.column_by_name("time").unwrap();
        let column = column.as_primitive::<datafusion::arrow::datatypes::TimestampNanosecondType>();
        times.extend(column.values().iter().copied());
    }
    assert_eq!(times.len(), 250 * 5);
    assert!(times.windows(2).all(|pair| pair[0] <= pair[1]));
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_removes_old_metric_blocks_and_keeps_recent_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = local_store(dir.path()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let config = StorageConfig {
        retention: Retention {
            default: Duration::from_secs(24 * 3600),
            tenants: Default::default(),
        },
        ..config(dir.path())
    };
    let (storage, _) = Storage::open(config, Arc::clone(&store)).await.unwrap();
    storage
        .append_metrics("t", points("t", 1, 4, T0))
        .await
        .unwrap();
    storage
        .append_metrics("t", points("t", 2, 3, now - HOUR))
        .await
        .unwrap();
    storage.flush().await.unwrap();
    let blocks = storage.metrics_snapshot("t", None).blocks;
    assert_eq!(blocks.len(), 2);
    let old_block = blocks
        .iter()
        .find(|block| block.path.as_ref().contains("/2026-01-01/"))
        .map(|block| dir.path().join(block.path.as_ref()))
        .unwrap();
    assert!(old_block.exists());

    let stats = storage.compact().await.unwrap();
    assert_eq!(stats.expired_blocks, 1);
    assert!(!old_block.exists(), "{}", old_block.display());
    assert_eq!(
        values(dir.path(), &storage.metrics_snapshot("t", None)),
        expected([2], 3)
    );
}

/// A data dir as the previous release left it: span records in the WAL
/// (record kind 1, the only kind then) and metric points in one file per
/// request under `tenants/{t}/metrics/`. Both read as before; the old files
/// are expired by retention like the rest.
#[tokio::test(flavor = "multi_thread")]
async fn a_data_dir_from_before_opens_with_its_wal_and_its_metric_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = local_store(dir.path()).unwrap();
    {
        let (storage, _) = Storage::open(config(dir.path()), Arc::clone(&store))
            .await
            .unwrap();
        storage
            .append(
                "t",
                tracelake_model::otlp::resource_spans_to_batch(
                    "t",
                    &[sample_resource_spans(1, 3, T0)],
                )
                .unwrap()
                .batch
                .unwrap(),
            )
            .await
            .unwrap();
        // How the previous release stored a metrics export request.
        for seed in [1, 2] {
            storage
                .write_derived("t", DerivedTable::Metrics, points("t", seed, 2, T0))
                .await
                .unwrap();
        }
    }
    let legacy_files = files_under(&dir.path().join("tenants/t/metrics"));
    assert_eq!(legacy_files.len(), 2);
    // The WAL holds only kind-1 records, byte for byte as before.
    let segments: Vec<_> = files_under(&dir.path().join("wal"))
        .into_iter()
        .filter(|path| path.extension().is_some_and(|ext| ext == "wal"))
        .collect();
    let record = std::fs::read(&segments[0]).unwrap();
    assert_eq!(&record[..8], b"TLWAL\0\x01\x00");
    assert_eq!(record[16], 1, "span batch record kind");

    let (storage, stats) = Storage::open(config(dir.path()), Arc::clone(&store))
        .await
        .unwrap();
    assert_eq!(
        (stats.replay.records, stats.replay.undecodable_records),
        (1, 0)
    );
    assert_eq!(
        stats.catalog.orphans_removed, 0,
        "old metric files are not orphans"
    );
    assert_eq!(storage.snapshot("t", &SpanFilter::default()).head.len(), 1);
    storage
        .append_metrics("t", points("t", 3, 2, T0))
        .await
        .unwrap();
    storage.flush().await.unwrap();
    storage.compact().await.unwrap();
    for file in &legacy_files {
        assert!(file.exists(), "{}", file.display());
    }
    let snapshot = storage.metrics_snapshot("t", None);
    assert_eq!(snapshot.blocks.len(), 3, "two old files and a block");
    assert_eq!(values(dir.path(), &snapshot), expected([1, 2, 3], 2));

    // Retention drops the old files with the blocks of their hour.
    drop(storage);
    let config = StorageConfig {
        retention: Retention {
            default: Duration::from_secs(24 * 3600),
            tenants: Default::default(),
        },
        ..config(dir.path())
    };
    let (storage, _) = Storage::open(config, store).await.unwrap();
    storage.compact().await.unwrap();
    storage.compact().await.unwrap();
    assert!(storage.metrics_snapshot("t", None).blocks.is_empty());
    for file in &legacy_files {
        assert!(!file.exists(), "{}", file.display());
    }
}

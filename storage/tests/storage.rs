//! Storage engine tests: OTLP round trip through the Arrow schema, the WAL
//! under torn tails, and the engine's append / flush / replay contract.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use opentelemetry_proto::tonic::trace::v1::Span;
use tracelake_model::TraceId;
use tracelake_model::otlp::{batches_to_traces_data, resource_spans_to_batch};
use tracelake_storage::internals::{Wal, encode_payload};
use tracelake_storage::{
    FsyncPolicy, SpanFilter, SpanReader, SpanWriter, Storage, StorageConfig, local_store,
};
use tracelake_workload::samples::sample_resource_spans;

const T0: u64 = 1_767_225_600_000_000_000; // 2026-01-01T00:00:00Z

fn spans_sorted(
    resource_spans: &[opentelemetry_proto::tonic::trace::v1::ResourceSpans],
) -> Vec<Span> {
    let mut spans: Vec<Span> = resource_spans
        .iter()
        .flat_map(|resource| resource.scope_spans.iter())
        .flat_map(|scope| scope.spans.iter().cloned())
        .collect();
    spans.sort_by(|a, b| a.span_id.cmp(&b.span_id));
    spans
}

fn batch(seed: u64, spans: u64, start: u64) -> RecordBatch {
    resource_spans_to_batch("t1", &[sample_resource_spans(seed, spans, start)])
        .unwrap()
        .batch
        .unwrap()
}

#[test]
fn otlp_round_trips_through_the_span_schema() {
    let sent = vec![
        sample_resource_spans(1, 4, T0),
        sample_resource_spans(2, 3, T0 + 5),
    ];
    let converted = resource_spans_to_batch("t1", &sent).unwrap();
    assert_eq!(converted.accepted, 7);
    assert!(converted.rejections.is_empty());
    let back = batches_to_traces_data(&[converted.batch.unwrap()]).unwrap();
    assert_eq!(spans_sorted(&back.resource_spans), spans_sorted(&sent));
    // Resources and scopes are regrouped as sent.
    assert_eq!(back.resource_spans.len(), 2);
    for (got, want) in back.resource_spans.iter().zip(&sent) {
        assert_eq!(got.resource, want.resource);
        assert_eq!(got.schema_url, want.schema_url);
        assert_eq!(got.scope_spans[0].scope, want.scope_spans[0].scope);
        assert_eq!(
            got.scope_spans[0].schema_url,
            want.scope_spans[0].schema_url
        );
    }
}

#[test]
fn derived_columns_are_filled() {
    let converted = batch(3, 3, T0);
    let context = datafusion::prelude::SessionContext::new();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let rows = runtime.block_on(async {
        context.register_batch("spans", converted).unwrap();
        let frame = context
            .sql("SELECT name, kind, service_name, service_type, http_status_code, xray_fault, xray_error, status_code, duration_ns, attributes['ratio']['double'] AS ratio FROM spans ORDER BY name")
            .await
            .unwrap();
        datafusion::arrow::util::pretty::pretty_format_batches(&frame.collect().await.unwrap())
            .unwrap()
            .to_string()
    });
    let expected = "\
+------+----------+--------------+-----------------------+------------------+------------+------------+-------------+-------------+-------+
| name | kind     | service_name | service_type          | http_status_code | xray_fault | xray_error | status_code | duration_ns | ratio |
+------+----------+--------------+-----------------------+------------------+------------+------------+-------------+-------------+-------+
| op-0 | internal | svc-0        | AWS::Lambda::Function | 200              | false      | false      | unset       | 500007      | 0.125 |
| op-1 | server   | svc-0        | AWS::Lambda::Function | 200              | false      | false      | unset       | 500007      | 0.125 |
| op-2 | client   | svc-0        | AWS::Lambda::Function | 503              | true       | false      | error       | 500007      | 0.125 |
+------+----------+--------------+-----------------------+------------------+------------+------------+-------------+-------------+-------+";
    assert_eq!(rows, expected);
}

/// A WAL in `dir` with `fsync = always` and segments that never rotate.
fn open_wal(
    dir: &std::path::Path,
) -> (
    Wal,
    Vec<tracelake_storage::internals::WalRecord>,
    tracelake_storage::internals::ReplayStats,
) {
    Wal::open(
        dir,
        FsyncPolicy::Always,
        std::time::Duration::from_millis(10),
        1 << 30,
    )
    .unwrap()
}

#[test]
fn wal_replays_every_prefix_of_a_torn_segment() {
    let dir = tempfile::tempdir().unwrap();
    let wal_dir = dir.path().join("wal");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    {
        let (wal, records, stats) = open_wal(&wal_dir);
        assert!(records.is_empty());
        assert_eq!(stats.torn_records, 0);
        runtime.block_on(async {
            for seed in 0..3 {
                wal.append(encode_payload("t1", &batch(seed, 2, T0)).unwrap())
                    .await
                    .unwrap();
            }
        });
    }
    let segment = std::fs::read_dir(&wal_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| std::fs::metadata(p).unwrap().len() > 8)
        .unwrap();
    let full = std::fs::read(&segment).unwrap();
    // Cut the segment at many points: start-up never fails, and replays
    // exactly the records that are whole.
    let mut boundaries = Vec::new();
    let mut offset = 8;
    while offset < full.len() {
        let len = u32::from_le_bytes(full[offset..offset + 4].try_into().unwrap()) as usize;
        offset += 8 + len;
        boundaries.push(offset);
    }
    assert_eq!(boundaries.len(), 3);
    for cut in (0..full.len())
        .step_by(97)
        .chain([full.len() - 1, boundaries[0], boundaries[0] + 3])
    {
        let case_dir = dir.path().join(format!("cut-{cut}"));
        std::fs::create_dir_all(&case_dir).unwrap();
        let case_segment = case_dir.join(segment.file_name().unwrap());
        std::fs::write(&case_segment, &full[..cut]).unwrap();
        let (wal, records, stats) = open_wal(&case_dir);
        let whole = boundaries.iter().filter(|end| **end <= cut).count();
        assert_eq!(records.len(), whole, "cut at {cut}");
        let torn = match cut {
            0 | 8 => false,
            1..8 => true,
            _ => !boundaries.contains(&cut),
        };
        assert_eq!(
            stats.torn_records,
            usize::from(torn),
            "cut at {cut}: {stats:?}"
        );
        drop(wal);
        // A second open finds a clean log.
        let (_wal, again, stats) = open_wal(&case_dir);
        assert_eq!(again.len(), whole);
        assert_eq!(stats.torn_records, 0);
    }
    // A flipped bit fails the CRC: the record and what follows it are dropped.
    let mut corrupt = full.clone();
    corrupt[boundaries[0] + 20] ^= 0x40;
    let case_dir = dir.path().join("bitflip");
    std::fs::create_dir_all(&case_dir).unwrap();
    std::fs::write(case_dir.join(segment.file_name().unwrap()), &corrupt).unwrap();
    let (_wal, records, stats) = open_wal(&case_dir);
    assert_eq!(records.len(), 1);
    assert_eq!(stats.torn_records, 1);
}

fn config(dir: &std::path::Path) -> StorageConfig {
    StorageConfig {
        data_dir: dir.to_path_buf(),
        ..StorageConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn appended_spans_are_queryable_then_flushed_then_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let store = local_store(dir.path()).unwrap();
    let (storage, _) = Storage::open(config(dir.path()), Arc::clone(&store))
        .await
        .unwrap();
    storage.append("t1", batch(1, 3, T0)).await.unwrap();
    storage
        .append("t1", batch(2, 3, T0 + 3_600_000_000_000))
        .await
        .unwrap();
    storage.append("t2", batch(3, 3, T0)).await.unwrap();
    let trace_one =
        TraceId::try_from(tracelake_workload::samples::trace_id_bytes(1).as_slice()).unwrap();
    let all = SpanFilter::default();
    let by_trace = SpanFilter {
        trace_ids: Some(vec![trace_one]),
        ..SpanFilter::default()
    };

    let snapshot = storage.snapshot("t1", &all);
    assert_eq!((snapshot.head.len(), snapshot.blocks.len()), (2, 0));
    assert_eq!(storage.snapshot("t1", &by_trace).head.len(), 1);
    assert_eq!(storage.snapshot("nobody", &all).head.len(), 0);

    let flushed = storage.flush().await.unwrap();
    // t1 spans two hours -> two blocks; t2 one.
    assert_eq!(flushed.blocks, 3);
    assert_eq!(flushed.spans, 9);
    let snapshot = storage.snapshot("t1", &all);
    assert_eq!((snapshot.head.len(), snapshot.blocks.len()), (0, 2));
    assert_eq!(storage.snapshot("t1", &by_trace).blocks.len(), 1);
    let hour_two = SpanFilter {
        time_range_ns: Some((T0 as i64 + 3_600_000_000_000, i64::MAX)),
        ..SpanFilter::default()
    };
    assert_eq!(storage.snapshot("t1", &hour_two).blocks.len(), 1);
    let path = snapshot.blocks[0].path.to_string();
    assert!(path.starts_with("tenants/t1/spans/2026-01-01/0"), "{path}");
    assert!(dir.path().join(&path).exists());
    assert!(
        dir.path()
            .join(path.replace(".parquet", ".meta.json"))
            .exists()
    );

    // Unflushed appends come back from the WAL; flushed ones from blocks.
    storage.append("t1", batch(4, 2, T0)).await.unwrap();
    drop(storage);
    // An orphan block (crash between the two writes of a flush) is removed.
    let orphan = dir
        .path()
        .join("tenants/t1/spans/2026-01-01/00/01ORPHAN.parquet");
    std::fs::write(&orphan, b"PAR1").unwrap();
    let (storage, stats) = Storage::open(config(dir.path()), store).await.unwrap();
    assert_eq!(stats.catalog.blocks, 3);
    assert_eq!(stats.catalog.orphans_removed, 1);
    assert!(!orphan.exists());
    assert_eq!(stats.replay.records, 1);
    let snapshot = storage.snapshot("t1", &all);
    assert_eq!((snapshot.head.len(), snapshot.blocks.len()), (1, 2));
    // The flushed WAL segments are gone: nothing was replayed twice.
    assert_eq!(storage.stats().head.active_batches, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn appends_are_refused_after_shutdown_and_bad_tenants_always() {
    let dir = tempfile::tempdir().unwrap();
    let (storage, _) = Storage::open(config(dir.path()), local_store(dir.path()).unwrap())
        .await
        .unwrap();
    for tenant in ["", "..", "a/b", "x y", &"t".repeat(200)] {
        assert!(
            storage.append(tenant, batch(1, 1, T0)).await.is_err(),
            "{tenant:?}"
        );
    }
    storage.append("ok", batch(1, 1, T0)).await.unwrap();
    let flushed = storage.shutdown().await.unwrap();
    assert_eq!(flushed.spans, 1);
    assert!(storage.append("ok", batch(2, 1, T0)).await.is_err());
}

/// Every span in the blocks of `tenant`, in span-id order.
fn block_spans(storage: &Storage, dir: &std::path::Path, tenant: &str) -> Vec<Span> {
    let snapshot = storage.snapshot(tenant, &SpanFilter::default());
    assert!(snapshot.head.is_empty());
    let mut batches = Vec::new();
    for block in &snapshot.blocks {
        let file = std::fs::File::open(dir.join(block.path.as_ref())).unwrap();
        let reader =
            datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(file, 1024)
                .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            batches.push(tracelake_storage::layout::to_spans(&batch).unwrap());
        }
    }
    spans_sorted(&batches_to_traces_data(&batches).unwrap().resource_spans)
}

#[tokio::test(flavor = "multi_thread")]
async fn compaction_merges_an_hours_blocks_and_a_restart_finishes_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = local_store(dir.path()).unwrap();
    let config = StorageConfig {
        compaction_max_block_spans: 100,
        // Sources stay on disk, as if a query still read them.
        compaction_delete_delay: std::time::Duration::from_secs(3600),
        ..config(dir.path())
    };
    let (storage, _) = Storage::open(config.clone(), Arc::clone(&store))
        .await
        .unwrap();
    // Five flushes of the same hour, one of another hour, one of another tenant.
    for seed in 0..5 {
        storage
            .append("t1", batch(seed, 12, T0 + seed * 1000))
            .await
            .unwrap();
        storage.flush().await.unwrap();
    }
    storage
        .append("t1", batch(9, 4, T0 + 3_600_000_000_000))
        .await
        .unwrap();
    storage.append("t2", batch(10, 4, T0)).await.unwrap();
    storage.flush().await.unwrap();
    let before = block_spans(&storage, dir.path(), "t1");
    assert_eq!(before.len(), 64);
    assert_eq!(
        storage.snapshot("t1", &SpanFilter::default()).blocks.len(),
        6
    );
    let sources: Vec<_> = storage
        .snapshot("t1", &SpanFilter::default())
        .blocks
        .iter()
        .map(|block| dir.path().join(block.path.as_ref()))
        .collect();

    let stats = storage.compact().await.unwrap();
    assert_eq!((stats.source_blocks, stats.written_blocks), (5, 1));
    assert_eq!(stats.spans, 60);
    assert_eq!(
        storage.snapshot("t1", &SpanFilter::default()).blocks.len(),
        2
    );
    assert_eq!(
        storage.snapshot("t2", &SpanFilter::default()).blocks.len(),
        1
    );
    assert_eq!(block_spans(&storage, dir.path(), "t1"), before);
    // A trace is still found by id alone, in the merged block.
    let trace =
        TraceId::try_from(tracelake_workload::samples::trace_id_bytes(3).as_slice()).unwrap();
    let by_trace = SpanFilter {
        trace_ids: Some(vec![trace]),
        ..SpanFilter::default()
    };
    assert_eq!(storage.snapshot("t1", &by_trace).blocks.len(), 1);
    // Nothing left to merge.
    assert_eq!(storage.compact().await.unwrap(), Default::default());
    assert!(sources.iter().all(|path| path.exists()));
    assert_eq!(storage.stats().compacted_blocks, 5);

    // A restart before the delayed delete drops and deletes the sources.
    drop(storage);
    let (storage, stats) = Storage::open(config, store).await.unwrap();
    assert_eq!(stats.catalog.replaced_removed, 5);
    assert_eq!(stats.catalog.blocks, 3);
    let merged_sources = sources.iter().filter(|path| !path.exists()).count();
    assert_eq!(merged_sources, 5, "{sources:?}");
    assert_eq!(block_spans(&storage, dir.path(), "t1"), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn compacted_sources_are_deleted_after_the_delay() {
    let dir = tempfile::tempdir().unwrap();
    let config = StorageConfig {
        compaction_delete_delay: std::time::Duration::ZERO,
        ..config(dir.path())
    };
    let (storage, _) = Storage::open(config, local_store(dir.path()).unwrap())
        .await
        .unwrap();
    for seed in 0..3 {
        storage.append("t1", batch(seed, 5, T0)).await.unwrap();
        storage.flush().await.unwrap();
    }
    let files = || {
        walkdir(dir.path().join("tenants/t1/spans"))
            .into_iter()
            .filter(|path| path.extension().is_some_and(|ext| ext == "parquet"))
            .count()
    };
    assert_eq!(files(), 3);
    assert_eq!(storage.compact().await.unwrap().source_blocks, 3);
    assert_eq!(files(), 1);
    assert_eq!(block_spans(&storage, dir.path(), "t1").len(), 15);
}

fn walkdir(dir: std::path::PathBuf) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walkdir(path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn appends_over_the_head_limit_are_refused_until_a_flush() {
    let dir = tempfile::tempdir().unwrap();
    let one = batch(1, 10, T0);
    let config = StorageConfig {
        // Room for one batch, not two (as the head counts them: resources
        // shared).
        max_head_bytes: tracelake_storage::internals::HeadBatch::new("t1", one.clone()).bytes
            as u64
            + 1,
        ..config(dir.path())
    };
    let (storage, _) = Storage::open(config, local_store(dir.path()).unwrap())
        .await
        .unwrap();
    storage.check_capacity().unwrap();
    storage.append("t1", one).await.unwrap();
    storage.append("t1", batch(2, 10, T0)).await.unwrap();
    let refused = storage.append("t1", batch(3, 10, T0)).await.unwrap_err();
    assert!(
        matches!(refused, tracelake_storage::StorageError::Overloaded { .. }),
        "{refused}"
    );
    assert!(storage.check_capacity().is_err());
    assert_eq!(storage.stats().appended_spans, 20);
    assert_eq!(storage.stats().refused_appends, 2);
    storage.flush().await.unwrap();
    storage.append("t1", batch(3, 10, T0)).await.unwrap();
    assert_eq!(storage.stats().appended_spans, 30);
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_anywhere_in_a_flush_stores_each_span_once() {
    // The two windows of a flush: blocks written but the WAL not yet told
    // (its directory as before the flush), and the WAL told but its
    // segments not yet deleted (the segment files as before the flush).
    for blocks_uncommitted in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let store = local_store(dir.path()).unwrap();
        let (storage, _) = Storage::open(config(dir.path()), Arc::clone(&store))
            .await
            .unwrap();
        // An earlier, complete flush, so the WAL already holds a mark.
        storage.append("t1", batch(1, 2, T0)).await.unwrap();
        storage.flush().await.unwrap();
        storage.append("t1", batch(2, 3, T0)).await.unwrap();
        storage.append("t1", batch(3, 4, T0)).await.unwrap();
        let wal = dir.path().join("wal");
        let saved = dir.path().join("saved-wal");
        copy_dir(&wal, &saved);
        assert_eq!(storage.flush().await.unwrap().spans, 7);
        drop(storage);
        if blocks_uncommitted {
            std::fs::remove_dir_all(&wal).unwrap();
            copy_dir(&saved, &wal);
        } else {
            for entry in std::fs::read_dir(&saved).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|ext| ext == "wal") {
                    std::fs::copy(&path, wal.join(path.file_name().unwrap())).unwrap();
                }
            }
        }

        let (storage, stats) = Storage::open(config(dir.path()), Arc::clone(&store))
            .await
            .unwrap();
        if blocks_uncommitted {
            assert_eq!(stats.catalog.uncommitted_removed, 1, "{stats:?}");
            assert_eq!(stats.replay.records, 2, "{stats:?}");
        } else {
            assert_eq!(stats.catalog.uncommitted_removed, 0, "{stats:?}");
            assert!(stats.replay.flushed_segments_removed >= 1, "{stats:?}");
            assert_eq!(stats.replay.records, 0, "{stats:?}");
        }
        storage.flush().await.unwrap();
        let spans = block_spans(&storage, dir.path(), "t1");
        let mut ids: Vec<&[u8]> = spans.iter().map(|span| span.span_id.as_slice()).collect();
        ids.dedup();
        assert_eq!(
            (spans.len(), ids.len()),
            (9, 9),
            "uncommitted {blocks_uncommitted}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_drops_a_tenants_old_spans_and_derived_rows_and_keeps_the_rest() {
    use tracelake_model::derived::{SpanMetricSet, span_facts};
    use tracelake_storage::DerivedTable;
    use tracelake_storage::{DerivedWriter, Retention};

    let dir = tempfile::tempdir().unwrap();
    let store = local_store(dir.path()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let config = StorageConfig {
        compaction_delete_delay: std::time::Duration::ZERO,
        retention: Retention {
            default: std::time::Duration::ZERO,
            tenants: [(
                "short".to_string(),
                std::time::Duration::from_secs(24 * 3600),
            )]
            .into(),
        },
        ..config(dir.path())
    };
    let (storage, _) = Storage::open(config, Arc::clone(&store)).await.unwrap();
    let old = T0; // months before now
    for tenant in ["short", "forever"] {
        for (seed, start) in [(1, old), (2, now - 3_600_000_000_000)] {
            let batch = resource_spans_to_batch(tenant, &[sample_resource_spans(seed, 3, start)])
                .unwrap()
                .batch
                .unwrap();
            storage.append(tenant, batch.clone()).await.unwrap();
            let mut metrics = SpanMetricSet::default();
            for facts in span_facts(&batch).unwrap() {
                metrics.add(&facts);
            }
            storage
                .write_derived(
                    tenant,
                    DerivedTable::SpanMetrics,
                    metrics.to_batch(tenant).unwrap(),
                )
                .await
                .unwrap();
        }
    }
    storage.flush().await.unwrap();
    let blocks = |tenant: &str| storage.snapshot(tenant, &SpanFilter::default()).blocks;
    let derived = |tenant: &str| storage.derived_files(tenant, DerivedTable::SpanMetrics, None);
    assert_eq!((blocks("short").len(), derived("short").len()), (2, 2));
    let old_block = dir.path().join(
        blocks("short")
            .iter()
            .find(|block| block.path.as_ref().contains("/2026-01-01/"))
            .unwrap()
            .path
            .as_ref(),
    );

    let stats = storage.compact().await.unwrap();
    assert_eq!(stats.expired_blocks, 1);
    // The old hour of `short` is gone, from the catalog and the disk...
    assert_eq!((blocks("short").len(), derived("short").len()), (1, 1));
    assert!(!old_block.exists(), "{}", old_block.display());
    assert!(!derived("short")[0].path.as_ref().contains("/2026-01-01/"));
    // ...its recent hour and every hour of `forever` are untouched.
    assert_eq!((blocks("forever").len(), derived("forever").len()), (2, 2));
    assert_eq!(block_spans(&storage, dir.path(), "short").len(), 3);
    assert_eq!(block_spans(&storage, dir.path(), "forever").len(), 6);
    assert_eq!(storage.stats().expired_blocks, 1);
}

/// A collector, a querier and a compactor on one store: the querier learns
/// of flushes and merges from the change log, without listing the store.
#[tokio::test(flavor = "multi_thread")]
async fn a_reader_follows_flushes_and_merges_through_the_change_log() {
    use tracelake_storage::{Coordination, Sharing};
    let dir = tempfile::tempdir().unwrap();
    let store = local_store(&dir.path().join("bucket")).unwrap();
    let mut writer_config = config(&dir.path().join("collector"));
    writer_config.sharing = Sharing::Shared {
        node_id: "collector-a".into(),
    };
    let (collector, _) = Storage::open(writer_config, Arc::clone(&store))
        .await
        .unwrap();
    let reader_config = config(&dir.path().join("query"));
    let (querier, _) = Storage::open_reader(reader_config.clone(), Arc::clone(&store))
        .await
        .unwrap();
    let mut compactor_config = config(&dir.path().join("compactor"));
    compactor_config.sharing = Sharing::Shared {
        node_id: "compactor".into(),
    };
    let (compactor, _) = Storage::open_reader(compactor_config, Arc::clone(&store))
        .await
        .unwrap();
    assert!(querier.refresh(false).await.unwrap().full_listing);
    let visible = |storage: &Storage| {
        let snapshot = storage.snapshot("t1", &SpanFilter::default());
        snapshot
            .blocks
            .iter()
            .map(|block| block.span_count)
            .sum::<u64>()
    };
    for seed in 1..=3 {
        collector.append("t1", batch(seed, 10, T0)).await.unwrap();
        collector.flush().await.unwrap();
    }
    // Between full listings a refresh reads the change log only.
    let refreshed = querier.refresh(false).await.unwrap();
    assert!(!refreshed.full_listing);
    assert_eq!((refreshed.blocks, visible(&querier)), (3, 30));
    compactor.refresh(true).await.unwrap();
    let merged = compactor
        .compact_with(&Coordination::Static {
            shard: 0,
            shards: 1,
        })
        .await
        .unwrap();
    assert_eq!(merged.source_blocks, 3);
    let refreshed = querier.refresh(false).await.unwrap();
    assert!(!refreshed.full_listing);
    assert_eq!((refreshed.blocks, visible(&querier)), (1, 30));
    // Applying the same records again changes nothing.
    assert_eq!(querier.refresh(false).await.unwrap().blocks, 1);
    // A full listing agrees with the log.
    let mut listing_config = reader_config;
    listing_config.full_listing_interval = std::time::Duration::ZERO;
    let (lister, _) = Storage::open_reader(listing_config, Arc::clone(&store))
        .await
        .unwrap();
    let listed = lister.refresh(false).await.unwrap();
    assert!(listed.full_listing);
    assert_eq!((listed.blocks, visible(&lister)), (1, 30));
}

/// A collector on a shared store keeps no catalog: a crash between writing
/// a flush's blocks and committing it is undone from `wal/PENDING`.
#[tokio::test(flavor = "multi_thread")]
async fn a_collector_removes_the_blocks_of_its_uncommitted_flush() {
    use tracelake_storage::Sharing;
    use tracelake_storage::internals::pending;
    let dir = tempfile::tempdir().unwrap();
    let store = local_store(&dir.path().join("bucket")).unwrap();
    let collector_config = || {
        let mut config = config(&dir.path().join("collector"));
        config.sharing = Sharing::Shared {
            node_id: "collector-a".into(),
        };
        config
    };
    let (collector, _) = Storage::open(collector_config(), Arc::clone(&store))
        .await
        .unwrap();
    collector.append("t1", batch(1, 2, T0)).await.unwrap();
    collector.flush().await.unwrap();
    collector.append("t1", batch(2, 3, T0)).await.unwrap();
    collector.append("t1", batch(3, 4, T0)).await.unwrap();
    let wal = dir.path().join("collector/wal");
    let saved = dir.path().join("saved-wal");
    copy_dir(&wal, &saved);
    assert_eq!(collector.flush().await.unwrap().spans, 7);
    assert!(
        pending::read(&wal).unwrap().is_empty(),
        "the commit clears the notes"
    );
    drop(collector);
    // The crash: the WAL as before the flush, the flush's block noted.
    let (reader, _) = Storage::open_reader(config(&dir.path().join("q")), Arc::clone(&store))
        .await
        .unwrap();
    let newest = reader
        .blocks()
        .into_iter()
        .max_by_key(|meta| meta.wal_through)
        .unwrap();
    assert_eq!(newest.writer.as_deref(), Some("collector-a"));
    std::fs::remove_dir_all(&wal).unwrap();
    copy_dir(&saved, &wal);
    pending::append(&wal, newest.wal_through.unwrap(), &newest.path).unwrap();

    let (collector, stats) = Storage::open(collector_config(), Arc::clone(&store))
        .await
        .unwrap();
    assert_eq!(stats.catalog.uncommitted_removed, 1, "{stats:?}");
    assert_eq!(stats.replay.records, 2, "{stats:?}");
    collector.flush().await.unwrap();
    reader.refresh(false).await.unwrap();
    let spans: u64 = reader.blocks().iter().map(|meta| meta.span_count).sum();
    assert_eq!(spans, 9, "each span once");
}

//! Trace by id without a time range opens only the blocks whose trace-id
//! filter admits the trace; counted through a counting object store, and
//! shown by EXPLAIN.

use std::collections::HashSet;
use std::sync::Arc;

use object_store::ObjectStore;
use tracelake_model::TraceId;
use tracelake_model::otlp::resource_spans_to_batch;
use tracelake_query::session_for_tenant;
use tracelake_query::trace::trace_by_id;
use tracelake_storage::internals::CountingStore;
use tracelake_storage::{SpanReader, SpanWriter, Storage, StorageConfig, local_store};
use tracelake_workload::samples::{sample_resource_spans, trace_id_bytes};

const T0: u64 = 1_767_225_600_000_000_000; // 2026-01-01T00:00:00Z
const HOUR: u64 = 3_600_000_000_000;
const BLOCKS: u64 = 24;

async fn storage_with_blocks(dir: &std::path::Path) -> (Storage, Arc<CountingStore>) {
    let counting = Arc::new(CountingStore::new(local_store(dir).unwrap()));
    let store: Arc<dyn ObjectStore> = counting.clone();
    let config = StorageConfig {
        data_dir: dir.to_path_buf(),
        ..StorageConfig::default()
    };
    let (storage, _) = Storage::open(config, store).await.unwrap();
    // One block per hour, each holding 40 traces.
    for block in 0..BLOCKS {
        let resource_spans: Vec<_> = (0..40)
            .map(|trace| {
                sample_resource_spans(block * 100 + trace, 3, T0 + block * HOUR + trace * 1_000)
            })
            .collect();
        let batch = resource_spans_to_batch("t1", &resource_spans)
            .unwrap()
            .batch
            .unwrap();
        storage.append("t1", batch).await.unwrap();
        storage.flush().await.unwrap();
    }
    assert_eq!(storage.blocks().len() as u64, BLOCKS);
    (storage, counting)
}

#[tokio::test(flavor = "multi_thread")]
async fn trace_by_id_opens_only_candidate_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let (storage, counting) = storage_with_blocks(dir.path()).await;
    let reader: Arc<dyn SpanReader> = Arc::new(storage.clone());
    for seed in [7, 1_305, 2_339] {
        let trace_id = TraceId::try_from(trace_id_bytes(seed).as_slice()).unwrap();
        let candidates: HashSet<String> = storage
            .blocks()
            .iter()
            .filter(|meta| meta.may_contain(&trace_id))
            .map(|meta| meta.path.clone())
            .collect();
        let holder = format!("/{:02}/", seed / 100);
        assert!(
            candidates.iter().any(|path| path.contains(&holder)),
            "{candidates:?}"
        );
        assert!(
            candidates.len() <= 3,
            "filters admit too much: {candidates:?}"
        );

        counting.reset();
        let trace = trace_by_id(Arc::clone(&reader), "t1", trace_id, None)
            .await
            .unwrap()
            .expect("trace found");
        let spans: usize = trace
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        assert_eq!(spans, 3);
        let opened: HashSet<String> = counting
            .reads()
            .keys()
            .map(|path| path.to_string())
            .collect();
        assert!(!opened.is_empty());
        assert!(
            opened.is_subset(&candidates),
            "opened {opened:?}, candidates {candidates:?}"
        );
    }
    // An id in no block opens (almost) nothing, and finds nothing.
    let absent = TraceId::from_hex("0123456789abcdef0123456789abcdef").unwrap();
    counting.reset();
    assert!(
        trace_by_id(Arc::clone(&reader), "t1", absent, None)
            .await
            .unwrap()
            .is_none()
    );
    assert!(counting.reads().len() <= 2, "{:?}", counting.reads());
    // Another tenant sees nothing.
    let own = TraceId::try_from(trace_id_bytes(7).as_slice()).unwrap();
    assert!(
        trace_by_id(reader, "t2", own, None)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn explain_shows_block_pruning_by_trace_id_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let (storage, _counting) = storage_with_blocks(dir.path()).await;
    let reader: Arc<dyn SpanReader> = Arc::new(storage.clone());
    let context = session_for_tenant(reader, "t1").unwrap();
    let explain = |sql: String| {
        let context = context.clone();
        async move {
            let batches = context
                .sql(&format!("EXPLAIN {sql}"))
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
            datafusion::arrow::util::pretty::pretty_format_batches(&batches)
                .unwrap()
                .to_string()
        }
    };
    let trace_hex = hex::encode(trace_id_bytes(1_305));
    let plan = explain(format!(
        "SELECT name FROM spans WHERE trace_id = X'{trace_hex}'"
    ))
    .await;
    let trace_id = TraceId::from_hex(&trace_hex).unwrap();
    let candidates = storage
        .blocks()
        .iter()
        .filter(|meta| meta.may_contain(&trace_id))
        .count();
    assert!(
        plan.contains(&format!("blocks={candidates}/{BLOCKS}")),
        "{plan}"
    );
    assert!(plan.contains(&format!("trace_id={trace_hex}")), "{plan}");

    let plan = explain(
        "SELECT count(*) FROM spans WHERE start_time >= TIMESTAMP '2026-01-01T05:00:00Z' AND start_time < TIMESTAMP '2026-01-01T05:30:00Z'".into(),
    )
    .await;
    assert!(plan.contains(&format!("blocks=1/{BLOCKS}")), "{plan}");
    let count = context
        .sql("SELECT count(*) AS n FROM spans WHERE start_time >= TIMESTAMP '2026-01-01T05:00:00Z' AND start_time < TIMESTAMP '2026-01-01T06:00:00Z'")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&count)
        .unwrap()
        .to_string();
    assert!(text.contains("| 120 |"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn several_traces_by_id_in_one_pruned_scan() {
    let dir = tempfile::tempdir().unwrap();
    let (storage, counting) = storage_with_blocks(dir.path()).await;
    let reader: Arc<dyn SpanReader> = Arc::new(storage.clone());
    let seeds = [2_339, 7, 1_305];
    let mut ids: Vec<TraceId> = seeds
        .iter()
        .map(|seed| TraceId::try_from(trace_id_bytes(*seed).as_slice()).unwrap())
        .collect();
    ids.insert(
        1,
        TraceId::from_hex("0123456789abcdef0123456789abcdef").unwrap(),
    );
    let candidates: HashSet<String> = storage
        .blocks()
        .iter()
        .filter(|meta| ids.iter().any(|id| meta.may_contain(id)))
        .map(|meta| meta.path.clone())
        .collect();
    counting.reset();
    let traces = tracelake_query::trace::traces_by_ids(reader, "t1", &ids)
        .await
        .unwrap();
    // In the order asked, the absent id left out, each trace whole.
    let found: Vec<TraceId> = traces.iter().map(|(id, _)| *id).collect();
    assert_eq!(found, [ids[0], ids[2], ids[3]]);
    for (id, trace) in &traces {
        let spans: Vec<_> = trace
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .collect();
        assert_eq!(spans.len(), 3);
        assert!(spans.iter().all(|span| span.trace_id == id.as_bytes()));
    }
    let opened: HashSet<String> = counting
        .reads()
        .keys()
        .map(|path| path.to_string())
        .collect();
    assert!(opened.is_subset(&candidates), "opened {opened:?}");
    assert!(candidates.len() < BLOCKS as usize, "{candidates:?}");
}

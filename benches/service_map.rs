//! Service map and latency quantiles over an hour of spans:
//!
//! - the service map from the precomputed `edges`/`span_metrics` rows and
//!   recomputed from raw spans (DataFusion self-join);
//! - p99 latency by service over the raw spans (the `tracelake_latency`
//!   aggregate), and with `TRACELAKE_BENCH_DUCKDB_PYTHON` set to a Python
//!   with `duckdb`, DuckDB's `quantile_cont` over the same Parquet files.
//!
//! ```text
//! cargo bench --bench service_map                       # 10M spans (TRACELAKE_BENCH_SPANS)
//! TRACELAKE_BENCH_DUCKDB_PYTHON=/path/to/python cargo bench --bench service_map
//! ```
//!
//! Spans: traces of five spans (a root SERVER span, a CLIENT call to a
//! second service, its SERVER span, an INTERNAL span and an unanswered
//! database call) across 20 services, start times spread over one hour,
//! written as Parquet blocks the way a flush writes them; the streaming
//! aggregation counts the same batches. Under `cargo test --benches` it
//! runs once on 10,000 spans to prove it still works.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use tracelake_collector::aggregate::{AggregateConfig, Aggregator};
use tracelake_query::derived_rows::{Source, derived_rows};
use tracelake_query::service_map::ServiceMap;
use tracelake_storage::block::{encode_block, put_block, split_by_hour};
use tracelake_storage::otlp::resource_spans_to_batch;
use tracelake_storage::{SpanReader, Storage, StorageConfig, local_store};

const SERVICES: u64 = 20;
const SPANS_PER_TRACE: u64 = 5;
const HOUR_NS: u64 = 3_600_000_000_000;
const TENANT: &str = "bench";

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// The spans of trace `index`, grouped by service (one `ResourceSpans` each).
fn trace(index: u64, base_ns: u64, traces: u64) -> Vec<ResourceSpans> {
    let mut trace_id = [0u8; 16];
    trace_id[..8].copy_from_slice(&(index + 1).to_be_bytes());
    trace_id[8..].copy_from_slice(&(index.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1).to_be_bytes());
    let span_id = |role: u64| ((index << 4) | role | 1 << 60).to_be_bytes().to_vec();
    let start = base_ns + index * (HOUR_NS / traces.max(1));
    // Durations vary per trace so quantiles have something to find.
    let root_ms = 5 + (index * 7919) % 400;
    let caller = index % SERVICES;
    let callee = (index / SERVICES + caller + 1) % SERVICES;
    let span =
        |role: u64, parent: Option<u64>, kind: i32, name: &str, offset_ms: u64, ms: u64| Span {
            trace_id: trace_id.to_vec(),
            span_id: span_id(role),
            parent_span_id: parent.map(span_id).unwrap_or_default(),
            name: name.into(),
            kind,
            start_time_unix_nano: start + offset_ms * 1_000_000,
            end_time_unix_nano: start + (offset_ms + ms) * 1_000_000,
            status: index.is_multiple_of(50).then(|| Status {
                code: 2,
                message: String::new(),
            }),
            ..Default::default()
        };
    let mut db_call = span(5, Some(3), 3, "SELECT orders", 2, root_ms / 4);
    db_call.attributes = vec![
        text("db.system.name", "postgresql"),
        text("db.namespace", "orders"),
    ];
    let resource = |service: u64, spans: Vec<Span>| ResourceSpans {
        resource: Some(Resource {
            attributes: vec![text("service.name", &format!("service-{service:02}"))],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        ..Default::default()
    };
    vec![
        resource(
            caller,
            vec![
                span(1, None, 2, "GET /api", 0, root_ms),
                span(2, Some(1), 3, "GET /inner", 1, root_ms / 2),
            ],
        ),
        resource(
            callee,
            vec![
                span(3, Some(2), 2, "GET /inner", 1, root_ms / 2 - 1),
                span(4, Some(3), 1, "render", 1, 1),
                db_call,
            ],
        ),
    ]
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let measuring = std::env::args().any(|arg| arg == "--bench");
    let spans: u64 = if measuring {
        std::env::var("TRACELAKE_BENCH_SPANS")
            .ok()
            .and_then(|value| value.parse().ok())
            .unwrap_or(10_000_000)
    } else {
        10_000
    };
    let runs = if measuring { 5 } else { 1 };
    let traces = spans / SPANS_PER_TRACE;
    let dir = tempfile::tempdir().unwrap();
    let store = local_store(dir.path()).unwrap();
    let base_ns = 1_795_960_800_000_000_000; // on the hour
    let aggregator = Aggregator::new(AggregateConfig::default());

    let loading = Instant::now();
    const TRACES_PER_BATCH: u64 = 20_000;
    let mut first = 0;
    while first < traces {
        let last = (first + TRACES_PER_BATCH).min(traces);
        let resource_spans: Vec<ResourceSpans> = (first..last)
            .flat_map(|index| trace(index, base_ns, traces))
            .collect();
        let batch = resource_spans_to_batch(TENANT, &resource_spans)
            .unwrap()
            .batch
            .unwrap();
        aggregator.observe_batch(TENANT, &batch, Instant::now());
        for (hour, part) in split_by_hour(&[batch]).unwrap() {
            let (bytes, meta) = encode_block(TENANT, hour, &part, 1 << 17).unwrap();
            put_block(&store, bytes, &meta).await.unwrap();
        }
        first = last;
    }
    let config = StorageConfig {
        data_dir: dir.path().to_path_buf(),
        ..StorageConfig::default()
    };
    let (storage, _) = Storage::open(config, Arc::clone(&store)).await.unwrap();
    aggregator
        .flush_all(&storage, (base_ns + 2 * HOUR_NS) as i64)
        .await;
    let loaded = loading.elapsed();
    let blocks = storage.blocks();
    let parquet_bytes: u64 = blocks.iter().map(|block| block.size_bytes).sum();
    println!(
        "service_map bench: {spans} spans, {} blocks ({:.1} MB), loaded and aggregated in {loaded:.1?}",
        blocks.len(),
        parquet_bytes as f64 / 1e6
    );

    let reader: Arc<dyn SpanReader> = Arc::new(storage.clone());
    let window = (base_ns as i64, (base_ns + HOUR_NS) as i64 - 1);
    let mut maps = Vec::new();
    for source in [Source::Precomputed, Source::Raw] {
        let mut samples = Vec::new();
        let mut map = ServiceMap::default();
        for _ in 0..runs {
            let started = Instant::now();
            let rows = derived_rows(Arc::clone(&reader), TENANT, window, source)
                .await
                .unwrap();
            map = ServiceMap::build(&rows);
            samples.push(started.elapsed());
        }
        println!(
            "service map, 1 h, {source:?}: median {:.1?} of {runs} ({} nodes, {} edges)",
            median(samples),
            map.nodes.len(),
            map.edges.len()
        );
        maps.push(map);
    }
    assert_eq!(maps[0], maps[1], "precomputed and raw maps differ");

    let context = tracelake_query::session_for_tenant(Arc::clone(&reader), TENANT).unwrap();
    let query = "SELECT service_name, tracelake_latency_quantile(tracelake_latency(duration_ns), 0.99) AS p99_s \
                 FROM spans GROUP BY service_name ORDER BY service_name";
    let mut samples = Vec::new();
    let mut answer = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        answer = context.sql(query).await.unwrap().collect().await.unwrap();
        samples.push(started.elapsed());
    }
    let groups: usize = answer.iter().map(|batch| batch.num_rows()).sum();
    println!(
        "p99 by service over raw spans, DataFusion (tracelake_latency): median {:.1?} of {runs} ({groups} services)",
        median(samples)
    );

    if let Some(python) = std::env::var_os("TRACELAKE_BENCH_DUCKDB_PYTHON") {
        let glob = dir
            .path()
            .join("tenants")
            .join(TENANT)
            .join("spans/*/*/*.parquet");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/duckdb_p99.py");
        let output = Command::new(python)
            .args([script, glob.to_str().unwrap(), &runs.to_string()])
            .output()
            .expect("run duckdb");
        print!("{}", String::from_utf8_lossy(&output.stdout));
        eprint!("{}", String::from_utf8_lossy(&output.stderr));
    }
}

//! The spans both query benchmarks read: traces of five spans (a root
//! SERVER span, a CLIENT call to a second service, its SERVER span, an
//! INTERNAL span and an unanswered database call) across 20 services
//! (`TRACELAKE_BENCH_SERVICES`, names prefixed with
//! `TRACELAKE_BENCH_SERVICE_PREFIX`), start times spread over one hour,
//! written as Parquet blocks the way a flush writes them. One trace in a
//! hundred (rooted in `service-07` among others past 20 services) is slow:
//! its root takes 600 ms more.

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use tracelake_model::otlp::resource_spans_to_batch;
use tracelake_storage::internals::{encode_head, put_block};
use tracelake_storage::{Storage, StorageConfig, local_store};

/// Services the traces cross: `TRACELAKE_BENCH_SERVICES` (default 20).
pub(crate) fn services() -> u64 {
    std::env::var("TRACELAKE_BENCH_SERVICES")
        .ok()
        .and_then(|value| value.parse().ok())
        .filter(|count| *count > 7)
        .unwrap_or(20)
}

/// The name of service `index`: `service-07`, or with
/// `TRACELAKE_BENCH_SERVICE_PREFIX` before it (names longer than the 12
/// bytes a string view holds inline, as real names often are).
pub(crate) fn service_name(index: u64) -> String {
    let prefix = std::env::var("TRACELAKE_BENCH_SERVICE_PREFIX").unwrap_or_default();
    format!("{prefix}service-{index:02}")
}
pub(crate) const SPANS_PER_TRACE: u64 = 5;
pub(crate) const HOUR_NS: u64 = 3_600_000_000_000;
pub(crate) const TENANT: &str = "bench";

pub(crate) fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// The spans of trace `index`, grouped by service (one `ResourceSpans` each).
pub(crate) fn trace(index: u64, base_ns: u64, traces: u64) -> Vec<ResourceSpans> {
    let mut trace_id = [0u8; 16];
    trace_id[..8].copy_from_slice(&(index + 1).to_be_bytes());
    trace_id[8..].copy_from_slice(&(index.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1).to_be_bytes());
    let span_id = |role: u64| ((index << 4) | role | 1 << 60).to_be_bytes().to_vec();
    let start = base_ns + index * (HOUR_NS / traces.max(1));
    // Durations vary per trace so quantiles have something to find.
    let root_ms = 5 + (index * 7919) % 400 + if index % 100 == 7 { 600 } else { 0 };
    let services = services();
    let caller = index % services;
    let callee = (index / services + caller + 1) % services;
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
            attributes: vec![text("service.name", &service_name(service))],
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

pub(crate) fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// The start of the benchmark hour.
pub(crate) const BASE_NS: u64 = 1_795_960_800_000_000_000; // on the hour

/// How many spans to load: `TRACELAKE_BENCH_SPANS` (default 10M) under
/// `cargo bench`, 10,000 under `cargo test --benches`; and how many runs.
pub(crate) fn scale() -> (u64, usize) {
    if std::env::args().any(|arg| arg == "--bench") {
        let spans = std::env::var("TRACELAKE_BENCH_SPANS")
            .ok()
            .and_then(|value| value.parse().ok())
            .unwrap_or(10_000_000);
        (spans, 5)
    } else {
        (10_000, 1)
    }
}

/// Writes `spans` spans as blocks under `dir`, handing each batch to
/// `observe` first, and opens the storage over them.
pub(crate) async fn load(
    dir: &std::path::Path,
    spans: u64,
    mut observe: impl FnMut(&RecordBatch),
) -> (Storage, Duration) {
    let store = local_store(dir).unwrap();
    let traces = spans / SPANS_PER_TRACE;
    let loading = Instant::now();
    const TRACES_PER_BATCH: u64 = 20_000;
    let mut first = 0;
    while first < traces {
        let last = (first + TRACES_PER_BATCH).min(traces);
        let resource_spans: Vec<ResourceSpans> = (first..last)
            .flat_map(|index| trace(index, BASE_NS, traces))
            .collect();
        let batch = resource_spans_to_batch(TENANT, &resource_spans)
            .unwrap()
            .batch
            .unwrap();
        observe(&batch);
        let rows = [tracelake_storage::HeadRows::new(batch)];
        for (bytes, meta) in encode_head(TENANT, &rows, 1 << 17).unwrap() {
            put_block(&store, bytes, &meta).await.unwrap();
        }
        first = last;
    }
    let config = StorageConfig {
        data_dir: dir.to_path_buf(),
        ..StorageConfig::default()
    };
    let (storage, _) = Storage::open(config, Arc::clone(&store)).await.unwrap();
    (storage, loading.elapsed())
}

/// Runs `query` of `benches/duckdb_queries.py` over the blocks under
/// `data_dir` when `TRACELAKE_BENCH_DUCKDB_PYTHON` names a Python with
/// `duckdb`, printing its line beside tracelake's figure.
pub(crate) fn duckdb(data_dir: &std::path::Path, query: &str, window: (i64, i64), runs: usize) {
    let Some(python) = std::env::var_os("TRACELAKE_BENCH_DUCKDB_PYTHON") else {
        return;
    };
    let glob = data_dir
        .join("tenants")
        .join(TENANT)
        .join("spans/*/*/*.parquet");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/duckdb_queries.py");
    let output = std::process::Command::new(python)
        .arg(script)
        .arg(query)
        .arg(glob)
        .args([window.0.to_string(), window.1.to_string(), runs.to_string()])
        .output()
        .expect("run duckdb");
    print!("{}", String::from_utf8_lossy(&output.stdout));
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "duckdb {query} failed");
}

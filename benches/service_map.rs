//! Service map and latency quantiles over an hour of spans:
//!
//! - the service map from the precomputed `edges`/`span_metrics` rows and
//!   recomputed from raw spans (DataFusion self-join);
//! - p99 latency by service over the raw spans (the `tracelake_latency`
//!   aggregate);
//! - with `TRACELAKE_BENCH_DUCKDB_PYTHON` set to a Python with `duckdb`,
//!   the equivalent SQL in DuckDB over the same Parquet files, for the
//!   ratios (`benches/duckdb_queries.py`).
//!
//! ```text
//! cargo bench --bench service_map                       # 10M spans (TRACELAKE_BENCH_SPANS)
//! TRACELAKE_BENCH_DUCKDB_PYTHON=/path/to/python cargo bench --bench service_map
//! ```
//!
//! Spans: see `common/mod.rs`; the streaming aggregation counts the same
//! batches. Under `cargo test --benches` it runs once on 10,000 spans to
//! prove it still works.

mod common;

use std::sync::Arc;
use std::time::Instant;

use common::{BASE_NS, HOUR_NS, TENANT, median};
use tracelake_collector::aggregate::{AggregateConfig, Aggregator};
use tracelake_query::derived_rows::{Source, derived_rows};
use tracelake_query::service_map::ServiceMap;
use tracelake_storage::SpanReader;

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let (spans, runs) = common::scale();
    let dir = tempfile::tempdir().unwrap();
    let base_ns = BASE_NS;
    let aggregator = Aggregator::new(AggregateConfig::default());
    let (storage, load_time) = common::load(dir.path(), spans, |batch| {
        aggregator.observe_batch(TENANT, batch, Instant::now())
    })
    .await;
    let loading = Instant::now();
    aggregator
        .flush_all(&storage, (base_ns + 2 * HOUR_NS) as i64)
        .await;
    let loaded = load_time + loading.elapsed();
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

    for query in ["service-map", "p99"] {
        common::duckdb(dir.path(), query, window, runs);
    }
}

//! Grafana's Tempo requests over an hour of spans, through the query
//! router (the HTTP handlers without the network):
//!
//! - TraceQL search `{resource.service.name="service-07" && duration > 500ms}`
//!   (limit 20, as Grafana asks), and the same search evaluated without
//!   pushing its conditions into DataFusion, for the ratio, and one that
//!   matches nothing (it reads every slice of the window);
//! - a structural search `{kind=server} >> {status=error}` (limit 20);
//! - TraceQL metrics over the hour: `{} | rate() by (resource.service.name)`
//!   and `{} | quantile_over_time(duration, .5, .9, .99) by
//!   (resource.service.name)` (Grafana's default step, 15 s), and the
//!   rate with 1 min steps, answered from the `span_metrics` rows the
//!   aggregation wrote while the spans loaded;
//! - tag values of `resource.service.name` (a dedicated column) and of
//!   `span.db.system.name` (an attribute map lookup);
//! - with `TRACELAKE_BENCH_DUCKDB_PYTHON` set, the equivalent SQL of the
//!   search, the rate and the quantiles in DuckDB over the same Parquet
//!   files (`benches/duckdb_queries.py`).
//!
//! ```text
//! cargo bench --bench traceql          # 10M spans (TRACELAKE_BENCH_SPANS)
//! TRACELAKE_BENCH_ONLY=rate cargo bench --bench traceql   # requests whose label holds "rate"
//! ```
//!
//! Spans: see `common/mod.rs`. Under `cargo test --benches` it runs once on
//! 10,000 spans to prove it still works.

mod common;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::Request;
use common::{BASE_NS, HOUR_NS, TENANT, median};
use tower::ServiceExt;
use tracelake_collector::aggregate::{AggregateConfig, Aggregator};
use tracelake_query::traceql::{self, SearchWindow};
use tracelake_storage::SpanReader;

/// `{resource.service.name="service-07" && duration > 500ms}` (the name
/// as [`common::service_name`] makes it).
fn search_query() -> String {
    format!(
        r#"{{resource.service.name="{}" && duration > 500ms}}"#,
        common::service_name(7)
    )
}
const STRUCTURAL: &str = "{kind=server} >> {status=error}";
const RATE: &str = "{} | rate() by (resource.service.name)";
const QUANTILES: &str = "{} | quantile_over_time(duration, .5, .9, .99) by (resource.service.name)";

/// Percent-encodes a query value.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || b"-_.".contains(&byte) {
                (byte as char).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let (spans, runs) = common::scale();
    let dir = tempfile::Builder::new()
        .prefix("traceql-bench")
        .tempdir()
        .unwrap();
    // The service map's aggregation counts the spans into `span_metrics`
    // as a server does, so a metrics query with whole-minute steps reads
    // those rows. It holds every call waiting for its other side until the
    // end (nothing expires them here): `TRACELAKE_BENCH_SPAN_METRICS=0`
    // leaves it out where that does not fit in memory.
    let aggregate = std::env::var("TRACELAKE_BENCH_SPAN_METRICS").as_deref() != Ok("0");
    let aggregator = Aggregator::new(AggregateConfig::default());
    let (storage, loaded) = common::load(dir.path(), spans, |batch| {
        if aggregate {
            aggregator.observe_batch(TENANT, batch, Instant::now())
        }
    })
    .await;
    aggregator
        .flush_all(&storage, (BASE_NS + 2 * HOUR_NS) as i64)
        .await;
    println!(
        "traceql bench: {spans} spans in {} blocks, loaded in {loaded:.1?}",
        storage.blocks().len()
    );
    let reader: Arc<dyn SpanReader> = Arc::new(storage);
    let router = tracelake_query::router(Arc::clone(&reader));
    let (start, end) = (BASE_NS / 1_000_000_000, (BASE_NS + HOUR_NS) / 1_000_000_000);
    let window = format!("start={start}&end={end}");
    let requests = [
        (
            "search {resource.service.name=\"service-07\" && duration > 500ms}",
            format!(
                "/api/search?q={}&limit=20&spss=3&{window}",
                encode(&search_query())
            ),
            "traces",
        ),
        (
            "search {resource.service.name=\"service-07\" && duration > 2s} (no match: every slice read)",
            format!(
                "/api/search?q={}&limit=20&spss=3&{window}",
                encode(&format!(
                    r#"{{resource.service.name="{}" && duration > 2s}}"#,
                    common::service_name(7)
                ))
            ),
            "traces",
        ),
        (
            "search {kind=server} >> {status=error}",
            format!(
                "/api/search?q={}&limit=20&spss=3&{window}",
                encode(STRUCTURAL)
            ),
            "traces",
        ),
        (
            "metrics {} | rate() by (resource.service.name)",
            format!("/api/metrics/query_range?q={}&{window}", encode(RATE)),
            "series",
        ),
        (
            "metrics {} | rate() by (resource.service.name), 1 min steps (span_metrics rows)",
            format!(
                "/api/metrics/query_range?q={}&{window}&step=60s",
                encode(RATE)
            ),
            "series",
        ),
        (
            "metrics {} | quantile_over_time(duration, .5, .9, .99) by (resource.service.name)",
            format!("/api/metrics/query_range?q={}&{window}", encode(QUANTILES)),
            "series",
        ),
        (
            "tag values resource.service.name",
            format!("/api/v2/search/tag/resource.service.name/values?q=%7B%7D&{window}"),
            "tagValues",
        ),
        (
            "tag values span.db.system.name",
            format!("/api/v2/search/tag/span.db.system.name/values?q=%7B%7D&{window}"),
            "tagValues",
        ),
    ];
    let only = std::env::var("TRACELAKE_BENCH_ONLY").ok();
    for (label, uri, field) in requests {
        if only.as_deref().is_some_and(|only| !label.contains(only))
            || (!aggregate && label.contains("span_metrics"))
        {
            continue;
        }
        let mut samples = Vec::new();
        let mut answered = 0;
        for _ in 0..runs {
            let request = Request::builder()
                .uri(&uri)
                .header("X-Scope-OrgID", TENANT)
                .body(Body::empty())
                .unwrap();
            let started = Instant::now();
            let response = router.clone().oneshot(request).await.unwrap();
            assert!(
                response.status().is_success(),
                "{label}: {}",
                response.status()
            );
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            samples.push(started.elapsed());
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            answered = json[field].as_array().map_or(0, Vec::len);
        }
        assert!(
            answered > 0 || label.contains("no match"),
            "{label} answered nothing"
        );
        println!(
            "{label}: median {:.1?} of {runs} ({answered} {field})",
            median(samples)
        );
    }

    if only.is_some() {
        return;
    }
    // The same search without pushdown: every trace of the window is a
    // candidate (up to the inspection cap) and is evaluated in memory.
    let checked = Arc::new(traceql::prepare(&search_query()).unwrap());
    let mut found = [0usize; 2];
    let mut medians = Vec::new();
    for (slot, pushdown) in [(0, true), (1, false)] {
        let mut samples = Vec::new();
        for _ in 0..runs {
            let window = SearchWindow {
                range_ns: (BASE_NS as i64, (BASE_NS + HOUR_NS) as i64),
                limit: 20,
                pushdown,
            };
            let started = Instant::now();
            let outcome =
                traceql::search(Arc::clone(&reader), TENANT, Arc::clone(&checked), window)
                    .await
                    .unwrap();
            samples.push(started.elapsed());
            found[slot] = outcome.traces.len();
        }
        medians.push(median(samples));
    }
    println!(
        "search with pushdown {:.1?}, without {:.1?} ({:.1}x; {} and {} traces found)",
        medians[0],
        medians[1],
        medians[1].as_secs_f64() / medians[0].as_secs_f64(),
        found[0],
        found[1]
    );
    for query in ["search", "rate", "quantiles"] {
        common::duckdb(
            dir.path(),
            query,
            (BASE_NS as i64, (BASE_NS + HOUR_NS) as i64),
            runs,
        );
    }
}

//! `GET /metrics` on the query port: Prometheus text exposition of the
//! counters the parts keep (storage, receivers, tail sampling, the
//! service-map aggregation) and of one tenant's service-graph and span
//! metrics under Tempo's names and its latest OTLP metric points
//! (`?tenant=`, default `single-tenant`).

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Extension, Query};
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tracelake_collector::aggregate::Aggregator;
use tracelake_collector::metrics_ingest::MetricsExposition;
use tracelake_collector::prometheus::write_plain_counter;
use tracelake_collector::prometheus::{HistogramSeries, write_histogram};
use tracelake_collector::receiver_stats::ReceiverStats;
use tracelake_collector::tail::TailStage;
use tracelake_collector::xray::udp::UdpStats;
use tracelake_routes::{Access, Routes};
use tracelake_storage::Storage;

use crate::auth::{Permission, Principal};

/// Buckets of tracelake's own latency histograms, seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Everything `/metrics` reports.
#[derive(Clone)]
pub(crate) struct MetricSources {
    pub(crate) storage: Storage,
    pub(crate) udp: Arc<UdpStats>,
    pub(crate) tail: Option<Arc<TailStage>>,
    pub(crate) aggregator: Arc<Aggregator>,
    pub(crate) otlp_metrics: Arc<MetricsExposition>,
    pub(crate) receivers: Arc<ReceiverStats>,
}

/// `/metrics`, for `query` keys (their tenant's series) and `admin` keys
/// (with the process-wide counters).
pub(crate) fn routes(sources: MetricSources) -> Routes {
    Routes::new().route(
        "/metrics",
        get(
            move |Query(params): Query<HashMap<String, String>>,
                  headers: HeaderMap,
                  principal: Option<Extension<Arc<Principal>>>| {
                let sources = sources.clone();
                async move {
                    let tenant = match scrape_tenant(&params, &headers) {
                        Ok(tenant) => tenant,
                        Err(message) => {
                            return (axum::http::StatusCode::BAD_REQUEST, message).into_response();
                        }
                    };
                    // With API keys (the key layer has already refused a
                    // tenant other than the key's): the counters summed over
                    // every tenant are for admin keys only.
                    let process_wide = principal
                        .is_none_or(|Extension(principal)| principal.may(Permission::Admin));
                    // Up to tens of thousands of series: rendered off the reactor.
                    let rendered = tokio::task::spawn_blocking(move || {
                        let mut out = String::new();
                        if process_wide {
                            out = render(
                                &sources.storage,
                                &sources.udp,
                                sources.tail.as_deref(),
                                &sources.aggregator,
                            );
                            sources.receivers.render_prometheus(&mut out);
                        }
                        sources.aggregator.render_series(&mut out, &tenant);
                        sources.otlp_metrics.render(&mut out, &tenant);
                        out
                    })
                    .await;
                    match rendered {
                        Ok(out) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], out).into_response(),
                        Err(error) => (
                            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                            format!("rendering metrics failed: {error}"),
                        )
                            .into_response(),
                    }
                }
            },
        ),
        Access::AnyOf(&[Permission::Query, Permission::Admin]),
    )
}

/// The tenant whose span metrics a scrape wants: `?tenant=` (what a
/// Prometheus scrape config's `params` sets), else `X-Scope-OrgID`, else
/// the default tenant.
fn scrape_tenant(params: &HashMap<String, String>, headers: &HeaderMap) -> Result<String, String> {
    let tenant = params
        .get("tenant")
        .cloned()
        .or_else(|| {
            headers
                .get(tracelake_model::TENANT_HEADER)
                .and_then(|value| value.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_else(|| tracelake_model::DEFAULT_TENANT.to_string());
    tracelake_model::validate_tenant(&tenant).map_err(|error| error.to_string())?;
    Ok(tenant)
}

fn render(
    storage: &Storage,
    udp: &UdpStats,
    tail: Option<&TailStage>,
    aggregator: &Aggregator,
) -> String {
    let mut out = String::new();
    let stats = storage.stats();
    let counters = [
        (
            "tracelake_storage_appended_spans_total",
            "Spans appended to the WAL and head.",
            stats.appended_spans,
        ),
        (
            "tracelake_storage_flushed_blocks_total",
            "Parquet blocks written.",
            stats.flushed_blocks,
        ),
        (
            "tracelake_storage_flushed_bytes_total",
            "Bytes of Parquet blocks written.",
            stats.flushed_bytes,
        ),
        (
            "tracelake_storage_compacted_blocks_total",
            "Blocks merged away by compaction.",
            stats.compacted_blocks,
        ),
        (
            "tracelake_storage_expired_blocks_total",
            "Blocks dropped by retention.",
            stats.expired_blocks,
        ),
        (
            "tracelake_storage_compaction_failures_total",
            "Compaction passes that failed (retried on the next pass).",
            stats.compaction_failures,
        ),
        (
            "tracelake_storage_refused_appends_total",
            "Appends refused because the head was over flush.max_head_bytes or the process over memory.limit_bytes' soft limit.",
            stats.refused_appends,
        ),
        (
            "tracelake_storage_flush_failures_total",
            "Flushes that failed and will be retried.",
            stats.flush_failures,
        ),
    ];
    for (name, help, value) in counters {
        write_plain_counter(&mut out, name, help, value);
    }
    let gauges = [
        (
            "tracelake_storage_blocks",
            "Blocks in the catalog.",
            stats.blocks as u64,
        ),
        (
            "tracelake_storage_head_active_bytes",
            "Arrow bytes of the head batches not yet sealed for a flush.",
            stats.head.active_bytes as u64,
        ),
        (
            "tracelake_storage_head_batches",
            "Batches in the head, active and sealed (being flushed).",
            (stats.head.active_batches + stats.head.sealed_batches) as u64,
        ),
        (
            "tracelake_storage_head_sealed_bytes",
            "Arrow bytes of the head batches being flushed.",
            stats.head.sealed_bytes as u64,
        ),
        (
            "process_resident_memory_bytes",
            "Resident memory of the process, as the memory limiter samples it.",
            stats.resident_bytes,
        ),
        (
            "tracelake_memory_limit_bytes",
            "memory.limit_bytes (0: off); appends are refused from 80% of it.",
            stats.memory_limit_bytes,
        ),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    }
    for (name, help, histogram) in [
        (
            "tracelake_wal_append_seconds",
            "WAL append latency (write and fsync per the policy).",
            &stats.wal_latency,
        ),
        (
            "tracelake_flush_seconds",
            "Head flush latency (seal, encode and write blocks).",
            &stats.flush_latency,
        ),
    ] {
        let series = HistogramSeries {
            labels: Vec::new(),
            cumulative: histogram.cumulative_counts(&LATENCY_BUCKETS),
            // Summed from the histogram: exact within its 1% precision.
            sum: histogram
                .distribution_seconds()
                .iter()
                .map(|(value, count)| value * *count as f64)
                .sum(),
            count: histogram.count(),
        };
        write_histogram(&mut out, name, help, &LATENCY_BUCKETS, &[series]);
    }
    udp.render_prometheus(&mut out);
    if let Some(tail) = tail {
        tail.render_prometheus(&mut out);
    }
    aggregator.render_prometheus(&mut out);
    out
}

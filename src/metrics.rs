//! `GET /metrics` on the query port: Prometheus text exposition of the
//! counters the parts keep (storage, X-Ray UDP receiver).

use std::fmt::Write;
use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use tracelake_collector::aggregate::Aggregator;
use tracelake_collector::prometheus::write_plain_counter;
use tracelake_collector::tail::TailStage;
use tracelake_collector::xray::udp::UdpStats;
use tracelake_storage::Storage;

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub(crate) fn router(
    storage: Storage,
    udp: Arc<UdpStats>,
    tail: Option<Arc<TailStage>>,
    aggregator: Arc<Aggregator>,
) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let storage = storage.clone();
            let udp = Arc::clone(&udp);
            let tail = tail.clone();
            let aggregator = Arc::clone(&aggregator);
            async move {
                (
                    [(header::CONTENT_TYPE, CONTENT_TYPE)],
                    render(&storage, &udp, tail.as_deref(), &aggregator),
                )
                    .into_response()
            }
        }),
    )
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
            "tracelake_storage_flush_failures_total",
            "Flushes that failed and will be retried.",
            stats.flush_failures,
        ),
    ];
    for (name, help, value) in counters {
        write_plain_counter(&mut out, name, help, value);
    }
    let _ = writeln!(
        out,
        "# HELP tracelake_storage_blocks Blocks in the catalog.\n# TYPE tracelake_storage_blocks gauge\ntracelake_storage_blocks {}",
        stats.blocks
    );
    udp.render_prometheus(&mut out);
    if let Some(tail) = tail {
        tail.render_prometheus(&mut out);
    }
    aggregator.render_prometheus(&mut out);
    out
}

//! `GET /metrics` on the query port, in Prometheus text format 0.0.4:
//!
//! - for `admin` keys (or without keys), the process's one registry
//!   (`prometheus_client`): every listener's request durations and counts
//!   ([`tracelake_routes::timing`]), the storage engine's series
//!   (`Storage::metrics`) and the collector's ([`CollectorMetrics`]), each
//!   part providing its own;
//! - for `query` keys too, one tenant's service-graph and span metrics
//!   under Tempo's names and its latest OTLP metric points (`?tenant=`,
//!   default `single-tenant`): the tenant's data, written as Tempo's users
//!   see them.
//!
//! The registry encodes OpenMetrics; the page stays in the text format it
//! has always had ([`classic_text`]: counter families are named with their
//! `_total`, no `# EOF`), so scrapers and parsers of it see no change.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use axum::extract::{Extension, Query};
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tracelake_collector::CollectorMetrics;
use tracelake_collector::aggregate::Aggregator;
use tracelake_collector::metrics_ingest::MetricsExposition;
use tracelake_model::TenantId;
use tracelake_routes::{Access, Routes};
use tracelake_storage::Storage;

use tracelake_auth::{Permission, Principal};

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Everything `/metrics` reports: the process's registry, and the sources
/// of a tenant's series.
#[derive(Clone)]
pub(crate) struct MetricSources {
    pub(crate) registry: Arc<Registry>,
    pub(crate) aggregator: Arc<Aggregator>,
    pub(crate) otlp_metrics: Arc<MetricsExposition>,
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
                        Err(error) => {
                            return (axum::http::StatusCode::BAD_REQUEST, error.to_string())
                                .into_response();
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
                            let mut open_metrics = String::new();
                            prometheus_client::encoding::text::encode_registry(
                                &mut open_metrics,
                                &sources.registry,
                            )?;
                            out = classic_text(&open_metrics);
                        }
                        sources.aggregator.render_series(&mut out, &tenant);
                        sources.otlp_metrics.render(&mut out, &tenant);
                        Ok::<_, fmt::Error>(out)
                    })
                    .await
                    .map_err(|error| error.to_string())
                    .and_then(|encoded| encoded.map_err(|error| error.to_string()));
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
fn scrape_tenant(
    params: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<TenantId, tracelake_model::InvalidTenant> {
    let named = params.get("tenant").map(String::as_str).or_else(|| {
        headers
            .get(tracelake_model::TENANT_HEADER)
            .and_then(|value| value.to_str().ok())
    });
    TenantId::from_header(named)
}

/// OpenMetrics text as Prometheus text format 0.0.4: a counter family's
/// `# HELP` and `# TYPE` lines name it with its `_total` (as its samples
/// are), and `# UNIT` and `# EOF` lines go.
pub(crate) fn classic_text(open_metrics: &str) -> String {
    let mut out = String::with_capacity(open_metrics.len() + 64);
    let mut help: Option<&str> = None;
    for line in open_metrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        if line.starts_with("# HELP ") {
            if let Some(pending) = help.replace(line) {
                out.push_str(pending);
                out.push('\n');
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some(family) = rest.strip_suffix(" counter")
        {
            if let Some(pending) = help.take() {
                let text = pending
                    .strip_prefix("# HELP ")
                    .and_then(|text| text.strip_prefix(family))
                    .unwrap_or_default();
                out.push_str(&format!("# HELP {family}_total{text}\n"));
            }
            out.push_str(&format!("# TYPE {family}_total counter\n"));
            continue;
        }
        if let Some(pending) = help.take() {
            out.push_str(pending);
            out.push('\n');
        }
        out.push_str(line);
        out.push('\n');
    }
    if let Some(pending) = help {
        out.push_str(pending);
        out.push('\n');
    }
    out
}

/// The process's registry: request metrics of every listener, and the
/// storage and collector counters when they are given.
pub(crate) fn registry(
    storage: &Storage,
    collector: CollectorMetrics,
) -> (Registry, tracelake_routes::timing::RequestMetrics) {
    let mut registry = Registry::default();
    let requests = tracelake_routes::timing::RequestMetrics::register(&mut registry);
    registry.register_collector(Box::new(storage.metrics()));
    registry.register_collector(Box::new(collector));
    (registry, requests)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_metrics_counters_are_named_with_their_total_and_the_rest_is_kept() {
        let open_metrics = "# HELP requests Requests answered.\n# TYPE requests counter\nrequests_total{a=\"1\"} 2\n# HELP latency_seconds Time.\n# TYPE latency_seconds histogram\n# UNIT latency_seconds seconds\nlatency_seconds_sum 0.5\nlatency_seconds_count 1\nlatency_seconds_bucket{le=\"+Inf\"} 1\n# HELP heap Bytes.\n# TYPE heap gauge\nheap 7\n# EOF\n";
        assert_eq!(
            classic_text(open_metrics),
            "# HELP requests_total Requests answered.\n# TYPE requests_total counter\nrequests_total{a=\"1\"} 2\n# HELP latency_seconds Time.\n# TYPE latency_seconds histogram\nlatency_seconds_sum 0.5\nlatency_seconds_count 1\nlatency_seconds_bucket{le=\"+Inf\"} 1\n# HELP heap Bytes.\n# TYPE heap gauge\nheap 7\n"
        );
    }

    #[test]
    fn the_registry_encodes_as_the_page_always_read() {
        let mut registry = Registry::default();
        let requests = tracelake_routes::timing::RequestMetrics::register(&mut registry);
        requests.observe("http", "/ready", axum::http::StatusCode::OK, 0.002);
        let mut open_metrics = String::new();
        prometheus_client::encoding::text::encode(&mut open_metrics, &registry).unwrap();
        let page = classic_text(&open_metrics);
        for line in [
            "# TYPE tracelake_requests_total counter",
            "tracelake_requests_total{listener=\"http\",route=\"/ready\",status=\"2xx\"} 1",
            "tracelake_request_duration_seconds_bucket{le=\"0.0025\",listener=\"http\",route=\"/ready\",status=\"2xx\"} 1",
            "tracelake_request_duration_seconds_bucket{le=\"0.001\",listener=\"http\",route=\"/ready\",status=\"2xx\"} 0",
        ] {
            assert!(
                page.lines().any(|one| one == line),
                "missing {line}\n{page}"
            );
        }
        assert!(!page.contains("EOF"));
    }
}

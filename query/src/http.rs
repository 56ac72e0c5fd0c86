//! HTTP query API on the query port (3200).
//!
//! | route | answer |
//! |---|---|
//! | `GET /api/...` | Tempo's API ([`crate::tempo`]): trace by id (v1, v2; JSON or protobuf), TraceQL search, tags and tag values, build info |
//! | `GET /v1/service-map` | the service map of `start`..`end` (unix seconds, fractions allowed; default the last hour) as `{"nodes":[...],"edges":[...]}`; `source=auto` (default: precomputed rows where written, raw spans elsewhere), `precomputed` or `raw`; `tenant=` overrides the header |
//! | `GET /v1/histogram` | latency of `service` (its entry spans, or the spans named `operation`), or of the edge `client` -> `server` (node names; the caller's timing; without `client`, every call into `server`), over `start`..`end`: `{"count", "sum_seconds", "quantiles": {"p50","p90","p99","max"}, "outcomes", "buckets": [{"le", "count"}] (cumulative, Tempo's span-metrics bounds), "distribution": [{"value", "count"}]}`, seconds; `source` as for the service map |
//! | `GET /v1/services` | the services of `start`..`end` with their operations: `{"services": [{"name", "type", "operations"}]}` |
//! | `GET /v1/search` | trace summaries matching `q`, a TraceQL query or an X-Ray filter expression (`lang=traceql|xray`, else by its first character), newest first, `limit` (1..100, default 20) a page, `page=` the previous answer's `next_page` ([`crate::search`]) |
//! | `GET /v1/traces/{id}` | a whole trace, flat, with X-Ray's parts apart ([`crate::trace_view`]); `id` hex or X-Ray's `1-...`; 404 when unknown |
//! | `GET /v1/traces/{id}/xray` | the same trace as X-Ray segment documents (BatchGetTraces' `Trace` object) |
//! | `GET /`, `GET /ui/...` | the web UI ([`crate::ui`]) |
//! | `GET /v1/sql?q=`, `POST /v1/sql` (body: the query) | read-only SQL ([`crate::sql`]): `{"columns", "rows": [{column: value}], "truncated"}`, or with `Accept: application/vnd.apache.arrow.stream` an Arrow IPC stream (`x-tracelake-truncated: true` when cut); `timeout=` (e.g. `5s`, at most 30 s); 400 with DataFusion's message for refused or invalid SQL, 503 on timeout |
//! | `GET /v1/openapi.json` | the OpenAPI 3.1 description of the `/v1` endpoints ([`OPENAPI`]) |
//! | `GET /jaeger/api/...` | the Jaeger query API ([`crate::jaeger`]) |
//! | `GET /ready` | 200 `ready` |
//! | `GET /api/echo` | 200 `echo` (Grafana's data source test) |
//!
//! The tenant is the `X-Scope-OrgID` header, `single-tenant` without it
//! (with API keys configured, the server's key layer in front has set it
//! to the key's tenant and refused a `tenant=` naming another). Errors are
//! plain text with the status, as Tempo answers.
//!
//! At most [`QueryLimits::max_concurrent`] queries run at once (every route
//! but `/ready` and `/api/echo`); a query beyond waits up to
//! [`QueryLimits::queue_wait`] for its turn, then gets 429 with
//! `Retry-After`. A dashboard's burst of panels waits; a flood is refused
//! before it takes the memory and CPU the running queries need.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tracelake_model::TraceId;
use tracelake_storage::SpanReader;

use tracelake_routes::{Access, Routes};

use crate::QueryError;
pub use crate::api::ApiError;
use crate::api::{check_search_range, tenant, time_range, within_query_timeout};
use crate::derived_rows::{Source, derived_rows};
use crate::service_map::{LatencyJson, ServiceMap, Stats};
use tracelake_model::derived::SPAN_METRICS_BUCKETS;

#[derive(Debug, Clone)]
struct QueryState {
    reader: Arc<dyn SpanReader>,
    limits: QueryLimits,
}

/// The query routes.
pub fn router(reader: Arc<dyn SpanReader>) -> Router {
    router_with_limits(reader, QueryLimits::default())
}

/// [`routes_with_limits`] as a plain router (servers without keys, tests).
pub fn router_with_limits(reader: Arc<dyn SpanReader>, limits: QueryLimits) -> Router {
    routes_with_limits(reader, limits).into_router()
}

/// How many queries run at once, and how long one waits for its turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryLimits {
    pub max_concurrent: usize,
    pub queue_wait: std::time::Duration,
    /// Longest time range a Tempo search may cover; zero: any.
    pub max_search_duration: std::time::Duration,
}

impl Default for QueryLimits {
    fn default() -> Self {
        Self {
            max_concurrent: 16,
            queue_wait: std::time::Duration::from_secs(5),
            max_search_duration: std::time::Duration::from_secs(168 * 3600),
        }
    }
}

/// The query API with `limits` on the queries (not on the health routes),
/// each route with the access it needs.
pub fn routes_with_limits(reader: Arc<dyn SpanReader>, limits: QueryLimits) -> Routes {
    let queries = Routes::new()
        .route("/v1/service-map", get(get_service_map), Access::QUERY)
        .route("/v1/sql", get(get_sql).post(post_sql), Access::QUERY)
        .route("/v1/histogram", get(get_histogram), Access::QUERY)
        .route("/v1/services", get(get_services), Access::QUERY)
        .route("/v1/search", get(get_search), Access::QUERY)
        .route("/v1/search/explain", get(get_search_explain), Access::QUERY)
        .route(
            "/v1/traceql/query_range",
            get(get_query_range),
            Access::QUERY,
        )
        .route("/v1/traces/{trace_id}", get(get_trace), Access::QUERY)
        .route(
            "/v1/traces/{trace_id}/xray",
            get(get_trace_xray),
            Access::QUERY,
        )
        .route("/v1/openapi.json", get(openapi), Access::QUERY)
        .with_state(QueryState {
            reader: Arc::clone(&reader),
            limits,
        })
        .merge(crate::tempo::routes_with_max_search(
            Arc::clone(&reader),
            limits.max_search_duration,
        ))
        .merge(crate::jaeger::routes(reader));
    limit_concurrency(queries, limits)
        .merge(health_routes())
        .merge(crate::ui::routes())
}

/// `/ready` and `/api/echo` (Grafana's data source test), which every
/// role serves, queries or not, open to anyone.
pub fn health_routes() -> Routes {
    Routes::new()
        .route("/ready", get(|| async { "ready" }), Access::Open)
        .route("/api/echo", get(|| async { "echo" }), Access::Open)
}

/// Lets `limits.max_concurrent` requests of `routes` run at once; the
/// others wait up to `limits.queue_wait`, then get 429.
pub fn limit_concurrency(routes: Routes, limits: QueryLimits) -> Routes {
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_concurrent.max(1)));
    routes.layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let permits = Arc::clone(&permits);
            async move {
                match tokio::time::timeout(limits.queue_wait, permits.acquire_owned()).await {
                    Ok(Ok(_permit)) => next.run(request).await,
                    _ => (
                        StatusCode::TOO_MANY_REQUESTS,
                        [(header::RETRY_AFTER, "1")],
                        format!(
                            "too many concurrent queries: {} run at once (query.max_concurrent) and this one waited {:?}; retry later",
                            limits.max_concurrent, limits.queue_wait
                        ),
                    )
                        .into_response(),
                }
            }
        },
    ))
}

/// The OpenAPI document of the native endpoints (`/v1/*`, the OTLP/HTTP
/// ones on their own port included), kept beside the code in
/// `query/api/openapi.json`; `tests/openapi.rs` checks it against the
/// router.
pub const OPENAPI: &str = include_str!("../api/openapi.json");

async fn openapi() -> Response {
    let mut response = OPENAPI.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The tenant of a native API request: `tenant=` or the header.
fn native_tenant(
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Result<String, ApiError> {
    match params.get("tenant").filter(|tenant| !tenant.is_empty()) {
        Some(tenant) => {
            tracelake_model::validate_tenant(tenant)
                .map_err(|error| ApiError::BadRequest(error.to_string()))?;
            Ok(tenant.clone())
        }
        None => tenant(headers),
    }
}

/// `start`/`end` as unix seconds with fractions; the last hour by default.
fn native_window(params: &HashMap<String, String>) -> Result<(i64, i64), ApiError> {
    let seconds = |name: &str| -> Result<Option<i64>, ApiError> {
        match params.get(name).filter(|value| !value.is_empty()) {
            None => Ok(None),
            Some(value) => value
                .parse::<f64>()
                .ok()
                .filter(|seconds| seconds.is_finite() && *seconds >= 0.0 && *seconds < 1e11)
                .map(|seconds| Some((seconds * 1e9).round() as i64))
                .ok_or_else(|| {
                    ApiError::BadRequest(format!("{name} must be unix seconds, got {value:?}"))
                }),
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos() as i64)
        .unwrap_or(0);
    let end = seconds("end")?.unwrap_or(now);
    let start = seconds("start")?.unwrap_or(end - 3_600_000_000_000);
    if start > end {
        return Err(ApiError::BadRequest("start must not be after end".into()));
    }
    Ok((start, end))
}

fn source_param(params: &HashMap<String, String>) -> Result<Source, ApiError> {
    match params.get("source").map(String::as_str) {
        None | Some("") => Ok(Source::Auto),
        Some(text) => Source::parse(text).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "source must be auto, precomputed or raw, got {text:?}"
            ))
        }),
    }
}

/// The service-map and span-metrics rows a native request's tenant,
/// window (`start`, `end`) and `source` select.
async fn window_rows(
    state: QueryState,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Result<crate::derived_rows::DerivedRows, ApiError> {
    let tenant = native_tenant(headers, params)?;
    let window = native_window(params)?;
    let source = source_param(params)?;
    Ok(derived_rows(state.reader, &tenant, window, source).await?)
}

/// What a histogram is of.
enum HistogramOf<'a> {
    /// A service's entry spans, or its spans named `operation`.
    Service {
        service: &'a str,
        operation: Option<&'a str>,
    },
    /// The calls from `client` to `server` (node names), as the caller
    /// timed them: the service map's edge; without `client`, every call
    /// `server` received (an inferred node's own statistics).
    Edge {
        client: Option<&'a str>,
        server: &'a str,
    },
}

impl<'a> HistogramOf<'a> {
    fn from_params(params: &'a HashMap<String, String>) -> Result<Self, ApiError> {
        let param = |name: &str| {
            params
                .get(name)
                .map(String::as_str)
                .filter(|value| !value.is_empty())
        };
        match (param("service"), param("client"), param("server")) {
            (Some(service), None, None) => Ok(Self::Service {
                service,
                operation: param("operation"),
            }),
            (None, client, Some(server)) if param("operation").is_none() => {
                Ok(Self::Edge { client, server })
            }
            _ => Err(ApiError::BadRequest(
                "give service (and optionally operation), or server (and optionally client) for the calls into a node".into(),
            )),
        }
    }

    fn stats(&self, rows: &crate::derived_rows::DerivedRows) -> Stats {
        let mut stats = Stats::default();
        match *self {
            Self::Service { service, operation } => {
                for (key, row) in &rows.spans.rows {
                    let wanted = key.service.name == service
                        && match operation {
                            Some(operation) => key.span_name == operation,
                            None => key.entry,
                        };
                    if wanted {
                        stats.merge(&Stats::from_span_metrics(row));
                    }
                }
            }
            Self::Edge { client, server } => {
                for (key, row) in &rows.edges.rows {
                    if client.is_none_or(|client| key.client.name == client)
                        && key.server.name == server
                    {
                        stats.merge(&Stats::from_edge(row));
                    }
                }
            }
        }
        stats
    }
}

async fn get_histogram(
    State(state): State<QueryState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let of = HistogramOf::from_params(&params)?;
    let rows = window_rows(state, &headers, &params).await?;
    let stats = of.stats(&rows);
    let latency = &stats.latency;
    let buckets: Vec<serde_json::Value> = SPAN_METRICS_BUCKETS
        .iter()
        .zip(latency.cumulative_counts(&SPAN_METRICS_BUCKETS))
        .map(|(bound, count)| serde_json::json!({"le": bound, "count": count}))
        .chain(std::iter::once(
            serde_json::json!({"le": "+Inf", "count": latency.count()}),
        ))
        .collect();
    let distribution: Vec<serde_json::Value> = latency
        .distribution_seconds()
        .into_iter()
        .map(|(value, count)| serde_json::json!({"value": value, "count": count}))
        .collect();
    let mut answer = serde_json::json!({
        "count": latency.count(),
        "sum_seconds": stats.duration_sum_ns as f64 / 1e9,
        "quantiles": LatencyJson::new(latency),
        "outcomes": {
            "ok": stats.counts.ok,
            "errors": stats.counts.errors,
            "throttles": stats.counts.throttles,
            "faults": stats.counts.faults,
        },
        "buckets": buckets,
        "distribution": distribution,
    });
    match of {
        HistogramOf::Service { service, operation } => {
            answer["service"] = service.into();
            answer["operation"] = operation.into();
        }
        HistogramOf::Edge { client, server } => {
            answer["client"] = client.into();
            answer["server"] = server.into();
        }
    }
    Ok(axum::Json(answer).into_response())
}

/// The services of the window, each with its operations (span names), for
/// search forms.
async fn get_services(
    State(state): State<QueryState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let rows = window_rows(state, &headers, &params).await?;
    let mut services: std::collections::BTreeMap<(&str, &str), std::collections::BTreeSet<&str>> =
        Default::default();
    for key in rows.spans.rows.keys() {
        services
            .entry((key.service.name.as_str(), key.service.node_type.as_str()))
            .or_default()
            .insert(key.span_name.as_str());
    }
    let services: Vec<serde_json::Value> = services
        .into_iter()
        .filter(|((name, _), _)| !name.is_empty())
        .map(|((name, node_type), operations)| {
            serde_json::json!({"name": name, "type": node_type, "operations": operations})
        })
        .collect();
    Ok(axum::Json(serde_json::json!({ "services": services })).into_response())
}

/// Most traces one search page answers.
const MAX_SEARCH_LIMIT: usize = 100;
const DEFAULT_SEARCH_LIMIT: usize = 20;

/// `GET /v1/traceql/query_range`: TraceQL metrics with the parameters and
/// answer of Tempo's `/api/metrics/query_range` ([`crate::tempo::metrics`]),
/// for the web UI's metrics view.
async fn get_query_range(
    State(state): State<QueryState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let tenant = native_tenant(&headers, &params)?;
    let body = crate::tempo::metrics::range_body(
        state.reader,
        state.limits.max_search_duration,
        &tenant,
        &params,
    )
    .await?;
    Ok(axum::Json(body).into_response())
}

/// `GET /v1/search/explain?q=&start=&end=`: how a TraceQL query (search
/// or metrics) runs, with DataFusion's analyzed plan (what was pruned).
async fn get_search_explain(
    State(state): State<QueryState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let tenant = native_tenant(&headers, &params)?;
    let range_ns = native_window(&params)?;
    check_search_range(range_ns, state.limits.max_search_duration)?;
    let text = params
        .get("q")
        .map(String::as_str)
        .filter(|text| !text.trim().is_empty())
        .unwrap_or("{}");
    let checked =
        crate::traceql::prepare(text).map_err(|error| ApiError::BadRequest(error.to_string()))?;
    let run = crate::traceql::explain(state.reader, &tenant, &checked, range_ns);
    let plan = within_query_timeout(run).await??;
    let mut response = plan.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(response)
}

async fn get_search(
    State(state): State<QueryState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    use crate::search::{Language, SearchError, SearchRequest, cursor_token, parse_cursor_token};
    let tenant = native_tenant(&headers, &params)?;
    let range_ns = native_window(&params)?;
    let expression = params.get("q").cloned().unwrap_or_default();
    let language = match params.get("lang").map(String::as_str) {
        None | Some("") => Language::of(&expression),
        Some(text) => Language::parse(text).ok_or_else(|| {
            ApiError::BadRequest(format!("lang must be traceql or xray, got {text:?}"))
        })?,
    };
    if language == Language::TraceQl {
        check_search_range(range_ns, state.limits.max_search_duration)?;
    }
    let limit = match params.get("limit").filter(|value| !value.is_empty()) {
        None => DEFAULT_SEARCH_LIMIT,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|limit| (1..=MAX_SEARCH_LIMIT).contains(limit))
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "limit must be 1 to {MAX_SEARCH_LIMIT}, got {text:?}"
                ))
            })?,
    };
    let after = match params.get("page").filter(|value| !value.is_empty()) {
        None => None,
        Some(token) => Some(parse_cursor_token(token).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "page {token:?} is not a page token this API answered"
            ))
        })?),
    };
    let request = SearchRequest {
        expression,
        language,
        range_ns,
        limit,
        after,
    };
    let run = crate::search::search(state.reader, &tenant, request);
    let page = within_query_timeout(run)
        .await?
        .map_err(|error| match error {
            SearchError::Invalid(message) => ApiError::BadRequest(message),
            SearchError::Failed(error) => ApiError::Internal(error),
        })?;
    let (next, inspected_traces) = (page.next, page.inspected_traces);
    let summaries = page.traces;
    let traces = crate::off_reactor(move || {
        Ok(summaries
            .iter()
            .map(crate::search::summary_json)
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(axum::Json(serde_json::json!({
        "traces": traces,
        "next_page": next.as_ref().map(cursor_token),
        "language": language.name(),
        "inspected_traces": inspected_traces,
    }))
    .into_response())
}

/// A trace id as the native API takes it: hex (leading zeroes optional)
/// or X-Ray's `1-xxxxxxxx-yyyy...`.
fn trace_id_param(text: &str) -> Result<TraceId, ApiError> {
    if text.starts_with("1-") {
        return tracelake_model::xray::parse_xray_trace_id(text)
            .ok_or_else(|| ApiError::BadRequest(format!("{text:?} is not an X-Ray trace id")));
    }
    TraceId::parse_lenient(text)
        .map_err(|error| ApiError::BadRequest(format!("trace id {text:?}: {error}")))
}

async fn stored_trace(
    state: QueryState,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
    text: &str,
) -> Result<(TraceId, opentelemetry_proto::tonic::trace::v1::TracesData), ApiError> {
    let tenant = native_tenant(headers, params)?;
    let trace_id = trace_id_param(text)?;
    let range = time_range(params)?;
    crate::trace::trace_by_id(state.reader, &tenant, trace_id, range)
        .await?
        .map(|trace| (trace_id, trace))
        .ok_or_else(|| ApiError::NotFound(format!("trace {text} not found")))
}

async fn get_trace(
    State(state): State<QueryState>,
    Path(text): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (trace_id, trace) = stored_trace(state, &headers, &params, &text).await?;
    let json =
        crate::off_reactor(move || Ok(crate::trace_view::trace_json(&trace_id, &trace))).await?;
    Ok(axum::Json(json).into_response())
}

async fn get_trace_xray(
    State(state): State<QueryState>,
    Path(text): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (trace_id, trace) = stored_trace(state, &headers, &params, &text).await?;
    let id = tracelake_model::xray::format_xray_trace_id(&trace_id);
    let json =
        crate::off_reactor(move || Ok(crate::xray_api::xray_trace_json(&id, &trace))).await?;
    Ok(axum::Json(json).into_response())
}

async fn get_service_map(
    State(state): State<QueryState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let rows = window_rows(state, &headers, &params).await?;
    let map = ServiceMap::build_off_reactor(rows).await?;
    Ok(axum::Json(map.to_json()).into_response())
}

/// The media type of an Arrow IPC stream.
const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

async fn sql_answer(
    reader: Arc<dyn SpanReader>,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
    query: &str,
) -> Result<Response, ApiError> {
    let tenant = native_tenant(headers, params)?;
    if query.trim().is_empty() {
        return Err(ApiError::BadRequest("empty query".into()));
    }
    let timeout = match params.get("timeout").filter(|value| !value.is_empty()) {
        None => crate::sql::QUERY_TIMEOUT,
        Some(text) => humantime::parse_duration(text).map_err(|error| {
            ApiError::BadRequest(format!(
                "timeout must be a duration like 10s, got {text:?}: {error}"
            ))
        })?,
    };
    let wants_arrow = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.contains(ARROW_STREAM));
    let refused = |error: QueryError| match error {
        QueryError::DataFusion(error) => ApiError::BadRequest(error.to_string()),
        QueryError::Timeout(_) => ApiError::Timeout(error.to_string()),
        other => ApiError::Internal(other),
    };
    if wants_arrow {
        let answer = crate::sql::run_query_batches(reader, &tenant, query, timeout)
            .await
            .map_err(refused)?;
        let bytes = crate::sql::arrow_stream(&answer)?;
        let mut response = bytes.into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(ARROW_STREAM));
        if answer.truncated {
            response
                .headers_mut()
                .insert("x-tracelake-truncated", HeaderValue::from_static("true"));
        }
        return Ok(response);
    }
    let answer = crate::sql::run_query(reader, &tenant, query, timeout)
        .await
        .map_err(refused)?;
    Ok(axum::Json(answer).into_response())
}

async fn get_sql(
    State(state): State<QueryState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let query = params.get("q").cloned().unwrap_or_default();
    sql_answer(state.reader, &headers, &params, &query).await
}

async fn post_sql(
    State(state): State<QueryState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: String,
) -> Result<Response, ApiError> {
    sql_answer(state.reader, &headers, &params, &body).await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn queries_past_the_limit_wait_then_get_429() {
        let slow = Routes::new().route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                "done"
            }),
            Access::QUERY,
        );
        let limits = QueryLimits {
            max_concurrent: 2,
            queue_wait: Duration::from_millis(100),
            ..QueryLimits::default()
        };
        let app = limit_concurrency(slow, limits).into_router();
        let call = || {
            let app = app.clone();
            tokio::spawn(async move {
                let request = axum::http::Request::get("/slow")
                    .body(axum::body::Body::empty())
                    .unwrap();
                tower::ServiceExt::oneshot(app, request).await.unwrap()
            })
        };
        let calls: Vec<_> = (0..4).map(|_| call()).collect();
        let mut statuses = Vec::new();
        for call in calls {
            let response = call.await.unwrap();
            if response.status() == StatusCode::TOO_MANY_REQUESTS {
                assert_eq!(response.headers()[header::RETRY_AFTER], "1");
            }
            statuses.push(response.status().as_u16());
        }
        statuses.sort();
        assert_eq!(statuses, vec![200, 200, 429, 429]);
        // Once they are done, the next one runs.
        assert_eq!(call().await.unwrap().status(), StatusCode::OK);
    }
}

//! Tempo's HTTP API, the contract Grafana's Tempo data source uses.
//!
//! | route | answer |
//! |---|---|
//! | `GET /api/traces/{id}` | v1: `{"batches": [ResourceSpans...]}` in OTLP JSON; with `Accept: application/protobuf`, Tempo's `Trace` (wire-compatible with OTLP `TracesData`) |
//! | `GET /api/v2/traces/{id}` | v2: `{"trace": {"resourceSpans": [...]}, "status": "COMPLETE"}`; protobuf `TraceByIDResponse` |
//! | `GET /api/search?q=&start=&end=&limit=&spss=` | TraceQL search ([`crate::traceql`]); without `q`, the legacy `tags=` (logfmt), `minDuration=`, `maxDuration=` |
//! | `GET /api/search/tags` | `{"tagNames": [...]}`: span and resource attribute names |
//! | `GET /api/v2/search/tags?scope=&q=` | `{"scopes": [{"name", "tags"}]}` for `resource`, `span`, `event`, `link`, `instrumentation`, `intrinsic` (`scope` one of them, or `none`/absent for every one; `trace` none; anything else a 400) |
//! | `GET /api/search/tag/{tag}/values` | `{"tagValues": ["..."]}` of an unscoped attribute |
//! | `GET /api/v2/search/tag/{scope.tag}/values?q=` | `{"tagValues": [{"type", "value"}]}`; types `string`, `int`, `float`, `bool`, `keyword` (status, kind) |
//! | `GET /api/metrics/query_range?q=&start=&end=&since=&step=&exemplars=` | TraceQL metrics (the child module `metrics`) |
//! | `GET /api/metrics/query?q=&start=&end=&since=` | the same, one value per series |
//! | `GET /api/status/buildinfo` | `{"version": "3.0.3", ...}` (see [`TEMPO_VERSION`]) |
//!
//! Times: `start`/`end` are unix seconds (both or neither); searches and
//! tag lookups without them cover the last hour, trace by id covers all
//! data (the trace-id index finds the blocks). Nanoseconds are strings in
//! JSON, as Tempo's protobuf JSON writes uint64. Trace ids are answered as
//! 32 hex digits.
//!
//! `q` on the tag endpoints narrows the spans whose tags and values are
//! listed; Grafana sends the query being typed, so a `q` that does not
//! parse is ignored rather than refused (as Tempo does).

mod legacy;
pub(crate) mod metrics;
mod tags;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, TracesData};
use prost::Message;
use serde::Serialize;
use serde_json::{Value as Json, json};
use tracelake_model::TraceId;
use tracelake_storage::SpanReader;

use tracelake_routes::{Access, Routes};

use crate::api::{ApiError, tenant, time_range, wants_protobuf};
use crate::trace::trace_by_id;
use crate::traceql::{self, AttrValue, Checked, SearchWindow};
use legacy::legacy_query;
use tags::{tag_values_v1, tag_values_v2, tags_v1, tags_v2};

/// The Tempo version `/api/status/buildinfo` reports: the release whose
/// TraceQL and metrics API tracelake serves. Current Grafana decides on
/// streaming by the data source's own toggles, not by this version (see
/// the README: leave streaming off, every feature is served over HTTP).
pub const TEMPO_VERSION: &str = "3.0.3";

const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 1_000;
const DEFAULT_SPANS_PER_SPANSET: usize = 3;
const MAX_SPANS_PER_SPANSET: usize = 100;
/// Most tag names or values one request lists.
pub const MAX_TAG_VALUES: usize = 5_000;
const HOUR_NS: i64 = 3_600_000_000_000;
/// What Tempo names the root service of a trace whose root span is missing.
const NO_ROOT: &str = "<root span not yet received>";

#[derive(Debug, Clone)]
pub(crate) struct TempoState {
    pub(crate) reader: Arc<dyn SpanReader>,
    /// Longest `end - start` a search may ask for; zero: any.
    pub(crate) max_search_duration: std::time::Duration,
}

/// The Tempo routes, to merge into the query router.
pub fn router(reader: Arc<dyn SpanReader>) -> Router {
    routes_with_max_search(reader, std::time::Duration::ZERO).into_router()
}

/// The Tempo routes, each for a key with `query`; a search over more than
/// `max_search_duration` (zero: no limit) gets 400, as Tempo's
/// `max_duration` answers.
pub fn routes_with_max_search(
    reader: Arc<dyn SpanReader>,
    max_search_duration: std::time::Duration,
) -> Routes {
    Routes::new()
        .route("/api/traces/{trace_id}", get(trace_v1), Access::QUERY)
        .route("/api/v2/traces/{trace_id}", get(trace_v2), Access::QUERY)
        .route("/api/search", get(search), Access::QUERY)
        .route("/api/search/tags", get(tags_v1), Access::QUERY)
        .route("/api/v2/search/tags", get(tags_v2), Access::QUERY)
        .route(
            "/api/search/tag/{tag}/values",
            get(tag_values_v1),
            Access::QUERY,
        )
        .route(
            "/api/v2/search/tag/{tag}/values",
            get(tag_values_v2),
            Access::QUERY,
        )
        .route(
            "/api/metrics/query_range",
            get(metrics::query_range),
            Access::QUERY,
        )
        .route(
            "/api/metrics/query",
            get(metrics::query_instant),
            Access::QUERY,
        )
        .route("/api/status/buildinfo", get(buildinfo), Access::QUERY)
        .with_state(TempoState {
            reader,
            max_search_duration,
        })
}

// ---------------------------------------------------------------- traces

/// Tempo's `tempopb.Trace`: field 1 is the resource spans, the same wire
/// format as OTLP `TracesData`.
#[derive(Clone, PartialEq, Message)]
pub struct TempoTrace {
    #[prost(message, repeated, tag = "1")]
    pub resource_spans: Vec<ResourceSpans>,
}

/// Tempo's `tempopb.TraceByIDMetrics`.
#[derive(Clone, PartialEq, Message)]
pub struct TraceByIdMetrics {
    #[prost(uint64, tag = "1")]
    pub inspected_bytes: u64,
}

/// Tempo's `tempopb.TraceByIDResponse` (`/api/v2/traces/{id}`); `status`
/// is `PartialStatus` (0 = COMPLETE, 1 = PARTIAL).
#[derive(Clone, PartialEq, Message)]
pub struct TraceByIdResponse {
    #[prost(message, optional, tag = "1")]
    pub trace: Option<TempoTrace>,
    #[prost(message, optional, tag = "2")]
    pub metrics: Option<TraceByIdMetrics>,
    #[prost(int32, tag = "3")]
    pub status: i32,
    #[prost(string, tag = "4")]
    pub message: String,
}

async fn find_trace(
    state: &TempoState,
    trace_id: &str,
    params: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<TracesData, ApiError> {
    let tenant = tenant(headers)?;
    let id = TraceId::parse_lenient(trace_id)
        .map_err(|error| ApiError::BadRequest(format!("invalid trace id {trace_id:?}: {error}")))?;
    let range = time_range(params)?;
    trace_by_id(Arc::clone(&state.reader), &tenant, id, range)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("trace {id} not found")))
}

fn protobuf(bytes: Vec<u8>) -> Response {
    let mut response = bytes.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/protobuf"),
    );
    response
}

#[derive(Serialize)]
struct BatchesJson<'a> {
    batches: &'a [ResourceSpans],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TraceJson<'a> {
    resource_spans: &'a [ResourceSpans],
}

#[derive(Serialize)]
struct TraceByIdJson<'a> {
    trace: TraceJson<'a>,
    status: &'static str,
}

async fn trace_v1(
    State(state): State<TempoState>,
    Path(trace_id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let trace = find_trace(&state, &trace_id, &params, &headers).await?;
    if wants_protobuf(&headers) {
        return Ok(protobuf(trace.encode_to_vec()));
    }
    Ok(axum::Json(BatchesJson {
        batches: &trace.resource_spans,
    })
    .into_response())
}

async fn trace_v2(
    State(state): State<TempoState>,
    Path(trace_id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let trace = find_trace(&state, &trace_id, &params, &headers).await?;
    if wants_protobuf(&headers) {
        let response = TraceByIdResponse {
            trace: Some(TempoTrace {
                resource_spans: trace.resource_spans,
            }),
            metrics: None,
            status: 0,
            message: String::new(),
        };
        return Ok(protobuf(response.encode_to_vec()));
    }
    Ok(axum::Json(TraceByIdJson {
        trace: TraceJson {
            resource_spans: &trace.resource_spans,
        },
        status: "COMPLETE",
    })
    .into_response())
}

// ---------------------------------------------------------------- search

pub(crate) fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos() as i64)
        .unwrap_or(0)
}

/// `start`/`end`, or the last hour.
fn window(params: &HashMap<String, String>) -> Result<(i64, i64), ApiError> {
    Ok(time_range(params)?.unwrap_or_else(|| {
        let now = now_ns();
        (now - HOUR_NS, now)
    }))
}

fn count_param(
    params: &HashMap<String, String>,
    name: &str,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    match params.get(name).filter(|value| !value.is_empty()) {
        None => Ok(default),
        Some(text) => match text.parse::<usize>() {
            Ok(0) => Ok(default),
            Ok(count) if count <= max => Ok(count),
            Ok(_) => Err(ApiError::BadRequest(format!(
                "{name} must be at most {max}, got {text}"
            ))),
            Err(_) => Err(ApiError::BadRequest(format!(
                "{name} must be a number, got {text:?}"
            ))),
        },
    }
}

fn bad_query(error: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest(error.to_string())
}

/// An attribute in OTLP JSON (`intValue` as a string, as protobuf JSON
/// writes int64).
pub(crate) fn attribute_json(key: &str, value: &AttrValue) -> Json {
    let value = match value {
        AttrValue::Text(text) => json!({"stringValue": text}),
        AttrValue::Int(int) => json!({"intValue": int.to_string()}),
        AttrValue::Float(float) => json!({"doubleValue": float}),
        AttrValue::Bool(flag) => json!({"boolValue": flag}),
        AttrValue::Duration(_) => json!({"stringValue": value.render()}),
    };
    json!({"key": key, "value": value})
}

fn trace_json(checked: &Checked, found: &traceql::Found, spans_per_spanset: usize) -> Json {
    let trace = &found.trace;
    let spansets: Vec<Json> = found
        .spansets
        .iter()
        .map(|set| {
            let spans: Vec<Json> = set
                .spans
                .iter()
                .take(spans_per_spanset)
                .map(|index| {
                    let span = &trace.spans[*index];
                    let attributes: Vec<Json> = checked
                        .span_attributes(*index, trace)
                        .iter()
                        .map(|(key, value)| attribute_json(key, value))
                        .collect();
                    json!({
                        "spanID": hex::encode(span.span_id),
                        "name": span.name,
                        "startTimeUnixNano": span.start_ns.to_string(),
                        "durationNanos": span.duration_ns.to_string(),
                        "attributes": attributes,
                    })
                })
                .collect();
            let mut set_json = json!({"spans": spans, "matched": set.spans.len()});
            if !set.attributes.is_empty() {
                set_json["attributes"] = set
                    .attributes
                    .iter()
                    .map(|(key, value)| attribute_json(key, value))
                    .collect();
            }
            set_json
        })
        .collect();
    let root = trace.root_span();
    let mut out = json!({
        "traceID": hex::encode(trace.trace_id),
        "rootServiceName": root.map_or(NO_ROOT, |root| root.service.as_str()),
        "startTimeUnixNano": trace.start_ns.to_string(),
        "durationMs": (trace.end_ns - trace.start_ns) / 1_000_000,
        "spanSets": spansets,
    });
    if let Some(root) = root {
        out["rootTraceName"] = json!(root.name);
    }
    if let Some(first) = spansets.first() {
        out["spanSet"] = first.clone();
    }
    out
}

async fn search(
    State(state): State<TempoState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let tenant = tenant(&headers)?;
    let range_ns = window(&params)?;
    crate::api::check_search_range(range_ns, state.max_search_duration)?;
    let limit = count_param(&params, "limit", DEFAULT_LIMIT, MAX_LIMIT)?;
    let spss = count_param(
        &params,
        "spss",
        DEFAULT_SPANS_PER_SPANSET,
        MAX_SPANS_PER_SPANSET,
    )?;
    let checked = match params.get("q").filter(|q| !q.trim().is_empty()) {
        Some(text) => traceql::prepare(text).map_err(bad_query)?,
        None => traceql::check(legacy_query(&params)?).map_err(bad_query)?,
    };
    if checked.metrics().is_some() {
        return Err(ApiError::BadRequest(
            "a metrics query: run it with /api/metrics/query_range or /api/metrics/query".into(),
        ));
    }
    let checked = Arc::new(checked);
    let run = traceql::search(
        state.reader,
        &tenant,
        Arc::clone(&checked),
        SearchWindow {
            range_ns,
            limit,
            pushdown: true,
        },
    );
    let outcome = crate::api::within_query_timeout(run).await??;
    let traces: Vec<Json> = outcome
        .traces
        .iter()
        .map(|found| trace_json(&checked, found, spss))
        .collect();
    Ok(axum::Json(json!({
        "traces": traces,
        "metrics": {
            "inspectedTraces": outcome.inspected_traces,
            "inspectedSpans": outcome.inspected_spans.to_string(),
            "inspectedBytes": outcome.inspected_bytes.to_string(),
            "completedJobs": 1,
            "totalJobs": 1,
        },
    }))
    .into_response())
}

async fn buildinfo() -> Response {
    axum::Json(json!({
        "version": TEMPO_VERSION,
        "revision": concat!("tracelake-", env!("CARGO_PKG_VERSION")),
        "branch": "",
        "buildUser": "",
        "buildDate": "",
        "goVersion": "",
    }))
    .into_response()
}

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

pub(crate) mod metrics;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::functions::core::expr_fn::get_field;
use datafusion::functions_nested::expr_fn::map_keys;
use datafusion::prelude::{DataFrame, Expr, col, lit};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, TracesData};
use prost::Message;
use serde::Serialize;
use serde_json::{Value as Json, json};
use tracelake_storage::schema::col as span_col;
use tracelake_storage::{SpanReader, TraceId};

use tracelake_routes::{Access, Routes};

use crate::api::{ApiError, tenant, time_range, wants_protobuf};
use crate::exprs::starts_within;
use crate::trace::trace_by_id;
use crate::traceql::{
    self, AttrValue, BinaryOp, Body, Checked, Field, FieldExpr, Hints, Intrinsic, Pipeline,
    Query as TraceqlQuery, Scope, SearchWindow, Spansets, Stage, Value,
};

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

/// Splits logfmt (`a=b c="d e"`) into pairs.
fn logfmt(text: &str) -> Result<Vec<(String, String)>, ApiError> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        if chars.next() != Some('=') || key.is_empty() {
            return Err(ApiError::BadRequest(format!(
                "tags must be logfmt (key=value key2=\"value 2\"), got {text:?}"
            )));
        }
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                    None => {
                        return Err(ApiError::BadRequest(format!(
                            "unterminated quoted value in tags {text:?}"
                        )));
                    }
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                value.push(c);
            }
        }
        pairs.push((key, value));
    }
}

fn and(left: Option<FieldExpr>, right: FieldExpr) -> Option<FieldExpr> {
    Some(match left {
        Some(left) => FieldExpr::Binary(BinaryOp::And, Box::new(left), Box::new(right)),
        None => right,
    })
}

/// The legacy search parameters as a TraceQL query: each tag matches a
/// span or resource attribute (as text, or as the number or boolean it
/// spells), `name` the span name; `minDuration`/`maxDuration` bound the
/// span duration.
fn legacy_query(params: &HashMap<String, String>) -> Result<TraceqlQuery, ApiError> {
    let mut condition = None;
    if let Some(tags) = params.get("tags") {
        for (key, text) in logfmt(tags)? {
            let compare = |field: Field, value: Value| {
                FieldExpr::Binary(
                    BinaryOp::Eq,
                    Box::new(FieldExpr::Field(field)),
                    Box::new(FieldExpr::Value(value)),
                )
            };
            let tag = if key == "name" {
                compare(Field::Intrinsic(Intrinsic::Name), Value::Text(text))
            } else {
                let field = Field::Attribute {
                    scope: Scope::Any,
                    name: key,
                };
                let mut tag = compare(field.clone(), Value::Text(text.clone()));
                let spelled = if let Ok(int) = text.parse::<i64>() {
                    Some(Value::Int(int))
                } else if let Ok(flag) = text.parse::<bool>() {
                    Some(Value::Bool(flag))
                } else {
                    text.parse::<f64>()
                        .ok()
                        .filter(|float| float.is_finite())
                        .map(Value::Float)
                };
                if let Some(value) = spelled {
                    tag = FieldExpr::Binary(
                        BinaryOp::Or,
                        Box::new(tag),
                        Box::new(compare(field, value)),
                    );
                }
                tag
            };
            condition = and(condition, tag);
        }
    }
    for (name, op) in [("minDuration", BinaryOp::Ge), ("maxDuration", BinaryOp::Le)] {
        if let Some(text) = params.get(name).filter(|text| !text.is_empty()) {
            let nanos = crate::units::parse_duration_nanos(text)
                .filter(|nanos| *nanos >= 0)
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "{name} must be a duration like 100ms or 1.5s, got {text:?}"
                    ))
                })?;
            condition = and(
                condition,
                FieldExpr::Binary(
                    op,
                    Box::new(FieldExpr::Field(Field::Intrinsic(Intrinsic::Duration))),
                    Box::new(FieldExpr::Value(Value::Duration(nanos))),
                ),
            );
        }
    }
    Ok(TraceqlQuery {
        body: Body::Search(Pipeline {
            stages: vec![Stage::Spansets(Spansets::Filter(condition))],
        }),
        hints: Hints::default(),
    })
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

// ---------------------------------------------------------------- tags

/// The intrinsics `/api/v2/search/tags` lists, as Tempo lists them
/// (nested-set numbers and `span:childCount` left out).
const INTRINSICS: [&str; 25] = [
    "duration",
    "event:name",
    "event:timeSinceStart",
    "instrumentation:name",
    "instrumentation:version",
    "kind",
    "link:spanID",
    "link:traceID",
    "name",
    "rootName",
    "rootServiceName",
    "span:duration",
    "span:id",
    "span:kind",
    "span:name",
    "span:parentID",
    "span:status",
    "span:statusMessage",
    "status",
    "statusMessage",
    "trace:duration",
    "trace:id",
    "trace:rootName",
    "trace:rootService",
    "traceDuration",
];

/// Where attribute names and values are read from.
#[derive(Debug, Clone, Copy)]
enum AttributeSource {
    Span,
    Resource,
    Instrumentation,
    /// The `attributes` of each item of the `events` list.
    Event,
    Link,
}

impl AttributeSource {
    fn of(scope: Scope) -> Self {
        match scope {
            Scope::Span | Scope::Any => Self::Span,
            Scope::Resource => Self::Resource,
            Scope::Instrumentation => Self::Instrumentation,
            Scope::Event => Self::Event,
            Scope::Link => Self::Link,
        }
    }

    /// The list column whose items hold the attributes, for events and
    /// links.
    fn list(self) -> Option<&'static str> {
        match self {
            Self::Event => Some(span_col::EVENTS),
            Self::Link => Some(span_col::LINKS),
            _ => None,
        }
    }

    fn map(self) -> &'static str {
        match self {
            Self::Span => span_col::ATTRIBUTES,
            Self::Resource => span_col::RESOURCE_ATTRIBUTES,
            Self::Instrumentation => span_col::SCOPE_ATTRIBUTES,
            Self::Event | Self::Link => "attributes",
        }
    }
}

/// The column list items are unnested into.
const ITEM: &str = "item";

/// `frame` with one row per event (link) as column [`ITEM`] when the
/// source is a list, else as it is.
fn items(frame: DataFrame, source: AttributeSource) -> datafusion::error::Result<DataFrame> {
    match source.list() {
        Some(list) => frame
            .select(vec![col(list).alias(ITEM)])?
            .unnest_columns(&[ITEM]),
        None => Ok(frame),
    }
}

/// The attribute map of `source` in a frame from [`items`].
fn attribute_map(source: AttributeSource) -> Expr {
    match source.list() {
        Some(_) => get_field(col(ITEM), source.map()),
        None => col(source.map()),
    }
}

/// The spans whose tags and values a tag request lists: those starting in
/// the window, narrowed by `q` when it parses and checks.
fn tag_spans(params: &HashMap<String, String>) -> Result<Expr, ApiError> {
    let (from, to) = window(params)?;
    let mut condition = starts_within(from, to);
    let narrowing = params
        .get("q")
        .filter(|q| !q.trim().is_empty())
        .and_then(|text| traceql::prepare(text).ok()?.span_predicate());
    if let Some(predicate) = narrowing {
        condition = condition.and(predicate);
    }
    Ok(condition)
}

/// Runs `plan` (built from the tenant's `spans`) within the query timeout.
async fn tag_rows<F>(
    state: &TempoState,
    tenant: &str,
    plan: F,
) -> Result<Vec<RecordBatch>, ApiError>
where
    F: FnOnce(DataFrame) -> datafusion::error::Result<DataFrame>,
{
    let run = crate::session::spans_rows(Arc::clone(&state.reader), tenant, plan);
    crate::api::within_query_timeout(run)
        .await?
        .map_err(ApiError::Internal)
}

fn first_column_strings(batches: &[RecordBatch]) -> Vec<String> {
    let mut out = Vec::new();
    for batch in batches {
        if let Some(array) = batch.column(0).as_string_opt::<i32>() {
            out.extend(
                (0..array.len())
                    .filter(|row| array.is_valid(*row))
                    .map(|row| array.value(row).to_string()),
            );
        }
    }
    out
}

/// Attribute names of `source` on the window's spans.
async fn attribute_names(
    state: &TempoState,
    tenant: &str,
    source: AttributeSource,
    params: &HashMap<String, String>,
) -> Result<Vec<String>, ApiError> {
    let spans = tag_spans(params)?;
    let batches = tag_rows(state, tenant, move |frame| {
        items(frame.filter(spans)?, source)?
            .select(vec![map_keys(attribute_map(source)).alias(TAG)])?
            .unnest_columns(&[TAG])?
            .aggregate(vec![col(TAG)], vec![])?
            .sort(vec![col(TAG).sort(true, false)])?
            .limit(0, Some(MAX_TAG_VALUES))
    })
    .await?;
    Ok(first_column_strings(&batches))
}

/// The column tag names and values are answered in.
const TAG: &str = "tag";

async fn tags_v1(
    State(state): State<TempoState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let tenant = tenant(&headers)?;
    let mut names: BTreeSet<String> = BTreeSet::new();
    for source in [AttributeSource::Span, AttributeSource::Resource] {
        names.extend(attribute_names(&state, &tenant, source, &params).await?);
    }
    Ok(axum::Json(json!({"tagNames": names})).into_response())
}

async fn tags_v2(
    State(state): State<TempoState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let tenant = tenant(&headers)?;
    const ALL: [&str; 6] = [
        "resource",
        "span",
        "event",
        "link",
        "instrumentation",
        "intrinsic",
    ];
    let wanted: &[&str] = match params.get("scope").map(String::as_str) {
        None | Some("" | "all" | "none") => &ALL,
        Some("trace") => &[],
        Some(scope) => match ALL.iter().find(|known| **known == scope) {
            Some(known) => std::slice::from_ref(known),
            None => {
                return Err(ApiError::BadRequest(format!(
                    "invalid scope: {scope} (use resource, span, event, link, instrumentation, intrinsic or none)"
                )));
            }
        },
    };
    let mut scopes = Vec::new();
    for scope in wanted {
        let source = match *scope {
            "span" => Some(AttributeSource::Span),
            "resource" => Some(AttributeSource::Resource),
            "event" => Some(AttributeSource::Event),
            "link" => Some(AttributeSource::Link),
            "instrumentation" => Some(AttributeSource::Instrumentation),
            _ => None,
        };
        let tags = match source {
            Some(source) => attribute_names(&state, &tenant, source, &params).await?,
            None => INTRINSICS.iter().map(|name| name.to_string()).collect(),
        };
        scopes.push(json!({"name": scope, "tags": tags}));
    }
    Ok(axum::Json(json!({"scopes": scopes})).into_response())
}

/// A tag value with its Tempo type name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct TagValue {
    kind: &'static str,
    value: String,
}

fn typed(value: &AttrValue) -> TagValue {
    let kind = match value {
        AttrValue::Text(_) => "string",
        AttrValue::Int(_) => "int",
        AttrValue::Float(_) => "float",
        AttrValue::Bool(_) => "bool",
        AttrValue::Duration(_) => "duration",
    };
    TagValue {
        kind,
        value: value.render(),
    }
}

/// Distinct values of `field` on the window's spans (narrowed by `q`).
async fn values_of(
    state: &TempoState,
    tenant: &str,
    field: &Field,
    params: &HashMap<String, String>,
) -> Result<Vec<TagValue>, ApiError> {
    let keywords = |values: &[&str]| {
        values
            .iter()
            .map(|value| TagValue {
                kind: "keyword",
                value: value.to_string(),
            })
            .collect()
    };
    let not_root = || col(span_col::PARENT_SPAN_ID).is_null();
    let (value, only) = match field {
        Field::Intrinsic(Intrinsic::Status) => return Ok(keywords(&["error", "ok", "unset"])),
        Field::Intrinsic(Intrinsic::Kind) => {
            return Ok(keywords(&[
                "client",
                "consumer",
                "internal",
                "producer",
                "server",
                "unspecified",
            ]));
        }
        Field::Intrinsic(Intrinsic::InstrumentationName) => (col(span_col::SCOPE_NAME), None),
        Field::Intrinsic(Intrinsic::InstrumentationVersion) => (col(span_col::SCOPE_VERSION), None),
        Field::Intrinsic(Intrinsic::EventName) => {
            return list_values(state, tenant, AttributeSource::Event, "name", params).await;
        }
        Field::Attribute {
            scope: scope @ (Scope::Event | Scope::Link),
            name,
        } => {
            let source = AttributeSource::of(*scope);
            return list_values(state, tenant, source, name, params).await;
        }
        Field::Intrinsic(Intrinsic::Name) => (col(span_col::NAME), None),
        Field::Intrinsic(Intrinsic::StatusMessage) => (
            col(span_col::STATUS_MESSAGE),
            Some(col(span_col::STATUS_MESSAGE).not_eq(lit(""))),
        ),
        Field::Intrinsic(Intrinsic::RootName) => (col(span_col::NAME), Some(not_root())),
        Field::Intrinsic(Intrinsic::RootServiceName) => {
            (col(span_col::SERVICE_NAME), Some(not_root()))
        }
        Field::Attribute { scope, name }
            if *scope != Scope::Span && name == traceql::SERVICE_NAME =>
        {
            (col(span_col::SERVICE_NAME), None)
        }
        Field::Attribute { scope, name } => (traceql::attribute_value(*scope, name), None),
        // Durations, ids and numbering: too many values to list, as in
        // Tempo.
        Field::Intrinsic(_) => return Ok(Vec::new()),
    };
    let batches = {
        let mut spans = tag_spans(params)?.and(value.clone().is_not_null());
        if let Some(only) = only {
            spans = spans.and(only);
        }
        tag_rows(state, tenant, move |frame| {
            frame
                .filter(spans)?
                .aggregate(vec![value.alias(TAG)], vec![])?
                .limit(0, Some(MAX_TAG_VALUES))
        })
        .await?
    };
    Ok(tag_values(&batches))
}

/// Distinct values of an event's (link's) `name`: the event name, or an
/// attribute of the events (links).
async fn list_values(
    state: &TempoState,
    tenant: &str,
    source: AttributeSource,
    name: &str,
    params: &HashMap<String, String>,
) -> Result<Vec<TagValue>, ApiError> {
    let spans = tag_spans(params)?;
    let value = if matches!(source, AttributeSource::Event) && name == "name" {
        get_field(col(ITEM), "name")
    } else {
        get_field(attribute_map(source), name)
    };
    let batches = tag_rows(state, tenant, move |frame| {
        items(frame.filter(spans)?, source)?
            .select(vec![value.alias(TAG)])?
            .filter(col(TAG).is_not_null())?
            .aggregate(vec![col(TAG)], vec![])?
            .limit(0, Some(MAX_TAG_VALUES))
    })
    .await?;
    Ok(tag_values(&batches))
}

/// Typed, distinct tag values from the first column of `batches`.
fn tag_values(batches: &[RecordBatch]) -> Vec<TagValue> {
    let mut values = BTreeSet::new();
    for batch in batches {
        let column = batch.column(0);
        if let Some(strings) = column.as_string_opt::<i32>() {
            values.extend(
                (0..strings.len())
                    .filter(|row| strings.is_valid(*row))
                    .map(|row| TagValue {
                        kind: "string",
                        value: strings.value(row).to_string(),
                    }),
            );
        } else if let Some(structs) = column.as_struct_opt() {
            values
                .extend((0..structs.len()).filter_map(|row| {
                    traceql::attr_value(structs, row).map(|value| typed(&value))
                }));
        }
    }
    values.into_iter().take(MAX_TAG_VALUES).collect()
}

fn tag_field(tag: &str) -> Result<Field, ApiError> {
    traceql::parse_field(tag).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "unknown tag {tag:?}: use span.x, resource.x, .x or an intrinsic (name, status, kind, ...)"
        ))
    })
}

async fn tag_values_v1(
    State(state): State<TempoState>,
    Path(tag): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let tenant = tenant(&headers)?;
    let field = Field::Attribute {
        scope: Scope::Any,
        name: tag,
    };
    let values: Vec<String> = values_of(&state, &tenant, &field, &params)
        .await?
        .into_iter()
        .map(|value| value.value)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    Ok(axum::Json(json!({"tagValues": values})).into_response())
}

async fn tag_values_v2(
    State(state): State<TempoState>,
    Path(tag): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let tenant = tenant(&headers)?;
    let field = tag_field(&tag)?;
    let values: Vec<Json> = values_of(&state, &tenant, &field, &params)
        .await?
        .into_iter()
        .map(|value| json!({"type": value.kind, "value": value.value}))
        .collect();
    Ok(axum::Json(json!({"tagValues": values})).into_response())
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

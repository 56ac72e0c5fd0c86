//! The Jaeger query API under `/jaeger` (Grafana's Jaeger data source URL
//! is `http://host:3200/jaeger`), in Jaeger's JSON shapes:
//! `{"data": ..., "total", "limit", "offset", "errors"}`.
//!
//! | route | answer |
//! |---|---|
//! | `GET /jaeger/api/services` | service names |
//! | `GET /jaeger/api/services/{service}/operations` | span names of the service |
//! | `GET /jaeger/api/operations?service=&spanKind=` | `[{"name", "spanKind"}]` |
//! | `GET /jaeger/api/traces?service=&operation=&tags=&minDuration=&maxDuration=&limit=&start=&end=` | traces with a span of `service` matching the rest, newest first; `tags` is a JSON object (`{"http.status_code":"500","error":"true"}`), durations Go-style (`1.2s`, `100ms`), times in microseconds (default the last hour), `limit` default 20 |
//! | `GET /jaeger/api/traces/{id}` | one trace (404 with a Jaeger error when absent) |
//! | `GET /jaeger/api/dependencies?endTs=&lookback=` | `[{"parent", "child", "callCount"}]` from the service map, milliseconds |
//!
//! Spans map as Jaeger's OTLP translator does: kind to `span.kind`, status
//! to `otel.status_code`/`otel.status_description` and `error=true`,
//! events to logs, links to `FOLLOWS_FROM` references, the parent to a
//! `CHILD_OF` reference, the resource to the process.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::TracesData;
use serde_json::{Value, json};
use tracelake_storage::otlp::kind_to_str;
use tracelake_storage::{DEFAULT_TENANT, SpanReader, TENANT_HEADER, TraceId};

use crate::derived_rows::{Source, derived_rows};
use crate::service_map::ServiceMap;
use crate::trace::{trace_by_id, traces_by_ids};
use crate::{QueryError, session_for_tenant};

const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 1_500;
const HOUR_MICROS: i64 = 3_600_000_000;

#[derive(Debug, Clone)]
struct JaegerState {
    reader: Arc<dyn SpanReader>,
}

/// The Jaeger routes, to merge into the query router.
pub fn router(reader: Arc<dyn SpanReader>) -> Router {
    Router::new()
        .route("/jaeger/api/services", get(services))
        .route(
            "/jaeger/api/services/{service}/operations",
            get(service_operations),
        )
        .route("/jaeger/api/operations", get(operations))
        .route("/jaeger/api/traces", get(search))
        .route("/jaeger/api/traces/{trace_id}", get(trace))
        .route("/jaeger/api/dependencies", get(dependencies))
        .with_state(JaegerState { reader })
}

/// A Jaeger error response: `{"data": null, "errors": [{"code", "msg"}]}`.
struct JaegerError {
    status: StatusCode,
    message: String,
}

impl JaegerError {
    fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

impl From<QueryError> for JaegerError {
    fn from(error: QueryError) -> Self {
        tracing::error!(%error, "jaeger query failed");
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("query failed: {error}"),
        }
    }
}

impl IntoResponse for JaegerError {
    fn into_response(self) -> Response {
        let body = json!({
            "data": null, "total": 0, "limit": 0, "offset": 0,
            "errors": [{"code": self.status.as_u16(), "msg": self.message}],
        });
        (self.status, axum::Json(body)).into_response()
    }
}

fn envelope(data: Value, total: usize) -> Response {
    axum::Json(json!({"data": data, "total": total, "limit": 0, "offset": 0, "errors": null}))
        .into_response()
}

fn tenant(headers: &HeaderMap) -> Result<String, JaegerError> {
    let Some(value) = headers.get(TENANT_HEADER) else {
        return Ok(DEFAULT_TENANT.to_string());
    };
    let tenant = value
        .to_str()
        .map_err(|_| JaegerError::bad_request("X-Scope-OrgID is not ascii"))?;
    tracelake_storage::validate_tenant(tenant)
        .map_err(|error| JaegerError::bad_request(error.to_string()))?;
    Ok(tenant.to_string())
}

fn required_service(params: &HashMap<String, String>) -> Result<&String, JaegerError> {
    params
        .get("service")
        .filter(|service| !service.is_empty())
        .ok_or_else(|| JaegerError::bad_request("parameter 'service' is required"))
}

/// A SQL string literal.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

async fn rows(
    reader: Arc<dyn SpanReader>,
    tenant: &str,
    query: &str,
) -> Result<Vec<RecordBatch>, JaegerError> {
    let context = session_for_tenant(reader, tenant)?;
    let frame = context.sql(query).await.map_err(QueryError::from)?;
    Ok(frame.collect().await.map_err(QueryError::from)?)
}

fn strings(batches: &[RecordBatch], column: usize) -> Vec<String> {
    let mut out = Vec::new();
    for batch in batches {
        if let Some(array) = batch.column(column).as_string_opt::<i32>() {
            for row in 0..array.len() {
                if array.is_valid(row) {
                    out.push(array.value(row).to_string());
                }
            }
        }
    }
    out
}

async fn services(
    State(state): State<JaegerState>,
    headers: HeaderMap,
) -> Result<Response, JaegerError> {
    let tenant = tenant(&headers)?;
    let batches = rows(
        state.reader,
        &tenant,
        "SELECT DISTINCT service_name FROM spans ORDER BY service_name",
    )
    .await?;
    let names = strings(&batches, 0);
    Ok(envelope(json!(names), names.len()))
}

async fn service_operations(
    State(state): State<JaegerState>,
    Path(service): Path<String>,
    headers: HeaderMap,
) -> Result<Response, JaegerError> {
    let tenant = tenant(&headers)?;
    let query = format!(
        "SELECT DISTINCT name FROM spans WHERE service_name = {} ORDER BY name",
        quoted(&service)
    );
    let names = strings(&rows(state.reader, &tenant, &query).await?, 0);
    Ok(envelope(json!(names), names.len()))
}

async fn operations(
    State(state): State<JaegerState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, JaegerError> {
    let tenant = tenant(&headers)?;
    let service = required_service(&params)?;
    let mut query = format!(
        "SELECT DISTINCT name, kind FROM spans WHERE service_name = {}",
        quoted(service)
    );
    if let Some(kind) = params.get("spanKind").filter(|kind| !kind.is_empty()) {
        query.push_str(&format!(" AND kind = {}", quoted(kind)));
    }
    query.push_str(" ORDER BY name, kind");
    let batches = rows(state.reader, &tenant, &query).await?;
    let (names, kinds) = (strings(&batches, 0), strings(&batches, 1));
    let data: Vec<Value> = names
        .iter()
        .zip(&kinds)
        .map(|(name, kind)| json!({"name": name, "spanKind": kind}))
        .collect();
    Ok(envelope(json!(data), data.len()))
}

/// A Go duration as the Jaeger API takes it: not negative.
fn go_duration(text: &str) -> Option<i64> {
    crate::units::parse_duration_nanos(text).filter(|nanos| *nanos >= 0)
}

fn micros_param(params: &HashMap<String, String>, name: &str) -> Result<Option<i64>, JaegerError> {
    match params.get(name).filter(|value| !value.is_empty()) {
        None => Ok(None),
        Some(value) => value.parse::<i64>().map(Some).map_err(|_| {
            JaegerError::bad_request(format!(
                "{name} must be microseconds since the epoch, got {value:?}"
            ))
        }),
    }
}

/// The SQL condition a Jaeger tag asks for: the span or resource attribute
/// as text, or the columns the mapping derives (`error`, `span.kind`,
/// `http.status_code`, `otel.status_code`).
fn tag_condition(key: &str, value: &str) -> String {
    let (key_sql, value_sql) = (quoted(key), quoted(value));
    let attribute = |map: &str| {
        format!(
            "coalesce({map}[{key_sql}]['str'], CAST({map}[{key_sql}]['int'] AS VARCHAR), \
             CAST({map}[{key_sql}]['bool'] AS VARCHAR), CAST({map}[{key_sql}]['double'] AS VARCHAR)) = {value_sql}"
        )
    };
    let derived = match key {
        "error" => Some(format!("(status_code = 'error') = ({value_sql} = 'true')")),
        "span.kind" => Some(format!("kind = {value_sql}")),
        "otel.status_code" => Some(format!("upper(status_code) = upper({value_sql})")),
        "http.status_code" | "http.response.status_code" => {
            Some(format!("CAST(http_status_code AS VARCHAR) = {value_sql}"))
        }
        _ => None,
    };
    let mut alternatives = vec![attribute("attributes"), attribute("resource_attributes")];
    alternatives.extend(derived);
    format!("({})", alternatives.join(" OR "))
}

async fn search(
    State(state): State<JaegerState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, JaegerError> {
    let tenant = tenant(&headers)?;
    let service = required_service(&params)?;
    let now_micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_micros() as i64)
        .unwrap_or(0);
    let end = micros_param(&params, "end")?.unwrap_or(now_micros);
    let start = micros_param(&params, "start")?.unwrap_or(end - HOUR_MICROS);
    let limit = match params.get("limit").filter(|limit| !limit.is_empty()) {
        None => DEFAULT_LIMIT,
        Some(limit) => limit
            .parse::<usize>()
            .map_err(|_| {
                JaegerError::bad_request(format!("limit must be a number, got {limit:?}"))
            })?
            .clamp(1, MAX_LIMIT),
    };
    let mut conditions = vec![
        format!("service_name = {}", quoted(service)),
        format!(
            "start_time >= to_timestamp_micros({start}) AND start_time <= to_timestamp_micros({end})"
        ),
    ];
    if let Some(operation) = params
        .get("operation")
        .filter(|operation| !operation.is_empty())
    {
        conditions.push(format!("name = {}", quoted(operation)));
    }
    for (name, comparison) in [("minDuration", ">="), ("maxDuration", "<=")] {
        if let Some(text) = params.get(name).filter(|text| !text.is_empty()) {
            let nanos = go_duration(text).ok_or_else(|| {
                JaegerError::bad_request(format!(
                    "{name} must be a duration like 1.2s or 100ms, got {text:?}"
                ))
            })?;
            conditions.push(format!("duration_ns {comparison} {nanos}"));
        }
    }
    if let Some(tags) = params.get("tags").filter(|tags| !tags.is_empty()) {
        let parsed: BTreeMap<String, Value> = serde_json::from_str(tags).map_err(|error| {
            JaegerError::bad_request(format!("tags must be a JSON object of strings: {error}"))
        })?;
        for (key, value) in parsed {
            let text = match value {
                Value::String(text) => text,
                other => other.to_string(),
            };
            conditions.push(tag_condition(&key, &text));
        }
    }
    let query = format!(
        "SELECT trace_id, max(start_time) AS latest FROM spans WHERE {} \
         GROUP BY trace_id ORDER BY latest DESC, trace_id LIMIT {limit}",
        conditions.join(" AND ")
    );
    let batches = rows(Arc::clone(&state.reader), &tenant, &query).await?;
    let mut trace_ids = Vec::new();
    for batch in &batches {
        let Some(ids) = batch.column(0).as_fixed_size_binary_opt() else {
            continue;
        };
        for row in 0..ids.len() {
            if let Ok(trace_id) = TraceId::try_from(ids.value(row)) {
                trace_ids.push(trace_id);
            }
        }
    }
    let data: Vec<Value> = traces_by_ids(Arc::clone(&state.reader), &tenant, &trace_ids)
        .await?
        .iter()
        .map(|(trace_id, trace)| jaeger_trace(trace_id, trace))
        .collect();
    let total = data.len();
    Ok(envelope(Value::Array(data), total))
}

async fn trace(
    State(state): State<JaegerState>,
    Path(trace_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, JaegerError> {
    let tenant = tenant(&headers)?;
    let id = TraceId::parse_lenient(&trace_id).map_err(|error| {
        JaegerError::bad_request(format!("invalid trace id {trace_id:?}: {error}"))
    })?;
    match trace_by_id(state.reader, &tenant, id, None).await? {
        Some(trace) => Ok(envelope(json!([jaeger_trace(&id, &trace)]), 1)),
        None => Err(JaegerError {
            status: StatusCode::NOT_FOUND,
            message: "trace not found".into(),
        }),
    }
}

async fn dependencies(
    State(state): State<JaegerState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, JaegerError> {
    let tenant = tenant(&headers)?;
    let millis = |name: &str| -> Result<Option<i64>, JaegerError> {
        match params.get(name).filter(|value| !value.is_empty()) {
            None => Ok(None),
            Some(value) => value.parse::<i64>().map(Some).map_err(|_| {
                JaegerError::bad_request(format!("{name} must be milliseconds, got {value:?}"))
            }),
        }
    };
    let now_millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0);
    let end = millis("endTs")?.unwrap_or(now_millis);
    let lookback = millis("lookback")?.unwrap_or(86_400_000);
    let window = (
        end.saturating_sub(lookback).saturating_mul(1_000_000),
        end.saturating_mul(1_000_000),
    );
    let rows = derived_rows(state.reader, &tenant, window, Source::Auto).await?;
    let map = ServiceMap::build_off_reactor(rows).await?;
    let mut calls: BTreeMap<(String, String), i64> = BTreeMap::new();
    for edge in &map.edges {
        let parent = &map.nodes[edge.client].node;
        if parent.node_type == tracelake_storage::derived::CLIENT_NODE_TYPE {
            continue;
        }
        let child = &map.nodes[edge.server].node;
        *calls
            .entry((parent.name.clone(), child.name.clone()))
            .or_default() += edge.stats.counts.total;
    }
    let data: Vec<Value> = calls
        .into_iter()
        .map(|((parent, child), count)| json!({"parent": parent, "child": child, "callCount": count}))
        .collect();
    let total = data.len();
    Ok(envelope(Value::Array(data), total))
}

fn tag(key: &str, value: Option<&any_value::Value>) -> Value {
    match value {
        Some(any_value::Value::BoolValue(flag)) => {
            json!({"key": key, "type": "bool", "value": flag})
        }
        Some(any_value::Value::IntValue(int)) => json!({"key": key, "type": "int64", "value": int}),
        Some(any_value::Value::DoubleValue(double)) => {
            json!({"key": key, "type": "float64", "value": double})
        }
        Some(any_value::Value::StringValue(text)) => {
            json!({"key": key, "type": "string", "value": text})
        }
        Some(any_value::Value::BytesValue(bytes)) => {
            use base64::Engine;
            json!({"key": key, "type": "binary", "value": base64::engine::general_purpose::STANDARD.encode(bytes)})
        }
        Some(other) => {
            let any = opentelemetry_proto::tonic::common::v1::AnyValue {
                value: Some(other.clone()),
            };
            json!({"key": key, "type": "string", "value": serde_json::to_string(&any).unwrap_or_default()})
        }
        None => json!({"key": key, "type": "string", "value": ""}),
    }
}

fn tags(attributes: &[KeyValue]) -> Vec<Value> {
    attributes
        .iter()
        .map(|attribute| {
            tag(
                &attribute.key,
                attribute.value.as_ref().and_then(|v| v.value.as_ref()),
            )
        })
        .collect()
}

fn micros(nanos: u64) -> u64 {
    nanos / 1_000
}

/// One trace in Jaeger's shape.
fn jaeger_trace(trace_id: &TraceId, trace: &TracesData) -> Value {
    let trace_hex = trace_id.to_hex();
    let mut processes: BTreeMap<String, Value> = BTreeMap::new();
    let mut process_ids: BTreeMap<String, String> = BTreeMap::new();
    let mut spans = Vec::new();
    let mut services = BTreeSet::new();
    for resource_spans in &trace.resource_spans {
        let resource: &[KeyValue] = resource_spans
            .resource
            .as_ref()
            .map(|resource| resource.attributes.as_slice())
            .unwrap_or_default();
        let service = resource
            .iter()
            .find(|attribute| attribute.key == "service.name")
            .and_then(
                |attribute| match attribute.value.as_ref()?.value.as_ref()? {
                    any_value::Value::StringValue(name) => Some(name.clone()),
                    _ => None,
                },
            )
            .unwrap_or_else(|| "unknown_service".into());
        services.insert(service.clone());
        let process_tags: Vec<Value> = tags(
            &resource
                .iter()
                .filter(|attribute| attribute.key != "service.name")
                .cloned()
                .collect::<Vec<_>>(),
        );
        let identity = format!(
            "{service}\u{0}{}",
            serde_json::to_string(&process_tags).unwrap_or_default()
        );
        let next_id = format!("p{}", process_ids.len() + 1);
        let process_id = process_ids.entry(identity).or_insert(next_id).clone();
        processes
            .entry(process_id.clone())
            .or_insert_with(|| json!({"serviceName": service, "tags": process_tags}));
        for scope_spans in &resource_spans.scope_spans {
            for span in &scope_spans.spans {
                let mut span_tags = tags(&span.attributes);
                span_tags.push(
                    json!({"key": "span.kind", "type": "string", "value": kind_to_str(span.kind)}),
                );
                if let Some(scope) = &scope_spans.scope
                    && !scope.name.is_empty()
                {
                    span_tags.push(
                        json!({"key": "otel.scope.name", "type": "string", "value": scope.name}),
                    );
                }
                if let Some(status) = &span.status {
                    match status.code {
                        2 => {
                            span_tags.push(json!({"key": "otel.status_code", "type": "string", "value": "ERROR"}));
                            span_tags.push(json!({"key": "error", "type": "bool", "value": true}));
                        }
                        1 => span_tags.push(
                            json!({"key": "otel.status_code", "type": "string", "value": "OK"}),
                        ),
                        _ => {}
                    }
                    if !status.message.is_empty() {
                        span_tags.push(json!({"key": "otel.status_description", "type": "string", "value": status.message}));
                    }
                }
                let mut references = Vec::new();
                if !span.parent_span_id.is_empty() {
                    references.push(json!({"refType": "CHILD_OF", "traceID": trace_hex, "spanID": hex::encode(&span.parent_span_id)}));
                }
                for link in &span.links {
                    references.push(json!({"refType": "FOLLOWS_FROM", "traceID": hex::encode(&link.trace_id), "spanID": hex::encode(&link.span_id)}));
                }
                let logs: Vec<Value> = span
                    .events
                    .iter()
                    .map(|event| {
                        let mut fields =
                            vec![json!({"key": "event", "type": "string", "value": event.name})];
                        fields.extend(tags(&event.attributes));
                        json!({"timestamp": micros(event.time_unix_nano), "fields": fields})
                    })
                    .collect();
                spans.push(json!({
                    "traceID": trace_hex,
                    "spanID": hex::encode(&span.span_id),
                    "operationName": span.name,
                    "references": references,
                    "startTime": micros(span.start_time_unix_nano),
                    "duration": micros(span.end_time_unix_nano.saturating_sub(span.start_time_unix_nano)),
                    "tags": span_tags,
                    "logs": logs,
                    "processID": process_id,
                    "flags": 1,
                    "warnings": null,
                }));
            }
        }
    }
    spans.sort_by_key(|span| span["startTime"].as_u64().unwrap_or(0));
    json!({"traceID": trace_hex, "spans": spans, "processes": processes, "warnings": null})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_literals() {
        assert_eq!(go_duration("1.5s"), Some(1_500_000_000));
        assert_eq!(go_duration("100ms"), Some(100_000_000));
        assert_eq!(go_duration("250us"), Some(250_000));
        assert_eq!(go_duration("2m"), Some(120_000_000_000));
        assert_eq!(go_duration("fast"), None);
        assert_eq!(go_duration("5parsecs"), None);
        assert_eq!(quoted("it's"), "'it''s'");
        assert!(tag_condition("x'); DROP", "1").contains("'x''); DROP'"));
    }
}

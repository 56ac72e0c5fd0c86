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
use datafusion::arrow::datatypes::DataType;
use datafusion::functions::expr_fn::upper;
use datafusion::functions_aggregate::expr_fn::max;
use datafusion::logical_expr::cast;
use datafusion::prelude::{DataFrame, Expr, col, lit};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::TracesData;
use serde_json::{Value, json};
use tracelake_model::otlp::kind_to_str;
use tracelake_model::schema::{any_value as any_value_column, col as span_col};
use tracelake_model::{DEFAULT_TENANT, TENANT_HEADER, TraceId};
use tracelake_storage::SpanReader;

use tracelake_routes::{Access, Routes};

use crate::QueryError;
use crate::derived_rows::{Source, derived_rows};
use crate::exprs::{any_value_child, map_value, starts_within};
use crate::service_map::ServiceMap;
use crate::trace::{trace_by_id, traces_by_ids};

const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 1_500;
const HOUR_MICROS: i64 = 3_600_000_000;

#[derive(Debug, Clone)]
struct JaegerState {
    reader: Arc<dyn SpanReader>,
}

/// The Jaeger routes, to merge into the query router.
pub fn router(reader: Arc<dyn SpanReader>) -> Router {
    routes(reader).into_router()
}

/// The Jaeger routes, each for a key with `query`.
pub fn routes(reader: Arc<dyn SpanReader>) -> Routes {
    Routes::new()
        .route("/jaeger/api/services", get(services), Access::QUERY)
        .route(
            "/jaeger/api/services/{service}/operations",
            get(service_operations),
            Access::QUERY,
        )
        .route("/jaeger/api/operations", get(operations), Access::QUERY)
        .route("/jaeger/api/traces", get(search), Access::QUERY)
        .route("/jaeger/api/traces/{trace_id}", get(trace), Access::QUERY)
        .route("/jaeger/api/dependencies", get(dependencies), Access::QUERY)
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
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: tracelake_routes::internal_error("query failed", &error),
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
    tracelake_model::validate_tenant(tenant)
        .map_err(|error| JaegerError::bad_request(error.to_string()))?;
    Ok(tenant.to_string())
}

fn required_service(params: &HashMap<String, String>) -> Result<&String, JaegerError> {
    params
        .get("service")
        .filter(|service| !service.is_empty())
        .ok_or_else(|| JaegerError::bad_request("parameter 'service' is required"))
}

/// Runs `plan` over the tenant's `spans`.
async fn rows<F>(
    reader: Arc<dyn SpanReader>,
    tenant: &str,
    plan: F,
) -> Result<Vec<RecordBatch>, JaegerError>
where
    F: FnOnce(DataFrame) -> datafusion::error::Result<DataFrame>,
{
    Ok(crate::session::spans_rows(reader, tenant, plan).await?)
}

/// The distinct values of `columns` among the spans meeting `condition`,
/// in order.
async fn distinct(
    reader: Arc<dyn SpanReader>,
    tenant: &str,
    condition: Option<Expr>,
    columns: &[&str],
) -> Result<Vec<RecordBatch>, JaegerError> {
    let group: Vec<Expr> = columns.iter().map(|name| col(*name)).collect();
    let order: Vec<_> = columns
        .iter()
        .map(|name| col(*name).sort(true, false))
        .collect();
    rows(reader, tenant, move |mut frame| {
        if let Some(condition) = condition {
            frame = frame.filter(condition)?;
        }
        frame.aggregate(group, vec![])?.sort(order)
    })
    .await
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
    let batches = distinct(state.reader, &tenant, None, &[span_col::SERVICE_NAME]).await?;
    let names = strings(&batches, 0);
    Ok(envelope(json!(names), names.len()))
}

async fn service_operations(
    State(state): State<JaegerState>,
    Path(service): Path<String>,
    headers: HeaderMap,
) -> Result<Response, JaegerError> {
    let tenant = tenant(&headers)?;
    let of_service = col(span_col::SERVICE_NAME).eq(lit(service));
    let batches = distinct(state.reader, &tenant, Some(of_service), &[span_col::NAME]).await?;
    let names = strings(&batches, 0);
    Ok(envelope(json!(names), names.len()))
}

async fn operations(
    State(state): State<JaegerState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, JaegerError> {
    let tenant = tenant(&headers)?;
    let service = required_service(&params)?;
    let mut condition = col(span_col::SERVICE_NAME).eq(lit(service.as_str()));
    if let Some(kind) = params.get("spanKind").filter(|kind| !kind.is_empty()) {
        condition = condition.and(col(span_col::KIND).eq(lit(kind.as_str())));
    }
    let batches = distinct(
        state.reader,
        &tenant,
        Some(condition),
        &[span_col::NAME, span_col::KIND],
    )
    .await?;
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

/// The condition a Jaeger tag asks for: the span or resource attribute as
/// text, or the columns the mapping derives (`error`, `span.kind`,
/// `http.status_code`, `otel.status_code`).
fn tag_condition(key: &str, value: &str) -> Expr {
    let as_text = |expr: Expr| cast(expr, DataType::Utf8);
    let attribute = |map: &str| {
        let any = map_value(map, key);
        let child = |name: &str| any_value_child(any.clone(), name);
        datafusion::functions::expr_fn::coalesce(vec![
            child(any_value_column::STR),
            as_text(child(any_value_column::INT)),
            as_text(child(any_value_column::BOOL)),
            as_text(child(any_value_column::DOUBLE)),
        ])
        .eq(lit(value))
    };
    let derived = match key {
        "error" => Some(
            col(span_col::STATUS_CODE)
                .eq(lit("error"))
                .eq(lit(value == "true")),
        ),
        "span.kind" => Some(col(span_col::KIND).eq(lit(value))),
        "otel.status_code" => Some(upper(col(span_col::STATUS_CODE)).eq(lit(value.to_uppercase()))),
        "http.status_code" | "http.response.status_code" => {
            Some(as_text(col(span_col::HTTP_STATUS_CODE)).eq(lit(value)))
        }
        _ => None,
    };
    let mut condition =
        attribute(span_col::ATTRIBUTES).or(attribute(span_col::RESOURCE_ATTRIBUTES));
    if let Some(derived) = derived {
        condition = condition.or(derived);
    }
    condition
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
    let mut condition = col(span_col::SERVICE_NAME)
        .eq(lit(service.as_str()))
        .and(starts_within(
            start.saturating_mul(1_000),
            end.saturating_mul(1_000),
        ));
    if let Some(operation) = params
        .get("operation")
        .filter(|operation| !operation.is_empty())
    {
        condition = condition.and(col(span_col::NAME).eq(lit(operation.as_str())));
    }
    for (name, at_least) in [("minDuration", true), ("maxDuration", false)] {
        if let Some(text) = params.get(name).filter(|text| !text.is_empty()) {
            let nanos = go_duration(text).ok_or_else(|| {
                JaegerError::bad_request(format!(
                    "{name} must be a duration like 1.2s or 100ms, got {text:?}"
                ))
            })?;
            let duration = col(span_col::DURATION_NS);
            condition = condition.and(if at_least {
                duration.gt_eq(lit(nanos))
            } else {
                duration.lt_eq(lit(nanos))
            });
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
            condition = condition.and(tag_condition(&key, &text));
        }
    }
    let batches = rows(Arc::clone(&state.reader), &tenant, move |frame| {
        frame
            .filter(condition)?
            .aggregate(
                vec![col(span_col::TRACE_ID)],
                vec![max(col(span_col::START_TIME)).alias("latest")],
            )?
            .sort(vec![
                col("latest").sort(false, true),
                col(span_col::TRACE_ID).sort(true, true),
            ])?
            .limit(0, Some(limit))
    })
    .await?;
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
        if parent.node_type == tracelake_model::derived::CLIENT_NODE_TYPE {
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
    }
}

//! A whole trace as `GET /v1/traces/{trace_id}` answers it: one flat list
//! of spans (assembled as [`crate::trace`] does) with what a trace view
//! shows of each, X-Ray's parts taken apart from the plain attributes.
//!
//! ```text
//! {"trace_id", "xray_trace_id", "start_unix_nano", "end_unix_nano", "duration_ns",
//!  "span_count", "services": [{"name", "type"}],
//!  "spans": [{"span_id", "parent_span_id", "name", "kind", "service", "service_type",
//!             "start_unix_nano", "end_unix_nano", "duration_ns",
//!             "status": {"code", "message"}, "error", "fault", "throttle", "in_progress",
//!             "http": {"method", "url", "status"} | null,
//!             "attributes": {..}, "annotations": {..}, "metadata": {namespace: json},
//!             "events": [{"name", "time_unix_nano", "attributes"}],
//!             "links": [{"trace_id", "span_id", "attributes"}],
//!             "resource": {..}, "scope": {"name", "version"}}]}
//! ```
//!
//! Times are unix nanoseconds as strings (exact, as OTLP JSON writes
//! them), durations nanoseconds as numbers. Annotations are the keys an
//! X-Ray document's `annotations` held (`aws.xray.annotations` lists them);
//! metadata the `aws.xray.metadata.{namespace}` JSON, parsed; both read as
//! `BatchGetTraces` reads them back ([`xray::annotations`],
//! [`xray::metadata_namespaces`]). The flags and the HTTP request are read
//! as ingest reads them into their columns (an OTLP span's flags from its
//! status and HTTP code). Spans come by start time.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{Span, TracesData};
use serde_json::{Map, Value, json};
use tracelake_model::TraceId;
use tracelake_model::otlp::{
    find_str, http_method, http_status, http_url, kind_to_str, span_xray_flags, status_to_str,
    xray_origin,
};
use tracelake_model::xray::{self, any_to_json, format_xray_trace_id};

fn value_json(value: Option<&AnyValue>) -> Value {
    value
        .and_then(|any| any.value.as_ref())
        .map(any_to_json)
        .unwrap_or(Value::Null)
}

fn attributes_json<'a>(attributes: impl IntoIterator<Item = &'a KeyValue>) -> Map<String, Value> {
    attributes
        .into_iter()
        .map(|attribute| (attribute.key.clone(), value_json(attribute.value.as_ref())))
        .collect()
}

fn hex_or_null(bytes: &[u8]) -> Value {
    if bytes.is_empty() || bytes.iter().all(|byte| *byte == 0) {
        Value::Null
    } else {
        Value::String(hex::encode(bytes))
    }
}

fn span_json(span: &Span, resource: &[KeyValue], scope: (&str, &str)) -> Value {
    let attributes = span.attributes.as_slice();
    let annotations = xray::annotations(attributes).unwrap_or_default();
    let metadata = xray::metadata_namespaces(attributes);
    let plain = attributes_json(attributes.iter().filter(|attribute| {
        let key = attribute.key.as_str();
        key != xray::attr::ANNOTATIONS
            && !annotations.contains_key(key)
            && !key.starts_with(xray::attr::METADATA_PREFIX)
    }));
    let (error, fault, throttle) = span_xray_flags(span);
    let (method, url, status) = (
        http_method(attributes),
        http_url(attributes),
        http_status(attributes),
    );
    let http = if method.is_some() || url.is_some() || status.is_some() {
        json!({"method": method, "url": url, "status": status})
    } else {
        Value::Null
    };
    let status_json = span.status.as_ref().map_or_else(
        || json!({"code": "unset", "message": ""}),
        |status| json!({"code": status_to_str(status.code), "message": status.message}),
    );
    let events: Vec<Value> = span
        .events
        .iter()
        .map(|event| {
            json!({
                "name": event.name,
                "time_unix_nano": event.time_unix_nano.to_string(),
                "attributes": attributes_json(&event.attributes),
            })
        })
        .collect();
    let links: Vec<Value> = span
        .links
        .iter()
        .map(|link| {
            json!({
                "trace_id": hex::encode(&link.trace_id),
                "span_id": hex::encode(&link.span_id),
                "attributes": attributes_json(&link.attributes),
            })
        })
        .collect();
    json!({
        "span_id": hex::encode(&span.span_id),
        "parent_span_id": hex_or_null(&span.parent_span_id),
        "name": span.name,
        "kind": kind_to_str(span.kind),
        "service": find_str(resource, xray::attr::SERVICE_NAME).unwrap_or(""),
        "service_type": xray_origin(resource),
        "start_unix_nano": span.start_time_unix_nano.to_string(),
        "end_unix_nano": span.end_time_unix_nano.to_string(),
        "duration_ns": span.end_time_unix_nano.saturating_sub(span.start_time_unix_nano),
        "status": status_json,
        "error": error,
        "fault": fault,
        "throttle": throttle,
        "in_progress": crate::trace::is_in_progress(span),
        "http": http,
        "attributes": plain,
        "annotations": annotations,
        "metadata": metadata,
        "events": events,
        "links": links,
        "resource": attributes_json(resource),
        "scope": {"name": scope.0, "version": scope.1},
    })
}

/// The trace's JSON (module docs).
pub fn trace_json(trace_id: &TraceId, trace: &TracesData) -> Value {
    let mut spans: Vec<(u64, Value)> = Vec::new();
    let mut services: BTreeMap<String, Value> = BTreeMap::new();
    for resource_spans in &trace.resource_spans {
        let resource = resource_spans
            .resource
            .as_ref()
            .map(|resource| resource.attributes.as_slice())
            .unwrap_or_default();
        if let Some(name) = find_str(resource, xray::attr::SERVICE_NAME) {
            services
                .entry(name.to_string())
                .or_insert_with(|| json!({"name": name, "type": xray_origin(resource)}));
        }
        for scope_spans in &resource_spans.scope_spans {
            let scope = scope_spans.scope.as_ref().map_or(("", ""), |scope| {
                (scope.name.as_str(), scope.version.as_str())
            });
            for span in &scope_spans.spans {
                spans.push((span.start_time_unix_nano, span_json(span, resource, scope)));
            }
        }
    }
    spans.sort_by_key(|(start, _)| *start);
    let start = spans.iter().map(|(start, _)| *start).min().unwrap_or(0);
    let end = trace
        .resource_spans
        .iter()
        .flat_map(|resource| &resource.scope_spans)
        .flat_map(|scope| &scope.spans)
        .map(|span| span.end_time_unix_nano.max(span.start_time_unix_nano))
        .max()
        .unwrap_or(start);
    json!({
        "trace_id": trace_id.to_hex(),
        "xray_trace_id": format_xray_trace_id(trace_id),
        "start_unix_nano": start.to_string(),
        "end_unix_nano": end.to_string(),
        "duration_ns": end.saturating_sub(start),
        "span_count": spans.len(),
        "services": services.into_values().collect::<Vec<_>>(),
        "spans": spans.into_iter().map(|(_, span)| span).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, any_value};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status};

    use super::*;

    fn kv(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..KeyValue::default()
        }
    }

    fn string(text: &str) -> any_value::Value {
        any_value::Value::StringValue(text.into())
    }

    #[test]
    fn x_ray_parts_are_taken_apart_from_plain_attributes() {
        let span = Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            name: "GET /orders".into(),
            kind: 2,
            start_time_unix_nano: 1_000,
            end_time_unix_nano: 3_500,
            attributes: vec![
                kv("order_id", string("o-17")),
                kv(
                    xray::attr::ANNOTATIONS,
                    any_value::Value::ArrayValue(ArrayValue {
                        values: vec![AnyValue {
                            value: Some(string("order_id")),
                        }],
                    }),
                ),
                kv("aws.xray.metadata.debug", string(r#"{"cart":[1,2]}"#)),
                kv("http.request.method", string("GET")),
                kv("http.response.status_code", any_value::Value::IntValue(503)),
                kv("region", string("eu-west-1")),
            ],
            status: Some(Status {
                code: 2,
                message: "boom".into(),
            }),
            ..Span::default()
        };
        let trace = TracesData {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", string("orders")),
                        kv("cloud.platform", string("aws_lambda")),
                    ],
                    ..Resource::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![span],
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        };
        let trace_id = TraceId::try_from([1u8; 16].as_slice()).unwrap();
        let json = trace_json(&trace_id, &trace);
        assert_eq!(json["span_count"], 1);
        assert_eq!(json["duration_ns"], 2_500);
        assert_eq!(json["start_unix_nano"], "1000");
        let span = &json["spans"][0];
        assert_eq!(span["parent_span_id"], Value::Null);
        assert_eq!(span["kind"], "server");
        assert_eq!(span["service"], "orders");
        assert_eq!(span["service_type"], "AWS::Lambda::Function");
        assert_eq!(span["annotations"], json!({"order_id": "o-17"}));
        assert_eq!(span["metadata"], json!({"debug": {"cart": [1, 2]}}));
        assert_eq!(span["attributes"]["region"], "eu-west-1");
        assert!(span["attributes"].get("order_id").is_none());
        assert!(span["attributes"].get(xray::attr::ANNOTATIONS).is_none());
        assert_eq!(
            span["http"],
            json!({"method": "GET", "url": null, "status": 503})
        );
        assert_eq!(span["fault"], true);
        assert_eq!(span["error"], false);
        assert_eq!(span["status"], json!({"code": "error", "message": "boom"}));
        assert_eq!(
            json["services"],
            json!([{"name": "orders", "type": "AWS::Lambda::Function"}])
        );
    }
}

//! Sends finished segments as OTLP spans (`POST {endpoint}/v1/traces`,
//! protobuf), for a collector that speaks OTLP rather than the daemon
//! protocol. Like [`crate::emitter::UdpEmitter`] it never blocks: documents
//! wait in a bounded queue (full: dropped and counted), a task converts and
//! sends them in batches of up to [`BATCH`] every [`FLUSH_EVERY`].
//!
//! The mapping follows tracelake's own X-Ray mapping, so either path stores
//! the same spans: a segment is a SERVER span whose resource is
//! `service.name` = its name (and `aws.xray.origin`); a subsegment in
//! namespace `aws`/`remote` or with `http` is a CLIENT span (PRODUCER for
//! queue and topic sends), others INTERNAL; `http` becomes
//! `http.request.method`, `url.full`, `http.response.status_code`; `aws`
//! keys become `aws.<key>`; annotations are attributes; a fault is an error
//! status; exceptions are `exception` events.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::emitter::{EmitterStats, QUEUE_CAPACITY, SegmentSink};

/// Most documents per export request.
pub const BATCH: usize = 256;
/// How long a document may wait for its batch.
pub const FLUSH_EVERY: Duration = Duration::from_millis(500);

const PRODUCER_OPERATIONS: [&str; 4] = ["SendMessage", "SendMessageBatch", "Publish", "PutRecord"];

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
}

/// Exports segment documents over OTLP/HTTP.
#[derive(Debug)]
pub struct OtlpSink {
    queue: mpsc::Sender<String>,
    counters: Arc<Counters>,
}

fn text(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..KeyValue::default()
    }
}

fn scalar(key: &str, value: &Value) -> Option<KeyValue> {
    let value = match value {
        Value::String(text) => any_value::Value::StringValue(text.clone()),
        Value::Bool(flag) => any_value::Value::BoolValue(*flag),
        Value::Number(number) => match number.as_i64() {
            Some(int) => any_value::Value::IntValue(int),
            None => any_value::Value::DoubleValue(number.as_f64()?),
        },
        _ => return None,
    };
    Some(KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    })
}

fn nanos(seconds: &Value) -> u64 {
    (seconds.as_f64().unwrap_or(0.0) * 1e9) as u64
}

fn hex_bytes(text: &str) -> Option<Vec<u8>> {
    (0..text.len())
        .step_by(2)
        .map(|index| u8::from_str_radix(text.get(index..index + 2)?, 16).ok())
        .collect()
}

/// The 16 trace-id bytes of `1-{8 hex}-{24 hex}`.
fn trace_bytes(xray: &str) -> Option<Vec<u8>> {
    let hex: String = xray.strip_prefix("1-")?.replace('-', "");
    (hex.len() == 32).then(|| hex_bytes(&hex)).flatten()
}

/// Appends the spans of `document` (and its subsegments) to `spans`.
fn collect_spans(
    document: &Value,
    trace_id: &[u8],
    parent: Option<&str>,
    segment: bool,
    spans: &mut Vec<Span>,
) {
    let Some(span_id) = document["id"].as_str().and_then(hex_bytes) else {
        return;
    };
    let namespace = document["namespace"].as_str();
    let operation = document["aws"]["operation"].as_str().unwrap_or_default();
    let kind = if segment {
        SpanKind::Server
    } else if namespace == Some("aws") && PRODUCER_OPERATIONS.contains(&operation) {
        SpanKind::Producer
    } else if matches!(namespace, Some("aws" | "remote")) || document.get("http").is_some() {
        SpanKind::Client
    } else {
        SpanKind::Internal
    };
    let mut attributes = Vec::new();
    if let Some(namespace) = namespace {
        attributes.push(text("aws.xray.namespace", namespace));
    }
    let http = &document["http"];
    if let Some(method) = http["request"]["method"].as_str() {
        attributes.push(text("http.request.method", method));
    }
    if let Some(url) = http["request"]["url"].as_str() {
        attributes.push(text("url.full", url));
    }
    if let Some(status) = scalar("http.response.status_code", &http["response"]["status"]) {
        attributes.push(status);
    }
    for (key, value) in document["aws"].as_object().into_iter().flatten() {
        if key != "xray" {
            attributes.extend(scalar(&format!("aws.{key}"), value));
        }
    }
    for (key, value) in document["annotations"].as_object().into_iter().flatten() {
        attributes.extend(scalar(key, value));
    }
    if let Some(user) = document["user"].as_str() {
        attributes.push(text("enduser.id", user));
    }
    let events = document["cause"]["exceptions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|exception| Event {
            time_unix_nano: nanos(&document["end_time"]),
            name: "exception".into(),
            attributes: vec![
                text(
                    "exception.type",
                    exception["type"].as_str().unwrap_or_default(),
                ),
                text(
                    "exception.message",
                    exception["message"].as_str().unwrap_or_default(),
                ),
            ],
            ..Event::default()
        })
        .collect();
    let links = document["links"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|link| {
            Some(opentelemetry_proto::tonic::trace::v1::span::Link {
                trace_id: trace_bytes(link["trace_id"].as_str()?)?,
                span_id: hex_bytes(link["id"].as_str()?)?,
                ..Default::default()
            })
        })
        .collect();
    let fault = document["fault"] == true;
    let end = if document["in_progress"] == true {
        nanos(&document["start_time"])
    } else {
        nanos(&document["end_time"])
    };
    let id = document["id"].as_str().unwrap_or_default().to_string();
    spans.push(Span {
        trace_id: trace_id.to_vec(),
        span_id,
        parent_span_id: parent.and_then(hex_bytes).unwrap_or_default(),
        name: document["name"].as_str().unwrap_or_default().to_string(),
        kind: kind as i32,
        start_time_unix_nano: nanos(&document["start_time"]),
        end_time_unix_nano: end,
        attributes,
        events,
        links,
        status: Some(Status {
            code: if fault {
                StatusCode::Error
            } else {
                StatusCode::Unset
            } as i32,
            message: String::new(),
        }),
        ..Span::default()
    });
    for child in document["subsegments"].as_array().into_iter().flatten() {
        collect_spans(child, trace_id, Some(&id), false, spans);
    }
}

/// The export request for `documents` (JSON texts); independent
/// subsegments take `default_service` as their service.
pub fn to_request(documents: &[String], default_service: &str) -> ExportTraceServiceRequest {
    let mut by_service: Vec<(String, Option<String>, Vec<Span>)> = Vec::new();
    for text in documents {
        let Ok(document) = serde_json::from_str::<Value>(text) else {
            continue;
        };
        let Some(trace_id) = document["trace_id"].as_str().and_then(trace_bytes) else {
            continue;
        };
        let segment = document["type"] != "subsegment";
        let (service, origin) = if segment {
            (
                document["name"]
                    .as_str()
                    .unwrap_or(default_service)
                    .to_string(),
                document["origin"].as_str().map(str::to_string),
            )
        } else {
            (default_service.to_string(), None)
        };
        let mut spans = Vec::new();
        collect_spans(
            &document,
            &trace_id,
            document["parent_id"].as_str(),
            segment,
            &mut spans,
        );
        match by_service
            .iter_mut()
            .find(|(known, known_origin, _)| *known == service && *known_origin == origin)
        {
            Some((_, _, existing)) => existing.extend(spans),
            None => by_service.push((service, origin, spans)),
        }
    }
    ExportTraceServiceRequest {
        resource_spans: by_service
            .into_iter()
            .map(|(service, origin, spans)| {
                let mut attributes = vec![text("service.name", service)];
                if let Some(origin) = origin {
                    attributes.push(text("aws.xray.origin", origin));
                }
                ResourceSpans {
                    resource: Some(Resource {
                        attributes,
                        ..Resource::default()
                    }),
                    scope_spans: vec![ScopeSpans {
                        spans,
                        ..ScopeSpans::default()
                    }],
                    ..ResourceSpans::default()
                }
            })
            .collect(),
    }
}

impl OtlpSink {
    /// Starts exporting to `endpoint` (the OTLP/HTTP base URL, e.g.
    /// `http://127.0.0.1:4318`) on the current runtime.
    pub fn start(endpoint: &str, default_service: &str) -> Self {
        let (queue, mut documents) = mpsc::channel::<String>(QUEUE_CAPACITY);
        let counters = Arc::new(Counters::default());
        let task_counters = Arc::clone(&counters);
        let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        let default_service = default_service.to_string();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut batch = Vec::with_capacity(BATCH);
            loop {
                let first = documents.recv().await;
                let Some(first) = first else { return };
                batch.push(first);
                let deadline = tokio::time::Instant::now() + FLUSH_EVERY;
                while batch.len() < BATCH {
                    match tokio::time::timeout_at(deadline, documents.recv()).await {
                        Ok(Some(document)) => batch.push(document),
                        Ok(None) | Err(_) => break,
                    }
                }
                let count = batch.len() as u64;
                let body = to_request(&batch, &default_service).encode_to_vec();
                batch.clear();
                let sent = client
                    .post(&url)
                    .header("content-type", "application/x-protobuf")
                    .body(body)
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status);
                match sent {
                    Ok(_) => task_counters.sent.fetch_add(count, Ordering::Relaxed),
                    Err(error) => {
                        tracing::debug!(%error, "exporting segments over OTLP failed");
                        task_counters.failed.fetch_add(count, Ordering::Relaxed)
                    }
                };
            }
        });
        Self { queue, counters }
    }
}

impl SegmentSink for OtlpSink {
    fn emit(&self, document: String) {
        if self.queue.try_send(document).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn stats(&self) -> EmitterStats {
        EmitterStats {
            sent: self.counters.sent.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
            failed: self.counters.failed.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::document::{Document, TopLevel};

    #[test]
    fn segments_map_to_spans_as_tracelake_maps_them() {
        let mut segment = Document::new("orders-api/prod", 10.0);
        segment.end_time = Some(10.5);
        segment.origin = Some("AWS::ApiGateway::Stage".into());
        segment.fault = true;
        segment.annotations.insert("order".into(), json!(7));
        let mut send = Document::new("SQS", 10.1);
        send.end_time = Some(10.2);
        send.namespace = Some("aws");
        send.aws.insert("operation".into(), json!("SendMessage"));
        let mut local = Document::new("validate", 10.2);
        local.end_time = Some(10.3);
        local.add_exception("ValueError", "bad", false);
        segment.subsegments = vec![send, local];
        let top = TopLevel {
            trace_id: "1-5759e988-bd862e3fe1be46a994272793",
            parent_id: Some("53995c3f42cd8ad8"),
            sampling_rule: None,
            subsegment: false,
        };
        let documents = segment.documents(&top, 60_000);
        let request = to_request(&documents, "fallback");
        let resource = &request.resource_spans[0];
        let attributes = &resource.resource.as_ref().unwrap().attributes;
        assert_eq!(attributes[0], text("service.name", "orders-api/prod"));
        assert_eq!(
            attributes[1],
            text("aws.xray.origin", "AWS::ApiGateway::Stage")
        );
        let spans = &resource.scope_spans[0].spans;
        assert_eq!(spans.len(), 3);
        assert_eq!(
            hex::encode(&spans[0].trace_id),
            "5759e988bd862e3fe1be46a994272793"
        );
        assert_eq!(hex::encode(&spans[0].parent_span_id), "53995c3f42cd8ad8");
        assert_eq!(spans[0].kind, SpanKind::Server as i32);
        assert_eq!(
            spans[0].status.as_ref().unwrap().code,
            StatusCode::Error as i32
        );
        assert_eq!(
            spans[0].end_time_unix_nano - spans[0].start_time_unix_nano,
            500_000_000
        );
        assert!(spans[0].attributes.iter().any(|kv| kv.key == "order"));
        assert_eq!(spans[1].kind, SpanKind::Producer as i32);
        assert_eq!(spans[1].parent_span_id, spans[0].span_id);
        assert_eq!(spans[2].kind, SpanKind::Internal as i32);
        assert_eq!(spans[2].events[0].name, "exception");
    }
}

//! Building OTLP requests and reading traces back, for the tests.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, TracesData};
use prost::Message;

pub(crate) fn string_attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// A span of `trace_id` with `span_id`; start a second ago.
pub(crate) fn span(trace_id: [u8; 16], span_id: [u8; 8], name: &str) -> Span {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64;
    Span {
        trace_id: trace_id.to_vec(),
        span_id: span_id.to_vec(),
        name: name.into(),
        kind: 2,
        start_time_unix_nano: now - 1_000_000_000,
        end_time_unix_nano: now - 999_000_000,
        attributes: vec![string_attribute("test.case", name)],
        ..Default::default()
    }
}

pub(crate) fn request(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![string_attribute("service.name", service)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Distinct, deterministic, non-zero ids from a counter.
pub(crate) fn trace_id(seed: u64) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
    id[8..].copy_from_slice(&(seed + 1).to_be_bytes());
    id
}

pub(crate) fn span_id(seed: u64) -> [u8; 8] {
    (seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1).to_be_bytes()
}

/// GET /api/traces/{id} as protobuf; `None` on 404.
pub(crate) async fn fetch_trace(
    client: &reqwest::Client,
    base: &str,
    trace_id: &[u8],
) -> Option<TracesData> {
    let response = client
        .get(format!("{base}/api/traces/{}", hex::encode(trace_id)))
        .header("accept", "application/protobuf")
        .send()
        .await
        .expect("query request");
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return None;
    }
    assert!(
        response.status().is_success(),
        "status {}",
        response.status()
    );
    let bytes = response.bytes().await.expect("body");
    Some(TracesData::decode(bytes).expect("TracesData protobuf"))
}

/// Every span of a trace, sorted by span id, for comparisons.
pub(crate) fn spans_of(trace: &TracesData) -> Vec<Span> {
    let mut spans: Vec<Span> = trace
        .resource_spans
        .iter()
        .flat_map(|resource| resource.scope_spans.iter())
        .flat_map(|scope| scope.spans.iter().cloned())
        .collect();
    spans.sort_by(|a, b| a.span_id.cmp(&b.span_id));
    spans
}

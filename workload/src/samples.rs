//! Small span and metric fixtures shared by the crates' tests and the
//! benchmarks. Deterministic: the same seed gives the same spans.

use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

fn attribute(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// A non-zero trace id derived from `seed`.
pub fn trace_id_bytes(seed: u64) -> Vec<u8> {
    let mut id = Vec::with_capacity(16);
    id.extend_from_slice(&(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1).to_be_bytes());
    id.extend_from_slice(&seed.to_be_bytes());
    id
}

/// A non-zero span id derived from `seed`.
pub fn span_id_bytes(seed: u64) -> Vec<u8> {
    (seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1)
        .to_be_bytes()
        .to_vec()
}

/// A trace of `spans` spans (a root and children) starting at `start_ns`,
/// with every attribute type, events, links and statuses.
pub fn sample_resource_spans(seed: u64, spans: u64, start_ns: u64) -> ResourceSpans {
    let trace_id = trace_id_bytes(seed);
    let root_id = span_id_bytes(seed * 1_000);
    let mut out = Vec::new();
    for index in 0..spans {
        let span_id = if index == 0 {
            root_id.clone()
        } else {
            span_id_bytes(seed * 1_000 + index)
        };
        let start = start_ns + index * 1_000_003;
        out.push(Span {
            trace_id: trace_id.clone(),
            span_id,
            parent_span_id: if index == 0 {
                Vec::new()
            } else {
                root_id.clone()
            },
            trace_state: if index == 0 {
                "vendor=1".into()
            } else {
                String::new()
            },
            flags: 0x100,
            name: format!("op-{index}"),
            kind: (index % 5 + 1) as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: start + 500_007,
            attributes: vec![
                attribute("http.request.method", Value::StringValue("GET".into())),
                attribute(
                    "http.response.status_code",
                    Value::IntValue(if index == 2 { 503 } else { 200 }),
                ),
                attribute("ratio", Value::DoubleValue(0.125)),
                attribute("cache.hit", Value::BoolValue(index % 2 == 0)),
                attribute("blob", Value::BytesValue(vec![0, 1, 2, 255])),
                attribute(
                    "list",
                    Value::ArrayValue(ArrayValue {
                        values: vec![
                            AnyValue {
                                value: Some(Value::IntValue(1)),
                            },
                            AnyValue {
                                value: Some(Value::StringValue("two".into())),
                            },
                        ],
                    }),
                ),
                attribute(
                    "nested",
                    Value::KvlistValue(KeyValueList {
                        values: vec![attribute("inner", Value::BoolValue(true))],
                    }),
                ),
                KeyValue {
                    key: "empty".into(),
                    value: Some(AnyValue { value: None }),
                    ..Default::default()
                },
            ],
            dropped_attributes_count: 1,
            events: vec![Event {
                time_unix_nano: start + 10,
                name: "exception".into(),
                attributes: vec![attribute(
                    "exception.type",
                    Value::StringValue("Boom".into()),
                )],
                dropped_attributes_count: 2,
            }],
            dropped_events_count: 3,
            links: if index == 1 {
                vec![Link {
                    trace_id: trace_id_bytes(seed + 1),
                    span_id: span_id_bytes(7),
                    trace_state: "k=v".into(),
                    attributes: vec![attribute("link.kind", Value::StringValue("follows".into()))],
                    dropped_attributes_count: 0,
                    flags: 1,
                }]
            } else {
                Vec::new()
            },
            dropped_links_count: 0,
            status: Some(Status {
                message: if index == 2 {
                    "upstream failed".into()
                } else {
                    String::new()
                },
                code: if index == 2 { 2 } else { 0 },
            }),
        });
    }
    ResourceSpans {
        resource: Some(Resource {
            attributes: vec![
                attribute(
                    "service.name",
                    Value::StringValue(format!("svc-{}", seed % 3)),
                ),
                attribute("cloud.platform", Value::StringValue("aws_lambda".into())),
            ],
            dropped_attributes_count: 0,
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            scope: Some(InstrumentationScope {
                name: "fixture".into(),
                version: "1.0".into(),
                attributes: vec![attribute("scope.attr", Value::IntValue(4))],
                ..Default::default()
            }),
            spans: out,
            schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
        }],
        schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
    }
}

/// One resource's gauge `fixture.gauge` with `points` points at `time_ns`,
/// point `i` valued `seed * 1_000_000 + i` (as an integer), so every point
/// of a test is told apart by its value.
pub fn sample_resource_metrics(
    seed: u64,
    points: u64,
    time_ns: u64,
) -> opentelemetry_proto::tonic::metrics::v1::ResourceMetrics {
    use opentelemetry_proto::tonic::metrics::v1::{
        Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric::Data,
        number_data_point,
    };
    let data_points = (0..points)
        .map(|index| NumberDataPoint {
            attributes: vec![attribute("point", Value::IntValue(index as i64))],
            time_unix_nano: time_ns,
            value: Some(number_data_point::Value::AsInt(
                (seed * 1_000_000 + index) as i64,
            )),
            ..Default::default()
        })
        .collect();
    ResourceMetrics {
        resource: Some(Resource {
            attributes: vec![attribute(
                "service.name",
                Value::StringValue(format!("svc-{}", seed % 3)),
            )],
            ..Default::default()
        }),
        scope_metrics: vec![ScopeMetrics {
            metrics: vec![Metric {
                name: "fixture.gauge".into(),
                data: Some(Data::Gauge(Gauge { data_points })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

//! Segment document <-> span mapping: a table of rules, the conventions for
//! spans that did not come from X-Ray, and a round-trip property through
//! the span table itself (document -> spans -> Arrow rows -> spans ->
//! document).

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value as Any};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::{Span, Status};
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use tracelake_model::otlp::{batches_to_traces_data, resource_spans_to_batch};
use tracelake_model::xray::{
    MappedDocument, SegmentDocument, SpanWithResource, XRAY_SCOPE_NAME, document_to_spans,
    spans_to_documents, traces_to_documents,
};

fn parse(document: &Value) -> SegmentDocument {
    let parsed = SegmentDocument::from_json(&serde_json::to_vec(document).unwrap()).unwrap();
    parsed.validate().unwrap();
    parsed
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Any> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|value| value.value.as_ref())
}

fn text(value: &str) -> Any {
    Any::StringValue(value.to_string())
}

fn segment_with(fields: Value) -> Value {
    let mut document = json!({
        "id": "70de5b6f19ff9a0a",
        "name": "checkout",
        "trace_id": "1-581cf771-a006649127e371903a2de979",
        "start_time": 1478293361.271,
        "end_time": 1478293361.449
    });
    for (key, value) in fields.as_object().unwrap() {
        document[key] = value.clone();
    }
    document
}

#[test]
fn mapping_rules_table() {
    // (case, document, check on the mapped spans)
    type Check = fn(&MappedDocument);
    let cases: Vec<(&str, Value, Check)> = vec![
        (
            "segment is a server span of its service",
            segment_with(json!({})),
            |mapped| {
                let span = &mapped.spans[0];
                assert_eq!(span.kind, SpanKind::Server as i32);
                assert_eq!(span.name, "checkout");
                assert_eq!(
                    hex::encode(&span.trace_id),
                    "581cf771a006649127e371903a2de979"
                );
                assert_eq!(hex::encode(&span.span_id), "70de5b6f19ff9a0a");
                assert!(span.parent_span_id.is_empty());
                assert_eq!(span.start_time_unix_nano, 1_478_293_361_271_000_000);
                assert_eq!(span.end_time_unix_nano, 1_478_293_361_449_000_000);
                let resource = mapped.resource.as_ref().unwrap();
                assert_eq!(
                    attribute(&resource.attributes, "service.name"),
                    Some(&text("checkout"))
                );
            },
        ),
        (
            "upstream parent",
            segment_with(json!({"parent_id": "1111111111111111"})),
            |mapped| {
                assert_eq!(
                    hex::encode(&mapped.spans[0].parent_span_id),
                    "1111111111111111"
                );
            },
        ),
        (
            "in progress: end = start, flagged",
            segment_with(json!({"end_time": null, "in_progress": true})),
            |mapped| {
                let span = &mapped.spans[0];
                assert_eq!(span.end_time_unix_nano, span.start_time_unix_nano);
                assert_eq!(
                    attribute(&span.attributes, "aws.xray.inprogress"),
                    Some(&Any::BoolValue(true))
                );
            },
        ),
        (
            "origin known -> cloud.platform",
            segment_with(
                json!({"origin": "AWS::EC2::Instance", "service": {"version": "1.2", "runtime": "CPython"}}),
            ),
            |mapped| {
                let resource = &mapped.resource.as_ref().unwrap().attributes;
                assert_eq!(
                    attribute(resource, "cloud.platform"),
                    Some(&text("aws_ec2"))
                );
                assert_eq!(attribute(resource, "cloud.provider"), Some(&text("aws")));
                assert_eq!(attribute(resource, "service.version"), Some(&text("1.2")));
                assert_eq!(
                    attribute(resource, "aws.xray.service"),
                    Some(&text(r#"{"runtime":"CPython"}"#))
                );
            },
        ),
        (
            "origin unknown kept",
            segment_with(json!({"origin": "AWS::ApiGateway::Stage"})),
            |mapped| {
                let resource = &mapped.resource.as_ref().unwrap().attributes;
                assert_eq!(
                    attribute(resource, "aws.xray.origin"),
                    Some(&text("AWS::ApiGateway::Stage"))
                );
            },
        ),
        (
            "segment aws -> resource",
            segment_with(
                json!({"aws": {"account_id": "123456789012", "ec2": {"instance_id": "i-0abc", "availability_zone": "us-east-1a"}, "xray": {"sdk": "X-Ray for Python", "sdk_version": "2.15.0"}}}),
            ),
            |mapped| {
                let resource = &mapped.resource.as_ref().unwrap().attributes;
                assert_eq!(
                    attribute(resource, "cloud.account.id"),
                    Some(&text("123456789012"))
                );
                assert_eq!(attribute(resource, "host.id"), Some(&text("i-0abc")));
                assert_eq!(
                    attribute(resource, "cloud.availability_zone"),
                    Some(&text("us-east-1a"))
                );
                assert_eq!(
                    attribute(resource, "telemetry.sdk.name"),
                    Some(&text("X-Ray for Python"))
                );
                assert_eq!(attribute(&mapped.spans[0].attributes, "aws.xray.aws"), None);
            },
        ),
        (
            "user and http",
            segment_with(
                json!({"user": "alice", "http": {"request": {"method": "POST", "url": "https://shop/cart", "client_ip": "10.0.0.1", "user_agent": "curl", "x_forwarded_for": true}, "response": {"status": 429, "content_length": 12}}}),
            ),
            |mapped| {
                let attributes = &mapped.spans[0].attributes;
                assert_eq!(attribute(attributes, "enduser.id"), Some(&text("alice")));
                assert_eq!(
                    attribute(attributes, "http.request.method"),
                    Some(&text("POST"))
                );
                assert_eq!(
                    attribute(attributes, "url.full"),
                    Some(&text("https://shop/cart"))
                );
                assert_eq!(
                    attribute(attributes, "client.address"),
                    Some(&text("10.0.0.1"))
                );
                assert_eq!(
                    attribute(attributes, "user_agent.original"),
                    Some(&text("curl"))
                );
                assert_eq!(
                    attribute(attributes, "aws.xray.x_forwarded_for"),
                    Some(&Any::BoolValue(true))
                );
                assert_eq!(
                    attribute(attributes, "http.response.status_code"),
                    Some(&Any::IntValue(429))
                );
                assert_eq!(
                    attribute(attributes, "http.response.body.size"),
                    Some(&Any::IntValue(12))
                );
                assert_eq!(
                    attribute(attributes, "aws.xray.http"),
                    None,
                    "nothing left over"
                );
            },
        ),
        (
            "flags set status error",
            segment_with(json!({"error": true, "throttle": true, "fault": false})),
            |mapped| {
                let span = &mapped.spans[0];
                assert_eq!(span.status.as_ref().map(|status| status.code), Some(2));
                assert_eq!(
                    attribute(&span.attributes, "aws.xray.error"),
                    Some(&Any::BoolValue(true))
                );
                assert_eq!(
                    attribute(&span.attributes, "aws.xray.throttle"),
                    Some(&Any::BoolValue(true))
                );
                assert_eq!(
                    attribute(&span.attributes, "aws.xray.fault"),
                    Some(&Any::BoolValue(false))
                );
            },
        ),
        ("no flags, no status", segment_with(json!({})), |mapped| {
            assert_eq!(mapped.spans[0].status, None);
        }),
        (
            "annotations typed and listed",
            segment_with(
                json!({"annotations": {"customer": "c-1", "items": 3, "total": 9.5, "vip": false}}),
            ),
            |mapped| {
                let attributes = &mapped.spans[0].attributes;
                assert_eq!(attribute(attributes, "customer"), Some(&text("c-1")));
                assert_eq!(attribute(attributes, "items"), Some(&Any::IntValue(3)));
                assert_eq!(attribute(attributes, "total"), Some(&Any::DoubleValue(9.5)));
                assert_eq!(attribute(attributes, "vip"), Some(&Any::BoolValue(false)));
                let Some(Any::ArrayValue(keys)) = attribute(attributes, "aws.xray.annotations")
                else {
                    panic!("annotation keys missing")
                };
                assert_eq!(keys.values.len(), 4);
            },
        ),
        (
            "metadata per namespace as JSON",
            segment_with(json!({"metadata": {"default": {"cart": [1, 2]}, "debug": "x"}})),
            |mapped| {
                let attributes = &mapped.spans[0].attributes;
                assert_eq!(
                    attribute(attributes, "aws.xray.metadata.default"),
                    Some(&text(r#"{"cart":[1,2]}"#))
                );
                assert_eq!(
                    attribute(attributes, "aws.xray.metadata.debug"),
                    Some(&text(r#""x""#))
                );
            },
        ),
        (
            "a queue send is a producer",
            segment_with(json!({"subsegments": [
                {"id": "2222222222222222", "name": "SQS", "namespace": "aws", "start_time": 1478293361.3, "end_time": 1478293361.35,
                 "aws": {"operation": "SendMessage", "queue_url": "https://sqs.us-east-1.amazonaws.com/1/orders"}},
                {"id": "3333333333333333", "name": "SQS", "namespace": "aws", "start_time": 1478293361.3, "end_time": 1478293361.35,
                 "aws": {"operation": "ReceiveMessage", "queue_url": "https://sqs.us-east-1.amazonaws.com/1/orders"}}
            ]})),
            |mapped| {
                let kind = |id: &str| {
                    mapped
                        .spans
                        .iter()
                        .find(|span| hex::encode(&span.span_id) == id)
                        .unwrap()
                        .kind
                };
                assert_eq!(kind("2222222222222222"), SpanKind::Producer as i32);
                assert_eq!(kind("3333333333333333"), SpanKind::Client as i32);
            },
        ),
        (
            "subsegments: kinds and parents",
            segment_with(json!({"subsegments": [
                {"id": "2222222222222222", "name": "DynamoDB", "namespace": "aws", "start_time": 1478293361.3, "end_time": 1478293361.35,
                 "aws": {"operation": "GetItem", "table_name": "carts", "region": "us-east-1", "request_id": "R1", "retries": 1, "resource_names": ["carts"], "bucket": "x"}},
                {"id": "3333333333333333", "name": "api.example.com", "start_time": 1478293361.36, "end_time": 1478293361.4,
                 "http": {"request": {"method": "GET", "url": "https://api.example.com/"}, "response": {"status": 200}},
                 "subsegments": [{"id": "4444444444444444", "name": "parse", "start_time": 1478293361.37, "end_time": 1478293361.38}]},
                {"id": "5555555555555555", "name": "local work", "namespace": "local", "start_time": 1478293361.41, "end_time": 1478293361.42}
            ]})),
            |mapped| {
                let spans = &mapped.spans;
                assert_eq!(spans.len(), 5);
                let by_id = |id: &str| {
                    spans
                        .iter()
                        .find(|span| hex::encode(&span.span_id) == id)
                        .unwrap()
                };
                let dynamo = by_id("2222222222222222");
                assert_eq!(dynamo.kind, SpanKind::Client as i32);
                assert_eq!(hex::encode(&dynamo.parent_span_id), "70de5b6f19ff9a0a");
                assert_eq!(
                    attribute(&dynamo.attributes, "aws.xray.namespace"),
                    Some(&text("aws"))
                );
                assert_eq!(
                    attribute(&dynamo.attributes, "aws.operation"),
                    Some(&text("GetItem"))
                );
                assert_eq!(
                    attribute(&dynamo.attributes, "aws.table_name"),
                    Some(&text("carts"))
                );
                assert_eq!(
                    attribute(&dynamo.attributes, "aws.region"),
                    Some(&text("us-east-1"))
                );
                assert_eq!(
                    attribute(&dynamo.attributes, "aws.request_id"),
                    Some(&text("R1"))
                );
                assert_eq!(
                    attribute(&dynamo.attributes, "aws.xray.retries"),
                    Some(&Any::IntValue(1))
                );
                assert_eq!(
                    attribute(&dynamo.attributes, "aws.xray.aws"),
                    Some(&text(r#"{"bucket":"x"}"#))
                );
                let http = by_id("3333333333333333");
                assert_eq!(
                    http.kind,
                    SpanKind::Client as i32,
                    "http makes a client span"
                );
                let parse = by_id("4444444444444444");
                assert_eq!(parse.kind, SpanKind::Internal as i32);
                assert_eq!(hex::encode(&parse.parent_span_id), "3333333333333333");
                assert_eq!(by_id("5555555555555555").kind, SpanKind::Internal as i32);
                assert!(spans.iter().all(|span| span.trace_id == spans[0].trace_id));
            },
        ),
        (
            "sql",
            segment_with(
                json!({"sql": {"url": "jdbc:postgresql://db/app", "sanitized_query": "SELECT 1", "database_type": "PostgreSQL", "database_version": "16", "user": "app"}}),
            ),
            |mapped| {
                let attributes = &mapped.spans[0].attributes;
                assert_eq!(
                    attribute(attributes, "db.system.name"),
                    Some(&text("PostgreSQL"))
                );
                assert_eq!(
                    attribute(attributes, "db.query.text"),
                    Some(&text("SELECT 1"))
                );
                assert_eq!(
                    attribute(attributes, "db.connection_string"),
                    Some(&text("jdbc:postgresql://db/app"))
                );
                assert_eq!(attribute(attributes, "db.user"), Some(&text("app")));
                assert_eq!(
                    attribute(attributes, "aws.xray.sql"),
                    Some(&text(r#"{"database_version":"16"}"#))
                );
            },
        ),
        (
            "exceptions -> events",
            segment_with(
                json!({"fault": true, "cause": {"working_directory": "/app", "exceptions": [
                    {"id": "aaaaaaaaaaaaaaaa", "type": "ValueError", "message": "bad cart", "remote": false, "stack": [{"path": "app.py", "line": 12, "label": "checkout"}]}
                ]}}),
            ),
            |mapped| {
                let span = &mapped.spans[0];
                assert_eq!(span.status.as_ref().unwrap().message, "bad cart");
                assert_eq!(span.events.len(), 1);
                let event = &span.events[0];
                assert_eq!(event.name, "exception");
                assert_eq!(event.time_unix_nano, span.end_time_unix_nano);
                assert_eq!(
                    attribute(&event.attributes, "exception.type"),
                    Some(&text("ValueError"))
                );
                assert_eq!(
                    attribute(&event.attributes, "exception.message"),
                    Some(&text("bad cart"))
                );
                assert_eq!(
                    attribute(&event.attributes, "aws.xray.exception.id"),
                    Some(&text("aaaaaaaaaaaaaaaa"))
                );
                let Some(Any::StringValue(stack)) =
                    attribute(&event.attributes, "exception.stacktrace")
                else {
                    panic!()
                };
                assert!(stack.contains("at checkout (app.py:12)"), "{stack}");
                assert_eq!(
                    attribute(&span.attributes, "aws.xray.cause"),
                    Some(&text(r#"{"working_directory":"/app"}"#))
                );
            },
        ),
        (
            "cause by exception id",
            segment_with(json!({"cause": "aaaaaaaaaaaaaaaa"})),
            |mapped| {
                assert_eq!(
                    attribute(&mapped.spans[0].attributes, "aws.xray.cause.exception_id"),
                    Some(&text("aaaaaaaaaaaaaaaa"))
                );
            },
        ),
        (
            "links and precursors",
            segment_with(
                json!({"precursor_ids": ["1234567890abcdef"], "links": [{"trace_id": "1-5759e988-bd862e3fe1be46a994272793", "id": "53995c3f42cd8ad8", "attributes": {"aws.xray.reserved.type": "span"}}]}),
            ),
            |mapped| {
                let span = &mapped.spans[0];
                assert_eq!(span.links.len(), 1);
                assert_eq!(
                    hex::encode(&span.links[0].trace_id),
                    "5759e988bd862e3fe1be46a994272793"
                );
                assert_eq!(hex::encode(&span.links[0].span_id), "53995c3f42cd8ad8");
                assert_eq!(
                    attribute(&span.links[0].attributes, "aws.xray.reserved.type"),
                    Some(&text("span"))
                );
                assert!(matches!(
                    attribute(&span.attributes, "aws.xray.precursor_ids"),
                    Some(Any::ArrayValue(_))
                ));
            },
        ),
        (
            "independent subsegment has no resource",
            json!({"id": "2222222222222222", "name": "DynamoDB", "type": "subsegment", "parent_id": "70de5b6f19ff9a0a", "trace_id": "1-581cf771-a006649127e371903a2de979", "namespace": "aws", "start_time": 1.5, "end_time": 2.5}),
            |mapped| {
                assert_eq!(mapped.resource, None);
                assert_eq!(mapped.spans[0].kind, SpanKind::Client as i32);
                assert_eq!(
                    hex::encode(&mapped.spans[0].parent_span_id),
                    "70de5b6f19ff9a0a"
                );
            },
        ),
    ];
    for (case, document, check) in cases {
        let mapped =
            document_to_spans(&parse(&document)).unwrap_or_else(|error| panic!("{case}: {error}"));
        let outcome = std::panic::catch_unwind(|| check(&mapped));
        assert!(outcome.is_ok(), "mapping rule failed: {case}");
    }
}

/// Document -> spans -> span table rows -> spans -> document.
fn through_storage(document: &SegmentDocument) -> Vec<SegmentDocument> {
    let mut mapped = document_to_spans(document).unwrap();
    let resource = mapped.resource.take().unwrap_or_else(|| Resource {
        attributes: vec![kv("service.name", text("parent-service"))],
        ..Default::default()
    });
    let request = vec![mapped.into_resource_spans(resource)];
    let converted = resource_spans_to_batch("t", &request).unwrap();
    assert!(
        converted.rejections.is_empty(),
        "{:?}",
        converted.rejections
    );
    let traces = batches_to_traces_data(&[converted.batch.unwrap()]).unwrap();
    traces_to_documents(&traces)
}

#[test]
fn python_sdk_document_round_trips() {
    // What aws-xray-sdk for Python 2.15 emits (nested subsegments repeat
    // trace_id, parent_id and type; every entity says in_progress).
    let document = json!({
        "id": "70de5b6f19ff9a0a", "name": "shop", "trace_id": "1-581cf771-a006649127e371903a2de979",
        "start_time": 1764424242.123456, "end_time": 1764424242.523456, "in_progress": false,
        "aws": {"xray": {"sdk_version": "2.15.0", "sdk": "X-Ray for Python"}},
        "service": {"runtime": "CPython", "runtime_version": "3.12.3"},
        "annotations": {"customer": "c-1", "items": 3, "vip": true},
        "metadata": {"default": {"cart": {"sku": ["a", "b"]}}},
        "subsegments": [{
            "id": "53995c3f42cd8ad8", "name": "api.example.com", "start_time": 1764424242.2, "end_time": 1764424242.3,
            "in_progress": false, "namespace": "remote", "type": "subsegment",
            "trace_id": "1-581cf771-a006649127e371903a2de979", "parent_id": "70de5b6f19ff9a0a",
            "http": {"request": {"url": "https://api.example.com/x", "method": "GET"}, "response": {"status": 503}},
            "fault": true,
            "cause": {"working_directory": "/srv", "exceptions": [{"id": "aaaaaaaaaaaaaaaa", "message": "boom", "type": "RuntimeError", "stack": [{"path": "/srv/app.py", "line": 7, "label": "call"}]}]}
        }]
    });
    let parsed = parse(&document);
    let back = through_storage(&parsed);
    assert_eq!(back, vec![parsed.canonical()]);
}

#[test]
fn streamed_subsegments_are_put_back_under_their_segment() {
    let segment = parse(
        &json!({"id": "70de5b6f19ff9a0a", "name": "shop", "trace_id": "1-581cf771-a006649127e371903a2de979", "start_time": 10.0, "end_time": 11.0}),
    );
    let streamed = parse(
        &json!({"id": "53995c3f42cd8ad8", "name": "db", "type": "subsegment", "parent_id": "70de5b6f19ff9a0a", "trace_id": "1-581cf771-a006649127e371903a2de979", "start_time": 10.2, "end_time": 10.4}),
    );
    let mapped_segment = document_to_spans(&segment).unwrap();
    let mapped_streamed = document_to_spans(&streamed).unwrap();
    let resource = mapped_segment.resource.clone().unwrap();
    let mut flat = Vec::new();
    for span in mapped_streamed.spans.iter().chain(&mapped_segment.spans) {
        flat.push(SpanWithResource {
            resource: &resource.attributes,
            scope_name: XRAY_SCOPE_NAME,
            span,
        });
    }
    let documents = spans_to_documents(&flat);
    assert_eq!(documents.len(), 1, "{documents:?}");
    let subsegments = documents[0].subsegments.as_ref().unwrap();
    assert_eq!(subsegments[0].id, "53995c3f42cd8ad8");
    assert_eq!(subsegments[0].document_type, None);
    // Alone, the streamed subsegment stays independent.
    let alone = spans_to_documents(&flat[..1]);
    assert_eq!(alone[0].document_type.as_deref(), Some("subsegment"));
    assert_eq!(alone[0].parent_id.as_deref(), Some("70de5b6f19ff9a0a"));
}

#[test]
fn a_pathological_parent_chain_does_not_overflow_the_stack() {
    let resource = vec![kv("service.name", text("deep"))];
    let spans: Vec<Span> = (1..=20_000u64)
        .map(|index| Span {
            trace_id: vec![7; 16],
            span_id: index.to_be_bytes().to_vec(),
            parent_span_id: if index == 1 {
                Vec::new()
            } else {
                (index - 1).to_be_bytes().to_vec()
            },
            kind: SpanKind::Internal as i32,
            start_time_unix_nano: 1_000_000_000 + index,
            end_time_unix_nano: 2_000_000_000,
            ..Default::default()
        })
        .collect();
    let flat: Vec<SpanWithResource<'_>> = spans
        .iter()
        .map(|span| SpanWithResource {
            resource: &resource,
            scope_name: XRAY_SCOPE_NAME,
            span,
        })
        .collect();
    let documents = spans_to_documents(&flat);
    let total: usize = documents.iter().map(SegmentDocument::entity_count).sum();
    assert_eq!(total, 20_000, "every span in some document");
    assert!(documents.len() > 1, "deep chains are split into documents");
}

fn kv(key: &str, value: Any) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

#[test]
fn otlp_spans_map_as_the_exporter_does() {
    let resource = vec![
        kv("service.name", text("cart")),
        kv("cloud.platform", text("aws_ecs")),
        kv("cloud.provider", text("aws")),
    ];
    let server = Span {
        trace_id: vec![0x58; 16],
        span_id: vec![1; 8],
        name: "GET /cart".into(),
        kind: SpanKind::Server as i32,
        start_time_unix_nano: 1_000_000_000,
        end_time_unix_nano: 2_000_000_000,
        attributes: vec![
            kv("http.request.method", text("GET")),
            kv("http.response.status_code", Any::IntValue(404)),
            kv("team", text("payments")),
            kv("tier", text("gold")),
            kv(
                "aws.xray.annotations",
                Any::ArrayValue(opentelemetry_proto::tonic::common::v1::ArrayValue {
                    values: vec![AnyValue {
                        value: Some(text("tier")),
                    }],
                }),
            ),
        ],
        ..Default::default()
    };
    let client = Span {
        trace_id: vec![0x58; 16],
        span_id: vec![2; 8],
        parent_span_id: vec![1; 8],
        name: "DynamoDB.GetItem".into(),
        kind: SpanKind::Client as i32,
        start_time_unix_nano: 1_100_000_000,
        end_time_unix_nano: 1_200_000_000,
        attributes: vec![
            kv("rpc.system", text("aws-api")),
            kv("rpc.service", text("DynamoDB")),
        ],
        status: Some(Status {
            code: 2,
            message: "x".into(),
        }),
        ..Default::default()
    };
    let flat = [
        SpanWithResource {
            resource: &resource,
            scope_name: "io.opentelemetry.flask",
            span: &server,
        },
        SpanWithResource {
            resource: &resource,
            scope_name: "io.opentelemetry.boto",
            span: &client,
        },
    ];
    let documents = spans_to_documents(&flat);
    assert_eq!(documents.len(), 1);
    let segment = &documents[0];
    assert_eq!(segment.name.as_deref(), Some("cart"));
    assert_eq!(segment.origin.as_deref(), Some("AWS::ECS::Container"));
    assert_eq!(segment.error, Some(true));
    assert_eq!(segment.fault, None);
    assert_eq!(
        segment
            .http
            .as_ref()
            .unwrap()
            .response
            .as_ref()
            .unwrap()
            .status,
        Some(404)
    );
    assert_eq!(
        segment.annotations.as_ref().unwrap().get("tier"),
        Some(&json!("gold"))
    );
    assert_eq!(
        segment.metadata.as_ref().unwrap()["default"]["team"],
        json!("payments")
    );
    let subsegment = &segment.subsegments.as_ref().unwrap()[0];
    assert_eq!(subsegment.namespace.as_deref(), Some("aws"));
    assert_eq!(subsegment.name.as_deref(), Some("DynamoDB"));
    assert_eq!(subsegment.fault, Some(true));
}

// ---- round-trip property -------------------------------------------------

fn hex_id() -> impl Strategy<Value = String> {
    "[0-9a-f]{15}[1-9a-f]"
}

fn name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9 _.:/%&#=+@-]{0,30}[A-Za-z0-9]"
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        "[a-z ]{0,12}".prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e9f64..1e9).prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![scalar(), Just(Value::Null)];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z.]{1,6}", inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn object(
    keys: &'static [&'static str],
    value: BoxedStrategy<Value>,
) -> impl Strategy<Value = Option<Map<String, Value>>> {
    prop::option::of(
        prop::collection::btree_map(prop::sample::select(keys), value, 0..keys.len()).prop_map(
            |map| {
                map.into_iter()
                    .map(|(key, value)| (key.to_string(), value))
                    .collect()
            },
        ),
    )
}

fn entity(depth: u32) -> BoxedStrategy<Value> {
    let times = (
        1_000_000_000i64..2_000_000_000,
        0i64..1_000_000,
        0i64..5_000_000,
        prop::option::of(any::<bool>()),
    );
    let flags = (
        prop::option::of(any::<bool>()),
        prop::option::of(any::<bool>()),
        prop::option::of(any::<bool>()),
    );
    let http = prop::option::of((
        prop::option::of(prop::sample::select(&["GET", "POST"][..])),
        prop::option::of("https://[a-z]{1,8}/[a-z]{0,5}"),
        prop::option::of(100i64..600),
        prop::option::of(any::<bool>()),
        object(&["custom", "other"], scalar().boxed()),
    ));
    let aws = object(
        &[
            "operation",
            "region",
            "table_name",
            "retries",
            "resource_names",
            "account_id",
            "ec2",
            "xray",
            "bucket",
        ],
        prop_oneof![scalar(), json_value()].boxed(),
    );
    let annotations = prop::option::of(prop::collection::btree_map(
        "[a-z][a-z0-9_]{0,8}",
        scalar(),
        0..4,
    ));
    let metadata = prop::option::of(prop::collection::btree_map(
        "[a-zA-Z.]{1,8}",
        json_value(),
        0..3,
    ));
    let cause = prop::option::of(prop_oneof![
        hex_id().prop_map(Value::from),
        (prop::option::of("/[a-z]{1,6}"), prop::collection::vec((prop::option::of(hex_id()), prop::option::of("[a-z ]{0,10}"), prop::option::of(any::<bool>()), prop::option::of(prop::collection::vec(("[a-z/.]{1,8}", 0i64..500, "[a-z_]{1,6}"), 0..3))), 0..3))
            .prop_map(|(working_directory, exceptions)| {
                let mut cause = Map::new();
                if let Some(directory) = working_directory {
                    cause.insert("working_directory".into(), Value::from(directory));
                }
                let list: Vec<Value> = exceptions.into_iter().map(|(id, message, remote, stack)| {
                    let mut exception = Map::new();
                    if let Some(id) = id { exception.insert("id".into(), id.into()); }
                    if let Some(message) = message { exception.insert("message".into(), message.into()); }
                    if let Some(remote) = remote { exception.insert("remote".into(), remote.into()); }
                    if let Some(stack) = stack {
                        exception.insert("stack".into(), stack.into_iter().map(|(path, line, label)| json!({"path": path, "line": line, "label": label})).collect());
                    }
                    Value::Object(exception)
                }).collect();
                cause.insert("exceptions".into(), Value::Array(list));
                Value::Object(cause)
            }),
    ]);
    let misc = (
        prop::option::of(prop::sample::select(&["aws", "remote", "local"][..])),
        prop::option::of("[a-z]{1,8}"),
        prop::option::of(prop::collection::vec(hex_id(), 0..3)),
        prop::option::of(prop::collection::vec(
            (
                hex_id(),
                hex_id(),
                prop::option::of(prop::collection::btree_map("[a-z.]{1,8}", scalar(), 0..3)),
            ),
            1..3,
        )),
        object(&["sampled", "custom_field"], json_value().boxed()),
        object(
            &[
                "url",
                "sanitized_query",
                "database_type",
                "database_version",
            ],
            "[a-z]{0,8}".prop_map(Value::from).boxed(),
        ),
    );
    let children = if depth == 0 {
        Just(Vec::new()).boxed()
    } else {
        prop::collection::vec(entity(depth - 1), 0..3).boxed()
    };
    (hex_id(), name(), times, flags, http, aws, annotations, metadata, cause, misc, children)
        .prop_map(|(id, name, (start_s, start_us, duration_us, in_progress), (error, fault, throttle), http, aws, annotations, metadata, cause, (namespace, user, precursors, links, extra, sql), children)| {
            let start = start_s as f64 + start_us as f64 / 1e6;
            let mut entity = Map::new();
            entity.insert("id".into(), id.into());
            entity.insert("name".into(), name.into());
            entity.insert("start_time".into(), start.into());
            if in_progress == Some(true) {
                entity.insert("in_progress".into(), true.into());
            } else {
                if let Some(flag) = in_progress { entity.insert("in_progress".into(), flag.into()); }
                entity.insert("end_time".into(), (start + duration_us as f64 / 1e6).into());
            }
            for (key, flag) in [("error", error), ("fault", fault), ("throttle", throttle)] {
                if let Some(flag) = flag { entity.insert(key.into(), flag.into()); }
            }
            if let Some((method, url, status, traced, rest)) = http {
                let mut request = Map::new();
                if let Some(method) = method { request.insert("method".into(), method.into()); }
                if let Some(url) = url { request.insert("url".into(), url.into()); }
                if let Some(traced) = traced { request.insert("traced".into(), traced.into()); }
                let mut object = rest.unwrap_or_default();
                object.insert("request".into(), Value::Object(request));
                if let Some(status) = status { object.insert("response".into(), json!({"status": status})); }
                entity.insert("http".into(), Value::Object(object));
            }
            if let Some(aws) = aws { entity.insert("aws".into(), Value::Object(aws)); }
            if let Some(annotations) = annotations { entity.insert("annotations".into(), Value::Object(annotations.into_iter().collect())); }
            if let Some(metadata) = metadata { entity.insert("metadata".into(), Value::Object(metadata.into_iter().collect())); }
            if let Some(cause) = cause { entity.insert("cause".into(), cause); }
            if let Some(namespace) = namespace { entity.insert("namespace".into(), namespace.into()); }
            if let Some(user) = user { entity.insert("user".into(), user.into()); }
            if let Some(precursors) = precursors { entity.insert("precursor_ids".into(), precursors.into()); }
            if let Some(links) = links {
                let list: Vec<Value> = links.into_iter().map(|(unique, id, attributes)| {
                    let mut link = json!({"trace_id": format!("1-{}-{}{}", &unique[..8], &unique[8..], &id[..8]), "id": id});
                    if let Some(attributes) = attributes { link["attributes"] = Value::Object(attributes.into_iter().collect()); }
                    link
                }).collect();
                entity.insert("links".into(), list.into());
            }
            if let Some(extra) = extra { entity.extend(extra); }
            if let Some(sql) = sql { entity.insert("sql".into(), Value::Object(sql)); }
            if !children.is_empty() { entity.insert("subsegments".into(), children.into()); }
            Value::Object(entity)
        })
        .boxed()
}

fn top_level() -> impl Strategy<Value = Value> {
    (
        entity(2),
        prop::option::of(hex_id()),
        any::<bool>(),
        prop::option::of(prop::sample::select(
            &["AWS::EC2::Instance", "AWS::ApiGateway::Stage"][..],
        )),
        prop::option::of("[0-9.]{1,5}"),
    )
        .prop_map(|(mut document, parent, independent, origin, version)| {
            document["trace_id"] = json!("1-581cf771-a006649127e371903a2de979");
            if independent {
                document["type"] = json!("subsegment");
                document["parent_id"] = json!(parent.unwrap_or_else(|| "1111111111111111".into()));
            } else if let Some(parent) = parent {
                document["parent_id"] = json!(parent);
            }
            if let Some(origin) = origin {
                document["origin"] = json!(origin);
            }
            if let Some(version) = version {
                document["service"] = json!({"version": version, "runtime": "x"});
            }
            document
        })
}

fn unique_ids(document: &SegmentDocument, seen: &mut std::collections::HashSet<String>) -> bool {
    seen.insert(document.id.clone())
        && document
            .subsegments
            .iter()
            .flatten()
            .all(|child| unique_ids(child, seen))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn documents_round_trip_through_the_span_table(document in top_level()) {
        let parsed = SegmentDocument::from_json(&serde_json::to_vec(&document).unwrap()).unwrap();
        prop_assume!(parsed.validate().is_ok());
        prop_assume!(unique_ids(&parsed, &mut Default::default()));
        let back = through_storage(&parsed);
        prop_assert_eq!(back, vec![parsed.canonical()]);
    }
}

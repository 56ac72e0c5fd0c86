//! X-Ray ingest end to end: the real aws-xray-sdk for Python over the
//! daemon's UDP protocol, boto3's `put_trace_segments` against the X-Ray
//! API, malformed datagrams, and `tracelake import`.

use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::{Span, TracesData};
use prost::Message;
use serde_json::{Value, json};
use tracelake_model::xray::{SegmentDocument, traces_to_documents};

use crate::otlp::{fetch_trace, request, span, span_id, spans_of, trace_id};
use crate::python_sdk::python;
use crate::server::{TestServer, TestServerBuilder, tracelake_command};

/// `1-5759e988-bd86...` -> the 16 trace id bytes.
pub(crate) fn xray_hex(xray_trace_id: &str) -> Vec<u8> {
    let without_version = xray_trace_id.strip_prefix("1-").expect("x-ray trace id");
    hex::decode(without_version.replace('-', "")).expect("x-ray trace id")
}

/// Polls the trace until it has `spans` spans (UDP has no ack to wait for).
pub(crate) async fn wait_for_trace(server: &TestServer, trace: &[u8], spans: usize) -> TracesData {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(found) = fetch_trace(&client, &server.http_url(), trace).await
            && spans_of(&found).len() >= spans
        {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "trace {} did not reach {spans} spans",
            hex::encode(trace)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a Any> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|value| value.value.as_ref())
}

fn text(value: &str) -> Any {
    Any::StringValue(value.to_string())
}

fn service_of(trace: &TracesData, span_id_hex: &str) -> Option<String> {
    for resource_spans in &trace.resource_spans {
        let holds = resource_spans
            .scope_spans
            .iter()
            .flat_map(|scope| scope.spans.iter())
            .any(|span| hex::encode(&span.span_id) == span_id_hex);
        if holds {
            return resource_spans.resource.as_ref().and_then(|resource| {
                resource.attributes.iter().find_map(|kv| {
                    match (&kv.key[..], kv.value.as_ref()?.value.as_ref()?) {
                        ("service.name", Any::StringValue(name)) => Some(name.clone()),
                        _ => None,
                    }
                })
            });
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn xray_python_sdk_segment_over_udp_comes_back_mapped() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServerBuilder::new(dir.path()).spawn();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/xray_sdk_app.py");
    let output = Command::new(python())
        .arg(script)
        .args([
            server.xray_udp.to_string(),
            server.http_url(),
            server.xray_api_url(),
        ])
        .output()
        .expect("run the x-ray sdk app");
    assert!(
        output.status.success(),
        "x-ray sdk app failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("json report");
    let sent: Vec<SegmentDocument> = serde_json::from_value(report["documents"].clone()).unwrap();
    let span_count: usize = sent.iter().map(SegmentDocument::entity_count).sum();
    assert!(
        span_count >= 4,
        "segment + http + aws + exception subsegments"
    );
    let trace = xray_hex(report["trace_id"].as_str().unwrap());
    let found = wait_for_trace(&server, &trace, span_count).await;
    let spans = spans_of(&found);
    assert_eq!(spans.len(), span_count);

    // The segment: a server span of service "shop" with typed annotations.
    let segment_id = report["segment_id"].as_str().unwrap();
    let segment = spans
        .iter()
        .find(|span| hex::encode(&span.span_id) == segment_id)
        .unwrap();
    assert_eq!(segment.kind, SpanKind::Server as i32);
    assert_eq!(service_of(&found, segment_id).as_deref(), Some("shop"));
    assert_eq!(attribute(segment, "customer"), Some(&text("c-42")));
    assert_eq!(attribute(segment, "items"), Some(&Any::IntValue(3)));
    assert_eq!(attribute(segment, "total"), Some(&Any::DoubleValue(19.5)));
    assert_eq!(attribute(segment, "vip"), Some(&Any::BoolValue(true)));
    assert_eq!(attribute(segment, "enduser.id"), Some(&text("alice")));
    assert_eq!(
        attribute(segment, "http.request.method"),
        Some(&text("POST"))
    );
    let Some(Any::StringValue(cart)) = attribute(segment, "aws.xray.metadata.default") else {
        panic!("metadata missing: {segment:?}")
    };
    assert_eq!(
        serde_json::from_str::<Value>(cart).unwrap(),
        json!({"cart": {"skus": ["a-1", "b-2"], "coupon": null}})
    );

    // The HTTP call, the AWS call and the failing subsegment.
    let children: Vec<&Span> = spans
        .iter()
        .filter(|span| span.parent_span_id == segment.span_id)
        .collect();
    let http = children
        .iter()
        .find(|span| {
            attribute(span, "http.response.status_code") == Some(&Any::IntValue(200))
                && attribute(span, "aws.xray.namespace") == Some(&text("remote"))
        })
        .expect("http subsegment");
    assert_eq!(http.kind, SpanKind::Client as i32);
    assert!(
        matches!(attribute(http, "url.full"), Some(Any::StringValue(url)) if url.ends_with("/api/echo"))
    );
    let aws = children
        .iter()
        .find(|span| attribute(span, "aws.xray.namespace") == Some(&text("aws")))
        .expect("aws subsegment");
    assert_eq!(aws.kind, SpanKind::Client as i32);
    assert_eq!(
        attribute(aws, "aws.operation"),
        Some(&text("PutTelemetryRecords"))
    );
    assert_eq!(attribute(aws, "aws.region"), Some(&text("us-east-1")));
    let failed = children
        .iter()
        .find(|span| span.name == "validate-cart")
        .expect("exception subsegment");
    assert_eq!(failed.kind, SpanKind::Internal as i32);
    assert_eq!(failed.status.as_ref().map(|status| status.code), Some(2));
    let exception = &failed.events[0];
    assert_eq!(exception.name, "exception");
    assert!(
        exception
            .attributes
            .iter()
            .any(|kv| kv.key == "exception.type"
                && kv.value.as_ref().and_then(|v| v.value.as_ref()) == Some(&text("ValueError")))
    );
    assert!(
        exception
            .attributes
            .iter()
            .any(|kv| kv.key == "exception.message"
                && kv.value.as_ref().and_then(|v| v.value.as_ref())
                    == Some(&text("cart is empty")))
    );

    // Everything the SDK sent comes back when the spans are read as X-Ray
    // documents again, from the head and, after a restart, from blocks.
    let expected: Vec<SegmentDocument> = sent.iter().map(SegmentDocument::canonical).collect();
    assert_eq!(traces_to_documents(&found), expected);
    assert!(server.stop().success());
    let restarted = TestServerBuilder::new(dir.path()).spawn();
    let from_blocks = wait_for_trace(&restarted, &trace, span_count).await;
    assert_eq!(traces_to_documents(&from_blocks), expected);
}

fn put_trace_segments(server: &TestServer, documents: &[String]) -> Value {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/xray_boto3_put.py"
    );
    let mut child = Command::new(python())
        .arg(script)
        .arg(server.xray_api_url())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run boto3");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(documents).unwrap().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "boto3 failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("boto3 response json")
}

const T1: &str = "1-6b0c3eb1-290798c8d335df3f0188f706";
const T2: &str = "1-6b0c3eb1-aaaaaaaaaaaaaaaaaaaaaaaa";

fn document(fields: Value) -> String {
    fields.to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn boto3_put_trace_segments_keeps_good_documents_and_explains_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServerBuilder::new(dir.path()).spawn();
    let now = 1_795_964_593.25_f64;
    let first_call = vec![
        // The segment while it is still running...
        document(
            json!({"id": "1111111111111111", "name": "shop", "trace_id": T1, "start_time": now, "in_progress": true}),
        ),
        document(
            json!({"id": "2222222222222222", "name": "shop", "trace_id": "1-xyz", "start_time": now, "end_time": now + 1.0}),
        ),
        document(
            json!({"id": "3333333333333333", "name": "shop", "trace_id": T1, "start_time": now, "end_time": now + 1.0, "annotations": {"bad-key": 1}}),
        ),
        "{not json".to_string(),
        // ...a subsegment it streamed on its own...
        document(
            json!({"id": "4444444444444444", "name": "DynamoDB", "type": "subsegment", "namespace": "aws", "parent_id": "1111111111111111", "trace_id": T1, "start_time": now + 0.1, "end_time": now + 0.2, "aws": {"operation": "GetItem", "table_name": "carts"}}),
        ),
        // ...and one streamed before its segment (another trace) was seen.
        document(
            json!({"id": "5555555555555555", "name": "ledger", "type": "subsegment", "parent_id": "6666666666666666", "trace_id": T2, "start_time": now + 0.1, "end_time": now + 0.3}),
        ),
    ];
    let response = put_trace_segments(&server, &first_call);
    let unprocessed = response["UnprocessedTraceSegments"]
        .as_array()
        .expect("list");
    assert_eq!(unprocessed.len(), 3, "{response}");
    let by_id = |id: &str| {
        unprocessed
            .iter()
            .find(|entry| entry["Id"] == id)
            .unwrap_or_else(|| panic!("{id} not reported: {response}"))
    };
    assert_eq!(by_id("2222222222222222")["ErrorCode"], "InvalidDocument");
    assert!(
        by_id("2222222222222222")["Message"]
            .as_str()
            .unwrap()
            .contains("trace_id \"1-xyz\"")
    );
    assert!(
        by_id("3333333333333333")["Message"]
            .as_str()
            .unwrap()
            .contains("annotation key \"bad-key\"")
    );
    assert_eq!(by_id("")["ErrorCode"], "MalformedDocument");

    let second_call = vec![
        // The complete segment replaces the in-progress one.
        document(json!({"id": "1111111111111111", "name": "shop", "trace_id": T1, "start_time": now, "end_time": now + 1.0, "http": {"response": {"status": 200}}})),
        // An array of subsegments in one entry.
        serde_json::to_string(&json!([
            {"id": "7777777777777777", "name": "render", "type": "subsegment", "parent_id": "1111111111111111", "trace_id": T1, "start_time": now + 0.3, "end_time": now + 0.4},
            {"id": "8888888888888888", "name": "cache", "type": "subsegment", "parent_id": "1111111111111111", "trace_id": T1, "start_time": now + 0.5, "end_time": now + 0.6}
        ])).unwrap(),
        document(json!({"id": "6666666666666666", "name": "billing", "trace_id": T2, "start_time": now, "end_time": now + 0.5})),
    ];
    let response = put_trace_segments(&server, &second_call);
    assert_eq!(
        response["UnprocessedTraceSegments"],
        json!([]),
        "{response}"
    );

    let first = wait_for_trace(&server, &xray_hex(T1), 4).await;
    let spans = spans_of(&first);
    let ids: Vec<String> = spans
        .iter()
        .map(|span| hex::encode(&span.span_id))
        .collect();
    assert_eq!(
        ids,
        [
            "1111111111111111",
            "4444444444444444",
            "7777777777777777",
            "8888888888888888"
        ],
        "one span per id"
    );
    let segment = &spans[0];
    assert_eq!(
        segment.end_time_unix_nano, 1_795_964_594_250_000_000,
        "the complete document wins"
    );
    assert_eq!(attribute(segment, "aws.xray.inprogress"), None);
    for id in &ids {
        assert_eq!(service_of(&first, id).as_deref(), Some("shop"), "{id}");
    }
    let documents = traces_to_documents(&first);
    assert_eq!(
        documents.len(),
        1,
        "subsegments nest under their segment: {documents:?}"
    );
    assert_eq!(documents[0].subsegments.as_ref().map(Vec::len), Some(3));

    let second = wait_for_trace(&server, &xray_hex(T2), 2).await;
    assert_eq!(
        service_of(&second, "5555555555555555").as_deref(),
        Some("billing"),
        "a subsegment streamed before its segment joins the segment's service"
    );
}

async fn metrics(server: &TestServer) -> String {
    reqwest::get(format!("{}/metrics", server.http_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in metrics:\n{metrics}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_datagrams_are_counted_and_dropped_and_good_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServerBuilder::new(dir.path()).spawn();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let header = "{\"format\": \"json\", \"version\": 1}\n";
    let trace = "1-6b0c3eb1-bbbbbbbbbbbbbbbbbbbbbbbb";
    let good = |index: u64| {
        format!(
            "{header}{}",
            json!({"id": format!("{:016x}", 0x1000 + index), "name": "udp-app", "trace_id": trace, "start_time": 1_795_964_593.5, "end_time": 1_795_964_594.0})
        )
        .into_bytes()
    };
    let mut garbage = vec![0u8; 64 * 1024 - 100];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for byte in garbage.iter_mut() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *byte = (state as u8) | 0x80; // never '\n'
    }
    let mut truncated_utf8 =
        format!("{header}{{\"id\":\"1000000000000fff\",\"name\":\"caf").into_bytes();
    truncated_utf8.push(0xc3);
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("no_header", b"{\"id\":\"1000000000000001\"}".to_vec()),
        ("bad_header", b"{\"format\":\"json\",\"version\":2}\n{}".to_vec()),
        ("malformed_document", format!("{header}{{\"id\": nope}}").into_bytes()),
        ("no_header", garbage),
        ("malformed_document", truncated_utf8),
        ("invalid_document", format!("{header}{}", json!({"id": "1000000000000002", "trace_id": trace, "start_time": 1.5, "end_time": 2.5})).into_bytes()),
    ];
    let mut sent = 0u64;
    for index in 0..20u64 {
        socket.send_to(&good(index), server.xray_udp).unwrap();
        sent += 1;
        if let Some((_, datagram)) = bad.get(index as usize) {
            socket.send_to(datagram, server.xray_udp).unwrap();
            sent += 1;
        }
    }
    let found = wait_for_trace(&server, &xray_hex(trace), 20).await;
    assert_eq!(spans_of(&found).len(), 20, "every good datagram stored");
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = metrics(&server).await;
        if counter(&text, "tracelake_xray_udp_datagrams_received_total") == sent
            && counter(&text, "tracelake_xray_udp_documents_accepted_total") == 20
        {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "counters did not settle:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for (reason, expected) in [
        ("no_header", 2),
        ("bad_header", 1),
        ("malformed_document", 2),
        ("invalid_document", 1),
    ] {
        let name = format!("tracelake_xray_udp_datagrams_rejected_total{{reason=\"{reason}\"}}");
        assert_eq!(counter(&text, &name), expected, "{reason}");
    }
    assert_eq!(
        counter(&text, "tracelake_xray_udp_datagrams_dropped_total"),
        0
    );
    assert!(bad.iter().all(|(reason, _)| text.contains(reason)));
}

fn run_import(data_dir: &std::path::Path, files: &[std::path::PathBuf]) -> std::process::Output {
    tracelake_command()
        .arg("import")
        .arg("--data-dir")
        .arg(data_dir)
        .args(files)
        .output()
        .expect("run tracelake import")
}

#[tokio::test(flavor = "multi_thread")]
async fn import_loads_batch_get_traces_and_otlp_files() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let segment = json!({"id": "1111111111111111", "name": "shop", "trace_id": T1, "start_time": 1_795_964_593.5, "end_time": 1_795_964_594.0,
        "annotations": {"customer": "c-1"},
        "subsegments": [{"id": "2222222222222222", "name": "DynamoDB", "namespace": "aws", "start_time": 1_795_964_593.6, "end_time": 1_795_964_593.7, "aws": {"operation": "GetItem"}}]});
    let downstream = json!({"id": "3333333333333333", "name": "carts", "trace_id": T1, "parent_id": "2222222222222222", "start_time": 1_795_964_593.61, "end_time": 1_795_964_593.69});
    let broken = json!({"id": "4444444444444444", "name": "shop", "trace_id": T2, "start_time": "yesterday", "end_time": 1.0});
    // The botocore shape of BatchGetTraces output.
    let batch = json!({
        "Traces": [
            {"Id": T1, "Duration": 0.5, "LimitExceeded": false, "Segments": [
                {"Id": "1111111111111111", "Document": segment.to_string()},
                {"Id": "3333333333333333", "Document": downstream.to_string()}
            ]},
            {"Id": T2, "Duration": 1.0, "LimitExceeded": false, "Segments": [
                {"Id": "4444444444444444", "Document": broken.to_string()}
            ]}
        ],
        "UnprocessedTraceIds": []
    });
    let batch_file = dir.path().join("batch-get-traces.json");
    std::fs::write(&batch_file, serde_json::to_vec_pretty(&batch).unwrap()).unwrap();
    let otlp = |seed: u64| {
        request(
            "otel-app",
            vec![
                span(trace_id(seed), span_id(seed), "GET /"),
                span(trace_id(seed), span_id(seed + 100), "SELECT"),
            ],
        )
    };
    let json_file = dir.path().join("export.json");
    std::fs::write(&json_file, serde_json::to_vec(&otlp(1)).unwrap()).unwrap();
    let lines_file = dir.path().join("export.jsonl");
    std::fs::write(
        &lines_file,
        format!(
            "{}\n{}\n",
            serde_json::to_string(&otlp(2)).unwrap(),
            serde_json::to_string(&otlp(3)).unwrap()
        ),
    )
    .unwrap();
    let protobuf_file = dir.path().join("export.pb");
    std::fs::write(&protobuf_file, otlp(4).encode_to_vec()).unwrap();
    let garbage_file = dir.path().join("garbage.bin");
    std::fs::write(&garbage_file, [0xff, 0xff, 0xff, 0x01]).unwrap();

    let files = vec![batch_file, json_file, lines_file, protobuf_file];
    let output = run_import(&data_dir, &files);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("imported 11 spans from 4 files"),
        "{stdout}"
    );
    assert!(stdout.contains("rejected 1"), "{stdout}");
    assert!(
        stdout.contains("MalformedDocument") && stdout.contains("start_time"),
        "{stdout}"
    );

    let unreadable = run_import(&data_dir, std::slice::from_ref(&garbage_file));
    assert!(!unreadable.status.success());
    assert!(String::from_utf8_lossy(&unreadable.stderr).contains("garbage.bin"));

    let server = TestServerBuilder::new(&data_dir).spawn();
    let xray_trace = wait_for_trace(&server, &xray_hex(T1), 3).await;
    assert_eq!(
        service_of(&xray_trace, "3333333333333333").as_deref(),
        Some("carts")
    );
    for seed in 1..=4 {
        let found = wait_for_trace(&server, &trace_id(seed), 2).await;
        assert_eq!(spans_of(&found).len(), 2, "otlp trace {seed}");
    }
    // A running server holds the data dir: import refuses to share it.
    let refused = run_import(&data_dir, &files[1..2]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("in use"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

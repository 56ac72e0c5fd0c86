//! Bad input gets a clear error, never a crash, and never costs the good
//! spans next to it.

use std::io::Write;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;

use crate::otlp::{fetch_trace, request, span, span_id, spans_of, trace_id};
use crate::server::{TestServer, TestServerBuilder};

const LIMIT: usize = 64 * 1024;

fn small_limit_server(dir: &std::path::Path) -> TestServer {
    TestServerBuilder::new(dir)
        .arg("--otlp-max-message-bytes")
        .arg(&LIMIT.to_string())
        .spawn()
}

/// `google.rpc.Status` as the OTLP/HTTP error body.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn otlp_http_bad_bodies_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = small_limit_server(dir.path());
    let url = format!("{}/v1/traces", server.otlp_http_url());
    // A 413 is sent before the body is read, so the server closes that
    // connection; a fresh connection per request keeps the client from
    // reusing a closed one.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let huge_request = request(
        "big",
        (0..2_000)
            .map(|i| span(trace_id(i), span_id(i), &"x".repeat(64)))
            .collect(),
    );
    let zeros = vec![0u8; 4 * 1024 * 1024];
    // (content type, content encoding, body, expected status, message fragment)
    type Case<'a> = (&'a str, Option<&'a str>, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "application/x-protobuf",
            None,
            vec![0xff, 0xff, 0xff, 0xff],
            400,
            "protobuf",
        ),
        (
            "application/json",
            None,
            b"{\"resourceSpans\": [".to_vec(),
            400,
            "OTLP JSON",
        ),
        ("text/plain", None, b"hello".to_vec(), 415, "content type"),
        (
            "application/x-protobuf",
            None,
            huge_request.encode_to_vec(),
            413,
            "",
        ),
        (
            "application/x-protobuf",
            Some("gzip"),
            gzip(&zeros),
            413,
            "decompressed body exceeds",
        ),
        (
            "application/x-protobuf",
            Some("gzip"),
            b"not gzip at all".to_vec(),
            400,
            "gzip",
        ),
        (
            "application/x-protobuf",
            Some("br"),
            b"xx".to_vec(),
            415,
            "content encoding",
        ),
    ];
    for (content_type, encoding, body, status, fragment) in cases {
        let mut call = client
            .post(&url)
            .header("content-type", content_type)
            .body(body);
        if let Some(encoding) = encoding {
            call = call.header("content-encoding", encoding);
        }
        let response = call.send().await.unwrap();
        assert_eq!(
            response.status().as_u16(),
            status,
            "{content_type} {encoding:?}"
        );
        let body = response.bytes().await.unwrap();
        let message = match RpcStatus::decode(body.clone()) {
            Ok(rpc_status) if !rpc_status.message.is_empty() => rpc_status.message,
            _ => String::from_utf8_lossy(&body).to_string(),
        };
        assert!(
            message.contains(fragment),
            "{content_type} {encoding:?}: message {message:?} lacks {fragment:?}"
        );
    }
    // The server is still fine.
    let good = request("after", vec![span(trace_id(9_999), span_id(9_999), "ok")]);
    let response = client
        .post(&url)
        .header("content-type", "application/x-protobuf")
        .body(good.encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// One good span among spans with every kind of bad id.
fn mixed_request(
    good_seed: u64,
) -> opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
    let good = span(trace_id(good_seed), span_id(good_seed), "good");
    let mut short_trace = span(trace_id(1), span_id(2), "short-trace");
    short_trace.trace_id.truncate(15);
    let mut zero_trace = span(trace_id(1), span_id(3), "zero-trace");
    zero_trace.trace_id = vec![0; 16];
    let mut short_span = span(trace_id(1), span_id(4), "short-span");
    short_span.span_id = vec![1; 7];
    let mut zero_span = span(trace_id(1), span_id(5), "zero-span");
    zero_span.span_id = vec![0; 8];
    let mut bad_parent = span(trace_id(1), span_id(6), "bad-parent");
    bad_parent.parent_span_id = vec![1; 3];
    request(
        "mixed",
        vec![
            short_trace,
            good,
            zero_trace,
            short_span,
            zero_span,
            bad_parent,
        ],
    )
}

fn assert_partial_success(response: &ExportTraceServiceResponse, via: &str) {
    let partial = response
        .partial_success
        .as_ref()
        .unwrap_or_else(|| panic!("{via}: no partial_success"));
    assert_eq!(partial.rejected_spans, 5, "{via}: {partial:?}");
    for fragment in [
        "trace id must be 16 bytes",
        "trace id must not be all zero",
        "span id must be 8 bytes",
        "span id must not be all zero",
        "parent span id",
    ] {
        assert!(
            partial.error_message.contains(fragment),
            "{via}: {:?} lacks {fragment:?}",
            partial.error_message
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_ids_are_rejected_and_good_spans_kept_on_every_transport() {
    let dir = tempfile::tempdir().unwrap();
    let server = small_limit_server(dir.path());
    let http = reqwest::Client::new();
    let url = format!("{}/v1/traces", server.otlp_http_url());

    // gRPC
    let mut grpc = TraceServiceClient::connect(server.otlp_grpc_url())
        .await
        .unwrap();
    let response = grpc.export(mixed_request(100)).await.unwrap().into_inner();
    assert_partial_success(&response, "grpc");

    // HTTP protobuf
    let response = http
        .post(&url)
        .header("content-type", "application/x-protobuf")
        .body(mixed_request(200).encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let decoded = ExportTraceServiceResponse::decode(response.bytes().await.unwrap()).unwrap();
    assert_partial_success(&decoded, "http protobuf");

    // HTTP JSON (gzip), hex ids as the OTLP JSON encoding spells them
    let json = serde_json::to_vec(&mixed_request(300)).unwrap();
    let response = http
        .post(&url)
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gzip(&json))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let decoded: ExportTraceServiceResponse =
        serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_partial_success(&decoded, "http json");

    for seed in [100, 200, 300] {
        let trace = fetch_trace(&http, &server.http_url(), &trace_id(seed))
            .await
            .expect("good span kept");
        let spans = spans_of(&trace);
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].name, "good");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_oversize_message_is_refused_and_server_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let server = small_limit_server(dir.path());
    let mut grpc = TraceServiceClient::connect(server.otlp_grpc_url())
        .await
        .unwrap();
    let huge = request(
        "big",
        (0..2_000)
            .map(|i| span(trace_id(i), span_id(i), &"x".repeat(64)))
            .collect(),
    );
    let status = grpc.export(huge).await.expect_err("oversize refused");
    assert!(
        matches!(
            status.code(),
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
        ),
        "{status:?}"
    );
    let ok = grpc
        .export(request("small", vec![span(trace_id(5), span_id(5), "ok")]))
        .await
        .unwrap();
    assert!(ok.into_inner().partial_success.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn query_api_answers_bad_and_unknown_ids_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let server = small_limit_server(dir.path());
    let client = reqwest::Client::new();
    let base = server.http_url();
    let cases = [
        ("/api/traces/0af7651916cd43dd8448eb211c80319c", 404),
        ("/api/traces/not-hex", 400),
        ("/api/traces/0af7651916cd43dd8448eb211c80319c0af7", 400),
        ("/api/traces/00000000000000000000000000000000", 400),
        (
            "/api/traces/0af7651916cd43dd8448eb211c80319c?start=10&end=5",
            400,
        ),
        (
            "/api/traces/0af7651916cd43dd8448eb211c80319c?start=abc&end=5",
            400,
        ),
        ("/ready", 200),
        ("/api/echo", 200),
    ];
    for (path, status) in cases {
        let response = client.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{path}");
        assert!(
            !response.text().await.unwrap().is_empty(),
            "{path}: empty body"
        );
    }
}

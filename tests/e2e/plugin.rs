//! The gateway plugin continues a trace the real aws-xray-sdk started: a
//! Python app calls a service traced by the plugin, both send their
//! segments to tracelake over UDP, and tracelake returns one trace with
//! the plugin's segment under the SDK's call. Configured with the OTLP
//! sink instead, the plugin's segments reach tracelake as OTLP spans.

use std::process::Command;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use serde_json::Value;
use tracelake_gateway_plugin::{SegmentSink, Tracer, UdpEmitter, XRayLayer};
use tracelake_sampler::client::{Sampler, parse_local_rules};

use crate::otlp::spans_of;
use crate::python_sdk::python;
use crate::server::TestServerBuilder;
use crate::xray::{wait_for_trace, xray_hex};

#[tokio::test(flavor = "multi_thread")]
async fn plugin_continues_a_trace_started_by_the_xray_sdk() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServerBuilder::new(dir.path()).spawn();
    let emitter = UdpEmitter::start(server.xray_udp).await.unwrap();
    // Local rules that would sample nothing: the SDK's Sampled=1 decides.
    let rules = parse_local_rules(
        r#"{"version": 2, "rules": [], "default": {"fixed_target": 0, "rate": 0.0}}"#,
    )
    .unwrap();
    let tracer = Tracer::new(
        "inventory",
        Some("AWS::EC2::Instance"),
        Sampler::new(&rules),
        Arc::new(emitter),
    );
    let app = Router::new()
        .route("/stock", get(|| async { "42" }))
        .layer(XRayLayer::new(tracer));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/stock", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/xray_sdk_calls_plugin.py"
    );
    let daemon = server.xray_udp.to_string();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python())
            .arg(script)
            .args([daemon, url])
            .output()
            .expect("run the x-ray sdk app")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "x-ray sdk app failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("json report");
    let trace_id = report["trace_id"].as_str().unwrap();
    assert_eq!(
        report["answered_header"].as_str().unwrap(),
        format!("Root={trace_id};Sampled=1")
    );

    // The SDK's segment, its subsegment with the HTTP call inside it (the
    // httplib patch records the send and the response as subsegments), and
    // the plugin's segment: one trace.
    // UDP keeps no order between the two senders: wait for both.
    let mut wanted = 4;
    let spans = loop {
        let spans = spans_of(&wait_for_trace(&server, &xray_hex(trace_id), wanted).await);
        if spans.iter().any(|span| span.name == "inventory") {
            break spans;
        }
        wanted = spans.len() + 1;
    };
    let mut names: Vec<&str> = spans.iter().map(|span| span.name.as_str()).collect();
    names.sort();
    names.dedup();
    assert_eq!(
        names,
        ["127.0.0.1", "check-stock", "inventory", "storefront"],
        "{spans:#?}"
    );
    let call_id = hex::decode(report["call_id"].as_str().unwrap()).unwrap();
    let inventory = spans
        .iter()
        .find(|span| span.name == "inventory")
        .expect("the plugin's segment");
    assert_eq!(inventory.parent_span_id, call_id);
    let call = spans
        .iter()
        .find(|span| span.span_id == call_id)
        .expect("the SDK's subsegment");
    let sdk_segment = hex::decode(report["segment_id"].as_str().unwrap()).unwrap();
    assert_eq!(call.parent_span_id, sdk_segment);
}

#[tokio::test(flavor = "multi_thread")]
async fn plugin_exports_over_otlp_by_config() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServerBuilder::new(dir.path()).spawn();
    let sink = Arc::new(tracelake_gateway_plugin::OtlpSink::start(
        &server.otlp_http_url(),
        "inventory",
    ));
    let rules = parse_local_rules(
        r#"{"version": 2, "rules": [], "default": {"fixed_target": 0, "rate": 1.0}}"#,
    )
    .unwrap();
    let tracer = Tracer::new(
        "inventory",
        Some("AWS::EC2::Instance"),
        Sampler::new(&rules),
        sink.clone(),
    );
    let app = Router::new()
        .route("/stock", get(|| async { "42" }))
        .layer(XRayLayer::new(tracer));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/stock", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let response = reqwest::Client::new()
        .get(&url)
        .header(
            "X-Amzn-Trace-Id",
            "Root=1-6b0c8331-53a2348fe5480dc84fb6af60;Parent=53995c3f42cd8ad8;Sampled=1",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let trace = wait_for_trace(&server, &xray_hex("1-6b0c8331-53a2348fe5480dc84fb6af60"), 1).await;
    let spans = spans_of(&trace);
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].name, "inventory");
    assert_eq!(spans[0].kind, 2, "server");
    assert_eq!(hex::encode(&spans[0].parent_span_id), "53995c3f42cd8ad8");
    assert_eq!(sink.stats().sent, 1);
}

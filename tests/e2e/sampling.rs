//! Centralized sampling end to end: boto3 manages rules on tracelake's X-Ray
//! API, and the real aws-xray-sdk for Python takes its decisions from them.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::otlp::fetch_trace;
use crate::python_sdk::python;
use crate::server::{TestServer, TestServerBuilder};
use crate::xray::xray_hex;

fn run_script(script: &str, args: &[String]) -> Value {
    let path = format!("{}/tests/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let output = Command::new(python())
        .arg(path)
        .args(args)
        .output()
        .expect("run python");
    assert!(
        output.status.success(),
        "{script} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("json report")
}

async fn rule_names(server: &TestServer) -> Vec<String> {
    let response: Value = reqwest::Client::new()
        .post(format!("{}/GetSamplingRules", server.xray_api_url()))
        .body("{}")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    response["SamplingRuleRecords"]
        .as_array()
        .unwrap()
        .iter()
        .map(|record| {
            record["SamplingRule"]["RuleName"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn boto3_manages_sampling_rules_and_gets_aws_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServerBuilder::new(dir.path()).spawn();
    let report = tokio::task::spawn_blocking({
        let url = server.xray_api_url();
        move || run_script("xray_sampling_api.py", &[url])
    })
    .await
    .unwrap();
    let rule = &report["create"]["SamplingRuleRecord"]["SamplingRule"];
    assert_eq!(rule["RuleName"], "orders");
    assert_eq!(rule["Attributes"]["tier"], "gold");
    assert!(
        rule["RuleARN"]
            .as_str()
            .unwrap()
            .ends_with("sampling-rule/orders")
    );
    let raised = |step: &str| {
        report[step]["raised"]
            .as_str()
            .unwrap_or_else(|| panic!("{step} did not raise: {}", report[step]))
            .to_string()
    };
    assert_eq!(raised("duplicate"), "InvalidRequestException");
    assert_eq!(raised("bad_priority"), "InvalidRequestException");
    assert!(
        report["bad_priority"]["message"]
            .as_str()
            .unwrap()
            .contains("Priority 0")
    );
    assert_eq!(raised("update_unknown"), "InvalidRequestException");
    assert_eq!(raised("update_bad_rate"), "InvalidRequestException");
    assert_eq!(raised("delete_default"), "InvalidRequestException");
    assert!(
        report["delete_default"]["message"]
            .as_str()
            .unwrap()
            .contains("Default")
    );
    assert_eq!(raised("delete_unknown"), "InvalidRequestException");
    assert_eq!(
        report["paginated"],
        serde_json::json!(["admin", "orders", "Default"])
    );
    assert_eq!(
        report["update"]["SamplingRuleRecord"]["SamplingRule"]["FixedRate"],
        0.25
    );
    assert_eq!(
        report["update_default"]["SamplingRuleRecord"]["SamplingRule"]["ReservoirSize"],
        2
    );
    let targets = &report["targets"];
    assert_eq!(targets["SamplingTargetDocuments"][0]["RuleName"], "orders");
    assert_eq!(targets["SamplingTargetDocuments"][0]["ReservoirQuota"], 5);
    assert_eq!(targets["SamplingTargetDocuments"][0]["FixedRate"], 0.25);
    assert_eq!(targets["SamplingTargetDocuments"][0]["Interval"], 10);
    assert_eq!(targets["UnprocessedStatistics"][0]["RuleName"], "ghost");
    assert_eq!(
        report["summaries"]["SamplingStatisticSummaries"][0]["RequestCount"],
        100
    );
    assert_eq!(
        report["after_delete"],
        serde_json::json!(["orders", "Default"])
    );

    // Rules live with the data dir: a restart keeps them.
    assert!(server.stop().success());
    let restarted = TestServerBuilder::new(dir.path()).spawn();
    assert_eq!(rule_names(&restarted).await, ["orders", "Default"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn xray_sdk_follows_rules_created_and_updated_through_boto3() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServerBuilder::new(dir.path()).spawn();
    let report = tokio::task::spawn_blocking({
        let args = vec![server.xray_api.to_string(), server.xray_udp.to_string()];
        move || run_script("xray_sampling_app.py", &args)
    })
    .await
    .unwrap();
    let phase1 = &report["phase1"];
    let ids = |name: &str, which: &str| -> Vec<String> {
        phase1[name][which]
            .as_array()
            .unwrap()
            .iter()
            .map(|id| id.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        ids("health", "sampled").len(),
        0,
        "reservoir 0, rate 0: /health is never sampled"
    );
    assert_eq!(
        ids("orders", "sampled").len(),
        30,
        "rate 1: every /orders/* request is sampled"
    );

    // What the SDK sampled arrives over UDP; what it did not never does.
    let client = reqwest::Client::new();
    for trace_id in ids("orders", "sampled") {
        let bytes = xray_hex(&trace_id);
        let mut found = None;
        for _ in 0..100 {
            found = fetch_trace(&client, &server.http_url(), &bytes).await;
            if found.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(found.is_some(), "sampled trace {trace_id} never arrived");
    }
    for trace_id in ids("health", "unsampled") {
        assert!(
            fetch_trace(&client, &server.http_url(), &xray_hex(&trace_id))
                .await
                .is_none(),
            "{trace_id} was not sampled yet arrived"
        );
    }

    // After update_sampling_rule, the SDK's next poll turns /health on.
    let phase2 = &report["phase2"];
    let sampled = phase2["sampled"]
        .as_str()
        .unwrap_or_else(|| panic!("/health never sampled after the update: {phase2}"));
    assert!(phase2["seconds"].as_f64().unwrap() < 30.0, "{phase2}");
    assert!(
        phase2["unsampled_before"].as_u64().unwrap() > 0,
        "the change took a poll, not an instant: {phase2}"
    );
    let bytes = xray_hex(sampled);
    let mut arrived = false;
    for _ in 0..100 {
        if fetch_trace(&client, &server.http_url(), &bytes)
            .await
            .is_some()
        {
            arrived = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        arrived,
        "the /health trace sampled after the update did not arrive"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rules_file_is_loaded_at_start_up_and_a_bad_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("sampling.json");
    // The X-Ray SDK's local rules format, version 2.
    std::fs::write(
        &rules,
        r#"{"version": 2, "rules": [{"description": "health", "host": "*", "http_method": "GET", "url_path": "/health", "fixed_target": 0, "rate": 0.0}], "default": {"fixed_target": 2, "rate": 0.1}}"#,
    )
    .unwrap();
    let server = TestServerBuilder::new(&dir.path().join("data"))
        .arg("--sampling-rules-file")
        .arg(rules.to_str().unwrap())
        .spawn();
    assert_eq!(rule_names(&server).await, ["health", "Default"]);
    drop(server);

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[rules]]\nRuleName = \"x\"\nPriority = 0\n").unwrap();
    let output = crate::server::tracelake_command()
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("data2"))
        .args([
            "--listen-xray-udp",
            "127.0.0.1:0",
            "--listen-xray-api",
            "127.0.0.1:0",
            "--listen-otlp-grpc",
            "127.0.0.1:0",
            "--listen-otlp-http",
            "127.0.0.1:0",
            "--listen-http",
            "127.0.0.1:0",
        ])
        .arg("--sampling-rules-file")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("bad.toml"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tail_sampling_keeps_unsampled_error_traces_only() {
    use crate::otlp::{request, span, span_id, trace_id};
    use prost::Message;

    let dir = tempfile::tempdir().unwrap();
    let server = TestServerBuilder::new(&dir.path().join("data"))
        .config("[tail_sampling]\nenabled = true\ndecision_wait = \"500ms\"\nlatency_threshold = \"0s\"\n")
        .spawn();
    // Explicitly unsampled (W3C flags present, sampled bit clear): one
    // trace with an error span, one without; and a head-sampled trace.
    let mut failed = span(trace_id(1), span_id(1), "GET /checkout");
    failed.flags = 0x100;
    failed.status = Some(opentelemetry_proto::tonic::trace::v1::Status {
        code: 2,
        message: "boom".into(),
    });
    let mut plain = span(trace_id(2), span_id(2), "GET /");
    plain.flags = 0x100;
    let mut sampled = span(trace_id(3), span_id(3), "GET /sampled");
    sampled.flags = 0x101;
    let body = request("shop", vec![failed, plain, sampled]).encode_to_vec();
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{}/v1/traces", server.otlp_http_url()))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    assert!(
        fetch_trace(&client, &server.http_url(), &trace_id(3))
            .await
            .is_some(),
        "head-sampled: stored at once"
    );
    assert!(
        fetch_trace(&client, &server.http_url(), &trace_id(1))
            .await
            .is_none(),
        "held until decided"
    );
    let mut kept = false;
    for _ in 0..100 {
        if fetch_trace(&client, &server.http_url(), &trace_id(1))
            .await
            .is_some()
        {
            kept = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        kept,
        "the unsampled error trace was kept by the tail policy"
    );
    assert!(
        fetch_trace(&client, &server.http_url(), &trace_id(2))
            .await
            .is_none(),
        "the plain unsampled trace was dropped"
    );
    let metrics = client
        .get(format!("{}/metrics", server.http_url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("tracelake_tail_sampling_traces_kept_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tracelake_tail_sampling_traces_dropped_total 1"),
        "{metrics}"
    );
}

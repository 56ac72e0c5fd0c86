//! `tracelake loadgen` against the real server over each protocol: what it
//! reports matches what the server stored, and a target rate is held.

use serde_json::Value;

use crate::server::{TestServerBuilder, tracelake_command};

pub(crate) fn loadgen(args: &[&str]) -> (bool, Value, String) {
    let output: std::process::Output = tracelake_command()
        .arg("loadgen")
        .args(args)
        .arg("--json")
        .output()
        .expect("run loadgen");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let summary = stdout
        .lines()
        .last()
        .and_then(|line| serde_json::from_str(line).ok())
        .unwrap_or(Value::Null);
    (
        output.status.success(),
        summary,
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

pub(crate) async fn stored(base: &str) -> u64 {
    sql_count(base, "SELECT count(*) AS n FROM spans").await
}

#[tokio::test(flavor = "multi_thread")]
async fn loadgen_sends_what_the_server_stores() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServerBuilder::new(dir.path()).spawn();
    let grpc = server.otlp_grpc.to_string();
    let http = server.otlp_http.to_string();
    let udp = server.xray_udp.to_string();

    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            loadgen(&args)
        })
    };
    let (ok, grpc_summary, stderr) = run(vec![
        "--protocol".into(),
        "otlp-grpc".into(),
        "--endpoint".into(),
        grpc,
        "--spans".into(),
        "5000".into(),
        "--connections".into(),
        "2".into(),
    ])
    .await
    .unwrap();
    assert!(ok, "{stderr}");
    let sent = grpc_summary["sent_spans"].as_u64().unwrap();
    assert!(sent >= 5_000, "{grpc_summary}");
    assert_eq!(grpc_summary["acked_spans"].as_u64(), Some(sent));
    assert_eq!(grpc_summary["rejected_spans"], 0);
    assert!(grpc_summary["ack_latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    assert!(
        stderr.contains("spans sent"),
        "a progress/summary line: {stderr}"
    );
    assert_eq!(stored(&server.http_url()).await, sent);

    // A target rate is held (within 25 %) over OTLP HTTP.
    let (ok, http_summary, stderr) = run(vec![
        "--protocol".into(),
        "otlp-http".into(),
        "--endpoint".into(),
        http,
        "--duration".into(),
        "3s".into(),
        "--rate".into(),
        "2000".into(),
        "--batch".into(),
        "200".into(),
    ])
    .await
    .unwrap();
    assert!(ok, "{stderr}");
    let rate = http_summary["rate_spans_per_s"].as_f64().unwrap();
    assert!((1_500.0..=2_500.0).contains(&rate), "{http_summary}");
    let http_sent = http_summary["sent_spans"].as_u64().unwrap();
    assert_eq!(http_summary["acked_spans"].as_u64(), Some(http_sent));

    // X-Ray UDP at a gentle rate: nothing lost.
    let (ok, udp_summary, stderr) = run(vec![
        "--protocol".into(),
        "xray-udp".into(),
        "--endpoint".into(),
        udp,
        "--spans".into(),
        "3000".into(),
        "--rate".into(),
        "5000".into(),
        "--connections".into(),
        "1".into(),
    ])
    .await
    .unwrap();
    assert!(ok, "{stderr}");
    assert!(
        udp_summary["acked_spans"].is_null(),
        "UDP has no acknowledgement"
    );
    let udp_sent = udp_summary["sent_spans"].as_u64().unwrap();
    let expected = sent + http_sent + udp_sent;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let count = stored(&server.http_url()).await;
        if count == expected {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{count} of {expected} stored"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    // Bad arguments: a clear error, no hang.
    let bad = tracelake_command()
        .args([
            "loadgen",
            "--protocol",
            "otlp-http",
            "--endpoint",
            "127.0.0.1:1",
            "--spans",
            "10",
            "--rate",
            "0",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--rate"));
    let refused = tracelake_command()
        .args([
            "loadgen",
            "--protocol",
            "otlp-grpc",
            "--endpoint",
            "127.0.0.1:1",
            "--spans",
            "10",
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("connecting to 127.0.0.1:1"));
}

/// A server whose head holds about two requests: past that it sheds load
/// until the flusher (every 250 ms) has written the head.
fn shedding_server(dir: &std::path::Path) -> crate::server::TestServer {
    TestServerBuilder::new(dir)
        .arg("--flush-max-bytes")
        .arg("1000000")
        .arg("--flush-max-head-bytes")
        .arg("2000000")
        .spawn()
}

fn overload_args(protocol: &str, endpoint: String, retry: bool) -> Vec<String> {
    let mut args: Vec<String> = [
        "--protocol",
        protocol,
        "--endpoint",
        &endpoint,
        "--spans",
        "20000",
        "--batch",
        "1000",
        "--connections",
        "4",
    ]
    .iter()
    .map(|arg| arg.to_string())
    .collect();
    if retry {
        args.push("--retry".into());
    }
    args
}

#[tokio::test(flavor = "multi_thread")]
async fn an_overloaded_server_refuses_with_retryable_codes_and_keeps_what_it_acked() {
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            loadgen(&args)
        })
    };
    for protocol in ["otlp-grpc", "otlp-http"] {
        // Without retries: refused requests are counted, and exactly the
        // acked spans are stored.
        let dir = tempfile::tempdir().unwrap();
        let server = shedding_server(dir.path());
        let endpoint = match protocol {
            "otlp-grpc" => server.otlp_grpc.to_string(),
            _ => server.otlp_http.to_string(),
        };
        let (ok, summary, stderr) = run(overload_args(protocol, endpoint.clone(), false))
            .await
            .unwrap();
        assert!(ok, "{stderr}");
        let sent = summary["sent_spans"].as_u64().unwrap();
        let acked = summary["acked_spans"].as_u64().unwrap();
        let rejected = summary["rejected_spans"].as_u64().unwrap();
        assert!(rejected > 0, "{protocol}: nothing was shed: {summary}");
        assert_eq!(acked + rejected, sent, "{summary}");
        assert_eq!(stored(&server.http_url()).await, acked, "{protocol}");
        assert!(
            server
                .metric("tracelake_storage_refused_appends_total")
                .await
                >= 1.0,
            "refusals not counted"
        );

        // With retries, as an OTLP exporter does: everything is stored.
        let (ok, summary, stderr) = run(overload_args(protocol, endpoint, true)).await.unwrap();
        assert!(ok, "{stderr}");
        let sent_again = summary["sent_spans"].as_u64().unwrap();
        assert_eq!(
            summary["acked_spans"].as_u64(),
            Some(sent_again),
            "{summary}"
        );
        assert!(
            summary["retried_requests"].as_u64().unwrap() > 0,
            "{summary}"
        );
        assert_eq!(stored(&server.http_url()).await, acked + sent_again);
    }
}

/// A SQL answer's first row's `n`.
async fn sql_count(base: &str, query: &str) -> u64 {
    let body = crate::server::sql(base, query).await;
    body["rows"][0]["n"]
        .as_u64()
        .unwrap_or_else(|| panic!("{body}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_pool_sends_fresh_trace_ids_each_round() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServerBuilder::new(dir.path()).spawn();
    let (mut distinct_per_round, mut per_request, mut total) = (0, 0, 0);
    for (protocol, endpoint, spans) in [
        ("otlp-grpc", server.otlp_grpc.to_string(), 1_000u64),
        ("otlp-http", server.otlp_http.to_string(), 3_000),
    ] {
        let args = [
            "--protocol",
            protocol,
            "--endpoint",
            &endpoint,
            "--spans",
            &spans.to_string(),
            "--batch",
            "1000",
            "--connections",
            "1",
            "--pool",
            "1",
        ]
        .map(str::to_string);
        let (ok, summary, stderr) = tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            loadgen(&args)
        })
        .await
        .unwrap();
        assert!(ok, "{stderr}");
        // Requests hold whole traces: a few more spans than asked.
        let acked = summary["acked_spans"].as_u64().unwrap();
        assert_eq!(
            summary["requests"].as_u64(),
            Some(spans / 1_000),
            "{summary}"
        );
        per_request = acked / (spans / 1_000);
        total += acked;
        if protocol == "otlp-grpc" {
            distinct_per_round = sql_count(
                &server.http_url(),
                "SELECT count(DISTINCT trace_id) AS n FROM spans",
            )
            .await;
            assert!(distinct_per_round > 10);
        }
    }
    // One template sent four times (round 0 over gRPC, 0-2 over HTTP):
    // rounds 1 and 2 are new traces, round 0 is the same one twice.
    let base = server.http_url();
    assert_eq!(total, 4 * per_request);
    assert_eq!(stored(&base).await, total);
    assert_eq!(
        sql_count(&base, "SELECT count(DISTINCT trace_id) AS n FROM spans").await,
        3 * distinct_per_round
    );
    // Re-keying keeps each trace whole: every parent is in its trace.
    assert_eq!(
        sql_count(
            &base,
            "SELECT count(*) AS n FROM spans c LEFT JOIN spans p \
             ON c.trace_id = p.trace_id AND c.parent_span_id = p.span_id \
             WHERE c.parent_span_id IS NOT NULL AND p.span_id IS NULL"
        )
        .await,
        0
    );
}

//! A real Prometheus (the Debian package `scripts/test.sh` installs)
//! scrapes `/metrics`; PromQL over Tempo's metric names returns the
//! workload's edges, and every listener's requests are timed by route.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use serde_json::Value;

use crate::otlp::{request, span};
use crate::server::TestServerBuilder;
use crate::service_map::send_workload_ten_minutes_ago;

fn prometheus_binary() -> std::path::PathBuf {
    let path = std::env::var_os("TRACELAKE_TEST_PROMETHEUS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/usr/bin/prometheus".into());
    assert!(
        path.exists(),
        "{} not found: run scripts/test.sh (it installs Debian's prometheus) or set TRACELAKE_TEST_PROMETHEUS",
        path.display()
    );
    path
}

/// A port free a moment ago (Prometheus cannot report an ephemeral one).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Prometheus {
    child: Child,
    url: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_prometheus(dir: &std::path::Path, target: std::net::SocketAddr) -> Prometheus {
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: tracelake\n    scrape_interval: 1s\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let child = Command::new(prometheus_binary())
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(if std::env::var_os("TEST_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()
        .expect("start prometheus");
    Prometheus {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_scrapes_service_graph_metrics_with_tempo_names() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServerBuilder::new(&dir.path().join("data"))
        .config("[service_graph]\nwait = \"1s\"\n")
        .spawn();
    send_workload_ten_minutes_ago(&server).await;
    let prometheus = start_prometheus(dir.path(), server.http);

    let query = "sum by (client, server) (traces_service_graph_request_total)";
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut edges: Vec<String> = Vec::new();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Ok(response) = client
            .get(format!("{}/api/v1/query", prometheus.url))
            .query(&[("query", query)])
            .send()
            .await
        else {
            continue; // Prometheus still starting
        };
        let Ok(body) = response.json::<Value>().await else {
            continue;
        };
        edges = body["data"]["result"]
            .as_array()
            .map(|series| {
                series
                    .iter()
                    .map(|one| {
                        format!(
                            "{} -> {} {}",
                            one["metric"]["client"].as_str().unwrap_or("?"),
                            one["metric"]["server"].as_str().unwrap_or("?"),
                            one["value"][1].as_str().unwrap_or("?")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        edges.sort();
        if edges.len() == 8 {
            break;
        }
    }
    assert_eq!(
        edges,
        vec![
            "client -> billing 1",
            "client -> frontend 3",
            "frontend -> billing 1",
            "frontend -> legacy.example.com 3",
            "frontend -> notifier 1",
            "frontend -> orders 3",
            "orders -> DynamoDB 3",
            "orders -> payments 2",
        ]
    );

    let metrics = reqwest::get(format!("{}/metrics", server.http_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "traces_service_graph_request_failed_total{client=\"orders\",server=\"payments\",connection_type=\"\"} 1",
        "traces_service_graph_request_server_seconds_bucket{client=\"frontend\",server=\"orders\",connection_type=\"\",le=\"0.2\"} 3",
        "traces_service_graph_request_server_seconds_bucket{client=\"frontend\",server=\"orders\",connection_type=\"\",le=\"0.1\"} 1",
        "traces_service_graph_request_client_seconds_count{client=\"orders\",server=\"DynamoDB\",connection_type=\"virtual_node\"} 3",
        "traces_spanmetrics_calls_total{service=\"frontend\",span_name=\"GET /checkout\",span_kind=\"SPAN_KIND_SERVER\",status_code=\"STATUS_CODE_ERROR\"} 1",
        "traces_spanmetrics_latency_bucket{service=\"frontend\",span_name=\"GET /checkout\",span_kind=\"SPAN_KIND_SERVER\",status_code=\"STATUS_CODE_ERROR\",le=\"0.128\"} 0",
        "traces_spanmetrics_latency_bucket{service=\"frontend\",span_name=\"GET /checkout\",span_kind=\"SPAN_KIND_SERVER\",status_code=\"STATUS_CODE_ERROR\",le=\"0.256\"} 1",
        "tracelake_receiver_accepted_total{receiver=\"otlp_http\",signal=\"traces\"} 14",
        "tracelake_receiver_accepted_total{receiver=\"xray_api\",signal=\"traces\"} 4",
        "tracelake_receiver_rejected_total{receiver=\"otlp_http\",signal=\"traces\"} 0",
        "tracelake_wal_append_seconds_count 8",
        "# TYPE tracelake_flush_seconds histogram",
    ] {
        assert!(metrics.contains(line), "missing {line}\n{metrics}");
    }
    // The example dashboard's PromQL is valid against this Prometheus and
    // finds the series tracelake exposes.
    let checked = check_dashboard(
        &client,
        &prometheus.url,
        include_str!("../../examples/grafana/dashboards/red.json"),
    )
    .await;
    assert!(checked >= 6, "the dashboard's PromQL panels: {checked}");

    let other_tenant = reqwest::get(format!("{}/metrics?tenant=nobody", server.http_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!other_tenant.contains("traces_spanmetrics_calls_total{"));
    let bad = reqwest::get(format!("{}/metrics?tenant=../x", server.http_url()))
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

/// Runs every Prometheus query of a dashboard against `prometheus` until
/// each finds a series (a rate needs two scrapes); returns how many ran.
async fn check_dashboard(client: &reqwest::Client, prometheus: &str, json: &str) -> usize {
    let dashboard: Value = serde_json::from_str(json).unwrap();
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        if panel["datasource"]["type"] != "prometheus" {
            continue; // the node graph reads the Tempo data source
        }
        let title = &panel["title"];
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {title} has no query");
        for target in targets {
            let expr = target["expr"].as_str().unwrap_or_default();
            assert!(!expr.is_empty(), "panel {title} has an empty query");
            let expr = expr.replace("$__rate_interval", "5m");
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                // Prometheus answers in plain text (or not at all) until it
                // is ready.
                let body: Value = match client
                    .get(format!("{prometheus}/api/v1/query"))
                    .query(&[("query", expr.as_str())])
                    .send()
                    .await
                {
                    Ok(response) => response.json().await.unwrap_or_default(),
                    Err(_) => Value::Null,
                };
                if !body.is_null() {
                    assert_eq!(body["status"], "success", "{expr}: {body}");
                    if !body["data"]["result"].as_array().unwrap().is_empty() {
                        break;
                    }
                }
                assert!(
                    Instant::now() < deadline,
                    "panel {title} finds no series: {expr}: {body}"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            checked += 1;
        }
    }
    checked
}

/// The value of the sample `series` (name and labels, as written) on a
/// `/metrics` page.
fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_listener_times_its_routes_and_the_self_dashboard_finds_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServerBuilder::new(&dir.path().join("data")).spawn();
    let prometheus = start_prometheus(dir.path(), server.http);
    let client = reqwest::Client::new();

    // One request to each listener, and a datagram to the X-Ray daemon port.
    let mut grpc = TraceServiceClient::connect(server.otlp_grpc_url())
        .await
        .unwrap();
    grpc.export(request("grpc-service", vec![span([1; 16], [1; 8], "grpc")]))
        .await
        .unwrap();
    let body = request("http-service", vec![span([2; 16], [2; 8], "http")]).encode_to_vec();
    let response = client
        .post(format!("{}/v1/traces", server.otlp_http_url()))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let document = serde_json::json!({
        "name": "xray-service", "id": "70de5b6f19ff9a0a",
        "trace_id": format!("1-{:08x}-0123456789abcdef01234567", now as u64),
        "start_time": now - 1.0, "end_time": now,
    })
    .to_string();
    let response = client
        .post(format!("{}/TraceSegments", server.xray_api_url()))
        .json(&serde_json::json!({ "TraceSegmentDocuments": [document.clone()] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.send_to(
        format!("{{\"format\":\"json\",\"version\":1}}\n{document}").as_bytes(),
        server.xray_udp,
    )
    .unwrap();
    let trace = client
        .get(format!(
            "{}/api/traces/{}",
            server.http_url(),
            hex::encode([2u8; 16])
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(trace.status(), 200);
    let missing = client
        .get(format!("{}/no-such-route-9f2c", server.http_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    // The datagram is decoded off the receive loop: wait for it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let page = loop {
        let page = client
            .get(format!("{}/metrics", server.http_url()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let udp_accepted = sample(
            &page,
            "tracelake_receiver_accepted_total{receiver=\"xray_udp\",signal=\"traces\"}",
        );
        if udp_accepted == Some(1.0) || Instant::now() > deadline {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for (series, value) in [
        (
            "tracelake_requests_total{listener=\"otlp-grpc\",route=\"/opentelemetry.proto.collector.trace.v1.TraceService/Export\",status=\"2xx\"}",
            1.0,
        ),
        (
            "tracelake_requests_total{listener=\"otlp-http\",route=\"/v1/traces\",status=\"2xx\"}",
            1.0,
        ),
        (
            "tracelake_requests_total{listener=\"xray-api\",route=\"/TraceSegments\",status=\"2xx\"}",
            1.0,
        ),
        (
            "tracelake_requests_total{listener=\"http\",route=\"/api/traces/{trace_id}\",status=\"2xx\"}",
            1.0,
        ),
        (
            "tracelake_requests_total{listener=\"http\",route=\"unmatched\",status=\"4xx\"}",
            1.0,
        ),
        (
            "tracelake_request_duration_seconds_count{listener=\"otlp-grpc\",route=\"/opentelemetry.proto.collector.trace.v1.TraceService/Export\",status=\"2xx\"}",
            1.0,
        ),
        (
            "tracelake_request_duration_seconds_count{listener=\"otlp-http\",route=\"/v1/traces\",status=\"2xx\"}",
            1.0,
        ),
        (
            "tracelake_request_duration_seconds_count{listener=\"xray-api\",route=\"/TraceSegments\",status=\"2xx\"}",
            1.0,
        ),
        (
            "tracelake_request_duration_seconds_count{listener=\"http\",route=\"/api/traces/{trace_id}\",status=\"2xx\"}",
            1.0,
        ),
        (
            "tracelake_request_duration_seconds_bucket{le=\"+Inf\",listener=\"otlp-http\",route=\"/v1/traces\",status=\"2xx\"}",
            1.0,
        ),
        (
            "tracelake_receiver_accepted_total{receiver=\"otlp_grpc\",signal=\"traces\"}",
            1.0,
        ),
        (
            "tracelake_receiver_accepted_total{receiver=\"otlp_http\",signal=\"traces\"}",
            1.0,
        ),
        (
            "tracelake_receiver_accepted_total{receiver=\"xray_api\",signal=\"traces\"}",
            1.0,
        ),
        (
            "tracelake_receiver_accepted_total{receiver=\"xray_udp\",signal=\"traces\"}",
            1.0,
        ),
        (
            "tracelake_receiver_tenant_accepted_total{tenant=\"single-tenant\"}",
            4.0,
        ),
    ] {
        assert_eq!(sample(&page, series), Some(value), "{series}\n{page}");
    }
    for receiver in ["otlp_grpc", "otlp_http", "xray_api", "xray_udp"] {
        let series =
            format!("tracelake_receiver_bytes_total{{receiver=\"{receiver}\",signal=\"traces\"}}");
        let bytes = sample(&page, &series).unwrap_or_default();
        assert!(bytes > 50.0, "{series} = {bytes}");
    }
    // The page keeps Prometheus text format 0.0.4: counters typed under
    // their sample's name.
    assert!(page.contains("# TYPE tracelake_requests_total counter\n"));
    assert!(page.contains("# TYPE tracelake_request_duration_seconds histogram\n"));
    assert!(!page.contains("# EOF"));
    assert!(!page.contains("no-such-route"), "a raw path became a label");

    let checked = check_dashboard(
        &client,
        &prometheus.url,
        include_str!("../../examples/grafana/dashboards/self.json"),
    )
    .await;
    assert!(checked >= 10, "the dashboard's PromQL panels: {checked}");
}

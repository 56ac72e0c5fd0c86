//! A real Prometheus (the Debian package `scripts/test.sh` installs)
//! scrapes `/metrics`; PromQL over Tempo's metric names returns the
//! workload's edges.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

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
    let dashboard: Value =
        serde_json::from_str(include_str!("../../examples/grafana/dashboards/red.json")).unwrap();
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
            // A rate needs two scrapes of a series: wait for them.
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let body: Value = client
                    .get(format!("{}/api/v1/query", prometheus.url))
                    .query(&[("query", expr.as_str())])
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                assert_eq!(body["status"], "success", "{expr}: {body}");
                if !body["data"]["result"].as_array().unwrap().is_empty() {
                    break;
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

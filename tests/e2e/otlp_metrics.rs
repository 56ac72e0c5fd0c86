//! The real OpenTelemetry Python SDK's OTLP metric exporter sends a counter
//! and a histogram over gRPC and HTTP: both land in the `metrics` table
//! (read back through `/v1/sql`) and on `/metrics`.

use std::process::Command;

use serde_json::{Value, json};

use crate::python_sdk::python;
use crate::server::{TestServer, TestServerBuilder};

pub(crate) fn export(protocol: &str, endpoint: &str, service: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/otlp_metrics.py");
    let output = Command::new(python())
        .args([script, protocol, endpoint, service])
        .output()
        .expect("run the OpenTelemetry SDK");
    assert!(
        output.status.success(),
        "{protocol} export failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

async fn sql(server: &TestServer, query: &str) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/sql", server.http_url()))
        .body(query.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .unwrap_or_else(|_| json!({"status": status.as_u16()}));
    if status != 200 {
        return json!({"status": status.as_u16(), "body": body});
    }
    body
}

#[tokio::test(flavor = "multi_thread")]
async fn otel_sdk_metrics_land_in_the_metrics_table_and_on_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServerBuilder::new(dir.path()).spawn();
    export("grpc", &server.otlp_grpc_url(), "fn-grpc");
    export("http", &server.otlp_http_url(), "fn-http");

    let rows = sql(
        &server,
        "SELECT service_name, name, type, temporality, monotonic, value_int, count, sum, \
         bucket_counts, attributes['function']['str'] AS function \
         FROM metrics ORDER BY service_name, name",
    )
    .await;
    let rows = rows["rows"].as_array().unwrap_or_else(|| panic!("{rows}"));
    let summary: Vec<String> = rows
        .iter()
        .map(|row| {
            format!(
                "{} {} {} {} {} value={} count={} sum={} buckets={} function={}",
                row["service_name"].as_str().unwrap(),
                row["name"].as_str().unwrap(),
                row["type"].as_str().unwrap(),
                row["temporality"].as_str().unwrap_or("-"),
                row["monotonic"],
                row["value_int"],
                row["count"],
                row["sum"],
                row["bucket_counts"].as_str().unwrap_or("-"),
                row["function"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    let expected: Vec<String> = ["fn-grpc", "fn-http"]
        .iter()
        .flat_map(|service| {
            [
                format!("{service} invocation.duration histogram cumulative null value=null count=3 sum=302.0 buckets=[0, 0, 0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0] function=resize"),
                format!("{service} invocations sum cumulative true value=3 count=null sum=null buckets=- function=resize"),
            ]
        })
        .collect();
    assert_eq!(summary, expected);

    let metrics = reqwest::get(format!("{}/metrics", server.http_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "# TYPE invocations_total counter",
        "invocations_total{function=\"resize\",job=\"fn-grpc\"} 3",
        "invocations_total{function=\"resize\",job=\"fn-http\"} 3",
        "# TYPE invocation_duration histogram",
        "invocation_duration_bucket{function=\"resize\",job=\"fn-http\",le=\"25\"} 1",
        "invocation_duration_bucket{function=\"resize\",job=\"fn-http\",le=\"250\"} 3",
        "invocation_duration_count{function=\"resize\",job=\"fn-grpc\"} 3",
        "invocation_duration_sum{function=\"resize\",job=\"fn-grpc\"} 302",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }

    // A nameless metric is refused in partial_success; its neighbour kept.
    let response: Value = reqwest::Client::new()
        .post(format!("{}/v1/metrics", server.otlp_http_url()))
        .json(&json!({"resourceMetrics": [{"scopeMetrics": [{"metrics": [
            {"name": "", "gauge": {"dataPoints": [{"asDouble": 1.0, "timeUnixNano": "1700000000000000000"}]}},
            {"name": "queue_depth", "gauge": {"dataPoints": [{"asInt": "7", "timeUnixNano": "1700000000000000000"}]}},
            {"name": "no_time", "gauge": {"dataPoints": [{"asInt": "7"}]}}
        ]}]}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let partial = &response["partialSuccess"];
    assert_eq!(
        partial["rejectedDataPoints"].to_string().trim_matches('"'),
        "2",
        "{response}"
    );
    assert!(
        partial["errorMessage"]
            .as_str()
            .unwrap()
            .contains("without a name")
    );
    let kept = sql(
        &server,
        "SELECT value_int FROM metrics WHERE name = 'queue_depth'",
    )
    .await;
    assert_eq!(kept["rows"], json!([{"value_int": 7}]));

    // Read-only: statements other than queries are refused.
    for statement in [
        "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'",
        "COPY (SELECT 1) TO '/tmp/x.csv'",
        "INSERT INTO metrics SELECT * FROM metrics",
        "SET datafusion.execution.batch_size = 1",
    ] {
        let refused = sql(&server, statement).await;
        assert_eq!(refused["status"], 400, "{statement}: {refused}");
    }
}

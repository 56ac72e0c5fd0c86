//! The real OpenTelemetry Python SDK exports over OTLP gRPC and HTTP; the
//! traces come back by id with every field intact, from the head and, after
//! a restart, from Parquet blocks.

use std::path::PathBuf;
use std::process::Command;

use crate::otlp::{fetch_trace, spans_of};
use crate::server::TestServerBuilder;

/// The venv's interpreter, set up by scripts/test.sh.
pub(crate) fn python() -> PathBuf {
    let path = std::env::var_os("TRACELAKE_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/tracelake-venv/bin/python"));
    assert!(
        path.exists(),
        "{} not found: run scripts/test.sh (it installs the Python clients) or set TRACELAKE_TEST_PYTHON",
        path.display()
    );
    path
}

fn run_python_round_trip(protocol: &str, endpoint: &str, query_base: &str) -> (String, u64) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/otlp_roundtrip.py"
    );
    let output = Command::new(python())
        .arg(script)
        .args([protocol, endpoint, query_base])
        .output()
        .expect("run python");
    assert!(
        output.status.success(),
        "python round trip over {protocol} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("python prints a json report");
    (
        report["trace_id"].as_str().expect("trace_id").to_string(),
        report["spans"].as_u64().expect("spans"),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn python_sdk_traces_round_trip_over_grpc_and_http_and_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServerBuilder::new(dir.path()).spawn();
    let client = reqwest::Client::new();
    let mut traces = Vec::new();
    for (protocol, endpoint) in [
        ("grpc", server.otlp_grpc_url()),
        ("http", server.otlp_http_url()),
    ] {
        let query_base = server.http_url();
        let (trace_id, spans) = tokio::task::spawn_blocking({
            let endpoint = endpoint.clone();
            move || run_python_round_trip(protocol, &endpoint, &query_base)
        })
        .await
        .unwrap();
        assert!(spans >= 5, "{protocol}: only {spans} spans");
        let trace_bytes = hex::decode(&trace_id).unwrap();
        let from_head = fetch_trace(&client, &server.http_url(), &trace_bytes)
            .await
            .expect("trace in head");
        assert_eq!(spans_of(&from_head).len() as u64, spans);
        traces.push((trace_bytes, from_head));
    }

    // A clean stop flushes the head to Parquet blocks; after the restart the
    // same traces come from the blocks, identical to what the head served.
    assert!(server.stop().success());
    let blocks: Vec<_> = walk(&dir.path().join("tenants/single-tenant/spans"))
        .into_iter()
        .filter(|path| path.extension().is_some_and(|ext| ext == "parquet"))
        .collect();
    assert!(!blocks.is_empty(), "shutdown wrote no block");
    let server = TestServerBuilder::new(dir.path()).spawn();
    for (trace_id, from_head) in traces {
        let from_block = fetch_trace(&client, &server.http_url(), &trace_id)
            .await
            .expect("trace in blocks");
        assert_eq!(spans_of(&from_block), spans_of(&from_head));
        let resources = |trace: &opentelemetry_proto::tonic::trace::v1::TracesData| {
            let mut resources: Vec<_> = trace
                .resource_spans
                .iter()
                .map(|r| format!("{:?}", r.resource))
                .collect();
            resources.sort();
            resources
        };
        assert_eq!(resources(&from_block), resources(&from_head));
    }
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found
}

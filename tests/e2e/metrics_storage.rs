//! OTLP metric points take the spans' path in the real binary: acked means
//! in the WAL (a SIGKILL loses no acked point), the `metrics` table reads
//! the head before a flush and blocks after, and a thousand export requests
//! end as one block per tenant and hour once flushed and compacted, not a
//! file per request.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use prost::Message;
use tracelake_workload::samples::sample_resource_metrics;

use crate::server::{TestServer, TestServerBuilder, sql};

const POINTS_PER_REQUEST: u64 = 3;

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Request `seed`: its points valued `seed * 1_000_000 + i`.
fn request(seed: u64, time_ns: u64) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![sample_resource_metrics(seed, POINTS_PER_REQUEST, time_ns)],
    }
}

/// Sends request `seed` over OTLP/HTTP (protobuf); whether it was acked
/// with every point accepted.
async fn post(client: &reqwest::Client, server: &TestServer, seed: u64, time_ns: u64) -> bool {
    let Ok(response) = client
        .post(format!("{}/v1/metrics", server.otlp_http_url()))
        .header("content-type", "application/x-protobuf")
        .body(request(seed, time_ns).encode_to_vec())
        .send()
        .await
    else {
        return false;
    };
    if !response.status().is_success() {
        return false;
    }
    let Ok(body) = response.bytes().await else {
        return false;
    };
    opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse::decode(body)
        .is_ok_and(|answer| {
            answer
                .partial_success
                .is_none_or(|partial| partial.rejected_data_points == 0)
        })
}

/// Every file under `dir` (none when it does not exist).
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The files of metric points in the store (blocks, and per-request files).
fn metric_files(data_dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    files_under(&data_dir.join("tenants"))
        .into_iter()
        .filter(|path| {
            let text = path.to_string_lossy();
            text.contains("/metric_blocks/") || text.contains("/metrics/")
        })
        .collect()
}

/// How many times each stored point value occurs.
async fn stored_values(server: &TestServer) -> std::collections::HashMap<i64, u64> {
    // In slices of values, each well under `/v1/sql`'s row limit: a run
    // that acks many requests must not be read truncated.
    const SLICE: i64 = 1_000 * 1_000_000;
    let mut values = std::collections::HashMap::new();
    let mut from = 0i64;
    loop {
        let answer = sql(
            &server.http_url(),
            &format!(
                "SELECT value_int AS v, count(*) AS n FROM metrics \
                 WHERE name = 'fixture.gauge' AND value_int >= {from} AND value_int < {} \
                 GROUP BY 1",
                from + SLICE
            ),
        )
        .await;
        assert_ne!(answer["truncated"], true, "{answer}");
        let rows = answer["rows"]
            .as_array()
            .unwrap_or_else(|| panic!("{answer}"));
        values.extend(
            rows.iter()
                .map(|row| (row["v"].as_i64().unwrap(), row["n"].as_u64().unwrap())),
        );
        let beyond = sql(
            &server.http_url(),
            &format!(
                "SELECT count(*) AS n FROM metrics WHERE name = 'fixture.gauge' AND value_int >= {}",
                from + SLICE
            ),
        )
        .await;
        if beyond["rows"][0]["n"].as_u64() == Some(0) {
            return values;
        }
        from += SLICE;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_metric_exports_end_as_one_block_per_tenant_and_hour() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServerBuilder::new(dir.path())
        .flush_max_age("300ms")
        .arg("--compaction-interval")
        .arg("1s")
        .arg("--compaction-delete-delay")
        .arg("0s")
        .spawn();
    let time = now_ns();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (next, server_http) = (next.clone(), server.otlp_http_url());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            loop {
                let seed = next.fetch_add(1, Ordering::SeqCst);
                if seed >= 1_000 {
                    return;
                }
                let response = client
                    .post(format!("{server_http}/v1/metrics"))
                    .header("content-type", "application/x-protobuf")
                    .body(request(seed, time).encode_to_vec())
                    .send()
                    .await
                    .unwrap();
                assert!(response.status().is_success(), "{}", response.status());
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    // Flushes every 300 ms and compactions every second bring the tenant's
    // hour down to one block: a Parquet file and its meta.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut files = metric_files(dir.path());
    while files.len() > 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        files = metric_files(dir.path());
    }
    assert!(
        files.len() <= 2,
        "1,000 requests left {} files for one tenant and hour",
        files.len()
    );
    let values = stored_values(&server).await;
    assert_eq!(values.len() as u64, 1_000 * POINTS_PER_REQUEST);
    assert!(values.values().all(|count| *count == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_metrics_table_reads_the_head_before_a_flush_and_blocks_after() {
    let dir = tempfile::tempdir().unwrap();
    // No flush by age: only the shutdown flushes.
    let mut server = TestServerBuilder::new(dir.path()).spawn();
    let client = reqwest::Client::new();
    let time = now_ns();
    for seed in 1..=2 {
        assert!(post(&client, &server, seed, time).await);
    }
    // Queryable at once, though nothing is in the store: from the head.
    let before = stored_values(&server).await;
    assert_eq!(before.len() as u64, 2 * POINTS_PER_REQUEST);
    assert!(
        metric_files(dir.path()).is_empty(),
        "points must wait in the head (and the WAL) for a flush: {:?}",
        metric_files(dir.path())
    );

    // The shutdown flushes both requests into one block (and its meta);
    // after the restart the same points come from it, the WAL being empty.
    assert!(server.stop().success());
    let files = metric_files(dir.path());
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(
        files
            .iter()
            .all(|file| file.to_string_lossy().contains("/metric_blocks/")),
        "{files:?}"
    );
    let server = TestServerBuilder::new(dir.path()).spawn();
    assert_eq!(stored_values(&server).await, before);
}

/// The points of every acked request are stored exactly once after
/// SIGKILLs: first with nothing flushed (the WAL alone brings them back),
/// then while flushes and compactions race the kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acked_metric_points_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let time = now_ns();
    let acked = Arc::new(Mutex::new(Vec::new()));

    // Round 1: nothing is flushed before the kill.
    let mut server = TestServerBuilder::new(dir.path()).spawn();
    let client = reqwest::Client::new();
    let mut grpc = MetricsServiceClient::connect(server.otlp_grpc_url())
        .await
        .unwrap();
    for seed in 1..=100u64 {
        let ok = if seed % 2 == 0 {
            grpc.export(request(seed, time))
                .await
                .is_ok_and(|answer| answer.get_ref().partial_success.is_none())
        } else {
            post(&client, &server, seed, time).await
        };
        assert!(ok, "request {seed} refused");
        acked.lock().unwrap().push(seed);
    }
    // The real SDK's export, acked too.
    crate::otlp_metrics::export("http", &server.otlp_http_url(), "fn-killed");
    assert!(
        metric_files(dir.path()).is_empty(),
        "acked points must be in the WAL only before a flush: {:?}",
        metric_files(dir.path())
    );
    server.kill9();

    // Round 2: writers under flushes (200 ms) and compactions (1 s), killed
    // at a moment of the test's choosing.
    let mut server = TestServerBuilder::new(dir.path())
        .flush_max_age("200ms")
        .arg("--compaction-interval")
        .arg("1s")
        .arg("--compaction-delete-delay")
        .arg("0s")
        .spawn();
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(1_000));
    let mut writers = Vec::new();
    for _ in 0..4 {
        let (stop, next, acked) = (stop.clone(), next.clone(), acked.clone());
        let url = format!("{}/v1/metrics", server.otlp_http_url());
        writers.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            while !stop.load(Ordering::SeqCst) {
                let seed = next.fetch_add(1, Ordering::SeqCst);
                let ok = match client
                    .post(&url)
                    .header("content-type", "application/x-protobuf")
                    .body(request(seed, time).encode_to_vec())
                    .send()
                    .await
                {
                    Ok(response) => response.status().is_success(),
                    Err(_) => false,
                };
                if ok {
                    acked.lock().unwrap().push(seed);
                } else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(2_300)).await;
    server.kill9();
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.await.unwrap();
    }

    let server = TestServerBuilder::new(dir.path()).spawn();
    let stored = stored_values(&server).await;
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 150, "too few acked requests: {}", acked.len());
    for seed in &acked {
        for index in 0..POINTS_PER_REQUEST {
            let value = (seed * 1_000_000 + index) as i64;
            assert_eq!(
                stored.get(&value),
                Some(&1),
                "point {value} of acked request {seed}"
            );
        }
    }
    assert!(
        stored.values().all(|count| *count == 1),
        "a point stored twice"
    );
    let sdk = sql(
        &server.http_url(),
        "SELECT value_int FROM metrics WHERE service_name = 'fn-killed' AND name = 'invocations'",
    )
    .await;
    assert_eq!(sdk["rows"], serde_json::json!([{"value_int": 3}]), "{sdk}");
}

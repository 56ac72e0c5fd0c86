//! Acked means durable: spans acknowledged by the server are all there after
//! SIGKILL and restart, under concurrent load, with flushes racing the kill.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;

use crate::otlp::{fetch_trace, request, span, span_id, spans_of, trace_id};
use crate::server::{TestServer, TestServerBuilder};

const SPANS_PER_TRACE: u64 = 3;

fn trace_request(
    seed: u64,
) -> opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
    let id = trace_id(seed);
    let spans = (0..SPANS_PER_TRACE)
        .map(|index| span(id, span_id(seed * 16 + index), &format!("op-{index}")))
        .collect();
    request("durability", spans)
}

/// Writers send one trace per request until `stop`; a trace is recorded
/// only once its request was acked.
async fn load(
    server: &TestServer,
    writers: u64,
    next_seed: Arc<AtomicU64>,
    acked: Arc<Mutex<Vec<u64>>>,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut handles = Vec::new();
    for writer in 0..writers {
        let grpc = server.otlp_grpc_url();
        let http = format!("{}/v1/traces", server.otlp_http_url());
        let (next_seed, acked, stop) = (next_seed.clone(), acked.clone(), stop.clone());
        handles.push(tokio::spawn(async move {
            let http_client = reqwest::Client::new();
            let mut grpc_client = TraceServiceClient::connect(grpc).await.ok();
            while !stop.load(Ordering::SeqCst) {
                let seed = next_seed.fetch_add(1, Ordering::SeqCst);
                let body = trace_request(seed);
                let ok = if writer % 2 == 0 {
                    match grpc_client.as_mut() {
                        Some(client) => client
                            .export(body)
                            .await
                            .is_ok_and(|response| response.get_ref().partial_success.is_none()),
                        None => false,
                    }
                } else {
                    http_client
                        .post(&http)
                        .header("content-type", "application/x-protobuf")
                        .body(body.encode_to_vec())
                        .send()
                        .await
                        .is_ok_and(|response| response.status().is_success())
                };
                if ok {
                    acked.lock().unwrap().push(seed);
                } else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }));
    }
    handles
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acked_spans_survive_sigkill_under_concurrent_load() {
    let dir = tempfile::tempdir().unwrap();
    let next_seed = Arc::new(AtomicU64::new(1));
    let acked = Arc::new(Mutex::new(Vec::new()));
    // Round 0 keeps everything in the WAL; later rounds flush every 200ms so
    // kills land before, during and after block writes.
    for (round, flush_age) in ["1h", "200ms", "200ms", "1h"].iter().enumerate() {
        let mut server = TestServerBuilder::new(dir.path())
            .flush_max_age(flush_age)
            .spawn();
        let stop = Arc::new(AtomicBool::new(false));
        let handles = load(&server, 6, next_seed.clone(), acked.clone(), stop.clone()).await;
        tokio::time::sleep(Duration::from_millis(600 + 150 * round as u64)).await;
        server.kill9();
        stop.store(true, Ordering::SeqCst);
        for handle in handles {
            handle.await.unwrap();
        }
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 100,
        "load too light to prove anything: {} acked",
        acked.len()
    );

    let server = TestServerBuilder::new(dir.path()).spawn();
    let client = reqwest::Client::new();
    let mut lost = Vec::new();
    for seed in &acked {
        match fetch_trace(&client, &server.http_url(), &trace_id(*seed)).await {
            Some(trace) => {
                let mut ids: Vec<_> = spans_of(&trace)
                    .into_iter()
                    .map(|span| span.span_id)
                    .collect();
                ids.dedup();
                if ids.len() as u64 != SPANS_PER_TRACE {
                    lost.push((*seed, ids.len()));
                }
            }
            None => lost.push((*seed, 0)),
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} acked traces lost or incomplete: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(10)]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn torn_wal_tail_is_truncated_and_start_up_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServerBuilder::new(dir.path()).spawn();
    let mut client = TraceServiceClient::connect(server.otlp_grpc_url())
        .await
        .unwrap();
    client.export(trace_request(7)).await.unwrap();
    server.kill9();

    // A record cut short by the crash: a length promising more than follows.
    let wal_dir = dir.path().join("wal");
    let mut segments: Vec<_> = std::fs::read_dir(&wal_dir)
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .collect();
    segments.sort();
    let last = segments
        .iter()
        .rev()
        .find(|path| std::fs::metadata(path).unwrap().len() > 8)
        .expect("a segment with records");
    let mut torn = std::fs::read(last).unwrap();
    torn.extend_from_slice(&[0xff, 0x00, 0x00, 0x00, 0x12, 0x34, 0x56, 0x78, 0x01, 0x02]);
    std::fs::write(last, &torn).unwrap();

    let server = TestServerBuilder::new(dir.path()).spawn();
    let http = reqwest::Client::new();
    let trace = fetch_trace(&http, &server.http_url(), &trace_id(7))
        .await
        .expect("acked trace survives");
    assert_eq!(spans_of(&trace).len() as u64, SPANS_PER_TRACE);
    let mut client = TraceServiceClient::connect(server.otlp_grpc_url())
        .await
        .unwrap();
    client.export(trace_request(8)).await.unwrap();
    assert!(
        fetch_trace(&http, &server.http_url(), &trace_id(8))
            .await
            .is_some()
    );
    assert!(
        std::fs::metadata(last).unwrap().len() < torn.len() as u64,
        "torn tail was not truncated"
    );
}

fn parquet_files(dir: &std::path::Path) -> usize {
    let mut count = 0;
    let mut stack = vec![dir.join("tenants")];
    while let Some(path) = stack.pop() {
        for entry in std::fs::read_dir(&path).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|ext| ext == "parquet")
                && path.components().any(|part| part.as_os_str() == "spans")
            {
                count += 1;
            }
        }
    }
    count
}

#[tokio::test(flavor = "multi_thread")]
async fn compaction_merges_flushed_blocks_and_every_trace_stays_found() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServerBuilder::new(dir.path())
        .flush_max_age("100ms")
        .arg("--compaction-interval")
        .arg("1s")
        .arg("--compaction-delete-delay")
        .arg("0s")
        .spawn();
    let mut client = TraceServiceClient::connect(server.otlp_grpc_url())
        .await
        .unwrap();
    // One flush, so one block, per request.
    for seed in 1..=5 {
        client.export(trace_request(seed)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    let mut waited = Duration::ZERO;
    while server.metric("tracelake_storage_blocks").await != 1.0 {
        assert!(waited < Duration::from_secs(30), "blocks were not merged");
        tokio::time::sleep(Duration::from_millis(200)).await;
        waited += Duration::from_millis(200);
    }
    assert!(
        server
            .metric("tracelake_storage_compacted_blocks_total")
            .await
            >= 2.0
    );
    assert_eq!(parquet_files(dir.path()), 1, "merged sources not deleted");

    let http = reqwest::Client::new();
    for seed in 1..=5 {
        let trace = fetch_trace(&http, &server.http_url(), &trace_id(seed))
            .await
            .unwrap_or_else(|| panic!("trace {seed} lost by compaction"));
        assert_eq!(spans_of(&trace).len() as u64, SPANS_PER_TRACE);
    }
    server.kill9();
    let server = TestServerBuilder::new(dir.path()).spawn();
    assert_eq!(server.metric("tracelake_storage_blocks").await, 1.0);
    let trace = fetch_trace(&http, &server.http_url(), &trace_id(3)).await;
    assert_eq!(spans_of(&trace.unwrap()).len() as u64, SPANS_PER_TRACE);
}

//! Acked means durable: spans acknowledged by the server are all there,
//! exactly once, after SIGKILL and restart, under concurrent load, with
//! flushes and compactions racing the kills.

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

/// How a trace was sent, and so how many spans it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    Otlp,
    Xray,
}

impl Sent {
    fn spans(self) -> u64 {
        match self {
            Sent::Otlp => SPANS_PER_TRACE,
            Sent::Xray => 1,
        }
    }
}

/// One X-Ray segment document for trace `seed`.
fn xray_document(seed: u64) -> String {
    let id = hex::encode(trace_id(seed));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    serde_json::json!({
        "name": "durability-xray",
        "id": hex::encode(span_id(seed * 16)),
        "trace_id": format!("1-{}-{}", &id[..8], &id[8..]),
        "start_time": now,
        "end_time": now + 0.01,
    })
    .to_string()
}

/// Writers send one trace per request until `stop` (OTLP gRPC, OTLP HTTP
/// and the X-Ray API in turn); a trace is recorded only once its request
/// was acked.
async fn load(
    server: &TestServer,
    writers: u64,
    next_seed: Arc<AtomicU64>,
    acked: Arc<Mutex<Vec<(u64, Sent)>>>,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut handles = Vec::new();
    for writer in 0..writers {
        let grpc = server.otlp_grpc_url();
        let http = format!("{}/v1/traces", server.otlp_http_url());
        let xray = format!("{}/TraceSegments", server.xray_api_url());
        let (next_seed, acked, stop) = (next_seed.clone(), acked.clone(), stop.clone());
        handles.push(tokio::spawn(async move {
            let http_client = reqwest::Client::new();
            let mut grpc_client = TraceServiceClient::connect(grpc).await.ok();
            while !stop.load(Ordering::SeqCst) {
                let seed = next_seed.fetch_add(1, Ordering::SeqCst);
                let (ok, sent) = match writer % 3 {
                    0 => {
                        let ok = match grpc_client.as_mut() {
                            Some(client) => client
                                .export(trace_request(seed))
                                .await
                                .is_ok_and(|response| response.get_ref().partial_success.is_none()),
                            None => false,
                        };
                        (ok, Sent::Otlp)
                    }
                    1 => {
                        let ok = http_client
                            .post(&http)
                            .header("content-type", "application/x-protobuf")
                            .body(trace_request(seed).encode_to_vec())
                            .send()
                            .await
                            .is_ok_and(|response| response.status().is_success());
                        (ok, Sent::Otlp)
                    }
                    _ => {
                        let body =
                            serde_json::json!({"TraceSegmentDocuments": [xray_document(seed)]});
                        let ok = match http_client.post(&xray).json(&body).send().await {
                            Ok(response) if response.status().is_success() => response
                                .json::<serde_json::Value>()
                                .await
                                .is_ok_and(|answer| {
                                    answer["UnprocessedTraceSegments"] == serde_json::json!([])
                                }),
                            _ => false,
                        };
                        (ok, Sent::Xray)
                    }
                };
                if ok {
                    acked.lock().unwrap().push((seed, sent));
                } else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }));
    }
    handles
}

/// Spans and distinct span ids of every stored trace, by hex trace id
/// (through the SQL API, a page at a time).
async fn stored_traces(base: &str) -> std::collections::HashMap<String, (u64, u64)> {
    const PAGE: usize = 5_000;
    let mut traces = std::collections::HashMap::new();
    for page in 0.. {
        let query = format!(
            "SELECT encode(trace_id, 'hex') AS id, count(*) AS n, count(DISTINCT span_id) AS d \
             FROM spans GROUP BY 1 ORDER BY 1 LIMIT {PAGE} OFFSET {}",
            page * PAGE
        );
        let answer = crate::server::sql(base, &query).await;
        let rows = answer["rows"]
            .as_array()
            .unwrap_or_else(|| panic!("{answer}"));
        for row in rows {
            traces.insert(
                row["id"].as_str().unwrap().to_string(),
                (row["n"].as_u64().unwrap(), row["d"].as_u64().unwrap()),
            );
        }
        if rows.len() < PAGE {
            break;
        }
    }
    traces
}

/// Under OTLP (gRPC, HTTP) and X-Ray API load, the server is SIGKILLed 20
/// times at random moments while it flushes every 200 ms and compacts every
/// second; after the last restart every acked span is there exactly once,
/// and no request is there in part.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acked_spans_survive_twenty_sigkills_exactly_once() {
    const KILLS: u64 = 20;
    let dir = tempfile::tempdir().unwrap();
    let next_seed = Arc::new(AtomicU64::new(1));
    let acked = Arc::new(Mutex::new(Vec::new()));
    // Kill moments from a fixed-seed generator (an LCG), so a failure
    // replays the same schedule.
    let mut state = 10u64;
    let mut next_pause_ms = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        300 + (state >> 33) % 1_200
    };
    for round in 0..KILLS {
        // Every fifth round keeps everything in the WAL.
        let flush_age = if round % 5 == 0 { "1h" } else { "200ms" };
        let mut server = TestServerBuilder::new(dir.path())
            .flush_max_age(flush_age)
            .arg("--compaction-interval")
            .arg("1s")
            .arg("--compaction-delete-delay")
            .arg("0s")
            .spawn();
        let stop = Arc::new(AtomicBool::new(false));
        let handles = load(&server, 6, next_seed.clone(), acked.clone(), stop.clone()).await;
        tokio::time::sleep(Duration::from_millis(next_pause_ms())).await;
        server.kill9();
        stop.store(true, Ordering::SeqCst);
        for handle in handles {
            handle.await.unwrap();
        }
    }
    let acked = acked.lock().unwrap().clone();
    let xray_acked = acked.iter().filter(|(_, sent)| *sent == Sent::Xray).count();
    assert!(
        acked.len() >= 500 && xray_acked >= 100,
        "load too light to prove anything: {} acked, {xray_acked} over X-Ray",
        acked.len()
    );

    let server = TestServerBuilder::new(dir.path()).spawn();
    let stored = stored_traces(&server.http_url()).await;
    let mut wrong = Vec::new();
    for (seed, sent) in &acked {
        match stored.get(&hex::encode(trace_id(*seed))) {
            Some(&(spans, distinct)) if spans == sent.spans() && distinct == spans => {}
            other => wrong.push((*seed, *sent, other.copied())),
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} acked traces lost, partial or duplicated: {:?}",
        wrong.len(),
        acked.len(),
        &wrong[..wrong.len().min(10)]
    );
    // Traces whose ack the kill cut off may be stored too, but once.
    let duplicated: Vec<_> = stored
        .iter()
        .filter(|(_, (spans, distinct))| spans != distinct)
        .collect();
    assert!(duplicated.is_empty(), "spans stored twice: {duplicated:?}");
    eprintln!(
        "crash test: {KILLS} kills, {} traces acked ({xray_acked} over X-Ray), {} stored",
        acked.len(),
        stored.len()
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
    block_files(dir).len()
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

/// Span block files under `dir`, oldest first (ULIDs sort by time).
fn block_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.join("tenants")];
    while let Some(path) = stack.pop() {
        for entry in std::fs::read_dir(&path).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|ext| ext == "parquet")
                && path.components().any(|part| part.as_os_str() == "spans")
            {
                files.push(path);
            }
        }
    }
    files.sort_by_key(|path| path.file_name().map(|name| name.to_os_string()));
    files
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_block_fails_its_queries_clearly_and_the_rest_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    // Two blocks: one per server run (each flushes on shutdown).
    for seed in [1, 2] {
        let mut server = TestServerBuilder::new(dir.path()).spawn();
        let response = client
            .post(format!("{}/v1/traces", server.otlp_http_url()))
            .header("content-type", "application/x-protobuf")
            .body(trace_request(seed).encode_to_vec())
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
        assert!(server.stop().success());
    }
    let blocks = block_files(dir.path());
    assert_eq!(blocks.len(), 2);
    std::fs::write(&blocks[0], b"not parquet at all").unwrap();

    let server = TestServerBuilder::new(dir.path()).spawn();
    let base = server.http_url();
    // The good block's trace is served.
    let trace = fetch_trace(&client, &base, &trace_id(2)).await.unwrap();
    assert_eq!(spans_of(&trace).len() as u64, SPANS_PER_TRACE);
    // The broken block's trace: a clear server error, not a hang or a crash.
    let broken = client
        .get(format!("{base}/api/traces/{}", hex::encode(trace_id(1))))
        .send()
        .await
        .unwrap();
    let status = broken.status();
    let body = broken.text().await.unwrap();
    assert!(status.is_server_error(), "{status}: {body}");
    // The caller gets an error id; the detail (Parquet's words) stays in
    // the server log.
    assert!(body.contains("internal error "), "{body}");
    assert!(!body.to_lowercase().contains("parquet"), "{body}");
    // A search over both blocks fails the same way; SQL too.
    let sql = client
        .post(format!("{base}/v1/sql"))
        .body("SELECT count(*) AS n FROM spans")
        .send()
        .await
        .unwrap();
    assert!(sql.status().is_server_error() || sql.status().is_client_error());
    // And the server is still up, serving what it can.
    assert!(
        reqwest::get(format!("{base}/ready"))
            .await
            .unwrap()
            .status()
            .is_success()
    );
    let trace = fetch_trace(&client, &base, &trace_id(2)).await.unwrap();
    assert_eq!(spans_of(&trace).len() as u64, SPANS_PER_TRACE);
}

/// A small tmpfs mounted on a fresh directory, unmounted when dropped: a
/// disk that really fills up. Mounting needs root, which the suite runs as.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(
            mounted.success(),
            "mounting a {size} tmpfs failed: the disk-full test needs root"
        );
        Self { dir }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_refuses_spans_with_unavailable_and_recovers_when_space_returns() {
    let disk = SmallDisk::mount("24m");
    // Room to free later.
    let filler = disk.dir.path().join("filler");
    std::fs::write(&filler, vec![0u8; 8 << 20]).unwrap();
    let data = disk.dir.path().join("data");
    let server = TestServerBuilder::new(&data).spawn();
    let client = reqwest::Client::new();
    let post = |seed: u64| {
        // Big requests: 200 spans of 3 KB of attributes each.
        let id = trace_id(seed);
        let spans = (0..200)
            .map(|index| {
                let mut span = span(id, span_id(seed * 1_000 + index), "disk");
                span.attributes
                    .push(opentelemetry_proto::tonic::common::v1::KeyValue {
                    key: "payload".into(),
                    value: Some(opentelemetry_proto::tonic::common::v1::AnyValue {
                        value: Some(
                            opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(
                                format!("{seed}-{index}-").repeat(300),
                            ),
                        ),
                    }),
                    ..Default::default()
                });
                span
            })
            .collect();
        client
            .post(format!("{}/v1/traces", server.otlp_http_url()))
            .header("content-type", "application/x-protobuf")
            .body(request("disk", spans).encode_to_vec())
            .send()
    };
    let mut acked = Vec::new();
    let mut refusal = None;
    for seed in 1..200 {
        let response = post(seed).await.unwrap();
        if response.status().is_success() {
            acked.push(seed);
        } else {
            refusal = Some((response.status(), response.text().await.unwrap()));
            break;
        }
    }
    let (status, message) = refusal.expect("the disk never filled");
    assert_eq!(status, 503, "{message}");
    assert!(message.contains("No space left"), "{message}");
    assert!(!acked.is_empty());
    // Over gRPC: UNAVAILABLE, which exporters retry.
    let mut grpc = TraceServiceClient::connect(server.otlp_grpc_url())
        .await
        .unwrap();
    let status = grpc.export(trace_request(10_000)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    // Still up, still answering for what it acked.
    let trace = fetch_trace(&client, &server.http_url(), &trace_id(acked[0]))
        .await
        .unwrap();
    assert_eq!(spans_of(&trace).len(), 200);

    // Space comes back: spans are taken again, and everything acked,
    // before and after, survives a restart.
    std::fs::remove_file(&filler).unwrap();
    let after = 500;
    let response = post(after).await.unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    acked.push(after);
    drop(server);
    let server = TestServerBuilder::new(&data).spawn();
    for seed in &acked {
        let trace = fetch_trace(&client, &server.http_url(), &trace_id(*seed)).await;
        assert_eq!(
            trace.map(|trace| spans_of(&trace).len()),
            Some(200),
            "trace {seed} after restart"
        );
    }
}

/// `nobody`: a user root's permission checks apply to.
const NOBODY: u32 = 65534;

fn chmod(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Permission errors lose nothing acked and say what failed: with the data
/// directory read-only, appends go on into the open WAL segment (rotation
/// is retried), flushes fail and are counted while the head keeps serving,
/// a restart refuses to start naming the path, and once permission is back
/// every acked span is there exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn a_permission_error_loses_nothing_acked_and_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o755);
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::os::unix::fs::chown(&data, Some(NOBODY), Some(NOBODY)).unwrap();
    // Small segments: a new WAL file every few requests.
    let builder = TestServerBuilder::new(&data)
        .user(NOBODY)
        .flush_max_age("1s")
        .config("[wal]\nsegment_bytes = 262144\n");
    let mut server = builder.spawn();
    let client = reqwest::Client::new();
    let post = |base: String, seed: u64| {
        let id = trace_id(seed);
        let spans = (0..100)
            .map(|index| {
                let mut span = span(id, span_id(seed * 1_000 + index), "perm");
                span.attributes
                    .push(crate::otlp::string_attribute("payload", &"p".repeat(500)));
                span
            })
            .collect();
        client
            .post(format!("{base}/v1/traces"))
            .header("content-type", "application/x-protobuf")
            .body(request("perm", spans).encode_to_vec())
            .send()
    };
    let mut acked = Vec::new();
    for seed in 1..=3 {
        let response = post(server.otlp_http_url(), seed).await.unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        acked.push(seed);
    }
    // Nothing under data/ may be created any more.
    let wal = data.join("wal");
    let tenants = data.join("tenants");
    std::fs::create_dir_all(&tenants).unwrap();
    std::os::unix::fs::chown(&tenants, Some(NOBODY), Some(NOBODY)).unwrap();
    for path in [&data, &wal, &tenants] {
        chmod(path, 0o555);
    }
    for seed in 10..20 {
        let response = post(server.otlp_http_url(), seed).await.unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        acked.push(seed);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while server
        .metric("tracelake_storage_flush_failures_total")
        .await
        < 1.0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no failed flush was counted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Still served from the head.
    let trace = fetch_trace(&client, &server.http_url(), &trace_id(15)).await;
    assert_eq!(trace.map(|trace| spans_of(&trace).len()), Some(100));

    // A restart cannot make its WAL segment: it stops, naming the path.
    server.kill9();
    let output = builder.run_to_exit();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("ermission denied") && stderr.contains(wal.to_str().unwrap()),
        "{stderr}"
    );

    // Permission back: every acked span is there exactly once.
    for path in [&data, &wal, &tenants] {
        chmod(path, 0o755);
    }
    let server = builder.spawn();
    for seed in &acked {
        let trace = fetch_trace(&client, &server.http_url(), &trace_id(*seed)).await;
        assert_eq!(
            trace.map(|trace| spans_of(&trace).len()),
            Some(100),
            "trace {seed} after restart"
        );
    }
}

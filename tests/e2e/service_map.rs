//! The service map of a known workload, X-Ray segments and OTLP spans
//! mixed, from the streaming aggregation and from the recompute over raw
//! spans: both must give exactly the map the workload implies.

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::trace::v1::span::Link;
use opentelemetry_proto::tonic::trace::v1::{Span, Status};
use prost::Message;
use serde_json::{Value, json};

use crate::otlp::{request, string_attribute};
use crate::server::{TestServer, TestServerBuilder};

const MILLI: u64 = 1_000_000;

/// One trace of the workload: ids and the times everything hangs off.
struct TraceIds {
    trace: [u8; 16],
    base_ns: u64,
    seed: u8,
}

impl TraceIds {
    fn new(epoch_seconds: u32, seed: u8, base_ns: u64) -> Self {
        let mut trace = [seed; 16];
        trace[..4].copy_from_slice(&epoch_seconds.to_be_bytes());
        Self {
            trace,
            base_ns,
            seed,
        }
    }

    fn span_id(&self, role: u8) -> [u8; 8] {
        [0x10, self.seed, role, 0, 0, 0, 0, 1]
    }

    fn xray_trace_id(&self) -> String {
        let hex = hex::encode(self.trace);
        format!("1-{}-{}", &hex[..8], &hex[8..])
    }

    fn seconds(&self, offset_ms: u64) -> f64 {
        (self.base_ns + offset_ms * MILLI) as f64 / 1e9
    }
}

const ROOT: u8 = 1;
const TO_ORDERS: u8 = 2;
const TO_LEGACY: u8 = 3;
const PUBLISH: u8 = 4;
const ORDERS: u8 = 5;
const DYNAMODB: u8 = 6;
const TO_PAYMENTS: u8 = 7;
const PAYMENTS: u8 = 8;
const NOTIFIER: u8 = 9;
const BILLING: u8 = 10;

fn otlp_span(
    ids: &TraceIds,
    role: u8,
    parent: Option<u8>,
    kind: i32,
    name: &str,
    (offset_ms, duration_ms): (u64, u64),
) -> Span {
    Span {
        trace_id: ids.trace.to_vec(),
        span_id: ids.span_id(role).to_vec(),
        parent_span_id: parent
            .map(|role| ids.span_id(role).to_vec())
            .unwrap_or_default(),
        name: name.into(),
        kind,
        start_time_unix_nano: ids.base_ns + offset_ms * MILLI,
        end_time_unix_nano: ids.base_ns + (offset_ms + duration_ms) * MILLI,
        ..Default::default()
    }
}

fn with_http_status(mut span: Span, status: i64) -> Span {
    span.attributes
        .push(opentelemetry_proto::tonic::common::v1::KeyValue {
            key: "http.response.status_code".into(),
            value: Some(opentelemetry_proto::tonic::common::v1::AnyValue {
                value: Some(
                    opentelemetry_proto::tonic::common::v1::any_value::Value::IntValue(status),
                ),
            }),
            ..Default::default()
        });
    span
}

fn with_error_status(mut span: Span) -> Span {
    span.status = Some(Status {
        code: 2,
        message: "failed".into(),
    });
    span
}

const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const PRODUCER: i32 = 4;
const CONSUMER: i32 = 5;

/// The workload: three checkout traces through frontend (OTLP) -> orders
/// (X-Ray, with a DynamoDB subsegment and a remote call) -> payments
/// (OTLP), a call to an uninstrumented host, a message to notifier, and a
/// fourth trace in which billing consumes the message through a span link.
///
/// | trace | frontend | orders | DynamoDB | payments | legacy |
/// |---|---|---|---|---|---|
/// | 1 | 100 ms ok | 70 ms ok | 10 ms ok | 30 / 25 ms ok | 5 ms 200 |
/// | 2 | 200 ms 500 + error status | 140 ms ok | 20 ms 429 | 60 ms 500 / 50 ms error status | 8 ms 503 |
/// | 3 | 300 ms ok | 200 ms 404 | 12 ms ok | - | 6 ms 200 |
pub(crate) struct Workload {
    otlp: Vec<Vec<u8>>,
    xray: Vec<String>,
    pub(crate) start_ns: u64,
}

pub(crate) fn workload(base_ns: u64) -> Workload {
    let epoch = (base_ns / 1_000_000_000) as u32;
    let traces: Vec<TraceIds> = (1..=4)
        .map(|seed| TraceIds::new(epoch, seed, base_ns + u64::from(seed) * 1_000 * MILLI))
        .collect();
    let (frontend_ms, to_orders_ms, orders_ms, dynamodb_ms, legacy_ms) = (
        [100, 200, 300],
        [80, 150, 250],
        [70, 140, 200],
        [10, 20, 12],
        [5, 8, 6],
    );
    let mut frontend = Vec::new();
    let mut payments = Vec::new();
    let mut notifier = Vec::new();
    let mut billing = Vec::new();
    let mut xray = Vec::new();
    for (index, ids) in traces.iter().take(3).enumerate() {
        let mut root = with_http_status(
            otlp_span(
                ids,
                ROOT,
                None,
                SERVER,
                "GET /checkout",
                (0, frontend_ms[index]),
            ),
            if index == 1 { 500 } else { 200 },
        );
        if index == 1 {
            root = with_error_status(root);
        }
        frontend.push(root);
        let mut to_orders = with_http_status(
            otlp_span(
                ids,
                TO_ORDERS,
                Some(ROOT),
                CLIENT,
                "POST /orders",
                (5, to_orders_ms[index]),
            ),
            if index == 2 { 404 } else { 200 },
        );
        if index == 2 {
            to_orders = with_error_status(to_orders);
        }
        frontend.push(to_orders);
        let mut to_legacy = with_http_status(
            otlp_span(
                ids,
                TO_LEGACY,
                Some(ROOT),
                CLIENT,
                "GET",
                (90, legacy_ms[index]),
            ),
            if index == 1 { 503 } else { 200 },
        );
        to_legacy
            .attributes
            .push(string_attribute("server.address", "legacy.example.com"));
        if index == 1 {
            to_legacy = with_error_status(to_legacy);
        }
        frontend.push(to_legacy);

        let mut subsegments = vec![json!({
            "id": hex::encode(ids.span_id(DYNAMODB)),
            "name": "DynamoDB",
            "namespace": "aws",
            "start_time": ids.seconds(10),
            "end_time": ids.seconds(10 + dynamodb_ms[index]),
            "aws": {"operation": "PutItem", "table_name": "orders"},
            "http": {"response": {"status": if index == 1 { 429 } else { 200 }}},
            "error": index == 1,
            "throttle": index == 1,
        })];
        if index < 2 {
            let status = if index == 1 { 500 } else { 200 };
            subsegments.push(json!({
                "id": hex::encode(ids.span_id(TO_PAYMENTS)),
                "name": "payments",
                "namespace": "remote",
                "start_time": ids.seconds(30),
                "end_time": ids.seconds(30 + [30, 60][index]),
                "http": {
                    "request": {"method": "POST", "url": "http://payments/charge"},
                    "response": {"status": status},
                },
                "fault": index == 1,
            }));
            let mut payment = otlp_span(
                ids,
                PAYMENTS,
                Some(TO_PAYMENTS),
                SERVER,
                "POST /charge",
                (32, [25, 50][index]),
            );
            if index == 1 {
                payment = with_error_status(payment);
            }
            payments.push(payment);
        }
        let orders = json!({
            "trace_id": ids.xray_trace_id(),
            "id": hex::encode(ids.span_id(ORDERS)),
            "parent_id": hex::encode(ids.span_id(TO_ORDERS)),
            "name": "orders",
            "origin": "AWS::EC2::Instance",
            "start_time": ids.seconds(6),
            "end_time": ids.seconds(6 + orders_ms[index]),
            "http": {"request": {"method": "POST", "url": "http://orders/orders"},
                     "response": {"status": if index == 2 { 404 } else { 200 }}},
            "error": index == 2,
            "subsegments": subsegments,
        });
        let mut orders = orders;
        if index == 0 {
            orders["annotations"] = json!({"tier": "gold", "items": 3});
        }
        if index == 0 {
            // The in-progress form first, as the SDKs send long segments:
            // it must not count.
            let mut in_progress = orders.clone();
            let object = in_progress.as_object_mut().unwrap();
            object.remove("end_time");
            object.remove("subsegments");
            object.insert("in_progress".into(), json!(true));
            xray.push(in_progress.to_string());
        }
        xray.push(orders.to_string());
    }
    let first = &traces[0];
    let mut publish = otlp_span(
        first,
        PUBLISH,
        Some(ROOT),
        PRODUCER,
        "order-events publish",
        (95, 2),
    );
    publish
        .attributes
        .push(string_attribute("messaging.system", "aws_sqs"));
    frontend.push(publish);
    notifier.push(otlp_span(
        first,
        NOTIFIER,
        Some(PUBLISH),
        CONSUMER,
        "order-events process",
        (120, 15),
    ));
    let fourth = &traces[3];
    let mut consume = otlp_span(
        fourth,
        BILLING,
        None,
        CONSUMER,
        "order-events receive",
        (0, 40),
    );
    consume.links.push(Link {
        trace_id: first.trace.to_vec(),
        span_id: first.span_id(PUBLISH).to_vec(),
        ..Default::default()
    });
    billing.push(consume);

    let otlp = [
        ("frontend", frontend),
        ("payments", payments),
        ("notifier", notifier),
        ("billing", billing),
    ]
    .into_iter()
    .map(|(service, spans)| request(service, spans).encode_to_vec())
    .collect();
    Workload {
        otlp,
        xray,
        start_ns: base_ns,
    }
}

/// The workload ten minutes ago (five seconds into a minute, so all of it
/// falls in one closed minute), sent to `server`: (workload, now in ns).
pub(crate) async fn send_workload_ten_minutes_ago(server: &TestServer) -> (Workload, u64) {
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let minute = 60_000_000_000;
    let workload = workload((now_ns - 10 * minute) / minute * minute + 5_000_000_000);
    send(server, &workload).await;
    (workload, now_ns)
}

pub(crate) async fn send(server: &TestServer, workload: &Workload) {
    let client = reqwest::Client::new();
    for body in &workload.otlp {
        let response = client
            .post(format!("{}/v1/traces", server.otlp_http_url()))
            .header("content-type", "application/x-protobuf")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }
    // One document per request, so the in-progress form arrives first.
    for document in &workload.xray {
        let response: Value = client
            .post(format!("{}/TraceSegments", server.xray_api_url()))
            .json(&json!({"TraceSegmentDocuments": [document]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            response["UnprocessedTraceSegments"],
            json!([]),
            "{document}"
        );
    }
}

async fn service_map(server: &TestServer, workload: &Workload, source: &str) -> Value {
    let start = workload.start_ns as f64 / 1e9 - 1.0;
    let end = start + 120.0;
    let url = format!(
        "{}/v1/service-map?start={start}&end={end}&source={source}",
        server.http_url()
    );
    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// A node or edge in a form that is compared exactly: counts, and the
/// quantiles checked separately within hdrhistogram's precision.
fn summary(map: &Value) -> (Vec<String>, Vec<String>) {
    let nodes = map["nodes"].as_array().unwrap();
    let name = |id: &Value| {
        nodes[id.as_u64().unwrap() as usize]["name"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let counts = |stats: &Value| {
        format!(
            "total={} ok={} errors={} throttles={} faults={}",
            stats["total"], stats["ok"], stats["errors"], stats["throttles"], stats["faults"]
        )
    };
    let node_lines = nodes
        .iter()
        .map(|node| {
            let stats = match node.get("stats") {
                Some(stats) => counts(stats),
                None => "-".into(),
            };
            format!(
                "{} [{}]{} {stats}",
                node["name"].as_str().unwrap(),
                node["type"].as_str().unwrap(),
                if node["root"] == json!(true) {
                    " root"
                } else {
                    ""
                }
            )
        })
        .collect();
    let edge_lines = map["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|edge| {
            format!(
                "{} -> {} ({}, {}) {} failed={}",
                name(&edge["source"]),
                name(&edge["target"]),
                edge["connection_type"].as_str().unwrap(),
                edge["edge_type"].as_str().unwrap(),
                counts(&edge["stats"]),
                edge["stats"]["failed"]
            )
        })
        .collect();
    (node_lines, edge_lines)
}

fn assert_close(got: &Value, expected_seconds: f64, what: &str) {
    let got = got
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: not a number"));
    assert!(
        (got - expected_seconds).abs() <= expected_seconds * 0.01 + 1e-6,
        "{what}: {got} vs {expected_seconds}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_service_map_of_a_known_workload_from_streaming_and_from_raw_spans() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServerBuilder::new(&dir.path().join("data"))
        .config("[service_graph]\nwait = \"1s\"\n")
        .spawn();
    let (workload, _) = send_workload_ten_minutes_ago(&server).await;

    let raw = service_map(&server, &workload, "raw").await;
    let (nodes, edges) = summary(&raw);
    assert_eq!(
        nodes,
        vec![
            "DynamoDB [AWS::DynamoDB::Table] total=3 ok=2 errors=1 throttles=1 faults=0",
            "billing [] root total=1 ok=1 errors=0 throttles=0 faults=0",
            "client [client] -",
            "frontend [] root total=3 ok=2 errors=0 throttles=0 faults=1",
            "legacy.example.com [remote] total=3 ok=2 errors=0 throttles=0 faults=1",
            "notifier [] total=1 ok=1 errors=0 throttles=0 faults=0",
            "orders [AWS::EC2::Instance] total=3 ok=2 errors=1 throttles=0 faults=0",
            "payments [] total=2 ok=1 errors=0 throttles=0 faults=1",
        ]
    );
    assert_eq!(
        edges,
        vec![
            "client -> billing (virtual_node, standard) total=1 ok=1 errors=0 throttles=0 faults=0 failed=0",
            "client -> frontend (virtual_node, standard) total=3 ok=2 errors=0 throttles=0 faults=1 failed=1",
            "frontend -> billing (messaging_system, link) total=1 ok=1 errors=0 throttles=0 faults=0 failed=0",
            "frontend -> legacy.example.com (virtual_node, standard) total=3 ok=2 errors=0 throttles=0 faults=1 failed=1",
            "frontend -> notifier (messaging_system, standard) total=1 ok=1 errors=0 throttles=0 faults=0 failed=0",
            "frontend -> orders (, standard) total=3 ok=2 errors=1 throttles=0 faults=0 failed=1",
            "orders -> DynamoDB (virtual_node, standard) total=3 ok=2 errors=1 throttles=1 faults=0 failed=1",
            "orders -> payments (, standard) total=2 ok=1 errors=0 throttles=0 faults=1 failed=1",
        ]
    );
    // Quantiles within hdrhistogram's 1%: p50 of {100, 200, 300} ms is 200.
    let node = |name: &str| {
        raw["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|node| node["name"] == name)
            .unwrap()
            .clone()
    };
    assert_close(
        &node("frontend")["stats"]["latency"]["p50"],
        0.2,
        "frontend p50",
    );
    assert_close(
        &node("frontend")["stats"]["latency"]["max"],
        0.3,
        "frontend max",
    );
    assert_close(
        &node("orders")["stats"]["latency"]["p90"],
        0.2,
        "orders p90",
    );
    assert_close(
        &node("DynamoDB")["stats"]["latency"]["p50"],
        0.012,
        "dynamodb p50",
    );
    let orders_edge = raw["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|edge| edge["server"] == "orders")
        .unwrap();
    assert_close(
        &orders_edge["stats"]["latency"]["p50"],
        0.15,
        "frontend->orders client p50",
    );
    assert_close(
        &orders_edge["server_latency"]["p50"],
        0.14,
        "frontend->orders server p50",
    );
    assert_close(
        &orders_edge["stats"]["duration_sum_seconds"],
        0.48,
        "frontend->orders sum",
    );

    // The streaming path writes the minute once its waits are over; then
    // the precomputed rows must give the very same map, and so must auto.
    let deadline = Instant::now() + Duration::from_secs(60);
    let precomputed = loop {
        let precomputed = service_map(&server, &workload, "precomputed").await;
        if precomputed == raw || Instant::now() > deadline {
            break precomputed;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(summary(&precomputed), summary(&raw));
    assert_eq!(precomputed, raw);
    assert_eq!(service_map(&server, &workload, "auto").await, raw);
    // A window of whole minutes before the watermark is answered from the
    // precomputed rows alone under auto: still the same map.
    let minute_start = workload.start_ns / 60_000_000_000 * 60;
    let aligned = reqwest::get(format!(
        "{}/v1/service-map?start={minute_start}&end={}&source=auto",
        server.http_url(),
        minute_start + 120
    ))
    .await
    .unwrap()
    .json::<Value>()
    .await
    .unwrap();
    assert_eq!(aligned, raw);

    // Latency histograms of a service and of one operation.
    let start = workload.start_ns as f64 / 1e9 - 1.0;
    let histogram = |query: String| {
        let url = format!(
            "{}/v1/histogram?start={start}&end={}&{query}",
            server.http_url(),
            start + 120.0
        );
        async move {
            let response = reqwest::get(&url).await.unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, frontend) = histogram("service=frontend".into()).await;
    assert_eq!(status, 200);
    assert_eq!(frontend["count"], json!(3));
    assert_close(&frontend["quantiles"]["p50"], 0.2, "frontend p50");
    assert_close(&frontend["quantiles"]["p99"], 0.3, "frontend p99");
    let bucket = |histogram: &Value, le: Value| {
        histogram["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|bucket| bucket["le"] == le)
            .unwrap()["count"]
            .clone()
    };
    assert_eq!(bucket(&frontend, json!(0.128)), json!(1));
    assert_eq!(bucket(&frontend, json!(0.256)), json!(2));
    assert_eq!(bucket(&frontend, json!("+Inf")), json!(3));
    assert_eq!(frontend["distribution"].as_array().unwrap().len(), 3);
    let (_, to_orders) = histogram("service=frontend&operation=POST%20/orders".into()).await;
    assert_eq!(to_orders["count"], json!(3));
    assert_close(&to_orders["quantiles"]["p50"], 0.15, "POST /orders p50");
    let (status, _) = histogram("operation=x".into()).await;
    assert_eq!(status, 400);
}

/// Runs boto3 `xray` client calls (see `tests/python/xray_query_api.py`).
pub(crate) fn boto3(server: &TestServer, calls: &Value) -> Vec<Value> {
    boto3_as(server, calls, ("AKIDEXAMPLE", "secret"))
}

/// [`boto3`] signing with `credentials` (access key id, secret).
pub(crate) fn boto3_as(
    server: &TestServer,
    calls: &Value,
    credentials: (&str, &str),
) -> Vec<Value> {
    use std::io::Write;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/xray_query_api.py"
    );
    let mut child = std::process::Command::new(crate::python_sdk::python())
        .arg(script)
        .arg(server.xray_api_url())
        .env("TRACELAKE_TEST_ACCESS_KEY_ID", credentials.0)
        .env("TRACELAKE_TEST_SECRET_ACCESS_KEY", credentials.1)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run boto3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(calls.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "boto3 failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("boto3 output is json")
}

#[tokio::test(flavor = "multi_thread")]
async fn boto3_get_service_graph_returns_the_workload_map() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServerBuilder::new(dir.path()).spawn();
    let (workload, _) = send_workload_ten_minutes_ago(&server).await;
    let base_ns = workload.start_ns;
    let start = workload.start_ns as f64 / 1e9 - 1.0;
    let results = boto3(
        &server,
        &json!([
            {"call": "get_service_graph", "args": {"StartTime": start, "EndTime": start + 120.0}},
            {"call": "get_service_graph", "paginate": true,
             "args": {"StartTime": start, "EndTime": start + 120.0}},
            {"call": "get_service_graph", "args": {"StartTime": start + 10.0, "EndTime": start}},
            {"call": "get_service_graph",
             "args": {"StartTime": start, "EndTime": start + 120.0, "GroupName": "nope"}},
        ]),
    );
    let graph = &results[0];
    let services = graph["Services"].as_array().unwrap();
    let by_id = |id: &Value| {
        services
            .iter()
            .find(|service| service["ReferenceId"] == *id)
            .unwrap()
    };
    let mut edges: Vec<String> = Vec::new();
    for service in services {
        for edge in service["Edges"].as_array().unwrap() {
            let target = by_id(&edge["ReferenceId"]);
            let statistics = &edge["SummaryStatistics"];
            edges.push(format!(
                "{} -> {}{} total={} ok={} errors={} throttles={} faults={} histogram={}",
                service["Name"].as_str().unwrap(),
                target["Name"].as_str().unwrap(),
                if edge.get("EdgeType").is_some() {
                    " (link)"
                } else {
                    ""
                },
                statistics["TotalCount"],
                statistics["OkCount"],
                statistics["ErrorStatistics"]["TotalCount"],
                statistics["ErrorStatistics"]["ThrottleCount"],
                statistics["FaultStatistics"]["TotalCount"],
                edge["ResponseTimeHistogram"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|entry| entry["Count"].as_u64().unwrap())
                    .sum::<u64>(),
            ));
        }
    }
    assert_eq!(
        edges,
        vec![
            "client -> billing total=1 ok=1 errors=0 throttles=0 faults=0 histogram=1",
            "client -> frontend total=3 ok=2 errors=0 throttles=0 faults=1 histogram=3",
            "frontend -> billing (link) total=1 ok=1 errors=0 throttles=0 faults=0 histogram=1",
            "frontend -> legacy.example.com total=3 ok=2 errors=0 throttles=0 faults=1 histogram=3",
            "frontend -> notifier total=1 ok=1 errors=0 throttles=0 faults=0 histogram=1",
            "frontend -> orders total=3 ok=2 errors=1 throttles=0 faults=0 histogram=3",
            "orders -> DynamoDB total=3 ok=2 errors=1 throttles=1 faults=0 histogram=3",
            "orders -> payments total=2 ok=1 errors=0 throttles=0 faults=1 histogram=2",
        ]
    );
    let service = |name: &str| {
        services
            .iter()
            .find(|service| service["Name"] == name)
            .unwrap()
    };
    assert_eq!(service("frontend")["Root"], json!(true));
    assert_eq!(service("orders")["Root"], json!(false));
    assert_eq!(service("orders")["Type"], "AWS::EC2::Instance");
    assert_eq!(service("DynamoDB")["Type"], "AWS::DynamoDB::Table");
    assert_eq!(service("client")["Type"], "client");
    assert!(service("client").get("SummaryStatistics").is_none());
    let orders = &service("orders")["SummaryStatistics"];
    assert_eq!(
        (
            orders["TotalCount"].clone(),
            orders["OkCount"].clone(),
            orders["ErrorStatistics"]["OtherCount"].clone()
        ),
        (json!(3), json!(2), json!(1))
    );
    assert_close(
        &orders["TotalResponseTime"],
        0.41,
        "orders total response time",
    );
    let durations: Vec<f64> = service("frontend")["DurationHistogram"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["Value"].as_f64().unwrap())
        .collect();
    assert_eq!(durations.len(), 3);
    for (got, expected) in durations.iter().zip([0.1, 0.2, 0.3]) {
        assert_close(&json!(got), expected, "frontend duration histogram");
    }
    // The paginator sees one page with the same services.
    assert_eq!(results[1]["pages"][0]["Services"], graph["Services"]);
    assert_eq!(results[2]["raised"], "InvalidRequestException");
    assert_eq!(results[3]["raised"], "InvalidRequestException");

    // Groups, a group's service map and summaries, the graph of one trace,
    // time series of a service and of an edge.
    let window = json!({"StartTime": start, "EndTime": start + 120.0});
    let with = |extra: Value| {
        let mut args = window.clone();
        args.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        args
    };
    let first = TraceIds::new((base_ns / 1_000_000_000) as u32, 1, 0).xray_trace_id();
    let results = boto3(
        &server,
        &json!([
            {"call": "create_group", "args": {"GroupName": "payment-faults",
                "FilterExpression": "service(\"payments\") { fault }"}},
            {"call": "create_group", "args": {"GroupName": "payment-faults"}},
            {"call": "create_group", "args": {"GroupName": "bad", "FilterExpression": "responsetime >"}},
            {"call": "create_group", "args": {"GroupName": "temp", "FilterExpression": "ok"}},
            {"call": "update_group", "args": {"GroupName": "temp", "FilterExpression": "fault"}},
            {"call": "delete_group", "args": {"GroupName": "temp"}},
            {"call": "get_group", "args": {"GroupName": "temp"}},
            {"call": "get_group", "args": {"GroupName": "payment-faults"}},
            {"call": "get_groups", "args": {}},
            {"call": "get_service_graph", "args": with(json!({"GroupName": "payment-faults"}))},
            {"call": "get_trace_summaries", "args": with(json!({
                "FilterExpression": "group.name = \"payment-faults\" AND !ok"}))},
            {"call": "get_trace_graph", "args": {"TraceIds": [first]}},
            {"call": "get_time_series_service_statistics", "args": with(json!({
                "EntitySelectorExpression": "service(\"frontend\")", "Period": 60}))},
            {"call": "get_time_series_service_statistics", "args": with(json!({
                "EntitySelectorExpression": "edge(\"orders\", \"DynamoDB\")", "Period": 300}))},
            {"call": "get_time_series_service_statistics", "args": with(json!({"Period": 45}))},
            {"call": "delete_group", "args": {"GroupName": "Default"}},
        ]),
    );
    let created = &results[0]["Group"];
    assert_eq!(created["GroupName"], "payment-faults");
    assert!(
        created["GroupARN"]
            .as_str()
            .unwrap()
            .contains(":group/payment-faults/")
    );
    for (index, needle) in [(1, "already exists"), (2, "position 15"), (6, "not found")] {
        assert_eq!(
            results[index]["raised"], "InvalidRequestException",
            "{index}"
        );
        assert!(
            results[index]["message"].as_str().unwrap().contains(needle),
            "{}",
            results[index]
        );
    }
    assert_eq!(results[4]["Group"]["FilterExpression"], "fault");
    assert_eq!(results[5], json!({}));
    assert_eq!(
        results[7]["Group"]["FilterExpression"],
        "service(\"payments\") { fault }"
    );
    let group_names: Vec<&str> = results[8]["Groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|group| group["GroupName"].as_str().unwrap())
        .collect();
    assert_eq!(group_names, vec!["Default", "payment-faults"]);

    let graph_edges = |graph: &Value| {
        let services = graph["Services"].as_array().unwrap();
        let mut edges = Vec::new();
        for service in services {
            for edge in service["Edges"].as_array().unwrap() {
                let target = services
                    .iter()
                    .find(|candidate| candidate["ReferenceId"] == edge["ReferenceId"])
                    .unwrap();
                edges.push(format!(
                    "{} -> {} total={} faults={}",
                    service["Name"].as_str().unwrap(),
                    target["Name"].as_str().unwrap(),
                    edge["SummaryStatistics"]["TotalCount"],
                    edge["SummaryStatistics"]["FaultStatistics"]["TotalCount"],
                ));
            }
        }
        edges
    };
    assert_eq!(
        graph_edges(&results[9]),
        vec![
            "client -> frontend total=1 faults=1",
            "frontend -> legacy.example.com total=1 faults=1",
            "frontend -> orders total=1 faults=0",
            "orders -> DynamoDB total=1 faults=0",
            "orders -> payments total=1 faults=1",
        ]
    );
    let group_traces: Vec<String> = results[10]["TraceSummaries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|summary| trace_name(base_ns, summary["Id"].as_str().unwrap()))
        .collect();
    assert_eq!(group_traces, vec!["T2"]);
    assert_eq!(
        graph_edges(&results[11]),
        vec![
            "client -> frontend total=1 faults=0",
            "frontend -> legacy.example.com total=1 faults=0",
            "frontend -> notifier total=1 faults=0",
            "frontend -> orders total=1 faults=0",
            "orders -> DynamoDB total=1 faults=0",
            "orders -> payments total=1 faults=0",
        ]
    );
    let frontend_series = results[12]["TimeSeriesServiceStatistics"]
        .as_array()
        .unwrap();
    assert_eq!(frontend_series.len(), 1, "{frontend_series:?}");
    let point = &frontend_series[0]["ServiceSummaryStatistics"];
    assert_eq!(
        (
            point["TotalCount"].clone(),
            point["OkCount"].clone(),
            point["FaultStatistics"]["TotalCount"].clone()
        ),
        (json!(3), json!(2), json!(1))
    );
    assert_eq!(
        frontend_series[0]["Timestamp"].as_f64().unwrap() as u64,
        base_ns / 60_000_000_000 * 60
    );
    let edge_point = &results[13]["TimeSeriesServiceStatistics"][0]["EdgeSummaryStatistics"];
    assert_eq!(edge_point["TotalCount"], json!(3));
    assert_eq!(edge_point["ErrorStatistics"]["ThrottleCount"], json!(1));
    assert_eq!(results[14]["raised"], "InvalidRequestException");
    assert_eq!(results[15]["raised"], "InvalidRequestException");
}

/// Which workload trace (1-4) an X-Ray trace id is, or "bulk".
fn trace_name(workload_base_ns: u64, id: &str) -> String {
    let epoch = (workload_base_ns / 1_000_000_000) as u32;
    for seed in 1..=4u8 {
        let ids = TraceIds::new(epoch, seed, 0);
        if ids.xray_trace_id() == id {
            return format!("T{seed}");
        }
    }
    "bulk".into()
}

#[tokio::test(flavor = "multi_thread")]
async fn boto3_get_trace_summaries_filters_pages_and_batch_get_traces() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServerBuilder::new(dir.path()).spawn();
    let (workload, _) = send_workload_ten_minutes_ago(&server).await;
    let base_ns = workload.start_ns;
    // 150 one-span traces of service "bulk", for paging.
    let bulk: Vec<Span> = (0..150u64)
        .map(|index| {
            let ids = TraceIds::new(
                (base_ns / 1_000_000_000) as u32,
                100,
                base_ns + index * MILLI,
            );
            let mut trace = ids.trace;
            trace[8..].copy_from_slice(&(index + 1).to_be_bytes());
            let mut span = otlp_span(&ids, ROOT, None, SERVER, "GET /bulk", (20_000, 1));
            span.trace_id = trace.to_vec();
            span
        })
        .collect();
    let response = reqwest::Client::new()
        .post(format!("{}/v1/traces", server.otlp_http_url()))
        .header("content-type", "application/x-protobuf")
        .body(request("bulk", bulk).encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let start = base_ns as f64 / 1e9 - 1.0;
    let end = start + 120.0;
    let filters = [
        ("fault", vec!["T2"]),
        ("!ok AND !service(\"bulk\")", vec!["T2"]),
        ("service(\"orders\") { error }", vec!["T3"]),
        ("edge(\"orders\", \"payments\") { fault }", vec!["T2"]),
        ("service(\"DynamoDB\") { throttle }", vec!["T2"]),
        (
            "service(id(name: \"DynamoDB\", type: \"AWS::DynamoDB::Table\")) { ok } responsetime < 0.25 !service(\"bulk\")",
            vec!["T1"],
        ),
        ("responsetime >= 0.25", vec!["T3"]),
        ("http.status = 500", vec!["T2"]),
        (
            "service(\"orders\") { http.url CONTAINS \"/orders\" }",
            vec!["T3", "T2", "T1"],
        ),
        ("annotation.tier = \"gold\"", vec!["T1"]),
        (
            "annotation.items > 2 AND annotation.tier BEGINSWITH \"go\"",
            vec!["T1"],
        ),
        ("partial", vec![]),
        (
            "root !fault service(\"frontend\") OR service(\"billing\")",
            vec!["T4", "T3", "T1"],
        ),
        (
            "(edge(\"frontend\", \"legacy.example.com\") { fault } OR service(\"payments\") { fault }) AND duration > 0.1",
            vec!["T2"],
        ),
    ];
    let mut calls: Vec<Value> = filters
        .iter()
        .map(|(expression, _)| {
            json!({"call": "get_trace_summaries", "args": {
                "StartTime": start, "EndTime": end, "TimeRangeType": "Event",
                "FilterExpression": expression}})
        })
        .collect();
    calls.push(
        json!({"call": "get_trace_summaries", "paginate": true, "args": {
        "StartTime": start, "EndTime": end, "FilterExpression": "service(\"bulk\")"}}),
    );
    calls.push(json!({"call": "get_trace_summaries", "args": {
        "StartTime": start, "EndTime": end, "FilterExpression": "responsetime >"}}));
    calls.push(json!({"call": "get_trace_summaries", "args": {
        "StartTime": start, "EndTime": end, "FilterExpression": "service(orders) { fault }"}}));
    calls.push(json!({"call": "get_trace_summaries", "args": {
        "StartTime": start - 2.0 * 86400.0, "EndTime": end}}));
    let first = TraceIds::new((base_ns / 1_000_000_000) as u32, 1, 0).xray_trace_id();
    calls.push(json!({"call": "batch_get_traces", "args": {"TraceIds": [
        first, "1-00000000-000000000000000000000000", "bogus"]}}));
    let results = boto3(&server, &Value::Array(calls));

    for ((expression, expected), result) in filters.iter().zip(&results) {
        let got: Vec<String> = result["TraceSummaries"]
            .as_array()
            .unwrap_or_else(|| panic!("{expression}: {result}"))
            .iter()
            .map(|summary| trace_name(base_ns, summary["Id"].as_str().unwrap()))
            .collect();
        assert_eq!(got, *expected, "{expression}");
    }
    let fault = &results[0]["TraceSummaries"][0];
    assert_eq!(fault["HasFault"], json!(true));
    assert_eq!(fault["Http"]["HttpStatus"], json!(500));
    assert_close(&fault["ResponseTime"], 0.2, "T2 response time");
    assert_eq!(fault["EntryPoint"]["Name"], "frontend");
    let annotated = &results[9]["TraceSummaries"][0];
    assert_eq!(
        annotated["Annotations"]["tier"][0]["AnnotationValue"]["StringValue"],
        "gold"
    );

    let pages = results[filters.len()]["pages"].as_array().unwrap();
    let sizes: Vec<usize> = pages
        .iter()
        .map(|page| page["TraceSummaries"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, vec![100, 50]);
    let mut ids: Vec<&str> = pages
        .iter()
        .flat_map(|page| page["TraceSummaries"].as_array().unwrap())
        .map(|summary| summary["Id"].as_str().unwrap())
        .collect();
    ids.dedup();
    assert_eq!(ids.len(), 150, "pages neither repeat nor skip traces");

    let invalid = &results[filters.len() + 1];
    assert_eq!(invalid["raised"], "InvalidRequestException");
    assert!(
        invalid["message"].as_str().unwrap().contains("position 15"),
        "{invalid}"
    );
    let unquoted = &results[filters.len() + 2];
    assert_eq!(unquoted["raised"], "InvalidRequestException");
    assert!(
        unquoted["message"].as_str().unwrap().contains("position 9"),
        "{unquoted}"
    );

    let too_long = &results[filters.len() + 3];
    assert_eq!(too_long["raised"], "InvalidRequestException");
    assert!(
        too_long["message"].as_str().unwrap().contains("24 hours"),
        "{too_long}"
    );

    let batch = &results[filters.len() + 4];
    assert_eq!(
        batch["UnprocessedTraceIds"],
        json!(["1-00000000-000000000000000000000000", "bogus"])
    );
    let segments = batch["Traces"][0]["Segments"].as_array().unwrap();
    let mut names: Vec<String> = segments
        .iter()
        .map(|segment| {
            let document: Value =
                serde_json::from_str(segment["Document"].as_str().unwrap()).unwrap();
            document["name"].as_str().unwrap().to_string()
        })
        .collect();
    names.sort();
    assert_eq!(names, vec!["frontend", "notifier", "orders", "payments"]);
    let orders: Value = segments
        .iter()
        .map(|segment| {
            serde_json::from_str::<Value>(segment["Document"].as_str().unwrap()).unwrap()
        })
        .find(|document| document["name"] == "orders")
        .unwrap();
    assert_eq!(orders["annotations"]["tier"], "gold");
    assert_eq!(orders["origin"], "AWS::EC2::Instance");
    assert_eq!(orders["subsegments"].as_array().unwrap().len(), 2);
}

/// X-Ray's SQS shape: a producer's `SendMessage` subsegment, and the
/// consumer's segment in a trace of its own linked to it (as Lambda runs
/// SQS consumers). The map reads producer -> `AWS::SQS::Queue` ->
/// consumer, the last edge through the link, from raw spans, from the
/// streaming rows and in GetTraceGraph.
#[tokio::test(flavor = "multi_thread")]
async fn an_sqs_consumer_in_a_linked_trace_hangs_off_the_queue_node() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServerBuilder::new(&dir.path().join("data"))
        .config("[service_graph]\nwait = \"1s\"\n")
        .spawn();
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let minute = 60_000_000_000;
    let base_ns = (now_ns - 10 * minute) / minute * minute + 5_000_000_000;
    let epoch = (base_ns / 1_000_000_000) as u32;
    let producer_trace = TraceIds::new(epoch, 7, base_ns);
    let consumer_trace = TraceIds::new(epoch, 8, base_ns + 100 * MILLI);
    let send_id = hex::encode(producer_trace.span_id(PUBLISH));
    let producer = json!({
        "trace_id": producer_trace.xray_trace_id(),
        "id": hex::encode(producer_trace.span_id(ROOT)),
        "name": "create-order",
        "origin": "AWS::Lambda::Function",
        "start_time": producer_trace.seconds(0),
        "end_time": producer_trace.seconds(50),
        "subsegments": [{
            "id": send_id,
            "name": "SQS",
            "namespace": "aws",
            "start_time": producer_trace.seconds(10),
            "end_time": producer_trace.seconds(15),
            "aws": {"operation": "SendMessage", "queue_url": "http://127.0.0.1:9324/queue/order-events"},
            "http": {"response": {"status": 200}},
        }],
    });
    let consumer = json!({
        "trace_id": consumer_trace.xray_trace_id(),
        "id": hex::encode(consumer_trace.span_id(ROOT)),
        "name": "fulfil-order",
        "origin": "AWS::Lambda::Function",
        "start_time": consumer_trace.seconds(0),
        "end_time": consumer_trace.seconds(30),
        "links": [{"trace_id": producer_trace.xray_trace_id(), "id": send_id}],
    });
    let workload = Workload {
        otlp: Vec::new(),
        xray: vec![producer.to_string(), consumer.to_string()],
        start_ns: base_ns,
    };
    send(&server, &workload).await;

    let raw = service_map(&server, &workload, "raw").await;
    let (nodes, edges) = summary(&raw);
    assert_eq!(
        nodes,
        vec![
            "SQS [AWS::SQS::Queue] total=1 ok=1 errors=0 throttles=0 faults=0",
            "client [client] -",
            "create-order [AWS::Lambda::Function] root total=1 ok=1 errors=0 throttles=0 faults=0",
            "fulfil-order [AWS::Lambda::Function] root total=1 ok=1 errors=0 throttles=0 faults=0",
        ]
    );
    assert_eq!(
        edges,
        vec![
            "SQS -> fulfil-order (messaging_system, link) total=1 ok=1 errors=0 throttles=0 faults=0 failed=0",
            "client -> create-order (virtual_node, standard) total=1 ok=1 errors=0 throttles=0 faults=0 failed=0",
            "client -> fulfil-order (virtual_node, standard) total=1 ok=1 errors=0 throttles=0 faults=0 failed=0",
            "create-order -> SQS (messaging_system, standard) total=1 ok=1 errors=0 throttles=0 faults=0 failed=0",
        ]
    );
    // The streaming path names the link's source the same way.
    let deadline = Instant::now() + Duration::from_secs(60);
    let precomputed = loop {
        let precomputed = service_map(&server, &workload, "precomputed").await;
        if summary(&precomputed) == summary(&raw) || Instant::now() > deadline {
            break precomputed;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(summary(&precomputed), summary(&raw));

    // GetTraceGraph of both traces draws the same path.
    let results = boto3(
        &server,
        &json!([{"call": "get_trace_graph", "args": {"TraceIds": [
            producer_trace.xray_trace_id(), consumer_trace.xray_trace_id(),
        ]}}]),
    );
    let services = results[0]["Services"].as_array().unwrap();
    let name_of = |id: &Value| {
        services
            .iter()
            .find(|service| service["ReferenceId"] == *id)
            .map(|service| service["Name"].as_str().unwrap().to_string())
            .unwrap()
    };
    let mut graph_edges: Vec<String> = services
        .iter()
        .flat_map(|service| {
            service["Edges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|edge| {
                    format!(
                        "{} -> {}",
                        service["Name"].as_str().unwrap(),
                        name_of(&edge["ReferenceId"])
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect();
    graph_edges.sort();
    assert!(
        graph_edges.contains(&"create-order -> SQS".to_string())
            && graph_edges.contains(&"SQS -> fulfil-order".to_string())
            && !graph_edges.contains(&"create-order -> fulfil-order".to_string()),
        "{graph_edges:?}"
    );
}

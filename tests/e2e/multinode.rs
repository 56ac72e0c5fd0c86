//! Several tracelake processes on one S3-compatible store (Garage, moto):
//! collectors, a querier and compactors (`serve --role`).

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::Value;

use crate::otlp::{fetch_trace, request, span_id, trace_id};
use crate::s3::S3Server;
use crate::server::{TestServer, TestServerBuilder, sql};

/// How many `listening` lines each role prints.
fn listeners(role: &str) -> usize {
    match role {
        "collector" => 5,
        "query" => 2,
        _ => 1,
    }
}

/// A node of `role` on `s3`'s bucket under `prefix`, with its own data dir.
fn node(
    s3: &S3Server,
    prefix: &str,
    role: &str,
    dir: &std::path::Path,
    extra: &str,
) -> TestServerBuilder {
    let config = format!("role = \"{role}\"\n{}{extra}", s3.config(prefix));
    TestServerBuilder::new(dir)
        .subcommand("serve", listeners(role))
        .flush_max_age("1s")
        .config(&config)
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// A span of `service` of kind `kind` starting at `start_ns`.
fn timed_span(trace: u64, id: u64, parent: Option<u64>, kind: i32, start_ns: u64) -> Span {
    Span {
        trace_id: trace_id(trace).to_vec(),
        span_id: span_id(id).to_vec(),
        parent_span_id: parent
            .map(|parent| span_id(parent).to_vec())
            .unwrap_or_default(),
        name: format!("op-{kind}"),
        kind,
        start_time_unix_nano: start_ns,
        end_time_unix_nano: start_ns + 5_000_000,
        ..Default::default()
    }
}

async fn export(collector: &TestServer, service: &str, spans: Vec<Span>) {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/traces", collector.otlp_http_url()))
        .header("content-type", "application/x-protobuf")
        .body(request(service, spans).encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

/// Sends `traces` calls frontend (client span, to `a`) -> backend (server
/// span, to `b`), starting at `start_ns`; ids from `first`.
async fn send_calls(a: &TestServer, b: &TestServer, first: u64, traces: u64, start_ns: u64) {
    let clients = (first..first + traces)
        .map(|trace| timed_span(trace, trace * 10, None, 3, start_ns))
        .collect();
    let servers = (first..first + traces)
        .map(|trace| {
            timed_span(
                trace,
                trace * 10 + 1,
                Some(trace * 10),
                2,
                start_ns + 1_000_000,
            )
        })
        .collect();
    export(a, "frontend", clients).await;
    export(b, "backend", servers).await;
}

async fn span_count(querier: &TestServer) -> u64 {
    let answer = sql(&querier.http_url(), "SELECT count(*) AS n FROM spans").await;
    answer["rows"][0]["n"]
        .as_u64()
        .unwrap_or_else(|| panic!("{answer}"))
}

/// Polls `check` until it holds or `timeout` passes.
async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> F,
) {
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn service_map_edges(querier: &TestServer, start_ns: u64, source: &str) -> Vec<String> {
    let start = start_ns as f64 / 1e9 - 60.0;
    let url = format!(
        "{}/v1/service-map?start={start}&end={}&source={source}",
        querier.http_url(),
        start + 240.0
    );
    let map: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    let nodes = map["nodes"].as_array().cloned().unwrap_or_default();
    let name = |id: &Value| {
        nodes[id.as_u64().unwrap() as usize]["name"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let mut edges: Vec<String> = map["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("{map}"))
        .iter()
        .map(|edge| {
            format!(
                "{} -> {} total={}",
                name(&edge["source"]),
                name(&edge["target"]),
                edge["stats"]["total"]
            )
        })
        .collect();
    edges.sort();
    edges
}

#[tokio::test(flavor = "multi_thread")]
async fn collectors_querier_and_compactor_share_a_garage_bucket() {
    let s3 = S3Server::garage();
    let dir = tempfile::tempdir().unwrap();
    let prefix = "cluster";
    let collector = |name: &str| {
        node(
            &s3,
            prefix,
            "collector",
            &dir.path().join(name),
            &format!("[cluster]\nnode_id = \"{name}\"\n"),
        )
    };
    let mut a = collector("collector-a").spawn();
    let b = collector("collector-b").spawn();
    let querier = node(
        &s3,
        prefix,
        "query",
        &dir.path().join("query"),
        "[cluster]\nrefresh_interval = \"1s\"\n",
    )
    .spawn();

    // Three minutes ago, so the compactor may compute the minute's rows.
    let start_ns = (now_ns() - 180_000_000_000) / 60_000_000_000 * 60_000_000_000 + 5_000_000_000;
    // Several flushes: several small blocks per collector in one hour.
    for round in 0..4 {
        send_calls(&a, &b, 1 + round * 25, 25, start_ns + round * 1_000_000).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    eventually(
        "all 200 spans through the querier",
        Duration::from_secs(60),
        || async { span_count(&querier).await == 200 },
    )
    .await;
    // By id: each trace's two spans came through different collectors.
    let client = reqwest::Client::new();
    let trace = fetch_trace(&client, &querier.http_url(), &trace_id(7))
        .await
        .expect("trace 7");
    assert_eq!(crate::otlp::spans_of(&trace).len(), 2);
    // By search (TraceQL, as Grafana's Tempo data source sends it).
    let search = format!(
        "{}/api/search?q=%7Bresource.service.name%3D%22backend%22%7D&limit=500&start={}&end={}",
        querier.http_url(),
        start_ns / 1_000_000_000 - 60,
        start_ns / 1_000_000_000 + 120
    );
    let found: Value = reqwest::get(&search).await.unwrap().json().await.unwrap();
    assert_eq!(
        found["traces"].as_array().map(Vec::len),
        Some(100),
        "{found}"
    );
    // The service map pairs calls whose two spans landed on different collectors.
    assert_eq!(
        service_map_edges(&querier, start_ns, "raw").await,
        vec![
            "client -> frontend total=100",
            "frontend -> backend total=100"
        ]
    );
    // Ingest on the querier is refused with a pointer to the collectors.
    let refused = client
        .post(format!("{}/TraceSegments", querier.xray_api_url()))
        .json(&serde_json::json!({"TraceSegmentDocuments": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains("send spans to a collector")
    );

    // The compactor (alone; Garage refuses leases, so the static assignment)
    // merges the blocks while queries keep answering in full.
    let blocks_before = querier.metric("tracelake_storage_blocks").await;
    assert!(blocks_before >= 4.0, "{blocks_before} blocks");
    let compactor = node(
        &s3,
        prefix,
        "compactor",
        &dir.path().join("compactor"),
        "[compaction]\ninterval = \"1s\"\ndelete_delay = \"2s\"\n[cluster]\nrefresh_interval = \"1s\"\nderived_settle = \"0s\"\n",
    )
    .spawn();
    assert!(
        compactor.early_lines.iter().any(|line| line
            .contains("compactor coordination static shard 0 of 1")
            && line.contains("ignores conditional writes")),
        "{:?}",
        compactor.early_lines
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        assert_eq!(
            span_count(&querier).await,
            200,
            "every span, once, during compaction"
        );
        let trace = fetch_trace(&client, &querier.http_url(), &trace_id(42))
            .await
            .expect("trace 42");
        assert_eq!(crate::otlp::spans_of(&trace).len(), 2);
        if querier.metric("tracelake_storage_blocks").await == 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "compaction did not merge the blocks"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        compactor
            .metric("tracelake_storage_compacted_blocks_total")
            .await
            >= blocks_before
    );
    // The compactor's rows of the settled minute pair the calls too.
    eventually(
        "precomputed service-map rows",
        Duration::from_secs(60),
        || async {
            service_map_edges(&querier, start_ns, "precomputed").await
                == vec![
                    "client -> frontend total=100",
                    "frontend -> backend total=100",
                ]
        },
    )
    .await;

    // Killing a collector loses nothing it acked: its WAL replays on restart.
    let later_ns = now_ns() - 1_000_000_000;
    send_calls(&a, &b, 1000, 10, later_ns).await;
    a.kill9();
    let restarted = collector("collector-a").spawn();
    eventually(
        "the killed collector's acked spans",
        Duration::from_secs(60),
        || async { span_count(&querier).await == 220 },
    )
    .await;
    let trace = fetch_trace(&client, &querier.http_url(), &trace_id(1005))
        .await
        .expect("trace 1005");
    assert_eq!(crate::otlp::spans_of(&trace).len(), 2);
    drop((restarted, b, querier, compactor));
}

/// Blocks of `collector` in `hours` different hours, two per hour.
async fn blocks_in_hours(collector: &TestServer, hours: u64) -> u64 {
    let hour_ns = 3_600_000_000_000;
    let base = (now_ns() - (hours + 2) * hour_ns) / hour_ns * hour_ns;
    let mut sent = 0;
    for round in 0..2 {
        for hour in 0..hours {
            let spans: Vec<Span> = (0..20)
                .map(|index| {
                    let id = 100_000 * (round + 1) + hour * 100 + index;
                    timed_span(id, id, None, 2, base + hour * hour_ns + 1_000_000)
                })
                .collect();
            sent += spans.len() as u64;
            export(collector, "svc", spans).await;
        }
        // One flush per round: two blocks per hour.
        tokio::time::sleep(Duration::from_millis(1600)).await;
    }
    sent
}

/// Two compactors started together: every window merged exactly once.
async fn two_compactors(s3: &S3Server, coordination: &str) -> (TestServer, TestServer) {
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("lease-{coordination}");
    let mut collector = node(s3, &prefix, "collector", &dir.path().join("collector"), "").spawn();
    let hours = 6;
    let sent = blocks_in_hours(&collector, hours).await;
    collector.stop();
    let querier = node(
        s3,
        &prefix,
        "query",
        &dir.path().join("query"),
        "[cluster]\nrefresh_interval = \"1s\"\n",
    )
    .spawn();
    assert_eq!(span_count(&querier).await, sent);
    assert_eq!(
        querier.metric("tracelake_storage_blocks").await,
        (2 * hours) as f64
    );
    let compactor = |shard: u32| {
        node(
            s3,
            &prefix,
            "compactor",
            &dir.path().join(format!("compactor-{shard}")),
            &format!(
                "[compaction]\ninterval = \"1s\"\n[cluster]\nrefresh_interval = \"1s\"\ncompactor_coordination = \"{coordination}\"\ncompactor_shard = {shard}\ncompactor_shards = 2\nderived_settle = \"1000h\"\n"
            ),
        )
    };
    let (one, two) = (compactor(0), compactor(1));
    let (one, two) = std::thread::scope(|scope| {
        let first = scope.spawn(|| one.spawn());
        let second = scope.spawn(|| two.spawn());
        (first.join().unwrap(), second.join().unwrap())
    });
    eventually("one block per hour", Duration::from_secs(90), || async {
        querier.metric("tracelake_storage_blocks").await == hours as f64
    })
    .await;
    // A window merged twice would leave two merged blocks: spans doubled,
    // and more sources counted than there were.
    assert_eq!(span_count(&querier).await, sent);
    let merged = one.metric("tracelake_storage_compacted_blocks_total").await
        + two.metric("tracelake_storage_compacted_blocks_total").await;
    assert_eq!(merged, (2 * hours) as f64);
    (one, two)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_compactors_take_turns_by_lease_on_a_store_with_conditional_writes() {
    let s3 = S3Server::moto();
    let (one, two) = two_compactors(&s3, "lease").await;
    for compactor in [&one, &two] {
        assert!(
            compactor
                .early_lines
                .iter()
                .any(|line| line == "compactor coordination lease")
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn garage_ignores_conditional_writes_so_leases_are_refused_for_the_static_assignment() {
    let s3 = S3Server::garage();
    let dir = tempfile::tempdir().unwrap();
    // Lease mode asked for explicitly: start-up fails, saying why.
    let refused = node(
        &s3,
        "refused",
        "compactor",
        &dir.path().join("c"),
        "[cluster]\ncompactor_coordination = \"lease\"\n",
    )
    .run_to_exit();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("ignores conditional writes") && stderr.contains("static"),
        "{stderr}"
    );
    // `auto` says so too and splits the windows statically.
    let (one, two) = two_compactors(&s3, "auto").await;
    for (shard, compactor) in [(0, &one), (1, &two)] {
        assert!(
            compactor.early_lines.iter().any(|line| line
                .starts_with(&format!("compactor coordination static shard {shard} of 2"))
                && line.contains("ignores conditional writes")),
            "{:?}",
            compactor.early_lines
        );
    }
}

/// POSTs the X-Ray API operation at `route` to `node`: status and body.
async fn xray_call(node: &TestServer, route: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/{route}", node.xray_api_url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// The node's rules as `name rate reservoir`, in the order they are tried.
async fn rules_of(node: &TestServer) -> Vec<String> {
    let (status, body) = xray_call(node, "GetSamplingRules", serde_json::json!({})).await;
    assert_eq!(status, 200, "{body}");
    body["SamplingRuleRecords"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|record| {
            let rule = &record["SamplingRule"];
            format!(
                "{} {} {}",
                rule["RuleName"].as_str().unwrap_or_default(),
                rule["FixedRate"],
                rule["ReservoirSize"]
            )
        })
        .collect()
}

/// The node's groups as `name filter insights`, by name.
async fn groups_of(node: &TestServer) -> Vec<String> {
    let (status, body) = xray_call(node, "Groups", serde_json::json!({})).await;
    assert_eq!(status, 200, "{body}");
    let mut groups: Vec<String> = body["Groups"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|group| {
            format!(
                "{} {} {}",
                group["GroupName"].as_str().unwrap_or_default(),
                group["FilterExpression"].as_str().unwrap_or("-"),
                group["InsightsConfiguration"]["InsightsEnabled"]
            )
        })
        .collect();
    groups.sort();
    groups
}

fn sampling_rule(name: &str, priority: i64, path: &str) -> Value {
    serde_json::json!({"SamplingRule": {
        "RuleName": name, "ResourceARN": "*", "Priority": priority, "FixedRate": 0.1,
        "ReservoirSize": 1, "ServiceName": "*", "ServiceType": "*", "Host": "*",
        "HTTPMethod": "*", "URLPath": path, "Version": 1,
    }})
}

/// GetSamplingTargets on `node` reporting on `rule`: the target document
/// and LastRuleModification.
async fn target_for(node: &TestServer, rule: &str) -> (Value, f64) {
    let now = now_ns() as f64 / 1e9;
    let (status, body) = xray_call(
        node,
        "SamplingTargets",
        serde_json::json!({"SamplingStatisticsDocuments": [{
            "RuleName": rule, "ClientID": "0123456789abcdef01234567", "Timestamp": now,
            "RequestCount": 10, "SampledCount": 1, "BorrowCount": 0,
        }]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let modified = body["LastRuleModification"].as_f64().unwrap_or_default();
    let target = body["SamplingTargetDocuments"]
        .as_array()
        .and_then(|documents| documents.first().cloned())
        .unwrap_or(Value::Null);
    (target, modified)
}

/// Polls `check` until it holds, at most `limit` after `since`.
async fn within<F: std::future::Future<Output = bool>>(
    what: &str,
    since: Instant,
    limit: Duration,
    mut check: impl FnMut() -> F,
) {
    while !check().await {
        assert!(
            since.elapsed() < limit,
            "{what}: not seen within {limit:?} of the change"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Rules and groups changed through one node are served by the others
/// within `cluster.refresh_interval`, and changes made through two nodes at
/// once all land, on Garage, which ignores conditional writes.
#[tokio::test(flavor = "multi_thread")]
async fn rules_and_groups_changed_through_one_node_reach_the_others_and_none_is_lost() {
    let s3 = S3Server::garage();
    let dir = tempfile::tempdir().unwrap();
    let prefix = "settings";
    let refresh = Duration::from_secs(1);
    // The interval, a listing and a poll.
    let limit = refresh + Duration::from_millis(1500);
    let cluster = "[cluster]\nrefresh_interval = \"1s\"\n";
    let spawn = |role: &str, name: &str| node(&s3, prefix, role, &dir.path().join(name), cluster);
    let collector_a = spawn("collector", "collector-a").spawn();
    let collector_b = spawn("collector", "collector-b").spawn();
    let querier_a = spawn("query", "query-a").spawn();
    let querier_b = spawn("query", "query-b").spawn();
    let sampling_nodes = [&collector_a, &collector_b, &querier_a, &querier_b];

    // Every node has read the rules and groups before they change.
    for node in sampling_nodes {
        assert_eq!(rules_of(node).await, ["Default 0.05 1"]);
    }
    for querier in [&querier_a, &querier_b] {
        assert_eq!(groups_of(querier).await, ["Default - false"]);
    }
    let (_, modified_before) = target_for(&collector_b, "Default").await;

    // A rule created through collector A is served and applied by the others.
    let (status, body) = xray_call(
        &collector_a,
        "CreateSamplingRule",
        sampling_rule("orders", 10, "/orders"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let created = Instant::now();
    for node in [&collector_b, &querier_a, &querier_b] {
        within("the new rule on another node", created, limit, || async {
            rules_of(node).await == ["orders 0.1 1", "Default 0.05 1"]
        })
        .await;
    }
    let (target, modified_after) = target_for(&collector_b, "orders").await;
    assert_eq!(target["RuleName"], "orders", "{target}");
    assert_eq!(target["FixedRate"], 0.1, "{target}");
    assert!(
        modified_after > modified_before,
        "SDKs polling collector B learn that the rules changed"
    );

    // A group created through querier A is known to querier B, and usable.
    let (status, body) = xray_call(
        &querier_a,
        "CreateGroup",
        serde_json::json!({"GroupName": "slow", "FilterExpression": "responsetime > 1"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let created = Instant::now();
    within("the new group on querier B", created, limit, || async {
        groups_of(&querier_b).await == ["Default - false", "slow responsetime > 1 false"]
    })
    .await;
    let now = now_ns() as f64 / 1e9;
    let (status, body) = xray_call(
        &querier_b,
        "ServiceGraph",
        serde_json::json!({"StartTime": now - 60.0, "EndTime": now, "GroupName": "slow"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // At once through both collectors: creates of different rules, and two
    // updates of one rule (one sets the rate, the other the reservoir).
    let mut calls = Vec::new();
    for index in 0..6 {
        let through = if index % 2 == 0 {
            &collector_a
        } else {
            &collector_b
        };
        calls.push(xray_call(
            through,
            "CreateSamplingRule",
            sampling_rule(&format!("race-{index}"), 20 + index, "/race"),
        ));
    }
    let rate = serde_json::json!({"SamplingRuleUpdate": {"RuleName": "orders", "FixedRate": 0.5}});
    let reservoir =
        serde_json::json!({"SamplingRuleUpdate": {"RuleName": "orders", "ReservoirSize": 9}});
    let (created, rate, reservoir) = tokio::join!(
        futures::future::join_all(calls),
        xray_call(&collector_a, "UpdateSamplingRule", rate),
        xray_call(&collector_b, "UpdateSamplingRule", reservoir),
    );
    for (status, body) in created.iter().chain([&rate, &reservoir]) {
        assert_eq!(*status, 200, "{body}");
    }
    let changed = Instant::now();
    let mut expected = vec!["orders 0.5 9".to_string()];
    expected.extend((0..6).map(|index| format!("race-{index} 0.1 1")));
    expected.push("Default 0.05 1".into());
    for node in sampling_nodes {
        within("every concurrent rule change", changed, limit, || async {
            rules_of(node).await == expected
        })
        .await;
    }

    // The same for groups, through both queriers.
    let (first, second, filter, insights) = tokio::join!(
        xray_call(
            &querier_a,
            "CreateGroup",
            serde_json::json!({"GroupName": "errors", "FilterExpression": "error"}),
        ),
        xray_call(
            &querier_b,
            "CreateGroup",
            serde_json::json!({"GroupName": "faults", "FilterExpression": "fault"}),
        ),
        xray_call(
            &querier_a,
            "UpdateGroup",
            serde_json::json!({"GroupName": "slow", "FilterExpression": "responsetime > 2"}),
        ),
        xray_call(
            &querier_b,
            "UpdateGroup",
            serde_json::json!({"GroupName": "slow", "InsightsConfiguration": {"InsightsEnabled": true}}),
        ),
    );
    for (status, body) in [&first, &second, &filter, &insights] {
        assert_eq!(*status, 200, "{body}");
    }
    let changed = Instant::now();
    for querier in [&querier_a, &querier_b] {
        within("every concurrent group change", changed, limit, || async {
            groups_of(querier).await
                == [
                    "Default - false",
                    "errors error false",
                    "faults fault false",
                    "slow responsetime > 2 true",
                ]
        })
        .await;
    }
    drop((collector_a, collector_b, querier_a, querier_b));
}

//! `tracelake demo` runs briefly; tracelake's own APIs then show the order
//! API's service map (client -> gateway -> functions -> table / queue ->
//! consumer), throttles and faults, cold starts, a call the execution
//! policy denied as a traced error, and whole traces in which the trace
//! header linked every hop from the gateway to the queue, and the
//! consumer's trace linked to the producer's.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::jaeger::url_encode;
use crate::server::TestServerBuilder;

/// tracelake's five listeners and the demo's gateway, runtime and workflows.
pub(crate) const DEMO_LISTENERS: usize = 8;

/// The demo's nodes on the service map: `(name, type)`.
pub(crate) const EXPECTED_NODES: [(&str, &str); 12] = [
    ("client", "client"),
    ("orders-api/prod", "AWS::ApiGateway::Stage"),
    ("create-order", "AWS::Lambda::Function"),
    ("charge-payment", "AWS::Lambda::Function"),
    ("get-order", "AWS::Lambda::Function"),
    ("fulfil-order", "AWS::Lambda::Function"),
    ("send-receipt", "AWS::Lambda::Function"),
    ("inventory", "AWS::EC2::Instance"),
    ("DynamoDB", "AWS::DynamoDB::Table"),
    ("SQS", "AWS::SQS::Queue"),
    ("order-fulfilment", "AWS::StepFunctions::StateMachine"),
    ("charge-card", "AWS::Lambda::Function"),
];

/// The demo's edges: `(client, server, connection_type)`.
/// The queue sits between producer and consumer, as X-Ray draws it: the
/// producer's call ends at the queue, the consumer's trace links to it.
pub(crate) const EXPECTED_EDGES: [(&str, &str, &str); 15] = [
    ("client", "orders-api/prod", "virtual_node"),
    ("orders-api/prod", "create-order", ""),
    ("orders-api/prod", "get-order", ""),
    ("orders-api/prod", "inventory", ""),
    ("create-order", "charge-payment", ""),
    ("create-order", "DynamoDB", "virtual_node"),
    ("create-order", "SQS", "messaging_system"),
    ("SQS", "fulfil-order", "messaging_system"),
    ("create-order", "send-receipt", ""),
    ("get-order", "DynamoDB", "virtual_node"),
    ("fulfil-order", "DynamoDB", "virtual_node"),
    ("orders-api/prod", "order-fulfilment", ""),
    ("order-fulfilment", "charge-card", ""),
    ("order-fulfilment", "ship-order", ""),
    ("order-fulfilment", "notify-customer", ""),
];

/// A node: `(name, type)`.
type NodeKey = (String, String);
/// An edge: `(client, server, connection_type)`.
type EdgeKey = (String, String, String);

/// The nodes and edges of a service map.
pub(crate) fn summarize(map: &Value) -> (BTreeSet<NodeKey>, BTreeSet<EdgeKey>) {
    let nodes = map["nodes"].as_array().unwrap();
    let name = |index: &Value| {
        nodes[index.as_u64().unwrap() as usize]["name"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let node_set = nodes
        .iter()
        .map(|node| {
            (
                node["name"].as_str().unwrap().to_string(),
                node["type"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let edge_set = map["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|edge| {
            (
                name(&edge["source"]),
                name(&edge["target"]),
                edge["connection_type"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (node_set, edge_set)
}

/// GET `url` and its JSON body.
pub(crate) async fn get_json(client: &reqwest::Client, url: String) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

fn total(map: &Value, field: &str) -> i64 {
    let nodes = map["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|node| node["stats"][field].as_i64());
    let edges = map["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|edge| edge["stats"][field].as_i64());
    nodes.chain(edges).sum()
}

/// Requests the gateway refused with 429 (its node's throttles).
fn gateway_throttles(map: &Value) -> i64 {
    map["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|node| node["name"] == "orders-api/prod")
        .and_then(|node| node["stats"]["throttles"].as_i64())
        .unwrap_or(0)
}

/// The demo's service map once it holds every expected node and edge, a
/// throttled gateway request and a fault (within 100 s).
pub(crate) async fn complete_map(client: &reqwest::Client, base: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(100);
    loop {
        let map: Value = get_json(client, format!("{base}/v1/service-map")).await;
        let (nodes, edges) = summarize(&map);
        let complete = EXPECTED_NODES
            .iter()
            .all(|(name, kind)| nodes.contains(&(name.to_string(), kind.to_string())))
            && EXPECTED_EDGES.iter().all(|(client, server, connection)| {
                edges.contains(&(
                    client.to_string(),
                    server.to_string(),
                    connection.to_string(),
                ))
            })
            && gateway_throttles(&map) > 0
            && total(&map, "faults") > 0;
        if complete {
            return map;
        }
        assert!(
            Instant::now() < deadline,
            "the demo's map is incomplete:\nnodes {nodes:#?}\nedges {edges:#?}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_traffic_builds_the_expected_service_map_and_traces() {
    let dir = tempfile::tempdir().unwrap();
    let mut demo = TestServerBuilder::new(dir.path())
        .subcommand("demo", DEMO_LISTENERS)
        .arg("--duration")
        .arg("120s")
        .arg("--rate")
        .arg("25")
        .spawn();
    let base = demo.http_url();
    let client = reqwest::Client::new();
    let map = complete_map(&client, &base).await;
    // The gateway refused some requests of a burst (429).
    assert!(gateway_throttles(&map) > 0);

    let search = |query: &'static str| {
        let url = format!("{base}/api/search?q={}&limit=5", url_encode(query));
        let client = client.clone();
        async move {
            let body = get_json(&client, url).await;
            body["traces"].as_array().cloned().unwrap_or_default()
        }
    };
    // A retried task: the Charge state with several Lambda attempts in
    // one trace.
    let retried = search(r#"{ name = "Charge" } > { name = "Lambda" } | count() > 1"#).await;
    let attempts = retried
        .first()
        .map(|trace| trace["spanSets"][0]["matched"].as_u64().unwrap())
        .expect("a trace with a retried Charge");
    assert!(attempts >= 2, "{retried:?}");

    // Cold starts are Initialization subsegments of function segments.
    let cold = search(r#"{ name = "Initialization" }"#).await;
    assert!(!cold.is_empty(), "no cold start traced");

    // The consumer runs in a trace of its own that links to the
    // producer's SendMessage call; the producer's trace runs from the
    // gateway through create-order to that call: the header carried
    // every hop.
    let consumers = search(r#"{ resource.service.name = "fulfil-order" }"#).await;
    let mut linked = None;
    for found in &consumers {
        let id = found["traceID"].as_str().unwrap();
        let trace: Value = get_json(&client, format!("{base}/api/v2/traces/{id}")).await;
        let (_, spans) = trace_spans(&trace);
        if let Some(link) = spans
            .iter()
            .find_map(|(_, span)| span["links"].as_array()?.first().cloned())
        {
            linked = Some(link);
            break;
        }
    }
    let link = linked.expect("a consumer trace linked to its producer");
    let producer_id = link["traceId"].as_str().unwrap().to_string();
    let trace: Value = get_json(&client, format!("{base}/api/v2/traces/{producer_id}")).await;
    let (services, spans) = trace_spans(&trace);
    for service in ["orders-api/prod", "create-order", "charge-payment"] {
        assert!(
            services.contains(service),
            "{service} missing from {services:?}"
        );
    }
    let names: BTreeSet<&str> = spans
        .iter()
        .map(|(_, span)| span["name"].as_str().unwrap())
        .collect();
    for name in ["Lambda", "DynamoDB", "SQS"] {
        assert!(names.contains(name), "{name} missing from {names:?}");
    }
    let send = spans
        .iter()
        .find(|(_, span)| span["spanId"] == link["spanId"])
        .map(|(_, span)| span)
        .expect("the linked span is in the producer's trace");
    assert_eq!(
        send["name"], "SQS",
        "the link points at the SendMessage call"
    );

    // A call its execution policy denies (get-order's payment lookup) is
    // a traced error: an aws call with the AccessDeniedException.
    let denied =
        search(r#"{ resource.service.name = "get-order" && span.aws.table_name = "payments" }"#)
            .await;
    let denied_trace = denied
        .first()
        .and_then(|trace| trace["traceID"].as_str())
        .expect("a traced call to the payments table")
        .to_string();
    let trace: Value = get_json(&client, format!("{base}/api/v2/traces/{denied_trace}")).await;
    let (_, spans) = trace_spans(&trace);
    let refused = spans.iter().map(|(_, span)| span).find(|span| {
        span["name"] == "DynamoDB"
            && span["events"].as_array().is_some_and(|events| {
                events.iter().any(|event| {
                    event["attributes"].as_array().is_some_and(|attributes| {
                        attributes.iter().any(|attribute| {
                            attribute["key"] == "exception.type"
                                && attribute["value"]["stringValue"] == "AccessDeniedException"
                        })
                    })
                })
            })
    });
    assert!(refused.is_some(), "no AccessDeniedException in {trace}");
    // The function metrics reached tracelake over OTLP.
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("faas_invocations"), "no function metrics");
    assert!(demo.stop().success());
}

/// A Tempo trace's services and its spans with their service.
fn trace_spans(trace: &Value) -> (BTreeSet<String>, Vec<(String, Value)>) {
    let mut services = BTreeSet::new();
    let mut spans = Vec::new();
    for resource in trace["trace"]["resourceSpans"].as_array().unwrap() {
        let service = resource["resource"]["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|attribute| attribute["key"] == "service.name")
            .and_then(|attribute| attribute["value"]["stringValue"].as_str())
            .unwrap_or_default()
            .to_string();
        for scope in resource["scopeSpans"].as_array().unwrap() {
            for span in scope["spans"].as_array().unwrap() {
                spans.push((service.clone(), span.clone()));
            }
        }
        services.insert(service);
    }
    (services, spans)
}

/// The demo's workflow executions: `(id, status)`.
async fn executions(
    client: &reqwest::Client,
    workflows: std::net::SocketAddr,
) -> Vec<(String, String)> {
    let body: Value = get_json(client, format!("http://{workflows}/executions")).await;
    body["executions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|execution| {
            (
                execution["executionArn"].as_str().unwrap().to_string(),
                execution["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn workflow_executions_resume_after_the_process_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let first_started = Instant::now();
    let mut first = TestServerBuilder::new(dir.path())
        .subcommand("demo", DEMO_LISTENERS)
        .arg("--duration")
        .arg("120s")
        .arg("--rate")
        .arg("30")
        .spawn();
    let workflows = first.listeners["demo-workflows"];
    // Kill -9 while several executions are in flight (most wait for pickup
    // between Charge and Fulfil; some are inside a task).
    let deadline = Instant::now() + Duration::from_secs(60);
    let running = loop {
        let all = executions(&client, workflows).await;
        let running: Vec<String> = all
            .iter()
            .filter(|(_, status)| status == "RUNNING")
            .map(|(id, _)| id.clone())
            .collect();
        if running.len() >= 3 && all.len() >= 8 {
            break running;
        }
        assert!(Instant::now() < deadline, "too few executions: {all:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    first.kill9();
    // Down for a while: the resumed executions' gap covers at least this.
    let down = Duration::from_millis(1500);
    tokio::time::sleep(down).await;

    // The restarted demo resumes them; each completes.
    let second = TestServerBuilder::new(dir.path())
        .subcommand("demo", DEMO_LISTENERS)
        .arg("--duration")
        .arg("120s")
        .arg("--rate")
        .arg("1")
        .spawn();
    let workflows = second.listeners["demo-workflows"];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let all = executions(&client, workflows).await;
        let unfinished: Vec<&(String, String)> = all
            .iter()
            .filter(|(id, status)| running.contains(id) && status == "RUNNING")
            .collect();
        if unfinished.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "not resumed: {unfinished:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for id in &running {
        let history: Value = get_json(
            &client,
            format!("http://{workflows}/executions/{id}/history"),
        )
        .await;
        let events = history["events"].as_array().unwrap();
        let resumed = events
            .iter()
            .find(|event| event["type"] == "ExecutionResumed")
            .unwrap_or_else(|| panic!("{id}: no ExecutionResumed in {events:#?}"));
        // From the last event before the kill to the resume: at least the
        // time the process was down, at most the whole test so far.
        let gap = resumed["gap_seconds"].as_f64().unwrap();
        let most = first_started.elapsed().as_secs_f64();
        assert!(
            gap >= down.as_secs_f64() && gap <= most,
            "{id}: gap {gap} s outside [{}, {most}]",
            down.as_secs_f64()
        );
        // Each task that completed did so once.
        let mut succeeded = std::collections::HashMap::new();
        for event in events
            .iter()
            .filter(|event| event["type"] == "TaskSucceeded")
        {
            *succeeded
                .entry(event["key"].as_str().unwrap().to_string())
                .or_insert(0) += 1;
        }
        assert!(
            succeeded.values().all(|count| *count == 1),
            "{id}: {succeeded:?}"
        );
        let last = events.last().unwrap()["type"].as_str().unwrap();
        assert!(
            last == "ExecutionSucceeded" || last == "ExecutionFailed",
            "{id} ended with {last}"
        );
    }
}

//! `tracelake demo` runs briefly; tracelake's own APIs then show the order
//! API's service map (client -> gateway -> functions -> table / queue),
//! throttles and faults, cold starts, and whole traces in which the trace
//! header linked every hop, from the gateway to the queue's consumer.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::jaeger::url_encode;
use crate::server::TestServerBuilder;

/// A node: `(name, type)`.
type NodeKey = (String, String);
/// An edge: `(client, server, connection_type)`.
type EdgeKey = (String, String, String);

/// The nodes and edges of a service map.
fn summarize(map: &Value) -> (BTreeSet<NodeKey>, BTreeSet<EdgeKey>) {
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

#[tokio::test(flavor = "multi_thread")]
async fn demo_traffic_builds_the_expected_service_map_and_traces() {
    let dir = tempfile::tempdir().unwrap();
    let mut demo = TestServerBuilder::new(dir.path())
        .subcommand("demo")
        .arg("--duration")
        .arg("120s")
        .arg("--rate")
        .arg("25")
        .spawn();
    let base = demo.http_url();
    let client = reqwest::Client::new();
    let expected_nodes = [
        ("client", "client"),
        ("orders-api/prod", "AWS::ApiGateway::Stage"),
        ("create-order", "AWS::Lambda::Function"),
        ("charge-payment", "AWS::Lambda::Function"),
        ("get-order", "AWS::Lambda::Function"),
        ("fulfil-order", "AWS::Lambda::Function"),
        ("send-receipt", "AWS::Lambda::Function"),
        ("inventory", "AWS::EC2::Instance"),
        ("DynamoDB", "AWS::DynamoDB::Table"),
    ];
    let expected_edges = [
        ("client", "orders-api/prod", "virtual_node"),
        ("orders-api/prod", "create-order", ""),
        ("orders-api/prod", "get-order", ""),
        ("orders-api/prod", "inventory", ""),
        ("create-order", "charge-payment", ""),
        ("create-order", "DynamoDB", "virtual_node"),
        ("create-order", "fulfil-order", "messaging_system"),
        ("create-order", "send-receipt", ""),
        ("get-order", "DynamoDB", "virtual_node"),
        ("fulfil-order", "DynamoDB", "virtual_node"),
    ];
    let deadline = Instant::now() + Duration::from_secs(100);
    let map = loop {
        let map: Value = client
            .get(format!("{base}/v1/service-map"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let (nodes, edges) = summarize(&map);
        let complete = expected_nodes
            .iter()
            .all(|(name, kind)| nodes.contains(&(name.to_string(), kind.to_string())))
            && expected_edges.iter().all(|(client, server, connection)| {
                edges.contains(&(
                    client.to_string(),
                    server.to_string(),
                    connection.to_string(),
                ))
            })
            && gateway_throttles(&map) > 0
            && total(&map, "faults") > 0;
        if complete {
            break map;
        }
        assert!(
            Instant::now() < deadline,
            "the demo's map is incomplete:\nnodes {nodes:#?}\nedges {edges:#?}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    // The gateway refused some requests of a burst (429).
    assert!(gateway_throttles(&map) > 0);

    let search = |query: &'static str| {
        let url = format!("{base}/api/search?q={}&limit=5", url_encode(query));
        let client = client.clone();
        async move {
            let body: Value = client.get(url).send().await.unwrap().json().await.unwrap();
            body["traces"].as_array().cloned().unwrap_or_default()
        }
    };
    // Cold starts are Initialization subsegments of function segments.
    let cold = search(r#"{ name = "Initialization" }"#).await;
    assert!(!cold.is_empty(), "no cold start traced");

    // One trace from the gateway through create-order and the queue to
    // the consumer: the header carried every hop.
    let whole = search(
        r#"{ resource.service.name = "orders-api/prod" } >> { resource.service.name = "fulfil-order" }"#,
    )
    .await;
    let trace_id = whole
        .first()
        .and_then(|trace| trace["traceID"].as_str())
        .expect("a trace from the gateway to the consumer")
        .to_string();
    let trace: Value = client
        .get(format!("{base}/api/v2/traces/{trace_id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut services = BTreeSet::new();
    let mut names = BTreeSet::new();
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
                assert_eq!(span["traceId"], trace_id);
                names.insert(span["name"].as_str().unwrap().to_string());
            }
        }
        services.insert(service);
    }
    for service in [
        "orders-api/prod",
        "create-order",
        "charge-payment",
        "fulfil-order",
    ] {
        assert!(
            services.contains(service),
            "{service} missing from {services:?}"
        );
    }
    for name in ["Lambda", "DynamoDB", "SQS"] {
        assert!(names.contains(name), "{name} missing from {names:?}");
    }
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

//! The requests Grafana's Jaeger data source sends (URL =
//! `http://host:3200/jaeger`), replayed against the service-map workload.

use serde_json::{Value, json};

use crate::server::TestServerBuilder;
use crate::service_map::send_workload_ten_minutes_ago;

#[tokio::test(flavor = "multi_thread")]
async fn grafana_jaeger_data_source_requests() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServerBuilder::new(dir.path()).spawn();
    let (workload, now_ns) = send_workload_ten_minutes_ago(&server).await;
    let base_ns = workload.start_ns;
    let base = format!("{}/jaeger/api", server.http_url());
    let get = |path: String| {
        let url = format!("{base}{path}");
        async move {
            let response = reqwest::get(&url).await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let (start_us, end_us) = (base_ns / 1_000 - 60_000_000, now_ns / 1_000);
    let window = format!("start={start_us}&end={end_us}&lookback=custom");
    let trace_names = |body: &Value| -> Vec<String> {
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|trace| {
                // Trace ids end with the seed byte repeated (see service_map.rs).
                let id = trace["traceID"].as_str().unwrap();
                format!("T{}", u8::from_str_radix(&id[30..], 16).unwrap())
            })
            .collect()
    };

    let (status, services) = get("/services".into()).await;
    assert_eq!(status, 200);
    assert_eq!(
        services["data"],
        json!(["billing", "frontend", "notifier", "orders", "payments"])
    );
    let (_, operations) = get("/services/frontend/operations".into()).await;
    assert_eq!(
        operations["data"],
        json!([
            "GET",
            "GET /checkout",
            "POST /orders",
            "order-events publish"
        ])
    );
    let (_, client_operations) = get("/operations?service=frontend&spanKind=client".into()).await;
    assert_eq!(
        client_operations["data"],
        json!([{"name": "GET", "spanKind": "client"}, {"name": "POST /orders", "spanKind": "client"}])
    );

    let tags = |tags: Value| url_encode(&tags.to_string());
    let (status, by_status) = get(format!(
        "/traces?service=frontend&tags={}&limit=20&{window}",
        tags(json!({"http.response.status_code": "500"}))
    ))
    .await;
    assert_eq!(status, 200, "{by_status}");
    assert_eq!(trace_names(&by_status), vec!["T2"]);
    let (_, errors) = get(format!(
        "/traces?service=orders&tags={}&{window}",
        tags(json!({"error": "true"}))
    ))
    .await;
    assert_eq!(trace_names(&errors), vec!["T3", "T2"]);
    let (_, slow) = get(format!(
        "/traces?service=frontend&minDuration=250ms&{window}"
    ))
    .await;
    assert_eq!(trace_names(&slow), vec!["T3"]);
    let (_, newest) = get(format!(
        "/traces?service=frontend&operation=GET%20%2Fcheckout&limit=2&{window}"
    ))
    .await;
    assert_eq!(trace_names(&newest), vec!["T3", "T2"]);
    let (status, missing_service) = get(format!("/traces?{window}")).await;
    assert_eq!(status, 400);
    assert!(
        missing_service["errors"][0]["msg"]
            .as_str()
            .unwrap()
            .contains("service")
    );
    let (status, _) = get(format!(
        "/traces?service=frontend&minDuration=soon&{window}"
    ))
    .await;
    assert_eq!(status, 400);

    // One trace, whole: 9 spans, processes by service, references.
    let first = &newest["data"][0]["traceID"];
    let (status, one) = get(format!("/traces/{}", first.as_str().unwrap())).await;
    assert_eq!(status, 200);
    let trace = &one["data"][0];
    let spans = trace["spans"].as_array().unwrap();
    assert_eq!(
        spans.len(),
        5,
        "T3: three frontend spans, the orders segment and its DynamoDB call"
    );
    let processes = trace["processes"].as_object().unwrap();
    let mut process_services: Vec<&str> = processes
        .values()
        .map(|process| process["serviceName"].as_str().unwrap())
        .collect();
    process_services.sort();
    process_services.dedup();
    assert_eq!(process_services, vec!["frontend", "orders"]);
    let orders_segment = spans
        .iter()
        .find(|span| {
            processes[span["processID"].as_str().unwrap()]["serviceName"] == "orders"
                && span["references"][0]["refType"] == "CHILD_OF"
                && span["operationName"] == "orders"
        })
        .expect("the orders segment");
    let parent = orders_segment["references"][0]["spanID"].as_str().unwrap();
    let caller = spans
        .iter()
        .find(|span| span["spanID"] == parent)
        .expect("its caller is in the trace");
    assert_eq!(caller["operationName"], "POST /orders");
    let kind = |span: &Value| {
        span["tags"]
            .as_array()
            .unwrap()
            .iter()
            .find(|tag| tag["key"] == "span.kind")
            .unwrap()["value"]
            .clone()
    };
    assert_eq!(kind(caller), "client");
    assert_eq!(caller["duration"], json!(250_000));
    let (status, absent) = get("/traces/00000000000000000000000000000001".into()).await;
    assert_eq!(status, 404);
    assert_eq!(absent["errors"][0]["code"], json!(404));

    let end_ms = now_ns / 1_000_000;
    let (_, dependencies) = get(format!("/dependencies?endTs={end_ms}&lookback=3600000")).await;
    let mut calls: Vec<String> = dependencies["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|call| {
            format!(
                "{} -> {} {}",
                call["parent"].as_str().unwrap(),
                call["child"].as_str().unwrap(),
                call["callCount"]
            )
        })
        .collect();
    calls.sort();
    assert_eq!(
        calls,
        vec![
            "frontend -> billing 1",
            "frontend -> legacy.example.com 3",
            "frontend -> notifier 1",
            "frontend -> orders 3",
            "orders -> DynamoDB 3",
            "orders -> payments 2",
        ]
    );
}

/// Percent-encodes a query value as Grafana does (encodeURIComponent).
pub(crate) fn url_encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

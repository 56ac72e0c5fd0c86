//! The native endpoints the web UI reads, against a real server fed over
//! OTLP/HTTP: `/v1/search` pages through every match exactly once in both
//! languages and filters as asked, `/v1/traces/{id}` (and its X-Ray form)
//! answers the whole trace, `/v1/services` lists operations, edge
//! histograms count the calls, and bad input gets 400 with a message.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span, Status};
use prost::Message;
use serde_json::Value;

use crate::jaeger::url_encode;
use crate::otlp::{request, span_id, string_attribute, trace_id};
use crate::server::TestServerBuilder;

const TRACES: u64 = 25;
/// Every `FAULTY`-th trace fails with a 503 from payments.
const FAULTY: u64 = 5;

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn int_attribute(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

/// Trace `n`: shop's `GET /cart` calls payments (client span, then
/// payments' server span), 100 ms apart from trace to trace.
fn trace(n: u64, base_ns: u64) -> Vec<ResourceSpans> {
    let start = base_ns + n * 100_000_000;
    let faulty = n.is_multiple_of(FAULTY);
    let (root, call, served) = (span_id(n * 3 + 1), span_id(n * 3 + 2), span_id(n * 3 + 3));
    let id = trace_id(n + 1000).to_vec();
    let root_span = Span {
        trace_id: id.clone(),
        span_id: root.to_vec(),
        name: "GET /cart".into(),
        kind: 2,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 40_000_000,
        attributes: vec![
            string_attribute(
                "customer",
                if n.is_multiple_of(2) { "gold" } else { "basic" },
            ),
            string_attribute("http.request.method", "GET"),
        ],
        ..Default::default()
    };
    let call_span = Span {
        trace_id: id.clone(),
        span_id: call.to_vec(),
        parent_span_id: root.to_vec(),
        name: "POST /charge".into(),
        kind: 3,
        start_time_unix_nano: start + 5_000_000,
        end_time_unix_nano: start + 30_000_000,
        attributes: vec![string_attribute("peer.service", "payments")],
        ..Default::default()
    };
    let mut served_span = Span {
        trace_id: id,
        span_id: served.to_vec(),
        parent_span_id: call.to_vec(),
        name: "charge".into(),
        kind: 2,
        start_time_unix_nano: start + 6_000_000,
        end_time_unix_nano: start + 29_000_000,
        attributes: vec![int_attribute(
            "http.response.status_code",
            if faulty { 503 } else { 200 },
        )],
        ..Default::default()
    };
    if faulty {
        served_span.status = Some(Status {
            code: 2,
            message: "card processor down".into(),
        });
    }
    let mut shop = request("shop", vec![root_span, call_span]).resource_spans;
    shop.extend(request("payments", vec![served_span]).resource_spans);
    shop
}

async fn get(client: &reqwest::Client, url: String) -> (u16, String) {
    let response = client.get(url).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

async fn json(client: &reqwest::Client, url: String) -> Value {
    let (status, body) = get(client, url.clone()).await;
    assert_eq!(status, 200, "{url}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// Every page of a search: the trace ids in answer order.
async fn all_pages(client: &reqwest::Client, base: &str, query: &str, window: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut page = String::new();
    for _ in 0..20 {
        let answer = json(
            client,
            format!(
                "{base}/v1/search?q={}&limit=7&{window}&page={page}",
                url_encode(query)
            ),
        )
        .await;
        let traces = answer["traces"].as_array().unwrap();
        assert!(traces.len() <= 7);
        ids.extend(
            traces
                .iter()
                .map(|trace| trace["trace_id"].as_str().unwrap().to_string()),
        );
        match answer["next_page"].as_str() {
            Some(next) => page = url_encode(next),
            None => return ids,
        }
    }
    panic!("more pages than traces");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_native_query_api_pages_filters_and_answers_whole_traces() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServerBuilder::new(dir.path()).spawn();
    let base = server.http_url();
    let client = reqwest::Client::new();
    let base_ns = now_ns() - 120_000_000_000;
    let mut resource_spans = Vec::new();
    for n in 0..TRACES {
        resource_spans.extend(trace(n, base_ns));
    }
    let body = opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
        resource_spans,
    }
    .encode_to_vec();
    let response = client
        .post(format!("{}/v1/traces", server.otlp_http_url()))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    let window = format!(
        "start={}&end={}",
        base_ns / 1_000_000_000 - 1,
        now_ns() / 1_000_000_000 + 1
    );

    // Every trace, exactly once, newest first, in both languages.
    let deadline = Instant::now() + Duration::from_secs(30);
    let traceql = loop {
        let ids = all_pages(
            &client,
            &base,
            r#"{ resource.service.name = "shop" }"#,
            &window,
        )
        .await;
        if ids.len() as u64 == TRACES || Instant::now() > deadline {
            break ids;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let expected: Vec<String> = (0..TRACES)
        .rev()
        .map(|n| hex::encode(trace_id(n + 1000)))
        .collect();
    assert_eq!(traceql, expected, "TraceQL pages, newest first");
    let xray = all_pages(&client, &base, r#"service("shop")"#, &window).await;
    assert_eq!(xray, expected, "X-Ray filter pages, newest first");

    // Filters select: faults, errors by status, an attribute as annotation.
    let faulty: HashSet<String> = (0..TRACES)
        .filter(|n| n.is_multiple_of(FAULTY))
        .map(|n| hex::encode(trace_id(n + 1000)))
        .collect();
    // (`fault` alone asks about the root, as X-Ray's keywords do.)
    assert!(all_pages(&client, &base, "fault", &window).await.is_empty());
    for query in ["{ status = error }", r#"service("payments") { fault }"#] {
        let found: HashSet<String> = all_pages(&client, &base, query, &window)
            .await
            .into_iter()
            .collect();
        assert_eq!(found, faulty, "{query}");
    }
    let gold = all_pages(&client, &base, r#"annotation.customer = "gold""#, &window).await;
    assert_eq!(gold.len() as u64, TRACES.div_ceil(2));
    // What the UI's search form writes from every field, in both languages.
    for query in [
        r#"{ resource.service.name = "shop" && name = "GET /cart" && .customer = "gold" && duration >= 10ms && duration <= 5s && status = unset }"#,
        r#"service("shop") AND name = "GET /cart" AND annotation.customer = "gold" AND duration >= 0.01 AND duration <= 5 AND ok"#,
    ] {
        let found = all_pages(&client, &base, query, &window).await;
        assert_eq!(found, gold, "{query}");
    }
    let slow = all_pages(&client, &base, "{ duration > 35ms }", &window).await;
    assert_eq!(slow.len() as u64, TRACES, "every root span takes 40 ms");

    // A summary says what the trace holds.
    let first = json(
        &client,
        format!(
            "{base}/v1/search?q={}&limit=1&{window}",
            url_encode(r#"service("payments") { fault }"#)
        ),
    )
    .await;
    let summary = &first["traces"][0];
    assert_eq!(summary["span_count"], 3);
    assert_eq!(summary["root_service"], "shop");
    assert_eq!(summary["root_name"], "GET /cart");
    assert_eq!(summary["faults"], 1);
    assert_eq!(summary["duration_ns"], 40_000_000);
    assert_eq!(summary["services"], serde_json::json!(["payments", "shop"]));
    assert_eq!(first["language"], "xray");

    // The whole trace, by hex id and by X-Ray id.
    let id = summary["trace_id"].as_str().unwrap();
    let whole = json(&client, format!("{base}/v1/traces/{id}")).await;
    assert_eq!(whole["span_count"], 3);
    let spans = whole["spans"].as_array().unwrap();
    assert_eq!(spans[0]["parent_span_id"], Value::Null);
    assert_eq!(spans[1]["parent_span_id"], spans[0]["span_id"]);
    assert_eq!(spans[2]["parent_span_id"], spans[1]["span_id"]);
    assert_eq!(spans[2]["service"], "payments");
    assert_eq!(spans[2]["fault"], true);
    assert_eq!(spans[2]["status"]["message"], "card processor down");
    assert_eq!(spans[0]["attributes"]["customer"], "gold");
    let xray_id = whole["xray_trace_id"].as_str().unwrap();
    let again = json(&client, format!("{base}/v1/traces/{xray_id}")).await;
    assert_eq!(again["trace_id"], id);
    let documents = json(&client, format!("{base}/v1/traces/{id}/xray")).await;
    assert_eq!(documents["Id"], xray_id);
    let segments = documents["Segments"].as_array().unwrap();
    assert_eq!(segments.len(), 2, "a segment per service: {segments:?}");
    for segment in segments {
        let document: Value = serde_json::from_str(segment["Document"].as_str().unwrap()).unwrap();
        assert_eq!(document["trace_id"], xray_id);
    }

    // Services with their operations; histograms of an edge and a node's calls.
    let services = json(&client, format!("{base}/v1/services?{window}&source=raw")).await;
    let shop = services["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|service| service["name"] == "shop")
        .expect("shop listed");
    assert_eq!(
        shop["operations"],
        serde_json::json!(["GET /cart", "POST /charge"])
    );
    for of in ["client=shop&server=payments", "server=payments"] {
        let histogram = json(
            &client,
            format!("{base}/v1/histogram?{of}&{window}&source=raw"),
        )
        .await;
        assert_eq!(histogram["count"], TRACES, "{of}");
        let outcomes = &histogram["outcomes"];
        let counted = ["ok", "errors", "faults"].map(|name| outcomes[name].as_u64().unwrap());
        assert_eq!(counted.iter().sum::<u64>(), TRACES, "{of}: {outcomes}");
        let p50 = histogram["quantiles"]["p50"].as_f64().unwrap();
        assert!(
            (0.024..=0.026).contains(&p50),
            "{of}: the caller's 25 ms, got {p50}"
        );
    }
    // The callee's own view: payments' entry spans, with their faults.
    let payments = json(
        &client,
        format!("{base}/v1/histogram?service=payments&{window}&source=raw"),
    )
    .await;
    assert_eq!(payments["count"], TRACES);
    assert_eq!(payments["outcomes"]["faults"], TRACES / FAULTY);
    let p50 = payments["quantiles"]["p50"].as_f64().unwrap();
    assert!(
        (0.022..=0.024).contains(&p50),
        "payments' own 23 ms, got {p50}"
    );

    // Bad input: 400 (or 404) with a message, never a crash.
    let unknown = hex::encode(trace_id(999_999));
    for (url, status, says) in [
        (format!("{base}/v1/search?lang=sql"), 400, "lang must be"),
        (format!("{base}/v1/search?limit=0"), 400, "limit must be"),
        (format!("{base}/v1/search?limit=101"), 400, "limit must be"),
        (format!("{base}/v1/search?page=bogus"), 400, "page token"),
        (
            format!("{base}/v1/search?q={}", url_encode("{ status = }")),
            400,
            "",
        ),
        (
            format!("{base}/v1/search?q={}", url_encode("service(\"a")),
            400,
            "position",
        ),
        (
            format!("{base}/v1/search?q=group.name%20%3D%20%22g%22"),
            400,
            "GroupName",
        ),
        (
            format!("{base}/v1/search?q=fault&start=0&end=200000"),
            400,
            "24 hours",
        ),
        (
            format!("{base}/v1/search?start=5&end=1"),
            400,
            "start must not be after end",
        ),
        (format!("{base}/v1/traces/not-hex"), 400, "trace id"),
        (format!("{base}/v1/traces/{unknown}"), 404, "not found"),
        (format!("{base}/v1/traces/{unknown}/xray"), 404, "not found"),
        (
            format!("{base}/v1/histogram?client=shop"),
            400,
            "give service",
        ),
        (
            format!("{base}/v1/histogram?service=shop&server=payments"),
            400,
            "give service",
        ),
        (format!("{base}/ui/missing.js"), 404, "no UI file"),
    ] {
        let (got, body) = get(&client, url.clone()).await;
        assert_eq!(got, status, "{url}: {body}");
        assert!(body.contains(says) && !body.is_empty(), "{url}: {body}");
    }
    assert!(server.stop().success());
}

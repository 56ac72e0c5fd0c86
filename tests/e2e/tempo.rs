//! The requests Grafana's Tempo data source sends (URL =
//! `http://host:3200`), replayed against the service-map workload and
//! checked field by field: JSON with uint64 as strings, and the protobuf
//! answers decoded with Tempo's own messages (`tempopb`, copied below).

use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use prost::Message;
use serde_json::{Value, json};

use crate::jaeger::url_encode as encode;
use crate::server::TestServerBuilder;
use crate::service_map::send_workload_ten_minutes_ago;

/// `tempopb.Trace` as `pkg/tempopb/tempo.proto` declares it.
#[derive(Clone, PartialEq, Message)]
struct TempopbTrace {
    #[prost(message, repeated, tag = "1")]
    resource_spans: Vec<ResourceSpans>,
}

/// `tempopb.TraceByIDMetrics`.
#[derive(Clone, PartialEq, Message)]
struct TempopbTraceByIdMetrics {
    #[prost(uint64, tag = "1")]
    inspected_bytes: u64,
}

/// `tempopb.TraceByIDResponse`.
#[derive(Clone, PartialEq, Message)]
struct TempopbTraceByIdResponse {
    #[prost(message, optional, tag = "1")]
    trace: Option<TempopbTrace>,
    #[prost(message, optional, tag = "2")]
    metrics: Option<TempopbTraceByIdMetrics>,
    #[prost(int32, tag = "3")]
    status: i32,
    #[prost(string, tag = "4")]
    message: String,
}

/// Workload trace names (T1..T4) of a search answer: trace ids end with
/// the seed byte repeated (see service_map.rs).
fn names(body: &Value) -> Vec<String> {
    body["traces"]
        .as_array()
        .unwrap_or_else(|| panic!("no traces in {body}"))
        .iter()
        .map(|trace| {
            let id = trace["traceID"].as_str().unwrap();
            assert_eq!(id.len(), 32, "{id}");
            format!("T{}", u8::from_str_radix(&id[30..], 16).unwrap())
        })
        .collect()
}

fn span_count(resource_spans: &[ResourceSpans]) -> usize {
    resource_spans
        .iter()
        .flat_map(|resource| &resource.scope_spans)
        .map(|scope| scope.spans.len())
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn grafana_tempo_data_source_requests() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServerBuilder::new(dir.path()).spawn();
    let (workload, now_ns) = send_workload_ten_minutes_ago(&server).await;
    let base_ns = workload.start_ns;
    let client = reqwest::Client::new();
    let base = server.http_url();
    let get = |path: String| {
        let request = client.get(format!("{base}{path}"));
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            (
                status,
                serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text)),
            )
        }
    };
    let (start_s, end_s) = (base_ns / 1_000_000_000 - 60, now_ns / 1_000_000_000 + 1);
    let window = format!("start={start_s}&end={end_s}");

    // Data source test and version probe.
    let (status, echo) = get("/api/echo".into()).await;
    assert_eq!((status, echo), (200, Value::String("echo".into())));
    let (_, buildinfo) = get("/api/status/buildinfo".into()).await;
    assert_eq!(buildinfo["version"], "3.0.3");

    // Search, as the query builder writes it.
    let query = r#"{resource.service.name="frontend" && duration>150ms}"#;
    let (status, found) = get(format!(
        "/api/search?q={}&limit=20&spss=3&{window}",
        encode(query)
    ))
    .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(names(&found), ["T3", "T2"]);
    let t3 = &found["traces"][0];
    let t3_start = base_ns + 3_000_000_000;
    assert_eq!(t3["rootServiceName"], "frontend");
    assert_eq!(t3["rootTraceName"], "GET /checkout");
    assert_eq!(t3["startTimeUnixNano"], json!(t3_start.to_string()));
    assert_eq!(t3["durationMs"], json!(300));
    let spanset = &t3["spanSets"][0];
    assert_eq!(t3["spanSet"], *spanset, "older Grafana reads spanSet");
    assert_eq!(spanset["matched"], json!(2));
    let spans = spanset["spans"].as_array().unwrap();
    assert_eq!(spans.len(), 2);
    assert_eq!(spans[0]["name"], "GET /checkout");
    assert_eq!(spans[0]["startTimeUnixNano"], json!(t3_start.to_string()));
    assert_eq!(spans[0]["durationNanos"], json!("300000000"));
    assert_eq!(spans[0]["spanID"].as_str().unwrap().len(), 16);
    assert_eq!(spans[1]["name"], "POST /orders");
    assert_eq!(spans[1]["durationNanos"], json!("250000000"));
    assert_eq!(
        spans[0]["attributes"],
        json!([{"key": "service.name", "value": {"stringValue": "frontend"}}])
    );
    assert_eq!(found["metrics"]["inspectedTraces"], json!(2));
    assert!(found["metrics"]["inspectedBytes"].is_string());

    // spss limits the spans answered, not the count matched.
    let (_, one_span) = get(format!(
        "/api/search?q={}&limit=20&spss=1&{window}",
        encode(query)
    ))
    .await;
    assert_eq!(
        one_span["traces"][0]["spanSets"][0]["spans"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(one_span["traces"][0]["spanSets"][0]["matched"], json!(2));

    let searches: &[(&str, &[&str])] = &[
        ("{}", &["T4", "T3", "T2", "T1"]),
        ("{ status = error }", &["T3", "T2"]),
        ("{ span.http.response.status_code >= 500 }", &["T2"]),
        ("{ kind = consumer }", &["T4", "T1"]),
        (
            r#"{ resource.service.name = "frontend" } >> { resource.service.name = "payments" }"#,
            &["T2", "T1"],
        ),
        ("{ } | count() > 6", &["T2", "T1"]),
        (r#"{ rootServiceName = "billing" }"#, &["T4"]),
        (r#"{ name = "DynamoDB" && duration >= 20ms }"#, &["T2"]),
    ];
    for (query, expected) in searches {
        let (status, body) = get(format!("/api/search?q={}&{window}", encode(query))).await;
        assert_eq!(status, 200, "{query}: {body}");
        assert_eq!(names(&body), *expected, "{query}");
    }
    let (_, limited) = get(format!("/api/search?q=%7B%7D&limit=1&{window}")).await;
    assert_eq!(names(&limited), ["T4"]);
    let (_, t4) = get(format!(
        "/api/search?q={}&{window}",
        encode("{kind=consumer}")
    ))
    .await;
    assert_eq!(t4["traces"][0]["rootServiceName"], "billing");
    assert_eq!(t4["traces"][0]["rootTraceName"], "order-events receive");

    // The legacy search parameters.
    let (status, legacy) = get(format!(
        "/api/search?tags={}&minDuration=150ms&limit=20&{window}",
        encode("service.name=frontend")
    ))
    .await;
    assert_eq!(status, 200, "{legacy}");
    assert_eq!(names(&legacy), ["T3", "T2"]);
    let (_, legacy_status) = get(format!(
        "/api/search?tags={}&{window}",
        encode("http.response.status_code=500 name=\"GET /checkout\"")
    ))
    .await;
    assert_eq!(names(&legacy_status), ["T2"]);

    // Bad input: a clear 400 naming the position or the problem.
    for (query, needle) in [
        ("{ duration > }", "position 14"),
        ("{ status = \"error\" }", "status"),
        ("{ .a =~ \"(\" }", "regex"),
    ] {
        let (status, body) = get(format!("/api/search?q={}&{window}", encode(query))).await;
        assert_eq!(status, 400, "{query}");
        assert!(body.as_str().unwrap().contains(needle), "{query}: {body}");
    }
    for params in [
        "limit=x",
        "spss=1000",
        "start=10",
        "start=20&end=10",
        "minDuration=soon",
    ] {
        let (status, body) = get(format!("/api/search?{params}")).await;
        assert_eq!(status, 400, "{params}: {body}");
    }

    // Tags and values, v1 and v2, with Grafana's encoding of tag names.
    let (_, tags) = get(format!("/api/search/tags?{window}")).await;
    let tag_names = tags["tagNames"].as_array().unwrap();
    for name in [
        "service.name",
        "http.response.status_code",
        "messaging.system",
    ] {
        assert!(tag_names.contains(&json!(name)), "{name} in {tags}");
    }
    let (_, scoped) = get(format!("/api/v2/search/tags?scope=resource&{window}")).await;
    assert_eq!(scoped["scopes"].as_array().unwrap().len(), 1);
    assert_eq!(scoped["scopes"][0]["name"], "resource");
    assert!(
        scoped["scopes"][0]["tags"]
            .as_array()
            .unwrap()
            .contains(&json!("service.name"))
    );
    let (_, all_scopes) = get(format!("/api/v2/search/tags?{window}")).await;
    let scope_names: Vec<&str> = all_scopes["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|scope| scope["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        scope_names,
        [
            "resource",
            "span",
            "event",
            "link",
            "instrumentation",
            "intrinsic"
        ]
    );
    assert!(
        all_scopes["scopes"][5]["tags"]
            .as_array()
            .unwrap()
            .contains(&json!("rootServiceName"))
    );
    let (status, _) = get("/api/v2/search/tags?scope=event".into()).await;
    assert_eq!(status, 200);
    let (status, _) = get("/api/v2/search/tags?scope=bogus".into()).await;
    assert_eq!(status, 400);

    let (_, services) = get(format!(
        "/api/v2/search/tag/resource.service.name/values?q={}&{window}",
        encode("{}")
    ))
    .await;
    let service_values: Vec<&Value> = services["tagValues"].as_array().unwrap().iter().collect();
    assert_eq!(
        service_values,
        [
            &json!({"type": "string", "value": "billing"}),
            &json!({"type": "string", "value": "frontend"}),
            &json!({"type": "string", "value": "notifier"}),
            &json!({"type": "string", "value": "orders"}),
            &json!({"type": "string", "value": "payments"}),
        ]
    );
    // `q` narrows the values; one that does not parse yet is ignored.
    let (_, narrowed) = get(format!(
        "/api/v2/search/tag/{}/values?q={}&{window}",
        encode("resource.service.name"),
        encode("{ kind = consumer }")
    ))
    .await;
    assert_eq!(
        narrowed["tagValues"],
        json!([{"type": "string", "value": "billing"}, {"type": "string", "value": "notifier"}])
    );
    let (status, typing) = get(format!(
        "/api/v2/search/tag/resource.service.name/values?q={}&{window}",
        encode("{ kind = ")
    ))
    .await;
    assert_eq!(status, 200);
    assert_eq!(typing["tagValues"].as_array().unwrap().len(), 5);
    let (_, codes) = get(format!(
        "/api/v2/search/tag/span.http%2Eresponse.status_code/values?{window}"
    ))
    .await;
    let codes = codes["tagValues"].as_array().unwrap();
    for code in ["200", "500", "503", "404"] {
        assert!(
            codes.contains(&json!({"type": "int", "value": code})),
            "{code}: {codes:?}"
        );
    }
    let (_, statuses) = get("/api/v2/search/tag/status/values".into()).await;
    assert_eq!(
        statuses["tagValues"][0],
        json!({"type": "keyword", "value": "error"})
    );
    let (_, operations) = get(format!("/api/v2/search/tag/name/values?{window}")).await;
    assert!(
        operations["tagValues"]
            .as_array()
            .unwrap()
            .contains(&json!({"type": "string", "value": "GET /checkout"}))
    );
    let (_, v1_values) = get(format!("/api/search/tag/service.name/values?{window}")).await;
    assert_eq!(
        v1_values["tagValues"],
        json!(["billing", "frontend", "notifier", "orders", "payments"])
    );
    let (status, _) = get("/api/v2/search/tag/bogus/values".into()).await;
    assert_eq!(status, 400);

    // Trace by id: v2 first with protobuf, as Grafana asks.
    let t2_id = found["traces"][1]["traceID"].as_str().unwrap().to_string();
    let protobuf = |path: String| {
        let request = client
            .get(format!("{base}{path}"))
            .header("Accept", "application/protobuf");
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get("content-type")
                .map(|value| value.to_str().unwrap().to_string());
            (status, content_type, response.bytes().await.unwrap())
        }
    };
    let (status, content_type, bytes) = protobuf(format!("/api/v2/traces/{t2_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(content_type.as_deref(), Some("application/protobuf"));
    let response = TempopbTraceByIdResponse::decode(bytes).unwrap();
    assert_eq!(response.status, 0, "COMPLETE");
    let trace = response.trace.unwrap();
    assert_eq!(span_count(&trace.resource_spans), 7);
    let root = trace
        .resource_spans
        .iter()
        .flat_map(|resource| &resource.scope_spans)
        .flat_map(|scope| &scope.spans)
        .find(|span| span.parent_span_id.is_empty())
        .unwrap();
    assert_eq!(hex::encode(&root.trace_id), t2_id);
    assert_eq!(root.name, "GET /checkout");
    assert_eq!(
        root.end_time_unix_nano - root.start_time_unix_nano,
        200_000_000
    );

    let (status, _, bytes) = protobuf(format!("/api/traces/{t2_id}")).await;
    assert_eq!(status, 200);
    let v1 = TempopbTrace::decode(bytes).unwrap();
    assert_eq!(v1.resource_spans, trace.resource_spans);
    let (status, _, _) = protobuf("/api/v2/traces/00000000000000000000000000000001".into()).await;
    assert_eq!(status, 404, "Grafana falls back to v1 on 404");
    let (status, _, _) = protobuf("/api/v2/traces/not-hex".into()).await;
    assert_eq!(status, 400);

    // The JSON forms: v1 `batches`, v2 `trace.resourceSpans`, uint64 as strings.
    let (_, v1_json) = get(format!("/api/traces/{t2_id}")).await;
    let (_, v2_json) = get(format!("/api/v2/traces/{t2_id}?{window}")).await;
    assert_eq!(v1_json["batches"], v2_json["trace"]["resourceSpans"]);
    assert_eq!(v2_json["status"], "COMPLETE");
    let first_span = &v1_json["batches"][0]["scopeSpans"][0]["spans"][0];
    assert!(first_span["startTimeUnixNano"].is_string(), "{first_span}");
    assert_eq!(first_span["traceId"].as_str().unwrap(), t2_id);
}

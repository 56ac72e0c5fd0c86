//! The requests Grafana's Traces Drilldown app makes through the Tempo
//! data source (the probe, RED panels, breakdowns, comparison, traces,
//! structure and exceptions tabs, autocompletion), and Grafana's request
//! shapes for TraceQL metrics (range and instant, with exemplars), each
//! checked against a workload whose answers are known.
//!
//! Workload: six checkouts ten seconds apart, ten minutes ago:
//! `GET /checkout` (frontend, server, 300ms) -> `POST /orders` (frontend,
//! client) -> `POST /orders` (orders, server); the orders span of the 2nd
//! and 5th fails with an `exception` event.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use serde_json::{Value, json};

use crate::jaeger::url_encode as encode;
use crate::otlp::{span_id, string_attribute, trace_id};
use crate::server::{TestServer, TestServerBuilder};

const SECOND: u64 = 1_000_000_000;
const CHECKOUTS: u64 = 6;

fn resource(service: &str, spans: Vec<Span>) -> ResourceSpans {
    ResourceSpans {
        resource: Some(Resource {
            attributes: vec![string_attribute("service.name", service)],
            ..Resource::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans,
            ..ScopeSpans::default()
        }],
        ..ResourceSpans::default()
    }
}

fn checkout(seed: u64, start: u64, failing: bool) -> Vec<ResourceSpans> {
    let trace = trace_id(seed).to_vec();
    let (root, client, server) = (
        span_id(seed * 3),
        span_id(seed * 3 + 1),
        span_id(seed * 3 + 2),
    );
    let make =
        |id: [u8; 8], parent: Option<[u8; 8]>, name: &str, kind: SpanKind, at: u64, ms: u64| Span {
            trace_id: trace.clone(),
            span_id: id.to_vec(),
            parent_span_id: parent.map(|parent| parent.to_vec()).unwrap_or_default(),
            name: name.into(),
            kind: kind as i32,
            start_time_unix_nano: at,
            end_time_unix_nano: at + ms * 1_000_000,
            ..Span::default()
        };
    let mut orders = make(
        server,
        Some(client),
        "POST /orders",
        SpanKind::Server,
        start + 20_000_000,
        200,
    );
    if failing {
        orders.status = Some(Status {
            code: StatusCode::Error as i32,
            message: "card declined".into(),
        });
        let attributes: Vec<KeyValue> = vec![
            string_attribute("exception.message", "card declined"),
            string_attribute("exception.type", "DeclinedError"),
            string_attribute("exception.stacktrace", "at pay()"),
        ];
        orders.events = vec![Event {
            time_unix_nano: start + 50_000_000,
            name: "exception".into(),
            attributes,
            ..Event::default()
        }];
    }
    vec![
        resource(
            "frontend",
            vec![
                make(root, None, "GET /checkout", SpanKind::Server, start, 300),
                make(
                    client,
                    Some(root),
                    "POST /orders",
                    SpanKind::Client,
                    start + 10_000_000,
                    250,
                ),
            ],
        ),
        resource("orders", vec![orders]),
    ]
}

/// Sends the workload; its first checkout's start and now, in ns.
async fn send_checkouts(server: &TestServer) -> (u64, u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let minute = 60 * SECOND;
    let base = (now - 10 * minute) / minute * minute + SECOND;
    let mut resource_spans = Vec::new();
    for index in 0..CHECKOUTS {
        let failing = index == 1 || index == 4;
        resource_spans.extend(checkout(900 + index, base + index * 10 * SECOND, failing));
    }
    let body = ExportTraceServiceRequest { resource_spans }.encode_to_vec();
    let response = reqwest::Client::new()
        .post(format!("{}/v1/traces", server.otlp_http_url()))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    (base, now)
}

struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        body
    }
}

fn label<'a>(series: &'a Value, key: &str) -> Option<&'a Value> {
    series["labels"]
        .as_array()?
        .iter()
        .find(|label| label["key"] == key)
        .map(|label| &label["value"])
}

/// A sample's value; Tempo leaves zero out.
fn sample_value(sample: &Value) -> f64 {
    sample.get("value").and_then(Value::as_f64).unwrap_or(0.0)
}

fn total(series: &Value) -> f64 {
    series["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(sample_value)
        .sum()
}

fn series(body: &Value) -> &Vec<Value> {
    body["series"]
        .as_array()
        .unwrap_or_else(|| panic!("no series in {body}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn traces_drilldown_and_grafana_metrics_requests() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServerBuilder::new(dir.path()).spawn();
    let (base, now) = send_checkouts(&server).await;
    let client = Client {
        base: server.http_url(),
        http: reqwest::Client::new(),
    };
    let (start, end) = (base / SECOND - 60, now / SECOND + 1);
    let window = format!("start={start}&end={end}");
    let range = |query: &str, extra: &str| {
        format!(
            "/api/metrics/query_range?q={}&{window}{extra}",
            encode(query)
        )
    };

    // Version: the Tempo release whose TraceQL is served.
    let buildinfo = client.ok("/api/status/buildinfo").await;
    assert_eq!(buildinfo["version"], "3.0.3");

    // The app's probe: the last minute, no step. Only an error matters.
    let probe = client
        .ok(&format!(
            "/api/metrics/query_range?q={}&start={}&end={}",
            encode("{} | rate()"),
            now / SECOND - 60,
            now / SECOND
        ))
        .await;
    assert!(probe["series"].is_array(), "{probe}");

    // Rate of root spans, as the main panel asks (two spaces included).
    let step = 28;
    let rate = client
        .ok(&range(
            "{nestedSetParent<0 && true} | rate()  with(sample=true)",
            &format!("&step={step}s"),
        ))
        .await;
    let only = &series(&rate)[0];
    assert_eq!(series(&rate).len(), 1, "{rate}");
    assert_eq!(
        label(only, "__name__"),
        Some(&json!({"stringValue": "rate"}))
    );
    let roots = total(only) * step as f64;
    assert!(
        (roots - CHECKOUTS as f64).abs() < 1e-9,
        "{roots} root spans: {rate}"
    );
    for sample in only["samples"].as_array().unwrap() {
        let stamp: i64 = sample["timestampMs"].as_str().unwrap().parse().unwrap();
        assert_eq!(stamp % (step * 1000), 0, "samples on step boundaries");
    }

    // Errors panel.
    let errors = client
        .ok(&range(
            "{status=error} | rate() with(sample=true)",
            &format!("&step={step}s"),
        ))
        .await;
    assert!(
        (total(&series(&errors)[0]) * step as f64 - 2.0).abs() < 1e-9,
        "{errors}"
    );

    // Duration heatmap: one series per power-of-two bucket, in seconds.
    let heatmap = client
        .ok(&range(
            "{nestedSetParent<0 && true} | histogram_over_time(duration) with(sample=true)",
            "&step=75s",
        ))
        .await;
    assert_eq!(series(&heatmap).len(), 1, "{heatmap}");
    let bucket = &series(&heatmap)[0];
    assert_eq!(
        bucket["labels"].as_array().unwrap().len(),
        1,
        "only __bucket"
    );
    // 300ms -> 2^29 ns.
    assert_eq!(
        label(bucket, "__bucket"),
        Some(&json!({"doubleValue": 0.536870912}))
    );
    assert_eq!(total(bucket), CHECKOUTS as f64);

    // Breakdown by service; the label key is the attribute as written.
    let breakdown = client
        .ok(&range(
            "{resource.service.name != nil} | rate() by(resource.service.name)",
            "&step=60s",
        ))
        .await;
    let services: Vec<&Value> = series(&breakdown)
        .iter()
        .map(|one| label(one, "resource.service.name").unwrap())
        .collect();
    assert_eq!(
        services,
        [
            &json!({"stringValue": "frontend"}),
            &json!({"stringValue": "orders"})
        ]
    );
    let frontend_spans = total(&series(&breakdown)[0]) * 60.0;
    assert!((frontend_spans - 12.0).abs() < 1e-9, "{breakdown}");

    // Duration breakdown: quantiles carry `p`.
    let p90 = client
        .ok(&range(
            "{nestedSetParent<0 && true} | quantile_over_time(duration, 0.9) by(resource.service.name)",
            "",
        ))
        .await;
    let frontend = &series(&p90)[0];
    assert_eq!(label(frontend, "p"), Some(&json!({"doubleValue": 0.9})));
    let largest = frontend["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(sample_value)
        .fold(0.0, f64::max);
    assert_eq!(largest, 0.536870912);

    // Comparison over the whole range in one step.
    let compare = client
        .ok(&range(
            "{} | compare({status = error}, 10)",
            &format!("&step={}s", end - start),
        ))
        .await;
    let find = |kind: &str, key: &str, value: &str| {
        series(&compare)
            .iter()
            .find(|one| {
                label(one, "__meta_type") == Some(&json!({"stringValue": kind}))
                    && label(one, key) == Some(&json!({"stringValue": value}))
            })
            .map(total)
    };
    assert_eq!(find("selection", "status", "error"), Some(2.0), "{compare}");
    assert_eq!(
        find("baseline", "resource.service.name", "frontend"),
        Some(12.0)
    );
    assert_eq!(find("baseline_total", "name", "nil"), Some(16.0));

    // Instant: one value per series over the range.
    let instant = client
        .ok(&format!(
            "/api/metrics/query?q={}&{window}",
            encode("{} | count_over_time() by (resource.service.name)")
        ))
        .await;
    let values: Vec<(Value, f64)> = series(&instant)
        .iter()
        .map(|one| {
            (
                label(one, "resource.service.name").unwrap().clone(),
                one["value"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        values,
        [
            (json!({"stringValue": "frontend"}), 12.0),
            (json!({"stringValue": "orders"}), 6.0)
        ]
    );

    // Exemplars: at most as many as asked (100 when not asked), each
    // naming its trace.
    let exemplars_of = |body: &Value| -> Vec<Value> {
        let mut out = Vec::new();
        for one in series(body) {
            if let Some(list) = one["exemplars"].as_array() {
                out.extend(list.iter().cloned());
            }
        }
        out
    };
    let query = "{} | rate() by (resource.service.name)";
    let one = client.ok(&range(query, "&step=60s&exemplars=1")).await;
    assert_eq!(exemplars_of(&one).len(), 1, "{one}");
    let all = client.ok(&range(query, "&step=60s")).await;
    let exemplars = exemplars_of(&all);
    assert!(exemplars.len() > 1, "{all}");
    for exemplar in &exemplars {
        let trace = label(exemplar, "trace:id").unwrap()["stringValue"]
            .as_str()
            .unwrap();
        assert_eq!(trace.len(), 32);
        assert!(exemplar["timestampMs"].is_string());
        assert!(
            label(exemplar, "resource.service.name").is_some(),
            "{exemplar}"
        );
    }

    // The traces list and the structure tab.
    let list = client
        .ok(&format!(
            "/api/search?q={}&limit=200&spss=10&{window}",
            encode("{nestedSetParent<0 && true}")
        ))
        .await;
    assert_eq!(list["traces"].as_array().unwrap().len(), CHECKOUTS as usize);
    let structure = client
        .ok(&format!(
            "/api/search?q={}&limit=200&spss=20&{window}",
            encode("({nestedSetParent<0 && true} &>> { kind = server }) || ({nestedSetParent<0 && true}) | select(status, resource.service.name, name, nestedSetParent, nestedSetLeft, nestedSetRight)")
        ))
        .await;
    for trace in structure["traces"].as_array().unwrap() {
        let spansets = trace["spanSets"].as_array().unwrap();
        assert_eq!(spansets.len(), 1, "one spanset per trace: {trace}");
        assert_eq!(spansets[0]["matched"], json!(2), "{trace}");
        for span in spansets[0]["spans"].as_array().unwrap() {
            let keys: Vec<&str> = span["attributes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|attribute| attribute["key"].as_str().unwrap())
                .collect();
            for key in [
                "nestedSetLeft",
                "nestedSetRight",
                "nestedSetParent",
                "service.name",
            ] {
                assert!(keys.contains(&key), "{key} in {span}");
            }
        }
    }

    // The exceptions tab.
    let exceptions = client
        .ok(&format!(
            "/api/search?q={}&limit=400&{window}",
            encode("{status = error} | select(resource.service.name, event.exception.message,event.exception.stacktrace,event.exception.type) with(most_recent=true)")
        ))
        .await;
    let traces = exceptions["traces"].as_array().unwrap();
    assert_eq!(traces.len(), 2, "{exceptions}");
    let attributes = &traces[0]["spanSets"][0]["spans"][0]["attributes"];
    for (key, value) in [
        ("exception.message", "card declined"),
        ("exception.type", "DeclinedError"),
        ("exception.stacktrace", "at pay()"),
    ] {
        assert!(
            attributes
                .as_array()
                .unwrap()
                .contains(&json!({"key": key, "value": {"stringValue": value}})),
            "{key} in {attributes}"
        );
    }

    // Autocompletion in every scope.
    let tags = client
        .ok(&format!("/api/v2/search/tags?limit=5000&{window}"))
        .await;
    let scope = |name: &str| {
        tags["scopes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|scope| scope["name"] == name)
            .map(|scope| scope["tags"].clone())
            .unwrap_or_else(|| panic!("scope {name} in {tags}"))
    };
    assert!(
        scope("event")
            .as_array()
            .unwrap()
            .contains(&json!("exception.type"))
    );
    assert!(
        scope("intrinsic")
            .as_array()
            .unwrap()
            .contains(&json!("event:name"))
    );
    scope("link");
    scope("instrumentation");
    let event_only = client
        .ok(&format!("/api/v2/search/tags?scope=event&{window}"))
        .await;
    assert_eq!(event_only["scopes"].as_array().unwrap().len(), 1);
    let types = client
        .ok(&format!(
            "/api/v2/search/tag/event.exception.type/values?q=%7B%7D&limit=5000&{window}"
        ))
        .await;
    assert_eq!(
        types["tagValues"],
        json!([{"type": "string", "value": "DeclinedError"}])
    );
    let event_names = client
        .ok(&format!("/api/v2/search/tag/event:name/values?{window}"))
        .await;
    assert_eq!(
        event_names["tagValues"],
        json!([{"type": "string", "value": "exception"}])
    );

    // EXPLAIN on the native API: the evaluation chosen and the analyzed
    // plan, the filter pushed into the scan.
    for (query, how) in [
        (
            r#"{ resource.service.name = "orders" } >> { status = error }"#,
            "search: candidate traces",
        ),
        (
            "{} | rate() by (resource.service.name)",
            "one scan of spans",
        ),
        ("{ kind = server } > { } | rate()", "each trace evaluated"),
    ] {
        let (status, plan) = client
            .get(&format!("/v1/search/explain?q={}&{window}", encode(query)))
            .await;
        let plan = plan.as_str().unwrap_or_default().to_string();
        assert_eq!(status, 200, "{plan}");
        assert!(plan.contains(how), "{query}: {plan}");
        assert!(
            plan.contains("start_time"),
            "the window reaches the scan: {plan}"
        );
    }

    // Bad input: 400 with the reason.
    for (path, needle) in [
        (range("{ .a = }", ""), "position"),
        (range("{}", ""), "not a metrics query"),
        (range("{} | rates()", ""), "unknown function"),
        (range("{} | rate() | topk(0)", ""), "positive"),
        (range("{} | rate()", "&step=0"), "too small"),
        (range("{} | rate()", "&step=-5"), "positive"),
        (range("{} | rate()", "&step=1ms"), "too small"),
        (
            format!(
                "/api/metrics/query_range?q={}&start={end}&end={start}",
                encode("{} | rate()")
            ),
            "end must be greater than start",
        ),
        (
            format!(
                "/api/metrics/query_range?q={}&start={}&end={end}",
                encode("{} | rate()"),
                end - 8 * 86_400
            ),
            "maximum allowed duration",
        ),
        (
            format!("/api/metrics/query?q={}&start=soon", encode("{} | rate()")),
            "start",
        ),
        (
            format!(
                "/api/metrics/query_range?q={}&start=9000000000000.5&end=1000000000",
                encode("{} | rate()")
            ),
            "start",
        ),
        ("/api/metrics/query_range".to_string(), "missing query"),
        (
            format!("/api/v2/search/tags?scope=bogus&{window}"),
            "invalid scope",
        ),
    ] {
        let (status, body) = client.get(&path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(
            body.as_str().unwrap_or_default().contains(needle),
            "{path}: {body}"
        );
    }
}

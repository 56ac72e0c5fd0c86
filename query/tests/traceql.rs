//! TraceQL over a fixed dataset: a table of queries with the traces each
//! must find (half the traces in a Parquet block, half in the head), and a
//! table of malformed queries with the position or message of the error.

use std::sync::Arc;

use object_store::ObjectStore;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use tracelake_model::otlp::resource_spans_to_batch;
use tracelake_query::traceql::{self, SearchWindow};
use tracelake_storage::{SpanReader, SpanWriter, Storage, StorageConfig, local_store};

const T0: u64 = 1_767_225_600_000_000_000; // 2026-01-01T00:00:00Z
const MS: u64 = 1_000_000;
const MINUTE: u64 = 60_000 * MS;

fn attribute(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

fn text(key: &str, value: &str) -> KeyValue {
    attribute(key, Value::StringValue(value.into()))
}

fn int(key: &str, value: i64) -> KeyValue {
    attribute(key, Value::IntValue(value))
}

/// One span of the dataset.
struct S {
    service: &'static str,
    name: &'static str,
    kind: SpanKind,
    /// Index of the parent in the trace; `None` for the root; `Some(99)`
    /// names a parent that was never stored.
    parent: Option<usize>,
    status: StatusCode,
    message: &'static str,
    start_ms: u64,
    duration_ms: u64,
    attributes: Vec<KeyValue>,
}

fn span(service: &'static str, name: &'static str, kind: SpanKind, parent: Option<usize>) -> S {
    S {
        service,
        name,
        kind,
        parent,
        status: StatusCode::Unset,
        message: "",
        start_ms: 0,
        duration_ms: 10,
        attributes: Vec::new(),
    }
}

impl S {
    fn at(mut self, start_ms: u64, duration_ms: u64) -> Self {
        self.start_ms = start_ms;
        self.duration_ms = duration_ms;
        self
    }

    fn with(mut self, attributes: Vec<KeyValue>) -> Self {
        self.attributes = attributes;
        self
    }

    fn status(mut self, status: StatusCode, message: &'static str) -> Self {
        self.status = status;
        self.message = message;
        self
    }
}

use SpanKind::{Client, Consumer, Internal, Producer, Server};
use StatusCode::{Error, Ok as StatusOk};

/// The traces T1..T12 (see the comments for what each exercises).
fn dataset() -> Vec<Vec<S>> {
    vec![
        // T1: a checkout through orders to a database.
        vec![
            span("frontend", "GET /checkout", Server, None)
                .at(0, 200)
                .with(vec![int("http.status_code", 200)]),
            span("frontend", "POST /orders", Client, Some(0)).at(10, 120),
            span("orders", "POST /orders", Server, Some(1)).at(15, 100),
            span("orders", "SELECT orders", Client, Some(2))
                .at(20, 30)
                .with(vec![text("db.system", "postgresql")]),
        ],
        // T2: a failing checkout; payments retries.
        vec![
            span("frontend", "GET /checkout", Server, None)
                .at(0, 900)
                .status(Error, "upstream failed")
                .with(vec![int("http.status_code", 500)]),
            span("payments", "charge", Server, Some(0))
                .at(50, 800)
                .status(Error, "card declined")
                .with(vec![
                    int("retries", 3),
                    attribute("ratio", Value::DoubleValue(0.5)),
                    attribute("cached", Value::BoolValue(false)),
                ]),
        ],
        // T3: messaging.
        vec![
            span("orders", "POST /orders", Server, None).at(0, 50),
            span("orders", "order-events publish", Producer, Some(0)).at(5, 5),
            span("notifier", "order-events process", Consumer, Some(1))
                .at(30, 40)
                .with(vec![attribute("cached", Value::BoolValue(true))]),
        ],
        // T4: a long internal batch job.
        vec![
            span("billing", "nightly", Internal, None)
                .at(0, 2_500)
                .with(vec![int("batch.size", 1000), text("region", "eu-west-1")]),
        ],
        // T5: a health check in staging.
        vec![
            span("frontend", "GET /health", Server, None)
                .at(0, 1)
                .with(vec![int("http.status_code", 200)]),
        ],
        // T6: payments alone, with a spaced attribute name.
        vec![
            span("payments", "charge", Server, None)
                .at(0, 600)
                .status(StatusOk, "")
                .with(vec![int("retries", 0), text("my key", "spaced")]),
        ],
        // T7: two sibling client calls, one failing.
        vec![
            span("frontend", "GET /checkout", Server, None).at(0, 300),
            span("frontend", "GET", Client, Some(0)).at(10, 50),
            span("frontend", "POST /orders", Client, Some(0))
                .at(70, 60)
                .status(Error, ""),
            span("orders", "GET /stock", Server, Some(1)).at(12, 40),
        ],
        // T8: throttled notifier.
        vec![span("notifier", "send", Server, None).at(0, 20).with(vec![
            text("http.method", "POST"),
            int("http.status_code", 429),
        ])],
        // T9: a trace whose root never arrived.
        vec![span("orders", "orphan", Server, Some(99)).at(0, 10)],
        // T10: a database call with a statement.
        vec![
            span("frontend", "GET /checkout", Server, None).at(0, 100),
            span("frontend", "SELECT", Client, Some(0))
                .at(10, 20)
                .with(vec![text("db.statement", "SELECT 1")]),
        ],
        // T11: a slow api with a nested render.
        vec![
            span("api", "GET /users/{id}", Server, None)
                .at(0, 1_200)
                .with(vec![text("http.route", "/users/{id}")]),
            span("api", "render", Internal, Some(0)).at(50, 1_100),
        ],
        // T12: orders created.
        vec![
            span("orders", "POST /orders", Server, None)
                .at(0, 80)
                .with(vec![
                    int("http.status_code", 201),
                    attribute("latency_ratio", Value::DoubleValue(1.5)),
                ]),
        ],
    ]
}

fn id(trace: usize, span: usize) -> Vec<u8> {
    (((trace as u64) << 8) | (span as u64 + 1))
        .to_be_bytes()
        .to_vec()
}

fn trace_id(trace: usize) -> Vec<u8> {
    let mut bytes = vec![0xab; 16];
    bytes[15] = trace as u8;
    bytes
}

fn environment(service: &str, trace: usize) -> &'static str {
    match (service, trace) {
        (_, 5) => "staging",
        ("billing", _) => "batch",
        _ => "prod",
    }
}

fn resource_spans(trace: usize, spans: &[S]) -> Vec<ResourceSpans> {
    let start = T0 + trace as u64 * MINUTE;
    spans
        .iter()
        .enumerate()
        .map(|(index, s)| ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    text("service.name", s.service),
                    text("deployment.environment", environment(s.service, trace)),
                ],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: trace_id(trace),
                    span_id: id(trace, index),
                    parent_span_id: s.parent.map(|parent| id(trace, parent)).unwrap_or_default(),
                    name: s.name.into(),
                    kind: s.kind as i32,
                    start_time_unix_nano: start + s.start_ms * MS,
                    end_time_unix_nano: start + (s.start_ms + s.duration_ms) * MS,
                    attributes: s.attributes.clone(),
                    status: Some(Status {
                        code: s.status as i32,
                        message: s.message.into(),
                    }),
                    ..Span::default()
                }],
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        })
        .collect()
}

async fn storage(dir: &std::path::Path) -> Arc<dyn SpanReader> {
    let store: Arc<dyn ObjectStore> = local_store(dir).unwrap();
    let config = StorageConfig {
        data_dir: dir.to_path_buf(),
        ..StorageConfig::default()
    };
    let (storage, _) = Storage::open(config, store).await.unwrap();
    for (index, spans) in dataset().iter().enumerate() {
        let trace = index + 1;
        let batch = resource_spans_to_batch("t1", &resource_spans(trace, spans))
            .unwrap()
            .batch
            .unwrap();
        storage.append("t1", batch).await.unwrap();
        // The first half goes to a block, the rest stays in the head.
        if trace == 6 {
            storage.flush().await.unwrap();
        }
    }
    Arc::new(storage)
}

fn window() -> SearchWindow {
    SearchWindow {
        range_ns: (T0 as i64, (T0 + 20 * MINUTE) as i64),
        limit: 100,
        pushdown: true,
    }
}

async fn run(reader: &Arc<dyn SpanReader>, query: &str, pushdown: bool) -> Vec<String> {
    let checked = traceql::prepare(query).unwrap_or_else(|error| panic!("{query}: {error}"));
    let window = SearchWindow {
        pushdown,
        ..window()
    };
    let outcome = traceql::search(Arc::clone(reader), "t1", Arc::new(checked), window)
        .await
        .unwrap_or_else(|error| panic!("{query}: {error}"));
    outcome
        .traces
        .iter()
        .map(|found| format!("T{}", found.trace.trace_id[15]))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn queries_find_the_expected_traces() {
    let dir = tempfile::tempdir().unwrap();
    let reader = storage(dir.path()).await;
    // Expected traces newest first (T12 started last).
    let cases: &[(&str, &[&str])] = &[
        // Everything.
        (
            "{}",
            &[
                "T12", "T11", "T10", "T9", "T8", "T7", "T6", "T5", "T4", "T3", "T2", "T1",
            ],
        ),
        (
            "{ }",
            &[
                "T12", "T11", "T10", "T9", "T8", "T7", "T6", "T5", "T4", "T3", "T2", "T1",
            ],
        ),
        // Resource and span attributes, dedicated columns.
        (r#"{ resource.service.name = "payments" }"#, &["T6", "T2"]),
        (
            r#"{ resource.service.name != "frontend" && kind = server }"#,
            &["T12", "T11", "T9", "T8", "T7", "T6", "T3", "T2", "T1"],
        ),
        (r#"{ .service.name = "billing" }"#, &["T4"]),
        (
            r#"{ resource.service.name =~ "pay.*|bill.*" }"#,
            &["T6", "T4", "T2"],
        ),
        (r#"{ resource.service.name =~ "pay" }"#, &[]),
        (
            r#"{ resource.service.name !~ "frontend|orders" && kind = server }"#,
            &["T11", "T8", "T6", "T2"],
        ),
        (
            r#"{ resource.deployment.environment = "staging" }"#,
            &["T5"],
        ),
        (r#"{ .deployment.environment = "batch" }"#, &["T4"]),
        (r#"{ span.deployment.environment = "prod" }"#, &[]),
        (r#"{ span.http.status_code = 200 }"#, &["T5", "T1"]),
        (r#"{ span.http.status_code >= 500 }"#, &["T2"]),
        (
            r#"{ span.http.status_code >= 400 && span.http.status_code < 500 }"#,
            &["T8"],
        ),
        (r#"{ .http.status_code = 201 }"#, &["T12"]),
        (r#"{ span.http.status_code != 200 }"#, &["T12", "T8", "T2"]),
        (r#"{ span.http.status_code = "200" }"#, &[]),
        (r#"{ span.http.status_code = 200.0 }"#, &["T5", "T1"]),
        (r#"{ span.http.method = "POST" }"#, &["T8"]),
        (r#"{ span.db.system = "postgresql" }"#, &["T1"]),
        (r#"{ span.db.statement =~ "SELECT.*" }"#, &["T10"]),
        (r#"{ span.retries > 0 }"#, &["T2"]),
        (r#"{ span.retries >= 0 }"#, &["T6", "T2"]),
        (r#"{ span.retries = 0 }"#, &["T6"]),
        (r#"{ span.retries < 1.5 }"#, &["T6"]),
        (r#"{ span.ratio = 0.5 }"#, &["T2"]),
        (r#"{ span.ratio < 1 }"#, &["T2"]),
        (r#"{ span.latency_ratio > 1 }"#, &["T12"]),
        (r#"{ span.batch.size = 1000 }"#, &["T4"]),
        (r#"{ span.region = "eu-west-1" }"#, &["T4"]),
        (r#"{ span."my key" = "spaced" }"#, &["T6"]),
        // Booleans and nil.
        (r#"{ span.cached = true }"#, &["T3"]),
        (r#"{ span.cached = false }"#, &["T2"]),
        (r#"{ span.cached }"#, &["T3"]),
        // `!` of a missing value is not true (only of false).
        (r#"{ !span.cached }"#, &["T2"]),
        (
            r#"{ span.cached = nil && resource.service.name = "notifier" }"#,
            &["T8"],
        ),
        (r#"{ span.cached != nil }"#, &["T3", "T2"]),
        (
            r#"{ span.retries = nil && resource.service.name = "payments" }"#,
            &[],
        ),
        (
            r#"{ span.db.system = nil && resource.service.name = "orders" && kind = client }"#,
            &[],
        ),
        (r#"{ span.http.route != nil }"#, &["T11"]),
        // Intrinsics.
        (r#"{ name = "charge" }"#, &["T6", "T2"]),
        (r#"{ span:name = "nightly" }"#, &["T4"]),
        (
            r#"{ name =~ "GET /.*" }"#,
            &["T11", "T10", "T7", "T5", "T2", "T1"],
        ),
        (
            r#"{ name != "GET /checkout" && kind = server && resource.service.name = "frontend" }"#,
            &["T5"],
        ),
        (r#"{ status = error }"#, &["T7", "T2"]),
        (r#"{ span:status = ok }"#, &["T6"]),
        (
            r#"{ status != unset && resource.service.name = "frontend" }"#,
            &["T7", "T2"],
        ),
        (r#"{ kind = consumer }"#, &["T3"]),
        (r#"{ kind = producer || kind = consumer }"#, &["T3"]),
        (r#"{ kind = internal }"#, &["T11", "T4"]),
        (r#"{ span:kind = client && status = error }"#, &["T7"]),
        (r#"{ duration > 500ms }"#, &["T11", "T6", "T4", "T2"]),
        (
            r#"{ resource.service.name = "payments" && duration > 500ms }"#,
            &["T6", "T2"],
        ),
        (r#"{ span:duration >= 1s && duration < 2s }"#, &["T11"]),
        (r#"{ duration <= 1ms }"#, &["T5"]),
        (r#"{ statusMessage = "card declined" }"#, &["T2"]),
        (r#"{ span:statusMessage =~ ".*failed" }"#, &["T2"]),
        (r#"{ rootName = "nightly" }"#, &["T4"]),
        (
            r#"{ trace:rootName = "GET /checkout" && resource.service.name = "payments" }"#,
            &["T2"],
        ),
        (r#"{ rootServiceName = "api" }"#, &["T11"]),
        (
            r#"{ trace:rootService = "orders" && kind = consumer }"#,
            &["T3"],
        ),
        (r#"{ traceDuration > 1s }"#, &["T11", "T4"]),
        (r#"{ trace:duration < 10ms }"#, &["T5"]),
        // Logic inside a spanset.
        (
            r#"{ (name = "charge" || name = "nightly") && duration > 1s }"#,
            &["T4"],
        ),
        (
            r#"{ !(resource.service.name = "frontend" || resource.service.name = "orders") && kind = server }"#,
            &["T11", "T8", "T6", "T2"],
        ),
        (r#"{ !(status = error) && name = "charge" }"#, &["T6"]),
        // Between spansets.
        (
            r#"{ resource.service.name = "frontend" } && { resource.service.name = "orders" }"#,
            &["T7", "T1"],
        ),
        (
            r#"{ resource.service.name = "billing" } || { resource.service.name = "api" }"#,
            &["T11", "T4"],
        ),
        (
            r#"{ resource.service.name = "frontend" } && { resource.service.name = "payments" } || { name = "nightly" }"#,
            &["T4", "T2"],
        ),
        (
            r#"{ resource.service.name = "frontend" } >> { resource.service.name = "orders" }"#,
            &["T7", "T1"],
        ),
        (
            r#"{ resource.service.name = "frontend" && kind = server } > { kind = client }"#,
            &["T10", "T7", "T1"],
        ),
        (r#"{ kind = server } > { kind = server }"#, &["T2"]),
        (r#"{ kind = producer } > { kind = consumer }"#, &["T3"]),
        (
            r#"{ kind = server } >> { span.db.system = "postgresql" }"#,
            &["T1"],
        ),
        (r#"{ name = "GET" } ~ { status = error }"#, &["T7"]),
        (r#"{ } ~ { }"#, &["T7"]),
        (
            r#"({ kind = consumer } || { kind = producer }) && { name = "POST /orders" }"#,
            &["T3"],
        ),
        // Pipelines.
        (r#"{ } | count() > 3"#, &["T7", "T1"]),
        (r#"{ kind = client } | count() >= 2"#, &["T7", "T1"]),
        (r#"{ kind = client } | count() = 1"#, &["T10"]),
        (r#"{ } | avg(duration) > 1s"#, &["T11", "T4"]),
        (r#"{ } | max(duration) >= 900ms"#, &["T11", "T4", "T2"]),
        (r#"{ } | min(duration) > 100ms"#, &["T11", "T6", "T4", "T2"]),
        (
            r#"{ resource.service.name = "frontend" } | sum(duration) > 500ms"#,
            &["T2"],
        ),
        (
            r#"{ resource.service.name = "frontend" } | sum(duration) > 400ms"#,
            &["T7", "T2"],
        ),
        (
            r#"{ span.retries != nil } | sum(span.retries) > 2"#,
            &["T2"],
        ),
        (r#"{ } | by(resource.service.name) | count() > 2"#, &["T7"]),
        (
            r#"{ kind = server } | by(kind) | count() >= 2"#,
            &["T7", "T2", "T1"],
        ),
        (
            r#"{ resource.service.name = "orders" } | select(span.http.status_code)"#,
            &["T12", "T9", "T7", "T3", "T1"],
        ),
        (
            r#"{ status = error } | select(statusMessage, traceDuration) | count() > 1"#,
            &["T2"],
        ),
    ];
    assert!(cases.len() >= 60, "{} cases", cases.len());
    for (query, expected) in cases {
        assert_eq!(run(&reader, query, true).await, *expected, "{query}");
        // The SQL pushed into DataFusion only narrows: evaluating every
        // trace of the window answers the same.
        assert_eq!(
            run(&reader, query, false).await,
            *expected,
            "{query} (no pushdown)"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn spansets_carry_matches_groups_and_selected_fields() {
    let dir = tempfile::tempdir().unwrap();
    let reader = storage(dir.path()).await;
    let window = window();
    let query = r#"{ resource.service.name = "frontend" && kind = client } | by(span.http.status_code) | select(statusMessage)"#;
    let checked = Arc::new(traceql::prepare(query).unwrap());
    let outcome = traceql::search(Arc::clone(&reader), "t1", Arc::clone(&checked), window)
        .await
        .unwrap();
    let t7 = outcome
        .traces
        .iter()
        .find(|found| found.trace.trace_id[15] == 7)
        .expect("T7 matches");
    // Both client spans lack http.status_code: one nil group of two.
    assert_eq!(t7.spansets.len(), 1);
    assert_eq!(t7.spansets[0].spans.len(), 2);
    assert_eq!(
        t7.spansets[0].attributes,
        [(
            "by(span.http.status_code)".to_string(),
            traceql::AttrValue::Text("nil".into())
        )]
    );
    let attributes = checked.span_attributes(t7.spansets[0].spans[1], &t7.trace);
    let keys: Vec<&str> = attributes.iter().map(|(key, _)| key.as_str()).collect();
    assert_eq!(keys, ["service.name", "kind", "statusMessage"]);

    // The limit keeps the newest traces.
    let limited = SearchWindow { limit: 2, ..window };
    let checked = Arc::new(traceql::prepare("{}").unwrap());
    let outcome = traceql::search(reader, "t1", checked, limited)
        .await
        .unwrap();
    let names: Vec<u8> = outcome
        .traces
        .iter()
        .map(|f| f.trace.trace_id[15])
        .collect();
    assert_eq!(names, [12, 11]);
    assert!(outcome.inspected_traces >= 2);
}

#[test]
fn malformed_queries_are_refused_with_positions() {
    let syntax: &[(&str, usize)] = &[
        ("", 1),
        ("{", 2),
        ("}", 1),
        ("{ name = }", 10),
        ("{ name = \"x\" ", 14),
        ("{ name = \"x }", 10),
        ("{ nme = \"x\" }", 3),
        ("{ .a = b }", 8),
        ("{ .a == 1 }", 7),
        ("{ .a = 1 } &&", 14),
        ("{ .a = 1 } | ", 14),
        ("{ .a = 1 } | count() > x", 24),
        ("{ .a = 1 } | avg(duration, name) > 1", 14),
        ("{ .a = 1 } | by()", 14),
        ("{ .a = 1 } | rate", 14),
        ("{ .a = 1 } extra", 12),
        ("{ (.a = 1 }", 11),
        ("{ .a = 1 && }", 13),
        ("{ duration > 5parsecs }", 15),
        ("{ .a = 1 } >> ", 15),
        ("{ span. = 1 }", 8),
        ("{ .a @ 1 }", 6),
    ];
    for (query, position) in syntax {
        match traceql::prepare(query) {
            Err(traceql::QueryProblem::Syntax(error)) => {
                assert_eq!(error.position, *position, "{query}: {error}")
            }
            other => panic!("{query}: expected a syntax error, got {other:?}"),
        }
    }
    // Type errors, found before anything runs (Tempo's validation).
    let semantic: &[(&str, &str)] = &[
        ("{ duration > \"slow\" }", "duration and string"),
        ("{ status = \"error\" }", "status and string"),
        ("{ status > error }", "status"),
        ("{ kind = error }", "kind and status"),
        ("{ name = 5 }", "string and int"),
        ("{ name }", "boolean"),
        ("{ span.x > true }", "boolean"),
        ("{ span.x > nil }", "nil"),
        ("{ span.x =~ 5 }", "=~"),
        ("{ duration =~ \"1\" }", "=~"),
        ("{ name =~ \"(\" }", "invalid regex"),
        ("{ } | avg(name) > 1", "numbers"),
        ("{ resource.service.name = nil }", "never nil"),
    ];
    for (query, needle) in semantic {
        match traceql::prepare(query) {
            Err(error) => assert!(error.to_string().contains(needle), "{query}: {error}"),
            Ok(_) => panic!("{query}: expected a type error"),
        }
    }
}

//! TraceQL's language features on hand-built traces whose answers are
//! worked out by hand: structural relations on a trace with siblings, a
//! deep descendant and an orphaned subtree, and on one with two roots;
//! arithmetic; every intrinsic; events, links, the instrumentation scope;
//! nil; typed `by()` groups and aggregates on the spanset.
//!
//! Trace A (start order; `o1`'s parent was never stored):
//!
//! ```text
//! root (gateway, server, 100ms)
//! ├── c1 (client, 50ms, span.x = 1)
//! │   └── g1 (db, server, 20ms, span.x = 1.0, event "exception", scope io.db 1.2)
//! └── c2 (client, 30ms, span.x = "1", error)
//! o1 (worker, orphan) └── o2
//! ```
//!
//! Trace B: two roots `r1`, `r2`; `k` under `r1` links to A's root.

mod fixture;

use std::sync::Arc;

use fixture::{Parent, S, SECOND, T, T0, float, int, span, span_id, store, text, trace_id};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use tracelake_query::traceql::{self, AttrValue, SearchWindow};
use tracelake_storage::SpanReader;

fn traces() -> Vec<T> {
    let a: Vec<S> = vec![
        span("root", "gateway", Parent::Root)
            .at_ms(0, 100)
            .kind(SpanKind::Server),
        span("c1", "gateway", Parent::Of("root"))
            .at_ms(10, 50)
            .kind(SpanKind::Client)
            .with(vec![int("x", 1)]),
        span("c2", "gateway", Parent::Of("root"))
            .at_ms(20, 30)
            .kind(SpanKind::Client)
            .error()
            .with(vec![text("x", "1")]),
        span("g1", "db", Parent::Of("c1"))
            .at_ms(15, 20)
            .kind(SpanKind::Server)
            .with(vec![float("x", 1.0)])
            .event("exception", 5, vec![text("exception.message", "boom")])
            .scope("io.db", "1.2"),
        span("o1", "worker", Parent::Missing).at_ms(30, 5),
        span("o2", "worker", Parent::Of("o1")).at_ms(31, 2),
    ];
    let b: Vec<S> = vec![
        span("r1", "batch", Parent::Root).at_ms(0, 10),
        span("r2", "batch", Parent::Root).at_ms(1, 10),
        span("k", "batch", Parent::Of("r1"))
            .at_ms(2, 5)
            .link(1, "root"),
    ];
    vec![
        T {
            id: 1,
            start_ns: T0 + SECOND,
            spans: a,
        },
        T {
            id: 2,
            start_ns: T0 + 2 * SECOND,
            spans: b,
        },
    ]
}

fn window(pushdown: bool) -> SearchWindow {
    SearchWindow {
        range_ns: (T0 as i64, (T0 + 60 * SECOND) as i64),
        limit: 100,
        pushdown,
    }
}

/// `A:root,c1` per matching trace (newest first), spans of all spansets
/// by start; the same with and without pushdown.
async fn matched(reader: &Arc<dyn SpanReader>, query: &str) -> Vec<String> {
    let mut answers = Vec::new();
    for pushdown in [true, false] {
        let checked = traceql::prepare(query).unwrap_or_else(|error| panic!("{query}: {error}"));
        let outcome = traceql::search(
            Arc::clone(reader),
            "t1",
            Arc::new(checked),
            window(pushdown),
        )
        .await
        .unwrap_or_else(|error| panic!("{query}: {error}"));
        let found: Vec<String> = outcome
            .traces
            .iter()
            .map(|found| {
                let mut spans: Vec<usize> = found
                    .spansets
                    .iter()
                    .flat_map(|set| set.spans.clone())
                    .collect();
                spans.sort_unstable();
                spans.dedup();
                let names: Vec<&str> = spans
                    .iter()
                    .map(|index| found.trace.spans[*index].name.as_str())
                    .collect();
                let label = if found.trace.trace_id[15] == 1 {
                    "A"
                } else {
                    "B"
                };
                format!("{label}:{}", names.join(","))
            })
            .collect();
        answers.push(found);
    }
    assert_eq!(
        answers[0], answers[1],
        "{query}: pushdown changed the answer"
    );
    answers.remove(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn language_features_answer_as_worked_out_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let reader = store(dir.path(), &traces(), 1).await;
    let a_id = hex::encode(trace_id(1));
    let root_id = hex::encode(span_id(1, "root"));
    let c1_id = hex::encode(span_id(1, "c1"));
    let cases: Vec<(String, Vec<&str>)> = vec![
        // Structural relations; orphans take part in none.
        (r#"{ name = "root" } > { }"#.into(), vec!["A:c1,c2"]),
        (r#"{ name = "root" } >> { }"#.into(), vec!["A:c1,g1,c2"]),
        (
            r#"{ name = "root" } !>> { }"#.into(),
            vec!["B:r1,r2,k", "A:root,o1,o2"],
        ),
        (r#"{ name = "c1" } ~ { }"#.into(), vec!["A:c2"]),
        (r#"{ } ~ { name = "r2" }"#.into(), vec!["B:r2"]),
        (r#"{ } ~ { name = "o1" }"#.into(), vec![]),
        (r#"{ name = "g1" } << { }"#.into(), vec!["A:root,c1"]),
        (r#"{ name = "g1" } < { }"#.into(), vec!["A:c1"]),
        (
            r#"{ name = "root" } &> { name = "c1" }"#.into(),
            vec!["A:root,c1"],
        ),
        (
            r#"{ name = "root" } &>> { kind = server }"#.into(),
            vec!["A:root,g1"],
        ),
        (
            r#"{ name = "c2" } &~ { name = "c1" }"#.into(),
            vec!["A:c1,c2"],
        ),
        (r#"{ name = "o1" } > { name = "o2" }"#.into(), vec![]),
        (r#"{ name = "o1" } !> { name = "o2" }"#.into(), vec!["A:o2"]),
        (
            r#"{ name = "c1" } !~ { kind = client }"#.into(),
            vec!["A:c1"],
        ),
        // Relations bind tighter than ||; && and || share a level.
        (
            r#"{ name = "root" } || { name = "c1" } > { name = "g1" }"#.into(),
            vec!["A:root,g1"],
        ),
        (
            r#"{ name = "c1" || name = "c2" && status = error }"#.into(),
            vec!["A:c2"],
        ),
        // Arithmetic and numbers of mixed kinds.
        (r#"{ duration > 10ms * 4 }"#.into(), vec!["A:root,c1"]),
        (r#"{ span.x + 1 = 2 }"#.into(), vec!["A:c1,g1"]),
        (r#"{ .x = 1 }"#.into(), vec!["A:c1,g1"]),
        (
            r#"{ -span.x < 0 && span.x * 2 >= 2 }"#.into(),
            vec!["A:c1,g1"],
        ),
        (r#"{ span.x = "1" }"#.into(), vec!["A:c2"]),
        // Intrinsics.
        (r#"{ span:childCount = 2 }"#.into(), vec!["A:root"]),
        (
            r#"{ span:childCount = 1 && nestedSetParent < 0 }"#.into(),
            vec!["B:r1"],
        ),
        (
            r#"{ nestedSetParent < 0 }"#.into(),
            vec!["B:r1,r2", "A:root"],
        ),
        (
            r#"{ nestedSetLeft = 2 && nestedSetRight = 5 }"#.into(),
            vec!["A:c1"],
        ),
        (r#"{ event:name = "exception" }"#.into(), vec!["A:g1"]),
        (
            r#"{ event.exception.message = "boom" }"#.into(),
            vec!["A:g1"],
        ),
        (
            r#"{ event:timeSinceStart >= 5ms && event:timeSinceStart < 6ms }"#.into(),
            vec!["A:g1"],
        ),
        (
            r#"{ instrumentation:name = "io.db" && instrumentation:version = "1.2" }"#.into(),
            vec!["A:g1"],
        ),
        (
            format!(r#"{{ link:traceID = "{a_id}" && link:spanID = "{root_id}" }}"#),
            vec!["B:k"],
        ),
        (
            format!(r#"{{ trace:id = "{a_id}" && nestedSetParent = -1 }}"#),
            vec!["A:root"],
        ),
        (format!(r#"{{ span:id = "{c1_id}" }}"#), vec!["A:c1"]),
        (
            format!(r#"{{ span:parentID = "{root_id}" }}"#),
            vec!["A:c1,c2"],
        ),
        (
            r#"{ trace:rootService = "gateway" && trace:duration > 50ms && kind = client }"#.into(),
            vec!["A:c1,c2"],
        ),
        (r#"{ rootName = "r1" && name = "k" }"#.into(), vec!["B:k"]),
        // nil.
        (
            r#"{ span.missing = nil && name = "c1" }"#.into(),
            vec!["A:c1"],
        ),
        (r#"{ span.x != nil }"#.into(), vec!["A:c1,g1,c2"]),
        // Pipelines.
        (r#"{ } | count() > 5"#.into(), vec!["A:root,c1,g1,c2,o1,o2"]),
        (
            r#"({ name = "root" } | count() = 1) >> { kind = server }"#.into(),
            vec!["A:g1"],
        ),
        (
            r#"{ resource.service.name = "gateway" } | avg(duration) > 50ms"#.into(),
            vec!["A:root,c1,c2"],
        ),
        (
            r#"{ resource.service.name = "gateway" } | avg(duration) > 61ms"#.into(),
            vec![],
        ),
    ];
    for (query, expected) in &cases {
        assert_eq!(matched(&reader, query).await, *expected, "{query}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn by_keeps_the_type_of_values_and_reports_aggregates() {
    let dir = tempfile::tempdir().unwrap();
    let reader = store(dir.path(), &traces(), 1).await;
    let run = |query: &'static str| {
        let reader = Arc::clone(&reader);
        async move {
            let checked = Arc::new(traceql::prepare(query).unwrap());
            let outcome = traceql::search(reader, "t1", Arc::clone(&checked), window(true))
                .await
                .unwrap();
            (checked, outcome)
        }
    };
    // int 1, float 1.0 and string "1" are three groups, in start order.
    let (_, outcome) = run("{ span.x != nil } | by(span.x)").await;
    let groups: Vec<Vec<(String, AttrValue)>> = outcome.traces[0]
        .spansets
        .iter()
        .map(|set| set.attributes.clone())
        .collect();
    let key = || "by(span.x)".to_string();
    assert_eq!(
        groups,
        vec![
            vec![(key(), AttrValue::Int(1))],
            vec![(key(), AttrValue::Float(1.0))],
            vec![(key(), AttrValue::Text("1".into()))],
        ]
    );
    // Spans without the field group under nil.
    let (_, outcome) = run(r#"{ name =~ "c." } | by(span.y) | count() = 2"#).await;
    assert_eq!(
        outcome.traces[0].spansets[0].attributes,
        vec![
            ("by(span.y)".to_string(), AttrValue::Text("nil".into())),
            ("count()".to_string(), AttrValue::Int(2)),
        ]
    );
    // Aggregates are reported with their value's type.
    let (_, outcome) = run(r#"{ resource.service.name = "gateway" } | avg(duration) > 50ms"#).await;
    assert_eq!(
        outcome.traces[0].spansets[0].attributes,
        vec![("avg(duration)".to_string(), AttrValue::Duration(60_000_000))]
    );
    // select() answers nested-set numbers (Traces Drilldown's structure tab).
    let (checked, outcome) = run(r#"{ name = "c1" } | select(nestedSetLeft, nestedSetRight, nestedSetParent, span:childCount)"#).await;
    let found = &outcome.traces[0];
    let attributes = checked.span_attributes(found.spansets[0].spans[0], &found.trace);
    for (name, value) in [
        ("nestedSetLeft", 2),
        ("nestedSetRight", 5),
        ("nestedSetParent", 1),
        ("span:childCount", 1),
    ] {
        assert!(
            attributes.contains(&(name.to_string(), AttrValue::Int(value))),
            "{name} in {attributes:?}"
        );
    }
    // coalesce() merges the groups into one spanset without attributes.
    let (_, outcome) = run("{ span.x != nil } | by(span.x) | coalesce()").await;
    assert_eq!(outcome.traces[0].spansets.len(), 1);
    assert_eq!(outcome.traces[0].spansets[0].spans.len(), 3);
    assert!(outcome.traces[0].spansets[0].attributes.is_empty());
}

/// A search reads its window newest slice first and stops once it has its
/// limit; the answer is the window's: the traces whose latest matching
/// span is newest, each once, whichever slices their spans are in.
///
/// Window `[T0, T0+64min]`; slices from the newest: `[T0+63min, ..]`,
/// `[T0+60min, ..)`, `[T0+48min, ..)`, the rest. Matching spans are the
/// `api` service's:
///
/// | trace | starts | api spans at | latest match |
/// |---|---|---|---|
/// | 1 | T0+10min | +10min, +63.5min | 63.5 |
/// | 2 | T0+63.2min | +63.2min | 63.2 |
/// | 3 | T0+50min | +50min | 50 |
/// | 4 | T0+5min | +5min (a `web` span at +63.9min) | 5 |
/// | 5 | T0+30min | +30min | 30 |
#[tokio::test(flavor = "multi_thread")]
async fn search_answers_the_newest_latest_matches_across_slices() {
    const MINUTE_MS: u64 = 60_000;
    let at = |id: u8, start_ms: u64, spans: Vec<S>| T {
        id,
        start_ns: T0 + start_ms * fixture::MS,
        spans,
    };
    let traces = vec![
        at(
            1,
            10 * MINUTE_MS,
            vec![
                span("a", "api", Parent::Root).at_ms(0, 5),
                span("b", "api", Parent::Of("a")).at_ms(53 * MINUTE_MS + 30_000, 5),
            ],
        ),
        at(
            2,
            63 * MINUTE_MS + 12_000,
            vec![span("a", "api", Parent::Root).at_ms(0, 5)],
        ),
        at(
            3,
            50 * MINUTE_MS,
            vec![span("a", "api", Parent::Root).at_ms(0, 5)],
        ),
        at(
            4,
            5 * MINUTE_MS,
            vec![
                span("a", "api", Parent::Root).at_ms(0, 5),
                span("b", "web", Parent::Of("a")).at_ms(58 * MINUTE_MS + 54_000, 5),
            ],
        ),
        at(
            5,
            30 * MINUTE_MS,
            vec![span("a", "api", Parent::Root).at_ms(0, 5)],
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let reader = store(dir.path(), &traces, 3).await;
    let checked = Arc::new(traceql::prepare(r#"{ resource.service.name = "api" }"#).unwrap());
    for (limit, expected) in [
        (2, vec![2u8, 1]),
        (4, vec![2, 3, 5, 1]),
        (10, vec![2, 3, 5, 1, 4]),
    ] {
        let window = SearchWindow {
            range_ns: (T0 as i64, (T0 + 64 * 60 * SECOND) as i64),
            limit,
            pushdown: true,
        };
        let found = traceql::search(Arc::clone(&reader), "t1", Arc::clone(&checked), window)
            .await
            .unwrap();
        let ids: Vec<u8> = found
            .traces
            .iter()
            .map(|found| found.trace.trace_id[15])
            .collect();
        assert_eq!(ids, expected, "limit {limit}");
    }
}

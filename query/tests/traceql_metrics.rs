//! TraceQL metrics over spans at known times and durations, with the
//! expected series computed by hand.
//!
//! The request is `start = T0, end = T0 + 120s, step = 60s`; Tempo's
//! alignment moves the start one step back, so there are three intervals
//! `(T0-60s, T0]`, `(T0, T0+60s]`, `(T0+60s, T0+120s]`, stamped at their
//! right edges.
//!
//! | span | service | starts | duration | power-of-two bucket |
//! |---|---|---|---|---|
//! | old | api | T0-30s | 5ms | 2^23 ns |
//! | a | api | T0+10s | 1ms | 2^20 |
//! | a (error) | api | T0+20s | 2ms | 2^21 |
//! | q, q2 (child of q) | db | T0+30s | 4ms, 1ms | 2^22, 2^20 |
//! | b | api | T0+70s | 3ms | 2^22 |

mod fixture;

use std::sync::Arc;

use fixture::{MS, Parent, SECOND, T, T0, span, store};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use tracelake_query::traceql::{self, AttrValue, MetricsRequest, Series};
use tracelake_storage::SpanReader;

fn traces() -> Vec<T> {
    let one = |id: u8, at: u64, name: &'static str, service: &'static str, ms: u64| T {
        id,
        start_ns: at,
        spans: vec![span(name, service, Parent::Root).at_ms(0, ms)],
    };
    let mut failing = one(2, T0 + 20 * SECOND, "a", "api", 2);
    failing.spans[0] = failing.spans[0].clone().error();
    vec![
        one(5, T0 - 30 * SECOND, "old", "api", 5),
        one(1, T0 + 10 * SECOND, "a", "api", 1),
        failing,
        T {
            id: 4,
            start_ns: T0 + 30 * SECOND,
            spans: vec![
                span("q", "db", Parent::Root).at_ms(0, 4),
                span("q2", "db", Parent::Of("q")).at_ms(1, 1),
            ],
        },
        one(3, T0 + 70 * SECOND, "b", "api", 3),
    ]
}

const STEP: i64 = 60 * SECOND as i64;

fn request() -> MetricsRequest {
    MetricsRequest {
        start_ns: T0 as i64,
        end_ns: (T0 + 120 * SECOND) as i64,
        step_ns: STEP,
        exemplars: 100,
        instant: false,
    }
}

/// The three timestamps (ms).
fn stamps() -> [i64; 3] {
    let t0 = (T0 / MS) as i64;
    [t0, t0 + 60_000, t0 + 120_000]
}

async fn series_of(
    reader: &Arc<dyn SpanReader>,
    query: &str,
    request: MetricsRequest,
) -> Vec<Series> {
    let checked = traceql::prepare(query).unwrap_or_else(|error| panic!("{query}: {error}"));
    traceql::query_range(Arc::clone(reader), "t1", Arc::new(checked), request)
        .await
        .unwrap_or_else(|error| panic!("{query}: {error}"))
        .series
}

type Labels = Vec<(String, AttrValue)>;
/// Labels and the values at the three stamps.
type Expected = (Labels, Vec<Option<f64>>);

fn label(name: &str, value: &str) -> (String, AttrValue) {
    (name.into(), AttrValue::Text(value.into()))
}

/// Each series' labels and samples, for comparing two evaluations.
fn labels_and_samples(series: Vec<Series>) -> Vec<(Labels, Vec<(i64, f64)>)> {
    series
        .into_iter()
        .map(|one| (one.labels, one.samples))
        .collect()
}

/// Values of a series at the three stamps (`None`: no sample).
fn values(series: &Series) -> Vec<Option<f64>> {
    stamps()
        .iter()
        .map(|stamp| {
            series
                .samples
                .iter()
                .find(|(ts, _)| ts == stamp)
                .map(|(_, value)| *value)
        })
        .collect()
}

fn close(actual: &[Option<f64>], expected: &[Option<f64>]) -> bool {
    actual.len() == expected.len()
        && actual.iter().zip(expected).all(|(a, b)| match (a, b) {
            (Some(a), Some(b)) => (a - b).abs() < 1e-9,
            (None, None) => true,
            _ => false,
        })
}

fn assert_series(series: &[Series], expected: &[Expected], query: &str) {
    let actual: Vec<Expected> = series
        .iter()
        .map(|one| (one.labels.clone(), values(one)))
        .collect();
    assert_eq!(actual.len(), expected.len(), "{query}: {actual:?}");
    for ((labels, values), (want_labels, want_values)) in actual.iter().zip(expected) {
        assert_eq!(labels, want_labels, "{query}: {actual:?}");
        assert!(
            close(values, want_values),
            "{query} {labels:?}: {values:?} != {want_values:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn series_match_the_hand_computed_values() {
    let dir = tempfile::tempdir().unwrap();
    let reader = store(dir.path(), &traces(), 2).await;
    let s = |value: f64| Some(value);
    let service = |name: &str| vec![label("resource.service.name", name)];
    let with_p = |name: &str, p: f64| {
        vec![
            label("resource.service.name", name),
            ("p".to_string(), AttrValue::Float(p)),
        ]
    };
    let cases: Vec<(&str, Vec<Expected>)> = vec![
        (
            "{} | count_over_time() by (resource.service.name)",
            vec![
                (service("api"), vec![s(1.0), s(2.0), s(1.0)]),
                (service("db"), vec![s(0.0), s(2.0), s(0.0)]),
            ],
        ),
        (
            "{} | rate()",
            vec![(
                vec![label("__name__", "rate")],
                vec![s(1.0 / 60.0), s(4.0 / 60.0), s(1.0 / 60.0)],
            )],
        ),
        (
            "{ status = error } | count_over_time()",
            vec![(
                vec![label("__name__", "count_over_time")],
                vec![s(0.0), s(1.0), s(0.0)],
            )],
        ),
        (
            "{} | max_over_time(duration) by (resource.service.name)",
            vec![
                (service("api"), vec![s(0.005), s(0.002), s(0.003)]),
                (service("db"), vec![None, s(0.004), None]),
            ],
        ),
        (
            "{} | avg_over_time(duration)",
            vec![(
                vec![label("__name__", "avg_over_time")],
                vec![s(0.005), s(0.002), s(0.003)],
            )],
        ),
        (
            "{} | sum_over_time(duration) by (resource.service.name)",
            vec![
                (service("api"), vec![s(0.005), s(0.003), s(0.003)]),
                (service("db"), vec![None, s(0.005), None]),
            ],
        ),
        (
            "{} | quantile_over_time(duration, .5, .9) by (resource.service.name)",
            vec![
                (
                    with_p("api", 0.5),
                    vec![s(0.008388608), s(0.001048576), s(0.004194304)],
                ),
                (
                    with_p("api", 0.9),
                    vec![s(0.008388608), s(0.002097152), s(0.004194304)],
                ),
                (with_p("db", 0.5), vec![s(0.0), s(0.001048576), s(0.0)]),
                (with_p("db", 0.9), vec![s(0.0), s(0.004194304), s(0.0)]),
            ],
        ),
        (
            "{} | histogram_over_time(duration)",
            vec![
                (
                    vec![("__bucket".to_string(), AttrValue::Float(0.001048576))],
                    vec![s(0.0), s(2.0), s(0.0)],
                ),
                (
                    vec![("__bucket".to_string(), AttrValue::Float(0.002097152))],
                    vec![s(0.0), s(1.0), s(0.0)],
                ),
                (
                    vec![("__bucket".to_string(), AttrValue::Float(0.004194304))],
                    vec![s(0.0), s(1.0), s(1.0)],
                ),
                (
                    vec![("__bucket".to_string(), AttrValue::Float(0.008388608))],
                    vec![s(1.0), s(0.0), s(0.0)],
                ),
            ],
        ),
        // A structural relation: evaluated trace by trace.
        (
            r#"{ name = "q" } > { } | count_over_time()"#,
            vec![(
                vec![label("__name__", "count_over_time")],
                vec![s(0.0), s(1.0), s(0.0)],
            )],
        ),
        // Second stages.
        (
            "{} | count_over_time() by (resource.service.name) | topk(1)",
            vec![(service("api"), vec![s(1.0), s(2.0), s(1.0)])],
        ),
        (
            "{} | count_over_time() by (resource.service.name) > 1",
            vec![
                (service("api"), vec![None, s(2.0), None]),
                (service("db"), vec![None, s(2.0), None]),
            ],
        ),
        (
            "{} | count_over_time() by (resource.service.name) | bottomk(1) < 1",
            vec![(service("db"), vec![s(0.0), None, s(0.0)])],
        ),
        // Arithmetic between queries and with numbers.
        (
            "({ status = error } | count_over_time()) / ({} | count_over_time())",
            vec![(
                vec![label("__name__", "(count_over_time / count_over_time)")],
                vec![s(0.0), s(0.25), s(0.0)],
            )],
        ),
        (
            "({} | count_over_time()) * 2",
            vec![(
                vec![label("__name__", "count_over_time")],
                vec![s(2.0), s(8.0), s(2.0)],
            )],
        ),
    ];
    for (query, expected) in &cases {
        let series = series_of(&reader, query, request()).await;
        assert_series(&series, expected, query);
    }
}

/// The compiled plan and trace-by-trace evaluation give the same series.
#[tokio::test(flavor = "multi_thread")]
async fn both_evaluations_agree() {
    let dir = tempfile::tempdir().unwrap();
    // Span attributes to group by: text and int, one span without them.
    let mut traces = traces();
    for (index, trace) in traces.iter_mut().enumerate() {
        for span in trace.spans.iter_mut().skip(usize::from(index == 3)) {
            *span = span.clone().with(vec![
                fixture::text("tier", if index % 2 == 0 { "gold" } else { "free" }),
                fixture::int("shard", index as i64 % 3),
            ]);
        }
    }
    let reader = store(dir.path(), &traces, 2).await;
    for (compiled, evaluated) in [
        (
            "{} | count_over_time() by (span.tier, span.shard)",
            "{} | {} | count_over_time() by (span.tier, span.shard)",
        ),
        (
            "{} | avg_over_time(span.shard) by (span.tier)",
            "{} | {} | avg_over_time(span.shard) by (span.tier)",
        ),
        (
            "{} | quantile_over_time(duration, .5, .9, .99) by (resource.service.name)",
            "{} | {} | quantile_over_time(duration, .5, .9, .99) by (resource.service.name)",
        ),
        (
            "{ kind != server } | rate() by (name, resource.service.name)",
            "{ kind != server } | { } | rate() by (name, resource.service.name)",
        ),
        (
            "{ duration > 1ms } | min_over_time(duration) by (status)",
            "{ duration > 1ms } | { } | min_over_time(duration) by (status)",
        ),
    ] {
        let one = series_of(&reader, compiled, request()).await;
        let other = series_of(&reader, evaluated, request()).await;
        assert!(!one.is_empty(), "{compiled}");
        assert_eq!(
            labels_and_samples(one),
            labels_and_samples(other),
            "{compiled} vs {evaluated}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn instant_queries_answer_one_value_over_the_range() {
    let dir = tempfile::tempdir().unwrap();
    let reader = store(dir.path(), &traces(), 2).await;
    let instant = MetricsRequest {
        step_ns: 120 * SECOND as i64,
        instant: true,
        ..request()
    };
    let series = series_of(&reader, "{} | count_over_time()", instant).await;
    assert_eq!(series.len(), 1);
    // (T0, T0+120s]: a, a, q, q2, b.
    assert_eq!(series[0].samples.len(), 1);
    assert_eq!(series[0].samples[0].1, 5.0);
    let series = series_of(&reader, "{} | rate() by (resource.service.name)", instant).await;
    let rates: Vec<f64> = series.iter().map(|one| one.samples[0].1).collect();
    assert_eq!(rates, [3.0 / 120.0, 2.0 / 120.0]);
}

#[tokio::test(flavor = "multi_thread")]
async fn exemplars_and_compare() {
    let dir = tempfile::tempdir().unwrap();
    let reader = store(dir.path(), &traces(), 2).await;
    // Exemplars carry the trace id and the series' labels; the compiled
    // plan and trace-by-trace evaluation both answer them.
    for query in [
        "{} | { } | count_over_time() by (resource.service.name)",
        "{} | count_over_time() by (resource.service.name)",
    ] {
        let series = series_of(&reader, query, request()).await;
        let db = series
            .iter()
            .find(|one| one.labels == vec![label("resource.service.name", "db")])
            .unwrap();
        assert_eq!(
            db.exemplars.len(),
            1,
            "{query}: one per trace: {:?}",
            db.exemplars
        );
        let exemplar = &db.exemplars[0];
        assert_eq!(
            exemplar.labels,
            vec![
                label("trace:id", &hex::encode(fixture::trace_id(4))),
                label("resource.service.name", "db")
            ],
            "{query}"
        );
        assert_eq!(exemplar.value, 2.0, "{query}: the interval's value");
        let start_ms = ((T0 + 30 * SECOND) / MS) as i64;
        assert!(
            (start_ms..=start_ms + 1).contains(&exemplar.timestamp_ms),
            "{query}: {}",
            exemplar.timestamp_ms
        );
    }

    // compare(): error spans (selection) against the rest (baseline).
    let series = series_of(&reader, "{} | compare({ status = error })", request()).await;
    let find = |kind: &str, name: &str, value: &str| {
        series
            .iter()
            .find(|one| one.labels == vec![label("__meta_type", kind), label(name, value)])
            .map(values)
            .unwrap_or_else(|| panic!("{kind} {name}={value} in {series:?}"))
    };
    assert_eq!(
        find("selection", "status", "error"),
        [Some(0.0), Some(1.0), Some(0.0)]
    );
    assert_eq!(
        find("baseline", "resource.service.name", "api"),
        [Some(1.0), Some(1.0), Some(1.0)]
    );
    assert_eq!(
        find("baseline_total", "resource.service.name", "nil"),
        [Some(1.0), Some(3.0), Some(1.0)]
    );
}

/// An X-Ray segment stored in progress and again complete counts once,
/// in the compiled plan and trace by trace alike.
#[tokio::test(flavor = "multi_thread")]
async fn an_in_progress_segment_and_its_completion_count_once() {
    let dir = tempfile::tempdir().unwrap();
    let in_progress = span("seg", "api", Parent::Root)
        .at_ms(0, 0)
        .with(vec![fixture::boolean("aws.xray.inprogress", true)]);
    let complete = span("seg", "api", Parent::Root).at_ms(0, 40);
    let traces = vec![
        T {
            id: 7,
            start_ns: T0 + 10 * SECOND,
            spans: vec![in_progress],
        },
        T {
            id: 7,
            start_ns: T0 + 10 * SECOND,
            spans: vec![complete],
        },
    ];
    // A segment still in progress counts once it completes.
    let pending = T {
        id: 8,
        start_ns: T0 + 20 * SECOND,
        spans: vec![
            span("open", "api", Parent::Root)
                .at_ms(0, 0)
                .with(vec![fixture::boolean("aws.xray.inprogress", true)]),
        ],
    };
    let mut traces = traces;
    traces.push(pending);
    let reader = store(dir.path(), &traces, 1).await;
    for query in ["{} | count_over_time()", "{} | {} | count_over_time()"] {
        let series = series_of(&reader, query, request()).await;
        let total: f64 = series[0].samples.iter().map(|(_, value)| value).sum();
        assert_eq!(total, 1.0, "{query}");
    }
    for query in [
        "{} | min_over_time(duration)",
        "{} | {} | min_over_time(duration)",
    ] {
        let series = series_of(&reader, query, request()).await;
        let values: Vec<f64> = series[0].samples.iter().map(|(_, value)| *value).collect();
        assert_eq!(values, [0.04], "{query}");
    }
}

/// A label of unbounded cardinality is refused past the series limit,
/// not answered with as many series as spans.
#[tokio::test(flavor = "multi_thread")]
async fn too_many_series_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let spans = (0..=traceql::MAX_SERIES)
        .map(|index| {
            let name: &'static str = Box::leak(format!("{index:07}").into_boxed_str());
            span(name, "api", Parent::Root).at_ms(index as u64 % 1000, 1)
        })
        .collect();
    let reader = store(
        dir.path(),
        &[T {
            id: 9,
            start_ns: T0 + 10 * SECOND,
            spans,
        }],
        0,
    )
    .await;
    for query in [
        "{} | count_over_time() by (span:id)",
        "{} | count_over_time() by (name)",
    ] {
        let checked = Arc::new(traceql::prepare(query).unwrap());
        let error = traceql::query_range(Arc::clone(&reader), "t1", checked, request())
            .await
            .expect_err(query);
        assert!(error.to_string().contains("series"), "{query}: {error}");
    }
}

/// Spans on and around the interval boundaries of [`request`] (aligned:
/// `(T0-60s, T0]`, `(T0, T0+60s]`, `(T0+60s, T0+120s]`), for the
/// precomputed rows' test.
///
/// | trace | service, span | starts | interval |
/// |---|---|---|---|
/// | 1 | api a | T0-60s exactly | none (the range's start) |
/// | 2 | api a | T0 exactly | 0 |
/// | 3 | api a (error) | T0+1ns | 1 |
/// | 4 | db q, q2 (client) | T0+60s exactly, +1ms | 1, 2 |
/// | 5 | api b | T0+120s exactly | 2 |
/// | 6 | api b | T0+120s+1ns | none (past the end) |
/// | 7 | api open (in progress) | T0+30s | never counted |
/// | 8 | api c (server) | T0+90s | 2 |
fn on_boundaries() -> Vec<T> {
    let at = |id: u8, start_ns: u64, spans: Vec<fixture::S>| T {
        id,
        start_ns,
        spans,
    };
    let root =
        |name: &'static str, service: &'static str| span(name, service, Parent::Root).at_ms(0, 5);
    vec![
        at(1, T0 - 60 * SECOND, vec![root("a", "api")]),
        at(2, T0, vec![root("a", "api")]),
        at(3, T0 + 1, vec![root("a", "api").error()]),
        at(
            4,
            T0 + 60 * SECOND,
            vec![
                root("q", "db"),
                span("q2", "db", Parent::Of("q"))
                    .at_ms(1, 1)
                    .kind(SpanKind::Client),
            ],
        ),
        at(5, T0 + 120 * SECOND, vec![root("b", "api")]),
        at(6, T0 + 120 * SECOND + 1, vec![root("b", "api")]),
        at(
            7,
            T0 + 30 * SECOND,
            vec![
                span("open", "api", Parent::Root)
                    .at_ms(0, 0)
                    .with(vec![fixture::boolean("aws.xray.inprogress", true)]),
            ],
        ),
        at(
            8,
            T0 + 90 * SECOND,
            vec![root("c", "api").kind(SpanKind::Server)],
        ),
    ]
}

/// `rate()` and `count_over_time()` filtered and grouped by service, span
/// name, kind and status are answered from the precomputed `span_metrics`
/// rows for the whole minutes before the aggregation's watermark, and from
/// the spans elsewhere, with exactly the spans' answer: spans starting on
/// a boundary, on the range's start and end, and in-progress segments
/// included.
#[tokio::test(flavor = "multi_thread")]
async fn precomputed_rows_answer_as_the_spans_do() {
    let by_service = "{} | count_over_time() by (resource.service.name)";
    let queries = [
        by_service,
        "{} | rate()",
        "{ status = error || kind = client } | count_over_time() by (name, status)",
        r#"{ resource.service.name = "api" && name != "b" } | rate() by (kind)"#,
        "{ name =~ \"[ac]\" && kind != client } | count_over_time() by (resource.service.name, name, kind, status)",
    ];
    let minute = 60 * SECOND as i64;
    let t0 = T0 as i64;
    // Every minute precomputed, the first two, none.
    for watermark in [t0 + 10 * minute, t0 + minute, t0 - minute] {
        let dir = tempfile::tempdir().unwrap();
        let reader =
            fixture::store_aggregated(dir.path(), &on_boundaries(), 3, &[], &[], watermark).await;
        let at = format!("watermark T0{:+}s", (watermark - t0) / SECOND as i64);
        assert_series(
            &series_of(&reader, by_service, request()).await,
            &[
                (
                    vec![label("resource.service.name", "api")],
                    vec![Some(1.0), Some(1.0), Some(2.0)],
                ),
                (
                    vec![label("resource.service.name", "db")],
                    vec![Some(0.0), Some(1.0), Some(1.0)],
                ),
            ],
            &format!("{by_service} ({at})"),
        );
        for query in queries {
            let from_rows = series_of(&reader, query, request()).await;
            let evaluated = query.replacen(" | ", " | {} | ", 1);
            let from_spans = series_of(&reader, &evaluated, request()).await;
            assert!(!from_spans.is_empty(), "{query}");
            assert_eq!(
                labels_and_samples(from_rows),
                labels_and_samples(from_spans),
                "{query} ({at})"
            );
        }
    }
}

/// The rows answer only where they may: a span the aggregation counted
/// but that is not stored (as if retention had dropped it) shows which
/// source answered each request.
#[tokio::test(flavor = "multi_thread")]
async fn precomputed_rows_answer_whole_minutes_before_the_watermark() {
    let ghost = T {
        id: 9,
        start_ns: T0 + 30 * SECOND,
        spans: vec![span("ghost", "api", Parent::Root).at_ms(0, 5)],
    };
    let minute = 60 * SECOND as i64;
    let t0 = T0 as i64;
    let query = "{} | count_over_time()";
    // A span that arrived after its minute closed, stored in the head but
    // not yet counted by the rows: its minute and those after it are read
    // from the spans, the minutes before it from the rows.
    let late = T {
        id: 10,
        start_ns: T0 + 90 * SECOND,
        spans: vec![span("late", "api", Parent::Root).at_ms(0, 5)],
    };
    // Each case: the watermark, the request, the late spans, the stored
    // spans in its range (see [`on_boundaries`]) and whether the ghost is
    // counted.
    for (watermark, request, late_spans, stored, ghost_counted) in [
        (t0 + 10 * minute, request(), vec![], 6.0, 1.0),
        // The ghost's minute is after the watermark.
        (t0, request(), vec![], 6.0, 0.0),
        // The late span is counted, and the ghost's minute, before it,
        // still comes from the rows.
        (t0 + 10 * minute, request(), vec![late.clone()], 7.0, 1.0),
        // A late span in the ghost's minute: nothing from the rows.
        (
            t0 + 10 * minute,
            request(),
            vec![T {
                start_ns: T0 + 40 * SECOND,
                ..late.clone()
            }],
            7.0,
            0.0,
        ),
        // 15 s steps: boundaries inside minutes.
        (
            t0 + 10 * minute,
            MetricsRequest {
                step_ns: 15 * SECOND as i64,
                ..request()
            },
            vec![],
            6.0,
            0.0,
        ),
        // One interval over whole minutes, its edges off the minute.
        (
            t0 + 10 * minute,
            MetricsRequest {
                start_ns: t0 - minute + 1,
                end_ns: t0 + 2 * minute + 1,
                step_ns: 3 * minute,
                instant: true,
                ..request()
            },
            vec![],
            7.0,
            1.0,
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let reader = fixture::store_aggregated(
            dir.path(),
            &on_boundaries(),
            on_boundaries().len(),
            std::slice::from_ref(&ghost),
            &late_spans,
            watermark,
        )
        .await;
        let series = series_of(&reader, query, request).await;
        let total: f64 = series[0].samples.iter().map(|(_, value)| value).sum();
        // EXPLAIN's default step over 8 h is 2 min: rows before the
        // watermark, none for a range after it.
        let checked = traceql::prepare(query).unwrap();
        for (from, rows) in [(t0 - 360 * minute, true), (watermark + 2 * minute, false)] {
            let range = (from, from + 480 * minute);
            let plan = traceql::explain(Arc::clone(&reader), "t1", &checked, range)
                .await
                .unwrap();
            assert_eq!(
                plan.contains("precomputed span_metrics rows"),
                rows,
                "{plan}"
            );
        }
        assert_eq!(
            total - stored,
            ghost_counted,
            "watermark T0{:+}s, {request:?}",
            (watermark - t0) / SECOND as i64
        );
    }
}

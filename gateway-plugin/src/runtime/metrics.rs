//! Per-function metrics, and their export to tracelake over OTLP/HTTP
//! (`POST /v1/metrics`, protobuf), named after OpenTelemetry's FaaS
//! conventions where they exist:
//!
//! | metric | kind | Lambda's name |
//! |---|---|---|
//! | `faas.invocations` | cumulative sum | Invocations |
//! | `faas.errors` | cumulative sum | Errors |
//! | `faas.throttles` | cumulative sum | Throttles |
//! | `faas.dlq_errors` | cumulative sum | DeadLetterErrors |
//! | `faas.coldstarts` | cumulative sum | (init duration present) |
//! | `faas.invoke_duration` | histogram, seconds | Duration |
//! | `faas.concurrent_executions` | gauge | ConcurrentExecutions |
//! | `faas.iterator_age` | gauge, milliseconds | IteratorAge |
//!
//! Each point carries `faas.name`; the resource is `service.name` =
//! `function-runtime`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use parking_lot::Mutex;
use prost::Message;

use super::{Report, Runtime};
use crate::document::now_seconds;

/// Duration histogram bounds, seconds.
pub const DURATION_BOUNDS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Counters of one function.
#[derive(Debug, Default)]
pub struct FunctionMetrics {
    invocations: AtomicU64,
    errors: AtomicU64,
    throttles: AtomicU64,
    dlq_errors: AtomicU64,
    cold_starts: AtomicU64,
    iterator_age_ms: AtomicU64,
    durations: Mutex<DurationHistogram>,
}

#[derive(Debug, Default, Clone, PartialEq)]
struct DurationHistogram {
    counts: [u64; DURATION_BOUNDS.len() + 1],
    sum_seconds: f64,
    count: u64,
}

/// A copy of a function's metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSnapshot {
    pub invocations: u64,
    pub errors: u64,
    pub throttles: u64,
    pub dlq_errors: u64,
    pub cold_starts: u64,
    pub iterator_age_ms: u64,
    pub concurrent_executions: usize,
    pub duration_count: u64,
    pub duration_sum_seconds: f64,
    duration_counts: Vec<u64>,
}

impl FunctionMetrics {
    pub(super) fn invoked(&self, report: &Report, failed: bool) {
        self.invocations.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        if report.cold() {
            self.cold_starts.fetch_add(1, Ordering::Relaxed);
        }
        let seconds = report.duration.as_secs_f64();
        let mut durations = self.durations.lock();
        let bucket = DURATION_BOUNDS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(DURATION_BOUNDS.len());
        durations.counts[bucket] += 1;
        durations.sum_seconds += seconds;
        durations.count += 1;
    }

    pub(super) fn throttled(&self) {
        self.throttles.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn dead_letter_failed(&self) {
        self.dlq_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn set_iterator_age(&self, age: Duration) {
        self.iterator_age_ms
            .store(age.as_millis() as u64, Ordering::Relaxed);
    }

    pub(super) fn snapshot(&self, concurrent: usize) -> MetricsSnapshot {
        let durations = self.durations.lock().clone();
        MetricsSnapshot {
            invocations: self.invocations.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            throttles: self.throttles.load(Ordering::Relaxed),
            dlq_errors: self.dlq_errors.load(Ordering::Relaxed),
            cold_starts: self.cold_starts.load(Ordering::Relaxed),
            iterator_age_ms: self.iterator_age_ms.load(Ordering::Relaxed),
            concurrent_executions: concurrent,
            duration_count: durations.count,
            duration_sum_seconds: durations.sum_seconds,
            duration_counts: durations.counts.to_vec(),
        }
    }
}

fn name_attribute(function: &str) -> Vec<KeyValue> {
    vec![KeyValue {
        key: "faas.name".into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(function.to_string())),
        }),
        ..KeyValue::default()
    }]
}

fn number(
    function: &str,
    now_ns: u64,
    start_ns: u64,
    value: number_data_point::Value,
) -> NumberDataPoint {
    NumberDataPoint {
        attributes: name_attribute(function),
        start_time_unix_nano: start_ns,
        time_unix_nano: now_ns,
        value: Some(value),
        ..NumberDataPoint::default()
    }
}

/// The runtime's metrics as one OTLP export request.
pub fn export_request(runtime: &Runtime, start_ns: u64) -> ExportMetricsServiceRequest {
    let now_ns = (now_seconds() * 1e9) as u64;
    let mut sums: Vec<(&str, &str, Vec<NumberDataPoint>)> = vec![
        ("faas.invocations", "{invocation}", Vec::new()),
        ("faas.errors", "{error}", Vec::new()),
        ("faas.throttles", "{throttle}", Vec::new()),
        ("faas.dlq_errors", "{error}", Vec::new()),
        ("faas.coldstarts", "{coldstart}", Vec::new()),
    ];
    let mut gauges: Vec<(&str, &str, Vec<NumberDataPoint>)> = vec![
        ("faas.concurrent_executions", "{execution}", Vec::new()),
        ("faas.iterator_age", "ms", Vec::new()),
    ];
    let mut histogram_points = Vec::new();
    for name in runtime.function_names() {
        let Some(snapshot) = runtime.metrics(&name) else {
            continue;
        };
        let counters = [
            snapshot.invocations,
            snapshot.errors,
            snapshot.throttles,
            snapshot.dlq_errors,
            snapshot.cold_starts,
        ];
        for ((_, _, points), value) in sums.iter_mut().zip(counters) {
            points.push(number(
                &name,
                now_ns,
                start_ns,
                number_data_point::Value::AsInt(value as i64),
            ));
        }
        let levels = [
            snapshot.concurrent_executions as i64,
            snapshot.iterator_age_ms as i64,
        ];
        for ((_, _, points), value) in gauges.iter_mut().zip(levels) {
            points.push(number(
                &name,
                now_ns,
                0,
                number_data_point::Value::AsInt(value),
            ));
        }
        histogram_points.push(HistogramDataPoint {
            attributes: name_attribute(&name),
            start_time_unix_nano: start_ns,
            time_unix_nano: now_ns,
            count: snapshot.duration_count,
            sum: Some(snapshot.duration_sum_seconds),
            bucket_counts: snapshot.duration_counts.clone(),
            explicit_bounds: DURATION_BOUNDS.to_vec(),
            ..HistogramDataPoint::default()
        });
    }
    let mut metrics: Vec<Metric> = sums
        .into_iter()
        .map(|(name, unit, points)| Metric {
            name: name.into(),
            unit: unit.into(),
            data: Some(metric::Data::Sum(Sum {
                data_points: points,
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            })),
            ..Metric::default()
        })
        .collect();
    metrics.extend(gauges.into_iter().map(|(name, unit, points)| Metric {
        name: name.into(),
        unit: unit.into(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: points,
        })),
        ..Metric::default()
    }));
    metrics.push(Metric {
        name: "faas.invoke_duration".into(),
        unit: "s".into(),
        data: Some(metric::Data::Histogram(Histogram {
            data_points: histogram_points,
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        })),
        ..Metric::default()
    });
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("function-runtime".into())),
                    }),
                    ..KeyValue::default()
                }],
                ..Resource::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..ScopeMetrics::default()
            }],
            ..ResourceMetrics::default()
        }],
    }
}

/// Exports the runtime's metrics to `endpoint` (the OTLP/HTTP base URL,
/// e.g. `http://127.0.0.1:4318`) every `interval` until `shutdown`, and
/// once more then.
pub async fn export_loop(
    runtime: Runtime,
    endpoint: String,
    interval: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let client = reqwest::Client::new();
    let start_ns = (now_seconds() * 1e9) as u64;
    tokio::pin!(shutdown);
    loop {
        let stop = tokio::select! {
            () = tokio::time::sleep(interval) => false,
            () = &mut shutdown => true,
        };
        let body = export_request(&runtime, start_ns).encode_to_vec();
        let sent = client
            .post(format!("{endpoint}/v1/metrics"))
            .header("content-type", "application/x-protobuf")
            .body(body)
            .send()
            .await;
        if let Err(error) = sent.and_then(reqwest::Response::error_for_status) {
            tracing::warn!(%error, "exporting function metrics failed");
        }
        if stop {
            return;
        }
    }
}

//! OTLP metrics ingest: `MetricsService/Export` (gRPC) and `POST
//! /v1/metrics` (HTTP) land here.
//!
//! ```text
//!  ExportMetricsServiceRequest --metrics_to_batch (blocking pool)--> `metrics` rows
//!        |                                                           |  MetricWriter::append_metrics
//!        |                                                           v
//!        |                                      WAL -> head -> blocks per tenant and hour
//!        |                                      (storage's span path; compacted, expired)
//!        +--> latest value per series --> /metrics (Prometheus text)
//! ```
//!
//! A request is acknowledged once its rows are in the WAL per the fsync
//! policy (they survive `kill -9`) and in the head (visible to SQL at
//! once); a flush writes every request's points of a tenant and hour as one
//! block, and compaction merges those blocks, so the number of files does
//! not grow with the number of requests. Refused points are reported in
//! `partial_success`; a head over its limit refuses the request before
//! conversion (`Overloaded`, retry later), as for spans.
//!
//! On `/metrics` each series shows its latest point, named as the
//! OpenTelemetry-to-Prometheus convention does: the name with characters
//! outside `[A-Za-z0-9_:]` as `_`, monotonic sums as counters with
//! `_total`, the point's attributes as labels plus `job` = `service.name`.
//! Delta sums and delta histograms (same bounds) accumulate; exponential
//! histograms are only in the table. At most `max_series` series per tenant.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsPartialSuccess;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, ResourceMetrics, metric::Data, number_data_point,
};
use parking_lot::Mutex;
use tracelake_model::otlp_metrics::metrics_to_batch;
use tracelake_model::validate_tenant;
use tracelake_storage::MetricWriter;

use crate::IngestError;
use crate::prometheus::labels;
use crate::receiver_stats::ReceiverStats;

/// How many rejection reasons a response spells out; the count covers all.
const REASONS_SHOWN: usize = 5;
/// Series per tenant on `/metrics`.
pub const MAX_SERIES: usize = 10_000;

/// What happened to one request's points.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsOutcome {
    pub accepted: usize,
    pub rejected: usize,
    pub message: String,
}

impl MetricsOutcome {
    pub fn partial_success(self) -> Option<ExportMetricsPartialSuccess> {
        (self.rejected > 0).then_some(ExportMetricsPartialSuccess {
            rejected_data_points: self.rejected as i64,
            error_message: self.message,
        })
    }
}

#[derive(Debug, Clone)]
pub struct MetricsIngest {
    writer: Arc<dyn MetricWriter>,
    exposition: Arc<MetricsExposition>,
    receiver_stats: Arc<ReceiverStats>,
}

impl MetricsIngest {
    /// Counts into `receiver_stats` (share the trace pipeline's).
    pub fn new(writer: Arc<dyn MetricWriter>, receiver_stats: Arc<ReceiverStats>) -> Self {
        Self {
            writer,
            exposition: Arc::new(MetricsExposition::default()),
            receiver_stats,
        }
    }

    pub fn receiver_stats(&self) -> &Arc<ReceiverStats> {
        &self.receiver_stats
    }

    pub fn exposition(&self) -> Arc<MetricsExposition> {
        Arc::clone(&self.exposition)
    }

    /// Validates and stores `tenant`'s metric points; returns once the
    /// accepted points are durable (in the WAL per the fsync policy).
    pub async fn ingest(
        &self,
        tenant: &str,
        resource_metrics: Vec<ResourceMetrics>,
    ) -> Result<MetricsOutcome, IngestError> {
        validate_tenant(tenant).map_err(IngestError::InvalidTenant)?;
        self.writer
            .check_metrics_capacity()
            .map_err(IngestError::from_append)?;
        let tenant_owned = tenant.to_string();
        let (converted, resource_metrics) = tokio::task::spawn_blocking(move || {
            let converted = metrics_to_batch(&tenant_owned, &resource_metrics);
            (converted, resource_metrics)
        })
        .await
        .map_err(|error| IngestError::Internal(format!("metrics convert task: {error}")))?;
        let converted = converted.map_err(|error| IngestError::Unavailable(error.into()))?;
        if let Some(batch) = converted.batch {
            self.writer
                .append_metrics(tenant, batch)
                .await
                .map_err(IngestError::from_append)?;
            // Stored: now shown on /metrics (CPU work, off the reactor).
            let exposition = Arc::clone(&self.exposition);
            let tenant_owned = tenant.to_string();
            tokio::task::spawn_blocking(move || {
                exposition.observe(&tenant_owned, &resource_metrics)
            })
            .await
            .map_err(|error| IngestError::Internal(format!("metrics exposition task: {error}")))?;
        }
        let rejected = converted.rejections.len();
        let mut message = String::new();
        if rejected > 0 {
            let reasons: Vec<String> = converted
                .rejections
                .iter()
                .take(REASONS_SHOWN)
                .map(|rejection| format!("metric {:?}: {}", rejection.metric, rejection.reason))
                .collect();
            message = format!("rejected {rejected} data points: {}", reasons.join("; "));
            if rejected > REASONS_SHOWN {
                message.push_str(&format!("; and {} more", rejected - REASONS_SHOWN));
            }
        }
        Ok(MetricsOutcome {
            accepted: converted.accepted,
            rejected,
            message,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Sample {
    Gauge(f64),
    Counter(f64),
    Histogram {
        bounds: Vec<f64>,
        cumulative: Vec<u64>,
        sum: f64,
        count: u64,
    },
    Summary {
        quantiles: Vec<(f64, f64)>,
        sum: f64,
        count: u64,
    },
}

impl Sample {
    fn type_name(&self) -> &'static str {
        match self {
            Self::Gauge(_) => "gauge",
            Self::Counter(_) => "counter",
            Self::Histogram { .. } => "histogram",
            Self::Summary { .. } => "summary",
        }
    }
}

/// A series: family name and sorted label pairs.
type SeriesKey = (String, Vec<(String, String)>);

#[derive(Debug, Default)]
struct TenantSeries {
    /// Series -> (help, latest sample).
    series: BTreeMap<SeriesKey, (String, Sample)>,
    dropped: u64,
}

/// The latest point of every series, per tenant, for `/metrics`.
#[derive(Debug, Default)]
pub struct MetricsExposition {
    tenants: Mutex<HashMap<String, TenantSeries>>,
}

/// A Prometheus metric or label name: characters outside
/// `[A-Za-z0-9_:]` become `_`, and a leading digit gets a `_`.
fn prometheus_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

fn text_value(value: Option<&any_value::Value>) -> String {
    match value {
        Some(any_value::Value::StringValue(text)) => text.clone(),
        Some(any_value::Value::BoolValue(flag)) => flag.to_string(),
        Some(any_value::Value::IntValue(int)) => int.to_string(),
        Some(any_value::Value::DoubleValue(double)) => double.to_string(),
        _ => String::new(),
    }
}

fn label_pairs(job: &str, attributes: &[KeyValue]) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = attributes
        .iter()
        .map(|attribute| {
            (
                prometheus_name(&attribute.key),
                text_value(
                    attribute
                        .value
                        .as_ref()
                        .and_then(|value| value.value.as_ref()),
                ),
            )
        })
        .collect();
    pairs.push(("job".into(), job.to_string()));
    pairs.sort();
    pairs.dedup_by(|left, right| left.0 == right.0);
    pairs
}

fn number(value: Option<&number_data_point::Value>) -> f64 {
    match value {
        Some(number_data_point::Value::AsDouble(double)) => *double,
        Some(number_data_point::Value::AsInt(int)) => *int as f64,
        None => f64::NAN,
    }
}

impl MetricsExposition {
    fn observe(&self, tenant: &str, resource_metrics: &[ResourceMetrics]) {
        let mut tenants = self.tenants.lock();
        let tenant_series = tenants.entry(tenant.to_string()).or_default();
        for resource in resource_metrics {
            let attributes: &[KeyValue] = resource
                .resource
                .as_ref()
                .map(|resource| resource.attributes.as_slice())
                .unwrap_or_default();
            let job = attributes
                .iter()
                .find(|attribute| attribute.key == "service.name")
                .map(|attribute| {
                    text_value(attribute.value.as_ref().and_then(|v| v.value.as_ref()))
                })
                .unwrap_or_else(|| "unknown_service".into());
            for scope in &resource.scope_metrics {
                for metric in &scope.metrics {
                    let base = prometheus_name(&metric.name);
                    let help = metric.description.clone();
                    let mut put = |name: String,
                                   pairs: Vec<(String, String)>,
                                   sample: Sample,
                                   delta: bool| {
                        let key = (name, pairs);
                        let full = tenant_series.series.len() >= MAX_SERIES;
                        match tenant_series.series.get_mut(&key) {
                            Some((_, existing)) if delta => accumulate(existing, sample),
                            Some((_, existing)) => *existing = sample,
                            None if full => tenant_series.dropped += 1,
                            None => {
                                tenant_series.series.insert(key, (help.clone(), sample));
                            }
                        }
                    };
                    match &metric.data {
                        Some(Data::Gauge(gauge)) => {
                            for point in &gauge.data_points {
                                put(
                                    base.clone(),
                                    label_pairs(&job, &point.attributes),
                                    Sample::Gauge(number(point.value.as_ref())),
                                    false,
                                );
                            }
                        }
                        Some(Data::Sum(sum)) => {
                            let delta =
                                sum.aggregation_temporality == AggregationTemporality::Delta as i32;
                            for point in &sum.data_points {
                                let value = number(point.value.as_ref());
                                let pairs = label_pairs(&job, &point.attributes);
                                if sum.is_monotonic {
                                    let name = if base.ends_with("_total") {
                                        base.clone()
                                    } else {
                                        format!("{base}_total")
                                    };
                                    put(name, pairs, Sample::Counter(value), delta);
                                } else {
                                    put(base.clone(), pairs, Sample::Gauge(value), delta);
                                }
                            }
                        }
                        Some(Data::Histogram(histogram)) => {
                            let delta = histogram.aggregation_temporality
                                == AggregationTemporality::Delta as i32;
                            for point in &histogram.data_points {
                                let mut running = 0u64;
                                let cumulative: Vec<u64> = point
                                    .bucket_counts
                                    .iter()
                                    .take(point.explicit_bounds.len())
                                    .map(|count| {
                                        running = running.saturating_add(*count);
                                        running
                                    })
                                    .collect();
                                let sample = Sample::Histogram {
                                    bounds: point.explicit_bounds.clone(),
                                    cumulative,
                                    sum: point.sum.unwrap_or(0.0),
                                    count: point.count,
                                };
                                put(
                                    base.clone(),
                                    label_pairs(&job, &point.attributes),
                                    sample,
                                    delta,
                                );
                            }
                        }
                        Some(Data::Summary(summary)) => {
                            for point in &summary.data_points {
                                let sample = Sample::Summary {
                                    quantiles: point
                                        .quantile_values
                                        .iter()
                                        .map(|q| (q.quantile, q.value))
                                        .collect(),
                                    sum: point.sum,
                                    count: point.count,
                                };
                                put(
                                    base.clone(),
                                    label_pairs(&job, &point.attributes),
                                    sample,
                                    false,
                                );
                            }
                        }
                        Some(Data::ExponentialHistogram(_)) | None => {}
                    }
                }
            }
        }
    }

    /// `tenant`'s series in Prometheus text format.
    pub fn render(&self, out: &mut String, tenant: &str) {
        let tenants = self.tenants.lock();
        let Some(tenant_series) = tenants.get(tenant) else {
            return;
        };
        let mut family = "";
        for ((name, pairs), (help, sample)) in &tenant_series.series {
            if name != family {
                let help = if help.is_empty() {
                    "OTLP metric"
                } else {
                    help.as_str()
                };
                let _ = writeln!(out, "# HELP {name} {}", help.replace('\n', " "));
                let _ = writeln!(out, "# TYPE {name} {}", sample.type_name());
                family = name;
            }
            let borrowed: Vec<(&str, &str)> = pairs
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            match sample {
                Sample::Gauge(value) | Sample::Counter(value) => {
                    let _ = writeln!(out, "{name}{} {value}", labels(&borrowed));
                }
                Sample::Histogram {
                    bounds,
                    cumulative,
                    sum,
                    count,
                } => {
                    for (bound, cumulative_count) in bounds.iter().zip(cumulative) {
                        let bound_text = bound.to_string();
                        let mut with_le = borrowed.clone();
                        with_le.push(("le", &bound_text));
                        let _ =
                            writeln!(out, "{name}_bucket{} {cumulative_count}", labels(&with_le));
                    }
                    let mut with_le = borrowed.clone();
                    with_le.push(("le", "+Inf"));
                    let _ = writeln!(out, "{name}_bucket{} {count}", labels(&with_le));
                    let _ = writeln!(out, "{name}_sum{} {sum}", labels(&borrowed));
                    let _ = writeln!(out, "{name}_count{} {count}", labels(&borrowed));
                }
                Sample::Summary {
                    quantiles,
                    sum,
                    count,
                } => {
                    for (quantile, value) in quantiles {
                        let quantile_text = quantile.to_string();
                        let mut with_quantile = borrowed.clone();
                        with_quantile.push(("quantile", &quantile_text));
                        let _ = writeln!(out, "{name}{} {value}", labels(&with_quantile));
                    }
                    let _ = writeln!(out, "{name}_sum{} {sum}", labels(&borrowed));
                    let _ = writeln!(out, "{name}_count{} {count}", labels(&borrowed));
                }
            }
        }
        crate::prometheus::write_plain_counter(
            out,
            "tracelake_otlp_metric_series_dropped_total",
            "OTLP metric points left out of /metrics because max_series was reached.",
            tenant_series.dropped,
        );
    }
}

/// Adds a delta sample to the running one (same kind and bounds), or
/// replaces it.
fn accumulate(existing: &mut Sample, delta: Sample) {
    match (existing, delta) {
        (Sample::Counter(total), Sample::Counter(value))
        | (Sample::Gauge(total), Sample::Gauge(value)) => *total += value,
        (
            Sample::Histogram {
                bounds,
                cumulative,
                sum,
                count,
            },
            Sample::Histogram {
                bounds: delta_bounds,
                cumulative: delta_cumulative,
                sum: delta_sum,
                count: delta_count,
            },
        ) if *bounds == delta_bounds => {
            for (total, value) in cumulative.iter_mut().zip(delta_cumulative) {
                *total = total.saturating_add(value);
            }
            *sum += delta_sum;
            *count = count.saturating_add(delta_count);
        }
        (existing, delta) => *existing = delta,
    }
}

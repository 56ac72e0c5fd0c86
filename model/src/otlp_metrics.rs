//! The `metrics` table: OTLP metric data points, one row per point.
//!
//! ```text
//!  export request --metrics_to_batch--> rows --MetricWriter::append_metrics-->
//!    WAL (record kind 2) --> metrics head --flush--> metric block per tenant and hour
//!    tenants/{t}/metric_blocks/{date}/{hh}/{ulid}.parquet + .meta.json --compaction--> one per hour
//! ```
//!
//! Points take the spans' path through storage (its `signal` and `engine`).
//! Releases before that wrote one file per export request and hour to
//! `tenants/{t}/metrics/{date}/{hh}/{ulid}.parquet` (storage's `derived` files);
//! those files are still read by the table and expired by retention.
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `tenant` | Utf8 | owner |
//! | `time` | Timestamp(ns, UTC) | the point's time |
//! | `start_time` | Timestamp(ns, UTC), null | start of a cumulative or delta point's interval |
//! | `service_name` | Utf8 | resource `service.name`, `unknown_service` when absent |
//! | `name`, `description`, `unit` | Utf8 | the metric's |
//! | `type` | Utf8 | `gauge`, `sum`, `histogram`, `exponential_histogram`, `summary` |
//! | `temporality` | Utf8, null | `cumulative` or `delta` (sums and histograms) |
//! | `monotonic` | Boolean, null | sums: whether the sum only grows |
//! | `attributes` | Map(Utf8, AnyValue) | the point's attributes |
//! | `resource_attributes` | Map(Utf8, AnyValue) | the resource's |
//! | `scope_name` | Utf8, null | instrumentation scope |
//! | `value` | Float64, null | gauge and sum points (integers converted) |
//! | `value_int` | Int64, null | gauge and sum points sent as integers, exactly |
//! | `count`, `sum`, `min`, `max` | Int64 / Float64, null | histogram, exponential histogram and summary points |
//! | `bucket_bounds`, `bucket_counts` | List(Float64), List(Int64), null | explicit histogram buckets (counts per bucket, not cumulative) |
//! | `exp_scale`, `exp_zero_count`, `exp_positive_offset`, `exp_positive_counts`, `exp_negative_offset`, `exp_negative_counts` | | exponential histogram buckets |
//! | `quantiles` | List(Struct{quantile, value}), null | summary quantiles |
//! | `flags` | UInt32 | OTLP data point flags |
//!
//! A point is rejected (with a reason, counted in `partial_success`) when
//! its metric has no name or no data, or its time is 0.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, ListBuilder, RecordBatch,
    StringBuilder, StructBuilder, TimestampNanosecondBuilder, UInt32Builder,
};
use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, ExponentialHistogramDataPoint, HistogramDataPoint, ResourceMetrics,
    SummaryDataPoint, metric::Data, number_data_point,
};

use crate::attributes::AttributesBuilder;
use crate::schema::{attributes_type, timestamp_type};
use crate::{ModelError, Result};

/// A refused data point and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointRejection {
    pub metric: String,
    pub reason: String,
}

/// What [`metrics_to_batch`] made of a request.
#[derive(Debug, Default)]
pub struct ConvertedMetrics {
    pub batch: Option<RecordBatch>,
    pub accepted: usize,
    pub rejections: Vec<PointRejection>,
}

fn quantile_fields() -> Fields {
    Fields::from(vec![
        Field::new("quantile", DataType::Float64, false),
        Field::new("value", DataType::Float64, false),
    ])
}

fn list_of(item: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", item, true)))
}

static METRICS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let utf8 = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    let float = |name: &str| Field::new(name, DataType::Float64, true);
    Arc::new(Schema::new(vec![
        utf8("tenant", false),
        Field::new("time", timestamp_type(), false),
        Field::new("start_time", timestamp_type(), true),
        utf8("service_name", false),
        utf8("name", false),
        utf8("description", true),
        utf8("unit", true),
        utf8("type", false),
        utf8("temporality", true),
        Field::new("monotonic", DataType::Boolean, true),
        Field::new("attributes", attributes_type(), false),
        Field::new("resource_attributes", attributes_type(), false),
        utf8("scope_name", true),
        float("value"),
        Field::new("value_int", DataType::Int64, true),
        Field::new("count", DataType::Int64, true),
        float("sum"),
        float("min"),
        float("max"),
        Field::new("bucket_bounds", list_of(DataType::Float64), true),
        Field::new("bucket_counts", list_of(DataType::Int64), true),
        Field::new("exp_scale", DataType::Int32, true),
        Field::new("exp_zero_count", DataType::Int64, true),
        Field::new("exp_positive_offset", DataType::Int32, true),
        Field::new("exp_positive_counts", list_of(DataType::Int64), true),
        Field::new("exp_negative_offset", DataType::Int32, true),
        Field::new("exp_negative_counts", list_of(DataType::Int64), true),
        Field::new(
            "quantiles",
            list_of(DataType::Struct(quantile_fields())),
            true,
        ),
        Field::new("flags", DataType::UInt32, false),
    ]))
});

/// The column holding a point's time, which files it into an hour.
pub const TIME: &str = "time";

/// The schema of the `metrics` table.
pub fn metrics_schema() -> SchemaRef {
    Arc::clone(&METRICS_SCHEMA)
}

/// One point before it becomes a row.
#[derive(Default)]
struct Point<'a> {
    time: u64,
    start_time: u64,
    attributes: &'a [KeyValue],
    value: Option<f64>,
    value_int: Option<i64>,
    count: Option<u64>,
    sum: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
    buckets: Option<(&'a [f64], &'a [u64])>,
    exponential: Option<ExponentialBuckets<'a>>,
    quantiles: Option<Vec<(f64, f64)>>,
    flags: u32,
}

struct ExponentialBuckets<'a> {
    scale: i32,
    zero_count: u64,
    positive: (i32, &'a [u64]),
    negative: (i32, &'a [u64]),
}

struct Rows {
    tenant: StringBuilder,
    time: TimestampNanosecondBuilder,
    start_time: TimestampNanosecondBuilder,
    service_name: StringBuilder,
    name: StringBuilder,
    description: StringBuilder,
    unit: StringBuilder,
    metric_type: StringBuilder,
    temporality: StringBuilder,
    monotonic: BooleanBuilder,
    attributes: AttributesBuilder,
    resource_attributes: AttributesBuilder,
    scope_name: StringBuilder,
    value: Float64Builder,
    value_int: Int64Builder,
    count: Int64Builder,
    sum: Float64Builder,
    min: Float64Builder,
    max: Float64Builder,
    bucket_bounds: ListBuilder<Float64Builder>,
    bucket_counts: ListBuilder<Int64Builder>,
    exp_scale: Int32Builder,
    exp_zero_count: Int64Builder,
    exp_positive_offset: Int32Builder,
    exp_positive_counts: ListBuilder<Int64Builder>,
    exp_negative_offset: Int32Builder,
    exp_negative_counts: ListBuilder<Int64Builder>,
    quantiles: ListBuilder<StructBuilder>,
    flags: UInt32Builder,
}

/// What every point of one metric shares.
struct MetricContext<'a> {
    tenant: &'a str,
    service_name: &'a str,
    resource_attributes: &'a [KeyValue],
    scope_name: Option<&'a str>,
    name: &'a str,
    description: &'a str,
    unit: &'a str,
    metric_type: &'static str,
    temporality: Option<&'static str>,
    monotonic: Option<bool>,
}

fn utc_timestamps() -> TimestampNanosecondBuilder {
    TimestampNanosecondBuilder::new().with_timezone("UTC")
}

fn non_empty(text: &str) -> Option<&str> {
    (!text.is_empty()).then_some(text)
}

fn clamp_nanos(nanos: u64) -> i64 {
    i64::try_from(nanos).unwrap_or(i64::MAX)
}

fn clamp_count(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

impl Rows {
    fn new() -> Self {
        Self {
            tenant: StringBuilder::new(),
            time: utc_timestamps(),
            start_time: utc_timestamps(),
            service_name: StringBuilder::new(),
            name: StringBuilder::new(),
            description: StringBuilder::new(),
            unit: StringBuilder::new(),
            metric_type: StringBuilder::new(),
            temporality: StringBuilder::new(),
            monotonic: BooleanBuilder::new(),
            attributes: AttributesBuilder::new(),
            resource_attributes: AttributesBuilder::new(),
            scope_name: StringBuilder::new(),
            value: Float64Builder::new(),
            value_int: Int64Builder::new(),
            count: Int64Builder::new(),
            sum: Float64Builder::new(),
            min: Float64Builder::new(),
            max: Float64Builder::new(),
            bucket_bounds: ListBuilder::new(Float64Builder::new()),
            bucket_counts: ListBuilder::new(Int64Builder::new()),
            exp_scale: Int32Builder::new(),
            exp_zero_count: Int64Builder::new(),
            exp_positive_offset: Int32Builder::new(),
            exp_positive_counts: ListBuilder::new(Int64Builder::new()),
            exp_negative_offset: Int32Builder::new(),
            exp_negative_counts: ListBuilder::new(Int64Builder::new()),
            quantiles: ListBuilder::new(StructBuilder::from_fields(quantile_fields(), 0)),
            flags: UInt32Builder::new(),
        }
    }

    fn append(&mut self, context: &MetricContext<'_>, point: &Point<'_>) {
        self.tenant.append_value(context.tenant);
        self.time.append_value(clamp_nanos(point.time));
        self.start_time
            .append_option((point.start_time > 0).then(|| clamp_nanos(point.start_time)));
        self.service_name.append_value(context.service_name);
        self.name.append_value(context.name);
        self.description
            .append_option(non_empty(context.description));
        self.unit.append_option(non_empty(context.unit));
        self.metric_type.append_value(context.metric_type);
        self.temporality.append_option(context.temporality);
        self.monotonic.append_option(context.monotonic);
        self.attributes.append_row(point.attributes);
        self.resource_attributes
            .append_row(context.resource_attributes);
        self.scope_name.append_option(context.scope_name);
        self.value.append_option(point.value);
        self.value_int.append_option(point.value_int);
        self.count.append_option(point.count.map(clamp_count));
        self.sum.append_option(point.sum);
        self.min.append_option(point.min);
        self.max.append_option(point.max);
        match point.buckets {
            Some((bounds, counts)) => {
                self.bucket_bounds.values().append_slice(bounds);
                self.bucket_bounds.append(true);
                for count in counts {
                    self.bucket_counts
                        .values()
                        .append_value(clamp_count(*count));
                }
                self.bucket_counts.append(true);
            }
            None => {
                self.bucket_bounds.append(false);
                self.bucket_counts.append(false);
            }
        }
        match &point.exponential {
            Some(exponential) => {
                self.exp_scale.append_value(exponential.scale);
                self.exp_zero_count
                    .append_value(clamp_count(exponential.zero_count));
                self.exp_positive_offset
                    .append_value(exponential.positive.0);
                for count in exponential.positive.1 {
                    self.exp_positive_counts
                        .values()
                        .append_value(clamp_count(*count));
                }
                self.exp_positive_counts.append(true);
                self.exp_negative_offset
                    .append_value(exponential.negative.0);
                for count in exponential.negative.1 {
                    self.exp_negative_counts
                        .values()
                        .append_value(clamp_count(*count));
                }
                self.exp_negative_counts.append(true);
            }
            None => {
                self.exp_scale.append_null();
                self.exp_zero_count.append_null();
                self.exp_positive_offset.append_null();
                self.exp_positive_counts.append(false);
                self.exp_negative_offset.append_null();
                self.exp_negative_counts.append(false);
            }
        }
        match &point.quantiles {
            Some(quantiles) => {
                let items = self.quantiles.values();
                for (quantile, value) in quantiles {
                    items
                        .field_builder::<Float64Builder>(0)
                        .expect("quantile field")
                        .append_value(*quantile);
                    items
                        .field_builder::<Float64Builder>(1)
                        .expect("value field")
                        .append_value(*value);
                    items.append(true);
                }
                self.quantiles.append(true);
            }
            None => self.quantiles.append(false),
        }
        self.flags.append_value(point.flags);
    }

    fn finish(mut self) -> Result<RecordBatch> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.tenant.finish()),
            Arc::new(self.time.finish()),
            Arc::new(self.start_time.finish()),
            Arc::new(self.service_name.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.description.finish()),
            Arc::new(self.unit.finish()),
            Arc::new(self.metric_type.finish()),
            Arc::new(self.temporality.finish()),
            Arc::new(self.monotonic.finish()),
            Arc::new(self.attributes.finish()),
            Arc::new(self.resource_attributes.finish()),
            Arc::new(self.scope_name.finish()),
            Arc::new(self.value.finish()),
            Arc::new(self.value_int.finish()),
            Arc::new(self.count.finish()),
            Arc::new(self.sum.finish()),
            Arc::new(self.min.finish()),
            Arc::new(self.max.finish()),
            Arc::new(self.bucket_bounds.finish()),
            Arc::new(self.bucket_counts.finish()),
            Arc::new(self.exp_scale.finish()),
            Arc::new(self.exp_zero_count.finish()),
            Arc::new(self.exp_positive_offset.finish()),
            Arc::new(self.exp_positive_counts.finish()),
            Arc::new(self.exp_negative_offset.finish()),
            Arc::new(self.exp_negative_counts.finish()),
            Arc::new(self.quantiles.finish()),
            Arc::new(self.flags.finish()),
        ];
        RecordBatch::try_new(metrics_schema(), columns).map_err(ModelError::from)
    }
}

fn temporality_name(temporality: i32) -> Option<&'static str> {
    match AggregationTemporality::try_from(temporality) {
        Ok(AggregationTemporality::Cumulative) => Some("cumulative"),
        Ok(AggregationTemporality::Delta) => Some("delta"),
        _ => None,
    }
}

fn number_value(value: Option<&number_data_point::Value>) -> (Option<f64>, Option<i64>) {
    match value {
        Some(number_data_point::Value::AsDouble(double)) => (Some(*double), None),
        Some(number_data_point::Value::AsInt(int)) => (Some(*int as f64), Some(*int)),
        None => (None, None),
    }
}

/// Converts an OTLP metrics request into `metrics` rows for `tenant`;
/// refused points are listed with their reason, the others kept.
pub fn metrics_to_batch(
    tenant: &str,
    resource_metrics: &[ResourceMetrics],
) -> Result<ConvertedMetrics> {
    let mut rows = Rows::new();
    let mut converted = ConvertedMetrics::default();
    let reject = |metric: &str, reason: &str| PointRejection {
        metric: metric.to_string(),
        reason: reason.to_string(),
    };
    let mut rejections = Vec::new();
    for resource_metrics in resource_metrics {
        let resource_attributes: &[KeyValue] = resource_metrics
            .resource
            .as_ref()
            .map(|resource| resource.attributes.as_slice())
            .unwrap_or_default();
        let service_name = resource_attributes
            .iter()
            .find(|attribute| attribute.key == "service.name")
            .and_then(
                |attribute| match attribute.value.as_ref()?.value.as_ref()? {
                    any_value::Value::StringValue(name) => Some(name.as_str()),
                    _ => None,
                },
            )
            .unwrap_or("unknown_service");
        for scope_metrics in &resource_metrics.scope_metrics {
            let scope_name = scope_metrics
                .scope
                .as_ref()
                .and_then(|scope| non_empty(&scope.name));
            for metric in &scope_metrics.metrics {
                if metric.name.is_empty() {
                    rejections.push(reject("", "metric without a name"));
                    continue;
                }
                let Some(data) = &metric.data else {
                    rejections.push(reject(&metric.name, "metric without data"));
                    continue;
                };
                let (metric_type, temporality, monotonic) = describe(data);
                let context = MetricContext {
                    tenant,
                    service_name,
                    resource_attributes,
                    scope_name,
                    name: &metric.name,
                    description: &metric.description,
                    unit: &metric.unit,
                    metric_type,
                    temporality,
                    monotonic,
                };
                let points = points_of(data);
                if points.is_empty() {
                    rejections.push(reject(&metric.name, "metric without data points"));
                    continue;
                }
                for point in &points {
                    if point.time == 0 {
                        rejections.push(reject(&metric.name, "data point without a time"));
                        continue;
                    }
                    if let Some((bounds, counts)) = point.buckets
                        && !counts.is_empty()
                        && counts.len() != bounds.len() + 1
                    {
                        rejections.push(reject(
                            &metric.name,
                            "histogram bucket_counts must have one more entry than explicit_bounds",
                        ));
                        continue;
                    }
                    rows.append(&context, point);
                    converted.accepted += 1;
                }
            }
        }
    }
    converted.rejections = rejections;
    if converted.accepted > 0 {
        converted.batch = Some(rows.finish()?);
    }
    Ok(converted)
}

/// A metric's type, temporality and monotonicity, as the table names them.
fn describe(data: &Data) -> (&'static str, Option<&'static str>, Option<bool>) {
    match data {
        Data::Gauge(_) => ("gauge", None, None),
        Data::Sum(sum) => (
            "sum",
            temporality_name(sum.aggregation_temporality),
            Some(sum.is_monotonic),
        ),
        Data::Histogram(histogram) => (
            "histogram",
            temporality_name(histogram.aggregation_temporality),
            None,
        ),
        Data::ExponentialHistogram(histogram) => (
            "exponential_histogram",
            temporality_name(histogram.aggregation_temporality),
            None,
        ),
        Data::Summary(_) => ("summary", None, None),
    }
}

fn points_of(data: &Data) -> Vec<Point<'_>> {
    match data {
        Data::Gauge(gauge) => gauge.data_points.iter().map(number_point).collect(),
        Data::Sum(sum) => sum.data_points.iter().map(number_point).collect(),
        Data::Histogram(histogram) => histogram.data_points.iter().map(histogram_point).collect(),
        Data::ExponentialHistogram(histogram) => histogram
            .data_points
            .iter()
            .map(exponential_point)
            .collect(),
        Data::Summary(summary) => summary.data_points.iter().map(summary_point).collect(),
    }
}

fn histogram_point(point: &HistogramDataPoint) -> Point<'_> {
    Point {
        time: point.time_unix_nano,
        start_time: point.start_time_unix_nano,
        attributes: &point.attributes,
        count: Some(point.count),
        sum: point.sum,
        min: point.min,
        max: point.max,
        buckets: Some((&point.explicit_bounds, &point.bucket_counts)),
        flags: point.flags,
        ..Point::default()
    }
}

/// One side of an exponential histogram: offset and counts (empty when absent).
fn buckets_side(buckets: Option<&Buckets>) -> (i32, &[u64]) {
    buckets.map_or((0, &[][..]), |buckets| {
        (buckets.offset, buckets.bucket_counts.as_slice())
    })
}

fn exponential_point(point: &ExponentialHistogramDataPoint) -> Point<'_> {
    Point {
        time: point.time_unix_nano,
        start_time: point.start_time_unix_nano,
        attributes: &point.attributes,
        count: Some(point.count),
        sum: point.sum,
        min: point.min,
        max: point.max,
        exponential: Some(ExponentialBuckets {
            scale: point.scale,
            zero_count: point.zero_count,
            positive: buckets_side(point.positive.as_ref()),
            negative: buckets_side(point.negative.as_ref()),
        }),
        flags: point.flags,
        ..Point::default()
    }
}

fn summary_point(point: &SummaryDataPoint) -> Point<'_> {
    Point {
        time: point.time_unix_nano,
        start_time: point.start_time_unix_nano,
        attributes: &point.attributes,
        count: Some(point.count),
        sum: Some(point.sum),
        quantiles: Some(
            point
                .quantile_values
                .iter()
                .map(|quantile| (quantile.quantile, quantile.value))
                .collect(),
        ),
        flags: point.flags,
        ..Point::default()
    }
}

fn number_point(point: &opentelemetry_proto::tonic::metrics::v1::NumberDataPoint) -> Point<'_> {
    let (value, value_int) = number_value(point.value.as_ref());
    Point {
        time: point.time_unix_nano,
        start_time: point.start_time_unix_nano,
        attributes: &point.attributes,
        value,
        value_int,
        flags: point.flags,
        ..Point::default()
    }
}

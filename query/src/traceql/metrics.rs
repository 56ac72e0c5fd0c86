//! TraceQL metrics (`{...} | rate() by (...)`), as Tempo computes and
//! answers them at `/api/metrics/query_range` and `/api/metrics/query`.
//!
//! ```text
//! request --align--> intervals (start, start+step], ... (end-step, end]
//!   each metrics query: spans chosen by its pipeline, bucketed by start
//!   time into intervals and by its `by()` labels  -> cells per series
//!   -> series per function (rate, quantiles, histogram buckets, compare)
//!   -> second stages (topk/bottomk, `> x`) -> arithmetic between queries
//! ```
//!
//! Semantics (Tempo's, `pkg/traceql/engine_metrics.go`):
//! - Range requests are aligned to the step: start floored (then one more
//!   step back), end rounded up; intervals are right-closed and a sample
//!   is stamped at its interval's right edge, in milliseconds.
//! - `rate` is the count per second of step, `count_over_time` the count;
//!   both answer every interval (0 when empty). `min/max/sum/avg_over_time`
//!   answer only intervals with values. Durations are in seconds.
//! - `quantile_over_time` and `histogram_over_time` bucket values by the
//!   next power of two (nanoseconds for durations, answered in seconds as
//!   label `__bucket`); quantiles interpolate between buckets as Tempo's
//!   `Log2Quantile` does, label `p`, 0 for an empty interval.
//! - Labels: one per `by()` field, named as written (`resource.service.name`),
//!   typed; nil values are left out, and all-nil is `first = "nil"`;
//!   without `by()`, `__name__` = the function.
//! - `with(sample=...)`: tracelake reads every span, so results are exact
//!   and the hint changes nothing.
//!
//! Evaluation: a query whose pipeline is one filter DataFusion decides
//! exactly ([`super::Checked::exact`]) and whose labels are columns runs as
//! one scan of `spans` folded into cells as it streams ([`compiled`]);
//! anything else (structural
//! relations, pipelines, trace-level fields, events) is evaluated trace by
//! trace ([`super::scan_traces`]), in one pass over the window.

pub(super) mod compiled;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tracelake_storage::SpanReader;

use super::ast::*;
use super::check::{Checked, metrics_queries};
use super::eval::{AttrValue, TraceRows};
use crate::Result;

/// Most intervals a range request may have (Tempo's `max_intervals`).
pub const MAX_INTERVALS: i64 = 10_000;
/// Most series one metrics query may form; past it the query is refused
/// (narrow `by()`), so a label of unbounded cardinality (`by(span:id)`)
/// cannot exhaust memory.
pub const MAX_SERIES: usize = 10_000;
/// Most cells (series times intervals) one metrics query holds, so a
/// long range at a fine step with many series stays within memory: the
/// series limit is the smaller of [`MAX_SERIES`] and this over the
/// intervals.
pub const MAX_CELLS: usize = 4_000_000;
/// Exemplars answered when the request does not say (Tempo's default).
pub const DEFAULT_EXEMPLARS: usize = 100;

/// What to compute: nanoseconds, the step too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsRequest {
    pub start_ns: i64,
    pub end_ns: i64,
    pub step_ns: i64,
    pub exemplars: usize,
    /// One interval, `(start, end]`, not aligned.
    pub instant: bool,
}

impl MetricsRequest {
    /// Tempo's `AlignRequest`: start floored to the step, then one step
    /// earlier; end rounded up to the step. Instant requests stay.
    pub fn aligned(mut self) -> Self {
        if self.instant || self.step_ns <= 0 {
            return self;
        }
        let step = self.step_ns;
        self.start_ns -= self.start_ns.rem_euclid(step);
        let over = self.end_ns.rem_euclid(step);
        if over != 0 {
            self.end_ns = self.end_ns.saturating_add(step - over);
        }
        if self.start_ns > step {
            self.start_ns -= step;
        }
        self
    }

    pub fn intervals(&self) -> usize {
        if self.step_ns <= 0 {
            return 0;
        }
        usize::try_from((self.end_ns - self.start_ns) / self.step_ns).unwrap_or(0)
    }

    /// The interval of a span starting at `start_ns`: `(start + i*step,
    /// start + (i+1)*step]`.
    pub fn interval_of(&self, start_ns: i64) -> Option<usize> {
        if start_ns <= self.start_ns || start_ns > self.end_ns {
            return None;
        }
        let index = usize::try_from((start_ns - self.start_ns - 1) / self.step_ns).ok()?;
        (index < self.intervals()).then_some(index)
    }

    /// The timestamp (ms) of interval `index`: its right edge.
    pub fn timestamp_ms(&self, index: usize) -> i64 {
        (self.start_ns + (index as i64 + 1) * self.step_ns) / 1_000_000
    }
}

/// Tempo's default step for a range: about 240 intervals, rounded down
/// to a round step (`DefaultQueryRangeStep`).
pub fn default_step_ns(start_ns: i64, end_ns: i64) -> i64 {
    const MS: i64 = 1_000_000;
    const S: i64 = 1_000 * MS;
    let delta = end_ns.saturating_sub(start_ns);
    let baseline = delta / 240;
    if delta < 60 * S {
        return (baseline / (50 * MS) * (50 * MS)).max(50 * MS);
    }
    for grain in [3600 * S, 300 * S, 60 * S, 15 * S, 5 * S, S] {
        if baseline > grain {
            return baseline / grain * grain;
        }
    }
    S
}

/// A label value, typed as Tempo answers it.
pub type Label = (String, AttrValue);

#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    pub labels: Vec<Label>,
    pub value: f64,
    pub timestamp_ms: i64,
}

/// One answered series: samples `(timestamp_ms, value)` by time.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Vec<Label>,
    pub samples: Vec<(i64, f64)>,
    pub exemplars: Vec<Exemplar>,
}

/// The answer and what was read for it.
#[derive(Debug, Default)]
pub struct MetricsOutcome {
    pub series: Vec<Series>,
    pub inspected_traces: u64,
    pub inspected_spans: u64,
    pub inspected_bytes: u64,
}

/// What one interval of one series holds.
#[derive(Debug, Clone, Default)]
pub(super) struct Cell {
    pub count: f64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    /// Counts per power-of-two bucket (quantiles and histograms).
    pub buckets: Buckets,
}

/// Counts per power-of-two bucket, by the bucket's upper bound, in
/// ascending order. A cell holds a few (durations from 1 us to 1 min are
/// 26 buckets): a sorted vector, one allocation, read in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Buckets(Vec<(u64, f64)>);

impl Buckets {
    pub(super) fn add(&mut self, bucket: u64, count: f64) {
        match self.0.binary_search_by_key(&bucket, |(at, _)| *at) {
            Ok(index) => self.0[index].1 += count,
            Err(index) => self.0.insert(index, (bucket, count)),
        }
    }

    /// The count of `bucket` (0 when it has none).
    pub(super) fn get(&self, bucket: u64) -> f64 {
        self.0
            .binary_search_by_key(&bucket, |(at, _)| *at)
            .map_or(0.0, |index| self.0[index].1)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `(upper bound, count)` in ascending order of bound.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u64, f64)> + '_ {
        self.0.iter().copied()
    }
}

impl<const N: usize> From<[(u64, f64); N]> for Buckets {
    fn from(counts: [(u64, f64); N]) -> Self {
        let mut buckets = Self::default();
        for (bucket, count) in counts {
            buckets.add(bucket, count);
        }
        buckets
    }
}

impl Cell {
    fn add(&mut self, value: f64) {
        if self.count == 0.0 {
            self.min = value;
            self.max = value;
        } else {
            self.min = self.min.min(value);
            self.max = self.max.max(value);
        }
        self.count += 1.0;
        self.sum += value;
    }

    pub(super) fn merge(&mut self, count: f64, sum: f64, min: f64, max: f64) {
        if count <= 0.0 {
            return;
        }
        if self.count == 0.0 {
            self.min = min;
            self.max = max;
        } else {
            self.min = self.min.min(min);
            self.max = self.max.max(max);
        }
        self.count += count;
        self.sum += sum;
    }
}

/// Cells of one metrics query, per series key.
#[derive(Debug, Default)]
pub(super) struct Accumulated {
    /// Series key (labels) -> cells per interval.
    pub series: BTreeMap<LabelKey, (Vec<Label>, Vec<Cell>)>,
    /// Per series key, exemplar candidates: (interval, value, ts, trace id).
    pub exemplars: HashMap<LabelKey, Vec<(usize, f64, i64, String)>>,
    pub exemplar_count: usize,
    /// A series past [`MAX_SERIES`] was asked for.
    pub overflowed: bool,
}

/// A series' labels as a sortable, hashable key.
pub(super) type LabelKey = Vec<(String, String)>;

fn label_key(labels: &[Label]) -> LabelKey {
    labels
        .iter()
        .map(|(name, value)| (name.clone(), format!("{value:?}")))
        .collect()
}

impl Accumulated {
    /// Keeps an exemplar for the series of `labels` when the limits allow:
    /// `limit` in all, two per interval and series (Tempo's limiter), one
    /// per trace.
    pub(super) fn offer_exemplar(
        &mut self,
        labels: &[Label],
        interval: usize,
        value: f64,
        timestamp_ms: i64,
        trace_id: String,
        limit: usize,
    ) -> bool {
        self.offer_exemplar_keyed(
            label_key(labels),
            interval,
            value,
            timestamp_ms,
            trace_id,
            limit,
        )
    }

    fn offer_exemplar_keyed(
        &mut self,
        key: LabelKey,
        interval: usize,
        value: f64,
        timestamp_ms: i64,
        trace_id: String,
        limit: usize,
    ) -> bool {
        if self.exemplar_count >= limit {
            return false;
        }
        let list = self.exemplars.entry(key).or_default();
        // One exemplar per trace, two per interval.
        if list.iter().any(|(.., trace)| *trace == trace_id)
            || list.iter().filter(|(at, ..)| *at == interval).count() >= 2
        {
            return false;
        }
        list.push((interval, value, timestamp_ms, trace_id));
        self.exemplar_count += 1;
        true
    }

    /// The cells of the series of `labels`; `None` (and `overflowed`)
    /// when it would be one series too many.
    pub(super) fn cells(&mut self, labels: Vec<Label>, intervals: usize) -> Option<&mut Vec<Cell>> {
        let key = label_key(&labels);
        self.cells_keyed(&key, labels, intervals)
    }

    /// Drops the series that hold no span in any interval.
    pub(super) fn drop_uncounted(&mut self) {
        self.series.retain(|_, (_, cells)| {
            cells
                .iter()
                .any(|cell| cell.count != 0.0 || !cell.buckets.is_empty())
        });
    }

    /// [`Accumulated::cells`] with the key already made.
    /// The key is copied only for a new series.
    fn cells_keyed(
        &mut self,
        key: &LabelKey,
        labels: Vec<Label>,
        intervals: usize,
    ) -> Option<&mut Vec<Cell>> {
        if !self.series.contains_key(key) {
            let limit = MAX_SERIES.min(MAX_CELLS / intervals.max(1));
            if self.series.len() >= limit {
                self.overflowed = true;
                return None;
            }
            self.series
                .insert(key.clone(), (labels, vec![Cell::default(); intervals]));
        }
        self.series.get_mut(key).map(|(_, cells)| cells)
    }
}

/// `labels` from by-values as Tempo forms them: nil left out; all nil is
/// the first field `= "nil"`; no `by()` is `__name__`.
pub(super) fn series_labels(
    by: &[Field],
    values: Vec<Option<AttrValue>>,
    function: &MetricsFunction,
) -> Vec<Label> {
    if by.is_empty() {
        return vec![("__name__".into(), AttrValue::Text(function.name().into()))];
    }
    let labels: Vec<Label> = by
        .iter()
        .zip(values)
        .filter_map(|(field, value)| Some((field.to_string(), value?)))
        .collect();
    if labels.is_empty() {
        return vec![(by[0].to_string(), AttrValue::Text("nil".into()))];
    }
    labels
}

/// The next power of two at or above `value` (Tempo's `Log2Bucketize`).
pub(super) fn log2_bucket(value: u64) -> u64 {
    if value <= 1 {
        return value;
    }
    value.checked_next_power_of_two().unwrap_or(1 << 63)
}

/// Whether a field's values are durations (answered in seconds).
fn is_duration(field: &Field) -> bool {
    matches!(
        field,
        Field::Intrinsic(
            Intrinsic::Duration | Intrinsic::TraceDuration | Intrinsic::EventTimeSinceStart
        )
    )
}

/// The function's input value of a span, as a number (durations in
/// nanoseconds); `None` when missing or not a number.
pub(super) fn numeric(value: Option<AttrValue>) -> Option<f64> {
    match value? {
        AttrValue::Int(int) => Some(int as f64),
        AttrValue::Float(float) => Some(float),
        AttrValue::Duration(nanos) => Some(nanos as f64),
        _ => None,
    }
}

/// Runs a metrics query over `tenant`'s spans.
pub async fn query_range(
    reader: Arc<dyn SpanReader>,
    tenant: &str,
    checked: Arc<Checked>,
    request: MetricsRequest,
) -> Result<MetricsOutcome> {
    let Some(expr) = checked.metrics().cloned() else {
        return Ok(MetricsOutcome::default());
    };
    let request = request.aligned();
    let queries: Vec<MetricsQuery> = metrics_queries(&expr).into_iter().cloned().collect();
    let mut outcome = MetricsOutcome::default();
    let mut accumulated: Vec<Accumulated> = Vec::new();
    let compiled_plans: Vec<Option<compiled::Plan>> = queries
        .iter()
        .map(|query| compiled::Plan::of(&checked, query))
        .collect();
    if compiled_plans.iter().all(Option::is_some) {
        for plan in compiled_plans.into_iter().flatten() {
            let (cells, stats) = compiled::run(Arc::clone(&reader), tenant, plan, request).await?;
            outcome.inspected_spans += stats.inspected_spans;
            outcome.inspected_bytes += stats.inspected_bytes;
            accumulated.push(cells);
        }
    } else {
        let range = (request.start_ns.saturating_add(1), request.end_ns);
        let scan_checked = Arc::clone(&checked);
        let scan_queries = queries.clone();
        let initial: Vec<Accumulated> = queries.iter().map(|_| Accumulated::default()).collect();
        let (scanned, stats) = super::search::scan_traces(
            Arc::clone(&reader),
            tenant,
            Arc::clone(&checked),
            range,
            initial,
            move |state, trace| {
                for (query, cells) in scan_queries.iter().zip(state.iter_mut()) {
                    observe(&scan_checked, query, trace, &request, cells);
                }
            },
        )
        .await?;
        accumulated = scanned;
        outcome.inspected_traces = stats.inspected_traces;
        outcome.inspected_spans = stats.inspected_spans;
        outcome.inspected_bytes = stats.inspected_bytes;
    }
    if accumulated.iter().any(|cells| cells.overflowed) {
        return Err(crate::QueryError::TooLarge(format!(
            "the query forms more series than the server holds ({MAX_SERIES}, or {MAX_CELLS} series times intervals); narrow by() or the filter, or take a larger step"
        )));
    }
    let mut finished = queries
        .iter()
        .zip(accumulated)
        .map(|(query, cells)| finish(query, cells, &request))
        .collect::<Vec<_>>()
        .into_iter();
    let mut series = combine(&expr, &mut finished);
    series.retain(|series| !series.samples.is_empty());
    sort_series(&mut series);
    outcome.series = series;
    Ok(outcome)
}

/// Adds the spans `query` selects in `trace` to `cells`.
fn observe(
    checked: &Checked,
    query: &MetricsQuery,
    trace: &TraceRows,
    request: &MetricsRequest,
    cells: &mut Accumulated,
) {
    let intervals = request.intervals();
    let sets = checked.run_pipeline(&query.pipeline, trace);
    let mut spans: Vec<usize> = sets.into_iter().flat_map(|set| set.spans).collect();
    spans.sort_unstable();
    spans.dedup();
    let trace_id = hex::encode(trace.trace_id);
    let mut exemplar_taken = false;
    for span in spans {
        if trace.spans[span].in_progress {
            continue;
        }
        let start = trace.spans[span].start_ns;
        let Some(interval) = request.interval_of(start) else {
            continue;
        };
        if let MetricsFunction::Compare {
            selection,
            start_ns,
            end_ns,
            ..
        } = &query.function
        {
            let in_window =
                (*start_ns == 0 && *end_ns == 0) || (start > *start_ns && start <= *end_ns);
            let selected = in_window
                && selection
                    .as_ref()
                    .is_none_or(|selection| checked.matches(selection, trace, span));
            let kind = if selected { "selection" } else { "baseline" };
            for (name, value) in checked.comparable_attributes(span, trace) {
                let labels = vec![
                    ("__meta_type".to_string(), AttrValue::Text(kind.into())),
                    (name.clone(), value),
                ];
                if let Some(series) = cells.cells(labels, intervals) {
                    series[interval].add(1.0);
                }
                let totals = vec![
                    (
                        "__meta_type".to_string(),
                        AttrValue::Text(format!("{kind}_total")),
                    ),
                    (name, AttrValue::Text("nil".into())),
                ];
                if let Some(series) = cells.cells(totals, intervals) {
                    series[interval].add(1.0);
                }
            }
            continue;
        }
        let values = query
            .by
            .iter()
            .map(|field| checked.field_value(field, trace, span))
            .collect();
        let labels = series_labels(&query.by, values, &query.function);
        let (input, bucketed) = match &query.function {
            MetricsFunction::Rate | MetricsFunction::CountOverTime => (Some(1.0), false),
            MetricsFunction::MinOverTime(field)
            | MetricsFunction::MaxOverTime(field)
            | MetricsFunction::SumOverTime(field)
            | MetricsFunction::AvgOverTime(field) => {
                (numeric(checked.field_value(field, trace, span)), false)
            }
            MetricsFunction::QuantileOverTime(field, _)
            | MetricsFunction::HistogramOverTime(field) => {
                (numeric(checked.field_value(field, trace, span)), true)
            }
            MetricsFunction::Compare { .. } => (None, false),
        };
        let Some(value) = input else {
            continue;
        };
        let key = label_key(&labels);
        let Some(series) = cells.cells_keyed(&key, labels, intervals) else {
            continue;
        };
        let cell = &mut series[interval];
        if bucketed {
            if value < 2.0 || value.fract() != 0.0 {
                continue;
            }
            cell.buckets.add(log2_bucket(value as u64), 1.0);
        } else {
            cell.add(value);
        }
        if !exemplar_taken && cells.exemplar_count < request.exemplars {
            let per_interval = cells.exemplars.get(&key).map_or(0, |list| {
                list.iter().filter(|(at, ..)| *at == interval).count()
            });
            if per_interval < 2 {
                exemplar_taken = true;
                cells.exemplar_count += 1;
                cells.exemplars.entry(key).or_default().push((
                    interval,
                    value,
                    start / 1_000_000,
                    trace_id.clone(),
                ));
            }
        }
    }
}

/// The series of one query from its cells (module docs).
pub(super) fn finish(
    query: &MetricsQuery,
    accumulated: Accumulated,
    request: &MetricsRequest,
) -> Vec<Series> {
    let step_seconds = request.step_ns as f64 / 1e9;
    let in_seconds = |field: &Field, value: f64| {
        if is_duration(field) {
            value / 1e9
        } else {
            value
        }
    };
    let mut out = Vec::new();
    let Accumulated {
        series, exemplars, ..
    } = accumulated;
    let mut exemplars = exemplars;
    for (key, (labels, cells)) in series {
        // A series whose only spans were taken off (in progress) has none.
        if cells
            .iter()
            .all(|cell| cell.count <= 0.0 && cell.buckets.is_empty())
        {
            continue;
        }
        let candidates = exemplars.remove(&key).unwrap_or_default();
        let exemplar = |labels: &[Label], value: f64, ts: i64, trace: &str| {
            let mut with_trace = vec![("trace:id".to_string(), AttrValue::Text(trace.into()))];
            with_trace.extend(
                labels
                    .iter()
                    .filter(|(name, _)| name != "__name__")
                    .cloned(),
            );
            Exemplar {
                labels: with_trace,
                value,
                timestamp_ms: ts,
            }
        };
        match &query.function {
            MetricsFunction::Rate
            | MetricsFunction::CountOverTime
            | MetricsFunction::Compare { .. } => {
                let per = |cell: &Cell| match query.function {
                    MetricsFunction::Rate => cell.count / step_seconds,
                    _ => cell.count,
                };
                let samples: Vec<(i64, f64)> = cells
                    .iter()
                    .enumerate()
                    .map(|(index, cell)| (request.timestamp_ms(index), per(cell)))
                    .collect();
                let exemplars = candidates
                    .iter()
                    .map(|(interval, _, ts, trace)| {
                        exemplar(&labels, per(&cells[*interval]), *ts, trace)
                    })
                    .collect();
                out.push(Series {
                    labels,
                    samples,
                    exemplars,
                });
            }
            MetricsFunction::MinOverTime(field)
            | MetricsFunction::MaxOverTime(field)
            | MetricsFunction::SumOverTime(field)
            | MetricsFunction::AvgOverTime(field) => {
                let samples = cells
                    .iter()
                    .enumerate()
                    .filter(|(_, cell)| cell.count > 0.0)
                    .map(|(index, cell)| {
                        let value = match query.function {
                            MetricsFunction::MinOverTime(_) => cell.min,
                            MetricsFunction::MaxOverTime(_) => cell.max,
                            MetricsFunction::SumOverTime(_) => cell.sum,
                            _ => cell.sum / cell.count,
                        };
                        (request.timestamp_ms(index), in_seconds(field, value))
                    })
                    .collect();
                let exemplars = candidates
                    .iter()
                    .map(|(_, value, ts, trace)| {
                        exemplar(&labels, in_seconds(field, *value), *ts, trace)
                    })
                    .collect();
                out.push(Series {
                    labels,
                    samples,
                    exemplars,
                });
            }
            MetricsFunction::HistogramOverTime(field) => {
                let buckets: std::collections::BTreeSet<u64> = cells
                    .iter()
                    .flat_map(|cell| cell.buckets.iter().map(|(bucket, _)| bucket))
                    .collect();
                for bucket in buckets {
                    let mut bucket_labels: Vec<Label> = labels
                        .iter()
                        .filter(|(name, _)| name != "__name__")
                        .cloned()
                        .collect();
                    bucket_labels.push((
                        "__bucket".into(),
                        AttrValue::Float(in_seconds(field, bucket as f64)),
                    ));
                    let samples = cells
                        .iter()
                        .enumerate()
                        .map(|(index, cell)| {
                            (request.timestamp_ms(index), cell.buckets.get(bucket))
                        })
                        .collect();
                    let exemplars = candidates
                        .iter()
                        .filter(|(_, value, ..)| log2_bucket(*value as u64) == bucket)
                        .map(|(_, value, ts, trace)| {
                            exemplar(&bucket_labels, in_seconds(field, *value), *ts, trace)
                        })
                        .collect();
                    out.push(Series {
                        labels: bucket_labels,
                        samples,
                        exemplars,
                    });
                }
            }
            MetricsFunction::QuantileOverTime(field, quantiles) => {
                let base: Vec<Label> = labels
                    .iter()
                    .filter(|(name, _)| name != "__name__")
                    .cloned()
                    .collect();
                let mut overall = Buckets::default();
                for cell in &cells {
                    for (bucket, count) in cell.buckets.iter() {
                        overall.add(bucket, count);
                    }
                }
                let overall_values: Vec<f64> = quantiles
                    .iter()
                    .map(|q| log2_quantile(*q, &overall))
                    .collect();
                for (position, quantile) in quantiles.iter().enumerate() {
                    let mut quantile_labels = base.clone();
                    quantile_labels.push(("p".into(), AttrValue::Float(*quantile)));
                    let samples = cells
                        .iter()
                        .enumerate()
                        .map(|(index, cell)| {
                            let value = log2_quantile(*quantile, &cell.buckets);
                            (request.timestamp_ms(index), in_seconds(field, value))
                        })
                        .collect();
                    // Each exemplar goes to the quantile nearest its value.
                    let exemplars = candidates
                        .iter()
                        .filter(|(_, value, ..)| {
                            let nearest = overall_values
                                .iter()
                                .enumerate()
                                .min_by(|a, b| (a.1 - value).abs().total_cmp(&(b.1 - value).abs()))
                                .map(|(index, _)| index);
                            nearest == Some(position)
                        })
                        .map(|(_, value, ts, trace)| {
                            exemplar(&quantile_labels, in_seconds(field, *value), *ts, trace)
                        })
                        .collect();
                    out.push(Series {
                        labels: quantile_labels,
                        samples,
                        exemplars,
                    });
                }
            }
        }
    }
    if let MetricsFunction::Compare { top, .. } = &query.function {
        out = compare_top(out, *top);
    }
    out
}

/// `compare()`: per attribute and kind, the `top` values by total count,
/// and the totals.
fn compare_top(series: Vec<Series>, top: usize) -> Vec<Series> {
    let total = |series: &Series| series.samples.iter().map(|(_, value)| value).sum::<f64>();
    let mut groups: BTreeMap<(String, String), Vec<Series>> = BTreeMap::new();
    let mut out = Vec::new();
    for one in series {
        let kind = match one.labels.first() {
            Some((_, AttrValue::Text(kind))) => kind.clone(),
            _ => String::new(),
        };
        if kind.ends_with("_total") {
            out.push(one);
            continue;
        }
        let attribute = one
            .labels
            .get(1)
            .map(|(name, _)| name.clone())
            .unwrap_or_default();
        groups.entry((kind, attribute)).or_default().push(one);
    }
    for (_, mut group) in groups {
        group.sort_by(|a, b| total(b).total_cmp(&total(a)));
        group.truncate(top.max(1));
        out.extend(group);
    }
    out
}

/// Tempo's `Log2Quantile`: the quantile of power-of-two buckets,
/// interpolated exponentially inside the bucket it falls in.
pub(super) fn log2_quantile(quantile: f64, buckets: &Buckets) -> f64 {
    let total: f64 = buckets.iter().map(|(_, count)| count).sum();
    if total <= 0.0 {
        return 0.0;
    }
    let ordered = &buckets.0;
    let max_samples = (quantile * total).ceil().max(1.0);
    let mut run = 0.0;
    let mut bucket = 0;
    for (index, (max, count)) in ordered.iter().enumerate() {
        bucket = index;
        if run + count > max_samples {
            break;
        }
        run += count;
        if run == max_samples {
            return *max as f64;
        }
    }
    let (max, count) = ordered[bucket];
    let interpolation = if count > 0.0 {
        (max_samples - run) / count
    } else {
        0.0
    };
    let max_value = (max as f64).log2();
    let min_value = if bucket > 0 {
        (ordered[bucket - 1].0 as f64).log2()
    } else {
        max_value - 1.0
    };
    2f64.powf(min_value + (max_value - min_value) * interpolation)
}

/// The series of an expression, from the finished series of its queries
/// in order.
fn combine(expr: &MetricsExpr, finished: &mut impl Iterator<Item = Vec<Series>>) -> Vec<Series> {
    match expr {
        MetricsExpr::Query(_) => finished.next().unwrap_or_default(),
        MetricsExpr::Staged(inner, stages) => {
            let mut series = combine(inner, finished);
            for stage in stages {
                series = second_stage(series, *stage);
            }
            series
        }
        MetricsExpr::Scalar {
            op,
            scalar,
            expr,
            scalar_first,
        } => combine(expr, finished)
            .into_iter()
            .map(|mut series| {
                let apply = |value: f64| {
                    if *scalar_first {
                        checked_math(*op, *scalar, value)
                    } else {
                        checked_math(*op, value, *scalar)
                    }
                };
                series.samples = series
                    .samples
                    .into_iter()
                    .map(|(ts, value)| (ts, apply(value)))
                    .filter(|(_, value)| !value.is_nan())
                    .collect();
                for exemplar in &mut series.exemplars {
                    exemplar.value = apply(exemplar.value);
                }
                series
            })
            .collect(),
        MetricsExpr::Math(op, left, right) => {
            let left = combine(left, finished);
            let right = combine(right, finished);
            math(*op, left, right)
        }
    }
}

/// `x / 0` is NaN (the sample is left out), as in Tempo.
fn checked_math(op: MathOp, left: f64, right: f64) -> f64 {
    if op == MathOp::Div && right == 0.0 {
        return f64::NAN;
    }
    op.apply(left, right)
}

/// Labels that identify a series for arithmetic (`__name__` left out).
fn match_key(labels: &[Label]) -> LabelKey {
    label_key(
        &labels
            .iter()
            .filter(|(name, _)| name != "__name__")
            .cloned()
            .collect::<Vec<_>>(),
    )
}

/// Series of both sides with the same labels, combined per timestamp; a
/// side without labels combines with every series of the other.
fn math(op: MathOp, left: Vec<Series>, right: Vec<Series>) -> Vec<Series> {
    let mut out = Vec::new();
    for l in &left {
        for r in &right {
            let (lk, rk) = (match_key(&l.labels), match_key(&r.labels));
            if !(lk == rk || lk.is_empty() || rk.is_empty()) {
                continue;
            }
            let right_values: HashMap<i64, f64> = r.samples.iter().copied().collect();
            let samples: Vec<(i64, f64)> = l
                .samples
                .iter()
                .filter_map(|(ts, value)| {
                    let other = right_values.get(ts)?;
                    let result = checked_math(op, *value, *other);
                    (!result.is_nan()).then_some((*ts, result))
                })
                .collect();
            let mut labels: Vec<Label> = l.labels.clone();
            let name = |labels: &[Label]| {
                labels.iter().find_map(|(name, value)| match value {
                    AttrValue::Text(text) if name == "__name__" => Some(text.clone()),
                    _ => None,
                })
            };
            match (name(&l.labels), name(&r.labels)) {
                (Some(a), Some(b)) => {
                    let symbol = match op {
                        MathOp::Add => "+",
                        MathOp::Sub => "-",
                        MathOp::Mul => "*",
                        MathOp::Div => "/",
                    };
                    for (label, value) in &mut labels {
                        if label == "__name__" {
                            *value = AttrValue::Text(format!("({a} {symbol} {b})"));
                        }
                    }
                }
                _ => labels.retain(|(label, _)| label != "__name__"),
            }
            for label in &r.labels {
                if label.0 != "__name__" && !labels.iter().any(|(name, _)| *name == label.0) {
                    labels.push(label.clone());
                }
            }
            out.push(Series {
                labels,
                samples,
                exemplars: Vec::new(),
            });
        }
    }
    out
}

fn second_stage(mut series: Vec<Series>, stage: SecondStage) -> Vec<Series> {
    match stage {
        SecondStage::Filter(comparison, threshold) => {
            for one in &mut series {
                one.samples
                    .retain(|(_, value)| comparison.holds(value.partial_cmp(&threshold)));
                one.exemplars
                    .retain(|exemplar| comparison.holds(exemplar.value.partial_cmp(&threshold)));
            }
            series.retain(|one| !one.samples.is_empty());
            series
        }
        SecondStage::TopK(count) | SecondStage::BottomK(count) => {
            if series.len() <= count {
                return series;
            }
            let top = matches!(stage, SecondStage::TopK(_));
            let timestamps: std::collections::BTreeSet<i64> = series
                .iter()
                .flat_map(|one| one.samples.iter().map(|(ts, _)| *ts))
                .collect();
            let mut keep: Vec<std::collections::HashSet<i64>> =
                vec![Default::default(); series.len()];
            for ts in timestamps {
                let mut at: Vec<(usize, f64)> = series
                    .iter()
                    .enumerate()
                    .filter_map(|(index, one)| {
                        one.samples
                            .iter()
                            .find(|(sample_ts, _)| *sample_ts == ts)
                            .map(|(_, value)| (index, *value))
                    })
                    .filter(|(_, value)| !value.is_nan())
                    .collect();
                at.sort_by(|a, b| {
                    let order = a.1.total_cmp(&b.1);
                    let order = if top { order.reverse() } else { order };
                    order.then_with(|| {
                        label_key(&series[a.0].labels).cmp(&label_key(&series[b.0].labels))
                    })
                });
                for (index, _) in at.into_iter().take(count) {
                    keep[index].insert(ts);
                }
            }
            let mut out = Vec::new();
            for (index, mut one) in series.into_iter().enumerate() {
                one.samples.retain(|(ts, _)| keep[index].contains(ts));
                if !one.samples.is_empty() {
                    out.push(one);
                }
            }
            out
        }
    }
}

/// Tempo's order: by number of labels, then label by label.
fn sort_series(series: &mut [Series]) {
    series.sort_by(|a, b| {
        a.labels
            .len()
            .cmp(&b.labels.len())
            .then_with(|| label_key(&a.labels).cmp(&label_key(&b.labels)))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_as_tempo_does() {
        let s = 1_000_000_000;
        let request = MetricsRequest {
            start_ns: 1100 * s,
            end_ns: 1300 * s,
            step_ns: 100 * s,
            exemplars: 0,
            instant: false,
        }
        .aligned();
        assert_eq!((request.start_ns, request.end_ns), (1000 * s, 1300 * s));
        assert_eq!(request.intervals(), 3);
        let stamps: Vec<i64> = (0..3).map(|index| request.timestamp_ms(index)).collect();
        assert_eq!(stamps, [1_100_000, 1_200_000, 1_300_000]);
        // Right-closed: a span on a boundary belongs to the earlier interval.
        assert_eq!(request.interval_of(1100 * s), Some(0));
        assert_eq!(request.interval_of(1100 * s + 1), Some(1));
        assert_eq!(request.interval_of(1000 * s), None);
        assert_eq!(default_step_ns(0, 3600 * s), 15 * s);
        assert_eq!(default_step_ns(0, 6 * 3600 * s), 60 * s);
        assert_eq!(default_step_ns(0, 24 * 3600 * s), 300 * s);
        assert_eq!(default_step_ns(0, 30 * s), 100_000_000);
    }

    #[test]
    fn quantiles_interpolate_between_power_of_two_buckets() {
        // 10 values in bucket 1024, 10 in 2048: the median is the top of
        // the first bucket; p90 interpolates into the second.
        let buckets: Buckets = [(1024, 10.0), (2048, 10.0)].into();
        assert_eq!(log2_quantile(0.5, &buckets), 1024.0);
        let p90 = log2_quantile(0.9, &buckets);
        // maxSamples = 18, run 10, 8/10 of the way from 2^10 to 2^11.
        assert!((p90 - 2f64.powf(10.8)).abs() < 1e-9, "{p90}");
        assert_eq!(log2_quantile(0.5, &Buckets::default()), 0.0);
        assert_eq!(log2_bucket(1000), 1024);
        assert_eq!(log2_bucket(1024), 1024);
        assert_eq!(log2_bucket(1025), 2048);
    }
}

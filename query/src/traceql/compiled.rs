//! Metrics queries DataFusion answers in one aggregate plan over `spans`:
//!
//! ```sql
//! SELECT (start_ns - start - 1) / step AS interval, <by...>, [bucket,]
//!        count(*), sum(v), min(v), max(v)
//! FROM spans WHERE start_time IN (start, end] AND <filter, exact>
//! GROUP BY interval, <by...>[, bucket]
//! ```
//!
//! built with `Expr` (no query text). It applies when the query's pipeline
//! is one filter that DataFusion decides exactly
//! ([`Checked::exact`]), its `by()` fields and the function's input are
//! columns or span/resource attributes, and the function is not
//! `compare()`; [`super::metrics`] falls back to trace-by-trace
//! evaluation otherwise. `bucket` is the next power of two of the value
//! (Tempo's `Log2Bucketize`), computed in the plan.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::functions::math::expr_fn::{ceil, log2, power};
use datafusion::functions_aggregate::expr_fn::{count, max, min, sum};
use datafusion::logical_expr::cast;
use datafusion::prelude::{Expr, col, lit};
use tracelake_storage::SpanReader;
use tracelake_storage::schema::{any_value, col as span_col};

use super::ast::*;
use super::check::Checked;
use super::eval::AttrValue;
use super::metrics::{Accumulated, MetricsRequest, series_labels};
use super::search::{ScanStats, attr_value};
use crate::exprs::{any_value_child, or_else, starts_within};
use crate::{QueryError, Result, session_for_tenant};

/// How a `by()` label is read from its column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LabelColumn {
    /// A text column (`name`, `service_name`, `status_code`, `kind`).
    Text,
    /// An `AnyValue` struct (an attribute).
    Any,
}

/// A metrics query as one aggregate plan.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    predicate: Option<Expr>,
    by: Vec<(Field, Expr, LabelColumn)>,
    /// The function's input (nanoseconds for durations), as Float64.
    value: Option<Expr>,
    bucketed: bool,
    query: MetricsQuery,
}

fn label_column(checked: &Checked, field: &Field) -> Option<(Expr, LabelColumn)> {
    Some(match field {
        Field::Intrinsic(Intrinsic::Name) => (col(span_col::NAME), LabelColumn::Text),
        Field::Intrinsic(Intrinsic::Status) => (col(span_col::STATUS_CODE), LabelColumn::Text),
        Field::Intrinsic(Intrinsic::Kind) => (col(span_col::KIND), LabelColumn::Text),
        Field::Attribute {
            scope: Scope::Resource,
            name,
        } if name == super::SERVICE_NAME => (col(span_col::SERVICE_NAME), LabelColumn::Text),
        Field::Attribute { scope, name }
            if matches!(
                scope,
                Scope::Span | Scope::Resource | Scope::Instrumentation
            ) || (*scope == Scope::Any && name != super::SERVICE_NAME) =>
        {
            let slot = checked.slot(*scope, name)?;
            (checked.slot_expr(slot), LabelColumn::Any)
        }
        _ => return None,
    })
}

fn input_value(checked: &Checked, field: &Field) -> Option<Expr> {
    match field {
        Field::Intrinsic(Intrinsic::Duration) => {
            Some(cast(col(span_col::DURATION_NS), DataType::Float64))
        }
        Field::Attribute { .. } => {
            let (value, LabelColumn::Any) = label_column(checked, field)? else {
                return None;
            };
            Some(or_else(
                cast(
                    any_value_child(value.clone(), any_value::INT),
                    DataType::Float64,
                ),
                any_value_child(value, any_value::DOUBLE),
            ))
        }
        _ => None,
    }
}

impl Plan {
    /// The plan of `query`, when one aggregate answers it exactly.
    pub(super) fn of(checked: &Checked, query: &MetricsQuery) -> Option<Self> {
        let predicate = match query.pipeline.stages.as_slice() {
            [Stage::Spansets(Spansets::Filter(None))] => None,
            [Stage::Spansets(Spansets::Filter(Some(expr)))] => Some(checked.exact(expr)?),
            _ => return None,
        };
        let by = query
            .by
            .iter()
            .map(|field| {
                let (expr, kind) = label_column(checked, field)?;
                Some((field.clone(), expr, kind))
            })
            .collect::<Option<Vec<_>>>()?;
        let (value, bucketed) = match &query.function {
            MetricsFunction::Rate | MetricsFunction::CountOverTime => (None, false),
            MetricsFunction::MinOverTime(field)
            | MetricsFunction::MaxOverTime(field)
            | MetricsFunction::SumOverTime(field)
            | MetricsFunction::AvgOverTime(field) => (Some(input_value(checked, field)?), false),
            MetricsFunction::QuantileOverTime(field, _)
            | MetricsFunction::HistogramOverTime(field) => {
                if !matches!(field, Field::Intrinsic(Intrinsic::Duration)) {
                    return None;
                }
                (Some(input_value(checked, field)?), true)
            }
            MetricsFunction::Compare { .. } => return None,
        };
        Some(Self {
            predicate,
            by,
            value,
            bucketed,
            query: query.clone(),
        })
    }
}

const INTERVAL: &str = "interval";
const BUCKET: &str = "bucket";
const COUNT: &str = "n";
const SUM: &str = "total";
const MIN: &str = "smallest";
const MAX: &str = "largest";
const EXEMPLAR_TRACE: &str = "exemplar_trace";
const EXEMPLAR_START: &str = "exemplar_start";
const EXEMPLAR_VALUE: &str = "exemplar_value";

/// What one aggregate over `spans` computes for a [`Plan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pass {
    /// The cells: counts (and sums, minimums, maximums) per group.
    Cells,
    /// Counts of X-Ray segments stored in progress (and stored again when
    /// they complete), taken off the counts of `rate`/`count_over_time`.
    InProgress,
    /// Spans of one interval (`index`) as exemplar candidates: the first
    /// [`EXEMPLAR_ROWS`] found, so the scan stops early.
    Exemplars { index: usize },
}

/// Whether an X-Ray segment is stored in progress: no end yet (duration
/// 0) and flagged. Conjuncts, so a scan tests the duration first and
/// decodes attributes only for the few spans of duration 0.
fn in_progress() -> [Expr; 2] {
    [
        col(span_col::DURATION_NS).eq(lit(0i64)),
        crate::exprs::xray_in_progress(),
    ]
}

impl Plan {
    /// Whether in-progress segments are taken off afterwards (counts)
    /// rather than filtered out span by span (which reads every span's
    /// attributes).
    fn corrects_counts(&self) -> bool {
        matches!(
            self.query.function,
            MetricsFunction::Rate | MetricsFunction::CountOverTime
        )
    }
}

/// The aggregate of `pass` for `plan` and `request` (aligned), over
/// `context`'s `spans`.
///
/// An X-Ray segment sent in progress is stored again when it completes;
/// the in-progress copy is not counted, as trace-by-trace evaluation keeps
/// only the later copy: counts subtract them ([`Pass::InProgress`]),
/// duration buckets never hold them (duration 0), other functions filter
/// them out.
pub(super) async fn frame(
    context: &datafusion::prelude::SessionContext,
    plan: &Plan,
    request: &MetricsRequest,
    pass: Pass,
) -> Result<datafusion::prelude::DataFrame> {
    let (from_ns, to_ns) = match pass {
        Pass::Exemplars { index } => {
            let from = request.start_ns + index as i64 * request.step_ns;
            (from, from + request.step_ns)
        }
        _ => (request.start_ns, request.end_ns),
    };
    let mut condition = starts_within(from_ns.saturating_add(1), to_ns);
    if let Some(predicate) = &plan.predicate {
        condition = condition.and(predicate.clone());
    }
    let start_ns = cast(col(span_col::START_TIME), DataType::Int64);
    match pass {
        Pass::Cells if !plan.corrects_counts() && !plan.bucketed => {
            let [zero, flagged] = in_progress();
            condition = condition.and(!(zero.and(flagged)));
        }
        Pass::InProgress => {
            for conjunct in in_progress() {
                condition = condition.and(conjunct);
            }
        }
        _ => {}
    }
    let interval =
        (start_ns.clone() - lit(request.start_ns) - lit(1i64)) / lit(request.step_ns.max(1));
    let mut groups = vec![interval.alias(INTERVAL)];
    for (index, (_, expr, _)) in plan.by.iter().enumerate() {
        groups.push(expr.clone().alias(format!("by_{index}")));
    }
    let mut aggregates = Vec::new();
    if let Some(value) = &plan.value {
        if plan.bucketed {
            // Values under 2 are not bucketed (Tempo drops them).
            condition = condition.and(value.clone().gt_eq(lit(2.0)));
            let bucket = cast(power(lit(2.0), ceil(log2(value.clone()))), DataType::Int64);
            groups.push(bucket.alias(BUCKET));
        } else {
            condition = condition.and(value.clone().is_not_null());
            if pass == Pass::Cells {
                aggregates.push(sum(value.clone()).alias(SUM));
                aggregates.push(min(value.clone()).alias(MIN));
                aggregates.push(max(value.clone()).alias(MAX));
            }
        }
    }
    let frame = context.table("spans").await?.filter(condition)?;
    if let Pass::Exemplars { .. } = pass {
        let mut columns = groups;
        columns.push(col(span_col::TRACE_ID).alias(EXEMPLAR_TRACE));
        columns.push(start_ns.alias(EXEMPLAR_START));
        if let Some(value) = &plan.value {
            columns.push(value.clone().alias(EXEMPLAR_VALUE));
        }
        return Ok(frame.select(columns)?.limit(0, Some(EXEMPLAR_ROWS))?);
    }
    aggregates.push(count(lit(1i64)).alias(COUNT));
    Ok(frame.aggregate(groups, aggregates)?)
}

/// Exemplar candidates read per interval sampled.
const EXEMPLAR_ROWS: usize = 64;
/// Most intervals exemplars are read from, spread over the range.
const EXEMPLAR_INTERVALS: usize = 12;

/// Runs `plan` for `request` (aligned) and returns its cells.
pub(super) async fn run(
    reader: Arc<dyn SpanReader>,
    tenant: &str,
    plan: Plan,
    request: MetricsRequest,
) -> Result<(Accumulated, ScanStats)> {
    let context = session_for_tenant(reader, tenant)?;
    let plan = Arc::new(plan);
    let mut passes = vec![Pass::Cells];
    if plan.corrects_counts() {
        passes.push(Pass::InProgress);
    }
    let mut accumulated = Accumulated::default();
    let mut stats = ScanStats::default();
    for pass in passes {
        (accumulated, stats) = run_pass(&context, &plan, request, pass, accumulated, stats).await?;
    }
    // Exemplars: a few spans from intervals spread over those that hold
    // spans, each read with a limit (the scan stops early), up to two per
    // interval and series, `request.exemplars` in all.
    let with_spans: Vec<usize> = (0..request.intervals())
        .filter(|index| {
            accumulated.series.values().any(|(_, cells)| {
                cells
                    .get(*index)
                    .is_some_and(|cell| cell.count > 0.0 || !cell.buckets.is_empty())
            })
        })
        .collect();
    let sampled = with_spans
        .len()
        .min(EXEMPLAR_INTERVALS)
        .min(request.exemplars.div_ceil(2));
    for slice in 0..sampled {
        // Spread over the intervals that hold spans.
        let index = with_spans[(2 * slice + 1) * with_spans.len() / (2 * sampled)];
        let pass = Pass::Exemplars { index };
        (accumulated, stats) = run_pass(&context, &plan, request, pass, accumulated, stats).await?;
    }
    Ok((accumulated, stats))
}

/// Runs one pass of `plan` and adds what it read to `accumulated`, the
/// rows read off the reactor.
async fn run_pass(
    context: &datafusion::prelude::SessionContext,
    plan: &Arc<Plan>,
    request: MetricsRequest,
    pass: Pass,
    mut accumulated: Accumulated,
    mut stats: ScanStats,
) -> Result<(Accumulated, ScanStats)> {
    let batches = frame(context, plan, &request, pass)
        .await?
        .collect()
        .await?;
    let plan = Arc::clone(plan);
    crate::off_reactor(move || {
        cells_of(
            &batches,
            &plan,
            &request,
            pass,
            &mut accumulated,
            &mut stats,
        )?;
        Ok((accumulated, stats))
    })
    .await
}

fn corrupt(what: &str) -> QueryError {
    QueryError::DataFusion(datafusion::error::DataFusionError::Internal(format!(
        "metrics column {what} missing or mistyped"
    )))
}

fn cells_of(
    batches: &[RecordBatch],
    plan: &Plan,
    request: &MetricsRequest,
    pass: Pass,
    accumulated: &mut Accumulated,
    stats: &mut ScanStats,
) -> Result<()> {
    let query = &plan.query;
    let intervals = request.intervals();
    for batch in batches {
        let column = |name: &str| batch.column_by_name(name).ok_or_else(|| corrupt(name));
        let interval = column(INTERVAL)?
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| corrupt(INTERVAL))?;
        let counts = match batch.column_by_name(COUNT) {
            None => None,
            Some(array) => Some(
                array
                    .as_primitive_opt::<Int64Type>()
                    .ok_or_else(|| corrupt(COUNT))?
                    .clone(),
            ),
        };
        let floats = |name: &str| -> Result<Option<datafusion::arrow::array::Float64Array>> {
            match batch.column_by_name(name) {
                None => Ok(None),
                Some(array) => Ok(Some(
                    array
                        .as_primitive_opt::<Float64Type>()
                        .ok_or_else(|| corrupt(name))?
                        .clone(),
                )),
            }
        };
        let (sums, mins, maxes) = (floats(SUM)?, floats(MIN)?, floats(MAX)?);
        let buckets = match batch.column_by_name(BUCKET) {
            None => None,
            Some(array) => Some(
                array
                    .as_primitive_opt::<Int64Type>()
                    .ok_or_else(|| corrupt(BUCKET))?
                    .clone(),
            ),
        };
        let exemplar_traces = batch
            .column_by_name(EXEMPLAR_TRACE)
            .and_then(|array| array.as_fixed_size_binary_opt().cloned());
        let exemplar_starts = batch
            .column_by_name(EXEMPLAR_START)
            .and_then(|array| array.as_primitive_opt::<Int64Type>().cloned());
        let exemplar_values = floats(EXEMPLAR_VALUE)?;
        let by_columns: Vec<&Arc<dyn Array>> = (0..plan.by.len())
            .map(|index| column(&format!("by_{index}")))
            .collect::<Result<_>>()?;
        for row in 0..batch.num_rows() {
            let Some(index) = usize::try_from(interval.value(row))
                .ok()
                .filter(|index| *index < intervals)
            else {
                continue;
            };
            let values: Vec<Option<AttrValue>> = plan
                .by
                .iter()
                .zip(&by_columns)
                .map(|((_, _, kind), array)| match kind {
                    LabelColumn::Text => array
                        .as_string_opt::<i32>()
                        .filter(|strings| strings.is_valid(row))
                        .map(|strings| AttrValue::Text(strings.value(row).to_string())),
                    LabelColumn::Any => array
                        .as_struct_opt()
                        .and_then(|structs| attr_value(structs, row)),
                })
                .collect();
            let labels = series_labels(&query.by, values, &query.function);
            if let Pass::Exemplars { .. } = pass {
                if let (Some(traces), Some(starts)) = (&exemplar_traces, &exemplar_starts)
                    && traces.is_valid(row)
                {
                    let value = exemplar_values
                        .as_ref()
                        .map_or(1.0, |values| values.value(row));
                    accumulated.offer_exemplar(
                        &labels,
                        index,
                        value,
                        starts.value(row) / 1_000_000,
                        hex::encode(traces.value(row)),
                        request.exemplars,
                    );
                }
                continue;
            }
            let count = counts
                .as_ref()
                .map_or(0.0, |counts| counts.value(row) as f64);
            let Some(series) = accumulated.cells(labels, intervals) else {
                continue;
            };
            let cell = &mut series[index];
            if pass == Pass::InProgress {
                cell.count -= count;
                stats.inspected_spans = stats.inspected_spans.saturating_sub(count as u64);
                continue;
            }
            stats.inspected_spans += count as u64;
            match &buckets {
                Some(buckets) => {
                    let bucket = u64::try_from(buckets.value(row)).unwrap_or(0);
                    *cell.buckets.entry(bucket).or_default() += count;
                }
                None => {
                    let value = |array: &Option<datafusion::arrow::array::Float64Array>| {
                        array.as_ref().map_or(0.0, |array| array.value(row))
                    };
                    cell.merge(count, value(&sums), value(&mins), value(&maxes));
                }
            }
        }
        stats.inspected_bytes += batch.get_array_memory_size() as u64;
    }
    Ok(())
}

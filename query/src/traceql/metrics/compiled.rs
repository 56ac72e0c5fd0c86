//! Metrics queries answered in one pass over `spans`: DataFusion scans and
//! filters,
//!
//! ```sql
//! SELECT start_time AS start_ns, <by...>, [v]
//! FROM spans_views WHERE <filter, exact>
//! ```
//!
//! over the blocks of the request's range only (no per-row time
//! condition: the fold drops rows outside the intervals),
//!
//! built with `Expr` (no query text), and each partition's rows are
//! folded into cells per interval and series as they stream
//! ([`fold`]: the interval is arithmetic, a label is looked up once
//! per distinct value and batch, a duration's bucket is its next power of
//! two, Tempo's `Log2Bucketize`). It applies when the query's pipeline is
//! one filter that DataFusion decides exactly ([`Checked::exact`]), its
//! `by()` fields and the function's input are columns or span/resource
//! attributes, and the function is not `compare()`; [`super`]
//! falls back to trace-by-trace evaluation otherwise.

mod fold;
pub(in crate::traceql) mod precomputed;

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::cast;
use datafusion::logical_expr::utils::conjunction;
use datafusion::prelude::{Expr, col, lit};
use futures::StreamExt;
use tracelake_model::schema::{any_value, col as span_col};
use tracelake_storage::SpanReader;

use super::{Accumulated, MetricsRequest};
use crate::exprs::{any_value_child, or_else, starts_within, timestamp_ns};
use crate::traceql::ast::*;
use crate::traceql::check::Checked;
use crate::traceql::search::ScanStats;
use crate::{QueryError, Result};
use fold::Partial;

/// How a `by()` label is read from its column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LabelColumn {
    /// A text column (`name`, `service_name`, `status_code`, `kind`).
    Text,
    /// An `AnyValue` struct (an attribute).
    Any,
}

/// A metrics query as one scan of `spans` folded into cells.
#[derive(Debug, Clone)]
pub(in crate::traceql) struct Plan {
    predicate: Option<Expr>,
    by: Vec<(Field, Expr, LabelColumn)>,
    /// The function's input: nanoseconds (Int64) for durations, Float64
    /// for attributes.
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
        } if name == crate::traceql::SERVICE_NAME => {
            (col(span_col::SERVICE_NAME), LabelColumn::Text)
        }
        Field::Attribute { scope, name }
            if matches!(
                scope,
                Scope::Span | Scope::Resource | Scope::Instrumentation
            ) || (*scope == Scope::Any && name != crate::traceql::SERVICE_NAME) =>
        {
            let slot = checked.slot(*scope, name)?;
            (checked.slot_expr(slot), LabelColumn::Any)
        }
        _ => return None,
    })
}

fn input_value(checked: &Checked, field: &Field) -> Option<Expr> {
    match field {
        // Int64, read as is: [`fold`] takes Int64 or Float64.
        Field::Intrinsic(Intrinsic::Duration) => Some(col(span_col::DURATION_NS)),
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
    pub(in crate::traceql) fn of(checked: &Checked, query: &MetricsQuery) -> Option<Self> {
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

    /// How each `by()` label is read, in order.
    pub(super) fn label_columns(&self) -> Vec<LabelColumn> {
        self.by.iter().map(|(_, _, kind)| *kind).collect()
    }

    /// Whether values are counted in power-of-two buckets.
    pub(super) fn bucketed(&self) -> bool {
        self.bucketed
    }

    pub(super) fn query(&self) -> &MetricsQuery {
        &self.query
    }

    /// The filter, as DataFusion decides it on `spans`.
    pub(super) fn predicate(&self) -> Option<&Expr> {
        self.predicate.as_ref()
    }

    /// How each `by()` label is read from `spans`, in order.
    pub(super) fn label_exprs(&self) -> impl Iterator<Item = &Expr> {
        self.by.iter().map(|(_, expr, _)| expr)
    }
}

/// Columns of a pass's rows (see [`frame`]).
pub(super) const START: &str = "start_ns";
pub(super) const VALUE: &str = "value";
pub(super) const DURATION: &str = "duration";
pub(super) const EXEMPLAR_TRACE: &str = "exemplar_trace";

/// The column of the `index`th `by()` label.
pub(super) fn by_column(index: usize) -> String {
    format!("by_{index}")
}

/// What one pass over `spans` reads for a [`Plan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::traceql) enum Pass {
    /// The cells: counts (and sums, minimums, maximums) per group.
    Cells,
    /// Counts of X-Ray segments stored in progress (and stored again when
    /// they complete), taken off the counts of `rate`/`count_over_time`.
    InProgress,
    /// With the minutes `[from, to)` answered by precomputed rows
    /// ([`precomputed`]): the spans outside them, and those inside
    /// starting exactly on an interval boundary, which their minute's row
    /// counts one interval late; folded in their own interval and taken
    /// off the next. In-progress segments are filtered out.
    Edges { from: i64, to: i64 },
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

/// The rows `pass` reads for `plan` and `request` (aligned), from
/// `context`'s `spans_views`: start time, labels, value.
///
/// An X-Ray segment sent in progress is stored again when it completes;
/// the in-progress copy is not counted, as trace-by-trace evaluation keeps
/// only the later copy: counts subtract them ([`Pass::InProgress`]),
/// duration buckets never hold them (duration 0), other functions filter
/// them out.
pub(in crate::traceql) async fn frame(
    context: &datafusion::prelude::SessionContext,
    plan: &Plan,
    request: &MetricsRequest,
    pass: Pass,
) -> Result<datafusion::prelude::DataFrame> {
    let mut conditions = Vec::new();
    // The cells passes read blocks of the request's range only (see
    // [`session`]) and drop rows outside its intervals themselves; an
    // exemplar pass reads one interval, and stops after a few rows.
    if let Pass::Exemplars { index } = pass {
        let from = request.start_ns + index as i64 * request.step_ns;
        conditions.push(starts_within(
            from.saturating_add(1),
            from + request.step_ns,
        ));
    }
    if let Some(predicate) = &plan.predicate {
        conditions.push(predicate.clone());
    }
    match pass {
        Pass::Cells if !plan.corrects_counts() && !plan.bucketed => {
            let [zero, flagged] = in_progress();
            conditions.push(!(zero.and(flagged)));
        }
        Pass::Edges { from, to } => {
            let mut edges =
                starts_within(request.start_ns.saturating_add(1), from.saturating_sub(1))
                    .or(starts_within(to, request.end_ns));
            let boundaries = precomputed::boundaries(request, (from, to));
            if !boundaries.is_empty() {
                let list = boundaries.into_iter().map(timestamp_ns).collect();
                edges = edges.or(col(span_col::START_TIME).in_list(list, false));
            }
            conditions.push(edges);
            let [zero, flagged] = in_progress();
            conditions.push(!(zero.and(flagged)));
        }
        Pass::InProgress => conditions.extend(in_progress()),
        _ => {}
    }
    let mut columns = vec![cast(col(span_col::START_TIME), DataType::Int64).alias(START)];
    for (index, (_, expr, _)) in plan.by.iter().enumerate() {
        columns.push(expr.clone().alias(by_column(index)));
    }
    if let Some(value) = &plan.value {
        if !plan.bucketed {
            conditions.push(value.clone().is_not_null());
        } else if let Pass::Exemplars { .. } = pass {
            // Values under 2 are not bucketed (Tempo drops them); the
            // cells passes skip them as they fold.
            conditions.push(value.clone().gt_eq(lit(2i64)));
        }
        columns.push(value.clone().alias(VALUE));
    }
    let mut frame = context.table(crate::traceql::search::SPANS_VIEWS).await?;
    if let Some(condition) = conjunction(conditions) {
        frame = frame.filter(condition)?;
    }
    match pass {
        Pass::Exemplars { .. } => {
            columns.push(col(span_col::TRACE_ID).alias(EXEMPLAR_TRACE));
            return Ok(frame.select(columns)?.limit(0, Some(EXEMPLAR_ROWS))?);
        }
        // Spans of duration 0 are counted, so the in-progress pass runs
        // only when there may be some to take off.
        Pass::Cells if plan.corrects_counts() => {
            columns.push(col(span_col::DURATION_NS).alias(DURATION));
        }
        _ => {}
    }
    Ok(frame.select(columns)?)
}

/// A session for `tenant` where compiled plans of `request` can run: its
/// `spans_views` reads only blocks that may hold spans of the request's
/// range ([`SpansTable::within`]), so the cells passes need no time
/// condition ([`fold`] drops rows outside the intervals).
pub(in crate::traceql) fn session(
    reader: Arc<dyn SpanReader>,
    tenant: &str,
    request: &MetricsRequest,
) -> Result<datafusion::prelude::SessionContext> {
    crate::traceql::search::views_session(
        reader,
        tenant,
        Some((request.start_ns.saturating_add(1), request.end_ns)),
    )
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
    let precomputed = match precomputed::Rows::of(&plan) {
        Some(rows) => precomputed::answered_minutes(&reader, tenant, &request)
            .await?
            .map(|minutes| (rows, minutes)),
        None => None,
    };
    let context = session(reader, tenant, &request)?;
    let plan = Arc::new(plan);
    let mut accumulated = Accumulated::default();
    let mut stats = ScanStats::default();
    if let Some((rows, (from, to))) = precomputed {
        rows.add(
            &context,
            &plan,
            &request,
            (from, to),
            &mut accumulated,
            &mut stats,
        )
        .await?;
        let pass = Pass::Edges { from, to };
        run_pass(&context, &plan, request, pass, &mut accumulated, &mut stats).await?;
        // A series whose only spans started on the range's start.
        accumulated.drop_uncounted();
    } else {
        let zero_durations = run_pass(
            &context,
            &plan,
            request,
            Pass::Cells,
            &mut accumulated,
            &mut stats,
        )
        .await?;
        if plan.corrects_counts() && zero_durations > 0 {
            run_pass(
                &context,
                &plan,
                request,
                Pass::InProgress,
                &mut accumulated,
                &mut stats,
            )
            .await?;
        }
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
    // The exemplar passes are small (one interval each, a few rows) and
    // wait more than they compute: run together, added in interval order.
    let passes = (0..sampled).map(|slice| {
        // Spread over the intervals that hold spans.
        let index = with_spans[(2 * slice + 1) * with_spans.len() / (2 * sampled)];
        pass_partials(&context, &plan, request, Pass::Exemplars { index })
    });
    for (pass, partials) in futures::future::try_join_all(passes).await? {
        for partial in partials {
            partial.add_to(&plan, &request, pass, &mut accumulated, &mut stats);
        }
    }
    Ok((accumulated, stats))
}

/// Runs one pass of `plan` and adds what it read to `accumulated`.
/// Returns how many spans of duration 0 the pass saw.
async fn run_pass(
    context: &datafusion::prelude::SessionContext,
    plan: &Arc<Plan>,
    request: MetricsRequest,
    pass: Pass,
    accumulated: &mut Accumulated,
    stats: &mut ScanStats,
) -> Result<u64> {
    let (_, partials) = pass_partials(context, plan, request, pass).await?;
    let mut zero_durations = 0;
    for partial in partials {
        zero_durations += partial.zero_durations;
        partial.add_to(plan, &request, pass, accumulated, stats);
    }
    Ok(zero_durations)
}

/// Runs one pass of `plan`, each partition of the scan folded as its
/// batches stream ([`Partial`]); the partials in partition order, so
/// exemplars are chosen the same way every time.
async fn pass_partials(
    context: &datafusion::prelude::SessionContext,
    plan: &Arc<Plan>,
    request: MetricsRequest,
    pass: Pass,
) -> Result<(Pass, Vec<Partial>)> {
    let streams = frame(context, plan, &request, pass)
        .await?
        .execute_stream_partitioned()
        .await?;
    // Folding a batch is a loop over its rows, shorter than decoding it:
    // it runs beside DataFusion's own operators on the runtime, one task
    // per partition.
    let mut tasks = tokio::task::JoinSet::new();
    for (order, mut stream) in streams.into_iter().enumerate() {
        let plan = Arc::clone(plan);
        tasks.spawn(async move {
            let mut partial = Partial::default();
            while let Some(batch) = stream.next().await {
                partial.fold(&batch?, &plan, &request, pass)?;
            }
            Ok::<_, QueryError>((order, partial))
        });
    }
    let mut partials = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let joined = joined.map_err(|error| {
            QueryError::DataFusion(datafusion::error::DataFusionError::External(Box::new(
                error,
            )))
        })?;
        partials.push(joined?);
    }
    partials.sort_by_key(|(order, _)| *order);
    Ok((
        pass,
        partials.into_iter().map(|(_, partial)| partial).collect(),
    ))
}

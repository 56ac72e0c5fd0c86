//! `rate()` and `count_over_time()` answered from the precomputed
//! `span_metrics` rows where they are exact: the query's filter and its
//! `by()` read only what a row keeps of a span (service, span name, kind,
//! status).
//!
//! A row counts the spans starting in one minute, `[m, m + 1min)`, and an
//! interval of TraceQL metrics holds the spans starting in `(a, b]`. The
//! rows are used for the whole minutes of the request before the
//! aggregation's watermark (every row of those minutes is written), and
//! only when every interval boundary among those minutes is a minute's
//! start (steps of whole minutes from an aligned start, or one interval).
//! Then a row's count belongs to the interval holding `m + 1ns`, except for
//! spans starting exactly on a boundary `b = m`: those belong to the
//! interval before. One pass over the spans ([`Pass::Edges`]) reads what
//! the rows do not answer:
//!
//! ```text
//!  (start ···· from)[from ········· minutes ·········· to)[to ···· end]
//!     spans             rows + spans starting on a boundary   spans
//! ```
//!
//! and [`super::fold`] counts a span on a boundary in its own interval and
//! takes it off the next, where its row counted it. X-Ray segments stored
//! in progress are neither in the rows nor counted by that pass. Minutes
//! after the watermark, partial minutes and every other query read the
//! spans ([`super`]).
//!
//! [`Pass::Edges`]: super::Pass::Edges

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{DataType, Int64Type, TimestampNanosecondType};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::functions_aggregate::expr_fn::sum;
use datafusion::logical_expr::cast;
use datafusion::prelude::{Expr, SessionContext, col, lit};
use tracelake_model::derived::{NANOS_PER_MINUTE, col as row_col, minute_of};
use tracelake_model::schema::{col as span_col, span_schema};
use tracelake_storage::DerivedTable;
use tracelake_storage::{SpanFilter, SpanReader};

use super::{Plan, by_column};
use crate::exprs::timestamp_ns;
use crate::traceql::ast::MetricsFunction;
use crate::traceql::eval::AttrValue;
use crate::traceql::metrics::{Accumulated, MAX_CELLS, MAX_SERIES, MetricsRequest, series_labels};
use crate::traceql::search::ScanStats;
use crate::{QueryError, Result};

/// The spans columns a `span_metrics` row keeps, and its column for each.
const KEPT: [(&str, &str); 4] = [
    (span_col::SERVICE_NAME, row_col::SERVICE),
    (span_col::NAME, row_col::SPAN_NAME),
    (span_col::KIND, row_col::SPAN_KIND),
    (span_col::STATUS_CODE, row_col::STATUS_CODE),
];

fn row_column(span_column: &str) -> Option<&'static str> {
    KEPT.iter()
        .find(|(spans, _)| *spans == span_column)
        .map(|(_, row)| *row)
}

/// A span condition over the columns a row keeps, rewritten to the row's
/// columns; `None` when it reads anything else.
fn on_rows(condition: &Expr) -> Option<Expr> {
    let mut foreign = false;
    let rewritten = condition
        .clone()
        .transform(|node| {
            if let Expr::Column(column) = &node {
                match row_column(&column.name) {
                    Some(name) => return Ok(Transformed::yes(col(name))),
                    None => foreign = true,
                }
            }
            Ok(Transformed::no(node))
        })
        .ok()?
        .data;
    (!foreign).then_some(rewritten)
}

/// The column of a row's interval.
const INTERVAL: &str = "interval";

/// A compiled plan the rows answer.
#[derive(Debug)]
pub(in crate::traceql) struct Rows {
    /// The plan's filter on the rows' columns.
    predicate: Option<Expr>,
    /// The rows' column of each `by()` label, in order.
    labels: Vec<&'static str>,
}

impl Rows {
    /// How the rows answer `plan`; `None` when they do not count what it
    /// asks for.
    pub(in crate::traceql) fn of(plan: &Plan) -> Option<Self> {
        if !matches!(
            plan.query().function,
            MetricsFunction::Rate | MetricsFunction::CountOverTime
        ) {
            return None;
        }
        let labels = plan
            .label_exprs()
            .map(|expr| match expr {
                Expr::Column(column) => row_column(&column.name),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?;
        let predicate = match plan.predicate() {
            Some(condition) => Some(on_rows(condition)?),
            None => None,
        };
        Some(Self { predicate, labels })
    }
}

/// The minutes `[from, to)` of `request` the rows answer, given the
/// aggregation's `watermark`; `None` when there are none or an interval
/// boundary among them is not a minute's start.
fn minutes(request: &MetricsRequest, watermark_ns: i64) -> Option<(i64, i64)> {
    let minute_steps = request.step_ns > 0
        && request.step_ns % NANOS_PER_MINUTE == 0
        && request.start_ns.rem_euclid(NANOS_PER_MINUTE) == 0;
    if !minute_steps && request.intervals() != 1 {
        return None;
    }
    let from = minute_of(request.start_ns.checked_add(NANOS_PER_MINUTE - 1)?);
    // A minute is whole in the range when its last nanosecond is.
    let to = minute_of(request.end_ns.checked_add(1)?).min(minute_of(watermark_ns));
    (from < to).then_some((from, to))
}

/// The minutes whose rows answer `request` for `tenant`: [`minutes`]
/// before the aggregation's watermark, then [`settled`] (a scan of the
/// head's start times, off the reactor).
pub(in crate::traceql) async fn answered_minutes(
    reader: &Arc<dyn SpanReader>,
    tenant: &str,
    request: &MetricsRequest,
) -> Result<Option<(i64, i64)>> {
    let Some(minutes) = minutes(request, reader.derived_complete_before_ns()) else {
        return Ok(None);
    };
    let reader = Arc::clone(reader);
    let tenant = tenant.to_string();
    tokio::task::spawn_blocking(move || settled(reader.as_ref(), &tenant, minutes))
        .await
        .map_err(|error| {
            QueryError::DataFusion(datafusion::error::DataFusionError::External(Box::new(
                error,
            )))
        })?
}

/// The minutes of `[from, to)` whose rows are settled: those before the
/// minute of the earliest span of the range still in the head.
///
/// The aggregation counts a batch just after storage holds it and writes
/// its rows at its next tick, so a span that arrives after its minute
/// closed (an X-Ray segment completing late, a backlog) is queryable
/// before its row is written, though its minute is before the watermark.
/// Such a span sits in the head; the minutes from its own on are read
/// from the spans. On-time spans in the head only hold back the minutes
/// since the last flush, which are in memory and cheap to read.
fn settled(
    reader: &dyn SpanReader,
    tenant: &str,
    (from, to): (i64, i64),
) -> Result<Option<(i64, i64)>> {
    let filter = SpanFilter {
        time_range_ns: Some((from, to.saturating_sub(1))),
        trace_ids: None,
    };
    let arrow = |error: datafusion::arrow::error::ArrowError| QueryError::DataFusion(error.into());
    let start_column = span_schema()
        .index_of(span_col::START_TIME)
        .map_err(arrow)?;
    let mut earliest = to;
    for rows in reader.snapshot(tenant, &filter).head {
        let starts = rows.project(Some(&[start_column])).map_err(arrow)?;
        let starts = starts
            .column(0)
            .as_primitive_opt::<TimestampNanosecondType>()
            .ok_or_else(|| {
                QueryError::DataFusion(datafusion::error::DataFusionError::Internal(
                    "head start_time is not a nanosecond timestamp".into(),
                ))
            })?;
        for start in starts.iter().flatten() {
            if (from..earliest).contains(&start) {
                earliest = start;
            }
        }
    }
    let to = minute_of(earliest);
    Ok((from < to).then_some((from, to)))
}

/// The interval boundaries of `request` in `[from, to)` that start a
/// minute: the spans starting there are counted by their minute's row one
/// interval late.
pub(super) fn boundaries(request: &MetricsRequest, (from, to): (i64, i64)) -> Vec<i64> {
    (0..=request.intervals() as i64)
        .filter_map(|index| {
            request
                .start_ns
                .checked_add(index.checked_mul(request.step_ns)?)
        })
        .filter(|at| (from..to).contains(at) && at.rem_euclid(NANOS_PER_MINUTE) == 0)
        .collect()
}

impl Rows {
    /// Adds the counts of the rows of `minutes` to `accumulated`, a row in
    /// the interval of its minute's first nanosecond past the start.
    pub(super) async fn add(
        &self,
        context: &SessionContext,
        plan: &Plan,
        request: &MetricsRequest,
        (from, to): (i64, i64),
        accumulated: &mut Accumulated,
        stats: &mut ScanStats,
    ) -> Result<()> {
        let mut frame = context
            .table(DerivedTable::SpanMetrics.name())
            .await?
            .filter(
                col(row_col::MINUTE)
                    .gt_eq(timestamp_ns(from))
                    .and(col(row_col::MINUTE).lt(timestamp_ns(to))),
            )?;
        if let Some(predicate) = &self.predicate {
            frame = frame.filter(predicate.clone())?;
        }
        // Summed per interval and series by DataFusion, so a long range
        // answers as many rows as cells. A row's minute `m` is in the
        // interval holding `m + 1ns`: `(m - start) / step`.
        let interval = (cast(col(row_col::MINUTE), DataType::Int64) - lit(request.start_ns))
            / lit(request.step_ns.max(1));
        let mut group = vec![interval.alias(INTERVAL)];
        for (index, label) in self.labels.iter().enumerate() {
            group.push(col(*label).alias(by_column(index)));
        }
        let batches = frame
            .aggregate(group, vec![sum(col(row_col::CALLS)).alias(row_col::CALLS)])?
            .collect()
            .await?;

        let intervals = request.intervals();
        let limit = MAX_SERIES.min(MAX_CELLS / intervals.max(1));
        // Counts per series (label texts) and interval.
        let mut counts: HashMap<Vec<String>, Vec<u64>> = HashMap::new();
        for batch in &batches {
            let corrupt = |what: &str| {
                QueryError::DataFusion(datafusion::error::DataFusionError::Internal(format!(
                    "span_metrics column {what} missing or mistyped"
                )))
            };
            let indexes = batch
                .column_by_name(INTERVAL)
                .and_then(|array| array.as_primitive_opt::<Int64Type>())
                .ok_or_else(|| corrupt(INTERVAL))?;
            let calls = batch
                .column_by_name(row_col::CALLS)
                .and_then(|array| array.as_primitive_opt::<Int64Type>())
                .ok_or_else(|| corrupt(row_col::CALLS))?;
            let labels = (0..self.labels.len())
                .map(|index| {
                    batch
                        .column_by_name(&by_column(index))
                        .and_then(|array| array.as_string_opt::<i32>())
                        .ok_or_else(|| corrupt(self.labels[index]))
                })
                .collect::<Result<Vec<_>>>()?;
            for row in 0..batch.num_rows() {
                let Some(interval) = usize::try_from(indexes.value(row))
                    .ok()
                    .filter(|index| *index < intervals)
                else {
                    continue;
                };
                let Ok(count) = u64::try_from(calls.value(row)) else {
                    continue;
                };
                let key: Vec<String> = labels
                    .iter()
                    .map(|texts| texts.value(row).to_string())
                    .collect();
                // Bounded as the spans' cells are: past the limit the
                // query is refused ([`Accumulated::overflowed`]).
                if counts.len() >= limit && !counts.contains_key(&key) {
                    accumulated.overflowed = true;
                    continue;
                }
                counts.entry(key).or_insert_with(|| vec![0; intervals])[interval] += count;
            }
        }
        let query = plan.query();
        let mut keys: Vec<Vec<String>> = counts.keys().cloned().collect();
        keys.sort();
        for key in keys {
            let series = &counts[&key];
            let values = key.into_iter().map(|text| Some(AttrValue::Text(text)));
            let labels = series_labels(&query.by, values.collect(), &query.function);
            let Some(cells) = accumulated.cells(labels, intervals) else {
                continue;
            };
            for (cell, count) in cells.iter_mut().zip(series) {
                cell.merge(*count as f64, 0.0, 0.0, 0.0);
                stats.inspected_spans += count;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = NANOS_PER_MINUTE;
    const BASE: i64 = 1_795_960_800_000_000_000;

    fn request(start_ns: i64, end_ns: i64, step_ns: i64) -> MetricsRequest {
        MetricsRequest {
            start_ns,
            end_ns,
            step_ns,
            exemplars: 0,
            instant: false,
        }
    }

    #[test]
    fn minutes_are_whole_before_the_watermark_with_boundaries_on_minutes() {
        let hour = request(BASE, BASE + 60 * MINUTE, MINUTE);
        assert_eq!(minutes(&hour, i64::MAX), Some((BASE, BASE + 60 * MINUTE)));
        assert_eq!(
            minutes(&hour, BASE + 30 * MINUTE + 5),
            Some((BASE, BASE + 30 * MINUTE))
        );
        assert_eq!(minutes(&hour, BASE), None);
        // 15 s steps put boundaries inside minutes.
        assert_eq!(
            minutes(&request(BASE, BASE + 60 * MINUTE, 15_000_000_000), i64::MAX),
            None
        );
        // A start off the minute puts every boundary off it.
        assert_eq!(
            minutes(&request(BASE + 1, BASE + 1 + 60 * MINUTE, MINUTE), i64::MAX),
            None
        );
        // One interval: the whole minutes inside it, whatever its edges.
        let instant = request(BASE + 10, BASE + 5 * MINUTE + 10, 5 * MINUTE);
        assert_eq!(
            minutes(&instant, i64::MAX),
            Some((BASE + MINUTE, BASE + 5 * MINUTE))
        );
        // The last nanosecond of a minute ends the range: that minute is whole.
        let instant = request(BASE, BASE + 2 * MINUTE - 1, 2 * MINUTE - 1);
        assert_eq!(minutes(&instant, i64::MAX), Some((BASE, BASE + 2 * MINUTE)));
    }

    #[test]
    fn boundaries_are_the_minute_starts_among_the_interval_edges() {
        let hour = request(BASE, BASE + 60 * MINUTE, 5 * MINUTE);
        let found = boundaries(&hour, (BASE, BASE + 30 * MINUTE));
        assert_eq!(
            found,
            (0..6).map(|k| BASE + k * 5 * MINUTE).collect::<Vec<_>>()
        );
        let instant = request(BASE, BASE + 2 * MINUTE - 1, 2 * MINUTE - 1);
        assert_eq!(boundaries(&instant, (BASE, BASE + 2 * MINUTE)), vec![BASE]);
        let instant = request(BASE + 10, BASE + 5 * MINUTE + 10, 5 * MINUTE);
        assert_eq!(
            boundaries(&instant, (BASE + MINUTE, BASE + 5 * MINUTE)),
            Vec::<i64>::new()
        );
    }

    #[test]
    fn only_conditions_on_kept_columns_move_to_the_rows() {
        let kept = col(span_col::SERVICE_NAME)
            .eq(lit("api"))
            .and(!col(span_col::STATUS_CODE).eq(lit("error")));
        assert_eq!(
            on_rows(&kept),
            Some(
                col(row_col::SERVICE)
                    .eq(lit("api"))
                    .and(!col(row_col::STATUS_CODE).eq(lit("error")))
            )
        );
        let foreign = col(span_col::NAME)
            .eq(lit("GET"))
            .or(col(span_col::DURATION_NS).gt(lit(5i64)));
        assert_eq!(on_rows(&foreign), None);
    }
}

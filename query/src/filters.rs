//! Reads a [`SpanFilter`] out of the predicates DataFusion pushes into a
//! scan, so storage can prune blocks by time range and trace id.
//!
//! Only conjuncts of the shapes `column <op> literal` and
//! `trace_id IN (literal, ...)` are understood; every
//! other predicate is left to DataFusion (pushdown is `Inexact`), so
//! missing a shape costs speed, never correctness. Bounds are mapped to the
//! overlap range storage prunes with: a span matching `start_time >= x`
//! ends at or after `x`, one matching `end_time <= y` starts at or before `y`.

use datafusion::common::ScalarValue;
use datafusion::logical_expr::expr::InList;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};
use tracelake_model::TraceId;
use tracelake_model::schema::col;
use tracelake_storage::SpanFilter;

/// The filter implied by the conjunction of `filters`.
pub fn span_filter(filters: &[Expr]) -> SpanFilter {
    let mut filter = SpanFilter {
        time_range_ns: time_range(filters, &[col::START_TIME, col::END_TIME]),
        trace_ids: None,
    };
    let mut narrow = |trace_ids: Vec<TraceId>| {
        // Two conjuncts on the trace id: the spans must satisfy both.
        filter.trace_ids = Some(match filter.trace_ids.take() {
            None => trace_ids,
            Some(known) => known
                .into_iter()
                .filter(|id| trace_ids.contains(id))
                .collect(),
        });
    };
    for (column, op, literal) in comparisons(filters) {
        if column == col::TRACE_ID
            && op == Operator::Eq
            && let Some(trace_id) = trace_id_literal(literal)
        {
            narrow(vec![trace_id]);
        }
    }
    for expr in conjuncts(filters) {
        if let Expr::InList(InList {
            expr,
            list,
            negated: false,
        }) = expr
            && matches!(expr.as_ref(), Expr::Column(column) if column.name == col::TRACE_ID)
        {
            let ids: Option<Vec<TraceId>> = list
                .iter()
                .map(|item| match item {
                    Expr::Literal(value, _) => trace_id_literal(value),
                    _ => None,
                })
                .collect();
            if let Some(ids) = ids {
                narrow(ids);
            }
        }
    }
    filter
}

/// The inclusive nanosecond range the conjunction of `filters` bounds any
/// of `time_columns` to, if it bounds them at all.
pub fn time_range(filters: &[Expr], time_columns: &[&str]) -> Option<(i64, i64)> {
    let mut from = i64::MIN;
    let mut to = i64::MAX;
    for (column, op, literal) in comparisons(filters) {
        if !time_columns.contains(&column) {
            continue;
        }
        let Some(nanos) = timestamp_nanos(literal) else {
            continue;
        };
        match op {
            Operator::Gt | Operator::GtEq => from = from.max(nanos),
            Operator::Lt | Operator::LtEq => to = to.min(nanos),
            Operator::Eq => {
                from = from.max(nanos);
                to = to.min(nanos);
            }
            _ => {}
        }
    }
    (from != i64::MIN || to != i64::MAX).then_some((from, to))
}

fn conjuncts(filters: &[Expr]) -> Vec<&Expr> {
    let mut conjuncts = Vec::new();
    for expr in filters {
        split_and(expr, &mut conjuncts);
    }
    conjuncts
}

/// The conjuncts of `filters` shaped `column <op> literal` (either side).
fn comparisons(filters: &[Expr]) -> Vec<(&str, Operator, &ScalarValue)> {
    let mut found = Vec::new();
    for expr in conjuncts(filters) {
        let Expr::BinaryExpr(BinaryExpr { left, op, right }) = expr else {
            continue;
        };
        match (left.as_ref(), right.as_ref()) {
            (Expr::Column(column), Expr::Literal(value, _)) => {
                found.push((column.name.as_str(), *op, value));
            }
            (Expr::Literal(value, _), Expr::Column(column)) => {
                if let Some(swapped) = op.swap() {
                    found.push((column.name.as_str(), swapped, value));
                }
            }
            _ => {}
        }
    }
    found
}

fn split_and<'a>(expr: &'a Expr, out: &mut Vec<&'a Expr>) {
    match expr {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::And,
            right,
        }) => {
            split_and(left, out);
            split_and(right, out);
        }
        other => out.push(other),
    }
}

fn trace_id_literal(value: &ScalarValue) -> Option<TraceId> {
    match value {
        ScalarValue::FixedSizeBinary(16, Some(bytes))
        | ScalarValue::Binary(Some(bytes))
        | ScalarValue::LargeBinary(Some(bytes)) => TraceId::try_from(bytes.as_slice()).ok(),
        _ => None,
    }
}

fn timestamp_nanos(value: &ScalarValue) -> Option<i64> {
    match value {
        ScalarValue::TimestampNanosecond(Some(nanos), _) => Some(*nanos),
        ScalarValue::TimestampMicrosecond(Some(micros), _) => micros.checked_mul(1_000),
        ScalarValue::TimestampMillisecond(Some(millis), _) => millis.checked_mul(1_000_000),
        ScalarValue::TimestampSecond(Some(seconds), _) => seconds.checked_mul(1_000_000_000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::{col as column, lit};

    use super::*;

    fn ts(nanos: i64) -> Expr {
        lit(ScalarValue::TimestampNanosecond(
            Some(nanos),
            Some("UTC".into()),
        ))
    }

    #[test]
    fn extracts_trace_id_and_time_bounds() {
        let trace_id = TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap();
        let trace_literal = lit(ScalarValue::FixedSizeBinary(
            16,
            Some(trace_id.as_bytes().to_vec()),
        ));
        let cases: Vec<(Vec<Expr>, SpanFilter)> = vec![
            (vec![], SpanFilter::default()),
            (
                vec![column(col::TRACE_ID).eq(trace_literal.clone())],
                SpanFilter {
                    trace_ids: Some(vec![trace_id]),
                    time_range_ns: None,
                },
            ),
            (
                vec![column(col::TRACE_ID).in_list(vec![trace_literal.clone()], false)],
                SpanFilter {
                    trace_ids: Some(vec![trace_id]),
                    time_range_ns: None,
                },
            ),
            (
                vec![
                    column(col::START_TIME)
                        .gt_eq(ts(10))
                        .and(column(col::END_TIME).lt_eq(ts(20))),
                ],
                SpanFilter {
                    trace_ids: None,
                    time_range_ns: Some((10, 20)),
                },
            ),
            (
                vec![
                    ts(30).gt(column(col::START_TIME)),
                    trace_literal.eq(column(col::TRACE_ID)),
                ],
                SpanFilter {
                    trace_ids: Some(vec![trace_id]),
                    time_range_ns: Some((i64::MIN, 30)),
                },
            ),
            (
                // An OR is not a conjunct: no pruning, still correct.
                vec![
                    column(col::START_TIME)
                        .gt(ts(10))
                        .or(column(col::NAME).eq(lit("x"))),
                ],
                SpanFilter::default(),
            ),
        ];
        for (filters, expected) in cases {
            assert_eq!(span_filter(&filters), expected, "{filters:?}");
        }
    }
}

//! EXPLAIN for a TraceQL query: which evaluation runs, then DataFusion's
//! plan with what each scan read and pruned.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray};
use tracelake_storage::SpanReader;

use super::check::{Checked, metrics_queries};
use super::metrics::compiled;
use super::metrics::{MetricsRequest, default_step_ns};
use super::search::{candidates_after, window_of};
use crate::Result;

/// How a query runs over `range_ns`, for people: which evaluation, then
/// DataFusion's plan with what each scan read and pruned (`EXPLAIN
/// ANALYZE`; the plan runs once).
pub async fn explain(
    reader: Arc<dyn SpanReader>,
    tenant: &str,
    checked: &Checked,
    range_ns: (i64, i64),
) -> Result<String> {
    let request = MetricsRequest {
        start_ns: range_ns.0,
        end_ns: range_ns.1,
        step_ns: default_step_ns(range_ns.0, range_ns.1),
        exemplars: 0,
        instant: false,
    }
    .aligned();
    let single_plan = checked
        .metrics()
        .and_then(|expr| match metrics_queries(expr).as_slice() {
            [only] => compiled::Plan::of(checked, only),
            _ => None,
        });
    let precomputed = match &single_plan {
        Some(plan) if compiled::precomputed::Rows::of(plan).is_some() => {
            compiled::precomputed::answered_minutes(&reader, tenant, &request).await?
        }
        _ => None,
    };
    let context = compiled::session(reader, tenant, &request)?;
    let (how, frame) = match (checked.metrics(), single_plan) {
        (_, Some(plan)) => match precomputed {
            Some((from, to)) => (
                "metrics: the precomputed span_metrics rows of the whole minutes before the aggregation's watermark, then one scan of spans (the filter decided by DataFusion) for the rest of the range and the spans starting on interval boundaries, folded into cells per interval and series as they stream",
                compiled::frame(
                    &context,
                    &plan,
                    &request,
                    compiled::Pass::Edges { from, to },
                )
                .await?,
            ),
            None => (
                "metrics: one scan of spans (the filter decided by DataFusion), its rows folded into cells per interval and series as they stream",
                compiled::frame(&context, &plan, &request, compiled::Pass::Cells).await?,
            ),
        },
        (Some(_), None) => (
            "metrics: candidate traces from the plan below, then each trace evaluated in memory",
            candidates_after(&context, checked, &window_of(range_ns), None).await?,
        ),
        (None, _) => (
            "search: candidate traces from the plan below (newest first), then each evaluated in memory until the limit",
            candidates_after(&context, checked, &window_of(range_ns), None).await?,
        ),
    };
    let batches = frame.explain(false, true)?.collect().await?;
    let mut out = format!("{how}\n");
    for batch in &batches {
        let Some(plans) = batch.column(1).as_string_opt::<i32>() else {
            continue;
        };
        for row in 0..plans.len() {
            out.push_str(plans.value(row));
            out.push('\n');
        }
    }
    Ok(out)
}

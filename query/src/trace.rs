//! Trace by id.

use std::sync::Arc;

use datafusion::common::ScalarValue;
use datafusion::prelude::{col, lit};
use opentelemetry_proto::tonic::trace::v1::TracesData;
use tracelake_storage::otlp::batches_to_traces_data;
use tracelake_storage::schema::col as column;
use tracelake_storage::{SpanReader, TraceId};

use crate::{Result, session_for_tenant};

/// Every span of `trace_id` for `tenant`, as OTLP, ordered by start time;
/// `None` when no span is stored. `time_range_ns` (inclusive) only prunes.
pub async fn trace_by_id(
    reader: Arc<dyn SpanReader>,
    tenant: &str,
    trace_id: TraceId,
    time_range_ns: Option<(i64, i64)>,
) -> Result<Option<TracesData>> {
    let context = session_for_tenant(reader, tenant)?;
    let id_literal = lit(ScalarValue::FixedSizeBinary(
        TraceId::LEN as i32,
        Some(trace_id.as_bytes().to_vec()),
    ));
    let mut frame = context
        .table("spans")
        .await?
        .filter(col(column::TRACE_ID).eq(id_literal))?;
    if let Some((from, to)) = time_range_ns {
        let timestamp = |nanos: i64| {
            lit(ScalarValue::TimestampNanosecond(
                Some(nanos),
                Some("UTC".into()),
            ))
        };
        frame = frame.filter(
            col(column::END_TIME)
                .gt_eq(timestamp(from))
                .and(col(column::START_TIME).lt_eq(timestamp(to))),
        )?;
    }
    let batches = frame
        .sort(vec![col(column::START_TIME).sort(true, false)])?
        .collect()
        .await?;
    if batches.iter().all(|batch| batch.num_rows() == 0) {
        return Ok(None);
    }
    Ok(Some(batches_to_traces_data(&batches)?))
}

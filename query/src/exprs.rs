//! The pieces internal queries are built from, as DataFusion expressions.
//!
//! Text from a request (a tag name, a service, a TraceQL literal, a Jaeger
//! tag) reaches a query only as a literal value (`lit`) or as a map key
//! (`get_field`): it is data, never SQL text, so no quoting can go wrong.
//! The one place a request's own SQL is run is `/v1/sql` ([`crate::sql`]),
//! and that is read-only by construction.

use datafusion::common::ScalarValue;
use datafusion::functions::core::expr_fn::get_field;
use datafusion::prelude::{Expr, col, lit};
use tracelake_model::schema::col as span_col;

/// A UTC nanosecond timestamp literal, the type of `start_time`.
pub(crate) fn timestamp_ns(nanos: i64) -> Expr {
    lit(ScalarValue::TimestampNanosecond(
        Some(nanos),
        Some("UTC".into()),
    ))
}

/// Spans starting in the inclusive nanosecond range `[from_ns, to_ns]`:
/// the shape the spans table prunes blocks by.
pub(crate) fn starts_within(from_ns: i64, to_ns: i64) -> Expr {
    col(span_col::START_TIME)
        .gt_eq(timestamp_ns(from_ns))
        .and(col(span_col::START_TIME).lt_eq(timestamp_ns(to_ns)))
}

/// The value under `key` of the map column `map` (`attributes`,
/// `resource_attributes`): an `AnyValue` struct, NULL when absent.
pub(crate) fn map_value(map: &str, key: &str) -> Expr {
    get_field(col(map), key)
}

/// One child (`str`, `int`, `double`, `bool`, `json`) of an `AnyValue`.
pub(crate) fn any_value_child(value: Expr, child: &str) -> Expr {
    get_field(value, child)
}

/// Whether a span is an X-Ray segment stored while still in progress
/// (stored again when it completes): its `aws.xray.inprogress` flag,
/// false when absent.
pub(crate) fn xray_in_progress() -> Expr {
    or_else(
        any_value_child(
            map_value(
                span_col::ATTRIBUTES,
                tracelake_model::xray::attr::IN_PROGRESS,
            ),
            tracelake_model::schema::any_value::BOOL,
        ),
        lit(false),
    )
}

/// `value` when not NULL, else `fallback`.
pub(crate) fn or_else(value: Expr, fallback: Expr) -> Expr {
    datafusion::functions::expr_fn::coalesce(vec![value, fallback])
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Array, AsArray, MapBuilder, RecordBatch, StringBuilder};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::prelude::SessionContext;

    use super::*;

    /// Keys that would break out of a quoted SQL string are looked up as
    /// the keys they are.
    #[tokio::test]
    async fn map_keys_are_data() {
        let keys = [
            "it's",
            "say \"hi\"",
            "back\\slash",
            "x{window}",
            "}",
            "; DROP TABLE spans; --",
        ];
        let mut builder = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
        for key in keys {
            builder.keys().append_value(key);
            builder.values().append_value(format!("value of {key}"));
        }
        builder.append(true).unwrap();
        let map = builder.finish();
        let schema = Schema::new(vec![Field::new("m", map.data_type().clone(), true)]);
        let batch = RecordBatch::try_new(Arc::new(schema), vec![Arc::new(map)]).unwrap();
        let context = SessionContext::new();
        context.register_batch("t", batch).unwrap();
        for key in keys {
            let frame = context
                .table("t")
                .await
                .unwrap()
                .select(vec![map_value("m", key).alias("v")])
                .unwrap();
            let batches = frame.collect().await.unwrap();
            let values = batches[0].column(0);
            assert_eq!(values.data_type(), &DataType::Utf8, "{key}");
            assert_eq!(
                values.as_string::<i32>().value(0),
                format!("value of {key}")
            );
        }
    }
}

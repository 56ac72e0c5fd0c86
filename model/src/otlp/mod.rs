//! Conversions between OTLP spans and the span table ([`crate::schema`]).
//!
//! ```text
//!  ExportTraceServiceRequest --validate--> RecordBatch (one row per span)
//!                                              |
//!  TracesData (grouped by resource, scope) <---+  (trace by id)
//! ```
//!
//! Ingest validates every span on its own: a span with a bad id or time is
//! rejected with a reason while the good spans of the same request are kept.
//! The read side regroups rows by resource and scope, so a trace read back
//! has the same shape the SDK sent.

mod from_arrow;
mod to_arrow;

pub use crate::attributes::find_str;
pub use from_arrow::batches_to_traces_data;

/// Row `row` of an attribute map column (see [`crate::schema`]) as OTLP
/// key-values.
pub fn attributes_at(
    map: &datafusion::arrow::array::MapArray,
    row: usize,
) -> Vec<opentelemetry_proto::tonic::common::v1::KeyValue> {
    crate::attributes::read_attributes(map, row)
}
pub use to_arrow::{
    ConvertedSpans, SpanRejection, http_method, http_status, http_url, resource_spans_to_batch,
    span_xray_flags, xray_origin,
};

use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

/// The span kind as stored in the `kind` column.
pub fn kind_to_str(kind: i32) -> &'static str {
    match SpanKind::try_from(kind) {
        Ok(SpanKind::Internal) => "internal",
        Ok(SpanKind::Server) => "server",
        Ok(SpanKind::Client) => "client",
        Ok(SpanKind::Producer) => "producer",
        Ok(SpanKind::Consumer) => "consumer",
        Ok(SpanKind::Unspecified) | Err(_) => "unspecified",
    }
}

/// The OTLP span kind of a `kind` column value.
pub fn kind_from_str(kind: &str) -> SpanKind {
    match kind {
        "internal" => SpanKind::Internal,
        "server" => SpanKind::Server,
        "client" => SpanKind::Client,
        "producer" => SpanKind::Producer,
        "consumer" => SpanKind::Consumer,
        _ => SpanKind::Unspecified,
    }
}

/// The status as stored in the `status_code` column.
pub fn status_to_str(code: i32) -> &'static str {
    match code {
        1 => "ok",
        2 => "error",
        _ => "unset",
    }
}

/// The OTLP status code of a `status_code` column value.
pub fn status_from_str(code: &str) -> i32 {
    match code {
        "ok" => 1,
        "error" => 2,
        _ => 0,
    }
}

//! X-Ray filter expressions: parsing ([`parse`]), evaluation against a
//! trace ([`TraceView::matches`]), and loading the traces of a window.
//!
//! A window's traces are the traces with a span starting in it; each is
//! loaded whole (spans up to [`TRACE_REACH_NS`] outside the window
//! included), then the filter runs on it in memory.

mod eval;
mod parse;

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, ListArray, MapArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{Int32Type, TimestampNanosecondType};
use datafusion::logical_expr::JoinType;
use datafusion::prelude::col;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value::Value};
use tracelake_model::derived::span_facts;
use tracelake_model::otlp::attributes_at;
use tracelake_model::schema::col as span_col;
use tracelake_model::xray;
use tracelake_storage::SpanReader;

pub use eval::{SpanView, TraceView};
pub use parse::{
    Comparison, Filter, FilterError, Keyword, Literal, MAX_FILTER_CHARS, NumberField, TextField,
    TextOp, parse,
};

use crate::exprs::starts_within;
use crate::{QueryError, Result, session_for_tenant};

/// How far outside the window a trace's other spans are looked for.
pub const TRACE_REACH_NS: i64 = 3_600_000_000_000;

/// Every trace with a span starting in `[from_ns, to_ns]`, whole.
pub async fn traces_in_window(
    reader: Arc<dyn SpanReader>,
    tenant: &str,
    (from_ns, to_ns): (i64, i64),
) -> Result<Vec<TraceView>> {
    let context = session_for_tenant(reader, tenant)?;
    const WINDOW_TRACE: &str = "window_trace_id";
    let in_window = context
        .table("spans")
        .await?
        .filter(starts_within(from_ns, to_ns))?
        .select(vec![col(span_col::TRACE_ID).alias(WINDOW_TRACE)])?
        .distinct()?;
    let batches = context
        .table("spans")
        .await?
        .filter(starts_within(
            from_ns.saturating_sub(TRACE_REACH_NS),
            to_ns.saturating_add(TRACE_REACH_NS),
        ))?
        .join(
            in_window,
            JoinType::LeftSemi,
            &[span_col::TRACE_ID],
            &[WINDOW_TRACE],
            None,
        )?
        .collect()
        .await?;
    crate::off_reactor(move || {
        let mut by_trace: HashMap<[u8; 16], Vec<SpanView>> = HashMap::new();
        for batch in &batches {
            for span in span_views(batch)? {
                by_trace.entry(span.facts.trace_id).or_default().push(span);
            }
        }
        Ok(by_trace
            .into_iter()
            .filter_map(|(trace_id, spans)| TraceView::new(trace_id, spans))
            .collect())
    })
    .await
}

fn corrupt(what: &str) -> QueryError {
    QueryError::DataFusion(datafusion::error::DataFusionError::Internal(format!(
        "span column {what} missing or mistyped"
    )))
}

fn span_views(batch: &RecordBatch) -> Result<Vec<SpanView>> {
    let facts = span_facts(batch)?;
    let text = |name: &str| -> Result<&StringArray> {
        batch
            .column_by_name(name)
            .and_then(|array| array.as_string_opt::<i32>())
            .ok_or_else(|| corrupt(name))
    };
    let (method, url, user) = (
        text(span_col::HTTP_METHOD)?,
        text(span_col::HTTP_URL)?,
        text(span_col::USER)?,
    );
    let status = batch
        .column_by_name(span_col::HTTP_STATUS_CODE)
        .and_then(|array| array.as_primitive_opt::<Int32Type>())
        .ok_or_else(|| corrupt(span_col::HTTP_STATUS_CODE))?;
    let end = batch
        .column_by_name(span_col::END_TIME)
        .and_then(|array| array.as_primitive_opt::<TimestampNanosecondType>())
        .ok_or_else(|| corrupt(span_col::END_TIME))?;
    let attributes = batch
        .column_by_name(span_col::ATTRIBUTES)
        .and_then(|array| array.as_any().downcast_ref::<MapArray>())
        .ok_or_else(|| corrupt(span_col::ATTRIBUTES))?;
    let events = batch
        .column_by_name(span_col::EVENTS)
        .and_then(|array| array.as_any().downcast_ref::<ListArray>())
        .ok_or_else(|| corrupt(span_col::EVENTS))?;
    let optional = |array: &StringArray, row: usize| {
        (array.is_valid(row) && !array.value(row).is_empty()).then(|| array.value(row).to_string())
    };
    let mut views = Vec::with_capacity(facts.len());
    for (row, facts) in facts.into_iter().enumerate() {
        let span_attributes = attributes_at(attributes, row);
        let find_text = |keys: &[&str]| {
            keys.iter().find_map(|key| {
                span_attributes
                    .iter()
                    .find(|attribute| attribute.key == *key)
                    .and_then(
                        |attribute| match attribute.value.as_ref()?.value.as_ref()? {
                            Value::StringValue(text) => Some(text.clone()),
                            _ => None,
                        },
                    )
            })
        };
        views.push(SpanView {
            end_ns: end.value(row),
            http_method: optional(method, row),
            http_url: optional(url, row),
            http_status: status.is_valid(row).then(|| i64::from(status.value(row))),
            user: optional(user, row),
            user_agent: find_text(&["user_agent.original", "http.user_agent"]),
            client_ip: find_text(&["client.address", "http.client_ip"]),
            annotations: annotations(&span_attributes),
            exceptions: exceptions(events, row),
            facts,
        });
    }
    Ok(views)
}

/// `(exception.type, exception.message)` of each `exception` event of row
/// `row` (OpenTelemetry's convention, which X-Ray causes are stored as).
fn exceptions(events: &ListArray, row: usize) -> Vec<(String, String)> {
    if events.is_null(row) {
        return Vec::new();
    }
    let items = events.value(row);
    let Some(items) = items.as_struct_opt() else {
        return Vec::new();
    };
    let names = items
        .column_by_name("name")
        .and_then(|array| array.as_string_opt::<i32>());
    let attributes = items
        .column_by_name("attributes")
        .and_then(|array| array.as_any().downcast_ref::<MapArray>());
    let (Some(names), Some(attributes)) = (names, attributes) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for index in 0..items.len() {
        if names.value(index) != "exception" {
            continue;
        }
        let event_attributes = attributes_at(attributes, index);
        let text = |key: &str| {
            event_attributes
                .iter()
                .find(|attribute| attribute.key == key)
                .and_then(
                    |attribute| match attribute.value.as_ref()?.value.as_ref()? {
                        Value::StringValue(text) => Some(text.clone()),
                        _ => None,
                    },
                )
                .unwrap_or_default()
        };
        found.push((text("exception.type"), text("exception.message")));
    }
    found
}

/// The X-Ray annotations of a span: the keys `aws.xray.annotations` lists
/// when it came from X-Ray, else every scalar attribute.
fn annotations(attributes: &[KeyValue]) -> Vec<(String, Literal)> {
    let listed: Option<Vec<String>> = attributes
        .iter()
        .find(|attribute| attribute.key == xray::attr::ANNOTATIONS)
        .and_then(
            |attribute| match attribute.value.as_ref()?.value.as_ref()? {
                Value::ArrayValue(array) => Some(
                    array
                        .values
                        .iter()
                        .filter_map(|value| match value.value.as_ref()? {
                            Value::StringValue(key) => Some(key.clone()),
                            _ => None,
                        })
                        .collect(),
                ),
                _ => None,
            },
        );
    attributes
        .iter()
        .filter(|attribute| match &listed {
            Some(keys) => keys.contains(&attribute.key),
            None => !attribute.key.starts_with("aws.xray."),
        })
        .filter_map(|attribute| {
            let literal = match attribute.value.as_ref()?.value.as_ref()? {
                Value::StringValue(text) => Literal::Text(text.clone()),
                Value::IntValue(int) => Literal::Number(*int as f64),
                Value::DoubleValue(double) => Literal::Number(*double),
                Value::BoolValue(flag) => Literal::Bool(*flag),
                _ => return None,
            };
            Some((attribute.key.clone(), literal))
        })
        .collect()
}

/// The traces with these ids, whole, in one scan pruned by the trace-id
/// filters; ids with no span are left out.
pub async fn traces_by_ids(
    reader: Arc<dyn SpanReader>,
    tenant: &str,
    trace_ids: &[tracelake_model::TraceId],
) -> Result<Vec<TraceView>> {
    if trace_ids.is_empty() {
        return Ok(Vec::new());
    }
    let context = session_for_tenant(reader, tenant)?;
    let batches = context
        .table("spans")
        .await?
        .filter(crate::trace::trace_id_in(trace_ids))?
        .collect()
        .await?;
    let order: Vec<[u8; 16]> = trace_ids
        .iter()
        .filter_map(|trace_id| trace_id.as_bytes().as_slice().try_into().ok())
        .collect();
    crate::off_reactor(move || {
        let mut by_trace: HashMap<[u8; 16], Vec<SpanView>> = HashMap::new();
        for batch in &batches {
            for span in span_views(batch)? {
                by_trace.entry(span.facts.trace_id).or_default().push(span);
            }
        }
        Ok(order
            .into_iter()
            .filter_map(|trace_id| TraceView::new(trace_id, by_trace.remove(&trace_id)?))
            .collect())
    })
    .await
}

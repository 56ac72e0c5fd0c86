//! Trace by id.
//!
//! Rows come back as stored; [`assemble`] then applies what X-Ray ingest
//! leaves to read time:
//! - the same span id stored more than once (an in-progress X-Ray document
//!   followed by the complete one, or a re-sent span) is answered once: a
//!   complete span wins over an in-progress one, then the later end;
//! - an independent subsegment whose segment was not yet seen at ingest was
//!   stored with a resource that names no service; it takes the resource of
//!   its nearest ancestor in the trace.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::concat_batches;
use datafusion::common::ScalarValue;
use datafusion::prelude::{col, lit};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Span, TracesData};
use tracelake_model::otlp::batches_to_traces_data;
use tracelake_model::schema::col as column;
use tracelake_model::{TraceId, xray};
use tracelake_storage::SpanReader;

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
    Ok(Some(assemble(batches_to_traces_data(&batches)?)))
}

/// `trace_id IN (...)`: the spans table prunes blocks by it (each block's
/// trace-id filter is asked for every id).
pub(crate) fn trace_id_in(trace_ids: &[TraceId]) -> datafusion::prelude::Expr {
    let ids = trace_ids
        .iter()
        .map(|trace_id| {
            lit(ScalarValue::FixedSizeBinary(
                TraceId::LEN as i32,
                Some(trace_id.as_bytes().to_vec()),
            ))
        })
        .collect();
    col(column::TRACE_ID).in_list(ids, false)
}

/// Several traces at once, in one scan pruned to the blocks whose trace-id
/// filters admit any of them: `(id, trace)` in the order of `trace_ids`,
/// ids with no span left out. Each trace is assembled as [`trace_by_id`]
/// does.
pub async fn traces_by_ids(
    reader: Arc<dyn SpanReader>,
    tenant: &str,
    trace_ids: &[TraceId],
) -> Result<Vec<(TraceId, TracesData)>> {
    if trace_ids.is_empty() {
        return Ok(Vec::new());
    }
    let context = session_for_tenant(reader, tenant)?;
    let batches = context
        .table("spans")
        .await?
        .filter(trace_id_in(trace_ids))?
        .sort(vec![
            col(column::TRACE_ID).sort(true, false),
            col(column::START_TIME).sort(true, false),
        ])?
        .collect()
        .await?;
    let wanted = trace_ids.to_vec();
    crate::off_reactor(move || {
        let Some(first) = batches.first() else {
            return Ok(Vec::new());
        };
        let all = concat_batches(&first.schema(), &batches)
            .map_err(datafusion::error::DataFusionError::from)?;
        let ids = all
            .column_by_name(column::TRACE_ID)
            .and_then(|array| array.as_fixed_size_binary_opt())
            .ok_or_else(|| {
                datafusion::error::DataFusionError::Internal("trace_id column missing".into())
            })?;
        // Rows are sorted by trace id: each trace is one run of rows.
        let mut runs: HashMap<&[u8], (usize, usize)> = HashMap::new();
        let mut start = 0;
        for row in 1..=ids.len() {
            if row == ids.len() || ids.value(row) != ids.value(start) {
                runs.insert(ids.value(start), (start, row - start));
                start = row;
            }
        }
        let mut traces = Vec::new();
        for trace_id in wanted {
            if let Some((offset, length)) = runs.get(trace_id.as_bytes().as_slice()) {
                let rows = all.slice(*offset, *length);
                traces.push((trace_id, assemble(batches_to_traces_data(&[rows])?)));
            }
        }
        Ok(traces)
    })
    .await
}

/// Where a span sits in a `TracesData`.
type Position = (usize, usize, usize);

fn has_service(resource: Option<&Resource>) -> bool {
    resource.is_some_and(|resource| {
        resource
            .attributes
            .iter()
            .any(|attribute| attribute.key == "service.name")
    })
}

/// An X-Ray in-progress span (`aws.xray.inprogress`).
pub(crate) fn is_in_progress(span: &Span) -> bool {
    span.attributes.iter().any(|attribute| {
        attribute.key == xray::attr::IN_PROGRESS
            && matches!(
                attribute
                    .value
                    .as_ref()
                    .and_then(|value| value.value.as_ref()),
                Some(any_value::Value::BoolValue(true))
            )
    })
}

/// Deduplicates spans by id and gives orphaned X-Ray subsegments their
/// ancestor's resource (see the module docs).
pub fn assemble(mut traces: TracesData) -> TracesData {
    // 1. One span per id.
    let mut best: HashMap<Vec<u8>, Position> = HashMap::new();
    for (r, resource_spans) in traces.resource_spans.iter().enumerate() {
        for (s, scope_spans) in resource_spans.scope_spans.iter().enumerate() {
            for (i, span) in scope_spans.spans.iter().enumerate() {
                let position = (r, s, i);
                let better = match best.get(&span.span_id) {
                    None => true,
                    Some(&(br, bs, bi)) => {
                        let current = &traces.resource_spans[br].scope_spans[bs].spans[bi];
                        let rank = |span: &Span| (!is_in_progress(span), span.end_time_unix_nano);
                        rank(span) >= rank(current)
                    }
                };
                if better {
                    best.insert(span.span_id.clone(), position);
                }
            }
        }
    }
    for (r, resource_spans) in traces.resource_spans.iter_mut().enumerate() {
        for (s, scope_spans) in resource_spans.scope_spans.iter_mut().enumerate() {
            let mut index = 0;
            scope_spans.spans.retain(|span| {
                let keep = best.get(&span.span_id) == Some(&(r, s, index));
                index += 1;
                keep
            });
        }
    }

    // 2. Resources for spans stored without a service.
    let mut parent_of: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    let mut resource_of: HashMap<Vec<u8>, usize> = HashMap::new();
    for (r, resource_spans) in traces.resource_spans.iter().enumerate() {
        let named = has_service(resource_spans.resource.as_ref());
        for scope_spans in &resource_spans.scope_spans {
            for span in &scope_spans.spans {
                parent_of.insert(span.span_id.clone(), span.parent_span_id.clone());
                if named {
                    resource_of.insert(span.span_id.clone(), r);
                }
            }
        }
    }
    let ancestor_resource = |span_id: &[u8]| -> Option<usize> {
        let mut current = parent_of.get(span_id)?.clone();
        for _ in 0..parent_of.len() {
            if let Some(r) = resource_of.get(&current) {
                return Some(*r);
            }
            current = parent_of.get(&current)?.clone();
        }
        None
    };
    let mut moves: Vec<(usize, ScopeSpans)> = Vec::new();
    for resource_spans in traces.resource_spans.iter_mut() {
        if has_service(resource_spans.resource.as_ref()) {
            continue;
        }
        for scope_spans in resource_spans.scope_spans.iter_mut() {
            let is_xray = scope_spans
                .scope
                .as_ref()
                .is_some_and(|scope| scope.name == xray::XRAY_SCOPE_NAME);
            if !is_xray {
                continue;
            }
            let spans = std::mem::take(&mut scope_spans.spans);
            for span in spans {
                match ancestor_resource(&span.span_id) {
                    Some(target) => moves.push((
                        target,
                        ScopeSpans {
                            scope: scope_spans.scope.clone(),
                            spans: vec![span],
                            schema_url: scope_spans.schema_url.clone(),
                        },
                    )),
                    None => scope_spans.spans.push(span),
                }
            }
        }
    }
    for (target, moved) in moves {
        let scopes = &mut traces.resource_spans[target].scope_spans;
        match scopes
            .iter_mut()
            .find(|scope_spans| scope_spans.scope == moved.scope)
        {
            Some(existing) => {
                existing.spans.extend(moved.spans);
                existing.spans.sort_by_key(|span| span.start_time_unix_nano);
            }
            None => scopes.push(moved),
        }
    }
    for resource_spans in traces.resource_spans.iter_mut() {
        resource_spans
            .scope_spans
            .retain(|scope_spans| !scope_spans.spans.is_empty());
    }
    traces
        .resource_spans
        .retain(|resource_spans| !resource_spans.scope_spans.is_empty());
    traces
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
    use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

    fn kv(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    fn span(id: u8, parent: u8, end: u64, in_progress: bool) -> Span {
        Span {
            trace_id: vec![9; 16],
            span_id: vec![id; 8],
            parent_span_id: if parent == 0 {
                Vec::new()
            } else {
                vec![parent; 8]
            },
            start_time_unix_nano: 10,
            end_time_unix_nano: end,
            attributes: vec![kv(
                xray::attr::IN_PROGRESS,
                any_value::Value::BoolValue(in_progress),
            )],
            ..Default::default()
        }
    }

    fn group(service: Option<&str>, spans: Vec<Span>) -> ResourceSpans {
        ResourceSpans {
            resource: Some(Resource {
                attributes: service
                    .map(|name| {
                        vec![kv(
                            "service.name",
                            any_value::Value::StringValue(name.into()),
                        )]
                    })
                    .unwrap_or_default(),
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: xray::XRAY_SCOPE_NAME.into(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn complete_documents_win_and_orphans_join_their_service() {
        let traces = TracesData {
            resource_spans: vec![
                group(
                    Some("shop"),
                    vec![span(1, 0, 10, true), span(2, 1, 30, false)],
                ),
                // Streamed before the segment: no service.
                group(
                    None,
                    vec![
                        span(3, 2, 25, false),
                        span(4, 3, 24, false),
                        span(5, 7, 20, false),
                    ],
                ),
                group(
                    Some("shop"),
                    vec![span(1, 0, 40, false), span(1, 0, 12, true)],
                ),
            ],
        };
        let assembled = assemble(traces);
        let mut seen = Vec::new();
        for resource_spans in &assembled.resource_spans {
            let named = has_service(resource_spans.resource.as_ref());
            for scope_spans in &resource_spans.scope_spans {
                for span in &scope_spans.spans {
                    seen.push((span.span_id[0], span.end_time_unix_nano, named));
                }
            }
        }
        seen.sort();
        assert_eq!(
            seen,
            vec![
                (1, 40, true),
                (2, 30, true),
                (3, 25, true),
                (4, 24, true),
                (5, 20, false)
            ]
        );
    }
}

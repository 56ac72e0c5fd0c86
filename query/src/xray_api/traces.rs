//! BatchGetTraces: whole traces as X-Ray segment documents rebuilt from
//! the stored spans (any OTLP span included), at most 5 ids a call as
//! X-Ray allows; unknown or malformed ids come back in
//! `UnprocessedTraceIds`. GetTraceGraph: the service graph of the given
//! traces (same shape as GetServiceGraph's `Services`).

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use opentelemetry_proto::tonic::trace::v1::TracesData;
use serde::Deserialize;
use serde_json::{Value, json};
use tracelake_aws_json::{AwsError, json_body, json_response, tenant_of};
use tracelake_model::xray::{nanos_to_seconds, parse_xray_trace_id, traces_to_documents};

use super::service_graph::service;
use super::{XrayQueryState, no_next_token};
use crate::derived_rows::rows_of_traces;
use crate::service_map::ServiceMap;
use crate::trace::trace_by_id;
use crate::xray_filter::traces_by_ids;

/// X-Ray's limit on trace ids per call.
const MAX_TRACE_IDS: usize = 5;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Request {
    trace_ids: Vec<String>,
    next_token: Option<String>,
}

fn check_trace_id_count(trace_ids: &[String]) -> Result<(), AwsError> {
    if trace_ids.len() > MAX_TRACE_IDS {
        return Err(AwsError::invalid_request(format!(
            "TraceIds holds at most {MAX_TRACE_IDS} ids, got {}",
            trace_ids.len()
        )));
    }
    Ok(())
}

pub(super) async fn batch_get_traces(
    State(state): State<XrayQueryState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AwsError> {
    let tenant = tenant_of(&headers)?;
    let request: Request = json_body(body).await?;
    check_trace_id_count(&request.trace_ids)?;
    no_next_token(request.next_token.as_deref())?;
    let mut traces = Vec::new();
    let mut unprocessed = Vec::new();
    for text in &request.trace_ids {
        let Some(trace_id) = parse_xray_trace_id(text) else {
            unprocessed.push(text.clone());
            continue;
        };
        let Some(trace) = trace_by_id(state.reader.clone(), &tenant, trace_id, None).await? else {
            unprocessed.push(text.clone());
            continue;
        };
        traces.push(xray_trace_json(text, &trace));
    }
    Ok(json_response(&json!({
        "Traces": traces,
        "UnprocessedTraceIds": unprocessed,
    })))
}

/// One trace as X-Ray's `Trace` object (`Id`, `Duration`, `Segments` of
/// `{Id, Document}` with each document as JSON text), as BatchGetTraces
/// answers it; `id` is written as given.
pub fn xray_trace_json(id: &str, trace: &TracesData) -> Value {
    let documents = traces_to_documents(trace);
    let mut start = f64::MAX;
    let mut end = f64::MIN;
    let segments: Vec<Value> = documents
        .iter()
        .map(|document| {
            if let Some(document_start) = document.start_time {
                start = start.min(document_start);
                end = end.max(document.end_time.unwrap_or(document_start));
            }
            let text = serde_json::to_string(document).unwrap_or_default();
            json!({"Id": document.id, "Document": text})
        })
        .collect();
    json!({
        "Id": id,
        "Duration": if start <= end { end - start } else { 0.0 },
        "LimitExceeded": false,
        "Segments": segments,
    })
}

pub(super) async fn get_trace_graph(
    State(state): State<XrayQueryState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AwsError> {
    let tenant = tenant_of(&headers)?;
    let request: Request = json_body(body).await?;
    check_trace_id_count(&request.trace_ids)?;
    no_next_token(request.next_token.as_deref())?;
    let mut trace_ids = Vec::new();
    for text in &request.trace_ids {
        let trace_id = parse_xray_trace_id(text)
            .ok_or_else(|| AwsError::invalid_request(format!("invalid trace id {text:?}")))?;
        trace_ids.push(trace_id);
    }
    let traces = traces_by_ids(state.reader, &tenant, &trace_ids).await?;
    let (map, traces) = crate::off_reactor(move || {
        let map = ServiceMap::build(&rows_of_traces(&traces));
        Ok((map, traces))
    })
    .await?;
    let start = traces.iter().map(|trace| trace.start_ns).min().unwrap_or(0);
    let end = traces.iter().map(|trace| trace.end_ns).max().unwrap_or(0);
    let services: Vec<Value> = (0..map.nodes.len())
        .map(|index| service(&map, index, nanos_to_seconds(start), nanos_to_seconds(end)))
        .collect();
    Ok(json_response(&json!({"Services": services})))
}

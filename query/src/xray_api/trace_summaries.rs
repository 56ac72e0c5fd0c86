//! GetTraceSummaries: the traces of a window that match a filter
//! expression, newest first, 100 a page.
//!
//! `TimeRangeType` `TraceId`, `Event` and `Service` all select traces with
//! a span starting in the window: OpenTelemetry trace ids carry no time, so
//! the X-Ray id's embedded epoch cannot be relied on. A `GroupName`/
//! `GroupARN` adds the group's filter expression (AND). Windows are
//! limited to 24 hours: the traces are loaded whole.
//!
//! Each summary carries every list of the model's `TraceSummary`, empty or
//! not, as X-Ray sends them: root causes from [`super::root_causes`];
//! `ResourceARNs`, `InstanceIds`, `AvailabilityZones` and
//! `ResponseTimeRootCauses` are not derived and stay empty.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use tracelake_aws_json::{AwsError, json_body, json_response, tenant_of};
use tracelake_model::TraceId;
use tracelake_model::xray::{format_xray_trace_id, nanos_to_seconds};

use super::root_causes::{Failure, root_causes};
use super::{XrayQueryState, check_trace_window, next_token, page_offset, window};
use crate::xray_filter::{Filter, Literal, SpanView, TraceView, parse, traces_in_window};

const PAGE_SIZE: usize = 100;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Request {
    start_time: f64,
    end_time: f64,
    time_range_type: Option<String>,
    filter_expression: Option<String>,
    next_token: Option<String>,
    group_name: Option<String>,
    #[serde(rename = "GroupARN")]
    group_arn: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    sampling: bool,
}

/// The filter of a request; `InvalidRequestException` names the position
/// of a syntax error.
pub(super) fn parse_filter(expression: Option<&str>) -> Result<Option<Filter>, AwsError> {
    match expression.filter(|text| !text.trim().is_empty()) {
        None => Ok(None),
        Some(text) => parse(text)
            .map(Some)
            .map_err(|error| AwsError::invalid_request(error.to_string())),
    }
}

pub(super) async fn get_trace_summaries(
    State(state): State<XrayQueryState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AwsError> {
    let tenant = tenant_of(&headers)?;
    let request: Request = json_body(body).await?;
    let range = window(request.start_time, request.end_time)?;
    check_trace_window(range)?;
    if let Some(kind) = request.time_range_type.as_deref()
        && !matches!(kind, "TraceId" | "Event" | "Service")
    {
        return Err(AwsError::invalid_request(format!(
            "TimeRangeType must be TraceId, Event or Service, got {kind:?}"
        )));
    }
    let filter = parse_filter(request.filter_expression.as_deref())?;
    let group_filter = state
        .groups
        .filter_of(
            &tenant,
            request.group_name.as_deref(),
            request.group_arn.as_deref(),
        )
        .await?;
    let filter = match (filter, group_filter) {
        (Some(own), Some(group)) => Some(Filter::And(Box::new(group), Box::new(own))),
        (own, group) => own.or(group),
    };
    let filter = match filter {
        Some(filter) => Some(state.groups.resolve(&tenant, filter).await?),
        None => None,
    };
    let offset = page_offset(request.next_token.as_deref())?;
    let traces = traces_in_window(state.reader, &tenant, range).await?;
    let processed = traces.len();
    // Evaluating the filter on every trace is CPU work: off the reactor.
    let (summaries, matched) = crate::off_reactor(move || {
        let mut matching: Vec<TraceView> = traces
            .into_iter()
            .filter(|trace| filter.as_ref().is_none_or(|filter| trace.matches(filter)))
            .collect();
        matching.sort_by(|left, right| {
            right
                .start_ns
                .cmp(&left.start_ns)
                .then(left.trace_id.cmp(&right.trace_id))
        });
        let summaries: Vec<Value> = matching
            .iter()
            .skip(offset)
            .take(PAGE_SIZE)
            .map(summary)
            .collect();
        Ok((summaries, matching.len()))
    })
    .await?;
    let mut response = json!({
        "TraceSummaries": summaries,
        "ApproximateTime": request.end_time,
        "TracesProcessedCount": processed,
    });
    if let Some(token) = next_token(offset, PAGE_SIZE, matched) {
        response["NextToken"] = json!(token);
    }
    Ok(json_response(&response))
}

fn seconds(nanos: i64) -> f64 {
    nanos_to_seconds(nanos)
}

fn service_id(span: &SpanView) -> Value {
    let service = &span.facts.service;
    let mut id = json!({"Name": service.name, "Names": [service.name]});
    if !service.node_type.is_empty() {
        id["Type"] = json!(service.node_type);
    }
    id
}

/// X-Ray's `TraceSummary` of one trace.
fn summary(trace: &TraceView) -> Value {
    let root = trace.root_span();
    let outcome = root.facts.outcome;
    let trace_id = TraceId::try_from(trace.trace_id.as_slice())
        .map(|id| format_xray_trace_id(&id))
        .unwrap_or_default();
    let mut services: BTreeMap<(String, String), Value> = BTreeMap::new();
    let mut users: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut annotations: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for span in &trace.spans {
        let service = &span.facts.service;
        services
            .entry((service.name.clone(), service.node_type.clone()))
            .or_insert_with(|| service_id(span));
        if let Some(user) = &span.user {
            users
                .entry(user.clone())
                .or_default()
                .push(service_id(span));
        }
        for (key, value) in &span.annotations {
            let annotation_value = match value {
                Literal::Number(number) => json!({"NumberValue": number}),
                Literal::Text(text) => json!({"StringValue": text}),
                Literal::Bool(flag) => json!({"BooleanValue": flag}),
            };
            annotations.entry(key.clone()).or_default().push(json!({
                "AnnotationValue": annotation_value,
                "ServiceIds": [service_id(span)],
            }));
        }
    }
    let mut http = json!({});
    if let Some(url) = &root.http_url {
        http["HttpURL"] = json!(url);
    }
    if let Some(status) = root.http_status {
        http["HttpStatus"] = json!(status);
    }
    if let Some(method) = &root.http_method {
        http["HttpMethod"] = json!(method);
    }
    if let Some(agent) = &root.user_agent {
        http["UserAgent"] = json!(agent);
    }
    if let Some(ip) = &root.client_ip {
        http["ClientIp"] = json!(ip);
    }
    json!({
        "Id": trace_id,
        "StartTime": seconds(trace.start_ns),
        "Duration": seconds(trace.end_ns - trace.start_ns),
        "ResponseTime": seconds(root.facts.duration_ns),
        "HasFault": outcome.fault,
        "HasError": outcome.error,
        "HasThrottle": outcome.throttle,
        "IsPartial": trace.partial,
        "Http": http,
        "Annotations": annotations,
        "Users": users
            .into_iter()
            .map(|(name, ids)| json!({"UserName": name, "ServiceIds": ids}))
            .collect::<Vec<_>>(),
        "ServiceIds": services.into_values().collect::<Vec<_>>(),
        "ResourceARNs": [],
        "InstanceIds": [],
        "AvailabilityZones": [],
        "EntryPoint": service_id(root),
        "FaultRootCauses": root_causes(trace, Failure::Fault),
        "ErrorRootCauses": root_causes(trace, Failure::Error),
        "ResponseTimeRootCauses": [],
        "MatchedEventTime": seconds(root.facts.start_ns),
        "Revision": 1,
    })
}

//! GetServiceGraph: the service map of a window in X-Ray's shape.
//!
//! Every node is a `Service` (`ReferenceId` = its index in the map); its
//! `Edges` are the calls it makes. Statistics and histograms follow
//! [`crate::service_map`]: a node's own entry spans, an inferred node's
//! received calls, none for the `client` node; an edge's statistics and
//! `ResponseTimeHistogram` come from the caller's side. An edge found
//! through a span link has `EdgeType` `link`.
//!
//! Every list of the model's `Service` and `Edge` is written, empty when
//! there is nothing to put in it (the `client` node's histograms; the
//! `ReceivedEventAgeHistogram` of an edge, as no event age is tracked), as
//! X-Ray sends them.

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracelake_aws_json::{AwsError, json_body, json_response, tenant_of};
use tracelake_model::derived::{LatencyHistogram, OutcomeCounts};

use super::{XrayQueryState, next_token, page_offset, window, window_rows};
use crate::service_map::{MapNode, ServiceMap};

/// Services per page.
const PAGE_SIZE: usize = 100;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Request {
    start_time: f64,
    end_time: f64,
    group_name: Option<String>,
    #[serde(rename = "GroupARN")]
    group_arn: Option<String>,
    next_token: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct ServiceGraphResponse {
    start_time: f64,
    end_time: f64,
    services: Vec<Value>,
    contains_old_group_versions: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_token: Option<String>,
}

pub(super) async fn get_service_graph(
    State(state): State<XrayQueryState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AwsError> {
    let tenant = tenant_of(&headers)?;
    let request: Request = json_body(body).await?;
    let (from_ns, to_ns) = window(request.start_time, request.end_time)?;
    let group_filter = state
        .groups
        .resolved_filter_of(
            &tenant,
            request.group_name.as_deref(),
            request.group_arn.as_deref(),
        )
        .await?;
    let offset = page_offset(request.next_token.as_deref())?;
    let rows = window_rows(&state, &tenant, (from_ns, to_ns), group_filter).await?;
    let map = ServiceMap::build_off_reactor(rows).await?;
    let services = (0..map.nodes.len())
        .skip(offset)
        .take(PAGE_SIZE)
        .map(|index| service(&map, index, request.start_time, request.end_time))
        .collect();
    Ok(json_response(&ServiceGraphResponse {
        start_time: request.start_time,
        end_time: request.end_time,
        services,
        contains_old_group_versions: false,
        next_token: next_token(offset, PAGE_SIZE, map.nodes.len()),
    }))
}

pub(super) fn service(map: &ServiceMap, index: usize, start: f64, end: f64) -> Value {
    let node: &MapNode = &map.nodes[index];
    let edges: Vec<Value> = map
        .edges_from(index)
        .map(|edge| {
            let mut value = json!({
                "ReferenceId": edge.server,
                "StartTime": start,
                "EndTime": end,
                "SummaryStatistics": summary_statistics(
                    &edge.stats.counts,
                    edge.stats.client_duration_sum_ns,
                ),
                "ResponseTimeHistogram": histogram(&edge.stats.client_latency),
                "Aliases": [],
                "ReceivedEventAgeHistogram": [],
            });
            if edge.link {
                value["EdgeType"] = json!("link");
            }
            value
        })
        .collect();
    let mut value = json!({
        "ReferenceId": index,
        "Name": node.node.name,
        "Names": [node.node.name],
        "Root": node.root,
        "State": "active",
        "StartTime": start,
        "EndTime": end,
        "Edges": edges,
        "DurationHistogram": [],
        "ResponseTimeHistogram": [],
    });
    if !node.node.node_type.is_empty() {
        value["Type"] = json!(node.node.node_type);
    }
    if let Some(stats) = &node.stats {
        value["SummaryStatistics"] = summary_statistics(&stats.counts, stats.duration_sum_ns);
        value["DurationHistogram"] = histogram(&stats.latency);
        value["ResponseTimeHistogram"] = histogram(&stats.latency);
    }
    value
}

/// X-Ray's `ServiceStatistics`/`EdgeStatistics`.
pub(super) fn summary_statistics(counts: &OutcomeCounts, duration_sum_ns: i64) -> Value {
    json!({
        "OkCount": counts.ok,
        "ErrorStatistics": {
            "ThrottleCount": counts.throttles,
            "OtherCount": counts.errors - counts.throttles,
            "TotalCount": counts.errors,
        },
        "FaultStatistics": {"OtherCount": counts.faults, "TotalCount": counts.faults},
        "TotalCount": counts.total,
        "TotalResponseTime": duration_sum_ns as f64 / 1e9,
    })
}

/// X-Ray's `[{Value, Count}]` histogram, seconds.
pub(super) fn histogram(latency: &LatencyHistogram) -> Value {
    latency
        .distribution_seconds()
        .into_iter()
        .map(|(value, count)| json!({"Value": value, "Count": count}))
        .collect()
}

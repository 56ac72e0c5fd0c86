//! GetTimeSeriesServiceStatistics: statistics per `Period` (seconds, a
//! multiple of 60, default 60) over the window, for the entity that
//! `EntitySelectorExpression` names:
//!
//! - `service("name")` (or `service(id(name: .., type: ..))`): the
//!   service's entry spans, or for an inferred node the calls it received
//!   (`ServiceSummaryStatistics`);
//! - `edge("a", "b")`: the calls from a to b (`EdgeSummaryStatistics`);
//! - none: every entry span (`ServiceSummaryStatistics`).
//!
//! Periods without data are left out. A group narrows the rows to its
//! matching traces, as in GetServiceGraph.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use tracelake_aws_json::{AwsError, json_body, json_response, tenant_of};
use tracelake_model::derived::{CLIENT_NODE_TYPE, Node};
use tracelake_model::xray::nanos_to_seconds;

use super::service_graph::{histogram, summary_statistics};
use super::{XrayQueryState, no_next_token, window, window_rows};
use crate::service_map::Stats;
use crate::xray_filter::{Filter, parse};

const NANOS_PER_SECOND: i64 = 1_000_000_000;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Request {
    start_time: f64,
    end_time: f64,
    group_name: Option<String>,
    #[serde(rename = "GroupARN")]
    group_arn: Option<String>,
    entity_selector_expression: Option<String>,
    period: Option<i64>,
    #[serde(default)]
    #[allow(dead_code)]
    forecast_statistics: bool,
    next_token: Option<String>,
}

/// What the selector picks.
enum Entity {
    Everything,
    Service {
        name: Option<String>,
        node_type: Option<String>,
    },
    Edge {
        from: String,
        to: String,
    },
}

fn entity(expression: Option<&str>) -> Result<Entity, AwsError> {
    let Some(text) = expression.filter(|text| !text.trim().is_empty()) else {
        return Ok(Entity::Everything);
    };
    let invalid = || {
        AwsError::invalid_request(
            "EntitySelectorExpression must be service(\"name\") or edge(\"a\", \"b\")",
        )
    };
    match parse(text).map_err(|error| AwsError::invalid_request(error.to_string()))? {
        Filter::Service {
            name,
            node_type,
            filter: None,
        } => Ok(Entity::Service { name, node_type }),
        Filter::Edge {
            from,
            to,
            filter: None,
        } => Ok(Entity::Edge { from, to }),
        _ => Err(invalid()),
    }
}

fn wanted(node: &Node, name: &Option<String>, node_type: &Option<String>) -> bool {
    name.as_ref().is_none_or(|name| *name == node.name)
        && node_type
            .as_ref()
            .is_none_or(|node_type| *node_type == node.node_type)
}

pub(super) async fn get_time_series_service_statistics(
    State(state): State<XrayQueryState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AwsError> {
    let tenant = tenant_of(&headers)?;
    let request: Request = json_body(body).await?;
    let (from_ns, to_ns) = window(request.start_time, request.end_time)?;
    let period = request.period.unwrap_or(60);
    if period < 60 || period % 60 != 0 {
        return Err(AwsError::invalid_request(format!(
            "Period must be a positive multiple of 60 seconds, got {period}"
        )));
    }
    no_next_token(request.next_token.as_deref())?;
    let entity = entity(request.entity_selector_expression.as_deref())?;
    let group_filter = state
        .groups
        .resolved_filter_of(
            &tenant,
            request.group_name.as_deref(),
            request.group_arn.as_deref(),
        )
        .await?;
    let rows = window_rows(&state, &tenant, (from_ns, to_ns), group_filter).await?;
    let period_ns = period * NANOS_PER_SECOND;
    let bucket_of = |minute_ns: i64| minute_ns.div_euclid(period_ns) * period_ns;
    let in_window =
        |minute_ns: i64| minute_ns <= to_ns && minute_ns + 60 * NANOS_PER_SECOND > from_ns;
    let mut buckets: BTreeMap<i64, Stats> = BTreeMap::new();
    let mut add = |minute_ns: i64, stats: Stats| {
        if in_window(minute_ns) {
            buckets
                .entry(bucket_of(minute_ns))
                .or_default()
                .merge(&stats);
        }
    };
    let is_edge = matches!(entity, Entity::Edge { .. });
    match &entity {
        Entity::Everything => {
            for (key, stats) in &rows.spans.rows {
                if key.entry {
                    add(key.minute_ns, Stats::from_span_metrics(stats));
                }
            }
        }
        Entity::Service { name, node_type } => {
            let mut own = false;
            for (key, stats) in &rows.spans.rows {
                if key.entry && wanted(&key.service, name, node_type) {
                    own = true;
                    add(key.minute_ns, Stats::from_span_metrics(stats));
                }
            }
            if !own {
                // An inferred node: the calls it received.
                for (key, stats) in &rows.edges.rows {
                    if key.client.node_type != CLIENT_NODE_TYPE
                        && wanted(&key.server, name, node_type)
                    {
                        add(key.minute_ns, Stats::from_edge(stats));
                    }
                }
            }
        }
        Entity::Edge { from, to } => {
            for (key, stats) in &rows.edges.rows {
                if key.client.name == *from && key.server.name == *to {
                    add(key.minute_ns, Stats::from_edge(stats));
                }
            }
        }
    }
    let series: Vec<_> = buckets
        .iter()
        .map(|(bucket_ns, stats)| {
            let statistics = summary_statistics(&stats.counts, stats.duration_sum_ns);
            let mut point = json!({
                "Timestamp": nanos_to_seconds(*bucket_ns),
                "ResponseTimeHistogram": histogram(&stats.latency),
            });
            let field = if is_edge {
                "EdgeSummaryStatistics"
            } else {
                "ServiceSummaryStatistics"
            };
            point[field] = statistics;
            point
        })
        .collect();
    Ok(json_response(&json!({
        "TimeSeriesServiceStatistics": series,
        "ContainsOldGroupVersions": false,
    })))
}

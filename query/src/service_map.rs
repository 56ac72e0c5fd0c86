//! The service map of a window: nodes and edges with their statistics,
//! assembled from [`DerivedRows`] (minute rows merged over the window).
//!
//! Node statistics are the service's own entry spans (`span_metrics` rows
//! with `entry`); an inferred node has none of its own, so it shows the sum
//! of the calls it received, as X-Ray shows a DynamoDB table; the `client`
//! node has none. A node is a root when the `client` node calls it.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use tracelake_model::derived::{
    CLIENT_NODE_TYPE, ConnectionType, EdgeStats, LatencyHistogram, Node, OutcomeCounts,
    SpanMetricStats,
};

use crate::derived_rows::DerivedRows;

/// Statistics of a node or an edge over the window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    pub counts: OutcomeCounts,
    pub duration_sum_ns: i64,
    pub latency: LatencyHistogram,
}

impl Stats {
    pub fn from_span_metrics(stats: &SpanMetricStats) -> Self {
        Self {
            counts: stats.counts,
            duration_sum_ns: stats.duration_sum_ns,
            latency: stats.latency.clone(),
        }
    }

    /// An edge's caller-side statistics.
    pub fn from_edge(stats: &EdgeStats) -> Self {
        Self {
            counts: stats.counts,
            duration_sum_ns: stats.client_duration_sum_ns,
            latency: stats.client_latency.clone(),
        }
    }

    pub fn merge(&mut self, other: &Self) {
        self.counts.merge(&other.counts);
        self.duration_sum_ns += other.duration_sum_ns;
        self.latency.merge(&other.latency);
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct MapNode {
    pub node: Node,
    pub root: bool,
    /// The node's own statistics; `None` for the `client` node.
    pub stats: Option<Stats>,
    /// Whether `stats` are the node's own entry spans (false: the sum of
    /// the calls it received, for inferred nodes).
    pub instrumented: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MapEdge {
    /// Indexes into [`ServiceMap::nodes`].
    pub client: usize,
    pub server: usize,
    pub connection: ConnectionType,
    pub link: bool,
    pub stats: EdgeStats,
}

/// Nodes sorted by (name, type); edges by (client, server, connection).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceMap {
    pub nodes: Vec<MapNode>,
    pub edges: Vec<MapEdge>,
}

type EdgeIdentity = (Node, Node, ConnectionType, bool);

impl ServiceMap {
    /// [`ServiceMap::build`] on the blocking pool (it merges a histogram per
    /// row).
    pub async fn build_off_reactor(rows: DerivedRows) -> crate::Result<Self> {
        crate::off_reactor(move || Ok(Self::build(&rows))).await
    }

    pub fn build(rows: &DerivedRows) -> Self {
        let mut own: BTreeMap<Node, Stats> = BTreeMap::new();
        for (key, stats) in &rows.spans.rows {
            if !key.entry {
                continue;
            }
            own.entry(key.service.clone())
                .or_default()
                .merge(&Stats::from_span_metrics(stats));
        }
        let mut edges: BTreeMap<EdgeIdentity, EdgeStats> = BTreeMap::new();
        for (key, stats) in &rows.edges.rows {
            let identity = (
                key.client.clone(),
                key.server.clone(),
                key.connection,
                key.link,
            );
            edges.entry(identity).or_default().merge(stats);
        }
        let mut received: BTreeMap<Node, Stats> = BTreeMap::new();
        let mut roots: Vec<Node> = Vec::new();
        for ((client, server, _, _), stats) in &edges {
            received.entry(client.clone()).or_default();
            received
                .entry(server.clone())
                .or_default()
                .merge(&Stats::from_edge(stats));
            if client.node_type == CLIENT_NODE_TYPE {
                roots.push(server.clone());
            }
        }
        let mut all: BTreeMap<Node, MapNode> = BTreeMap::new();
        for (node, stats) in received {
            let is_client = node.node_type == CLIENT_NODE_TYPE;
            let map_node = match own.remove(&node) {
                Some(own_stats) => MapNode {
                    node: node.clone(),
                    root: false,
                    stats: Some(own_stats),
                    instrumented: true,
                },
                None => MapNode {
                    node: node.clone(),
                    root: false,
                    stats: (!is_client).then_some(stats),
                    instrumented: false,
                },
            };
            all.insert(node, map_node);
        }
        for (node, stats) in own {
            all.insert(
                node.clone(),
                MapNode {
                    node,
                    root: false,
                    stats: Some(stats),
                    instrumented: true,
                },
            );
        }
        for root in roots {
            if let Some(node) = all.get_mut(&root) {
                node.root = true;
            }
        }
        let nodes: Vec<MapNode> = all.into_values().collect();
        let index: HashMap<&Node, usize> = nodes
            .iter()
            .enumerate()
            .map(|(position, node)| (&node.node, position))
            .collect();
        let edges = edges
            .into_iter()
            .filter_map(|((client, server, connection, link), stats)| {
                Some(MapEdge {
                    client: *index.get(&client)?,
                    server: *index.get(&server)?,
                    connection,
                    link,
                    stats,
                })
            })
            .collect();
        Self { nodes, edges }
    }

    /// Edges leaving node `index`.
    pub fn edges_from(&self, index: usize) -> impl Iterator<Item = &MapEdge> {
        self.edges.iter().filter(move |edge| edge.client == index)
    }

    /// The native JSON form (`GET /v1/service-map`).
    pub fn to_json(&self) -> ServiceMapJson {
        ServiceMapJson {
            nodes: self
                .nodes
                .iter()
                .enumerate()
                .map(|(id, node)| NodeJson {
                    id,
                    name: node.node.name.clone(),
                    node_type: node.node.node_type.clone(),
                    root: node.root,
                    instrumented: node.instrumented,
                    stats: node.stats.as_ref().map(|stats| {
                        StatsJson::new(&stats.counts, None, stats.duration_sum_ns, &stats.latency)
                    }),
                })
                .collect(),
            edges: self
                .edges
                .iter()
                .map(|edge| EdgeJson {
                    source: edge.client,
                    target: edge.server,
                    client: self.nodes[edge.client].node.name.clone(),
                    server: self.nodes[edge.server].node.name.clone(),
                    connection_type: edge.connection.as_str(),
                    edge_type: if edge.link { "link" } else { "standard" },
                    stats: StatsJson::new(
                        &edge.stats.counts,
                        Some(edge.stats.failed),
                        edge.stats.client_duration_sum_ns,
                        &edge.stats.client_latency,
                    ),
                    server_latency: (!edge.stats.server_latency.is_empty())
                        .then(|| LatencyJson::new(&edge.stats.server_latency)),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ServiceMapJson {
    pub nodes: Vec<NodeJson>,
    pub edges: Vec<EdgeJson>,
}

#[derive(Debug, Serialize)]
pub struct NodeJson {
    pub id: usize,
    pub name: String,
    #[serde(rename = "type")]
    pub node_type: String,
    pub root: bool,
    pub instrumented: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats: Option<StatsJson>,
}

#[derive(Debug, Serialize)]
pub struct EdgeJson {
    pub source: usize,
    pub target: usize,
    pub client: String,
    pub server: String,
    pub connection_type: &'static str,
    pub edge_type: &'static str,
    pub stats: StatsJson,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_latency: Option<LatencyJson>,
}

#[derive(Debug, Serialize)]
pub struct StatsJson {
    pub total: i64,
    pub ok: i64,
    pub errors: i64,
    pub throttles: i64,
    pub faults: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<i64>,
    pub duration_sum_seconds: f64,
    pub latency: LatencyJson,
}

impl StatsJson {
    fn new(
        counts: &OutcomeCounts,
        failed: Option<i64>,
        duration_sum_ns: i64,
        latency: &LatencyHistogram,
    ) -> Self {
        Self {
            total: counts.total,
            ok: counts.ok,
            errors: counts.errors,
            throttles: counts.throttles,
            faults: counts.faults,
            failed,
            duration_sum_seconds: duration_sum_ns as f64 / 1e9,
            latency: LatencyJson::new(latency),
        }
    }
}

/// Quantiles in seconds, within the histogram's 1% precision.
#[derive(Debug, Serialize)]
pub struct LatencyJson {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl LatencyJson {
    pub fn new(histogram: &LatencyHistogram) -> Self {
        Self {
            count: histogram.count(),
            p50: histogram.quantile_seconds(0.5),
            p90: histogram.quantile_seconds(0.9),
            p99: histogram.quantile_seconds(0.99),
            max: histogram.max_seconds(),
        }
    }
}

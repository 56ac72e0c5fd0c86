//! Derived data: the service map's edges and the span metrics, per minute,
//! with latency histograms; written beside the spans and queryable by SQL.
//!
//! ```text
//!  span batches --span_facts--> SpanFacts --+--> EdgeSet       (edges)
//!                                           +--> SpanMetricSet (span_metrics)
//!                                                    |  to_batch
//!                                                    v
//!                     RecordBatch (edges_schema, span_metrics_schema), which
//!                     storage keeps under tenants/{t}/{edges|span_metrics}/
//! ```
//!
//! # Service map semantics
//!
//! A node is a service (name + X-Ray type). An edge A -> B exists when a
//! client or producer span of A has a server or consumer child span in B
//! (an X-Ray subsegment of A whose downstream segment's `parent_id` is the
//! subsegment maps to exactly that). A client or producer span that no
//! instrumented service answered calls an inferred node ([`infer_peer`]).
//! Every root span gets an edge from the `client` node. A server or consumer
//! span that links to a producer span adds an asynchronous (`link`) edge
//! from the producer's service, or, when the producer called an AWS
//! service (namespace `aws`, e.g. `SendMessage` to a queue), from that
//! service's inferred node ([`link_source`]): producer -> `AWS::SQS::Queue`
//! -> consumer, as X-Ray draws linked SQS traces.
//!
//! Edge counts and client latency come from the caller's span; server
//! latency from the callee's. A node's own statistics come from its entry
//! spans (server/consumer spans and roots): the `span_metrics` rows with
//! `entry = true`. Counts split into ok / error (4xx) / throttle (429, also
//! an error) / fault (5xx or error status). X-Ray in-progress segments are
//! left out until they complete.
//!
//! The collector aggregates these as spans arrive (pairing the two sides of
//! a call within a bounded wait); the query side recomputes the same rows
//! from raw spans for windows the precomputed rows do not cover. Both use
//! the functions of this module.

mod facts;
mod histogram;
mod rows;

pub use facts::{
    CLIENT_NODE_NAME, CLIENT_NODE_TYPE, ConnectionType, Node, Outcome, PeerInputs,
    REMOTE_NODE_TYPE, SpanFacts, infer_peer, is_callee_kind, is_caller_kind, kind_name,
    link_source, span_facts, status_name,
};
pub use histogram::{
    LatencyHistogram, SERVICE_GRAPH_BUCKETS, SIGNIFICANT_DIGITS, SPAN_METRICS_BUCKETS,
};
pub use rows::{
    EdgeKey, EdgeSet, EdgeStats, NANOS_PER_MINUTE, OutcomeCounts, SpanMetricKey, SpanMetricSet,
    SpanMetricStats, col, edges_schema, minute_of, span_metrics_schema,
};

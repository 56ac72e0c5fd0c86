//! tracelake gateway plugin: the instrumentation layer and the reference
//! serverless components whose traffic tracelake observes.
//!
//! Instrumentation, as the X-Ray SDKs instrument a service:
//!
//! ```text
//!  request --XRayLayer--> Tracer::start (continue X-Amzn-Trace-Id / traceparent,
//!                          |             or sample with the central rules)
//!                          v
//!                     TraceContext (request extension)
//!                          |  TracedClient::send -> subsegment (remote | aws),
//!                          |                        header with Parent = subsegment
//!                          v
//!                     finish: segment document(s) --> SegmentSink (bounded queue)
//!                                                      --> UDP to the daemon port
//! ```
//!
//! - [`document`] — the segment documents (ids, http, aws, flags, causes,
//!   annotations, metadata; split into independent subsegments when too
//!   large for a datagram);
//! - [`emitter`] — [`emitter::UdpEmitter`] (never blocks, drops are counted)
//!   and an in-memory sink; [`otlp_sink`] — the same documents as OTLP
//!   spans over OTLP/HTTP;
//! - [`tracer`] — [`Tracer`], [`TraceContext`], [`tracer::Subsegment`];
//! - [`layer`] — the tower layer for axum/hyper services;
//! - [`client`] — the traced HTTP client.
//!
//! Depends on `tracelake-sampler` (as a client) and the leaf crate
//! `tracelake-aws-json` (AWS-shaped errors), nothing else of tracelake.

pub mod admin;
pub mod client;
pub mod demo;
pub mod document;
pub mod downstream;
pub mod emitter;
pub mod gateway;
pub mod layer;
pub mod otlp_sink;
pub mod runtime;
pub mod secrets;
pub mod throttle;
pub mod tracer;
pub mod workflow;

pub use client::{Call, TracedClient};
pub use emitter::{MemorySink, SegmentSink, UdpEmitter};
pub use layer::XRayLayer;
pub use otlp_sink::OtlpSink;
pub use tracer::{RequestInfo, TraceContext, Tracer};

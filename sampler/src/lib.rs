//! tracelake sampler: X-Ray-style centralized sampling rules (matcher,
//! reservoir + fixed rate, quota allocation across clients, rules store)
//! and tail-sampling policies, plus the `X-Amzn-Trace-Id` header both the
//! collector and the instrumented components use, and the token bucket
//! every rate limit of tracelake keeps ([`bucket`]).
//!
//! Depends only on tracelake's leaf crates (`tracelake-aws-json` for the
//! X-Ray error shape, `tracelake-routes` for the access each route
//! declares, `tracelake-settings` where rules persist, through
//! `object_store`, next to the span data, shared by every node on the
//! store), never on storage, the collector or the query side; its routes
//! are served on the X-Ray API port and the gateway plugin uses it as a
//! client.
//!
//! ```text
//!  SDKs --GetSamplingRules / SamplingTargets--> api --> store (rules, per tenant, persistent)
//!                                                   --> quota (reservoir split across clients)
//! ```

pub mod api;
pub mod aws_error;
pub mod bucket;
pub mod client;
pub mod pattern;
pub mod quota;
pub mod rules;
pub mod store;
pub mod tail;
pub mod trace_header;

pub use trace_header::{SampledFlag, TraceHeader, TraceHeaderError};

//! tracelake sampler: X-Ray-style centralized sampling rules (matcher,
//! reservoir + fixed rate, quota allocation across clients, rules store)
//! and tail-sampling policies, plus the `X-Amzn-Trace-Id` header both the
//! collector and the instrumented components use.
//!
//! Of tracelake's crates it depends only on two thin ones,
//! `tracelake-aws-json` (the error shape) and `tracelake-settings` (where
//! rules persist, through `object_store`, next to the span data, shared by
//! every node on the store); its routes are served on the X-Ray API port
//! and the gateway plugin uses it as a client.
//!
//! ```text
//!  SDKs --GetSamplingRules / SamplingTargets--> api --> store (rules, per tenant, persistent)
//!                                                   --> quota (reservoir split across clients)
//! ```

pub mod api;
pub mod aws_error;
pub mod client;
pub mod pattern;
pub mod quota;
pub mod rules;
pub mod store;
pub mod tail;
pub mod trace_header;

pub use trace_header::{SampledFlag, TraceHeader, TraceHeaderError};

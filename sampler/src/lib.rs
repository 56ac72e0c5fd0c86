//! tracelake sampler: X-Ray-style centralized sampling rules (matcher,
//! reservoir + fixed rate, quota allocation across clients, rules store)
//! and tail-sampling policies, plus the `X-Amzn-Trace-Id` header both the
//! collector and the instrumented components use.
//!
//! Depends on no other tracelake crate; the collector serves its rules and
//! the gateway plugin uses it as a client. Sampling rules are built in a
//! later issue.

pub mod trace_header;

pub use trace_header::{SampledFlag, TraceHeader, TraceHeaderError};

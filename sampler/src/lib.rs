//! tracelake sampler: X-Ray-style centralized sampling rules (matcher,
//! reservoir + fixed rate, quota allocation across clients, rules store)
//! and tail-sampling policies.
//!
//! Depends on no other tracelake crate; the collector serves its rules and
//! the gateway plugin uses it as a client. Built in a later issue.

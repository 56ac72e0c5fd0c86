//! A trace summary's `FaultRootCauses` and `ErrorRootCauses`: where in the
//! call chain a fault (5xx) or an error (4xx) began.
//!
//! A root cause is a failed span none of whose children failed the same
//! way: the failure began there, not downstream. It is reported as X-Ray
//! does, as the service that owns the span with the `EntityPath` from that
//! service's entry span down to it, each entity with the exceptions it
//! recorded and `Remote` set for a call out of the service. A failure that
//! reached the trace's root is `ClientImpacting`. Identical causes (same
//! service and path) are reported once.
//!
//! `ResponseTimeRootCauses` (which entity made a slow trace slow) is not
//! computed and always empty.

use std::collections::{HashMap, HashSet};

use serde_json::{Value, json};

use crate::xray_filter::{SpanView, TraceView};

/// Which failure a root cause explains.
#[derive(Debug, Clone, Copy)]
pub(super) enum Failure {
    Fault,
    Error,
}

impl Failure {
    fn of(self, span: &SpanView) -> bool {
        match self {
            Self::Fault => span.facts.outcome.fault,
            Self::Error => span.facts.outcome.error || span.facts.outcome.throttle,
        }
    }
}

/// The root causes of `failure` in `trace`, as X-Ray's
/// `FaultRootCause`/`ErrorRootCause` list.
pub(super) fn root_causes(trace: &TraceView, failure: Failure) -> Vec<Value> {
    let by_id: HashMap<[u8; 8], &SpanView> = trace
        .spans
        .iter()
        .map(|span| (span.facts.span_id, span))
        .collect();
    let mut failed_parents: HashSet<[u8; 8]> = HashSet::new();
    for span in &trace.spans {
        if failure.of(span)
            && let Some(parent) = span.facts.parent_span_id
        {
            failed_parents.insert(parent);
        }
    }
    let client_impacting = failure.of(trace.root_span());
    let mut seen = HashSet::new();
    let mut causes = Vec::new();
    for span in &trace.spans {
        if !failure.of(span) || failed_parents.contains(&span.facts.span_id) {
            continue;
        }
        let path = entity_path(span, &by_id);
        let service = &span.facts.service;
        let key = (
            service.name.clone(),
            service.node_type.clone(),
            path.iter()
                .map(|entity| entity["Name"].to_string())
                .collect::<Vec<_>>(),
        );
        if !seen.insert(key) {
            continue;
        }
        let mut cause_service = json!({
            "Name": service.name,
            "Names": [service.name],
            "EntityPath": path,
            "Inferred": false,
        });
        if !service.node_type.is_empty() {
            cause_service["Type"] = json!(service.node_type);
        }
        causes.push(json!({
            "Services": [cause_service],
            "ClientImpacting": client_impacting,
        }));
    }
    causes
}

/// From the entry span of `span`'s service down to `span`.
fn entity_path(span: &SpanView, by_id: &HashMap<[u8; 8], &SpanView>) -> Vec<Value> {
    let mut chain = vec![span];
    let mut current = span;
    // Bounded by the trace's size: a parent cycle in stored data must not
    // loop forever.
    while !current.facts.is_entry() && chain.len() <= by_id.len() {
        let Some(parent) = current
            .facts
            .parent_span_id
            .and_then(|parent| by_id.get(&parent))
        else {
            break;
        };
        if parent.facts.service != span.facts.service {
            break;
        }
        chain.push(parent);
        current = parent;
    }
    chain
        .iter()
        .rev()
        .map(|entity| {
            json!({
                "Name": entity.facts.name,
                "Exceptions": entity
                    .exceptions
                    .iter()
                    .map(|(name, message)| json!({"Name": name, "Message": message}))
                    .collect::<Vec<_>>(),
                "Remote": entity.facts.is_caller(),
            })
        })
        .collect()
}

//! Poll-based invocation: an event source mapping reads batches from a
//! queue and invokes the function with them (`{"Records": [...]}` in SQS's
//! event shape), deleting the batch when the function succeeds and leaving
//! it to become visible again (and eventually reach the queue's
//! dead-letter queue) when it fails. Iterator age — how old the oldest
//! message of a batch is — is reported as `faas.iterator_age`.
//!
//! Each invocation is a new trace whose segment links to the traces of
//! its messages (their `AWSTraceHeader`: the producer's `SendMessage`
//! subsegment), as Lambda links an SQS consumer's trace to its producers'.
//! So the producer's call ends at the queue, and the service map draws
//! producer -> `AWS::SQS::Queue` -> consumer, the last edge through the
//! link. The new trace is sampled when a message's producer was (it links
//! to the sampled ones only), so a recorded message is traced on the
//! consumer's side too.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Notify;
use tracelake_sampler::TraceHeader;
use tracelake_sampler::trace_header::SampledFlag;

use super::{Caller, InvokeError, Runtime, Start};
use crate::document::{Link, new_trace_id, now_seconds};
use crate::downstream::QueueService;

/// A queue feeding a function.
#[derive(Debug, Clone)]
pub struct EventSourceMapping {
    pub queue: String,
    pub function: String,
    /// Most messages per invocation (SQS: up to 10).
    pub batch_size: usize,
    /// How long received messages stay invisible (should exceed the
    /// function's timeout).
    pub visibility: Duration,
}

/// Stops a running mapping.
#[derive(Debug, Clone)]
pub struct MappingHandle {
    stop: Arc<Notify>,
}

impl MappingHandle {
    pub fn stop(&self) {
        self.stop.notify_waiters();
        self.stop.notify_one();
    }
}

fn records(queue: &str, messages: &[crate::downstream::Message]) -> Value {
    let records: Vec<Value> = messages
        .iter()
        .map(|message| {
            let attributes = message.attributes();
            let message_attributes: serde_json::Map<String, Value> = message
                .message_attributes
                .iter()
                .map(|(name, attribute)| (name.clone(), attribute.to_event_json()))
                .collect();
            json!({
                "messageId": message.id,
                "receiptHandle": message.receipt_handle,
                "body": message.body,
                "attributes": attributes,
                "messageAttributes": message_attributes,
                "md5OfBody": crate::downstream::queue::md5_of_body(&message.body),
                "eventSource": "aws:sqs",
                "eventSourceARN": format!("arn:aws:sqs:local:000000000000:{queue}"),
            })
        })
        .collect();
    json!({"Records": records})
}

/// Most traces one consumer segment links to (X-Ray links a segment to at
/// most 20 traces).
pub const MAX_LINKS: usize = 20;

/// A new trace for a batch, linked to the traces of its sampled messages
/// and sampled when one of them was (not when all were not; by the rules
/// when no message says).
fn linked_start(messages: &[crate::downstream::Message]) -> Start {
    let headers: Vec<TraceHeader> = messages
        .iter()
        .filter_map(|message| TraceHeader::parse(message.trace_header.as_deref()?).ok())
        .collect();
    let mut links: Vec<Link> = Vec::new();
    for header in &headers {
        let (Some(parent), Some(SampledFlag::Sampled)) = (&header.parent, header.sampled) else {
            continue;
        };
        let link = Link {
            trace_id: header.root.clone(),
            id: parent.clone(),
        };
        if links.len() < MAX_LINKS && !links.contains(&link) {
            links.push(link);
        }
    }
    let sampled = if !links.is_empty() {
        Some(SampledFlag::Sampled)
    } else if !headers.is_empty()
        && headers
            .iter()
            .all(|header| header.sampled == Some(SampledFlag::NotSampled))
    {
        Some(SampledFlag::NotSampled)
    } else {
        None
    };
    Start {
        request_id: super::request_id(),
        trace: sampled.map(|sampled| TraceHeader::new(new_trace_id(), None, Some(sampled))),
        links,
    }
}

impl Runtime {
    /// Starts polling `mapping.queue` of `queues` (in-process, as Lambda's
    /// pollers are part of the service) for `mapping.function`.
    pub fn start_mapping(
        &self,
        queues: QueueService,
        mapping: EventSourceMapping,
    ) -> MappingHandle {
        let stop = Arc::new(Notify::new());
        let handle = MappingHandle {
            stop: Arc::clone(&stop),
        };
        let runtime = self.clone();
        tokio::spawn(async move {
            loop {
                let receive = queues.receive(
                    &mapping.queue,
                    mapping.batch_size,
                    mapping.visibility,
                    Duration::from_secs(1),
                );
                let messages = tokio::select! {
                    received = receive => match received {
                        Ok(messages) => messages,
                        Err(error) => {
                            tracing::warn!(queue = %mapping.queue, error = %error.message, "polling failed");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            continue;
                        }
                    },
                    () = stop.notified() => return,
                };
                if messages.is_empty() {
                    continue;
                }
                let oldest_ms = messages
                    .iter()
                    .map(|message| message.sent_ms)
                    .min()
                    .unwrap_or(0);
                let age_ms = ((now_seconds() * 1e3) as u64).saturating_sub(oldest_ms);
                if let Ok(function) = runtime.function(&mapping.function) {
                    function
                        .metrics
                        .set_iterator_age(Duration::from_millis(age_ms));
                }
                let caller = Caller {
                    principal: super::asynchronous::SERVICE_PRINCIPAL.into(),
                    trace: None,
                };
                let function = match runtime.function(&mapping.function) {
                    Ok(function) => Arc::clone(function),
                    Err(error) => {
                        tracing::warn!(function = %mapping.function, error = error.message(), "poller cannot invoke");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                let event = records(&mapping.queue, &messages);
                let outcome = match runtime.check_invoke_policy(&function, &caller) {
                    Ok(()) => {
                        runtime
                            .invoke_authorized(&function, event, linked_start(&messages))
                            .await
                    }
                    Err(error) => Err(error),
                };
                let succeeded = match outcome {
                    Ok(invocation) => invocation.result.is_ok(),
                    Err(InvokeError::Throttled(_)) => false,
                    Err(error) => {
                        tracing::warn!(function = %mapping.function, error = error.message(), "poller cannot invoke");
                        false
                    }
                };
                if succeeded {
                    for message in &messages {
                        let _ = queues.delete(&mapping.queue, &message.receipt_handle);
                    }
                }
            }
        });
        handle
    }
}

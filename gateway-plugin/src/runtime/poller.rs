//! Poll-based invocation: an event source mapping reads batches from a
//! queue and invokes the function with them (`{"Records": [...]}` in SQS's
//! event shape), deleting the batch when the function succeeds and leaving
//! it to become visible again (and eventually reach the queue's
//! dead-letter queue) when it fails. Iterator age — how old the oldest
//! message of a batch is — is reported as `faas.iterator_age`.
//!
//! The function's segment continues the trace of the batch's first
//! message (its `AWSTraceHeader`), so a producer's call and the consumer's
//! work are one trace.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Notify;
use tracelake_sampler::TraceHeader;

use super::{Caller, InvokeError, Runtime};
use crate::document::now_seconds;
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
            json!({
                "messageId": message.id,
                "receiptHandle": message.receipt_handle,
                "body": message.body,
                "attributes": attributes,
                "eventSource": "aws:sqs",
                "eventSourceARN": format!("arn:aws:sqs:local:000000000000:{queue}"),
            })
        })
        .collect();
    json!({"Records": records})
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
                    trace: messages.iter().find_map(|message| {
                        TraceHeader::parse(message.trace_header.as_deref()?).ok()
                    }),
                };
                let event = records(&mapping.queue, &messages);
                let succeeded = match runtime.invoke(&mapping.function, event, &caller).await {
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

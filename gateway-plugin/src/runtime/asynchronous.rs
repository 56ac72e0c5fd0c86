//! Asynchronous invocation (`Event`): the function policy is checked once,
//! when the event is queued, as Lambda checks it at `Invoke`; the caller
//! gets 202 and the request id at once; the event waits in the function's
//! queue; a worker invokes it with that request id (every retry keeps it)
//! and no second policy check. A function
//! error is retried after each backoff of the [`RetryPolicy`] (Lambda: two
//! retries); an invocation throttled by the concurrency limit waits and
//! tries again until the event is older than `max_event_age`. An event
//! that runs out of retries or age goes to the dead-letter queue: an SQS
//! message with the event as body, the trace header kept, and the message
//! attributes Lambda documents for its dead-letter queues — `RequestID`
//! (String), `ErrorCode` (Number: the 3-digit HTTP status of the last
//! attempt, 200 for a function error as `Invoke` answers one, 429 for a
//! throttle) and `ErrorMessage` (String, at most 1 KB); when even that
//! fails, `faas.dlq_errors` counts it.

use std::sync::Weak;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracelake_sampler::TraceHeader;

use super::{Caller, InvokeError, Runtime, Start};

/// Events waiting per function before `Event` invocations are refused.
pub const EVENT_QUEUE_CAPACITY: usize = 10_000;
/// Principal the runtime's pollers invoke as.
pub const SERVICE_PRINCIPAL: &str = "lambda.amazonaws.com";
/// Longest `ErrorMessage` of a dead-letter message, as Lambda truncates it.
pub const MAX_DLQ_ERROR_MESSAGE_BYTES: usize = 1024;

/// Retries of asynchronous invocations.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Waits before each retry of a function error (Lambda: 2 retries).
    pub backoff: Vec<Duration>,
    /// Throttled events are retried until this old.
    pub max_event_age: Duration,
    /// The queue failed events go to.
    pub dead_letter_queue: Option<String>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            backoff: vec![Duration::from_secs(1), Duration::from_secs(2)],
            max_event_age: Duration::from_secs(60),
            dead_letter_queue: None,
        }
    }
}

#[derive(Debug)]
pub(super) struct AsyncEvent {
    request_id: String,
    event: Value,
    trace: Option<TraceHeader>,
    queued_at: Instant,
}

#[derive(Debug)]
pub(super) struct EventQueue {
    sender: mpsc::Sender<AsyncEvent>,
}

impl EventQueue {
    pub(super) fn new() -> (Self, mpsc::Receiver<AsyncEvent>) {
        let (sender, receiver) = mpsc::channel(EVENT_QUEUE_CAPACITY);
        (Self { sender }, receiver)
    }
}

impl Runtime {
    /// Queues an `Event` invocation; its request id.
    pub fn invoke_async(
        &self,
        name: &str,
        event: Value,
        caller: &Caller,
    ) -> Result<String, InvokeError> {
        let function = self.function(name)?;
        self.check_invoke_policy(function, caller)?;
        let request_id = super::request_id();
        let queued = AsyncEvent {
            request_id: request_id.clone(),
            event,
            trace: caller.trace.clone(),
            queued_at: Instant::now(),
        };
        function
            .events
            .sender
            .try_send(queued)
            .map_err(|_| InvokeError::QueueFull(format!("the event queue of {name} is full")))?;
        Ok(request_id)
    }

    async fn deliver(&self, name: &str, queued: AsyncEvent) {
        let Ok(function) = self.function(name).cloned() else {
            return;
        };
        let policy = function.config.retry.clone();
        let start = Start {
            request_id: queued.request_id.clone(),
            trace: queued.trace.clone(),
            links: Vec::new(),
        };
        let mut retries = policy.backoff.iter();
        // `(status, message)` of the last attempt: a function error is
        // answered 200 by `Invoke`, a refusal with its own status.
        let failure = loop {
            let attempt = self
                .invoke_authorized(&function, queued.event.clone(), start.clone())
                .await;
            match attempt {
                Ok(invocation) => match invocation.result {
                    Ok(_) => return,
                    Err(error) => match retries.next() {
                        Some(wait) => tokio::time::sleep(*wait).await,
                        None => break (200, format!("{}: {}", error.kind, error.message)),
                    },
                },
                Err(InvokeError::Throttled(message)) => {
                    if queued.queued_at.elapsed() >= policy.max_event_age {
                        break (429, message);
                    }
                    tokio::time::sleep(Duration::from_millis(50 + fastrand::u64(..100))).await;
                }
                Err(other) => break (other.kind().1, other.message().to_string()),
            }
        };
        self.dead_letter(&function, name, &queued, failure).await;
    }

    async fn dead_letter(
        &self,
        function: &super::Function,
        name: &str,
        queued: &AsyncEvent,
        (status, message): (u16, String),
    ) {
        let (Some(queue), Some(endpoint)) = (
            function.config.retry.dead_letter_queue.as_ref(),
            self.downstream().queue_url.as_ref(),
        ) else {
            tracing::warn!(function = name, status, %message, request_id = %queued.request_id, "asynchronous event dropped: no dead-letter queue");
            function.metrics.dead_letter_failed();
            return;
        };
        let mut request = json!({
            "QueueUrl": format!("{endpoint}/queue/{queue}"),
            "MessageBody": queued.event.to_string(),
            "MessageAttributes": {
                "ErrorCode": {"DataType": "Number", "StringValue": status.to_string()},
                "ErrorMessage": {"DataType": "String", "StringValue": truncate(&message, MAX_DLQ_ERROR_MESSAGE_BYTES)},
                "RequestID": {"DataType": "String", "StringValue": queued.request_id},
            },
        });
        if let Some(header) = &queued.trace {
            request["MessageSystemAttributes"] = json!({"AWSTraceHeader": {"DataType": "String", "StringValue": header.to_string()}});
        }
        let sent = self
            .downstream()
            .client
            .inner()
            .post(endpoint)
            .header("x-amz-target", "AmazonSQS.SendMessage")
            .header("content-type", "application/x-amz-json-1.0")
            .body(request.to_string())
            .send()
            .await
            .and_then(reqwest::Response::error_for_status);
        if let Err(error) = sent {
            tracing::warn!(function = name, %error, "dead-letter delivery failed");
            function.metrics.dead_letter_failed();
        }
    }
}

/// The longest prefix of `text` of at most `max` bytes ending on a
/// character boundary.
fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Runs `name`'s asynchronous events, each in its own task (the
/// concurrency limit applies through [`Runtime::invoke`]). Holds the
/// runtime weakly: dropping the runtime closes the queue and ends this.
pub(super) fn spawn_worker(
    runtime: Weak<super::RuntimeInner>,
    name: String,
    mut events: mpsc::Receiver<AsyncEvent>,
) {
    tokio::spawn(async move {
        while let Some(queued) = events.recv().await {
            let Some(inner) = runtime.upgrade() else {
                return;
            };
            let runtime = Runtime { inner };
            let name = name.clone();
            tokio::spawn(async move { runtime.deliver(&name, queued).await });
        }
    });
}

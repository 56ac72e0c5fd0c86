//! A message queue service speaking a subset of SQS's JSON protocol
//! (`POST /`, `X-Amz-Target: AmazonSQS.<Operation>`): `SendMessage`,
//! `ReceiveMessage` (batches of up to 10, visibility timeout, long polling
//! up to 20 s), `DeleteMessage`, `GetQueueAttributes`. Callers record it as
//! an `aws` call (an inferred `AWS::SQS::Queue` node).
//!
//! A message keeps the sender's trace header as the `AWSTraceHeader`
//! system attribute, as SQS does, so the consumer continues the trace. A
//! queue with a redrive policy moves a message received
//! `max_receive_count` times to its dead-letter queue.
//!
//! The runtime's poller and dead-letter delivery use the same operations
//! in-process ([`QueueService::send`], [`QueueService::receive`],
//! [`QueueService::delete`]).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::time::Instant;
use tracelake_aws_json::{AwsError, json_body, json_response};

use super::table::operation;
use crate::document::now_seconds;

const TARGET_PREFIX: &str = "AmazonSQS.";
const MAX_BATCH: usize = 10;
const MAX_WAIT: Duration = Duration::from_secs(20);
const DEFAULT_VISIBILITY: Duration = Duration::from_secs(30);
/// Longest visibility timeout, as SQS (12 hours).
const MAX_VISIBILITY: Duration = Duration::from_secs(43_200);
/// Largest message body, as SQS.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// Most messages a queue holds (it lives in memory); sends beyond are
/// refused with `AWS.SimpleQueueService.OverLimit`.
pub const MAX_MESSAGES: usize = 100_000;

/// One queue's settings.
#[derive(Debug, Clone, Default)]
pub struct QueueSpec {
    pub name: String,
    /// `(dead-letter queue, max receive count)`.
    pub redrive: Option<(String, u32)>,
}

/// A received message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub id: String,
    pub receipt_handle: String,
    pub body: String,
    /// Epoch milliseconds when sent (`SentTimestamp`).
    pub sent_ms: u64,
    pub receive_count: u32,
    pub trace_header: Option<String>,
}

impl Message {
    /// The system attributes SQS answers with a message (and Lambda puts
    /// in its SQS event records): `SentTimestamp`,
    /// `ApproximateReceiveCount`, `AWSTraceHeader`.
    pub fn attributes(&self) -> Value {
        let mut attributes = json!({
            "SentTimestamp": self.sent_ms.to_string(),
            "ApproximateReceiveCount": self.receive_count.to_string(),
        });
        if let Some(header) = &self.trace_header {
            attributes["AWSTraceHeader"] = json!(header);
        }
        attributes
    }
}

#[derive(Debug)]
struct Stored {
    message: Message,
    visible_at: Instant,
}

#[derive(Debug, Default)]
struct Queue {
    redrive: Option<(String, u32)>,
    messages: Mutex<VecDeque<Stored>>,
    arrived: Notify,
}

/// The queue service's state.
#[derive(Debug, Clone)]
pub struct QueueService {
    queues: Arc<HashMap<String, Queue>>,
}

fn error(kind: &'static str, message: impl Into<String>) -> AwsError {
    AwsError {
        status: StatusCode::BAD_REQUEST,
        error_type: kind,
        message: message.into(),
    }
}

fn now_ms() -> u64 {
    (now_seconds() * 1_000.0) as u64
}

/// The queue name of a `QueueUrl` (its last path segment) or a name.
pub fn queue_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

impl QueueService {
    pub fn new(specs: &[QueueSpec]) -> Self {
        let queues = specs
            .iter()
            .map(|spec| {
                (
                    spec.name.clone(),
                    Queue {
                        redrive: spec.redrive.clone(),
                        ..Queue::default()
                    },
                )
            })
            .collect();
        Self {
            queues: Arc::new(queues),
        }
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/", post(dispatch))
            .with_state(self.clone())
    }

    fn queue(&self, url: &str) -> Result<&Queue, AwsError> {
        let name = queue_name(url);
        self.queues.get(name).ok_or_else(|| {
            error(
                "AWS.SimpleQueueService.NonExistentQueue",
                format!("The specified queue {name} does not exist"),
            )
        })
    }

    /// Sends a message; its id.
    pub fn send(
        &self,
        queue: &str,
        body: String,
        trace_header: Option<String>,
    ) -> Result<String, AwsError> {
        if body.is_empty() || body.len() > MAX_BODY_BYTES {
            return Err(error(
                "InvalidParameterValue",
                format!("MessageBody must be 1 to {MAX_BODY_BYTES} bytes"),
            ));
        }
        let queue = self.queue(queue)?;
        let id = format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            fastrand::u32(..),
            fastrand::u16(..),
            fastrand::u16(..0x1000),
            fastrand::u16(..0x1000),
            fastrand::u64(..1 << 48)
        );
        let mut messages = queue.messages.lock();
        if messages.len() >= MAX_MESSAGES {
            return Err(error(
                "AWS.SimpleQueueService.OverLimit",
                format!("the queue holds {MAX_MESSAGES} messages, its limit"),
            ));
        }
        messages.push_back(Stored {
            message: Message {
                id: id.clone(),
                receipt_handle: String::new(),
                body,
                sent_ms: now_ms(),
                receive_count: 0,
                trace_header,
            },
            visible_at: Instant::now(),
        });
        drop(messages);
        queue.arrived.notify_waiters();
        Ok(id)
    }

    /// Receives up to `max` visible messages, waiting up to `wait` for the
    /// first; each stays invisible for `visibility` unless deleted.
    pub async fn receive(
        &self,
        queue_url: &str,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> Result<Vec<Message>, AwsError> {
        let queue = self.queue(queue_url)?;
        let deadline = Instant::now() + wait.min(MAX_WAIT);
        loop {
            let arrived = queue.arrived.notified();
            let (batch, dead) = self.take_visible(
                queue,
                max.clamp(1, MAX_BATCH),
                visibility.min(MAX_VISIBILITY),
            );
            if let Some((dead_letter, messages)) = dead {
                for message in messages {
                    // The dead-letter queue exists (checked at redrive).
                    let _ = self.send(&dead_letter, message.body, message.trace_header);
                }
            }
            if !batch.is_empty() || Instant::now() >= deadline {
                return Ok(batch);
            }
            // Woken by a send, or retried when an invisible message may
            // have become visible again.
            let _ = tokio::time::timeout_at(
                deadline.min(Instant::now() + Duration::from_millis(200)),
                arrived,
            )
            .await;
        }
    }

    #[allow(clippy::type_complexity)]
    fn take_visible(
        &self,
        queue: &Queue,
        max: usize,
        visibility: Duration,
    ) -> (Vec<Message>, Option<(String, Vec<Message>)>) {
        let now = Instant::now();
        let mut batch = Vec::new();
        let mut dead = Vec::new();
        let mut messages = queue.messages.lock();
        messages.retain_mut(|stored| {
            if batch.len() >= max || stored.visible_at > now {
                return true;
            }
            if let Some((_, max_receives)) = &queue.redrive
                && stored.message.receive_count >= *max_receives
            {
                dead.push(stored.message.clone());
                return false;
            }
            stored.message.receive_count += 1;
            stored.message.receipt_handle =
                format!("{}:{}", stored.message.id, stored.message.receive_count);
            stored.visible_at = now + visibility;
            batch.push(stored.message.clone());
            true
        });
        let dead = match (&queue.redrive, dead.is_empty()) {
            (Some((target, _)), false) if self.queues.contains_key(target) => {
                Some((target.clone(), dead))
            }
            _ => None,
        };
        (batch, dead)
    }

    /// Deletes a received message by its receipt handle.
    pub fn delete(&self, queue_url: &str, receipt_handle: &str) -> Result<(), AwsError> {
        let queue = self.queue(queue_url)?;
        let mut messages = queue.messages.lock();
        let before = messages.len();
        messages.retain(|stored| stored.message.receipt_handle != receipt_handle);
        if messages.len() == before {
            return Err(error(
                "ReceiptHandleIsInvalid",
                format!("The receipt handle {receipt_handle:?} is not valid"),
            ));
        }
        Ok(())
    }

    /// `(visible, in flight)` message counts.
    pub fn depth(&self, queue_url: &str) -> Result<(usize, usize), AwsError> {
        let queue = self.queue(queue_url)?;
        let now = Instant::now();
        let messages = queue.messages.lock();
        let visible = messages
            .iter()
            .filter(|stored| stored.visible_at <= now)
            .count();
        Ok((visible, messages.len() - visible))
    }

    /// The oldest visible message's age, for a poller's iterator age.
    pub fn oldest_age_ms(&self, queue_url: &str) -> Option<u64> {
        let queue = self.queue(queue_url).ok()?;
        let now = Instant::now();
        let oldest = queue
            .messages
            .lock()
            .iter()
            .filter(|stored| stored.visible_at <= now)
            .map(|stored| stored.message.sent_ms)
            .min()?;
        Some(now_ms().saturating_sub(oldest))
    }

    async fn operate(&self, operation: &str, request: &Value) -> Result<Value, AwsError> {
        let url = request["QueueUrl"]
            .as_str()
            .ok_or_else(|| error("MissingParameter", "QueueUrl is required"))?;
        match operation {
            "SendMessage" => {
                let body = request["MessageBody"]
                    .as_str()
                    .ok_or_else(|| error("MissingParameter", "MessageBody is required"))?;
                let header = request["MessageSystemAttributes"]["AWSTraceHeader"]["StringValue"]
                    .as_str()
                    .map(str::to_string);
                let id = self.send(url, body.to_string(), header)?;
                Ok(json!({"MessageId": id}))
            }
            "ReceiveMessage" => {
                let max = request["MaxNumberOfMessages"].as_u64().unwrap_or(1) as usize;
                let visibility = request["VisibilityTimeout"]
                    .as_u64()
                    .map_or(DEFAULT_VISIBILITY, Duration::from_secs);
                let wait = Duration::from_secs(request["WaitTimeSeconds"].as_u64().unwrap_or(0));
                let messages = self.receive(url, max, visibility, wait).await?;
                let messages: Vec<Value> = messages
                    .into_iter()
                    .map(|message| {
                        let attributes = message.attributes();
                        json!({
                            "MessageId": message.id,
                            "ReceiptHandle": message.receipt_handle,
                            "Body": message.body,
                            "Attributes": attributes,
                        })
                    })
                    .collect();
                Ok(json!({"Messages": messages}))
            }
            "DeleteMessage" => {
                let handle = request["ReceiptHandle"]
                    .as_str()
                    .ok_or_else(|| error("MissingParameter", "ReceiptHandle is required"))?;
                self.delete(url, handle)?;
                Ok(json!({}))
            }
            "GetQueueAttributes" => {
                let (visible, in_flight) = self.depth(url)?;
                Ok(json!({"Attributes": {
                    "ApproximateNumberOfMessages": visible.to_string(),
                    "ApproximateNumberOfMessagesNotVisible": in_flight.to_string(),
                }}))
            }
            other => Err(error(
                "UnsupportedOperation",
                format!("operation {other:?} is not supported"),
            )),
        }
    }
}

async fn dispatch(State(service): State<QueueService>, headers: HeaderMap, body: Body) -> Response {
    let answer = async {
        let operation = operation(&headers, TARGET_PREFIX)?;
        let request: Value = json_body(body).await?;
        service.operate(operation, &request).await
    };
    match answer.await {
        Ok(value) => json_response(&value),
        Err(error) => error.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> QueueService {
        QueueService::new(&[
            QueueSpec {
                name: "orders".into(),
                redrive: Some(("orders-dlq".into(), 2)),
            },
            QueueSpec {
                name: "orders-dlq".into(),
                redrive: None,
            },
        ])
    }

    #[tokio::test]
    async fn batches_visibility_delete_and_redrive() {
        let queues = service();
        for index in 0..12 {
            queues
                .send(
                    "orders",
                    format!("order-{index}"),
                    Some("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1".into()),
                )
                .unwrap();
        }
        let none = Duration::ZERO;
        let first = queues
            .receive("http://q/orders", 20, Duration::from_secs(60), none)
            .await
            .unwrap();
        assert_eq!(first.len(), 10, "a batch is at most 10");
        assert!(first[0].trace_header.is_some());
        let second = queues
            .receive("orders", 10, Duration::ZERO, none)
            .await
            .unwrap();
        assert_eq!(second.len(), 2, "the first ten are invisible");
        for message in &first {
            queues.delete("orders", &message.receipt_handle).unwrap();
        }
        assert!(queues.delete("orders", &first[0].receipt_handle).is_err());
        assert_eq!(queues.depth("orders").unwrap(), (2, 0));

        // The two left (zero visibility, so visible again at once) are
        // received a second time; the third receive moves them to the
        // dead-letter queue (max receive count 2).
        let again = queues
            .receive("orders", 10, Duration::ZERO, none)
            .await
            .unwrap();
        assert_eq!(again.len(), 2);
        assert_eq!(again[0].receive_count, 2);
        let moved = queues
            .receive("orders", 10, Duration::ZERO, none)
            .await
            .unwrap();
        assert!(moved.is_empty());
        let dead = queues
            .receive("orders-dlq", 10, Duration::ZERO, none)
            .await
            .unwrap();
        assert_eq!(dead.len(), 2);
        assert!(queues.send("nope", "x".into(), None).is_err());
        assert!(queues.send("orders", String::new(), None).is_err());
    }

    #[test]
    fn a_full_queue_refuses_sends() {
        let queues = service();
        for index in 0..MAX_MESSAGES {
            queues.send("orders-dlq", index.to_string(), None).unwrap();
        }
        let refused = queues
            .send("orders-dlq", "one more".into(), None)
            .unwrap_err();
        assert_eq!(refused.error_type, "AWS.SimpleQueueService.OverLimit");
        assert!(queues.send("orders", "elsewhere".into(), None).is_ok());
    }

    #[tokio::test]
    async fn long_polling_wakes_on_send() {
        let queues = service();
        let waiting = {
            let queues = queues.clone();
            tokio::spawn(async move {
                queues
                    .receive("orders", 1, DEFAULT_VISIBILITY, Duration::from_secs(10))
                    .await
                    .unwrap()
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        queues.send("orders", "hello".into(), None).unwrap();
        let received = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken before the wait ends")
            .unwrap();
        assert_eq!(received[0].body, "hello");
    }
}

//! A message queue service speaking a subset of SQS's JSON protocol
//! (`POST /`, `X-Amz-Target: AmazonSQS.<Operation>`): `SendMessage`,
//! `ReceiveMessage` (batches of up to 10, visibility timeout, long polling
//! up to 20 s), `DeleteMessage`, `GetQueueAttributes`. Callers record it as
//! an `aws` call (an inferred `AWS::SQS::Queue` node).
//!
//! Messages keep their `MessageAttributes` (`String`, `Number` and
//! `Binary` types, custom suffixes such as `String.json` included, at most
//! 10). `ReceiveMessage` returns those named in `MessageAttributeNames`
//! (`All`, `.*`, a `prefix.*` or a name) with `MD5OfMessageAttributes`
//! over the returned ones, as SQS computes it ([`md5_of_message_attributes`]);
//! bodies carry `MD5OfBody` / `MD5OfMessageBody`.
//!
//! A message keeps the sender's trace header as the `AWSTraceHeader`
//! system attribute, as SQS does, so the consumer continues the trace. A
//! queue with a redrive policy moves a message received
//! `max_receive_count` times to its dead-letter queue.
//!
//! The runtime's poller and dead-letter delivery use the same operations
//! in-process ([`QueueService::send`], [`QueueService::receive`],
//! [`QueueService::delete`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
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

/// Most message attributes of one message, as SQS.
pub const MAX_MESSAGE_ATTRIBUTES: usize = 10;
/// Longest attribute name, as SQS.
pub const MAX_ATTRIBUTE_NAME_CHARS: usize = 256;

/// A message attribute's value: text for the `String` and `Number` types,
/// bytes for `Binary`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttributeValue {
    Text(String),
    Binary(Vec<u8>),
}

/// A message attribute (`MessageAttributeValue`): its data type as sent
/// (`String`, `Number`, `Binary`, optionally with a `.custom` suffix) and
/// its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageAttribute {
    pub data_type: String,
    pub value: AttributeValue,
}

/// A message's attributes by name (sorted, as SQS digests them).
pub type MessageAttributes = BTreeMap<String, MessageAttribute>;

impl MessageAttribute {
    pub fn string(value: impl Into<String>) -> Self {
        Self {
            data_type: "String".into(),
            value: AttributeValue::Text(value.into()),
        }
    }

    pub fn number(value: impl std::fmt::Display) -> Self {
        Self {
            data_type: "Number".into(),
            value: AttributeValue::Text(value.to_string()),
        }
    }

    /// Reads `{"DataType", "StringValue" | "BinaryValue"}` (binary in
    /// base64, as the JSON protocol sends it), checked as SQS checks it.
    pub fn from_json(name: &str, value: &Value) -> Result<Self, AwsError> {
        let invalid = |why: String| {
            error(
                "InvalidParameterValue",
                format!("message attribute {name:?}: {why}"),
            )
        };
        let data_type = value["DataType"]
            .as_str()
            .ok_or_else(|| invalid("DataType is required".into()))?;
        let base = data_type.split('.').next().unwrap_or_default();
        let text = value["StringValue"].as_str();
        let binary = value["BinaryValue"].as_str();
        let attribute_value = match base {
            "String" | "Number" => {
                let text = text.ok_or_else(|| {
                    invalid(format!("a {data_type} attribute needs a StringValue"))
                })?;
                if base == "Number" && !is_sqs_number(text) {
                    return Err(invalid(format!("{text:?} is not a number")));
                }
                AttributeValue::Text(text.to_string())
            }
            "Binary" => {
                let encoded = binary.ok_or_else(|| {
                    invalid(format!("a {data_type} attribute needs a BinaryValue"))
                })?;
                let bytes =
                    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, encoded)
                        .map_err(|_| invalid("BinaryValue is not base64".into()))?;
                AttributeValue::Binary(bytes)
            }
            _ => {
                return Err(invalid(format!(
                    "DataType {data_type:?} is not String, Number or Binary (with an optional .suffix)"
                )));
            }
        };
        Ok(Self {
            data_type: data_type.to_string(),
            value: attribute_value,
        })
    }

    /// The `MessageAttributeValue` of the JSON protocol.
    pub fn to_json(&self) -> Value {
        match &self.value {
            AttributeValue::Text(text) => json!({"DataType": self.data_type, "StringValue": text}),
            AttributeValue::Binary(bytes) => json!({
                "DataType": self.data_type,
                "BinaryValue": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes),
            }),
        }
    }

    /// The attribute in Lambda's SQS event record shape.
    pub fn to_event_json(&self) -> Value {
        let mut out = json!({
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": self.data_type,
        });
        match &self.value {
            AttributeValue::Text(text) => out["stringValue"] = json!(text),
            AttributeValue::Binary(bytes) => {
                out["binaryValue"] = json!(base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    bytes
                ));
            }
        }
        out
    }
}

/// A `Number` attribute's text: digits with an optional sign, point and
/// exponent (SQS accepts up to 38 significant digits).
fn is_sqs_number(text: &str) -> bool {
    let digits = text.chars().filter(char::is_ascii_digit).count();
    !text.is_empty() && digits > 0 && digits <= 38 && text.parse::<f64>().is_ok_and(f64::is_finite)
}

/// The hex MD5 of a body (`MD5OfBody`).
pub fn md5_of_body(body: &str) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(body.as_bytes()))
}

/// `MD5OfMessageAttributes` as SQS computes it: over the attributes sorted
/// by name, each encoded as the name, the data type (each a 4-byte
/// big-endian length and UTF-8 bytes), a transport byte (1 for text, 2 for
/// binary) and the value (length and bytes). `None` without attributes.
pub fn md5_of_message_attributes(attributes: &MessageAttributes) -> Option<String> {
    use md5::Digest;
    if attributes.is_empty() {
        return None;
    }
    fn field(digest: &mut md5::Md5, bytes: &[u8]) {
        digest.update((bytes.len() as u32).to_be_bytes());
        digest.update(bytes);
    }
    let mut digest = md5::Md5::new();
    for (name, attribute) in attributes {
        field(&mut digest, name.as_bytes());
        field(&mut digest, attribute.data_type.as_bytes());
        match &attribute.value {
            AttributeValue::Text(text) => {
                digest.update([1_u8]);
                field(&mut digest, text.as_bytes());
            }
            AttributeValue::Binary(bytes) => {
                digest.update([2_u8]);
                field(&mut digest, bytes);
            }
        }
    }
    Some(hex::encode(digest.finalize()))
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
    pub message_attributes: MessageAttributes,
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

    /// Sends a message without message attributes; its id.
    pub fn send(
        &self,
        queue: &str,
        body: String,
        trace_header: Option<String>,
    ) -> Result<String, AwsError> {
        self.send_with_attributes(queue, body, trace_header, MessageAttributes::new())
    }

    /// Sends a message with its message attributes; its id.
    pub fn send_with_attributes(
        &self,
        queue: &str,
        body: String,
        trace_header: Option<String>,
        message_attributes: MessageAttributes,
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
                message_attributes,
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
                    let _ = self.send_with_attributes(
                        &dead_letter,
                        message.body,
                        message.trace_header,
                        message.message_attributes,
                    );
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
                let attributes = parse_message_attributes(&request["MessageAttributes"])?;
                let md5_of_attributes = md5_of_message_attributes(&attributes);
                let id = self.send_with_attributes(url, body.to_string(), header, attributes)?;
                let mut answer = json!({"MessageId": id, "MD5OfMessageBody": md5_of_body(body)});
                if let Some(md5) = md5_of_attributes {
                    answer["MD5OfMessageAttributes"] = json!(md5);
                }
                Ok(answer)
            }
            "ReceiveMessage" => {
                let max = request["MaxNumberOfMessages"].as_u64().unwrap_or(1) as usize;
                let visibility = request["VisibilityTimeout"]
                    .as_u64()
                    .map_or(DEFAULT_VISIBILITY, Duration::from_secs);
                let wait = Duration::from_secs(request["WaitTimeSeconds"].as_u64().unwrap_or(0));
                let wanted = AttributeSelection::parse(&request["MessageAttributeNames"])?;
                let messages = self.receive(url, max, visibility, wait).await?;
                let messages: Vec<Value> = messages
                    .into_iter()
                    .map(|message| {
                        let attributes = message.attributes();
                        let mut out = json!({
                            "MessageId": message.id,
                            "ReceiptHandle": message.receipt_handle,
                            "MD5OfBody": md5_of_body(&message.body),
                            "Body": message.body,
                            "Attributes": attributes,
                        });
                        let selected: MessageAttributes = message
                            .message_attributes
                            .into_iter()
                            .filter(|(name, _)| wanted.includes(name))
                            .collect();
                        if let Some(md5) = md5_of_message_attributes(&selected) {
                            out["MD5OfMessageAttributes"] = json!(md5);
                            out["MessageAttributes"] = selected
                                .iter()
                                .map(|(name, attribute)| (name.clone(), attribute.to_json()))
                                .collect::<serde_json::Map<String, Value>>()
                                .into();
                        }
                        out
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

/// Reads `MessageAttributes` of a `SendMessage` (absent: none), checked
/// as SQS checks names, types and the count.
fn parse_message_attributes(value: &Value) -> Result<MessageAttributes, AwsError> {
    if value.is_null() {
        return Ok(MessageAttributes::new());
    }
    let Some(entries) = value.as_object() else {
        return Err(error(
            "InvalidParameterValue",
            "MessageAttributes must be a map of name to MessageAttributeValue",
        ));
    };
    if entries.len() > MAX_MESSAGE_ATTRIBUTES {
        return Err(error(
            "InvalidParameterValue",
            format!(
                "{} message attributes; a message has at most {MAX_MESSAGE_ATTRIBUTES}",
                entries.len()
            ),
        ));
    }
    let mut attributes = MessageAttributes::new();
    for (name, attribute) in entries {
        check_attribute_name(name)?;
        attributes.insert(name.clone(), MessageAttribute::from_json(name, attribute)?);
    }
    Ok(attributes)
}

/// SQS's rules for attribute names: 1 to 256 of `A-Za-z0-9_-.`, no
/// leading, trailing or doubled period, no `AWS.` or `Amazon.` prefix.
fn check_attribute_name(name: &str) -> Result<(), AwsError> {
    let lowercase = name.to_ascii_lowercase();
    let valid = !name.is_empty()
        && name.chars().count() <= MAX_ATTRIBUTE_NAME_CHARS
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !name.starts_with('.')
        && !name.ends_with('.')
        && !name.contains("..")
        && !lowercase.starts_with("aws.")
        && !lowercase.starts_with("amazon.");
    if valid {
        Ok(())
    } else {
        Err(error(
            "InvalidParameterValue",
            format!(
                "message attribute name {name:?} is invalid: 1 to {MAX_ATTRIBUTE_NAME_CHARS} of A-Z, a-z, 0-9, _, -, ., no leading, trailing or doubled period, no AWS. or Amazon. prefix"
            ),
        ))
    }
}

/// Which message attributes a `ReceiveMessage` asked for.
#[derive(Debug, Default)]
struct AttributeSelection {
    all: bool,
    names: Vec<String>,
    prefixes: Vec<String>,
}

impl AttributeSelection {
    fn parse(value: &Value) -> Result<Self, AwsError> {
        let mut selection = Self::default();
        if value.is_null() {
            return Ok(selection);
        }
        let Some(names) = value.as_array() else {
            return Err(error(
                "InvalidParameterValue",
                "MessageAttributeNames must be a list of names",
            ));
        };
        for name in names {
            let Some(name) = name.as_str() else {
                return Err(error(
                    "InvalidParameterValue",
                    "MessageAttributeNames must be a list of names",
                ));
            };
            if name == "All" || name == ".*" {
                selection.all = true;
            } else if let Some(prefix) = name.strip_suffix(".*") {
                selection.prefixes.push(format!("{prefix}."));
            } else {
                selection.names.push(name.to_string());
            }
        }
        Ok(selection)
    }

    fn includes(&self, name: &str) -> bool {
        self.all
            || self.names.iter().any(|wanted| wanted == name)
            || self.prefixes.iter().any(|prefix| name.starts_with(prefix))
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

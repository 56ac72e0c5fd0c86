//! What a handler gets besides its event: the invocation's facts (request
//! id, function name and version, memory, remaining time, log group), its
//! environment, CPU work scaled by memory, and traced calls to the
//! downstream — each checked against the function's execution policy; a
//! denied call is recorded as an error with `AccessDeniedException`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Caller, InvokeError, Runtime};
use crate::client::{Call, TracedClient};
use crate::tracer::{Subsegment, TraceContext};

/// Where the downstream services listen.
#[derive(Debug, Clone, Default)]
pub struct Downstream {
    /// The table service (DynamoDB protocol), e.g. `http://127.0.0.1:8000`.
    pub table_url: Option<String>,
    /// The queue service (SQS protocol).
    pub queue_url: Option<String>,
    pub client: TracedClient,
}

/// Why a call from a handler failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The execution policy does not allow the resource.
    Denied(String),
    /// The callee answered with an error (`kind` as AWS names it).
    Failed {
        status: u16,
        kind: String,
        message: String,
    },
    /// No answer (refused, timed out).
    Transport(String),
}

impl CallError {
    pub fn is_throttle(&self) -> bool {
        matches!(self, Self::Failed { status: 429, .. })
            || matches!(self, Self::Failed { kind, .. } if kind.contains("Throughput") || kind.contains("TooManyRequests"))
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Denied(message) | Self::Transport(message) => f.write_str(message),
            Self::Failed { kind, message, .. } => write!(f, "{kind}: {message}"),
        }
    }
}

/// The facts of one invocation.
#[derive(Debug)]
pub(super) struct Invocation {
    pub(super) request_id: String,
    pub(super) function_name: String,
    pub(super) function_version: String,
    pub(super) memory_mb: u32,
    pub(super) deadline: Instant,
    pub(super) cpu_slowdown: f64,
    pub(super) environment: BTreeMap<String, String>,
    pub(super) execution_policy: Vec<String>,
}

/// The handler's context.
#[derive(Clone)]
pub struct Context {
    invocation: Arc<Invocation>,
    trace: TraceContext,
    runtime: Runtime,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("request_id", &self.invocation.request_id)
            .field("function_name", &self.invocation.function_name)
            .finish_non_exhaustive()
    }
}

impl Context {
    pub(super) fn new(invocation: Invocation, trace: TraceContext, runtime: Runtime) -> Self {
        Self {
            invocation: Arc::new(invocation),
            trace,
            runtime,
        }
    }

    pub fn request_id(&self) -> &str {
        &self.invocation.request_id
    }

    pub fn function_name(&self) -> &str {
        &self.invocation.function_name
    }

    pub fn function_version(&self) -> &str {
        &self.invocation.function_version
    }

    pub fn memory_mb(&self) -> u32 {
        self.invocation.memory_mb
    }

    pub fn log_group(&self) -> String {
        format!("/aws/lambda/{}", self.invocation.function_name)
    }

    pub fn remaining_time(&self) -> Duration {
        self.invocation
            .deadline
            .saturating_duration_since(Instant::now())
    }

    /// An environment variable (secrets already decrypted).
    pub fn env(&self, key: &str) -> Option<&str> {
        self.invocation.environment.get(key).map(String::as_str)
    }

    /// The invocation's trace (annotations, metadata, own subsegments).
    pub fn trace(&self) -> &TraceContext {
        &self.trace
    }

    /// CPU work that takes `work` at one full vCPU, slowed by the share
    /// the memory setting buys (see the module docs).
    pub async fn compute(&self, work: Duration) {
        tokio::time::sleep(work.mul_f64(self.invocation.cpu_slowdown)).await;
    }

    fn allowed(&self, resource: &str) -> bool {
        self.invocation
            .execution_policy
            .iter()
            .any(|granted| granted == "*" || granted == resource)
    }

    /// Refuses `resource` unless the execution policy grants it, recording
    /// the denied call on `subsegment`.
    fn authorize(&self, subsegment: &mut Subsegment, resource: &str) -> Result<(), CallError> {
        if self.allowed(resource) {
            return Ok(());
        }
        let message = format!(
            "{} is not authorized to access {resource}",
            self.invocation.function_name
        );
        subsegment.record(|document| {
            document.error = true;
            document.add_exception("AccessDeniedException", &message, false);
        });
        Err(CallError::Denied(message))
    }

    /// An AWS-protocol call (`X-Amz-Target`) to a downstream service.
    async fn aws_call(
        &self,
        mut subsegment: Subsegment,
        call: Call,
        url: Option<&String>,
        target: String,
        request: Value,
    ) -> Result<Value, CallError> {
        let Some(url) = url else {
            let message = format!("no endpoint for {}", call.name);
            subsegment
                .record(|document| document.add_exception("ConfigurationError", &message, false));
            return Err(CallError::Transport(message));
        };
        let client = &self.runtime.downstream().client;
        let http_request = client
            .inner()
            .post(url)
            .header("x-amz-target", target)
            .header("content-type", "application/x-amz-json-1.0")
            .body(request.to_string())
            .timeout(self.remaining_time().max(Duration::from_millis(1)))
            .build()
            .map_err(|error| CallError::Transport(error.to_string()))?;
        let response = client
            .send_in(subsegment, call, http_request)
            .await
            .map_err(|error| CallError::Transport(error.to_string()))?;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status >= 400 {
            return Err(CallError::Failed {
                status,
                kind: body["__type"].as_str().unwrap_or("Unknown").to_string(),
                message: body["message"].as_str().unwrap_or_default().to_string(),
            });
        }
        Ok(body)
    }

    /// A table operation (`PutItem`, `GetItem`, ...) on `table`.
    pub async fn table(
        &self,
        operation: &str,
        table: &str,
        mut request: Value,
    ) -> Result<Value, CallError> {
        let mut subsegment = self.trace.subsegment("DynamoDB");
        subsegment.record(|document| {
            document.namespace = Some("aws");
            document.aws.insert("operation".into(), json!(operation));
            document.aws.insert("table_name".into(), json!(table));
        });
        self.authorize(&mut subsegment, &format!("table:{table}"))?;
        request["TableName"] = json!(table);
        let call = Call::aws("DynamoDB", operation, &[("table_name", table)]);
        let url = self.runtime.downstream().table_url.clone();
        self.aws_call(
            subsegment,
            call,
            url.as_ref(),
            format!("DynamoDB_20120810.{operation}"),
            request,
        )
        .await
    }

    /// Sends `body` to `queue`; the message carries this trace.
    pub async fn send_message(&self, queue: &str, body: &str) -> Result<String, CallError> {
        let mut subsegment = self.trace.subsegment("SQS");
        let queue_url = format!(
            "{}/queue/{queue}",
            self.runtime
                .downstream()
                .queue_url
                .clone()
                .unwrap_or_default()
        );
        subsegment.record(|document| {
            document.namespace = Some("aws");
            document
                .aws
                .insert("operation".into(), json!("SendMessage"));
            document
                .aws
                .insert("queue_url".into(), json!(queue_url.clone()));
        });
        self.authorize(&mut subsegment, &format!("queue:{queue}"))?;
        let header = subsegment.header().to_string();
        let request = json!({
            "QueueUrl": queue_url,
            "MessageBody": body,
            "MessageSystemAttributes": {"AWSTraceHeader": {"DataType": "String", "StringValue": header}},
        });
        let call = Call::aws("SQS", "SendMessage", &[("queue_url", &queue_url)]);
        let url = self.runtime.downstream().queue_url.clone();
        let answer = self
            .aws_call(
                subsegment,
                call,
                url.as_ref(),
                "AmazonSQS.SendMessage".into(),
                request,
            )
            .await?;
        Ok(answer["MessageId"].as_str().unwrap_or_default().to_string())
    }

    /// Queues an asynchronous (`Event`) invocation of another function; its
    /// request id. The callee's segment continues this trace. Invocations
    /// are `Lambda` subsegments (X-Ray's name) with the function in
    /// `aws.function_name`: answered, the edge goes to the function; refused
    /// (throttled), to an inferred `AWS::Lambda` node.
    pub async fn invoke_async(&self, function: &str, event: Value) -> Result<String, CallError> {
        let mut subsegment = self.trace.subsegment("Lambda");
        subsegment.record(|document| {
            document.namespace = Some("aws");
            document.aws.insert("operation".into(), json!("Invoke"));
            document.aws.insert("function_name".into(), json!(function));
            document
                .aws
                .insert("invocation_type".into(), json!("Event"));
        });
        self.authorize(&mut subsegment, &format!("function:{function}"))?;
        let caller = Caller {
            principal: format!("function:{}", self.invocation.function_name),
            trace: Some(subsegment.header()),
        };
        let outcome = self.runtime.invoke_async(function, event, &caller);
        if let Err(error) = &outcome {
            let (kind, status) = error.kind();
            subsegment.record(|document| {
                document.record_status(status);
                document.add_exception(kind, error.message(), true);
            });
        }
        subsegment.finish();
        outcome.map_err(CallError::from)
    }

    /// Invokes another function synchronously, as this function's principal.
    pub async fn invoke(&self, function: &str, event: Value) -> Result<Value, CallError> {
        let mut subsegment = self.trace.subsegment("Lambda");
        subsegment.record(|document| {
            document.namespace = Some("aws");
            document.aws.insert("operation".into(), json!("Invoke"));
            document.aws.insert("function_name".into(), json!(function));
        });
        self.authorize(&mut subsegment, &format!("function:{function}"))?;
        let caller = Caller {
            principal: format!("function:{}", self.invocation.function_name),
            trace: Some(subsegment.header()),
        };
        let answer = self.runtime.invoke(function, event, &caller).await;
        let outcome = match answer {
            Err(error) => {
                let (kind, status) = error.kind();
                subsegment.record(|document| {
                    document.record_status(status);
                    document.add_exception(kind, error.message(), true);
                });
                Err(CallError::Failed {
                    status,
                    kind: kind.to_string(),
                    message: error.message().to_string(),
                })
            }
            Ok(invocation) => match invocation.result {
                Ok(value) => Ok(value),
                Err(error) => {
                    subsegment.record(|document| {
                        document.fault = true;
                        document.add_exception(&error.kind, &error.message, true);
                    });
                    Err(CallError::Failed {
                        status: 200,
                        kind: error.kind,
                        message: error.message,
                    })
                }
            },
        };
        subsegment.finish();
        outcome
    }
}

impl From<InvokeError> for CallError {
    fn from(error: InvokeError) -> Self {
        let (kind, status) = error.kind();
        Self::Failed {
            status,
            kind: kind.to_string(),
            message: error.message().to_string(),
        }
    }
}

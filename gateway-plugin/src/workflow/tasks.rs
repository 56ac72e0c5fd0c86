//! What a Task state calls, and the clock the engine waits on.
//!
//! Errors are named as Step Functions names them: a function's own
//! `errorType` (`PaymentDeclined`), `Lambda.TooManyRequestsException` for a
//! throttled invocation, `States.Timeout` when the task's `TimeoutSeconds`
//! passed, `States.TaskFailed` for an HTTP endpoint that failed or
//! anything else that went wrong.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::Value;
use tracelake_sampler::TraceHeader;

use super::definition::Resource;
use crate::runtime::{Caller, InvokeError, Runtime};

/// A task's failure: `Error` and `Cause`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskError {
    pub error: String,
    pub cause: String,
}

impl TaskError {
    pub fn new(error: &str, cause: impl Into<String>) -> Self {
        Self {
            error: error.to_string(),
            cause: cause.into(),
        }
    }
}

pub type TaskFuture = Pin<Box<dyn Future<Output = Result<Value, TaskError>> + Send>>;

/// Runs a task's resource with its input, carrying `trace` downstream.
pub trait TaskRunner: Send + Sync + std::fmt::Debug {
    fn run(&self, resource: &Resource, input: Value, trace: Option<TraceHeader>) -> TaskFuture;
}

/// The principal tasks invoke functions as.
pub const PRINCIPAL: &str = "states.amazonaws.com";

/// Functions of a runtime in this process; HTTP endpoints over HTTP.
#[derive(Debug, Clone)]
pub struct RuntimeTasks {
    pub runtime: Runtime,
    pub client: reqwest::Client,
}

fn invoke_error(error: InvokeError) -> TaskError {
    match error {
        InvokeError::Throttled(message) | InvokeError::QueueFull(message) => {
            TaskError::new("Lambda.TooManyRequestsException", message)
        }
        InvokeError::NotFound(message) => {
            TaskError::new("Lambda.ResourceNotFoundException", message)
        }
        InvokeError::AccessDenied(message) => {
            TaskError::new("Lambda.AccessDeniedException", message)
        }
    }
}

impl TaskRunner for RuntimeTasks {
    fn run(&self, resource: &Resource, input: Value, trace: Option<TraceHeader>) -> TaskFuture {
        let resource = resource.clone();
        let this = self.clone();
        Box::pin(async move {
            match resource {
                Resource::Function(name) => {
                    let caller = Caller {
                        principal: PRINCIPAL.into(),
                        trace,
                    };
                    let invocation = this
                        .runtime
                        .invoke(&name, input, &caller)
                        .await
                        .map_err(invoke_error)?;
                    invocation
                        .result
                        .map_err(|error| TaskError::new(&error.kind, error.message))
                }
                Resource::Http(url) => {
                    let mut request = this.client.post(&url).json(&input);
                    if let Some(header) = &trace {
                        request = request.header(
                            tracelake_sampler::trace_header::HEADER_NAME,
                            header.to_string(),
                        );
                    }
                    let response = request
                        .send()
                        .await
                        .map_err(|error| TaskError::new("States.TaskFailed", error.to_string()))?;
                    let status = response.status();
                    let body: Value = response.json().await.unwrap_or(Value::Null);
                    if status.is_success() {
                        Ok(body)
                    } else {
                        Err(TaskError::new(
                            "States.TaskFailed",
                            format!("{url} answered {status}: {body}"),
                        ))
                    }
                }
            }
        })
    }
}

/// The time the engine waits by (Wait states, retry intervals).
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// Real time.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// A clock that returns at once and records every wait (for tests of
/// retry timing).
#[derive(Debug, Clone, Default)]
pub struct RecordingClock {
    pub sleeps: Arc<Mutex<Vec<Duration>>>,
}

impl Clock for RecordingClock {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        self.sleeps.lock().push(duration);
        Box::pin(std::future::ready(()))
    }
}

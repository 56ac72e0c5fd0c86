//! An HTTP client that records each call as a subsegment and carries the
//! trace downstream (`X-Amzn-Trace-Id` with `Parent` = the subsegment, and
//! `traceparent`).
//!
//! A call is `remote` (an HTTP service) or `aws` (an AWS-style service,
//! with its operation and resource in the `aws` block, so tracelake infers
//! `AWS::DynamoDB::Table`-style nodes when the callee is not traced). The
//! response status sets error/throttle/fault; a transport error (refused,
//! timed out) is a fault with the error as a remote exception.

use serde_json::{Map, Value};

use crate::document::Http;
use crate::tracer::{Subsegment, TraceContext};

/// How a call is recorded.
#[derive(Debug, Clone, Default)]
pub struct Call {
    /// The subsegment's name: the callee (a service, `DynamoDB`, `SQS`).
    pub name: String,
    /// `Some` for an AWS-style call: the `aws` block (`operation`,
    /// `table_name`, `queue_url`, `region`, ...).
    pub aws: Option<Map<String, Value>>,
}

impl Call {
    /// A call to an HTTP service named `name`.
    pub fn remote(name: &str) -> Self {
        Self {
            name: name.to_string(),
            aws: None,
        }
    }

    /// An AWS-style call to `service` (`DynamoDB`) doing `operation`.
    pub fn aws(service: &str, operation: &str, resource: &[(&str, &str)]) -> Self {
        let mut aws = Map::new();
        aws.insert("operation".into(), Value::String(operation.to_string()));
        for (key, value) in resource {
            aws.insert(key.to_string(), Value::String(value.to_string()));
        }
        Self {
            name: service.to_string(),
            aws: Some(aws),
        }
    }
}

/// A traced `reqwest` client.
#[derive(Debug, Clone, Default)]
pub struct TracedClient {
    client: reqwest::Client,
}

impl TracedClient {
    pub fn new(client: reqwest::Client) -> Self {
        Self { client }
    }

    pub fn inner(&self) -> &reqwest::Client {
        &self.client
    }

    /// Sends `request` as `call` inside `context` (without a context, the
    /// request goes out untraced).
    pub async fn send(
        &self,
        context: Option<&TraceContext>,
        call: Call,
        request: reqwest::Request,
    ) -> reqwest::Result<reqwest::Response> {
        match context {
            Some(context) => {
                let subsegment = context.subsegment(&call.name);
                self.send_in(subsegment, call, request).await
            }
            None => self.client.execute(request).await,
        }
    }

    /// Sends `request` recorded on the open `subsegment` (which this
    /// finishes), for callers that nest it under their own.
    pub async fn send_in(
        &self,
        mut subsegment: Subsegment,
        call: Call,
        mut request: reqwest::Request,
    ) -> reqwest::Result<reqwest::Response> {
        let header = subsegment.header();
        let headers = request.headers_mut();
        if let Ok(value) = header.to_string().parse() {
            headers.insert(tracelake_sampler::trace_header::HEADER_NAME, value);
        }
        if let Some(traceparent) = header.to_traceparent().and_then(|text| text.parse().ok()) {
            headers.insert("traceparent", traceparent);
        }
        let (method, url) = (request.method().to_string(), request.url().to_string());
        subsegment.record(|document| {
            document.namespace = Some(if call.aws.is_some() { "aws" } else { "remote" });
            if let Some(aws) = &call.aws {
                document.aws = aws.clone();
            }
            document.http = Some(Http {
                method: Some(method),
                url: Some(url),
                traced: true,
                ..Http::default()
            });
        });
        let result = self.client.execute(request).await;
        subsegment.record(|document| match &result {
            Ok(response) => {
                let status = response.status().as_u16();
                document.record_status(status);
                if let Some(http) = document.http.as_mut() {
                    http.status = Some(status);
                    http.content_length = response.content_length();
                }
            }
            Err(error) => {
                let kind = if error.is_timeout() {
                    "Timeout"
                } else if error.is_connect() {
                    "ConnectionRefused"
                } else {
                    "HttpError"
                };
                document.add_exception(kind, &error.to_string(), true);
            }
        });
        subsegment.finish();
        result
    }
}

//! The engine's HTTP API, shaped after Step Functions':
//!
//! | route | answer |
//! |---|---|
//! | `POST /executions` | `StartExecution`: body `{"stateMachineArn": "<name or ARN>", "name"?, "input"?}` (`input` a JSON string or a JSON value); 200 `{"executionArn", "startDate"}`; the caller's `X-Amzn-Trace-Id` makes the execution part of its trace |
//! | `GET /executions` | `ListExecutions`: `{"executions": [{"executionArn", "stateMachineArn", "status", "startDate", "stopDate"}]}` |
//! | `GET /executions/{id}` | `DescribeExecution` |
//! | `GET /executions/{id}/history` | `GetExecutionHistory`: `{"events": [...]}` |
//!
//! Errors as AWS answers them (`__type`, `message`): 400
//! `StateMachineDoesNotExist`, `ExecutionAlreadyExists`, `InvalidName`,
//! `InvalidExecutionInput`; 404 `ExecutionDoesNotExist`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tracelake_aws_json::{AwsError, json_response};
use tracelake_sampler::TraceHeader;
use tracelake_sampler::trace_header::HEADER_NAME;

use super::engine::{Engine, EngineError};

pub fn router(engine: Engine) -> Router {
    Router::new()
        .route("/executions", post(start).get(list))
        .route("/executions/{id}", get(describe))
        .route("/executions/{id}/history", get(history))
        .with_state(engine)
}

fn refusal(error: &EngineError) -> Response {
    let status = match error {
        EngineError::ExecutionDoesNotExist(_) => StatusCode::NOT_FOUND,
        EngineError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    };
    AwsError {
        status,
        error_type: error.kind(),
        message: error.to_string(),
    }
    .into_response()
}

fn invalid_input(message: String) -> Response {
    AwsError {
        status: StatusCode::BAD_REQUEST,
        error_type: "InvalidExecutionInput",
        message,
    }
    .into_response()
}

async fn start(State(engine): State<Engine>, headers: HeaderMap, body: Bytes) -> Response {
    let request: Value = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => return invalid_input(format!("request body: {error}")),
    };
    let Some(machine) = request["stateMachineArn"].as_str() else {
        return invalid_input("stateMachineArn is required".into());
    };
    // An ARN names the machine after `stateMachine:`.
    let machine = machine
        .rsplit_once("stateMachine:")
        .map_or(machine, |(_, name)| name);
    let input = match &request["input"] {
        Value::Null => json!({}),
        Value::String(text) => match serde_json::from_str(text) {
            Ok(value) => value,
            Err(error) => return invalid_input(format!("input is not JSON: {error}")),
        },
        other => other.clone(),
    };
    let trace = headers
        .get(HEADER_NAME)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| TraceHeader::parse(value).ok());
    match engine
        .start_execution(machine, request["name"].as_str(), input, trace)
        .await
    {
        Ok(id) => {
            json_response(&json!({"executionArn": id, "startDate": crate::document::now_seconds()}))
        }
        Err(error) => refusal(&error),
    }
}

async fn list(State(engine): State<Engine>) -> Response {
    let executions: Vec<Value> = engine
        .list_async()
        .await
        .iter()
        .map(|description| {
            json!({
                "executionArn": description.execution,
                "stateMachineArn": description.state_machine,
                "status": description.status,
                "startDate": description.start,
                "stopDate": description.stop,
            })
        })
        .collect();
    json_response(&json!({"executions": executions}))
}

async fn describe(State(engine): State<Engine>, Path(id): Path<String>) -> Response {
    match engine.describe_async(&id).await {
        Ok(description) => json_response(&description.to_json()),
        Err(error) => refusal(&error),
    }
}

async fn history(State(engine): State<Engine>, Path(id): Path<String>) -> Response {
    match engine.history_async(&id).await {
        Ok(events) => json_response(&json!({"events": events})),
        Err(error) => refusal(&error),
    }
}

//! A key-value table service speaking a subset of DynamoDB's JSON protocol
//! (`POST /`, `X-Amz-Target: DynamoDB_20120810.<Operation>`), so callers
//! record it as an `aws` call and tracelake infers an
//! `AWS::DynamoDB::Table` node (the service itself sends no segments, as
//! DynamoDB does not).
//!
//! Operations: `PutItem`, `GetItem`, `DeleteItem`, `Scan`. Items are
//! DynamoDB attribute maps (`{"id": {"S": "7"}}`), kept in memory, keyed by
//! the table's partition key. Each table has a request capacity (token
//! bucket); beyond it requests fail with
//! `ProvisionedThroughputExceededException` (400), as DynamoDB throttles.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use parking_lot::Mutex;
use serde_json::{Map, Value, json};
use tracelake_aws_json::{AwsError, json_body, json_response};

use crate::throttle::TokenBucket;

const TARGET_PREFIX: &str = "DynamoDB_20120810.";
/// Most items a table holds (it lives in memory); puts of new keys beyond
/// are refused with `ItemCollectionSizeLimitExceededException`.
pub const MAX_ITEMS: usize = 1_000_000;

/// One table: its partition key attribute and request capacity.
#[derive(Debug, Clone)]
pub struct TableSpec {
    pub name: String,
    pub key: String,
    /// Requests per second, and the burst above it.
    pub capacity: (f64, u32),
}

#[derive(Debug)]
struct Table {
    key: String,
    items: Mutex<BTreeMap<String, Map<String, Value>>>,
    capacity: TokenBucket,
}

/// The table service's state.
#[derive(Debug, Clone)]
pub struct TableService {
    tables: Arc<HashMap<String, Table>>,
}

fn error(status: StatusCode, kind: &'static str, message: impl Into<String>) -> AwsError {
    AwsError {
        status,
        error_type: kind,
        message: message.into(),
    }
}

fn validation_kind(kind: &'static str, message: impl Into<String>) -> AwsError {
    error(StatusCode::BAD_REQUEST, kind, message)
}

fn validation(message: impl Into<String>) -> AwsError {
    error(StatusCode::BAD_REQUEST, "ValidationException", message)
}

/// The key value of an item or key map: the partition key's scalar.
fn key_of(key: &str, attributes: &Value) -> Result<String, AwsError> {
    let value = attributes
        .get(key)
        .ok_or_else(|| validation(format!("the key attribute {key:?} is missing")))?;
    for kind in ["S", "N", "B"] {
        if let Some(Value::String(text)) = value.get(kind) {
            return Ok(format!("{kind}:{text}"));
        }
    }
    Err(validation(format!(
        "the key attribute {key:?} must be a string, number or binary"
    )))
}

impl TableService {
    pub fn new(specs: &[TableSpec]) -> Self {
        let tables = specs
            .iter()
            .map(|spec| {
                (
                    spec.name.clone(),
                    Table {
                        key: spec.key.clone(),
                        items: Mutex::new(BTreeMap::new()),
                        capacity: TokenBucket::new(spec.capacity.0, spec.capacity.1),
                    },
                )
            })
            .collect();
        Self {
            tables: Arc::new(tables),
        }
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/", post(dispatch))
            .with_state(self.clone())
    }

    /// The number of items in `table`.
    pub fn len(&self, table: &str) -> usize {
        self.tables
            .get(table)
            .map_or(0, |table| table.items.lock().len())
    }

    fn operate(&self, operation: &str, request: &Value) -> Result<Value, AwsError> {
        let name = request["TableName"]
            .as_str()
            .ok_or_else(|| validation("TableName is required"))?;
        let table = self.tables.get(name).ok_or_else(|| {
            error(
                StatusCode::BAD_REQUEST,
                "ResourceNotFoundException",
                format!("Requested resource not found: Table: {name} not found"),
            )
        })?;
        if table.capacity.try_take().is_err() {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "ProvisionedThroughputExceededException",
                "The level of configured provisioned throughput for the table was exceeded",
            ));
        }
        match operation {
            "PutItem" => {
                let item = request["Item"]
                    .as_object()
                    .ok_or_else(|| validation("Item must be an attribute map"))?;
                let key = key_of(&table.key, &request["Item"])?;
                let mut items = table.items.lock();
                if items.len() >= MAX_ITEMS && !items.contains_key(&key) {
                    return Err(validation_kind(
                        "ItemCollectionSizeLimitExceededException",
                        format!("the table holds {MAX_ITEMS} items, its limit"),
                    ));
                }
                items.insert(key, item.clone());
                Ok(json!({}))
            }
            "GetItem" => {
                let key = key_of(&table.key, &request["Key"])?;
                Ok(match table.items.lock().get(&key) {
                    Some(item) => json!({"Item": item}),
                    None => json!({}),
                })
            }
            "DeleteItem" => {
                let key = key_of(&table.key, &request["Key"])?;
                table.items.lock().remove(&key);
                Ok(json!({}))
            }
            "Scan" => {
                let limit = request["Limit"].as_u64().unwrap_or(100).clamp(1, 1_000) as usize;
                let guard = table.items.lock();
                let page: Vec<Value> = guard
                    .values()
                    .take(limit)
                    .map(|item| Value::Object(item.clone()))
                    .collect();
                Ok(json!({"Items": page, "Count": page.len(), "ScannedCount": page.len()}))
            }
            other => Err(error(
                StatusCode::BAD_REQUEST,
                "UnknownOperationException",
                format!("operation {other:?} is not supported"),
            )),
        }
    }
}

/// The operation an `X-Amz-Target` names.
pub(crate) fn operation<'a>(headers: &'a HeaderMap, prefix: &str) -> Result<&'a str, AwsError> {
    headers
        .get("x-amz-target")
        .and_then(|value| value.to_str().ok())
        .and_then(|target| target.strip_prefix(prefix))
        .ok_or_else(|| {
            error(
                StatusCode::BAD_REQUEST,
                "UnknownOperationException",
                format!("X-Amz-Target must be {prefix}<Operation>"),
            )
        })
}

async fn dispatch(State(service): State<TableService>, headers: HeaderMap, body: Body) -> Response {
    let answer = async {
        let operation = operation(&headers, TARGET_PREFIX)?;
        let request: Value = json_body(body).await?;
        service.operate(operation, &request)
    };
    match answer.await {
        Ok(value) => json_response(&value),
        Err(error) => error.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_round_trip_and_capacity_throttles() {
        let service = TableService::new(&[TableSpec {
            name: "orders".into(),
            key: "id".into(),
            capacity: (0.0, 4),
        }]);
        let put =
            json!({"TableName": "orders", "Item": {"id": {"S": "7"}, "total": {"N": "19.5"}}});
        service.operate("PutItem", &put).unwrap();
        let got = service
            .operate(
                "GetItem",
                &json!({"TableName": "orders", "Key": {"id": {"S": "7"}}}),
            )
            .unwrap();
        assert_eq!(got["Item"]["total"]["N"], "19.5");
        let missing = service
            .operate(
                "GetItem",
                &json!({"TableName": "orders", "Key": {"id": {"S": "8"}}}),
            )
            .unwrap();
        assert_eq!(missing, json!({}));
        let bad = service
            .operate(
                "PutItem",
                &json!({"TableName": "orders", "Item": {"sku": {"S": "x"}}}),
            )
            .unwrap_err();
        assert_eq!(bad.error_type, "ValidationException");
        // Four requests used the burst of four; the fifth is throttled.
        let throttled = service
            .operate("Scan", &json!({"TableName": "orders"}))
            .unwrap_err();
        assert_eq!(
            throttled.error_type,
            "ProvisionedThroughputExceededException"
        );
        let unknown = service
            .operate("Scan", &json!({"TableName": "nope"}))
            .unwrap_err();
        assert_eq!(unknown.error_type, "ResourceNotFoundException");
    }
}

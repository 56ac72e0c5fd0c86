//! `/v1/sql`: read-only SQL over one tenant's tables (`spans`, `edges`,
//! `span_metrics`, `metrics`) and the latency functions.
//!
//! Only queries run: DDL (`CREATE`, including external tables), DML
//! (`INSERT`, `COPY`) and other statements (`SET`, ...) are refused by
//! DataFusion's `SQLOptions` before planning, and the session registers no
//! file-reading table functions, so nothing outside the store is reachable.
//! At most [`MAX_ROWS`] rows come back (`truncated` says when more matched)
//! and a query may run for at most [`QUERY_TIMEOUT`] (callers may ask for
//! less).

use std::sync::Arc;

use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::execution::context::SQLOptions;
use serde_json::{Map, Value, json};
use tracelake_storage::SpanReader;

use crate::{Result, session_for_tenant};

/// Rows returned at most.
pub const MAX_ROWS: usize = 10_000;
/// Longest a query may plan and run.
pub const QUERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// What a query returned: its schema, at most [`MAX_ROWS`] rows, and
/// whether more matched.
#[derive(Debug)]
pub struct QueryAnswer {
    pub schema: datafusion::arrow::datatypes::SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub truncated: bool,
}

/// What `/v1/sql` lets through: queries only (no DDL, DML or other
/// statements such as `SET` or `COPY`).
pub fn read_only_options() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// Runs `query` for `tenant`; `Err` carries DataFusion's message (refused
/// statements and planning errors alike) or [`crate::QueryError::Timeout`].
pub async fn run_query_batches(
    reader: Arc<dyn SpanReader>,
    tenant: &str,
    query: &str,
    timeout: std::time::Duration,
) -> Result<QueryAnswer> {
    let timeout = timeout.min(QUERY_TIMEOUT);
    let context = session_for_tenant(reader, tenant)?;
    let options = read_only_options();
    let run = async {
        let frame = context.sql_with_options(query, options).await?;
        let schema = Arc::new(frame.schema().as_arrow().clone());
        let batches = frame.limit(0, Some(MAX_ROWS + 1))?.collect().await?;
        Ok::<_, crate::QueryError>((schema, batches))
    };
    let (schema, mut batches) = tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| crate::QueryError::Timeout(timeout))??;
    let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let truncated = total > MAX_ROWS;
    if truncated {
        let mut kept = Vec::new();
        let mut remaining = MAX_ROWS;
        for batch in batches {
            if remaining == 0 {
                break;
            }
            let take = batch.num_rows().min(remaining);
            kept.push(batch.slice(0, take));
            remaining -= take;
        }
        batches = kept;
    }
    Ok(QueryAnswer {
        schema,
        batches,
        truncated,
    })
}

/// [`run_query_batches`] as `{"columns", "rows": [{column: value}], "truncated"}`.
pub async fn run_query(
    reader: Arc<dyn SpanReader>,
    tenant: &str,
    query: &str,
    timeout: std::time::Duration,
) -> Result<Value> {
    let answer = run_query_batches(reader, tenant, query, timeout).await?;
    let columns: Vec<String> = answer
        .schema
        .fields()
        .iter()
        .map(|field| field.name().clone())
        .collect();
    let mut rows = Vec::new();
    for batch in &answer.batches {
        rows.extend(batch_rows(batch)?);
    }
    Ok(json!({"columns": columns, "rows": rows, "truncated": answer.truncated}))
}

/// The answer as an Arrow IPC stream (`application/vnd.apache.arrow.stream`).
pub fn arrow_stream(answer: &QueryAnswer) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    {
        let mut writer =
            datafusion::arrow::ipc::writer::StreamWriter::try_new(&mut bytes, &answer.schema)
                .map_err(datafusion::error::DataFusionError::from)?;
        for batch in &answer.batches {
            writer
                .write(batch)
                .map_err(datafusion::error::DataFusionError::from)?;
        }
        writer
            .finish()
            .map_err(datafusion::error::DataFusionError::from)?;
    }
    Ok(bytes)
}

fn batch_rows(batch: &RecordBatch) -> Result<Vec<Value>> {
    let options = FormatOptions::default().with_null("");
    let formatters: Vec<ArrayFormatter<'_>> = batch
        .columns()
        .iter()
        .map(|column| ArrayFormatter::try_new(column.as_ref(), &options))
        .collect::<std::result::Result<_, _>>()
        .map_err(datafusion::error::DataFusionError::from)?;
    let schema = batch.schema();
    let mut rows = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let mut object = Map::new();
        for (index, field) in schema.fields().iter().enumerate() {
            let column = batch.column(index);
            let value = if column.is_null(row) {
                Value::Null
            } else {
                let text = formatters[index].value(row).to_string();
                match field.data_type() {
                    DataType::Boolean => Value::Bool(text == "true"),
                    data_type if data_type.is_integer() => text
                        .parse::<i64>()
                        .map(Value::from)
                        .unwrap_or(Value::String(text)),
                    data_type if data_type.is_floating() => text
                        .parse::<f64>()
                        .ok()
                        .and_then(serde_json::Number::from_f64)
                        .map(Value::Number)
                        .unwrap_or(Value::String(text)),
                    _ => Value::String(text),
                }
            };
            object.insert(field.name().clone(), value);
        }
        rows.push(Value::Object(object));
    }
    Ok(rows)
}

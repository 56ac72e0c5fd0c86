//! What a span block stores, next to what the span table shows.
//!
//! A block holds the span table's columns except those derived on read, so
//! no value is stored twice:
//!
//! | table column | in blocks written | derived on read as |
//! |---|---|---|
//! | `duration_ns` | before 2026-12-06 only | `max(end_time - start_time, 0)`, the rule every writer of the column applied |
//!
//! Blocks of every layout stay readable, mixed in one scan: readers of
//! block files take the columns a file has and derive the rest. Inside
//! storage that is [`to_spans`] (compaction merges old and new blocks
//! alike); the query side's Parquet scan rewrites a reference to a derived
//! column into the same expression per file, so its predicates still prune
//! by the columns it reads. Plain Parquet readers (DuckDB, Ballista) compute
//! `duration_ns` from the two times, as `tracelake sql --ballista` does with
//! a view.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{ArrayRef, AsArray, Int64Array, RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::{Schema, SchemaRef, TimestampNanosecondType};

use crate::{Result, StorageError};
use tracelake_model::schema::{col, span_schema};

/// The layout span blocks are written in, recorded in each block's Parquet
/// key-value metadata under [`LAYOUT_KEY`]: 1 (no key) stores the whole
/// span table; 2 leaves out [`DERIVED_ON_READ`]. Readers go by the columns
/// a file has; the marker tells a person, or a later reader, what wrote it.
pub const LAYOUT: u32 = 2;

/// The Parquet key-value metadata key of [`LAYOUT`].
pub const LAYOUT_KEY: &str = "tracelake.block_layout";

/// Table columns blocks do not store (see the module docs).
pub const DERIVED_ON_READ: [&str; 1] = [col::DURATION_NS];

static BLOCK_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let fields = span_schema()
        .fields()
        .iter()
        .filter(|field| !DERIVED_ON_READ.contains(&field.name().as_str()))
        .cloned()
        .collect::<Vec<_>>();
    Arc::new(Schema::new(fields))
});

/// The schema of span blocks written today.
pub fn block_schema() -> SchemaRef {
    Arc::clone(&BLOCK_SCHEMA)
}

/// `batch` (span rows of the table's schema, or a block's of any layout)
/// as a block stores it today: the columns of [`block_schema`], by name.
pub fn to_block(batch: &RecordBatch) -> Result<RecordBatch> {
    reshape(batch, block_schema())
}

/// The rows of a block of any layout in the span table's schema, with the
/// derived columns computed where the block lacks them.
pub fn to_spans(batch: &RecordBatch) -> Result<RecordBatch> {
    reshape(batch, span_schema())
}

/// `batch`'s columns in `schema`'s order, by name; a derived column the
/// batch lacks is computed from the ones it has.
fn reshape(batch: &RecordBatch, schema: SchemaRef) -> Result<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .map(|field| match batch.column_by_name(field.name()) {
            Some(array) => Ok(Arc::clone(array)),
            None if field.name() == col::DURATION_NS => duration(batch),
            None => Err(missing(field.name())),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new_with_options(
        schema,
        columns,
        &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )?)
}

/// `duration_ns` from the two times: `end - start`, clamped at 0 (as
/// `tracelake_model::otlp` computes it on ingest).
fn duration(batch: &RecordBatch) -> Result<ArrayRef> {
    let time = |name: &str| {
        column(batch, name)?
            .as_primitive_opt::<TimestampNanosecondType>()
            .cloned()
            .ok_or_else(|| StorageError::Corrupt(format!("block column {name} is not a time")))
    };
    let (start, end) = (time(col::START_TIME)?, time(col::END_TIME)?);
    let durations: Int64Array = start
        .values()
        .iter()
        .zip(end.values().iter())
        .map(|(start, end)| end.saturating_sub(*start).max(0))
        .collect();
    Ok(Arc::new(durations))
}

fn column(batch: &RecordBatch, name: &str) -> Result<ArrayRef> {
    batch
        .column_by_name(name)
        .map(Arc::clone)
        .ok_or_else(|| missing(name))
}

fn missing(name: &str) -> StorageError {
    StorageError::Corrupt(format!("span block without column {name}"))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::Array;

    use super::*;

    fn spans(count: usize) -> RecordBatch {
        let mut workload =
            tracelake_workload::Workload::new(4, 1_767_225_600_000_000_000, 1_000_000);
        tracelake_model::otlp::resource_spans_to_batch("t", &workload.batch(count))
            .unwrap()
            .batch
            .unwrap()
    }

    #[test]
    fn a_block_drops_the_derived_columns_and_reading_it_restores_them() {
        let table = spans(500);
        let block = to_block(&table).unwrap();
        assert_eq!(block.num_columns(), table.num_columns() - 1);
        assert!(block.column_by_name(col::DURATION_NS).is_none());
        assert_eq!(to_spans(&block).unwrap(), table);
        // A block written before (the full table schema) reads as it is,
        // and becomes today's layout when rewritten.
        assert_eq!(to_spans(&table).unwrap(), table);
        assert_eq!(to_block(&block).unwrap(), block);
    }

    #[test]
    fn a_written_block_has_the_layout_its_marker_names() {
        use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
        let table = spans(300);
        let hour = 1_767_225_600_000_000_000 / crate::block::NANOS_PER_HOUR;
        let (bytes, _) = crate::block::encode_block("t", hour, &table, 4096).unwrap();
        let reader = SerializedFileReader::new(bytes::Bytes::from(bytes)).unwrap();
        let metadata = reader.metadata().file_metadata();
        let marker = metadata
            .key_value_metadata()
            .into_iter()
            .flatten()
            .find(|entry| entry.key == LAYOUT_KEY)
            .and_then(|entry| entry.value.clone());
        assert_eq!(marker.as_deref(), Some("2"));
        let columns: Vec<&str> = metadata
            .schema_descr()
            .root_schema()
            .get_fields()
            .iter()
            .map(|field| field.name())
            .collect();
        assert_eq!(columns.len(), block_schema().fields().len());
        assert!(!columns.contains(&col::DURATION_NS));
    }

    #[test]
    fn a_span_that_ends_before_it_starts_lasts_zero() {
        let table = spans(50);
        let mut columns = table.columns().to_vec();
        let index = table.schema().index_of(col::END_TIME).unwrap();
        let start = table
            .column_by_name(col::START_TIME)
            .unwrap()
            .as_primitive::<TimestampNanosecondType>();
        // Every span ends 5 ns before it starts.
        let ends: datafusion::arrow::array::TimestampNanosecondArray = start
            .values()
            .iter()
            .map(|start| start - 5)
            .collect::<Vec<_>>()
            .into();
        columns[index] = Arc::new(ends.with_timezone("UTC"));
        let skewed = RecordBatch::try_new(table.schema(), columns).unwrap();
        let read = to_spans(&to_block(&skewed).unwrap()).unwrap();
        let durations = read
            .column_by_name(col::DURATION_NS)
            .unwrap()
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        assert!(durations.values().iter().all(|duration| *duration == 0));
        assert_eq!(durations.null_count(), 0);
    }
}

//! A `take` for the span table's nested columns that copies child arrays
//! column by column instead of list entry by list entry.
//!
//! Arrow's `take` on a list or map array copies each selected entry's child
//! slice through `MutableArrayData`, whose per-call overhead dominates for
//! the span table's maps of `{key, value: struct}` (a few children per
//! entry, a dozen entries per span). Here the selected entries' child rows
//! are gathered into one index array and each child column is taken once
//! (recursively for struct children), which is what sorting a flushed
//! block spends most of its time on. Results are identical to `take`.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, ListArray, MapArray, RecordBatch, StructArray,
    UInt32Array,
};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::error::ArrowError;

fn take_nulls(
    nulls: Option<&NullBuffer>,
    indices: &UInt32Array,
) -> Result<Option<NullBuffer>, ArrowError> {
    let Some(nulls) = nulls.filter(|nulls| nulls.null_count() > 0) else {
        return Ok(None);
    };
    let validity = BooleanArray::new(nulls.inner().clone(), None);
    let taken = take(&validity, indices, None)?;
    Ok(Some(NullBuffer::new(taken.as_boolean().values().clone())))
}

/// The new offsets of the selected entries, and the child rows they span.
fn gather(
    offsets: &OffsetBuffer<i32>,
    indices: &UInt32Array,
) -> Result<(OffsetBuffer<i32>, UInt32Array), ArrowError> {
    let mut new_offsets = Vec::with_capacity(indices.len() + 1);
    new_offsets.push(0i32);
    let mut child = Vec::new();
    for index in indices.values() {
        let index = *index as usize;
        let (start, end) = (offsets[index] as usize, offsets[index + 1] as usize);
        child.extend(start as u32..end as u32);
        let next = i32::try_from(child.len())
            .map_err(|_| ArrowError::ComputeError("list offsets overflow i32".into()))?;
        new_offsets.push(next);
    }
    Ok((
        OffsetBuffer::new(new_offsets.into()),
        UInt32Array::from(child),
    ))
}

/// `take(array, indices)`, faster for lists, maps and structs.
pub(crate) fn take_array(array: &ArrayRef, indices: &UInt32Array) -> Result<ArrayRef, ArrowError> {
    match array.data_type() {
        DataType::List(field) => {
            let list = array.as_list::<i32>();
            let (offsets, child_indices) = gather(list.offsets(), indices)?;
            let values = take_array(list.values(), &child_indices)?;
            let nulls = take_nulls(list.nulls(), indices)?;
            Ok(Arc::new(ListArray::try_new(
                Arc::clone(field),
                offsets,
                values,
                nulls,
            )?))
        }
        DataType::Map(field, sorted) => {
            let map = array.as_map();
            let (offsets, child_indices) = gather(map.offsets(), indices)?;
            let entries: ArrayRef = Arc::new(map.entries().clone());
            let entries = take_array(&entries, &child_indices)?;
            let nulls = take_nulls(map.nulls(), indices)?;
            Ok(Arc::new(MapArray::try_new(
                Arc::clone(field),
                offsets,
                entries.as_struct().clone(),
                nulls,
                *sorted,
            )?))
        }
        DataType::Struct(fields) => {
            let structure = array.as_struct();
            let columns = structure
                .columns()
                .iter()
                .map(|column| take_array(column, indices))
                .collect::<Result<Vec<_>, _>>()?;
            let nulls = take_nulls(structure.nulls(), indices)?;
            Ok(Arc::new(StructArray::try_new(
                fields.clone(),
                columns,
                nulls,
            )?))
        }
        _ => take(array.as_ref(), indices, None),
    }
}

/// `take_record_batch` with [`take_array`] for every column.
pub(crate) fn take_batch(
    batch: &RecordBatch,
    indices: &UInt32Array,
) -> Result<RecordBatch, ArrowError> {
    let columns = batch
        .columns()
        .iter()
        .map(|column| take_array(column, indices))
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(batch.schema(), columns)
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::compute::take_record_batch;

    use super::*;
    use tracelake_model::otlp::resource_spans_to_batch;
    use tracelake_workload::Workload;
    use tracelake_workload::samples::sample_resource_spans;

    #[test]
    fn takes_exactly_what_arrow_takes() {
        let mut resource_spans: Vec<_> = (0..20)
            .map(|seed| sample_resource_spans(seed, 7, 1_000))
            .collect();
        resource_spans.extend(Workload::new(3, 1_767_225_600_000_000_000, 1_000_000).batch(2_000));
        let batch = resource_spans_to_batch("t", &resource_spans)
            .unwrap()
            .batch
            .unwrap();
        let rows = batch.num_rows() as u32;
        let mut rng = fastrand::Rng::with_seed(9);
        for indices in [
            (0..rows).rev().collect::<Vec<u32>>(),
            (0..rows).map(|_| rng.u32(..rows)).collect(),
            vec![],
            vec![rows - 1, 0, 0, rows / 2],
        ] {
            let indices = UInt32Array::from(indices);
            assert_eq!(
                take_batch(&batch, &indices).unwrap(),
                take_record_batch(&batch, &indices).unwrap()
            );
        }
        // A slice (non-zero offsets) too.
        let slice = batch.slice(3, 40);
        let indices = UInt32Array::from(vec![39, 0, 17, 17, 5]);
        assert_eq!(
            take_batch(&slice, &indices).unwrap(),
            take_record_batch(&slice, &indices).unwrap()
        );
    }
}

//! SQL functions over latency histograms (hdrhistogram V2 bytes, as the
//! `edges` and `span_metrics` tables store them):
//!
//! | function | kind | what |
//! |---|---|---|
//! | `tracelake_latency(duration_ns)` | aggregate | the histogram of nanosecond durations |
//! | `tracelake_latency_merge(histogram)` | aggregate | histograms merged (any window of minutes) |
//! | `tracelake_latency_quantile(histogram, q)` | scalar | the value at quantile `q` (0..1), in seconds |
//!
//! ```sql
//! SELECT service, tracelake_latency_quantile(tracelake_latency_merge(latency), 0.99) AS p99_s
//! FROM span_metrics WHERE entry GROUP BY service
//! ```
//!
//! The service map's recompute from raw spans uses `tracelake_latency`, so
//! both paths build histograms with the same code.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Float64Builder,
};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::common::{ScalarValue, exec_err};
use datafusion::error::Result;
use datafusion::logical_expr::function::AccumulatorArgs;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, EmitTo, GroupsAccumulator,
    ScalarUDF, Signature, Volatility, create_udf,
};
use datafusion::prelude::SessionContext;
use tracelake_model::derived::LatencyHistogram;

pub const LATENCY: &str = "tracelake_latency";
pub const LATENCY_MERGE: &str = "tracelake_latency_merge";
pub const LATENCY_QUANTILE: &str = "tracelake_latency_quantile";

/// Registers the three functions in `context`.
pub fn register(context: &SessionContext) {
    context.register_udaf(latency_udaf(LATENCY, DataType::Int64));
    context.register_udaf(latency_udaf(LATENCY_MERGE, DataType::Binary));
    context.register_udf(quantile_udf());
}

fn latency_udaf(name: &'static str, input: DataType) -> AggregateUDF {
    AggregateUDF::new_from_impl(LatencyUdaf {
        name,
        merges_histograms: input == DataType::Binary,
        signature: Signature::exact(vec![input], Volatility::Immutable),
    })
}

/// `tracelake_latency` / `tracelake_latency_merge`: a histogram per group.
///
/// Grouped, it runs as a [`GroupsAccumulator`] (one histogram per group
/// index, rows recorded straight into it): the row-at-a-time
/// [`Accumulator`] made DataFusion slice every batch per group, which cost
/// more work per group. The partial state is the histogram's V2 encoding,
/// like the result. (What still bounds a per-minute service-map recompute
/// is hdrhistogram's dense counts array: allocating, zeroing, encoding and
/// decoding about 12 KB for each of tens of thousands of small groups.)
#[derive(Debug, PartialEq, Eq, Hash)]
struct LatencyUdaf {
    name: &'static str,
    /// Inputs are histograms (`tracelake_latency_merge`), not durations.
    merges_histograms: bool,
    signature: Signature,
}

impl AggregateUDFImpl for LatencyUdaf {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Binary)
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(LatencyAccumulator {
            histogram: LatencyHistogram::new(),
            merges_histograms: self.merges_histograms,
        }))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        _args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(LatencyGroups::new(self.merges_histograms)))
    }
}

struct LatencyGroups {
    histograms: Vec<LatencyHistogram>,
    merges_histograms: bool,
}

impl LatencyGroups {
    fn new(merges_histograms: bool) -> Self {
        Self {
            histograms: Vec::new(),
            merges_histograms,
        }
    }

    fn name(&self) -> &'static str {
        if self.merges_histograms {
            LATENCY_MERGE
        } else {
            LATENCY
        }
    }

    fn add(
        &mut self,
        input: &ArrayRef,
        merges_histograms: bool,
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        if self.histograms.len() < total_num_groups {
            self.histograms
                .resize_with(total_num_groups, LatencyHistogram::new);
        }
        let passes =
            |row: usize| opt_filter.is_none_or(|filter| filter.is_valid(row) && filter.value(row));
        if merges_histograms {
            let Some(binary) = input.as_binary_opt::<i32>() else {
                return exec_err!("{LATENCY_MERGE} takes a binary histogram");
            };
            for (row, &group) in group_indices.iter().enumerate() {
                if passes(row) && binary.is_valid(row) && !binary.value(row).is_empty() {
                    let histogram = decode(binary.value(row))?;
                    let into = &mut self.histograms[group];
                    if into.is_empty() {
                        *into = histogram;
                    } else {
                        into.merge(&histogram);
                    }
                }
            }
        } else {
            let Some(durations) = input.as_primitive_opt::<Int64Type>() else {
                return exec_err!("{LATENCY} takes Int64 nanoseconds");
            };
            for (row, &group) in group_indices.iter().enumerate() {
                if passes(row) && durations.is_valid(row) {
                    self.histograms[group].record_ns(durations.value(row));
                }
            }
        }
        Ok(())
    }

    fn encoded(&mut self, emit_to: EmitTo) -> ArrayRef {
        let histograms = emit_to.take_needed(&mut self.histograms);
        Arc::new(BinaryArray::from_iter(histograms.iter().map(|histogram| {
            (!histogram.is_empty()).then(|| histogram.encode())
        })))
    }
}

impl GroupsAccumulator for LatencyGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        let Some(input) = values.first() else {
            return Ok(());
        };
        let merges_histograms = self.merges_histograms;
        self.add(
            input,
            merges_histograms,
            group_indices,
            opt_filter,
            total_num_groups,
        )
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        let Some(states) = values.first() else {
            return Ok(());
        };
        self.add(states, true, group_indices, None, total_num_groups)
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let Some(input) = values.first() else {
            return exec_err!("{} takes one argument", self.name());
        };
        // Each row becomes a group of its own.
        let mut single = LatencyGroups::new(self.merges_histograms);
        let groups: Vec<usize> = (0..input.len()).collect();
        single.add(
            input,
            self.merges_histograms,
            &groups,
            opt_filter,
            input.len(),
        )?;
        Ok(vec![single.encoded(EmitTo::All)])
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        Ok(self.encoded(emit_to))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        Ok(vec![self.encoded(emit_to)])
    }

    fn size(&self) -> usize {
        // As for the accumulator: the counts arrays dominate.
        self.histograms.capacity() * (std::mem::size_of::<LatencyHistogram>() + 8 * 256)
    }
}

fn decode(bytes: &[u8]) -> Result<LatencyHistogram> {
    LatencyHistogram::decode(bytes)
        .map_err(|error| datafusion::error::DataFusionError::Execution(error.to_string()))
}

#[derive(Debug)]
struct LatencyAccumulator {
    histogram: LatencyHistogram,
    /// Inputs are histograms (`tracelake_latency_merge`), not durations.
    merges_histograms: bool,
}

impl LatencyAccumulator {
    fn merge_histograms(&mut self, array: &ArrayRef) -> Result<()> {
        let Some(binary) = array.as_binary_opt::<i32>() else {
            return exec_err!("{LATENCY_MERGE} takes a binary histogram");
        };
        for row in 0..binary.len() {
            if binary.is_null(row) || binary.value(row).is_empty() {
                continue;
            }
            self.histogram.merge(&decode(binary.value(row))?);
        }
        Ok(())
    }

    fn current(&self) -> ScalarValue {
        if self.histogram.is_empty() {
            ScalarValue::Binary(None)
        } else {
            ScalarValue::Binary(Some(self.histogram.encode()))
        }
    }
}

impl Accumulator for LatencyAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let Some(input) = values.first() else {
            return Ok(());
        };
        if self.merges_histograms {
            return self.merge_histograms(input);
        }
        let Some(durations) = input.as_primitive_opt::<Int64Type>() else {
            return exec_err!("{LATENCY} takes Int64 nanoseconds");
        };
        for row in 0..durations.len() {
            if durations.is_valid(row) {
                self.histogram.record_ns(durations.value(row));
            }
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        match states.first() {
            Some(state) => self.merge_histograms(state),
            None => Ok(()),
        }
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![self.current()])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(self.current())
    }

    fn size(&self) -> usize {
        // The histogram's counts array dominates; its encoding is a fair
        // lower bound and cheap enough for the memory pool's bookkeeping.
        std::mem::size_of::<Self>() + 8 * 256
    }
}

fn quantile_udf() -> ScalarUDF {
    create_udf(
        LATENCY_QUANTILE,
        vec![DataType::Binary, DataType::Float64],
        DataType::Float64,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let (Some(histograms), Some(quantiles)) = (
                arrays
                    .first()
                    .and_then(|array| array.as_binary_opt::<i32>()),
                arrays.get(1).and_then(|array| {
                    array.as_primitive_opt::<datafusion::arrow::datatypes::Float64Type>()
                }),
            ) else {
                return exec_err!("{LATENCY_QUANTILE}(histogram binary, quantile double)");
            };
            let mut out = Float64Builder::with_capacity(histograms.len());
            for row in 0..histograms.len() {
                if histograms.is_null(row) || quantiles.is_null(row) {
                    out.append_null();
                    continue;
                }
                let histogram =
                    LatencyHistogram::decode(histograms.value(row)).map_err(|error| {
                        datafusion::error::DataFusionError::Execution(error.to_string())
                    })?;
                out.append_value(histogram.quantile_seconds(quantiles.value(row)));
            }
            Ok(ColumnarValue::Array(Arc::new(out.finish())))
        }),
    )
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::datasource::MemTable;

    use super::*;

    /// Rows `(group, duration ms)` in several batches, so groups get rows
    /// from more than one batch and the partial states are merged.
    fn context(rows: &[(&str, i64)]) -> SessionContext {
        let schema = Arc::new(Schema::new(vec![
            Field::new("g", DataType::Utf8, false),
            Field::new("d", DataType::Int64, true),
        ]));
        let batches = rows
            .chunks(3)
            .map(|chunk| {
                RecordBatch::try_new(
                    Arc::clone(&schema),
                    vec![
                        Arc::new(StringArray::from_iter_values(chunk.iter().map(|row| row.0))),
                        Arc::new(Int64Array::from_iter(
                            chunk
                                .iter()
                                .map(|row| (row.1 >= 0).then_some(row.1 * 1_000_000)),
                        )),
                    ],
                )
                .unwrap()
            })
            .collect();
        let context = SessionContext::new();
        // Two partitions: partial aggregation, then a merge of the states.
        let table = MemTable::try_new(schema, vec![batches, Vec::new()]).unwrap();
        context.register_table("t", Arc::new(table)).unwrap();
        register(&context);
        context
    }

    async fn answer(context: &SessionContext, sql: &str) -> Vec<(String, f64, f64)> {
        let batches = context.sql(sql).await.unwrap().collect().await.unwrap();
        let mut out = Vec::new();
        for batch in batches {
            for row in 0..batch.num_rows() {
                let number = |column: usize| {
                    batch
                        .column(column)
                        .as_primitive::<datafusion::arrow::datatypes::Float64Type>()
                        .value(row)
                };
                out.push((
                    batch.column(0).as_string::<i32>().value(row).to_string(),
                    number(1),
                    number(2),
                ));
            }
        }
        out
    }

    fn expected(millis: &[i64]) -> (f64, f64) {
        let mut histogram = LatencyHistogram::new();
        for value in millis {
            histogram.record_ns(value * 1_000_000);
        }
        (
            histogram.quantile_seconds(0.5),
            histogram.quantile_seconds(1.0),
        )
    }

    #[tokio::test]
    async fn grouped_histograms_match_direct_ones() {
        // -1 is a null duration, skipped.
        let rows = [
            ("a", 10),
            ("b", 500),
            ("a", 20),
            ("a", 30),
            ("b", -1),
            ("c", 7),
            ("a", 4000),
            ("b", 600),
            ("a", 40),
        ];
        let context = context(&rows);
        let grouped = "SELECT g, tracelake_latency_quantile(tracelake_latency(d), 0.5), \
                       tracelake_latency_quantile(tracelake_latency(d), 1.0) FROM t GROUP BY g ORDER BY g";
        let want: Vec<_> = [
            ("a", &[10, 20, 30, 4000, 40][..]),
            ("b", &[500, 600]),
            ("c", &[7]),
        ]
        .iter()
        .map(|(group, millis)| {
            let (p50, max) = expected(millis);
            (group.to_string(), p50, max)
        })
        .collect();
        assert_eq!(answer(&context, grouped).await, want);

        // Histograms of sub-groups merged per group give the same answer.
        let merged = "SELECT g, tracelake_latency_quantile(tracelake_latency_merge(h), 0.5), \
                      tracelake_latency_quantile(tracelake_latency_merge(h), 1.0) FROM \
                      (SELECT g, d > 25000000 AS slow, tracelake_latency(d) AS h FROM t GROUP BY g, slow) \
                      GROUP BY g ORDER BY g";
        assert_eq!(answer(&context, merged).await, want);

        // FILTER reaches the grouped accumulator.
        let filtered = "SELECT g, tracelake_latency_quantile(tracelake_latency(d) FILTER (WHERE d < 1000000000), 0.5), \
                        tracelake_latency_quantile(tracelake_latency(d) FILTER (WHERE d < 1000000000), 1.0) \
                        FROM t WHERE g = 'a' GROUP BY g";
        let (p50, max) = expected(&[10, 20, 30, 40]);
        assert_eq!(
            answer(&context, filtered).await,
            vec![("a".into(), p50, max)]
        );
    }
}

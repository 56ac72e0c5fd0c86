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

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Builder};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::common::{ScalarValue, exec_err};
use datafusion::error::Result;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, ColumnarValue, ScalarUDF, Volatility, create_udaf, create_udf,
};
use datafusion::prelude::SessionContext;
use tracelake_storage::derived::LatencyHistogram;

pub const LATENCY: &str = "tracelake_latency";
pub const LATENCY_MERGE: &str = "tracelake_latency_merge";
pub const LATENCY_QUANTILE: &str = "tracelake_latency_quantile";

/// Registers the three functions in `context`.
pub fn register(context: &SessionContext) {
    context.register_udaf(latency_udaf(LATENCY, DataType::Int64));
    context.register_udaf(latency_udaf(LATENCY_MERGE, DataType::Binary));
    context.register_udf(quantile_udf());
}

fn latency_udaf(name: &str, input: DataType) -> AggregateUDF {
    let merges_histograms = input == DataType::Binary;
    create_udaf(
        name,
        vec![input],
        Arc::new(DataType::Binary),
        Volatility::Immutable,
        Arc::new(move |_| {
            Ok(Box::new(LatencyAccumulator {
                histogram: LatencyHistogram::new(),
                merges_histograms,
            }))
        }),
        Arc::new(vec![DataType::Binary]),
    )
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
            let histogram = LatencyHistogram::decode(binary.value(row)).map_err(|error| {
                datafusion::error::DataFusionError::Execution(error.to_string())
            })?;
            self.histogram.merge(&histogram);
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

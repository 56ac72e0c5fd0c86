//! The cells of a compiled metrics pass, folded from the filtered spans as
//! their batches stream out of each partition of the scan.
//!
//! DataFusion's own `GROUP BY` hashes every row's key (the interval and each
//! label's bytes). Here a row's interval is arithmetic, and a label is
//! looked up once per distinct value in a batch: text labels are read as
//! `Utf8View` ([`crate::spans_table::SpansTable::with_views`]), and within
//! a batch decoded from a Parquet dictionary the rows of one dictionary
//! entry share one 16-byte view, so a row costs a comparison with the
//! previous row's view and, rarely, one small hash lookup. Equal strings
//! under different views only cost an extra lookup: series are always
//! resolved by their label values.
//!
//! Each partition folds into its own [`Partial`]; the partials are added
//! into [`Accumulated`] at the end, in partition order.

use std::collections::HashMap;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Float64Type, Int64Type};

use super::{DURATION, EXEMPLAR_TRACE, LabelColumn, Pass, Plan, START, VALUE, by_column};
use crate::traceql::eval::AttrValue;
use crate::traceql::metrics::{
    Accumulated, Cell, MAX_CELLS, MAX_SERIES, MetricsRequest, log2_bucket, series_labels,
};
use crate::traceql::search::{AttrRef, ScanStats, attr_ref};
use crate::{QueryError, Result};

/// What one interval of one series holds besides its count, as a
/// partition adds it up (functions of an input value but not of its
/// distribution: sum, min, max, avg).
#[derive(Debug, Clone, Default)]
struct PartialCell {
    sum: f64,
    min: f64,
    max: f64,
}

impl PartialCell {
    /// Adds `value`, the cell holding `count` values before it.
    fn add(&mut self, count: u64, value: f64) {
        if count == 0 {
            self.min = value;
            self.max = value;
        } else {
            self.min = self.min.min(value);
            self.max = self.max.max(value);
        }
        self.sum += value;
    }
}

/// One interval of one series' counts per power-of-two bucket, as a
/// partition adds them up (quantiles and histograms). Rows come in trace
/// order, so each lands on a cell far from the last one: the first eight
/// buckets a cell sees sit inline in one cache line, and a row costs one
/// miss; more (or a count past `u32::MAX`) go beside them.
#[derive(Debug, Clone, Default)]
#[repr(align(64))]
struct CellBuckets {
    /// Bucket exponents (at least 1); 0 marks a free slot.
    exponents: [u8; 8],
    counts: [u32; 8],
    more: Vec<(u8, u64)>,
}

impl CellBuckets {
    fn add(&mut self, exponent: u8) {
        for slot in 0..self.exponents.len() {
            if self.exponents[slot] == 0 {
                self.exponents[slot] = exponent;
                self.counts[slot] = 1;
                return;
            }
            if self.exponents[slot] == exponent {
                if let Some(count) = self.counts[slot].checked_add(1) {
                    self.counts[slot] = count;
                    return;
                }
                break;
            }
        }
        match self.more.iter_mut().find(|(at, _)| *at == exponent) {
            Some((_, count)) => *count += 1,
            None => self.more.push((exponent, 1)),
        }
    }

    /// `(exponent, count)` per bucket; an exponent may come twice.
    fn counts(&self) -> impl Iterator<Item = (u8, u64)> + '_ {
        self.exponents
            .iter()
            .zip(self.counts)
            .take_while(|(exponent, _)| **exponent != 0)
            .map(|(exponent, count)| (*exponent, u64::from(count)))
            .chain(self.more.iter().copied())
    }
}

/// An exemplar candidate: series, interval, value, start (ms), trace id.
type Candidate = (usize, usize, f64, i64, String);

/// What one partition of a pass found.
#[derive(Debug, Default)]
pub(super) struct Partial {
    /// Label values of each series (`None`: the span has no such value).
    labels: Vec<Vec<Option<AttrValue>>>,
    /// Intervals of the request: cells of series `s` are at
    /// `s * intervals ..`.
    intervals: usize,
    /// Spans per cell, series after series.
    counts: Vec<u64>,
    /// For [`Pass::Edges`]: spans per cell to take off, counted there by
    /// a precomputed row (laid out as `counts`).
    moved: Vec<u64>,
    /// Sums and extremes per cell, when the function has an input value
    /// and is not bucketed (else empty).
    cells: Vec<PartialCell>,
    /// Buckets per cell, when the function is bucketed (else empty).
    buckets: Vec<CellBuckets>,
    /// Series by the `Debug` text of their label values.
    index: HashMap<String, usize>,
    /// Series by label text, when the only label is a text column: found
    /// without formatting a key (see [`Partial::text_series`]).
    by_text: HashMap<String, u32>,
    exemplars: Vec<Candidate>,
    /// Spans of duration 0 seen (candidates for in-progress segments).
    pub(super) zero_durations: u64,
    overflowed: bool,
    /// Bytes of the batches folded.
    bytes: u64,
}

fn corrupt(what: &str) -> QueryError {
    QueryError::DataFusion(datafusion::error::DataFusionError::Internal(format!(
        "metrics column {what} missing or mistyped"
    )))
}

/// The interval `start_ns` falls in, `(start + i*step, start + (i+1)*step]`.
#[derive(Debug, Clone, Copy)]
struct Intervals {
    start_ns: i64,
    step_ns: u64,
    count: usize,
    /// `1 / step`, for a quotient corrected by one step at most.
    inverse: f64,
}

impl Intervals {
    fn new(request: &MetricsRequest) -> Self {
        let step_ns = request.step_ns.max(1) as u64;
        Self {
            start_ns: request.start_ns,
            step_ns,
            count: request.intervals(),
            inverse: 1.0 / step_ns as f64,
        }
    }

    fn of(&self, start_ns: i64) -> Option<usize> {
        // Start times at or before the range's start wrap to huge offsets.
        let offset = start_ns.wrapping_sub(self.start_ns).wrapping_sub(1) as u64;
        if start_ns <= self.start_ns {
            return None;
        }
        // A float quotient is off by at most one step: corrected exactly.
        let mut index = (offset as f64 * self.inverse) as u64;
        if index.wrapping_mul(self.step_ns) > offset {
            index -= 1;
        } else if (index + 1).wrapping_mul(self.step_ns) <= offset {
            index += 1;
        }
        let index = index as usize;
        (index < self.count).then_some(index)
    }
}

/// A function's input column: durations as stored, attributes as Float64.
enum Values<'a> {
    Int(&'a datafusion::arrow::array::Int64Array),
    Float(&'a datafusion::arrow::array::Float64Array),
}

impl<'a> Values<'a> {
    fn of(array: &'a dyn Array) -> Result<Self> {
        if let Some(ints) = array.as_primitive_opt::<Int64Type>() {
            return Ok(Self::Int(ints));
        }
        array
            .as_primitive_opt::<Float64Type>()
            .map(Self::Float)
            .ok_or_else(|| corrupt(VALUE))
    }

    fn value(&self, row: usize) -> f64 {
        match self {
            Self::Int(ints) => ints.value(row) as f64,
            Self::Float(floats) => floats.value(row),
        }
    }

    /// The power-of-two bucket (its exponent) of the value of `row`, if
    /// the value is bucketed: whole and at least 2.
    fn bucket(&self, row: usize) -> Option<u8> {
        let whole = match self {
            Self::Int(ints) => u64::try_from(ints.value(row)).ok()?,
            Self::Float(floats) => {
                let value = floats.value(row);
                if value.fract() != 0.0 || value < 0.0 {
                    return None;
                }
                value as u64
            }
        };
        (whole >= 2).then(|| log2_bucket(whole).trailing_zeros() as u8)
    }
}

/// A column's per-row codes within one batch: 0 for no value, otherwise
/// one plus the index of the value in `values`.
struct Codes {
    rows: Vec<u32>,
    values: Vec<AttrValue>,
}

/// Hashes a 16-byte view with one multiply: views of a batch are few and
/// not chosen by an adversary (a long string's view holds its length,
/// prefix and offset; a short one holds the string).
#[derive(Default)]
struct ViewHasher(u64);

impl std::hash::Hasher for ViewHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 =
                (self.0.rotate_left(5) ^ u64::from(*byte)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    fn write_u128(&mut self, value: u128) {
        let folded = (value as u64) ^ ((value >> 64) as u64).rotate_left(29);
        self.0 = (folded ^ self.0).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 ^= self.0 >> 32;
    }
}

type ViewMap = HashMap<u128, u32, std::hash::BuildHasherDefault<ViewHasher>>;

fn text_codes(array: &dyn Array) -> Result<Codes> {
    let strings = array
        .as_string_view_opt()
        .ok_or_else(|| corrupt("label (text)"))?;
    let views = strings.views();
    let mut codes = Codes {
        rows: Vec::with_capacity(strings.len()),
        values: Vec::new(),
    };
    let mut seen = ViewMap::default();
    let mut last: Option<(u128, u32)> = None;
    for row in 0..strings.len() {
        if strings.is_null(row) {
            codes.rows.push(0);
            continue;
        }
        let view = views[row];
        let code = match last {
            Some((previous, code)) if previous == view => code,
            _ => {
                let code = *seen.entry(view).or_insert_with(|| {
                    codes
                        .values
                        .push(AttrValue::Text(strings.value(row).to_string()));
                    codes.values.len() as u32
                });
                last = Some((view, code));
                code
            }
        };
        codes.rows.push(code);
    }
    Ok(codes)
}

fn attribute_codes(array: &dyn Array) -> Result<Codes> {
    let structs = array
        .as_struct_opt()
        .ok_or_else(|| corrupt("label (attribute)"))?;
    let mut codes = Codes {
        rows: Vec::with_capacity(structs.len()),
        values: Vec::new(),
    };
    // Keyed by the borrowed value: nothing is copied for a value seen.
    let mut seen: HashMap<AttrRef<'_>, u32> = HashMap::new();
    for row in 0..structs.len() {
        let code = match attr_ref(structs, row) {
            None => 0,
            Some(value) => *seen.entry(value).or_insert_with(|| {
                codes.values.push(value.to_value());
                codes.values.len() as u32
            }),
        };
        codes.rows.push(code);
    }
    Ok(codes)
}

impl Partial {
    /// The series of `values`, made when new; `None` past the series limit.
    fn series(&mut self, values: Vec<Option<AttrValue>>, limit: usize) -> Option<usize> {
        let key = format!("{values:?}");
        if let Some(series) = self.index.get(&key) {
            return Some(*series);
        }
        if self.labels.len() >= limit {
            self.overflowed = true;
            return None;
        }
        self.labels.push(values);
        self.counts.resize(self.labels.len() * self.intervals, 0);
        self.index.insert(key, self.labels.len() - 1);
        Some(self.labels.len() - 1)
    }

    /// Each row's series in `batch` (`u32::MAX`: none, past the limit).
    fn rows_series(&mut self, batch: &RecordBatch, plan: &Plan, limit: usize) -> Result<Vec<u32>> {
        let rows = batch.num_rows();
        let kinds = plan.label_columns();
        if kinds.is_empty() {
            let series = self
                .series(Vec::new(), limit)
                .map_or(u32::MAX, |s| s as u32);
            return Ok(vec![series; rows]);
        }
        if kinds == [LabelColumn::Text] {
            let name = by_column(0);
            let array = batch.column_by_name(&name).ok_or_else(|| corrupt(&name))?;
            return self.text_series(array.as_ref(), limit);
        }
        let columns = kinds
            .iter()
            .enumerate()
            .map(|(index, kind)| {
                let name = by_column(index);
                let array = batch.column_by_name(&name).ok_or_else(|| corrupt(&name))?;
                match kind {
                    LabelColumn::Text => text_codes(array),
                    LabelColumn::Any => attribute_codes(array),
                }
            })
            .collect::<Result<Vec<Codes>>>()?;
        // The codes of a row, combined into one number per distinct tuple.
        let mut combined: HashMap<Vec<u32>, u32> = HashMap::new();
        let mut out = Vec::with_capacity(rows);
        if let [only] = columns.as_slice() {
            let mut resolved: Vec<Option<u32>> = vec![None; only.values.len() + 1];
            for &code in &only.rows {
                let series = match resolved[code as usize] {
                    Some(series) => series,
                    None => {
                        let value = code
                            .checked_sub(1)
                            .map(|at| only.values[at as usize].clone());
                        let series = self
                            .series(vec![value], limit)
                            .map_or(u32::MAX, |s| s as u32);
                        resolved[code as usize] = Some(series);
                        series
                    }
                };
                out.push(series);
            }
            return Ok(out);
        }
        for row in 0..rows {
            let key: Vec<u32> = columns.iter().map(|codes| codes.rows[row]).collect();
            let series = match combined.get(&key) {
                Some(series) => *series,
                None => {
                    let values = columns
                        .iter()
                        .map(|codes| {
                            codes.rows[row]
                                .checked_sub(1)
                                .map(|at| codes.values[at as usize].clone())
                        })
                        .collect();
                    let series = self.series(values, limit).map_or(u32::MAX, |s| s as u32);
                    combined.insert(key, series);
                    series
                }
            };
            out.push(series);
        }
        Ok(out)
    }

    /// Each row's series when the only label is the text column `array`:
    /// a row whose view repeats one seen in the batch costs a comparison
    /// or a lookup of 16 bytes; a new view, one lookup of its text.
    fn text_series(&mut self, array: &dyn Array, limit: usize) -> Result<Vec<u32>> {
        let strings = array
            .as_string_view_opt()
            .ok_or_else(|| corrupt("label (text)"))?;
        let views = strings.views();
        let mut seen = ViewMap::default();
        let mut last: Option<(u128, u32)> = None;
        let mut nil: Option<u32> = None;
        let mut out = Vec::with_capacity(strings.len());
        for row in 0..strings.len() {
            if strings.is_null(row) {
                let series = match nil {
                    Some(series) => series,
                    None => {
                        let series = self
                            .series(vec![None], limit)
                            .map_or(u32::MAX, |s| s as u32);
                        *nil.insert(series)
                    }
                };
                out.push(series);
                continue;
            }
            let view = views[row];
            let series = match last {
                Some((previous, series)) if previous == view => series,
                _ => {
                    let series = match seen.get(&view) {
                        Some(series) => *series,
                        None => {
                            let text = strings.value(row);
                            let series = match self.by_text.get(text) {
                                Some(series) => *series,
                                None => {
                                    let value = Some(AttrValue::Text(text.to_string()));
                                    let series = self
                                        .series(vec![value], limit)
                                        .map_or(u32::MAX, |s| s as u32);
                                    if series != u32::MAX {
                                        self.by_text.insert(text.to_string(), series);
                                    }
                                    series
                                }
                            };
                            seen.insert(view, series);
                            series
                        }
                    };
                    last = Some((view, series));
                    series
                }
            };
            out.push(series);
        }
        Ok(out)
    }

    /// Adds the rows of `batch` (the columns of [`super::frame`]).
    pub(super) fn fold(
        &mut self,
        batch: &RecordBatch,
        plan: &Plan,
        request: &MetricsRequest,
        pass: Pass,
    ) -> Result<()> {
        let intervals = Intervals::new(request);
        self.intervals = intervals.count;
        let limit = MAX_SERIES.min(MAX_CELLS / intervals.count.max(1));
        let starts = batch
            .column_by_name(START)
            .and_then(|array| array.as_primitive_opt::<Int64Type>())
            .ok_or_else(|| corrupt(START))?;
        let values = batch
            .column_by_name(VALUE)
            .map(|array| Values::of(array.as_ref()))
            .transpose()?;
        if let Some(durations) = batch
            .column_by_name(DURATION)
            .and_then(|array| array.as_primitive_opt::<Int64Type>())
        {
            self.zero_durations += durations.values().iter().filter(|d| **d == 0).count() as u64;
        }
        let series_of = self.rows_series(batch, plan, limit)?;
        self.bytes += batch.get_array_memory_size() as u64;
        if let Pass::Exemplars { .. } = pass {
            let traces = batch
                .column_by_name(EXEMPLAR_TRACE)
                .and_then(|array| array.as_fixed_size_binary_opt())
                .ok_or_else(|| corrupt(EXEMPLAR_TRACE))?;
            for (row, series) in series_of.iter().enumerate() {
                let Some(interval) = intervals.of(starts.value(row)) else {
                    continue;
                };
                if *series == u32::MAX || traces.is_null(row) {
                    continue;
                }
                let value = values.as_ref().map_or(1.0, |values| values.value(row));
                self.exemplars.push((
                    *series as usize,
                    interval,
                    value,
                    starts.value(row) / 1_000_000,
                    hex::encode(traces.value(row)),
                ));
            }
            return Ok(());
        }
        let width = intervals.count;
        let Some(values) = values else {
            // Spans inside precomputed minutes (on a boundary `b`): the
            // row of `b`'s minute counted them in the interval after `b`.
            let precomputed = match pass {
                Pass::Edges { from, to } => {
                    self.moved.resize(self.counts.len(), 0);
                    from..to
                }
                _ => 0..0,
            };
            for (row, series) in series_of.iter().enumerate() {
                if *series == u32::MAX {
                    continue;
                }
                let start = starts.value(row);
                let at = *series as usize * width;
                if let Some(interval) = intervals.of(start) {
                    self.counts[at + interval] += 1;
                }
                if precomputed.contains(&start)
                    && let Some(later) = intervals.of(start.saturating_add(1))
                {
                    self.moved[at + later] += 1;
                }
            }
            return Ok(());
        };
        let bucketed = plan.bucketed();
        if bucketed {
            self.buckets
                .resize(self.counts.len(), CellBuckets::default());
        } else {
            self.cells.resize(self.counts.len(), PartialCell::default());
        }
        for (row, series) in series_of.iter().enumerate() {
            if *series == u32::MAX {
                continue;
            }
            let Some(interval) = intervals.of(starts.value(row)) else {
                continue;
            };
            let at = *series as usize * width + interval;
            if !bucketed {
                self.cells[at].add(self.counts[at], values.value(row));
            } else if let Some(exponent) = values.bucket(row) {
                self.buckets[at].add(exponent);
            } else {
                continue;
            }
            self.counts[at] += 1;
        }
        Ok(())
    }

    /// Adds this partition's cells (or, for [`Pass::InProgress`], takes
    /// its counts off) and offers its exemplars.
    pub(super) fn add_to(
        self,
        plan: &Plan,
        request: &MetricsRequest,
        pass: Pass,
        accumulated: &mut Accumulated,
        stats: &mut ScanStats,
    ) {
        let query = plan.query();
        let intervals = request.intervals();
        accumulated.overflowed |= self.overflowed;
        stats.inspected_bytes += self.bytes;
        let mut labels_of = Vec::with_capacity(self.labels.len());
        for values in self.labels {
            labels_of.push(series_labels(&query.by, values, &query.function));
        }
        let width = self.intervals.max(1);
        let mut moved = self.moved.chunks(width);
        for (series, counts) in self.counts.chunks(width).enumerate() {
            let moved = moved.next().unwrap_or_default();
            if counts.iter().chain(moved).all(|count| *count == 0) {
                continue;
            }
            let Some(target) = accumulated.cells(labels_of[series].clone(), intervals) else {
                continue;
            };
            for (interval, (cell, count)) in target.iter_mut().zip(counts).enumerate() {
                let at = series * width + interval;
                let details = Details {
                    cell: self.cells.get(at),
                    buckets: self.buckets.get(at),
                };
                add_cell(cell, *count, details, pass, stats);
            }
            for (cell, count) in target.iter_mut().zip(moved) {
                cell.count -= *count as f64;
                stats.inspected_spans = stats.inspected_spans.saturating_sub(*count);
            }
        }
        for (series, interval, value, timestamp_ms, trace) in self.exemplars {
            accumulated.offer_exemplar(
                &labels_of[series],
                interval,
                value,
                timestamp_ms,
                trace,
                request.exemplars,
            );
        }
    }
}

/// What a partition holds for one cell besides its count.
struct Details<'a> {
    cell: Option<&'a PartialCell>,
    buckets: Option<&'a CellBuckets>,
}

fn add_cell(cell: &mut Cell, count: u64, details: Details<'_>, pass: Pass, stats: &mut ScanStats) {
    if count == 0 {
        return;
    }
    if pass == Pass::InProgress {
        cell.count -= count as f64;
        stats.inspected_spans = stats.inspected_spans.saturating_sub(count);
        return;
    }
    stats.inspected_spans += count;
    if let Some(buckets) = details.buckets {
        for (exponent, count) in buckets.counts() {
            cell.buckets.add(1u64 << exponent, count as f64);
        }
    } else if let Some(partial) = details.cell {
        cell.merge(count as f64, partial.sum, partial.min, partial.max);
    } else {
        cell.count += count as f64;
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{StringViewArray, StringViewBuilder};

    use super::*;

    fn intervals(start_ns: i64, step_ns: i64, count: usize) -> Intervals {
        Intervals::new(&MetricsRequest {
            start_ns,
            end_ns: start_ns + step_ns * count as i64,
            step_ns,
            exemplars: 0,
            instant: false,
        })
    }

    #[test]
    fn intervals_are_open_at_the_start_and_closed_at_the_end() {
        let base = 1_795_960_800_000_000_000;
        let step = 15_000_000_000;
        let of = intervals(base, step, 240);
        assert_eq!(of.count, 240);
        assert_eq!(of.of(base), None);
        assert_eq!(of.of(base - 1), None);
        assert_eq!(of.of(i64::MIN), None);
        assert_eq!(of.of(base + 1), Some(0));
        assert_eq!(of.of(base + step), Some(0));
        assert_eq!(of.of(base + step + 1), Some(1));
        assert_eq!(of.of(base + 240 * step), Some(239));
        assert_eq!(of.of(base + 240 * step + 1), None);
        assert_eq!(of.of(i64::MAX), None);
        // Every offset against integer division, steps that floats do not
        // divide exactly.
        for step in [1, 3, 7, 999_999_937, 60_000_000_000] {
            let of = intervals(base, step, 1000);
            for offset in (1..2000i64)
                .chain((0..2000).map(|k| k * step))
                .chain((1..2000).map(|k| k * step + 1))
            {
                let expected = (offset >= 1)
                    .then(|| (offset - 1) / step)
                    .and_then(|at| usize::try_from(at).ok())
                    .filter(|at| *at < 1000);
                assert_eq!(
                    of.of(base + offset),
                    expected,
                    "step {step}, offset {offset}"
                );
            }
        }
    }

    #[test]
    fn equal_texts_under_different_views_share_a_code() {
        // Long strings (past the 12 bytes a view holds) from two arrays
        // concatenated: equal texts, different buffers, so different views.
        let long = "a-service-name-longer-than-twelve-bytes";
        let mut first = StringViewBuilder::new();
        first.append_value(long);
        first.append_null();
        first.append_value("short");
        let first = first.finish();
        let mut second = StringViewBuilder::new();
        second.append_value(long);
        second.append_value("short");
        let second = second.finish();
        let joined = datafusion::arrow::compute::concat(&[&first, &second]).unwrap();
        let strings: &StringViewArray = joined.as_string_view();
        let codes = text_codes(strings).unwrap();
        assert_eq!(codes.rows[1], 0, "null has no value");
        assert_eq!(
            codes.values[codes.rows[2] as usize - 1],
            AttrValue::Text("short".into())
        );
        assert_eq!(
            codes.values[codes.rows[4] as usize - 1],
            AttrValue::Text("short".into())
        );
        // However the views compare, the series of both long rows is one.
        let mut partial = Partial {
            intervals: 1,
            ..Partial::default()
        };
        let mut series = Vec::new();
        for row in [0, 3] {
            let value = codes.values[codes.rows[row] as usize - 1].clone();
            series.push(partial.series(vec![Some(value)], 10));
        }
        assert_eq!(series[0], series[1]);
        assert_eq!(partial.labels.len(), 1);

        // The single-label path: one series per text, one for null.
        let mut partial = Partial {
            intervals: 1,
            ..Partial::default()
        };
        let series = partial.text_series(strings, 10).unwrap();
        assert_eq!(series[0], series[3]);
        assert_eq!(series[2], series[4]);
        assert_ne!(series[0], series[2]);
        assert_ne!(series[1], series[0]);
        assert_eq!(partial.labels[series[1] as usize], vec![None]);
        assert_eq!(partial.labels.len(), 3);
        // Past the series limit, new texts have no series.
        let mut partial = Partial {
            intervals: 1,
            ..Partial::default()
        };
        let series = partial.text_series(strings, 1).unwrap();
        assert_eq!(series.iter().filter(|s| **s == u32::MAX).count(), 3);
        assert!(partial.overflowed);
    }

    #[test]
    fn cell_buckets_hold_any_number_of_buckets_and_counts() {
        let totals = |buckets: &CellBuckets| {
            let mut totals = std::collections::BTreeMap::new();
            for (exponent, count) in buckets.counts() {
                *totals.entry(exponent).or_insert(0u64) += count;
            }
            totals.into_iter().collect::<Vec<_>>()
        };
        let mut buckets = CellBuckets::default();
        // Twelve buckets: eight inline, four beside them, out of order.
        for round in 1..=3u64 {
            for exponent in (1..=12u8).rev() {
                if u64::from(exponent) % 3 < round {
                    buckets.add(exponent);
                }
            }
        }
        let expected: Vec<(u8, u64)> = (1..=12u8)
            .map(|exponent| (exponent, 3 - u64::from(exponent) % 3))
            .collect();
        assert_eq!(totals(&buckets), expected);
        assert_eq!(buckets.more.len(), 4);
        // A count past u32::MAX goes on beside the inline slot.
        let mut full = CellBuckets::default();
        full.add(5);
        full.counts[0] = u32::MAX;
        full.add(5);
        full.add(5);
        assert_eq!(totals(&full), vec![(5, u64::from(u32::MAX) + 2)]);
    }

    #[test]
    fn buckets_are_the_next_power_of_two_of_whole_values_from_two() {
        let ints = datafusion::arrow::array::Int64Array::from(vec![
            0,
            1,
            2,
            3,
            4,
            5,
            1 << 40,
            (1 << 40) + 1,
            -4,
        ]);
        let values = Values::Int(&ints);
        let buckets: Vec<Option<u8>> = (0..ints.len()).map(|row| values.bucket(row)).collect();
        assert_eq!(
            buckets,
            vec![
                None,
                None,
                Some(1),
                Some(2),
                Some(2),
                Some(3),
                Some(40),
                Some(41),
                None
            ]
        );
        let floats = datafusion::arrow::array::Float64Array::from(vec![2.5, 8.0, 1.0, -8.0]);
        let values = Values::Float(&floats);
        let buckets: Vec<Option<u8>> = (0..floats.len()).map(|row| values.bucket(row)).collect();
        assert_eq!(buckets, vec![None, Some(3), None, None]);
    }
}

//! Latency histograms: hdrhistogram in microseconds, two significant
//! digits (every recorded value is known within 1%), growing to the largest
//! value seen.
//!
//! Serialized in hdrhistogram's V2 format (zeros run-length encoded, so a
//! minute of one edge's latencies is typically tens of bytes), which is what
//! the `edges` and `span_metrics` tables store. Histograms of any number of
//! minutes merge without losing precision, so a quantile over an hour is as
//! exact as over a minute.

use std::sync::LazyLock;

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};

use crate::{ModelError, Result};

/// Tempo's default service-graph histogram buckets, seconds.
pub const SERVICE_GRAPH_BUCKETS: [f64; 8] = [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8];
/// Tempo's default span-metrics histogram buckets, seconds.
pub const SPAN_METRICS_BUCKETS: [f64; 12] = [
    0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.02, 2.05, 4.10,
];

/// Significant decimal digits kept: values are exact within 1%.
pub const SIGNIFICANT_DIGITS: u8 = 2;

const NANOS_PER_MICRO: i64 = 1_000;
const MICROS_PER_SECOND: f64 = 1_000_000.0;

/// Distinct values a histogram keeps as a sorted list before it becomes a
/// dense hdrhistogram. A dense one of two significant digits holds 128
/// counters per power of two up to its largest value: 14 KB for latencies up
/// to a second, 18 KB up to a minute, whether one value was recorded or a
/// million. The streaming aggregation keeps one per service, operation,
/// kind, status and minute, most of which see a handful of distinct
/// values; 64 entries (1 KB) keeps those small, and a busy key pays the
/// dense size once.
const MAX_SPARSE_VALUES: usize = 64;

/// The hdrhistogram every histogram quantizes with: a value is recorded as
/// its bucket's lowest equivalent value, which depends only on the
/// precision, not on a histogram's range.
static QUANTIZER: LazyLock<Histogram<u64>> = LazyLock::new(dense_histogram);

fn dense_histogram() -> Histogram<u64> {
    let mut micros = Histogram::new(SIGNIFICANT_DIGITS)
        .expect("two significant digits is a valid hdrhistogram precision");
    micros.auto(true);
    micros
}

/// A latency distribution.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    micros: Repr,
}

/// How a histogram holds its counts; both answer alike (see
/// [`MAX_SPARSE_VALUES`]).
#[derive(Debug, Clone)]
enum Repr {
    /// Each recorded bucket, as its lowest equivalent value in
    /// microseconds, with its count; ascending, no zero counts. A decoded
    /// histogram may hold more than [`MAX_SPARSE_VALUES`]; recording a new
    /// bucket into it makes it dense.
    Sparse(Vec<(u64, u64)>),
    Dense(Histogram<u64>),
}

impl PartialEq for LatencyHistogram {
    /// Equal when they hold the same counts in the same buckets, however
    /// each holds them.
    fn eq(&self, other: &Self) -> bool {
        self.buckets() == other.buckets()
    }
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    pub fn new() -> Self {
        Self {
            micros: Repr::Sparse(Vec::new()),
        }
    }

    /// Records one duration; negative durations count as zero. The
    /// histogram grows to hold any duration an i64 of nanoseconds can be.
    pub fn record_ns(&mut self, duration_ns: i64) {
        let micros = (duration_ns.max(0) / NANOS_PER_MICRO) as u64;
        self.record_n(micros, 1);
    }

    fn record_n(&mut self, micros: u64, count: u64) {
        match &mut self.micros {
            Repr::Sparse(buckets) => {
                let bucket = QUANTIZER.lowest_equivalent(micros);
                match buckets.binary_search_by_key(&bucket, |(value, _)| *value) {
                    Ok(index) => buckets[index].1 += count,
                    Err(index) => {
                        buckets.insert(index, (bucket, count));
                        if buckets.len() > MAX_SPARSE_VALUES {
                            self.micros = Repr::Dense(self.dense().into_owned());
                        }
                    }
                }
            }
            Repr::Dense(dense) => record_dense(dense, micros, count),
        }
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Self) {
        match (&mut self.micros, &other.micros) {
            (_, Repr::Sparse(buckets)) => {
                for (value, count) in buckets {
                    self.record_n(*value, *count);
                }
            }
            (Repr::Dense(dense), Repr::Dense(theirs)) => {
                // Both auto-resize, so addition cannot run out of range.
                if let Err(error) = dense.add(theirs) {
                    debug_assert!(false, "auto-resizing histograms always add: {error}");
                }
            }
            (Repr::Sparse(_), Repr::Dense(_)) => {
                let mut dense = other.dense().into_owned();
                if let Repr::Sparse(buckets) = &self.micros {
                    for (value, count) in buckets {
                        record_dense(&mut dense, *value, *count);
                    }
                }
                self.micros = Repr::Dense(dense);
            }
        }
    }

    /// The counts as a dense hdrhistogram (borrowed when they are one).
    fn dense(&self) -> std::borrow::Cow<'_, Histogram<u64>> {
        match &self.micros {
            Repr::Dense(dense) => std::borrow::Cow::Borrowed(dense),
            Repr::Sparse(buckets) => {
                let mut dense = dense_histogram();
                for (value, count) in buckets {
                    record_dense(&mut dense, *value, *count);
                }
                std::borrow::Cow::Owned(dense)
            }
        }
    }

    /// Every recorded bucket (its lowest equivalent value) and its count,
    /// ascending.
    fn buckets(&self) -> Vec<(u64, u64)> {
        match &self.micros {
            Repr::Sparse(buckets) => buckets.clone(),
            Repr::Dense(dense) => dense
                .iter_recorded()
                .map(|step| {
                    (
                        dense.lowest_equivalent(step.value_iterated_to()),
                        step.count_at_value(),
                    )
                })
                .collect(),
        }
    }

    pub fn count(&self) -> u64 {
        match &self.micros {
            Repr::Sparse(buckets) => buckets.iter().map(|(_, count)| count).sum(),
            Repr::Dense(dense) => dense.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        match &self.micros {
            Repr::Sparse(buckets) => buckets.is_empty(),
            Repr::Dense(dense) => dense.is_empty(),
        }
    }

    /// The value at `quantile` (0..=1), in seconds: the highest value
    /// equivalent to it within the histogram's precision, as hdrhistogram
    /// reports; 0 when empty.
    pub fn quantile_seconds(&self, quantile: f64) -> f64 {
        if self.is_empty() {
            return 0.0;
        }
        let quantile = quantile.clamp(0.0, 1.0);
        let micros = match &self.micros {
            Repr::Dense(dense) => dense.value_at_quantile(quantile),
            // hdrhistogram's own rule, over the buckets: the first whose
            // running count reaches ceil(quantile * count) (at least 1),
            // reported as its highest equivalent value (lowest for 0).
            Repr::Sparse(buckets) => {
                let wanted = ((quantile * self.count() as f64).ceil() as u64).max(1);
                let mut running = 0;
                let bucket = buckets
                    .iter()
                    .find(|(_, count)| {
                        running += count;
                        running >= wanted
                    })
                    .or(buckets.last())
                    .map_or(0, |(value, _)| *value);
                if quantile == 0.0 {
                    bucket
                } else {
                    QUANTIZER.highest_equivalent(bucket)
                }
            }
        };
        micros as f64 / MICROS_PER_SECOND
    }

    /// The largest recorded value, in seconds (within precision).
    pub fn max_seconds(&self) -> f64 {
        if self.is_empty() {
            return 0.0;
        }
        let micros = match &self.micros {
            Repr::Dense(dense) => dense.max(),
            Repr::Sparse(buckets) => buckets
                .last()
                .map_or(0, |(value, _)| QUANTIZER.highest_equivalent(*value)),
        };
        micros as f64 / MICROS_PER_SECOND
    }

    /// Every distinct recorded value (within precision) and its count, in
    /// seconds, ascending: X-Ray's `[{Value, Count}]` histogram.
    pub fn distribution_seconds(&self) -> Vec<(f64, u64)> {
        self.buckets()
            .into_iter()
            .map(|(value, count)| {
                let median = QUANTIZER.median_equivalent(value);
                (median as f64 / MICROS_PER_SECOND, count)
            })
            .collect()
    }

    /// Cumulative counts of values at most each bound (seconds, ascending),
    /// as Prometheus histogram buckets; the `+Inf` bucket is [`Self::count`].
    /// A value within the precision of a bound counts as at most the bound.
    pub fn cumulative_counts(&self, bounds_seconds: &[f64]) -> Vec<u64> {
        bounds_seconds
            .iter()
            .map(|bound| {
                let bound_micros = (bound * MICROS_PER_SECOND).max(0.0) as u64;
                match &self.micros {
                    Repr::Dense(dense) => dense.count_between(0, bound_micros),
                    // Buckets up to the bound's own bucket, as hdrhistogram
                    // counts them.
                    Repr::Sparse(buckets) => {
                        let last = QUANTIZER.lowest_equivalent(bound_micros);
                        buckets
                            .iter()
                            .take_while(|(value, _)| *value <= last)
                            .map(|(_, count)| count)
                            .sum()
                    }
                }
            })
            .collect()
    }

    /// The V2 serialization stored in the derived tables.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(64);
        if let Err(error) = V2Serializer::new().serialize(self.dense().as_ref(), &mut bytes) {
            // Writing to a Vec cannot fail and a u64 histogram always encodes.
            debug_assert!(false, "hdrhistogram V2 encode: {error}");
        }
        bytes
    }

    /// Reads the V2 serialization. The layout [`Self::encode`] writes (two
    /// significant digits from 1 µs, uncompressed) is read straight into
    /// its recorded buckets: an hour of minutes merges without building a
    /// dense histogram of tens of kilobytes per minute. Any other V2 layout
    /// goes through hdrhistogram's own reader.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        if let Some(buckets) = v2_buckets(bytes) {
            return Ok(Self {
                micros: Repr::Sparse(buckets?),
            });
        }
        let mut reader = bytes;
        let mut micros: Histogram<u64> = Deserializer::new()
            .deserialize(&mut reader)
            .map_err(|error| ModelError::Corrupt(format!("latency histogram: {error:?}")))?;
        micros.auto(true);
        Ok(Self {
            micros: Repr::Dense(micros),
        })
    }
}

/// hdrhistogram's V2 cookie (uncompressed) and header: cookie, payload
/// length, normalizing index offset, significant digits (each a big-endian
/// u32), lowest discernible and highest trackable value (u64), integer to
/// double ratio (f64).
const V2_COOKIE: u32 = 0x1c84_9303 | 0x10;
const V2_HEADER_BYTES: usize = 40;
/// Sub-buckets in the upper half of each bucket, as a power of two: at two
/// significant digits from 1 µs a bucket has 256 (2 * 10^2 rounded up to a
/// power of two), counted from index 128 up in every bucket but the first.
const SUB_BUCKET_HALF_MAGNITUDE: u32 = 7;

/// The recorded buckets of a V2 serialization in the layout
/// [`LatencyHistogram::encode`] writes, ascending with no zero counts;
/// `None` for any other layout. The payload is hdrhistogram's: counts from
/// index 0 as zig-zag LEB128 varints (the ninth byte holds eight bits), a
/// negative number standing for that many zero counts.
fn v2_buckets(bytes: &[u8]) -> Option<Result<Vec<(u64, u64)>>> {
    let header = bytes.get(..V2_HEADER_BYTES)?;
    let u32_at = |at: usize| u32::from_be_bytes(header[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_be_bytes(header[at..at + 8].try_into().expect("8 bytes"));
    let ours = u32_at(0) == V2_COOKIE
        && u32_at(8) == 0
        && u32_at(12) == u32::from(SIGNIFICANT_DIGITS)
        && u64_at(16) == 1
        && f64::from_bits(u64_at(32)) == 1.0;
    if !ours {
        return None;
    }
    let corrupt = |what: &str| ModelError::Corrupt(format!("latency histogram: {what}"));
    let payload_len = u32_at(4) as usize;
    let Some(mut payload) = bytes[V2_HEADER_BYTES..].get(..payload_len) else {
        return Some(Err(corrupt("payload shorter than its header says")));
    };
    let mut buckets = Vec::new();
    let mut index: u64 = 0;
    while !payload.is_empty() {
        let Some(encoded) = read_varint(&mut payload) else {
            return Some(Err(corrupt("truncated count")));
        };
        // Zig-zag decoding.
        let count_or_zeros = ((encoded >> 1) as i64) ^ -((encoded & 1) as i64);
        // A run of zero counts skips that many slots, a count fills one.
        let (slots, count) = match u64::try_from(count_or_zeros) {
            Ok(count) => (1, count),
            Err(_) => (count_or_zeros.unsigned_abs(), 0),
        };
        if count > 0 {
            let Some(value) = value_at_index(index) else {
                return Some(Err(corrupt("count beyond the largest value")));
            };
            buckets.push((value, count));
        }
        let Some(next) = index.checked_add(slots) else {
            return Some(Err(corrupt("zero counts beyond the largest value")));
        };
        index = next;
    }
    Some(Ok(buckets))
}

/// One hdrhistogram varint off the front of `bytes`: LEB128, except that a
/// ninth byte contributes all eight bits.
fn read_varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut next = || {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        Some(byte)
    };
    let mut value = 0u64;
    for position in 0..8 {
        let byte = next()?;
        value |= u64::from(byte & 0x7f) << (7 * position);
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    Some(value | u64::from(next()?) << 56)
}

/// The lowest value of the counts-array slot `index` (hdrhistogram's
/// `value_for`, at two significant digits from 1); `None` past u64.
fn value_at_index(index: u64) -> Option<u64> {
    let half = 1u64 << SUB_BUCKET_HALF_MAGNITUDE;
    let bucket = (index >> SUB_BUCKET_HALF_MAGNITUDE).checked_sub(1);
    let (sub_bucket, shift) = match bucket {
        Some(bucket) => ((index & (half - 1)) + half, bucket),
        None => (index & (half - 1), 0),
    };
    // A sub-bucket holds at most 8 bits.
    (shift <= 56).then(|| sub_bucket << shift)
}

/// Records `count` values of `micros` in an auto-resizing histogram.
fn record_dense(dense: &mut Histogram<u64>, micros: u64, count: u64) {
    if dense.record_n(micros, count).is_err() {
        // Growing failed (cannot happen for u64 counts and i64 inputs):
        // clamp to the largest trackable value rather than lose the count.
        dense.saturating_record_n(micros, count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram_of(millis: &[i64]) -> LatencyHistogram {
        let mut histogram = LatencyHistogram::new();
        for value in millis {
            histogram.record_ns(value * 1_000_000);
        }
        histogram
    }

    #[test]
    fn quantiles_are_within_one_percent() {
        let millis: Vec<i64> = (1..=1000).collect();
        let histogram = histogram_of(&millis);
        for (quantile, expected) in [(0.5, 0.5), (0.9, 0.9), (0.99, 0.99), (1.0, 1.0)] {
            let got = histogram.quantile_seconds(quantile);
            assert!(
                (got - expected).abs() <= expected * 0.01,
                "p{quantile}: {got} vs {expected}"
            );
        }
        assert!((histogram.max_seconds() - 1.0).abs() <= 0.01);
        assert_eq!(histogram.count(), 1000);
    }

    #[test]
    fn merging_equals_recording_everything_once() {
        let mut merged = histogram_of(&[1, 5, 10]);
        merged.merge(&histogram_of(&[2_000, 7]));
        assert_eq!(merged, histogram_of(&[1, 5, 10, 2_000, 7]));
    }

    #[test]
    fn encoding_round_trips_and_is_small() {
        let histogram = histogram_of(&[3, 3, 3, 250, 1_200, 60_000]);
        let bytes = histogram.encode();
        assert!(bytes.len() < 100, "{} bytes", bytes.len());
        assert_eq!(LatencyHistogram::decode(&bytes).unwrap(), histogram);
        assert!(LatencyHistogram::decode(b"not a histogram").is_err());
        assert!(LatencyHistogram::decode(&bytes[..bytes.len() / 2]).is_err());
    }

    #[test]
    fn a_decoded_histogram_still_grows() {
        let mut decoded = LatencyHistogram::decode(&histogram_of(&[1]).encode()).unwrap();
        decoded.merge(&histogram_of(&[3_600_000]));
        assert_eq!(decoded.count(), 2);
        assert!((decoded.max_seconds() - 3600.0).abs() <= 36.0);
    }

    /// What a dense hdrhistogram of the same values answers: the sparse
    /// form (and its change to dense) must answer exactly that.
    fn reference(micros: &[u64]) -> Histogram<u64> {
        let mut dense = dense_histogram();
        for value in micros {
            dense.record(*value).unwrap();
        }
        dense
    }

    fn values(count: usize, seed: u64) -> Vec<u64> {
        let mut rng = fastrand::Rng::with_seed(seed);
        // Latencies across six orders of magnitude, some repeated.
        (0..count)
            .map(|_| 10u64.pow(rng.u32(0..7)) * rng.u64(1..50))
            .collect()
    }

    #[test]
    fn sparse_and_dense_forms_answer_as_one_dense_histogram() {
        for count in [0, 1, 10, 63, 64, 65, 200, 5_000] {
            let micros = values(count, count as u64);
            let mut histogram = LatencyHistogram::new();
            for value in &micros {
                histogram.record_ns(*value as i64 * 1_000);
            }
            let dense = reference(&micros);
            let mut expected_bytes = Vec::new();
            V2Serializer::new()
                .serialize(&dense, &mut expected_bytes)
                .unwrap();
            assert_eq!(histogram.encode(), expected_bytes, "{count} values");
            assert_eq!(histogram.count(), dense.len());
            for quantile in [0.0, 0.001, 0.25, 0.5, 0.9, 0.99, 0.999, 1.0] {
                let expected = if dense.is_empty() {
                    0.0
                } else {
                    dense.value_at_quantile(quantile) as f64 / MICROS_PER_SECOND
                };
                assert_eq!(
                    histogram.quantile_seconds(quantile),
                    expected,
                    "q{quantile}"
                );
            }
            let as_dense = LatencyHistogram {
                micros: Repr::Dense(dense.clone()),
            };
            assert_eq!(histogram.max_seconds(), as_dense.max_seconds());
            assert_eq!(
                histogram.distribution_seconds(),
                as_dense.distribution_seconds()
            );
            let bounds: Vec<f64> = (0..40).map(|step| 1e-6 * 1.7f64.powi(step)).collect();
            assert_eq!(
                histogram.cumulative_counts(&bounds),
                as_dense.cumulative_counts(&bounds)
            );
            assert_eq!(
                histogram,
                LatencyHistogram::decode(&expected_bytes).unwrap(),
                "{count} values"
            );
            // A few values stay a short list; many become one dense array.
            let sparse = matches!(histogram.micros, Repr::Sparse(_));
            let distinct = histogram.buckets().len();
            assert_eq!(sparse, distinct <= MAX_SPARSE_VALUES, "{distinct} distinct");
            assert_eq!(sparse, count <= 10 || distinct <= 64, "{count} values");
        }
    }

    #[test]
    fn merging_any_forms_equals_recording_everything_once() {
        let (small, large) = (values(20, 1), values(3_000, 2));
        let of = |micros: &[u64]| {
            let mut histogram = LatencyHistogram::new();
            for value in micros {
                histogram.record_ns(*value as i64 * 1_000);
            }
            histogram
        };
        let all: Vec<u64> = small.iter().chain(&large).copied().collect();
        for (left, right) in [
            (&small, &small),
            (&small, &large),
            (&large, &small),
            (&large, &large),
        ] {
            let mut merged = of(left);
            merged.merge(&of(right));
            let both: Vec<u64> = left.iter().chain(right.iter()).copied().collect();
            assert_eq!(merged, of(&both));
            assert_eq!(merged.count(), both.len() as u64);
        }
        let mut decoded = LatencyHistogram::decode(&of(&small).encode()).unwrap();
        decoded.merge(&of(&large));
        assert_eq!(decoded, of(&all));
    }

    fn v2(dense: &Histogram<u64>) -> Vec<u8> {
        let mut bytes = Vec::new();
        V2Serializer::new().serialize(dense, &mut bytes).unwrap();
        bytes
    }

    #[test]
    fn our_v2_reader_reads_the_buckets_hdrhistogram_reads() {
        let edges = [
            0,
            1,
            127,
            128,
            255,
            256,
            257,
            1 << 20,
            i64::MAX as u64 / 1_000,
        ];
        for (count, seed) in [(0, 0), (1, 1), (64, 2), (500, 3), (20_000, 4)] {
            let mut micros = values(count, seed);
            if seed > 0 {
                micros.extend(edges);
            }
            let bytes = v2(&reference(&micros));
            let ours = LatencyHistogram::decode(&bytes).unwrap();
            assert!(matches!(ours.micros, Repr::Sparse(_)), "read as buckets");
            let theirs: Histogram<u64> = Deserializer::new().deserialize(&mut &bytes[..]).unwrap();
            let theirs = LatencyHistogram {
                micros: Repr::Dense(theirs),
            };
            assert_eq!(ours.buckets(), theirs.buckets(), "{count} values");
            assert_eq!(ours.quantile_seconds(0.99), theirs.quantile_seconds(0.99));
            for end in 0..bytes.len() {
                assert!(
                    LatencyHistogram::decode(&bytes[..end]).is_err(),
                    "cut at {end}"
                );
            }
        }
        // A count past the largest value a u64 holds is corrupt, and so
        // are zero runs that run past the largest index.
        assert!(LatencyHistogram::decode(&with_payload(&[-(1 << 40), 1])).is_err());
        let past_the_end = [-i64::MAX, -i64::MAX, -i64::MAX, 0, 1];
        assert!(LatencyHistogram::decode(&with_payload(&past_the_end)).is_err());
    }

    /// A V2 serialization in our layout whose payload is `numbers`
    /// (negative: a run of zero counts), as hdrhistogram encodes them.
    fn with_payload(numbers: &[i64]) -> Vec<u8> {
        let mut payload = Vec::new();
        for number in numbers {
            let mut rest = ((number << 1) ^ (number >> 63)) as u64;
            for position in 0..9 {
                if position == 8 {
                    payload.push(rest as u8);
                } else if rest >= 0x80 {
                    payload.push(rest as u8 | 0x80);
                    rest >>= 7;
                    continue;
                } else {
                    payload.push(rest as u8);
                }
                break;
            }
        }
        let mut bytes = v2(&reference(&[1]));
        bytes.truncate(V2_HEADER_BYTES);
        bytes[4..8].copy_from_slice(&(payload.len() as u32).to_be_bytes());
        bytes.extend(payload);
        bytes
    }

    #[test]
    fn layouts_we_do_not_write_still_read() {
        let micros = values(300, 9);
        let mut three_digits: Histogram<u64> = Histogram::new(3).unwrap();
        three_digits.auto(true);
        for value in &micros {
            three_digits.record(*value).unwrap();
        }
        let mut compressed = Vec::new();
        hdrhistogram::serialization::V2DeflateSerializer::new()
            .serialize(&reference(&micros), &mut compressed)
            .unwrap();
        for (bytes, expected) in [
            (v2(&three_digits), three_digits.value_at_quantile(0.9)),
            (compressed, reference(&micros).value_at_quantile(0.9)),
        ] {
            let decoded = LatencyHistogram::decode(&bytes).unwrap();
            assert_eq!(decoded.count(), 300);
            assert_eq!(
                decoded.quantile_seconds(0.9),
                expected as f64 / MICROS_PER_SECOND
            );
        }
    }

    #[test]
    fn distribution_and_buckets() {
        let histogram = histogram_of(&[10, 10, 20, 300]);
        let distribution = histogram.distribution_seconds();
        assert_eq!(distribution.len(), 3);
        assert_eq!(distribution.iter().map(|(_, count)| count).sum::<u64>(), 4);
        assert!((distribution[0].0 - 0.010).abs() < 0.0001);
        assert_eq!(distribution[0].1, 2);
        assert_eq!(
            histogram.cumulative_counts(&[0.005, 0.010, 0.1, 1.0]),
            vec![0, 2, 3, 4]
        );
        assert!(LatencyHistogram::new().distribution_seconds().is_empty());
        assert_eq!(LatencyHistogram::new().quantile_seconds(0.99), 0.0);
    }
}

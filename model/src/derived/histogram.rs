//! Latency histograms: hdrhistogram in microseconds, two significant
//! digits (every recorded value is known within 1%), growing to the largest
//! value seen.
//!
//! Serialized in hdrhistogram's V2 format (zeros run-length encoded, so a
//! minute of one edge's latencies is typically tens of bytes), which is what
//! the `edges` and `span_metrics` tables store. Histograms of any number of
//! minutes merge without losing precision, so a quantile over an hour is as
//! exact as over a minute.

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

/// A latency distribution.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyHistogram {
    micros: Histogram<u64>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    pub fn new() -> Self {
        let mut micros = Histogram::new(SIGNIFICANT_DIGITS)
            .expect("two significant digits is a valid hdrhistogram precision");
        micros.auto(true);
        Self { micros }
    }

    /// Records one duration; negative durations count as zero. The
    /// histogram grows to hold any duration an i64 of nanoseconds can be.
    pub fn record_ns(&mut self, duration_ns: i64) {
        let micros = (duration_ns.max(0) / NANOS_PER_MICRO) as u64;
        if self.micros.record(micros).is_err() {
            // Growing failed (cannot happen for u64 counts and i64 inputs):
            // clamp to the largest trackable value rather than lose the count.
            self.micros.saturating_record(micros);
        }
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Self) {
        // Both auto-resize, so addition cannot run out of range.
        if let Err(error) = self.micros.add(&other.micros) {
            debug_assert!(false, "auto-resizing histograms always add: {error}");
        }
    }

    pub fn count(&self) -> u64 {
        self.micros.len()
    }

    pub fn is_empty(&self) -> bool {
        self.micros.is_empty()
    }

    /// The value at `quantile` (0..=1), in seconds: the highest value
    /// equivalent to it within the histogram's precision, as hdrhistogram
    /// reports; 0 when empty.
    pub fn quantile_seconds(&self, quantile: f64) -> f64 {
        if self.is_empty() {
            return 0.0;
        }
        self.micros.value_at_quantile(quantile.clamp(0.0, 1.0)) as f64 / MICROS_PER_SECOND
    }

    /// The largest recorded value, in seconds (within precision).
    pub fn max_seconds(&self) -> f64 {
        if self.is_empty() {
            return 0.0;
        }
        self.micros.max() as f64 / MICROS_PER_SECOND
    }

    /// Every distinct recorded value (within precision) and its count, in
    /// seconds, ascending: X-Ray's `[{Value, Count}]` histogram.
    pub fn distribution_seconds(&self) -> Vec<(f64, u64)> {
        self.micros
            .iter_recorded()
            .map(|step| {
                let value = self.micros.median_equivalent(step.value_iterated_to());
                (value as f64 / MICROS_PER_SECOND, step.count_at_value())
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
                self.micros.count_between(0, bound_micros)
            })
            .collect()
    }

    /// The V2 serialization stored in the derived tables.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(64);
        if let Err(error) = V2Serializer::new().serialize(&self.micros, &mut bytes) {
            // Writing to a Vec cannot fail and a u64 histogram always encodes.
            debug_assert!(false, "hdrhistogram V2 encode: {error}");
        }
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut reader = bytes;
        let mut micros: Histogram<u64> = Deserializer::new()
            .deserialize(&mut reader)
            .map_err(|error| ModelError::Corrupt(format!("latency histogram: {error:?}")))?;
        micros.auto(true);
        Ok(Self { micros })
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

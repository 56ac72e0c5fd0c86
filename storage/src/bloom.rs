//! A small Bloom filter over trace ids, kept in each block's meta file and
//! in memory, so trace-by-id without a time range opens only the blocks
//! that may hold the trace.
//!
//! Sized for a 1% false-positive rate. Trace ids are random (or, for X-Ray,
//! random after a 4-byte time), so the two 64-bit hashes for double hashing
//! come from mixing the id's halves; no general-purpose hasher is needed.

use base64::Engine;
use serde::{Deserialize, Serialize};

use tracelake_model::TraceId;

/// Bits per item for ~1% false positives with 7 probes.
const BITS_PER_ITEM: usize = 10;
const PROBES: u32 = 7;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceIdFilter {
    bits: Vec<u64>,
    probes: u32,
}

fn mix(mut value: u64) -> u64 {
    // splitmix64 finalizer
    value ^= value >> 30;
    value = value.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    value ^= value >> 27;
    value = value.wrapping_mul(0x94d0_49bb_1331_11eb);
    value ^ (value >> 31)
}

fn hashes(trace_id: &TraceId) -> (u64, u64) {
    let bytes = trace_id.as_bytes();
    let mut high = [0u8; 8];
    let mut low = [0u8; 8];
    high.copy_from_slice(&bytes[..8]);
    low.copy_from_slice(&bytes[8..]);
    let first = mix(u64::from_le_bytes(high) ^ mix(u64::from_le_bytes(low)));
    let second = mix(first ^ u64::from_le_bytes(low)) | 1;
    (first, second)
}

impl TraceIdFilter {
    /// A filter sized for `expected_items` distinct trace ids.
    pub fn with_capacity(expected_items: usize) -> Self {
        let bits = (expected_items.max(1) * BITS_PER_ITEM)
            .next_power_of_two()
            .max(64);
        Self {
            bits: vec![0; bits / 64],
            probes: PROBES,
        }
    }

    fn bit_count(&self) -> u64 {
        (self.bits.len() * 64) as u64
    }

    pub fn insert(&mut self, trace_id: &TraceId) {
        let (first, second) = hashes(trace_id);
        let bit_count = self.bit_count();
        for probe in 0..u64::from(self.probes) {
            let bit = first.wrapping_add(probe.wrapping_mul(second)) % bit_count;
            self.bits[(bit / 64) as usize] |= 1 << (bit % 64);
        }
    }

    /// `false` means the trace is certainly not in the block.
    pub fn may_contain(&self, trace_id: &TraceId) -> bool {
        let (first, second) = hashes(trace_id);
        let bit_count = self.bit_count();
        (0..u64::from(self.probes)).all(|probe| {
            let bit = first.wrapping_add(probe.wrapping_mul(second)) % bit_count;
            self.bits[(bit / 64) as usize] & (1 << (bit % 64)) != 0
        })
    }
}

/// On disk: probes + little-endian words, base64.
#[derive(Serialize, Deserialize)]
struct Encoded {
    probes: u32,
    bits: String,
}

impl Serialize for TraceIdFilter {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let bytes: Vec<u8> = self
            .bits
            .iter()
            .flat_map(|word| word.to_le_bytes())
            .collect();
        Encoded {
            probes: self.probes,
            bits: base64::engine::general_purpose::STANDARD.encode(bytes),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for TraceIdFilter {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let encoded = Encoded::deserialize(deserializer)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.bits)
            .map_err(D::Error::custom)?;
        if bytes.is_empty() || bytes.len() % 8 != 0 || encoded.probes == 0 || encoded.probes > 32 {
            return Err(D::Error::custom("trace id filter has a malformed size"));
        }
        let bits = bytes
            .chunks_exact(8)
            .map(|chunk| {
                let mut word = [0u8; 8];
                word.copy_from_slice(chunk);
                u64::from_le_bytes(word)
            })
            .collect();
        Ok(Self {
            bits,
            probes: encoded.probes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(seed: u64) -> TraceId {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&mix(seed).to_le_bytes());
        bytes[8..].copy_from_slice(&mix(seed ^ 0xdead_beef).to_le_bytes());
        bytes[15] |= 1;
        TraceId::try_from(&bytes[..]).unwrap()
    }

    #[test]
    fn no_false_negatives_and_few_false_positives() {
        let mut filter = TraceIdFilter::with_capacity(10_000);
        for seed in 0..10_000 {
            filter.insert(&id(seed));
        }
        assert!((0..10_000).all(|seed| filter.may_contain(&id(seed))));
        let false_positives = (10_000..110_000)
            .filter(|seed| filter.may_contain(&id(*seed)))
            .count();
        assert!(
            false_positives < 2_000,
            "{false_positives} false positives of 100000"
        );
    }

    #[test]
    fn serde_round_trip_and_rejects_garbage() {
        let mut filter = TraceIdFilter::with_capacity(10);
        filter.insert(&id(1));
        let json = serde_json::to_string(&filter).unwrap();
        let back: TraceIdFilter = serde_json::from_str(&json).unwrap();
        assert_eq!(back, filter);
        assert!(serde_json::from_str::<TraceIdFilter>(r#"{"probes":7,"bits":"AAA="}"#).is_err());
        assert!(
            serde_json::from_str::<TraceIdFilter>(r#"{"probes":0,"bits":"AAAAAAAAAAA="}"#).is_err()
        );
    }
}

//! The one token bucket of tracelake's rate limits: the gateway's throttles
//! and its table's capacity, each tenant's ingestion bytes (the
//! collector), each service's kept traces (tail sampling).
//!
//! `rate` tokens a second refill a bucket up to `burst`; a take of `n`
//! passes when `n` tokens are there. The state is two numbers and the
//! caller keeps it (in a map under its own lock, per tenant or service),
//! with rate and burst passed at each take, because limits differ per key
//! (tenant overrides) and may change while buckets live. Time is seconds on
//! the caller's clock: an `Instant` made relative with [`seconds_since`],
//! or the simulated clock of a test; a clock that steps back refills
//! nothing.
//!
//! Why not `governor`: its keyed limiter holds one quota for every key,
//! where tenants have their own rates; its cells are whole numbers under a
//! `NonZeroU32` burst, where ingestion weighs requests in bytes and the
//! tail sampler takes fractional rates; and its clock cannot be the
//! sampler's simulated seconds. A state this small is kept here instead,
//! with its tests.

use std::time::Instant;

/// A token bucket's level and when it was counted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucket {
    tokens: f64,
    counted_at: f64,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn full(burst: f64, now: f64) -> Self {
        Self {
            tokens: burst,
            counted_at: now,
        }
    }

    /// The tokens there at `now`: the level refilled at `rate`, capped at
    /// `burst`.
    pub fn available(&self, rate: f64, burst: f64, now: f64) -> f64 {
        let elapsed = (now - self.counted_at).max(0.0);
        (self.tokens + elapsed * rate.max(0.0)).min(burst)
    }

    /// Takes `n` tokens at `now`, or refuses with the seconds until `n`
    /// are there (infinite at rate 0). A refused take leaves the refilled
    /// level.
    pub fn take(&mut self, n: f64, rate: f64, burst: f64, now: f64) -> Result<(), f64> {
        let available = self.available(rate, burst, now);
        self.counted_at = self.counted_at.max(now);
        if available >= n {
            self.tokens = available - n;
            Ok(())
        } else {
            self.tokens = available;
            Err(if rate > 0.0 {
                (n - available) / rate
            } else {
                f64::INFINITY
            })
        }
    }
}

/// `now` as seconds after `origin` (0 before it): the bucket clock of an
/// `Instant`.
pub fn seconds_since(origin: Instant, now: Instant) -> f64 {
    now.saturating_duration_since(origin).as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_passes_its_burst_then_the_rate() {
        let mut bucket = TokenBucket::full(5.0, 0.0);
        for _ in 0..5 {
            assert_eq!(bucket.take(1.0, 10.0, 5.0, 0.0), Ok(()));
        }
        assert_eq!(bucket.take(1.0, 10.0, 5.0, 0.0), Err(0.1));
        // A tenth of a second refills one token.
        assert_eq!(bucket.take(1.0, 10.0, 5.0, 0.1), Ok(()));
        // Never above the burst, however long it rests.
        assert_eq!(bucket.available(10.0, 5.0, 100.0), 5.0);
    }

    #[test]
    fn weighted_takes_and_a_clock_that_steps_back() {
        let mut bucket = TokenBucket::full(1_000.0, 10.0);
        assert_eq!(bucket.take(800.0, 100.0, 1_000.0, 10.0), Ok(()));
        // 200 there, 500 asked: 3 seconds at 100 a second.
        assert_eq!(bucket.take(500.0, 100.0, 1_000.0, 10.0), Err(3.0));
        // An earlier time refills nothing and does not move the count back.
        assert_eq!(bucket.available(100.0, 1_000.0, 5.0), 200.0);
        assert_eq!(bucket.take(500.0, 100.0, 1_000.0, 13.0), Ok(()));
        assert_eq!(
            TokenBucket::full(1.0, 0.0).take(2.0, 0.0, 1.0, 0.0),
            Err(f64::INFINITY)
        );
    }
}

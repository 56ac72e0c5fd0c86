//! Token buckets: `rate` tokens per second refill a bucket of `burst`.
//! The gateway's throttles (account, stage/method, API key) and the table's
//! capacity use them; the bucket itself is the one every rate limit of
//! tracelake keeps ([`tracelake_sampler::bucket`]).

use std::time::Instant;

use parking_lot::Mutex;
use tracelake_sampler::bucket::{self, seconds_since};

/// A token bucket shared by the requests it throttles; starts full.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    origin: Instant,
    state: Mutex<bucket::TokenBucket>,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            rate: rate.max(0.0),
            burst,
            origin: Instant::now(),
            state: Mutex::new(bucket::TokenBucket::full(burst, 0.0)),
        }
    }

    /// Takes one token at `now`; `Err(seconds)` until one is available.
    pub fn try_take_at(&self, now: Instant) -> Result<(), f64> {
        let now = seconds_since(self.origin, now);
        self.state.lock().take(1.0, self.rate, self.burst, now)
    }

    pub fn try_take(&self) -> Result<(), f64> {
        self.try_take_at(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn holds_rate_and_burst() {
        let bucket = TokenBucket::new(10.0, 5);
        let start = Instant::now();
        let granted = (0..20)
            .filter(|_| bucket.try_take_at(start).is_ok())
            .count();
        assert_eq!(granted, 5, "the burst, then nothing");
        let wait = bucket.try_take_at(start).unwrap_err();
        assert!((wait - 0.1).abs() < 1e-9, "{wait}");
        // One second later: ten more (the rate), capped by the burst of 5.
        let later = start + Duration::from_secs(1);
        let granted = (0..20)
            .filter(|_| bucket.try_take_at(later).is_ok())
            .count();
        assert_eq!(granted, 5);
        // 350 ms later: three (3.5 tokens).
        let granted = (0..20)
            .filter(|_| {
                bucket
                    .try_take_at(later + Duration::from_millis(350))
                    .is_ok()
            })
            .count();
        assert_eq!(granted, 3);
    }
}

//! Per-tenant ingestion limits, as Tempo's overrides: a token bucket of
//! bytes per tenant, `ingestion_rate_limit_bytes` per second refilling up to
//! `ingestion_burst_size_bytes`.
//!
//! A request's bytes (wire size, decompressed) are taken from its tenant's
//! bucket before it is decoded; without enough, it is refused as overload
//! (OTLP `RESOURCE_EXHAUSTED` / 429, X-Ray `ThrottledException`, UDP
//! datagrams shed) and the client retries. A request larger than the burst
//! can never pass and says so.

use std::collections::HashMap;
use std::time::Instant;

use parking_lot::Mutex;
use tracelake_storage::StorageError;

use crate::IngestError;

/// One tenant's limits; zero turns the rate limit off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TenantLimits {
    pub ingestion_rate_limit_bytes: u64,
    pub ingestion_burst_size_bytes: u64,
}

/// Limits for every tenant: the defaults, and per-tenant overrides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestLimits {
    pub defaults: TenantLimits,
    pub tenants: HashMap<String, TenantLimits>,
}

impl IngestLimits {
    pub fn for_tenant(&self, tenant: &str) -> TenantLimits {
        self.tenants.get(tenant).copied().unwrap_or(self.defaults)
    }
}

/// Buckets kept at most; past it, full ones (which say nothing a fresh
/// bucket would not) are dropped, so tenant names a client invents cannot
/// grow memory without bound.
const MAX_BUCKETS: usize = 10_000;

/// The buckets, one per tenant seen.
#[derive(Debug, Default)]
pub struct RateLimiter {
    limits: IngestLimits,
    /// Tokens and when they were counted.
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(limits: IngestLimits) -> Self {
        Self {
            limits,
            buckets: Mutex::default(),
        }
    }

    /// Takes `bytes` from `tenant`'s bucket at `now`, or refuses.
    pub fn admit_at(&self, tenant: &str, bytes: u64, now: Instant) -> Result<(), IngestError> {
        let limits = self.limits.for_tenant(tenant);
        if limits.ingestion_rate_limit_bytes == 0 {
            return Ok(());
        }
        let rate = limits.ingestion_rate_limit_bytes as f64;
        let burst = limits
            .ingestion_burst_size_bytes
            .max(limits.ingestion_rate_limit_bytes) as f64;
        let refuse = |what| {
            IngestError::Overloaded(StorageError::Overloaded {
                what,
                used: bytes,
                limit: burst as u64,
            })
        };
        if bytes as f64 > burst {
            return Err(refuse(
                "the tenant's ingestion burst (a request larger than the burst never passes)",
            ));
        }
        let mut buckets = self.buckets.lock();
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(tenant) {
            buckets.retain(|_, (tokens, last)| {
                *tokens + now.saturating_duration_since(*last).as_secs_f64() * rate < burst
            });
        }
        let (tokens, last) = buckets.entry(tenant.to_string()).or_insert((burst, now));
        let elapsed = now.saturating_duration_since(*last).as_secs_f64();
        let available = (*tokens + elapsed * rate).min(burst);
        *last = now.max(*last);
        if available >= bytes as f64 {
            *tokens = available - bytes as f64;
            Ok(())
        } else {
            *tokens = available;
            Err(refuse(
                "the tenant's ingestion rate (ingestion_rate_limit_bytes per second)",
            ))
        }
    }

    pub fn admit(&self, tenant: &str, bytes: u64) -> Result<(), IngestError> {
        self.admit_at(tenant, bytes, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn each_tenant_gets_its_rate_and_burst() {
        let limits = IngestLimits {
            defaults: TenantLimits {
                ingestion_rate_limit_bytes: 1_000,
                ingestion_burst_size_bytes: 2_000,
            },
            tenants: [("free".to_string(), TenantLimits::default())].into(),
        };
        let limiter = RateLimiter::new(limits);
        let start = Instant::now();
        // The burst, then refusals until the rate refills it.
        limiter.admit_at("a", 1_500, start).unwrap();
        limiter.admit_at("a", 500, start).unwrap();
        let refused = limiter.admit_at("a", 100, start).unwrap_err();
        assert!(refused.to_string().contains("ingestion rate"), "{refused}");
        limiter
            .admit_at("a", 400, start + Duration::from_millis(500))
            .unwrap();
        // Another tenant has its own bucket; "free" has no limit.
        limiter.admit_at("b", 2_000, start).unwrap();
        limiter.admit_at("free", 1_000_000, start).unwrap();
        // Larger than the burst: never.
        let too_big = limiter
            .admit_at("a", 2_001, start + Duration::from_secs(60))
            .unwrap_err();
        assert!(too_big.to_string().contains("burst"), "{too_big}");
        assert!(matches!(too_big, IngestError::Overloaded(_)));
    }
}

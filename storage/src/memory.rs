//! The process memory limiter.
//!
//! `max_head_bytes` bounds the largest user of memory, the head, exactly.
//! This limiter bounds everything else too (requests being decoded, flush
//! and compaction buffers, queries, allocator slack) by watching what the
//! process really holds: its resident set, read from `/proc/self/statm`.
//!
//! As the OpenTelemetry Collector's `memory_limiter`, it keeps a spike
//! allowance: appends are refused ([`crate::StorageError::Overloaded`],
//! which receivers turn into `RESOURCE_EXHAUSTED`, 429 and
//! `ThrottledException`) once resident memory reaches the soft limit,
//! `limit - limit / 5`, so that what is already in flight fits under the
//! limit. While over it, the flusher returns freed heap pages to the system
//! (`malloc_trim`) and flushes the head early, the two things that bring
//! resident memory back down.
//!
//! The sample is cached for [`SAMPLE_EVERY`]: checking costs a clock read
//! per request, and a file read every few milliseconds under load. Where
//! `/proc` is missing the limiter never refuses.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

/// How old a resident-memory sample may be before a check reads a new one.
pub(crate) const SAMPLE_EVERY: std::time::Duration = std::time::Duration::from_millis(10);

#[derive(Debug)]
pub(crate) struct MemoryLimiter {
    /// Bytes; 0 turns the limiter off.
    limit: u64,
    epoch: Instant,
    /// Nanoseconds after `epoch` of the last sample; negative: none yet.
    sampled_at_ns: AtomicI64,
    resident: AtomicU64,
}

impl MemoryLimiter {
    pub(crate) fn new(limit: u64) -> Self {
        Self {
            limit,
            epoch: Instant::now(),
            sampled_at_ns: AtomicI64::new(-1),
            resident: AtomicU64::new(0),
        }
    }

    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }

    /// Where refusals start: the limit less the 20% spike allowance.
    pub(crate) fn soft_limit(&self) -> u64 {
        self.limit - self.limit / 5
    }

    /// Resident bytes, from a sample at most [`SAMPLE_EVERY`] old.
    pub(crate) fn resident(&self) -> u64 {
        let now_ns = i64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(i64::MAX);
        let sampled_at = self.sampled_at_ns.load(Ordering::Relaxed);
        if sampled_at < 0 || now_ns - sampled_at >= SAMPLE_EVERY.as_nanos() as i64 {
            self.sampled_at_ns.store(now_ns, Ordering::Relaxed);
            if let Some(resident) = resident_bytes() {
                self.resident.store(resident, Ordering::Relaxed);
            }
        }
        self.resident.load(Ordering::Relaxed)
    }

    /// `Some(resident bytes)` when at or over the soft limit.
    pub(crate) fn over_soft_limit(&self) -> Option<u64> {
        if self.limit == 0 {
            return None;
        }
        let resident = self.resident();
        (resident >= self.soft_limit()).then_some(resident)
    }

    /// Returns freed heap memory to the system (glibc keeps it otherwise)
    /// and takes a fresh sample. Blocking: call it off the reactor.
    pub(crate) fn release_free_memory(&self) {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only walks the allocator's own free lists.
        unsafe {
            libc::malloc_trim(0);
        }
        self.sampled_at_ns.store(-1, Ordering::Relaxed);
    }
}

/// The process's resident set size, `None` where `/proc` is missing.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page_size).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_from_the_soft_limit_and_never_when_off() {
        let resident = resident_bytes().expect("linux has /proc/self/statm");
        assert!(
            resident > 1 << 20,
            "a test process holds over 1 MiB: {resident}"
        );

        assert_eq!(MemoryLimiter::new(0).over_soft_limit(), None);
        let roomy = MemoryLimiter::new(resident * 100);
        assert_eq!(roomy.over_soft_limit(), None);
        // Soft limit 80% of a limit just above what the process holds.
        let tight = MemoryLimiter::new(resident + resident / 10);
        assert!(tight.soft_limit() < resident);
        assert!(tight.over_soft_limit().is_some());
    }
}

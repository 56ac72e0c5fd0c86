//! Reservoir quota allocation across the clients (SDK instances) that
//! share a rule: the server side of `GetSamplingTargets`.
//!
//! # Algorithm
//!
//! Each client reports, every [`INTERVAL_SECONDS`], how many requests
//! matched each rule since its last report. For a rule with reservoir `R`
//! (traces per second across the fleet):
//!
//! 1. The client's request rate is its `RequestCount` over the time since
//!    its previous report (the interval for a first report).
//! 2. Clients that have not reported for [`CLIENT_TTL_SECONDS`] are
//!    forgotten: their share goes back to the pool.
//! 3. The reporting client's share is `R * its rate / sum of active rates`
//!    (an equal split when nobody saw traffic), rounded down.
//! 4. It is granted `min(share, R - quotas other clients still hold)`, so
//!    the quotas outstanding at any moment never sum to more than `R`,
//!    even while shares shift between reports.
//! 5. The quota is valid until `now + INTERVAL_SECONDS` (`ReservoirQuotaTTL`);
//!    a client whose quota expired, or a new one without a quota yet,
//!    borrows 1 trace per second from the reservoir (the SDK's rule) and
//!    applies `FixedRate` beyond it, as with a quota.
//!
//! Rounding down means a fleet of many tiny clients may get 0 each; they
//! then borrow, as X-Ray's own SDKs do.

use std::collections::HashMap;

/// How often SDKs are asked to report, seconds (`Interval`).
pub const INTERVAL_SECONDS: i64 = 10;
/// A client silent for this long loses its share.
pub const CLIENT_TTL_SECONDS: f64 = 3.0 * INTERVAL_SECONDS as f64;

#[derive(Debug, Clone)]
struct ClientState {
    last_report: f64,
    /// Requests per second in its last reported interval.
    rate: f64,
    quota: i64,
    quota_expires: f64,
}

/// One client's statistics for one rule.
#[derive(Debug, Clone, Copy)]
pub struct Report<'a> {
    pub client_id: &'a str,
    pub now: f64,
    pub request_count: i64,
}

/// A client's target for one rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Grant {
    pub quota: i64,
    pub quota_expires: f64,
}

/// Clients of one rule.
#[derive(Debug, Default, Clone)]
pub struct RuleQuotas {
    clients: HashMap<String, ClientState>,
}

impl RuleQuotas {
    /// Records `report` and returns the reporting client's new quota out of
    /// `reservoir` traces per second.
    pub fn allocate(&mut self, report: Report<'_>, reservoir: i64) -> Grant {
        let now = report.now;
        self.clients
            .retain(|_, client| now - client.last_report <= CLIENT_TTL_SECONDS);
        let elapsed = self
            .clients
            .get(report.client_id)
            .map(|client| (now - client.last_report).max(1.0))
            .unwrap_or(INTERVAL_SECONDS as f64);
        let rate = report.request_count.max(0) as f64 / elapsed;
        let entry = self
            .clients
            .entry(report.client_id.to_string())
            .or_insert(ClientState {
                last_report: now,
                rate,
                quota: 0,
                quota_expires: now,
            });
        entry.last_report = now;
        entry.rate = rate;
        let total_rate: f64 = self.clients.values().map(|client| client.rate).sum();
        let active = self.clients.len() as f64;
        let reservoir = reservoir.max(0);
        let share = if total_rate > 0.0 {
            (reservoir as f64 * rate / total_rate).floor() as i64
        } else {
            (reservoir as f64 / active).floor() as i64
        };
        let held_by_others: i64 = self
            .clients
            .iter()
            .filter(|(id, client)| id.as_str() != report.client_id && client.quota_expires > now)
            .map(|(_, client)| client.quota)
            .sum();
        let quota = share.min(reservoir - held_by_others).max(0);
        let quota_expires = now + INTERVAL_SECONDS as f64;
        if let Some(client) = self.clients.get_mut(report.client_id) {
            client.quota = quota;
            client.quota_expires = quota_expires;
        }
        Grant {
            quota,
            quota_expires,
        }
    }

    /// Quotas still valid at `now`, summed.
    pub fn outstanding(&self, now: f64) -> i64 {
        self.clients
            .values()
            .filter(|client| client.quota_expires > now)
            .map(|client| client.quota)
            .sum()
    }

    pub fn active_clients(&self) -> usize {
        self.clients.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(index: usize) -> String {
        format!("{index:024x}")
    }

    #[test]
    fn quotas_never_exceed_the_reservoir_and_follow_traffic() {
        let mut quotas = RuleQuotas::default();
        let reservoir = 100;
        // Clients with traffic 1:2:3:4 (x 10 requests/s).
        let weights = [1i64, 2, 3, 4];
        let mut now = 1_000.0;
        let mut last = vec![0; weights.len()];
        for _round in 0..5 {
            for (index, weight) in weights.iter().enumerate() {
                let grant = quotas.allocate(
                    Report {
                        client_id: &client(index),
                        now,
                        request_count: weight * 100,
                    },
                    reservoir,
                );
                last[index] = grant.quota;
                assert!(
                    quotas.outstanding(now) <= reservoir,
                    "outstanding {} > {reservoir}",
                    quotas.outstanding(now)
                );
                now += 0.5;
            }
            now += INTERVAL_SECONDS as f64 - 2.0;
        }
        assert!(last.iter().sum::<i64>() <= reservoir);
        // Steady state: shares follow traffic (10, 20, 30, 40).
        for (index, weight) in weights.iter().enumerate() {
            let expected = reservoir * weight / 10;
            assert!(
                (last[index] - expected).abs() <= 1,
                "client {index}: {} vs {expected}",
                last[index]
            );
        }
    }

    #[test]
    fn silent_clients_lose_their_share() {
        let mut quotas = RuleQuotas::default();
        let first = quotas.allocate(
            Report {
                client_id: &client(1),
                now: 0.0,
                request_count: 100,
            },
            10,
        );
        assert_eq!(first.quota, 10);
        let second = quotas.allocate(
            Report {
                client_id: &client(2),
                now: 1.0,
                request_count: 100,
            },
            10,
        );
        assert_eq!(
            second.quota, 0,
            "the first client's quota is still outstanding"
        );
        let later = quotas.allocate(
            Report {
                client_id: &client(2),
                now: 11.0,
                request_count: 100,
            },
            10,
        );
        assert_eq!(
            later.quota, 5,
            "the first client's quota expired; shares are equal"
        );
        let alone = quotas.allocate(
            Report {
                client_id: &client(2),
                now: 11.0 + CLIENT_TTL_SECONDS + 1.0,
                request_count: 100,
            },
            10,
        );
        assert_eq!(alone.quota, 10);
        assert_eq!(quotas.active_clients(), 1);
    }

    #[test]
    fn zero_reservoir_grants_nothing() {
        let mut quotas = RuleQuotas::default();
        let grant = quotas.allocate(
            Report {
                client_id: &client(1),
                now: 5.0,
                request_count: 1000,
            },
            0,
        );
        assert_eq!(grant.quota, 0);
        assert_eq!(grant.quota_expires, 15.0);
    }
}

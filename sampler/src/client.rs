//! The SDK side of centralized sampling, for tracelake's own instrumented
//! components (the gateway plugin): decide per request, report statistics,
//! take quotas, and fall back to local rules when the collector is away.
//!
//! ```text
//!  request --> Sampler::decide (first matching rule, in order)
//!                 quota valid?      -> take from this second's quota
//!                 else reservoir>0? -> borrow 1 per second
//!                 then FixedRate
//!  every 10 s: poller --SamplingTargets(statistics)--> collector --> quotas, TTLs
//!  every 5 min, or when LastRuleModification moves: poller --GetSamplingRules--> rules
//! ```
//!
//! Offline (no rules fetched yet, or the collector unreachable since), the
//! local rules decide: each rule's `fixed_target` traces per second, then
//! its `rate`, as the X-Ray SDKs' local sampler does. Local rules come in
//! the X-Ray SDK's JSON format, version 1 or 2 ([`parse_local_rules`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Deserialize;

use crate::pattern::{Pattern, QuickFilter};
use crate::rules::{InvalidRule, RequestProperties, SamplingRule, rule_order};
use crate::store::now_seconds;

/// A rule ready for per-request decisions, with its counters and quota.
#[derive(Debug, Clone)]
struct LiveRule {
    name: Arc<str>,
    service_name: Pattern,
    service_type: Pattern,
    host: Pattern,
    http_method: Pattern,
    url_path: Pattern,
    attributes: Vec<(String, Pattern)>,
    fixed_rate: f64,
    reservoir_size: i64,
    /// `(quota per second, valid until)`, from the collector.
    quota: Option<(i64, f64)>,
    second: i64,
    taken_this_second: i64,
    borrowed_this_second: i64,
    requests: i64,
    sampled: i64,
    borrowed: i64,
}

impl LiveRule {
    fn new(rule: &SamplingRule) -> Self {
        Self {
            name: Arc::from(rule.name()),
            // The most selective fields are tested first.
            url_path: Pattern::compile(&rule.url_path),
            host: Pattern::compile(&rule.host),
            http_method: Pattern::compile(&rule.http_method),
            service_name: Pattern::compile(&rule.service_name),
            service_type: Pattern::compile(&rule.service_type),
            attributes: rule
                .attributes
                .iter()
                .map(|(key, pattern)| (key.clone(), Pattern::compile(pattern)))
                .collect(),
            fixed_rate: rule.fixed_rate,
            reservoir_size: rule.reservoir_size,
            quota: None,
            second: 0,
            taken_this_second: 0,
            borrowed_this_second: 0,
            requests: 0,
            sampled: 0,
            borrowed: 0,
        }
    }

    #[inline]
    fn matches(&self, request: &RequestProperties<'_>) -> bool {
        self.url_path.matches(request.url_path)
            && self.host.matches(request.host)
            && self.http_method.matches(request.http_method)
            && self.service_name.matches(request.service_name)
            && self.service_type.matches(request.service_type)
            && self.attributes.iter().all(|(key, pattern)| {
                request
                    .attributes
                    .iter()
                    .any(|(name, value)| name == key && pattern.matches(value))
            })
    }

    /// `random` in [0, 1) decides the fixed-rate part.
    fn decide(&mut self, now: f64, random: f64, central: bool) -> bool {
        let second = now.floor() as i64;
        if second != self.second {
            self.second = second;
            self.taken_this_second = 0;
            self.borrowed_this_second = 0;
        }
        self.requests += 1;
        let quota = match self.quota {
            Some((quota, expires)) if expires > now => Some(quota),
            _ if !central => Some(self.reservoir_size),
            _ => None,
        };
        let sampled = match quota {
            Some(quota) if self.taken_this_second < quota => {
                self.taken_this_second += 1;
                true
            }
            Some(_) => random < self.fixed_rate,
            None if self.reservoir_size > 0 && self.borrowed_this_second < 1 => {
                self.borrowed_this_second += 1;
                self.borrowed += 1;
                true
            }
            None => random < self.fixed_rate,
        };
        if sampled {
            self.sampled += 1;
        }
        sampled
    }
}

/// One decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub sampled: bool,
    /// The rule that decided (reported as the segment's sampling rule).
    pub rule: Option<Arc<str>>,
}

/// Statistics for one rule since the last report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RuleStatistics {
    pub rule_name: String,
    pub request_count: i64,
    pub sampled_count: i64,
    pub borrow_count: i64,
}

/// Rules indexed by their URL literal, so a decision looks at a handful of
/// candidates instead of every rule: rules whose `URLPath` is a prefix or
/// exact literal of 8+ bytes are found by (literal length, last 8 bytes of
/// the literal) — one hash lookup per distinct literal length — and every
/// other rule is always a candidate. Candidates are tried in rule order.
#[derive(Debug, Default)]
struct RuleIndex {
    always: Vec<u32>,
    by_literal: HashMap<(usize, u64), Vec<u32>>,
    lengths: Vec<usize>,
    filters: Vec<QuickFilter>,
}

impl RuleIndex {
    fn new(rules: &[LiveRule]) -> Self {
        let mut index = Self::default();
        for (position, rule) in rules.iter().enumerate() {
            match rule.url_path.literal_key() {
                Some(key) => index
                    .by_literal
                    .entry(key)
                    .or_default()
                    .push(position as u32),
                None => index.always.push(position as u32),
            }
            index.filters.push(rule.url_path.quick_filter());
        }
        index.lengths = index.by_literal.keys().map(|(length, _)| *length).collect();
        index.lengths.sort_unstable();
        index.lengths.dedup();
        index
    }

    /// The first rule (in order) that matches, if any.
    fn find(
        &self,
        rules: &[LiveRule],
        request: &RequestProperties<'_>,
        scratch: &mut Vec<u32>,
    ) -> Option<usize> {
        let path = request.url_path.as_bytes();
        scratch.clear();
        scratch.extend_from_slice(&self.always);
        for &length in &self.lengths {
            if length > path.len() {
                break;
            }
            let key = Pattern::text_key(path, length);
            if let Some(found) = self.by_literal.get(&(length, key)) {
                scratch.extend_from_slice(found);
            }
        }
        scratch.sort_unstable();
        scratch
            .iter()
            .map(|position| *position as usize)
            .filter(|position| self.filters[*position].may_match(path))
            .find(|position| rules[*position].matches(request))
    }
}

#[derive(Debug)]
struct Rules {
    central: Vec<LiveRule>,
    central_index: RuleIndex,
    local: Vec<LiveRule>,
    local_index: RuleIndex,
    scratch: Vec<u32>,
    /// `LastRuleModification` the central rules were fetched at.
    fetched_modification: f64,
}

/// The per-process sampler: cheap to share, one short lock per decision.
#[derive(Debug, Clone)]
pub struct Sampler {
    rules: Arc<Mutex<Rules>>,
    client_id: String,
}

/// A new 24-hex-digit client id (what `SamplingTargets` expects).
pub fn new_client_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default();
    let mixed = (nanos ^ (u128::from(std::process::id()) << 64))
        .wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
    format!("{:024x}", mixed & ((1u128 << 96) - 1))
}

impl Sampler {
    /// A sampler that decides with `local` rules until central ones arrive.
    pub fn new(local: &[SamplingRule]) -> Self {
        let mut sorted = local.to_vec();
        sorted.sort_by(rule_order);
        let local: Vec<LiveRule> = sorted.iter().map(LiveRule::new).collect();
        Self {
            rules: Arc::new(Mutex::new(Rules {
                central: Vec::new(),
                central_index: RuleIndex::default(),
                local_index: RuleIndex::new(&local),
                local,
                scratch: Vec::new(),
                fetched_modification: 0.0,
            })),
            client_id: new_client_id(),
        }
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Decides for one request at `now` (epoch seconds); `random` in [0, 1).
    pub fn decide_at(&self, request: &RequestProperties<'_>, now: f64, random: f64) -> Decision {
        let mut guard = self.rules.lock();
        let rules = &mut *guard;
        let central = !rules.central.is_empty();
        let (live, live_index) = if central {
            (&mut rules.central, &rules.central_index)
        } else {
            (&mut rules.local, &rules.local_index)
        };
        let found = live_index.find(live, request, &mut rules.scratch);
        match found.and_then(|index| live.get_mut(index)) {
            Some(rule) => Decision {
                sampled: rule.decide(now, random, central),
                rule: Some(Arc::clone(&rule.name)),
            },
            None => Decision {
                sampled: false,
                rule: None,
            },
        }
    }

    /// Replaces the central rules, keeping the quota and counters of rules
    /// that stay.
    pub fn set_central_rules(&self, fetched: &[SamplingRule], last_modification: f64) {
        let mut sorted = fetched.to_vec();
        sorted.sort_by(rule_order);
        let mut rules = self.rules.lock();
        let previous = std::mem::take(&mut rules.central);
        rules.central = sorted
            .iter()
            .map(|rule| {
                let mut live = LiveRule::new(rule);
                if let Some(old) = previous.iter().find(|old| old.name == live.name) {
                    live.quota = old.quota;
                    live.requests = old.requests;
                    live.sampled = old.sampled;
                    live.borrowed = old.borrowed;
                }
                live
            })
            .collect();
        rules.central_index = RuleIndex::new(&rules.central);
        rules.fetched_modification = last_modification;
    }

    /// Drops the central rules: decisions go back to the local rules.
    pub fn go_offline(&self) {
        let mut rules = self.rules.lock();
        rules.central.clear();
        rules.central_index = RuleIndex::default();
    }

    /// Counters of every central rule that saw requests, reset.
    pub fn take_statistics(&self) -> Vec<RuleStatistics> {
        let mut rules = self.rules.lock();
        rules
            .central
            .iter_mut()
            .filter(|rule| rule.requests > 0)
            .map(|rule| {
                let statistics = RuleStatistics {
                    rule_name: rule.name.to_string(),
                    request_count: rule.requests,
                    sampled_count: rule.sampled,
                    borrow_count: rule.borrowed,
                };
                rule.requests = 0;
                rule.sampled = 0;
                rule.borrowed = 0;
                statistics
            })
            .collect()
    }

    /// Applies a rule's target from `SamplingTargets`.
    pub fn apply_target(&self, rule_name: &str, fixed_rate: f64, quota: Option<(i64, f64)>) {
        let mut rules = self.rules.lock();
        if let Some(rule) = rules
            .central
            .iter_mut()
            .find(|rule| &*rule.name == rule_name)
        {
            rule.fixed_rate = fixed_rate;
            if quota.is_some() {
                rule.quota = quota;
            }
        }
    }

    fn rules_are_stale(&self, last_modification: f64) -> bool {
        let rules = self.rules.lock();
        rules.central.is_empty() || last_modification > rules.fetched_modification
    }
}

/// The X-Ray SDK local rules file, version 1 or 2.
#[derive(Debug, Deserialize)]
struct LocalRulesFile {
    version: i64,
    #[serde(default)]
    rules: Vec<LocalRule>,
    default: LocalDefault,
}

#[derive(Debug, Deserialize)]
struct LocalRule {
    #[serde(default)]
    description: Option<String>,
    /// Version 2.
    #[serde(default)]
    host: Option<String>,
    /// Version 1's name for the host.
    #[serde(default)]
    service_name: Option<String>,
    http_method: String,
    url_path: String,
    fixed_target: i64,
    rate: f64,
}

#[derive(Debug, Deserialize)]
struct LocalDefault {
    fixed_target: i64,
    rate: f64,
}

/// Why a rules file (or the X-Ray SDKs' local rules) was not read.
#[derive(Debug, thiserror::Error)]
pub enum RulesFileError {
    #[error("local sampling rules: {0}")]
    LocalJson(serde_json::Error),
    #[error("local sampling rules version {0} is not 1 or 2")]
    LocalVersion(i64),
    #[error("local sampling rule {position}: {reason}")]
    LocalRule {
        position: usize,
        reason: InvalidRule,
    },
    #[error("local default rule: {0}")]
    LocalDefault(InvalidRule),
    #[error("rules file: {0}")]
    Toml(toml::de::Error),
    #[error("rules file: {0}")]
    Json(serde_json::Error),
    #[error(
        "rules file: expected a list, {{\"SamplingRules\": [...]}} or the X-Ray SDK local rules format"
    )]
    Shape,
    #[error("rules file, rule {name:?}: {reason}")]
    Rule { name: String, reason: InvalidRule },
}

/// Reads the X-Ray SDKs' local sampling rules (JSON, version 1 or 2) as
/// sampling rules: each rule in file order (priority = position), then the
/// default as `Default`.
pub fn parse_local_rules(text: &str) -> Result<Vec<SamplingRule>, RulesFileError> {
    let file: LocalRulesFile = serde_json::from_str(text).map_err(RulesFileError::LocalJson)?;
    if file.version != 1 && file.version != 2 {
        return Err(RulesFileError::LocalVersion(file.version));
    }
    let mut rules = Vec::with_capacity(file.rules.len() + 1);
    for (index, local) in file.rules.iter().enumerate() {
        let host = match file.version {
            1 => local.service_name.clone(),
            _ => local.host.clone(),
        }
        .unwrap_or_else(|| "*".into());
        let name: String = local
            .description
            .clone()
            .unwrap_or_else(|| format!("local-{}", index + 1))
            .chars()
            .filter(|character| character.is_ascii_alphanumeric() || matches!(character, '-' | '_'))
            .take(32)
            .collect();
        let rule = SamplingRule {
            rule_name: Some(if name.is_empty() {
                format!("local-{}", index + 1)
            } else {
                name
            }),
            priority: index as i64 + 1,
            fixed_rate: local.rate,
            reservoir_size: local.fixed_target,
            host,
            http_method: local.http_method.clone(),
            url_path: local.url_path.clone(),
            ..SamplingRule::default_rule("local")
        };
        rule.validate()
            .map_err(|reason| RulesFileError::LocalRule {
                position: index + 1,
                reason,
            })?;
        rules.push(rule);
    }
    let mut default = SamplingRule::default_rule("local");
    default.reservoir_size = file.default.fixed_target;
    default.fixed_rate = file.default.rate;
    default.validate().map_err(RulesFileError::LocalDefault)?;
    rules.push(default);
    Ok(rules)
}

/// Reads a rules file: the X-Ray SDK local rules format (JSON, version 1
/// or 2), or rules in the X-Ray API's `SamplingRule` shape — a JSON list,
/// `{"SamplingRules": [...]}`, or TOML `[[rules]]` tables with the same
/// PascalCase keys. `is_toml` picks the syntax.
pub fn parse_rules_file(text: &str, is_toml: bool) -> Result<Vec<SamplingRule>, RulesFileError> {
    #[derive(Deserialize)]
    struct TomlRules {
        rules: Vec<SamplingRule>,
    }
    let rules: Vec<SamplingRule> = if is_toml {
        toml::from_str::<TomlRules>(text)
            .map_err(RulesFileError::Toml)?
            .rules
    } else {
        let value: serde_json::Value = serde_json::from_str(text).map_err(RulesFileError::Json)?;
        if value.get("default").is_some() && value.get("version").is_some() {
            return parse_local_rules(text);
        }
        let list = match value {
            serde_json::Value::Object(mut object) => object
                .remove("SamplingRules")
                .ok_or(RulesFileError::Shape)?,
            list => list,
        };
        serde_json::from_value(list).map_err(RulesFileError::Json)?
    };
    for rule in &rules {
        rule.validate().map_err(|reason| RulesFileError::Rule {
            name: rule.name().to_string(),
            reason,
        })?;
    }
    Ok(rules)
}

/// Polls `endpoint` (the X-Ray API base URL, e.g. `http://127.0.0.1:2000`)
/// for rules (every 5 minutes, or when the collector's
/// `LastRuleModification` moves) and reports statistics for targets every
/// `interval` (the X-Ray SDKs use 10 s), until `shutdown` resolves. Errors
/// are logged and retried; after three failed rule fetches in a row the
/// sampler goes back to its local rules.
pub async fn run_poller(
    sampler: Sampler,
    endpoint: String,
    interval: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_default();
    let mut next_rules_fetch = 0.0;
    let mut failures = 0;
    tokio::pin!(shutdown);
    loop {
        let now = now_seconds();
        if now >= next_rules_fetch {
            match fetch_rules(&client, &endpoint).await {
                Ok((rules, modification)) => {
                    sampler.set_central_rules(&rules, modification);
                    failures = 0;
                    next_rules_fetch = now + 300.0;
                }
                Err(error) => {
                    failures += 1;
                    tracing::warn!(%error, "fetching sampling rules failed");
                    if failures >= 3 {
                        sampler.go_offline();
                    }
                    next_rules_fetch = now + 10.0;
                }
            }
        }
        match report(&client, &endpoint, &sampler).await {
            Ok(Some(modification)) if sampler.rules_are_stale(modification) => {
                next_rules_fetch = 0.0
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "reporting sampling statistics failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = &mut shutdown => return,
        }
    }
}

async fn fetch_rules(
    client: &reqwest::Client,
    endpoint: &str,
) -> Result<(Vec<SamplingRule>, f64), reqwest::Error> {
    let mut rules = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let body = serde_json::json!({ "NextToken": token });
        let page: serde_json::Value = client
            .post(format!("{endpoint}/GetSamplingRules"))
            .json(&body)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        for record in page["SamplingRuleRecords"].as_array().into_iter().flatten() {
            if let Ok(rule) = serde_json::from_value::<SamplingRule>(record["SamplingRule"].clone())
            {
                rules.push(rule);
            }
        }
        token = page["NextToken"].as_str().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    // The modification time comes with targets; rules fetched now are current.
    Ok((rules, now_seconds()))
}

/// Sends statistics; returns the collector's `LastRuleModification`.
async fn report(
    client: &reqwest::Client,
    endpoint: &str,
    sampler: &Sampler,
) -> Result<Option<f64>, reqwest::Error> {
    let statistics = sampler.take_statistics();
    if statistics.is_empty() {
        return Ok(None);
    }
    let now = now_seconds();
    let documents: Vec<serde_json::Value> = statistics
        .iter()
        .map(|rule| {
            serde_json::json!({
                "RuleName": rule.rule_name,
                "ClientID": sampler.client_id(),
                "Timestamp": now,
                "RequestCount": rule.request_count,
                "SampledCount": rule.sampled_count,
                "BorrowCount": rule.borrow_count,
            })
        })
        .collect();
    let response: serde_json::Value = client
        .post(format!("{endpoint}/SamplingTargets"))
        .json(&serde_json::json!({ "SamplingStatisticsDocuments": documents }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    for target in response["SamplingTargetDocuments"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let Some(name) = target["RuleName"].as_str() else {
            continue;
        };
        let quota = match (
            target["ReservoirQuota"].as_i64(),
            target["ReservoirQuotaTTL"].as_f64(),
        ) {
            (Some(quota), Some(ttl)) => Some((quota, ttl)),
            _ => None,
        };
        sampler.apply_target(name, target["FixedRate"].as_f64().unwrap_or(0.0), quota);
    }
    Ok(response["LastRuleModification"].as_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &'static str) -> RequestProperties<'static> {
        RequestProperties {
            service_name: "shop",
            service_type: "AWS::EC2::Instance",
            host: "shop.example.com",
            http_method: "GET",
            url_path: path,
            attributes: &[],
        }
    }

    #[test]
    fn local_rules_v1_and_v2() {
        let v2 = r#"{"version": 2, "rules": [{"description": "Player moves.", "host": "*", "http_method": "*", "url_path": "/api/move/*", "fixed_target": 0, "rate": 0.05}], "default": {"fixed_target": 1, "rate": 0.1}}"#;
        let rules = parse_local_rules(v2).unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].name(), "Playermoves");
        assert_eq!((rules[0].reservoir_size, rules[0].fixed_rate), (0, 0.05));
        assert_eq!(rules[1].name(), "Default");
        assert_eq!(rules[1].fixed_rate, 0.1);
        let v1 = r#"{"version": 1, "rules": [{"service_name": "api.example.com", "http_method": "GET", "url_path": "/health", "fixed_target": 0, "rate": 0}], "default": {"fixed_target": 2, "rate": 0.5}}"#;
        let rules = parse_local_rules(v1).unwrap();
        assert_eq!(rules[0].host, "api.example.com");
        assert!(
            parse_local_rules(r#"{"version": 3, "default": {"fixed_target": 1, "rate": 0.1}}"#)
                .is_err()
        );
        assert!(
            parse_local_rules(r#"{"version": 2, "default": {"fixed_target": 1, "rate": 7}}"#)
                .is_err()
        );
    }

    #[test]
    fn decisions_follow_quota_borrow_and_rate() {
        let local = parse_local_rules(r#"{"version": 2, "rules": [{"host": "*", "http_method": "*", "url_path": "/health", "fixed_target": 0, "rate": 0}], "default": {"fixed_target": 2, "rate": 0}}"#).unwrap();
        let sampler = Sampler::new(&local);
        // Offline: local fixed_target per second, then rate.
        let sampled: Vec<bool> = (0..4)
            .map(|_| sampler.decide_at(&request("/x"), 100.2, 0.5).sampled)
            .collect();
        assert_eq!(sampled, [true, true, false, false]);
        assert!(!sampler.decide_at(&request("/health"), 100.3, 0.0).sampled);
        assert!(
            sampler.decide_at(&request("/x"), 101.0, 0.5).sampled,
            "a new second refills"
        );

        // Central rules: without a quota, borrow one per second.
        let mut orders = SamplingRule::default_rule("t");
        orders.rule_name = Some("orders".into());
        orders.priority = 1;
        orders.url_path = "/orders/*".into();
        orders.reservoir_size = 10;
        orders.fixed_rate = 0.0;
        sampler.set_central_rules(&[orders, SamplingRule::default_rule("t")], 5.0);
        let borrowed: Vec<bool> = (0..3)
            .map(|_| sampler.decide_at(&request("/orders/1"), 200.1, 0.9).sampled)
            .collect();
        assert_eq!(borrowed, [true, false, false]);
        // With a quota of 2: two per second, then the fixed rate.
        sampler.apply_target("orders", 0.5, Some((2, 260.0)));
        let with_quota: Vec<bool> = [0.9, 0.9, 0.9, 0.1]
            .iter()
            .map(|random| {
                sampler
                    .decide_at(&request("/orders/1"), 201.5, *random)
                    .sampled
            })
            .collect();
        assert_eq!(with_quota, [true, true, false, true]);
        let statistics = sampler.take_statistics();
        let orders_stats = statistics
            .iter()
            .find(|rule| rule.rule_name == "orders")
            .unwrap();
        assert_eq!(
            (
                orders_stats.request_count,
                orders_stats.sampled_count,
                orders_stats.borrow_count
            ),
            (7, 4, 1)
        );
        assert!(sampler.take_statistics().is_empty(), "counters reset");
        assert!(sampler.rules_are_stale(6.0));
        assert!(!sampler.rules_are_stale(5.0));
        sampler.go_offline();
        assert_eq!(
            sampler
                .decide_at(&request("/health"), 300.0, 0.0)
                .rule
                .as_deref(),
            Some("local-1")
        );
    }

    #[test]
    fn rules_files_in_every_format() {
        let toml = r#"
[[rules]]
RuleName = "health"
Priority = 1
FixedRate = 0.0
ReservoirSize = 0
ServiceName = "*"
ServiceType = "*"
Host = "*"
HTTPMethod = "GET"
URLPath = "/health"
ResourceARN = "*"
Version = 1
"#;
        let rules = parse_rules_file(toml, true).unwrap();
        assert_eq!(rules[0].name(), "health");
        let json = r#"{"SamplingRules": [{"RuleName": "orders", "Priority": 2, "FixedRate": 1.0, "ReservoirSize": 5, "ServiceName": "*", "ServiceType": "*", "Host": "*", "HTTPMethod": "*", "URLPath": "/orders/*", "ResourceARN": "*", "Version": 1}]}"#;
        assert_eq!(parse_rules_file(json, false).unwrap()[0].name(), "orders");
        let local = r#"{"version": 2, "rules": [], "default": {"fixed_target": 3, "rate": 0.2}}"#;
        assert_eq!(parse_rules_file(local, false).unwrap()[0].reservoir_size, 3);
        let shape = parse_rules_file(r#"{"rules": 1}"#, false).unwrap_err();
        assert!(matches!(shape, RulesFileError::Shape), "{shape:?}");
        assert!(shape.to_string().contains("expected a list"));
        assert!(parse_rules_file("[[rules]]\nRuleName = 5", true).is_err());
        let bad_priority = json.replace("\"Priority\": 2", "\"Priority\": 0");
        let refused = parse_rules_file(&bad_priority, false).unwrap_err();
        assert!(
            matches!(&refused, RulesFileError::Rule { name, .. } if name == "orders"),
            "{refused:?}"
        );
        assert!(refused.to_string().contains("Priority 0"));
    }

    #[test]
    fn the_rule_index_finds_what_a_linear_scan_finds() {
        let paths = [
            "*",
            "/health",
            "/HEALTH",
            "/api/v1/orders/*",
            "/api/v1/orders",
            "/API/V1/ORDERS/42",
            "/api/v1/carts/*",
            "*/items",
            "/api/*/orders/*",
            "/api/v1/orders/?",
            "/api/v10/orders/*",
            "/a*",
            "/static/app.js",
            "/static/*",
        ];
        let methods = ["*", "GET", "POST"];
        let mut rules = Vec::new();
        for (index, path) in paths.iter().enumerate() {
            for (offset, method) in methods.iter().enumerate() {
                let mut rule = SamplingRule::default_rule("t");
                rule.rule_name = Some(format!("r{index}-{offset}"));
                // Priorities interleave so order is not the insertion order.
                // Catch-all paths come after the literal ones, so the
                // index must order its candidates, not list "always" first.
                let catch_all = if path.starts_with('*') { 50 } else { 0 };
                rule.priority = ((index * 7 + offset * 13) % 40 + 1 + catch_all) as i64;
                rule.url_path = (*path).to_string();
                rule.http_method = (*method).to_string();
                rules.push(rule);
            }
        }
        rules.push(SamplingRule::default_rule("t"));
        rules.sort_by(rule_order);
        let live: Vec<LiveRule> = rules.iter().map(LiveRule::new).collect();
        let index = RuleIndex::new(&live);
        let mut scratch = Vec::new();
        let requests = [
            "/health",
            "/Health",
            "/api/v1/orders/42",
            "/API/v1/Orders/7",
            "/api/v1/orders",
            "/api/v1/orders/",
            "/api/v1/carts/1",
            "/api/v2/orders/1",
            "/api/v10/orders/x",
            "/x/items",
            "/static/app.js",
            "/static/other.css",
            "/a",
            "",
            "/api/v1/orders/9",
            "/apiv1",
        ];
        for path in requests {
            for method in ["GET", "POST", "PUT"] {
                let request = RequestProperties {
                    service_name: "shop",
                    service_type: "*",
                    host: "h",
                    http_method: method,
                    url_path: path,
                    attributes: &[],
                };
                let linear = live.iter().position(|rule| rule.matches(&request));
                assert_eq!(
                    index.find(&live, &request, &mut scratch),
                    linear,
                    "{method} {path}"
                );
            }
        }
    }

    #[test]
    fn client_ids_are_24_hex() {
        let id = new_client_id();
        assert_eq!(id.len(), 24);
        assert!(id.bytes().all(|byte| byte.is_ascii_hexdigit()));
    }
}

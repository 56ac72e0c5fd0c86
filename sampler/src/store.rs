//! The sampling rules store: per tenant, one document of every rule, kept
//! through `tracelake-settings` (`tenants/{tenant}/settings/sampling-rules/`,
//! a revision per change: rules are few) and shared by every node on the
//! store. A rule created, updated or deleted through one node is served by
//! every node within the refresh interval (`cluster.refresh_interval`), and
//! changes made at the same time through several nodes are applied one
//! after the other, none lost (see that crate's docs). Rules written by
//! releases before revisions (`tenants/{tenant}/sampling/rules.json`) are
//! read until the first change.
//!
//! Every tenant has the reserved `Default` rule; it can be updated (rate
//! and reservoir) but not deleted. Names are unique per tenant; at most
//! [`MAX_RULES`] rules besides `Default`. Each change bumps the tenant's
//! `LastRuleModification`, which SDKs compare to know when to fetch rules
//! again.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use object_store::ObjectStore;
use object_store::path::Path;
use serde::{Deserialize, Serialize};
use tracelake_settings::{Document, SettingsError, SettingsStore};

use crate::rules::{
    DEFAULT_RULE_NAME, InvalidRule, MAX_RULES, SamplingRule, SamplingRuleUpdate, rule_arn,
    rule_order,
};

/// Seconds since the epoch, as X-Ray timestamps are.
pub fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs_f64())
        .unwrap_or_default()
}

/// A rule with its times, as `SamplingRuleRecord`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RuleRecord {
    pub sampling_rule: SamplingRule,
    pub created_at: f64,
    pub modified_at: f64,
}

/// What is persisted per tenant (also the whole of the file releases
/// before revisions wrote).
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "version")]
enum PersistedRules {
    #[serde(rename = "1")]
    V1 {
        last_modification: f64,
        records: Vec<RuleRecord>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("{0}")]
    Invalid(#[from] InvalidRule),
    #[error("sampling rule {0:?} does not exist")]
    NotFound(String),
    #[error("a sampling rule named {0:?} already exists")]
    Duplicate(String),
    #[error("the Default sampling rule cannot be deleted")]
    DeleteDefault,
    #[error("at most {MAX_RULES} sampling rules besides Default")]
    LimitExceeded,
    #[error("rules store: {0}")]
    Settings(#[from] SettingsError),
}

/// One tenant's rules, sorted as they are tried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "PersistedRules", into = "PersistedRules")]
pub struct TenantRules {
    pub records: Vec<RuleRecord>,
    pub last_modification: f64,
}

impl From<PersistedRules> for TenantRules {
    fn from(persisted: PersistedRules) -> Self {
        let PersistedRules::V1 {
            last_modification,
            records,
        } = persisted;
        Self {
            records,
            last_modification,
        }
    }
}

impl From<TenantRules> for PersistedRules {
    fn from(rules: TenantRules) -> Self {
        PersistedRules::V1 {
            last_modification: rules.last_modification,
            records: rules.records,
        }
    }
}

impl Document for TenantRules {
    const KIND: &'static str = "sampling-rules";

    fn initial(tenant: &str) -> Self {
        Self::new(tenant)
    }

    fn legacy_path(tenant: &str) -> Option<Path> {
        Some(Path::from(format!("tenants/{tenant}/sampling/rules.json")))
    }
}

impl TenantRules {
    fn new(tenant: &str) -> Self {
        let now = now_seconds();
        Self {
            records: vec![RuleRecord {
                sampling_rule: SamplingRule::default_rule(tenant),
                created_at: now,
                modified_at: now,
            }],
            last_modification: now,
        }
    }

    fn position(&self, name: Option<&str>, arn: Option<&str>) -> Option<usize> {
        self.records.iter().position(|record| {
            let rule = &record.sampling_rule;
            name.is_some_and(|name| rule.name() == name)
                || arn.is_some_and(|arn| rule.rule_arn.as_deref() == Some(arn))
        })
    }

    fn touch(&mut self) -> f64 {
        // Strictly increasing, so a client that saw the previous value
        // always notices the change.
        let now = now_seconds().max(self.last_modification + 0.001);
        self.last_modification = now;
        self.records
            .sort_by(|a, b| rule_order(&a.sampling_rule, &b.sampling_rule));
        now
    }

    /// Adds `rule` (validated, with its ARN) under a name not taken yet.
    fn insert(&mut self, rule: SamplingRule) -> Result<RuleRecord, RulesError> {
        let name = rule.name();
        if self.position(Some(name), None).is_some() {
            return Err(RulesError::Duplicate(name.to_string()));
        }
        if self.records.len() > MAX_RULES {
            return Err(RulesError::LimitExceeded);
        }
        let now = now_seconds();
        let record = RuleRecord {
            sampling_rule: rule,
            created_at: now,
            modified_at: now,
        };
        self.records.push(record.clone());
        self.touch();
        Ok(record)
    }

    fn update(&mut self, update: &SamplingRuleUpdate) -> Result<RuleRecord, RulesError> {
        let position = self
            .position(update.rule_name.as_deref(), update.rule_arn.as_deref())
            .ok_or_else(|| {
                let named = update.rule_name.as_deref().or(update.rule_arn.as_deref());
                RulesError::NotFound(named.unwrap_or_default().to_string())
            })?;
        let mut rule = self.records[position].sampling_rule.clone();
        rule.apply(update);
        rule.validate()?;
        let now = now_seconds();
        let record = &mut self.records[position];
        record.sampling_rule = rule;
        record.modified_at = now;
        let updated = record.clone();
        self.touch();
        Ok(updated)
    }
}

/// A rule as `CreateSamplingRule` stores it: validated, with its ARN.
fn new_rule(tenant: &str, mut rule: SamplingRule) -> Result<SamplingRule, RulesError> {
    let name = rule.name().to_string();
    if name == DEFAULT_RULE_NAME {
        return Err(RulesError::Duplicate(name));
    }
    rule.validate()?;
    rule.rule_arn = Some(rule_arn(tenant, &name));
    Ok(rule)
}

/// The update a rules file makes to a rule of the same name: `Default`
/// only takes its rate and reservoir.
fn update_from_file(rule: &SamplingRule) -> SamplingRuleUpdate {
    let is_default = rule.name() == DEFAULT_RULE_NAME;
    SamplingRuleUpdate {
        rule_name: Some(rule.name().to_string()),
        fixed_rate: Some(rule.fixed_rate),
        reservoir_size: Some(rule.reservoir_size),
        priority: (!is_default).then_some(rule.priority),
        resource_arn: (!is_default).then(|| rule.resource_arn.clone()),
        host: (!is_default).then(|| rule.host.clone()),
        service_name: (!is_default).then(|| rule.service_name.clone()),
        service_type: (!is_default).then(|| rule.service_type.clone()),
        http_method: (!is_default).then(|| rule.http_method.clone()),
        url_path: (!is_default).then(|| rule.url_path.clone()),
        attributes: (!is_default).then(|| rule.attributes.clone()),
        ..Default::default()
    }
}

/// The rules of every tenant, shared through the object store.
#[derive(Debug)]
pub struct RulesStore {
    settings: SettingsStore<TenantRules>,
}

impl RulesStore {
    /// Rules read are at most `refresh_interval` behind changes made
    /// through other nodes; this node's own changes show at once.
    pub fn new(store: Arc<dyn ObjectStore>, refresh_interval: Duration) -> Self {
        Self {
            settings: SettingsStore::new(store, refresh_interval),
        }
    }

    /// The tenant's rules in the order they are tried (`Default` last).
    pub async fn rules(&self, tenant: &str) -> Result<Arc<TenantRules>, RulesError> {
        Ok(self.settings.read(tenant).await?)
    }

    pub async fn create(&self, tenant: &str, rule: SamplingRule) -> Result<RuleRecord, RulesError> {
        let rule = new_rule(tenant, rule)?;
        self.settings
            .modify(tenant, |rules| rules.insert(rule.clone()))
            .await
    }

    pub async fn update(
        &self,
        tenant: &str,
        update: &SamplingRuleUpdate,
    ) -> Result<RuleRecord, RulesError> {
        self.settings
            .modify(tenant, |rules| rules.update(update))
            .await
    }

    /// Makes the tenant's rules include `rules` (from a rules file), in one
    /// change: each is created, or updated when a rule of that name exists;
    /// `Default` only takes its rate and reservoir. Rules not named are
    /// left alone; when every named rule already is as the file says,
    /// nothing is written (so nodes starting with one file do not contend).
    pub async fn import(&self, tenant: &str, rules: &[SamplingRule]) -> Result<usize, RulesError> {
        let mut prepared = Vec::with_capacity(rules.len());
        for rule in rules {
            prepared.push(match rule.name() {
                DEFAULT_RULE_NAME => rule.clone(),
                _ => new_rule(tenant, rule.clone())?,
            });
        }
        self.settings
            .modify(tenant, |current| {
                let before = current.clone();
                for rule in &prepared {
                    match current.position(Some(rule.name()), None) {
                        None => {
                            current.insert(rule.clone())?;
                        }
                        Some(_) => {
                            current.update(&update_from_file(rule))?;
                        }
                    }
                }
                let same_rules = |a: &TenantRules, b: &TenantRules| {
                    a.records.len() == b.records.len()
                        && a.records
                            .iter()
                            .zip(&b.records)
                            .all(|(a, b)| a.sampling_rule == b.sampling_rule)
                };
                if same_rules(current, &before) {
                    *current = before;
                }
                Ok(rules.len())
            })
            .await
    }

    pub async fn delete(
        &self,
        tenant: &str,
        name: Option<&str>,
        arn: Option<&str>,
    ) -> Result<RuleRecord, RulesError> {
        let named = name.or(arn).unwrap_or_default().to_string();
        self.settings
            .modify(tenant, |rules| {
                let position = rules
                    .position(name, arn)
                    .ok_or_else(|| RulesError::NotFound(named.clone()))?;
                if rules.records[position].sampling_rule.name() == DEFAULT_RULE_NAME {
                    return Err(RulesError::DeleteDefault);
                }
                let removed = rules.records.remove(position);
                rules.touch();
                Ok(removed)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    const REFRESH: Duration = Duration::from_secs(10);

    fn rule(name: &str, priority: i64, path: &str) -> SamplingRule {
        SamplingRule {
            rule_name: Some(name.into()),
            rule_arn: None,
            priority,
            url_path: path.into(),
            ..SamplingRule::default_rule("t")
        }
    }

    #[tokio::test]
    async fn rules_persist_and_keep_their_order_and_rules() {
        let memory: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let store = RulesStore::new(Arc::clone(&memory), REFRESH);
        let first = store.rules("t").await.unwrap();
        assert_eq!(first.records.len(), 1, "Default exists from the start");
        store
            .create("t", rule("orders", 20, "/orders/*"))
            .await
            .unwrap();
        store
            .create("t", rule("health", 10, "/health"))
            .await
            .unwrap();
        assert!(matches!(
            store.create("t", rule("health", 30, "/x")).await,
            Err(RulesError::Duplicate(_))
        ));
        assert!(matches!(
            store.create("t", rule("Default", 30, "/x")).await,
            Err(RulesError::Duplicate(_))
        ));
        assert!(matches!(
            store.create("t", rule("bad", 0, "/x")).await,
            Err(RulesError::Invalid(_))
        ));
        let update = SamplingRuleUpdate {
            rule_name: Some("orders".into()),
            fixed_rate: Some(1.0),
            priority: Some(5),
            ..Default::default()
        };
        let updated = store.update("t", &update).await.unwrap();
        assert_eq!(updated.sampling_rule.fixed_rate, 1.0);
        assert!(matches!(
            store
                .update(
                    "t",
                    &SamplingRuleUpdate {
                        rule_name: Some("nope".into()),
                        ..Default::default()
                    }
                )
                .await,
            Err(RulesError::NotFound(_))
        ));
        assert!(matches!(
            store.delete("t", Some("Default"), None).await,
            Err(RulesError::DeleteDefault)
        ));
        let default_update = SamplingRuleUpdate {
            rule_name: Some("Default".into()),
            reservoir_size: Some(5),
            ..Default::default()
        };
        store.update("t", &default_update).await.unwrap();
        let before_restart = store.rules("t").await.unwrap();
        let names: Vec<&str> = before_restart
            .records
            .iter()
            .map(|record| record.sampling_rule.name())
            .collect();
        assert_eq!(names, ["orders", "health", "Default"]);
        assert!(before_restart.last_modification > first.last_modification);

        // A rules file: a new rule is created, a known one updated, Default
        // keeps its patterns.
        let mut from_file = rule("admin", 3, "/admin");
        from_file.fixed_rate = 0.0;
        let mut default_from_file = SamplingRule::default_rule("t");
        default_from_file.fixed_rate = 0.2;
        let mut orders_from_file = rule("orders", 7, "/orders/v2/*");
        orders_from_file.fixed_rate = 0.5;
        store
            .import("t", &[from_file, default_from_file, orders_from_file])
            .await
            .unwrap();
        let imported = store.rules("t").await.unwrap();
        let by_name = |name: &str| {
            imported
                .records
                .iter()
                .find(|record| record.sampling_rule.name() == name)
                .unwrap()
                .sampling_rule
                .clone()
        };
        assert_eq!(by_name("admin").url_path, "/admin");
        assert_eq!(by_name("orders").url_path, "/orders/v2/*");
        assert_eq!(by_name("Default").fixed_rate, 0.2);
        assert_eq!(
            by_name("Default").reservoir_size,
            1,
            "the file's Default reservoir (1) replaced the 5 set above"
        );
        store.delete("t", Some("admin"), None).await.unwrap();
        let mut orders_back = by_name("orders");
        orders_back.fixed_rate = 1.0;
        orders_back.priority = 5;
        orders_back.url_path = "/orders/*".into();
        store.import("t", &[orders_back]).await.unwrap();
        let before_restart = store.rules("t").await.unwrap();

        let reopened = RulesStore::new(memory, REFRESH);
        let after_restart = reopened.rules("t").await.unwrap();
        assert_eq!(after_restart.records, before_restart.records);
        assert_eq!(
            reopened.rules("other").await.unwrap().records.len(),
            1,
            "tenants are apart"
        );
        let arn = rule_arn("t", "health");
        let deleted = reopened.delete("t", None, Some(&arn)).await.unwrap();
        assert_eq!(deleted.sampling_rule.name(), "health");
    }

    #[tokio::test]
    async fn rule_limit() {
        let store = RulesStore::new(Arc::new(InMemory::new()), REFRESH);
        for index in 0..MAX_RULES {
            store
                .create("t", rule(&format!("r{index}"), 1, "/"))
                .await
                .unwrap();
        }
        assert!(matches!(
            store.create("t", rule("one-more", 1, "/")).await,
            Err(RulesError::LimitExceeded)
        ));
    }
}

/// Two nodes on one store, as `serve --role collector` twice.
#[cfg(test)]
mod shared {
    use super::*;
    use object_store::memory::InMemory;
    use object_store::{ObjectStoreExt, PutPayload};

    fn rule(name: &str, priority: i64) -> SamplingRule {
        SamplingRule {
            rule_name: Some(name.into()),
            rule_arn: None,
            priority,
            url_path: format!("/{name}"),
            ..SamplingRule::default_rule("t")
        }
    }

    fn names(rules: &TenantRules) -> Vec<&str> {
        rules
            .records
            .iter()
            .map(|record| record.sampling_rule.name())
            .collect()
    }

    #[tokio::test]
    async fn a_rule_created_through_one_node_is_served_by_the_other_and_not_lost() {
        let memory: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let refresh = Duration::from_millis(200);
        let a = RulesStore::new(Arc::clone(&memory), refresh);
        let b = RulesStore::new(Arc::clone(&memory), refresh);
        assert_eq!(names(&b.rules("t").await.unwrap()), ["Default"]);
        a.create("t", rule("first", 5)).await.unwrap();
        tokio::time::sleep(refresh + Duration::from_millis(20)).await;
        let seen = b.rules("t").await.unwrap();
        assert_eq!(names(&seen), ["first", "Default"]);
        // B's create starts from what the store holds, not B's old copy.
        b.create("t", rule("second", 6)).await.unwrap();
        tokio::time::sleep(refresh + Duration::from_millis(20)).await;
        assert_eq!(
            names(&a.rules("t").await.unwrap()),
            ["first", "second", "Default"]
        );
        // A create of a name B created is a duplicate on A too.
        assert!(matches!(
            a.create("t", rule("second", 7)).await,
            Err(RulesError::Duplicate(_))
        ));
        // Updates through both nodes at once: both land.
        let rate = SamplingRuleUpdate {
            rule_name: Some("first".into()),
            fixed_rate: Some(0.5),
            ..Default::default()
        };
        let reservoir = SamplingRuleUpdate {
            rule_name: Some("first".into()),
            reservoir_size: Some(9),
            ..Default::default()
        };
        let (by_a, by_b) = tokio::join!(a.update("t", &rate), b.update("t", &reservoir));
        by_a.unwrap();
        by_b.unwrap();
        let reopened = RulesStore::new(memory, refresh);
        let after = reopened.rules("t").await.unwrap();
        let first = &after.records[0].sampling_rule;
        assert_eq!((first.fixed_rate, first.reservoir_size), (0.5, 9));
    }

    #[tokio::test]
    async fn rules_written_before_revisions_still_load_and_carry_over() {
        let memory: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        // As the release before revisions wrote it (`to_vec_pretty` of
        // `PersistedRules::V1`), with a rule without attributes.
        let legacy = r#"{
  "version": "1",
  "last_modification": 1760000000.5,
  "records": [
    {
      "SamplingRule": {
        "RuleName": "health",
        "RuleARN": "arn:aws:xray:tracelake:t:sampling-rule/health",
        "ResourceARN": "*",
        "Priority": 1,
        "FixedRate": 0.0,
        "ReservoirSize": 0,
        "ServiceName": "*",
        "ServiceType": "*",
        "Host": "*",
        "HTTPMethod": "*",
        "URLPath": "/health",
        "Version": 1
      },
      "CreatedAt": 1760000000.25,
      "ModifiedAt": 1760000000.5
    },
    {
      "SamplingRule": {
        "RuleName": "Default",
        "RuleARN": "arn:aws:xray:tracelake:t:sampling-rule/Default",
        "ResourceARN": "*",
        "Priority": 10000,
        "FixedRate": 0.05,
        "ReservoirSize": 1,
        "ServiceName": "*",
        "ServiceType": "*",
        "Host": "*",
        "HTTPMethod": "*",
        "URLPath": "*",
        "Version": 1,
        "Attributes": {}
      },
      "CreatedAt": 1760000000.0,
      "ModifiedAt": 1760000000.0
    }
  ]
}"#;
        memory
            .put(
                &Path::from("tenants/t/sampling/rules.json"),
                PutPayload::from(legacy.as_bytes().to_vec()),
            )
            .await
            .unwrap();
        let store = RulesStore::new(Arc::clone(&memory), Duration::ZERO);
        let loaded = store.rules("t").await.unwrap();
        assert_eq!(names(&loaded), ["health", "Default"]);
        assert_eq!(loaded.last_modification, 1760000000.5);
        assert_eq!(loaded.records[0].sampling_rule.url_path, "/health");
        // The first change carries the old rules into the first revision.
        store.create("t", rule("orders", 5)).await.unwrap();
        let other = RulesStore::new(memory, Duration::ZERO);
        let after = other.rules("t").await.unwrap();
        assert_eq!(names(&after), ["health", "orders", "Default"]);
        assert!(after.last_modification > 1760000000.5);
        assert_eq!(after.records[0].created_at, 1760000000.25);
    }

    #[tokio::test]
    async fn importing_the_same_rules_file_again_writes_nothing() {
        let memory: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let store = RulesStore::new(Arc::clone(&memory), Duration::ZERO);
        let file = [rule("health", 1), rule("orders", 2)];
        store.import("t", &file).await.unwrap();
        let first = store.rules("t").await.unwrap();
        // A second node starting with the same file.
        let other = RulesStore::new(Arc::clone(&memory), Duration::ZERO);
        other.import("t", &file).await.unwrap();
        let again = other.rules("t").await.unwrap();
        assert_eq!(again.last_modification, first.last_modification);
        assert_eq!(names(&again), ["health", "orders", "Default"]);
    }
}

//! The sampling rules store: per tenant, persistent in the object store at
//! `tenants/{tenant}/sampling/rules.json` (a versioned document, rewritten
//! whole on every change: rules are few), loaded on a tenant's first use.
//!
//! Every tenant has the reserved `Default` rule; it can be updated (rate
//! and reservoir) but not deleted. Names are unique per tenant; at most
//! [`MAX_RULES`] rules besides `Default`. Each change bumps the tenant's
//! `LastRuleModification`, which SDKs compare to know when to fetch rules
//! again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

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

/// What is persisted per tenant.
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
    Store(#[from] object_store::Error),
    #[error("rules store holds an unreadable document: {0}")]
    Corrupt(String),
}

/// One tenant's rules, sorted as they are tried.
#[derive(Debug, Clone)]
pub struct TenantRules {
    pub records: Vec<RuleRecord>,
    pub last_modification: f64,
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
}

/// The rules of every tenant, cached in memory, persisted on change.
#[derive(Debug)]
pub struct RulesStore {
    store: Arc<dyn ObjectStore>,
    tenants: Mutex<HashMap<String, TenantRules>>,
}

fn rules_path(tenant: &str) -> Path {
    Path::from(format!("tenants/{tenant}/sampling/rules.json"))
}

impl RulesStore {
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self {
            store,
            tenants: Mutex::new(HashMap::new()),
        }
    }

    async fn load(&self, tenant: &str) -> Result<TenantRules, RulesError> {
        match self.store.get(&rules_path(tenant)).await {
            Ok(found) => {
                let bytes = found.bytes().await?;
                let persisted: PersistedRules = serde_json::from_slice(&bytes)
                    .map_err(|error| RulesError::Corrupt(error.to_string()))?;
                let PersistedRules::V1 {
                    last_modification,
                    records,
                } = persisted;
                Ok(TenantRules {
                    records,
                    last_modification,
                })
            }
            Err(object_store::Error::NotFound { .. }) => Ok(TenantRules::new(tenant)),
            Err(error) => Err(error.into()),
        }
    }

    async fn save(&self, tenant: &str, rules: &TenantRules) -> Result<(), RulesError> {
        let persisted = PersistedRules::V1 {
            last_modification: rules.last_modification,
            records: rules.records.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&persisted)
            .map_err(|error| RulesError::Corrupt(error.to_string()))?;
        self.store
            .put(&rules_path(tenant), PutPayload::from(bytes))
            .await?;
        Ok(())
    }

    /// Runs `change` on the tenant's rules (loading them first) and
    /// persists the result when it succeeds; the in-memory copy changes only
    /// once the store has the new document.
    async fn modify<T>(
        &self,
        tenant: &str,
        change: impl FnOnce(&mut TenantRules) -> Result<T, RulesError>,
    ) -> Result<T, RulesError> {
        let mut tenants = self.tenants.lock().await;
        let current = match tenants.get(tenant) {
            Some(rules) => rules.clone(),
            None => self.load(tenant).await?,
        };
        let mut changed = current;
        let result = change(&mut changed)?;
        self.save(tenant, &changed).await?;
        tenants.insert(tenant.to_string(), changed);
        Ok(result)
    }

    /// The tenant's rules in the order they are tried (`Default` last).
    pub async fn rules(&self, tenant: &str) -> Result<TenantRules, RulesError> {
        let mut tenants = self.tenants.lock().await;
        if let Some(rules) = tenants.get(tenant) {
            return Ok(rules.clone());
        }
        let loaded = self.load(tenant).await?;
        tenants.insert(tenant.to_string(), loaded.clone());
        Ok(loaded)
    }

    pub async fn create(
        &self,
        tenant: &str,
        mut rule: SamplingRule,
    ) -> Result<RuleRecord, RulesError> {
        let name = rule.name().to_string();
        if name == DEFAULT_RULE_NAME {
            return Err(RulesError::Duplicate(name));
        }
        rule.validate()?;
        rule.rule_arn = Some(rule_arn(tenant, &name));
        self.modify(tenant, |rules| {
            if rules.position(Some(&name), None).is_some() {
                return Err(RulesError::Duplicate(name.clone()));
            }
            if rules.records.len() > MAX_RULES {
                return Err(RulesError::LimitExceeded);
            }
            let now = now_seconds();
            let record = RuleRecord {
                sampling_rule: rule,
                created_at: now,
                modified_at: now,
            };
            rules.records.push(record.clone());
            rules.touch();
            Ok(record)
        })
        .await
    }

    pub async fn update(
        &self,
        tenant: &str,
        update: &SamplingRuleUpdate,
    ) -> Result<RuleRecord, RulesError> {
        let named = update
            .rule_name
            .as_deref()
            .or(update.rule_arn.as_deref())
            .unwrap_or_default()
            .to_string();
        self.modify(tenant, |rules| {
            let position = rules
                .position(update.rule_name.as_deref(), update.rule_arn.as_deref())
                .ok_or_else(|| RulesError::NotFound(named.clone()))?;
            let mut rule = rules.records[position].sampling_rule.clone();
            rule.apply(update);
            rule.validate()?;
            let now = now_seconds();
            let record = &mut rules.records[position];
            record.sampling_rule = rule;
            record.modified_at = now;
            let updated = record.clone();
            rules.touch();
            Ok(updated)
        })
        .await
    }

    /// Makes the tenant's rules include `rules` (from a rules file): each is
    /// created, or updated when a rule of that name exists; `Default` only
    /// takes its rate and reservoir. Rules not named are left alone.
    pub async fn import(&self, tenant: &str, rules: &[SamplingRule]) -> Result<usize, RulesError> {
        let existing = self.rules(tenant).await?;
        for rule in rules {
            let name = rule.name();
            let known = existing
                .records
                .iter()
                .any(|record| record.sampling_rule.name() == name);
            if !known {
                self.create(tenant, rule.clone()).await?;
                continue;
            }
            let is_default = name == crate::rules::DEFAULT_RULE_NAME;
            let update = SamplingRuleUpdate {
                rule_name: Some(name.to_string()),
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
            };
            self.update(tenant, &update).await?;
        }
        Ok(rules.len())
    }

    pub async fn delete(
        &self,
        tenant: &str,
        name: Option<&str>,
        arn: Option<&str>,
    ) -> Result<RuleRecord, RulesError> {
        let named = name.or(arn).unwrap_or_default().to_string();
        self.modify(tenant, |rules| {
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
        let store = RulesStore::new(Arc::clone(&memory));
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

        let reopened = RulesStore::new(memory);
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
        let store = RulesStore::new(Arc::new(InMemory::new()));
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

//! X-Ray sampling rules: the `SamplingRule` shape of the X-Ray API (field
//! names as botocore's model has them), X-Ray's validation limits, wildcard
//! matching, and rule order.
//!
//! A request matches a rule when every one of ServiceName, ServiceType,
//! Host, HTTPMethod, URLPath (and each of the rule's Attributes) matches
//! the rule's pattern: `*` any run of characters, `?` exactly one,
//! case-insensitive. Rules are tried in ascending Priority, ties broken by
//! name; the reserved `Default` rule (priority 10000, every pattern `*`)
//! always matches last.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The reserved catch-all rule's name.
pub const DEFAULT_RULE_NAME: &str = "Default";
/// The `Default` rule's priority: after every rule a user can create.
pub const DEFAULT_RULE_PRIORITY: i64 = 10_000;
/// At most this many rules per tenant besides `Default` (X-Ray's quota).
pub const MAX_RULES: usize = 25;

/// One sampling rule, as `CreateSamplingRule` takes it and
/// `GetSamplingRules` returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SamplingRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_name: Option<String>,
    #[serde(rename = "RuleARN", default, skip_serializing_if = "Option::is_none")]
    pub rule_arn: Option<String>,
    #[serde(rename = "ResourceARN")]
    pub resource_arn: String,
    pub priority: i64,
    pub fixed_rate: f64,
    pub reservoir_size: i64,
    pub service_name: String,
    pub service_type: String,
    pub host: String,
    #[serde(rename = "HTTPMethod")]
    pub http_method: String,
    #[serde(rename = "URLPath")]
    pub url_path: String,
    pub version: i64,
    /// Always written, `{}` when empty, as X-Ray sends it: the X-Ray SDK
    /// for Node.js keeps only rules whose `Attributes` is present and empty.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// `UpdateSamplingRule`'s partial rule: every field optional; the rule is
/// named by `RuleName` or `RuleARN`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SamplingRuleUpdate {
    pub rule_name: Option<String>,
    #[serde(rename = "RuleARN")]
    pub rule_arn: Option<String>,
    #[serde(rename = "ResourceARN")]
    pub resource_arn: Option<String>,
    pub priority: Option<i64>,
    pub fixed_rate: Option<f64>,
    pub reservoir_size: Option<i64>,
    pub host: Option<String>,
    pub service_name: Option<String>,
    pub service_type: Option<String>,
    #[serde(rename = "HTTPMethod")]
    pub http_method: Option<String>,
    #[serde(rename = "URLPath")]
    pub url_path: Option<String>,
    pub attributes: Option<BTreeMap<String, String>>,
}

/// Why a rule is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidRule(pub String);

fn check_length(field: &str, value: &str, min: usize, max: usize) -> Result<(), InvalidRule> {
    let length = value.chars().count();
    if length < min || length > max {
        return Err(InvalidRule(format!(
            "{field} must be {min} to {max} characters, got {length}"
        )));
    }
    Ok(())
}

/// The ARN tracelake gives a rule (X-Ray's form, with tracelake's names).
pub fn rule_arn(tenant: &str, name: &str) -> String {
    format!("arn:aws:xray:tracelake:{tenant}:sampling-rule/{name}")
}

impl SamplingRule {
    /// The reserved catch-all rule: 1 request per second, then 5%.
    pub fn default_rule(tenant: &str) -> Self {
        Self {
            rule_name: Some(DEFAULT_RULE_NAME.to_string()),
            rule_arn: Some(rule_arn(tenant, DEFAULT_RULE_NAME)),
            resource_arn: "*".into(),
            priority: DEFAULT_RULE_PRIORITY,
            fixed_rate: 0.05,
            reservoir_size: 1,
            service_name: "*".into(),
            service_type: "*".into(),
            host: "*".into(),
            http_method: "*".into(),
            url_path: "*".into(),
            version: 1,
            attributes: BTreeMap::new(),
        }
    }

    pub fn name(&self) -> &str {
        self.rule_name.as_deref().unwrap_or_default()
    }

    /// X-Ray's limits (botocore's model): name 1-32 characters, priority
    /// 1-9999 (10000 only for `Default`), rate 0-1, reservoir >= 0,
    /// ServiceName/ServiceType/Host <= 64, HTTPMethod <= 10, URLPath <= 128,
    /// ResourceARN <= 500, at most 5 attributes (keys 1-32, values 1-32),
    /// Version 1.
    pub fn validate(&self) -> Result<(), InvalidRule> {
        let name = self
            .rule_name
            .as_deref()
            .ok_or_else(|| InvalidRule("RuleName is required".into()))?;
        check_length("RuleName", name, 1, 32)?;
        let is_default = name == DEFAULT_RULE_NAME;
        let priority_ok = if is_default {
            self.priority == DEFAULT_RULE_PRIORITY
        } else {
            (1..=9999).contains(&self.priority)
        };
        if !priority_ok {
            return Err(InvalidRule(format!(
                "Priority {} is not between 1 and 9999",
                self.priority
            )));
        }
        if !(0.0..=1.0).contains(&self.fixed_rate) {
            return Err(InvalidRule(format!(
                "FixedRate {} is not between 0 and 1",
                self.fixed_rate
            )));
        }
        if self.reservoir_size < 0 {
            return Err(InvalidRule(format!(
                "ReservoirSize {} is negative",
                self.reservoir_size
            )));
        }
        if self.version != 1 {
            return Err(InvalidRule(format!("Version {} is not 1", self.version)));
        }
        check_length("ResourceARN", &self.resource_arn, 1, 500)?;
        check_length("ServiceName", &self.service_name, 1, 64)?;
        check_length("ServiceType", &self.service_type, 1, 64)?;
        check_length("Host", &self.host, 1, 64)?;
        check_length("HTTPMethod", &self.http_method, 1, 10)?;
        check_length("URLPath", &self.url_path, 1, 128)?;
        if self.attributes.len() > 5 {
            return Err(InvalidRule(format!(
                "Attributes has {} entries; at most 5",
                self.attributes.len()
            )));
        }
        for (key, value) in &self.attributes {
            check_length("an attribute key", key, 1, 32)?;
            check_length("an attribute value", value, 1, 32)?;
        }
        if is_default {
            let all_wildcards = [
                &self.service_name,
                &self.service_type,
                &self.host,
                &self.http_method,
                &self.url_path,
                &self.resource_arn,
            ]
            .iter()
            .all(|pattern| pattern.as_str() == "*")
                && self.attributes.is_empty();
            if !all_wildcards {
                return Err(InvalidRule(
                    "the Default rule matches everything: only FixedRate and ReservoirSize can change".into(),
                ));
            }
        }
        Ok(())
    }

    /// Applies an update's present fields.
    pub fn apply(&mut self, update: &SamplingRuleUpdate) {
        let set = |target: &mut String, value: &Option<String>| {
            if let Some(value) = value {
                target.clone_from(value);
            }
        };
        set(&mut self.resource_arn, &update.resource_arn);
        set(&mut self.host, &update.host);
        set(&mut self.service_name, &update.service_name);
        set(&mut self.service_type, &update.service_type);
        set(&mut self.http_method, &update.http_method);
        set(&mut self.url_path, &update.url_path);
        if let Some(priority) = update.priority {
            self.priority = priority;
        }
        if let Some(rate) = update.fixed_rate {
            self.fixed_rate = rate;
        }
        if let Some(reservoir) = update.reservoir_size {
            self.reservoir_size = reservoir;
        }
        if let Some(attributes) = &update.attributes {
            self.attributes.clone_from(attributes);
        }
    }

    /// Whether a request with these properties falls under this rule.
    pub fn matches(&self, request: &RequestProperties<'_>) -> bool {
        wildcard_match(&self.service_name, request.service_name)
            && wildcard_match(&self.service_type, request.service_type)
            && wildcard_match(&self.host, request.host)
            && wildcard_match(&self.http_method, request.http_method)
            && wildcard_match(&self.url_path, request.url_path)
            && self.attributes.iter().all(|(key, pattern)| {
                request
                    .attributes
                    .iter()
                    .find(|(name, _)| name == key)
                    .is_some_and(|(_, value)| wildcard_match(pattern, value))
            })
    }
}

/// What a sampling decision looks at.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestProperties<'a> {
    pub service_name: &'a str,
    pub service_type: &'a str,
    pub host: &'a str,
    pub http_method: &'a str,
    pub url_path: &'a str,
    pub attributes: &'a [(&'a str, &'a str)],
}

/// `*` matches any run (including none), `?` exactly one character;
/// ASCII case-insensitive. Linear in the text with one backtrack point, no
/// allocation.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let pattern = pattern.as_bytes();
    let text = text.as_bytes();
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p].eq_ignore_ascii_case(&text[t])) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|byte| *byte == b'*')
}

/// The order rules are tried in: ascending priority, then name.
pub fn rule_order(a: &SamplingRule, b: &SamplingRule) -> std::cmp::Ordering {
    a.priority
        .cmp(&b.priority)
        .then_with(|| a.name().cmp(b.name()))
}

/// Sorts rules as they are tried.
pub fn sort_rules(rules: &mut [SamplingRule]) {
    rules.sort_by(rule_order);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        let cases = [
            ("*", "", true),
            ("*", "anything", true),
            ("", "", true),
            ("", "a", false),
            ("/health", "/health", true),
            ("/health", "/HEALTH", true),
            ("/health", "/healthz", false),
            ("/orders/*", "/orders/", true),
            ("/orders/*", "/orders/42/items", true),
            ("/orders/*", "/order", false),
            ("?et", "GET", true),
            ("?et", "et", false),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("*.example.com", "api.example.com", true),
            ("*.example.com", "example.com", false),
            ("**", "x", true),
            ("a?", "a", false),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(
                wildcard_match(pattern, text),
                expected,
                "{pattern} ~ {text}"
            );
        }
    }

    fn rule(name: &str, priority: i64) -> SamplingRule {
        SamplingRule {
            rule_name: Some(name.into()),
            priority,
            ..SamplingRule::default_rule("t")
        }
    }

    #[test]
    fn validation_limits() {
        let ok = rule("orders", 10);
        assert!(ok.validate().is_ok());
        let cases: Vec<(SamplingRule, &str)> = vec![
            (
                SamplingRule {
                    rule_name: None,
                    ..ok.clone()
                },
                "RuleName is required",
            ),
            (rule(&"x".repeat(33), 10), "RuleName must be 1 to 32"),
            (rule("a", 0), "Priority 0"),
            (rule("a", 10_000), "Priority 10000"),
            (
                SamplingRule {
                    fixed_rate: 1.5,
                    ..ok.clone()
                },
                "FixedRate 1.5",
            ),
            (
                SamplingRule {
                    fixed_rate: -0.1,
                    ..ok.clone()
                },
                "FixedRate -0.1",
            ),
            (
                SamplingRule {
                    reservoir_size: -1,
                    ..ok.clone()
                },
                "ReservoirSize -1",
            ),
            (
                SamplingRule {
                    version: 2,
                    ..ok.clone()
                },
                "Version 2",
            ),
            (
                SamplingRule {
                    http_method: "PROPPATCHES".into(),
                    ..ok.clone()
                },
                "HTTPMethod must be 1 to 10",
            ),
            (
                SamplingRule {
                    url_path: "/".repeat(129),
                    ..ok.clone()
                },
                "URLPath must be 1 to 128",
            ),
            (
                SamplingRule {
                    service_name: String::new(),
                    ..ok.clone()
                },
                "ServiceName must be 1 to 64",
            ),
            (
                SamplingRule {
                    attributes: (0..6)
                        .map(|index| (format!("k{index}"), "v".into()))
                        .collect(),
                    ..ok.clone()
                },
                "at most 5",
            ),
            (
                SamplingRule {
                    url_path: "/x".into(),
                    ..SamplingRule::default_rule("t")
                },
                "only FixedRate and ReservoirSize",
            ),
        ];
        for (candidate, fragment) in cases {
            let message = candidate.validate().expect_err(fragment).0;
            assert!(message.contains(fragment), "{message:?} lacks {fragment:?}");
        }
        assert!(SamplingRule::default_rule("t").validate().is_ok());
    }

    #[test]
    fn matching_and_order() {
        let mut health = rule("health", 5);
        health.url_path = "/health".into();
        let mut orders = rule("orders", 5);
        orders.url_path = "/orders/*".into();
        orders.http_method = "POST".into();
        orders.attributes.insert("tier".into(), "gold*".into());
        let mut rules = vec![
            SamplingRule::default_rule("t"),
            orders.clone(),
            health.clone(),
        ];
        sort_rules(&mut rules);
        let names: Vec<&str> = rules.iter().map(SamplingRule::name).collect();
        assert_eq!(
            names,
            ["health", "orders", "Default"],
            "priority, then name"
        );
        let request =
            |method: &'static str,
             path: &'static str,
             attributes: &'static [(&'static str, &'static str)]| RequestProperties {
                service_name: "shop",
                service_type: "AWS::EC2::Instance",
                host: "shop.example.com",
                http_method: method,
                url_path: path,
                attributes,
            };
        let first = |properties: RequestProperties<'_>| {
            rules
                .iter()
                .find(|rule| rule.matches(&properties))
                .unwrap()
                .name()
                .to_string()
        };
        assert_eq!(first(request("GET", "/health", &[])), "health");
        assert_eq!(
            first(request("post", "/orders/7", &[("tier", "GOLD-plus")])),
            "orders"
        );
        assert_eq!(
            first(request("POST", "/orders/7", &[])),
            "Default",
            "attribute missing"
        );
        assert_eq!(
            first(request("GET", "/orders/7", &[("tier", "gold")])),
            "Default"
        );
    }

    /// X-Ray sends `"Attributes": {}` on a rule without attributes, and the
    /// X-Ray SDK for Node.js drops a rule that lacks it.
    #[test]
    fn attributes_are_written_even_when_empty() {
        let rule = SamplingRule::default_rule("t");
        let written = serde_json::to_value(&rule).unwrap();
        assert_eq!(written["Attributes"], serde_json::json!({}));
        let read: SamplingRule = serde_json::from_value(written).unwrap();
        assert_eq!(read, rule);
    }
}

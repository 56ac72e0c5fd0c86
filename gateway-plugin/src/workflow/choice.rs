//! Choice rules: `Variable` with a comparison (`StringEquals`,
//! `NumericGreaterThan`, `BooleanEquals`, `TimestampLessThan`, `IsPresent`,
//! `StringMatches`, ... and their `...Path` forms comparing with another
//! value of the input), combined with `And`, `Or`, `Not`.

use std::cmp::Ordering;

use serde_json::Value;

use super::paths;

/// A parsed rule.
#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    And(Vec<Rule>),
    Or(Vec<Rule>),
    Not(Box<Rule>),
    Compare {
        variable: String,
        op: Op,
        operand: Operand,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    String,
    Numeric,
    Boolean,
    Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Compare(Kind, Ordering, bool),
    StringMatches,
    IsPresent,
    IsNull,
    IsString,
    IsNumeric,
    IsBoolean,
    IsTimestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Literal(Value),
    Path(String),
}

fn comparison(name: &str) -> Option<Op> {
    let (kind, rest) = [
        ("String", Kind::String),
        ("Numeric", Kind::Numeric),
        ("Boolean", Kind::Boolean),
        ("Timestamp", Kind::Timestamp),
    ]
    .iter()
    .find_map(|(prefix, kind)| name.strip_prefix(prefix).map(|rest| (*kind, rest)))?;
    let (ordering, or_equal) = match rest {
        "Equals" => (Ordering::Equal, false),
        "LessThan" => (Ordering::Less, false),
        "GreaterThan" => (Ordering::Greater, false),
        "LessThanEquals" => (Ordering::Less, true),
        "GreaterThanEquals" => (Ordering::Greater, true),
        _ => return None,
    };
    if kind == Kind::Boolean && (ordering != Ordering::Equal) {
        return None;
    }
    Some(Op::Compare(kind, ordering, or_equal))
}

fn operator(name: &str) -> Option<Op> {
    match name {
        "StringMatches" => Some(Op::StringMatches),
        "IsPresent" => Some(Op::IsPresent),
        "IsNull" => Some(Op::IsNull),
        "IsString" => Some(Op::IsString),
        "IsNumeric" => Some(Op::IsNumeric),
        "IsBoolean" => Some(Op::IsBoolean),
        "IsTimestamp" => Some(Op::IsTimestamp),
        other => comparison(other),
    }
}

/// Why a Choice rule does not parse: the message names the rule's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidRule(pub String);

/// Parses one rule (the `Next` key is read by the caller).
pub fn parse_rule(value: &Value) -> Result<Rule, InvalidRule> {
    rule(value).map_err(InvalidRule)
}

fn rule(value: &Value) -> Result<Rule, String> {
    let object = value.as_object().ok_or("a rule must be an object")?;
    if let Some(rules) = object.get("And").or_else(|| object.get("Or")) {
        let list = rules
            .as_array()
            .filter(|list| !list.is_empty())
            .ok_or("And/Or take a non-empty list of rules")?;
        let parsed = list.iter().map(rule).collect::<Result<Vec<_>, _>>()?;
        return Ok(if object.contains_key("And") {
            Rule::And(parsed)
        } else {
            Rule::Or(parsed)
        });
    }
    if let Some(inner) = object.get("Not") {
        return Ok(Rule::Not(Box::new(rule(inner)?)));
    }
    let variable = object
        .get("Variable")
        .and_then(Value::as_str)
        .ok_or("a comparison needs Variable")?;
    paths::validate(variable).map_err(|error| error.0)?;
    for (key, operand) in object {
        if matches!(key.as_str(), "Variable" | "Next" | "Comment") {
            continue;
        }
        let (name, is_path) = match key.strip_suffix("Path") {
            Some(name) if name != "Is" && operator(name).is_some() => (name, true),
            _ => (key.as_str(), false),
        };
        let Some(op) = operator(name) else {
            continue;
        };
        let operand = if is_path {
            let path = operand
                .as_str()
                .ok_or_else(|| format!("{key} takes a path"))?;
            paths::validate(path).map_err(|error| error.0)?;
            Operand::Path(path.to_string())
        } else {
            let fits = match op {
                Op::Compare(Kind::String | Kind::Timestamp, ..) | Op::StringMatches => {
                    operand.is_string()
                }
                Op::Compare(Kind::Numeric, ..) => operand.is_number(),
                _ => operand.is_boolean(),
            };
            if !fits {
                return Err(format!(
                    "{key} takes a {}",
                    match op {
                        Op::Compare(Kind::Numeric, ..) => "number",
                        Op::Compare(Kind::String | Kind::Timestamp, ..) | Op::StringMatches =>
                            "string",
                        _ => "boolean",
                    }
                ));
            }
            Operand::Literal(operand.clone())
        };
        return Ok(Rule::Compare {
            variable: variable.to_string(),
            op,
            operand,
        });
    }
    Err("the rule has no comparison (StringEquals, NumericLessThan, IsPresent, ...)".into())
}

fn timestamp(value: &Value) -> Option<std::time::SystemTime> {
    humantime::parse_rfc3339_weak(value.as_str()?).ok()
}

/// `*` matches any run; `\*` a literal star.
fn wildcard(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while t < text.len() {
        let literal = |p: usize| {
            if pattern.get(p) == Some(&'\\') {
                pattern.get(p + 1).map(|c| (*c, 2))
            } else {
                pattern.get(p).filter(|c| **c != '*').map(|c| (*c, 1))
            }
        };
        if let Some((c, width)) = literal(p)
            && c == text[t]
        {
            p += width;
            t += 1;
        } else if pattern.get(p) == Some(&'*') {
            star = Some(p);
            mark = t;
            p += 1;
        } else if let Some(star) = star {
            p = star + 1;
            mark += 1;
            t = mark;
        } else {
            return false;
        }
    }
    while pattern.get(p) == Some(&'*') {
        p += 1;
    }
    p == pattern.len()
}

impl Rule {
    /// Whether the rule holds for `input`.
    pub fn holds(&self, input: &Value) -> bool {
        match self {
            Self::And(rules) => rules.iter().all(|rule| rule.holds(input)),
            Self::Or(rules) => rules.iter().any(|rule| rule.holds(input)),
            Self::Not(rule) => !rule.holds(input),
            Self::Compare {
                variable,
                op,
                operand,
            } => {
                let value = paths::select(input, variable).ok();
                match op {
                    Op::IsPresent => {
                        value.is_some() == (operand == &Operand::Literal(Value::Bool(true)))
                    }
                    Op::IsNull | Op::IsString | Op::IsNumeric | Op::IsBoolean | Op::IsTimestamp => {
                        let Some(value) = value else { return false };
                        let is = match op {
                            Op::IsNull => value.is_null(),
                            Op::IsString => value.is_string(),
                            Op::IsNumeric => value.is_number(),
                            Op::IsBoolean => value.is_boolean(),
                            _ => timestamp(&value).is_some(),
                        };
                        is == (operand == &Operand::Literal(Value::Bool(true)))
                    }
                    Op::StringMatches => {
                        let other = match operand {
                            Operand::Literal(value) => Some(value.clone()),
                            Operand::Path(path) => paths::select(input, path).ok(),
                        };
                        matches!((value, other), (Some(Value::String(text)), Some(Value::String(pattern))) if wildcard(&pattern, &text))
                    }
                    Op::Compare(kind, ordering, or_equal) => {
                        let Some(value) = value else { return false };
                        let other = match operand {
                            Operand::Literal(value) => value.clone(),
                            Operand::Path(path) => match paths::select(input, path) {
                                Ok(value) => value,
                                Err(_) => return false,
                            },
                        };
                        let found = match kind {
                            Kind::String => match (value.as_str(), other.as_str()) {
                                (Some(a), Some(b)) => Some(a.cmp(b)),
                                _ => None,
                            },
                            Kind::Numeric => match (value.as_f64(), other.as_f64()) {
                                (Some(a), Some(b)) => a.partial_cmp(&b),
                                _ => None,
                            },
                            Kind::Boolean => match (value.as_bool(), other.as_bool()) {
                                (Some(a), Some(b)) => Some(a.cmp(&b)),
                                _ => None,
                            },
                            Kind::Timestamp => match (timestamp(&value), timestamp(&other)) {
                                (Some(a), Some(b)) => Some(a.cmp(&b)),
                                _ => None,
                            },
                        };
                        found.is_some_and(|found| {
                            found == *ordering || (*or_equal && found == Ordering::Equal)
                        })
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn rules_compare_as_the_states_language_says() {
        let input = json!({"amount": 120, "limit": 100, "name": "order-7", "vip": true,
                           "at": "2026-11-29T10:00:00Z", "nothing": null});
        let cases = [
            (
                json!({"Variable": "$.amount", "NumericGreaterThan": 100}),
                true,
            ),
            (
                json!({"Variable": "$.amount", "NumericLessThanEquals": 120}),
                true,
            ),
            (
                json!({"Variable": "$.amount", "NumericGreaterThanPath": "$.limit"}),
                true,
            ),
            (
                json!({"Variable": "$.name", "StringEquals": "order-7"}),
                true,
            ),
            (
                json!({"Variable": "$.name", "StringMatches": "order-*"}),
                true,
            ),
            (
                json!({"Variable": "$.name", "StringMatches": "invoice-*"}),
                false,
            ),
            (json!({"Variable": "$.vip", "BooleanEquals": true}), true),
            (
                json!({"Variable": "$.at", "TimestampLessThan": "2026-12-01T00:00:00Z"}),
                true,
            ),
            (json!({"Variable": "$.missing", "IsPresent": false}), true),
            (json!({"Variable": "$.nothing", "IsNull": true}), true),
            (json!({"Variable": "$.name", "IsNumeric": true}), false),
            (json!({"Variable": "$.missing", "StringEquals": "x"}), false),
            (
                json!({"Variable": "$.amount", "StringEquals": "120"}),
                false,
            ),
            (
                json!({"And": [{"Variable": "$.vip", "BooleanEquals": true}, {"Not": {"Variable": "$.amount", "NumericLessThan": 50}}]}),
                true,
            ),
            (
                json!({"Or": [{"Variable": "$.vip", "BooleanEquals": false}, {"Variable": "$.amount", "NumericEquals": 1}]}),
                false,
            ),
        ];
        for (rule, expected) in cases {
            assert_eq!(parse_rule(&rule).unwrap().holds(&input), expected, "{rule}");
        }
        for (bad, needle) in [
            (json!({"NumericEquals": 1}), "Variable"),
            (json!({"Variable": "$.a", "NumericEquals": "1"}), "number"),
            (json!({"Variable": "$.a", "Wobbles": 1}), "no comparison"),
            (json!({"And": []}), "non-empty"),
            (
                json!({"Variable": "a", "IsNull": true}),
                "must start with $",
            ),
        ] {
            assert!(parse_rule(&bad).unwrap_err().0.contains(needle), "{bad}");
        }
        assert!(wildcard("a\\*b*", "a*bcd"));
        assert!(!wildcard("a\\*b", "axb"));
    }
}

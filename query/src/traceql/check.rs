//! Checks a parsed query before it runs: every comparison between types
//! that can be compared, every regex compiled; and numbers the attribute
//! fields the query reads ("slots") so evaluation finds them by index.

use std::collections::HashMap;

use regex::Regex;

use super::eval::field_text;
use super::parse::{Condition, Field, Intrinsic, Operator, Query, Scope, Spansets, Stage, Value};

/// Largest compiled regex accepted, in bytes (the regex crate's limit).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A query that passed [`check`].
#[derive(Debug)]
pub struct Checked {
    pub query: Query,
    /// The attribute fields read per span, by slot. `resource.service.name`
    /// is the dedicated `service_name` column and takes no slot.
    pub slots: Vec<(Scope, String)>,
    slot_index: HashMap<(Scope, String), usize>,
    /// Each `=~`/`!~` pattern, compiled fully anchored.
    pub(super) regexes: HashMap<String, Regex>,
    /// What a matched span is answered with (computed once per query):
    /// `(name, field)`, names distinct.
    pub(super) answered: Vec<(String, Field)>,
}

impl Checked {
    pub(super) fn slot(&self, scope: Scope, name: &str) -> Option<usize> {
        self.slot_index.get(&(scope, name.to_string())).copied()
    }
}

/// Why a query that parsed cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid TraceQL: {0}")]
pub struct CheckError(pub String);

fn describe(value: &Value) -> String {
    match value {
        Value::Text(text) => format!("string {text:?}"),
        Value::Int(int) => format!("integer {int}"),
        Value::Float(float) => format!("number {float}"),
        Value::Bool(flag) => format!("boolean {flag}"),
        Value::Duration(_) => "a duration".into(),
        Value::Status(status) => format!("status {status}"),
        Value::Kind(kind) => format!("kind {kind}"),
        Value::Nil => "nil".into(),
    }
}

fn is_equality(op: Operator) -> bool {
    matches!(op, Operator::Eq | Operator::Ne)
}

fn is_regex(op: Operator) -> bool {
    matches!(op, Operator::Regex | Operator::NotRegex)
}

/// Checks `query` and numbers its attribute fields.
pub fn check(query: Query) -> Result<Checked, CheckError> {
    let mut checked = Checked {
        query: Query {
            spansets: Spansets::Filter(None),
            stages: Vec::new(),
        },
        slots: Vec::new(),
        slot_index: HashMap::new(),
        regexes: HashMap::new(),
        answered: Vec::new(),
    };
    checked.check_spansets(&query.spansets)?;
    for stage in &query.stages {
        match stage {
            Stage::Count { .. } => {}
            Stage::Aggregate { field, .. } => {
                if let Field::Intrinsic(intrinsic) = field
                    && !matches!(intrinsic, Intrinsic::Duration | Intrinsic::TraceDuration)
                {
                    return Err(CheckError(format!(
                        "{} is not a number; aggregate duration or a numeric attribute",
                        field_text(field)
                    )));
                }
                checked.field(field);
            }
            Stage::By(fields) | Stage::Select(fields) => {
                fields.iter().for_each(|f| checked.field(f))
            }
        }
    }
    checked.query = query;
    checked.answered = checked.answered_fields();
    Ok(checked)
}

impl Checked {
    fn field(&mut self, field: &Field) {
        if let Field::Attribute { scope, name } = field {
            if *scope == Scope::Resource && name == super::SERVICE_NAME {
                return;
            }
            let key = (*scope, name.clone());
            if !self.slot_index.contains_key(&key) {
                self.slot_index.insert(key.clone(), self.slots.len());
                self.slots.push(key);
            }
        }
    }

    fn check_spansets(&mut self, spansets: &Spansets) -> Result<(), CheckError> {
        match spansets {
            Spansets::Filter(None) => Ok(()),
            Spansets::Filter(Some(condition)) => self.check_condition(condition),
            Spansets::And(left, right)
            | Spansets::Or(left, right)
            | Spansets::Descendant(left, right)
            | Spansets::Child(left, right)
            | Spansets::Sibling(left, right) => {
                self.check_spansets(left)?;
                self.check_spansets(right)
            }
        }
    }

    fn check_condition(&mut self, condition: &Condition) -> Result<(), CheckError> {
        match condition {
            Condition::And(left, right) | Condition::Or(left, right) => {
                self.check_condition(left)?;
                self.check_condition(right)
            }
            Condition::Not(inner) => self.check_condition(inner),
            Condition::Truthy(field) => {
                if let Field::Intrinsic(_) = field {
                    return Err(CheckError(format!(
                        "{} is not a boolean; compare it with a value",
                        field_text(field)
                    )));
                }
                self.field(field);
                Ok(())
            }
            Condition::Compare { field, op, value } => {
                self.comparison(field, *op, value)?;
                self.field(field);
                Ok(())
            }
        }
    }

    fn comparison(&mut self, field: &Field, op: Operator, value: &Value) -> Result<(), CheckError> {
        let refuse = |expected: &str| {
            Err(CheckError(format!(
                "{} {} {}: {expected}",
                field_text(field),
                operator_text(op),
                describe(value)
            )))
        };
        if *value == Value::Nil {
            return if is_equality(op) {
                Ok(())
            } else {
                refuse("nil compares with = and != only")
            };
        }
        if is_regex(op) {
            let Value::Text(pattern) = value else {
                return refuse("=~ and !~ take a string pattern");
            };
            let text_field = matches!(
                field,
                Field::Attribute { .. }
                    | Field::Intrinsic(
                        Intrinsic::Name
                            | Intrinsic::StatusMessage
                            | Intrinsic::RootName
                            | Intrinsic::RootServiceName
                    )
            );
            if !text_field {
                return refuse("=~ and !~ apply to text fields");
            }
            let regex = regex::RegexBuilder::new(&anchored(pattern))
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|error| CheckError(format!("invalid regex {pattern:?}: {error}")))?;
            self.regexes.insert(pattern.clone(), regex);
            return Ok(());
        }
        match field {
            Field::Intrinsic(
                Intrinsic::Name
                | Intrinsic::StatusMessage
                | Intrinsic::RootName
                | Intrinsic::RootServiceName,
            ) => match value {
                Value::Text(_) => Ok(()),
                _ => refuse("compare with a string in double quotes"),
            },
            Field::Intrinsic(Intrinsic::Status) => match value {
                Value::Status(_) if is_equality(op) => Ok(()),
                _ => refuse("status compares with = or != and error, ok or unset"),
            },
            Field::Intrinsic(Intrinsic::Kind) => match value {
                Value::Kind(_) if is_equality(op) => Ok(()),
                _ => refuse(
                    "kind compares with = or != and server, client, producer, consumer, internal or unspecified",
                ),
            },
            Field::Intrinsic(Intrinsic::Duration | Intrinsic::TraceDuration) => match value {
                Value::Duration(_) => Ok(()),
                _ => refuse("compare with a duration such as 100ms or 1.5s"),
            },
            Field::Attribute { .. } => match value {
                Value::Text(_) | Value::Int(_) | Value::Float(_) => Ok(()),
                Value::Bool(_) if is_equality(op) => Ok(()),
                Value::Bool(_) => refuse("booleans compare with = and != only"),
                _ => refuse("attributes compare with strings, numbers, booleans or nil"),
            },
        }
    }
}

/// `pattern` anchored at both ends, as `=~` matches.
pub(super) fn anchored(pattern: &str) -> String {
    format!("^(?:{pattern})$")
}

pub(super) fn operator_text(op: Operator) -> &'static str {
    match op {
        Operator::Eq => "=",
        Operator::Ne => "!=",
        Operator::Gt => ">",
        Operator::Ge => ">=",
        Operator::Lt => "<",
        Operator::Le => "<=",
        Operator::Regex => "=~",
        Operator::NotRegex => "!~",
    }
}

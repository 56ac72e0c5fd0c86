//! What DataFusion can decide of a TraceQL query, as SQL over `spans`.
//!
//! Search runs in two steps: DataFusion picks the candidate traces of the
//! window with
//!
//! ```sql
//! SELECT trace_id, max(start_time) AS latest FROM spans
//! WHERE <window> AND <span predicate>
//! GROUP BY trace_id HAVING <trace predicate>
//! ORDER BY latest DESC, trace_id
//! ```
//!
//! and then only those traces are loaded and evaluated exactly
//! ([`super::eval`]). The window bounds `start_time`, so the spans table
//! prunes blocks by time and Parquet row groups by statistics; dedicated
//! columns (`service_name`, `name`, `duration_ns`, `status_code`, `kind`)
//! prune further.
//!
//! The predicates must never lose a match: each is a *necessary* condition.
//! A leaf comparison is translated *exactly* (same answer as evaluation,
//! NULL-free through `coalesce(.., false)`), so it may also appear under
//! `!`; trace-level intrinsics (`rootName`, `rootServiceName`,
//! `traceDuration`) are not translated and only widen the candidates.
//! `{ a } && { b }` becomes `bool_or(a) AND bool_or(b)` per trace, `||`
//! an `OR`, structural operators need both sides like `&&`.

use super::check::{Checked, anchored};
use super::parse::{Condition, Field, Intrinsic, Operator, Scope, Spansets, Value};

/// A SQL string literal.
pub(crate) fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn sql_operator(op: Operator) -> &'static str {
    match op {
        Operator::Eq => "=",
        Operator::Ne => "<>",
        Operator::Gt => ">",
        Operator::Ge => ">=",
        Operator::Lt => "<",
        Operator::Le => "<=",
        Operator::Regex => "~",
        Operator::NotRegex => "!~",
    }
}

fn either(left: Option<String>, right: Option<String>, joiner: &str) -> Option<String> {
    Some(format!("({} {joiner} {})", left?, right?))
}

fn both(left: Option<String>, right: Option<String>) -> Option<String> {
    match (left, right) {
        (Some(left), Some(right)) => Some(format!("({left} AND {right})")),
        (one, None) | (None, one) => one,
    }
}

impl Checked {
    /// The SQL value of attribute slot `slot`: the `AnyValue` struct, NULL
    /// when the span lacks it (`.x` reads the span's, then the resource's).
    pub fn slot_sql(&self, slot: usize) -> String {
        let (scope, name) = &self.slots[slot];
        let key = quoted(name);
        match scope {
            Scope::Span => format!("attributes[{key}]"),
            Scope::Resource => format!("resource_attributes[{key}]"),
            Scope::Any => format!("coalesce(attributes[{key}], resource_attributes[{key}])"),
        }
    }

    /// A condition every span of interest meets (their union); `None`
    /// when any span may be.
    pub fn span_predicate(&self) -> Option<String> {
        self.span_level(&self.query.spansets)
    }

    /// A condition over a trace's candidate spans that every matching
    /// trace meets, for `HAVING`; `None` when any trace may match.
    pub fn trace_predicate(&self) -> Option<String> {
        self.trace_level(&self.query.spansets)
    }

    fn span_level(&self, spansets: &Spansets) -> Option<String> {
        match spansets {
            Spansets::Filter(None) => None,
            Spansets::Filter(Some(condition)) => self.necessary(condition),
            Spansets::And(left, right)
            | Spansets::Or(left, right)
            | Spansets::Descendant(left, right)
            | Spansets::Child(left, right)
            | Spansets::Sibling(left, right) => {
                either(self.span_level(left), self.span_level(right), "OR")
            }
        }
    }

    fn trace_level(&self, spansets: &Spansets) -> Option<String> {
        match spansets {
            Spansets::Filter(None) => None,
            Spansets::Filter(Some(condition)) => self
                .necessary(condition)
                .map(|predicate| format!("bool_or({predicate})")),
            Spansets::Or(left, right) => {
                either(self.trace_level(left), self.trace_level(right), "OR")
            }
            Spansets::And(left, right)
            | Spansets::Descendant(left, right)
            | Spansets::Child(left, right)
            | Spansets::Sibling(left, right) => {
                both(self.trace_level(left), self.trace_level(right))
            }
        }
    }

    /// A SQL condition implied by `condition`; `None` when nothing is.
    fn necessary(&self, condition: &Condition) -> Option<String> {
        match condition {
            Condition::And(left, right) => both(self.necessary(left), self.necessary(right)),
            Condition::Or(left, right) => either(self.necessary(left), self.necessary(right), "OR"),
            Condition::Not(_) | Condition::Compare { .. } | Condition::Truthy(_) => {
                self.exact(condition)
            }
        }
    }

    /// `condition` in SQL with exactly evaluation's answer, never NULL;
    /// `None` when it reads trace-level fields.
    fn exact(&self, condition: &Condition) -> Option<String> {
        match condition {
            Condition::And(left, right) => either(self.exact(left), self.exact(right), "AND"),
            Condition::Or(left, right) => either(self.exact(left), self.exact(right), "OR"),
            Condition::Not(inner) => Some(format!("(NOT {})", self.exact(inner)?)),
            Condition::Truthy(field) => {
                let value = self.attribute_sql(field)?;
                Some(format!("coalesce({value}['bool'], false)"))
            }
            Condition::Compare { field, op, value } => self.leaf(field, *op, value),
        }
    }

    fn attribute_sql(&self, field: &Field) -> Option<String> {
        let Field::Attribute { scope, name } = field else {
            return None;
        };
        self.slot(*scope, name).map(|slot| self.slot_sql(slot))
    }

    fn leaf(&self, field: &Field, op: Operator, value: &Value) -> Option<String> {
        let operator = sql_operator(op);
        let text = |column: &str| -> Option<String> {
            match value {
                Value::Nil => Some(if op == Operator::Eq { "false" } else { "true" }.into()),
                Value::Text(literal) => {
                    let literal = match op {
                        Operator::Regex | Operator::NotRegex => quoted(&anchored(literal)),
                        _ => quoted(literal),
                    };
                    Some(format!("coalesce({column} {operator} {literal}, false)"))
                }
                _ => Some("false".into()),
            }
        };
        match field {
            Field::Intrinsic(intrinsic) => match intrinsic {
                Intrinsic::Name => text("name"),
                Intrinsic::StatusMessage => text("coalesce(status_message, '')"),
                Intrinsic::Status | Intrinsic::Kind => {
                    let column = if *intrinsic == Intrinsic::Status {
                        "status_code"
                    } else {
                        "kind"
                    };
                    match value {
                        Value::Status(literal) | Value::Kind(literal) => {
                            Some(format!("({column} {operator} {})", quoted(literal)))
                        }
                        Value::Nil => text(column),
                        _ => Some("false".into()),
                    }
                }
                Intrinsic::Duration => match value {
                    Value::Duration(nanos) => Some(format!("(duration_ns {operator} {nanos})")),
                    Value::Nil => text("duration_ns"),
                    _ => Some("false".into()),
                },
                Intrinsic::RootName | Intrinsic::RootServiceName | Intrinsic::TraceDuration => None,
            },
            Field::Attribute { scope, name }
                if *scope == Scope::Resource && name == super::SERVICE_NAME =>
            {
                text("service_name")
            }
            Field::Attribute { .. } => {
                let attribute = self.attribute_sql(field)?;
                Some(match value {
                    Value::Nil if op == Operator::Eq => format!("({attribute} IS NULL)"),
                    Value::Nil => format!("({attribute} IS NOT NULL)"),
                    Value::Text(_) => text(&format!("{attribute}['str']"))?,
                    Value::Int(int) => format!(
                        "coalesce({attribute}['int'] {operator} {int}, \
                         {attribute}['double'] {operator} CAST({int} AS DOUBLE), false)"
                    ),
                    Value::Float(float) => format!(
                        "coalesce(CAST({attribute}['int'] AS DOUBLE) {operator} {float:?}, \
                         {attribute}['double'] {operator} {float:?}, false)"
                    ),
                    Value::Bool(flag) => {
                        format!("coalesce({attribute}['bool'] {operator} {flag}, false)")
                    }
                    _ => "false".into(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::traceql::prepare;

    #[test]
    fn pushes_span_conditions_and_leaves_trace_level_ones() {
        let cases = [
            (
                r#"{ resource.service.name = "X" && duration > 500ms }"#,
                Some(
                    "(coalesce(service_name = 'X', false) AND (duration_ns > 500000000))"
                        .to_string(),
                ),
            ),
            (r#"{ rootName = "x" }"#, None),
            (
                r#"{ rootName = "x" && kind = server }"#,
                Some("(kind = 'server')".into()),
            ),
            (r#"{ rootName = "x" || kind = server }"#, None),
            (
                r#"{ !(span.a = "it's") }"#,
                Some("(NOT coalesce(attributes['a']['str'] = 'it''s', false))".into()),
            ),
            (r#"{ !(rootName = "x") }"#, None),
            (
                r#"{ .a = nil }"#,
                Some("(coalesce(attributes['a'], resource_attributes['a']) IS NULL)".into()),
            ),
            (
                r#"{ name =~ "GET.*" }"#,
                Some("coalesce(name ~ '^(?:GET.*)$', false)".into()),
            ),
            ("{ } >> { kind = client }", None),
        ];
        for (query, expected) in cases {
            let checked = prepare(query).unwrap();
            assert_eq!(checked.span_predicate(), expected, "{query}");
        }
        let checked = prepare(r#"{ kind = client } && { name = "a" } || { }"#).unwrap();
        assert_eq!(checked.trace_predicate(), None);
        let checked = prepare(r#"{ kind = client } > { name = "a" }"#).unwrap();
        assert_eq!(
            checked.trace_predicate().as_deref(),
            Some("(bool_or((kind = 'client')) AND bool_or(coalesce(name = 'a', false)))")
        );
    }
}

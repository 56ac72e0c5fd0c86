//! What DataFusion can decide of a TraceQL query, as expressions over
//! `spans` (built with `Expr`, never as SQL text: see [`crate::exprs`]).
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

use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::{Operator as SqlOperator, binary_expr, cast};
use datafusion::prelude::{Expr, col, lit};
use tracelake_model::schema::{any_value, col as span_col};

use super::ast::{
    BinaryOp, Field, FieldExpr, Intrinsic, Pipeline, Scope, SpansetOp, Spansets, Stage, Value,
};
use super::check::{Checked, anchored};
use crate::exprs::{any_value_child, map_value, or_else};

fn sql_operator(op: BinaryOp) -> Option<SqlOperator> {
    Some(match op {
        BinaryOp::Eq => SqlOperator::Eq,
        BinaryOp::Ne => SqlOperator::NotEq,
        BinaryOp::Gt => SqlOperator::Gt,
        BinaryOp::Ge => SqlOperator::GtEq,
        BinaryOp::Lt => SqlOperator::Lt,
        BinaryOp::Le => SqlOperator::LtEq,
        BinaryOp::Regex => SqlOperator::RegexMatch,
        BinaryOp::NotRegex => SqlOperator::RegexNotMatch,
        _ => return None,
    })
}

/// `op` with its operands swapped (`1 < x` is `x > 1`).
fn flipped(op: BinaryOp) -> Option<BinaryOp> {
    Some(match op {
        BinaryOp::Lt => BinaryOp::Gt,
        BinaryOp::Le => BinaryOp::Ge,
        BinaryOp::Gt => BinaryOp::Lt,
        BinaryOp::Ge => BinaryOp::Le,
        BinaryOp::Eq | BinaryOp::Ne => op,
        _ => return None,
    })
}

fn either(left: Option<Expr>, right: Option<Expr>, op: SqlOperator) -> Option<Expr> {
    Some(binary_expr(left?, op, right?))
}

fn both(left: Option<Expr>, right: Option<Expr>) -> Option<Expr> {
    match (left, right) {
        (Some(left), Some(right)) => Some(left.and(right)),
        (one, None) | (None, one) => one,
    }
}

/// The `AnyValue` of attribute `name` in `scope`, NULL when the span lacks
/// it (`.x` reads the span's, then the resource's); `None` for event and
/// link attributes, which are many per span.
pub(crate) fn attribute_value(scope: Scope, name: &str) -> Expr {
    match scope {
        Scope::Span => map_value(span_col::ATTRIBUTES, name),
        Scope::Resource => map_value(span_col::RESOURCE_ATTRIBUTES, name),
        Scope::Instrumentation => map_value(span_col::SCOPE_ATTRIBUTES, name),
        Scope::Any | Scope::Event | Scope::Link => or_else(
            map_value(span_col::ATTRIBUTES, name),
            map_value(span_col::RESOURCE_ATTRIBUTES, name),
        ),
    }
}

/// `value`, with NULL read as false.
fn never_null(value: Expr) -> Expr {
    or_else(value, lit(false))
}

/// The first spanset stage of a pipeline: every span a pipeline answers
/// passed it.
fn first_spansets(pipeline: &Pipeline) -> Option<&Spansets> {
    pipeline.stages.iter().find_map(|stage| match stage {
        Stage::Spansets(spansets) => Some(spansets),
        _ => None,
    })
}

impl Checked {
    /// The value of attribute slot `slot`: the `AnyValue` struct, NULL
    /// when the span lacks it (`.x` reads the span's, then the resource's).
    pub fn slot_expr(&self, slot: usize) -> Expr {
        let (scope, name) = &self.slots[slot];
        attribute_value(*scope, name)
    }

    /// The spanset expression whose spans every answer comes from: the
    /// search pipeline's first, or the single metrics query's.
    fn leading_spansets(&self) -> Option<&Spansets> {
        match &self.query.body {
            super::ast::Body::Search(pipeline) => first_spansets(pipeline),
            super::ast::Body::Metrics(metrics) => {
                match super::check::metrics_queries(metrics).as_slice() {
                    [only] => first_spansets(&only.pipeline),
                    _ => None,
                }
            }
        }
    }

    /// Whether a trace meets [`Checked::trace_predicate`] as soon as one
    /// of its spans meets [`Checked::span_predicate`] (one filter leads):
    /// then any part of the window holding such a span finds the trace.
    pub fn needs_one_span(&self) -> bool {
        fn one(spansets: &Spansets) -> bool {
            match spansets {
                Spansets::Filter(_) => true,
                Spansets::Pipeline(pipeline) => first_spansets(pipeline).is_none_or(one),
                Spansets::Op(..) => false,
            }
        }
        self.leading_spansets().is_none_or(one)
    }

    /// A condition every span of interest meets (their union); `None`
    /// when any span may be.
    pub fn span_predicate(&self) -> Option<Expr> {
        self.span_level(self.leading_spansets()?)
    }

    /// A condition over a trace's candidate spans that every matching
    /// trace meets, for `HAVING`; `None` when any trace may match.
    ///
    /// Its per-trace aggregates are pushed onto `aggregates` (each aliased
    /// `having_<n>`) and the condition reads them as columns, so it applies
    /// as a filter after grouping by trace.
    pub fn trace_predicate(&self, aggregates: &mut Vec<Expr>) -> Option<Expr> {
        self.trace_level(self.leading_spansets()?, aggregates)
    }

    fn span_level(&self, spansets: &Spansets) -> Option<Expr> {
        match spansets {
            Spansets::Filter(None) => None,
            Spansets::Filter(Some(condition)) => self.necessary(condition),
            Spansets::Pipeline(pipeline) => self.span_level(first_spansets(pipeline)?),
            Spansets::Op(op, left, right) if is_negated(*op) => self.span_level(right),
            Spansets::Op(_, left, right) => either(
                self.span_level(left),
                self.span_level(right),
                SqlOperator::Or,
            ),
        }
    }

    fn trace_level(&self, spansets: &Spansets, aggregates: &mut Vec<Expr>) -> Option<Expr> {
        match spansets {
            Spansets::Filter(None) => None,
            Spansets::Filter(Some(condition)) => {
                let predicate = self.necessary(condition)?;
                let name = format!("having_{}", aggregates.len());
                aggregates.push(
                    datafusion::functions_aggregate::expr_fn::bool_or(predicate).alias(&name),
                );
                Some(col(name))
            }
            Spansets::Pipeline(pipeline) => self.trace_level(first_spansets(pipeline)?, aggregates),
            Spansets::Op(SpansetOp::Union, left, right) => either(
                self.trace_level(left, aggregates),
                self.trace_level(right, aggregates),
                SqlOperator::Or,
            ),
            Spansets::Op(op, _, right) if is_negated(*op) => self.trace_level(right, aggregates),
            Spansets::Op(_, left, right) => both(
                self.trace_level(left, aggregates),
                self.trace_level(right, aggregates),
            ),
        }
    }

    /// A condition implied by `condition`; `None` when nothing is.
    fn necessary(&self, condition: &FieldExpr) -> Option<Expr> {
        match condition {
            FieldExpr::Binary(BinaryOp::And, left, right) => {
                both(self.necessary(left), self.necessary(right))
            }
            FieldExpr::Binary(BinaryOp::Or, left, right) => {
                either(self.necessary(left), self.necessary(right), SqlOperator::Or)
            }
            other => self.exact(other),
        }
    }

    /// `condition` with exactly evaluation's answer, never NULL; `None`
    /// when it reads what DataFusion does not decide here (trace-level
    /// intrinsics, events, links, arithmetic).
    pub(super) fn exact(&self, condition: &FieldExpr) -> Option<Expr> {
        match condition {
            FieldExpr::Binary(BinaryOp::And, left, right) => {
                either(self.exact(left), self.exact(right), SqlOperator::And)
            }
            FieldExpr::Binary(BinaryOp::Or, left, right) => {
                either(self.exact(left), self.exact(right), SqlOperator::Or)
            }
            FieldExpr::Not(inner) => Some(!self.exact(inner)?),
            FieldExpr::Value(Value::Bool(flag)) => Some(lit(*flag)),
            FieldExpr::Field(field) => {
                let value = self.attribute_expr(field)?;
                Some(never_null(any_value_child(value, any_value::BOOL)))
            }
            FieldExpr::Exists(inner) | FieldExpr::NotExists(inner) => {
                let present = match inner.as_ref() {
                    FieldExpr::Field(Field::Intrinsic(
                        Intrinsic::Name
                        | Intrinsic::Status
                        | Intrinsic::Kind
                        | Intrinsic::Duration
                        | Intrinsic::StatusMessage
                        | Intrinsic::SpanId
                        | Intrinsic::TraceId,
                    )) => lit(true),
                    FieldExpr::Field(Field::Intrinsic(Intrinsic::ParentId)) => {
                        col(span_col::PARENT_SPAN_ID).is_not_null()
                    }
                    FieldExpr::Field(
                        field @ Field::Attribute {
                            scope: Scope::Span | Scope::Resource | Scope::Any,
                            ..
                        },
                    ) => self.attribute_expr(field)?.is_not_null(),
                    _ => return None,
                };
                let exists = matches!(condition, FieldExpr::Exists(_));
                Some(match present {
                    Expr::IsNotNull(value) if !exists => value.is_null(),
                    present if exists => present,
                    present => !present,
                })
            }
            FieldExpr::Binary(op, left, right) => match (left.as_ref(), right.as_ref()) {
                (FieldExpr::Field(field), FieldExpr::Value(value)) => self.leaf(field, *op, value),
                (FieldExpr::Value(value), FieldExpr::Field(field))
                    if !matches!(op, BinaryOp::Regex | BinaryOp::NotRegex) =>
                {
                    self.leaf(field, flipped(*op)?, value)
                }
                _ => None,
            },
            _ => None,
        }
    }

    fn attribute_expr(&self, field: &Field) -> Option<Expr> {
        let Field::Attribute { scope, name } = field else {
            return None;
        };
        if matches!(scope, Scope::Event | Scope::Link)
            || (*scope == Scope::Any && name == super::SERVICE_NAME)
        {
            return None;
        }
        self.slot(*scope, name).map(|slot| self.slot_expr(slot))
    }

    fn leaf(&self, field: &Field, op: BinaryOp, value: &Value) -> Option<Expr> {
        let operator = sql_operator(op)?;
        let compare = |left: Expr, right: Expr| binary_expr(left, operator, right);
        let text = |column: Expr| -> Option<Expr> {
            match value {
                Value::Text(literal) => {
                    let literal = match op {
                        BinaryOp::Regex | BinaryOp::NotRegex => anchored(literal),
                        _ => literal.clone(),
                    };
                    Some(never_null(compare(column, lit(literal))))
                }
                _ => Some(lit(false)),
            }
        };
        let ordered = !matches!(op, BinaryOp::Eq | BinaryOp::Ne);
        match field {
            Field::Intrinsic(intrinsic) => match intrinsic {
                Intrinsic::Name => text(col(span_col::NAME)),
                Intrinsic::StatusMessage => text(or_else(col(span_col::STATUS_MESSAGE), lit(""))),
                Intrinsic::Status | Intrinsic::Kind => {
                    let column = col(if *intrinsic == Intrinsic::Status {
                        span_col::STATUS_CODE
                    } else {
                        span_col::KIND
                    });
                    match value {
                        Value::Status(literal) | Value::Kind(literal) if !ordered => {
                            Some(compare(column, lit(literal.clone())))
                        }
                        _ => Some(lit(false)),
                    }
                }
                Intrinsic::Duration => {
                    let nanos = match value {
                        Value::Duration(nanos) | Value::Int(nanos) => lit(*nanos),
                        Value::Float(float) => {
                            return Some(never_null(compare(
                                cast(col(span_col::DURATION_NS), DataType::Float64),
                                lit(*float),
                            )));
                        }
                        _ => return Some(lit(false)),
                    };
                    Some(compare(col(span_col::DURATION_NS), nanos))
                }
                _ => None,
            },
            Field::Attribute { scope, name }
                if *scope == Scope::Resource && name == super::SERVICE_NAME =>
            {
                text(col(span_col::SERVICE_NAME))
            }
            Field::Attribute { .. } => {
                let attribute = self.attribute_expr(field)?;
                if matches!(op, BinaryOp::Regex | BinaryOp::NotRegex)
                    && !matches!(value, Value::Text(_))
                {
                    return None;
                }
                let child = |name: &str| any_value_child(attribute.clone(), name);
                Some(match value {
                    Value::Text(_) => text(child(any_value::STR))?,
                    Value::Int(int) => datafusion::functions::expr_fn::coalesce(vec![
                        compare(child(any_value::INT), lit(*int)),
                        compare(child(any_value::DOUBLE), cast(lit(*int), DataType::Float64)),
                        lit(false),
                    ]),
                    Value::Float(float) => datafusion::functions::expr_fn::coalesce(vec![
                        compare(cast(child(any_value::INT), DataType::Float64), lit(*float)),
                        compare(child(any_value::DOUBLE), lit(*float)),
                        lit(false),
                    ]),
                    Value::Bool(flag) if !ordered => {
                        never_null(compare(child(any_value::BOOL), lit(*flag)))
                    }
                    _ => return None,
                })
            }
        }
    }
}

/// The negated relations answer right spans *without* a relation, so only
/// the right side is needed.
fn is_negated(op: SpansetOp) -> bool {
    matches!(
        op,
        SpansetOp::NotChild
            | SpansetOp::NotParent
            | SpansetOp::NotDescendant
            | SpansetOp::NotAncestor
            | SpansetOp::NotSibling
    )
}

#[cfg(test)]
mod tests {
    use crate::traceql::prepare;

    /// The expressions as DataFusion prints them: request text appears
    /// only inside literals (`Utf8("...")`) and map keys.
    #[test]
    fn pushes_span_conditions_and_leaves_trace_level_ones() {
        let cases = [
            (
                r#"{ resource.service.name = "X" && duration > 500ms }"#,
                Some(
                    r#"coalesce(service_name = Utf8("X"), Boolean(false)) AND duration_ns > Int64(500000000)"#,
                ),
            ),
            (r#"{ rootName = "x" }"#, None),
            (
                r#"{ rootName = "x" && kind = server }"#,
                Some(r#"kind = Utf8("server")"#),
            ),
            (r#"{ rootName = "x" || kind = server }"#, None),
            (
                r#"{ !(span.a = "it's") }"#,
                Some(
                    r#"NOT coalesce(get_field(get_field(attributes, Utf8("a")), Utf8("str")) = Utf8("it's"), Boolean(false))"#,
                ),
            ),
            (r#"{ !(rootName = "x") }"#, None),
            (
                r#"{ .a = nil }"#,
                Some(
                    r#"coalesce(get_field(attributes, Utf8("a")), get_field(resource_attributes, Utf8("a"))) IS NULL"#,
                ),
            ),
            (
                r#"{ name =~ "GET.*" }"#,
                Some(r#"coalesce(name ~ Utf8("^(?:GET.*)$"), Boolean(false))"#),
            ),
            ("{ } >> { kind = client }", None),
        ];
        for (query, expected) in cases {
            let checked = prepare(query).unwrap();
            let predicate = checked.span_predicate().map(|expr| expr.to_string());
            assert_eq!(predicate.as_deref(), expected, "{query}");
        }
        let checked = prepare(r#"{ kind = client } && { name = "a" } || { }"#).unwrap();
        let mut aggregates = Vec::new();
        assert_eq!(checked.trace_predicate(&mut aggregates), None);
        let checked = prepare(r#"{ kind = client } > { name = "a" }"#).unwrap();
        let mut aggregates = Vec::new();
        let predicate = checked.trace_predicate(&mut aggregates).unwrap();
        assert_eq!(predicate.to_string(), "having_0 AND having_1");
        let aggregates: Vec<String> = aggregates.iter().map(ToString::to_string).collect();
        assert_eq!(
            aggregates,
            [
                r#"bool_or(kind = Utf8("client")) AS having_0"#,
                r#"bool_or(coalesce(name = Utf8("a"), Boolean(false))) AS having_1"#,
            ]
        );
    }
}

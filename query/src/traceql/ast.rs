//! The TraceQL syntax tree, as Tempo's grammar (`pkg/traceql/expr.y`)
//! defines the language.
//!
//! ```text
//! Query    := Body hints?
//! Body     := Search(Pipeline) | Metrics(MetricsExpr)
//! Pipeline := Stage ("|" Stage)*
//! Stage    := Spansets | ScalarFilter | by(FieldExpr) | coalesce() | select(Field, ...)
//! Spansets := { FieldExpr? } | Spansets op Spansets | ( Pipeline )
//! MetricsExpr := ( Pipeline | metrics-function ) | MetricsExpr (+ - * /) MetricsExpr
//!              | MetricsExpr op scalar | MetricsExpr | topk(n) ...
//! ```

use std::fmt;

/// Where an attribute is looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Span,
    Resource,
    /// `.x`: the span's, else the resource's.
    Any,
    /// `event.x`: one of the span's events.
    Event,
    /// `link.x`: one of the span's links.
    Link,
    /// `instrumentation.x`: the instrumentation scope's attributes.
    Instrumentation,
}

impl Scope {
    /// The prefix TraceQL writes before the name.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Span => "span.",
            Self::Resource => "resource.",
            Self::Any => ".",
            Self::Event => "event.",
            Self::Link => "link.",
            Self::Instrumentation => "instrumentation.",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Intrinsic {
    Name,
    Status,
    Kind,
    Duration,
    StatusMessage,
    RootName,
    RootServiceName,
    TraceDuration,
    TraceId,
    SpanId,
    ParentId,
    ChildCount,
    EventName,
    EventTimeSinceStart,
    LinkTraceId,
    LinkSpanId,
    InstrumentationName,
    InstrumentationVersion,
    NestedSetLeft,
    NestedSetRight,
    NestedSetParent,
}

impl Intrinsic {
    /// The name Tempo answers the intrinsic with (and accepts in tag
    /// requests).
    pub fn name(self) -> &'static str {
        match self {
            Self::Name => "name",
            Self::Status => "status",
            Self::Kind => "kind",
            Self::Duration => "duration",
            Self::StatusMessage => "statusMessage",
            Self::RootName => "rootName",
            Self::RootServiceName => "rootServiceName",
            Self::TraceDuration => "traceDuration",
            Self::TraceId => "trace:id",
            Self::SpanId => "span:id",
            Self::ParentId => "span:parentID",
            Self::ChildCount => "span:childCount",
            Self::EventName => "event:name",
            Self::EventTimeSinceStart => "event:timeSinceStart",
            Self::LinkTraceId => "link:traceID",
            Self::LinkSpanId => "link:spanID",
            Self::InstrumentationName => "instrumentation:name",
            Self::InstrumentationVersion => "instrumentation:version",
            Self::NestedSetLeft => "nestedSetLeft",
            Self::NestedSetRight => "nestedSetRight",
            Self::NestedSetParent => "nestedSetParent",
        }
    }

    /// The type of its values.
    pub fn value_type(self) -> Type {
        match self {
            Self::Status => Type::Status,
            Self::Kind => Type::Kind,
            Self::Duration | Self::TraceDuration | Self::EventTimeSinceStart => Type::Duration,
            Self::ChildCount
            | Self::NestedSetLeft
            | Self::NestedSetRight
            | Self::NestedSetParent => Type::Int,
            _ => Type::Text,
        }
    }
}

/// A span's field: an attribute or an intrinsic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    Attribute { scope: Scope, name: String },
    Intrinsic(Intrinsic),
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Attribute { scope, name } => {
                let plain = !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':'));
                if plain {
                    write!(f, "{}{name}", scope.prefix())
                } else {
                    write!(f, "{}{name:?}", scope.prefix())
                }
            }
            Self::Intrinsic(intrinsic) => f.write_str(intrinsic.name()),
        }
    }
}

/// A literal.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// Nanoseconds.
    Duration(i64),
    /// `error`, `ok`, `unset`.
    Status(String),
    /// `server`, `client`, ...
    Kind(String),
    Nil,
}

impl Value {
    pub fn value_type(&self) -> Type {
        match self {
            Self::Text(_) => Type::Text,
            Self::Int(_) => Type::Int,
            Self::Float(_) => Type::Float,
            Self::Bool(_) => Type::Bool,
            Self::Duration(_) => Type::Duration,
            Self::Status(_) => Type::Status,
            Self::Kind(_) => Type::Kind,
            Self::Nil => Type::Nil,
        }
    }
}

/// The static type of an expression; `Attribute` is an attribute's value,
/// whose type is known only per span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Text,
    Int,
    Float,
    Bool,
    Duration,
    Status,
    Kind,
    Nil,
    Attribute,
}

impl Type {
    pub fn is_numeric(self) -> bool {
        matches!(
            self,
            Self::Int | Self::Float | Self::Duration | Self::Attribute
        )
    }

    /// Whether values of the two types may be compared.
    pub fn compares_with(self, other: Type) -> bool {
        self == Self::Attribute
            || other == Self::Attribute
            || (self.is_numeric() && other.is_numeric())
            || self == other
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Text => "string",
            Self::Int => "int",
            Self::Float => "float",
            Self::Bool => "boolean",
            Self::Duration => "duration",
            Self::Status => "status",
            Self::Kind => "kind",
            Self::Nil => "nil",
            Self::Attribute => "attribute",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Regex,
    NotRegex,
    And,
    Or,
}

impl BinaryOp {
    pub fn text(self) -> &'static str {
        match self {
            Self::Add => "+",
            Self::Sub => "-",
            Self::Mul => "*",
            Self::Div => "/",
            Self::Mod => "%",
            Self::Pow => "^",
            Self::Eq => "=",
            Self::Ne => "!=",
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Gt => ">",
            Self::Ge => ">=",
            Self::Regex => "=~",
            Self::NotRegex => "!~",
            Self::And => "&&",
            Self::Or => "||",
        }
    }

    pub fn is_arithmetic(self) -> bool {
        matches!(
            self,
            Self::Add | Self::Sub | Self::Mul | Self::Div | Self::Mod | Self::Pow
        )
    }

    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            Self::Eq | Self::Ne | Self::Lt | Self::Le | Self::Gt | Self::Ge
        )
    }
}

/// An expression over one span: inside `{ }`, `by()` and aggregates.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldExpr {
    Value(Value),
    Field(Field),
    Binary(BinaryOp, Box<FieldExpr>, Box<FieldExpr>),
    Negate(Box<FieldExpr>),
    Not(Box<FieldExpr>),
    /// `x != nil`.
    Exists(Box<FieldExpr>),
    /// `x = nil`.
    NotExists(Box<FieldExpr>),
}

impl FieldExpr {
    /// Calls `visit` on every field the expression reads.
    pub fn fields<'a>(&'a self, visit: &mut impl FnMut(&'a Field)) {
        match self {
            Self::Value(_) => {}
            Self::Field(field) => visit(field),
            Self::Binary(_, left, right) => {
                left.fields(visit);
                right.fields(visit);
            }
            Self::Negate(inner)
            | Self::Not(inner)
            | Self::Exists(inner)
            | Self::NotExists(inner) => inner.fields(visit),
        }
    }

    /// Whether the expression reads the span at all.
    pub fn reads_span(&self) -> bool {
        let mut any = false;
        self.fields(&mut |_| any = true);
        any
    }
}

/// How two spansets combine (`{a} op {b}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpansetOp {
    /// `&&`: both non-empty; their spans.
    And,
    /// `||`: the spans of either.
    Union,
    /// `>`: right spans whose parent is a left span.
    Child,
    /// `<`: right spans that are the parent of a left span.
    Parent,
    /// `>>`: right spans with an ancestor among the left.
    Descendant,
    /// `<<`: right spans with a descendant among the left.
    Ancestor,
    /// `~`: right spans with a sibling among the left.
    Sibling,
    NotChild,
    NotParent,
    NotDescendant,
    NotAncestor,
    NotSibling,
    /// `&>`: both sides' spans that stand in the relation.
    UnionChild,
    UnionParent,
    UnionDescendant,
    UnionAncestor,
    UnionSibling,
}

/// Spanset expressions.
#[derive(Debug, Clone, PartialEq)]
pub enum Spansets {
    /// `{ expr }`; `None` for `{}` (every span).
    Filter(Option<FieldExpr>),
    Op(SpansetOp, Box<Spansets>, Box<Spansets>),
    /// `( pipeline )`: the spans of the spansets it keeps.
    Pipeline(Box<Pipeline>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    Count,
    Avg,
    Min,
    Max,
    Sum,
}

impl Aggregate {
    pub fn name(self) -> &'static str {
        match self {
            Self::Count => "count",
            Self::Avg => "avg",
            Self::Min => "min",
            Self::Max => "max",
            Self::Sum => "sum",
        }
    }
}

pub use crate::syntax::Comparison;

/// `count() > 2`, `avg(duration) > 1s`: keeps the spansets whose
/// aggregate compares true.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalarFilter {
    pub aggregate: Aggregate,
    /// `None` for `count()`.
    pub argument: Option<FieldExpr>,
    pub comparison: Comparison,
    /// Durations in nanoseconds.
    pub value: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Stage {
    Spansets(Spansets),
    Filter(ScalarFilter),
    By(FieldExpr),
    Coalesce,
    Select(Vec<Field>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    pub stages: Vec<Stage>,
}

/// The first stage of a metrics query.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricsFunction {
    Rate,
    CountOverTime,
    MinOverTime(Field),
    MaxOverTime(Field),
    SumOverTime(Field),
    AvgOverTime(Field),
    QuantileOverTime(Field, Vec<f64>),
    HistogramOverTime(Field),
    /// `compare({selection}, topN, start, end)`: start and end in
    /// nanoseconds, 0 for the query's own range.
    Compare {
        selection: Option<FieldExpr>,
        top: usize,
        start_ns: i64,
        end_ns: i64,
    },
}

impl MetricsFunction {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Rate => "rate",
            Self::CountOverTime => "count_over_time",
            Self::MinOverTime(_) => "min_over_time",
            Self::MaxOverTime(_) => "max_over_time",
            Self::SumOverTime(_) => "sum_over_time",
            Self::AvgOverTime(_) => "avg_over_time",
            Self::QuantileOverTime(..) => "quantile_over_time",
            Self::HistogramOverTime(_) => "histogram_over_time",
            Self::Compare { .. } => "compare",
        }
    }
}

/// `| topk(n)`, `| bottomk(n)`, `> 10` after a metrics query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SecondStage {
    TopK(usize),
    BottomK(usize),
    Filter(Comparison, f64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MathOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl MathOp {
    pub fn apply(self, left: f64, right: f64) -> f64 {
        match self {
            Self::Add => left + right,
            Self::Sub => left - right,
            Self::Mul => left * right,
            Self::Div => left / right,
        }
    }
}

/// One metrics query: spans chosen by `pipeline`, aggregated per step.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsQuery {
    pub pipeline: Pipeline,
    pub function: MetricsFunction,
    pub by: Vec<Field>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MetricsExpr {
    Query(Box<MetricsQuery>),
    /// Series of both sides with the same labels, combined per sample.
    Math(MathOp, Box<MetricsExpr>, Box<MetricsExpr>),
    /// Each sample combined with a number; `scalar_first` for `2 * (...)`.
    Scalar {
        op: MathOp,
        scalar: f64,
        expr: Box<MetricsExpr>,
        scalar_first: bool,
    },
    Staged(Box<MetricsExpr>, Vec<SecondStage>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Search(Pipeline),
    Metrics(MetricsExpr),
}

/// `with(name = value, ...)`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hints {
    pub values: Vec<(String, Value)>,
}

impl Hints {
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.values
            .iter()
            .find(|(known, _)| known == name)
            .map(|(_, value)| value)
    }

    /// `with(most_recent=true)`.
    pub fn most_recent(&self) -> bool {
        matches!(self.get("most_recent"), Some(Value::Bool(true)))
    }
}

/// A parsed TraceQL query.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub body: Body,
    pub hints: Hints,
}

//! Evaluates a checked TraceQL query on one trace in memory, with Tempo's
//! semantics.
//!
//! - A filter `{ expr }` keeps the spans of its input where `expr` is
//!   true. Fields that read events or links (`event.x`, `event:name`,
//!   `link.x`, ...) make the filter true when it holds for some event
//!   (some link) of the span; a span without events reads them as nil.
//! - Values compare within their kind: numbers (int, float and duration
//!   as nanoseconds) with numbers, strings with strings, booleans, status
//!   and kind by equality. A comparison with a missing value is false, but
//!   for `= nil` / `!= nil`. `=~`/`!~` are fully anchored. Integer
//!   arithmetic stays integer (`/` truncates); with a float it is float.
//! - Spanset relations use the nested-set numbering Tempo stores
//!   ([`TraceRows`]): roots are siblings of each other; an orphan (its
//!   parent is not in the trace) and all below it take no part in any
//!   relation, so they never match `>> > << < ~` nor their union forms,
//!   and always match the negated ones. `A op B` answers spans of B (the
//!   union forms both sides); `&&` needs both sides and answers both.
//! - Pipelines work on spansets: `by(expr)` splits each by the value's
//!   type and value (int 1, float 1.0 and string "1" are three groups;
//!   spans without it form a `nil` group), in order of first appearance;
//!   `coalesce()` merges them and drops their attributes; `count()` and
//!   `avg/min/max/sum(expr)` keep the spansets whose value compares true
//!   and report the value as a spanset attribute (`count()`,
//!   `avg(duration)`); `select(...)` adds fields to the spans answered.

use std::collections::HashMap;
use std::fmt;

use super::ast::*;
use super::check::Checked;

/// An attribute value as read from storage.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// Nanoseconds; answered as Go prints durations (`1.5s`).
    Duration(i64),
}

impl AttrValue {
    /// The value as text (tag values, labels).
    pub fn render(&self) -> String {
        match self {
            Self::Text(text) => text.clone(),
            Self::Int(int) => int.to_string(),
            Self::Float(float) => float.to_string(),
            Self::Bool(flag) => flag.to_string(),
            Self::Duration(nanos) => go_duration(*nanos),
        }
    }
}

/// A duration as Go's `time.Duration.String()` prints it: `1.5s`,
/// `2m30s`, `150ms`, `0s`.
pub fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let magnitude = nanos.unsigned_abs();
    if magnitude < 1_000_000_000 {
        let (unit, scale) = if magnitude < 1_000 {
            ("ns", 1)
        } else if magnitude < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{sign}{}{unit}", decimal(magnitude, scale));
    }
    let hours = magnitude / 3_600_000_000_000;
    let minutes = magnitude / 60_000_000_000 % 60;
    let seconds = decimal(magnitude % 60_000_000_000, 1_000_000_000);
    if hours > 0 {
        format!("{sign}{hours}h{minutes}m{seconds}s")
    } else if minutes > 0 {
        format!("{sign}{minutes}m{seconds}s")
    } else {
        format!("{sign}{seconds}s")
    }
}

fn decimal(value: u64, scale: u64) -> String {
    let whole = value / scale;
    let fraction = value % scale;
    if fraction == 0 {
        return whole.to_string();
    }
    let digits = scale.ilog10() as usize;
    let text = format!("{fraction:0digits$}");
    format!("{whole}.{}", text.trim_end_matches('0'))
}

/// One event of a span: its name, time and the event slots' values.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EventRow {
    pub name: String,
    pub time_ns: i64,
    pub values: Vec<Option<AttrValue>>,
}

/// One link of a span: its target and the link slots' values.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LinkRow {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub values: Vec<Option<AttrValue>>,
}

/// One span: the columns every query reads, one value per attribute
/// slot of the query ([`Checked::slots`]), and what events, links and
/// the instrumentation scope hold when the query reads them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SpanRow {
    pub span_id: [u8; 8],
    pub parent_id: Option<[u8; 8]>,
    pub name: String,
    pub service: String,
    pub kind: String,
    pub status: String,
    pub status_message: String,
    pub start_ns: i64,
    pub duration_ns: i64,
    pub values: Vec<Option<AttrValue>>,
    /// An X-Ray segment stored while in progress (stored again when it
    /// completes); metrics count a segment once it completes.
    pub in_progress: bool,
    pub scope_name: Option<String>,
    pub scope_version: Option<String>,
    pub events: Vec<EventRow>,
    pub links: Vec<LinkRow>,
    /// Every span and resource attribute, named `span.x` / `resource.x`;
    /// read only for `compare()`.
    pub attributes: Vec<(String, AttrValue)>,
}

impl SpanRow {
    pub fn end_ns(&self) -> i64 {
        self.start_ns.saturating_add(self.duration_ns)
    }
}

/// A span's place in the trace as Tempo numbers it: a depth-first walk
/// from the roots with one counter from 1 (left on the way down, right on
/// the way up), `parent` the parent's left, -1 for a root; all zero for
/// an orphan and everything below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NestedSet {
    pub left: i64,
    pub right: i64,
    pub parent: i64,
}

/// A trace's spans with the links between them.
#[derive(Debug)]
pub struct TraceRows {
    pub trace_id: [u8; 16],
    pub spans: Vec<SpanRow>,
    /// Index of each span's parent, when the parent is in the trace.
    parents: Vec<Option<usize>>,
    children: Vec<Vec<usize>>,
    pub nested: Vec<NestedSet>,
    /// The span with no parent id (the earliest if several).
    pub root: Option<usize>,
    pub start_ns: i64,
    pub end_ns: i64,
}

impl TraceRows {
    /// Builds the trace; the same span id stored twice (an X-Ray
    /// in-progress segment and the complete one) counts once, the one
    /// that ends later. `None` without spans.
    pub fn new(trace_id: [u8; 16], mut spans: Vec<SpanRow>) -> Option<Self> {
        spans.sort_by(|a, b| {
            (a.span_id, b.end_ns(), a.start_ns).cmp(&(b.span_id, a.end_ns(), b.start_ns))
        });
        spans.dedup_by(|later, kept| later.span_id == kept.span_id);
        spans.sort_by_key(|span| (span.start_ns, span.span_id));
        let start_ns = spans.iter().map(|span| span.start_ns).min()?;
        let end_ns = spans.iter().map(SpanRow::end_ns).max()?;
        let index: HashMap<[u8; 8], usize> = spans
            .iter()
            .enumerate()
            .map(|(position, span)| (span.span_id, position))
            .collect();
        let parents: Vec<Option<usize>> = spans
            .iter()
            .map(|span| {
                span.parent_id
                    .and_then(|parent| index.get(&parent).copied())
            })
            .collect();
        let mut children = vec![Vec::new(); spans.len()];
        for (child, parent) in parents.iter().enumerate() {
            if let Some(parent) = parent {
                children[*parent].push(child);
            }
        }
        let root = spans.iter().position(|span| span.parent_id.is_none());
        let nested = nested_sets(&spans, &children);
        Some(Self {
            trace_id,
            spans,
            parents,
            children,
            nested,
            root,
            start_ns,
            end_ns,
        })
    }

    pub fn root_span(&self) -> Option<&SpanRow> {
        self.root.map(|root| &self.spans[root])
    }

    fn rooted(&self, span: usize) -> bool {
        self.nested[span].left > 0
    }
}

/// Tempo's nested-set numbering (see [`NestedSet`]), children in start
/// order; iterative, so deep traces cannot exhaust the stack.
fn nested_sets(spans: &[SpanRow], children: &[Vec<usize>]) -> Vec<NestedSet> {
    let mut nested = vec![NestedSet::default(); spans.len()];
    let mut counter = 1i64;
    for root in (0..spans.len()).filter(|span| spans[*span].parent_id.is_none()) {
        nested[root].parent = -1;
        // (span, next child to visit)
        let mut stack = vec![(root, 0usize)];
        nested[root].left = counter;
        counter += 1;
        while let Some((span, next)) = stack.pop() {
            if let Some(&child) = children[span].get(next) {
                stack.push((span, next + 1));
                if nested[child].left == 0 {
                    nested[child].left = counter;
                    nested[child].parent = nested[span].left;
                    counter += 1;
                    stack.push((child, 0));
                }
            } else {
                nested[span].right = counter;
                counter += 1;
            }
        }
    }
    nested
}

/// A field's value on one span (and one of its events and links).
#[derive(Debug, Clone, PartialEq)]
enum Val<'a> {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Duration(i64),
    Text(std::borrow::Cow<'a, str>),
    Status(&'a str),
    Kind(&'a str),
}

impl Val<'_> {
    fn number(&self) -> Option<f64> {
        match self {
            Self::Int(int) => Some(*int as f64),
            Self::Float(float) => Some(*float),
            Self::Duration(nanos) => Some(*nanos as f64),
            _ => None,
        }
    }

    fn to_attr(&self) -> Option<AttrValue> {
        Some(match self {
            Self::Nil => return None,
            Self::Bool(flag) => AttrValue::Bool(*flag),
            Self::Int(int) => AttrValue::Int(*int),
            Self::Float(float) => AttrValue::Float(*float),
            Self::Duration(nanos) => AttrValue::Duration(*nanos),
            Self::Text(text) => AttrValue::Text(text.to_string()),
            Self::Status(text) | Self::Kind(text) => AttrValue::Text(text.to_string()),
        })
    }
}

fn from_attr(value: &AttrValue) -> Val<'_> {
    match value {
        AttrValue::Text(text) => Val::Text(std::borrow::Cow::Borrowed(text)),
        AttrValue::Int(int) => Val::Int(*int),
        AttrValue::Float(float) => Val::Float(*float),
        AttrValue::Bool(flag) => Val::Bool(*flag),
        AttrValue::Duration(nanos) => Val::Duration(*nanos),
    }
}

/// A literal as a value (statics borrow the query, so text is copied).
fn static_value(value: &Value) -> Val<'static> {
    match value {
        Value::Text(text) => Val::Text(std::borrow::Cow::Owned(text.clone())),
        Value::Int(int) => Val::Int(*int),
        Value::Float(float) => Val::Float(*float),
        Value::Bool(flag) => Val::Bool(*flag),
        Value::Duration(nanos) => Val::Duration(*nanos),
        Value::Status(status) => Val::Status(status_name(status)),
        Value::Kind(kind) => Val::Kind(kind_name(kind)),
        Value::Nil => Val::Nil,
    }
}

/// Where fields are read: a span, and the event and link in view.
#[derive(Clone, Copy)]
struct At {
    span: usize,
    event: Option<usize>,
    link: Option<usize>,
}

/// A spanset that survived the pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct SpansetMatch {
    /// Indexes into [`TraceRows::spans`], by start time.
    pub spans: Vec<usize>,
    /// What the pipeline reported on it: `by(...)` groups, aggregates.
    pub attributes: Vec<(String, AttrValue)>,
}

/// A membership mask over a trace's spans.
type Mask = Vec<bool>;

impl fmt::Display for FieldExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let operand = |f: &mut fmt::Formatter<'_>, expr: &FieldExpr| match expr {
            FieldExpr::Binary(..) => write!(f, "({expr})"),
            _ => write!(f, "{expr}"),
        };
        match self {
            Self::Value(Value::Text(text)) => write!(f, "{text:?}"),
            Self::Value(Value::Int(int)) => write!(f, "{int}"),
            Self::Value(Value::Float(float)) => write!(f, "{float}"),
            Self::Value(Value::Bool(flag)) => write!(f, "{flag}"),
            Self::Value(Value::Duration(nanos)) => f.write_str(&go_duration(*nanos)),
            Self::Value(Value::Status(text) | Value::Kind(text)) => f.write_str(text),
            Self::Value(Value::Nil) => f.write_str("nil"),
            Self::Field(field) => write!(f, "{field}"),
            Self::Binary(op, left, right) => {
                operand(f, left)?;
                write!(f, " {} ", op.text())?;
                operand(f, right)
            }
            Self::Negate(inner) => {
                f.write_str("-")?;
                operand(f, inner)
            }
            Self::Not(inner) => {
                f.write_str("!")?;
                operand(f, inner)
            }
            Self::Exists(inner) => {
                operand(f, inner)?;
                f.write_str(" != nil")
            }
            Self::NotExists(inner) => {
                operand(f, inner)?;
                f.write_str(" = nil")
            }
        }
    }
}

impl Checked {
    /// The spansets of `trace` the search pipeline selects; empty when it
    /// does not match (and for metrics queries).
    pub fn evaluate(&self, trace: &TraceRows) -> Vec<SpansetMatch> {
        match self.pipeline() {
            Some(pipeline) => self.run_pipeline(pipeline, trace),
            None => Vec::new(),
        }
    }

    /// Runs `pipeline` on the whole trace.
    pub fn run_pipeline(&self, pipeline: &Pipeline, trace: &TraceRows) -> Vec<SpansetMatch> {
        let everything = SpansetMatch {
            spans: (0..trace.spans.len()).collect(),
            attributes: Vec::new(),
        };
        let mut sets = self.stages(pipeline, vec![everything], trace);
        sets.retain(|set| !set.spans.is_empty());
        sets
    }

    fn stages(
        &self,
        pipeline: &Pipeline,
        mut sets: Vec<SpansetMatch>,
        trace: &TraceRows,
    ) -> Vec<SpansetMatch> {
        for stage in &pipeline.stages {
            sets = match stage {
                Stage::Spansets(spansets) => sets
                    .into_iter()
                    .filter_map(|set| {
                        let mut universe = vec![false; trace.spans.len()];
                        for span in &set.spans {
                            universe[*span] = true;
                        }
                        let mask = self.spansets(spansets, &universe, trace);
                        let spans: Vec<usize> = set
                            .spans
                            .iter()
                            .copied()
                            .filter(|span| mask[*span])
                            .collect();
                        (!spans.is_empty()).then_some(SpansetMatch {
                            spans,
                            attributes: set.attributes,
                        })
                    })
                    .collect(),
                Stage::Filter(filter) => sets
                    .into_iter()
                    .filter_map(|mut set| {
                        let value = self.aggregate(filter, &set, trace)?;
                        let number = value.number()?;
                        if !filter.comparison.holds(number.partial_cmp(&filter.value)) {
                            return None;
                        }
                        let name = match &filter.argument {
                            Some(argument) => format!("{}({argument})", filter.aggregate.name()),
                            None => format!("{}()", filter.aggregate.name()),
                        };
                        set.attributes.push((name, value.to_attr()?));
                        Some(set)
                    })
                    .collect(),
                Stage::By(expr) => self.group_by(expr, sets, trace),
                Stage::Coalesce => {
                    let mut spans: Vec<usize> =
                        sets.into_iter().flat_map(|set| set.spans).collect();
                    spans.sort_unstable_by_key(|span| (trace.spans[*span].start_ns, *span));
                    spans.dedup();
                    vec![SpansetMatch {
                        spans,
                        attributes: Vec::new(),
                    }]
                }
                Stage::Select(_) => sets,
            };
            if sets.is_empty() {
                break;
            }
        }
        sets
    }

    fn aggregate<'t>(
        &self,
        filter: &ScalarFilter,
        set: &SpansetMatch,
        trace: &'t TraceRows,
    ) -> Option<Val<'t>> {
        let Some(argument) = &filter.argument else {
            return Some(Val::Int(set.spans.len() as i64));
        };
        let values: Vec<Val<'_>> = set
            .spans
            .iter()
            .map(|span| self.value(argument, trace, span_at(*span)))
            .filter(|value| value.number().is_some())
            .collect();
        if values.is_empty() {
            return None;
        }
        let all_int = values.iter().all(|value| matches!(value, Val::Int(_)));
        let all_duration = values.iter().all(|value| matches!(value, Val::Duration(_)));
        let numbers: Vec<f64> = values.iter().filter_map(Val::number).collect();
        let sum: f64 = numbers.iter().sum();
        let result = match filter.aggregate {
            Aggregate::Count => return Some(Val::Int(set.spans.len() as i64)),
            Aggregate::Sum => sum,
            Aggregate::Avg => {
                let average = sum / numbers.len() as f64;
                return Some(if all_duration {
                    Val::Duration(average as i64)
                } else {
                    Val::Float(average)
                });
            }
            Aggregate::Min => numbers.iter().copied().fold(f64::INFINITY, f64::min),
            Aggregate::Max => numbers.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        };
        Some(if all_duration {
            Val::Duration(result as i64)
        } else if all_int {
            Val::Int(result as i64)
        } else {
            Val::Float(result)
        })
    }

    fn group_by(
        &self,
        expr: &FieldExpr,
        sets: Vec<SpansetMatch>,
        trace: &TraceRows,
    ) -> Vec<SpansetMatch> {
        let name = format!("by({expr})");
        let mut out = Vec::new();
        for set in sets {
            let mut groups: Vec<(Option<AttrValue>, SpansetMatch)> = Vec::new();
            for span in &set.spans {
                let key = self.value(expr, trace, span_at(*span)).to_attr();
                let position = groups.iter().position(|(known, _)| same_group(known, &key));
                let index = match position {
                    Some(index) => index,
                    None => {
                        let mut attributes = set.attributes.clone();
                        attributes.push((
                            name.clone(),
                            key.clone().unwrap_or(AttrValue::Text("nil".into())),
                        ));
                        groups.push((
                            key,
                            SpansetMatch {
                                spans: Vec::new(),
                                attributes,
                            },
                        ));
                        groups.len() - 1
                    }
                };
                groups[index].1.spans.push(*span);
            }
            out.extend(groups.into_iter().map(|(_, group)| group));
        }
        out
    }

    /// The spans of `universe` that `spansets` selects.
    fn spansets(&self, spansets: &Spansets, universe: &[bool], trace: &TraceRows) -> Mask {
        let count = trace.spans.len();
        match spansets {
            Spansets::Filter(None) => universe.to_vec(),
            Spansets::Filter(Some(expr)) => (0..count)
                .map(|span| universe[span] && self.matches(expr, trace, span))
                .collect(),
            Spansets::Pipeline(pipeline) => {
                let input = SpansetMatch {
                    spans: (0..count).filter(|span| universe[*span]).collect(),
                    attributes: Vec::new(),
                };
                let mut mask = vec![false; count];
                for set in self.stages(pipeline, vec![input], trace) {
                    for span in set.spans {
                        mask[span] = true;
                    }
                }
                mask
            }
            Spansets::Op(op, left, right) => {
                let left = self.spansets(left, universe, trace);
                let right = self.spansets(right, universe, trace);
                relate(*op, &left, &right, trace)
            }
        }
    }

    /// Whether the filter holds for `span` (for some event and link, when
    /// it reads them).
    pub(super) fn matches(&self, expr: &FieldExpr, trace: &TraceRows, span: usize) -> bool {
        let row = &trace.spans[span];
        let events: Vec<Option<usize>> = if self.needs_events && !row.events.is_empty() {
            (0..row.events.len()).map(Some).collect()
        } else {
            vec![None]
        };
        let links: Vec<Option<usize>> = if self.needs_links && !row.links.is_empty() {
            (0..row.links.len()).map(Some).collect()
        } else {
            vec![None]
        };
        events.iter().any(|event| {
            links.iter().any(|link| {
                let at = At {
                    span,
                    event: *event,
                    link: *link,
                };
                self.value(expr, trace, at) == Val::Bool(true)
            })
        })
    }

    fn value<'t>(&self, expr: &FieldExpr, trace: &'t TraceRows, at: At) -> Val<'t> {
        match expr {
            FieldExpr::Value(value) => static_value(value),
            FieldExpr::Field(field) => self.field(field, trace, at),
            FieldExpr::Negate(inner) => match self.value(inner, trace, at) {
                Val::Int(int) => int.checked_neg().map_or(Val::Nil, Val::Int),
                Val::Float(float) => Val::Float(-float),
                Val::Duration(nanos) => Val::Duration(-nanos),
                _ => Val::Nil,
            },
            FieldExpr::Not(inner) => match self.value(inner, trace, at) {
                Val::Bool(flag) => Val::Bool(!flag),
                _ => Val::Bool(false),
            },
            FieldExpr::Exists(inner) => Val::Bool(self.value(inner, trace, at) != Val::Nil),
            FieldExpr::NotExists(inner) => Val::Bool(self.value(inner, trace, at) == Val::Nil),
            FieldExpr::Binary(op, left, right) => {
                let left_value = self.value(left, trace, at);
                match op {
                    BinaryOp::And if left_value != Val::Bool(true) => return Val::Bool(false),
                    BinaryOp::Or if left_value == Val::Bool(true) => return Val::Bool(true),
                    _ => {}
                }
                let right_value = self.value(right, trace, at);
                self.binary(*op, left_value, right_value, right)
            }
        }
    }

    fn binary<'t>(
        &self,
        op: BinaryOp,
        left: Val<'t>,
        right: Val<'t>,
        pattern: &FieldExpr,
    ) -> Val<'t> {
        use std::cmp::Ordering;
        match op {
            BinaryOp::And | BinaryOp::Or => Val::Bool(right == Val::Bool(true)),
            BinaryOp::Regex | BinaryOp::NotRegex => {
                let (Val::Text(text), Val::Text(literal)) = (&left, &right) else {
                    return Val::Bool(false);
                };
                let matched = match (pattern, self.regexes.get(literal.as_ref())) {
                    (FieldExpr::Value(_), Some(regex)) => regex.is_match(text),
                    _ => super::check::compile(literal).is_ok_and(|regex| regex.is_match(text)),
                };
                Val::Bool(matched == (op == BinaryOp::Regex))
            }
            op if op.is_arithmetic() => arithmetic(op, &left, &right),
            _ => {
                let comparison = match op {
                    BinaryOp::Eq => Comparison::Eq,
                    BinaryOp::Ne => Comparison::Ne,
                    BinaryOp::Lt => Comparison::Lt,
                    BinaryOp::Le => Comparison::Le,
                    BinaryOp::Gt => Comparison::Gt,
                    _ => Comparison::Ge,
                };
                let ordering: Option<Ordering> = match (&left, &right) {
                    (Val::Int(a), Val::Int(b)) => Some(a.cmp(b)),
                    (Val::Text(a), Val::Text(b)) => Some(a.cmp(b)),
                    (Val::Status(a), Val::Status(b)) | (Val::Kind(a), Val::Kind(b))
                        if matches!(comparison, Comparison::Eq | Comparison::Ne) =>
                    {
                        Some(a.cmp(b))
                    }
                    (Val::Bool(a), Val::Bool(b))
                        if matches!(comparison, Comparison::Eq | Comparison::Ne) =>
                    {
                        Some(a.cmp(b))
                    }
                    (a, b) => match (a.number(), b.number()) {
                        (Some(a), Some(b)) => a.partial_cmp(&b),
                        _ => None,
                    },
                };
                Val::Bool(comparison.holds(ordering))
            }
        }
    }

    fn field<'t>(&self, field: &Field, trace: &'t TraceRows, at: At) -> Val<'t> {
        let row = &trace.spans[at.span];
        let text = |value: &'t str| Val::Text(std::borrow::Cow::Borrowed(value));
        let owned = |value: String| Val::Text(std::borrow::Cow::Owned(value));
        let slot_value = |values: &'t [Option<AttrValue>], slot: Option<usize>| {
            slot.and_then(|slot| values.get(slot)?.as_ref())
                .map_or(Val::Nil, from_attr)
        };
        match field {
            Field::Attribute { scope, name } => match scope {
                Scope::Resource if name == super::SERVICE_NAME => text(&row.service),
                Scope::Event => match at.event {
                    Some(event) => slot_value(&row.events[event].values, self.event_slot(name)),
                    None => Val::Nil,
                },
                Scope::Link => match at.link {
                    Some(link) => slot_value(&row.links[link].values, self.link_slot(name)),
                    None => Val::Nil,
                },
                Scope::Any if name == super::SERVICE_NAME => {
                    match slot_value(&row.values, self.slot(*scope, name)) {
                        Val::Nil => text(&row.service),
                        found => found,
                    }
                }
                _ => slot_value(&row.values, self.slot(*scope, name)),
            },
            Field::Intrinsic(intrinsic) => match intrinsic {
                Intrinsic::Name => text(&row.name),
                Intrinsic::Status => Val::Status(status_name(&row.status)),
                Intrinsic::Kind => Val::Kind(kind_name(&row.kind)),
                Intrinsic::Duration => Val::Duration(row.duration_ns),
                Intrinsic::StatusMessage => text(&row.status_message),
                Intrinsic::RootName => trace.root_span().map_or(Val::Nil, |root| text(&root.name)),
                Intrinsic::RootServiceName => trace
                    .root_span()
                    .map_or(Val::Nil, |root| text(&root.service)),
                Intrinsic::TraceDuration => {
                    Val::Duration(trace.end_ns.saturating_sub(trace.start_ns))
                }
                Intrinsic::TraceId => owned(hex::encode(trace.trace_id)),
                Intrinsic::SpanId => owned(hex::encode(row.span_id)),
                Intrinsic::ParentId => row.parent_id.map_or(Val::Nil, |id| owned(hex::encode(id))),
                Intrinsic::ChildCount => Val::Int(trace.children[at.span].len() as i64),
                Intrinsic::EventName => at
                    .event
                    .map_or(Val::Nil, |event| text(&row.events[event].name)),
                Intrinsic::EventTimeSinceStart => at.event.map_or(Val::Nil, |event| {
                    Val::Duration(row.events[event].time_ns.saturating_sub(row.start_ns))
                }),
                Intrinsic::LinkTraceId => at.link.map_or(Val::Nil, |link| {
                    owned(hex::encode(row.links[link].trace_id))
                }),
                Intrinsic::LinkSpanId => at
                    .link
                    .map_or(Val::Nil, |link| owned(hex::encode(row.links[link].span_id))),
                Intrinsic::InstrumentationName => row.scope_name.as_deref().map_or(Val::Nil, text),
                Intrinsic::InstrumentationVersion => {
                    row.scope_version.as_deref().map_or(Val::Nil, text)
                }
                Intrinsic::NestedSetLeft => Val::Int(trace.nested[at.span].left),
                Intrinsic::NestedSetRight => Val::Int(trace.nested[at.span].right),
                Intrinsic::NestedSetParent => Val::Int(trace.nested[at.span].parent),
            },
        }
    }

    /// `field` of `span` (of its first event or link that has it, for
    /// event and link fields); `None` when missing.
    pub fn field_value(&self, field: &Field, trace: &TraceRows, span: usize) -> Option<AttrValue> {
        let row = &trace.spans[span];
        let count = match field {
            Field::Attribute {
                scope: Scope::Event,
                ..
            }
            | Field::Intrinsic(Intrinsic::EventName | Intrinsic::EventTimeSinceStart) => {
                row.events.len()
            }
            Field::Attribute {
                scope: Scope::Link, ..
            }
            | Field::Intrinsic(Intrinsic::LinkSpanId | Intrinsic::LinkTraceId) => row.links.len(),
            _ => return self.field(field, trace, span_at(span)).to_attr(),
        };
        (0..count).find_map(|position| {
            let at = At {
                span,
                event: Some(position),
                link: Some(position),
            };
            self.field(field, trace, at).to_attr()
        })
    }

    /// What `compare()` breaks a span down by: its attributes and the
    /// intrinsics `name`, `status`, `kind`, `statusMessage` (when set) and
    /// `resource.service.name`.
    pub fn comparable_attributes(
        &self,
        span: usize,
        trace: &TraceRows,
    ) -> Vec<(String, AttrValue)> {
        let row = &trace.spans[span];
        let mut out = vec![
            ("name".to_string(), AttrValue::Text(row.name.clone())),
            (
                "status".to_string(),
                AttrValue::Text(status_name(&row.status).into()),
            ),
            (
                "kind".to_string(),
                AttrValue::Text(kind_name(&row.kind).into()),
            ),
            (
                "resource.service.name".to_string(),
                AttrValue::Text(row.service.clone()),
            ),
        ];
        if !row.status_message.is_empty() {
            out.push((
                "statusMessage".to_string(),
                AttrValue::Text(row.status_message.clone()),
            ));
        }
        for (name, value) in &row.attributes {
            if !out.iter().any(|(known, _)| known == name) {
                out.push((name.clone(), value.clone()));
            }
        }
        out
    }

    /// The attributes a matched span is answered with: the filters' and
    /// selected fields it has, named as Tempo answers them (scope left
    /// off), and `service.name`.
    pub fn span_attributes(&self, span: usize, trace: &TraceRows) -> Vec<(String, AttrValue)> {
        let mut out: Vec<(String, AttrValue)> = Vec::new();
        for (name, field) in &self.answered {
            let reads_many = matches!(
                field,
                Field::Attribute {
                    scope: Scope::Event | Scope::Link,
                    ..
                } | Field::Intrinsic(
                    Intrinsic::EventName
                        | Intrinsic::EventTimeSinceStart
                        | Intrinsic::LinkSpanId
                        | Intrinsic::LinkTraceId
                )
            );
            let row = &trace.spans[span];
            let positions = if reads_many {
                let count = match field {
                    Field::Attribute {
                        scope: Scope::Link, ..
                    }
                    | Field::Intrinsic(Intrinsic::LinkSpanId | Intrinsic::LinkTraceId) => {
                        row.links.len()
                    }
                    _ => row.events.len(),
                };
                (0..count).map(Some).collect()
            } else {
                vec![None]
            };
            // Of several events (links), the first that has the field.
            let value = positions.into_iter().find_map(|position| {
                let at = At {
                    span,
                    event: position,
                    link: position,
                };
                self.field(field, trace, at).to_attr()
            });
            if let Some(value) = value {
                out.push((name.clone(), value));
            }
        }
        if !out.iter().any(|(name, _)| name == "service.name") {
            out.push((
                "service.name".into(),
                AttrValue::Text(trace.spans[span].service.clone()),
            ));
        }
        out
    }
}

/// The status names as `'static` text.
fn status_name(status: &str) -> &'static str {
    match status {
        "error" => "error",
        "ok" => "ok",
        _ => "unset",
    }
}

fn kind_name(kind: &str) -> &'static str {
    match kind {
        "server" => "server",
        "client" => "client",
        "producer" => "producer",
        "consumer" => "consumer",
        "internal" => "internal",
        _ => "unspecified",
    }
}

fn span_at(span: usize) -> At {
    At {
        span,
        event: None,
        link: None,
    }
}

/// `by()` keys: equal type and value; nil with nil.
fn same_group(a: &Option<AttrValue>, b: &Option<AttrValue>) -> bool {
    match (a, b) {
        (Some(AttrValue::Float(a)), Some(AttrValue::Float(b))) => a.to_bits() == b.to_bits(),
        _ => a == b,
    }
}

fn arithmetic<'t>(op: BinaryOp, left: &Val<'_>, right: &Val<'_>) -> Val<'t> {
    match (left, right) {
        (Val::Int(a), Val::Int(b)) => {
            let result = match op {
                BinaryOp::Add => a.checked_add(*b),
                BinaryOp::Sub => a.checked_sub(*b),
                BinaryOp::Mul => a.checked_mul(*b),
                BinaryOp::Div => a.checked_div(*b),
                BinaryOp::Mod => a.checked_rem(*b),
                _ => u32::try_from(*b).ok().and_then(|b| a.checked_pow(b)),
            };
            result.map_or(Val::Nil, Val::Int)
        }
        (a, b) => {
            let (Some(x), Some(y)) = (a.number(), b.number()) else {
                return Val::Nil;
            };
            let result = match op {
                BinaryOp::Add => x + y,
                BinaryOp::Sub => x - y,
                BinaryOp::Mul => x * y,
                BinaryOp::Div => x / y,
                BinaryOp::Mod => x % y,
                _ => x.powf(y),
            };
            let float = matches!(a, Val::Float(_)) || matches!(b, Val::Float(_));
            let duration = matches!(a, Val::Duration(_)) || matches!(b, Val::Duration(_));
            if !float && duration && result.is_finite() && result.abs() < 9.2e18 {
                Val::Duration(result as i64)
            } else {
                Val::Float(result)
            }
        }
    }
}

/// `left op right` over the trace (module docs).
fn relate(op: SpansetOp, left: &[bool], right: &[bool], trace: &TraceRows) -> Mask {
    let count = trace.spans.len();
    let or = |a: &[bool], b: &[bool]| -> Mask { a.iter().zip(b).map(|(a, b)| *a || *b).collect() };
    let negate = |related: Mask| -> Mask {
        (0..count)
            .map(|span| right[span] && !related[span])
            .collect()
    };
    match op {
        SpansetOp::And => {
            if left.contains(&true) && right.contains(&true) {
                or(left, right)
            } else {
                vec![false; count]
            }
        }
        SpansetOp::Union => or(left, right),
        SpansetOp::Child => children_of(left, right, trace),
        SpansetOp::Parent => parents_of(left, right, trace),
        SpansetOp::Descendant => descendants_of(left, right, trace),
        SpansetOp::Ancestor => ancestors_of(left, right, trace),
        SpansetOp::Sibling => siblings_of(left, right, trace),
        SpansetOp::NotChild => negate(children_of(left, right, trace)),
        SpansetOp::NotParent => negate(parents_of(left, right, trace)),
        SpansetOp::NotDescendant => negate(descendants_of(left, right, trace)),
        SpansetOp::NotAncestor => negate(ancestors_of(left, right, trace)),
        SpansetOp::NotSibling => negate(siblings_of(left, right, trace)),
        SpansetOp::UnionChild => or(
            &children_of(left, right, trace),
            &parents_of(right, left, trace),
        ),
        SpansetOp::UnionParent => or(
            &parents_of(left, right, trace),
            &children_of(right, left, trace),
        ),
        SpansetOp::UnionDescendant => or(
            &descendants_of(left, right, trace),
            &ancestors_of(right, left, trace),
        ),
        SpansetOp::UnionAncestor => or(
            &ancestors_of(left, right, trace),
            &descendants_of(right, left, trace),
        ),
        SpansetOp::UnionSibling => or(
            &siblings_of(left, right, trace),
            &siblings_of(right, left, trace),
        ),
    }
}

/// Spans of `right` whose parent is in `left`.
fn children_of(left: &[bool], right: &[bool], trace: &TraceRows) -> Mask {
    (0..trace.spans.len())
        .map(|span| {
            right[span]
                && trace.rooted(span)
                && trace.parents[span].is_some_and(|parent| left[parent] && trace.rooted(parent))
        })
        .collect()
}

/// Spans of `right` that are the parent of a span in `left`.
fn parents_of(left: &[bool], right: &[bool], trace: &TraceRows) -> Mask {
    let mut out = vec![false; trace.spans.len()];
    for span in (0..trace.spans.len()).filter(|span| left[*span] && trace.rooted(*span)) {
        if let Some(parent) = trace.parents[span]
            && right[parent]
        {
            out[parent] = true;
        }
    }
    out
}

/// Spans of `right` with an ancestor in `left`.
fn descendants_of(left: &[bool], right: &[bool], trace: &TraceRows) -> Mask {
    // below[span]: some strict ancestor is in `left`. Parents start
    // earlier than their children only usually, so walk from the roots.
    let count = trace.spans.len();
    let mut below = vec![false; count];
    let mut stack: Vec<usize> = (0..count)
        .filter(|span| trace.nested[*span].parent == -1)
        .collect();
    while let Some(span) = stack.pop() {
        for &child in &trace.children[span] {
            if trace.rooted(child) {
                below[child] = below[span] || left[span];
                stack.push(child);
            }
        }
    }
    (0..count).map(|span| right[span] && below[span]).collect()
}

/// Spans of `right` with a descendant in `left`.
fn ancestors_of(left: &[bool], right: &[bool], trace: &TraceRows) -> Mask {
    let count = trace.spans.len();
    let mut above = vec![false; count];
    for span in (0..count).filter(|span| left[*span] && trace.rooted(*span)) {
        let mut current = trace.parents[span];
        while let Some(parent) = current {
            if above[parent] {
                break;
            }
            above[parent] = true;
            current = trace.parents[parent];
        }
    }
    (0..count)
        .map(|span| right[span] && above[span] && trace.rooted(span))
        .collect()
}

/// Spans of `right` with a sibling (same parent, roots all siblings, not
/// itself) in `left`.
fn siblings_of(left: &[bool], right: &[bool], trace: &TraceRows) -> Mask {
    let count = trace.spans.len();
    let mut left_per_parent: HashMap<i64, usize> = HashMap::new();
    for span in (0..count).filter(|span| left[*span] && trace.rooted(*span)) {
        *left_per_parent
            .entry(trace.nested[span].parent)
            .or_default() += 1;
    }
    (0..count)
        .map(|span| {
            if !right[span] || !trace.rooted(span) {
                return false;
            }
            let others = left_per_parent
                .get(&trace.nested[span].parent)
                .copied()
                .unwrap_or(0)
                - usize::from(left[span]);
            others > 0
        })
        .collect()
}

//! Evaluates a checked TraceQL query on one trace in memory.
//!
//! Semantics (Tempo's):
//! - `{ cond }` is the set of the trace's spans where `cond` holds; a
//!   trace matches when the final spanset is not empty.
//! - `A && B`: both non-empty, then their union; `A || B`: the union.
//!   `A >> B`: spans of B with an ancestor in A; `A > B`: spans of B whose
//!   parent is in A; `A ~ B`: spans of B with a sibling (same parent,
//!   another span) in A.
//! - A comparison is false when the field is absent (`!= "x"` included),
//!   except `= nil` (absent) and `!= nil` (present). Values compare only
//!   with their own type: text with text, numbers (int and float mixed)
//!   with numbers, booleans with booleans; [`super::check`] refuses the
//!   rest before evaluation. `=~`/`!~` are fully anchored (Prometheus
//!   style).
//! - Pipelines work on spansets: one per trace, split by `by(...)`;
//!   `count()` and `avg/min/max/sum(field)` keep the spansets whose value
//!   compares true; `select(...)` adds fields to the spans answered.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

use super::check::Checked;
use super::parse::{
    Aggregate, Condition, Field, Intrinsic, Operator, Scope, Spansets, Stage, Value,
};

/// An attribute value as read from storage.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl AttrValue {
    /// How `by()` groups and how values are listed: the value as text.
    pub fn render(&self) -> String {
        match self {
            Self::Text(text) => text.clone(),
            Self::Int(int) => int.to_string(),
            Self::Float(float) => float.to_string(),
            Self::Bool(flag) => flag.to_string(),
        }
    }
}

/// One span: the columns every query reads, and one value per attribute
/// slot of the query ([`Checked::slots`]).
#[derive(Debug, Clone, PartialEq)]
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
}

impl SpanRow {
    pub fn end_ns(&self) -> i64 {
        self.start_ns.saturating_add(self.duration_ns)
    }
}

/// A trace's spans with the links between them.
#[derive(Debug)]
pub struct TraceRows {
    pub trace_id: [u8; 16],
    pub spans: Vec<SpanRow>,
    /// Index of each span's parent, when the parent is in the trace.
    parents: Vec<Option<usize>>,
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
        let parents = spans
            .iter()
            .map(|span| {
                span.parent_id
                    .and_then(|parent| index.get(&parent).copied())
            })
            .collect();
        let root = spans.iter().position(|span| span.parent_id.is_none());
        Some(Self {
            trace_id,
            spans,
            parents,
            root,
            start_ns,
            end_ns,
        })
    }

    pub fn root_span(&self) -> Option<&SpanRow> {
        self.root.map(|root| &self.spans[root])
    }
}

/// A field's value on one span, borrowed.
#[derive(Debug, Clone, Copy)]
enum Operand<'a> {
    Text(&'a str),
    Int(i64),
    Float(f64),
    Bool(bool),
    Duration(i64),
    Status(&'a str),
    Kind(&'a str),
}

impl Operand<'_> {
    fn number(self) -> Option<f64> {
        match self {
            Self::Int(int) => Some(int as f64),
            Self::Float(float) => Some(float),
            Self::Duration(nanos) => Some(nanos as f64),
            _ => None,
        }
    }

    fn to_attr(self) -> AttrValue {
        match self {
            Self::Text(text) | Self::Status(text) | Self::Kind(text) => {
                AttrValue::Text(text.to_string())
            }
            Self::Int(int) | Self::Duration(int) => AttrValue::Int(int),
            Self::Float(float) => AttrValue::Float(float),
            Self::Bool(flag) => AttrValue::Bool(flag),
        }
    }
}

fn operand_of(value: &AttrValue) -> Operand<'_> {
    match value {
        AttrValue::Text(text) => Operand::Text(text),
        AttrValue::Int(int) => Operand::Int(*int),
        AttrValue::Float(float) => Operand::Float(*float),
        AttrValue::Bool(flag) => Operand::Bool(*flag),
    }
}

fn ordered(ordering: Option<Ordering>, op: Operator) -> bool {
    let Some(ordering) = ordering else {
        return false;
    };
    match op {
        Operator::Eq => ordering == Ordering::Equal,
        Operator::Ne => ordering != Ordering::Equal,
        Operator::Gt => ordering == Ordering::Greater,
        Operator::Ge => ordering != Ordering::Less,
        Operator::Lt => ordering == Ordering::Less,
        Operator::Le => ordering != Ordering::Greater,
        Operator::Regex | Operator::NotRegex => false,
    }
}

/// A spanset that survived the pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct SpansetMatch {
    /// Indexes into [`TraceRows::spans`], by start time.
    pub spans: Vec<usize>,
    /// `by(...)` values naming the group: `("by(field)", value)`.
    pub group: Vec<(String, AttrValue)>,
}

impl Checked {
    /// The spansets of `trace` the query selects; empty when it does not
    /// match.
    pub fn evaluate(&self, trace: &TraceRows) -> Vec<SpansetMatch> {
        let members = self.spansets(&self.query.spansets, trace);
        let selected: Vec<usize> = (0..trace.spans.len()).filter(|i| members[*i]).collect();
        if selected.is_empty() {
            return Vec::new();
        }
        let mut sets = vec![SpansetMatch {
            spans: selected,
            group: Vec::new(),
        }];
        for stage in &self.query.stages {
            sets = match stage {
                Stage::Count { op, value } => sets
                    .into_iter()
                    .filter(|set| ordered((set.spans.len() as f64).partial_cmp(value), *op))
                    .collect(),
                Stage::Aggregate {
                    aggregate,
                    field,
                    op,
                    value,
                } => sets
                    .into_iter()
                    .filter(|set| {
                        let Some(result) = self.aggregate(*aggregate, field, set, trace) else {
                            return false;
                        };
                        let target = Operand::Float(match value {
                            Value::Int(int) => *int as f64,
                            Value::Float(float) => *float,
                            Value::Duration(nanos) => *nanos as f64,
                            _ => return false,
                        });
                        ordered(
                            result.partial_cmp(&target.number().unwrap_or(f64::NAN)),
                            *op,
                        )
                    })
                    .collect(),
                Stage::By(fields) => self.group_by(fields, sets, trace),
                Stage::Select(_) => sets,
            };
        }
        sets.retain(|set| !set.spans.is_empty());
        sets
    }

    /// The fields `select(...)` asks for, in order.
    pub fn selected_fields(&self) -> Vec<&Field> {
        self.query
            .stages
            .iter()
            .filter_map(|stage| match stage {
                Stage::Select(fields) => Some(fields),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// The attributes a matched span is answered with: the conditions'
    /// attribute fields it has, then the selected fields, as
    /// `(name, value)` with the scope left off (Tempo's way).
    pub fn span_attributes(&self, span: usize, trace: &TraceRows) -> Vec<(String, AttrValue)> {
        let mut out: Vec<(String, AttrValue)> = self
            .answered
            .iter()
            .filter_map(|(name, field)| {
                let value = self.operand(field, span, trace)?.to_attr();
                Some((name.clone(), value))
            })
            .collect();
        if !out.iter().any(|(name, _)| name == "service.name") {
            out.push((
                "service.name".into(),
                AttrValue::Text(trace.spans[span].service.clone()),
            ));
        }
        out
    }

    /// The conditions' attribute fields (and status, kind), then the
    /// selected fields, named as Tempo answers them (scope left off), each
    /// name once; `name` and `duration` are answered as span fields.
    pub(super) fn answered_fields(&self) -> Vec<(String, Field)> {
        let mut out: Vec<(String, Field)> = Vec::new();
        for field in self
            .condition_fields()
            .into_iter()
            .chain(self.selected_fields())
        {
            let name = match field {
                Field::Attribute { name, .. } => name.clone(),
                Field::Intrinsic(Intrinsic::Name | Intrinsic::Duration) => continue,
                Field::Intrinsic(other) => intrinsic_name(*other).to_string(),
            };
            if !out.iter().any(|(known, _)| *known == name) {
                out.push((name, field.clone()));
            }
        }
        out
    }

    fn condition_fields(&self) -> Vec<&Field> {
        fn walk<'a>(condition: &'a Condition, out: &mut Vec<&'a Field>) {
            match condition {
                Condition::And(left, right) | Condition::Or(left, right) => {
                    walk(left, out);
                    walk(right, out);
                }
                Condition::Not(inner) => walk(inner, out),
                Condition::Compare { field, .. } | Condition::Truthy(field) => {
                    if matches!(field, Field::Attribute { .. })
                        || matches!(field, Field::Intrinsic(Intrinsic::Status | Intrinsic::Kind))
                    {
                        out.push(field);
                    }
                }
            }
        }
        fn in_spansets<'a>(spansets: &'a Spansets, out: &mut Vec<&'a Field>) {
            match spansets {
                Spansets::Filter(Some(condition)) => walk(condition, out),
                Spansets::Filter(None) => {}
                Spansets::And(left, right)
                | Spansets::Or(left, right)
                | Spansets::Descendant(left, right)
                | Spansets::Child(left, right)
                | Spansets::Sibling(left, right) => {
                    in_spansets(left, out);
                    in_spansets(right, out);
                }
            }
        }
        let mut out = Vec::new();
        in_spansets(&self.query.spansets, &mut out);
        out
    }

    fn spansets(&self, spansets: &Spansets, trace: &TraceRows) -> Vec<bool> {
        let count = trace.spans.len();
        match spansets {
            Spansets::Filter(None) => vec![true; count],
            Spansets::Filter(Some(condition)) => (0..count)
                .map(|span| self.condition(condition, span, trace))
                .collect(),
            Spansets::Or(left, right) => {
                let (left, right) = (self.spansets(left, trace), self.spansets(right, trace));
                left.iter().zip(&right).map(|(a, b)| *a || *b).collect()
            }
            Spansets::And(left, right) => {
                let (left, right) = (self.spansets(left, trace), self.spansets(right, trace));
                if left.contains(&true) && right.contains(&true) {
                    left.iter().zip(&right).map(|(a, b)| *a || *b).collect()
                } else {
                    vec![false; count]
                }
            }
            Spansets::Child(left, right) => {
                let (left, right) = (self.spansets(left, trace), self.spansets(right, trace));
                (0..count)
                    .map(|span| right[span] && trace.parents[span].is_some_and(|p| left[p]))
                    .collect()
            }
            Spansets::Descendant(left, right) => {
                let (left, right) = (self.spansets(left, trace), self.spansets(right, trace));
                let below = below_any(&left, &trace.parents);
                (0..count).map(|span| right[span] && below[span]).collect()
            }
            Spansets::Sibling(left, right) => {
                let (left, right) = (self.spansets(left, trace), self.spansets(right, trace));
                let mut left_children: HashMap<[u8; 8], usize> = HashMap::new();
                for (span, row) in trace.spans.iter().enumerate() {
                    if left[span]
                        && let Some(parent) = row.parent_id
                    {
                        *left_children.entry(parent).or_default() += 1;
                    }
                }
                (0..count)
                    .map(|span| {
                        let Some(parent) = trace.spans[span].parent_id else {
                            return false;
                        };
                        let others = left_children.get(&parent).copied().unwrap_or(0)
                            - usize::from(left[span]);
                        right[span] && others > 0
                    })
                    .collect()
            }
        }
    }

    fn condition(&self, condition: &Condition, span: usize, trace: &TraceRows) -> bool {
        match condition {
            Condition::And(left, right) => {
                self.condition(left, span, trace) && self.condition(right, span, trace)
            }
            Condition::Or(left, right) => {
                self.condition(left, span, trace) || self.condition(right, span, trace)
            }
            Condition::Not(inner) => !self.condition(inner, span, trace),
            Condition::Truthy(field) => {
                matches!(self.operand(field, span, trace), Some(Operand::Bool(true)))
            }
            Condition::Compare { field, op, value } => {
                self.compare(self.operand(field, span, trace), *op, value)
            }
        }
    }

    fn compare(&self, operand: Option<Operand<'_>>, op: Operator, value: &Value) -> bool {
        if *value == Value::Nil {
            return match op {
                Operator::Eq => operand.is_none(),
                Operator::Ne => operand.is_some(),
                _ => false,
            };
        }
        let Some(operand) = operand else {
            return false;
        };
        match (operand, value) {
            (Operand::Text(text), Value::Text(literal)) => match op {
                Operator::Regex | Operator::NotRegex => {
                    let matched = self
                        .regexes
                        .get(literal)
                        .is_some_and(|regex| regex.is_match(text));
                    matched == (op == Operator::Regex)
                }
                _ => ordered(Some(text.cmp(literal.as_str())), op),
            },
            (Operand::Status(status), Value::Status(literal))
            | (Operand::Kind(status), Value::Kind(literal)) => {
                ordered(Some(status.cmp(literal.as_str())), op)
                    && matches!(op, Operator::Eq | Operator::Ne)
            }
            (Operand::Bool(flag), Value::Bool(literal)) => {
                matches!(op, Operator::Eq | Operator::Ne) && ordered(Some(flag.cmp(literal)), op)
            }
            (Operand::Duration(nanos), Value::Duration(literal)) => {
                ordered(Some(nanos.cmp(literal)), op)
            }
            (Operand::Int(int), Value::Int(literal)) => ordered(Some(int.cmp(literal)), op),
            (Operand::Int(_) | Operand::Float(_), Value::Int(_) | Value::Float(_)) => {
                let literal = match value {
                    Value::Int(int) => *int as f64,
                    Value::Float(float) => *float,
                    _ => return false,
                };
                ordered(operand.number().and_then(|n| n.partial_cmp(&literal)), op)
            }
            _ => false,
        }
    }

    fn operand<'t>(&self, field: &Field, span: usize, trace: &'t TraceRows) -> Option<Operand<'t>> {
        let row = &trace.spans[span];
        match field {
            Field::Attribute { scope, name } => {
                if *scope == Scope::Resource && name == super::SERVICE_NAME {
                    return Some(Operand::Text(&row.service));
                }
                let slot = self.slot(*scope, name)?;
                row.values.get(slot)?.as_ref().map(operand_of)
            }
            Field::Intrinsic(intrinsic) => Some(match intrinsic {
                Intrinsic::Name => Operand::Text(&row.name),
                Intrinsic::Status => Operand::Status(&row.status),
                Intrinsic::Kind => Operand::Kind(&row.kind),
                Intrinsic::Duration => Operand::Duration(row.duration_ns),
                Intrinsic::StatusMessage => Operand::Text(&row.status_message),
                Intrinsic::RootName => Operand::Text(&trace.root_span()?.name),
                Intrinsic::RootServiceName => Operand::Text(&trace.root_span()?.service),
                Intrinsic::TraceDuration => {
                    Operand::Duration(trace.end_ns.saturating_sub(trace.start_ns))
                }
            }),
        }
    }

    fn aggregate(
        &self,
        aggregate: Aggregate,
        field: &Field,
        set: &SpansetMatch,
        trace: &TraceRows,
    ) -> Option<f64> {
        let values: Vec<f64> = set
            .spans
            .iter()
            .filter_map(|span| self.operand(field, *span, trace)?.number())
            .collect();
        if values.is_empty() {
            return None;
        }
        let sum: f64 = values.iter().sum();
        Some(match aggregate {
            Aggregate::Sum => sum,
            Aggregate::Avg => sum / values.len() as f64,
            Aggregate::Min => values.iter().copied().fold(f64::INFINITY, f64::min),
            Aggregate::Max => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        })
    }

    fn group_by(
        &self,
        fields: &[Field],
        sets: Vec<SpansetMatch>,
        trace: &TraceRows,
    ) -> Vec<SpansetMatch> {
        let mut out = Vec::new();
        for set in sets {
            // Spans without the fields group under nil.
            let mut groups: BTreeMap<Vec<String>, SpansetMatch> = BTreeMap::new();
            for span in &set.spans {
                let values: Vec<Option<AttrValue>> = fields
                    .iter()
                    .map(|field| self.operand(field, *span, trace).map(Operand::to_attr))
                    .collect();
                let key = values
                    .iter()
                    .map(|value| {
                        value
                            .as_ref()
                            .map_or_else(|| "nil".into(), AttrValue::render)
                    })
                    .collect();
                let group = groups.entry(key).or_insert_with(|| SpansetMatch {
                    spans: Vec::new(),
                    group: set
                        .group
                        .iter()
                        .cloned()
                        .chain(fields.iter().zip(&values).filter_map(|(field, value)| {
                            Some((format!("by({})", field_text(field)), value.clone()?))
                        }))
                        .collect(),
                });
                group.spans.push(*span);
            }
            out.extend(groups.into_values());
        }
        out
    }
}

/// For each span, whether one of its ancestors is marked in `marked`: one
/// walk up per span that stops at the first span already decided, so a
/// deep trace costs O(spans), and a parent loop (bad input) ends.
fn below_any(marked: &[bool], parents: &[Option<usize>]) -> Vec<bool> {
    let mut decided: Vec<Option<bool>> = vec![None; parents.len()];
    let mut path = Vec::new();
    for start in 0..parents.len() {
        let mut current = start;
        let answer = loop {
            if let Some(known) = decided[current] {
                break known;
            }
            if path.len() > parents.len() {
                break false; // a loop: no root above
            }
            path.push(current);
            match parents[current] {
                Some(parent) if marked[parent] => break true,
                Some(parent) => current = parent,
                None => break false,
            }
        };
        // Every span on the path has the same answer as its parent chain,
        // except that the span right below a marked one is true, which the
        // loop found first: all of them share `answer`.
        for span in path.drain(..) {
            decided[span] = Some(answer);
        }
    }
    decided
        .into_iter()
        .map(|known| known.unwrap_or(false))
        .collect()
}

/// The name Tempo answers an intrinsic with.
pub fn intrinsic_name(intrinsic: Intrinsic) -> &'static str {
    match intrinsic {
        Intrinsic::Name => "name",
        Intrinsic::Status => "status",
        Intrinsic::Kind => "kind",
        Intrinsic::Duration => "duration",
        Intrinsic::StatusMessage => "statusMessage",
        Intrinsic::RootName => "rootName",
        Intrinsic::RootServiceName => "rootServiceName",
        Intrinsic::TraceDuration => "traceDuration",
    }
}

/// A field as TraceQL writes it.
pub fn field_text(field: &Field) -> String {
    match field {
        Field::Intrinsic(intrinsic) => intrinsic_name(*intrinsic).to_string(),
        Field::Attribute { scope, name } => {
            let prefix = match scope {
                Scope::Span => "span.",
                Scope::Resource => "resource.",
                Scope::Any => ".",
            };
            format!("{prefix}{name}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::below_any;

    #[test]
    fn ancestors_are_found_in_chains_and_loops_end() {
        // 0 <- 1 <- 2 <- 3, and 4 <-> 5 a loop, 6 alone.
        let parents = [None, Some(0), Some(1), Some(2), Some(5), Some(4), None];
        let marked = [false, true, false, false, false, false, false];
        assert_eq!(
            below_any(&marked, &parents),
            [false, false, true, true, false, false, false]
        );
        let marked = [false, false, false, false, true, false, true];
        assert_eq!(
            below_any(&marked, &parents),
            [false, false, false, false, true, true, false]
        );
        // A long chain: every span but the root is below the root.
        let chain: Vec<Option<usize>> = (0usize..100_000).map(|span| span.checked_sub(1)).collect();
        let mut marked = vec![false; chain.len()];
        marked[0] = true;
        let below = below_any(&marked, &chain);
        assert!(!below[0] && below[1..].iter().all(|b| *b));
    }
}

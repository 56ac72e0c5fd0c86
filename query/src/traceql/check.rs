//! Prepares a parsed query to run: numbers the attribute fields it reads
//! ("slots", so evaluation finds a span's values by index and the loader
//! knows which columns to read), compiles each regex once, and lists what
//! a matched span is answered with.

use std::collections::HashMap;

use regex::Regex;

use super::ast::*;

/// Largest compiled regex accepted, in bytes (the regex crate's limit).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A query that passed [`check`].
#[derive(Debug)]
pub struct Checked {
    pub query: Query,
    /// Span, resource, unscoped and instrumentation attributes read per
    /// span, by slot. `resource.service.name` is the dedicated
    /// `service_name` column and takes no slot.
    pub slots: Vec<(Scope, String)>,
    /// Event attributes read, by slot of an event's values.
    pub event_slots: Vec<String>,
    /// Link attributes read, by slot of a link's values.
    pub link_slots: Vec<String>,
    /// Whether events, links or the instrumentation scope's name and
    /// version are read at all.
    pub needs_events: bool,
    pub needs_links: bool,
    pub needs_scope: bool,
    /// Whether every span and resource attribute is read (`compare()`).
    pub needs_all_attributes: bool,
    /// Each `=~`/`!~` pattern, compiled fully anchored.
    pub(super) regexes: HashMap<String, Regex>,
    /// What a matched span is answered with: `(name, field)`, names
    /// distinct, computed once per query.
    pub(super) answered: Vec<(String, Field)>,
}

/// Why a query that parsed cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid TraceQL: {0}")]
pub struct CheckError(pub String);

impl Checked {
    pub(super) fn slot(&self, scope: Scope, name: &str) -> Option<usize> {
        self.slots
            .iter()
            .position(|(known_scope, known)| *known_scope == scope && known == name)
    }

    pub(super) fn event_slot(&self, name: &str) -> Option<usize> {
        self.event_slots.iter().position(|known| known == name)
    }

    pub(super) fn link_slot(&self, name: &str) -> Option<usize> {
        self.link_slots.iter().position(|known| known == name)
    }

    /// The metrics expression, when the query is one.
    pub fn metrics(&self) -> Option<&MetricsExpr> {
        match &self.query.body {
            Body::Metrics(metrics) => Some(metrics),
            Body::Search(_) => None,
        }
    }

    /// The search pipeline, when the query is one.
    pub fn pipeline(&self) -> Option<&Pipeline> {
        match &self.query.body {
            Body::Search(pipeline) => Some(pipeline),
            Body::Metrics(_) => None,
        }
    }
}

/// Every pipeline of the query (a metrics query has one per operand).
pub(super) fn pipelines(query: &Query) -> Vec<&Pipeline> {
    fn metrics<'a>(expr: &'a MetricsExpr, out: &mut Vec<&'a Pipeline>) {
        match expr {
            MetricsExpr::Query(query) => out.push(&query.pipeline),
            MetricsExpr::Math(_, left, right) => {
                metrics(left, out);
                metrics(right, out);
            }
            MetricsExpr::Scalar { expr, .. } | MetricsExpr::Staged(expr, _) => metrics(expr, out),
        }
    }
    let mut out = Vec::new();
    match &query.body {
        Body::Search(pipeline) => out.push(pipeline),
        Body::Metrics(expr) => metrics(expr, &mut out),
    }
    out
}

/// The metrics queries of a metrics expression, left to right.
pub(super) fn metrics_queries(expr: &MetricsExpr) -> Vec<&MetricsQuery> {
    match expr {
        MetricsExpr::Query(query) => vec![query],
        MetricsExpr::Math(_, left, right) => {
            let mut out = metrics_queries(left);
            out.extend(metrics_queries(right));
            out
        }
        MetricsExpr::Scalar { expr, .. } | MetricsExpr::Staged(expr, _) => metrics_queries(expr),
    }
}

/// Calls `visit` on every field expression of `pipeline`.
pub(super) fn pipeline_exprs<'a>(pipeline: &'a Pipeline, visit: &mut impl FnMut(&'a FieldExpr)) {
    fn spansets<'a>(spansets_expr: &'a Spansets, visit: &mut impl FnMut(&'a FieldExpr)) {
        match spansets_expr {
            Spansets::Filter(Some(expr)) => visit(expr),
            Spansets::Filter(None) => {}
            Spansets::Op(_, left, right) => {
                spansets(left, visit);
                spansets(right, visit);
            }
            Spansets::Pipeline(inner) => pipeline_exprs(inner, visit),
        }
    }
    for stage in &pipeline.stages {
        match stage {
            Stage::Spansets(expr) => spansets(expr, visit),
            Stage::Filter(filter) => {
                if let Some(argument) = &filter.argument {
                    visit(argument);
                }
            }
            Stage::By(expr) => visit(expr),
            Stage::Coalesce | Stage::Select(_) => {}
        }
    }
}

/// Checks `query` and numbers its attribute fields.
pub fn check(query: Query) -> Result<Checked, CheckError> {
    let mut checked = Checked {
        query: query.clone(),
        slots: Vec::new(),
        event_slots: Vec::new(),
        link_slots: Vec::new(),
        needs_events: false,
        needs_links: false,
        needs_scope: false,
        needs_all_attributes: false,
        regexes: HashMap::new(),
        answered: Vec::new(),
    };
    let mut exprs: Vec<&FieldExpr> = Vec::new();
    let mut fields: Vec<&Field> = Vec::new();
    for pipeline in pipelines(&query) {
        pipeline_exprs(pipeline, &mut |expr| exprs.push(expr));
        for stage in &pipeline.stages {
            if let Stage::Select(selected) = stage {
                fields.extend(selected);
            }
        }
    }
    if let Body::Metrics(metrics) = &query.body {
        for metrics_query in metrics_queries(metrics) {
            fields.extend(&metrics_query.by);
            match &metrics_query.function {
                MetricsFunction::MinOverTime(field)
                | MetricsFunction::MaxOverTime(field)
                | MetricsFunction::SumOverTime(field)
                | MetricsFunction::AvgOverTime(field)
                | MetricsFunction::QuantileOverTime(field, _)
                | MetricsFunction::HistogramOverTime(field) => fields.push(field),
                MetricsFunction::Compare { selection, .. } => {
                    checked.needs_all_attributes = true;
                    exprs.extend(selection);
                }
                _ => {}
            }
        }
    }
    for expr in &exprs {
        checked.compile_regexes(expr)?;
        expr.fields(&mut |field| fields.push(field));
    }
    for field in fields {
        checked.register(field);
    }
    checked.answered = checked.answered_fields(&exprs);
    Ok(checked)
}

impl Checked {
    fn register(&mut self, field: &Field) {
        match field {
            Field::Attribute {
                scope: Scope::Event,
                name,
            } => {
                self.needs_events = true;
                if self.event_slot(name).is_none() {
                    self.event_slots.push(name.clone());
                }
            }
            Field::Attribute {
                scope: Scope::Link,
                name,
            } => {
                self.needs_links = true;
                if self.link_slot(name).is_none() {
                    self.link_slots.push(name.clone());
                }
            }
            Field::Attribute { scope, name } => {
                if *scope == Scope::Resource && name == super::SERVICE_NAME {
                    return;
                }
                if self.slot(*scope, name).is_none() {
                    self.slots.push((*scope, name.clone()));
                }
            }
            Field::Intrinsic(Intrinsic::EventName | Intrinsic::EventTimeSinceStart) => {
                self.needs_events = true
            }
            Field::Intrinsic(Intrinsic::LinkSpanId | Intrinsic::LinkTraceId) => {
                self.needs_links = true
            }
            Field::Intrinsic(
                Intrinsic::InstrumentationName | Intrinsic::InstrumentationVersion,
            ) => self.needs_scope = true,
            Field::Intrinsic(_) => {}
        }
    }

    fn compile_regexes(&mut self, expr: &FieldExpr) -> Result<(), CheckError> {
        match expr {
            FieldExpr::Binary(op, left, right) => {
                if matches!(op, BinaryOp::Regex | BinaryOp::NotRegex)
                    && let FieldExpr::Value(Value::Text(pattern)) = right.as_ref()
                {
                    let regex = compile(pattern)?;
                    self.regexes.insert(pattern.clone(), regex);
                }
                self.compile_regexes(left)?;
                self.compile_regexes(right)
            }
            FieldExpr::Negate(inner)
            | FieldExpr::Not(inner)
            | FieldExpr::Exists(inner)
            | FieldExpr::NotExists(inner) => self.compile_regexes(inner),
            FieldExpr::Value(_) | FieldExpr::Field(_) => Ok(()),
        }
    }

    /// The filters' fields (but `name` and `duration`, answered as span
    /// fields, and trace-level ones), then the selected fields, named as
    /// Tempo answers them: the scope left off, intrinsics by name.
    fn answered_fields(&self, exprs: &[&FieldExpr]) -> Vec<(String, Field)> {
        let mut out: Vec<(String, Field)> = Vec::new();
        let mut add = |field: &Field| {
            let name = match field {
                Field::Attribute { name, .. } => name.clone(),
                Field::Intrinsic(
                    Intrinsic::Name
                    | Intrinsic::Duration
                    | Intrinsic::TraceDuration
                    | Intrinsic::RootName
                    | Intrinsic::RootServiceName
                    | Intrinsic::TraceId
                    | Intrinsic::SpanId,
                ) => return,
                Field::Intrinsic(other) => other.name().to_string(),
            };
            if !out.iter().any(|(known, _)| *known == name) {
                out.push((name, field.clone()));
            }
        };
        for expr in exprs {
            expr.fields(&mut |field| add(field));
        }
        for pipeline in pipelines(&self.query) {
            for stage in &pipeline.stages {
                if let Stage::Select(fields) = stage {
                    fields.iter().for_each(&mut add);
                }
            }
        }
        out
    }
}

/// A pattern compiled as `=~` matches: anchored at both ends.
pub(super) fn compile(pattern: &str) -> Result<Regex, CheckError> {
    regex::RegexBuilder::new(&anchored(pattern))
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|error| CheckError(format!("invalid regex {pattern:?}: {error}")))
}

/// `pattern` anchored at both ends, as `=~` matches.
pub(super) fn anchored(pattern: &str) -> String {
    format!("^(?:{pattern})$")
}

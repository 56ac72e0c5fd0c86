//! Evaluates a [`Filter`] against one trace.
//!
//! A filter reads a *subject*: the whole trace at the top level, one entry
//! span of a service inside `service(...) {}`, one call inside
//! `edge(...) {}`. Its *principal* span answers the keywords, the response
//! time and the `http.*` fields; `user`, `name` and annotations match any
//! span of the subject.
//!
//! | part | trace | `service("s") { }` | `edge("a", "b") { }` |
//! |---|---|---|---|
//! | principal | the root span | an entry span of `s` (or a call to inferred `s`) | a call from `a` answered by `b` (or to inferred `b`) |
//! | members | every span | the principal and its descendants in `s` | the call |
//! | `duration` | first start to last end | the principal's | the call's |
//! | `root` | true | the principal has no parent | the call has no parent |
//! | `partial` | a span is still in progress | same, for the trace | same |
//!
//! `service()` / `edge()` hold when some candidate satisfies the inner
//! filter (any candidate without one).

use std::collections::HashMap;

use tracelake_model::derived::{SpanFacts, infer_peer};

use super::parse::{Comparison, Filter, Keyword, Literal, NumberField, TextField, TextOp};

/// One span as filters and trace summaries read it.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanView {
    pub facts: SpanFacts,
    pub end_ns: i64,
    pub http_method: Option<String>,
    pub http_url: Option<String>,
    pub http_status: Option<i64>,
    pub user: Option<String>,
    pub user_agent: Option<String>,
    pub client_ip: Option<String>,
    /// X-Ray annotations (the keys `aws.xray.annotations` lists), or every
    /// scalar attribute of a span that did not come from X-Ray.
    pub annotations: Vec<(String, Literal)>,
    /// `(exception.type, exception.message)` of each `exception` event:
    /// the exceptions a trace summary's root causes name.
    pub exceptions: Vec<(String, String)>,
}

/// The spans of one trace, each span id once (a complete span wins over
/// its in-progress form).
#[derive(Debug, Clone, PartialEq)]
pub struct TraceView {
    pub trace_id: [u8; 16],
    pub spans: Vec<SpanView>,
    /// Index of the root span (the earliest span without a parent, else
    /// the earliest span).
    pub root: usize,
    pub start_ns: i64,
    pub end_ns: i64,
    /// Some span is known only in its in-progress form.
    pub partial: bool,
}

impl TraceView {
    /// Builds the view; `None` for no spans.
    pub fn new(trace_id: [u8; 16], spans: Vec<SpanView>) -> Option<Self> {
        let mut by_id: HashMap<[u8; 8], SpanView> = HashMap::new();
        for span in spans {
            match by_id.get(&span.facts.span_id) {
                Some(kept) if !kept.facts.in_progress && span.facts.in_progress => {}
                Some(kept)
                    if kept.facts.in_progress == span.facts.in_progress
                        && kept.end_ns >= span.end_ns => {}
                _ => {
                    by_id.insert(span.facts.span_id, span);
                }
            }
        }
        let mut spans: Vec<SpanView> = by_id.into_values().collect();
        spans.sort_by_key(|span| (span.facts.start_ns, span.facts.span_id));
        let root = spans
            .iter()
            .position(|span| span.facts.parent_span_id.is_none())
            .unwrap_or(0);
        let start_ns = spans.iter().map(|span| span.facts.start_ns).min()?;
        let end_ns = spans.iter().map(|span| span.end_ns).max()?;
        let partial = spans.iter().any(|span| span.facts.in_progress);
        Some(Self {
            trace_id,
            spans,
            root,
            start_ns,
            end_ns,
            partial,
        })
    }

    pub fn root_span(&self) -> &SpanView {
        &self.spans[self.root]
    }

    fn children_of(&self, parent: &[u8; 8]) -> impl Iterator<Item = &SpanView> {
        self.spans
            .iter()
            .filter(move |span| span.facts.parent_span_id.as_ref() == Some(parent))
    }

    /// The node a caller span called: the service of its callee child, or
    /// the inferred node (name, type).
    pub fn called_node(&self, caller: &SpanView) -> Option<(String, String)> {
        if !caller.facts.is_caller() {
            return None;
        }
        if let Some(callee) = self
            .children_of(&caller.facts.span_id)
            .find(|child| child.facts.is_callee())
        {
            return Some((
                callee.facts.service.name.clone(),
                callee.facts.service.node_type.clone(),
            ));
        }
        let (node, _) = infer_peer(caller.facts.peer.as_ref()?);
        Some((node.name, node.node_type))
    }

    /// Whether the whole trace matches `filter`.
    pub fn matches(&self, filter: &Filter) -> bool {
        let subject = Subject {
            principal: self.root_span(),
            members: self.spans.iter().collect(),
            duration_ns: self.end_ns - self.start_ns,
        };
        self.eval(filter, &subject)
    }

    fn eval(&self, filter: &Filter, subject: &Subject<'_>) -> bool {
        let principal = subject.principal;
        match filter {
            Filter::And(left, right) => self.eval(left, subject) && self.eval(right, subject),
            Filter::Or(left, right) => self.eval(left, subject) || self.eval(right, subject),
            Filter::Not(inner) => !self.eval(inner, subject),
            Filter::Keyword(keyword) => {
                let outcome = principal.facts.outcome;
                match keyword {
                    Keyword::Ok => outcome.is_ok(),
                    Keyword::Error => outcome.error,
                    Keyword::Throttle => outcome.throttle,
                    Keyword::Fault => outcome.fault,
                    Keyword::Partial => self.partial,
                    Keyword::Root => principal.facts.parent_span_id.is_none(),
                }
            }
            Filter::Number { field, op, value } => {
                let actual = match field {
                    NumberField::ResponseTime => Some(principal.facts.duration_ns as f64 / 1e9),
                    NumberField::Duration => Some(subject.duration_ns as f64 / 1e9),
                    NumberField::HttpStatus => principal.http_status.map(|status| status as f64),
                };
                actual.is_some_and(|actual| compare_numbers(actual, *op, *value))
            }
            Filter::Text { field, op, value } => match field {
                TextField::HttpUrl => text_matches(principal.http_url.as_deref(), *op, value),
                TextField::HttpMethod => text_matches(principal.http_method.as_deref(), *op, value),
                TextField::HttpUserAgent => {
                    text_matches(principal.user_agent.as_deref(), *op, value)
                }
                TextField::HttpClientIp => text_matches(principal.client_ip.as_deref(), *op, value),
                TextField::User => subject
                    .members
                    .iter()
                    .any(|span| text_matches(span.user.as_deref(), *op, value)),
                TextField::Name => subject.members.iter().any(|span| {
                    text_matches(Some(&span.facts.service.name), *op, value)
                        || text_matches(Some(&span.facts.name), *op, value)
                }),
            },
            Filter::Annotation { key, op, value } => subject.members.iter().any(|span| {
                span.annotations
                    .iter()
                    .any(|(name, actual)| name == key && literal_matches(actual, *op, value))
            }),
            Filter::Service {
                name,
                node_type,
                filter,
            } => self
                .service_subjects(name.as_deref(), node_type.as_deref())
                .iter()
                .any(|inner| {
                    filter
                        .as_ref()
                        .is_none_or(|filter| self.eval(filter, inner))
                }),
            // Resolved to the group's filter before evaluation; an
            // unresolved one matches nothing.
            Filter::Group(_) => false,
            Filter::Always => true,
            Filter::Edge { from, to, filter } => self
                .spans
                .iter()
                .filter(|span| span.facts.service.name == *from)
                .filter(|span| {
                    self.called_node(span)
                        .is_some_and(|(called, _)| called == *to)
                })
                .any(|call| {
                    let inner = Subject {
                        principal: call,
                        members: vec![call],
                        duration_ns: call.facts.duration_ns,
                    };
                    filter
                        .as_ref()
                        .is_none_or(|filter| self.eval(filter, &inner))
                }),
        }
    }

    /// The subjects `service(name, type)` ranges over.
    fn service_subjects(&self, name: Option<&str>, node_type: Option<&str>) -> Vec<Subject<'_>> {
        let wanted = |service: &str, service_type: &str| {
            name.is_none_or(|name| name == service)
                && node_type.is_none_or(|node_type| node_type == service_type)
        };
        let mut subjects = Vec::new();
        for span in &self.spans {
            let facts = &span.facts;
            if facts.is_entry() && wanted(&facts.service.name, &facts.service.node_type) {
                subjects.push(Subject {
                    principal: span,
                    members: self.same_service_subtree(span),
                    duration_ns: facts.duration_ns,
                });
            } else if let Some((called, called_type)) = self.called_node(span)
                && !self
                    .children_of(&facts.span_id)
                    .any(|child| child.facts.is_callee())
                && wanted(&called, &called_type)
            {
                subjects.push(Subject {
                    principal: span,
                    members: vec![span],
                    duration_ns: facts.duration_ns,
                });
            }
        }
        subjects
    }

    fn same_service_subtree<'a>(&'a self, top: &'a SpanView) -> Vec<&'a SpanView> {
        let mut members = vec![top];
        let mut next = 0;
        while next < members.len() {
            let parent = members[next].facts.span_id;
            next += 1;
            for child in self.children_of(&parent) {
                if child.facts.service.name == top.facts.service.name && !child.facts.is_entry() {
                    members.push(child);
                }
            }
        }
        members
    }
}

struct Subject<'a> {
    principal: &'a SpanView,
    members: Vec<&'a SpanView>,
    duration_ns: i64,
}

fn compare_numbers(actual: f64, op: Comparison, expected: f64) -> bool {
    match op {
        Comparison::Eq => actual == expected,
        Comparison::Ne => actual != expected,
        Comparison::Lt => actual < expected,
        Comparison::Le => actual <= expected,
        Comparison::Gt => actual > expected,
        Comparison::Ge => actual >= expected,
    }
}

fn text_matches(actual: Option<&str>, op: TextOp, expected: &str) -> bool {
    let Some(actual) = actual else {
        return false;
    };
    match op {
        TextOp::Compare(Comparison::Eq) => actual == expected,
        TextOp::Compare(Comparison::Ne) => actual != expected,
        TextOp::Compare(Comparison::Lt) => actual < expected,
        TextOp::Compare(Comparison::Le) => actual <= expected,
        TextOp::Compare(Comparison::Gt) => actual > expected,
        TextOp::Compare(Comparison::Ge) => actual >= expected,
        TextOp::Contains => actual.contains(expected),
        TextOp::BeginsWith => actual.starts_with(expected),
        TextOp::EndsWith => actual.ends_with(expected),
    }
}

fn literal_matches(actual: &Literal, op: TextOp, expected: &Literal) -> bool {
    match (actual, expected) {
        (Literal::Number(actual), Literal::Number(expected)) => match op {
            TextOp::Compare(comparison) => compare_numbers(*actual, comparison, *expected),
            _ => false,
        },
        (Literal::Text(actual), Literal::Text(expected)) => {
            text_matches(Some(actual), op, expected)
        }
        (Literal::Bool(actual), Literal::Bool(expected)) => match op {
            TextOp::Compare(Comparison::Eq) => actual == expected,
            TextOp::Compare(Comparison::Ne) => actual != expected,
            _ => false,
        },
        _ => false,
    }
}

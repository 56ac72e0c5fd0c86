//! TraceQL, the query language of Tempo's search API (`/api/search?q=`).
//!
//! ```text
//! text --parse--> Query --check--> Checked --search--> candidates (DataFusion, pruned)
//!                                                   --> evaluate each candidate trace
//! ```
//!
//! - [`parse`]: the grammar, errors with positions;
//! - [`check`]: types of comparisons, regexes, attribute slots;
//! - [`Checked::span_predicate`]/[`Checked::trace_predicate`]: the
//!   expressions DataFusion decides (pushdown);
//! - [`Checked::evaluate`]: exact semantics per trace;
//! - [`search`]: the two together over a window.

mod ast;
mod check;
mod eval;
mod explain;
mod lex;
mod metrics;
mod parse;
mod pushdown;
mod search;

pub use ast::*;
pub use check::{CheckError, Checked, check};
pub use eval::{
    AttrValue, EventRow, LinkRow, NestedSet, SpanRow, SpansetMatch, TraceRows, go_duration,
};
pub use explain::explain;
pub use lex::TraceqlError;
pub use lex::duration_nanos;
pub use metrics::{
    DEFAULT_EXEMPLARS, Exemplar, Label, MAX_CELLS, MAX_INTERVALS, MAX_SERIES, MetricsOutcome,
    MetricsRequest, Series, default_step_ns, query_range,
};
pub use parse::{MAX_QUERY_CHARS, parse};
pub(crate) use pushdown::attribute_value;
pub(crate) use search::attr_value;
pub use search::{
    Cursor, Found, MAX_CANDIDATES, MAX_SCANNED_TRACES, ScanStats, SearchOutcome, SearchWindow,
    candidates, scan_traces, search, search_after,
};

/// The resource attribute stored in the dedicated `service_name` column.
pub const SERVICE_NAME: &str = "service.name";

/// Why a query cannot run: it does not parse, or does not check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryProblem {
    #[error(transparent)]
    Syntax(#[from] TraceqlError),
    #[error(transparent)]
    Check(#[from] CheckError),
}

/// A field as the tag endpoints name it: an intrinsic (`status`,
/// `span:id`), or a scope and the attribute's name as it is (`span.x`,
/// `resource.x`, `.x`, `event.x`, `link.x`, `instrumentation.x`; the name
/// may hold any character, or be double-quoted).
pub fn parse_field(word: &str) -> Option<Field> {
    if let Some(intrinsic) = lex::bare_intrinsic(word) {
        return Some(Field::Intrinsic(intrinsic));
    }
    if let Some((scope, name)) = word.split_once(':')
        && let Some(intrinsic) = lex::scoped_intrinsic(scope, name)
    {
        return Some(Field::Intrinsic(intrinsic));
    }
    let scopes = [
        ("span.", Scope::Span),
        ("resource.", Scope::Resource),
        ("event.", Scope::Event),
        ("link.", Scope::Link),
        ("instrumentation.", Scope::Instrumentation),
        (".", Scope::Any),
    ];
    let (scope, name) = scopes
        .iter()
        .find_map(|(prefix, scope)| Some((*scope, word.strip_prefix(prefix)?)))?;
    let name = match name
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
    {
        Some(quoted) => quoted.replace("\\\"", "\"").replace("\\\\", "\\"),
        None => name.to_string(),
    };
    (!name.is_empty()).then_some(Field::Attribute { scope, name })
}

/// Parses and checks `text`.
pub fn prepare(text: &str) -> Result<Checked, QueryProblem> {
    Ok(check(parse(text)?)?)
}

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

mod check;
mod eval;
mod parse;
mod pushdown;
mod search;

pub use check::{CheckError, Checked, check};
pub use eval::{AttrValue, SpanRow, SpansetMatch, TraceRows, field_text, intrinsic_name};
pub use parse::{
    Aggregate, Condition, Field, Intrinsic, MAX_QUERY_CHARS, Operator, Query, Scope, Spansets,
    Stage, TraceqlError, Value, parse, parse_field,
};
pub(crate) use pushdown::attribute_value;
pub(crate) use search::attr_value;
pub use search::{
    Cursor, Found, MAX_CANDIDATES, SearchOutcome, SearchWindow, candidates, search, search_after,
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

/// Parses and checks `text`.
pub fn prepare(text: &str) -> Result<Checked, QueryProblem> {
    Ok(check(parse(text)?)?)
}

//! TraceQL, the query language of Tempo's search API (`/api/search?q=`).
//!
//! This module holds the parser ([`parse`]); evaluation over the span table
//! and the Tempo search endpoints build on it.

mod parse;

pub use parse::{
    Aggregate, Condition, Field, Intrinsic, MAX_QUERY_CHARS, Operator, Query, Scope, Spansets,
    Stage, TraceqlError, Value, parse,
};

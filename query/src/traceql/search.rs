//! TraceQL search over a time window: candidates from DataFusion (see
//! [`super::pushdown`]), then exact evaluation of the candidates loaded
//! page by page, newest first, until `limit` traces matched.
//!
//! Candidates are ordered by their latest candidate span, newest first,
//! then trace id; at most [`MAX_CANDIDATES`] are inspected (the answer's
//! `inspected_traces` says how many were). The matches found are answered
//! by trace start, newest first, then trace id, so the answer is
//! deterministic. [`search_after`] pages instead: matches in candidate
//! order, each page going on after the last match of the one before
//! ([`Cursor`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, AsArray, FixedSizeBinaryArray, MapArray, RecordBatch, StringArray, StructArray,
};
use datafusion::arrow::datatypes::{Float64Type, Int64Type, TimestampNanosecondType};
use datafusion::functions_aggregate::expr_fn::max;
use datafusion::prelude::{DataFrame, Expr, SessionContext, col, lit};
use tracelake_model::TraceId;
use tracelake_model::schema::{any_value, col as span_col};
use tracelake_storage::SpanReader;

use super::check::Checked;
use super::eval::{AttrValue, EventRow, LinkRow, SpanRow, SpansetMatch, TraceRows};
use crate::exprs::{or_else, starts_within, timestamp_ns};
use crate::spans_table::SpansTable;
use crate::xray_filter::TRACE_REACH_NS;
use crate::{QueryError, Result, session_for_tenant};

/// Most candidate traces one search inspects.
pub const MAX_CANDIDATES: usize = 20_000;
/// Most candidate traces loaded per query.
const PAGE: usize = 500;
/// The first page of a search: pages start near the limit (most
/// candidates of a selective filter match) and double up to [`PAGE`].
const FIRST_PAGE: usize = 16;

/// What to search.
#[derive(Debug, Clone, Copy)]
pub struct SearchWindow {
    /// Spans starting in this inclusive nanosecond range make a trace a
    /// candidate.
    pub range_ns: (i64, i64),
    /// Most traces answered.
    pub limit: usize,
    /// Whether DataFusion narrows the candidates (always, but for tests
    /// that check the pushdown against evaluating every trace).
    pub pushdown: bool,
}

/// A matching trace and its spansets.
#[derive(Debug)]
pub struct Found {
    pub trace: TraceRows,
    pub spansets: Vec<SpansetMatch>,
    /// The start of its latest candidate span: the candidates' order
    /// (newest first) and the key of a [`Cursor`].
    pub latest_ns: i64,
}

/// Where a paged search goes on: after the candidate with this latest span
/// start and trace id, in candidate order (`latest` descending, then trace
/// id ascending).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub latest_ns: i64,
    pub trace_id: TraceId,
}

impl Cursor {
    /// Whether the candidate `(latest_ns, trace_id)` comes after the cursor.
    pub fn admits(&self, latest_ns: i64, trace_id: &TraceId) -> bool {
        latest_ns < self.latest_ns
            || (latest_ns == self.latest_ns && trace_id.as_bytes() > self.trace_id.as_bytes())
    }
}

/// The answer of [`search`].
#[derive(Debug, Default)]
pub struct SearchOutcome {
    pub traces: Vec<Found>,
    pub inspected_traces: u64,
    pub inspected_spans: u64,
    pub inspected_bytes: u64,
}

/// The candidate traces (module docs) as a plan over `spans`: `trace_id`
/// and `latest`, newest first.
pub async fn candidates(
    context: &SessionContext,
    checked: &Checked,
    window: &SearchWindow,
) -> Result<DataFrame> {
    candidates_after(context, checked, window, None).await
}

/// [`candidates`] no later than `after` (ties on the latest start are
/// settled by trace id after the query).
pub(super) async fn candidates_after(
    context: &SessionContext,
    checked: &Checked,
    window: &SearchWindow,
    after: Option<&Cursor>,
) -> Result<DataFrame> {
    let bound = after.map(|after| col(LATEST).lt_eq(timestamp_ns(after.latest_ns)));
    let frame = candidate_traces(context, checked, window.range_ns, window.pushdown, bound).await?;
    Ok(frame
        .sort(vec![
            col(LATEST).sort(false, true),
            col(span_col::TRACE_ID).sort(true, true),
        ])?
        .limit(0, Some(MAX_CANDIDATES))?
        .select(vec![col(span_col::TRACE_ID), col(LATEST)])?)
}

pub(super) fn window_of(range_ns: (i64, i64)) -> SearchWindow {
    SearchWindow {
        range_ns,
        limit: MAX_CANDIDATES,
        pushdown: true,
    }
}

/// The traces with spans in `range_ns` that may match (with pushdown:
/// the span predicate in the scan, the trace predicate and `bound` after
/// grouping): `trace_id` and [`LATEST`], unordered.
async fn candidate_traces(
    context: &SessionContext,
    checked: &Checked,
    (from, to): (i64, i64),
    pushdown: bool,
    bound: Option<Expr>,
) -> Result<DataFrame> {
    let mut condition = starts_within(from, to);
    let mut aggregates = vec![max(col(span_col::START_TIME)).alias(LATEST)];
    let mut having = None;
    if pushdown {
        if let Some(predicate) = checked.span_predicate() {
            condition = condition.and(predicate);
        }
        having = checked.trace_predicate(&mut aggregates);
    }
    if let Some(bound) = bound {
        having = Some(match having {
            Some(having) => having.and(bound),
            None => bound,
        });
    }
    let frame = context
        .table(SPANS_VIEWS)
        .await?
        .filter(condition)?
        .aggregate(vec![col(span_col::TRACE_ID)], aggregates)?;
    Ok(match having {
        Some(having) => frame.filter(having)?,
        None => frame,
    })
}

/// The spans of loaded pages by trace, and how many there were.
fn spans_by_trace(
    batches: &[RecordBatch],
    checked: &Checked,
) -> Result<(HashMap<TraceId, Vec<SpanRow>>, u64)> {
    let mut by_trace: HashMap<TraceId, Vec<SpanRow>> = HashMap::new();
    let mut spans = 0u64;
    for batch in batches {
        for (trace_id, row) in span_rows(batch, checked)? {
            by_trace.entry(trace_id).or_default().push(row);
            spans += 1;
        }
    }
    Ok((by_trace, spans))
}

fn trace_of(trace_id: &TraceId, rows: Vec<SpanRow>) -> Option<TraceRows> {
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(trace_id.as_bytes());
    TraceRows::new(bytes, rows)
}

/// The table candidate plans (and compiled metrics) read: `spans` with
/// text columns as views ([`SpansTable::with_views`]), registered by
/// [`views_session`] only.
pub(super) const SPANS_VIEWS: &str = "spans_views";

/// A session for `tenant` with `spans_views` beside the usual tables,
/// pruned to `window_ns` when given ([`SpansTable::within`]).
pub(super) fn views_session(
    reader: Arc<dyn SpanReader>,
    tenant: &str,
    window_ns: Option<(i64, i64)>,
) -> Result<SessionContext> {
    let context = session_for_tenant(Arc::clone(&reader), tenant)?;
    let mut table = SpansTable::new(reader, tenant).with_views();
    if let Some((from, to)) = window_ns {
        table = table.within(from, to);
    }
    context.register_table(SPANS_VIEWS, Arc::new(table))?;
    Ok(context)
}

/// The candidates' latest span start.
const LATEST: &str = "latest";

/// Runs `checked` over `tenant`'s spans in `window`; the matches come
/// newest trace start first.
pub async fn search(
    reader: Arc<dyn SpanReader>,
    tenant: &str,
    checked: Arc<Checked>,
    window: SearchWindow,
) -> Result<SearchOutcome> {
    let mut outcome = search_after(reader, tenant, checked, window, None).await?;
    outcome.traces.sort_by(|a, b| {
        (b.trace.start_ns, a.trace.trace_id).cmp(&(a.trace.start_ns, b.trace.trace_id))
    });
    Ok(outcome)
}

/// Runs `checked` over the candidates after `after` (all without it); the
/// matches come in candidate order, so the last one answered is the cursor
/// of the next page.
///
/// Without a cursor, and when one span makes a trace a candidate
/// ([`Checked::needs_one_span`]), the window is read newest slice first
/// (`newest_first`): a trace's latest candidate span is in the newest
/// slice holding any of its candidate spans, so the slices' candidates,
/// each slice newest first and without the traces of newer slices, come
/// in exactly the window's candidate order, and a search that finds its
/// `limit` in the newest minutes reads only those.
pub async fn search_after(
    reader: Arc<dyn SpanReader>,
    tenant: &str,
    checked: Arc<Checked>,
    window: SearchWindow,
    after: Option<Cursor>,
) -> Result<SearchOutcome> {
    let context = views_session(reader, tenant, None)?;
    let slices = if after.is_none() && (checked.needs_one_span() || !window.pushdown) {
        newest_first(window.range_ns)
    } else {
        vec![window.range_ns]
    };
    let mut outcome = SearchOutcome::default();
    let mut seen: HashSet<TraceId> = HashSet::new();
    for range_ns in slices {
        let slice = SearchWindow { range_ns, ..window };
        let batches = candidates_after(&context, &checked, &slice, after.as_ref())
            .await?
            .collect()
            .await?;
        let mut candidates = Vec::new();
        for batch in &batches {
            let ids = fixed_binary(batch, 0)?;
            let latest = batch
                .column(1)
                .as_primitive_opt::<TimestampNanosecondType>()
                .ok_or_else(|| corrupt("latest"))?;
            for row in 0..ids.len() {
                let trace_id =
                    TraceId::try_from(ids.value(row)).map_err(|_| corrupt("trace_id"))?;
                let latest_ns = latest.value(row);
                if after.is_none_or(|after| after.admits(latest_ns, &trace_id))
                    && seen.len() < MAX_CANDIDATES
                    && seen.insert(trace_id)
                {
                    candidates.push((trace_id, latest_ns));
                }
            }
        }
        inspect(&context, &checked, &window, &candidates, &mut outcome).await?;
        if outcome.traces.len() >= window.limit || seen.len() >= MAX_CANDIDATES {
            break;
        }
    }
    Ok(outcome)
}

/// Slices of the inclusive `range_ns`, newest first: the newest 1/64,
/// then 3/64, 12/64 and the rest (each four times what was read before
/// it, so a search that reads everything reads each block once more at
/// most per slice edge).
fn newest_first((from, to): (i64, i64)) -> Vec<(i64, i64)> {
    let span = i128::from(to) - i128::from(from) + 1;
    let mut slices = Vec::new();
    let mut hi = to;
    for sixty_fourths in [1i128, 4, 16] {
        let lo = i128::from(to) - span * sixty_fourths / 64 + 1;
        let Ok(lo) = i64::try_from(lo) else {
            break;
        };
        if lo <= from || lo > hi {
            continue;
        }
        slices.push((lo, hi));
        hi = lo - 1;
    }
    slices.push((from, hi));
    slices
}

/// Loads `candidates` page by page and evaluates them in order, adding the
/// matches to `outcome` until it holds `window.limit`.
async fn inspect(
    context: &SessionContext,
    checked: &Arc<Checked>,
    window: &SearchWindow,
    candidates: &[(TraceId, i64)],
    outcome: &mut SearchOutcome,
) -> Result<()> {
    let mut remaining = candidates;
    let mut page_size = window.limit.clamp(FIRST_PAGE, PAGE);
    while !remaining.is_empty() && outcome.traces.len() < window.limit {
        let (page, rest) = remaining.split_at(page_size.min(remaining.len()));
        remaining = rest;
        page_size = (page_size * 2).min(PAGE);
        let ids: Vec<TraceId> = page.iter().map(|(trace_id, _)| *trace_id).collect();
        let batches = load_page(context, checked, &ids, window.range_ns).await?;

        outcome.inspected_bytes += batches
            .iter()
            .map(|batch| batch.get_array_memory_size() as u64)
            .sum::<u64>();
        let order = page.to_vec();
        let page_checked = Arc::clone(checked);
        let wanted = window.limit.saturating_sub(outcome.traces.len());
        let (found, traces, spans) = crate::off_reactor(move || {
            let (mut by_trace, spans) = spans_by_trace(&batches, &page_checked)?;
            let mut found = Vec::new();
            let mut inspected = 0u64;
            for (trace_id, latest_ns) in order {
                if found.len() >= wanted {
                    break;
                }
                let Some(rows) = by_trace.remove(&trace_id) else {
                    continue;
                };
                let Some(trace) = trace_of(&trace_id, rows) else {
                    continue;
                };
                inspected += 1;
                let spansets = page_checked.evaluate(&trace);
                if !spansets.is_empty() {
                    found.push(Found {
                        trace,
                        spansets,
                        latest_ns,
                    });
                }
            }
            Ok((found, inspected, spans))
        })
        .await?;
        outcome.inspected_traces += traces;
        outcome.inspected_spans += spans;
        outcome.traces.extend(found);
    }
    Ok(())
}

/// What a whole-window scan read.
#[derive(Debug, Default, Clone, Copy)]
pub struct ScanStats {
    pub inspected_traces: u64,
    pub inspected_spans: u64,
    pub inspected_bytes: u64,
}

/// Most traces one metrics query scans span by span; past it the query is
/// refused with a message to narrow it (the compiled path has no limit).
pub const MAX_SCANNED_TRACES: usize = 2_000_000;

/// Calls `visit` on every candidate trace of `range_ns` (all of them, in
/// pages, off the reactor), threading `state` through.
pub async fn scan_traces<T, F>(
    reader: Arc<dyn SpanReader>,
    tenant: &str,
    checked: Arc<Checked>,
    range_ns: (i64, i64),
    mut state: T,
    visit: F,
) -> Result<(T, ScanStats)>
where
    T: Send + 'static,
    F: Fn(&mut T, &TraceRows) + Send + Sync + 'static,
{
    let context = views_session(reader, tenant, None)?;
    let frame = candidate_traces(&context, &checked, range_ns, true, None).await?;
    let batches = frame
        .sort(vec![col(span_col::TRACE_ID).sort(true, true)])?
        .limit(0, Some(MAX_SCANNED_TRACES + 1))?
        .select(vec![col(span_col::TRACE_ID)])?
        .collect()
        .await?;
    let mut trace_ids = Vec::new();
    for batch in &batches {
        let ids = fixed_binary(batch, 0)?;
        for row in 0..ids.len() {
            trace_ids.push(TraceId::try_from(ids.value(row)).map_err(|_| corrupt("trace_id"))?);
        }
    }
    if trace_ids.len() > MAX_SCANNED_TRACES {
        return Err(QueryError::TooLarge(format!(
            "the query matches more than {MAX_SCANNED_TRACES} traces; narrow the time range or the filter"
        )));
    }
    let visit = Arc::new(visit);
    let mut stats = ScanStats::default();
    for page in trace_ids.chunks(PAGE) {
        let batches = load_page(&context, &checked, page, range_ns).await?;
        stats.inspected_bytes += batches
            .iter()
            .map(|batch| batch.get_array_memory_size() as u64)
            .sum::<u64>();
        let page_checked = Arc::clone(&checked);
        let page_visit = Arc::clone(&visit);
        let (returned, traces, spans) = crate::off_reactor(move || {
            let (by_trace, spans) = spans_by_trace(&batches, &page_checked)?;
            let mut traces = 0u64;
            let mut ordered: Vec<(TraceId, Vec<SpanRow>)> = by_trace.into_iter().collect();
            ordered.sort_by_key(|(trace_id, _)| *trace_id.as_bytes());
            for (trace_id, rows) in ordered {
                if let Some(trace) = trace_of(&trace_id, rows) {
                    traces += 1;
                    page_visit(&mut state, &trace);
                }
            }
            Ok((state, traces, spans))
        })
        .await?;
        state = returned;
        stats.inspected_traces += traces;
        stats.inspected_spans += spans;
    }
    Ok((state, stats))
}

/// The spans of `trace_ids` (within reach of the window), with the columns
/// evaluation reads and one column per attribute slot.
async fn load_page(
    context: &SessionContext,
    checked: &Checked,
    trace_ids: &[TraceId],
    (from, to): (i64, i64),
) -> Result<Vec<RecordBatch>> {
    let mut columns: Vec<Expr> = vec![
        col(span_col::TRACE_ID),
        col(span_col::SPAN_ID),
        col(span_col::PARENT_SPAN_ID),
        col(span_col::NAME),
        col(span_col::SERVICE_NAME),
        col(span_col::KIND),
        col(span_col::STATUS_CODE),
        or_else(col(span_col::STATUS_MESSAGE), lit("")),
        col(span_col::START_TIME),
        col(span_col::DURATION_NS),
        crate::exprs::xray_in_progress(),
    ];
    columns.extend((0..checked.slots.len()).map(|slot| checked.slot_expr(slot)));
    // Read only when the query does (in this order, after the slots).
    if checked.needs_scope {
        columns.push(col(span_col::SCOPE_NAME));
        columns.push(col(span_col::SCOPE_VERSION));
    }
    if checked.needs_events {
        columns.push(col(span_col::EVENTS));
    }
    if checked.needs_links {
        columns.push(col(span_col::LINKS));
    }
    if checked.needs_all_attributes {
        columns.push(col(span_col::ATTRIBUTES));
        columns.push(col(span_col::RESOURCE_ATTRIBUTES));
    }
    let frame = context
        .table("spans")
        .await?
        .filter(crate::trace::trace_id_in(trace_ids).and(starts_within(
            from.saturating_sub(TRACE_REACH_NS),
            to.saturating_add(TRACE_REACH_NS),
        )))?
        .select(columns)?;
    Ok(frame.collect().await?)
}

fn corrupt(what: &str) -> QueryError {
    QueryError::DataFusion(datafusion::error::DataFusionError::Internal(format!(
        "traceql column {what} missing or mistyped"
    )))
}

fn fixed_binary(batch: &RecordBatch, index: usize) -> Result<&FixedSizeBinaryArray> {
    batch
        .column(index)
        .as_fixed_size_binary_opt()
        .ok_or_else(|| corrupt("id"))
}

fn text(batch: &RecordBatch, index: usize) -> Result<&StringArray> {
    batch
        .column(index)
        .as_string_opt::<i32>()
        .ok_or_else(|| corrupt("text"))
}

/// An `AnyValue` struct cell borrowed from its arrays (no copy of its
/// text): what [`attr_value`] owns. A float is held by its bits, so the
/// reference can key a map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum AttrRef<'a> {
    Text(&'a str),
    Int(i64),
    Float(u64),
    Bool(bool),
}

impl AttrRef<'_> {
    pub(crate) fn to_value(self) -> AttrValue {
        match self {
            Self::Text(text) => AttrValue::Text(text.to_string()),
            Self::Int(int) => AttrValue::Int(int),
            Self::Float(bits) => AttrValue::Float(f64::from_bits(bits)),
            Self::Bool(bool) => AttrValue::Bool(bool),
        }
    }
}

/// An `AnyValue` struct cell: the first child set among `str`, `int`,
/// `double`, `bool`, `json` (arrays and maps, as JSON text).
pub(crate) fn attr_ref(value: &StructArray, row: usize) -> Option<AttrRef<'_>> {
    if value.is_null(row) {
        return None;
    }
    let child = |name: &str| {
        value
            .column_by_name(name)
            .filter(|array| array.is_valid(row))
    };
    if let Some(array) = child(any_value::STR).and_then(|a| a.as_string_opt::<i32>()) {
        return Some(AttrRef::Text(array.value(row)));
    }
    if let Some(array) = child(any_value::INT).and_then(|a| a.as_primitive_opt::<Int64Type>()) {
        return Some(AttrRef::Int(array.value(row)));
    }
    if let Some(array) = child(any_value::DOUBLE).and_then(|a| a.as_primitive_opt::<Float64Type>())
    {
        return Some(AttrRef::Float(array.value(row).to_bits()));
    }
    if let Some(array) = child(any_value::BOOL).and_then(|a| a.as_boolean_opt()) {
        return Some(AttrRef::Bool(array.value(row)));
    }
    if let Some(array) = child(any_value::JSON).and_then(|a| a.as_string_opt::<i32>()) {
        return Some(AttrRef::Text(array.value(row)));
    }
    None
}

/// [`attr_ref`], owned.
pub(crate) fn attr_value(value: &StructArray, row: usize) -> Option<AttrValue> {
    attr_ref(value, row).map(AttrRef::to_value)
}

/// The values of `names` in an attribute map cell.
fn map_values(map: &MapArray, row: usize, names: &[String]) -> Vec<Option<AttrValue>> {
    let mut out = vec![None; names.len()];
    if names.is_empty() || map.is_null(row) {
        return out;
    }
    let entries = map.value(row);
    let (Some(keys), Some(values)) = (
        entries.column(0).as_string_opt::<i32>(),
        entries.column(1).as_struct_opt(),
    ) else {
        return out;
    };
    for entry in 0..keys.len() {
        if let Some(slot) = names.iter().position(|name| name == keys.value(entry)) {
            out[slot] = attr_value(values, entry);
        }
    }
    out
}

/// Every entry of an attribute map cell, names prefixed.
fn map_entries(column: &dyn Array, row: usize, prefix: &str) -> Vec<(String, AttrValue)> {
    let Some(map) = column.as_map_opt() else {
        return Vec::new();
    };
    if map.is_null(row) {
        return Vec::new();
    }
    let entries = map.value(row);
    let (Some(keys), Some(values)) = (
        entries.column(0).as_string_opt::<i32>(),
        entries.column(1).as_struct_opt(),
    ) else {
        return Vec::new();
    };
    (0..keys.len())
        .filter_map(|entry| {
            let value = attr_value(values, entry)?;
            Some((format!("{prefix}{}", keys.value(entry)), value))
        })
        .collect()
}

/// A list-of-struct cell (`events`, `links`) as its struct rows.
fn list_items(column: &dyn Array, row: usize) -> Option<StructArray> {
    let list = column.as_list_opt::<i32>()?;
    if list.is_null(row) {
        return None;
    }
    list.value(row).as_struct_opt().cloned()
}

fn events_of(column: &dyn Array, row: usize, names: &[String]) -> Vec<EventRow> {
    let Some(items) = list_items(column, row) else {
        return Vec::new();
    };
    let times = items
        .column_by_name("time")
        .and_then(|array| array.as_primitive_opt::<TimestampNanosecondType>().cloned());
    let event_names = items
        .column_by_name("name")
        .and_then(|array| array.as_string_opt::<i32>().cloned());
    let maps = items
        .column_by_name("attributes")
        .and_then(|array| array.as_map_opt().cloned());
    (0..items.len())
        .map(|item| EventRow {
            name: event_names
                .as_ref()
                .map_or_else(String::new, |names| names.value(item).to_string()),
            time_ns: times.as_ref().map_or(0, |times| times.value(item)),
            values: maps.as_ref().map_or_else(
                || vec![None; names.len()],
                |maps| map_values(maps, item, names),
            ),
        })
        .collect()
}

fn links_of(column: &dyn Array, row: usize, names: &[String]) -> Vec<LinkRow> {
    let Some(items) = list_items(column, row) else {
        return Vec::new();
    };
    let ids = |name: &str| {
        items
            .column_by_name(name)
            .and_then(|array| array.as_fixed_size_binary_opt().cloned())
    };
    let (trace_ids, span_ids) = (ids("trace_id"), ids("span_id"));
    let maps = items
        .column_by_name("attributes")
        .and_then(|array| array.as_map_opt().cloned());
    (0..items.len())
        .map(|item| LinkRow {
            trace_id: trace_ids
                .as_ref()
                .and_then(|ids| ids.value(item).try_into().ok())
                .unwrap_or_default(),
            span_id: span_ids
                .as_ref()
                .and_then(|ids| ids.value(item).try_into().ok())
                .unwrap_or_default(),
            values: maps.as_ref().map_or_else(
                || vec![None; names.len()],
                |maps| map_values(maps, item, names),
            ),
        })
        .collect()
}

fn span_rows(batch: &RecordBatch, checked: &Checked) -> Result<Vec<(TraceId, SpanRow)>> {
    let slots = checked.slots.len();
    let (trace_ids, span_ids, parents) = (
        fixed_binary(batch, 0)?,
        fixed_binary(batch, 1)?,
        fixed_binary(batch, 2)?,
    );
    let (names, services, kinds, statuses, messages) = (
        text(batch, 3)?,
        text(batch, 4)?,
        text(batch, 5)?,
        text(batch, 6)?,
        text(batch, 7)?,
    );
    let starts = batch
        .column(8)
        .as_primitive_opt::<TimestampNanosecondType>()
        .ok_or_else(|| corrupt("start_time"))?;
    let durations = batch
        .column(9)
        .as_primitive_opt::<Int64Type>()
        .ok_or_else(|| corrupt("duration_ns"))?;
    let in_progress = batch
        .column(10)
        .as_boolean_opt()
        .ok_or_else(|| corrupt("in progress"))?;
    let values: Vec<&StructArray> = (0..slots)
        .map(|slot| {
            batch
                .column(11 + slot)
                .as_struct_opt()
                .ok_or_else(|| corrupt("attribute"))
        })
        .collect::<Result<_>>()?;
    let mut extra = 11 + slots;
    let mut next_column = || {
        let column = batch.columns().get(extra).cloned();
        extra += 1;
        column.ok_or_else(|| corrupt("extra column"))
    };
    let scope = if checked.needs_scope {
        let (names, versions) = (next_column()?, next_column()?);
        Some((names, versions))
    } else {
        None
    };
    let events = checked.needs_events.then(&mut next_column).transpose()?;
    let links = checked.needs_links.then(&mut next_column).transpose()?;
    let all_attributes = if checked.needs_all_attributes {
        Some((next_column()?, next_column()?))
    } else {
        None
    };
    let optional_text = |array: &dyn Array, row: usize| {
        array
            .as_string_opt::<i32>()
            .filter(|strings| strings.is_valid(row))
            .map(|strings| strings.value(row).to_string())
    };
    let id8 = |array: &FixedSizeBinaryArray, row: usize| -> Option<[u8; 8]> {
        array
            .is_valid(row)
            .then(|| array.value(row).try_into().ok())
            .flatten()
    };
    let mut rows = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let trace_id = TraceId::try_from(trace_ids.value(row)).map_err(|_| corrupt("trace_id"))?;
        let Some(span_id) = id8(span_ids, row) else {
            return Err(corrupt("span_id"));
        };
        rows.push((
            trace_id,
            SpanRow {
                span_id,
                parent_id: id8(parents, row),
                name: names.value(row).to_string(),
                service: services.value(row).to_string(),
                kind: kinds.value(row).to_string(),
                status: statuses.value(row).to_string(),
                status_message: messages.value(row).to_string(),
                start_ns: starts.value(row),
                duration_ns: durations.value(row),
                values: values.iter().map(|value| attr_value(value, row)).collect(),
                in_progress: in_progress.is_valid(row) && in_progress.value(row),
                scope_name: scope
                    .as_ref()
                    .and_then(|(names, _)| optional_text(names.as_ref(), row)),
                scope_version: scope
                    .as_ref()
                    .and_then(|(_, versions)| optional_text(versions.as_ref(), row)),
                events: events.as_ref().map_or_else(Vec::new, |column| {
                    events_of(column.as_ref(), row, &checked.event_slots)
                }),
                links: links.as_ref().map_or_else(Vec::new, |column| {
                    links_of(column.as_ref(), row, &checked.link_slots)
                }),
                attributes: all_attributes.as_ref().map_or_else(
                    Vec::new,
                    |(span_map, resource_map)| {
                        let mut all = map_entries(span_map.as_ref(), row, "span.");
                        all.extend(map_entries(resource_map.as_ref(), row, "resource."));
                        all
                    },
                ),
            },
        ));
    }
    Ok(rows)
}

//! Native trace search (`GET /v1/search`): a TraceQL query or an X-Ray
//! filter expression over a window, answered a page at a time as trace
//! summaries, newest first.
//!
//! "Newest" is the trace's latest span starting in the window (for
//! TraceQL, its latest span the query's span conditions admit, the order
//! [`traceql::search_after`] inspects candidates in); ties go by trace id.
//! A page ends with a [`Cursor`] naming its last trace, and the next page
//! starts after it, so pages neither repeat nor skip a trace while the
//! window's data stays put (pin `end` to page through a window that is
//! still filling).
//!
//! X-Ray filters load the window's traces whole, as `GetTraceSummaries`
//! does, so their windows are limited to 24 hours; group references
//! (`group.name`, `group.arn`) are resolved only by the X-Ray API.

use std::sync::Arc;

use serde_json::{Value, json};
use tracelake_model::TraceId;
use tracelake_model::xray::format_xray_trace_id;
use tracelake_storage::SpanReader;

use crate::QueryError;
use crate::traceql::{self, Cursor, SearchWindow};
use crate::xray_filter::{self, TraceView};

/// The longest window an X-Ray filter searches.
pub const MAX_XRAY_WINDOW_NS: i64 = 24 * 3_600_000_000_000;

/// The language of a search expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    TraceQl,
    XrayFilter,
}

impl Language {
    /// `traceql` or `xray`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "traceql" => Some(Self::TraceQl),
            "xray" => Some(Self::XrayFilter),
            _ => None,
        }
    }

    /// The name `parse` reads.
    pub fn name(self) -> &'static str {
        match self {
            Self::TraceQl => "traceql",
            Self::XrayFilter => "xray",
        }
    }

    /// The language of an expression that names none: TraceQL when it is
    /// empty or starts with `{`, otherwise an X-Ray filter.
    pub fn of(expression: &str) -> Self {
        let trimmed = expression.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('{') {
            Self::TraceQl
        } else {
            Self::XrayFilter
        }
    }
}

/// One page's question.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    pub expression: String,
    pub language: Language,
    /// Inclusive nanoseconds.
    pub range_ns: (i64, i64),
    pub limit: usize,
    pub after: Option<Cursor>,
}

/// One page of matches, newest first, each trace whole.
#[derive(Debug, Default)]
pub struct SearchPage {
    pub traces: Vec<TraceView>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Cursor>,
    pub inspected_traces: u64,
}

/// Why a search did not run.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The expression, window or page token is wrong (400).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Failed(#[from] QueryError),
}

/// A cursor as the `page` token: `{latest_ns}-{trace id hex}`.
pub fn cursor_token(cursor: &Cursor) -> String {
    format!("{}-{}", cursor.latest_ns, cursor.trace_id.to_hex())
}

/// Reads a `page` token written by [`cursor_token`].
pub fn parse_cursor_token(token: &str) -> Option<Cursor> {
    let (latest, trace_id) = token.split_once('-')?;
    Some(Cursor {
        latest_ns: latest.parse().ok()?,
        trace_id: TraceId::from_hex(trace_id).ok()?,
    })
}

/// Runs one page of `request` over `tenant`'s spans.
pub async fn search(
    reader: Arc<dyn SpanReader>,
    tenant: &str,
    request: SearchRequest,
) -> std::result::Result<SearchPage, SearchError> {
    match request.language {
        Language::TraceQl => Ok(search_traceql(reader, tenant, request).await?),
        Language::XrayFilter => search_xray(reader, tenant, request).await,
    }
}

async fn search_traceql(
    reader: Arc<dyn SpanReader>,
    tenant: &str,
    request: SearchRequest,
) -> std::result::Result<SearchPage, SearchError> {
    let text = match request.expression.trim() {
        "" => "{}",
        text => text,
    };
    let checked =
        traceql::prepare(text).map_err(|error| SearchError::Invalid(error.to_string()))?;
    if checked.metrics().is_some() {
        return Err(SearchError::Invalid(
            "a metrics query: run it with /api/metrics/query_range or /api/metrics/query".into(),
        ));
    }
    let window = SearchWindow {
        range_ns: request.range_ns,
        limit: request.limit + 1,
        pushdown: true,
    };
    let outcome = traceql::search_after(
        Arc::clone(&reader),
        tenant,
        Arc::new(checked),
        window,
        request.after,
    )
    .await?;
    let mut keys: Vec<(TraceId, i64)> = outcome
        .traces
        .iter()
        .filter_map(|found| {
            Some((
                TraceId::try_from(found.trace.trace_id.as_slice()).ok()?,
                found.latest_ns,
            ))
        })
        .collect();
    let next = page_end(&mut keys, request.limit);
    // The page's traces again, whole: evaluation loaded only the columns
    // the query reads, a summary needs the flags and the HTTP request. One
    // scan pruned by the trace-id filters, for at most `limit` traces.
    let ids: Vec<TraceId> = keys.iter().map(|(trace_id, _)| *trace_id).collect();
    let traces = xray_filter::traces_by_ids(reader, tenant, &ids).await?;
    Ok(SearchPage {
        traces,
        next,
        inspected_traces: outcome.inspected_traces,
    })
}

async fn search_xray(
    reader: Arc<dyn SpanReader>,
    tenant: &str,
    request: SearchRequest,
) -> std::result::Result<SearchPage, SearchError> {
    let (from, to) = request.range_ns;
    if to - from > MAX_XRAY_WINDOW_NS {
        return Err(SearchError::Invalid(
            "an X-Ray filter searches at most 24 hours: narrow start..end".into(),
        ));
    }
    let filter = match request.expression.trim() {
        "" => None,
        text => {
            let filter = xray_filter::parse(text)
                .map_err(|error| SearchError::Invalid(error.to_string()))?;
            if let Some(group) = filter.groups().first() {
                return Err(SearchError::Invalid(format!(
                    "group {group:?}: groups are resolved by the X-Ray API (GetTraceSummaries with GroupName); write the group's expression here instead"
                )));
            }
            Some(filter)
        }
    };
    let traces = xray_filter::traces_in_window(reader, tenant, request.range_ns).await?;
    let inspected_traces = traces.len() as u64;
    let after = request.after;
    let limit = request.limit;
    crate::off_reactor(move || {
        let mut matches: Vec<(i64, TraceId, TraceView)> = traces
            .into_iter()
            .filter(|trace| filter.as_ref().is_none_or(|filter| trace.matches(filter)))
            .filter_map(|trace| {
                let latest = trace
                    .spans
                    .iter()
                    .map(|span| span.facts.start_ns)
                    .filter(|start| (from..=to).contains(start))
                    .max()?;
                let trace_id = TraceId::try_from(trace.trace_id.as_slice()).ok()?;
                Some((latest, trace_id, trace))
            })
            .filter(|(latest, trace_id, _)| {
                after.is_none_or(|after| after.admits(*latest, trace_id))
            })
            .collect();
        matches.sort_by(|a, b| (b.0, a.1.as_bytes()).cmp(&(a.0, b.1.as_bytes())));
        let mut keys: Vec<(TraceId, i64)> = matches
            .iter()
            .map(|(latest, id, _)| (*id, *latest))
            .collect();
        let next = page_end(&mut keys, limit);
        matches.truncate(keys.len());
        Ok(SearchPage {
            traces: matches.into_iter().map(|(_, _, trace)| trace).collect(),
            next,
            inspected_traces,
        })
    })
    .await
    .map_err(SearchError::Failed)
}

/// Cuts `keys` (in page order, up to one more than `limit`) to the page
/// and answers the cursor of the next page when there is one.
fn page_end(keys: &mut Vec<(TraceId, i64)>, limit: usize) -> Option<Cursor> {
    if keys.len() <= limit {
        return None;
    }
    keys.truncate(limit);
    keys.last().map(|(trace_id, latest_ns)| Cursor {
        latest_ns: *latest_ns,
        trace_id: *trace_id,
    })
}

/// A trace's summary as `/v1/search` answers it.
pub fn summary_json(trace: &TraceView) -> Value {
    let root = trace.root_span();
    let trace_id = TraceId::try_from(trace.trace_id.as_slice()).ok();
    let mut services: Vec<&str> = trace
        .spans
        .iter()
        .map(|span| span.facts.service.name.as_str())
        .filter(|name| !name.is_empty())
        .collect();
    services.sort_unstable();
    services.dedup();
    let count = |flag: fn(&xray_filter::SpanView) -> bool| {
        trace.spans.iter().filter(|span| flag(span)).count()
    };
    json!({
        "trace_id": trace_id.map(|id| id.to_hex()),
        "xray_trace_id": trace_id.map(|id| format_xray_trace_id(&id)),
        "root_service": root.facts.service.name,
        "root_name": root.facts.name,
        "start_unix_nano": trace.start_ns.to_string(),
        "duration_ns": trace.end_ns - trace.start_ns,
        "span_count": trace.spans.len(),
        "services": services,
        "errors": count(|span| span.facts.outcome.error && !span.facts.outcome.throttle),
        "throttles": count(|span| span.facts.outcome.throttle),
        "faults": count(|span| span.facts.outcome.fault),
        "failed": count(|span| span.facts.status_code == "error"),
        "in_progress": trace.partial,
        "http": {
            "method": root.http_method,
            "url": root.http_url,
            "status": root.http_status,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_refuse_garbage() {
        let cursor = Cursor {
            latest_ns: 1_700_000_000_123_456_789,
            trace_id: TraceId::from_hex("5759e988bd862e3fe1be46a994272793").unwrap(),
        };
        assert_eq!(parse_cursor_token(&cursor_token(&cursor)), Some(cursor));
        for bad in [
            "",
            "12",
            "x-5759e988bd862e3fe1be46a994272793",
            "12-zz",
            "12-5759",
        ] {
            assert_eq!(parse_cursor_token(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn language_follows_the_expression_unless_named() {
        assert_eq!(Language::of(""), Language::TraceQl);
        assert_eq!(Language::of("  { status = error }"), Language::TraceQl);
        assert_eq!(Language::of("service(\"a\")"), Language::XrayFilter);
        assert_eq!(Language::of("fault"), Language::XrayFilter);
        assert_eq!(Language::parse("xray"), Some(Language::XrayFilter));
        assert_eq!(Language::parse("sql"), None);
        for language in [Language::TraceQl, Language::XrayFilter] {
            assert_eq!(Language::parse(language.name()), Some(language));
        }
    }

    #[test]
    fn a_page_holds_limit_traces_and_names_the_last_as_cursor() {
        let id = |byte: u8| TraceId::try_from([byte; 16].as_slice()).unwrap();
        let mut keys = vec![(id(1), 30), (id(2), 20), (id(3), 10)];
        let next = page_end(&mut keys, 2);
        assert_eq!(keys.len(), 2);
        assert_eq!(
            next,
            Some(Cursor {
                latest_ns: 20,
                trace_id: id(2)
            })
        );
        let mut last = vec![(id(3), 10)];
        assert_eq!(page_end(&mut last, 2), None);
        assert_eq!(last.len(), 1);
    }
}

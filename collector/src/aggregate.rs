//! Streaming aggregation of the derived tables (`edges`, `span_metrics`)
//! as spans are stored, as Tempo's service-graph and span-metrics
//! processors do.
//!
//! ```text
//!  SpanWriter::append ok --(tenant, batch)--> bounded queue --> aggregation task
//!                                                               |  span_facts (blocking pool)
//!                                                               v
//!        per tenant: span metrics + edges by minute, calls waiting for their other side
//!                                                               |  every tick: expire, close minutes
//!                                                               v
//!                                              DerivedWriter (Parquet beside the spans)
//! ```
//!
//! The two sides of a call arrive in any order: a caller (client/producer
//! span) waits for its callee (a server/consumer span whose parent is the
//! caller) and the other way round, each for at most `wait`. A caller
//! nobody answered in time calls an inferred node
//! ([`tracelake_model::derived::infer_peer`]); a callee whose caller
//! never came is counted as unpaired (Tempo's
//! `traces_service_graph_unpaired_spans_total`) and adds no edge. At most
//! `max_pending` spans wait; beyond that the oldest waiting span is expired
//! early (counted), so memory stays bounded under any load.
//!
//! A minute's rows are written once the minute is over and `wait` has
//! passed, then the watermark moves past it; spans that arrive later for an
//! old minute are written as extra rows of that minute (readers sum rows).
//! Rows still in memory when the process dies are lost; the query side
//! recomputes minutes after the watermark from raw spans.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use parking_lot::Mutex;
use prometheus_client::encoding::DescriptorEncoder;
use tokio::sync::mpsc;
use tracelake_model::derived::{
    EdgeSet, NANOS_PER_MINUTE, Node, SERVICE_GRAPH_BUCKETS, SPAN_METRICS_BUCKETS, SpanFacts,
    SpanMetricSet, minute_of, span_facts,
};
use tracelake_storage::{DerivedTable, DerivedWriter, SpanWriter};

use crate::prometheus::{
    HistogramSeries, encode_plain_counter, labels, write_counter, write_histogram,
    write_plain_counter,
};

/// How the aggregation pairs and how much it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AggregateConfig {
    /// How long one side of a call waits for the other.
    pub wait: Duration,
    /// Spans waiting for their other side, across tenants.
    pub max_pending: usize,
    /// Batches queued between storage and the aggregation task.
    pub queue_batches: usize,
    /// Prometheus series per family and tenant (edges; span metrics);
    /// calls of further series are dropped from `/metrics` and counted.
    pub max_series: usize,
}

impl Default for AggregateConfig {
    fn default() -> Self {
        Self {
            wait: Duration::from_secs(10),
            max_pending: 100_000,
            queue_batches: 256,
            max_series: 10_000,
        }
    }
}

/// Counters since start, for `/metrics`.
#[derive(Debug, Default)]
pub struct AggregateStats {
    pub spans: AtomicU64,
    pub in_progress_skipped: AtomicU64,
    pub paired: AtomicU64,
    pub inferred: AtomicU64,
    pub roots: AtomicU64,
    pub links: AtomicU64,
    pub unpaired_callees: AtomicU64,
    pub expired_links: AtomicU64,
    pub evicted_early: AtomicU64,
    pub unreadable_batches: AtomicU64,
    pub rows_written: AtomicU64,
    pub write_failures: AtomicU64,
}

type SpanKey = ([u8; 16], [u8; 8]);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    Caller,
    Callee,
    Link,
    Producer,
}

/// One tenant's open rows and waiting spans.
#[derive(Debug, Default)]
struct TenantState {
    edges: EdgeSet,
    spans: SpanMetricSet,
    /// Callers by their own span id.
    callers: HashMap<SpanKey, SpanFacts>,
    /// Callees by their parent span id.
    callees: HashMap<SpanKey, Vec<SpanFacts>>,
    /// Consumers by the span they link to.
    links: HashMap<SpanKey, Vec<SpanFacts>>,
    /// Recent producers, so a consumer linking to one finds the node it
    /// hangs off (`SpanFacts::link_source`).
    producers: HashMap<SpanKey, Node>,
}

/// Running totals of one tenant since start: the Prometheus series.
#[derive(Debug)]
struct Totals {
    edges: EdgeSet,
    spans: SpanMetricSet,
}

impl Totals {
    fn new(max_series: usize) -> Self {
        Self {
            edges: EdgeSet::totals(max_series),
            spans: SpanMetricSet::totals(max_series),
        }
    }
}

/// The aggregation's state: every tenant, and one expiry queue in arrival
/// order (deadlines ascend, since `wait` is fixed).
#[derive(Debug, Default)]
struct State {
    tenants: HashMap<String, TenantState>,
    totals: HashMap<String, Totals>,
    expiry: VecDeque<(Instant, String, SpanKey, Waiting)>,
    pending: usize,
}

/// The streaming aggregation. Feed it through [`AggregatingWriter`] and
/// drive it with [`Aggregator::run`].
#[derive(Debug)]
pub struct Aggregator {
    config: AggregateConfig,
    state: Mutex<State>,
    stats: AggregateStats,
    /// Earliest start minute of each stored batch not yet observed, with
    /// how many batches have it: no flush closes those minutes.
    in_flight: Mutex<std::collections::BTreeMap<i64, usize>>,
}

impl Aggregator {
    pub fn new(config: AggregateConfig) -> Arc<Self> {
        Arc::new(Self {
            config,
            state: Mutex::new(State::default()),
            stats: AggregateStats::default(),
            in_flight: Mutex::new(std::collections::BTreeMap::new()),
        })
    }

    pub fn stats(&self) -> &AggregateStats {
        &self.stats
    }

    fn hold_minute(&self, minute_ns: i64) {
        *self.in_flight.lock().entry(minute_ns).or_default() += 1;
    }

    fn release_minute(&self, minute_ns: i64) {
        let mut in_flight = self.in_flight.lock();
        if let Some(count) = in_flight.get_mut(&minute_ns) {
            *count -= 1;
            if *count == 0 {
                in_flight.remove(&minute_ns);
            }
        }
    }

    /// Adds one stored batch of `tenant`'s spans. CPU work: call it off the
    /// async reactor.
    pub fn observe_batch(&self, tenant: &str, batch: &RecordBatch, now: Instant) {
        let facts = match span_facts(batch) {
            Ok(facts) => facts,
            Err(error) => {
                tracing::warn!(%error, "span batch unreadable for the service map");
                self.stats
                    .unreadable_batches
                    .fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let mut state = self.state.lock();
        for span in facts {
            self.observe(&mut state, tenant, span, now);
        }
    }

    fn observe(&self, state: &mut State, tenant: &str, span: SpanFacts, now: Instant) {
        let stats = &self.stats;
        if span.in_progress {
            stats.in_progress_skipped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        stats.spans.fetch_add(1, Ordering::Relaxed);
        let deadline = now + self.config.wait;
        let mut waiting: Vec<(SpanKey, Waiting)> = Vec::new();
        let totals = state
            .totals
            .entry(tenant.to_string())
            .or_insert_with(|| Totals::new(self.config.max_series));
        let tenant_state = state.tenants.entry(tenant.to_string()).or_default();
        tenant_state.spans.add(&span);
        totals.spans.add(&span);
        if span.parent_span_id.is_none() {
            tenant_state.edges.add_root(&span);
            totals.edges.add_root(&span);
            stats.roots.fetch_add(1, Ordering::Relaxed);
        }
        let own_key = (span.trace_id, span.span_id);
        if span.is_callee() {
            for link in &span.links {
                if let Some(producer) = tenant_state.producers.get(link) {
                    tenant_state.edges.add_link(producer, &span);
                    totals.edges.add_link(producer, &span);
                    stats.links.fetch_add(1, Ordering::Relaxed);
                } else {
                    tenant_state
                        .links
                        .entry(*link)
                        .or_default()
                        .push(span.clone());
                    waiting.push((*link, Waiting::Link));
                }
            }
            if let Some(parent) = span.parent_span_id {
                let parent_key = (span.trace_id, parent);
                if let Some(caller) = tenant_state.callers.remove(&parent_key) {
                    tenant_state.edges.add_paired(&caller, &span);
                    totals.edges.add_paired(&caller, &span);
                    stats.paired.fetch_add(1, Ordering::Relaxed);
                    state.pending = state.pending.saturating_sub(1);
                } else {
                    tenant_state
                        .callees
                        .entry(parent_key)
                        .or_default()
                        .push(span.clone());
                    waiting.push((parent_key, Waiting::Callee));
                }
            }
        }
        if span.is_caller() {
            if span.kind == "producer" {
                let source = span.link_source();
                waiting.push((own_key, Waiting::Producer));
                if let Some(consumers) = tenant_state.links.remove(&own_key) {
                    state.pending = state.pending.saturating_sub(consumers.len());
                    for consumer in &consumers {
                        tenant_state.edges.add_link(&source, consumer);
                        totals.edges.add_link(&source, consumer);
                        stats.links.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tenant_state.producers.insert(own_key, source);
            }
            if let Some(callees) = tenant_state.callees.remove(&own_key) {
                state.pending = state.pending.saturating_sub(callees.len());
                for callee in &callees {
                    tenant_state.edges.add_paired(&span, callee);
                    totals.edges.add_paired(&span, callee);
                    stats.paired.fetch_add(1, Ordering::Relaxed);
                }
            } else {
                tenant_state.callers.insert(own_key, span);
                waiting.push((own_key, Waiting::Caller));
            }
        }
        for (key, what) in waiting {
            state.pending += 1;
            state
                .expiry
                .push_back((deadline, tenant.to_string(), key, what));
        }
        while state.pending > self.config.max_pending {
            if !self.expire_front(state) {
                break;
            }
            stats.evicted_early.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Expires the oldest waiting entry; false when none is left.
    fn expire_front(&self, state: &mut State) -> bool {
        let Some((_, tenant, key, what)) = state.expiry.pop_front() else {
            return false;
        };
        let Some(tenant_state) = state.tenants.get_mut(&tenant) else {
            return true;
        };
        let stats = &self.stats;
        let released = match what {
            Waiting::Caller => match tenant_state.callers.remove(&key) {
                Some(caller) => {
                    tenant_state.edges.add_inferred(&caller);
                    if let Some(totals) = state.totals.get_mut(&tenant) {
                        totals.edges.add_inferred(&caller);
                    }
                    stats.inferred.fetch_add(1, Ordering::Relaxed);
                    1
                }
                None => 0,
            },
            Waiting::Callee => {
                let callees = tenant_state.callees.remove(&key).unwrap_or_default();
                stats
                    .unpaired_callees
                    .fetch_add(callees.len() as u64, Ordering::Relaxed);
                callees.len()
            }
            Waiting::Link => {
                let consumers = tenant_state.links.remove(&key).unwrap_or_default();
                stats
                    .expired_links
                    .fetch_add(consumers.len() as u64, Ordering::Relaxed);
                consumers.len()
            }
            Waiting::Producer => usize::from(tenant_state.producers.remove(&key).is_some()),
        };
        state.pending = state.pending.saturating_sub(released);
        true
    }

    /// Expires what waited long enough at `now`.
    fn expire(&self, state: &mut State, now: Instant) {
        while state
            .expiry
            .front()
            .is_some_and(|(deadline, ..)| *deadline <= now)
        {
            self.expire_front(state);
        }
    }

    /// Expires due waits and takes the rows of minutes before
    /// `close_before_ns` and before any waiting span's minute, by tenant;
    /// returns them with the minute they are complete before.
    fn take_closed(
        &self,
        now: Instant,
        close_before_ns: i64,
    ) -> (Vec<(String, EdgeSet, SpanMetricSet)>, i64) {
        let mut state = self.state.lock();
        self.expire(&mut state, now);
        // A minute with a span still waiting for its other side is not
        // closed: its edge row is not written yet.
        let in_flight = self.in_flight.lock().keys().next().copied();
        let close_before_ns = close_before_ns
            .min(oldest_waiting_minute(&state))
            .min(in_flight.unwrap_or(i64::MAX));
        let mut closed = Vec::new();
        for (tenant, tenant_state) in &mut state.tenants {
            let edges = tenant_state.edges.take_before(close_before_ns);
            let spans = tenant_state.spans.take_before(close_before_ns);
            if !edges.is_empty() || !spans.is_empty() {
                closed.push((tenant.clone(), edges, spans));
            }
        }
        state.tenants.retain(|_, tenant_state| {
            !(tenant_state.edges.is_empty()
                && tenant_state.spans.is_empty()
                && tenant_state.callers.is_empty()
                && tenant_state.callees.is_empty()
                && tenant_state.links.is_empty()
                && tenant_state.producers.is_empty())
        });
        (closed, close_before_ns)
    }

    /// Expires every waiting span and takes every row: for shutdown and
    /// for one-shot imports.
    fn take_all(&self) -> Vec<(String, EdgeSet, SpanMetricSet)> {
        {
            let mut state = self.state.lock();
            while self.expire_front(&mut state) {}
        }
        self.take_closed(Instant::now(), i64::MAX).0
    }

    /// Writes the rows of minutes that are over (their minute ended `wait`
    /// ago) and moves the watermark past them.
    pub async fn flush_closed(self: &Arc<Self>, writer: &dyn DerivedWriter, now_wall_ns: i64) {
        let wait_ns = i64::try_from(self.config.wait.as_nanos()).unwrap_or(i64::MAX);
        let close_before_ns = minute_of(now_wall_ns.saturating_sub(wait_ns));
        // Expiry and the scan for waiting spans are linear in what waits:
        // off the reactor.
        let aggregator = Arc::clone(self);
        let taken = tokio::task::spawn_blocking(move || {
            aggregator.take_closed(Instant::now(), close_before_ns)
        })
        .await;
        let Ok((closed, close_before_ns)) = taken else {
            tracing::error!("service map flush task failed");
            self.stats.write_failures.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if self.write(writer, closed).await {
            self.set_watermark(writer, close_before_ns).await;
        }
    }

    /// Pairs nothing more: writes every row held (waiting callers become
    /// inferred calls) and moves the watermark past the current minute.
    pub async fn flush_all(self: &Arc<Self>, writer: &dyn DerivedWriter, now_wall_ns: i64) {
        let aggregator = Arc::clone(self);
        let Ok(everything) = tokio::task::spawn_blocking(move || aggregator.take_all()).await
        else {
            tracing::error!("service map final flush task failed");
            self.stats.write_failures.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if self.write(writer, everything).await {
            let next_minute = minute_of(now_wall_ns).saturating_add(NANOS_PER_MINUTE);
            self.set_watermark(writer, next_minute).await;
        }
    }

    async fn set_watermark(&self, writer: &dyn DerivedWriter, complete_before_ns: i64) {
        if let Err(error) = writer.set_derived_complete_before(complete_before_ns).await {
            tracing::error!(%error, "derived watermark not written");
            self.stats.write_failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Writes rows; true when all were written. Rows that fail to write go
    /// back into the open state, so the next flush retries them.
    async fn write(
        &self,
        writer: &dyn DerivedWriter,
        closed: Vec<(String, EdgeSet, SpanMetricSet)>,
    ) -> bool {
        let mut all_written = true;
        for (tenant, edges, spans) in closed {
            let edges_written = write_rows(writer, &tenant, DerivedTable::Edges, || {
                Ok(edges.to_batch(&tenant)?)
            })
            .await;
            let spans_written = write_rows(writer, &tenant, DerivedTable::SpanMetrics, || {
                Ok(spans.to_batch(&tenant)?)
            })
            .await;
            let mut returned = (EdgeSet::default(), SpanMetricSet::default());
            match edges_written {
                Ok(rows) => {
                    self.stats.rows_written.fetch_add(rows, Ordering::Relaxed);
                }
                Err(()) => returned.0 = edges,
            }
            match spans_written {
                Ok(rows) => {
                    self.stats.rows_written.fetch_add(rows, Ordering::Relaxed);
                }
                Err(()) => returned.1 = spans,
            }
            if !returned.0.is_empty() || !returned.1.is_empty() {
                all_written = false;
                self.stats.write_failures.fetch_add(1, Ordering::Relaxed);
                let mut state = self.state.lock();
                let tenant_state = state.tenants.entry(tenant).or_default();
                tenant_state.edges.merge(&returned.0);
                tenant_state.spans.merge(&returned.1);
            }
        }
        all_written
    }

    /// Consumes stored batches from `batches` and flushes closed minutes
    /// every `tick`, until `shutdown` resolves; then writes everything held.
    pub async fn run(
        self: Arc<Self>,
        mut batches: mpsc::Receiver<QueuedBatch>,
        writer: Arc<dyn DerivedWriter>,
        tick: Duration,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                received = batches.recv() => {
                    let Some(queued) = received else { break };
                    self.observe_off_reactor(queued).await;
                }
                _ = interval.tick() => {
                    self.flush_closed(writer.as_ref(), wall_clock_ns()).await;
                }
            }
        }
        // Batches stored before shutdown are still counted.
        batches.close();
        while let Some(queued) = batches.recv().await {
            self.observe_off_reactor(queued).await;
        }
        self.flush_all(writer.as_ref(), wall_clock_ns()).await;
    }

    async fn observe_off_reactor(self: &Arc<Self>, queued: QueuedBatch) {
        let aggregator = Arc::clone(self);
        let QueuedBatch {
            tenant,
            batch,
            held_minute,
        } = queued;
        let observed = tokio::task::spawn_blocking(move || {
            aggregator.observe_batch(&tenant, &batch, Instant::now());
            if let Some(minute) = held_minute {
                aggregator.release_minute(minute);
            }
        })
        .await;
        if let Err(error) = observed {
            tracing::error!(%error, "service map aggregation task failed");
            self.stats
                .unreadable_batches
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `tenant`'s service-graph and span metrics since start, with the
    /// names and labels of Tempo's metrics-generator:
    /// `traces_service_graph_request_total`, `..._failed_total`,
    /// `..._server_seconds`, `..._client_seconds` (client, server,
    /// connection_type) and `traces_spanmetrics_calls_total`,
    /// `traces_spanmetrics_latency` (service, span_name, span_kind,
    /// status_code).
    pub fn render_series(&self, out: &mut String, tenant: &str) {
        let state = self.state.lock();
        let Some(totals) = state.totals.get(tenant) else {
            return;
        };
        // Link and direct edges with the same labels are one series.
        let mut edges: std::collections::BTreeMap<
            (String, String, &'static str),
            tracelake_model::derived::EdgeStats,
        > = std::collections::BTreeMap::new();
        for (key, stats) in &totals.edges.rows {
            edges
                .entry((
                    key.client.name.clone(),
                    key.server.name.clone(),
                    key.connection.as_str(),
                ))
                .or_default()
                .merge(stats);
        }
        let edge_labels = |(client, server, connection): &(String, String, &'static str)| {
            labels(&[
                ("client", client),
                ("server", server),
                ("connection_type", connection),
            ])
        };
        let requests: Vec<(String, u64)> = edges
            .iter()
            .map(|(key, stats)| (edge_labels(key), stats.counts.total as u64))
            .collect();
        write_counter(
            out,
            "traces_service_graph_request_total",
            "Requests between two nodes of the service graph.",
            &requests,
        );
        let failed: Vec<(String, u64)> = edges
            .iter()
            .map(|(key, stats)| (edge_labels(key), stats.failed as u64))
            .collect();
        write_counter(
            out,
            "traces_service_graph_request_failed_total",
            "Failed requests between two nodes of the service graph.",
            &failed,
        );
        for (name, help, server_side) in [
            (
                "traces_service_graph_request_server_seconds",
                "Time for a request between two nodes, as seen from the server.",
                true,
            ),
            (
                "traces_service_graph_request_client_seconds",
                "Time for a request between two nodes, as seen from the client.",
                false,
            ),
        ] {
            let series: Vec<HistogramSeries<'_>> = edges
                .iter()
                .filter_map(|((client, server, connection), stats)| {
                    let (histogram, sum_ns) = if server_side {
                        (&stats.server_latency, stats.server_duration_sum_ns)
                    } else {
                        (&stats.client_latency, stats.client_duration_sum_ns)
                    };
                    (!histogram.is_empty()).then(|| HistogramSeries {
                        labels: vec![
                            ("client", client.as_str()),
                            ("server", server.as_str()),
                            ("connection_type", connection),
                        ],
                        cumulative: histogram.cumulative_counts(&SERVICE_GRAPH_BUCKETS),
                        sum: sum_ns as f64 / 1e9,
                        count: histogram.count(),
                    })
                })
                .collect();
            write_histogram(out, name, help, &SERVICE_GRAPH_BUCKETS, &series);
        }
        let mut spans: std::collections::BTreeMap<
            (String, String, String, String),
            tracelake_model::derived::SpanMetricStats,
        > = std::collections::BTreeMap::new();
        for (key, stats) in &totals.spans.rows {
            spans
                .entry((
                    key.service.name.clone(),
                    key.span_name.clone(),
                    format!("SPAN_KIND_{}", key.span_kind.to_ascii_uppercase()),
                    format!("STATUS_CODE_{}", key.status_code.to_ascii_uppercase()),
                ))
                .or_default()
                .merge(stats);
        }
        fn span_labels(key: &(String, String, String, String)) -> Vec<(&'static str, &str)> {
            vec![
                ("service", key.0.as_str()),
                ("span_name", key.1.as_str()),
                ("span_kind", key.2.as_str()),
                ("status_code", key.3.as_str()),
            ]
        }
        let calls: Vec<(String, u64)> = spans
            .iter()
            .map(|(key, stats)| (labels(&span_labels(key)), stats.counts.total as u64))
            .collect();
        write_counter(
            out,
            "traces_spanmetrics_calls_total",
            "Spans by service, name, kind and status.",
            &calls,
        );
        let latency: Vec<HistogramSeries<'_>> = spans
            .iter()
            .map(|(key, stats)| HistogramSeries {
                labels: span_labels(key),
                cumulative: stats.latency.cumulative_counts(&SPAN_METRICS_BUCKETS),
                sum: stats.duration_sum_ns as f64 / 1e9,
                count: stats.latency.count(),
            })
            .collect();
        write_histogram(
            out,
            "traces_spanmetrics_latency",
            "Span durations by service, name, kind and status, seconds.",
            &SPAN_METRICS_BUCKETS,
            &latency,
        );
        write_plain_counter(
            out,
            "tracelake_metrics_series_dropped_total",
            "Calls and spans left out of /metrics because a family reached max_series.",
            totals.edges.dropped() + totals.spans.dropped(),
        );
    }

    /// The aggregation's counters, for `/metrics`.
    pub fn encode(&self, encoder: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
        let stats = &self.stats;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let families: [(&str, &str, &AtomicU64); 11] = [
            (
                "tracelake_service_graph_spans_total",
                "Spans the service-map aggregation counted.",
                &stats.spans,
            ),
            (
                "tracelake_service_graph_paired_total",
                "Calls paired with the span that answered them.",
                &stats.paired,
            ),
            (
                "tracelake_service_graph_inferred_total",
                "Calls nobody instrumented answered within the wait (inferred nodes).",
                &stats.inferred,
            ),
            (
                "tracelake_service_graph_links_total",
                "Asynchronous edges found through span links.",
                &stats.links,
            ),
            (
                "traces_service_graph_unpaired_spans_total",
                "Server or consumer spans whose caller never arrived within the wait.",
                &stats.unpaired_callees,
            ),
            (
                "tracelake_service_graph_expired_links_total",
                "Span links whose producer never arrived within the wait.",
                &stats.expired_links,
            ),
            (
                "tracelake_service_graph_evicted_total",
                "Waiting spans expired early because max_pending was reached.",
                &stats.evicted_early,
            ),
            (
                "tracelake_service_graph_in_progress_skipped_total",
                "X-Ray in-progress segments left out until they complete.",
                &stats.in_progress_skipped,
            ),
            (
                "tracelake_service_graph_unreadable_batches_total",
                "Stored span batches the aggregation could not read.",
                &stats.unreadable_batches,
            ),
            (
                "tracelake_derived_rows_written_total",
                "Rows written to the edges and span_metrics tables.",
                &stats.rows_written,
            ),
            (
                "tracelake_derived_write_failures_total",
                "Failed writes of derived rows (retried at the next flush).",
                &stats.write_failures,
            ),
        ];
        for (name, help, counter) in families {
            encode_plain_counter(encoder, name, help, load(counter))?;
        }
        Ok(())
    }
}

/// The minute of the oldest span still waiting for its other side
/// (`i64::MAX` when none waits). Linear in the waiting spans, which are
/// bounded by `max_pending`; called once per tick.
fn oldest_waiting_minute(state: &State) -> i64 {
    let mut oldest = i64::MAX;
    for tenant_state in state.tenants.values() {
        let callers = tenant_state.callers.values();
        let consumers = tenant_state.links.values().flatten();
        for span in callers.chain(consumers) {
            oldest = oldest.min(span.start_ns);
        }
        // A waiting callee's edge takes its caller's minute, which began
        // before the callee: up to a minute earlier is held back too.
        for span in tenant_state.callees.values().flatten() {
            oldest = oldest.min(span.start_ns.saturating_sub(NANOS_PER_MINUTE));
        }
    }
    if oldest == i64::MAX {
        oldest
    } else {
        minute_of(oldest)
    }
}

async fn write_rows(
    writer: &dyn DerivedWriter,
    tenant: &str,
    table: DerivedTable,
    batch: impl FnOnce() -> tracelake_storage::Result<RecordBatch>,
) -> Result<u64, ()> {
    let batch = match batch() {
        Ok(batch) if batch.num_rows() == 0 => return Ok(0),
        Ok(batch) => batch,
        Err(error) => {
            tracing::error!(%error, table = table.name(), "derived rows not encoded");
            return Err(());
        }
    };
    let rows = batch.num_rows() as u64;
    match writer.write_derived(tenant, table, batch).await {
        Ok(()) => Ok(rows),
        Err(error) => {
            tracing::error!(%error, %tenant, table = table.name(), "derived rows not written; retrying at the next flush");
            Err(())
        }
    }
}

fn wall_clock_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A stored batch on its way to the aggregation, with the minute it holds
/// open (its earliest start).
#[derive(Debug)]
pub struct QueuedBatch {
    tenant: String,
    batch: RecordBatch,
    held_minute: Option<i64>,
}

/// The earliest start minute of a span batch.
fn earliest_minute(batch: &RecordBatch) -> Option<i64> {
    let starts = batch
        .column_by_name(tracelake_model::schema::col::START_TIME)?
        .as_any()
        .downcast_ref::<datafusion::arrow::array::TimestampNanosecondArray>()?;
    datafusion::arrow::compute::min(starts).map(minute_of)
}

/// A [`SpanWriter`] that hands every stored batch to the aggregation.
///
/// Before a batch becomes visible, its earliest minute is marked in flight
/// (no flush closes it until the batch is observed) and the derived
/// watermark is lowered to it, so a reader never takes the precomputed rows
/// of a minute that spans are still being counted into: until they are
/// written, that minute is recomputed from raw spans. The queue is
/// bounded, so a slow aggregation slows ingest down instead of growing
/// memory.
#[derive(Debug)]
pub struct AggregatingWriter {
    inner: Arc<dyn SpanWriter>,
    derived: Arc<dyn DerivedWriter>,
    aggregator: Arc<Aggregator>,
    batches: mpsc::Sender<QueuedBatch>,
}

impl AggregatingWriter {
    /// The writer and the receiving end for [`Aggregator::run`].
    pub fn new(
        inner: Arc<dyn SpanWriter>,
        derived: Arc<dyn DerivedWriter>,
        aggregator: Arc<Aggregator>,
    ) -> (Self, mpsc::Receiver<QueuedBatch>) {
        let (batches, receiver) = mpsc::channel(aggregator.config.queue_batches.max(1));
        (
            Self {
                inner,
                derived,
                aggregator,
                batches,
            },
            receiver,
        )
    }
}

#[async_trait]
impl SpanWriter for AggregatingWriter {
    async fn append(&self, tenant: &str, batch: RecordBatch) -> tracelake_storage::Result<()> {
        let held_minute = earliest_minute(&batch);
        if let Some(minute) = held_minute {
            self.aggregator.hold_minute(minute);
            self.derived.lower_derived_complete_before(minute);
        }
        if let Err(error) = self.inner.append(tenant, batch.clone()).await {
            if let Some(minute) = held_minute {
                self.aggregator.release_minute(minute);
            }
            return Err(error);
        }
        let queued = QueuedBatch {
            tenant: tenant.to_string(),
            batch,
            held_minute,
        };
        if let Err(mpsc::error::SendError(unsent)) = self.batches.send(queued).await {
            // The aggregation stopped (shutdown): the spans are stored; only
            // the precomputed rows miss them, and raw recompute covers that.
            if let Some(minute) = unsent.held_minute {
                self.aggregator.release_minute(minute);
            }
            tracing::debug!("service map aggregation stopped; batch not aggregated");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use tracelake_model::otlp::resource_spans_to_batch;

    use super::*;

    fn batch(service: &str, spans: Vec<Span>) -> RecordBatch {
        let resource_spans = vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(service.into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }];
        resource_spans_to_batch("t", &resource_spans)
            .unwrap()
            .batch
            .unwrap()
    }

    fn span(trace: u8, id: u8, parent: Option<u8>, kind: i32) -> Span {
        Span {
            trace_id: vec![trace; 16],
            span_id: vec![id; 8],
            parent_span_id: parent.map(|parent| vec![parent; 8]).unwrap_or_default(),
            name: format!("span {id}"),
            kind,
            start_time_unix_nano: 1_700_000_000_000_000_000,
            end_time_unix_nano: 1_700_000_000_010_000_000,
            ..Default::default()
        }
    }

    fn edges(aggregator: &Aggregator) -> Vec<String> {
        let state = aggregator.state.lock();
        let mut edges: Vec<String> = state
            .totals
            .get("t")
            .map(|totals| {
                totals
                    .edges
                    .rows
                    .iter()
                    .map(|(key, stats)| {
                        format!(
                            "{} -> {} x{}",
                            key.client.name, key.server.name, stats.counts.total
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        edges.sort();
        edges
    }

    #[test]
    fn pairs_in_either_order_and_infers_what_nobody_answered() {
        let aggregator = Aggregator::new(AggregateConfig {
            wait: Duration::from_secs(5),
            ..AggregateConfig::default()
        });
        let now = Instant::now();
        // Callee before caller in trace 1, caller before callee in trace 2.
        aggregator.observe_batch("t", &batch("api", vec![span(1, 3, Some(2), 2)]), now);
        aggregator.observe_batch(
            "t",
            &batch("web", vec![span(1, 1, None, 2), span(1, 2, Some(1), 3)]),
            now,
        );
        aggregator.observe_batch(
            "t",
            &batch(
                "web",
                vec![
                    span(2, 1, None, 2),
                    span(2, 2, Some(1), 3),
                    span(2, 4, Some(1), 3),
                ],
            ),
            now,
        );
        aggregator.observe_batch("t", &batch("api", vec![span(2, 3, Some(2), 2)]), now);
        assert_eq!(
            edges(&aggregator),
            vec!["client -> web x2", "web -> api x2"]
        );
        // Span 4 of trace 2 waits; once the wait is over it calls an
        // inferred node named after the span.
        {
            let mut state = aggregator.state.lock();
            aggregator.expire(&mut state, now + Duration::from_secs(4));
        }
        assert_eq!(edges(&aggregator).len(), 2);
        {
            let mut state = aggregator.state.lock();
            aggregator.expire(&mut state, now + Duration::from_secs(6));
        }
        assert_eq!(
            edges(&aggregator),
            vec!["client -> web x2", "web -> api x2", "web -> span 4 x1"]
        );
        let stats = aggregator.stats();
        assert_eq!(stats.paired.load(Ordering::Relaxed), 2);
        assert_eq!(stats.inferred.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn waiting_spans_are_bounded() {
        let aggregator = Aggregator::new(AggregateConfig {
            max_pending: 10,
            ..AggregateConfig::default()
        });
        let now = Instant::now();
        // 50 callees whose callers never come.
        let orphans: Vec<Span> = (1..=50).map(|id| span(9, id, Some(id + 100), 2)).collect();
        aggregator.observe_batch("t", &batch("api", orphans), now);
        let state = aggregator.state.lock();
        assert!(state.pending <= 10, "{} pending", state.pending);
        let stats = aggregator.stats();
        assert_eq!(stats.evicted_early.load(Ordering::Relaxed), 40);
        assert_eq!(stats.unpaired_callees.load(Ordering::Relaxed), 40);
    }
}

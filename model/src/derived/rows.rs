//! The rows of the derived tables, the sets that aggregate them, and their
//! Arrow form.
//!
//! `edges` (one row per minute and edge):
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `minute` | Timestamp(ns, UTC) | start of the minute of the caller's start time (the server span's for root edges, the consumer's for links) |
//! | `tenant` | Utf8 | owner |
//! | `client`, `client_type` | Utf8 | calling node (`client`/`client` in front of roots) |
//! | `server`, `server_type` | Utf8 | called node (inferred for unanswered calls) |
//! | `connection_type` | Utf8 | Tempo's label: `""`, `messaging_system`, `database`, `virtual_node` |
//! | `edge_type` | Utf8 | `standard`, or `link` for an edge found through a span link |
//! | `requests` | Int64 | calls |
//! | `ok`, `errors`, `throttles`, `faults` | Int64 | X-Ray outcome counts from the caller's side (a throttle is also an error) |
//! | `failed` | Int64 | Tempo's failed requests: either side has error status |
//! | `client_duration_sum_ns`, `server_duration_sum_ns` | Int64 | summed durations |
//! | `client_latency`, `server_latency` | Binary, null | hdrhistogram V2 ([`LatencyHistogram`]); no server side for inferred nodes |
//!
//! `span_metrics` (one row per minute and service, span name, kind and status):
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `minute`, `tenant` | | as above, of the span's start |
//! | `service`, `service_type` | Utf8 | the span's service (type as X-Ray names it, empty when unknown) |
//! | `span_name`, `span_kind`, `status_code` | Utf8 | as the span table stores them |
//! | `entry` | Boolean | server/consumer spans and roots: where requests enter a service (a node's own statistics) |
//! | `calls`, `ok`, `errors`, `throttles`, `faults`, `duration_sum_ns` | Int64 | counts and summed durations |
//! | `latency` | Binary | hdrhistogram V2 |
//!
//! Rows of the same key may appear more than once (late spans flush as new
//! rows of their old minute); readers sum them.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BinaryBuilder, BooleanArray, BooleanBuilder, Int64Array,
    Int64Builder, RecordBatch, StringArray, StringBuilder, TimestampNanosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimestampNanosecondType};

use super::facts::{ConnectionType, Node, Outcome, SpanFacts, infer_peer, kind_name, status_name};
use super::histogram::LatencyHistogram;
use crate::schema::timestamp_type;
use crate::{ModelError, Result};

pub const NANOS_PER_MINUTE: i64 = 60_000_000_000;

/// The start of the minute holding `time_ns`.
pub fn minute_of(time_ns: i64) -> i64 {
    time_ns.div_euclid(NANOS_PER_MINUTE) * NANOS_PER_MINUTE
}

/// Column names of the derived tables.
pub mod col {
    pub const MINUTE: &str = "minute";
    pub const TENANT: &str = "tenant";
    pub const CLIENT: &str = "client";
    pub const CLIENT_TYPE: &str = "client_type";
    pub const SERVER: &str = "server";
    pub const SERVER_TYPE: &str = "server_type";
    pub const CONNECTION_TYPE: &str = "connection_type";
    pub const EDGE_TYPE: &str = "edge_type";
    pub const REQUESTS: &str = "requests";
    pub const OK: &str = "ok";
    pub const ERRORS: &str = "errors";
    pub const THROTTLES: &str = "throttles";
    pub const FAULTS: &str = "faults";
    pub const FAILED: &str = "failed";
    pub const CLIENT_DURATION_SUM_NS: &str = "client_duration_sum_ns";
    pub const SERVER_DURATION_SUM_NS: &str = "server_duration_sum_ns";
    pub const CLIENT_LATENCY: &str = "client_latency";
    pub const SERVER_LATENCY: &str = "server_latency";
    pub const SERVICE: &str = "service";
    pub const SERVICE_TYPE: &str = "service_type";
    pub const SPAN_NAME: &str = "span_name";
    pub const SPAN_KIND: &str = "span_kind";
    pub const STATUS_CODE: &str = "status_code";
    pub const ENTRY: &str = "entry";
    pub const CALLS: &str = "calls";
    pub const DURATION_SUM_NS: &str = "duration_sum_ns";
    pub const LATENCY: &str = "latency";
}

static EDGES_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let utf8 = |name: &str| Field::new(name, DataType::Utf8, false);
    let count = |name: &str| Field::new(name, DataType::Int64, false);
    Arc::new(Schema::new(vec![
        Field::new(col::MINUTE, timestamp_type(), false),
        utf8(col::TENANT),
        utf8(col::CLIENT),
        utf8(col::CLIENT_TYPE),
        utf8(col::SERVER),
        utf8(col::SERVER_TYPE),
        utf8(col::CONNECTION_TYPE),
        utf8(col::EDGE_TYPE),
        count(col::REQUESTS),
        count(col::OK),
        count(col::ERRORS),
        count(col::THROTTLES),
        count(col::FAULTS),
        count(col::FAILED),
        count(col::CLIENT_DURATION_SUM_NS),
        count(col::SERVER_DURATION_SUM_NS),
        Field::new(col::CLIENT_LATENCY, DataType::Binary, true),
        Field::new(col::SERVER_LATENCY, DataType::Binary, true),
    ]))
});

static SPAN_METRICS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let utf8 = |name: &str| Field::new(name, DataType::Utf8, false);
    let count = |name: &str| Field::new(name, DataType::Int64, false);
    Arc::new(Schema::new(vec![
        Field::new(col::MINUTE, timestamp_type(), false),
        utf8(col::TENANT),
        utf8(col::SERVICE),
        utf8(col::SERVICE_TYPE),
        utf8(col::SPAN_NAME),
        utf8(col::SPAN_KIND),
        utf8(col::STATUS_CODE),
        Field::new(col::ENTRY, DataType::Boolean, false),
        count(col::CALLS),
        count(col::OK),
        count(col::ERRORS),
        count(col::THROTTLES),
        count(col::FAULTS),
        count(col::DURATION_SUM_NS),
        Field::new(col::LATENCY, DataType::Binary, true),
    ]))
});

pub fn edges_schema() -> SchemaRef {
    Arc::clone(&EDGES_SCHEMA)
}

pub fn span_metrics_schema() -> SchemaRef {
    Arc::clone(&SPAN_METRICS_SCHEMA)
}

/// X-Ray outcome counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutcomeCounts {
    pub total: i64,
    pub ok: i64,
    pub errors: i64,
    pub throttles: i64,
    pub faults: i64,
}

impl OutcomeCounts {
    pub fn add(&mut self, outcome: Outcome) {
        self.total += 1;
        self.ok += i64::from(outcome.is_ok());
        self.errors += i64::from(outcome.error);
        self.throttles += i64::from(outcome.throttle);
        self.faults += i64::from(outcome.fault);
    }

    pub fn merge(&mut self, other: &Self) {
        self.total += other.total;
        self.ok += other.ok;
        self.errors += other.errors;
        self.throttles += other.throttles;
        self.faults += other.faults;
    }
}

/// Identifies one row of `edges`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EdgeKey {
    pub minute_ns: i64,
    pub client: Node,
    pub server: Node,
    pub connection: ConnectionType,
    pub link: bool,
}

/// What one row of `edges` counts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EdgeStats {
    pub counts: OutcomeCounts,
    pub failed: i64,
    pub client_duration_sum_ns: i64,
    pub server_duration_sum_ns: i64,
    pub client_latency: LatencyHistogram,
    pub server_latency: LatencyHistogram,
}

impl EdgeStats {
    pub fn merge(&mut self, other: &Self) {
        self.counts.merge(&other.counts);
        self.failed += other.failed;
        self.client_duration_sum_ns += other.client_duration_sum_ns;
        self.server_duration_sum_ns += other.server_duration_sum_ns;
        self.client_latency.merge(&other.client_latency);
        self.server_latency.merge(&other.server_latency);
    }

    fn record(&mut self, outcome: Outcome, failed: bool, client_ns: i64, server_ns: Option<i64>) {
        self.counts.add(outcome);
        self.failed += i64::from(failed);
        self.client_duration_sum_ns += client_ns;
        self.client_latency.record_ns(client_ns);
        if let Some(server_ns) = server_ns {
            self.server_duration_sum_ns += server_ns;
            self.server_latency.record_ns(server_ns);
        }
    }
}

/// A key of a per-minute row.
pub trait MinuteKey: Clone + Eq + std::hash::Hash {
    fn minute_mut(&mut self) -> &mut i64;
    fn minute(&self) -> i64;
}

/// What a row counts: rows of the same key merge.
pub trait RowStats: Default {
    fn merge(&mut self, other: &Self);
}

/// Rows of one tenant keyed by minute and more ([`EdgeSet`],
/// [`SpanMetricSet`]); or, made with [`MinuteRows::totals`], running totals
/// since start with every minute as minute 0 (the Prometheus series).
#[derive(Debug, Clone)]
pub struct MinuteRows<K, V> {
    pub rows: HashMap<K, V>,
    totals: Option<Totals>,
}

impl<K: Eq + std::hash::Hash, V: PartialEq> PartialEq for MinuteRows<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.rows == other.rows && self.totals == other.totals
    }
}

impl<K, V> Default for MinuteRows<K, V> {
    fn default() -> Self {
        Self {
            rows: HashMap::new(),
            totals: None,
        }
    }
}

/// How a totals set bounds its series.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Totals {
    max_series: usize,
    dropped: u64,
}

impl<K: MinuteKey, V: RowStats> MinuteRows<K, V> {
    /// Running totals since start holding at most `max_series` keys; what
    /// further keys would add is dropped and counted ([`MinuteRows::dropped`]).
    pub fn totals(max_series: usize) -> Self {
        Self {
            rows: HashMap::new(),
            totals: Some(Totals {
                max_series,
                dropped: 0,
            }),
        }
    }

    /// Additions dropped because a totals set was full.
    pub fn dropped(&self) -> u64 {
        self.totals.map_or(0, |totals| totals.dropped)
    }

    /// The stats of `key` (minute 0 in a totals set); `None` when a totals
    /// set is full.
    fn slot(&mut self, mut key: K) -> Option<&mut V> {
        if let Some(totals) = &mut self.totals {
            *key.minute_mut() = 0;
            if self.rows.len() >= totals.max_series && !self.rows.contains_key(&key) {
                totals.dropped += 1;
                return None;
            }
        }
        Some(self.rows.entry(key).or_default())
    }

    pub fn merge_row(&mut self, key: K, stats: &V) {
        if let Some(slot) = self.slot(key) {
            slot.merge(stats);
        }
    }

    pub fn merge(&mut self, other: &Self) {
        for (key, stats) in &other.rows {
            self.merge_row(key.clone(), stats);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Removes and returns the rows of minutes before `minute_ns`.
    pub fn take_before(&mut self, minute_ns: i64) -> Self {
        let mut taken = Self::default();
        self.rows.retain(|key, stats| {
            if key.minute() < minute_ns {
                taken.rows.insert(key.clone(), std::mem::take(stats));
                false
            } else {
                true
            }
        });
        taken
    }
}

impl MinuteKey for EdgeKey {
    fn minute_mut(&mut self) -> &mut i64 {
        &mut self.minute_ns
    }

    fn minute(&self) -> i64 {
        self.minute_ns
    }
}

impl RowStats for EdgeStats {
    fn merge(&mut self, other: &Self) {
        EdgeStats::merge(self, other);
    }
}

/// Edges of one tenant, keyed by minute and endpoints.
pub type EdgeSet = MinuteRows<EdgeKey, EdgeStats>;

impl EdgeSet {
    pub fn add_paired(&mut self, caller: &SpanFacts, callee: &SpanFacts) {
        let connection = if caller.kind == "producer" || callee.kind == "consumer" {
            ConnectionType::MessagingSystem
        } else {
            ConnectionType::Direct
        };
        let key = EdgeKey {
            minute_ns: minute_of(caller.start_ns),
            client: caller.service.clone(),
            server: callee.service.clone(),
            connection,
            link: false,
        };
        if let Some(stats) = self.slot(key) {
            stats.record(
                caller.outcome,
                caller.is_failed() || callee.is_failed(),
                caller.duration_ns,
                Some(callee.duration_ns),
            );
        }
    }

    /// A caller nobody instrumented answered: the callee is inferred.
    pub fn add_inferred(&mut self, caller: &SpanFacts) {
        let Some(inputs) = &caller.peer else {
            debug_assert!(false, "only callers have peer inputs");
            return;
        };
        let (server, connection) = infer_peer(inputs);
        let key = EdgeKey {
            minute_ns: minute_of(caller.start_ns),
            client: caller.service.clone(),
            server,
            connection,
            link: false,
        };
        if let Some(stats) = self.slot(key) {
            stats.record(caller.outcome, caller.is_failed(), caller.duration_ns, None);
        }
    }

    /// A root: the `client` node called it; both latencies are the root's.
    pub fn add_root(&mut self, root: &SpanFacts) {
        let key = EdgeKey {
            minute_ns: minute_of(root.start_ns),
            client: Node::client(),
            server: root.service.clone(),
            connection: ConnectionType::VirtualNode,
            link: false,
        };
        if let Some(stats) = self.slot(key) {
            stats.record(
                root.outcome,
                root.is_failed(),
                root.duration_ns,
                Some(root.duration_ns),
            );
        }
    }

    /// A consumer that links to a producer: an asynchronous edge, counted
    /// from the consumer's side (the producer finished long before).
    pub fn add_link(&mut self, producer: &Node, consumer: &SpanFacts) {
        let key = EdgeKey {
            minute_ns: minute_of(consumer.start_ns),
            client: producer.clone(),
            server: consumer.service.clone(),
            connection: ConnectionType::MessagingSystem,
            link: true,
        };
        if let Some(stats) = self.slot(key) {
            stats.record(
                consumer.outcome,
                consumer.is_failed(),
                consumer.duration_ns,
                Some(consumer.duration_ns),
            );
        }
    }

    /// The rows as an `edges` batch, sorted by key.
    pub fn to_batch(&self, tenant: &str) -> Result<RecordBatch> {
        let mut rows: Vec<(&EdgeKey, &EdgeStats)> = self.rows.iter().collect();
        rows.sort_by(|left, right| left.0.cmp(right.0));
        let mut minute = TimestampNanosecondBuilder::new().with_timezone("UTC");
        let mut texts: [StringBuilder; 7] = Default::default();
        let mut counts: [Int64Builder; 8] = Default::default();
        let mut latencies: [BinaryBuilder; 2] = Default::default();
        for (key, stats) in rows {
            minute.append_value(key.minute_ns);
            let text_values = [
                tenant,
                &key.client.name,
                &key.client.node_type,
                &key.server.name,
                &key.server.node_type,
                key.connection.as_str(),
                if key.link { "link" } else { "standard" },
            ];
            for (builder, value) in texts.iter_mut().zip(text_values) {
                builder.append_value(value);
            }
            let count_values = [
                stats.counts.total,
                stats.counts.ok,
                stats.counts.errors,
                stats.counts.throttles,
                stats.counts.faults,
                stats.failed,
                stats.client_duration_sum_ns,
                stats.server_duration_sum_ns,
            ];
            for (builder, value) in counts.iter_mut().zip(count_values) {
                builder.append_value(value);
            }
            for (builder, histogram) in latencies
                .iter_mut()
                .zip([&stats.client_latency, &stats.server_latency])
            {
                append_histogram(builder, histogram);
            }
        }
        let mut columns: Vec<ArrayRef> = vec![Arc::new(minute.finish())];
        columns.extend(texts.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
        columns.extend(counts.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
        columns.extend(
            latencies
                .iter_mut()
                .map(|b| Arc::new(b.finish()) as ArrayRef),
        );
        Ok(RecordBatch::try_new(edges_schema(), columns)?)
    }

    /// Adds the rows of an `edges` batch (or of a query with its columns).
    pub fn merge_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        let columns = DerivedColumns { batch };
        let minute = columns.minutes()?;
        let [
            client,
            client_type,
            server,
            server_type,
            connection,
            edge_type,
        ] = [
            col::CLIENT,
            col::CLIENT_TYPE,
            col::SERVER,
            col::SERVER_TYPE,
            col::CONNECTION_TYPE,
            col::EDGE_TYPE,
        ]
        .map(|name| columns.strings(name));
        let [
            total,
            ok,
            errors,
            throttles,
            faults,
            failed,
            client_sum,
            server_sum,
        ] = [
            col::REQUESTS,
            col::OK,
            col::ERRORS,
            col::THROTTLES,
            col::FAULTS,
            col::FAILED,
            col::CLIENT_DURATION_SUM_NS,
            col::SERVER_DURATION_SUM_NS,
        ]
        .map(|name| columns.ints(name));
        let (client_latency, server_latency) = (
            columns.binary(col::CLIENT_LATENCY)?,
            columns.binary(col::SERVER_LATENCY)?,
        );
        let (client, client_type, server, server_type, connection, edge_type) = (
            client?,
            client_type?,
            server?,
            server_type?,
            connection?,
            edge_type?,
        );
        let (total, ok, errors, throttles, faults, failed, client_sum, server_sum) = (
            total?,
            ok?,
            errors?,
            throttles?,
            faults?,
            failed?,
            client_sum?,
            server_sum?,
        );
        for row in 0..batch.num_rows() {
            let connection_type =
                ConnectionType::parse(connection.value(row)).ok_or_else(|| {
                    ModelError::Corrupt(format!(
                        "edges: unknown connection type {:?}",
                        connection.value(row)
                    ))
                })?;
            let key = EdgeKey {
                minute_ns: minute_of(minute.value(row)),
                client: Node {
                    name: client.value(row).to_string(),
                    node_type: client_type.value(row).to_string(),
                },
                server: Node {
                    name: server.value(row).to_string(),
                    node_type: server_type.value(row).to_string(),
                },
                connection: connection_type,
                link: edge_type.value(row) == "link",
            };
            let stats = EdgeStats {
                counts: OutcomeCounts {
                    total: total.value(row),
                    ok: ok.value(row),
                    errors: errors.value(row),
                    throttles: throttles.value(row),
                    faults: faults.value(row),
                },
                failed: failed.value(row),
                client_duration_sum_ns: client_sum.value(row),
                server_duration_sum_ns: server_sum.value(row),
                client_latency: read_histogram(client_latency, row)?,
                server_latency: read_histogram(server_latency, row)?,
            };
            self.merge_row(key, &stats);
        }
        Ok(())
    }
}

/// Identifies one row of `span_metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpanMetricKey {
    pub minute_ns: i64,
    pub service: Node,
    pub span_name: String,
    pub span_kind: &'static str,
    pub status_code: &'static str,
    pub entry: bool,
}

/// What one row of `span_metrics` counts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpanMetricStats {
    pub counts: OutcomeCounts,
    pub duration_sum_ns: i64,
    pub latency: LatencyHistogram,
}

impl SpanMetricStats {
    pub fn merge(&mut self, other: &Self) {
        self.counts.merge(&other.counts);
        self.duration_sum_ns += other.duration_sum_ns;
        self.latency.merge(&other.latency);
    }
}

impl MinuteKey for SpanMetricKey {
    fn minute_mut(&mut self) -> &mut i64 {
        &mut self.minute_ns
    }

    fn minute(&self) -> i64 {
        self.minute_ns
    }
}

impl RowStats for SpanMetricStats {
    fn merge(&mut self, other: &Self) {
        SpanMetricStats::merge(self, other);
    }
}

/// Span metrics of one tenant.
pub type SpanMetricSet = MinuteRows<SpanMetricKey, SpanMetricStats>;

impl SpanMetricSet {
    pub fn add(&mut self, span: &SpanFacts) {
        let key = SpanMetricKey {
            minute_ns: minute_of(span.start_ns),
            service: span.service.clone(),
            span_name: span.name.clone(),
            span_kind: span.kind,
            status_code: span.status_code,
            entry: span.is_entry(),
        };
        let Some(stats) = self.slot(key) else {
            return;
        };
        stats.counts.add(span.outcome);
        stats.duration_sum_ns += span.duration_ns;
        stats.latency.record_ns(span.duration_ns);
    }

    /// The rows as a `span_metrics` batch, sorted by key.
    pub fn to_batch(&self, tenant: &str) -> Result<RecordBatch> {
        let mut rows: Vec<(&SpanMetricKey, &SpanMetricStats)> = self.rows.iter().collect();
        rows.sort_by(|left, right| left.0.cmp(right.0));
        let mut minute = TimestampNanosecondBuilder::new().with_timezone("UTC");
        let mut texts: [StringBuilder; 6] = Default::default();
        let mut entry = BooleanBuilder::new();
        let mut counts: [Int64Builder; 6] = Default::default();
        let mut latency = BinaryBuilder::new();
        for (key, stats) in rows {
            minute.append_value(key.minute_ns);
            let text_values = [
                tenant,
                &key.service.name,
                &key.service.node_type,
                &key.span_name,
                key.span_kind,
                key.status_code,
            ];
            for (builder, value) in texts.iter_mut().zip(text_values) {
                builder.append_value(value);
            }
            entry.append_value(key.entry);
            let count_values = [
                stats.counts.total,
                stats.counts.ok,
                stats.counts.errors,
                stats.counts.throttles,
                stats.counts.faults,
                stats.duration_sum_ns,
            ];
            for (builder, value) in counts.iter_mut().zip(count_values) {
                builder.append_value(value);
            }
            append_histogram(&mut latency, &stats.latency);
        }
        let mut columns: Vec<ArrayRef> = vec![Arc::new(minute.finish())];
        columns.extend(texts.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
        columns.push(Arc::new(entry.finish()));
        columns.extend(counts.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
        columns.push(Arc::new(latency.finish()));
        Ok(RecordBatch::try_new(span_metrics_schema(), columns)?)
    }

    /// Adds the rows of a `span_metrics` batch (or of a query with its columns).
    pub fn merge_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        let columns = DerivedColumns { batch };
        let minute = columns.minutes()?;
        let service = columns.strings(col::SERVICE)?;
        let service_type = columns.strings(col::SERVICE_TYPE)?;
        let span_name = columns.strings(col::SPAN_NAME)?;
        let span_kind = columns.strings(col::SPAN_KIND)?;
        let status_code = columns.strings(col::STATUS_CODE)?;
        let entry = columns.booleans(col::ENTRY)?;
        let [calls, ok, errors, throttles, faults, duration_sum] = [
            col::CALLS,
            col::OK,
            col::ERRORS,
            col::THROTTLES,
            col::FAULTS,
            col::DURATION_SUM_NS,
        ]
        .map(|name| columns.ints(name));
        let (calls, ok, errors, throttles, faults, duration_sum) =
            (calls?, ok?, errors?, throttles?, faults?, duration_sum?);
        let latency = columns.binary(col::LATENCY)?;
        for row in 0..batch.num_rows() {
            let key = SpanMetricKey {
                minute_ns: minute_of(minute.value(row)),
                service: Node {
                    name: service.value(row).to_string(),
                    node_type: service_type.value(row).to_string(),
                },
                span_name: span_name.value(row).to_string(),
                span_kind: kind_name(span_kind.value(row)),
                status_code: status_name(status_code.value(row)),
                entry: entry.value(row),
            };
            let stats = SpanMetricStats {
                counts: OutcomeCounts {
                    total: calls.value(row),
                    ok: ok.value(row),
                    errors: errors.value(row),
                    throttles: throttles.value(row),
                    faults: faults.value(row),
                },
                duration_sum_ns: duration_sum.value(row),
                latency: read_histogram(latency, row)?,
            };
            self.merge_row(key, &stats);
        }
        Ok(())
    }
}

fn append_histogram(builder: &mut BinaryBuilder, histogram: &LatencyHistogram) {
    if histogram.is_empty() {
        builder.append_null();
    } else {
        builder.append_value(histogram.encode());
    }
}

fn read_histogram(array: &BinaryArray, row: usize) -> Result<LatencyHistogram> {
    if array.is_null(row) || array.value(row).is_empty() {
        return Ok(LatencyHistogram::new());
    }
    LatencyHistogram::decode(array.value(row))
}

/// Typed access to a derived batch's columns by name, with an error naming
/// the column when it is missing or of another type.
struct DerivedColumns<'a> {
    batch: &'a RecordBatch,
}

impl<'a> DerivedColumns<'a> {
    fn get(&self, name: &str) -> Result<&'a ArrayRef> {
        self.batch
            .column_by_name(name)
            .ok_or_else(|| ModelError::Corrupt(format!("derived column {name} missing")))
    }

    fn mistyped(name: &str) -> ModelError {
        ModelError::Corrupt(format!("derived column {name} has the wrong type"))
    }

    fn minutes(
        &self,
    ) -> Result<&'a datafusion::arrow::array::PrimitiveArray<TimestampNanosecondType>> {
        self.get(col::MINUTE)?
            .as_primitive_opt()
            .ok_or_else(|| Self::mistyped(col::MINUTE))
    }

    fn strings(&self, name: &str) -> Result<&'a StringArray> {
        self.get(name)?
            .as_string_opt()
            .ok_or_else(|| Self::mistyped(name))
    }

    fn ints(&self, name: &str) -> Result<&'a Int64Array> {
        self.get(name)?
            .as_primitive_opt()
            .ok_or_else(|| Self::mistyped(name))
    }

    fn booleans(&self, name: &str) -> Result<&'a BooleanArray> {
        self.get(name)?
            .as_boolean_opt()
            .ok_or_else(|| Self::mistyped(name))
    }

    fn binary(&self, name: &str) -> Result<&'a BinaryArray> {
        self.get(name)?
            .as_binary_opt()
            .ok_or_else(|| Self::mistyped(name))
    }
}

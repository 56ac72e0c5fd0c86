//! The service map's rows for any window: from the precomputed `edges` and
//! `span_metrics` tables where the streaming aggregation has written them,
//! recomputed from raw spans through SQL everywhere else.
//!
//! ```text
//!  window [from, to]
//!  |-- partial minute --|==== whole minutes before the watermark ====|-- after the watermark --|
//!        raw spans                precomputed rows                          raw spans
//! ```
//!
//! The recompute joins spans with themselves on trace id + parent span id
//! and aggregates with the same rules as the streaming path
//! ([`tracelake_model::derived`]): the inferred node of an unanswered
//! call is named in Rust by [`infer_peer`] from the attributes SQL groups
//! by, and histograms are built by the `tracelake_latency` aggregate, so
//! both paths produce identical rows for the same spans.
//!
//! [`infer_peer`]: tracelake_model::derived::infer_peer

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::prelude::{SessionContext, col};
use tracelake_model::derived::{
    EdgeKey, EdgeSet, EdgeStats, NANOS_PER_MINUTE, Node, OutcomeCounts, PeerInputs, SpanMetricSet,
    col as derived_col, infer_peer, minute_of,
};
use tracelake_storage::DerivedTable;
use tracelake_storage::SpanReader;

use crate::exprs::{starts_within, timestamp_ns};
use crate::xray_filter::TraceView;
use crate::{QueryError, Result, session_for_tenant};

/// How far after the window a callee may start, and before it a linked
/// producer: the recompute pairs across the window's edges like the
/// streaming path pairs within its wait.
const PAIRING_SLACK_NS: i64 = 5 * NANOS_PER_MINUTE;

/// Where the rows came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Source {
    /// Precomputed rows where they exist, raw spans elsewhere.
    #[default]
    Auto,
    /// Precomputed rows only (whole minutes; minutes after the watermark
    /// are missing).
    Precomputed,
    /// Raw spans only.
    Raw,
}

impl Source {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "auto" => Some(Self::Auto),
            "precomputed" => Some(Self::Precomputed),
            "raw" => Some(Self::Raw),
            _ => None,
        }
    }
}

/// Edges and span metrics of one tenant over a window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DerivedRows {
    pub edges: EdgeSet,
    pub spans: SpanMetricSet,
}

impl DerivedRows {
    fn merge(&mut self, other: &Self) {
        self.edges.merge(&other.edges);
        self.spans.merge(&other.spans);
    }
}

/// The rows of `[from_ns, to_ns]` (inclusive), by minute.
pub async fn derived_rows(
    reader: Arc<dyn SpanReader>,
    tenant: &str,
    (from_ns, to_ns): (i64, i64),
    source: Source,
) -> Result<DerivedRows> {
    let context = session_for_tenant(Arc::clone(&reader), tenant)?;
    match source {
        Source::Raw => recompute(&context, from_ns, to_ns).await,
        Source::Precomputed => {
            precomputed(
                &context,
                minute_of(from_ns),
                minute_of(to_ns).saturating_add(NANOS_PER_MINUTE),
            )
            .await
        }
        Source::Auto => {
            let watermark = reader.derived_complete_before_ns();
            // Whole minutes inside the window and before the watermark.
            let first_whole = minute_of(from_ns.saturating_add(NANOS_PER_MINUTE - 1));
            let end_whole = minute_of(to_ns.saturating_add(1)).min(watermark);
            if first_whole >= end_whole {
                return recompute(&context, from_ns, to_ns).await;
            }
            let mut rows = precomputed(&context, first_whole, end_whole).await?;
            if from_ns < first_whole {
                rows.merge(&recompute(&context, from_ns, first_whole - 1).await?);
            }
            if end_whole <= to_ns {
                rows.merge(&recompute(&context, end_whole, to_ns).await?);
            }
            Ok(rows)
        }
    }
}

/// Precomputed rows of minutes in `[from_minute, end_minute)`.
async fn precomputed(
    context: &SessionContext,
    from_minute: i64,
    end_minute: i64,
) -> Result<DerivedRows> {
    let mut fetched = Fetched::default();
    for table in [DerivedTable::Edges, DerivedTable::SpanMetrics] {
        let batches = context
            .table(table.name())
            .await?
            .filter(
                col(derived_col::MINUTE)
                    .gt_eq(timestamp_ns(from_minute))
                    .and(col(derived_col::MINUTE).lt(timestamp_ns(end_minute))),
            )?
            .collect()
            .await?;
        match table {
            DerivedTable::Edges => fetched.edges.extend(batches),
            _ => fetched.spans.extend(batches),
        }
    }
    fetched.into_rows().await
}

/// Query answers in the derived tables' column layout, merged into
/// [`DerivedRows`] off the reactor (every row decodes histograms).
#[derive(Default)]
struct Fetched {
    edges: Vec<RecordBatch>,
    spans: Vec<RecordBatch>,
    /// Unanswered calls, still to be named by `infer_peer`.
    unanswered: Vec<RecordBatch>,
    /// Link edges in the edges layout plus the producer's peer columns,
    /// their client still to be named by `link_source`.
    links: Vec<RecordBatch>,
}

impl Fetched {
    async fn into_rows(self) -> Result<DerivedRows> {
        crate::off_reactor(move || {
            let mut rows = DerivedRows::default();
            for batch in &self.spans {
                rows.spans.merge_batch(batch)?;
            }
            for batch in &self.edges {
                rows.edges.merge_batch(batch)?;
            }
            for batch in &self.unanswered {
                merge_unanswered(&mut rows.edges, batch)?;
            }
            for batch in &self.links {
                rows.edges.merge_batch(&with_link_sources(batch)?)?;
            }
            Ok(rows)
        })
        .await
    }
}

/// The spans view every recompute query reads: outcome flags as counts,
/// the attributes that name inferred nodes, in-progress X-Ray segments
/// left out.
const SPAN_VIEW_COLUMNS: &str = "
    trace_id, span_id, parent_span_id, name, kind, service_name,
    coalesce(service_type, '') AS service_type, start_time, duration_ns, status_code, links,
    CAST(xray_fault AS BIGINT) AS is_fault,
    CAST(NOT xray_fault AND (xray_error OR xray_throttle) AS BIGINT) AS is_error,
    CAST(NOT xray_fault AND xray_throttle AS BIGINT) AS is_throttle,
    CAST(NOT (xray_fault OR xray_error OR xray_throttle) AS BIGINT) AS is_ok,
    CAST(status_code = 'error' AS BIGINT) AS is_failed,
    nullif(remote_namespace, '') AS remote_namespace,
    nullif(peer_service, '') AS peer_service,
    nullif(db_system, '') AS db_system,
    coalesce(nullif(attributes['db.namespace']['str'], ''), nullif(attributes['db.name']['str'], '')) AS db_name,
    nullif(attributes['messaging.system']['str'], '') AS messaging_system,
    coalesce(nullif(attributes['server.address']['str'], ''), nullif(attributes['net.peer.name']['str'], '')) AS server_address,
    nullif(attributes['rpc.service']['str'], '') AS rpc_service,
    nullif(attributes['aws.table_name']['str'], '') AS aws_table_name,
    nullif(attributes['aws.queue_url']['str'], '') AS aws_queue_url
";

/// The sums every edge query computes from the caller side `c` (and the
/// callee `v` for server latency and failures).
const EDGE_SUMS: &str = "
    count(*) AS requests, sum(c.is_ok) AS ok, sum(c.is_error) AS errors,
    sum(c.is_throttle) AS throttles, sum(c.is_fault) AS faults,
";

/// Registers `name` (replacing an earlier one): the span view of spans
/// starting in `[from_ns, to_ns]`.
async fn register_view(
    context: &SessionContext,
    name: &str,
    from_ns: i64,
    to_ns: i64,
) -> Result<()> {
    let raw_name = format!("{name}_raw");
    let frame = context
        .table("spans")
        .await?
        .filter(starts_within(from_ns, to_ns))?;
    context.deregister_table(raw_name.as_str())?;
    context.register_table(raw_name.as_str(), frame.into_view())?;
    let view = context
        .sql(&format!(
            "SELECT {SPAN_VIEW_COLUMNS} FROM {raw_name} \
             WHERE attributes['aws.xray.inprogress']['bool'] IS NOT TRUE"
        ))
        .await?;
    context.deregister_table(name)?;
    context.register_table(name, view.into_view())?;
    Ok(())
}

/// Recomputes the rows of spans starting in `[from_ns, to_ns]`.
async fn recompute(context: &SessionContext, from_ns: i64, to_ns: i64) -> Result<DerivedRows> {
    // Callers and roots start in the window; their callees may start a
    // little after it, the producers that consumers link to before it.
    register_view(context, "w", from_ns, to_ns).await?;
    register_view(
        context,
        "wide",
        from_ns.saturating_sub(PAIRING_SLACK_NS),
        to_ns.saturating_add(PAIRING_SLACK_NS),
    )
    .await?;
    let mut fetched = Fetched::default();

    let span_metrics = "
        SELECT date_trunc('minute', start_time) AS minute, service_name AS service, service_type,
            name AS span_name, kind AS span_kind, status_code,
            (parent_span_id IS NULL OR kind IN ('server', 'consumer')) AS entry,
            count(*) AS calls, sum(is_ok) AS ok, sum(is_error) AS errors,
            sum(is_throttle) AS throttles, sum(is_fault) AS faults,
            sum(duration_ns) AS duration_sum_ns, tracelake_latency(duration_ns) AS latency
        FROM w GROUP BY 1, 2, 3, 4, 5, 6, 7";
    fetched.spans.extend(run(context, span_metrics).await?);

    let paired = format!(
        "SELECT date_trunc('minute', c.start_time) AS minute,
            c.service_name AS client, c.service_type AS client_type,
            v.service_name AS server, v.service_type AS server_type,
            CASE WHEN c.kind = 'producer' OR v.kind = 'consumer' THEN 'messaging_system' ELSE '' END AS connection_type,
            'standard' AS edge_type, {EDGE_SUMS}
            sum(CASE WHEN c.is_failed = 1 OR v.is_failed = 1 THEN 1 ELSE 0 END) AS failed,
            sum(c.duration_ns) AS client_duration_sum_ns, sum(v.duration_ns) AS server_duration_sum_ns,
            tracelake_latency(c.duration_ns) AS client_latency, tracelake_latency(v.duration_ns) AS server_latency
        FROM w c JOIN wide v ON v.trace_id = c.trace_id AND v.parent_span_id = c.span_id
        WHERE c.kind IN ('client', 'producer') AND v.kind IN ('server', 'consumer')
        GROUP BY 1, 2, 3, 4, 5, 6"
    );
    fetched.edges.extend(run(context, &paired).await?);

    let roots = "
        SELECT date_trunc('minute', start_time) AS minute,
            'client' AS client, 'client' AS client_type, service_name AS server, service_type AS server_type,
            'virtual_node' AS connection_type, 'standard' AS edge_type,
            count(*) AS requests, sum(is_ok) AS ok, sum(is_error) AS errors,
            sum(is_throttle) AS throttles, sum(is_fault) AS faults, sum(is_failed) AS failed,
            sum(duration_ns) AS client_duration_sum_ns, sum(duration_ns) AS server_duration_sum_ns,
            tracelake_latency(duration_ns) AS client_latency, tracelake_latency(duration_ns) AS server_latency
        FROM w WHERE parent_span_id IS NULL GROUP BY 1, 4, 5";
    fetched.edges.extend(run(context, roots).await?);

    // The producer's peer columns name the node the link hangs off
    // (`link_source`, in Rust like every inferred node).
    let links = format!(
        "WITH l AS (
            SELECT start_time, service_name, service_type, duration_ns,
                is_ok, is_error, is_throttle, is_fault, is_failed, unnest(links) AS link
            FROM w WHERE kind IN ('server', 'consumer') AND cardinality(links) > 0)
        SELECT date_trunc('minute', c.start_time) AS minute,
            p.service_name AS client, p.service_type AS client_type,
            c.service_name AS server, c.service_type AS server_type,
            'messaging_system' AS connection_type, 'link' AS edge_type, {EDGE_SUMS}
            sum(c.is_failed) AS failed,
            sum(c.duration_ns) AS client_duration_sum_ns, sum(c.duration_ns) AS server_duration_sum_ns,
            tracelake_latency(c.duration_ns) AS client_latency, tracelake_latency(c.duration_ns) AS server_latency,
            p.name AS {PRODUCER_NAME}, p.remote_namespace AS {PRODUCER_NAMESPACE},
            p.rpc_service AS {PRODUCER_RPC_SERVICE}, p.aws_table_name AS {PRODUCER_TABLE},
            p.aws_queue_url AS {PRODUCER_QUEUE}
        FROM l c JOIN wide p ON p.trace_id = c.link['trace_id'] AND p.span_id = c.link['span_id']
        WHERE p.kind = 'producer'
        GROUP BY 1, 2, 3, 4, 5, 18, 19, 20, 21, 22"
    );
    fetched.links.extend(run(context, &links).await?);

    let unanswered = "
        SELECT date_trunc('minute', c.start_time) AS minute, c.service_name, c.service_type,
            c.kind, c.name, c.remote_namespace, c.peer_service, c.db_system, c.db_name,
            c.messaging_system, c.server_address, c.rpc_service, c.aws_table_name, c.aws_queue_url,
            count(*) AS requests, sum(c.is_ok) AS ok, sum(c.is_error) AS errors,
            sum(c.is_throttle) AS throttles, sum(c.is_fault) AS faults, sum(c.is_failed) AS failed,
            sum(c.duration_ns) AS client_duration_sum_ns, tracelake_latency(c.duration_ns) AS client_latency
        FROM w c
        LEFT JOIN (SELECT DISTINCT trace_id, parent_span_id FROM wide WHERE kind IN ('server', 'consumer')) v
            ON v.trace_id = c.trace_id AND v.parent_span_id = c.span_id
        WHERE c.kind IN ('client', 'producer') AND v.trace_id IS NULL
        GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14";
    fetched.unanswered.extend(run(context, unanswered).await?);
    fetched.into_rows().await
}

/// The link query's producer columns.
const PRODUCER_NAME: &str = "producer_name";
const PRODUCER_NAMESPACE: &str = "producer_namespace";
const PRODUCER_RPC_SERVICE: &str = "producer_rpc_service";
const PRODUCER_TABLE: &str = "producer_table";
const PRODUCER_QUEUE: &str = "producer_queue";

/// A link query batch with `client`/`client_type` replaced by the node
/// each link hangs off ([`link_source`]).
///
/// [`link_source`]: tracelake_model::derived::link_source
fn with_link_sources(batch: &RecordBatch) -> Result<RecordBatch> {
    let text = |name: &str| {
        batch
            .column_by_name(name)
            .and_then(|column| column.as_string_opt::<i32>())
            .ok_or_else(|| {
                QueryError::DataFusion(datafusion::error::DataFusionError::Internal(format!(
                    "link query: column {name}"
                )))
            })
    };
    let optional = |array: &datafusion::arrow::array::StringArray, row: usize| {
        array.is_valid(row).then(|| array.value(row).to_string())
    };
    let (client, client_type) = (text(derived_col::CLIENT)?, text(derived_col::CLIENT_TYPE)?);
    let (name, namespace) = (text(PRODUCER_NAME)?, text(PRODUCER_NAMESPACE)?);
    let (rpc_service, table, queue) = (
        text(PRODUCER_RPC_SERVICE)?,
        text(PRODUCER_TABLE)?,
        text(PRODUCER_QUEUE)?,
    );
    let mut clients = datafusion::arrow::array::StringBuilder::new();
    let mut client_types = datafusion::arrow::array::StringBuilder::new();
    for row in 0..batch.num_rows() {
        let producer = Node {
            name: client.value(row).to_string(),
            node_type: client_type.value(row).to_string(),
        };
        let peer = PeerInputs {
            kind: "producer".into(),
            span_name: name.value(row).to_string(),
            remote_namespace: optional(namespace, row),
            rpc_service: optional(rpc_service, row),
            aws_table_name: optional(table, row),
            aws_queue_url: optional(queue, row),
            ..PeerInputs::default()
        };
        let source = tracelake_model::derived::link_source(&producer, Some(&peer));
        clients.append_value(source.name);
        client_types.append_value(source.node_type);
    }
    let (clients, client_types) = (clients.finish(), client_types.finish());
    let schema = batch.schema();
    let columns = schema
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(field, column)| match field.name().as_str() {
            derived_col::CLIENT => Arc::new(clients.clone()) as datafusion::arrow::array::ArrayRef,
            derived_col::CLIENT_TYPE => Arc::new(client_types.clone()),
            _ => Arc::clone(column),
        })
        .collect();
    let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(
        schema
            .fields()
            .iter()
            .map(|field| field.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ));
    RecordBatch::try_new(schema, columns)
        .map_err(|error| QueryError::DataFusion(datafusion::error::DataFusionError::from(error)))
}

async fn run(context: &SessionContext, query: &str) -> Result<Vec<RecordBatch>> {
    Ok(context.sql(query).await?.collect().await?)
}

/// Names each group's inferred node as the streaming path does and adds
/// it as an edge row.
fn merge_unanswered(edges: &mut EdgeSet, batch: &RecordBatch) -> Result<()> {
    let corrupt = |what: &str| {
        QueryError::DataFusion(datafusion::error::DataFusionError::Internal(format!(
            "unanswered calls query: column {what}"
        )))
    };
    let text = |index: usize| {
        batch
            .column(index)
            .as_string_opt::<i32>()
            .ok_or_else(|| corrupt(&index.to_string()))
    };
    let int = |index: usize| {
        batch
            .column(index)
            .as_primitive_opt::<datafusion::arrow::datatypes::Int64Type>()
            .ok_or_else(|| corrupt(&index.to_string()))
    };
    let optional = |array: &datafusion::arrow::array::StringArray, row: usize| {
        (array.is_valid(row)).then(|| array.value(row).to_string())
    };
    let minutes = batch
        .column(0)
        .as_primitive_opt::<datafusion::arrow::datatypes::TimestampNanosecondType>()
        .ok_or_else(|| corrupt("minute"))?;
    let (service, service_type, kind, name) = (text(1)?, text(2)?, text(3)?, text(4)?);
    let inputs: Vec<_> = (5..14).map(text).collect::<Result<_>>()?;
    let (requests, ok, errors, throttles, faults, failed, duration_sum) = (
        int(14)?,
        int(15)?,
        int(16)?,
        int(17)?,
        int(18)?,
        int(19)?,
        int(20)?,
    );
    let latencies = batch
        .column(21)
        .as_binary_opt::<i32>()
        .ok_or_else(|| corrupt("client_latency"))?;
    for row in 0..batch.num_rows() {
        let peer = PeerInputs {
            kind: kind.value(row).to_string(),
            span_name: name.value(row).to_string(),
            remote_namespace: optional(inputs[0], row),
            peer_service: optional(inputs[1], row),
            db_system: optional(inputs[2], row),
            db_name: optional(inputs[3], row),
            messaging_system: optional(inputs[4], row),
            server_address: optional(inputs[5], row),
            rpc_service: optional(inputs[6], row),
            aws_table_name: optional(inputs[7], row),
            aws_queue_url: optional(inputs[8], row),
        };
        let (server, connection) = infer_peer(&peer);
        let key = EdgeKey {
            minute_ns: minute_of(minutes.value(row)),
            client: Node {
                name: service.value(row).to_string(),
                node_type: service_type.value(row).to_string(),
            },
            server,
            connection,
            link: false,
        };
        let client_latency = if latencies.is_null(row) {
            Default::default()
        } else {
            tracelake_model::derived::LatencyHistogram::decode(latencies.value(row))?
        };
        let stats = EdgeStats {
            counts: OutcomeCounts {
                total: requests.value(row),
                ok: ok.value(row),
                errors: errors.value(row),
                throttles: throttles.value(row),
                faults: faults.value(row),
            },
            failed: failed.value(row),
            client_duration_sum_ns: duration_sum.value(row),
            server_duration_sum_ns: 0,
            client_latency,
            server_latency: Default::default(),
        };
        edges.merge_row(key, &stats);
    }
    Ok(())
}

/// The rows of whole traces already in memory (a group's matching traces,
/// GetTraceGraph's traces), paired within the traces with the streaming
/// path's rules; a link counts when the producer it names is among them.
pub fn rows_of_traces(traces: &[TraceView]) -> DerivedRows {
    let mut rows = DerivedRows::default();
    let mut producers: std::collections::HashMap<([u8; 16], [u8; 8]), Node> =
        std::collections::HashMap::new();
    for trace in traces {
        for span in &trace.spans {
            if span.facts.kind == "producer" && !span.facts.in_progress {
                producers.insert(
                    (span.facts.trace_id, span.facts.span_id),
                    span.facts.link_source(),
                );
            }
        }
    }
    for trace in traces {
        for span in trace.spans.iter().filter(|span| !span.facts.in_progress) {
            let facts = &span.facts;
            rows.spans.add(facts);
            if facts.parent_span_id.is_none() {
                rows.edges.add_root(facts);
            }
            if facts.is_callee() {
                for link in &facts.links {
                    if let Some(producer) = producers.get(link) {
                        rows.edges.add_link(producer, facts);
                    }
                }
            }
            if !facts.is_caller() {
                continue;
            }
            let mut answered = false;
            for callee in trace.spans.iter().filter(|child| {
                !child.facts.in_progress
                    && child.facts.is_callee()
                    && child.facts.parent_span_id == Some(facts.span_id)
            }) {
                rows.edges.add_paired(facts, &callee.facts);
                answered = true;
            }
            if !answered {
                rows.edges.add_inferred(facts);
            }
        }
    }
    rows
}

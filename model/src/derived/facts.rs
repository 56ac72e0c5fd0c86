//! What the service map needs to know of one span, read off a span batch,
//! and the rules that name the node an unanswered call went to.
//!
//! Both the streaming aggregation (collector) and the recompute from raw
//! spans (query) decide with these functions, so the two paths cannot
//! disagree on a rule.

use datafusion::arrow::array::{
    Array, AsArray, BooleanArray, FixedSizeBinaryArray, ListArray, MapArray, RecordBatch,
    StringArray, StructArray,
};
use datafusion::arrow::datatypes::{Int64Type, TimestampNanosecondType};

use crate::schema::{any_value, col};
use crate::xray;
use crate::{ModelError, Result};

/// A node of the service map: a service, an inferred downstream, or the
/// `client` in front of roots. `node_type` is the X-Ray type
/// (`AWS::Lambda::Function`, `AWS::DynamoDB::Table`, `remote`, `client`),
/// empty for an instrumented service with no known origin.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Node {
    pub name: String,
    pub node_type: String,
}

/// The node in front of every root: who sent the request we saw first.
pub const CLIENT_NODE_NAME: &str = "client";
/// Its type, as X-Ray names it.
pub const CLIENT_NODE_TYPE: &str = "client";
/// The type of an inferred downstream of unknown kind.
pub const REMOTE_NODE_TYPE: &str = "remote";

impl Node {
    pub fn client() -> Self {
        Self {
            name: CLIENT_NODE_NAME.to_string(),
            node_type: CLIENT_NODE_TYPE.to_string(),
        }
    }
}

/// Tempo's `connection_type` label: how the two ends of an edge talk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConnectionType {
    /// A request answered by an instrumented service (label `""`).
    Direct,
    /// Producer -> consumer, or a span link (`messaging_system`).
    MessagingSystem,
    /// An inferred database node (`database`).
    Database,
    /// An inferred node or the `client` in front of a root (`virtual_node`).
    VirtualNode,
}

impl ConnectionType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "",
            Self::MessagingSystem => "messaging_system",
            Self::Database => "database",
            Self::VirtualNode => "virtual_node",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "" => Some(Self::Direct),
            "messaging_system" => Some(Self::MessagingSystem),
            "database" => Some(Self::Database),
            "virtual_node" => Some(Self::VirtualNode),
            _ => None,
        }
    }
}

/// How one span ended, as X-Ray counts it: a fault (5xx or error status)
/// wins over an error (4xx), of which a throttle (429) is one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Outcome {
    pub error: bool,
    pub throttle: bool,
    pub fault: bool,
}

impl Outcome {
    pub fn from_flags(error: bool, fault: bool, throttle: bool) -> Self {
        if fault {
            return Self {
                fault: true,
                ..Self::default()
            };
        }
        Self {
            error: error || throttle,
            throttle,
            fault: false,
        }
    }

    pub fn is_ok(self) -> bool {
        !self.error && !self.fault
    }
}

/// The attributes that name an unanswered call's downstream, as the span
/// carried them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct PeerInputs {
    pub kind: String,
    pub span_name: String,
    pub remote_namespace: Option<String>,
    pub peer_service: Option<String>,
    pub db_system: Option<String>,
    /// `db.namespace` (current semantic conventions) or `db.name`.
    pub db_name: Option<String>,
    pub messaging_system: Option<String>,
    /// `server.address` or the older `net.peer.name`.
    pub server_address: Option<String>,
    pub rpc_service: Option<String>,
    pub aws_table_name: Option<String>,
    pub aws_queue_url: Option<String>,
}

/// Names the node a client or producer span called when no instrumented
/// service answered it.
///
/// | span | node name | type | connection |
/// |---|---|---|---|
/// | namespace `aws` | `rpc.service`, else the span (subsegment) name | `AWS::{name}::Table` with a table, `::Queue` with a queue URL, else `AWS::{name}` | `messaging_system` for producers, else `virtual_node` |
/// | `peer.service` | it | `remote` | `virtual_node` |
/// | `db.system` | `db.namespace`/`db.name`, else `db.system` | `remote` | `database` |
/// | `messaging.system` | it | `remote` | `messaging_system` |
/// | `server.address` / `net.peer.name` | it | `remote` | `virtual_node` |
/// | anything else | the span name | `remote` | `virtual_node` |
///
/// A producer's connection is `messaging_system` whatever names its node.
pub fn infer_peer(inputs: &PeerInputs) -> (Node, ConnectionType) {
    let producer = inputs.kind == "producer";
    let connection = |fallback: ConnectionType| {
        if producer {
            ConnectionType::MessagingSystem
        } else {
            fallback
        }
    };
    let remote = |name: &str| Node {
        name: name.to_string(),
        node_type: REMOTE_NODE_TYPE.to_string(),
    };
    if inputs.remote_namespace.as_deref() == Some("aws") {
        let service = inputs
            .rpc_service
            .as_deref()
            .filter(|service| !service.is_empty())
            .unwrap_or(&inputs.span_name);
        let node_type = if inputs.aws_table_name.is_some() {
            format!("AWS::{service}::Table")
        } else if inputs.aws_queue_url.is_some() {
            format!("AWS::{service}::Queue")
        } else {
            format!("AWS::{service}")
        };
        let node = Node {
            name: service.to_string(),
            node_type,
        };
        return (node, connection(ConnectionType::VirtualNode));
    }
    if let Some(peer) = &inputs.peer_service {
        return (remote(peer), connection(ConnectionType::VirtualNode));
    }
    if let Some(system) = &inputs.db_system {
        let name = inputs.db_name.as_deref().unwrap_or(system);
        return (remote(name), connection(ConnectionType::Database));
    }
    if let Some(system) = &inputs.messaging_system {
        return (remote(system), ConnectionType::MessagingSystem);
    }
    if let Some(address) = &inputs.server_address {
        return (remote(address), connection(ConnectionType::VirtualNode));
    }
    (
        remote(&inputs.span_name),
        connection(ConnectionType::VirtualNode),
    )
}

/// The node a consumer linking to a producer span hangs off.
///
/// A producer calling an AWS service (namespace `aws`: a queue, topic or
/// stream) handed its message to that service, which is a node of the map
/// ([`infer_peer`] names it, e.g. `SQS` of type `AWS::SQS::Queue`): its
/// consumers are reached from there, so the map reads producer -> queue ->
/// consumer as X-Ray draws linked SQS traces. Any other producer's
/// consumers link to the producer's own service.
pub fn link_source(producer_service: &Node, producer_peer: Option<&PeerInputs>) -> Node {
    match producer_peer {
        Some(peer) if peer.remote_namespace.as_deref() == Some("aws") => infer_peer(peer).0,
        _ => producer_service.clone(),
    }
}

/// One span as the service map sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanFacts {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    pub service: Node,
    pub name: String,
    /// The `kind` column value (`server`, `client`, ...).
    pub kind: &'static str,
    /// The `status_code` column value (`unset`, `ok`, `error`).
    pub status_code: &'static str,
    pub start_ns: i64,
    pub duration_ns: i64,
    pub outcome: Outcome,
    /// An X-Ray in-progress segment: not counted until it completes.
    pub in_progress: bool,
    /// For client and producer spans: what names their downstream.
    pub peer: Option<PeerInputs>,
    /// For server and consumer spans: the spans they link to.
    pub links: Vec<([u8; 16], [u8; 8])>,
}

impl SpanFacts {
    /// Calls another service: a client or producer span.
    pub fn is_caller(&self) -> bool {
        is_caller_kind(self.kind)
    }

    /// Answers a call: a server or consumer span.
    pub fn is_callee(&self) -> bool {
        is_callee_kind(self.kind)
    }

    /// Where a request enters the service (a node's own statistics): a
    /// server or consumer span, or a root of any kind.
    pub fn is_entry(&self) -> bool {
        self.parent_span_id.is_none() || self.is_callee()
    }

    /// The node consumers linking to this span hang off ([`link_source`]).
    pub fn link_source(&self) -> Node {
        link_source(&self.service, self.peer.as_ref())
    }

    /// Failed as Tempo counts a request: error status.
    pub fn is_failed(&self) -> bool {
        self.status_code == "error"
    }
}

/// A `kind` column value as the static name it is (unknown values are
/// `unspecified`): spans carry it without an allocation each.
pub fn kind_name(kind: &str) -> &'static str {
    match kind {
        "server" => "server",
        "client" => "client",
        "producer" => "producer",
        "consumer" => "consumer",
        "internal" => "internal",
        _ => "unspecified",
    }
}

/// A `status_code` column value as the static name it is (unknown values
/// are `unset`).
pub fn status_name(status: &str) -> &'static str {
    match status {
        "ok" => "ok",
        "error" => "error",
        _ => "unset",
    }
}

pub fn is_caller_kind(kind: &str) -> bool {
    matches!(kind, "client" | "producer")
}

pub fn is_callee_kind(kind: &str) -> bool {
    matches!(kind, "server" | "consumer")
}

/// The string attributes read for [`PeerInputs`].
const WANTED_KEYS: [&str; 8] = [
    "db.namespace",
    "db.name",
    "messaging.system",
    "server.address",
    "net.peer.name",
    "rpc.service",
    "aws.table_name",
    "aws.queue_url",
];

/// Reads every row of a span batch ([`crate::schema::span_schema`]).
pub fn span_facts(batch: &RecordBatch) -> Result<Vec<SpanFacts>> {
    let columns = FactColumns::new(batch)?;
    let mut facts = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        facts.push(columns.read(row)?);
    }
    Ok(facts)
}

struct FactColumns<'a> {
    trace_id: &'a FixedSizeBinaryArray,
    span_id: &'a FixedSizeBinaryArray,
    parent_span_id: &'a FixedSizeBinaryArray,
    name: &'a StringArray,
    kind: &'a StringArray,
    service_name: &'a StringArray,
    service_type: &'a StringArray,
    start_time: &'a datafusion::arrow::array::PrimitiveArray<TimestampNanosecondType>,
    duration_ns: &'a datafusion::arrow::array::PrimitiveArray<Int64Type>,
    status_code: &'a StringArray,
    xray_error: &'a BooleanArray,
    xray_fault: &'a BooleanArray,
    xray_throttle: &'a BooleanArray,
    peer_service: &'a StringArray,
    db_system: &'a StringArray,
    remote_namespace: &'a StringArray,
    attributes: &'a MapArray,
    links: &'a ListArray,
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T> {
    batch
        .column_by_name(name)
        .and_then(|array| array.as_any().downcast_ref::<T>())
        .ok_or_else(|| ModelError::Corrupt(format!("span column {name} missing or mistyped")))
}

fn optional_text(array: &StringArray, row: usize) -> Option<String> {
    (array.is_valid(row) && !array.value(row).is_empty()).then(|| array.value(row).to_string())
}

fn fixed<const N: usize>(array: &FixedSizeBinaryArray, row: usize) -> Option<[u8; N]> {
    if array.is_null(row) {
        return None;
    }
    array.value(row).try_into().ok()
}

impl<'a> FactColumns<'a> {
    fn new(batch: &'a RecordBatch) -> Result<Self> {
        Ok(Self {
            trace_id: column(batch, col::TRACE_ID)?,
            span_id: column(batch, col::SPAN_ID)?,
            parent_span_id: column(batch, col::PARENT_SPAN_ID)?,
            name: column(batch, col::NAME)?,
            kind: column(batch, col::KIND)?,
            service_name: column(batch, col::SERVICE_NAME)?,
            service_type: column(batch, col::SERVICE_TYPE)?,
            start_time: batch
                .column_by_name(col::START_TIME)
                .and_then(|array| array.as_primitive_opt())
                .ok_or_else(|| ModelError::Corrupt("span column start_time".into()))?,
            duration_ns: batch
                .column_by_name(col::DURATION_NS)
                .and_then(|array| array.as_primitive_opt())
                .ok_or_else(|| ModelError::Corrupt("span column duration_ns".into()))?,
            status_code: column(batch, col::STATUS_CODE)?,
            xray_error: column(batch, col::XRAY_ERROR)?,
            xray_fault: column(batch, col::XRAY_FAULT)?,
            xray_throttle: column(batch, col::XRAY_THROTTLE)?,
            peer_service: column(batch, col::PEER_SERVICE)?,
            db_system: column(batch, col::DB_SYSTEM)?,
            remote_namespace: column(batch, col::REMOTE_NAMESPACE)?,
            attributes: column(batch, col::ATTRIBUTES)?,
            links: column(batch, col::LINKS)?,
        })
    }

    fn read(&self, row: usize) -> Result<SpanFacts> {
        let corrupt = |what: &str| ModelError::Corrupt(format!("span row {row}: {what}"));
        let kind = kind_name(self.kind.value(row));
        let (wanted, in_progress) = self.wanted_attributes(row);
        let [
            db_namespace,
            db_name,
            messaging_system,
            server_address,
            net_peer_name,
            rpc_service,
            aws_table_name,
            aws_queue_url,
        ] = wanted;
        let peer = is_caller_kind(kind).then(|| PeerInputs {
            kind: kind.to_string(),
            span_name: self.name.value(row).to_string(),
            remote_namespace: optional_text(self.remote_namespace, row),
            peer_service: optional_text(self.peer_service, row),
            db_system: optional_text(self.db_system, row),
            db_name: db_namespace.or(db_name),
            messaging_system,
            server_address: server_address.or(net_peer_name),
            rpc_service,
            aws_table_name,
            aws_queue_url,
        });
        let links = if is_callee_kind(kind) {
            self.read_links(row)
        } else {
            Vec::new()
        };
        Ok(SpanFacts {
            trace_id: fixed(self.trace_id, row).ok_or_else(|| corrupt("trace id"))?,
            span_id: fixed(self.span_id, row).ok_or_else(|| corrupt("span id"))?,
            parent_span_id: fixed(self.parent_span_id, row),
            service: Node {
                name: self.service_name.value(row).to_string(),
                node_type: optional_text(self.service_type, row).unwrap_or_default(),
            },
            name: self.name.value(row).to_string(),
            kind,
            status_code: status_name(self.status_code.value(row)),
            start_ns: self.start_time.value(row),
            duration_ns: self.duration_ns.value(row),
            outcome: Outcome::from_flags(
                self.xray_error.value(row),
                self.xray_fault.value(row),
                self.xray_throttle.value(row),
            ),
            in_progress,
            peer,
            links,
        })
    }

    /// The [`WANTED_KEYS`] string attributes of a row and whether its
    /// boolean `aws.xray.inprogress` is true, in one pass over its entries.
    fn wanted_attributes(&self, row: usize) -> ([Option<String>; WANTED_KEYS.len()], bool) {
        let mut found: [Option<String>; WANTED_KEYS.len()] = Default::default();
        let mut in_progress = false;
        let offsets = self.attributes.value_offsets();
        let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
        let keys = self.attributes.keys().as_string_opt::<i32>();
        let values = self.attributes.values().as_struct_opt();
        let (Some(keys), Some(values)) = (keys, values) else {
            return (found, in_progress);
        };
        let strings = child::<StringArray>(values, any_value::STR);
        let booleans = child::<BooleanArray>(values, any_value::BOOL);
        for entry in start..end {
            let key = keys.value(entry);
            if key == xray::attr::IN_PROGRESS {
                in_progress = booleans
                    .is_some_and(|booleans| booleans.is_valid(entry) && booleans.value(entry));
                continue;
            }
            let Some(slot) = WANTED_KEYS.iter().position(|wanted| *wanted == key) else {
                continue;
            };
            if let Some(strings) = strings.filter(|strings| strings.is_valid(entry)) {
                let text = strings.value(entry);
                if !text.is_empty() {
                    found[slot] = Some(text.to_string());
                }
            }
        }
        (found, in_progress)
    }

    fn read_links(&self, row: usize) -> Vec<([u8; 16], [u8; 8])> {
        if self.links.is_null(row) || self.links.value_length(row) == 0 {
            return Vec::new();
        }
        let items = self.links.value(row);
        let Some(items) = items.as_struct_opt() else {
            return Vec::new();
        };
        let trace_ids = child::<FixedSizeBinaryArray>(items, "trace_id");
        let span_ids = child::<FixedSizeBinaryArray>(items, "span_id");
        let (Some(trace_ids), Some(span_ids)) = (trace_ids, span_ids) else {
            return Vec::new();
        };
        (0..items.len())
            .filter_map(|index| Some((fixed(trace_ids, index)?, fixed(span_ids, index)?)))
            .collect()
    }
}

fn child<'a, T: 'static>(parent: &'a StructArray, name: &str) -> Option<&'a T> {
    parent.column_by_name(name)?.as_any().downcast_ref::<T>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(kind: &str, name: &str) -> PeerInputs {
        PeerInputs {
            kind: kind.into(),
            span_name: name.into(),
            ..PeerInputs::default()
        }
    }

    #[test]
    fn inferred_nodes_follow_the_naming_table() {
        let remote = |name: &str| Node {
            name: name.into(),
            node_type: REMOTE_NODE_TYPE.into(),
        };
        let cases: Vec<(PeerInputs, Node, ConnectionType)> = vec![
            (
                PeerInputs {
                    remote_namespace: Some("aws".into()),
                    aws_table_name: Some("orders".into()),
                    ..inputs("client", "DynamoDB")
                },
                Node {
                    name: "DynamoDB".into(),
                    node_type: "AWS::DynamoDB::Table".into(),
                },
                ConnectionType::VirtualNode,
            ),
            (
                PeerInputs {
                    remote_namespace: Some("aws".into()),
                    rpc_service: Some("SQS".into()),
                    aws_queue_url: Some("https://sqs/q".into()),
                    ..inputs("producer", "SQS.SendMessage")
                },
                Node {
                    name: "SQS".into(),
                    node_type: "AWS::SQS::Queue".into(),
                },
                ConnectionType::MessagingSystem,
            ),
            (
                PeerInputs {
                    remote_namespace: Some("aws".into()),
                    ..inputs("client", "S3")
                },
                Node {
                    name: "S3".into(),
                    node_type: "AWS::S3".into(),
                },
                ConnectionType::VirtualNode,
            ),
            (
                PeerInputs {
                    peer_service: Some("billing".into()),
                    db_system: Some("postgresql".into()),
                    ..inputs("client", "x")
                },
                remote("billing"),
                ConnectionType::VirtualNode,
            ),
            (
                PeerInputs {
                    db_system: Some("postgresql".into()),
                    db_name: Some("shop".into()),
                    ..inputs("client", "SELECT")
                },
                remote("shop"),
                ConnectionType::Database,
            ),
            (
                PeerInputs {
                    db_system: Some("redis".into()),
                    ..inputs("client", "GET")
                },
                remote("redis"),
                ConnectionType::Database,
            ),
            (
                PeerInputs {
                    messaging_system: Some("kafka".into()),
                    ..inputs("producer", "orders publish")
                },
                remote("kafka"),
                ConnectionType::MessagingSystem,
            ),
            (
                PeerInputs {
                    server_address: Some("api.example.com".into()),
                    ..inputs("client", "GET")
                },
                remote("api.example.com"),
                ConnectionType::VirtualNode,
            ),
            (
                inputs("client", "legacy.example.com"),
                remote("legacy.example.com"),
                ConnectionType::VirtualNode,
            ),
        ];
        for (input, node, connection) in cases {
            assert_eq!(infer_peer(&input), (node, connection), "{input:?}");
        }
    }

    #[test]
    fn consumers_of_an_aws_queue_hang_off_the_queue() {
        let producer = Node {
            name: "create-order".into(),
            node_type: "AWS::Lambda::Function".into(),
        };
        let send = PeerInputs {
            remote_namespace: Some("aws".into()),
            aws_queue_url: Some("http://127.0.0.1:9324/queue/orders".into()),
            ..inputs("producer", "SQS")
        };
        assert_eq!(
            link_source(&producer, Some(&send)),
            Node {
                name: "SQS".into(),
                node_type: "AWS::SQS::Queue".into(),
            }
        );
        let kafka = PeerInputs {
            messaging_system: Some("kafka".into()),
            ..inputs("producer", "orders publish")
        };
        assert_eq!(link_source(&producer, Some(&kafka)), producer);
        assert_eq!(link_source(&producer, None), producer);
    }

    #[test]
    fn outcomes_count_as_xray_does() {
        let fault = Outcome::from_flags(true, true, false);
        assert!(fault.fault && !fault.error && !fault.is_ok());
        let throttle = Outcome::from_flags(false, false, true);
        assert!(throttle.error && throttle.throttle);
        assert!(Outcome::from_flags(false, false, false).is_ok());
        assert_eq!(
            ConnectionType::parse("database"),
            Some(ConnectionType::Database)
        );
        assert_eq!(ConnectionType::parse(""), Some(ConnectionType::Direct));
        assert_eq!(ConnectionType::parse("other"), None);
    }
}

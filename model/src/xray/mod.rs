//! X-Ray segment documents and their mapping to and from OTLP spans, the
//! form every receiver hands to [`crate::otlp::resource_spans_to_batch`].
//!
//! ```text
//!  segment document --document_to_spans--> Resource + Spans (OTLP)
//!        ^                                        |
//!        +------------spans_to_documents----------+  (BatchGetTraces, any OTLP span)
//! ```
//!
//! The mapping lives in `storage`, beside the OTLP <-> Arrow conversion,
//! because both the collector (ingest) and the query side (`BatchGetTraces`)
//! need it and `query` never depends on `collector`.
//!
//! # Rules
//!
//! | X-Ray | span |
//! |---|---|
//! | segment | SERVER span; resource `service.name` = `name` |
//! | subsegment, namespace `aws`/`remote` or with `http` | CLIENT span, child of its container |
//! | other subsegment | INTERNAL span |
//! | `trace_id` `1-5759e988-bd86...` | trace id bytes `5759e988bd86...` (the epoch is the first 32 bits) |
//! | `id`, `parent_id` | span id, parent span id (a nested subsegment's parent is its container) |
//! | `start_time`, `end_time` (epoch seconds) | start/end nanoseconds; in progress: end = start |
//! | `in_progress` | `aws.xray.inprogress` |
//! | `namespace` | `aws.xray.namespace` (column `remote_namespace`) |
//! | `origin` | resource `cloud.provider` = `aws` + `cloud.platform` when known, else `aws.xray.origin` |
//! | `service.version` | resource `service.version` |
//! | `user` | `enduser.id` |
//! | `http.request.{method,url,user_agent,client_ip,x_forwarded_for,traced}` | `http.request.method`, `url.full`, `user_agent.original`, `client.address`, `aws.xray.x_forwarded_for`, `aws.xray.traced` |
//! | `http.response.{status,content_length}` | `http.response.status_code`, `http.response.body.size` |
//! | `aws.{operation,account_id,region,request_id,queue_url,table_name,retries,resource_names}` | `aws.operation`, `aws.account_id`, `aws.region`, `aws.request_id`, `aws.queue_url`, `aws.table_name`, `aws.xray.retries`, `aws.xray.resource_names` |
//! | segment `aws.{account_id,ec2,ecs,elastic_beanstalk,xray}` | resource `cloud.account.id`, `host.*`, `container.*`, `aws.ecs.*`, `deployment.environment.name`, `telemetry.sdk.*` |
//! | `sql.{url,sanitized_query,database_type,user}` | `db.connection_string`, `db.query.text`, `db.system.name`, `db.user` |
//! | `error`, `fault`, `throttle` | `aws.xray.error`/`fault`/`throttle` (the flag columns); any of them sets status ERROR |
//! | `annotations` | one typed attribute each (string, int, double, bool) + `aws.xray.annotations` = their keys |
//! | `metadata.{ns}` | `aws.xray.metadata.{ns}` = JSON text (the `xray_metadata` column) |
//! | `cause.exceptions[]` | `exception` events: `exception.type`, `exception.message`, `exception.stacktrace`, `aws.xray.exception.*` |
//! | `cause` (exception id) | `aws.xray.cause.exception_id` |
//! | `precursor_ids`, `resource_arn` | `aws.xray.precursor_ids`, `aws.xray.resource_arn` |
//! | `links[]` | span links |
//! | anything else | `aws.xray.extra` (and `aws.xray.http`, `.aws`, `.sql`, `.service`, `.cause`, `.exception.extra`): the rest as JSON |
//!
//! The `aws.*` names follow the OpenTelemetry collector's `awsxrayreceiver`
//! and `awsxrayexporter`. Spans that came from X-Ray carry the scope name
//! [`XRAY_SCOPE_NAME`], so mapping back restores exactly what was sent;
//! other OTLP spans map back as the `awsxrayexporter` does (namespace from
//! the kind and `rpc.system`, flags from the status and HTTP code, plain
//! attributes into `metadata.default`).
//!
//! Nested subsegments come back without the redundant `trace_id`,
//! `parent_id` and `type` some SDKs repeat in them (X-Ray drops them too);
//! an in-progress entity comes back without `end_time`, and empty
//! `metadata` and `subsegments` are dropped; every other field round-trips
//! (times exactly: see [`seconds_to_nanos`]).

mod document;
mod fields;
mod to_documents;
mod to_spans;

pub use document::{
    Cause, CauseDetails, Http, HttpRequest, HttpResponse, InvalidDocument,
    MAX_ANNOTATION_KEY_CHARS, MAX_ANNOTATION_VALUE_CHARS, MAX_DOCUMENT_BYTES, MAX_NAME_CHARS,
    SegmentDocument, SegmentLink, StackFrame, XrayException, is_valid_segment_id,
    is_valid_trace_id, parse_documents,
};
pub use fields::any_to_json;
pub use to_documents::{
    SpanWithResource, annotations, metadata_namespaces, spans_to_documents, traces_to_documents,
};
pub use to_spans::{MappedDocument, document_to_spans};

use crate::ids::TraceId;

/// The instrumentation scope of spans mapped from X-Ray documents.
pub const XRAY_SCOPE_NAME: &str = "aws.xray";

/// Attribute names the mapping writes and reads.
pub mod attr {
    pub const IN_PROGRESS: &str = "aws.xray.inprogress";
    pub const NAMESPACE: &str = "aws.xray.namespace";
    pub const ORIGIN: &str = "aws.xray.origin";
    pub const ERROR: &str = "aws.xray.error";
    pub const FAULT: &str = "aws.xray.fault";
    pub const THROTTLE: &str = "aws.xray.throttle";
    pub const ANNOTATIONS: &str = "aws.xray.annotations";
    pub const METADATA_PREFIX: &str = "aws.xray.metadata.";
    pub const PRECURSOR_IDS: &str = "aws.xray.precursor_ids";
    pub const RESOURCE_ARN: &str = "aws.xray.resource_arn";
    pub const CAUSE: &str = "aws.xray.cause";
    pub const CAUSE_EXCEPTION_ID: &str = "aws.xray.cause.exception_id";
    pub const EXCEPTION_ID: &str = "aws.xray.exception.id";
    pub const EXCEPTION_REMOTE: &str = "aws.xray.exception.remote";
    pub const EXCEPTION_TRUNCATED: &str = "aws.xray.exception.truncated";
    pub const EXCEPTION_SKIPPED: &str = "aws.xray.exception.skipped";
    pub const EXCEPTION_CAUSE: &str = "aws.xray.exception.cause";
    pub const EXCEPTION_STACK: &str = "aws.xray.exception.stack";
    pub const EXCEPTION_EXTRA: &str = "aws.xray.exception.extra";
    pub const EXTRA: &str = "aws.xray.extra";
    pub const HTTP_REST: &str = "aws.xray.http";
    pub const AWS_REST: &str = "aws.xray.aws";
    pub const SQL_REST: &str = "aws.xray.sql";
    pub const SERVICE_REST: &str = "aws.xray.service";
    pub const USER: &str = "enduser.id";
    pub const SERVICE_NAME: &str = "service.name";
    pub const CLOUD_PROVIDER: &str = "cloud.provider";
    pub const CLOUD_PLATFORM: &str = "cloud.platform";
    pub const EXCEPTION_TYPE: &str = "exception.type";
    pub const EXCEPTION_MESSAGE: &str = "exception.message";
    pub const EXCEPTION_STACKTRACE: &str = "exception.stacktrace";
}

/// The event name OpenTelemetry gives recorded exceptions.
pub const EXCEPTION_EVENT: &str = "exception";

/// X-Ray origins and the OpenTelemetry `cloud.platform` each stands for.
pub const ORIGIN_PLATFORMS: &[(&str, &str)] = &[
    ("AWS::Lambda::Function", "aws_lambda"),
    ("AWS::EC2::Instance", "aws_ec2"),
    ("AWS::ECS::Container", "aws_ecs"),
    ("AWS::EKS::Container", "aws_eks"),
    (
        "AWS::ElasticBeanstalk::Environment",
        "aws_elastic_beanstalk",
    ),
    ("AWS::AppRunner::Service", "aws_app_runner"),
];

/// `1-5759e988-bd862e3fe1be46a994272793` -> the 16-byte trace id.
pub fn parse_xray_trace_id(trace_id: &str) -> Option<TraceId> {
    if !is_valid_trace_id(trace_id) {
        return None;
    }
    TraceId::from_hex(&format!("{}{}", &trace_id[2..10], &trace_id[11..])).ok()
}

/// The 16-byte trace id in X-Ray form; the first 32 bits are the epoch.
pub fn format_xray_trace_id(trace_id: &TraceId) -> String {
    let hex = trace_id.to_hex();
    format!("1-{}-{}", &hex[..8], &hex[8..])
}

/// Epoch seconds (as X-Ray sends them) to nanoseconds, through the
/// shortest decimal that reads back as the same `f64`: `1478293361.271`
/// becomes `...271000000` ns, not the `...270999908` ns the binary value
/// is, so X-Ray and OTLP views of a span agree on its times and the
/// conversion back ([`nanos_to_seconds`]) restores the very same `f64`.
pub fn seconds_to_nanos(seconds: f64) -> i64 {
    if !seconds.is_finite() || seconds < 0.0 {
        return 0;
    }
    let decimal = seconds.to_string();
    let (whole, fraction) = decimal.split_once('.').unwrap_or((&decimal, ""));
    let Ok(whole_seconds) = whole.parse::<i64>() else {
        return i64::MAX;
    };
    let mut nanos: i64 = 0;
    for (position, digit) in fraction.bytes().take(9).enumerate() {
        nanos += i64::from(digit - b'0') * 10i64.pow(8 - position as u32);
    }
    if fraction
        .as_bytes()
        .get(9)
        .is_some_and(|digit| *digit >= b'5')
    {
        nanos += 1;
    }
    whole_seconds
        .saturating_mul(1_000_000_000)
        .saturating_add(nanos)
}

/// Nanoseconds to epoch seconds: the `f64` nearest the exact decimal.
pub fn nanos_to_seconds(nanos: i64) -> f64 {
    let whole = nanos.div_euclid(1_000_000_000);
    let fraction = nanos.rem_euclid(1_000_000_000);
    format!("{whole}.{fraction:09}")
        .parse()
        .unwrap_or(whole as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_convert_both_ways() {
        let id = parse_xray_trace_id("1-5759e988-bd862e3fe1be46a994272793").unwrap();
        assert_eq!(id.to_hex(), "5759e988bd862e3fe1be46a994272793");
        assert_eq!(
            format_xray_trace_id(&id),
            "1-5759e988-bd862e3fe1be46a994272793"
        );
        assert_eq!(parse_xray_trace_id("1-5759e988-bd86"), None);
        assert_eq!(
            parse_xray_trace_id("1-00000000-000000000000000000000000"),
            None
        );
    }

    #[test]
    fn seconds_round_trip_through_nanos() {
        for seconds in [
            1478293361.271,
            1700000000.123456,
            1700000000.999999,
            1.5,
            1764424242.000001,
            1764424242.1234567,
            0.000000001,
        ] {
            let nanos = seconds_to_nanos(seconds);
            assert_eq!(nanos_to_seconds(nanos), seconds, "{seconds}");
        }
        assert_eq!(seconds_to_nanos(1478293361.271), 1_478_293_361_271_000_000);
        assert_eq!(seconds_to_nanos(1.0000000005), 1_000_000_001);
        assert_eq!(seconds_to_nanos(f64::NAN), 0);
    }
}

//! X-Ray segment documents as the plugin builds and sends them, in the
//! format the X-Ray SDKs write (what the daemon and `PutTraceSegments`
//! take): a segment with nested subsegments, http request/response, `aws`
//! fields, error/throttle/fault flags, exceptions, annotations, metadata.

use serde_json::{Map, Value, json};

/// A new X-Ray trace id, `1-{epoch seconds, 8 hex}-{96 random bits}`.
pub fn new_trace_id() -> String {
    let epoch = now_seconds() as u64 & 0xffff_ffff;
    let high = fastrand::u32(..);
    let low = fastrand::u64(1..);
    format!("1-{epoch:08x}-{high:08x}{low:016x}")
}

/// A new segment or subsegment id: 16 hex digits, never all zero.
pub fn new_segment_id() -> String {
    format!("{:016x}", fastrand::u64(1..))
}

/// Seconds since the epoch with microseconds, as segments carry times.
pub fn now_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_micros() as f64 / 1e6)
        .unwrap_or(0.0)
}

/// The `http` block of a (sub)segment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Http {
    pub method: Option<String>,
    pub url: Option<String>,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    /// Subsegments: the downstream call carried the trace header.
    pub traced: bool,
    pub status: Option<u16>,
    pub content_length: Option<u64>,
}

impl Http {
    fn to_json(&self) -> Value {
        let mut request = Map::new();
        let mut put = |key: &str, value: &Option<String>| {
            if let Some(value) = value {
                request.insert(key.into(), json!(value));
            }
        };
        put("method", &self.method);
        put("url", &self.url);
        put("client_ip", &self.client_ip);
        put("user_agent", &self.user_agent);
        if self.traced {
            request.insert("traced".into(), json!(true));
        }
        let mut response = Map::new();
        if let Some(status) = self.status {
            response.insert("status".into(), json!(status));
        }
        if let Some(length) = self.content_length {
            response.insert("content_length".into(), json!(length));
        }
        let mut http = Map::new();
        if !request.is_empty() {
            http.insert("request".into(), Value::Object(request));
        }
        if !response.is_empty() {
            http.insert("response".into(), Value::Object(response));
        }
        Value::Object(http)
    }
}

/// An exception recorded in `cause`.
#[derive(Debug, Clone, PartialEq)]
pub struct Exception {
    pub id: String,
    pub message: String,
    pub kind: String,
    /// Raised by a downstream service rather than this one.
    pub remote: bool,
}

/// A link to a (sub)segment of another trace: an SQS consumer's segment
/// links to the producers' `SendMessage` subsegments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// X-Ray form, `1-xxxxxxxx-yyyyyyyyyyyyyyyyyyyyyyyy`.
    pub trace_id: String,
    /// The linked (sub)segment's id.
    pub id: String,
}

/// A segment or subsegment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Document {
    pub name: String,
    pub id: String,
    pub start_time: f64,
    /// `None` while in progress.
    pub end_time: Option<f64>,
    /// Subsegments: `remote` (an HTTP call) or `aws` (an AWS-style call).
    pub namespace: Option<&'static str>,
    /// Segments: the service type (`AWS::ApiGateway::Stage`, ...).
    pub origin: Option<String>,
    pub http: Option<Http>,
    /// The `aws` block (`operation`, `table_name`, `queue_url`, ...).
    pub aws: Map<String, Value>,
    pub error: bool,
    pub throttle: bool,
    pub fault: bool,
    pub exceptions: Vec<Exception>,
    pub annotations: Map<String, Value>,
    /// Metadata in the `default` namespace.
    pub metadata: Map<String, Value>,
    pub user: Option<String>,
    /// Sent as `links: [{"trace_id", "id"}]`.
    pub links: Vec<Link>,
    pub subsegments: Vec<Document>,
}

/// What only a top-level document carries.
#[derive(Debug, Clone, PartialEq)]
pub struct TopLevel<'a> {
    pub trace_id: &'a str,
    /// The caller's (sub)segment when continuing a trace; for an
    /// independent subsegment, the parent in this service.
    pub parent_id: Option<&'a str>,
    /// The rule that sampled the request, reported as X-Ray SDKs do.
    pub sampling_rule: Option<&'a str>,
    /// `true` for an independent subsegment document.
    pub subsegment: bool,
}

impl Document {
    pub fn new(name: &str, start_time: f64) -> Self {
        Self {
            name: name.to_string(),
            id: new_segment_id(),
            start_time,
            ..Self::default()
        }
    }

    /// Marks the outcome of an HTTP status: 429 throttle (and error), other
    /// 4xx error, 5xx fault.
    pub fn record_status(&mut self, status: u16) {
        match status {
            429 => {
                self.throttle = true;
                self.error = true;
            }
            400..=499 => self.error = true,
            500..=599 => self.fault = true,
            _ => {}
        }
    }

    /// Records an exception and marks a fault (or an error for a client
    /// error), as the SDKs do.
    pub fn add_exception(&mut self, kind: &str, message: &str, remote: bool) {
        self.exceptions.push(Exception {
            id: new_segment_id(),
            message: message.to_string(),
            kind: kind.to_string(),
            remote,
        });
        if !self.error && !self.throttle {
            self.fault = true;
        }
    }

    /// The document as JSON; `top` for a document sent on its own.
    pub fn to_json(&self, top: Option<&TopLevel<'_>>) -> Value {
        let mut out = Map::new();
        out.insert("name".into(), json!(self.name));
        out.insert("id".into(), json!(self.id));
        out.insert("start_time".into(), json!(self.start_time));
        match self.end_time {
            Some(end) => out.insert("end_time".into(), json!(end)),
            None => out.insert("in_progress".into(), json!(true)),
        };
        if let Some(top) = top {
            out.insert("trace_id".into(), json!(top.trace_id));
            if let Some(parent) = top.parent_id {
                out.insert("parent_id".into(), json!(parent));
            }
            if top.subsegment {
                out.insert("type".into(), json!("subsegment"));
            }
        }
        if let Some(namespace) = self.namespace {
            out.insert("namespace".into(), json!(namespace));
        }
        if let Some(origin) = &self.origin {
            out.insert("origin".into(), json!(origin));
        }
        if let Some(http) = &self.http {
            out.insert("http".into(), http.to_json());
        }
        let mut aws = self.aws.clone();
        if let Some(top) = top.filter(|top| !top.subsegment) {
            let mut xray = Map::new();
            xray.insert("sdk".into(), json!("tracelake-gateway-plugin"));
            xray.insert("sdk_version".into(), json!(env!("CARGO_PKG_VERSION")));
            if let Some(rule) = top.sampling_rule {
                xray.insert("sampling_rule_name".into(), json!(rule));
            }
            aws.insert("xray".into(), Value::Object(xray));
        }
        if !aws.is_empty() {
            out.insert("aws".into(), Value::Object(aws));
        }
        for (flag, set) in [
            ("error", self.error),
            ("throttle", self.throttle),
            ("fault", self.fault),
        ] {
            if set {
                out.insert(flag.into(), json!(true));
            }
        }
        if !self.exceptions.is_empty() {
            let exceptions: Vec<Value> = self
                .exceptions
                .iter()
                .map(|exception| {
                    json!({
                        "id": exception.id,
                        "message": exception.message,
                        "type": exception.kind,
                        "remote": exception.remote,
                    })
                })
                .collect();
            out.insert(
                "cause".into(),
                json!({"working_directory": "", "exceptions": exceptions}),
            );
        }
        if !self.annotations.is_empty() {
            out.insert(
                "annotations".into(),
                Value::Object(self.annotations.clone()),
            );
        }
        if !self.metadata.is_empty() {
            out.insert(
                "metadata".into(),
                json!({"default": Value::Object(self.metadata.clone())}),
            );
        }
        if let Some(user) = &self.user {
            out.insert("user".into(), json!(user));
        }
        if !self.links.is_empty() {
            let links: Vec<Value> = self
                .links
                .iter()
                .map(|link| json!({"trace_id": link.trace_id, "id": link.id}))
                .collect();
            out.insert("links".into(), Value::Array(links));
        }
        if !self.subsegments.is_empty() {
            let children: Vec<Value> = self.subsegments.iter().map(|s| s.to_json(None)).collect();
            out.insert("subsegments".into(), Value::Array(children));
        }
        Value::Object(out)
    }

    /// The JSON documents to send for this segment, each at most
    /// `max_bytes` when it can be: a segment too large for one datagram is
    /// sent without its subsegments, and each subsegment on its own as an
    /// independent subsegment (`type: subsegment`, `parent_id`), as the
    /// SDKs stream large segments.
    pub fn documents(&self, top: &TopLevel<'_>, max_bytes: usize) -> Vec<String> {
        let whole = self.to_json(Some(top)).to_string();
        if whole.len() <= max_bytes || self.subsegments.is_empty() {
            return vec![whole];
        }
        let mut shell = self.clone();
        let children = std::mem::take(&mut shell.subsegments);
        let mut out = vec![shell.to_json(Some(top)).to_string()];
        for child in &children {
            let child_top = TopLevel {
                trace_id: top.trace_id,
                parent_id: Some(&self.id),
                sampling_rule: None,
                subsegment: true,
            };
            out.extend(child.documents(&child_top, max_bytes));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_the_xray_shapes() {
        for _ in 0..100 {
            assert!(tracelake_sampler::trace_header::is_valid_xray_trace_id(
                &new_trace_id()
            ));
            assert!(tracelake_sampler::trace_header::is_valid_segment_id(
                &new_segment_id()
            ));
        }
    }

    #[test]
    fn statuses_and_exceptions_set_the_flags() {
        let cases = [
            (200, (false, false, false)),
            (404, (true, false, false)),
            (429, (true, true, false)),
            (503, (false, false, true)),
        ];
        for (status, (error, throttle, fault)) in cases {
            let mut document = Document::new("x", 1.0);
            document.record_status(status);
            assert_eq!(
                (document.error, document.throttle, document.fault),
                (error, throttle, fault),
                "{status}"
            );
        }
        let mut document = Document::new("x", 1.0);
        document.add_exception("Timeout", "deadline exceeded", true);
        assert!(document.fault);
        let json = document.to_json(None);
        assert_eq!(json["cause"]["exceptions"][0]["type"], "Timeout");
        assert_eq!(json["in_progress"], true);
    }

    #[test]
    fn large_segments_are_split_into_independent_subsegments() {
        let mut segment = Document::new("gateway", 1.0);
        segment.end_time = Some(2.0);
        for index in 0..50 {
            let mut child = Document::new(&format!("call-{index}"), 1.1);
            child.end_time = Some(1.2);
            child
                .metadata
                .insert("blob".into(), json!("x".repeat(2_000)));
            segment.subsegments.push(child);
        }
        let top = TopLevel {
            trace_id: "1-5759e988-bd862e3fe1be46a994272793",
            parent_id: None,
            sampling_rule: Some("Default"),
            subsegment: false,
        };
        let documents = segment.documents(&top, 60_000);
        assert_eq!(documents.len(), 51);
        assert!(documents.iter().all(|document| document.len() <= 60_000));
        let first: Value = serde_json::from_str(&documents[0]).unwrap();
        assert!(first.get("subsegments").is_none());
        assert_eq!(first["aws"]["xray"]["sampling_rule_name"], "Default");
        let child: Value = serde_json::from_str(&documents[1]).unwrap();
        assert_eq!(child["type"], "subsegment");
        assert_eq!(child["parent_id"], json!(segment.id));
        assert_eq!(child["trace_id"], json!(top.trace_id));
        let small = Document::new("small", 1.0).documents(&top, 60_000);
        assert_eq!(small.len(), 1);
    }
}

//! The `X-Amzn-Trace-Id` header and its mapping to W3C `traceparent`.
//!
//! ```text
//! X-Amzn-Trace-Id: Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1;Lineage=a87bd80c:1
//! traceparent:     00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01
//! ```
//!
//! Parsing follows the X-Ray SDKs: `key=value` pairs separated by `;`, in any
//! order, whitespace around them ignored, keys matched case-insensitively.
//! Keys this module does not know (`Self=` from load balancers, vendor keys)
//! are kept in order and written back, so a hop that only forwards the
//! header does not lose them. A header without `Root` is not a trace header;
//! a malformed `Root`, `Parent` or `Sampled` is an error rather than being
//! silently dropped, so a broken upstream is visible.
//!
//! Both sides use this module: the gateway plugin propagates the header and
//! the collector reads it; it depends on nothing so either can.

use std::fmt;

/// The header's name as HTTP spells it.
pub const HEADER_NAME: &str = "X-Amzn-Trace-Id";

/// Why a header value is not a valid trace header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceHeaderError {
    MissingRoot,
    BadRoot(String),
    BadParent(String),
    BadSampled(String),
    BadPair(String),
    DuplicateKey(String),
    BadTraceparent(String),
}

impl fmt::Display for TraceHeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingRoot => f.write_str("trace header has no Root"),
            Self::BadRoot(root) => write!(
                f,
                "Root {root:?} is not 1-<8 hex digits>-<24 hex digits> with a non-zero id"
            ),
            Self::BadParent(parent) => {
                write!(f, "Parent {parent:?} is not 16 hex digits, non-zero")
            }
            Self::BadSampled(sampled) => write!(f, "Sampled {sampled:?} is not 1, 0 or ?"),
            Self::BadPair(pair) => write!(f, "{pair:?} is not key=value"),
            Self::DuplicateKey(key) => write!(f, "key {key} appears twice"),
            Self::BadTraceparent(value) => write!(f, "traceparent {value:?} is malformed"),
        }
    }
}

impl std::error::Error for TraceHeaderError {}

/// The sampling decision a header carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampledFlag {
    /// `Sampled=1`: upstream sampled the request.
    Sampled,
    /// `Sampled=0`: upstream decided not to sample.
    NotSampled,
    /// `Sampled=?`: upstream asks this hop to decide and report back.
    Requested,
}

impl SampledFlag {
    fn as_str(self) -> &'static str {
        match self {
            Self::Sampled => "1",
            Self::NotSampled => "0",
            Self::Requested => "?",
        }
    }
}

/// A parsed `X-Amzn-Trace-Id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceHeader {
    /// `1-{8 hex epoch seconds}-{24 hex}`, kept as sent (lowercased).
    pub root: String,
    /// The caller's segment or subsegment id, 16 hex digits.
    pub parent: Option<String>,
    /// `None` when the header has no `Sampled` key: no decision was made.
    pub sampled: Option<SampledFlag>,
    /// X-Ray's loop-detection lineage, opaque here.
    pub lineage: Option<String>,
    /// Every other `key=value` pair, in the order received.
    pub extra: Vec<(String, String)>,
}

fn is_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|byte| byte.is_ascii_hexdigit())
}

fn is_all_zero(hex: &str) -> bool {
    hex.bytes().all(|byte| byte == b'0')
}

/// Checks an X-Ray trace id, `1-{8 hex}-{24 hex}`, not all zero.
pub fn is_valid_xray_trace_id(root: &str) -> bool {
    let mut parts = root.split('-');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("1"), Some(epoch), Some(unique), None) => {
            is_hex(epoch, 8) && is_hex(unique, 24) && !(is_all_zero(epoch) && is_all_zero(unique))
        }
        _ => false,
    }
}

/// Checks an X-Ray segment id: 16 hex digits, not all zero.
pub fn is_valid_segment_id(id: &str) -> bool {
    is_hex(id, 16) && !is_all_zero(id)
}

impl TraceHeader {
    /// A header for a new root with the given decision.
    pub fn new(root: String, parent: Option<String>, sampled: Option<SampledFlag>) -> Self {
        Self {
            root,
            parent,
            sampled,
            lineage: None,
            extra: Vec::new(),
        }
    }

    /// Parses a header value.
    pub fn parse(value: &str) -> Result<Self, TraceHeaderError> {
        let mut root = None;
        let mut parent = None;
        let mut sampled = None;
        let mut lineage = None;
        let mut extra = Vec::new();
        for pair in value.split(';') {
            let pair = pair.trim();
            if pair.is_empty() {
                continue;
            }
            let Some((key, raw_value)) = pair.split_once('=') else {
                return Err(TraceHeaderError::BadPair(pair.to_string()));
            };
            let key = key.trim();
            let field_value = raw_value.trim();
            if key.is_empty() {
                return Err(TraceHeaderError::BadPair(pair.to_string()));
            }
            let slot = match key.to_ascii_lowercase().as_str() {
                "root" => {
                    let lowered = field_value.to_ascii_lowercase();
                    if !is_valid_xray_trace_id(&lowered) {
                        return Err(TraceHeaderError::BadRoot(field_value.to_string()));
                    }
                    set_once(&mut root, key, lowered)
                }
                "parent" => {
                    let lowered = field_value.to_ascii_lowercase();
                    if !is_valid_segment_id(&lowered) {
                        return Err(TraceHeaderError::BadParent(field_value.to_string()));
                    }
                    set_once(&mut parent, key, lowered)
                }
                "sampled" => {
                    let flag = match field_value {
                        "1" => SampledFlag::Sampled,
                        "0" => SampledFlag::NotSampled,
                        "?" => SampledFlag::Requested,
                        other => return Err(TraceHeaderError::BadSampled(other.to_string())),
                    };
                    set_once(&mut sampled, key, flag)
                }
                "lineage" => set_once(&mut lineage, key, field_value.to_string()),
                _ => {
                    extra.push((key.to_string(), field_value.to_string()));
                    Ok(())
                }
            };
            slot?;
        }
        let root = root.ok_or(TraceHeaderError::MissingRoot)?;
        Ok(Self {
            root,
            parent,
            sampled,
            lineage,
            extra,
        })
    }

    /// The W3C `traceparent` for this header, when it names a parent (W3C
    /// has no way to say "root without parent"). `Sampled=1` is the sampled
    /// flag; `0`, `?` and no decision all clear it.
    pub fn to_traceparent(&self) -> Option<String> {
        let parent = self.parent.as_ref()?;
        let trace_id = xray_trace_id_to_hex(&self.root)?;
        let flags = if self.sampled == Some(SampledFlag::Sampled) {
            "01"
        } else {
            "00"
        };
        Some(format!("00-{trace_id}-{parent}-{flags}"))
    }

    /// Reads a W3C `traceparent` (version 00, or a later version read as 00
    /// per the spec). The trace id's first 8 hex digits become the X-Ray
    /// epoch, as the OpenTelemetry X-Ray propagator does.
    pub fn from_traceparent(value: &str) -> Result<Self, TraceHeaderError> {
        let bad = || TraceHeaderError::BadTraceparent(value.chars().take(80).collect());
        let trimmed = value.trim();
        let mut parts = trimmed.split('-');
        let (Some(version), Some(trace_id), Some(parent), Some(flags)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let rest_ok = match parts.next() {
            None => true,
            // Later versions may append fields; version 00 may not.
            Some(_) => version != "00",
        };
        if !rest_ok
            || !is_hex(version, 2)
            || version.eq_ignore_ascii_case("ff")
            || !is_hex(trace_id, 32)
            || is_all_zero(trace_id)
            || !is_hex(parent, 16)
            || is_all_zero(parent)
            || !is_hex(flags, 2)
        {
            return Err(bad());
        }
        let flag_bits = u8::from_str_radix(flags, 16).map_err(|_| bad())?;
        let trace_id = trace_id.to_ascii_lowercase();
        Ok(Self {
            root: format!("1-{}-{}", &trace_id[..8], &trace_id[8..]),
            parent: Some(parent.to_ascii_lowercase()),
            sampled: Some(if flag_bits & 1 == 1 {
                SampledFlag::Sampled
            } else {
                SampledFlag::NotSampled
            }),
            lineage: None,
            extra: Vec::new(),
        })
    }
}

fn set_once<T>(slot: &mut Option<T>, key: &str, value: T) -> Result<(), TraceHeaderError> {
    if slot.is_some() {
        return Err(TraceHeaderError::DuplicateKey(key.to_string()));
    }
    *slot = Some(value);
    Ok(())
}

/// `1-5759e988-bd862e3fe1be46a994272793` -> `5759e988bd862e3fe1be46a994272793`.
pub fn xray_trace_id_to_hex(root: &str) -> Option<String> {
    if !is_valid_xray_trace_id(root) {
        return None;
    }
    Some(format!("{}{}", &root[2..10], &root[11..]).to_ascii_lowercase())
}

/// `5759e988bd862e3fe1be46a994272793` -> `1-5759e988-bd862e3fe1be46a994272793`.
pub fn hex_to_xray_trace_id(hex: &str) -> Option<String> {
    if !is_hex(hex, 32) || is_all_zero(hex) {
        return None;
    }
    let lowered = hex.to_ascii_lowercase();
    Some(format!("1-{}-{}", &lowered[..8], &lowered[8..]))
}

/// Writes the header in the order the X-Ray SDKs do: Root, Parent, Sampled,
/// Lineage, then unknown keys as received.
impl fmt::Display for TraceHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Root={}", self.root)?;
        if let Some(parent) = &self.parent {
            write!(f, ";Parent={parent}")?;
        }
        if let Some(sampled) = self.sampled {
            write!(f, ";Sampled={}", sampled.as_str())?;
        }
        if let Some(lineage) = &self.lineage {
            write!(f, ";Lineage={lineage}")?;
        }
        for (key, value) in &self.extra {
            write!(f, ";{key}={value}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = "1-5759e988-bd862e3fe1be46a994272793";

    /// Header, then the Parent, Sampled, Lineage and extra pairs it holds.
    type ParseCase<'a> = (
        &'a str,
        Option<&'a str>,
        Option<SampledFlag>,
        Option<&'a str>,
        &'a [(&'a str, &'a str)],
    );

    #[test]
    fn parses_the_documented_forms() {
        let cases: &[ParseCase<'_>] = &[
            (
                "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
                Some("53995c3f42cd8ad8"),
                Some(SampledFlag::Sampled),
                None,
                &[],
            ),
            (
                "Root=1-5759e988-bd862e3fe1be46a994272793",
                None,
                None,
                None,
                &[],
            ),
            (
                "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=?",
                None,
                Some(SampledFlag::Requested),
                None,
                &[],
            ),
            (
                " Sampled=0 ; Root=1-5759E988-BD862E3FE1BE46A994272793 ;Parent=53995C3F42CD8AD8 ",
                Some("53995c3f42cd8ad8"),
                Some(SampledFlag::NotSampled),
                None,
                &[],
            ),
            (
                "Self=1-67891234-12456789abcdef012345678;Root=1-5759e988-bd862e3fe1be46a994272793;CalledFrom=app;Lineage=a87bd80c:1",
                None,
                None,
                Some("a87bd80c:1"),
                &[
                    ("Self", "1-67891234-12456789abcdef012345678"),
                    ("CalledFrom", "app"),
                ],
            ),
            (
                "root=1-5759e988-bd862e3fe1be46a994272793;parent=53995c3f42cd8ad8;sampled=1;",
                Some("53995c3f42cd8ad8"),
                Some(SampledFlag::Sampled),
                None,
                &[],
            ),
        ];
        for (input, parent, sampled, lineage, extra) in cases {
            let header =
                TraceHeader::parse(input).unwrap_or_else(|error| panic!("{input}: {error}"));
            assert_eq!(header.root, ROOT, "{input}");
            assert_eq!(header.parent.as_deref(), *parent, "{input}");
            assert_eq!(header.sampled, *sampled, "{input}");
            assert_eq!(header.lineage.as_deref(), *lineage, "{input}");
            let extra_owned: Vec<(String, String)> = extra
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect();
            assert_eq!(header.extra, extra_owned, "{input}");
        }
    }

    #[test]
    fn rejects_malformed_headers() {
        let cases: &[(&str, TraceHeaderError)] = &[
            ("", TraceHeaderError::MissingRoot),
            (
                "Parent=53995c3f42cd8ad8;Sampled=1",
                TraceHeaderError::MissingRoot,
            ),
            (
                "Root=2-5759e988-bd862e3fe1be46a994272793",
                TraceHeaderError::BadRoot("2-5759e988-bd862e3fe1be46a994272793".into()),
            ),
            (
                "Root=1-5759e98-bd862e3fe1be46a994272793",
                TraceHeaderError::BadRoot("1-5759e98-bd862e3fe1be46a994272793".into()),
            ),
            (
                "Root=1-5759e988-bd862e3fe1be46a99427279z",
                TraceHeaderError::BadRoot("1-5759e988-bd862e3fe1be46a99427279z".into()),
            ),
            (
                "Root=1-00000000-000000000000000000000000",
                TraceHeaderError::BadRoot("1-00000000-000000000000000000000000".into()),
            ),
            (
                "Root=5759e988bd862e3fe1be46a994272793",
                TraceHeaderError::BadRoot("5759e988bd862e3fe1be46a994272793".into()),
            ),
            (
                "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=123",
                TraceHeaderError::BadParent("123".into()),
            ),
            (
                "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=yes",
                TraceHeaderError::BadSampled("yes".into()),
            ),
            (
                "Root=1-5759e988-bd862e3fe1be46a994272793;garbage",
                TraceHeaderError::BadPair("garbage".into()),
            ),
            (
                "Root=1-5759e988-bd862e3fe1be46a994272793;Root=1-5759e988-bd862e3fe1be46a994272794",
                TraceHeaderError::DuplicateKey("Root".into()),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                TraceHeader::parse(input).err().as_ref(),
                Some(expected),
                "{input}"
            );
        }
    }

    #[test]
    fn formats_in_sdk_order_and_round_trips() {
        let input = "Lineage=a87bd80c:1;Foo=bar;Sampled=?;Parent=53995c3f42cd8ad8;Root=1-5759e988-bd862e3fe1be46a994272793";
        let header = TraceHeader::parse(input).unwrap();
        let formatted = header.to_string();
        assert_eq!(
            formatted,
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=?;Lineage=a87bd80c:1;Foo=bar"
        );
        assert_eq!(TraceHeader::parse(&formatted).unwrap(), header);
        let bare = TraceHeader::new(ROOT.to_string(), None, None);
        assert_eq!(bare.to_string(), format!("Root={ROOT}"));
    }

    #[test]
    fn maps_to_and_from_traceparent() {
        let header = TraceHeader::parse(
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        )
        .unwrap();
        let traceparent = header.to_traceparent().unwrap();
        assert_eq!(
            traceparent,
            "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01"
        );
        assert_eq!(TraceHeader::from_traceparent(&traceparent).unwrap(), header);

        let requested =
            TraceHeader::parse(&format!("Root={ROOT};Parent=53995c3f42cd8ad8;Sampled=?")).unwrap();
        assert!(requested.to_traceparent().unwrap().ends_with("-00"));
        let no_parent = TraceHeader::parse(&format!("Root={ROOT};Sampled=1")).unwrap();
        assert_eq!(no_parent.to_traceparent(), None);

        let unsampled = TraceHeader::from_traceparent(
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
        )
        .unwrap();
        assert_eq!(unsampled.root, "1-0af76519-16cd43dd8448eb211c80319c");
        assert_eq!(unsampled.sampled, Some(SampledFlag::NotSampled));
        // A future version may carry more fields; version 00 may not.
        assert!(
            TraceHeader::from_traceparent(
                "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra"
            )
            .is_ok()
        );
        for bad in [
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-0af7651916cd43dd8448eb211c80319-b7ad6b7169203331-01",
            "",
        ] {
            assert!(TraceHeader::from_traceparent(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn converts_trace_ids() {
        assert_eq!(
            xray_trace_id_to_hex(ROOT).as_deref(),
            Some("5759e988bd862e3fe1be46a994272793")
        );
        assert_eq!(
            hex_to_xray_trace_id("5759e988bd862e3fe1be46a994272793").as_deref(),
            Some(ROOT)
        );
        assert_eq!(xray_trace_id_to_hex("1-5759e988"), None);
        assert_eq!(
            hex_to_xray_trace_id("00000000000000000000000000000000"),
            None
        );
    }
}

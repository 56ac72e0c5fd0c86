//! AWS Signature Version 4 verification, for the X-Ray API clients that can
//! only sign (boto3 and the other AWS SDKs, the X-Ray daemon).
//!
//! The server recomputes the signature the way botocore computes it: the
//! canonical request (method, path percent-encoded again, sorted query,
//! the signed headers trimmed, the body's SHA-256), the string to sign with
//! the request's `X-Amz-Date` and credential scope, and the HMAC chain from
//! the secret. A request older or newer than [`MAX_SKEW`] is refused, so a
//! captured request cannot be replayed later.

use std::time::{Duration, SystemTime};

use axum::http::{HeaderMap, Method};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// How far `X-Amz-Date` may be from the server's clock (AWS allows 5 min;
/// the X-Ray daemon's host clocks drift, so a little more).
pub const MAX_SKEW: Duration = Duration::from_secs(15 * 60);

const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// Why a SigV4 request is refused (the message its client sees).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigV4Error {
    #[error("only AWS4-HMAC-SHA256 signatures are accepted")]
    NotSigV4,
    #[error("malformed SigV4 authorization part {0:?}")]
    MalformedPart(String),
    #[error("SigV4 authorization has no {0}")]
    Missing(&'static str),
    #[error("SigV4 credential scope {0:?} is not date/region/service/aws4_request")]
    Scope(String),
    #[error("SigV4 credential has no access key id")]
    NoAccessKeyId,
    #[error("SigV4 signature must sign the host header")]
    HostNotSigned,
    #[error("a SigV4 request needs an X-Amz-Date header")]
    NoDate,
    #[error("X-Amz-Date {0:?} is not yyyymmddThhmmssZ")]
    Date(String),
    #[error("X-Amz-Date is not the date of the credential scope")]
    DateOutsideScope,
    #[error(
        "signature expired: X-Amz-Date {0} is more than {minutes} minutes from the server's time",
        minutes = MAX_SKEW.as_secs() / 60
    )]
    Expired(String),
    #[error("x-amz-content-sha256 does not match the body")]
    PayloadHash,
    #[error("signed header {0:?} is missing from the request")]
    SignedHeaderMissing(String),
    #[error("signature is not hex")]
    SignatureNotHex,
    #[error("the request signature does not match (check the secret access key)")]
    Mismatch,
}

/// The parts of an `Authorization: AWS4-HMAC-SHA256 ...` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub access_key_id: String,
    /// `date/region/service/aws4_request`.
    scope: String,
    date: String,
    region: String,
    service: String,
    signed_headers: Vec<String>,
    signature: String,
}

/// Whether `value` is a SigV4 `Authorization` header.
pub fn is_sigv4(value: &str) -> bool {
    value.starts_with(ALGORITHM)
}

impl Authorization {
    /// Parses `AWS4-HMAC-SHA256 Credential=AKID/20261130/us-east-1/xray/aws4_request,
    /// SignedHeaders=host;x-amz-date, Signature=hex`.
    pub fn parse(value: &str) -> Result<Self, SigV4Error> {
        let rest = value.strip_prefix(ALGORITHM).ok_or(SigV4Error::NotSigV4)?;
        let (mut credential, mut signed_headers, mut signature) = (None, None, None);
        for part in rest.split(',') {
            let Some((name, value)) = part.trim().split_once('=') else {
                return Err(SigV4Error::MalformedPart(part.to_string()));
            };
            match name {
                "Credential" => credential = Some(value),
                "SignedHeaders" => signed_headers = Some(value),
                "Signature" => signature = Some(value),
                _ => {}
            }
        }
        let credential = credential.ok_or(SigV4Error::Missing("Credential"))?;
        let signed_headers = signed_headers.ok_or(SigV4Error::Missing("SignedHeaders"))?;
        let signature = signature.ok_or(SigV4Error::Missing("Signature"))?;
        let mut fields = credential.splitn(2, '/');
        let access_key_id = fields.next().unwrap_or_default().to_string();
        let scope = fields.next().unwrap_or_default().to_string();
        let scope_parts: Vec<&str> = scope.split('/').collect();
        let [date, region, service, "aws4_request"] = scope_parts[..] else {
            return Err(SigV4Error::Scope(scope));
        };
        if access_key_id.is_empty() {
            return Err(SigV4Error::NoAccessKeyId);
        }
        let signed_headers: Vec<String> = signed_headers
            .split(';')
            .map(|name| name.to_ascii_lowercase())
            .collect();
        if !signed_headers.iter().any(|name| name == "host") {
            return Err(SigV4Error::HostNotSigned);
        }
        Ok(Self {
            access_key_id,
            date: date.to_string(),
            region: region.to_string(),
            service: service.to_string(),
            scope,
            signed_headers,
            signature: signature.to_ascii_lowercase(),
        })
    }

    /// Checks the signature of a request (`path_and_query` as sent, `body`
    /// whole) against `secret`, at server time `now`.
    pub fn verify(
        &self,
        secret: &str,
        method: &Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), SigV4Error> {
        let amz_date = header_text(headers, "x-amz-date").ok_or(SigV4Error::NoDate)?;
        let signed_at =
            parse_amz_date(amz_date).ok_or_else(|| SigV4Error::Date(amz_date.to_string()))?;
        if !amz_date.starts_with(&self.date) {
            return Err(SigV4Error::DateOutsideScope);
        }
        let skew = now
            .duration_since(signed_at)
            .or_else(|_| signed_at.duration_since(now))
            .unwrap_or_default();
        if skew > MAX_SKEW {
            return Err(SigV4Error::Expired(amz_date.to_string()));
        }
        let payload_hash = hex::encode(Sha256::digest(body));
        if let Some(claimed) = header_text(headers, "x-amz-content-sha256")
            && claimed != payload_hash
        {
            return Err(SigV4Error::PayloadHash);
        }
        let canonical = self.canonical_request(method, path_and_query, headers, &payload_hash)?;
        let string_to_sign = format!(
            "{ALGORITHM}\n{amz_date}\n{}\n{}",
            self.scope,
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        let mut key = hmac(format!("AWS4{secret}").as_bytes(), self.date.as_bytes());
        for part in [
            self.region.as_bytes(),
            self.service.as_bytes(),
            b"aws4_request",
        ] {
            key = hmac(&key, part);
        }
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
        mac.update(string_to_sign.as_bytes());
        let expected = hex::decode(&self.signature).map_err(|_| SigV4Error::SignatureNotHex)?;
        // Constant time: the comparison leaks nothing about the right signature.
        mac.verify_slice(&expected)
            .map_err(|_| SigV4Error::Mismatch)
    }

    fn canonical_request(
        &self,
        method: &Method,
        path_and_query: &str,
        headers: &HeaderMap,
        payload_hash: &str,
    ) -> Result<String, SigV4Error> {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let mut canonical = format!(
            "{}\n{}\n{}\n",
            method.as_str(),
            encode(if path.is_empty() { "/" } else { path }, true),
            canonical_query(query)
        );
        for name in &self.signed_headers {
            let values: Vec<String> = headers
                .get_all(name.as_str())
                .iter()
                .map(|value| {
                    String::from_utf8_lossy(value.as_bytes())
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .collect();
            if values.is_empty() {
                return Err(SigV4Error::SignedHeaderMissing(name.clone()));
            }
            canonical.push_str(&format!("{name}:{}\n", values.join(",")));
        }
        canonical.push_str(&format!(
            "\n{}\n{payload_hash}",
            self.signed_headers.join(";")
        ));
        Ok(canonical)
    }
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// `20261130T031500Z` as a time.
fn parse_amz_date(text: &str) -> Option<SystemTime> {
    let parsed = chrono::NaiveDateTime::parse_from_str(text, "%Y%m%dT%H%M%SZ").ok()?;
    let seconds = u64::try_from(parsed.and_utc().timestamp()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds))
}

/// Percent-encodes every byte but the unreserved ones (and `/` in paths),
/// as botocore does: an already encoded path is encoded again.
fn encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric()
            || matches!(byte, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && byte == b'/')
        {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let hex_pair = bytes
            .get(index + 1..index + 3)
            .and_then(|pair| std::str::from_utf8(pair).ok())
            .and_then(|pair| u8::from_str_radix(pair, 16).ok());
        match (bytes[index], hex_pair) {
            (b'%', Some(byte)) => {
                out.push(byte);
                index += 3;
            }
            (byte, _) => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The query's parameters decoded, encoded canonically and sorted.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (encode(&decode(name), false), encode(&decode(value), false))
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's published example (the `get-vanilla-query-order-key-case`
    /// case of the SigV4 test suite): its secret, request and signature.
    #[test]
    fn the_aws_test_suite_example_verifies_and_a_changed_request_does_not() {
        let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        let authorization = Authorization::parse(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
        )
        .expect("parses");
        assert_eq!(authorization.access_key_id, "AKIDEXAMPLE");
        let mut headers = HeaderMap::new();
        headers.insert("host", "example.amazonaws.com".parse().unwrap());
        headers.insert("x-amz-date", "20150830T123600Z".parse().unwrap());
        let signed_at = parse_amz_date("20150830T123600Z").unwrap();
        let verify = |path: &str, headers: &HeaderMap, now: SystemTime| {
            authorization.verify(secret, &Method::GET, path, headers, b"", now)
        };
        assert_eq!(
            verify("/?Param2=value2&Param1=value1", &headers, signed_at),
            Ok(())
        );
        assert!(verify("/?Param2=value2&Param1=value3", &headers, signed_at).is_err());
        let late = signed_at + MAX_SKEW + Duration::from_secs(1);
        let error = verify("/?Param2=value2&Param1=value1", &headers, late).unwrap_err();
        assert!(error.to_string().contains("expired"), "{error}");
        let wrong_secret = authorization.verify(
            "not the secret",
            &Method::GET,
            "/?Param2=value2&Param1=value1",
            &headers,
            b"",
            signed_at,
        );
        assert!(wrong_secret.is_err());
        let mut other_host = headers.clone();
        other_host.insert("host", "attacker.example".parse().unwrap());
        assert!(verify("/?Param2=value2&Param1=value1", &other_host, signed_at).is_err());
    }

    #[test]
    fn malformed_authorizations_are_refused_with_a_reason() {
        for (header, reason) in [
            (
                "AWS4-HMAC-SHA256 Credential=A/x, SignedHeaders=host, Signature=00",
                "scope",
            ),
            (
                "AWS4-HMAC-SHA256 SignedHeaders=host, Signature=00",
                "Credential",
            ),
            (
                "AWS4-HMAC-SHA256 Credential=A/20150830/r/s/aws4_request, SignedHeaders=x-amz-date, Signature=00",
                "host",
            ),
            ("AWS4-HMAC-SHA256 garbage", "malformed"),
        ] {
            let error = Authorization::parse(header).unwrap_err();
            assert!(error.to_string().contains(reason), "{header}: {error}");
        }
    }

    #[test]
    fn paths_and_queries_are_encoded_as_botocore_does() {
        assert_eq!(encode("/a b/%2F", true), "/a%20b/%252F");
        assert_eq!(canonical_query("b=2&a=%20x&a=1"), "a=%20x&a=1&b=2");
        assert_eq!(decode("%41%zz"), "A%zz");
    }
}

//! Text from a request is data, never query text: attribute keys, values,
//! span names and services holding quotes, backslashes, braces and SQL are
//! matched exactly as written through every API that filters by them
//! (Tempo tags, tag values and TraceQL search, Jaeger's services,
//! operations and tags, the native search in TraceQL and as an X-Ray
//! filter), and none of them makes the server fail.

use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;
use serde_json::{Value, json};

use crate::jaeger::url_encode;
use crate::otlp::{request, span, span_id, string_attribute, trace_id};
use crate::server::TestServerBuilder;

/// Strings that would end a quoted SQL literal or identifier, or that the
/// old tag query substituted (`{window}`).
const NASTY: [&str; 6] = [
    "it's",
    "say \"hi\"",
    "back\\slash",
    "x{window}",
    "}",
    "; DROP TABLE spans; --",
];

/// `text` as a TraceQL (and X-Ray filter) string literal.
fn quoted(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

fn hex(id: &[u8]) -> String {
    id.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_names_and_values_are_matched_as_data_by_every_api() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServerBuilder::new(dir.path()).spawn();
    let mut spans = Vec::new();
    for (index, text) in NASTY.iter().enumerate() {
        let seed = 700 + index as u64;
        let mut one = span(trace_id(seed), span_id(seed), text);
        one.attributes.push(string_attribute("v", text));
        one.attributes
            .push(string_attribute(text, &format!("key-{index}")));
        spans.push(one);
    }
    let body = request("injection", spans).encode_to_vec();
    let response = reqwest::Client::new()
        .post(format!("{}/v1/traces", server.otlp_http_url()))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (start, end) = (now - 600, now + 60);
    let window = format!("start={start}&end={end}");
    let micros = format!("start={}&end={}", start * 1_000_000, end * 1_000_000);
    let base = server.http_url();
    let get = |path: String| {
        let url = format!("{base}{path}");
        async move {
            let response = reqwest::get(&url).await.unwrap();
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            assert_eq!(status, 200, "{url}: {text}");
            serde_json::from_str::<Value>(&text).unwrap_or_else(|_| panic!("{url}: {text}"))
        }
    };
    let tempo_ids = |body: &Value| -> Vec<String> {
        body["traces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|trace| {
                let id = trace["traceID"].as_str().unwrap();
                format!("{id:0>32}")
            })
            .collect()
    };
    let native_ids = |body: &Value| -> Vec<String> {
        body["traces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|trace| trace["trace_id"].as_str().unwrap().to_string())
            .collect()
    };
    let jaeger_ids = |body: &Value| -> Vec<String> {
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|trace| format!("{:0>32}", trace["traceID"].as_str().unwrap()))
            .collect()
    };

    for (index, text) in NASTY.iter().enumerate() {
        let expected = vec![hex(&trace_id(700 + index as u64))];
        let key_value = format!("key-{index}");
        let by_value = format!("{{ span.v = {} }}", quoted(text));

        // Tempo: values of the attribute named `text`, with and without a
        // narrowing query; its name among the narrowed span's tags.
        let values = get(format!(
            "/api/v2/search/tag/{}/values?{window}",
            url_encode(&format!("span.{text}"))
        ))
        .await;
        assert_eq!(
            values["tagValues"],
            json!([{"type": "string", "value": key_value}]),
            "{text}"
        );
        let narrowed = get(format!(
            "/api/v2/search/tag/{}/values?{window}&q={}",
            url_encode(&format!("span.{text}")),
            url_encode(&by_value)
        ))
        .await;
        assert_eq!(narrowed["tagValues"], values["tagValues"], "{text}");
        let v1 = get(format!(
            "/api/search/tag/{}/values?{window}",
            url_encode(text)
        ))
        .await;
        assert_eq!(v1["tagValues"], json!([key_value]), "{text}");
        let of_value = get(format!(
            "/api/v2/search/tag/span.v/values?{window}&q={}",
            url_encode(&by_value)
        ))
        .await;
        assert_eq!(
            of_value["tagValues"],
            json!([{"type": "string", "value": text}]),
            "{text}"
        );
        let tags = get(format!(
            "/api/v2/search/tags?scope=span&{window}&q={}",
            url_encode(&by_value)
        ))
        .await;
        let names = tags["scopes"][0]["tags"].as_array().unwrap();
        assert!(names.contains(&json!(text)), "{text}: {tags}");

        // TraceQL search by value and by attribute name, on Tempo's API and
        // the native one; the X-Ray filter by root name.
        let found = get(format!("/api/search?{window}&q={}", url_encode(&by_value))).await;
        assert_eq!(tempo_ids(&found), expected, "{by_value}");
        let by_name = format!("{{ span.{} = \"{key_value}\" }}", quoted(text));
        let found = get(format!("/api/search?{window}&q={}", url_encode(&by_name))).await;
        assert_eq!(tempo_ids(&found), expected, "{by_name}");
        let found = get(format!("/v1/search?{window}&q={}", url_encode(&by_value))).await;
        assert_eq!(native_ids(&found), expected, "{by_value}");
        let filter = format!("name = {}", quoted(text));
        let found = get(format!(
            "/v1/search?{window}&lang=xray&q={}",
            url_encode(&filter)
        ))
        .await;
        assert_eq!(native_ids(&found), expected, "{filter}");

        // Jaeger: operation, tag, and the service and span kind as given.
        let found = get(format!(
            "/jaeger/api/traces?service=injection&operation={}&{micros}",
            url_encode(text)
        ))
        .await;
        assert_eq!(jaeger_ids(&found), expected, "operation {text}");
        let tags = json!({ "v": text }).to_string();
        let found = get(format!(
            "/jaeger/api/traces?service=injection&tags={}&{micros}",
            url_encode(&tags)
        ))
        .await;
        assert_eq!(jaeger_ids(&found), expected, "tags {tags}");
        let tags = json!({ *text: key_value }).to_string();
        let found = get(format!(
            "/jaeger/api/traces?service=injection&tags={}&{micros}",
            url_encode(&tags)
        ))
        .await;
        assert_eq!(jaeger_ids(&found), expected, "tags {tags}");
        let none = get(format!(
            "/jaeger/api/services/{}/operations",
            url_encode(text)
        ))
        .await;
        assert_eq!(none["data"], json!([]), "{text}");
        let none = get(format!(
            "/jaeger/api/operations?service=injection&spanKind={}",
            url_encode(text)
        ))
        .await;
        assert_eq!(none["data"], json!([]), "{text}");
        let none = get(format!(
            "/jaeger/api/traces?service={}&{micros}",
            url_encode(text)
        ))
        .await;
        assert_eq!(none["data"], json!([]), "{text}");
    }

    // The request that used to be parsed as SQL: a legal key holding
    // `{window}` with a narrowing query that matches nothing.
    let nothing = get(format!(
        "/api/v2/search/tag/span.x%7Bwindow%7D/values?{window}&q={}",
        url_encode(r#"{span.y="a"}"#)
    ))
    .await;
    assert_eq!(nothing["tagValues"], json!([]));
    // Everything is still there.
    let all = get(format!(
        "/jaeger/api/operations?service=injection&spanKind=server"
    ))
    .await;
    assert_eq!(all["data"].as_array().unwrap().len(), NASTY.len(), "{all}");
}

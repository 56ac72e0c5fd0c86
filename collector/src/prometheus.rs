//! Prometheus exposition, shared by every part that reports on `/metrics`.
//!
//! tracelake's own counters (receivers, tail sampling, the service-map
//! aggregation) are encoded through the process's one
//! `prometheus_client` registry ([`encode_counter`] from a `Collector`). A tenant's own series (the span metrics under
//! Tempo's names, its OTLP metrics) are data, written in Prometheus text
//! with the label order Tempo's and Prometheus' users see
//! ([`write_counter`], [`write_histogram`]); the registry's client has no
//! summary type, which OTLP metrics need.

use std::fmt::{self, Write};

use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

/// Writes one counter family: HELP, TYPE and one sample per
/// `(labels, value)`, where `labels` is empty or `{key="value",...}`.
pub fn write_counter(out: &mut String, name: &str, help: &str, samples: &[(String, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

/// [`write_counter`] for a counter without labels.
pub fn write_plain_counter(out: &mut String, name: &str, help: &str, value: u64) {
    write_counter(out, name, help, &[(String::new(), value)]);
}

/// `{key="value",...}` with values escaped as the text format asks
/// (backslash, double quote, newline); empty for no labels.
pub fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let mut out = String::from("{");
    for (index, (key, value)) in pairs.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        out.push_str(key);
        out.push_str("=\"");
        for character in value.chars() {
            match character {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                other => out.push(other),
            }
        }
        out.push('"');
    }
    out.push('}');
    out
}

/// One histogram series: label pairs, cumulative counts per bound, sum and
/// count.
pub struct HistogramSeries<'a> {
    pub labels: Vec<(&'a str, &'a str)>,
    pub cumulative: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

/// Writes one histogram family: `_bucket` per bound and `+Inf`, `_sum`,
/// `_count`.
pub fn write_histogram(
    out: &mut String,
    name: &str,
    help: &str,
    bounds: &[f64],
    series: &[HistogramSeries<'_>],
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for one in series {
        for (bound, count) in bounds.iter().zip(&one.cumulative) {
            let bound_text = bound.to_string();
            let mut pairs = one.labels.clone();
            pairs.push(("le", &bound_text));
            let _ = writeln!(out, "{name}_bucket{} {count}", labels(&pairs));
        }
        let mut pairs = one.labels.clone();
        pairs.push(("le", "+Inf"));
        let _ = writeln!(out, "{name}_bucket{} {}", labels(&pairs), one.count);
        let plain = labels(&one.labels);
        let _ = writeln!(out, "{name}_sum{plain} {}", one.sum);
        let _ = writeln!(out, "{name}_count{plain} {}", one.count);
    }
}

/// A sample's label pairs, in order.
pub type Labels<'a> = Vec<(&'a str, &'a str)>;

/// Encodes one counter family: one sample per `(labels, value)`. `name`
/// is the sample's (ending in `_total`); the family is named without it,
/// as OpenMetrics has it.
pub fn encode_counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: &[(Labels<'_>, u64)],
) -> fmt::Result {
    let family = name.strip_suffix("_total").unwrap_or(name);
    let mut metric = encoder.encode_descriptor(family, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        if labels.is_empty() {
            metric.encode_counter::<NoLabelSet, _, u64>(value, None)?;
        } else {
            metric
                .encode_family(labels)?
                .encode_counter::<NoLabelSet, _, u64>(value, None)?;
        }
    }
    Ok(())
}

/// [`encode_counter`] for a counter without labels.
pub fn encode_plain_counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> fmt::Result {
    encode_counter(encoder, name, help, &[(Vec::new(), value)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_histograms_cumulative() {
        assert_eq!(labels(&[]), "");
        assert_eq!(
            labels(&[("a", "x"), ("b", "q\"\\\n")]),
            "{a=\"x\",b=\"q\\\"\\\\\\n\"}"
        );
        let mut out = String::new();
        write_histogram(
            &mut out,
            "h",
            "help",
            &[0.1, 1.0],
            &[HistogramSeries {
                labels: vec![("s", "x")],
                cumulative: vec![1, 3],
                sum: 1.5,
                count: 4,
            }],
        );
        assert_eq!(
            out,
            "# HELP h help\n# TYPE h histogram\nh_bucket{s=\"x\",le=\"0.1\"} 1\nh_bucket{s=\"x\",le=\"1\"} 3\nh_bucket{s=\"x\",le=\"+Inf\"} 4\nh_sum{s=\"x\"} 1.5\nh_count{s=\"x\"} 4\n"
        );
    }
}

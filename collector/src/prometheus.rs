//! Prometheus text exposition, shared by every part that reports counters
//! on `/metrics`.

use std::fmt::Write;

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

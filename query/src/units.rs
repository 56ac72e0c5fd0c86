//! Durations as query languages write them: a number and a unit, Go style
//! (`1.5s`, `100ms`, `250us`/`250µs`, `10ns`, `2m`, `1h`), as the Jaeger
//! API's and Tempo's `minDuration`/`maxDuration` read them. TraceQL's
//! literals (`1h30m`, Prometheus' `d w y`) build on [`unit_nanos`].

/// Nanoseconds of a duration like `1.5s`; `None` for anything else or a
/// value outside an i64 of nanoseconds. Negative amounts are kept;
/// callers that need a bound check the sign.
pub fn parse_duration_nanos(text: &str) -> Option<i64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic() || c == 'µ')?;
    let (number, unit) = text.split_at(split);
    let amount: f64 = number.parse().ok()?;
    let scale = unit_nanos(unit)?;
    let nanos = amount * scale;
    (nanos.is_finite() && nanos.abs() < 9.2e18).then_some(nanos as i64)
}

/// Nanoseconds in one `unit` of Go's durations (`ns us µs ms s m h`).
pub fn unit_nanos(unit: &str) -> Option<f64> {
    Some(match unit {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        "h" => 3600e9,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration_nanos("1.5s"), Some(1_500_000_000));
        assert_eq!(parse_duration_nanos("100ms"), Some(100_000_000));
        assert_eq!(parse_duration_nanos("250us"), Some(250_000));
        assert_eq!(parse_duration_nanos("250µs"), Some(250_000));
        assert_eq!(parse_duration_nanos("2m"), Some(120_000_000_000));
        assert_eq!(parse_duration_nanos("-1s"), Some(-1_000_000_000));
        assert_eq!(parse_duration_nanos("fast"), None);
        assert_eq!(parse_duration_nanos("5parsecs"), None);
        assert_eq!(parse_duration_nanos("1e300h"), None);
    }
}

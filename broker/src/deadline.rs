//! The caller's gRPC deadline, from the `grpc-timeout` request header.

use std::time::Duration;

use tonic::metadata::MetadataMap;

/// Parses a `grpc-timeout` value: 1-8 digits and a unit (H, M, S, m, u, n).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The least the broker answers before a caller's own deadline.
pub const MIN_MARGIN: Duration = Duration::from_millis(50);
/// The most the broker answers before a caller's own deadline.
pub const MAX_MARGIN: Duration = Duration::from_secs(1);

/// How long before the caller's own deadline the broker gives up and
/// answers: a tenth of it, within [`MIN_MARGIN`, `MAX_MARGIN`].
///
/// tonic's server starts its own timer on `grpc-timeout` before the handler
/// runs, and answers a bare CANCELLED "Timeout expired" when it fires; the
/// caller's timer fires when the deadline passes on its side. The broker's
/// documented answer (DEADLINE_EXCEEDED, OUTCOME_UNKNOWN with its metadata)
/// only reaches the caller if it is sent before both, so the margin covers
/// the time between tonic's timer and the handler's, and the trip back to
/// the caller. A tenth scales with the caller's own tolerance for delay.
pub fn margin(caller: Duration) -> Duration {
    (caller / 10).clamp(MIN_MARGIN, MAX_MARGIN)
}

/// The deadline to apply: the caller's less the [`margin`], capped at `max`,
/// or `default` when the caller set none. Zero when the caller's deadline is
/// no longer than the margin: too short to relay anything.
pub fn effective(metadata: &MetadataMap, default: Duration, max: Duration) -> Duration {
    metadata
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
        .map_or(default, |d| d.saturating_sub(margin(d)).min(max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_grpc_timeout("30S"), Some(Duration::from_secs(30)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("5u"), Some(Duration::from_micros(5)));
        assert_eq!(parse_grpc_timeout("S"), None);
        assert_eq!(parse_grpc_timeout("123456789S"), None);
        assert_eq!(parse_grpc_timeout("1x"), None);
        assert_eq!(parse_grpc_timeout("-1S"), None);
    }

    #[test]
    fn caps_and_defaults() {
        let mut md = MetadataMap::new();
        let d = Duration::from_secs(30);
        let max = Duration::from_secs(60);
        assert_eq!(effective(&md, d, max), d);
        md.insert("grpc-timeout", "5M".parse().unwrap());
        assert_eq!(effective(&md, d, max), max);
        md.insert("grpc-timeout", "2S".parse().unwrap());
        assert_eq!(effective(&md, d, max), Duration::from_millis(1800));
        md.insert("grpc-timeout", "100m".parse().unwrap());
        assert_eq!(effective(&md, d, max), Duration::from_millis(50));
        md.insert("grpc-timeout", "50m".parse().unwrap());
        assert_eq!(effective(&md, d, max), Duration::ZERO);
        md.insert("grpc-timeout", "40S".parse().unwrap());
        assert_eq!(effective(&md, d, max), Duration::from_secs(39));
        md.insert("grpc-timeout", "1H".parse().unwrap());
        assert_eq!(effective(&md, d, max), max);
    }
}

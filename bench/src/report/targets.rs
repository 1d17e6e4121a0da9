//! The targets of issue 8, judged against one report's figures.

use serde::Serialize;

use super::Report;

/// One target of issue 8 and where this run stands.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TargetCheck {
    pub target: &'static str,
    /// `met`, `not met`, `met below target scale` or `not measured`.
    pub status: &'static str,
    pub measured: String,
}

/// The scale for sessions and reconnects.
pub const TARGET_SESSIONS: u64 = 100_000;
pub const TARGET_BYTES_PER_SESSION: u64 = 20 * 1024;
pub const TARGET_RECONNECT_SECONDS: f64 = 60.0;
pub const TARGET_CRYPTO_US: f64 = 200.0;

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "not met" }
}

/// Where the report stands against each target.
pub fn check(report: &Report) -> Vec<TargetCheck> {
    let r = &report.ratios;
    let mut targets = Vec::new();
    let ratio_target = |target, value: Option<f64>, ok: fn(f64) -> bool| TargetCheck {
        target,
        status: value.map_or("not measured", |v| met(ok(v))),
        measured: value.map_or_else(String::new, |v| format!("{v:.2}x")),
    };
    targets.push(ratio_target(
        "routed p50 <= 1.0x nats_tls p50",
        r.routed_over_nats_p50,
        |v| v <= 1.0,
    ));
    targets.push(ratio_target(
        "routed p99 <= 1.0x nats_tls p99",
        r.routed_over_nats_p99,
        |v| v <= 1.0,
    ));
    targets.push(ratio_target(
        "routed rps >= 1.0x nats_tls rps",
        r.routed_over_nats_rps,
        |v| v >= 1.0,
    ));
    targets.push(match &report.sessions {
        None => TargetCheck {
            target: "100,000 idle sessions, <= 20 KiB of broker memory each",
            status: "not measured",
            measured: String::new(),
        },
        Some(s) => {
            let small = s.broker_rss_bytes_per_session <= TARGET_BYTES_PER_SESSION;
            TargetCheck {
                target: "100,000 idle sessions, <= 20 KiB of broker memory each",
                status: match (s.count >= TARGET_SESSIONS, small) {
                    (true, true) => "met",
                    (false, true) => "met below target scale",
                    (_, false) => "not met",
                },
                measured: format!(
                    "{} sessions, {:.1} KiB each",
                    s.count,
                    s.broker_rss_bytes_per_session as f64 / 1024.0
                ),
            }
        }
    });
    targets.push(match &report.reconnect {
        None => TargetCheck {
            target: "all 100,000 reconnected within 60 s of a restart",
            status: "not measured",
            measured: String::new(),
        },
        Some(re) => {
            let fast = re.all_reconnected && re.seconds <= TARGET_RECONNECT_SECONDS;
            TargetCheck {
                target: "all 100,000 reconnected within 60 s of a restart",
                status: match (re.count >= TARGET_SESSIONS, fast) {
                    (true, true) => "met",
                    (false, true) => "met below target scale",
                    (_, false) => "not met",
                },
                measured: format!("{} in {:.1} s", re.count, re.seconds),
            }
        }
    });
    targets.push(TargetCheck {
        target: "crypto seal + open of request and reply <= 200 us CPU",
        status: report
            .crypto
            .as_ref()
            .map_or("not measured", |c| met(c.seal_open_us <= TARGET_CRYPTO_US)),
        measured: report
            .crypto
            .as_ref()
            .map_or_else(String::new, |c| format!("{:.1} us", c.seal_open_us)),
    });
    targets
}

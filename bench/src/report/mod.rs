//! The report of one run: the JSON written by `--json` ([`Report`]), the
//! table printed at the end ([`table`]), the targets of issue 8 checked
//! against the figures ([`targets`]), the versions of everything measured
//! ([`versions`]), and the medians over several reports ([`median`]).
//!
//! The JSON is nested: `routed.p50_us` is `{"routed": {"p50_us": ...}}`.
//! Every scenario that ran has its object; one that failed has its message
//! under `errors`. Latencies are µs, memory bytes, durations seconds.

mod median;
mod table;
mod targets;
mod versions;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::cli::Settings;
use crate::load::Measured;
use crate::payload::PAYLOAD_BYTES;
use crate::scenarios::crypto::Crypto;
use crate::scenarios::routed::Routed;
use crate::scenarios::routed_cross_node::CrossNode;
use crate::scenarios::sessions::{Reconnect, Sessions};

pub use median::print_medians;
pub use targets::TargetCheck;
pub use versions::Versions;

/// Bumped when a key changes meaning or disappears.
pub const SCHEMA: u32 = 1;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: u32,
    pub mode: &'static str,
    pub started_unix: u64,
    /// /proc/loadavg when the run started and ended: other work on the
    /// machine skews the figures.
    pub load_average_start: Option<String>,
    pub load_average_end: Option<String>,
    pub settings: RunSettings,
    pub versions: Versions,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routed: Option<Routed>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routed_cross_node: Option<CrossNode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direct_tonic: Option<Measured>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats_tls: Option<Measured>,
    pub ratios: Ratios,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sessions: Option<Sessions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconnect: Option<Reconnect>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crypto: Option<Crypto>,
    pub targets: Vec<TargetCheck>,
    /// Scenario name -> why it failed.
    pub errors: BTreeMap<&'static str, String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunSettings {
    pub scenarios: Vec<&'static str>,
    pub payload_bytes: usize,
    pub warmup_calls: usize,
    pub latency_calls: usize,
    pub concurrency: usize,
    pub throughput_seconds: f64,
    pub sessions_requested: usize,
    pub crypto_iterations: usize,
    pub rust_log: String,
    /// Where the routed agent's replay store was (absent: on disk in the
    /// run's working directory).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_state_dir: Option<String>,
    /// `--portal-prepared`, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub portal_prepared: Option<usize>,
}

/// routed divided by the others, and routed_cross_node by routed; above 1
/// for latency (and CPU) means the first is slower (costs more), below 1 for
/// rps means it does less.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Ratios {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routed_over_direct_p50: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routed_over_direct_p99: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routed_over_direct_rps: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routed_over_nats_p50: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routed_over_nats_p99: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routed_over_nats_rps: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cross_node_over_routed_p50: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cross_node_over_routed_p99: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cross_node_over_routed_rps: Option<f64>,
    /// Total CPU per call under load, all processes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cross_node_over_routed_cpu: Option<f64>,
}

/// `a / b` to three decimals (a throughput ratio can be a few hundredths).
fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| (a / b * 1000.0).round() / 1000.0)
}

impl Ratios {
    fn of(
        routed: Option<&Measured>,
        cross_node: Option<&Measured>,
        direct: Option<&Measured>,
        nats: Option<&Measured>,
    ) -> Ratios {
        let Some(r) = routed else {
            return Ratios::default();
        };
        let cpu = |m: &Measured| m.cpu_us_per_call.get("total").copied().unwrap_or(0.0);
        Ratios {
            cross_node_over_routed_p50: cross_node
                .and_then(|c| ratio(c.latency.p50_us, r.latency.p50_us)),
            cross_node_over_routed_p99: cross_node
                .and_then(|c| ratio(c.latency.p99_us, r.latency.p99_us)),
            cross_node_over_routed_rps: cross_node.and_then(|c| ratio(c.rps, r.rps)),
            cross_node_over_routed_cpu: cross_node.and_then(|c| ratio(cpu(c), cpu(r))),
            routed_over_direct_p50: direct.and_then(|d| ratio(r.latency.p50_us, d.latency.p50_us)),
            routed_over_direct_p99: direct.and_then(|d| ratio(r.latency.p99_us, d.latency.p99_us)),
            routed_over_direct_rps: direct.and_then(|d| ratio(r.rps, d.rps)),
            routed_over_nats_p50: nats.and_then(|n| ratio(r.latency.p50_us, n.latency.p50_us)),
            routed_over_nats_p99: nats.and_then(|n| ratio(r.latency.p99_us, n.latency.p99_us)),
            routed_over_nats_rps: nats.and_then(|n| ratio(r.rps, n.rps)),
        }
    }
}

/// The 1, 5 and 15 minute load averages.
fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(
        text.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

impl Report {
    pub fn new(settings: &Settings, versions: Versions) -> Report {
        Report {
            schema: SCHEMA,
            mode: settings.mode,
            started_unix: proto::time::unix_secs(),
            load_average_start: load_average(),
            load_average_end: None,
            settings: RunSettings {
                scenarios: settings.scenarios.iter().map(|s| s.name()).collect(),
                payload_bytes: PAYLOAD_BYTES,
                warmup_calls: settings.plan.warmup,
                latency_calls: settings.plan.requests,
                concurrency: settings.plan.concurrency,
                throughput_seconds: settings.plan.duration.as_secs_f64(),
                sessions_requested: settings.sessions,
                crypto_iterations: settings.crypto_iterations,
                rust_log: settings.rust_log.clone(),
                agent_state_dir: settings
                    .agent_state_dir
                    .as_ref()
                    .map(|d| d.display().to_string()),
                portal_prepared: settings.portal_prepared,
            },
            versions,
            routed: None,
            routed_cross_node: None,
            direct_tonic: None,
            nats_tls: None,
            ratios: Ratios::default(),
            sessions: None,
            reconnect: None,
            crypto: None,
            targets: Vec::new(),
            errors: BTreeMap::new(),
        }
    }

    /// Fills in the ratios and the target checks from the figures.
    pub fn conclude(&mut self) {
        self.load_average_end = load_average();
        self.ratios = Ratios::of(
            self.routed.as_ref().map(|r| &r.measured),
            self.routed_cross_node.as_ref().map(|c| &c.routed.measured),
            self.direct_tonic.as_ref(),
            self.nats_tls.as_ref(),
        );
        self.targets = targets::check(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Summary;

    fn measured(p50: f64, p99: f64, rps: f64) -> Measured {
        let s = Summary {
            samples: 10,
            mean_us: p50,
            min_us: p50,
            p50_us: p50,
            p90_us: p99,
            p99_us: p99,
            p999_us: p99,
            max_us: p99,
        };
        Measured {
            latency: s.clone(),
            rps,
            concurrency: 64,
            throughput_calls: 100,
            throughput_seconds: 1.0,
            loaded: s,
            cpu_us_per_call: Default::default(),
            distribution: vec![[50.0, p50], [99.0, p99]],
        }
    }

    fn report() -> Report {
        let settings = crate::cli::RunArgs {
            scenarios: Vec::new(),
            quick: true,
            requests: None,
            warmup: None,
            duration: None,
            concurrency: 64,
            sessions: None,
            sources: 8,
            simulators: None,
            agents_per_tenant: 1000,
            crypto_iterations: None,
            agent_state_dir: None,
            portal_prepared: None,
            json: None,
            plot: None,
            no_build: true,
            broker_bin: None,
            log: "info".into(),
            keep_dir: false,
        }
        .settings()
        .unwrap();
        let mut report = Report::new(&settings, Versions::collect(None, None));
        let with_cpu = |mut m: Measured, total: f64| {
            m.cpu_us_per_call.insert("total".into(), total);
            m
        };
        report.routed = Some(Routed {
            measured: with_cpu(measured(300.0, 600.0, 5000.0), 500.0),
            request_envelope_bytes: 700,
            reply_envelope_bytes: 570,
        });
        report.routed_cross_node = Some(CrossNode {
            routed: Routed {
                measured: with_cpu(measured(450.0, 1200.0, 4000.0), 750.0),
                request_envelope_bytes: 700,
                reply_envelope_bytes: 570,
            },
            broker_nodes: 2,
            nats_nodes: 3,
            forwarded_calls: 120,
            nats_messages_per_call: 9.5,
        });
        report.direct_tonic = Some(measured(100.0, 200.0, 20000.0));
        report.nats_tls = Some(measured(150.0, 300.0, 10000.0));
        report.sessions = Some(Sessions {
            count: 2000,
            requested: 2000,
            limited_by: None,
            broker_rss_before_bytes: 10 << 20,
            broker_rss_after_bytes: 50 << 20,
            broker_rss_bytes_per_session: 20971,
            connect_seconds: 2.0,
            broker_cpu_us_per_session: 300.0,
            tenants: 2,
            source_addresses: 8,
            simulator_processes: 1,
            simulator_rss_bytes_per_session: 40000,
        });
        report.reconnect = Some(Reconnect {
            count: 2000,
            seconds: 3.5,
            broker_ready_seconds: 0.1,
            broker_cpu_us_per_session: 300.0,
            all_reconnected: true,
            attempts: 2100,
            failed_attempts: 100,
            failed_timeouts: 10,
            timeline: vec![[0.5, 10.0], [3.5, 2000.0]],
        });
        report.crypto = Some(Crypto {
            iterations: 10,
            seal_request_us: 60.0,
            open_request_us: 50.0,
            seal_reply_us: 2.0,
            open_reply_us: 2.0,
            seal_open_us: 114.0,
            cpu_clock: "sched",
        });
        report.conclude();
        report
    }

    #[test]
    fn json_has_the_keys_issue_8_names() {
        let json = serde_json::to_value(report()).unwrap();
        for key in [
            "routed.p50_us",
            "routed.p99_us",
            "routed.rps",
            "direct_tonic.p50_us",
            "direct_tonic.p99_us",
            "direct_tonic.rps",
            "nats_tls.p50_us",
            "nats_tls.p99_us",
            "nats_tls.rps",
            "sessions.count",
            "sessions.broker_rss_bytes_per_session",
            "reconnect.count",
            "reconnect.seconds",
            "crypto.seal_open_us",
        ] {
            let pointer = format!("/{}", key.replace('.', "/"));
            assert!(
                json.pointer(&pointer).is_some_and(|v| v.is_number()),
                "{key} is missing or not a number"
            );
        }
        assert!(json["versions"]["crates"]["tonic"].is_string());
        assert!(
            json["versions"]["rustc"]
                .as_str()
                .unwrap()
                .starts_with("rustc")
        );
        assert_eq!(json["ratios"]["routed_over_direct_p50"], 3.0);
        assert_eq!(json["ratios"]["routed_over_nats_rps"], 0.5);
        assert_eq!(json["routed_cross_node"]["p50_us"], 450.0);
        assert_eq!(json["routed_cross_node"]["forwarded_calls"], 120);
        assert_eq!(json["ratios"]["cross_node_over_routed_p50"], 1.5);
        assert_eq!(json["ratios"]["cross_node_over_routed_p99"], 2.0);
        assert_eq!(json["ratios"]["cross_node_over_routed_rps"], 0.8);
        assert_eq!(json["ratios"]["cross_node_over_routed_cpu"], 1.5);
        assert_eq!(json["routed"]["distribution"][0][0], 50.0);
    }

    #[test]
    fn targets_are_judged() {
        let r = report();
        let status: Vec<&str> = r.targets.iter().map(|t| t.status).collect();
        assert_eq!(
            status,
            [
                "not met",
                "not met",
                "not met",
                "not met",
                "met below target scale",
                "met"
            ],
            "{:#?}",
            r.targets
        );
        assert!(
            r.table()
                .contains("routed / nats_tls:     p50 2.00x  p99 2.00x  rps 0.50x")
        );
    }
}

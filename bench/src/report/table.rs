//! The human-readable summary printed at the end of a run.

use super::Report;

impl Report {
    /// The human-readable summary.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        line(format!(
            "relay benchmark ({} mode, {} B payload, TLS on every hop, {} calls in flight for rps)",
            self.mode, self.settings.payload_bytes, self.settings.concurrency
        ));
        line(format!(
            "load average at start {}, at end {}",
            self.load_average_start.as_deref().unwrap_or("?"),
            self.load_average_end.as_deref().unwrap_or("?")
        ));
        line(String::new());
        line(format!(
            "{:<17} {:>9} {:>9} {:>9} {:>9} {:>9} {:>11} {:>9}",
            "scenario", "p50 us", "p90 us", "p99 us", "p99.9 us", "max us", "rps", "p50@64 us"
        ));
        let rows = [
            ("routed", self.routed.as_ref().map(|r| &r.measured)),
            (
                "routed_cross_node",
                self.routed_cross_node.as_ref().map(|c| &c.routed.measured),
            ),
            ("direct_tonic", self.direct_tonic.as_ref()),
            ("nats_tls", self.nats_tls.as_ref()),
        ];
        for (name, m) in rows {
            if let Some(m) = m {
                line(format!(
                    "{:<17} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>11.0} {:>9.1}",
                    name,
                    m.latency.p50_us,
                    m.latency.p90_us,
                    m.latency.p99_us,
                    m.latency.p999_us,
                    m.latency.max_us,
                    m.rps,
                    m.loaded.p50_us
                ));
            }
        }
        for (name, m) in rows {
            if let Some(m) = m {
                let parts: Vec<String> = m
                    .cpu_us_per_call
                    .iter()
                    .map(|(role, us)| format!("{role} {us:.0}"))
                    .collect();
                line(format!(
                    "{name} CPU per call under load (us): {}",
                    parts.join(", ")
                ));
            }
        }
        let r = &self.ratios;
        let x = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}x"));
        line(String::new());
        line(format!(
            "routed / direct_tonic: p50 {}  p99 {}  rps {}",
            x(r.routed_over_direct_p50),
            x(r.routed_over_direct_p99),
            x(r.routed_over_direct_rps)
        ));
        line(format!(
            "routed / nats_tls:     p50 {}  p99 {}  rps {}",
            x(r.routed_over_nats_p50),
            x(r.routed_over_nats_p99),
            x(r.routed_over_nats_rps)
        ));
        line(format!(
            "routed_cross_node / routed: p50 {}  p99 {}  rps {}  CPU per call {}",
            x(r.cross_node_over_routed_p50),
            x(r.cross_node_over_routed_p99),
            x(r.cross_node_over_routed_rps),
            x(r.cross_node_over_routed_cpu)
        ));
        if let Some(c) = &self.routed_cross_node {
            line(format!(
                "routed_cross_node: {} broker nodes on {} NATS servers; node A forwarded {} calls, {:.1} NATS messages each",
                c.broker_nodes, c.nats_nodes, c.forwarded_calls, c.nats_messages_per_call
            ));
        }
        if let Some(routed) = &self.routed {
            line(format!(
                "routed envelopes: request {} B, reply {} B",
                routed.request_envelope_bytes, routed.reply_envelope_bytes
            ));
        }
        if let Some(s) = &self.sessions {
            line(String::new());
            line(format!(
                "sessions: {} idle ({} requested), {} tenants, {} source addresses, {} simulator processes, all up in {:.1} s (broker CPU {:.0} us per session)",
                s.count,
                s.requested,
                s.tenants,
                s.source_addresses,
                s.simulator_processes,
                s.connect_seconds,
                s.broker_cpu_us_per_session
            ));
            line(format!(
                "  broker RSS {:.1} MiB -> {:.1} MiB: {:.1} KiB per session (simulators: {:.1} KiB per session)",
                s.broker_rss_before_bytes as f64 / 1048576.0,
                s.broker_rss_after_bytes as f64 / 1048576.0,
                s.broker_rss_bytes_per_session as f64 / 1024.0,
                s.simulator_rss_bytes_per_session as f64 / 1024.0
            ));
            if let Some(why) = &s.limited_by {
                line(format!("  limited by {why}"));
            }
        }
        if let Some(re) = &self.reconnect {
            line(format!(
                "reconnect after kill -9: {} sessions back in {:.1} s (broker ready after {:.2} s){}",
                re.count,
                re.seconds,
                re.broker_ready_seconds,
                if re.all_reconnected { "" } else { ", NOT ALL" }
            ));
            line(format!(
                "  {} connection attempts, {} failed, {} of them timeouts (each failure doubles that agent's backoff ceiling)",
                re.attempts, re.failed_attempts, re.failed_timeouts
            ));
            line(format!(
                "  broker CPU {:.0} us per session reconnected",
                re.broker_cpu_us_per_session
            ));
        }
        if let Some(c) = &self.crypto {
            line(String::new());
            line(format!(
                "crypto (us): seal request {:.1}, open request {:.1}, seal reply {:.1}, open reply {:.1}; CPU per cycle {:.1} ({} clock)",
                c.seal_request_us,
                c.open_request_us,
                c.seal_reply_us,
                c.open_reply_us,
                c.seal_open_us,
                c.cpu_clock
            ));
        }
        line(String::new());
        line("targets (issue 8):".to_owned());
        for t in &self.targets {
            line(format!(
                "  {:<58} {:<24} {}",
                t.target, t.status, t.measured
            ));
        }
        for (scenario, error) in &self.errors {
            line(format!("FAILED {scenario}: {error}"));
        }
        out
    }
}

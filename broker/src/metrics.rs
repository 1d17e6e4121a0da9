//! Prometheus metrics. Labels carry tenant names, operations and outcomes,
//! never anything from inside an envelope or a credential.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabel {
    pub tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub operation: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabel {
    pub operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ForwardLabels {
    /// "out": this node forwarded a request; "in": it served one.
    pub direction: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpCutLabels {
    /// "operator".
    pub port: &'static str,
    /// An `http_serve::Cut` name: header_timeout, body_timeout,
    /// body_too_large, source_full, evicted.
    pub reason: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub agents_connected: Family<TenantLabel, Gauge>,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Family<OperationLabel, Histogram>,
    pub session_refusals: Family<RefusalLabel, Counter>,
    /// Requests given to another agent because the first did not take them.
    pub retries: Counter,
    /// Sealed replies kept for GetOutcome after the portal was told
    /// OUTCOME_UNKNOWN.
    pub late_outcomes: Counter,
    /// Cluster mode: requests forwarded to, and served for, other nodes.
    pub forwards: Family<ForwardLabels, Counter>,
    /// Cluster mode: 1 while the NATS connection is up.
    pub cluster_connected: Gauge,
    /// Plain-HTTP connections and requests cut off by a deadline or a cap.
    pub http_cuts: Family<HttpCutLabels, Counter>,
    /// gRPC connections the broker closed, by deadline or limit.
    pub connections_closed: Family<ReasonLabel, Counter>,
    /// Calls cut off before their request arrived, by why.
    pub requests_cut_off: Family<ReasonLabel, Counter>,
    /// `process_*`, read from /proc on each scrape (no prefix: the names
    /// every Prometheus client library uses).
    process: Registry,
    process_open_fds: Gauge,
    process_max_fds: Gauge,
    process_resident_memory_bytes: Gauge,
    process_threads: Gauge,
    /// Agent replies nobody waited for that were not kept, by why.
    pub replies_refused: Family<RefusalLabel, Counter>,
    /// SIGHUP reloads, by result: ok or failed.
    pub config_reloads: Family<ResultLabel, Counter>,
    /// The serving certificate's notAfter, Unix seconds.
    pub tls_certificate_expiry: Gauge,
    /// Audit lines not written, by why (crate::audit).
    pub audit_dropped: Family<ReasonLabel, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("relay");
        let agents_connected = Family::<TenantLabel, Gauge>::default();
        registry.register(
            "agents_connected",
            "Agent sessions currently connected, per tenant",
            agents_connected.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Relayed portal requests by operation and outcome",
            requests.clone(),
        );
        let request_duration = Family::<OperationLabel, Histogram>::new_with_constructor(|| {
            // 100 µs to ~52 s.
            Histogram::new(exponential_buckets(0.0001, 2.0, 20))
        });
        registry.register(
            "request_duration_seconds",
            "Time from a portal request's arrival to its answer",
            request_duration.clone(),
        );
        let session_refusals = Family::<RefusalLabel, Counter>::default();
        registry.register(
            "agent_session_refusals",
            "Agent sessions refused, by reason",
            session_refusals.clone(),
        );
        let retries = Counter::default();
        registry.register(
            "request_retries",
            "Requests given to another agent before any agent acknowledged them",
            retries.clone(),
        );
        let late_outcomes = Counter::default();
        registry.register(
            "late_outcomes",
            "Sealed replies that arrived after their portal call had ended, kept for GetOutcome",
            late_outcomes.clone(),
        );
        let forwards = Family::<ForwardLabels, Counter>::default();
        registry.register(
            "cluster_forwards",
            "Cluster mode: requests forwarded to another node (direction=out) or served for one (direction=in), by outcome",
            forwards.clone(),
        );
        let cluster_connected = Gauge::default();
        registry.register(
            "cluster_connected",
            "Cluster mode: 1 while this node's NATS connection is up, else 0",
            cluster_connected.clone(),
        );
        let http_cuts = Family::<HttpCutLabels, Counter>::default();
        registry.register(
            "http_connections_cut",
            "Operator-port connections closed or requests refused by a deadline or a connection cap, by reason",
            http_cuts.clone(),
        );
        let connections_closed = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "connections_closed",
            "gRPC connections the broker closed: first_request_timeout, unauthenticated_idle, idle, source_limit, evicted",
            connections_closed.clone(),
        );
        let requests_cut_off = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "requests_cut_off",
            "Calls refused or cut off before their request message was read: refused_from_headers, unauthenticated_streams, receive_timeout",
            requests_cut_off.clone(),
        );
        let audit_dropped = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "audit_dropped",
            "Audit lines not written: rate_limited (refusals over a source's allowance)",
            audit_dropped.clone(),
        );
        let mut process = Registry::default();
        let [
            process_open_fds,
            process_max_fds,
            process_resident_memory_bytes,
            process_threads,
        ] = std::array::from_fn(|_| Gauge::default());
        for (name, help, gauge) in [
            (
                "process_open_fds",
                "Open file descriptors",
                &process_open_fds,
            ),
            (
                "process_max_fds",
                "The soft limit of open file descriptors",
                &process_max_fds,
            ),
            (
                "process_resident_memory_bytes",
                "Resident memory in bytes",
                &process_resident_memory_bytes,
            ),
            (
                "process_threads",
                "Operating system threads",
                &process_threads,
            ),
        ] {
            process.register(name, help, gauge.clone());
        }
        let replies_refused = Family::<RefusalLabel, Counter>::default();
        registry.register(
            "agent_replies_refused",
            "Agent replies not kept, by reason: unsolicited (never given to the session or not awaited), duplicate (already answered), tenant_busy (the tenant's store writes at their bound)",
            replies_refused.clone(),
        );
        let config_reloads = Family::<ResultLabel, Counter>::default();
        // Both series from the start, so that an alert on failures sees 0
        // rather than nothing.
        for result in ["ok", "failed"] {
            let _ = config_reloads.get_or_create(&ResultLabel { result });
        }
        registry.register(
            "config_reloads",
            "SIGHUP reloads of the configuration and TLS certificate, by result: ok, failed (the previous ones kept)",
            config_reloads.clone(),
        );
        let tls_certificate_expiry = Gauge::default();
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "When the certificate the gRPC port presents expires, Unix seconds",
            tls_certificate_expiry.clone(),
        );
        Metrics {
            audit_dropped,
            config_reloads,
            tls_certificate_expiry,
            http_cuts,
            connections_closed,
            requests_cut_off,
            process,
            process_open_fds,
            process_max_fds,
            process_resident_memory_bytes,
            process_threads,
            replies_refused,
            forwards,
            cluster_connected,
            registry,
            retries,
            late_outcomes,
            agents_connected,
            requests,
            request_duration,
            session_refusals,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        self.read_process();
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode_registry(&mut out, &self.process);
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn connection_closed(&self, reason: &'static str) {
        self.connections_closed
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    pub fn request_cut_off(&self, reason: &'static str) {
        self.requests_cut_off
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// The process gauges from /proc/self (left as they were where /proc
    /// is missing).
    fn read_process(&self) {
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            self.process_open_fds.set(dir.count() as i64);
        }
        if let Ok((soft, _)) = rlimit::getrlimit(rlimit::Resource::NOFILE) {
            self.process_max_fds.set(soft.min(i64::MAX as u64) as i64);
        }
        let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
            return;
        };
        let field = |name: &str| -> Option<i64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        };
        if let Some(kib) = field("VmRSS:") {
            self.process_resident_memory_bytes.set(kib * 1024);
        }
        if let Some(n) = field("Threads:") {
            self.process_threads.set(n);
        }
    }

    pub fn agent_gauge(&self, tenant: &str) -> Gauge {
        self.agents_connected
            .get_or_create(&TenantLabel {
                tenant: tenant.to_owned(),
            })
            .clone()
    }
}

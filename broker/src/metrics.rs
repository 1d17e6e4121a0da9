//! Prometheus metrics. Labels carry tenant names, operations and outcomes,
//! never anything from inside an envelope or a credential.
//!
//! Tenant labels are bounded (`limits.metrics_tenant_labels`): a tenant
//! past the bound is counted under `tenant="_other"`, so a broker with many
//! tenants cannot grow a scrape, or the Prometheus that stores it, without
//! end. The `process_*` metrics are in process.rs.

mod process;

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::Ordering;

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

/// The label of tenants past `limits.metrics_tenant_labels`: not a valid
/// tenant name (names start with a letter or digit), so never a real one.
pub const OTHER_TENANTS: &str = "_other";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
    pub commit: &'static str,
}

/// The commit the broker was built from (broker/build.rs), or "unknown".
pub const COMMIT: &str = match option_env!("RELAY_GIT_COMMIT") {
    Some(c) => c,
    None => "unknown",
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabel {
    pub node: String,
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
    /// Cluster mode: 1 while the NATS connection is up (the older name of
    /// `cluster_nats_connected`, kept for existing dashboards).
    pub cluster_connected: Gauge,
    /// Store health, set on each scrape by [`Metrics::observe_store`].
    store_up: Gauge,
    /// Cluster mode only, labelled with the node's name: a single node
    /// has no series, so an alert on them cannot fire there.
    cluster_nats_connected: Family<NodeLabel, Gauge>,
    cluster_nats_disconnects: Family<NodeLabel, Counter>,
    cluster_tenants_confirmed: Family<NodeLabel, Gauge>,
    /// Which tenants have a label of their own, at most `tenant_labels`.
    tenant_labels: Mutex<TenantLabels>,
    /// Plain-HTTP connections and requests cut off by a deadline or a cap.
    pub http_cuts: Family<HttpCutLabels, Counter>,
    /// gRPC connections the broker closed, by deadline or limit.
    pub connections_closed: Family<ReasonLabel, Counter>,
    /// Calls cut off before their request arrived, by why.
    pub requests_cut_off: Family<ReasonLabel, Counter>,
    /// `process_*`, read from /proc on each scrape (no prefix: the names
    /// every Prometheus client library uses).
    process: Registry,
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

/// The bound of tenant labels and what is counted under [`OTHER_TENANTS`].
#[derive(Debug, Default)]
struct TenantLabels {
    bound: usize,
    labeled: HashSet<String>,
    /// Tenants past the bound, with their agents connected: the `_other`
    /// gauge is their sum.
    others: HashMap<String, i64>,
}

impl TenantLabels {
    /// Whether `tenant` has a label of its own (given at first sight while
    /// fewer than `bound` tenants have one, and kept).
    fn labeled(&mut self, tenant: &str) -> bool {
        if self.labeled.contains(tenant) {
            return true;
        }
        if self.labeled.len() < self.bound {
            self.labeled.insert(tenant.to_owned());
            return true;
        }
        false
    }
}

/// What [`Metrics::observe_store`] reports in cluster mode.
#[derive(Debug, Clone, Copy)]
pub struct ClusterHealth<'a> {
    /// The node's name (`[cluster] node_name`).
    pub node: &'a str,
    pub nats_connected: bool,
    /// Times the NATS connection was lost since start.
    pub disconnects: u64,
    /// The node's copy of the tenants is known current (the lease).
    pub tenants_confirmed: bool,
}

impl Metrics {
    /// With the default bound of tenant labels.
    pub fn new() -> Metrics {
        Metrics::with_tenant_labels(crate::config::Limits::default().metrics_tenant_labels)
    }

    /// At most `tenant_labels` tenants get a label of their own.
    pub fn with_tenant_labels(tenant_labels: u32) -> Metrics {
        let mut registry = Registry::with_prefix("relay");
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                commit: COMMIT,
            })
            .set(1);
        registry.register(
            "build_info",
            "Always 1; the labels name the broker's version and the commit it was built from",
            build_info,
        );
        let store_up = Gauge::default();
        registry.register(
            "store_up",
            "1 while the store of tenants and late outcomes is usable: on one node, the embedded store is open; in a cluster, the NATS connection is up",
            store_up.clone(),
        );
        let cluster_nats_connected = Family::<NodeLabel, Gauge>::default();
        registry.register(
            "cluster_nats_connected",
            "Cluster mode: 1 while this node's NATS connection is up, else 0",
            cluster_nats_connected.clone(),
        );
        let cluster_nats_disconnects = Family::<NodeLabel, Counter>::default();
        registry.register(
            "cluster_nats_disconnects",
            "Cluster mode: times this node's NATS connection was lost",
            cluster_nats_disconnects.clone(),
        );
        let cluster_tenants_confirmed = Family::<NodeLabel, Gauge>::default();
        registry.register(
            "cluster_tenants_confirmed",
            "Cluster mode: 1 while this node's copy of the tenants is confirmed current (its lease holds), else 0: requests are refused while it is 0",
            cluster_tenants_confirmed.clone(),
        );
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
        process.register_collector(Box::new(process::ProcessCollector));
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
            store_up,
            cluster_nats_connected,
            cluster_nats_disconnects,
            cluster_tenants_confirmed,
            tenant_labels: Mutex::new(TenantLabels {
                bound: tenant_labels as usize,
                ..TenantLabels::default()
            }),
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

    /// Sets the store-health metrics; the operator port calls it before
    /// each scrape. `cluster` is None on a single node.
    pub fn observe_store(&self, store_open: bool, cluster: Option<ClusterHealth<'_>>) {
        match cluster {
            None => {
                self.store_up.set(i64::from(store_open));
            }
            Some(c) => {
                self.store_up.set(i64::from(c.nats_connected));
                self.cluster_connected.set(i64::from(c.nats_connected));
                let node = NodeLabel {
                    node: c.node.to_owned(),
                };
                self.cluster_nats_connected
                    .get_or_create(&node)
                    .set(i64::from(c.nats_connected));
                self.cluster_tenants_confirmed
                    .get_or_create(&node)
                    .set(i64::from(c.tenants_confirmed));
                // The cluster's own count is the truth; the counter only
                // ever catches up with it (two scrapes at once may race).
                self.cluster_nats_disconnects
                    .get_or_create(&node)
                    .inner()
                    .fetch_max(c.disconnects, Ordering::Relaxed);
            }
        }
    }

    /// Sets `relay_agents_connected` of a tenant: under its own label, or,
    /// past `limits.metrics_tenant_labels`, as its part of the sum under
    /// [`OTHER_TENANTS`].
    pub fn set_agents_connected(&self, tenant: &str, agents: usize) {
        let mut labels = self
            .tenant_labels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let agents = agents as i64;
        if labels.labeled(tenant) {
            self.agents_connected
                .get_or_create(&TenantLabel {
                    tenant: tenant.to_owned(),
                })
                .set(agents);
            return;
        }
        if agents == 0 {
            labels.others.remove(tenant);
        } else {
            labels.others.insert(tenant.to_owned(), agents);
        }
        self.agents_connected
            .get_or_create(&TenantLabel {
                tenant: OTHER_TENANTS.to_owned(),
            })
            .set(labels.others.values().sum());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agents(metrics: &Metrics, tenant: &str) -> Option<i64> {
        let label = TenantLabel {
            tenant: tenant.to_owned(),
        };
        let out = metrics.encode();
        let line = format!("relay_agents_connected{{tenant=\"{}\"}} ", label.tenant);
        out.lines()
            .find_map(|l| l.strip_prefix(line.as_str()))
            .map(|v| v.parse().unwrap())
    }

    #[test]
    fn tenants_past_the_bound_are_summed_under_other() {
        let metrics = Metrics::with_tenant_labels(2);
        metrics.set_agents_connected("a", 1);
        metrics.set_agents_connected("b", 2);
        metrics.set_agents_connected("c", 3);
        metrics.set_agents_connected("d", 4);
        assert_eq!(agents(&metrics, "a"), Some(1));
        assert_eq!(agents(&metrics, "b"), Some(2));
        assert_eq!(agents(&metrics, "c"), None);
        assert_eq!(agents(&metrics, OTHER_TENANTS), Some(7));
        // A labeled tenant keeps its label at 0, so no later tenant takes
        // it and no series moves between labels.
        metrics.set_agents_connected("a", 0);
        metrics.set_agents_connected("e", 5);
        assert_eq!(agents(&metrics, "a"), Some(0));
        assert_eq!(agents(&metrics, OTHER_TENANTS), Some(12));
        metrics.set_agents_connected("c", 0);
        metrics.set_agents_connected("d", 0);
        assert_eq!(agents(&metrics, OTHER_TENANTS), Some(5));
        assert_eq!(
            metrics.encode().matches("relay_agents_connected{").count(),
            3
        );
    }

    #[test]
    fn build_info_names_the_version_and_a_commit() {
        let out = Metrics::new().encode();
        let line = out
            .lines()
            .find(|l| l.starts_with("relay_build_info{"))
            .unwrap();
        assert!(line.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))));
        assert!(line.contains("commit=\""), "{line}");
        assert!(line.ends_with(" 1"), "{line}");
        assert!(!COMMIT.is_empty());
    }

    #[test]
    fn store_health_single_node_and_cluster() {
        let metrics = Metrics::new();
        metrics.observe_store(true, None);
        let out = metrics.encode();
        assert!(out.contains("\nrelay_store_up 1\n"), "{out}");
        // A single node has the families but no series of a cluster's.
        assert!(out.contains("# TYPE relay_cluster_nats_connected gauge"));
        assert!(!out.contains("relay_cluster_nats_connected{"), "{out}");
        metrics.observe_store(
            true,
            Some(ClusterHealth {
                node: "n1",
                nats_connected: false,
                disconnects: 3,
                tenants_confirmed: false,
            }),
        );
        // An older count (a racing scrape) never takes the counter back.
        metrics.observe_store(
            true,
            Some(ClusterHealth {
                node: "n1",
                nats_connected: false,
                disconnects: 2,
                tenants_confirmed: false,
            }),
        );
        let out = metrics.encode();
        for line in [
            "relay_store_up 0",
            "relay_cluster_nats_connected{node=\"n1\"} 0",
            "relay_cluster_connected 0",
            "relay_cluster_nats_disconnects_total{node=\"n1\"} 3",
            "relay_cluster_tenants_confirmed{node=\"n1\"} 0",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing:\n{out}");
        }
    }
}

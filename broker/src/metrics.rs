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
    /// Agent replies nobody waited for that were not kept, by why.
    pub replies_refused: Family<RefusalLabel, Counter>,
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
        let replies_refused = Family::<RefusalLabel, Counter>::default();
        registry.register(
            "agent_replies_refused",
            "Agent replies not kept, by reason: unsolicited (never given to the session or not awaited), duplicate (already answered), tenant_busy (the tenant's store writes at their bound)",
            replies_refused.clone(),
        );
        Metrics {
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
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn agent_gauge(&self, tenant: &str) -> Gauge {
        self.agents_connected
            .get_or_create(&TenantLabel {
                tenant: tenant.to_owned(),
            })
            .clone()
    }
}

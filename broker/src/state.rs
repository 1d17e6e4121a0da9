//! What every service of one broker node shares.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use dashmap::DashSet;
use tokio_util::sync::CancellationToken;

use crate::auth::Authorizer;
use crate::cluster::Cluster;
use crate::config::BrokerConfig;
use crate::metrics::Metrics;
use crate::outcomes::Outcomes;
use crate::ratelimit::TenantRateLimit;
use crate::recent::RecentRequests;
use crate::routing::Router;
use crate::sessions::Registry;
use crate::tenants::Tenants;
use crate::tls::CertResolver;

pub struct State {
    /// The configuration the node started with.
    pub config: BrokerConfig,
    /// That configuration with the settings a SIGHUP changed
    /// ([`crate::reload`]); read it for those, per request.
    pub live: RwLock<Arc<BrokerConfig>>,
    /// The certificate new TLS handshakes get.
    pub certificate: Arc<CertResolver>,
    pub tenants: Arc<Tenants>,
    pub authorizer: Authorizer,
    /// The audit trail.
    pub audit: Arc<crate::audit::Audit>,
    /// The sessions this node holds.
    pub registry: Arc<Registry>,
    /// Where portal requests go; on one node, the registry itself.
    pub router: Arc<dyn Router>,
    pub metrics: Arc<Metrics>,
    /// The last minutes' requests, for the status page.
    pub recent: RecentRequests,
    pub outcomes: Arc<Outcomes>,
    pub rate_limit: TenantRateLimit,
    pub readiness: Readiness,
    /// The one cancellation path: cancelled on SIGTERM / SIGINT.
    pub shutdown: CancellationToken,
    /// (tenant, request id) of requests in flight, to refuse duplicates.
    pub in_flight_ids: DashSet<(String, String)>,
    /// Notified whenever a Submit ends, so a draining broker knows when the
    /// last one is done.
    pub request_ended: tokio::sync::Notify,
    /// When this node started, for its uptime (monotonic) and "up since".
    pub started: std::time::Instant,
    pub started_unix_ms: i64,
    /// Cluster mode: the link to the other nodes.
    pub cluster: Option<Arc<Cluster>>,
    /// One node: its store, for `POST /backup` (`crate::backup_route`).
    pub local_store: Option<crate::store::Store>,
}

impl State {
    /// The configuration in force now (see [`State::live`]).
    pub fn live(&self) -> Arc<BrokerConfig> {
        Arc::clone(&self.live.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// What `/readyz` and the status page report: "ready", "starting",
    /// "draining", "cluster unreachable" or "tenants unconfirmed" (the
    /// lease on this node's copy of the tenants ran out, see
    /// [`crate::lease`]; [`State::condition_detail`] says why).
    pub fn condition(&self) -> &'static str {
        if self.shutdown.is_cancelled() {
            "draining"
        } else if self.readiness.cluster_down.load(Ordering::Acquire) {
            "cluster unreachable"
        } else if self.tenants.current().is_err() {
            "tenants unconfirmed"
        } else if self.readiness.is_ready() {
            "ready"
        } else {
            "starting"
        }
    }
}

impl State {
    /// Why the node is not ready, where there is more to say than its
    /// condition: the tenant view's lapsed lease.
    pub fn condition_detail(&self) -> Option<String> {
        self.tenants
            .current()
            .err()
            .map(|lapsed| lapsed.to_string())
    }
}

/// What `/readyz` reports.
#[derive(Default)]
pub struct Readiness {
    pub store_open: AtomicBool,
    pub grpc_listening: AtomicBool,
    /// Set on SIGTERM: load balancers should stop sending work here.
    pub draining: AtomicBool,
    /// Cluster mode: set while NATS is unreachable, when this node can
    /// serve neither requests for agents elsewhere nor configuration changes.
    pub cluster_down: Arc<AtomicBool>,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.store_open.load(Ordering::Acquire)
            && self.grpc_listening.load(Ordering::Acquire)
            && !self.draining.load(Ordering::Acquire)
            && !self.cluster_down.load(Ordering::Acquire)
    }
}

//! Start-up and shutdown of one broker node: opens the store, binds both
//! listeners, serves until the shutdown token is cancelled, then drains.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use proto::pb::admin_server::AdminServer;
use proto::pb::agent_gateway_server::AgentGatewayServer;
use proto::pb::relay_server::RelayServer;
use sas::Key;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tracing::{info, warn};

use crate::admin_service::AdminService;
use crate::auth::Authorizer;
use crate::cluster::forward::ClusterRouter;
use crate::cluster::{Cluster, ClusterError, kv};
use crate::config::{BrokerConfig, ClusterConfig};
use crate::gateway::Gateway;
use crate::ingress::{self, Connections, IngressLayer};
use crate::listener;
use crate::metrics::Metrics;
use crate::outcomes::Outcomes;
use crate::relay_service::RelayService;
use crate::sealing::{StorageKey, StorageKeyError};
use crate::sessions::Registry;
use crate::state::{Readiness, State};
use crate::store::files::{self, ExposedFile};
use crate::store::{Store, StoreError};
use crate::tenants::Tenants;
use crate::tls::{self, TlsError};

/// After the drain, how long connections may take to close.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How often expired late outcomes are deleted.
const PURGE_EVERY: Duration = Duration::from_secs(60);
/// Room for the request fields around an envelope in one message.
const MESSAGE_OVERHEAD: usize = 16 * 1024;
/// TCP keepalive idle time of gRPC connections.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);
/// The largest Admin request: a tenant name and a connector name, a few
/// hundred bytes at most; the margin is for fields to come.
const ADMIN_MESSAGE_LIMIT: usize = 4 * 1024;
/// A health check names a service.
const HEALTH_MESSAGE_LIMIT: usize = 1024;
/// HTTP/2 flow-control windows: what a peer may send before the broker has
/// taken it. A stream's window holds one largest message (an envelope and
/// its fields) so a Submit flows without waiting for a window update; the
/// connection's caps what all its streams together can make the broker
/// hold unread (hyper's default is 1 MiB for each stream).
const STREAM_WINDOW: u32 = 128 * 1024;
const CONNECTION_WINDOW: u32 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot create the data directory {path}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Exposed(#[from] ExposedFile),
    #[error(transparent)]
    StorageKey(#[from] StorageKeyError),
    #[error("the operator key file {path} is unreadable or not a key")]
    OperatorKey { path: PathBuf },
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the gRPC server failed")]
    Grpc(#[source] tonic::transport::Error),
    #[error("the broker task panicked")]
    Panicked,
    #[error("cannot join the cluster")]
    Cluster(#[from] ClusterError),
    #[error("the gRPC reflection descriptors do not decode")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error(transparent)]
    Audit(#[from] crate::audit::OpenError),
}

/// Where tenants, late outcomes and the operator key live: the embedded
/// store of one node, or the cluster's key-value buckets.
struct Backing {
    tenants: Arc<Tenants>,
    outcomes: Arc<Outcomes>,
    operator_key: Key,
    cluster: Option<Arc<Cluster>>,
    /// One node: the store, for backups on the operator port.
    store: Option<Store>,
}

/// The single node's storage key: the configured file, or `storage.key`
/// in the data directory, created at first start (see `storage_key_file`
/// in config.rs for why a real deployment keeps it elsewhere).
pub fn load_or_create_storage_key(config: &BrokerConfig) -> Result<StorageKey, BrokerError> {
    let (path, configured) = config.storage_key_path();
    files::check_private(&path)?;
    if configured || path.exists() {
        return Ok(StorageKey::load(&path)?);
    }
    let key = StorageKey::create(&path)?;
    info!(path = %path.display(), key_id = %key.id(),
        "created the storage key in the data directory; keep a copy apart from backups of it");
    Ok(key)
}

async fn open_local(config: &BrokerConfig) -> Result<Backing, BrokerError> {
    let store_path = config.store_path();
    // Refused before the store opens: it may have held every tenant's
    // keys in the clear (schema 2 and older).
    files::check_private(&store_path)?;
    let storage_key = Arc::new(load_or_create_storage_key(config)?);
    info!(key_id = %storage_key.id(), "tenant records are sealed under the storage key");
    let store = tokio::task::spawn_blocking(move || Store::open(&store_path, storage_key))
        .await
        .map_err(|_| BrokerError::Panicked)??;
    Ok(Backing {
        store: Some(store.clone()),
        outcomes: Arc::new(Outcomes::new(
            store.clone(),
            config.outcome_retention,
            &config.limits,
        )?),
        tenants: Arc::new(Tenants::load(store)?),
        operator_key: load_or_create_operator_key(&config.operator_key_path())?,
        cluster: None,
    })
}

async fn open_cluster(
    config: &BrokerConfig,
    cluster_config: &ClusterConfig,
    down: Arc<std::sync::atomic::AtomicBool>,
    shutdown: &CancellationToken,
) -> Result<Backing, BrokerError> {
    let storage_key =
        Arc::new(StorageKey::load(&cluster_config.storage_key_file).map_err(ClusterError::from)?);
    let cluster = Cluster::connect(cluster_config, down).await?;
    let buckets = kv::open_buckets(&cluster.jetstream, cluster_config, config.outcome_retention)
        .await
        .map_err(ClusterError::from)?;
    let operator_key =
        kv::converge_operator_key(&buckets.meta, &storage_key, &config.operator_key_path())
            .await
            .map_err(ClusterError::from)?;
    let tenants = Tenants::load_cluster(
        &buckets,
        storage_key,
        cluster_config.state_lease,
        shutdown.clone(),
    )
    .await
    .map_err(ClusterError::from)?;
    info!(node = %cluster.node, tenants = tenants.len(), "cluster configuration loaded");
    let _ = cluster.meta.set(buckets.meta.clone());
    Ok(Backing {
        tenants: Arc::new(tenants),
        outcomes: Arc::new(
            Outcomes::cluster(buckets.outcomes, config.outcome_retention)
                .with_limits(&config.limits),
        ),
        operator_key,
        cluster: Some(Arc::new(cluster)),
        store: None,
    })
}

/// A running broker node.
pub struct Broker {
    pub grpc_addr: SocketAddr,
    pub operator_addr: SocketAddr,
    pub state: Arc<State>,
    task: JoinHandle<Result<(), BrokerError>>,
}

impl Broker {
    /// Waits until the broker has shut down (after the token is cancelled).
    pub async fn wait(self) -> Result<(), BrokerError> {
        self.task.await.map_err(|_| BrokerError::Panicked)?
    }
}

/// Loads the operator key, creating it (mode 0600) on first start.
pub fn load_or_create_operator_key(path: &Path) -> Result<Key, BrokerError> {
    let bad = || BrokerError::OperatorKey {
        path: path.to_owned(),
    };
    match std::fs::read_to_string(path) {
        Ok(text) => Key::from_base64(&zeroize::Zeroizing::new(text)).map_err(|_| bad()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Key::generate().map_err(|_| bad())?;
            let mut text = key.to_base64();
            text.push('\n');
            tls::write(path, text.as_bytes(), 0o600)?;
            info!(path = %path.display(), "created the operator key");
            Ok(key)
        }
        Err(_) => Err(bad()),
    }
}

/// Raises the soft descriptor limit to the hard one, as Go's runtime does:
/// the soft limit (1,024 under systemd) is a compatibility default for
/// select(2), which tokio does not use. Returns the limit now in force.
fn raise_descriptor_limit() -> u64 {
    let before = rlimit::getrlimit(rlimit::Resource::NOFILE).ok();
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(now) => {
            info!(soft_before = ?before.map(|(soft, _)| soft), soft = now,
                hard = ?before.map(|(_, hard)| hard), "descriptor limit");
            now
        }
        Err(e) => {
            let soft = before.map_or(1024, |(soft, _)| soft);
            warn!(error = %e, soft, "cannot raise the descriptor limit; keeping the soft limit");
            soft
        }
    }
}

/// Opens the store, binds the listeners and starts serving. Returns once the
/// node is ready; cancel `shutdown` to stop it, then [`Broker::wait`].
pub async fn start(
    config: BrokerConfig,
    shutdown: CancellationToken,
) -> Result<Broker, BrokerError> {
    files::create_private_dir(&config.data_dir).map_err(|source| BrokerError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    files::warn_if_open_dir(&config.data_dir);
    files::check_private(&config.operator_key_path())?;
    let cluster_down = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let Backing {
        tenants,
        outcomes,
        operator_key,
        cluster,
        store,
    } = match &config.cluster {
        None => open_local(&config).await?,
        Some(c) => open_cluster(&config, c, Arc::clone(&cluster_down), &shutdown).await?,
    };
    let identity = tls::load_identity_checked(&config.tls_cert, &config.tls_key)?;
    let certificate = Arc::new(tls::CertResolver::new(identity.certified));
    let tls_config = tls::server_config_with(Arc::clone(&certificate))?;
    let descriptors = raise_descriptor_limit();

    let grpc_listener = listener::bind(config.listen, config.listen_backlog).map_err(|source| {
        BrokerError::Bind {
            addr: config.listen,
            source,
        }
    })?;
    let operator_listener = TcpListener::bind(config.operator_listen)
        .await
        .map_err(|source| BrokerError::Bind {
            addr: config.operator_listen,
            source,
        })?;
    let grpc_addr = grpc_listener
        .local_addr()
        .map_err(|source| BrokerError::Bind {
            addr: config.listen,
            source,
        })?;
    let operator_addr = operator_listener
        .local_addr()
        .map_err(|source| BrokerError::Bind {
            addr: config.operator_listen,
            source,
        })?;

    let metrics = Arc::new(Metrics::with_tenant_labels(
        config.limits.metrics_tenant_labels,
    ));
    metrics.tls_certificate_expiry.set(identity.not_after_unix);
    crate::reload::warn_if_expiring(&config.tls_cert, identity.not_after_unix);
    let registry = Arc::new(Registry::new(config.limits.clone(), Arc::clone(&metrics)));
    let router: Arc<dyn crate::routing::Router> = match &cluster {
        None => Arc::clone(&registry) as _,
        Some(c) => Arc::new(ClusterRouter::new(
            Arc::clone(&registry),
            Arc::clone(c),
            Arc::clone(&metrics),
        )),
    };
    let audit = Arc::new(crate::audit::Audit::open(
        config.audit_path(),
        crate::audit::node_name(config.cluster.as_ref().map(|c| c.node_name.as_str())),
        metrics.audit_dropped.clone(),
    )?);
    tokio::spawn(crate::audit::sync_every_second(
        Arc::clone(&audit),
        shutdown.clone(),
    ));
    let state = Arc::new(State {
        audit,
        authorizer: Authorizer::new(
            Arc::clone(&tenants),
            operator_key,
            config.max_token_lifetime,
        ),
        tenants,
        router,
        registry,
        metrics,
        recent: Default::default(),
        outcomes,
        rate_limit: crate::ratelimit::TenantRateLimit::new(
            config.limits.tenant_requests_per_minute,
        ),
        readiness: Readiness {
            cluster_down,
            ..Readiness::default()
        },
        shutdown: shutdown.clone(),
        in_flight_ids: Default::default(),
        request_ended: Default::default(),
        started: std::time::Instant::now(),
        started_unix_ms: crate::time::now_unix_ms(),
        cluster,
        live: std::sync::RwLock::new(Arc::new(config.clone())),
        certificate,
        local_store: store,
        config,
    });
    state.readiness.store_open.store(true, Ordering::Release);
    info!(tenants = state.tenants.len(), "store open");

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<AgentGatewayServer<Gateway>>().await;
    health.set_serving::<RelayServer<RelayService>>().await;
    health.set_serving::<AdminServer<AdminService>>().await;

    let max_message = state.config.max_envelope_bytes + MESSAGE_OVERHEAD;
    let limits = &state.config.limits;
    // The operator port has a cap of its own; what it may hold is kept
    // back too, so that neither port can take the other's descriptors.
    let budget = descriptors
        .saturating_sub(u64::from(limits.reserved_descriptors))
        .saturating_sub(u64::from(limits.operator_max_connections))
        .max(1);
    let connections = Connections::new(
        ingress::connections::Settings {
            first_request_timeout: limits.first_request_timeout,
            unauthenticated_idle_timeout: limits.unauthenticated_idle_timeout,
            idle_timeout: limits.idle_timeout,
            unauthenticated_per_source: limits.unauthenticated_connections_per_source as usize,
            budget: usize::try_from(budget).unwrap_or(usize::MAX),
        },
        Arc::clone(&state.metrics),
    );
    info!(
        descriptors,
        reserved = limits.reserved_descriptors,
        operator = limits.operator_max_connections,
        budget,
        "gRPC connections the port may hold at once"
    );
    let grpc = Server::builder()
        .http2_keepalive_interval(Some(state.config.heartbeat_interval))
        .http2_keepalive_timeout(Some(state.config.keepalive_timeout))
        .max_concurrent_streams(Some(state.config.limits.max_concurrent_streams))
        .initial_stream_window_size(STREAM_WINDOW.max(max_message as u32))
        .initial_connection_window_size(CONNECTION_WINDOW)
        .layer(IngressLayer::new(Arc::clone(&state)))
        .add_service(health_service.max_decoding_message_size(HEALTH_MESSAGE_LIMIT))
        .add_service(
            AgentGatewayServer::new(Gateway::new(Arc::clone(&state)))
                .max_decoding_message_size(max_message),
        )
        .add_service(
            RelayServer::new(RelayService::new(Arc::clone(&state)))
                .max_decoding_message_size(max_message),
        )
        .add_service(
            AdminServer::new(AdminService::new(Arc::clone(&state)))
                .max_decoding_message_size(ADMIN_MESSAGE_LIMIT),
        )
        .add_service(crate::reflection::v1()?)
        .add_service(crate::reflection::v1alpha()?);
    // TLS is done by the listener, not by tonic (see listener.rs).
    let incoming = listener::serve_tls(
        grpc_listener,
        tls_config,
        listener::Settings {
            handshake_timeout: state.config.limits.tls_handshake_timeout,
            max_handshakes: state.config.limits.max_concurrent_handshakes as usize,
            tcp_keepalive: TCP_KEEPALIVE,
        },
        connections,
    );

    let drain = CancellationToken::new();
    let grpc_task = tokio::spawn({
        let drain = drain.clone();
        async move {
            grpc.serve_with_incoming_shutdown(incoming, drain.cancelled())
                .await
                .map_err(BrokerError::Grpc)
        }
    });
    let operator_task = tokio::spawn(crate::operator::serve(
        operator_listener,
        Arc::clone(&state),
        drain.clone(),
    ));
    state
        .readiness
        .grpc_listening
        .store(true, Ordering::Release);
    info!(grpc = %grpc_addr, operator = %operator_addr, "broker ready");

    if let Some(cluster) = &state.cluster {
        tokio::spawn(crate::cluster::serve::run(
            Arc::clone(&state),
            Arc::clone(cluster),
        ));
        tokio::spawn(crate::cluster::enforce::run(Arc::clone(&state)));
        tokio::spawn(Arc::clone(cluster).probe(state.shutdown.clone()));
        if let Some(meta) = cluster.meta.get() {
            tokio::spawn(crate::cluster::nodes::announce(
                Arc::clone(&state),
                Arc::clone(cluster),
                meta.clone(),
            ));
        }
    }
    tokio::spawn({
        let state = Arc::clone(&state);
        async move {
            let mut every = tokio::time::interval(PURGE_EVERY);
            loop {
                tokio::select! {
                    _ = state.shutdown.cancelled() => break,
                    _ = every.tick() => match state.outcomes.purge().await {
                        Ok(0) => {}
                        Ok(n) => info!(removed = n, "expired late outcomes deleted"),
                        Err(e) => warn!(error = %e, "cannot delete expired late outcomes"),
                    },
                }
            }
        }
    });

    let task = tokio::spawn({
        let state = Arc::clone(&state);
        async move {
            shutdown.cancelled().await;
            let grace = state.config.drain_grace;
            info!(in_flight = state.in_flight_ids.len(), grace = ?grace,
                "draining: refusing new sessions and requests, finishing those in flight");
            state.readiness.draining.store(true, Ordering::Release);
            health.set_not_serving::<RelayServer<RelayService>>().await;
            health
                .set_not_serving::<AgentGatewayServer<Gateway>>()
                .await;
            // Each session stops taking requests by itself (it sees the
            // token); wait for the requests in flight to be answered.
            let finished = async {
                loop {
                    let ended = state.request_ended.notified();
                    if state.in_flight_ids.is_empty() {
                        break;
                    }
                    ended.await;
                }
            };
            if tokio::time::timeout(grace, finished).await.is_err() {
                warn!(still_in_flight = state.in_flight_ids.len(), grace = ?grace,
                    "requests still in flight after the drain grace period; stopping anyway");
            }
            state.registry.close_all(
                proto::pb::GoodbyeReason::ShuttingDown,
                "the broker is shutting down; reconnect",
            );
            drain.cancel();
            match tokio::time::timeout(CLOSE_GRACE, grpc_task).await {
                Ok(joined) => joined.map_err(|_| BrokerError::Panicked)??,
                Err(_) => {
                    warn!("connections still open after the drain; stopping anyway")
                }
            }
            operator_task.await.map_err(|_| BrokerError::Panicked)?;
            info!("broker stopped");
            Ok(())
        }
    });
    Ok(Broker {
        grpc_addr,
        operator_addr,
        state,
        task,
    })
}

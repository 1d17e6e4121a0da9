//! Cluster mode: several broker nodes on a NATS cluster (docs/CLUSTER.md).
//!
//! Nodes hold nothing but the agent sessions connected to them. What they
//! share goes through NATS:
//! - [`forward`]: a portal request for a tenant with no agent on this node
//!   is published to the tenant's subject and answered by a node that has
//!   one (the forwarding side);
//! - [`serve`]: while this node holds an agent of a tenant it listens on the
//!   tenant's subject (pings) and on each of its agents' subjects (requests
//!   addressed to that agent), in one queue group with the other nodes, and
//!   routes what arrives to its own agents (the serving side);
//! - [`presence`]: each node's announcement of the agents it holds, so a
//!   forwarding node knows within three heartbeats whether a live node holds
//!   an agent;
//! - [`wire`]: the messages between the two, and the subjects;
//! - [`kv`]: tenants, the operator key and late outcomes in replicated
//!   JetStream key-value buckets, watched so every node sees a change at once;
//!   [`storage_key`] seals tenant records before they reach NATS;
//! - [`nodes`]: each node's announcement of itself, for the status page;
//! - [`enforce`]: admin changes made through another node, applied to this
//!   node's sessions (deleted tenant, revoked agent, rotated key).

pub mod enforce;
pub mod forward;
pub mod kv;
pub mod nodes;
pub mod presence;
pub mod serve;
pub mod wire;

/// The storage key lives in [`crate::sealing`], shared with the single
/// node; this name stays for the cluster's code.
pub use crate::sealing as storage_key;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use futures_util::StreamExt;
use tracing::{info, warn};

use crate::config::ClusterConfig;

/// A failure to join the cluster. Messages name the setting or the server,
/// never a password.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot read the NATS password file {path}")]
    PasswordFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot connect to NATS at {urls}")]
    Connect {
        urls: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error(transparent)]
    Kv(#[from] kv::KvError),
    #[error(transparent)]
    StorageKey(#[from] storage_key::StorageKeyError),
}

/// This node's link to the others.
pub struct Cluster {
    pub node: String,
    pub client: async_nats::Client,
    pub jetstream: jetstream::Context,
    pub config: ClusterConfig,
    /// Set while the NATS connection is down (shared with `/readyz`).
    down: Arc<AtomicBool>,
    /// How many times the NATS connection was lost: a forward that saw it
    /// change may have lost its serving node's messages on this side.
    losses: Arc<AtomicU64>,
    /// The meta bucket, once open: where nodes announce themselves.
    pub meta: std::sync::OnceLock<jetstream::kv::Store>,
    /// Which live node holds which agents ([`presence`]).
    pub presence: presence::Presences,
    /// The outcome records, where a forwarding node looks for an answer
    /// its serving node kept before saying OUTCOME_UNKNOWN. Set when the
    /// node starts serving ([`serve::run`]): the router is made before the
    /// state that owns them.
    pub outcomes: std::sync::OnceLock<Arc<crate::outcomes::Outcomes>>,
}

/// With async-nats's two unanswered pings, a dead NATS server is noticed
/// within about 15 s.
const PING_INTERVAL: Duration = Duration::from_secs(5);

/// Reconnect quickly at first (a NATS node restarting is back in seconds),
/// then every 2 s at most, with jitter so that nodes do not dial in step.
fn reconnect_delay(attempts: usize) -> Duration {
    if attempts <= 1 {
        return Duration::ZERO;
    }
    let base = 100u64.saturating_mul(1 << attempts.min(5)).min(2_000);
    Duration::from_millis(base / 2 + fastrand::u64(..=base / 2))
}

/// Whether a server's `version` ("2.9.10", "v2.10.27") is older than 2.10;
/// `false` for one it cannot read.
fn older_than_2_10(version: &str) -> bool {
    let mut parts = version.trim_start_matches('v').split('.');
    let mut next = || parts.next().and_then(|p| p.parse::<u32>().ok());
    match (next(), next()) {
        (Some(major), Some(minor)) => (major, minor) < (2, 10),
        _ => false,
    }
}

impl Cluster {
    /// Connects to NATS. `down` is kept up to date with the connection's
    /// state from then on.
    pub async fn connect(
        config: &ClusterConfig,
        down: Arc<AtomicBool>,
    ) -> Result<Cluster, ClusterError> {
        let mut options = async_nats::ConnectOptions::new()
            .name(format!("relay-broker {}", config.node_name))
            .connection_timeout(config.connect_timeout)
            .max_reconnects(None)
            // The client's default (a ping after 60 s of silence, and none
            // while commands flow) would leave a node ready for minutes
            // after its NATS server's machine vanished.
            .ping_interval(PING_INTERVAL)
            .reconnect_delay_callback(reconnect_delay);
        if let (Some(user), Some(path)) = (&config.nats_user, &config.nats_password_file) {
            let password =
                zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|source| {
                    ClusterError::PasswordFile {
                        path: path.clone(),
                        source,
                    }
                })?);
            options = options.user_and_password(user.clone(), password.trim_end().to_owned());
        }
        if let Some(ca) = &config.nats_ca_file {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let (Some(cert), Some(key)) = (&config.nats_client_cert, &config.nats_client_key) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        let events_down = Arc::clone(&down);
        let losses = Arc::new(AtomicU64::new(0));
        let events_losses = Arc::clone(&losses);
        let node = config.node_name.clone();
        options = options.event_callback(move |event| {
            let down = Arc::clone(&events_down);
            let losses = Arc::clone(&events_losses);
            let node = node.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        down.store(false, Ordering::Release);
                        info!(%node, "connected to NATS");
                    }
                    async_nats::Event::Disconnected | async_nats::Event::Closed => {
                        down.store(true, Ordering::Release);
                        losses.fetch_add(1, Ordering::AcqRel);
                        warn!(%node, "lost the NATS connection: requests for agents on other nodes fail until it is back");
                    }
                    other => warn!(%node, event = %other, "NATS connection event"),
                }
            }
        });
        let urls = config.nats_urls.join(",");
        let client = options
            .connect(config.nats_urls.as_slice())
            .await
            .map_err(|source| ClusterError::Connect {
                urls: urls.clone(),
                source,
            })?;
        down.store(false, Ordering::Release);
        info!(node = %config.node_name, nats = %urls, "joined the cluster");
        let version = client.server_info().version;
        if older_than_2_10(&version) {
            warn!(node = %config.node_name, nats_version = %version,
                "this NATS server is older than 2.10: 2.9 streams diverged after a network split healed in the partition tests (docs/CLUSTER.md); upgrade the NATS servers");
        }
        let jetstream = jetstream::new(client.clone());
        Ok(Cluster {
            node: config.node_name.clone(),
            client,
            jetstream,
            config: config.clone(),
            down,
            losses,
            meta: std::sync::OnceLock::new(),
            presence: presence::Presences::default(),
            outcomes: std::sync::OnceLock::new(),
        })
    }

    /// How many times the NATS connection was lost so far.
    pub fn losses(&self) -> u64 {
        self.losses.load(Ordering::Acquire)
    }

    /// Whether NATS is reachable right now.
    pub fn is_up(&self) -> bool {
        !self.down.load(Ordering::Acquire)
    }

    pub fn heartbeat(&self) -> Duration {
        self.config.forward_heartbeat
    }

    /// How often [`Cluster::probe`] checks the connection end to end.
    fn probe_every(&self) -> Duration {
        (self.config.forward_heartbeat * 2).max(Duration::from_millis(200))
    }

    /// Sends itself a message through its NATS server every
    /// `probe_every` and expects it back within as long. Two
    /// misses in a row mean the server vanished without closing the
    /// connection (power loss, a cut network): the client would notice only
    /// when TCP gives up, minutes later, because its own pings stop while
    /// commands flow. The node then counts as not ready and reconnects,
    /// to another server if need be. Runs until `shutdown`.
    pub async fn probe(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let inbox = self.client.new_inbox();
        let Ok(mut echo) = self.client.subscribe(inbox.clone()).await else {
            return;
        };
        let every = self.probe_every();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut sent, mut missed) = (0u64, 0u32);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if !self.is_up() {
                // Reconnecting already.
                missed = 0;
                continue;
            }
            sent += 1;
            let _ = self
                .client
                .publish(inbox.clone(), sent.to_be_bytes().to_vec().into())
                .await;
            let back = tokio::time::timeout(every, async {
                // Skips the echo of a probe that came back late.
                while let Some(m) = echo.next().await {
                    if m.payload.as_ref() == sent.to_be_bytes() {
                        return true;
                    }
                }
                false
            });
            match back.await {
                Ok(true) => missed = 0,
                Ok(false) => return,
                Err(_) => {
                    missed += 1;
                    if missed >= 2 {
                        warn!(node = %self.node, waited = ?every * 2,
                            "the NATS server stopped echoing: reconnecting");
                        self.down.store(true, Ordering::Release);
                        let _ = self.client.force_reconnect().await;
                        missed = 0;
                    }
                }
            }
        }
    }

    /// Where requests for `tenant` are published.
    pub fn submit_subject(&self, tenant: &str) -> String {
        wire::submit_subject(&self.config.subject_prefix, tenant)
    }

    /// Where requests addressed to `agent_id` are served.
    pub fn agent_subject(&self, tenant: &str, agent_id: &str) -> String {
        wire::agent_subject(&self.config.subject_prefix, tenant, agent_id)
    }

    /// The queue group of the nodes serving forwarded requests.
    pub fn queue_group(&self) -> String {
        format!("{}-brokers", self.config.subject_prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_older_than_2_10_are_named() {
        for old in ["2.9.10", "v2.9.25", "1.4.1"] {
            assert!(older_than_2_10(old), "{old}");
        }
        for new in ["2.10.27", "v2.11.0", "3.0.0", "", "dev"] {
            assert!(!older_than_2_10(new), "{new}");
        }
    }

    #[test]
    fn reconnects_start_at_once_and_stay_under_two_seconds() {
        assert_eq!(reconnect_delay(0), Duration::ZERO);
        assert_eq!(reconnect_delay(1), Duration::ZERO);
        for attempts in 2..100 {
            let d = reconnect_delay(attempts);
            assert!(d <= Duration::from_secs(2), "{attempts}: {d:?}");
            assert!(d >= Duration::from_millis(100), "{attempts}: {d:?}");
        }
    }
}

//! Presence: every node tells the others which agents it holds, so that a
//! forwarding node knows within a bound whether any live node holds an
//! agent (PROTOCOL.md "Presence").
//!
//! NATS alone cannot tell: a node cut off from NATS without its TCP
//! connection closing stays subscribed in the servers' eyes, so requests go
//! into the void instead of coming back as no-responders; and a node whose
//! NATS server died is briefly subscribed nowhere though it holds its
//! agents. Each node publishes a `NodePresence` on `<prefix>.v1.presence`
//! every `forward_heartbeat` and at once when its agents change; a node not
//! heard for three heartbeats holds nothing. The table and its rules are
//! `session::forward::Presence`'s; this module publishes and listens.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::StreamExt;
use prost::Message;
use proto::pb;
use tokio::sync::Notify;
use tracing::debug;

use super::Cluster;
use crate::state::State;

/// This node's view of every node's presence, and the nudge that makes it
/// announce a change at once.
#[derive(Debug, Default)]
pub struct Presences {
    table: Mutex<session::forward::Presence>,
    changed: Notify,
}

impl Presences {
    /// Whether a live node other than `me` holds the addressee.
    pub fn holds(&self, me: &str, tenant: &str, agent_id: Option<&str>) -> bool {
        self.lock().holds(Instant::now(), tenant, agent_id, me)
    }

    /// This node's agents changed: announce now rather than at the next
    /// heartbeat, so a new agent is known before the first request for it.
    pub fn changed(&self) {
        self.changed.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, session::forward::Presence> {
        // The table is only inserted into: a panic mid-update leaves it usable.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `<prefix>.v1.presence`.
pub fn subject(prefix: &str) -> String {
    format!("{prefix}.v1.presence")
}

/// What this node holds now.
fn announcement(state: &State, cluster: &Cluster, leaving: bool) -> pb::NodePresence {
    let tenants = if leaving {
        Vec::new()
    } else {
        state
            .registry
            .tenants_present()
            .into_iter()
            .map(|tenant| pb::TenantPresence {
                agent_ids: state
                    .registry
                    .sessions(&tenant)
                    .iter()
                    .map(|s| s.agent_id.clone())
                    .collect(),
                tenant,
            })
            .filter(|t| !t.agent_ids.is_empty())
            .collect()
    };
    pb::NodePresence {
        node: cluster.node.clone(),
        interval_ms: super::wire::millis(cluster.heartbeat()),
        tenants,
        leaving,
    }
}

async fn publish(cluster: &Cluster, p: pb::NodePresence) {
    let subject = subject(&cluster.config.subject_prefix);
    // A lost announcement only makes the node look late; the next one
    // follows within a heartbeat.
    if let Err(e) = cluster
        .client
        .publish(subject, p.encode_to_vec().into())
        .await
    {
        debug!(error = %e, "cannot announce this node's agents");
    }
}

/// Listens to every node's announcements and announces this node's agents
/// every heartbeat and on each change, until shutdown; then withdraws.
pub async fn run(state: Arc<State>, cluster: Arc<Cluster>) {
    let subject = subject(&cluster.config.subject_prefix);
    let mut heard = match cluster.client.subscribe(subject).await {
        Ok(s) => Some(s),
        Err(e) => {
            debug!(error = %e, "cannot listen to other nodes' presence");
            None
        }
    };
    let mut every = tokio::time::interval(cluster.heartbeat());
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let next = async {
            match heard.as_mut() {
                Some(s) => s.next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = state.shutdown.cancelled() => break,
            _ = every.tick() => {
                cluster.presence.lock().prune(Instant::now());
                publish(&cluster, announcement(&state, &cluster, false)).await;
            }
            _ = cluster.presence.changed.notified() => {
                publish(&cluster, announcement(&state, &cluster, false)).await;
            }
            message = next => match message {
                Some(m) => match pb::NodePresence::decode(m.payload) {
                    Ok(p) => cluster.presence.lock().heard(Instant::now(), p),
                    Err(_) => debug!("ignoring an undecodable presence announcement"),
                },
                None => heard = None,
            },
        }
    }
    publish(&cluster, announcement(&state, &cluster, true)).await;
}

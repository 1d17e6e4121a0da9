//! Which nodes the cluster has, for the operator's status page: each node
//! announces itself in the meta bucket every [`ANNOUNCE_EVERY`] under
//! `nodes.<name>`, and removes its entry when it stops cleanly. A node killed
//! outright stays listed, shown as not seen since its last announcement.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tracing::debug;

use super::Cluster;
use crate::state::State;
use crate::time::now_unix_ms;

pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(5);
/// How long the status page waits for the node list before showing what it
/// has: the page must load even while NATS is slow.
const LIST_TIMEOUT: Duration = Duration::from_secs(1);

/// What a node says about itself. Names and counts only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub name: String,
    pub version: String,
    /// "ready", "starting", "draining" or "cluster unreachable".
    pub condition: String,
    pub started_unix_ms: i64,
    /// When it last announced itself.
    pub seen_unix_ms: i64,
    pub agents: u32,
    pub in_flight: u64,
}

fn key(name: &str) -> String {
    format!("nodes.{name}")
}

fn record(state: &State, cluster: &Cluster) -> NodeRecord {
    NodeRecord {
        name: cluster.node.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        condition: state.condition().to_owned(),
        started_unix_ms: state.started_unix_ms,
        seen_unix_ms: now_unix_ms(),
        agents: state.registry.total_sessions() as u32,
        in_flight: state.registry.total_in_flight(),
    }
}

/// Announces this node until shutdown, then withdraws it.
pub async fn announce(state: Arc<State>, cluster: Arc<Cluster>, meta: kv::Store) {
    let mut every = tokio::time::interval(ANNOUNCE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => break,
            _ = every.tick() => {
                let Ok(bytes) = serde_json::to_vec(&record(&state, &cluster)) else { continue };
                // Missing one announcement only makes the node look late.
                if let Err(e) = meta.put(key(&cluster.node), bytes.into()).await {
                    debug!(error = %e, "cannot announce this node");
                }
            }
        }
    }
    if let Err(e) = meta.delete(key(&cluster.node)).await {
        debug!(error = %e, "cannot withdraw this node's announcement");
    }
}

/// Every announced node, sorted by name; empty if NATS does not answer in
/// time.
pub async fn list(meta: &kv::Store) -> Vec<NodeRecord> {
    let read = async {
        let mut out = Vec::new();
        let Ok(mut keys) = meta.keys().await else {
            return out;
        };
        while let Some(Ok(k)) = keys.next().await {
            if !k.starts_with("nodes.") {
                continue;
            }
            if let Ok(Some(bytes)) = meta.get(&k).await
                && let Ok(r) = serde_json::from_slice::<NodeRecord>(&bytes)
            {
                out.push(r);
            }
        }
        out
    };
    let mut nodes = tokio::time::timeout(LIST_TIMEOUT, read)
        .await
        .unwrap_or_default();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    nodes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_carry_no_more_than_counts() {
        let r = NodeRecord {
            name: "a".into(),
            version: "0.1.0".into(),
            condition: "ready".into(),
            started_unix_ms: 1,
            seen_unix_ms: 2,
            agents: 3,
            in_flight: 4,
        };
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<NodeRecord>(&json).unwrap(), r);
        assert_eq!(key("a"), "nodes.a");
    }
}

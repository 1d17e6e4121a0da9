//! Which live node holds which agents, from the nodes' presence
//! announcements (PROTOCOL.md "Presence"), without I/O or clock.
//!
//! Every node publishes a `NodePresence` every `interval_ms` and at once on
//! a change. A node unheard for [`MISSED_BEATS`] intervals holds nothing:
//! it died or lost NATS (NATS may still route to its dead connection, which
//! is why no-responders alone cannot tell). The forwarding machine asks
//! this table whether another attempt can reach an agent.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use proto::pb;

use super::MISSED_BEATS;

#[derive(Debug)]
struct Node {
    heard: Instant,
    lifetime: Duration,
    /// tenant → agent ids.
    tenants: HashMap<String, HashSet<String>>,
}

/// The latest announcement of every node, each alive for
/// [`MISSED_BEATS`] of its own intervals.
#[derive(Debug, Default)]
pub struct Presence {
    nodes: HashMap<String, Node>,
}

impl Presence {
    pub fn new() -> Presence {
        Presence::default()
    }

    /// A node's announcement replaces what it said before; `leaving`
    /// withdraws it at once.
    pub fn heard(&mut self, now: Instant, p: pb::NodePresence) {
        if p.leaving {
            self.nodes.remove(&p.node);
            return;
        }
        // An interval of 0 would make the node dead on arrival.
        let interval = Duration::from_millis(u64::from(p.interval_ms.max(1)));
        let tenants = p
            .tenants
            .into_iter()
            .map(|t| (t.tenant, t.agent_ids.into_iter().collect()))
            .collect();
        self.nodes.insert(
            p.node,
            Node {
                heard: now,
                lifetime: interval * MISSED_BEATS,
                tenants,
            },
        );
    }

    fn live(&self, now: Instant) -> impl Iterator<Item = (&String, &Node)> {
        self.nodes
            .iter()
            .filter(move |(_, n)| now < n.heard + n.lifetime)
    }

    /// Whether a live node other than `except` holds `agent_id` of
    /// `tenant` (`None`: any agent of it, for a ping).
    pub fn holds(&self, now: Instant, tenant: &str, agent_id: Option<&str>, except: &str) -> bool {
        self.live(now)
            .filter(|(name, _)| name.as_str() != except)
            .filter_map(|(_, n)| n.tenants.get(tenant))
            .any(|agents| agent_id.is_none_or(|a| agents.contains(a)))
    }

    /// Whether `node` is heard: a node that does not hear its own
    /// announcements sees nobody, and must not conclude that nobody is there.
    pub fn is_live(&self, now: Instant, node: &str) -> bool {
        self.live(now).any(|(name, _)| name == node)
    }

    /// Forgets nodes dead for long, so that the table does not grow with
    /// every node that ever was.
    pub fn prune(&mut self, now: Instant) {
        self.nodes
            .retain(|_, n| now < n.heard + n.lifetime * (MISSED_BEATS * 10));
    }
}

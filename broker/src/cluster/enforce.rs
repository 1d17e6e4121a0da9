//! Admin changes made through another node, enforced on this node's
//! sessions. On one node the Admin service closes the sessions a change
//! concerns as it makes it; in a cluster the sessions may sit on any node,
//! so each node compares every tenant change it sees (from the watched
//! bucket) with the record before it and closes its own affected sessions:
//! the tenant deleted, the agent revoked, or the Listen key that signed the
//! session's token rotated.

use std::collections::HashMap;
use std::sync::Arc;

use proto::pb::GoodbyeReason;
use sas::KeySlot;
use tracing::info;

use crate::state::State;
use crate::store::TenantRecord;

/// Runs until `state.shutdown`.
pub async fn run(state: Arc<State>) {
    let mut changes = state.tenants.changes();
    let mut before = snapshot(&state);
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            changed = changes.changed() => if changed.is_err() { return },
        }
        let now = snapshot(&state);
        for tenant in state.registry.tenants_present() {
            close_affected(&state, &tenant, before.get(&tenant), now.get(&tenant));
        }
        before = now;
    }
}

fn snapshot(state: &State) -> HashMap<String, Arc<TenantRecord>> {
    state
        .tenants
        .all()
        .into_iter()
        .map(|r| (r.name.clone(), r))
        .collect()
}

/// What a session of `tenant` must no longer do after a change from
/// `old` to `new`; how many sessions were closed.
fn close_affected(
    state: &State,
    tenant: &str,
    old: Option<&Arc<TenantRecord>>,
    new: Option<&Arc<TenantRecord>>,
) -> usize {
    let registry = &state.registry;
    let Some(new) = new else {
        let closed = registry.close_where(
            tenant,
            |_| true,
            GoodbyeReason::TenantDeleted,
            "the tenant was deleted",
        );
        if closed > 0 {
            info!(%tenant, closed, "tenant deleted on another node: its sessions here closed");
        }
        return closed;
    };
    let mut closed = registry.close_where(
        tenant,
        |s| new.revoked_agents.contains(&s.agent_id),
        GoodbyeReason::AgentRevoked,
        "this agent id was revoked by an administrator",
    );
    if let Some(old) = old {
        for slot in [KeySlot::Primary, KeySlot::Secondary] {
            let key = |r: &TenantRecord| match slot {
                KeySlot::Primary => r.keys.listen.primary.clone(),
                KeySlot::Secondary => r.keys.listen.secondary.clone(),
            };
            if key(old) != key(new) {
                closed += registry.close_where(
                    tenant,
                    |s| s.slot() == slot,
                    GoodbyeReason::KeyRotated,
                    "the key that signed this session's token was rotated",
                );
            }
        }
    }
    if closed > 0 {
        info!(%tenant, closed, "sessions closed after a change made on another node");
    }
    closed
}

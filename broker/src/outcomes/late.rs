//! Admitting an answer an agent posts after its request's routing ended:
//! the bound on how many of one tenant's are queued for the store at once.
//! Checked before anything is queued, so an agent flooding the broker with
//! replies holds at most this many payloads and store writes, and another
//! tenant's writes never wait behind them.

use std::sync::Arc;

use dashmap::DashMap;

/// Late answers queued or being written, per tenant.
#[derive(Default)]
pub(super) struct PendingWrites {
    per_tenant: DashMap<String, u32>,
}

/// One late answer's place in its tenant's bound; given back when dropped.
pub struct PendingSlot {
    pending: Arc<PendingWrites>,
    tenant: String,
}

impl PendingWrites {
    /// A place for one more of `tenant`'s late answers, if it has fewer
    /// than `limit` under way.
    pub(super) fn reserve(self: &Arc<Self>, tenant: &str, limit: u32) -> Option<PendingSlot> {
        let mut n = self.per_tenant.entry(tenant.to_owned()).or_default();
        if *n >= limit {
            return None;
        }
        *n += 1;
        drop(n);
        Some(PendingSlot {
            pending: Arc::clone(self),
            tenant: tenant.to_owned(),
        })
    }

    #[cfg(test)]
    pub(super) fn of(&self, tenant: &str) -> u32 {
        self.per_tenant.get(tenant).map_or(0, |n| *n)
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        if let Some(mut n) = self.pending.per_tenant.get_mut(&self.tenant) {
            *n = n.saturating_sub(1);
        }
        self.pending
            .per_tenant
            .remove_if(&self.tenant, |_, n| *n == 0);
    }
}

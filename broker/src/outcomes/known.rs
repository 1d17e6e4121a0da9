//! What the outcome records hold, in memory: per tenant, each record's
//! request id, whether it still awaits an answer (and from which agent),
//! and its size. An agent's reply nobody waits for is checked against it
//! without any store work ([`Known::check`]), and the writer bounds a
//! tenant's bytes with it ([`Known::bytes`]). The store stays the
//! authority: a record here that the store no longer has only costs a
//! refused write; the writer keeps both in step, and rebuilds this from the
//! store when a commit fails.

use std::collections::HashMap;

use dashmap::DashMap;
use redb::ReadableTable;

use super::local::split;
use crate::store::codec::outcome_awaited_from;
use crate::store::{LateCheck, OUTCOMES, Store, StoreError, io};

/// What a record holds, as far as a late answer cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Kept {
    /// Awaited from this agent (empty: from any of the tenant's agents).
    Awaited(String),
    Answered,
}

#[derive(Default)]
struct TenantRecords {
    ids: HashMap<String, (Kept, u64)>,
    bytes: u64,
}

#[derive(Default)]
pub(super) struct Known {
    tenants: DashMap<String, TenantRecords>,
}

impl Known {
    /// Reads every record's header (not its answer) once, at start.
    pub(super) fn load(store: &Store) -> Result<Known, StoreError> {
        let known = Known::default();
        let tx = store.db().begin_read().map_err(io("read outcomes"))?;
        let table = tx.open_table(OUTCOMES).map_err(io("read outcomes"))?;
        for record in table.iter().map_err(io("read outcomes"))? {
            let (k, v) = record.map_err(io("read outcomes"))?;
            let (tenant, request_id) = split(k.value());
            if let Some(kept) = kept_of(v.value()) {
                known.set(tenant, request_id, kept, size(k.value(), v.value()));
            }
        }
        Ok(known)
    }

    /// Replaces everything with what the store holds (after a failed commit
    /// left the two apart).
    pub(super) fn reload(&self, store: &Store) -> Result<(), StoreError> {
        let fresh = Known::load(store)?;
        self.tenants.clear();
        for (tenant, records) in fresh.tenants {
            self.tenants.insert(tenant, records);
        }
        Ok(())
    }

    pub(super) fn check(&self, tenant: &str, request_id: &str, agent_id: &str) -> LateCheck {
        let Some(records) = self.tenants.get(tenant) else {
            return LateCheck::NotAwaited;
        };
        match records.ids.get(request_id) {
            Some((Kept::Answered, _)) => LateCheck::Answered,
            Some((Kept::Awaited(from), _)) if from.is_empty() || from == agent_id => {
                LateCheck::Awaited
            }
            _ => LateCheck::NotAwaited,
        }
    }

    pub(super) fn set(&self, tenant: &str, request_id: &str, kept: Kept, bytes: u64) {
        let mut records = self.tenants.entry(tenant.to_owned()).or_default();
        let old = records
            .ids
            .insert(request_id.to_owned(), (kept, bytes))
            .map_or(0, |(_, b)| b);
        records.bytes = records.bytes.saturating_sub(old).saturating_add(bytes);
    }

    pub(super) fn remove(&self, tenant: &str, request_id: &str) {
        if let Some(mut records) = self.tenants.get_mut(tenant)
            && let Some((_, bytes)) = records.ids.remove(request_id)
        {
            records.bytes = records.bytes.saturating_sub(bytes);
        }
        self.tenants.remove_if(tenant, |_, r| r.ids.is_empty());
    }

    /// Whether the tenant's record of `request_id` holds an answer.
    pub(super) fn is_answered(&self, tenant: &str, request_id: &str) -> bool {
        self.tenants
            .get(tenant)
            .is_some_and(|r| matches!(r.ids.get(request_id), Some((Kept::Answered, _))))
    }

    /// The bytes of the tenant's records (keys and values).
    pub(super) fn bytes(&self, tenant: &str) -> u64 {
        self.tenants.get(tenant).map_or(0, |r| r.bytes)
    }
}

/// What a stored record holds, from its header alone.
pub(super) fn kept_of(bytes: &[u8]) -> Option<Kept> {
    Some(match outcome_awaited_from(bytes)? {
        Some(agent_id) => Kept::Awaited(agent_id.to_owned()),
        None => Kept::Answered,
    })
}

/// What a record costs the store: its key and its value.
pub(super) fn size(key: &str, value: &[u8]) -> u64 {
    (key.len() + value.len()) as u64
}

//! The tenant records as the store keeps them: a tenant's configuration,
//! its shared access keys and its agents' public keys. Both backends store
//! them through [`super::codec`].

use std::collections::BTreeSet;

use sas::{Key, KeySlot, Right};
use serde::{Deserialize, Serialize};

/// A right's two keys, one per [`KeySlot`]: rotating one slot at a time
/// lets callers move to the new key without a gap.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeySlots {
    pub primary: Key,
    pub secondary: Key,
}

impl KeySlots {
    pub fn generate() -> Result<KeySlots, sas::KeyError> {
        Ok(KeySlots {
            primary: Key::generate()?,
            secondary: Key::generate()?,
        })
    }

    pub fn slot_mut(&mut self, slot: KeySlot) -> &mut Key {
        match slot {
            KeySlot::Primary => &mut self.primary,
            KeySlot::Secondary => &mut self.secondary,
        }
    }
}

/// The keys of a tenant's three rights.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TenantKeys {
    pub listen: KeySlots,
    pub send: KeySlots,
    pub manage: KeySlots,
}

impl TenantKeys {
    pub fn generate() -> Result<TenantKeys, sas::KeyError> {
        Ok(TenantKeys {
            listen: KeySlots::generate()?,
            send: KeySlots::generate()?,
            manage: KeySlots::generate()?,
        })
    }

    /// The pair of a tenant right; `None` for the operator right, which no
    /// tenant has.
    pub fn pair(&self, right: Right) -> Option<&KeySlots> {
        match right {
            Right::Listen => Some(&self.listen),
            Right::Send => Some(&self.send),
            Right::Manage => Some(&self.manage),
            Right::Operator => None,
        }
    }

    pub fn pair_mut(&mut self, right: Right) -> Option<&mut KeySlots> {
        match right {
            Right::Listen => Some(&mut self.listen),
            Right::Send => Some(&mut self.send),
            Right::Manage => Some(&mut self.manage),
            Right::Operator => None,
        }
    }
}

/// A write-back public key of the tenant's agents, with the endorsements
/// that let portals trust it. Public material only: the broker can neither
/// use nor check it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentKeyRecord {
    pub key_id: String,
    pub public_key: Vec<u8>,
    pub registered_unix_ms: i64,
    /// (portal key id, endorsement bytes)
    pub endorsements: Vec<(String, Vec<u8>)>,
}

/// One tenant as stored. `Debug` is safe: keys print as `Key(***)`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TenantRecord {
    pub name: String,
    pub connector_name: String,
    pub writeback_enabled: bool,
    pub created_unix_ms: i64,
    pub modified_unix_ms: i64,
    pub keys: TenantKeys,
    pub revoked_agents: BTreeSet<String>,
    /// Oldest first.
    #[serde(default)]
    pub agent_keys: Vec<AgentKeyRecord>,
}

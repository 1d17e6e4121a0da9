//! The embedded persistent store: tenants, their keys and configuration, in a
//! redb database. Every write is a durable ACID commit, so a `kill -9` of the
//! broker loses nothing that was acknowledged.
//!
//! Sessions are not stored: they live in memory and are rebuilt when agents
//! reconnect.
//!
//! The schema is versioned: an older store is migrated forward when it is
//! opened, a newer one refused (`store/migrations.rs`).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableTable, TableDefinition};
use sas::{Key, KeySlot, Right};
use serde::{Deserialize, Serialize};

mod migrations;

pub use migrations::SCHEMA_VERSION;
use migrations::{META, MIGRATIONS, VERSION_KEY};

const TENANTS: TableDefinition<&str, &[u8]> = TableDefinition::new("tenants");

/// A right's two keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyPair {
    pub primary: Key,
    pub secondary: Key,
}

impl KeyPair {
    pub fn generate() -> Result<KeyPair, sas::KeyError> {
        Ok(KeyPair {
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
    pub listen: KeyPair,
    pub send: KeyPair,
    pub manage: KeyPair,
}

impl TenantKeys {
    pub fn generate() -> Result<TenantKeys, sas::KeyError> {
        Ok(TenantKeys {
            listen: KeyPair::generate()?,
            send: KeyPair::generate()?,
            manage: KeyPair::generate()?,
        })
    }

    /// The pair of a tenant right; `None` for the operator right, which no
    /// tenant has.
    pub fn pair(&self, right: Right) -> Option<&KeyPair> {
        match right {
            Right::Listen => Some(&self.listen),
            Right::Send => Some(&self.send),
            Right::Manage => Some(&self.manage),
            Right::Operator => None,
        }
    }

    pub fn pair_mut(&mut self, right: Right) -> Option<&mut KeyPair> {
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

/// A store failure. The messages name the operation, never a key.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store at {path}")]
    Open {
        path: String,
        #[source]
        source: Box<redb::Error>,
    },
    #[error("store {operation} failed")]
    Io {
        operation: &'static str,
        #[source]
        source: Box<redb::Error>,
    },
    #[error("tenant record {tenant:?} in the store is corrupt")]
    Corrupt {
        tenant: String,
        #[source]
        source: serde_json::Error,
    },
    /// Written by a newer broker: opening it could lose what it added.
    #[error(
        "the store has schema version {found}, newer than the {supported} this broker \
         writes: it was written by a newer broker; run that one, or restore the copy of \
         data_dir taken before the upgrade"
    )]
    SchemaTooNew { found: u64, supported: u64 },
    #[error("no migration from store schema version {from}")]
    NoMigration { from: u64 },
    #[error("migrating the store from schema version {from} failed; it is still at {from}")]
    Migration {
        from: u64,
        #[source]
        source: Box<StoreError>,
    },
    #[error("the store task was cancelled")]
    Cancelled,
    /// The outcome store's readers have this many reads queued already.
    #[error("the outcome store has {queued} reads queued; try again")]
    Busy { queued: usize },
    #[error("the system random number generator failed")]
    Random,
    /// Cluster mode: the tenants or outcomes bucket failed.
    #[error(transparent)]
    Cluster(Box<crate::cluster::kv::KvError>),
}

impl From<crate::cluster::kv::KvError> for StoreError {
    fn from(e: crate::cluster::kv::KvError) -> StoreError {
        StoreError::Cluster(Box::new(e))
    }
}

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
}

pub(crate) fn io<E: Into<redb::Error>>(operation: &'static str) -> impl FnOnce(E) -> StoreError {
    move |e| StoreError::Io {
        operation,
        source: Box::new(e.into()),
    }
}

impl Store {
    /// Opens (or creates) the database file and brings an older schema
    /// forward (`store/migrations.rs`); refuses a store of a newer one.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db = Database::create(path).map_err(|e| StoreError::Open {
            path: path.display().to_string(),
            source: Box::new(e.into()),
        })?;
        migrations::migrate(&db, MIGRATIONS, SCHEMA_VERSION)?;
        let tx = db.begin_write().map_err(io("open"))?;
        {
            let mut meta = tx.open_table(META).map_err(io("open"))?;
            // A new store starts at the current version; a migrated one is
            // there already.
            if meta.get(VERSION_KEY).map_err(io("open"))?.is_none() {
                meta.insert(VERSION_KEY, SCHEMA_VERSION)
                    .map_err(io("open"))?;
            }
            tx.open_table(TENANTS).map_err(io("open"))?;
            tx.open_table(crate::outcomes::OUTCOMES)
                .map_err(io("open"))?;
        }
        tx.commit().map_err(io("open"))?;
        Ok(Store { db: Arc::new(db) })
    }

    pub(crate) fn db(&self) -> &Database {
        &self.db
    }

    /// Every tenant, for the in-memory cache at start-up.
    pub fn load_tenants(&self) -> Result<Vec<TenantRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(io("read"))?;
        let table = tx.open_table(TENANTS).map_err(io("read"))?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(io("read"))? {
            let (name, bytes) = entry.map_err(io("read"))?;
            let record =
                serde_json::from_slice(bytes.value()).map_err(|source| StoreError::Corrupt {
                    tenant: name.value().to_owned(),
                    source,
                })?;
            out.push(record);
        }
        Ok(out)
    }

    /// Writes a tenant durably. Blocking: call from a blocking context.
    pub fn put_tenant(&self, record: &TenantRecord) -> Result<(), StoreError> {
        let bytes = zeroize::Zeroizing::new(serde_json::to_vec(record).map_err(|source| {
            StoreError::Corrupt {
                tenant: record.name.clone(),
                source,
            }
        })?);
        let tx = self.db.begin_write().map_err(io("write"))?;
        {
            let mut table = tx.open_table(TENANTS).map_err(io("write"))?;
            table
                .insert(record.name.as_str(), bytes.as_slice())
                .map_err(io("write"))?;
        }
        tx.commit().map_err(io("commit"))
    }

    /// Deletes a tenant durably; whether it existed.
    pub fn delete_tenant(&self, name: &str) -> Result<bool, StoreError> {
        let tx = self.db.begin_write().map_err(io("delete"))?;
        let existed = {
            let mut table = tx.open_table(TENANTS).map_err(io("delete"))?;
            table.remove(name).map_err(io("delete"))?.is_some()
        };
        tx.commit().map_err(io("commit"))?;
        Ok(existed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str) -> TenantRecord {
        TenantRecord {
            name: name.to_owned(),
            connector_name: format!("{name} - AAD"),
            writeback_enabled: true,
            created_unix_ms: 1,
            modified_unix_ms: 2,
            keys: TenantKeys::generate().unwrap(),
            revoked_agents: BTreeSet::from(["old-agent".to_owned()]),
            agent_keys: Vec::new(),
        }
    }

    #[test]
    fn tenants_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.redb");
        let a = record("a");
        {
            let store = Store::open(&path).unwrap();
            store.put_tenant(&a).unwrap();
            store.put_tenant(&record("b")).unwrap();
            assert!(store.delete_tenant("b").unwrap());
            assert!(!store.delete_tenant("b").unwrap());
        }
        let store = Store::open(&path).unwrap();
        let all = store.load_tenants().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].name, "a");
        assert_eq!(all[0].keys.send.primary, a.keys.send.primary);
        assert!(all[0].revoked_agents.contains("old-agent"));
    }

    #[test]
    fn record_debug_never_shows_keys() {
        let r = record("a");
        let shown = format!("{r:?}");
        assert!(!shown.contains(r.keys.listen.primary.to_base64().as_str()));
        assert!(shown.contains("Key(***)"));
    }
}

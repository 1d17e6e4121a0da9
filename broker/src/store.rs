//! The persistence seam of the broker, and its single-node backend.
//!
//! What the rest of the broker asks of a store is in [`TenantStore`] and
//! [`OutcomeStore`], in the records' own vocabulary ([`records`],
//! [`outcome`]), with one backend-neutral [`StoreError`]. Records become
//! bytes in one place, [`codec`], for every backend.
//!
//! One node keeps everything in a redb database, [`Store`]: tenants (this
//! file and `local`) and outcome records (`outcomes::local`). Every write
//! is a durable ACID commit, so a `kill -9` of the broker loses nothing
//! that was acknowledged. Sessions are not stored: they live in memory and
//! are rebuilt when agents reconnect.
//!
//! The schema is versioned: an older store is migrated forward when it is
//! opened, a newer one refused (`store/migrations.rs`).
//!
//! Tenant records are sealed under the storage key before they reach the
//! file (`store/sealed.rs`, schema 3), and the file is created 0600
//! (`store/files.rs`): neither a reader of the disk nor of a backup sees a
//! tenant's keys.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use redb::{Database, ReadableTable, TableDefinition};

use crate::sealing::StorageKey;

pub mod backup;
pub mod codec;
mod error;
pub mod files;
mod local;
mod migrations;
pub mod outcome;
pub mod records;
mod rotate;
pub mod sealed;
mod traits;

pub(crate) use error::io;
pub use error::{Source, StoreError};
pub use migrations::SCHEMA_VERSION;
use migrations::{META, MIGRATIONS, VERSION_KEY};
pub use outcome::{Admission, LateCheck, OutcomeRecord, StoredAnswer};
pub use records::{AgentKeyRecord, KeySlots, TenantKeys, TenantRecord};
pub use traits::{Current, OutcomeStore, TenantStore, Written};

/// tenant name -> its record sealed under the storage key ([`sealed`]).
const TENANTS: TableDefinition<&str, &[u8]> = TableDefinition::new("tenants");
/// `tenant/request_id` -> an outcome record ([`codec::encode_outcome`]).
/// Neither part contains '/'. Written by `outcomes::local`.
pub(crate) const OUTCOMES: TableDefinition<&str, &[u8]> = TableDefinition::new("outcomes");

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    key: Arc<StorageKey>,
    /// Orders this node's tenant writes for the cache (see `local`).
    revisions: Arc<AtomicU64>,
}

impl Store {
    /// Opens (or creates, mode 0600) the database file and brings an older
    /// schema forward (`store/migrations.rs`), sealing its records under
    /// `key`; refuses a store of a newer one.
    pub fn open(path: &Path, key: Arc<StorageKey>) -> Result<Store, StoreError> {
        files::create_private(path).map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source: Box::new(source),
        })?;
        let mut db = Database::create(path).map_err(|e| StoreError::Open {
            path: path.display().to_string(),
            source: Box::new(redb::Error::from(e)),
        })?;
        let found = migrations::version(&db)?;
        migrations::migrate(&db, MIGRATIONS, SCHEMA_VERSION, &key)?;
        if found.is_some_and(|v| v < migrations::SEALED_SINCE) {
            // The pages that held the clear records are free now; compacting
            // moves the live pages down and cuts the file after them, so
            // fewer old copies remain (none is promised: see README.md).
            db.compact().map_err(io("compact after sealing"))?;
        }
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
            tx.open_table(OUTCOMES).map_err(io("open"))?;
        }
        tx.commit().map_err(io("open"))?;
        Ok(Store {
            db: Arc::new(db),
            key,
            revisions: Arc::default(),
        })
    }

    pub(crate) fn db(&self) -> &Database {
        &self.db
    }

    /// The key the records are sealed under.
    pub fn key(&self) -> &StorageKey {
        &self.key
    }

    /// Every tenant, for the in-memory cache at start-up.
    pub fn load_tenants(&self) -> Result<Vec<TenantRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(io("read"))?;
        let table = tx.open_table(TENANTS).map_err(io("read"))?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(io("read"))? {
            let (name, bytes) = entry.map_err(io("read"))?;
            out.push(sealed::open(&self.key, name.value(), bytes.value())?);
        }
        Ok(out)
    }

    /// One tenant; `None` if there is none. Blocking.
    pub fn get_tenant(&self, name: &str) -> Result<Option<TenantRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(io("read"))?;
        let table = tx.open_table(TENANTS).map_err(io("read"))?;
        let found = table.get(name).map_err(io("read"))?;
        found
            .map(|bytes| sealed::open(&self.key, name, bytes.value()))
            .transpose()
    }

    /// Writes a tenant durably. Blocking: call from a blocking context.
    pub fn put_tenant(&self, record: &TenantRecord) -> Result<(), StoreError> {
        let bytes = sealed::seal(&self.key, record)?;
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

fn decode(tenant: &str, bytes: &[u8]) -> Result<TenantRecord, StoreError> {
    codec::decode_tenant(bytes).map_err(|source| StoreError::Corrupt {
        tenant: tenant.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::sealing::test_key;

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
            let store = Store::open(&path, test_key()).unwrap();
            store.put_tenant(&a).unwrap();
            store.put_tenant(&record("b")).unwrap();
            assert!(store.delete_tenant("b").unwrap());
            assert!(!store.delete_tenant("b").unwrap());
        }
        let store = Store::open(&path, test_key()).unwrap();
        let all = store.load_tenants().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].name, "a");
        assert_eq!(all[0].keys.send.primary, a.keys.send.primary);
        assert!(all[0].revoked_agents.contains("old-agent"));
    }

    #[test]
    fn records_are_sealed_in_the_file_and_need_their_key() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.redb");
        let a = record("a");
        let secrets: Vec<String> = [&a.keys.listen, &a.keys.send, &a.keys.manage]
            .iter()
            .flat_map(|p| [p.primary.to_base64(), p.secondary.to_base64()])
            .map(|k| k.as_str().to_owned())
            .collect();
        {
            let store = Store::open(&path, test_key()).unwrap();
            store.put_tenant(&a).unwrap();
        }
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let bytes = std::fs::read(&path).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        for secret in &secrets {
            assert!(!text.contains(secret.as_str()));
        }
        assert!(!text.contains("a - AAD"), "the whole record is sealed");
        let other = Arc::new(StorageKey::generate().unwrap());
        let store = Store::open(&path, Arc::clone(&other)).unwrap();
        let err = store.load_tenants().unwrap_err();
        let shown = err.to_string();
        let want = format!(
            "sealed under storage key id {}, the configured key is {}",
            test_key().id(),
            other.id()
        );
        assert!(shown.contains(&want), "{shown}");
    }

    #[test]
    fn record_debug_never_shows_keys() {
        let r = record("a");
        let shown = format!("{r:?}");
        assert!(!shown.contains(r.keys.listen.primary.to_base64().as_str()));
        assert!(shown.contains("Key(***)"));
    }
}

//! Storage key rotation of the single node's store: every tenant record is
//! opened under the key the store was opened with and sealed under the new
//! one, in one write transaction, so the store is wholly under one key or
//! the other. Offline only: the file is the broker's while it runs.

use redb::ReadableTable;

use super::{Store, StoreError, TENANTS, io, sealed};
use crate::sealing::StorageKey;

impl Store {
    /// Re-seals every tenant record under `new`; returns how many. This
    /// handle still holds the old key: drop it and open the store with the
    /// new one.
    pub fn reseal(&self, new: &StorageKey) -> Result<usize, StoreError> {
        let tx = self.db.begin_write().map_err(io("rotate storage key"))?;
        let count = {
            let mut tenants = tx.open_table(TENANTS).map_err(io("rotate storage key"))?;
            let mut rewrites = Vec::new();
            for entry in tenants.iter().map_err(io("rotate storage key"))? {
                let (name, bytes) = entry.map_err(io("rotate storage key"))?;
                let clear = sealed::open_bytes(&self.key, name.value(), bytes.value())?;
                let resealed = sealed::seal_bytes(new, name.value(), &clear)?;
                rewrites.push((name.value().to_owned(), resealed));
            }
            for (name, bytes) in &rewrites {
                tenants
                    .insert(name.as_str(), bytes.as_slice())
                    .map_err(io("rotate storage key"))?;
            }
            rewrites.len()
        };
        tx.commit().map_err(io("commit storage key rotation"))?;
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::sealing::test_key;
    use crate::store::{TenantKeys, TenantRecord};

    #[test]
    fn records_move_to_the_new_key_and_the_old_one_is_named_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.redb");
        let keys = TenantKeys::generate().unwrap();
        let record = TenantRecord {
            name: "a".into(),
            connector_name: "a - AAD".into(),
            writeback_enabled: true,
            created_unix_ms: 1,
            modified_unix_ms: 2,
            keys: keys.clone(),
            revoked_agents: Default::default(),
            agent_keys: Vec::new(),
        };
        let new = Arc::new(StorageKey::generate().unwrap());
        {
            let store = Store::open(&path, test_key()).unwrap();
            store.put_tenant(&record).unwrap();
            assert_eq!(store.reseal(&new).unwrap(), 1);
        }
        let store = Store::open(&path, Arc::clone(&new)).unwrap();
        let found = store.get_tenant("a").unwrap().unwrap();
        assert_eq!(found.keys.manage.secondary, keys.manage.secondary);
        drop(store);
        let old = Store::open(&path, test_key()).unwrap();
        let err = old.load_tenants().unwrap_err().to_string();
        assert!(err.contains(&new.id().to_string()), "{err}");
        assert!(err.contains(&test_key().id().to_string()), "{err}");
    }
}

//! Tenants in memory, backed by the store. Reads come from a concurrent map;
//! every change is committed to the store first and only then made visible,
//! so what callers see is always what survives a crash.

use std::collections::BTreeSet;
use std::sync::Arc;

use dashmap::DashMap;
use sas::{Key, KeySlot, Right};
use tokio::sync::Mutex;

use crate::error::RelayError;
use crate::store::{Store, StoreError, TenantKeys, TenantRecord};
use crate::time::now_unix_ms;

pub struct Tenants {
    store: Store,
    cache: DashMap<String, Arc<TenantRecord>>,
    // Serialises read-modify-write so that concurrent admin calls on one
    // tenant cannot lose each other's changes.
    write: Mutex<()>,
}

impl Tenants {
    pub fn load(store: Store) -> Result<Tenants, StoreError> {
        let cache = DashMap::new();
        for record in store.load_tenants()? {
            cache.insert(record.name.clone(), Arc::new(record));
        }
        Ok(Tenants {
            store,
            cache,
            write: Mutex::new(()),
        })
    }

    pub fn get(&self, name: &str) -> Option<Arc<TenantRecord>> {
        self.cache.get(name).map(|r| Arc::clone(r.value()))
    }

    pub fn require(&self, name: &str) -> Result<Arc<TenantRecord>, RelayError> {
        self.get(name)
            .ok_or_else(|| RelayError::UnknownTenant(name.to_owned()))
    }

    /// Every tenant, sorted by name.
    pub fn all(&self) -> Vec<Arc<TenantRecord>> {
        let mut all: Vec<_> = self.cache.iter().map(|r| Arc::clone(r.value())).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    pub fn len(&self) -> usize {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    pub async fn create(
        &self,
        name: &str,
        connector_name: Option<String>,
        writeback_enabled: bool,
    ) -> Result<Arc<TenantRecord>, RelayError> {
        if !proto::names::is_valid_tenant(name) {
            return Err(RelayError::InvalidTenantName);
        }
        let _guard = self.write.lock().await;
        if self.cache.contains_key(name) {
            return Err(RelayError::TenantExists(name.to_owned()));
        }
        let now = now_unix_ms();
        let keys = TenantKeys::generate().map_err(|_| StoreError::Random)?;
        let record = TenantRecord {
            name: name.to_owned(),
            connector_name: connector_name.unwrap_or_else(|| format!("{name} - AAD")),
            writeback_enabled,
            created_unix_ms: now,
            modified_unix_ms: now,
            keys,
            revoked_agents: BTreeSet::new(),
            agent_keys: Vec::new(),
        };
        self.commit(record).await
    }

    /// Applies `change` to a copy of the tenant, commits it, then publishes it.
    pub async fn update<F>(&self, name: &str, change: F) -> Result<Arc<TenantRecord>, RelayError>
    where
        F: FnOnce(&mut TenantRecord) -> Result<(), RelayError>,
    {
        let _guard = self.write.lock().await;
        let mut record = (*self.require(name)?).clone();
        change(&mut record)?;
        record.modified_unix_ms = now_unix_ms();
        self.commit(record).await
    }

    pub async fn set_writeback(
        &self,
        name: &str,
        enabled: bool,
    ) -> Result<Arc<TenantRecord>, RelayError> {
        self.update(name, |r| {
            r.writeback_enabled = enabled;
            Ok(())
        })
        .await
    }

    /// Replaces one key with a fresh one and returns it.
    pub async fn rotate_key(
        &self,
        name: &str,
        right: Right,
        slot: KeySlot,
    ) -> Result<Key, RelayError> {
        let fresh = Key::generate().map_err(|_| StoreError::Random)?;
        let installed = fresh.clone();
        self.update(name, move |r| {
            let pair = r
                .keys
                .pair_mut(right)
                .ok_or(RelayError::InvalidKeySelector(
                    "the operator key is not a tenant key",
                ))?;
            *pair.slot_mut(slot) = installed;
            Ok(())
        })
        .await?;
        Ok(fresh)
    }

    pub async fn delete(&self, name: &str) -> Result<(), RelayError> {
        let _guard = self.write.lock().await;
        self.require(name)?;
        let store = self.store.clone();
        let owned = name.to_owned();
        tokio::task::spawn_blocking(move || store.delete_tenant(&owned))
            .await
            .map_err(|_| StoreError::Cancelled)??;
        self.cache.remove(name);
        Ok(())
    }

    async fn commit(&self, record: TenantRecord) -> Result<Arc<TenantRecord>, RelayError> {
        let record = Arc::new(record);
        let store = self.store.clone();
        let to_write = Arc::clone(&record);
        tokio::task::spawn_blocking(move || store.put_tenant(&to_write))
            .await
            .map_err(|_| StoreError::Cancelled)??;
        self.cache.insert(record.name.clone(), Arc::clone(&record));
        Ok(record)
    }
}

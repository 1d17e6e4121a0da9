//! Tenant records in the tenants bucket, keyed by tenant name, each sealed
//! with the storage key for `<bucket>/<tenant>`. Every write is a
//! compare-and-set ([`super::cas`]), so two nodes changing one tenant
//! cannot overwrite each other: the later one gets a conflict, reads again
//! and reapplies its change.

use std::sync::Arc;

use async_nats::jetstream::{self, kv};
use zeroize::Zeroizing;

use super::cas::{self, Change, Snapshot};
use super::retry::{RETRY_FOR, failed};
use super::{KvError, RecordError, context};
use crate::cluster::storage_key::StorageKey;
use crate::store::TenantRecord;

/// The outcome of a compare-and-set write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
    /// Written; the bucket's revision of the change.
    At(u64),
    /// The entry changed since the revision given: read it again.
    Conflict,
}

/// The tenants bucket and the key that seals its records.
#[derive(Clone)]
pub(crate) struct TenantBucket {
    store: kv::Store,
    js: jetstream::Context,
    key: Arc<StorageKey>,
}

/// A tenant as read, with what a write needs to be conditioned on it.
pub(crate) struct Current {
    snapshot: Snapshot,
}

impl Current {
    /// Whether the tenant exists (was created and not deleted since).
    pub(crate) fn exists(&self) -> bool {
        self.snapshot.value().is_some()
    }
}

impl TenantBucket {
    pub(crate) fn new(
        store: kv::Store,
        js: jetstream::Context,
        key: Arc<StorageKey>,
    ) -> TenantBucket {
        TenantBucket { store, js, key }
    }

    pub(crate) fn store(&self) -> &kv::Store {
        &self.store
    }

    pub(crate) fn name(&self) -> &str {
        &self.store.name
    }

    fn seal(&self, record: &TenantRecord) -> Result<Vec<u8>, KvError> {
        let json = Zeroizing::new(
            serde_json::to_vec(record)
                .map_err(|e| failed(self.name(), "encode a tenant record", e))?,
        );
        self.key
            .seal(&context(self.name(), &record.name), &json)
            .map_err(KvError::Seal)
    }

    /// Opens and decodes what is stored under `tenant`.
    pub(crate) fn open(&self, tenant: &str, sealed: &[u8]) -> Result<TenantRecord, RecordError> {
        let json = self.key.open(&context(self.name(), tenant), sealed)?;
        let record: TenantRecord =
            serde_json::from_slice(&json).map_err(|e| RecordError::decode("tenant record", &e))?;
        if record.name != tenant {
            return Err(RecordError::OtherTenant { found: record.name });
        }
        Ok(record)
    }

    /// The tenant as it is now.
    pub(crate) async fn read(&self, tenant: &str) -> Result<Current, KvError> {
        let snapshot = cas::read(&self.store, tenant, RETRY_FOR).await?;
        Ok(Current { snapshot })
    }

    /// The record `current` holds, opened; `None` if the tenant does not
    /// exist.
    pub(crate) fn record(
        &self,
        tenant: &str,
        current: &Current,
    ) -> Result<Option<TenantRecord>, KvError> {
        let Some(entry) = current.snapshot.value() else {
            return Ok(None);
        };
        self.open(tenant, &entry.value)
            .map(Some)
            .map_err(|source| KvError::Unreadable {
                bucket: self.name().to_owned(),
                key: tenant.to_owned(),
                source,
            })
    }

    async fn write(
        &self,
        tenant: &str,
        change: Change<'_>,
        current: &Current,
    ) -> Result<Option<u64>, KvError> {
        cas::write(
            &self.js,
            &self.store,
            tenant,
            change,
            &current.snapshot,
            RETRY_FOR,
        )
        .await
    }

    /// Stores `record` where `current` holds none (a create) or the
    /// record it replaces: the compare-and-set conditions come from
    /// `current` either way.
    pub(crate) async fn put(
        &self,
        record: &TenantRecord,
        current: &Current,
    ) -> Result<Written, KvError> {
        let sealed = self.seal(record)?;
        match self
            .write(&record.name, Change::Put(&sealed), current)
            .await?
        {
            Some(revision) => Ok(Written::At(revision)),
            None => self.landed(&record.name, &sealed).await,
        }
    }

    /// Deletes the tenant whose record `current` holds.
    pub(crate) async fn delete(&self, tenant: &str, current: &Current) -> Result<Written, KvError> {
        match self.write(tenant, Change::Delete, current).await? {
            Some(revision) => Ok(Written::At(revision)),
            // Deleted meanwhile, by an attempt of ours whose answer was
            // lost or by another node: gone either way.
            None => {
                let now = cas::read(&self.store, tenant, RETRY_FOR).await?;
                Ok(match now.entry {
                    Some(entry) if entry.operation != kv::Operation::Put => {
                        Written::At(entry.revision)
                    }
                    _ => Written::Conflict,
                })
            }
        }
    }

    /// After a conflict: whether the bucket holds `sealed`, written by an
    /// earlier attempt whose answer was lost in a failover. Sealing uses a
    /// fresh nonce, so no other write has the same bytes.
    async fn landed(&self, tenant: &str, sealed: &[u8]) -> Result<Written, KvError> {
        let now = cas::read(&self.store, tenant, RETRY_FOR).await?;
        Ok(match now.value() {
            Some(entry) if entry.value == sealed => Written::At(entry.revision),
            _ => Written::Conflict,
        })
    }
}

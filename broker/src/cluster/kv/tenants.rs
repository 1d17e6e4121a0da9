//! Tenant records in the tenants bucket, keyed by tenant name, each sealed
//! with the storage key for `<bucket>/<tenant>`: the cluster's
//! [`TenantStore`]. Every write is a compare-and-set ([`super::cas`]), so
//! two nodes changing one tenant cannot overwrite each other: the later one
//! gets a conflict, reads again and reapplies its change.
//!
//! The bytes sealed are the record as [`crate::store::codec`] writes it,
//! the same as the single-node store's; see there for how nodes of two
//! releases read each other's records.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use tokio_util::sync::CancellationToken;

use super::cas::{self, Change, Snapshot};
use super::retry::{RETRY_FOR, failed};
use super::{Buckets, KvError, RecordError, context};
use crate::cluster::storage_key::StorageKey;
use crate::lease::Lease;
use crate::store::{Current, StoreError, TenantRecord, TenantStore, Written, codec};
use crate::tenants::{TenantCache, Tenants};

impl Tenants {
    /// Loads every tenant of the cluster's tenants bucket, then follows
    /// the changes from every node until `shutdown` (or until dropped),
    /// confirming them under a lease of `lease` ([`crate::lease`]).
    pub async fn load_cluster(
        buckets: &Buckets,
        storage_key: Arc<StorageKey>,
        lease: Duration,
        shutdown: CancellationToken,
    ) -> Result<Tenants, KvError> {
        let bucket = TenantBucket::new(
            buckets.tenants.clone(),
            buckets.jetstream().clone(),
            storage_key,
        );
        let cache = Arc::new(TenantCache::default());
        let (watch, last) = super::watch::load(&bucket, &cache).await?;
        // Unconfirmed until the first check: the load may have taken long.
        let lease = Arc::new(Lease::new(lease, last));
        let stop = shutdown.child_token();
        super::watch::follow(
            bucket.clone(),
            Arc::clone(&cache),
            watch,
            last,
            Arc::clone(&lease),
            stop.clone(),
        );
        // The first check follows at once; waiting for it keeps the node
        // from saying it is ready and then refusing every tenant.
        let confirmed = tokio::time::timeout(FIRST_CONFIRMATION, async {
            while lease.check().is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        if confirmed.await.is_err()
            && let Err(lapsed) = lease.check()
        {
            tracing::warn!(error = %lapsed, "starting with tenants this node cannot confirm yet: it refuses their requests until it can");
        }
        Ok(Tenants::with_store(
            Box::new(bucket),
            cache,
            Some(stop.drop_guard()),
            Some(lease),
        ))
    }
}

/// How long start-up waits for the first confirmation of the tenants it
/// loaded (see [`crate::lease`]).
const FIRST_CONFIRMATION: Duration = Duration::from_secs(10);

/// The tenants bucket and the key that seals its records.
#[derive(Clone)]
pub(crate) struct TenantBucket {
    store: kv::Store,
    js: jetstream::Context,
    key: Arc<StorageKey>,
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
        let bytes = codec::encode_tenant(record)
            .map_err(|e| failed(self.name(), "encode a tenant record", e))?;
        self.key
            .seal(&context(self.name(), &record.name), &bytes)
            .map_err(KvError::Seal)
    }

    /// Opens and decodes what is stored under `tenant`.
    pub(crate) fn open(&self, tenant: &str, sealed: &[u8]) -> Result<TenantRecord, RecordError> {
        let bytes = self.key.unseal(&context(self.name(), tenant), sealed)?;
        let record = codec::decode_tenant(&bytes)?;
        if record.name != tenant {
            return Err(RecordError::OtherTenant { found: record.name });
        }
        Ok(record)
    }

    /// `tenant`'s entry and the record it holds, opened.
    async fn snapshot(&self, tenant: &str) -> Result<Current, KvError> {
        let snapshot = cas::read(&self.store, tenant, RETRY_FOR).await?;
        let record = snapshot.value().map(|entry| {
            self.open(tenant, &entry.value).map_err(|source| {
                StoreError::from(KvError::Unreadable {
                    bucket: self.name().to_owned(),
                    key: tenant.to_owned(),
                    source,
                })
            })
        });
        Ok(Current::new(record, snapshot))
    }

    async fn write(
        &self,
        tenant: &str,
        change: Change<'_>,
        current: &Current,
    ) -> Result<Option<u64>, KvError> {
        let snapshot: &Snapshot = current
            .condition()
            .expect("a tenant read from the tenants bucket");
        cas::write(&self.js, &self.store, tenant, change, snapshot, RETRY_FOR).await
    }

    async fn put_sealed(
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

    async fn delete_entry(&self, tenant: &str, current: &Current) -> Result<Written, KvError> {
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

#[tonic::async_trait]
impl TenantStore for TenantBucket {
    fn place(&self, tenant: &str) -> String {
        format!("{tenant:?} in the key-value bucket {}", self.name())
    }

    /// The window of one retried step: a read and a write each retry for
    /// that long, and the change as a whole must not take longer.
    fn write_bound(&self) -> Option<Duration> {
        Some(RETRY_FOR)
    }

    async fn read(&self, tenant: &str) -> Result<Current, StoreError> {
        Ok(self.snapshot(tenant).await?)
    }

    async fn put(&self, record: &TenantRecord, current: &Current) -> Result<Written, StoreError> {
        Ok(self.put_sealed(record, current).await?)
    }

    async fn delete(&self, tenant: &str, current: &Current) -> Result<Written, StoreError> {
        Ok(self.delete_entry(tenant, current).await?)
    }
}

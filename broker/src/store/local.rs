//! The redb database as a [`TenantStore`]. One node is the only writer, and
//! the tenants serialise their writes, so a write never conflicts. Revisions
//! come from a counter that starts above the records loaded at start-up
//! (revision 0), which is all the cache needs to order changes.

use std::sync::atomic::Ordering;

use super::traits::{Current, TenantStore, Written};
use super::{Store, StoreError, TenantRecord};

impl Store {
    fn next_revision(&self) -> u64 {
        self.revisions.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Runs blocking store work off the runtime's threads.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || work(&store))
            .await
            .map_err(|_| StoreError::Cancelled)?
    }
}

#[tonic::async_trait]
impl TenantStore for Store {
    fn place(&self, tenant: &str) -> String {
        format!("tenant {tenant:?} in the store")
    }

    async fn read(&self, tenant: &str) -> Result<Current, StoreError> {
        let name = tenant.to_owned();
        let found = self.blocking(move |s| s.get_tenant(&name)).await?;
        Ok(Current::new(found.map(Ok), ()))
    }

    async fn put(&self, record: &TenantRecord, _: &Current) -> Result<Written, StoreError> {
        let record = record.clone();
        self.blocking(move |s| s.put_tenant(&record)).await?;
        Ok(Written::At(self.next_revision()))
    }

    async fn delete(&self, tenant: &str, _: &Current) -> Result<Written, StoreError> {
        let name = tenant.to_owned();
        self.blocking(move |s| s.delete_tenant(&name)).await?;
        Ok(Written::At(self.next_revision()))
    }
}

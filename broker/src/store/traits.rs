//! The persistence seam: what the tenants and the outcomes ask of a store,
//! as traits, so that they hold one `dyn` store whichever backend is behind
//! it. The redb backend of one node is [`super::Store`] (tenants) and
//! `outcomes::local` (outcomes); the cluster's NATS key-value backend is in
//! `cluster::kv::tenants` and `cluster::kv::outcomes`.

use std::any::Any;

use super::error::StoreError;
use super::outcome::{Admission, LateCheck, OutcomeRecord};
use super::records::TenantRecord;

/// The outcome of a conditional write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Written; the revision of the change, which orders every change to
    /// one tenant.
    At(u64),
    /// The tenant changed since it was read: read it again.
    Conflict,
}

/// A tenant as read, with what a write needs to be conditioned on it.
pub struct Current {
    exists: bool,
    /// `None` once taken, or when the tenant does not exist.
    record: Option<Result<TenantRecord, StoreError>>,
    /// The backend's own: only the backend that read it looks inside.
    condition: Box<dyn Any + Send + Sync>,
}

impl Current {
    /// `record`: `None` if the tenant does not exist; an error if it exists
    /// but cannot be read (it can still be deleted).
    pub fn new(
        record: Option<Result<TenantRecord, StoreError>>,
        condition: impl Any + Send + Sync,
    ) -> Current {
        Current {
            exists: record.is_some(),
            record,
            condition: Box::new(condition),
        }
    }

    /// Whether the tenant exists (was created and not deleted since).
    pub fn exists(&self) -> bool {
        self.exists
    }

    /// The record read, once; `None` if the tenant does not exist.
    pub fn take_record(&mut self) -> Result<Option<TenantRecord>, StoreError> {
        self.record.take().transpose()
    }

    /// The backend's condition, if it is of type `T`.
    pub fn condition<T: Any>(&self) -> Option<&T> {
        self.condition.downcast_ref()
    }
}

/// Where tenants are committed. Every write is conditioned on a read of
/// the tenant, so writers on several nodes cannot undo each other's
/// changes; a backend with one writer never reports a conflict.
#[tonic::async_trait]
pub trait TenantStore: Send + Sync {
    /// Where `tenant`'s record lives, for messages: `"contoso" in the
    /// key-value bucket relay_tenants`.
    fn place(&self, tenant: &str) -> String;

    /// How long one change (its reads, conflicts and retries together) may
    /// take before it is refused: a shared store retries over a failover,
    /// and each of its steps has a window of its own, which in a row would
    /// add up beyond what an administrator is promised. `None`: a local
    /// store answers or fails by itself.
    fn write_bound(&self) -> Option<std::time::Duration> {
        None
    }

    async fn read(&self, tenant: &str) -> Result<Current, StoreError>;

    /// Stores `record` where `current` holds none (a create) or the record
    /// it replaces.
    async fn put(&self, record: &TenantRecord, current: &Current) -> Result<Written, StoreError>;

    /// Deletes the tenant whose record `current` holds.
    async fn delete(&self, tenant: &str, current: &Current) -> Result<Written, StoreError>;
}

/// Where outcome records are kept, one per (tenant, request id).
#[tonic::async_trait]
pub trait OutcomeStore: Send + Sync {
    /// What the records say of an answer `agent_id` posts late, if that is
    /// known without store work.
    fn check_late(&self, _tenant: &str, _request_id: &str, _agent_id: &str) -> LateCheck {
        LateCheck::Unknown
    }

    /// Writes an awaited record (`record.answer` is `None`): one naming no
    /// agent only where there is none; one naming an agent also over an
    /// awaited record. Never over an answer. Whether it wrote.
    async fn expect(
        &self,
        tenant: &str,
        request_id: &str,
        record: OutcomeRecord,
    ) -> Result<bool, StoreError>;

    /// Removes an awaited record (never an answer).
    async fn forget(&self, tenant: &str, request_id: &str) -> Result<(), StoreError>;

    /// Keeps an answer unless one is kept already, by the rules of
    /// `admission`. Whether it was kept.
    async fn record(
        &self,
        tenant: &str,
        request_id: &str,
        record: OutcomeRecord,
        admission: Admission,
    ) -> Result<bool, StoreError>;

    /// The record kept, expired or not.
    async fn get(
        &self,
        tenant: &str,
        request_id: &str,
    ) -> Result<Option<OutcomeRecord>, StoreError>;

    /// Deletes expired records; how many. A backend that expires records
    /// by itself has nothing to do.
    async fn purge(&self) -> Result<usize, StoreError> {
        Ok(0)
    }
}

/// A store shared with whoever else holds it (tests look at a backend's
/// own state while the outcomes use it).
#[tonic::async_trait]
impl<T: OutcomeStore + ?Sized> OutcomeStore for std::sync::Arc<T> {
    fn check_late(&self, tenant: &str, request_id: &str, agent_id: &str) -> LateCheck {
        (**self).check_late(tenant, request_id, agent_id)
    }

    async fn expect(
        &self,
        tenant: &str,
        request_id: &str,
        record: OutcomeRecord,
    ) -> Result<bool, StoreError> {
        (**self).expect(tenant, request_id, record).await
    }

    async fn forget(&self, tenant: &str, request_id: &str) -> Result<(), StoreError> {
        (**self).forget(tenant, request_id).await
    }

    async fn record(
        &self,
        tenant: &str,
        request_id: &str,
        record: OutcomeRecord,
        admission: Admission,
    ) -> Result<bool, StoreError> {
        (**self).record(tenant, request_id, record, admission).await
    }

    async fn get(
        &self,
        tenant: &str,
        request_id: &str,
    ) -> Result<Option<OutcomeRecord>, StoreError> {
        (**self).get(tenant, request_id).await
    }

    async fn purge(&self) -> Result<usize, StoreError> {
        (**self).purge().await
    }
}

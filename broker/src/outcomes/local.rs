//! The outcome records of one node, in its redb store: the [`OutcomeStore`]
//! of the single-node broker. Writes go through the group-committing
//! `writer`, reads through the `readers` threads, and `known` answers
//! late-answer checks from memory.

use std::sync::Arc;

use redb::ReadableTable;

use super::index::{self, Index};
use super::{known, readers, writer};
use crate::config::Limits;
use crate::store::codec::decode_outcome;
use crate::store::{
    Admission, LateCheck, OUTCOMES, OutcomeRecord, OutcomeStore, Store, StoreError, io,
};
use crate::time::now_unix_ms;

/// The store; the thread that commits its writes in groups (dropped first:
/// it finishes its commit before the readers go); the threads that read
/// it; what its records hold, in memory.
pub struct LocalOutcomes {
    writer: writer::Writer,
    readers: readers::Readers,
    pub(super) known: Arc<known::Known>,
}

impl LocalOutcomes {
    /// Indexes a store written before the per-tenant index existed, and
    /// reads what every record holds into memory.
    pub fn open(store: Store, limits: &Limits) -> Result<LocalOutcomes, StoreError> {
        let tx = store.db().begin_write().map_err(io("open outcomes"))?;
        index::ensure_built(&tx)?;
        tx.commit().map_err(io("open outcomes"))?;
        let known = Arc::new(known::Known::load(&store)?);
        let writer = writer::Writer::start(
            store.clone(),
            writer::Bounds {
                known: Arc::clone(&known),
                max_bytes_per_tenant: limits.max_outcome_bytes_per_tenant,
            },
        )?;
        Ok(LocalOutcomes {
            writer,
            readers: readers::Readers::start(store)?,
            known,
        })
    }
}

#[tonic::async_trait]
impl OutcomeStore for LocalOutcomes {
    fn check_late(&self, tenant: &str, request_id: &str, agent_id: &str) -> LateCheck {
        self.known.check(tenant, request_id, agent_id)
    }

    async fn expect(
        &self,
        tenant: &str,
        request_id: &str,
        record: OutcomeRecord,
    ) -> Result<bool, StoreError> {
        self.writer
            .run(writer::Op::Write {
                key: key(tenant, request_id),
                record,
                admission: Admission::Relayed,
            })
            .await
    }

    async fn forget(&self, tenant: &str, request_id: &str) -> Result<(), StoreError> {
        self.writer
            .run(writer::Op::Forget {
                key: key(tenant, request_id),
            })
            .await
            .map(drop)
    }

    async fn record(
        &self,
        tenant: &str,
        request_id: &str,
        record: OutcomeRecord,
        admission: Admission,
    ) -> Result<bool, StoreError> {
        self.writer
            .run(writer::Op::Write {
                key: key(tenant, request_id),
                record,
                admission,
            })
            .await
    }

    async fn get(
        &self,
        tenant: &str,
        request_id: &str,
    ) -> Result<Option<OutcomeRecord>, StoreError> {
        let key = key(tenant, request_id);
        self.readers
            .run(move |store| {
                let tx = store.db().begin_read().map_err(io("read outcome"))?;
                let table = tx.open_table(OUTCOMES).map_err(io("read outcome"))?;
                let found = table.get(key.as_str()).map_err(io("read outcome"))?;
                Ok(found.and_then(|v| decode_outcome(v.value())))
            })
            .await
    }

    async fn purge(&self) -> Result<usize, StoreError> {
        let known = Arc::clone(&self.known);
        self.readers
            .run(move |store| {
                let now = now_unix_ms();
                let tx = store.db().begin_write().map_err(io("purge outcomes"))?;
                let removed = {
                    let mut table = tx.open_table(OUTCOMES).map_err(io("purge outcomes"))?;
                    let mut index = Index::open(&tx)?;
                    let mut gone = Vec::new();
                    for record in table.iter().map_err(io("purge outcomes"))? {
                        let (k, v) = record.map_err(io("purge outcomes"))?;
                        if decode_outcome(v.value()).is_none_or(|o| o.expires_unix_ms <= now) {
                            gone.push((k.value().to_owned(), index::expiry_of(v.value())));
                        }
                    }
                    for (key, expiry) in &gone {
                        table.remove(key.as_str()).map_err(io("purge outcomes"))?;
                        let (tenant, request_id) = split(key);
                        index.removed(tenant, request_id, *expiry)?;
                    }
                    gone
                };
                tx.commit().map_err(io("commit outcomes"))?;
                for (key, _) in &removed {
                    let (tenant, request_id) = split(key);
                    known.remove(tenant, request_id);
                }
                Ok(removed.len())
            })
            .await
    }
}

pub(super) fn key(tenant: &str, request_id: &str) -> String {
    format!("{tenant}/{request_id}")
}

/// `tenant/request_id` back into its parts.
pub(super) fn split(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or((key, ""))
}

/// Evicts the tenant's record that expires first if it has the most kept;
/// the request id of the one evicted.
pub(super) fn make_room(
    table: &mut redb::Table<&str, &[u8]>,
    index: &mut Index<'_>,
    tenant: &str,
    cap: usize,
) -> Result<Option<String>, StoreError> {
    if index.count(tenant)? < cap as u64 {
        return Ok(None);
    }
    evict_first(table, index, tenant, "")
}

/// Evicts the tenant's record that expires first, unless it is `keep`'s;
/// the request id of the one evicted.
pub(super) fn evict_first(
    table: &mut redb::Table<&str, &[u8]>,
    index: &mut Index<'_>,
    tenant: &str,
    keep: &str,
) -> Result<Option<String>, StoreError> {
    let Some((request_id, expiry)) = index.first(tenant)? else {
        return Ok(None);
    };
    if request_id == keep {
        return Ok(None);
    }
    evict(table, index, tenant, &request_id, expiry).map(Some)
}

/// Removes one record found in the index; its request id.
pub(super) fn evict(
    table: &mut redb::Table<&str, &[u8]>,
    index: &mut Index<'_>,
    tenant: &str,
    request_id: &str,
    expiry: u64,
) -> Result<String, StoreError> {
    table
        .remove(key(tenant, request_id).as_str())
        .map_err(io("evict outcome"))?;
    index.removed(tenant, request_id, expiry)?;
    Ok(request_id.to_owned())
}

//! Outcomes: one record per relayed request, so that a portal whose call
//! ended without the answer (its deadline fired first, it hung up, it was
//! told OUTCOME_UNKNOWN) can fetch what became of it with GetOutcome.
//!
//! The record is written by the task that routed the request, after its
//! caller was answered and before the request id leaves the in-flight set,
//! so that GetOutcome sees PENDING (in flight) and then the record, with no
//! gap, whether or not the caller is still there ([`Settled`]). An answer the
//! agent posts after that (it finishes, or reconnects and posts it) replaces
//! an awaited record ([`Admission::Late`]). The answer is kept sealed as it
//! came: ciphertext the broker cannot open. Kept in an [`OutcomeStore`] so a
//! broker restart does not lose it: one node's redb store ([`LocalOutcomes`]),
//! or in cluster mode the cluster's outcomes bucket
//! ([`crate::cluster::kv::outcomes`], which makes `Outcomes::cluster`), so
//! that any node can answer.
//!
//! One node's store work has threads of its own and per-tenant bounds, so
//! one tenant's agents cannot make another tenant wait: `writer` commits in
//! groups and bounds each tenant's bytes, `readers` serve GetOutcome,
//! `known` answers whether a late answer is awaited without touching the
//! store, and `local` puts them behind the trait. Whatever the store, `late`
//! bounds each tenant's late answers on their way to it.

mod index;
mod known;
mod late;
mod local;
mod readers;
mod writer;

pub use late::PendingSlot;
pub use local::LocalOutcomes;

use std::sync::Arc;
use std::time::Duration;

use crate::config::Limits;
use crate::error::RelayError;
use crate::routing::RouteReply;
pub use crate::store::{Admission, LateCheck, OutcomeRecord, StoredAnswer};
use crate::store::{OutcomeStore, Store, StoreError};
use crate::time::now_unix_ms;

/// Bounds the disk one tenant's requests fill. When a tenant has this many
/// records, a new one evicts the one that expires first: the newest outcomes
/// are the ones a portal still asks for. Only requests the broker relayed
/// make records (an agent cannot add its own, see [`Admission::Late`]), so
/// the tenant's rate limit bounds how fast they come. One node only: in
/// cluster mode counting a tenant's keys would take a scan of the bucket per
/// request, so there the bucket's max age (the retention) bounds what is
/// kept.
pub const MAX_OUTCOMES_PER_TENANT: usize = 10_000;

/// The final state of a relayed request, as its routing task saw it end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    Answered {
        agent_id: String,
        answer: StoredAnswer,
    },
    /// Delivered, or maybe: the agent may still post the answer.
    Awaited {
        agent_id: String,
        acknowledged: bool,
    },
    /// Refused or failed before any agent could have it: nothing to keep.
    NotRelayed,
}

impl Settled {
    pub fn of(result: &Result<RouteReply, RelayError>) -> Settled {
        match result {
            Ok(reply) => Settled::Answered {
                agent_id: reply.agent_id.clone(),
                answer: StoredAnswer::Envelope(reply.envelope.clone()),
            },
            Err(RelayError::AgentError {
                agent_id,
                refusal,
                message,
            }) => Settled::Answered {
                agent_id: agent_id.clone(),
                answer: StoredAnswer::Failed {
                    refusal: *refusal,
                    message: message.clone(),
                },
            },
            Err(RelayError::OutcomeUnknown {
                agent_id,
                acknowledged,
                ..
            }) => Settled::Awaited {
                agent_id: agent_id.clone(),
                acknowledged: *acknowledged,
            },
            Err(RelayError::ForwardLost {
                agent_id,
                acknowledged,
                ..
            }) => Settled::Awaited {
                agent_id: agent_id.clone().unwrap_or_default(),
                acknowledged: *acknowledged,
            },
            Err(_) => Settled::NotRelayed,
        }
    }
}

/// The record of one request, from before it is routed until its final
/// state is written. Owned by the request's routing task, not its caller.
pub struct Recording {
    outcomes: Arc<Outcomes>,
    tenant: String,
    request_id: String,
    /// Whether this request made the awaited record it starts with.
    opened: Opened,
}

/// The write of the awaited record: under way, or done with its result.
enum Opened {
    Writing(tokio::task::JoinHandle<Result<bool, StoreError>>),
    Done(Result<bool, StoreError>),
}

impl Recording {
    /// Starts writing the record as awaited (from an agent not known yet),
    /// so that an answer the agent posts after a broker crash is still
    /// admitted ([`Admission::Late`]). The routing task waits for the write
    /// ([`Recording::opened_within`]) before the request can reach an agent.
    pub fn begin(outcomes: &Arc<Outcomes>, tenant: &str, request_id: &str) -> Recording {
        let opened = tokio::spawn({
            let (outcomes, tenant, request_id) = (
                Arc::clone(outcomes),
                tenant.to_owned(),
                request_id.to_owned(),
            );
            async move { outcomes.expect(&tenant, &request_id, "", false).await }
        });
        Recording {
            outcomes: Arc::clone(outcomes),
            tenant: tenant.to_owned(),
            request_id: request_id.to_owned(),
            opened: Opened::Writing(opened),
        }
    }

    /// Waits, at most `bound`, until the awaited record is durable. Relaying
    /// only after it means a broker killed at any moment has a record for
    /// every request an agent may hold, so the agent's answer, posted when
    /// it reconnects, is kept. The bound keeps a slow or unreachable store
    /// (NATS lost, in cluster mode) from stopping write-back: past it the
    /// request goes on unrecorded, and says so in the log.
    pub async fn opened_within(&mut self, bound: std::time::Duration) -> bool {
        if let Opened::Writing(write) = &mut self.opened {
            match tokio::time::timeout(bound, write).await {
                Ok(joined) => {
                    self.opened = Opened::Done(joined.unwrap_or(Err(StoreError::Cancelled)))
                }
                Err(_) => return false,
            }
        }
        matches!(self.opened, Opened::Done(Ok(_)))
    }

    /// Writes the request's final state; for one no agent can have
    /// received, removes the awaited record if this request made it.
    pub async fn finish(self, settled: Settled) -> Result<(), StoreError> {
        let opened = match self.opened {
            Opened::Writing(write) => write.await.map_err(|_| StoreError::Cancelled)?,
            Opened::Done(result) => result,
        };
        let (tenant, request_id) = (&self.tenant, &self.request_id);
        match settled {
            Settled::NotRelayed if opened? => self.outcomes.forget(tenant, request_id).await,
            settled => self
                .outcomes
                .settle(tenant, request_id, settled)
                .await
                .map(drop),
        }
    }
}

/// The outcome records, with the retention applied, in whichever
/// [`OutcomeStore`] holds them.
pub struct Outcomes {
    store: Box<dyn OutcomeStore>,
    retention: Duration,
    pending: Arc<late::PendingWrites>,
    max_pending_per_tenant: u32,
}

impl Outcomes {
    /// The outcomes of one node, in its redb store: indexes a store written
    /// before the per-tenant index existed, and reads what every record
    /// holds into memory.
    pub fn new(store: Store, retention: Duration, limits: &Limits) -> Result<Outcomes, StoreError> {
        let local = LocalOutcomes::open(store, limits)?;
        Ok(Outcomes::with_store(Box::new(local), retention).with_limits(limits))
    }

    /// Outcomes kept in `store`, with the default limits.
    pub fn with_store(store: Box<dyn OutcomeStore>, retention: Duration) -> Outcomes {
        Outcomes {
            store,
            retention,
            pending: Arc::default(),
            max_pending_per_tenant: Limits::default().max_pending_outcome_writes_per_tenant,
        }
    }

    /// These outcomes with the limits' bound on late answers queued.
    pub fn with_limits(mut self, limits: &Limits) -> Outcomes {
        self.max_pending_per_tenant = limits.max_pending_outcome_writes_per_tenant;
        self
    }

    /// What the records say of an answer `agent_id` posts for `request_id`
    /// after its routing ended; no store work. In cluster mode the bucket
    /// decides: [`LateCheck::Unknown`].
    pub fn check_late(&self, tenant: &str, request_id: &str, agent_id: &str) -> LateCheck {
        self.store.check_late(tenant, request_id, agent_id)
    }

    /// A place for one of `tenant`'s late answers on its way to the store,
    /// if fewer than `max_pending_outcome_writes_per_tenant` are.
    pub fn reserve_late(&self, tenant: &str) -> Option<PendingSlot> {
        self.pending.reserve(tenant, self.max_pending_per_tenant)
    }

    fn expiry(&self) -> i64 {
        now_unix_ms().saturating_add(self.retention.as_millis() as i64)
    }

    /// Writes the final state of a relayed request, as its routing task
    /// saw it end. Whether a record was written.
    pub async fn settle(
        &self,
        tenant: &str,
        request_id: &str,
        settled: Settled,
    ) -> Result<bool, StoreError> {
        match settled {
            Settled::Answered { agent_id, answer } => {
                self.record(tenant, request_id, &agent_id, answer, Admission::Relayed)
                    .await
            }
            Settled::Awaited {
                agent_id,
                acknowledged,
            } => {
                self.expect(tenant, request_id, &agent_id, acknowledged)
                    .await
            }
            Settled::NotRelayed => Ok(false),
        }
    }

    /// Remembers that an answer is awaited from `agent_id` (empty: from
    /// an agent not known yet), unless an answer is kept. An empty agent
    /// only makes a record; a named one also updates an awaited record.
    /// Whether this call wrote.
    pub async fn expect(
        &self,
        tenant: &str,
        request_id: &str,
        agent_id: &str,
        acknowledged: bool,
    ) -> Result<bool, StoreError> {
        let record = OutcomeRecord {
            agent_id: agent_id.to_owned(),
            acknowledged,
            expires_unix_ms: self.expiry(),
            answer: None,
        };
        self.store.expect(tenant, request_id, record).await
    }

    /// Removes an awaited record (never an answer): for a request that, after
    /// all, no agent can have received, whose record this request made.
    pub async fn forget(&self, tenant: &str, request_id: &str) -> Result<(), StoreError> {
        self.store.forget(tenant, request_id).await
    }

    /// Keeps an agent's answer unless one is kept already (the first one is
    /// the agent's); a [`Admission::Late`] one only over an awaited record
    /// of that agent. Whether it was kept.
    pub async fn record(
        &self,
        tenant: &str,
        request_id: &str,
        agent_id: &str,
        answer: StoredAnswer,
        admission: Admission,
    ) -> Result<bool, StoreError> {
        let record = OutcomeRecord {
            agent_id: agent_id.to_owned(),
            acknowledged: true,
            expires_unix_ms: self.expiry(),
            answer: Some(answer),
        };
        self.store
            .record(tenant, request_id, record, admission)
            .await
    }

    /// What is known of a request's outcome; `None` also once it expired.
    pub async fn get(
        &self,
        tenant: &str,
        request_id: &str,
    ) -> Result<Option<OutcomeRecord>, StoreError> {
        let found = self.store.get(tenant, request_id).await?;
        Ok(found.filter(|o| o.expires_unix_ms > now_unix_ms()))
    }

    /// Deletes expired outcomes; how many. Nothing to do in cluster mode:
    /// the bucket's max age expires them.
    pub async fn purge(&self) -> Result<usize, StoreError> {
        self.store.purge().await
    }
}

#[cfg(test)]
mod tests;

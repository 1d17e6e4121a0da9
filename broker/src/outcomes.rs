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
//! came: ciphertext the broker cannot open. Kept in the store so a broker
//! restart does not lose it; in cluster mode in the cluster's outcomes bucket
//! instead ([`crate::cluster::kv::outcomes`]), so that any node can answer.
//!
//! Store work has threads of its own and per-tenant bounds, so one tenant's
//! agents cannot make another tenant wait: `writer` commits in groups and
//! bounds each tenant's bytes, `readers` serve GetOutcome, `known` answers
//! whether a late answer is awaited without touching the store, and `late`
//! bounds each tenant's late answers on their way to the writer.

mod index;
mod known;
mod late;
mod readers;
mod writer;

pub use known::LateCheck;
pub use late::PendingSlot;

use std::sync::Arc;
use std::time::Duration;

use redb::{ReadableTable, TableDefinition};

use crate::cluster::kv::outcomes::{self as cluster, OutcomeBucket};
use crate::config::Limits;
use crate::error::RelayError;
use crate::routing::RouteReply;
use crate::sessions::AgentAnswer;
use crate::store::{Store, StoreError, io};
use crate::time::now_unix_ms;

/// `tenant/request_id` -> encoded [`Outcome`]. Neither part contains '/'.
pub(crate) const OUTCOMES: TableDefinition<&str, &[u8]> = TableDefinition::new("outcomes");

/// Bounds the disk one tenant's requests fill. When a tenant has this many
/// records, a new one evicts the one that expires first: the newest outcomes
/// are the ones a portal still asks for. Only requests the broker relayed
/// make records (an agent cannot add its own, see [`Admission::Late`]), so
/// the tenant's rate limit bounds how fast they come. One node only: in
/// cluster mode counting a tenant's keys would take a scan of the bucket per
/// request, so there the bucket's max age (the retention) bounds what is
/// kept.
pub const MAX_OUTCOMES_PER_TENANT: usize = 10_000;

/// What the broker knows of a request's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Empty while the agent is not known yet (or was lost with a forward).
    pub agent_id: String,
    /// Whether the agent acknowledged the request: awaited records say
    /// what the portal was told with OUTCOME_UNKNOWN; an answer implies it.
    pub acknowledged: bool,
    pub expires_unix_ms: i64,
    /// `None` while the broker still waits for the agent to post it.
    pub answer: Option<StoredAnswer>,
}

/// `refusal` is the agent's `AgentError.refusal`, unchanged (0: none, and
/// in records written before it was kept: format 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredAnswer {
    Envelope(Vec<u8>),
    /// An agent's error as the agent posted it (a late answer).
    Error {
        code: i32,
        refusal: i32,
        message: String,
    },
    /// The agent's error as the portal was told it: the code is in the text
    /// already ([`RelayError::from_agent`]).
    Failed {
        refusal: i32,
        message: String,
    },
}

/// Who asks to record an answer, which decides whether it may make a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The routing task of a request the broker relayed.
    Relayed,
    /// An agent posting an answer nobody waits for any more: kept only over
    /// an awaited record naming that agent (or no agent), so that an agent
    /// cannot fill the store with replies to requests it was never given.
    Late,
}

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

impl From<AgentAnswer> for StoredAnswer {
    fn from(a: AgentAnswer) -> StoredAnswer {
        match a {
            AgentAnswer::Envelope(e) => StoredAnswer::Envelope(e),
            AgentAnswer::Error {
                code,
                refusal,
                message,
            } => StoredAnswer::Error {
                code,
                refusal,
                message,
            },
        }
    }
}

/// The format written. Format 1 (before refusals were kept) is still read:
/// its errors read with refusal 0.
const FORMAT: u8 = 2;
const FORMAT_1: u8 = 1;

impl Outcome {
    /// version (2), state (0 waiting, 1 envelope, 2 error, 3 failed), expiry
    /// (i64 BE), code (i32 BE; in state 0, 1 if the agent acknowledged the
    /// request), agent id length (u16 BE), agent id, then the envelope, or
    /// for states 2 and 3 the refusal (i32 BE) and the error message.
    /// Format 1 is the same without the refusal.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let (state, code, refusal, rest): (u8, i32, Option<i32>, &[u8]) = match &self.answer {
            None => (0, i32::from(self.acknowledged), None, &[]),
            Some(StoredAnswer::Envelope(e)) => (1, 0, None, e),
            Some(StoredAnswer::Error {
                code,
                refusal,
                message,
            }) => (2, *code, Some(*refusal), message.as_bytes()),
            Some(StoredAnswer::Failed { refusal, message }) => {
                (3, 0, Some(*refusal), message.as_bytes())
            }
        };
        let id = &self.agent_id.as_bytes()[..self.agent_id.len().min(u16::MAX as usize)];
        let mut out = Vec::with_capacity(21 + id.len() + rest.len());
        out.push(FORMAT);
        out.push(state);
        out.extend_from_slice(&self.expires_unix_ms.to_be_bytes());
        out.extend_from_slice(&code.to_be_bytes());
        out.extend_from_slice(&(id.len() as u16).to_be_bytes());
        out.extend_from_slice(id);
        if let Some(refusal) = refusal {
            out.extend_from_slice(&refusal.to_be_bytes());
        }
        out.extend_from_slice(rest);
        out
    }

    /// The expiry alone, without copying the answer (the same place in
    /// both formats).
    fn expiry_of(bytes: &[u8]) -> Option<i64> {
        Some(i64::from_be_bytes(*bytes.get(2..10)?.first_chunk::<8>()?))
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Outcome> {
        let (&[format, state], rest) = bytes.split_first_chunk::<2>()?;
        if format != FORMAT && format != FORMAT_1 {
            return None;
        }
        let (expires, rest) = rest.split_first_chunk::<8>()?;
        let (code, rest) = rest.split_first_chunk::<4>()?;
        let (len, rest) = rest.split_first_chunk::<2>()?;
        let len = u16::from_be_bytes(*len) as usize;
        let agent_id = String::from_utf8(rest.get(..len)?.to_vec()).ok()?;
        let rest = &rest[len..];
        // An error's refusal: after the agent id from format 2 on.
        let refused = |rest: &[u8]| -> Option<(i32, String)> {
            let (refusal, rest) = match format {
                FORMAT_1 => (0, rest),
                _ => {
                    let (refusal, rest) = rest.split_first_chunk::<4>()?;
                    (i32::from_be_bytes(*refusal), rest)
                }
            };
            Some((refusal, String::from_utf8_lossy(rest).into_owned()))
        };
        let answer = match state {
            0 => None,
            1 => Some(StoredAnswer::Envelope(rest.to_vec())),
            2 => {
                let (refusal, message) = refused(rest)?;
                Some(StoredAnswer::Error {
                    code: i32::from_be_bytes(*code),
                    refusal,
                    message,
                })
            }
            3 => {
                let (refusal, message) = refused(rest)?;
                Some(StoredAnswer::Failed { refusal, message })
            }
            _ => return None,
        };
        Some(Outcome {
            agent_id,
            acknowledged: answer.is_some() || i32::from_be_bytes(*code) != 0,
            expires_unix_ms: i64::from_be_bytes(*expires),
            answer,
        })
    }
}

fn key(tenant: &str, request_id: &str) -> String {
    format!("{tenant}/{request_id}")
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

/// The late-outcome table, with the retention applied.
pub struct Outcomes {
    backend: Backend,
    retention: Duration,
    pending: Arc<late::PendingWrites>,
    max_pending_per_tenant: u32,
}

enum Backend {
    /// The store; the thread that commits its writes in groups (dropped
    /// first: it finishes its commit before the readers go); the threads
    /// that read it; what its records hold, in memory.
    Local {
        writer: writer::Writer,
        readers: readers::Readers,
        known: Arc<known::Known>,
    },
    // Boxed: a bucket handle carries its stream's whole info.
    Cluster(Box<OutcomeBucket>),
}

impl Outcomes {
    /// Indexes a store written before the per-tenant index existed, and
    /// reads what every record holds into memory.
    pub fn new(store: Store, retention: Duration, limits: &Limits) -> Result<Outcomes, StoreError> {
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
        Ok(Outcomes {
            backend: Backend::Local {
                writer,
                readers: readers::Readers::start(store)?,
                known,
            },
            retention,
            pending: Arc::default(),
            max_pending_per_tenant: limits.max_pending_outcome_writes_per_tenant,
        })
    }

    /// Outcomes in the cluster's outcomes bucket, whose max age should be
    /// `retention` (see [`crate::cluster::kv::open_buckets`]).
    pub fn cluster(bucket: async_nats::jetstream::kv::Store, retention: Duration) -> Outcomes {
        Outcomes {
            backend: Backend::Cluster(Box::new(OutcomeBucket::new(bucket))),
            retention,
            pending: Arc::default(),
            max_pending_per_tenant: Limits::default().max_pending_outcome_writes_per_tenant,
        }
    }

    /// [`Outcomes::cluster`] with the limits' bound on late answers queued.
    pub fn with_limits(mut self, limits: &Limits) -> Outcomes {
        self.max_pending_per_tenant = limits.max_pending_outcome_writes_per_tenant;
        self
    }

    /// What the records say of an answer `agent_id` posts for `request_id`
    /// after its routing ended; no store work. In cluster mode the bucket
    /// decides: [`LateCheck::Unknown`].
    pub fn check_late(&self, tenant: &str, request_id: &str, agent_id: &str) -> LateCheck {
        match &self.backend {
            Backend::Local { known, .. } => known.check(tenant, request_id, agent_id),
            Backend::Cluster(_) => LateCheck::Unknown,
        }
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
        let record = Outcome {
            agent_id: agent_id.to_owned(),
            acknowledged,
            expires_unix_ms: self.expiry(),
            answer: None,
        };
        let writer = match &self.backend {
            Backend::Local { writer, .. } => writer,
            Backend::Cluster(bucket) => {
                let keys = cluster::keys(tenant, request_id);
                return Ok(bucket.expect(&keys, &record).await?);
            }
        };
        writer
            .run(writer::Op::Write {
                key: key(tenant, request_id),
                record,
                admission: Admission::Relayed,
            })
            .await
    }

    /// Removes an awaited record (never an answer): for a request that, after
    /// all, no agent can have received, whose record this request made.
    pub async fn forget(&self, tenant: &str, request_id: &str) -> Result<(), StoreError> {
        let writer = match &self.backend {
            Backend::Local { writer, .. } => writer,
            Backend::Cluster(bucket) => {
                return Ok(bucket.forget(&cluster::keys(tenant, request_id)).await?);
            }
        };
        writer
            .run(writer::Op::Forget {
                key: key(tenant, request_id),
            })
            .await
            .map(drop)
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
        let record = Outcome {
            agent_id: agent_id.to_owned(),
            acknowledged: true,
            expires_unix_ms: self.expiry(),
            answer: Some(answer),
        };
        let writer = match &self.backend {
            Backend::Local { writer, .. } => writer,
            Backend::Cluster(bucket) => {
                let keys = cluster::keys(tenant, request_id);
                if admission == Admission::Late {
                    // Two reads before a create: only an unsolicited reply
                    // pays for them, and the create still decides a race.
                    let awaited = bucket.get(&keys).await?;
                    if !awaited.is_some_and(|o| admits_late(&o, agent_id)) {
                        return Ok(false);
                    }
                }
                return Ok(bucket.record(&keys, &record).await?);
            }
        };
        writer
            .run(writer::Op::Write {
                key: key(tenant, request_id),
                record,
                admission,
            })
            .await
    }

    /// What is known of a request's outcome; `None` also once it expired.
    pub async fn get(&self, tenant: &str, request_id: &str) -> Result<Option<Outcome>, StoreError> {
        let readers = match &self.backend {
            Backend::Local { readers, .. } => readers,
            Backend::Cluster(bucket) => {
                let found = bucket.get(&cluster::keys(tenant, request_id)).await?;
                return Ok(found.filter(|o| o.expires_unix_ms > now_unix_ms()));
            }
        };
        let key = key(tenant, request_id);
        readers
            .run(move |store| {
                let tx = store.db().begin_read().map_err(io("read outcome"))?;
                let table = tx.open_table(OUTCOMES).map_err(io("read outcome"))?;
                let found = table
                    .get(key.as_str())
                    .map_err(io("read outcome"))?
                    .and_then(|v| Outcome::decode(v.value()));
                Ok(found.filter(|o| o.expires_unix_ms > now_unix_ms()))
            })
            .await
    }

    /// Deletes expired outcomes; how many. Nothing to do in cluster mode:
    /// the bucket's max age expires them.
    pub async fn purge(&self) -> Result<usize, StoreError> {
        let (readers, known) = match &self.backend {
            Backend::Local { readers, known, .. } => (readers, Arc::clone(known)),
            Backend::Cluster(_) => return Ok(0),
        };
        readers
            .run(move |store| {
                let now = now_unix_ms();
                let tx = store.db().begin_write().map_err(io("purge outcomes"))?;
                let removed = {
                    let mut table = tx.open_table(OUTCOMES).map_err(io("purge outcomes"))?;
                    let mut index = index::Index::open(&tx)?;
                    let mut gone = Vec::new();
                    for record in table.iter().map_err(io("purge outcomes"))? {
                        let (k, v) = record.map_err(io("purge outcomes"))?;
                        if Outcome::decode(v.value()).is_none_or(|o| o.expires_unix_ms <= now) {
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

/// Whether an answer `agent_id` posted late may replace `awaited`: only the
/// agent the request was given to, or any of the tenant's when the broker
/// lost track of which (a forward lost with its node).
fn admits_late(awaited: &Outcome, agent_id: &str) -> bool {
    awaited.answer.is_none() && (awaited.agent_id.is_empty() || awaited.agent_id == agent_id)
}

/// Evicts the tenant's record that expires first if it has the most kept;
/// the request id of the one evicted.
fn make_room(
    table: &mut redb::Table<&str, &[u8]>,
    index: &mut index::Index<'_>,
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
fn evict_first(
    table: &mut redb::Table<&str, &[u8]>,
    index: &mut index::Index<'_>,
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
fn evict(
    table: &mut redb::Table<&str, &[u8]>,
    index: &mut index::Index<'_>,
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

/// `tenant/request_id` back into its parts.
fn split(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or((key, ""))
}

#[cfg(test)]
mod tests;

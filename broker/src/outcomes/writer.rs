//! One thread owns the outcome records' write side and commits in groups:
//! the writes that arrive while a commit is on disk go into the next one
//! together. Every relayed request writes twice (its awaited record before
//! it is relayed, its final state after), and each redb commit costs an
//! fsync and a copy of the pages it touched; with 64 requests in flight,
//! one commit per write made the store the broker's bottleneck. A group
//! shares them, and no runtime thread waits on the disk.

use std::sync::{Arc, mpsc};

use redb::ReadableTable;
use tokio::sync::oneshot;
use tracing::warn;

use super::index::{self, Index};
use super::known::{self, Kept, Known};
use super::local::{evict, evict_first, make_room, split};
use crate::store::codec::{decode_outcome, encode_outcome};
use crate::store::{Admission, OUTCOMES, OutcomeRecord, Store, StoreError, io};
use crate::time::now_unix_ms;

/// The most writes one commit carries; more wait for the next.
const MAX_GROUP: usize = 256;

pub(super) enum Op {
    /// Insert or replace a record, by the rules of [`Admission`].
    Write {
        key: String,
        record: OutcomeRecord,
        admission: Admission,
    },
    /// Remove an awaited record (never an answer).
    Forget { key: String },
}

struct Job {
    op: Op,
    done: oneshot::Sender<Result<bool, StoreError>>,
}

/// The handle to the writer thread; the thread ends when it is dropped.
pub(super) struct Writer {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Writer {
    /// Waits for the commit under way and for the thread to let go of the
    /// store, so the same file can be opened again at once (a broker
    /// restarted in the same process).
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What the writer keeps in step with the records, and the bound it keeps.
pub(super) struct Bounds {
    pub known: Arc<Known>,
    /// [`crate::config::Limits::max_outcome_bytes_per_tenant`].
    pub max_bytes_per_tenant: u64,
}

impl Writer {
    pub(super) fn start(store: Store, bounds: Bounds) -> Result<Writer, StoreError> {
        let (jobs, queue) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("outcome-store".into())
            .spawn(move || commit_groups(&store, &bounds, &queue))
            .map_err(|e| StoreError::Io {
                operation: "start the outcome writer",
                source: Box::new(redb::Error::Io(e)),
            })?;
        Ok(Writer {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Applies `op` in the next group commit; whether it wrote (for a
    /// forget: whether it removed) a record.
    pub(super) async fn run(&self, op: Op) -> Result<bool, StoreError> {
        let (done, result) = oneshot::channel();
        self.jobs
            .as_ref()
            .ok_or(StoreError::Cancelled)?
            .send(Job { op, done })
            .map_err(|_| StoreError::Cancelled)?;
        result.await.map_err(|_| StoreError::Cancelled)?
    }
}

fn commit_groups(store: &Store, bounds: &Bounds, queue: &mpsc::Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        match commit(store, bounds, &group) {
            Ok(results) => {
                for (job, result) in group.into_iter().zip(results) {
                    let _ = job.done.send(Ok(result));
                }
            }
            // Nothing of the group was written: each caller hears so.
            Err(e) => {
                warn!(error = %e, writes = group.len(), "outcome store commit failed");
                // The group's changes were noted as they were made.
                if let Err(e) = bounds.known.reload(store) {
                    warn!(error = %e, "cannot re-read the outcome records after a failed commit");
                }
                let text = e.to_string();
                for job in group {
                    let _ = job.done.send(Err(StoreError::Io {
                        operation: "commit outcomes",
                        source: text.clone().into(),
                    }));
                }
            }
        }
    }
}

/// One transaction for the whole group, applied in arrival order.
fn commit(store: &Store, bounds: &Bounds, group: &[Job]) -> Result<Vec<bool>, StoreError> {
    let now = now_unix_ms();
    let tx = store.db().begin_write().map_err(io("write outcomes"))?;
    let results = {
        let mut table = tx.open_table(OUTCOMES).map_err(io("write outcomes"))?;
        let mut index = Index::open(&tx)?;
        let mut results = Vec::with_capacity(group.len());
        for job in group {
            results.push(match &job.op {
                Op::Write {
                    key,
                    record,
                    admission,
                } => write(&mut table, &mut index, bounds, now, key, record, *admission)?,
                Op::Forget { key } => forget(&mut table, &mut index, &bounds.known, key)?,
            });
        }
        results
    };
    tx.commit().map_err(io("commit outcomes"))?;
    Ok(results)
}

fn write(
    table: &mut redb::Table<&str, &[u8]>,
    index: &mut Index<'_>,
    bounds: &Bounds,
    now: i64,
    key: &str,
    record: &OutcomeRecord,
    admission: Admission,
) -> Result<bool, StoreError> {
    let (tenant, request_id) = split(key);
    let (stored, old_expiry) = match table.get(key).map_err(io("read outcome"))? {
        Some(v) => (decode_outcome(v.value()), Some(index::expiry_of(v.value()))),
        None => (None, None),
    };
    let existing = stored.filter(|o| o.expires_unix_ms > now);
    let write = match (&existing, admission) {
        // An answer is never replaced: the first one is the agent's.
        (
            Some(OutcomeRecord {
                answer: Some(_), ..
            }),
            _,
        ) => false,
        // Waiting already: an expect naming the agent says what the routing
        // found; one without changes nothing.
        (Some(awaited), _) if record.answer.is_none() => {
            !record.agent_id.is_empty()
                && (&awaited.agent_id, awaited.acknowledged)
                    != (&record.agent_id, record.acknowledged)
        }
        (Some(awaited), Admission::Late) => awaited.admits_late(&record.agent_id),
        (Some(_), Admission::Relayed) => true,
        // Nothing was relayed under this id (or it expired).
        (None, Admission::Late) => false,
        // Nothing awaited, or only an expired record: a new one.
        (None, Admission::Relayed) => {
            if old_expiry.is_none()
                && let Some(evicted) =
                    make_room(table, index, tenant, super::MAX_OUTCOMES_PER_TENANT)?
            {
                bounds.known.remove(tenant, &evicted);
            }
            true
        }
    };
    if write {
        let encoded = encode_outcome(record);
        table
            .insert(key, encoded.as_slice())
            .map_err(io("write outcome"))?;
        let expiry = index::indexed(record.expires_unix_ms);
        match old_expiry {
            Some(old) => index.replaced(tenant, request_id, old, expiry)?,
            None => index.added(tenant, request_id, expiry)?,
        }
        let kept = match record.answer {
            None => Kept::Awaited(record.agent_id.clone()),
            Some(_) => Kept::Answered,
        };
        bounds
            .known
            .set(tenant, request_id, kept, known::size(key, &encoded));
        // Over its bytes: the tenant's answers that expire first make room,
        // never the one just written (the newest is what a portal asks for).
        // Awaited records are a few bytes, and each one is what admits an
        // answer still to come: they go only when no answer is left.
        while bounds.known.bytes(tenant) > bounds.max_bytes_per_tenant {
            let answered = |id: &str| id != request_id && bounds.known.is_answered(tenant, id);
            let evicted = match index.first_where(tenant, answered)? {
                Some((id, expiry)) => Some(evict(table, index, tenant, &id, expiry)?),
                None => evict_first(table, index, tenant, request_id)?,
            };
            match evicted {
                Some(evicted) => bounds.known.remove(tenant, &evicted),
                None => break,
            }
        }
    }
    Ok(write)
}

fn forget(
    table: &mut redb::Table<&str, &[u8]>,
    index: &mut Index<'_>,
    known: &Known,
    key: &str,
) -> Result<bool, StoreError> {
    let awaited = table
        .get(key)
        .map_err(io("read outcome"))?
        .and_then(|v| decode_outcome(v.value()))
        .filter(|o| o.answer.is_none());
    let Some(awaited) = awaited else {
        return Ok(false);
    };
    table.remove(key).map_err(io("forget outcome"))?;
    let (tenant, request_id) = split(key);
    index.removed(tenant, request_id, index::indexed(awaited.expires_unix_ms))?;
    known.remove(tenant, request_id);
    Ok(true)
}

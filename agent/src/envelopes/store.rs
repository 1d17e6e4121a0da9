//! The durable replay store: every accepted envelope's enc and request id,
//! written to redb before the request is applied.
//!
//! One writer thread owns the write side and commits in groups: whatever
//! requests arrive while a commit is being made to disk go into the next
//! commit together, so many requests in flight share one fsync instead of
//! queueing for one each, and no runtime thread ever waits on the disk.
//! Each request still gets its answer only after its own entry is durable.

use std::path::Path;
use std::sync::Mutex;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use envelope::ReplayWindow;
use proto::time::unix_ms;
use redb::{Database, ReadableTable, TableDefinition};
use tokio::sync::oneshot;
use tracing::warn;

pub(super) const REPLAY: TableDefinition<&[u8], u64> = TableDefinition::new("replay");
/// (tenant, request id) -> Unix ms after which the id may be applied again.
pub(super) const REQUEST_IDS: TableDefinition<(&str, &str), u64> =
    TableDefinition::new("request_ids");

/// How long a request id is remembered. The enc window can end with the
/// envelope's validity because expiry refuses the envelope after that, but
/// nothing expires a request id: a portal retrying after "outcome unknown"
/// seals a fresh envelope, valid again, whenever it retries. A day covers
/// any retry a person or a portal's queue makes; the entries cost a redb row
/// each and are pruned once their day is over.
pub const REQUEST_ID_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// Expired rows are pruned from the store at most this often while running
/// (and at every start): the sweep walks the tables in a write transaction.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// The most entries one commit carries; more wait for the next.
const MAX_GROUP: usize = 256;

#[derive(Debug, thiserror::Error)]
#[error("replay store at {path}: {source}")]
pub struct ReplayStoreError {
    path: String,
    #[source]
    source: Box<redb::Error>,
}

/// Why an entry was not recorded.
pub(super) enum RecordError {
    /// The envelope was seen before.
    Replayed(envelope::OpenError),
    /// The request id was applied before.
    Duplicate,
    /// The store failed; nothing may be applied. (The writer logs why.)
    Store,
}

/// The replay window and the applied request ids, persisted in a redb file
/// so a restart keeps them. The window of encs is also held in memory; the
/// request ids are looked up in the store, inside the write transaction that
/// records them, so a day of them never has to fit in memory.
pub struct DurableReplay {
    window: Mutex<ReplayWindow>,
    writer: Option<mpsc::Sender<Entry>>,
    thread: Option<JoinHandle<()>>,
}

/// One entry for the writer, and where its result goes.
struct Entry {
    enc: [u8; 32],
    until: u64,
    id_until: u64,
    tenant: String,
    request_id: String,
    now: u64,
    done: oneshot::Sender<Result<(), RecordError>>,
}

impl DurableReplay {
    pub fn open(path: &Path) -> Result<DurableReplay, ReplayStoreError> {
        let err = |e: redb::Error| ReplayStoreError {
            path: path.display().to_string(),
            source: Box::new(e),
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err(redb::Error::Io(e)))?;
        }
        let db = Database::create(path).map_err(|e| err(e.into()))?;
        let mut window = ReplayWindow::new();
        let now = unix_ms();
        let tx = db.begin_write().map_err(|e| err(e.into()))?;
        {
            let mut table = tx.open_table(REPLAY).map_err(|e| err(e.into()))?;
            let mut expired = Vec::new();
            for entry in table.iter().map_err(|e| err(e.into()))? {
                let (enc, until) = entry.map_err(|e| err(e.into()))?;
                let until = until.value();
                match <[u8; 32]>::try_from(enc.value()) {
                    Ok(enc) if until > now => window.restore(enc, until),
                    _ => expired.push(enc.value().to_vec()),
                }
            }
            for enc in expired {
                table.remove(enc.as_slice()).map_err(|e| err(e.into()))?;
            }
            // Stores written before request ids were kept get the table here.
            let mut ids = tx.open_table(REQUEST_IDS).map_err(|e| err(e.into()))?;
            ids.retain(|_, until| until >= now)
                .map_err(|e| err(e.into()))?;
        }
        tx.commit().map_err(|e| err(e.into()))?;
        let (writer, entries) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("replay-store".into())
            .spawn(move || write_groups(db, entries, now))
            .map_err(|e| err(redb::Error::Io(e)))?;
        Ok(DurableReplay {
            window: Mutex::new(window),
            writer: Some(writer),
            thread: Some(thread),
        })
    }

    /// Refuses a seen envelope or a request id already applied; otherwise
    /// records both durably, in one transaction, before anything is applied.
    pub(super) async fn check_and_record(
        &self,
        enc: [u8; 32],
        until: u64,
        (tenant, request_id): (&str, &str),
        now: u64,
    ) -> Result<(), RecordError> {
        self.window
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .check_and_insert(enc, until, now)
            .map_err(RecordError::Replayed)?;
        // Kept for at least as long as the enc, so a replay refused today as
        // REPLAYED is not accepted tomorrow under its request id.
        let id_until = until.max(now + REQUEST_ID_RETENTION.as_millis() as u64);
        let (done, result) = oneshot::channel();
        let entry = Entry {
            enc,
            until,
            id_until,
            tenant: tenant.to_owned(),
            request_id: request_id.to_owned(),
            now,
            done,
        };
        let sent = self.writer.as_ref().map(|w| w.send(entry));
        let outcome = match sent {
            Some(Ok(())) => result.await.unwrap_or(Err(RecordError::Store)),
            _ => Err(RecordError::Store),
        };
        if let Err(RecordError::Store) = outcome {
            // Nothing was recorded: the same envelope, sent again, is not a
            // replay of anything applied.
            self.window
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .forget(&enc);
        }
        outcome
    }

    pub fn len(&self) -> usize {
        self.window.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for DurableReplay {
    /// Waits for the writer to finish its commit and close the file, so the
    /// store can be opened again at once (a restart in the same process).
    fn drop(&mut self) {
        drop(self.writer.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The writer thread: takes every entry waiting, records them in one
/// transaction, answers each.
fn write_groups(db: Database, entries: mpsc::Receiver<Entry>, opened_ms: u64) {
    let mut next_prune = opened_ms + PRUNE_EVERY.as_millis() as u64;
    while let Ok(first) = entries.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match entries.try_recv() {
                Ok(entry) => group.push(entry),
                Err(_) => break,
            }
        }
        let now = group.iter().map(|e| e.now).max().unwrap_or(0);
        let prune = now >= next_prune;
        match record_group(&db, &group, prune.then_some(now)) {
            Ok(results) => {
                if prune {
                    next_prune = now + PRUNE_EVERY.as_millis() as u64;
                }
                for (entry, result) in group.into_iter().zip(results) {
                    let _ = entry.done.send(result);
                }
            }
            // If the entries cannot be made durable, refuse them all rather
            // than risk applying a request a restart would let through again.
            Err(e) => {
                warn!(error = %e, entries = group.len(), "replay store write failed; refusing the requests");
                for entry in group {
                    let _ = entry.done.send(Err(RecordError::Store));
                }
            }
        }
    }
}

/// One transaction for the group. A request id seen before, in the store
/// or earlier in the same group, refuses that entry alone.
fn record_group(
    db: &Database,
    group: &[Entry],
    prune_at: Option<u64>,
) -> Result<Vec<Result<(), RecordError>>, Box<redb::Error>> {
    let tx = db.begin_write().map_err(boxed)?;
    let mut results = Vec::with_capacity(group.len());
    {
        let mut ids = tx.open_table(REQUEST_IDS).map_err(boxed)?;
        let mut replay = tx.open_table(REPLAY).map_err(boxed)?;
        for e in group {
            let key = (e.tenant.as_str(), e.request_id.as_str());
            if ids
                .get(key)
                .map_err(boxed)?
                .is_some_and(|seen| seen.value() >= e.now)
            {
                results.push(Err(RecordError::Duplicate));
                continue;
            }
            ids.insert(key, e.id_until).map_err(boxed)?;
            replay.insert(e.enc.as_slice(), e.until).map_err(boxed)?;
            results.push(Ok(()));
        }
        if let Some(now) = prune_at {
            ids.retain(|_, until| until >= now).map_err(boxed)?;
            replay.retain(|_, until| until >= now).map_err(boxed)?;
        }
    }
    tx.commit().map_err(boxed)?;
    Ok(results)
}

fn boxed(e: impl Into<redb::Error>) -> Box<redb::Error> {
    Box::new(e.into())
}

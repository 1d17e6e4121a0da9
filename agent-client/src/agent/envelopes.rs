//! The agent's envelope handler: opens each sealed request with the keyring,
//! refuses replays and request ids it already applied (both remembered
//! durably before anything is applied), hands the request to the directory
//! [`Operations`], and seals the outcome back to the portal. Refusals before
//! the envelope could be trusted go back unsealed, with the refusal's code,
//! since there is nobody to seal to.

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use envelope::body::outcome;
use envelope::{
    KeyPair, PublicKey, Recipient, ReplayWindow, ReplyBody, RequestBody, RequestHeader,
};
use proto::pb::AgentErrorCode;
use redb::{Database, ReadableTable, TableDefinition};
use tracing::{info, warn};
use zeroize::Zeroizing;

use super::eventlog::{Event, EventLog, Level, ids};
use super::handler::{HandlerError, IncomingRequest, RequestHandler};
use super::keyring::{Keyring, KeyringError};

const REPLAY: TableDefinition<&[u8], u64> = TableDefinition::new("replay");
/// (tenant, request id) -> Unix ms after which the id may be applied again.
const REQUEST_IDS: TableDefinition<(&str, &str), u64> = TableDefinition::new("request_ids");

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

/// What the agent does with an authenticated request.
#[tonic::async_trait]
pub trait Operations: Send + Sync + 'static {
    async fn apply(&self, header: &RequestHeader, body: &RequestBody) -> ReplyBody;
}

/// The operations of an agent with no directory configured: every request
/// gets a definite, sealed DIRECTORY_UNAVAILABLE.
pub struct NoDirectory;

#[tonic::async_trait]
impl Operations for NoDirectory {
    async fn apply(&self, _header: &RequestHeader, _body: &RequestBody) -> ReplyBody {
        ReplyBody {
            outcome: outcome::DIRECTORY_UNAVAILABLE,
            message: "no directory is configured on this agent".into(),
            details: Vec::new(),
        }
    }
}

/// Envelope validity settings.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub skew_allowance: Duration,
    pub max_lifetime: Duration,
}

impl Default for Validity {
    fn default() -> Self {
        Validity {
            skew_allowance: Duration::from_secs(60),
            max_lifetime: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("replay store at {path}: {source}")]
pub struct ReplayStoreError {
    path: String,
    #[source]
    source: Box<redb::Error>,
}

/// The replay window and the applied request ids, persisted in a redb file
/// so a restart keeps them. The window of encs is also held in memory; the
/// request ids are looked up in the store, inside the write transaction that
/// records them, so a day of them never has to fit in memory.
pub struct DurableReplay {
    db: Database,
    window: Mutex<ReplayWindow>,
    /// When the next sweep of expired rows is due (Unix ms).
    next_prune_ms: AtomicU64,
}

/// A request id already applied, or the store failing.
enum RecordError {
    Duplicate,
    Store(Box<redb::Error>),
}

impl<E: Into<redb::Error>> From<E> for RecordError {
    fn from(e: E) -> RecordError {
        RecordError::Store(Box::new(e.into()))
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
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
        let now = now_ms();
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
        Ok(DurableReplay {
            db,
            window: Mutex::new(window),
            next_prune_ms: AtomicU64::new(now + PRUNE_EVERY.as_millis() as u64),
        })
    }

    /// Refuses a seen envelope or a request id already applied; otherwise
    /// records both durably, in one transaction, before anything is applied.
    fn check_and_record(
        &self,
        enc: [u8; 32],
        until: u64,
        request: (&str, &str),
        now: u64,
    ) -> Result<(), HandlerError> {
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        window.check_and_insert(enc, until, now).map_err(|e| {
            warn!(code = e.code(), "envelope refused");
            refuse(e.code(), e)
        })?;
        // Kept for at least as long as the enc, so a replay refused today as
        // REPLAYED is not accepted tomorrow under its request id.
        let id_until = until.max(now + REQUEST_ID_RETENTION.as_millis() as u64);
        let prune = now >= self.next_prune_ms.load(Ordering::Relaxed);
        let write = || -> Result<(), RecordError> {
            let tx = self.db.begin_write()?;
            {
                let mut ids = tx.open_table(REQUEST_IDS)?;
                if ids.get(request)?.is_some_and(|seen| seen.value() >= now) {
                    return Err(RecordError::Duplicate);
                }
                ids.insert(request, id_until)?;
                let mut replay = tx.open_table(REPLAY)?;
                replay.insert(enc.as_slice(), until)?;
                if prune {
                    ids.retain(|_, until| until >= now)?;
                    replay.retain(|_, until| until >= now)?;
                }
            }
            tx.commit()?;
            Ok(())
        };
        match write() {
            Ok(()) => {
                if prune {
                    self.next_prune_ms
                        .store(now + PRUNE_EVERY.as_millis() as u64, Ordering::Relaxed);
                }
                Ok(())
            }
            Err(RecordError::Duplicate) => {
                let (_, request_id) = request;
                warn!(request_id, "request id already applied; refused");
                Err(refuse(
                    "DUPLICATE_REQUEST_ID",
                    format!(
                        "request id {request_id} was already applied by this agent; nothing was done"
                    ),
                ))
            }
            // If the entry cannot be made durable, refuse rather than risk
            // applying a request that a restart would let through again.
            Err(RecordError::Store(e)) => {
                warn!(error = %e, "replay store write failed; refusing the request");
                Err(HandlerError::new(
                    AgentErrorCode::Unavailable,
                    "REPLAY_STORE_UNAVAILABLE: the agent cannot record the request durably; nothing was applied",
                ))
            }
        }
    }

    pub fn len(&self) -> usize {
        self.window.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The keys to open envelopes with: a fixed set, or the keyring file,
/// re-read whenever it changes (after `rotate-key` or `import`).
pub enum KeySource {
    Fixed {
        keys: Vec<KeyPair>,
        portals: Vec<PublicKey>,
    },
    Keyring {
        path: PathBuf,
        password: Zeroizing<String>,
        loaded: RwLock<(Option<SystemTime>, Vec<KeyPair>, Vec<PublicKey>)>,
    },
}

impl KeySource {
    /// Opens the keyring now, so a wrong password fails at start.
    pub fn keyring(path: &Path, password: Zeroizing<String>) -> Result<KeySource, KeyringError> {
        let ring = Keyring::load(path, &password)?;
        let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        Ok(KeySource::Keyring {
            path: path.to_owned(),
            password,
            loaded: RwLock::new((mtime, ring.key_pairs(), ring.portals)),
        })
    }

    fn current(&self) -> (Vec<KeyPair>, Vec<PublicKey>) {
        match self {
            KeySource::Fixed { keys, portals } => (keys.clone(), portals.clone()),
            KeySource::Keyring {
                path,
                password,
                loaded,
            } => {
                let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
                {
                    let cached = loaded.read().unwrap_or_else(|e| e.into_inner());
                    if cached.0 == mtime {
                        return (cached.1.clone(), cached.2.clone());
                    }
                }
                match Keyring::load(path, password) {
                    Ok(ring) => {
                        info!(keys = ring.keys.len(), "keyring changed on disk; reloaded");
                        let mut cached = loaded.write().unwrap_or_else(|e| e.into_inner());
                        *cached = (mtime, ring.key_pairs(), ring.portals);
                        (cached.1.clone(), cached.2.clone())
                    }
                    Err(e) => {
                        warn!(error = %e, "keyring changed but cannot be read; keeping the loaded keys");
                        let cached = loaded.read().unwrap_or_else(|e| e.into_inner());
                        (cached.1.clone(), cached.2.clone())
                    }
                }
            }
        }
    }
}

/// Answers relayed requests by opening their envelopes.
pub struct EnvelopeHandler {
    pub tenant: String,
    pub keys: KeySource,
    pub validity: Validity,
    pub replay: Arc<DurableReplay>,
    pub operations: Arc<dyn Operations>,
    /// Where refused envelopes are recorded (event 32004).
    pub events: Option<Arc<EventLog>>,
}

fn refuse(code: &str, message: impl std::fmt::Display) -> HandlerError {
    HandlerError::new(AgentErrorCode::Rejected, format!("{code}: {message}"))
}

impl EnvelopeHandler {
    fn record_refusal(&self, request: &IncomingRequest, error: &HandlerError) {
        if let Some(events) = &self.events {
            let code = error.message.split(':').next().unwrap_or_default();
            let mut e = Event::new(ids::DECRYPTION_ERROR, Level::Error, error.message.clone());
            e.tenant = Some(self.tenant.clone());
            e.request_id = Some(request.request_id.clone());
            e.operation = Some(request.operation.as_str_name().to_owned());
            e.outcome = Some(code.to_owned());
            events.write(&e);
        }
    }
}

#[tonic::async_trait]
impl RequestHandler for EnvelopeHandler {
    async fn handle(&self, request: IncomingRequest) -> Result<Vec<u8>, HandlerError> {
        let result = self.open_and_apply(&request).await;
        if let Err(e) = &result {
            self.record_refusal(&request, e);
        }
        result
    }
}

impl EnvelopeHandler {
    async fn open_and_apply(&self, request: &IncomingRequest) -> Result<Vec<u8>, HandlerError> {
        let now = now_ms();
        let (keys, portals) = self.keys.current();
        let recipient = Recipient {
            tenant: &self.tenant,
            keys: &keys,
            trusted_portals: &portals,
            now_ms: now,
            skew_allowance_ms: self.validity.skew_allowance.as_millis() as u64,
            max_lifetime_ms: self.validity.max_lifetime.as_millis() as u64,
        };
        let skew = request.broker_clock_skew_ms;
        let opened = envelope::open_request(&request.envelope, &recipient).map_err(|e| {
            warn!(code = e.code(), error = %e, broker_clock_skew_ms = skew, "envelope refused");
            match e {
                // Skew is the usual cause of these: say what was measured.
                envelope::OpenError::Expired { .. } | envelope::OpenError::NotYetValid { .. } => refuse(
                    e.code(),
                    format!("{e}; this agent's clock is {skew} ms behind the broker's (negative: ahead)"),
                ),
                e => refuse(e.code(), e),
            }
        })?;
        // The sealed header is authoritative; a broker that relabels a
        // request is caught here.
        if opened.header.request_id != request.request_id {
            warn!("sealed request id differs from the relayed one");
            return Err(refuse(
                "REQUEST_ID_MISMATCH",
                "the relayed request id is not the sealed one",
            ));
        }
        if opened.header.operation as i32 != request.operation as i32 {
            warn!("sealed operation differs from the relayed one");
            return Err(refuse(
                "OPERATION_MISMATCH",
                "the relayed operation is not the sealed one",
            ));
        }
        let until = opened.header.expires_at_ms + self.validity.skew_allowance.as_millis() as u64;
        let request = (
            opened.header.tenant.as_str(),
            opened.header.request_id.as_str(),
        );
        self.replay
            .check_and_record(opened.enc, until, request, now)?;
        let reply = self.operations.apply(&opened.header, &opened.body).await;
        info!(outcome = reply.outcome, "request applied");
        opened
            .seal_reply(&reply, &mut envelope::os_rng())
            .map_err(|e| {
                HandlerError::new(
                    AgentErrorCode::Internal,
                    format!("cannot seal the reply: {e}"),
                )
            })
    }
}

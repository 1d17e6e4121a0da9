//! The agent's envelope handler: opens each sealed request with the keyring,
//! refuses replays (remembered durably before anything is applied), hands
//! the request to the directory [`Operations`], and seals the outcome back
//! to the portal. Refusals before the envelope could be trusted go back
//! unsealed, with the refusal's code, since there is nobody to seal to.

use std::path::{Path, PathBuf};
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

/// The replay window, persisted in a redb file so a restart keeps it.
pub struct DurableReplay {
    db: Database,
    window: Mutex<ReplayWindow>,
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
        }
        tx.commit().map_err(|e| err(e.into()))?;
        Ok(DurableReplay {
            db,
            window: Mutex::new(window),
        })
    }

    /// Refuses a seen envelope; otherwise records it durably first.
    fn check_and_record(&self, enc: [u8; 32], until: u64, now: u64) -> Result<(), HandlerError> {
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        window.check_and_insert(enc, until, now).map_err(|e| {
            warn!(code = e.code(), "envelope refused");
            refuse(e.code(), e)
        })?;
        let write = || -> Result<(), Box<redb::Error>> {
            let tx = self.db.begin_write().map_err(|e| Box::new(e.into()))?;
            {
                let mut table = tx.open_table(REPLAY).map_err(|e| Box::new(e.into()))?;
                table
                    .insert(enc.as_slice(), until)
                    .map_err(|e| Box::new(e.into()))?;
            }
            tx.commit().map_err(|e| Box::new(e.into()))?;
            Ok(())
        };
        // If the entry cannot be made durable, refuse rather than risk
        // applying a request that a restart would let through again.
        write().map_err(|e| {
            warn!(error = %e, "replay store write failed; refusing the request");
            HandlerError::new(
                AgentErrorCode::Unavailable,
                "REPLAY_STORE_UNAVAILABLE: the agent cannot record the request durably; nothing was applied",
            )
        })
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
        self.replay.check_and_record(opened.enc, until, now)?;
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

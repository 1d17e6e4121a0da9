//! The agent's envelope handler: opens each sealed request with the keyring,
//! refuses replays and request ids it already applied (both remembered
//! durably before anything is applied), hands the request to the directory
//! [`Operations`], and seals the outcome back to the portal. Refusals before
//! the envelope could be trusted go back unsealed, with the refusal's code,
//! since there is nobody to seal to.

mod store;
#[cfg(test)]
mod tests;

pub use store::{DurableReplay, REQUEST_ID_RETENTION, ReplayStoreError};
use store::{RecordError, now_ms};

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use envelope::body::outcome;
use envelope::{KeyPair, PublicKey, Recipient, ReplyBody, RequestBody, RequestHeader};
use proto::pb::AgentErrorCode;
use tracing::{info, warn};
use zeroize::Zeroizing;

use super::eventlog::{Event, EventLog, Level, ids};
use super::handler::{HandlerError, IncomingRequest, RequestHandler};
use super::keyring::{Keyring, KeyringError};

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
    /// This agent's id, as sent in Hello: envelopes addressed to another
    /// agent of the tenant are refused (WRONG_AGENT).
    pub agent_id: String,
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
            agent_id: &self.agent_id,
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
            .check_and_record(opened.enc, until, request, now)
            .await
            .map_err(|e| match e {
                RecordError::Replayed(e) => {
                    warn!(code = e.code(), "envelope refused");
                    refuse(e.code(), e)
                }
                RecordError::Duplicate => {
                    let (_, request_id) = request;
                    warn!(request_id, "request id already applied; refused");
                    refuse(
                        "DUPLICATE_REQUEST_ID",
                        format!("request id {request_id} was already applied by this agent; nothing was done"),
                    )
                }
                // Refused rather than risk applying a request that a restart
                // would let through again.
                RecordError::Store => HandlerError::new(
                    AgentErrorCode::Unavailable,
                    "REPLAY_STORE_UNAVAILABLE: the agent cannot record the request durably; nothing was applied",
                ),
            })?;
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

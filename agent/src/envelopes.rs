//! The agent's envelope handler: opens each sealed request with the keyring,
//! refuses replays and request ids it already applied (both remembered
//! durably before anything is applied), hands the request to the directory
//! [`Operations`], and seals the outcome back to the portal. Refusals before
//! the envelope could be decrypted go back unsealed, as an AgentError with
//! the typed refusal ([`refusal_of`]), since there is nobody to seal to.
//! Those after it was decrypted (its body, lifetime and times, then the
//! agent's own checks) are sealed to the portal like any reply, with
//! outcome NOT_APPLIED ([`not_applied`]).

mod store;
#[cfg(test)]
mod tests;

use store::RecordError;
pub use store::{DurableReplay, REQUEST_ID_RETENTION, ReplayStoreError};

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use envelope::body::outcome;
use envelope::{KeyPair, PublicKey, Recipient, ReplyBody, RequestBody, RequestHeader};
use proto::pb::{AgentErrorCode, EnvelopeRefusal};
use proto::time::unix_ms;
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

/// The relay.v1 refusal of each way opening an envelope fails. Exhaustive:
/// an `OpenError` added to the envelope crate fails to compile here until
/// it has its refusal.
pub fn refusal_of(error: &envelope::OpenError) -> EnvelopeRefusal {
    use envelope::OpenError as E;
    match error {
        E::Malformed(_) => EnvelopeRefusal::Malformed,
        E::UnsupportedVersion(_) => EnvelopeRefusal::UnsupportedVersion,
        E::WrongTenant { .. } => EnvelopeRefusal::WrongTenant,
        E::WrongAgent { .. } => EnvelopeRefusal::WrongAgent,
        E::UnknownKey(_) => EnvelopeRefusal::UnknownKey,
        E::UnknownSender(_) => EnvelopeRefusal::UnknownSender,
        E::AuthenticationFailed => EnvelopeRefusal::AuthenticationFailed,
        E::Expired { .. } => EnvelopeRefusal::Expired,
        E::NotYetValid { .. } => EnvelopeRefusal::NotYetValid,
        E::LifetimeTooLong { .. } => EnvelopeRefusal::LifetimeTooLong,
        E::Replayed => EnvelopeRefusal::Replayed,
        E::InvalidBody(_) => EnvelopeRefusal::InvalidBody,
    }
}

/// The sealed reply of a refusal made after the envelope was decrypted:
/// outcome NOT_APPLIED, detail `reason` = the refusal's name. It says the
/// agent did nothing with THIS delivery; nothing about other deliveries of
/// the same envelope.
pub fn not_applied(refusal: EnvelopeRefusal, message: impl Into<String>) -> ReplyBody {
    ReplyBody {
        outcome: outcome::NOT_APPLIED,
        message: message.into(),
        details: vec![("reason".to_owned(), refusal.name().to_owned())],
    }
}

impl EnvelopeHandler {
    /// Event 32004 for a refused envelope, sealed or not.
    fn record_refusal(&self, request: &IncomingRequest, refusal: &str, message: &str) {
        if let Some(events) = &self.events {
            let mut e = Event::new(ids::DECRYPTION_ERROR, Level::Error, message.to_owned());
            e.tenant = Some(self.tenant.clone());
            e.request_id = Some(request.request_id.clone());
            e.operation = Some(request.operation.as_str_name().to_owned());
            e.outcome = Some(refusal.to_owned());
            events.write(&e);
        }
    }

    /// Seals a refusal made after decryption to the portal, with `seal`
    /// (the opened request's, or the refused one's).
    fn seal_refusal(
        &self,
        request: &IncomingRequest,
        seal: impl FnOnce(&ReplyBody) -> Result<Vec<u8>, envelope::ReplyError>,
        refusal: EnvelopeRefusal,
        message: String,
    ) -> Result<Vec<u8>, HandlerError> {
        warn!(
            refusal = refusal.name(),
            "envelope refused; the refusal is sealed to the portal"
        );
        self.record_refusal(request, refusal.name(), &message);
        seal(&not_applied(refusal, message)).map_err(|e| {
            HandlerError::new(
                AgentErrorCode::Internal,
                format!("cannot seal the reply: {e}"),
            )
        })
    }
}

#[tonic::async_trait]
impl RequestHandler for EnvelopeHandler {
    async fn handle(&self, request: IncomingRequest) -> Result<Vec<u8>, HandlerError> {
        let result = self.open_and_apply(&request).await;
        if let Err(e) = &result {
            let name = e.refusal().map_or(e.code.as_str_name(), |r| r.name());
            self.record_refusal(&request, name, &e.message);
        }
        result
    }
}

impl EnvelopeHandler {
    async fn open_and_apply(&self, request: &IncomingRequest) -> Result<Vec<u8>, HandlerError> {
        let now = unix_ms();
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
        let opened = match envelope::open_request_sealing_refusals(&request.envelope, &recipient) {
            Ok(opened) => opened,
            Err(envelope::Refused { error: e, reply }) => {
                warn!(code = e.code(), error = %e, broker_clock_skew_ms = skew, "envelope refused");
                let message = match e {
                    // Skew is the usual cause of these: say what was measured.
                    envelope::OpenError::Expired { .. }
                    | envelope::OpenError::NotYetValid { .. } => format!(
                        "{e}; this agent's clock is {skew} ms behind the broker's (negative: ahead)"
                    ),
                    ref e => e.to_string(),
                };
                return match reply {
                    // Decrypted before the refusal: sealed to the portal.
                    Some(reply) => self.seal_refusal(
                        request,
                        |body| reply.seal_reply(body, &mut envelope::os_rng()),
                        refusal_of(&e),
                        format!("{message}; nothing was done with this delivery"),
                    ),
                    // Nobody to seal to.
                    None => Err(HandlerError::refused(refusal_of(&e), message)),
                };
            }
        };
        // The envelope is open: a refusal is sealed to the portal, so that
        // the broker can neither hide nor invent it. The sealed header is
        // authoritative; a broker that relabels a request is caught here.
        if opened.header.request_id != request.request_id {
            warn!("sealed request id differs from the relayed one");
            return self.seal_refusal(
                request,
                |body| opened.seal_reply(body, &mut envelope::os_rng()),
                EnvelopeRefusal::RequestIdMismatch,
                "the relayed request id is not the sealed one; nothing was done with this delivery"
                    .into(),
            );
        }
        if opened.header.operation as i32 != request.operation as i32 {
            warn!("sealed operation differs from the relayed one");
            return self.seal_refusal(
                request,
                |body| opened.seal_reply(body, &mut envelope::os_rng()),
                EnvelopeRefusal::OperationMismatch,
                "the relayed operation is not the sealed one; nothing was done with this delivery"
                    .into(),
            );
        }
        let until = opened.header.expires_at_ms + self.validity.skew_allowance.as_millis() as u64;
        let request_key = (
            opened.header.tenant.as_str(),
            opened.header.request_id.as_str(),
        );
        let recorded = self
            .replay
            .check_and_record(opened.enc, until, request_key, now)
            .await;
        let refused = match recorded {
            Ok(()) => None,
            Err(RecordError::Replayed(e)) => Some((
                refusal_of(&e),
                format!("{e}; nothing was done with this delivery"),
            )),
            Err(RecordError::Duplicate) => {
                let (_, request_id) = request_key;
                Some((
                    EnvelopeRefusal::DuplicateRequestId,
                    format!(
                        "request id {request_id} was already used with another envelope; \
                         nothing was done with this one"
                    ),
                ))
            }
            // Refused rather than risk applying a request that a restart
            // would let through again.
            Err(RecordError::Store) => Some((
                EnvelopeRefusal::ReplayStoreUnavailable,
                "the agent cannot record the request durably; nothing was done with this delivery"
                    .to_owned(),
            )),
        };
        if let Some((refusal, message)) = refused {
            let seal = |body: &ReplyBody| opened.seal_reply(body, &mut envelope::os_rng());
            return self.seal_refusal(request, seal, refusal, message);
        }
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

//! What a reset portal calls: seal the user's request to the tenant's agents,
//! relay it, and open the sealed answer. The broker supplies the agents'
//! public keys, but the portal trusts only a key whose fingerprint its
//! administrator pinned (confirmed out of band with the on-prem
//! administrator) or one endorsed by a trusted key along the rotation chain.
//! A broker that substitutes a key is refused here, before anything is sealed.
//!
//! Each envelope is addressed to one agent of the tenant (its id is sealed
//! in the header, and every other agent refuses it), chosen among the agents
//! online. When the broker says the addressee is offline or busy before
//! anything reached it, or that its outcome is unknown without an Ack, the
//! request is sealed again, under the same request id, to another agent.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envelope::endorse::verify_endorsement;
use envelope::{
    Fingerprint, KeyId, KeyPair, PendingReply, PreparedSeal, PublicKey, ReplyBody, RequestBody,
    RequestHeader,
};
use proto::pb::{self, Operation};
use proto::time::unix_ms;

use crate::error::{ClientError, EnvelopeRefusal};
use crate::portal_client::PortalClient;

/// How long a sealed request stays valid by default.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum SealedError {
    #[error(transparent)]
    Relay(#[from] ClientError),
    #[error("the tenant has no registered agent key: run `writeback-agent init` on-prem")]
    NoAgentKey,
    #[error(
        "none of the agent keys the broker offers is trusted (key ids {offered}): \
         their fingerprints are not pinned and no trusted key endorses them; \
         the broker may be substituting keys"
    )]
    KeyNotTrusted { offered: String },
    #[error("cannot seal the request: {0}")]
    Seal(#[from] envelope::SealError),
    /// The broker says the agent answered with an AgentError (reason
    /// AGENT_ERROR): an unsealed refusal, the broker's word only.
    /// `refusal` is the `refusal` ErrorInfo entry, typed (`None`: not an
    /// envelope refusal, or one this release does not know). Refusals the
    /// agent makes after decrypting the envelope are not errors: they are
    /// sealed answers with outcome NOT_APPLIED ([`Answer::not_applied`]).
    #[error("the agent refused the envelope, the broker says: {message}")]
    Refused {
        refusal: Option<EnvelopeRefusal>,
        message: String,
    },
    #[error("the reply could not be opened: {0}")]
    Reply(#[from] envelope::ReplyError),
    #[error(
        "this portal holds no pending request {0:?}: it never sealed it, its outcome was \
         already fetched, or the portal restarted and lost the key that opens the reply"
    )]
    NotPending(String),
}

/// Who vouches for what a call returned. The broker is not trusted (see
/// PROTOCOL.md "Threat model"): only what the agent sealed is authentic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provenance {
    /// Sealed by the agent and opened with this portal's key: every
    /// [`Answer`], including a NOT_APPLIED refusal.
    Sealed,
    /// Only the broker's word: every gRPC status (NO_AGENT_ONLINE,
    /// AGENT_ERROR and its refusal, OUTCOME_UNKNOWN, DEADLINE_EXCEEDED, ...),
    /// a failed call, and reply bytes that do not open. A compromised broker
    /// can send any of these after delivering the envelope, so none of them
    /// says that nothing was changed.
    Broker,
    /// Decided in this process before anything was sent (no trusted agent
    /// key, sealing failed, an invalid argument, no connection could be
    /// made) or about this process's own state (no pending request):
    /// nothing of this call reached an agent.
    Local,
}

impl SealedError {
    /// The broker's reason, when the failure came from the relay.
    pub fn reason(&self) -> Option<proto::Reason> {
        match self {
            SealedError::Relay(e) => e.reason(),
            SealedError::Refused { .. } => Some(proto::Reason::AgentError),
            _ => None,
        }
    }

    /// The agent's refusal as the broker reported it (AGENT_ERROR).
    pub fn refusal(&self) -> Option<EnvelopeRefusal> {
        match self {
            SealedError::Refused { refusal, .. } => *refusal,
            SealedError::Relay(e) => e.refusal(),
            _ => None,
        }
    }

    /// Who vouches for this error: never [`Provenance::Sealed`].
    pub fn provenance(&self) -> Provenance {
        match self {
            SealedError::Relay(ClientError::Relay { .. } | ClientError::Rpc(_))
            | SealedError::Refused { .. }
            | SealedError::Reply(_) => Provenance::Broker,
            SealedError::Relay(ClientError::Connect(_) | ClientError::InvalidArgument(_))
            | SealedError::NoAgentKey
            | SealedError::KeyNotTrusted { .. }
            | SealedError::Seal(_)
            | SealedError::NotPending(_) => Provenance::Local,
        }
    }

    /// Whether this error is only the broker's word: the request may have
    /// been delivered and applied whatever it says.
    pub fn is_broker_word(&self) -> bool {
        self.provenance() == Provenance::Broker
    }
}

/// How long a chosen agent key is reused by default.
pub const DEFAULT_KEY_CACHE: Duration = Duration::from_secs(60);
/// The bound on fetching the agent keys when the caller set no deadline.
const CONFIGURATION_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the key to open a reply is kept after OUTCOME_UNKNOWN.
pub const PENDING_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// Requests with an unknown outcome kept at once; the oldest goes first.
pub const MAX_PENDING: usize = 10_000;

/// Encapsulations kept ready by default (see [`SealedPortal::with_prepared`]).
pub const DEFAULT_PREPARED: usize = 2;

/// What opens the late reply of a request whose outcome was unknown.
struct Pending {
    since: Instant,
    agent_key_id: KeyId,
    reply: PendingReply,
}

/// A portal's sealing client for one tenant.
pub struct SealedPortal {
    client: PortalClient,
    portal_key: KeyPair,
    pinned: Vec<Fingerprint>,
    validity: Duration,
    /// The trusted agent key last chosen, and when: saves a broker round
    /// trip per request. Trust is decided when the key is fetched; agents
    /// keep a superseded key for days, so a minute-old choice stays valid.
    chosen_key: Mutex<Option<(Instant, PublicKey)>>,
    key_cache: Duration,
    /// The tenant's agents online when the key was last fetched (agent id,
    /// requests in flight then): who the envelopes are addressed to.
    agents: Mutex<Vec<(String, u32)>>,
    /// This portal's own submissions in progress, per addressee: added to
    /// the fetched load, so that a cached choice still spreads the work.
    addressed: Mutex<HashMap<String, u32>>,
    /// Takes turns between equally loaded agents.
    turn: AtomicUsize,
    /// Requests that ended in OUTCOME_UNKNOWN, by request id: the reply
    /// keys stay in memory only, so a later `outcome` call can open it.
    pending: Mutex<HashMap<String, Pending>>,
    /// HPKE encapsulations to the chosen agent key, made ahead of time.
    prepared: Arc<Prepared>,
}

/// The encapsulations made ahead: sealing a request costs two X25519
/// operations and an ephemeral key before the request is known, and only
/// an AEAD after. Made on a blocking thread when the portal is idle (no
/// submission in progress), they take that work off the path of the next
/// user waiting for a reset. A portal under sustained load is never idle
/// and seals on its callers' threads: a background thread then only
/// competes with them for the CPU (measured: -40% throughput on two cores).
/// Each is used once; they hold secrets only this portal has, zeroized when
/// dropped.
struct Prepared {
    target: usize,
    ready: Mutex<Vec<PreparedSeal>>,
    refilling: AtomicBool,
    /// Submissions in progress.
    busy: AtomicUsize,
}

/// A submission in progress; the last one to end refills the stock.
struct Busy<'a> {
    portal: &'a SealedPortal,
    agent_key: &'a PublicKey,
}

impl<'a> Busy<'a> {
    fn start(portal: &'a SealedPortal, agent_key: &'a PublicKey) -> Busy<'a> {
        portal.prepared.busy.fetch_add(1, Ordering::AcqRel);
        Busy { portal, agent_key }
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        let prepared = &self.portal.prepared;
        if prepared.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            prepared.refill(&self.portal.portal_key, self.agent_key);
        }
    }
}

impl Prepared {
    fn new(target: usize) -> Prepared {
        Prepared {
            target,
            ready: Mutex::new(Vec::new()),
            refilling: AtomicBool::new(false),
            busy: AtomicUsize::new(0),
        }
    }

    /// One made for `agent_key`, if any; those for another key are dropped
    /// (the chosen key changed).
    fn take(&self, agent_key: &PublicKey) -> Option<PreparedSeal> {
        let mut ready = self.ready.lock().unwrap_or_else(|e| e.into_inner());
        ready.retain(|p| p.agent_key_id() == agent_key.key_id());
        ready.pop()
    }

    /// Tops the stock up to its target on a blocking thread, unless that is
    /// already under way or there is no runtime to run it.
    fn refill(self: &Arc<Self>, portal_key: &KeyPair, agent_key: &PublicKey) {
        if self.target == 0 || self.refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.refilling.store(false, Ordering::Release);
            return;
        };
        let (this, portal_key, agent_key) =
            (Arc::clone(self), portal_key.clone(), agent_key.clone());
        runtime.spawn_blocking(move || {
            let mut rng = envelope::os_rng();
            loop {
                let have = this.ready.lock().unwrap_or_else(|e| e.into_inner()).len();
                if have >= this.target {
                    break;
                }
                match envelope::prepare_seal(&portal_key, &agent_key, &mut rng) {
                    Ok(p) => this.ready.lock().unwrap_or_else(|e| e.into_inner()).push(p),
                    Err(_) => break,
                }
            }
            this.refilling.store(false, Ordering::Release);
        });
    }
}

/// The agent's answer, opened: sealed by the agent, authentic
/// ([`Provenance::Sealed`]). `agent_id` is the broker's word.
#[derive(Debug, Clone)]
pub struct Answer {
    pub agent_id: String,
    pub agent_key_id: KeyId,
    pub reply: ReplyBody,
}

impl Answer {
    pub fn provenance(&self) -> Provenance {
        Provenance::Sealed
    }

    /// For outcome NOT_APPLIED: the refusal the agent sealed (its `reason`
    /// detail; UNSPECIFIED for a reason this release does not know). The
    /// agent did nothing with THIS delivery of the envelope; that says
    /// nothing about other deliveries of it (a broker can replay an envelope
    /// to obtain a genuine REPLAYED), so it does not mean nothing was
    /// changed.
    pub fn not_applied(&self) -> Option<EnvelopeRefusal> {
        (self.reply.typed_outcome() == Some(envelope::Outcome::NotApplied)).then(|| {
            self.reply
                .detail("reason")
                .and_then(EnvelopeRefusal::from_name)
                .unwrap_or(EnvelopeRefusal::Unspecified)
        })
    }
}

fn operation_of(op: Operation) -> u8 {
    op as i32 as u8
}

impl SealedPortal {
    /// `pinned` are the agent key fingerprints the portal administrator
    /// confirmed with the on-prem administrator.
    pub fn new(
        client: PortalClient,
        portal_key: KeyPair,
        pinned: Vec<Fingerprint>,
    ) -> SealedPortal {
        SealedPortal {
            client,
            portal_key,
            pinned,
            validity: DEFAULT_VALIDITY,
            pending: Mutex::new(HashMap::new()),
            chosen_key: Mutex::new(None),
            key_cache: DEFAULT_KEY_CACHE,
            agents: Mutex::new(Vec::new()),
            addressed: Mutex::new(HashMap::new()),
            turn: AtomicUsize::new(0),
            prepared: Arc::new(Prepared::new(DEFAULT_PREPARED)),
        }
    }

    /// How many encapsulations to keep ready for the chosen agent key
    /// (default [`DEFAULT_PREPARED`]); 0 seals everything on the caller's
    /// thread. They cost the same CPU either way; kept ready, a request
    /// waits only for the AEAD.
    pub fn with_prepared(mut self, count: usize) -> SealedPortal {
        self.prepared = Arc::new(Prepared::new(count));
        self
    }

    /// How long the chosen agent key is reused before the broker is asked
    /// again; `Duration::ZERO` asks before every request.
    pub fn with_key_cache(mut self, ttl: Duration) -> SealedPortal {
        self.key_cache = ttl;
        self
    }

    /// The trusted key to seal to: the cached choice while fresh, else the
    /// newest trusted key the broker offers now.
    async fn agent_key(&self, timeout: Option<Duration>) -> Result<(PublicKey, bool), SealedError> {
        if let Some((at, key)) = self
            .chosen_key
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            && at.elapsed() < self.key_cache
        {
            return Ok((key.clone(), true));
        }
        let wait = timeout.unwrap_or(CONFIGURATION_TIMEOUT);
        let config = tokio::time::timeout(wait, self.client.configuration())
            .await
            .map_err(|_| ClientError::Relay {
                reason: proto::Reason::DeadlineExceeded,
                message: "the broker did not return the agent keys in time".into(),
                metadata: HashMap::new(),
            })??;
        let key = self.trusted_key(&config.agent_keys)?;
        *self.agents.lock().unwrap_or_else(|e| e.into_inner()) = config
            .agents_online
            .iter()
            .map(|a| (a.agent_id.clone(), a.in_flight))
            .collect();
        self.prepared.refill(&self.portal_key, &key);
        *self.chosen_key.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), key.clone()));
        Ok((key, false))
    }

    fn forget_key(&self) {
        *self.chosen_key.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    pub fn with_validity(mut self, validity: Duration) -> SealedPortal {
        self.validity = validity;
        self
    }

    /// The newest agent key this portal can trust, from the broker's list.
    pub fn trusted_key(&self, offered: &[pb::AgentKey]) -> Result<PublicKey, SealedError> {
        if offered.is_empty() {
            return Err(SealedError::NoAgentKey);
        }
        let tenant = self.client.tenant();
        let portal_key_id = self.portal_key.public.key_id().to_hex();
        // What the broker sent, oldest first; a key whose id does not match
        // its bytes is ignored.
        let keys: Vec<(PublicKey, &pb::AgentKey)> = offered
            .iter()
            .filter_map(|offer| {
                let key = PublicKey::from_bytes(&offer.public_key).ok()?;
                (key.key_id().to_hex() == offer.key_id).then_some((key, offer))
            })
            .collect();
        let mut trusted: Vec<PublicKey> = keys
            .iter()
            .filter(|(k, _)| self.pinned.contains(&k.fingerprint()))
            .map(|(k, _)| k.clone())
            .collect();
        // Extend trust along endorsements until nothing changes.
        loop {
            let newly: Vec<PublicKey> = keys
                .iter()
                .filter(|(k, _)| !trusted.contains(k))
                .filter(|(k, offer)| {
                    offer.endorsements.iter().any(|e| {
                        e.portal_key_id == portal_key_id
                            && verify_endorsement(
                                &e.endorsement,
                                k,
                                &self.portal_key,
                                &trusted,
                                tenant,
                            )
                            .is_ok()
                    })
                })
                .map(|(k, _)| k.clone())
                .collect();
            if newly.is_empty() {
                break;
            }
            trusted.extend(newly);
        }
        // The broker lists keys oldest first: seal to the newest trusted one.
        keys.iter()
            .rev()
            .map(|(k, _)| k)
            .find(|k| trusted.contains(k))
            .cloned()
            .ok_or_else(|| SealedError::KeyNotTrusted {
                offered: offered
                    .iter()
                    .map(|k| k.key_id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Seals `body` for `operation`, relays it, and opens the agent's answer.
    pub async fn submit(
        &self,
        request_id: &str,
        operation: Operation,
        body: &RequestBody,
        timeout: Option<Duration>,
    ) -> Result<Answer, SealedError> {
        let (agent_key, cached) = self.agent_key(timeout).await?;
        match self
            .submit_to(request_id, operation, body, timeout, agent_key)
            .await
        {
            // The agents dropped the cached key (a rotation finished): ask
            // the broker again. Nothing was applied: the agent could not
            // open the envelope, so the same request id is still unused.
            Err(SealedError::Refused {
                refusal: Some(EnvelopeRefusal::UnknownKey),
                ..
            }) if cached => {
                self.forget_key();
                let (agent_key, _) = self.agent_key(timeout).await?;
                self.submit_to(request_id, operation, body, timeout, agent_key)
                    .await
            }
            other => other,
        }
    }

    /// Addresses the request to an agent online and submits it; when the
    /// broker says nothing reached that agent (offline, busy) or that it may
    /// have it without having acknowledged it, seals it again to another
    /// agent online, once per agent, within `timeout`.
    async fn submit_to(
        &self,
        request_id: &str,
        operation: Operation,
        body: &RequestBody,
        timeout: Option<Duration>,
        agent_key: PublicKey,
    ) -> Result<Answer, SealedError> {
        let started = Instant::now();
        let left = || match timeout {
            Some(t) => t.checked_sub(started.elapsed()).filter(|d| !d.is_zero()),
            None => Some(CONFIGURATION_TIMEOUT),
        };
        let mut agent_key = agent_key;
        let mut tried: Vec<String> = Vec::new();
        let mut last: Option<SealedError> = None;
        loop {
            let Some(remaining) = left() else {
                return Err(last.unwrap_or_else(|| deadline("no agent answered in time")));
            };
            let budget = timeout.map(|_| remaining);
            let agent_id = match self.addressee(&tried, budget).await {
                Ok(Some(id)) => id,
                // Every agent online was tried: the last answer stands.
                Ok(None) => {
                    return Err(last.unwrap_or_else(|| no_agent(self.client.tenant())));
                }
                Err(e) => return Err(last.unwrap_or(e)),
            };
            let mut result = self
                .submit_addressed(request_id, operation, body, budget, &agent_key, &agent_id)
                .await;
            // A re-seal can meet the broker still closing the previous
            // attempt under the same request id: wait for it.
            while !tried.is_empty()
                && matches!(&result, Err(e) if e.reason() == Some(proto::Reason::DuplicateRequestId))
                && left().is_some_and(|d| d > REUSE_PAUSE)
            {
                tokio::time::sleep(REUSE_PAUSE).await;
                let budget = timeout.and_then(|_| left());
                result = self
                    .submit_addressed(request_id, operation, body, budget, &agent_key, &agent_id)
                    .await;
            }
            match result {
                Err(e) if not_reached(&e) => {
                    tracing::debug!(%agent_id, error = %e, "the addressed agent did not get the request; sealing it to another agent");
                    tried.push(agent_id);
                    last = Some(e);
                    // Who is online now, and the key to seal to.
                    self.forget_key();
                    match self.agent_key(timeout.and_then(|_| left())).await {
                        Ok((key, _)) => agent_key = key,
                        Err(_) => return Err(last.expect("set above")),
                    }
                }
                Ok(answer) => {
                    if !tried.is_empty() {
                        // An earlier attempt's reply key is of no more use.
                        self.pending
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(request_id);
                    }
                    return Ok(answer);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The agent to address the request to: of the agents online not tried
    /// yet, the one with the fewest requests in flight (as the broker last
    /// said, plus this portal's own since), in turn among equals. A broker
    /// listing none it holds (a cluster node whose agents are all on other
    /// nodes) is asked to ping one.
    async fn addressee(
        &self,
        tried: &[String],
        timeout: Option<Duration>,
    ) -> Result<Option<String>, SealedError> {
        if let Some(id) = self.least_loaded(tried) {
            return Ok(Some(id));
        }
        let pong = self
            .client
            .ping(timeout.or(Some(CONFIGURATION_TIMEOUT)))
            .await?;
        if tried.contains(&pong.agent_id) || !envelope::valid_agent_id(&pong.agent_id) {
            return Ok(None);
        }
        // Remembered with the configuration, so that the next requests
        // need no ping of their own until it is fetched again.
        let mut agents = self.agents.lock().unwrap_or_else(|e| e.into_inner());
        if !agents.iter().any(|(id, _)| *id == pong.agent_id) {
            agents.push((pong.agent_id.clone(), 0));
        }
        Ok(Some(pong.agent_id))
    }

    fn least_loaded(&self, tried: &[String]) -> Option<String> {
        let agents = self.agents.lock().unwrap_or_else(|e| e.into_inner());
        let addressed = self.addressed.lock().unwrap_or_else(|e| e.into_inner());
        let load = |id: &String, in_flight: u32| {
            in_flight.saturating_add(addressed.get(id).copied().unwrap_or(0))
        };
        let open: Vec<(u32, &String)> = agents
            .iter()
            .filter(|(id, _)| !tried.contains(id) && envelope::valid_agent_id(id))
            .map(|(id, n)| (load(id, *n), id))
            .collect();
        let best = open.iter().map(|(n, _)| *n).min()?;
        let ties: Vec<&String> = open
            .iter()
            .filter(|(n, _)| *n == best)
            .map(|(_, id)| *id)
            .collect();
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        Some(ties[turn % ties.len()].clone())
    }

    async fn submit_addressed(
        &self,
        request_id: &str,
        operation: Operation,
        body: &RequestBody,
        timeout: Option<Duration>,
        agent_key: &PublicKey,
        agent_id: &str,
    ) -> Result<Answer, SealedError> {
        let _busy = Busy::start(self, agent_key);
        let _addressed = Addressed::start(self, agent_id);
        let (envelope, pending) = self.seal(request_id, operation, body, agent_key, agent_id)?;
        let submitted = match self
            .client
            .submit(request_id, operation, agent_id, envelope, timeout)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                if e.reason() == Some(proto::Reason::OutcomeUnknown) {
                    self.keep_pending(request_id, agent_key.key_id(), pending);
                }
                return Err(refused_or_relay(e));
            }
        };
        Ok(Answer {
            agent_id: submitted.agent_id,
            agent_key_id: agent_key.key_id(),
            reply: pending.open(&submitted.envelope)?,
        })
    }

    fn keep_pending(&self, request_id: &str, agent_key_id: KeyId, reply: PendingReply) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.retain(|_, p| p.since.elapsed() < PENDING_RETENTION);
        if pending.len() >= MAX_PENDING
            && let Some(oldest) = pending
                .iter()
                .min_by_key(|(_, p)| p.since)
                .map(|(id, _)| id.clone())
        {
            pending.remove(&oldest);
        }
        pending.insert(
            request_id.to_owned(),
            Pending {
                since: Instant::now(),
                agent_key_id,
                reply,
            },
        );
    }

    /// The outcome of a request whose `submit` ended in OUTCOME_UNKNOWN,
    /// opened. While the agent has not posted it the error's reason is
    /// OUTCOME_PENDING; ask again later.
    pub async fn outcome(&self, request_id: &str) -> Result<Answer, SealedError> {
        if !self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(request_id)
        {
            return Err(SealedError::NotPending(request_id.to_owned()));
        }
        let submitted = self
            .client
            .outcome(request_id)
            .await
            .map_err(refused_or_relay);
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let kept = pending
            .get(request_id)
            .ok_or_else(|| SealedError::NotPending(request_id.to_owned()))?;
        let answer = match submitted {
            Ok(s) => Answer {
                agent_id: s.agent_id,
                agent_key_id: kept.agent_key_id,
                reply: kept.reply.open(&s.envelope)?,
            },
            Err(e) if e.reason() == Some(proto::Reason::OutcomePending) => return Err(e),
            Err(e) => {
                // A definite answer (a refusal) ends the wait as well.
                if matches!(e, SealedError::Refused { .. }) {
                    pending.remove(request_id);
                }
                return Err(e);
            }
        };
        pending.remove(request_id);
        Ok(answer)
    }

    /// Seals without sending (for callers that relay themselves), addressed
    /// to `agent_id`: only that agent opens it, and the relay must name it
    /// (`SubmitRequest.agent_id`).
    pub fn seal(
        &self,
        request_id: &str,
        operation: Operation,
        body: &RequestBody,
        agent_key: &PublicKey,
        agent_id: &str,
    ) -> Result<(Vec<u8>, PendingReply), SealedError> {
        let now = unix_ms();
        let header = RequestHeader {
            tenant: self.client.tenant().to_owned(),
            agent_key_id: agent_key.key_id(),
            portal_key_id: self.portal_key.public.key_id(),
            agent_id: agent_id.to_owned(),
            request_id: request_id.to_owned(),
            operation: operation_of(operation),
            issued_at_ms: now,
            expires_at_ms: now + self.validity.as_millis() as u64,
        };
        let prepared = match self.prepared.take(agent_key) {
            Some(p) => p,
            None => envelope::prepare_seal(&self.portal_key, agent_key, &mut envelope::os_rng())?,
        };
        Ok(envelope::seal_prepared(prepared, &header, body)?)
    }
}

/// How long a re-seal waits for the broker to release the request id.
const REUSE_PAUSE: Duration = Duration::from_millis(25);

/// A submission to an agent in progress, counted against it.
struct Addressed<'a> {
    portal: &'a SealedPortal,
    agent_id: &'a str,
}

impl<'a> Addressed<'a> {
    fn start(portal: &'a SealedPortal, agent_id: &'a str) -> Addressed<'a> {
        *portal
            .addressed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(agent_id.to_owned())
            .or_default() += 1;
        Addressed { portal, agent_id }
    }
}

impl Drop for Addressed<'_> {
    fn drop(&mut self) {
        let mut addressed = self
            .portal
            .addressed
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = addressed.get_mut(self.agent_id) {
            *n -= 1;
            if *n == 0 {
                addressed.remove(self.agent_id);
            }
        }
    }
}

/// Whether the broker says the addressed agent did not get the request and
/// another may: it is not connected or has no room (nothing was sent), or
/// the outcome is unknown and the agent never acknowledged it. The
/// envelope names that agent, so no other would open it: it is sealed anew.
fn not_reached(e: &SealedError) -> bool {
    let SealedError::Relay(ClientError::Relay {
        reason, metadata, ..
    }) = e
    else {
        return false;
    };
    match reason {
        proto::Reason::NoAgentOnline | proto::Reason::AgentsBusy => true,
        proto::Reason::OutcomeUnknown => {
            metadata.get("acknowledged").map(String::as_str) == Some("false")
        }
        _ => false,
    }
}

fn deadline(message: &str) -> SealedError {
    SealedError::Relay(ClientError::Relay {
        reason: proto::Reason::DeadlineExceeded,
        message: message.into(),
        metadata: HashMap::new(),
    })
}

fn no_agent(tenant: &str) -> SealedError {
    SealedError::Relay(ClientError::Relay {
        reason: proto::Reason::NoAgentOnline,
        message: format!("no agent of tenant {tenant:?} is online"),
        metadata: HashMap::new(),
    })
}

fn refused_or_relay(e: ClientError) -> SealedError {
    let refusal = e.refusal();
    match e {
        ClientError::Relay {
            reason: proto::Reason::AgentError,
            message,
            ..
        } => SealedError::Refused { refusal, message },
        e => SealedError::Relay(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepared(target: usize) -> Arc<Prepared> {
        Arc::new(Prepared::new(target))
    }

    async fn refilled(p: &Arc<Prepared>, portal: &KeyPair, agent: &PublicKey) {
        p.refill(portal, agent);
        while p.refilling.load(Ordering::Acquire) {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn prepared_seals_are_for_the_chosen_key_and_used_once() {
        let mut rng = envelope::os_rng();
        let portal = KeyPair::generate(&mut rng);
        let (a, b) = (KeyPair::generate(&mut rng), KeyPair::generate(&mut rng));
        let p = prepared(3);
        assert!(p.take(&a.public).is_none());
        refilled(&p, &portal, &a.public).await;
        assert_eq!(p.ready.lock().unwrap().len(), 3);
        let one = p.take(&a.public).unwrap();
        assert_eq!(one.agent_key_id(), a.public.key_id());
        assert_eq!(p.ready.lock().unwrap().len(), 2, "taken, not copied");
        // The chosen key changed: the old ones are dropped, not used.
        assert!(p.take(&b.public).is_none());
        assert!(p.ready.lock().unwrap().is_empty());
        refilled(&p, &portal, &b.public).await;
        assert_eq!(p.take(&b.public).unwrap().agent_key_id(), b.public.key_id());
    }

    fn portal() -> SealedPortal {
        let channel = tonic::transport::Channel::from_static("http://127.0.0.1:9").connect_lazy();
        let credential = PortalClient::send_credential("t", sas::Key::generate().unwrap());
        let client = PortalClient::with_channel(channel, "t", credential);
        SealedPortal::new(
            client,
            KeyPair::generate(&mut envelope::os_rng()),
            Vec::new(),
        )
    }

    #[tokio::test]
    async fn the_addressee_is_the_least_loaded_agent_online_in_turn_among_equals() {
        let p = portal();
        assert_eq!(p.least_loaded(&[]), None, "nobody online");
        *p.agents.lock().unwrap() = vec![("a".into(), 3), ("b".into(), 0), ("c".into(), 0)];
        let picks: Vec<String> = (0..4).map(|_| p.least_loaded(&[]).unwrap()).collect();
        assert!(picks.iter().all(|id| id != "a"), "{picks:?}");
        assert!(picks.contains(&"b".to_owned()) && picks.contains(&"c".to_owned()));
        // This portal's own submissions count: b has two in flight now.
        let one = Addressed::start(&p, "b");
        let two = Addressed::start(&p, "b");
        assert_eq!(p.least_loaded(&[]).as_deref(), Some("c"));
        // An agent tried already is not chosen again.
        assert_eq!(p.least_loaded(&["c".into()]).as_deref(), Some("b"));
        assert_eq!(p.least_loaded(&["a".into(), "b".into(), "c".into()]), None);
        drop(one);
        drop(two);
        assert!(p.addressed.lock().unwrap().is_empty());
    }

    #[test]
    fn only_a_failure_before_the_agent_had_it_is_resealed() {
        let relay = |reason, metadata: &[(&str, &str)]| {
            SealedError::Relay(ClientError::Relay {
                reason,
                message: String::new(),
                metadata: metadata
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            })
        };
        use proto::Reason as R;
        assert!(not_reached(&relay(
            R::NoAgentOnline,
            &[("agent_id", "dc1")]
        )));
        assert!(not_reached(&relay(R::AgentsBusy, &[])));
        assert!(not_reached(&relay(
            R::OutcomeUnknown,
            &[("acknowledged", "false")]
        )));
        assert!(!not_reached(&relay(
            R::OutcomeUnknown,
            &[("acknowledged", "true")]
        )));
        assert!(!not_reached(&relay(
            R::OutcomeUnknown,
            &[("acknowledged", "unknown")]
        )));
        assert!(!not_reached(&relay(R::AgentError, &[])));
        assert!(!not_reached(&relay(R::DeadlineExceeded, &[])));
    }

    #[tokio::test]
    async fn none_are_made_when_the_target_is_zero() {
        let mut rng = envelope::os_rng();
        let portal = KeyPair::generate(&mut rng);
        let agent = KeyPair::generate(&mut rng);
        let p = prepared(0);
        refilled(&p, &portal, &agent.public).await;
        assert!(p.take(&agent.public).is_none());
    }
}

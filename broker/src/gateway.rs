//! The agent-facing service: authenticates a session's Hello, registers the
//! session, and drives it (heartbeats, replies, token renewal, goodbye) until
//! it ends. One span per session carries tenant, agent and session ids.
//!
//! The session's rules are its `session::broker::BrokerSession` machine's;
//! this module is its tonic driver: it reads frames and sleeps until the
//! machine's next timer, answers what the machine asks of the broker (the
//! Hello's and RenewToken's checks, late answers against the outcome
//! store), and the outbound stream takes the machine's frames.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use proto::pb::agent_gateway_server::AgentGateway;
use proto::pb::{self, AgentFrame, BrokerFrame, GoodbyeReason};
use sas::Right;
use session::broker::{BrokerSession, End, Event, LateVerdict, Refusal, Tally};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::error::RelayError;
use crate::metrics::RefusalLabel;
use crate::outcomes::{Admission, LateCheck, PendingSlot};
use crate::sessions::{self, AgentAnswer, AgentSession};
use crate::state::State;
use crate::time::now_unix_ms;

pub struct Gateway {
    state: Arc<State>,
}

/// The machine's settings from the broker's.
fn machine_config(config: &crate::config::BrokerConfig) -> session::broker::Config {
    session::broker::Config {
        heartbeat_interval: config.heartbeat_interval,
        hello_timeout: config.hello_timeout,
        ack_timeout: config.ack_timeout,
        max_envelope_bytes: config.max_envelope_bytes,
        unsolicited_replies_per_minute: config.limits.unsolicited_replies_per_minute,
    }
}

/// Why a session never opened, as the portal-facing error the stream ends
/// with.
fn refusal_error(refusal: Refusal, hello_timeout: std::time::Duration) -> RelayError {
    match refusal {
        Refusal::HelloTimeout => RelayError::HelloTimeout(hello_timeout),
        Refusal::ProtocolViolation(message) => RelayError::ProtocolViolation(message),
        Refusal::Malformed(message) => {
            RelayError::ProtocolViolation(format!("unreadable Hello: {message}"))
        }
        Refusal::Refused => RelayError::ShuttingDown,
    }
}

impl Gateway {
    pub fn new(state: Arc<State>) -> Gateway {
        Gateway { state }
    }

    /// Runs the session's machine until it has a Hello (or gave up waiting
    /// for one), then checks it.
    async fn accept(
        &self,
        remote_addr: Option<std::net::SocketAddr>,
        inbound: &mut Streaming<AgentFrame>,
    ) -> Result<Arc<AgentSession>, RelayError> {
        let state = &self.state;
        if state.shutdown.is_cancelled() {
            return Err(RelayError::ShuttingDown);
        }
        let mut machine = BrokerSession::new(sessions::now(), machine_config(&state.config));
        let hello = loop {
            match machine.poll_event() {
                Some(Event::Hello(hello)) => break hello,
                Some(Event::Closed(End::NotOpened(refusal))) => {
                    return Err(refusal_error(refusal, state.config.hello_timeout));
                }
                Some(Event::Closed(End::StreamEnded)) => {
                    return Err(RelayError::ProtocolViolation(
                        "the session ended before Hello".into(),
                    ));
                }
                Some(_) => continue,
                None => {}
            }
            let wake = machine
                .poll_timeout()
                .map_or_else(tokio::time::Instant::now, tokio::time::Instant::from_std);
            match tokio::time::timeout_at(wake, inbound.message()).await {
                Err(_) => machine.handle_timeout(sessions::now()),
                Ok(Ok(Some(frame))) => machine.handle_frame(sessions::now(), frame),
                Ok(Ok(None)) => machine.stream_ended(sessions::now()),
                Ok(Err(status)) => machine.malformed(sessions::now(), status.message()),
            }
        };
        if !proto::names::is_valid_agent_id(&hello.agent_id) {
            return Err(RelayError::InvalidAgentId);
        }
        let call = crate::audit::Call {
            rpc: "relay.v1.AgentGateway/OpenSession",
            peer: remote_addr,
        };
        let token = (!hello.token.is_empty()).then_some(hello.token.as_str());
        let principal = state.audit.authorize(
            &state.authorizer,
            call,
            token,
            Some(&hello.tenant),
            &[Right::Listen],
        )?;
        let tenant = state.tenants.require(&hello.tenant)?;
        if tenant.revoked_agents.contains(&hello.agent_id) {
            let refused = RelayError::AgentRevoked(hello.agent_id);
            let actor = state.audit.actor(&principal, token);
            state
                .audit
                .refused(call, Some(&tenant.name), Some(&actor), &refused);
            return Err(refused);
        }
        // At most 64 characters, control characters escaped: the agent
        // chooses it, and it is logged and shown to operators.
        let version = crate::agent_text::printable(&hello.agent_version, 64);
        let welcome = pb::Welcome {
            session_id: String::new(),
            heartbeat_interval_ms: state.config.heartbeat_interval.as_millis() as u32,
            max_envelope_bytes: state.config.max_envelope_bytes as u32,
            broker_time_unix_ms: now_unix_ms(),
            token_expires_unix_ms: (principal.expiry_unix as i64).saturating_mul(1000),
            ack_timeout_ms: state.config.ack_timeout.as_millis() as u32,
            max_in_flight: state.config.limits.max_in_flight_per_agent,
        };
        let session = Arc::new(AgentSession::new(
            hello.tenant,
            hello.agent_id,
            version,
            remote_addr,
            principal.slot,
            principal.expiry_unix,
            machine,
            welcome,
        ));
        state.registry.register(Arc::clone(&session))?;
        Ok(session)
    }
}

#[tonic::async_trait]
impl AgentGateway for Gateway {
    type OpenSessionStream = SessionStream;

    async fn open_session(
        &self,
        request: Request<Streaming<AgentFrame>>,
    ) -> Result<Response<SessionStream>, Status> {
        let peer = request.remote_addr();
        let remote_addr = peer.map(|a| a.to_string()).unwrap_or_default();
        let mut inbound = request.into_inner();
        let session = match self.accept(peer, &mut inbound).await {
            Ok(accepted) => accepted,
            Err(err) => {
                self.state
                    .metrics
                    .session_refusals
                    .get_or_create(&RefusalLabel {
                        reason: err.reason().as_str(),
                    })
                    .inc();
                warn!(remote = %remote_addr, reason = %err.reason(), error = %err, "agent session refused");
                return Err(err.into());
            }
        };
        let span = info_span!(
            "agent_session",
            tenant = %session.tenant,
            agent_id = %session.agent_id,
            session_id = %session.session_id,
        );
        span.in_scope(|| {
            info!(remote = %remote_addr, version = %session.agent_version, "agent session accepted")
        });
        let stream = SessionStream {
            session: Arc::clone(&session),
        };
        tokio::spawn(drive(Arc::clone(&self.state), session, inbound).instrument(span));
        Ok(Response::new(stream))
    }

    async fn register_key(
        &self,
        request: Request<pb::RegisterKeyRequest>,
    ) -> Result<Response<pb::RegisterKeyReply>, Status> {
        crate::agent_keys::register(&self.state, request).await
    }

    async fn retire_key(
        &self,
        request: Request<pb::RetireKeyRequest>,
    ) -> Result<Response<pb::RetireKeyReply>, Status> {
        crate::agent_keys::retire(&self.state, request).await
    }
}

/// Drives a session's machine until it ends: the agent's frames, its
/// timers, the broker's shutdown, and the events only the broker can
/// decide (token renewal, late answers); then deregisters it.
async fn drive(state: Arc<State>, session: Arc<AgentSession>, mut inbound: Streaming<AgentFrame>) {
    let mut draining = false;
    'session: loop {
        let wake = session.poll_timeout();
        let timer = async {
            match wake {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = session.driver_woken() => {}
            // On shutdown the session takes no new requests but stays open
            // for the answers of those it holds; the server closes it once
            // they are answered or the grace period is over.
            _ = state.shutdown.cancelled(), if !draining => {
                draining = true;
                session.drain();
            }
            _ = timer => session.handle_timeout(),
            frame = inbound.message() => match frame {
                Ok(Some(frame)) => session.handle_frame(frame),
                Ok(None) => {
                    debug!("agent ended the session");
                    session.stream_ended();
                }
                Err(status) => {
                    if let Some((proto::Reason::MalformedMessage, _)) = proto::reason_of(&status) {
                        session.malformed(status.message());
                    } else {
                        debug!(code = ?status.code(), message = status.message(), "agent session broke");
                        session.stream_ended();
                    }
                }
            }
        }
        for event in session.take_events() {
            match event {
                Event::RenewToken(token) => renew(&state, &session, &token),
                Event::AgentDraining => info!(
                    in_flight = session.in_flight(),
                    "the agent is draining: no new requests for it"
                ),
                Event::LateReply {
                    correlation_id,
                    request_id,
                    answer,
                } => {
                    let verdict = take_late_answer(&state, &session, &request_id, answer.into());
                    if let Some(tally) =
                        session.late_verdict(correlation_id, request_id.clone(), verdict)
                    {
                        log_unsolicited(&request_id, tally);
                    }
                }
                Event::Closed(end) => {
                    match end {
                        End::Goodbye {
                            reason: GoodbyeReason::UnsolicitedReplies,
                            message,
                        } => {
                            warn!(%message, "closing the session: too many replies for requests it was never given")
                        }
                        End::Goodbye {
                            reason: GoodbyeReason::Unresponsive,
                            message,
                        } => {
                            warn!(%message, "no Ack from the agent; closing its session as dead")
                        }
                        End::Goodbye { reason, message } => {
                            info!(reason = reason.as_str_name(), %message, "agent session closed by the broker")
                        }
                        _ => info!("agent session ended"),
                    }
                    break 'session;
                }
                // Requests' events go to their routing tasks; the Hello
                // came before the session existed.
                Event::Hello(_) | Event::Acknowledged(_) | Event::Ended { .. } => {}
            }
        }
    }
    state.registry.deregister(&session);
    session.finish();
}

/// A RenewToken: checked like Hello's token (Listen right, same tenant).
fn renew(state: &State, session: &AgentSession, token: &str) {
    let call = crate::audit::Call {
        rpc: "relay.v1.AgentGateway/OpenSession/RenewToken",
        peer: session.remote_addr,
    };
    let token = (!token.is_empty()).then_some(token);
    match state.audit.authorize(
        &state.authorizer,
        call,
        token,
        Some(&session.tenant),
        &[Right::Listen],
    ) {
        Ok(p) => {
            session.renew(p.slot, p.expiry_unix);
            debug!(expiry_unix = p.expiry_unix, "session token renewed");
        }
        Err(e) => session.renewal_refused(format!("token renewal refused: {e}")),
    }
}

/// Logs unsolicited replies once a minute per session, with how many the
/// minute before had.
fn log_unsolicited(request_id: &str, tally: Tally) {
    if tally.count == 1 {
        warn!(%request_id, dropped_in_the_minute_before = tally.before.unwrap_or(0),
            "reply dropped: no request with this id is awaited from this agent (logged once a minute per session)");
    }
}

/// Why an answer nobody waits for was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LateRefusal {
    /// Never given to this agent, or no longer awaited (expired, or another
    /// agent's): counted against the session.
    Unsolicited,
    /// Answered already: a repeat of a reply whose Receipt was lost.
    Duplicate,
    /// The tenant's late answers on their way to the store are at their
    /// bound: not confirmed, so the agent posts it again later.
    TenantBusy,
}

impl LateRefusal {
    fn as_str(self) -> &'static str {
        match self {
            LateRefusal::Unsolicited => "unsolicited",
            LateRefusal::Duplicate => "duplicate",
            LateRefusal::TenantBusy => "tenant_busy",
        }
    }
}

/// An answer whose routing already ended (its request was given up at the
/// deadline, its session was declared dead, or the broker restarted): kept,
/// sealed, for GetOutcome if the request is awaited from this agent. The
/// checks cost no store work and come before anything is queued, so a
/// flood of replies nobody asked for is dropped as it arrives: no task, no
/// copy of the payload, no store write. Whether to confirm the reply with a
/// Receipt; the Goodbye when the session posted too many unsolicited ones.
fn take_late_answer(
    state: &Arc<State>,
    session: &Arc<AgentSession>,
    request_id: &str,
    answer: AgentAnswer,
) -> LateVerdict {
    let check = if !proto::names::is_valid_request_id(request_id) {
        LateCheck::NotAwaited
    } else if state
        .in_flight_ids
        .contains(&(session.tenant.clone(), request_id.to_owned()))
    {
        // Still being routed (its awaited record may not be written yet):
        // the routing task's record decides, once it ends.
        LateCheck::Awaited
    } else {
        state
            .outcomes
            .check_late(&session.tenant, request_id, &session.agent_id)
    };
    let slot = match check {
        LateCheck::Awaited | LateCheck::Unknown => state.outcomes.reserve_late(&session.tenant),
        LateCheck::Answered => {
            refused(state, LateRefusal::Duplicate);
            debug!(%request_id, "a repeated reply to a request already answered dropped");
            return LateVerdict::Duplicate;
        }
        LateCheck::NotAwaited => {
            refused(state, LateRefusal::Unsolicited);
            return LateVerdict::Unsolicited;
        }
    };
    let Some(slot) = slot else {
        refused(state, LateRefusal::TenantBusy);
        let tally = session
            .refused_busy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .note(sessions::now());
        if tally.count == 1 {
            warn!(%request_id, limit = state.config.limits.max_pending_outcome_writes_per_tenant,
                refused_in_the_minute_before = tally.before.unwrap_or(0),
                "late answer not taken: the tenant's late answers on their way to the store are at their bound; the agent posts it again (logged once a minute per session)");
        }
        return LateVerdict::TenantBusy;
    };
    keep_late_answer(state, session, request_id, answer, slot);
    LateVerdict::Taken
}

fn refused(state: &State, why: LateRefusal) {
    state
        .metrics
        .replies_refused
        .get_or_create(&RefusalLabel {
            reason: why.as_str(),
        })
        .inc();
}

/// Writes an admitted late answer; `slot` holds its place in the tenant's
/// bound until the write is done.
fn keep_late_answer(
    state: &Arc<State>,
    session: &Arc<AgentSession>,
    request_id: &str,
    answer: AgentAnswer,
    slot: PendingSlot,
) {
    let key = (session.tenant.clone(), request_id.to_owned());
    let state = Arc::clone(state);
    let session = Arc::clone(session);
    tokio::spawn(
        async move {
            let _slot = slot;
            // The routing task may be between giving up on the answer and
            // recording that it awaits one: its record is what admits this
            // answer, so wait for the task to end (by its deadline at most).
            let ended = async {
                loop {
                    let notified = state.request_ended.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    if !state.in_flight_ids.contains(&key) {
                        return;
                    }
                    notified.await;
                }
            };
            if tokio::time::timeout(state.live().max_deadline, ended)
                .await
                .is_err()
            {
                debug!(request_id = %key.1, "late outcome dropped: its request is still in flight");
                return;
            }
            let (tenant, request_id) = (&key.0, &key.1);
            match state
                .outcomes
                .record(tenant, request_id, &session.agent_id, answer.into(), Admission::Late)
                .await
            {
                Ok(true) => {
                    state.metrics.late_outcomes.inc();
                    info!(%request_id, "late outcome kept for GetOutcome");
                }
                // Known only now (cluster mode, or a race with the routing
                // task): counted against the session like one refused at once.
                Ok(false) => {
                    debug!(%request_id, "late outcome not kept: already known, or never awaited from this agent");
                    log_unsolicited(request_id, session.count_unsolicited());
                }
                Err(e) => warn!(%request_id, error = %e, "cannot keep a late outcome"),
            }
        }
        .in_current_span(),
    );
}

/// The broker-to-agent half of a session: the machine's frames as the
/// transport takes them, and the end of the stream once the session's
/// driver is done and its last frame (the Goodbye, if any) is taken.
pub struct SessionStream {
    session: Arc<AgentSession>,
}

impl Stream for SessionStream {
    type Item = Result<BrokerFrame, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.session
            .poll_outbound(cx.waker())
            .map(|frame| frame.map(Ok))
    }
}

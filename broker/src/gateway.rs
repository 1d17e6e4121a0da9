//! The agent-facing service: authenticates a session's Hello, registers the
//! session, and drives it (heartbeats, replies, token renewal, goodbye) until
//! it ends. One span per session carries tenant, agent and session ids.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use proto::pb::agent_frame::Frame as AgentFrameKind;
use proto::pb::agent_gateway_server::AgentGateway;
use proto::pb::{self, AgentFrame, BrokerFrame, GoodbyeReason, agent_reply, broker_frame};
use sas::Right;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_util::sync::WaitForCancellationFutureOwned;
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::error::RelayError;
use crate::metrics::RefusalLabel;
use crate::outcomes::{Admission, LateCheck, PendingSlot};
use crate::sessions::{AgentAnswer, AgentSession, OUTBOUND_QUEUE};
use crate::state::State;
use crate::time::{now_unix_ms, now_unix_secs};

pub struct Gateway {
    state: Arc<State>,
}

impl Gateway {
    pub fn new(state: Arc<State>) -> Gateway {
        Gateway { state }
    }

    async fn accept(
        &self,
        remote_addr: Option<std::net::SocketAddr>,
        inbound: &mut Streaming<AgentFrame>,
    ) -> Result<
        (
            Arc<AgentSession>,
            mpsc::Receiver<Result<BrokerFrame, Status>>,
        ),
        RelayError,
    > {
        let state = &self.state;
        if state.shutdown.is_cancelled() {
            return Err(RelayError::ShuttingDown);
        }
        let first = tokio::time::timeout(state.config.hello_timeout, inbound.message())
            .await
            .map_err(|_| RelayError::HelloTimeout(state.config.hello_timeout))?;
        let hello = match first {
            Ok(Some(AgentFrame {
                frame: Some(AgentFrameKind::Hello(hello)),
            })) => hello,
            Ok(Some(_)) => {
                return Err(RelayError::ProtocolViolation(
                    "the first frame of a session must be Hello".into(),
                ));
            }
            Ok(None) => {
                return Err(RelayError::ProtocolViolation(
                    "the session ended before Hello".into(),
                ));
            }
            Err(status) => {
                return Err(RelayError::ProtocolViolation(format!(
                    "unreadable Hello: {}",
                    status.message()
                )));
            }
        };
        if !proto::names::is_valid_agent_id(&hello.agent_id) {
            return Err(RelayError::InvalidAgentId);
        }
        let principal = state.authorizer.authorize(
            &hello.token,
            Some(&hello.tenant),
            &[Right::Listen],
            now_unix_secs(),
        )?;
        let tenant = state.tenants.require(&hello.tenant)?;
        if tenant.revoked_agents.contains(&hello.agent_id) {
            return Err(RelayError::AgentRevoked(hello.agent_id));
        }
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        // At most 64 characters, control characters escaped: the agent
        // chooses it, and it is logged and shown to operators.
        let version = crate::agent_text::printable(&hello.agent_version, 64);
        let session = Arc::new(AgentSession::new(
            hello.tenant,
            hello.agent_id,
            version,
            remote_addr,
            principal.slot,
            principal.expiry_unix,
            tx,
        ));
        let welcome = BrokerFrame {
            frame: Some(broker_frame::Frame::Welcome(pb::Welcome {
                session_id: session.session_id.clone(),
                heartbeat_interval_ms: state.config.heartbeat_interval.as_millis() as u32,
                max_envelope_bytes: state.config.max_envelope_bytes as u32,
                broker_time_unix_ms: now_unix_ms(),
                token_expires_unix_ms: (principal.expiry_unix as i64).saturating_mul(1000),
                ack_timeout_ms: state.config.ack_timeout.as_millis() as u32,
                max_in_flight: state.config.limits.max_in_flight_per_agent,
            })),
        };
        // The queue is fresh, so this cannot wait.
        let _ = session.outbound().try_send(Ok(welcome));
        state.registry.register(Arc::clone(&session))?;
        Ok((session, rx))
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
        let (session, rx) = match self.accept(peer, &mut inbound).await {
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
            rx,
            done: Box::pin(session.finished().clone().cancelled_owned()),
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

/// Runs a session until it ends, then deregisters it and says goodbye.
async fn drive(state: Arc<State>, session: Arc<AgentSession>, mut inbound: Streaming<AgentFrame>) {
    let interval = state.config.heartbeat_interval;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut draining = false;
    loop {
        tokio::select! {
            _ = session.closed().cancelled() => break,
            // On shutdown the session takes no new requests but stays open
            // for the answers of those it holds; the server closes it once
            // they are answered or the grace period is over.
            _ = state.shutdown.cancelled(), if !draining => {
                draining = true;
                session.drain();
                if session.in_flight() == 0 {
                    session.close(GoodbyeReason::ShuttingDown, "the broker is shutting down; reconnect");
                    break;
                }
            }
            _ = ticker.tick() => {
                if session.is_silent(interval) {
                    session.close(GoodbyeReason::HeartbeatTimeout, "no frame from the agent within three heartbeat intervals");
                    break;
                }
                if session.token_expiry_unix() <= now_unix_secs() {
                    session.close(GoodbyeReason::TokenExpired, "the session's token expired without renewal");
                    break;
                }
                let beat = BrokerFrame { frame: Some(broker_frame::Frame::Heartbeat(pb::Heartbeat { sent_unix_ms: now_unix_ms() })) };
                // A full queue already proves the session is busy, not idle.
                let _ = session.outbound().try_send(Ok(beat));
            }
            frame = inbound.message() => match frame {
                Ok(Some(frame)) => {
                    session.touch();
                    if let Err((reason, message)) = handle_frame(&state, &session, frame) {
                        session.close(reason, message);
                        break;
                    }
                }
                Ok(None) => { debug!("agent ended the session"); break; }
                Err(status) => {
                    if let Some((proto::Reason::MalformedMessage, _)) = proto::reason_of(&status) {
                        session.close(GoodbyeReason::MalformedFrame, status.message().to_owned());
                    } else {
                        debug!(code = ?status.code(), message = status.message(), "agent session broke");
                    }
                    break;
                }
            }
        }
    }
    state.registry.deregister(&session);
    session.abandon_pending();
    if let Some((reason, message)) = session.close_reason() {
        info!(reason = reason.as_str_name(), %message, "agent session closed by the broker");
        let goodbye = BrokerFrame {
            frame: Some(broker_frame::Frame::Goodbye(pb::Goodbye {
                reason: reason as i32,
                message,
            })),
        };
        let _ = session.outbound().try_send(Ok(goodbye));
    } else {
        info!("agent session ended");
    }
    session.closed().cancel();
    session.finished().cancel();
}

fn handle_frame(
    state: &Arc<State>,
    session: &Arc<AgentSession>,
    frame: AgentFrame,
) -> Result<(), (GoodbyeReason, String)> {
    match frame.frame {
        Some(AgentFrameKind::Heartbeat(_)) => Ok(()),
        Some(AgentFrameKind::Reply(reply)) => {
            let answer = match reply.result {
                Some(agent_reply::Result::Envelope(envelope)) => {
                    if envelope.len() > state.config.max_envelope_bytes {
                        AgentAnswer::Error {
                            code: pb::AgentErrorCode::Rejected as i32,
                            refusal: 0,
                            message: format!(
                                "the agent's reply of {} bytes exceeds the envelope limit of {}",
                                envelope.len(),
                                state.config.max_envelope_bytes
                            ),
                        }
                    } else {
                        AgentAnswer::Envelope(envelope)
                    }
                }
                Some(agent_reply::Result::Error(e)) => AgentAnswer::Error {
                    code: e.code,
                    refusal: e.refusal,
                    message: crate::agent_text::printable(&e.message, 512),
                },
                None => AgentAnswer::Error {
                    code: pb::AgentErrorCode::Unspecified as i32,
                    refusal: 0,
                    message: "the agent's reply carried neither an envelope nor an error".into(),
                },
            };
            let request_id = reply.request_id;
            let confirm = match session.complete(reply.correlation_id, answer) {
                Ok(()) => true,
                Err(answer) => take_late_answer(state, session, &request_id, answer)?,
            };
            // The agent keeps each reply until the broker confirms it, so
            // that one written into a silently dead connection is posted
            // again on the next session.
            if confirm {
                let receipt = BrokerFrame {
                    frame: Some(broker_frame::Frame::Receipt(pb::Receipt {
                        correlation_id: reply.correlation_id,
                        request_id,
                    })),
                };
                let _ = session.outbound().try_send(Ok(receipt));
            }
            Ok(())
        }
        Some(AgentFrameKind::Ack(ack)) => {
            session.acknowledge(ack.correlation_id);
            Ok(())
        }
        Some(AgentFrameKind::Drain(_)) => {
            info!(
                in_flight = session.in_flight(),
                "the agent is draining: no new requests for it"
            );
            session.drain();
            Ok(())
        }
        Some(AgentFrameKind::RenewToken(renew)) => {
            match state.authorizer.authorize(
                &renew.token,
                Some(&session.tenant),
                &[Right::Listen],
                now_unix_secs(),
            ) {
                Ok(p) => {
                    session.renew(p.slot, p.expiry_unix);
                    debug!(expiry_unix = p.expiry_unix, "session token renewed");
                    Ok(())
                }
                Err(e) => Err((
                    GoodbyeReason::RenewalRefused,
                    format!("token renewal refused: {e}"),
                )),
            }
        }
        Some(AgentFrameKind::Hello(_)) => Err((
            GoodbyeReason::ProtocolViolation,
            "Hello is only allowed as the first frame".into(),
        )),
        None => Err((
            GoodbyeReason::ProtocolViolation,
            "empty frame: no frame kind set".into(),
        )),
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
) -> Result<bool, (GoodbyeReason, String)> {
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
            return Ok(true);
        }
        LateCheck::NotAwaited => {
            refused(state, LateRefusal::Unsolicited);
            return unsolicited(state, session, request_id).map(|()| true);
        }
    };
    let Some(slot) = slot else {
        refused(state, LateRefusal::TenantBusy);
        if let (1, before) = session.refused_busy.note() {
            warn!(%request_id, limit = state.config.limits.max_pending_outcome_writes_per_tenant,
                refused_in_the_minute_before = before.unwrap_or(0),
                "late answer not taken: the tenant's late answers on their way to the store are at their bound; the agent posts it again (logged once a minute per session)");
        }
        return Ok(false);
    };
    keep_late_answer(state, session, request_id, answer, slot);
    Ok(true)
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

/// Counts an unsolicited reply against the session: logged at the first of
/// each minute, and past the limit the session is closed.
fn unsolicited(
    state: &State,
    session: &AgentSession,
    request_id: &str,
) -> Result<(), (GoodbyeReason, String)> {
    let (count, before) = session.unsolicited.note();
    let limit = state.config.limits.unsolicited_replies_per_minute;
    if count == 1 {
        warn!(%request_id, dropped_in_the_minute_before = before.unwrap_or(0),
            "reply dropped: no request with this id is awaited from this agent (logged once a minute per session)");
    }
    if count > limit {
        warn!(
            count,
            limit, "closing the session: too many replies for requests it was never given"
        );
        return Err((
            GoodbyeReason::UnsolicitedReplies,
            format!(
                "{count} replies within a minute for requests this agent was not given or that are no longer awaited (at most {limit})"
            ),
        ));
    }
    Ok(())
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
            if tokio::time::timeout(state.config.max_deadline, ended)
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
                    if let Err((reason, message)) = unsolicited(&state, &session, request_id) {
                        session.close(reason, message);
                    }
                }
                Err(e) => warn!(%request_id, error = %e, "cannot keep a late outcome"),
            }
        }
        .in_current_span(),
    );
}

/// The broker-to-agent half of a session: queued frames, and the end of the
/// stream once the session is closed and its queue (Goodbye included) drained.
pub struct SessionStream {
    rx: mpsc::Receiver<Result<BrokerFrame, Status>>,
    done: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl Stream for SessionStream {
    type Item = Result<BrokerFrame, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(item) => Poll::Ready(item),
            Poll::Pending => match self.done.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

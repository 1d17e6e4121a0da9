//! One agent session: connect, Hello, Welcome, then serve requests, send
//! heartbeats and renew the token until the session ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use proto::pb::agent_gateway_client::AgentGatewayClient;
use proto::pb::broker_frame::Frame as BrokerFrameKind;
use proto::pb::{self, AgentFrame, GoodbyeReason, Operation, agent_frame, agent_reply};
use proto::time::unix_ms_i64;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use super::handler::{IncomingRequest, RequestHandler};
use super::outbox::Outbox;
use super::{AgentEvent, EventSink};
use relay_client::connect::{BrokerEndpoint, ConnectError};
use relay_client::credential::Credential;
use relay_client::error::ClientError;

/// How long to wait for Welcome after Hello.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(15);
const OUTBOUND_QUEUE: usize = 64;
/// Generous bound on a message from the broker (envelopes are kilobytes).
const MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// Everything a session needs, shared across reconnects.
pub struct SessionContext {
    /// HTTP/2 keepalive interval and timeout.
    pub keepalive: (Duration, Duration),
    pub tenant: String,
    pub agent_id: String,
    pub agent_version: String,
    pub credential: Credential,
    pub token_lifetime: Duration,
    pub handler: Arc<dyn RequestHandler>,
    pub events: EventSink,
    /// Replies the broker has not confirmed, kept across sessions.
    pub outbox: Arc<Outbox>,
    /// On shutdown, how long acknowledged requests may take to finish.
    pub drain_grace: Duration,
}

/// How a session ended.
#[derive(Debug)]
pub enum SessionEnd {
    /// Shutdown was requested.
    Shutdown,
    /// The session was up and then ended.
    Ended {
        lasted: Duration,
        reason: String,
        goodbye: Option<GoodbyeReason>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("the broker refused the session: {0}")]
    Refused(ClientError),
    #[error("the broker did not welcome the session: {0}")]
    NoWelcome(String),
}

pub async fn run_session(
    ctx: &SessionContext,
    endpoint: &BrokerEndpoint,
    shutdown: &CancellationToken,
) -> Result<SessionEnd, SessionError> {
    let channel = tokio::select! {
        c = endpoint.connect_with_keepalive(ctx.keepalive.0, ctx.keepalive.1) => c?,
        _ = shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
    };
    let mut client = AgentGatewayClient::new(channel).max_decoding_message_size(MAX_MESSAGE);
    let (tx, rx) = mpsc::channel::<AgentFrame>(OUTBOUND_QUEUE);
    let hello = AgentFrame {
        frame: Some(agent_frame::Frame::Hello(pb::Hello {
            tenant: ctx.tenant.clone(),
            agent_id: ctx.agent_id.clone(),
            agent_version: ctx.agent_version.clone(),
            token: ctx.credential.mint(ctx.token_lifetime).expose().to_owned(),
        })),
    };
    // The queue is fresh, so this cannot wait.
    let _ = tx.try_send(hello);
    // The request stream ends as soon as the session is over, even while
    // handler tasks still hold senders: the broker then sees the end at once.
    let session_over = CancellationToken::new();
    let _end_stream = session_over.clone().drop_guard();
    let outbound = ReceiverStream::new(rx).take_until(session_over.clone().cancelled_owned());
    let opened = tokio::select! {
        r = tokio::time::timeout(WELCOME_TIMEOUT, client.open_session(outbound)) => r,
        _ = shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
    };
    let mut inbound = opened
        .map_err(|_| {
            SessionError::NoWelcome("the broker did not answer the session within 15s".into())
        })?
        .map_err(|s| SessionError::Refused(ClientError::from(s)))?
        .into_inner();
    let welcome = match tokio::time::timeout(WELCOME_TIMEOUT, inbound.message()).await {
        Ok(Ok(Some(pb::BrokerFrame {
            frame: Some(BrokerFrameKind::Welcome(w)),
        }))) => w,
        Ok(Err(status)) => return Err(SessionError::Refused(ClientError::from(status))),
        Ok(Ok(other)) => {
            return Err(SessionError::NoWelcome(format!(
                "expected Welcome, got {other:?}"
            )));
        }
        Err(_) => return Err(SessionError::NoWelcome("no Welcome within 15s".into())),
    };
    let started = Instant::now();
    let skew_ms = welcome.broker_time_unix_ms - unix_ms_i64();
    let span = info_span!("session", session_id = %welcome.session_id);
    span.in_scope(|| info!(broker = %endpoint.url, skew_ms, "session established"));
    ctx.events.emit(AgentEvent::Connected {
        session_id: welcome.session_id.clone(),
        skew_ms,
    });
    let ended = serve(ctx, &welcome, skew_ms, &mut inbound, tx, shutdown)
        .instrument(span)
        .await;
    Ok(match ended {
        None => SessionEnd::Shutdown,
        Some((reason, goodbye)) => SessionEnd::Ended {
            lasted: started.elapsed(),
            reason,
            goodbye,
        },
    })
}

async fn serve(
    ctx: &SessionContext,
    welcome: &pb::Welcome,
    skew_ms: i64,
    inbound: &mut tonic::Streaming<pb::BrokerFrame>,
    tx: mpsc::Sender<AgentFrame>,
    shutdown: &CancellationToken,
) -> Option<(String, Option<GoodbyeReason>)> {
    let interval = Duration::from_millis(u64::from(welcome.heartbeat_interval_ms.max(100)));
    let silence_limit = interval * 3;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut last_seen = Instant::now();
    let mut renew_at = Instant::now() + ctx.token_lifetime / 2;
    let session_id = welcome.session_id.as_str();
    // Replies of earlier sessions that the broker never confirmed.
    post_unconfirmed(ctx, session_id, &tx).await;
    let work = TaskTracker::new();
    let mut drain_until: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled(), if drain_until.is_none() => {
                // Tell the broker to send nothing new, finish what was
                // acknowledged, then end the session.
                info!(in_flight = work.len(), "draining: finishing acknowledged requests");
                let _ = tx.send(AgentFrame { frame: Some(agent_frame::Frame::Drain(pb::Drain {})) }).await;
                work.close();
                drain_until = Some(tokio::time::Instant::now() + ctx.drain_grace);
            }
            _ = work.wait(), if drain_until.is_some() => {
                info!("drained");
                return None;
            }
            _ = tokio::time::sleep_until(drain_until.unwrap_or_else(tokio::time::Instant::now)), if drain_until.is_some() => {
                warn!(in_flight = work.len(), "requests still running after the drain grace period; stopping anyway");
                return None;
            }
            _ = ctx.outbox.wait_orphaned() => post_unconfirmed(ctx, session_id, &tx).await,
            _ = ticker.tick() => {
                post_unconfirmed(ctx, session_id, &tx).await;
                if last_seen.elapsed() > silence_limit {
                    return Some((format!("no frame from the broker for {}", humantime::format_duration(silence_limit)), None));
                }
                let beat = AgentFrame { frame: Some(agent_frame::Frame::Heartbeat(pb::Heartbeat { sent_unix_ms: unix_ms_i64() })) };
                let _ = tx.try_send(beat);
                if Instant::now() >= renew_at {
                    let token = ctx.credential.mint(ctx.token_lifetime).expose().to_owned();
                    let renew = AgentFrame { frame: Some(agent_frame::Frame::RenewToken(pb::RenewToken { token })) };
                    if tx.send(renew).await.is_ok() {
                        debug!("session token renewed");
                        renew_at = Instant::now() + ctx.token_lifetime / 2;
                    }
                }
            }
            frame = inbound.message() => match frame {
                Ok(Some(frame)) => {
                    last_seen = Instant::now();
                    match frame.frame {
                        Some(BrokerFrameKind::Request(request)) if drain_until.is_some() => {
                            refuse_unavailable(request, &tx, "the agent is shutting down; the request was not applied");
                        }
                        Some(BrokerFrameKind::Request(request)) => dispatch(ctx, session_id, request, skew_ms, tx.clone(), &work),
                        Some(BrokerFrameKind::Receipt(receipt)) => ctx.outbox.confirmed(&receipt.request_id),
                        Some(BrokerFrameKind::Heartbeat(_)) => {}
                        Some(BrokerFrameKind::Goodbye(g)) => {
                            let reason = GoodbyeReason::try_from(g.reason).unwrap_or(GoodbyeReason::Unspecified);
                            warn!(reason = reason.as_str_name(), message = %g.message, "the broker closed the session");
                            return Some((format!("{}: {}", reason.as_str_name(), g.message), Some(reason)));
                        }
                        Some(BrokerFrameKind::Welcome(_)) | None => {
                            warn!("unexpected frame from the broker ignored");
                        }
                    }
                }
                Ok(None) => return Some(("the broker ended the session".into(), None)),
                Err(status) => return Some((format!("the session broke: {}", status.message()), None)),
            }
        }
    }
}

/// Posts the replies this session has not carried (late ones, as such).
async fn post_unconfirmed(ctx: &SessionContext, session_id: &str, tx: &mpsc::Sender<AgentFrame>) {
    for reply in ctx.outbox.to_post(session_id) {
        debug!(request_id = %reply.request_id, "posting an unconfirmed reply");
        let frame = AgentFrame {
            frame: Some(agent_frame::Frame::Reply(reply)),
        };
        if tx.send(frame).await.is_err() {
            break;
        }
    }
}

/// Refuses a request without acknowledging it: nothing was applied, so the
/// broker may give it to another agent.
fn refuse_unavailable(request: pb::RelayedRequest, tx: &mpsc::Sender<AgentFrame>, why: &str) {
    let reply = reply_frame(
        request.correlation_id,
        request.request_id,
        agent_reply::Result::Error(pb::AgentError {
            code: pb::AgentErrorCode::Unavailable as i32,
            message: why.to_owned(),
            refusal: pb::EnvelopeRefusal::Unspecified as i32,
        }),
    );
    let _ = tx.try_send(reply);
}

/// Answers a relayed request on its own task so that a slow directory never
/// holds up heartbeats or other requests. The Ack goes out before any work.
fn dispatch(
    ctx: &SessionContext,
    session_id: &str,
    request: pb::RelayedRequest,
    skew_ms: i64,
    tx: mpsc::Sender<AgentFrame>,
    work: &TaskTracker,
) {
    let correlation_id = request.correlation_id;
    let operation = Operation::try_from(request.operation).unwrap_or(Operation::Unspecified);
    let span = info_span!("request", request_id = %request.request_id, operation = operation.as_str_name());
    if operation == Operation::Ping {
        span.in_scope(|| debug!("ping answered"));
        let reply = reply_frame(
            correlation_id,
            request.request_id,
            agent_reply::Result::Envelope(Vec::new()),
        );
        let _ = tx.try_send(reply);
        return;
    }
    let handler = Arc::clone(&ctx.handler);
    let events = ctx.events.clone();
    let outbox = Arc::clone(&ctx.outbox);
    let incoming = IncomingRequest {
        request_id: request.request_id.clone(),
        operation,
        envelope: request.envelope.into(),
        deadline: Instant::now() + Duration::from_millis(u64::from(request.timeout_ms)),
        broker_clock_skew_ms: skew_ms,
    };
    let request_id = request.request_id;
    let session_id = session_id.to_owned();
    work.spawn(
        async move {
            let ack = AgentFrame {
                frame: Some(agent_frame::Frame::Ack(pb::Ack { correlation_id })),
            };
            if tx.send(ack).await.is_err() {
                // The session is gone before we confirmed anything: the
                // broker gives the request to another agent. Doing it here
                // too could apply it twice.
                warn!("the session ended before the request could be acknowledged; not applied");
                return;
            }
            let (result, refusal) = match handler.handle(incoming).await {
                Ok(envelope) => {
                    info!("request answered");
                    (agent_reply::Result::Envelope(envelope), None)
                }
                Err(e) => {
                    info!(
                        code = e.code.as_str_name(),
                        refusal = e.refusal().map(|r| r.name()),
                        error = %e.message,
                        "request refused"
                    );
                    let refusal = e.refusal();
                    let error = pb::AgentError {
                        code: e.code as i32,
                        message: e.message,
                        refusal: e.refusal as i32,
                    };
                    (agent_reply::Result::Error(error), refusal)
                }
            };
            events.emit(AgentEvent::Answered {
                request_id: request_id.clone(),
                refusal,
            });
            let reply = pb::AgentReply {
                correlation_id,
                request_id,
                result: Some(result),
            };
            outbox.keep(&reply, &session_id);
            let request_id = reply.request_id.clone();
            let frame = AgentFrame {
                frame: Some(agent_frame::Frame::Reply(reply)),
            };
            if tx.send(frame).await.is_err() {
                warn!(
                    "the session ended before the answer could be sent; the next session posts it"
                );
                outbox.orphaned(&request_id);
            }
        }
        .instrument(span),
    );
}

fn reply_frame(correlation_id: u64, request_id: String, result: agent_reply::Result) -> AgentFrame {
    AgentFrame {
        frame: Some(agent_frame::Frame::Reply(pb::AgentReply {
            correlation_id,
            result: Some(result),
            request_id,
        })),
    }
}

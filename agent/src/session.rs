//! One agent session: connect, Hello, Welcome, then serve requests, send
//! heartbeats and renew the token until the session ends.
//!
//! A thin driver of [`::session::agent::Agent`], which holds every rule of
//! the session (what to send when, what a frame means, when it is over and
//! what to do next): this module owns the connection, the clock, the token
//! and the handler tasks, and moves frames, time and answers between them
//! and the core.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ::session::agent::{Cause, End, Event, NextStep, Request};
use futures_util::StreamExt;
use proto::pb::agent_gateway_client::AgentGatewayClient;
use proto::pb::{self, AgentFrame, GoodbyeReason, agent_frame, agent_reply};
use proto::time::unix_ms_i64;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span, debug, info, info_span, warn};

use super::handler::{IncomingRequest, RequestHandler};
use super::outbox::Outbox;
use super::{AgentEvent, EventSink};
use relay_client::connect::{BrokerEndpoint, ConnectError};
use relay_client::credential::Credential;
use relay_client::error::ClientError;

/// How long to wait for the session's response headers; the core bounds
/// the wait for Welcome, from Hello, by the same.
const WELCOME_TIMEOUT: Duration = ::session::agent::WELCOME_TIMEOUT;
const OUTBOUND_QUEUE: usize = 64;
/// How long a drained session waits for the broker to end the stream
/// after its own end.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
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
    /// The session core, with the replies the broker has not confirmed,
    /// kept across sessions.
    pub outbox: Arc<Outbox>,
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
        /// What the core says to do next.
        next: NextStep,
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
    let hello = pb::Hello {
        tenant: ctx.tenant.clone(),
        agent_id: ctx.agent_id.clone(),
        agent_version: ctx.agent_version.clone(),
        token: ctx.credential.mint(ctx.token_lifetime).expose().to_owned(),
    };
    {
        let mut core = ctx.outbox.core();
        core.start(Instant::now(), hello);
        // The queue is fresh and the core sends only Hello before Welcome,
        // so this cannot wait.
        while let Some(frame) = core.poll_transmit() {
            let _ = tx.try_send(frame);
        }
    }
    // The request stream ends as soon as the session is over, even while
    // handler tasks still run: the broker then sees the end at once.
    let session_over = CancellationToken::new();
    let _end_stream = session_over.clone().drop_guard();
    let outbound = ReceiverStream::new(rx).take_until(session_over.clone().cancelled_owned());
    let opened = tokio::select! {
        r = tokio::time::timeout(WELCOME_TIMEOUT, client.open_session(outbound)) => r,
        _ = shutdown.cancelled() => {
            abandon(ctx, "shutdown");
            return Ok(SessionEnd::Shutdown);
        }
    };
    let inbound = match opened {
        Err(_) => {
            abandon(ctx, "no response headers");
            return Err(SessionError::NoWelcome(
                "the broker did not answer the session within 15s".into(),
            ));
        }
        Ok(Err(status)) => {
            abandon(ctx, "refused");
            return Err(SessionError::Refused(ClientError::from(status)));
        }
        Ok(Ok(response)) => response.into_inner(),
    };
    Driver {
        ctx,
        endpoint,
        tx,
        session: None,
    }
    .serve(inbound, shutdown)
    .await
}

/// Ends the core's session attempt when the driver gives up on it first, so
/// that nothing of it lingers into the next.
fn abandon(ctx: &SessionContext, why: &str) {
    let mut core = ctx.outbox.core();
    core.connection_lost(Instant::now(), why);
    while core.poll_transmit().is_some() {}
    while core.poll_event().is_some() {}
}

/// The open session as the driver sees it.
struct Welcomed {
    span: Span,
    skew_ms: i64,
}

struct Driver<'a> {
    ctx: &'a SessionContext,
    endpoint: &'a BrokerEndpoint,
    tx: mpsc::Sender<AgentFrame>,
    session: Option<Welcomed>,
}

impl Driver<'_> {
    async fn serve(
        mut self,
        mut inbound: tonic::Streaming<pb::BrokerFrame>,
        shutdown: &CancellationToken,
    ) -> Result<SessionEnd, SessionError> {
        let mut draining = false;
        loop {
            // Frames before events: an Apply follows its Ack.
            self.flush().await;
            if let Some(end) = self.handle_events() {
                // A drained session's last replies still go out.
                self.flush().await;
                if matches!(end.cause, Cause::Drained | Cause::DrainGraceOver { .. }) {
                    self.close_gracefully(&mut inbound).await;
                }
                return self.finish(end);
            }
            // What handling the events queued (a renewed token).
            self.flush().await;
            let timeout = self.ctx.outbox.core().poll_timeout();
            let sleep_until = timeout.map_or_else(tokio::time::Instant::now, |t| {
                tokio::time::Instant::from_std(t)
            });
            tokio::select! {
                _ = shutdown.cancelled(), if !draining => {
                    draining = true;
                    let mut core = self.ctx.outbox.core();
                    if core.is_open() {
                        // Tell the broker to send nothing new, finish what
                        // was acknowledged, then end the session.
                        self.in_span(|| info!(in_flight = core.in_flight(), "draining: finishing acknowledged requests"));
                    }
                    core.shutdown(Instant::now());
                }
                _ = tokio::time::sleep_until(sleep_until), if timeout.is_some() => {
                    self.ctx.outbox.core().handle_timeout(Instant::now());
                }
                _ = self.ctx.outbox.woken() => {}
                frame = inbound.message() => {
                    let mut core = self.ctx.outbox.core();
                    match frame {
                        Ok(Some(frame)) => core.handle_frame(Instant::now(), frame),
                        Ok(None) => core.connection_lost(Instant::now(), "the broker ended the session"),
                        Err(status) if self.session.is_none() => {
                            drop(core);
                            abandon(self.ctx, "refused");
                            return Err(SessionError::Refused(ClientError::from(status)));
                        }
                        Err(status) => core.connection_lost(
                            Instant::now(),
                            format!("the session broke: {}", status.message()),
                        ),
                    }
                }
            }
        }
    }

    /// Ends the request stream after the frames still queued (the last
    /// replies of a drained session), and waits a moment for the broker to
    /// end its side: ending the stream at once, or the process, could lose
    /// them.
    async fn close_gracefully(&mut self, inbound: &mut tonic::Streaming<pb::BrokerFrame>) {
        let (closed, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.tx, closed));
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            while let Ok(Some(_)) = inbound.message().await {}
        })
        .await;
    }

    fn in_span<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.session {
            Some(s) => s.span.in_scope(f),
            None => f(),
        }
    }

    /// Writes out what the core has to send. A Heartbeat is stamped with
    /// this host's clock here: the core has none.
    async fn flush(&mut self) {
        loop {
            let Some(mut frame) = self.ctx.outbox.core().poll_transmit() else {
                return;
            };
            if let Some(agent_frame::Frame::Heartbeat(beat)) = &mut frame.frame {
                beat.sent_unix_ms = unix_ms_i64();
            }
            if let Some(agent_frame::Frame::Reply(reply)) = &frame.frame
                && reply.correlation_id == 0
            {
                self.in_span(
                    || debug!(request_id = %reply.request_id, "posting an unconfirmed reply"),
                );
            }
            if self.tx.send(frame).await.is_err() {
                // The stream is gone: what the core queued after this
                // never leaves. Requests already read are still applied
                // and answered on the next session.
                self.ctx
                    .outbox
                    .core()
                    .connection_lost(Instant::now(), "the session's stream closed");
                return;
            }
        }
    }

    /// Acts on the core's events; returns the session's end, if it came.
    fn handle_events(&mut self) -> Option<End> {
        loop {
            let event = self.ctx.outbox.core().poll_event()?;
            match event {
                Event::Welcomed {
                    session_id,
                    broker_time_unix_ms,
                    ..
                } => {
                    let skew_ms = broker_time_unix_ms - unix_ms_i64();
                    let span = info_span!("session", session_id = %session_id);
                    span.in_scope(
                        || info!(broker = %self.endpoint.url, skew_ms, "session established"),
                    );
                    self.ctx.events.emit(AgentEvent::Connected {
                        session_id,
                        skew_ms,
                    });
                    self.session = Some(Welcomed { span, skew_ms });
                }
                Event::Apply(request) => self.dispatch(request),
                Event::RefusedDraining { request_id } => self.in_span(
                    || debug!(%request_id, "the agent is shutting down; request refused unapplied"),
                ),
                Event::Confirmed { .. } => {}
                Event::RenewToken => {
                    let token = self
                        .ctx
                        .credential
                        .mint(self.ctx.token_lifetime)
                        .expose()
                        .to_owned();
                    self.ctx.outbox.core().renewed_token(Instant::now(), token);
                    self.in_span(|| debug!("session token renewed"));
                }
                Event::Ignored(what) => {
                    self.in_span(|| warn!(what, "unexpected frame from the broker ignored"));
                }
                Event::SessionOver(end) => return Some(end),
            }
        }
    }

    /// Answers a relayed request on its own task so that a slow directory
    /// never holds up heartbeats or other requests. The core sent the Ack
    /// already; the answer goes back through it, whenever it comes.
    fn dispatch(&self, request: Request) {
        let skew_ms = self.session.as_ref().map_or(0, |s| s.skew_ms);
        let parent = self.session.as_ref().map(|s| s.span.clone());
        // Span fields are exported as attributes: ids and names only.
        let span = info_span!(
            parent: parent.as_ref().and_then(|s| s.id()),
            "agent.request",
            relay.request_id = %request.request_id,
            relay.operation = request.operation.as_str_name()
        );
        // In the trace, the broker's span is the parent (the session span
        // stays the parent in the logs).
        crate::telemetry::continue_trace(&span, Some(&request.traceparent));
        let handler = Arc::clone(&self.ctx.handler);
        let events = self.ctx.events.clone();
        let outbox = Arc::clone(&self.ctx.outbox);
        let incoming = IncomingRequest {
            request_id: request.request_id.clone(),
            operation: request.operation,
            envelope: request.envelope,
            deadline: Instant::now() + request.timeout,
            broker_clock_skew_ms: skew_ms,
        };
        let request_id = request.request_id;
        let ticket = request.ticket;
        tokio::spawn(
            async move {
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
                    request_id,
                    refusal,
                });
                outbox.reply(ticket, result);
            }
            .instrument(span),
        );
    }

    /// The session's end as `run` sees it.
    fn finish(self, end: End) -> Result<SessionEnd, SessionError> {
        let lasted = end.lasted.unwrap_or_default();
        let (reason, goodbye) = match end.cause {
            Cause::Shutdown => return Ok(SessionEnd::Shutdown),
            Cause::Drained => {
                self.in_span(|| info!("drained"));
                return Ok(SessionEnd::Shutdown);
            }
            Cause::DrainGraceOver { in_flight } => {
                self.in_span(|| {
                    warn!(
                        in_flight,
                        "requests still running after the drain grace period; stopping anyway"
                    )
                });
                return Ok(SessionEnd::Shutdown);
            }
            Cause::NoWelcome(why) => return Err(SessionError::NoWelcome(why)),
            Cause::Goodbye { reason, message } => {
                self.in_span(|| warn!(reason = reason.as_str_name(), message = %message, "the broker closed the session"));
                (
                    format!("{}: {}", reason.as_str_name(), message),
                    Some(reason),
                )
            }
            Cause::Silence(limit) => (
                format!(
                    "no frame from the broker for {}",
                    humantime::format_duration(limit)
                ),
                None,
            ),
            Cause::ConnectionLost(why) => (why, None),
        };
        Ok(SessionEnd::Ended {
            lasted,
            reason,
            goodbye,
            next: end.next,
        })
    }
}

//! Routing a portal request to an agent, with two-stage delivery.
//!
//! The [`Router`] trait is the seam a cluster backplane sits behind: the
//! portal-facing service only ever calls `route`, and [`Registry`] is the
//! single-node implementation that hands requests to sessions it holds.
//!
//! A sealed request is addressed to one agent (its envelope names it, and
//! every other agent refuses it: WRONG_AGENT), so it goes to that agent's
//! session only, never to another agent. A ping, which any agent may
//! answer, goes to the least loaded one.
//!
//! A request is *delivered* once its agent acknowledges it. Until it has
//! reached a session's queue the broker may try again (the session ended
//! first, or the agent said it is unavailable: another session of the same
//! agent, after a reconnection; for a ping, another agent). Once the agent
//! may have it (queued, and the session broke or sent no Ack within the ack
//! timeout, which also closes the session as dead), a sealed request is
//! never sent again: the portal is told OUTCOME_UNKNOWN and can ask for the
//! outcome later.
//!
//! The rules are in the `session` crate: each attempt's end is decided by
//! the session's machine (`session::broker::BrokerSession`), and what
//! follows it by `session::broker::Route`; here they meet the registry.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use proto::pb::{self, Operation};
use session::broker::{Answer, Next, RequestEnd, Route, Routed};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tonic::codegen::Bytes;
use tracing::{debug, warn};

use crate::error::RelayError;
use crate::sessions::{AgentSession, Pick, Registry, Waiter};

/// A request to route to an agent of `tenant`.
#[derive(Debug, Clone)]
pub struct RouteRequest {
    pub tenant: String,
    pub request_id: String,
    pub operation: Operation,
    /// The agent the envelope is addressed to: only its sessions are tried.
    /// `None` for a ping, which any agent of the tenant may answer.
    pub agent_id: Option<String>,
    /// Shared, not copied, between attempts on several sessions.
    pub envelope: Bytes,
    pub deadline: Instant,
    /// The deadline as the caller gave it, for error messages.
    pub budget: Duration,
    /// Told which agent has the request, and when it acknowledged it: a node
    /// serving a forwarded request passes this on to the forwarding node.
    pub progress: Option<Arc<watch::Sender<Delivery>>>,
}

/// How far a request got, as far as this node knows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivery {
    /// The agent whose session the request was last queued to.
    pub agent_id: Option<String>,
    pub acknowledged: bool,
}

impl RouteRequest {
    fn report(&self, delivery: Delivery) {
        if let Some(progress) = &self.progress {
            progress.send_replace(delivery);
        }
    }
}

/// An agent's answer and who gave it.
#[derive(Debug)]
pub struct RouteReply {
    pub agent_id: String,
    pub agent_version: String,
    pub envelope: Vec<u8>,
    /// Broker -> agent -> broker.
    pub rtt: Duration,
}

/// Delivers requests to a live agent of the right tenant.
#[tonic::async_trait]
pub trait Router: Send + Sync + 'static {
    async fn route(&self, request: RouteRequest) -> Result<RouteReply, RelayError>;
}

/// Releases the in-flight slot `pick` reserved however the attempt ends.
struct InFlightGuard<'a>(&'a AgentSession);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Registry {
    /// One attempt on one session: the session's machine
    /// ([`session::broker::BrokerSession`]) decides how it ends (answer,
    /// ack timeout, the caller's deadline, the session's end); this waits
    /// for that and reports the delivery as it goes.
    async fn attempt(&self, session: &AgentSession, request: &RouteRequest) -> RequestEnd {
        let _guard = InFlightGuard(session);
        let (ack_tx, mut ack_rx) = oneshot::channel();
        let (end_tx, end_rx) = oneshot::channel();
        let frame = pb::RelayedRequest {
            request_id: request.request_id.clone(),
            operation: request.operation as i32,
            envelope: request.envelope.clone(),
            // The request's span (relay.submit or relay.forwarded): the
            // agent's spans become its children.
            traceparent: crate::telemetry::traceparent_of(&tracing::Span::current()),
            ..Default::default()
        };
        let waiter = Waiter {
            ack: Some(ack_tx),
            end: end_tx,
        };
        if session
            .send_request(frame, request.deadline, waiter)
            .is_err()
        {
            // Closed or draining since the pick: nothing was sent.
            return RequestEnd::NotDelivered;
        }
        request.report(Delivery {
            agent_id: Some(session.agent_id.clone()),
            acknowledged: false,
        });
        tokio::pin!(end_rx);
        let mut acked = false;
        loop {
            tokio::select! {
                biased;
                end = &mut end_rx => {
                    // The machine ends every request it took; a dropped
                    // sender means the session itself is gone.
                    return end.unwrap_or(RequestEnd::Lost { acknowledged: acked });
                }
                ack = &mut ack_rx, if !acked => {
                    acked = true;
                    if ack.is_ok() {
                        request.report(Delivery {
                            agent_id: Some(session.agent_id.clone()),
                            acknowledged: true,
                        });
                    }
                }
            }
        }
    }
}

/// Counts an attempt's end for the session's load score: a failing agent
/// is chosen less.
fn score(session: &AgentSession, end: &RequestEnd) {
    match end {
        RequestEnd::Answered {
            answer: Answer::Envelope(_),
            ..
        } => session.note_success(),
        RequestEnd::Answered {
            answer: Answer::Error(e),
            ..
        } if e.code == pb::AgentErrorCode::Internal as i32
            || e.code == pb::AgentErrorCode::Unavailable as i32 =>
        {
            session.note_failure()
        }
        RequestEnd::Lost { .. } => session.note_failure(),
        _ => {}
    }
}

#[tonic::async_trait]
impl Router for Registry {
    async fn route(&self, request: RouteRequest) -> Result<RouteReply, RelayError> {
        let mut tried: Vec<String> = Vec::new();
        let addressee = request.agent_id.as_deref();
        let mut rules = Route::new(
            addressee.is_some(),
            request.operation == Operation::Ping,
            request.deadline.into_std(),
        );
        loop {
            let session = match self.pick(&request.tenant, &tried, addressee) {
                Pick::Session(s) => s,
                Pick::Busy => return Err(routed(&request, None, rules.nowhere(true))),
                Pick::None => return Err(routed(&request, None, rules.nowhere(false))),
            };
            let end = self.attempt(&session, &request).await;
            score(&session, &end);
            if let RequestEnd::Lost {
                acknowledged: false,
            } = end
            {
                warn!(agent_id = %session.agent_id, session_id = %session.session_id,
                    "a request sent to the agent ended without an Ack (the session ended or was unresponsive)");
            }
            let next = rules.attempt_ended(Instant::now().into_std(), &session.agent_id, end);
            match next {
                Next::Done(Routed::Answered {
                    answer: Answer::Envelope(envelope),
                    rtt,
                }) => {
                    return Ok(RouteReply {
                        agent_id: session.agent_id.clone(),
                        agent_version: session.agent_version.clone(),
                        envelope,
                        rtt,
                    });
                }
                Next::Done(other) => return Err(routed(&request, Some(&session), other)),
                Next::TryAnother => {
                    debug!(agent_id = %session.agent_id, "not delivered; trying another session");
                    self.metrics.retries.inc();
                    tried.push(session.session_id.clone());
                }
            }
        }
    }
}

/// The portal's answer for how routing ended without a reply envelope.
fn routed(request: &RouteRequest, session: Option<&AgentSession>, end: Routed) -> RelayError {
    let agent_id = || session.map(|s| s.agent_id.clone()).unwrap_or_default();
    match end {
        Routed::Answered {
            answer: Answer::Error(e),
            ..
        } => {
            // At most 512 characters, control characters escaped: the
            // agent chooses it, and a portal shows it.
            let message = crate::agent_text::printable(&e.message, 512);
            RelayError::from_agent(agent_id(), e.code, e.refusal, &message)
        }
        Routed::Answered { .. } => RelayError::ProtocolViolation("an envelope is no error".into()),
        Routed::OutcomeUnknown {
            agent_id,
            acknowledged,
        } => RelayError::OutcomeUnknown {
            request_id: request.request_id.clone(),
            agent_id,
            acknowledged,
        },
        Routed::DeadlineExceeded => RelayError::DeadlineExceeded(request.budget),
        Routed::AgentsBusy => RelayError::AgentsBusy(request.tenant.clone()),
        Routed::NoAgentOnline => match &request.agent_id {
            Some(agent_id) => RelayError::AgentOffline {
                tenant: request.tenant.clone(),
                agent_id: agent_id.clone(),
            },
            None => RelayError::NoAgentOnline(request.tenant.clone()),
        },
    }
}

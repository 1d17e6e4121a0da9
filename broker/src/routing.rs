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

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use proto::pb::{self, BrokerFrame, GoodbyeReason, Operation, broker_frame};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tonic::codegen::Bytes;
use tracing::{debug, warn};

use crate::error::RelayError;
use crate::sessions::{AgentAnswer, AgentSession, Pick, Registry, Waiter};

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

/// Removes a pending entry and the in-flight count however the wait ends.
struct PendingGuard<'a> {
    session: &'a AgentSession,
    correlation_id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.session
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.correlation_id);
        self.session.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How one attempt on one session ended.
enum Attempt {
    Done(Result<RouteReply, RelayError>),
    /// Not delivered: try another agent. `sent` when the request reached
    /// the session's queue (the agent may have it, without our knowing).
    Retry {
        sent: bool,
    },
}

impl Registry {
    async fn attempt(&self, session: &Arc<AgentSession>, request: &RouteRequest) -> Attempt {
        let correlation_id = session.next_correlation.fetch_add(1, Ordering::Relaxed);
        let (ack_tx, mut ack_rx) = oneshot::channel();
        let (answer_tx, mut answer_rx) = oneshot::channel();
        session
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                correlation_id,
                Waiter {
                    ack: Some(ack_tx),
                    answer: answer_tx,
                },
            );
        // `pick` reserved the in-flight slot; the guard releases it.
        let _guard = PendingGuard {
            session,
            correlation_id,
        };
        let deadline = request.deadline;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let frame = BrokerFrame {
            frame: Some(broker_frame::Frame::Request(pb::RelayedRequest {
                correlation_id,
                request_id: request.request_id.clone(),
                operation: request.operation as i32,
                envelope: request.envelope.clone(),
                timeout_ms: remaining.as_millis().min(u32::MAX as u128) as u32,
            })),
        };
        let sent_at = Instant::now();
        match tokio::time::timeout_at(deadline, session.outbound().send(Ok(frame))).await {
            // The session's queue stayed full: nothing left the broker.
            Err(_) => return Attempt::Done(Err(RelayError::DeadlineExceeded(request.budget))),
            // The session ended before the request was queued to it.
            Ok(Err(_)) => return Attempt::Retry { sent: false },
            Ok(Ok(())) => request.report(Delivery {
                agent_id: Some(session.agent_id.clone()),
                acknowledged: false,
            }),
        }
        let is_ping = request.operation == Operation::Ping;
        let ack_deadline = (sent_at + self.ack_timeout).min(deadline);
        let mut acked = false;
        let mut ack_open = true;
        let unknown = |acked: bool| {
            if is_ping {
                RelayError::DeadlineExceeded(request.budget)
            } else {
                RelayError::OutcomeUnknown {
                    request_id: request.request_id.clone(),
                    agent_id: session.agent_id.clone(),
                    acknowledged: acked,
                }
            }
        };
        loop {
            tokio::select! {
                biased;
                answer = &mut answer_rx => {
                    return match answer {
                        Ok(AgentAnswer::Envelope(envelope)) => {
                            session.note_success();
                            Attempt::Done(Ok(RouteReply {
                                agent_id: session.agent_id.clone(),
                                agent_version: session.agent_version.clone(),
                                envelope,
                                rtt: sent_at.elapsed(),
                            }))
                        }
                        Ok(AgentAnswer::Error { code, .. })
                            if !acked && code == pb::AgentErrorCode::Unavailable as i32 =>
                        {
                            // Refused before work started: nothing was applied.
                            debug!(agent_id = %session.agent_id, "agent unavailable; trying another");
                            Attempt::Retry { sent: false }
                        }
                        Ok(AgentAnswer::Error {
                            code,
                            refusal,
                            message,
                        }) => {
                            if code == pb::AgentErrorCode::Internal as i32
                                || code == pb::AgentErrorCode::Unavailable as i32
                            {
                                session.note_failure();
                            }
                            Attempt::Done(Err(RelayError::from_agent(
                                session.agent_id.clone(),
                                code,
                                refusal,
                                &message,
                            )))
                        }
                        // The session ended with the request pending.
                        Err(_) if acked => {
                            session.note_failure();
                            Attempt::Done(Err(unknown(true)))
                        }
                        Err(_) => Attempt::Retry { sent: true },
                    };
                }
                ack = &mut ack_rx, if ack_open => {
                    ack_open = false;
                    acked = ack.is_ok();
                    if acked {
                        request.report(Delivery {
                            agent_id: Some(session.agent_id.clone()),
                            acknowledged: true,
                        });
                    }
                }
                _ = tokio::time::sleep_until(ack_deadline), if !acked && ack_deadline < deadline => {
                    warn!(agent_id = %session.agent_id, session_id = %session.session_id,
                        ack_timeout = ?self.ack_timeout, "no Ack from the agent; closing its session as dead");
                    session.note_failure();
                    session.close(
                        GoodbyeReason::Unresponsive,
                        format!("a request was not acknowledged within {}", humantime::format_duration(self.ack_timeout)),
                    );
                    return Attempt::Retry { sent: true };
                }
                _ = tokio::time::sleep_until(deadline) => {
                    return Attempt::Done(Err(unknown(acked)));
                }
            }
        }
    }
}

#[tonic::async_trait]
impl Router for Registry {
    async fn route(&self, request: RouteRequest) -> Result<RouteReply, RelayError> {
        let mut tried: Vec<String> = Vec::new();
        // The last agent whose session took the request but ended without
        // an Ack: it may have the request even so.
        let mut maybe_delivered: Option<String> = None;
        let addressee = request.agent_id.as_deref();
        loop {
            let picked = self.pick(&request.tenant, &tried, addressee);
            let session = match (picked, maybe_delivered.take()) {
                (Pick::Session(s), _) => s,
                // Nowhere else to go, and it may have been applied: saying
                // "no agent" or "busy" would claim nothing happened.
                (_, Some(agent_id)) if request.operation != Operation::Ping => {
                    return Err(RelayError::OutcomeUnknown {
                        request_id: request.request_id.clone(),
                        agent_id,
                        acknowledged: false,
                    });
                }
                (Pick::Busy, _) => return Err(RelayError::AgentsBusy(request.tenant.clone())),
                (Pick::None, _) => {
                    return Err(match addressee {
                        Some(agent_id) => RelayError::AgentOffline {
                            tenant: request.tenant.clone(),
                            agent_id: agent_id.to_owned(),
                        },
                        None => RelayError::NoAgentOnline(request.tenant.clone()),
                    });
                }
            };
            match self.attempt(&session, &request).await {
                Attempt::Done(result) => return result,
                Attempt::Retry { sent } => {
                    // The addressed agent may have it: never sent again
                    // (not even to a new session of the same agent, which
                    // would refuse it as a replay and hide the outcome).
                    if sent && addressee.is_some() {
                        return Err(RelayError::OutcomeUnknown {
                            request_id: request.request_id.clone(),
                            agent_id: session.agent_id.clone(),
                            acknowledged: false,
                        });
                    }
                    if sent {
                        maybe_delivered = Some(session.agent_id.clone());
                    }
                    self.metrics.retries.inc();
                    tried.push(session.session_id.clone());
                    if Instant::now() >= request.deadline {
                        return Err(match maybe_delivered {
                            Some(agent_id) if request.operation != Operation::Ping => {
                                RelayError::OutcomeUnknown {
                                    request_id: request.request_id.clone(),
                                    agent_id,
                                    acknowledged: false,
                                }
                            }
                            _ => RelayError::DeadlineExceeded(request.budget),
                        });
                    }
                }
            }
        }
    }
}

//! The forwarding side: a request this node cannot give to an agent of its
//! own goes over NATS to a node that can.
//!
//! The request is published with a fresh reply inbox to the subject of the
//! agent it is addressed to (a ping: to the tenant's subject). The node
//! holding that agent's session (for a ping, the nodes holding agents of the
//! tenant) listens there in one queue group, so exactly one gets it; it reports Accepted, then Progress (which
//! agent has it, whether it acknowledged) every `forward_heartbeat`, then the
//! answer or a failure. No listener at all is NATS's no-responders status,
//! which arrives at once: NO_AGENT_ONLINE without waiting for the deadline.
//!
//! Two-stage delivery holds across nodes: a serving node that reports that
//! nothing reached an agent (none left, all busy, shutting down) lets this
//! node try another; once an agent may have the request, its fate is the
//! serving node's answer, or OUTCOME_UNKNOWN if that node goes silent.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use proto::pb::{self, Operation, forward_event::Event};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::Cluster;
use super::wire::{self, Failure};
use crate::error::RelayError;
use crate::metrics::{ForwardLabels, Metrics};
use crate::routing::{RouteReply, RouteRequest, Router};
use crate::sessions::Registry;

/// Serving nodes asked in turn for one request, at most, when each says
/// nothing reached an agent (its last agent just left, all busy, draining).
const MAX_FORWARDS: usize = 3;
/// Heartbeats a serving node may miss before the request is given up on.
const MISSED_BEATS: u32 = 3;

/// Routes to this node's agents first, then through the cluster.
pub struct ClusterRouter {
    registry: Arc<Registry>,
    cluster: Arc<Cluster>,
    metrics: Arc<Metrics>,
}

impl ClusterRouter {
    pub fn new(registry: Arc<Registry>, cluster: Arc<Cluster>, metrics: Arc<Metrics>) -> Self {
        ClusterRouter {
            registry,
            cluster,
            metrics,
        }
    }

    fn count(&self, outcome: &'static str) {
        self.metrics
            .forwards
            .get_or_create(&ForwardLabels {
                direction: "out",
                outcome,
            })
            .inc();
    }

    async fn forward(&self, request: &RouteRequest) -> Result<RouteReply, RelayError> {
        let mut last = match &request.agent_id {
            Some(agent_id) => RelayError::AgentOffline {
                tenant: request.tenant.clone(),
                agent_id: agent_id.clone(),
            },
            None => RelayError::NoAgentOnline(request.tenant.clone()),
        };
        for _ in 0..MAX_FORWARDS {
            if Instant::now() >= request.deadline {
                break;
            }
            if !self.cluster.is_up() {
                self.count("cluster_unavailable");
                return Err(RelayError::ClusterUnavailable(request.tenant.clone()));
            }
            match self.forward_once(request).await {
                Forwarded::Answered(reply) => {
                    self.count("answered");
                    return Ok(reply);
                }
                Forwarded::Final(e) => {
                    self.count(e.outcome());
                    return Err(e);
                }
                // Nobody listens on the subject: no node holds one of the
                // tenant's agents (the addressed agent). Asking again
                // cannot help.
                Forwarded::NoListener => {
                    self.count("no_agent_online");
                    return Err(last);
                }
                Forwarded::NotSent(e) => {
                    self.count(e.outcome());
                    debug!(error = %e, "the serving node gave nothing to an agent; asking again");
                    last = e;
                }
            }
        }
        Err(last)
    }

    async fn forward_once(&self, request: &RouteRequest) -> Forwarded {
        let cluster = &self.cluster;
        let unavailable =
            || Forwarded::Final(RelayError::ClusterUnavailable(request.tenant.clone()));
        let inbox = cluster.client.new_inbox();
        let Ok(mut replies) = cluster.client.subscribe(inbox.clone()).await else {
            return unavailable();
        };
        let remaining = request.deadline.saturating_duration_since(Instant::now());
        let forwarded = pb::ForwardedRequest {
            tenant: request.tenant.clone(),
            request_id: request.request_id.clone(),
            operation: request.operation as i32,
            envelope: request.envelope.clone(),
            timeout_ms: millis(remaining),
            budget_ms: millis(request.budget),
            origin_node: cluster.node.clone(),
            agent_id: request.agent_id.clone().unwrap_or_default(),
        };
        let sent_at = Instant::now();
        let published = cluster
            .client
            .publish_with_reply(
                match &request.agent_id {
                    Some(agent_id) => cluster.agent_subject(&request.tenant, agent_id),
                    None => cluster.submit_subject(&request.tenant),
                },
                inbox,
                prost::Message::encode_to_vec(&forwarded).into(),
            )
            .await;
        if published.is_err() {
            return unavailable();
        }
        let silence = cluster.heartbeat() * MISSED_BEATS;
        // The serving node works to the same deadline, which it computes on
        // receipt: give its final word a moment to travel back.
        let last_word = request.deadline + silence.min(FINAL_WORD);
        let mut node: Option<String> = None;
        let mut delivery = pb::ForwardProgress::default();
        let mut heard = sent_at;
        loop {
            let give_up = (heard + silence).min(last_word);
            let message = match tokio::time::timeout_at(give_up, replies.next()).await {
                Ok(Some(message)) => message,
                // The client is closing: this node is shutting down.
                Ok(None) => return lost(request, node, delivery),
                Err(_) => {
                    warn!(node = node.as_deref().unwrap_or("(none yet)"), silence = ?silence,
                        "no word from the node serving a forwarded request");
                    return lost(request, node, delivery);
                }
            };
            heard = Instant::now();
            if message.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
                return Forwarded::NoListener;
            }
            let event = match wire::decode_event(&message.payload) {
                Ok(event) => event,
                Err(problem) => {
                    warn!(
                        problem,
                        "ignoring an undecodable message from a serving node"
                    );
                    continue;
                }
            };
            match event {
                Event::Accepted(a) => node = Some(a.node),
                Event::Progress(p) => delivery = p,
                Event::Reply(r) => {
                    return Forwarded::Answered(RouteReply {
                        agent_id: r.agent_id,
                        agent_version: r.agent_version,
                        envelope: r.envelope,
                        rtt: sent_at.elapsed(),
                    });
                }
                Event::Failure(f) => {
                    let node = node.as_deref().unwrap_or("(unknown)");
                    return match wire::relay_error_of(
                        f,
                        &request.tenant,
                        &request.request_id,
                        request.budget,
                        node,
                    ) {
                        Failure::NotSent(e) => Forwarded::NotSent(e),
                        Failure::Final(e) => Forwarded::Final(e),
                    };
                }
            }
        }
    }
}

/// How one forward ended.
enum Forwarded {
    Answered(RouteReply),
    /// Definite: tell the portal.
    Final(RelayError),
    /// The serving node gave it to no agent: another node may take it.
    NotSent(RelayError),
    /// NATS says nobody listens on the tenant's subject.
    NoListener,
}

/// How long after the deadline the serving node's final word is awaited.
const FINAL_WORD: Duration = Duration::from_millis(500);

fn millis(d: Duration) -> u32 {
    d.as_millis().min(u128::from(u32::MAX)) as u32
}

/// The serving node went silent (died, or lost NATS): whatever it did with
/// the request is unknown. A ping changes nothing, so it simply timed out.
fn lost(request: &RouteRequest, node: Option<String>, delivery: pb::ForwardProgress) -> Forwarded {
    if request.operation == Operation::Ping {
        return Forwarded::Final(RelayError::DeadlineExceeded(request.budget));
    }
    Forwarded::Final(RelayError::ForwardLost {
        request_id: request.request_id.clone(),
        node,
        agent_id: (!delivery.agent_id.is_empty()).then_some(delivery.agent_id),
        acknowledged: delivery.acknowledged,
    })
}

#[tonic::async_trait]
impl Router for ClusterRouter {
    async fn route(&self, request: RouteRequest) -> Result<RouteReply, RelayError> {
        let local = self.registry.route(request.clone()).await;
        let busy = match &local {
            Err(RelayError::NoAgentOnline(_) | RelayError::AgentOffline { .. }) => false,
            // The addressed agent is here, and full: no other node has it.
            Err(RelayError::AgentsBusy(_)) if request.agent_id.is_some() => return local,
            Err(RelayError::AgentsBusy(_)) => true,
            _ => return local,
        };
        if Instant::now() >= request.deadline {
            return local;
        }
        match self.forward(&request).await {
            // Every agent in reach is this node's, and they are all busy.
            Err(
                RelayError::NoAgentOnline(_)
                | RelayError::AgentOffline { .. }
                | RelayError::ClusterUnavailable(_),
            ) if busy => local,
            other => other,
        }
    }
}

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
//!
//! The serving node gives the request to an agent only after this node
//! acknowledged its Accepted (a ForwardAck to the Accepted's reply subject):
//! silence before that proves no agent got it, so it ends NO_AGENT_ONLINE,
//! or another attempt while [`super::presence`] shows a live node holding
//! the agent. No-responders while such a node is announced (it lost its NATS
//! server and subscribes again) publishes again shortly. Silence after the
//! go-ahead looks in the outcome record, where the serving node keeps an
//! answer whose Reply this node did not acknowledge, before saying
//! OUTCOME_UNKNOWN.
//!
//! Those rules (attempts, which failures allow another node, silence and
//! the final word's grace) are `session::forward::Forwarding`'s, a machine
//! without I/O or clock; this module is its NATS driver.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use proto::pb;
use session::forward::{self, Forwarding, Outcome};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::Cluster;
use super::wire::{self, Failure};
use crate::error::RelayError;
use crate::metrics::{ForwardLabels, Metrics};
use crate::routing::{RouteReply, RouteRequest, Router};
use crate::sessions::{Registry, now};
use crate::store::StoredAnswer;

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

    /// Drives a [`Forwarding`] machine over NATS: publishes each attempt
    /// on a fresh inbox, feeds it what the serving node says (or NATS's
    /// no-responders status), and wakes it when the node's silence is due.
    async fn forward(&self, request: &RouteRequest) -> Result<RouteReply, RelayError> {
        let cluster = &self.cluster;
        let forwarded = pb::ForwardedRequest {
            tenant: request.tenant.clone(),
            request_id: request.request_id.clone(),
            operation: request.operation as i32,
            envelope: request.envelope.clone(),
            timeout_ms: 0,
            budget_ms: wire::millis(request.budget),
            origin_node: cluster.node.clone(),
            agent_id: request.agent_id.clone().unwrap_or_default(),
            // The request's span (relay.submit), which the serving node
            // continues as relay.forwarded.
            traceparent: crate::telemetry::traceparent_of(&tracing::Span::current()),
        };
        let config = forward::Config::with_heartbeat(cluster.heartbeat());
        let mut machine = Forwarding::new(now(), config, forwarded, request.deadline.into_std());
        let mut inbox: Option<async_nats::Subscriber> = None;
        let mut sent_at = Instant::now();
        let mut no_listener = false;
        // The reply subject of the serving node's last message: where a
        // Confirm goes.
        let mut ack_to: Option<async_nats::Subject> = None;
        let losses = cluster.losses();
        let agent_id = request.agent_id.as_deref();
        let present = || {
            cluster
                .presence
                .holds(&cluster.node, &request.tenant, agent_id)
        };
        loop {
            while let Some(event) = machine.poll_event() {
                match event {
                    forward::Event::Confirm => {
                        if let Some(to) = ack_to.take()
                            && let Err(e) = cluster.client.publish(to, bytes::Bytes::new()).await
                        {
                            // The serving node then routes nothing, or
                            // keeps the answer in the outcome record.
                            debug!(error = %e, "cannot acknowledge the serving node");
                        }
                    }
                    forward::Event::NotSent(failure) => {
                        let e = self.error_of(request, failure, None);
                        self.count(e.outcome());
                        debug!(error = %e, "the serving node gave nothing to an agent; asking again");
                    }
                    forward::Event::Done(outcome) => {
                        let link_lost = cluster.losses() != losses;
                        let outcome = self.kept_answer(request, outcome, link_lost).await;
                        return self.finish(request, outcome, sent_at.elapsed(), no_listener);
                    }
                }
            }
            if let Some(next) = machine.poll_transmit() {
                inbox = None;
                if !cluster.is_up() {
                    machine.unavailable(now());
                    continue;
                }
                match self.publish(request, next).await {
                    Some(subscriber) => {
                        inbox = Some(subscriber);
                        sent_at = Instant::now();
                    }
                    None => machine.unavailable(now()),
                }
                continue;
            }
            let (Some(replies), Some(give_up)) = (inbox.as_mut(), machine.poll_timeout()) else {
                // Not waiting and not done cannot be: end it as unreachable.
                machine.unavailable(now());
                continue;
            };
            let give_up = Instant::from_std(give_up);
            match tokio::time::timeout_at(give_up, replies.next()).await {
                Err(_) => {
                    warn!(silence = ?cluster.heartbeat() * forward::MISSED_BEATS,
                        "no word from the node serving a forwarded request");
                    machine.handle_timeout(now(), present());
                }
                // The client is closing: this node is shutting down.
                Ok(None) => machine.inbox_closed(now()),
                Ok(Some(message))
                    if message.status == Some(async_nats::StatusCode::NO_RESPONDERS) =>
                {
                    no_listener = true;
                    machine.no_responders(now(), present());
                }
                Ok(Some(message)) => match wire::decode_event(&message.payload) {
                    Ok(event) => {
                        ack_to = message.reply.clone();
                        let sender = message.reply.as_deref().unwrap_or_default();
                        let event = pb::ForwardEvent { event: Some(event) };
                        machine.handle_frame_from(now(), sender, event)
                    }
                    Err(problem) => {
                        warn!(
                            problem,
                            "ignoring an undecodable message from a serving node"
                        );
                        machine.undecodable(now());
                    }
                },
            }
        }
    }

    /// A silent serving node may have kept the answer it could not deliver
    /// (its Reply went unacknowledged): the outcome record is read until a
    /// heartbeat from now, since the serving node waits that long for the
    /// acknowledgement before it writes. If this node's own NATS link broke
    /// meanwhile, the serving node is likely alive and its messages were
    /// lost on this side: then until the caller's deadline, as its write may
    /// wait for a JetStream leader election.
    async fn kept_answer(
        &self,
        request: &RouteRequest,
        outcome: Outcome,
        link_lost: bool,
    ) -> Outcome {
        let (Outcome::Lost { node, .. }, Some(outcomes)) = (&outcome, self.cluster.outcomes.get())
        else {
            return outcome;
        };
        let heartbeat = self.cluster.heartbeat();
        let until = if link_lost {
            request.deadline.max(Instant::now() + heartbeat)
        } else {
            Instant::now() + heartbeat
        };
        let step = (heartbeat / 4).max(Duration::from_millis(50));
        let mut first = true;
        loop {
            if !std::mem::take(&mut first) {
                if Instant::now() + step > until {
                    break;
                }
                tokio::time::sleep(step).await;
            }
            // A read waiting for a JetStream election must not hold the
            // caller past the window.
            let read = outcomes.get(&request.tenant, &request.request_id);
            let record = match tokio::time::timeout_at(until.max(Instant::now() + step), read).await
            {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    debug!(error = %e, "cannot read the outcome record of a lost forward");
                    continue;
                }
                Err(_) => break,
            };
            let Some(record) = record else { continue };
            match record.answer {
                Some(StoredAnswer::Envelope(envelope)) => {
                    return Outcome::Answered {
                        reply: pb::ForwardReply {
                            agent_id: record.agent_id,
                            envelope,
                            ..Default::default()
                        },
                        node: node.clone(),
                    };
                }
                Some(_) | None => continue,
            }
        }
        outcome
    }

    /// Subscribes to a fresh inbox and publishes one attempt with it as the
    /// reply subject; `None` when NATS refused either.
    async fn publish(
        &self,
        request: &RouteRequest,
        forwarded: pb::ForwardedRequest,
    ) -> Option<async_nats::Subscriber> {
        let cluster = &self.cluster;
        let inbox = cluster.client.new_inbox();
        let replies = cluster.client.subscribe(inbox.clone()).await.ok()?;
        let subject = match &request.agent_id {
            Some(agent_id) => cluster.agent_subject(&request.tenant, agent_id),
            None => cluster.submit_subject(&request.tenant),
        };
        cluster
            .client
            .publish_with_reply(
                subject,
                inbox,
                prost::Message::encode_to_vec(&forwarded).into(),
            )
            .await
            .ok()?;
        Some(replies)
    }

    /// The portal's answer for a serving node's failure.
    fn error_of(
        &self,
        request: &RouteRequest,
        failure: pb::ForwardFailure,
        node: Option<&str>,
    ) -> RelayError {
        let node = node.unwrap_or("(unknown)");
        match wire::relay_error_of(
            failure,
            &request.tenant,
            &request.request_id,
            request.budget,
            node,
        ) {
            Failure::NotSent(e) | Failure::Final(e) => e,
        }
    }

    /// The portal's answer for how forwarding ended, counted.
    fn finish(
        &self,
        request: &RouteRequest,
        outcome: Outcome,
        rtt: Duration,
        no_listener: bool,
    ) -> Result<RouteReply, RelayError> {
        let error = match outcome {
            Outcome::Answered { reply, .. } => {
                self.count("answered");
                return Ok(RouteReply {
                    agent_id: reply.agent_id,
                    agent_version: reply.agent_version,
                    envelope: reply.envelope,
                    rtt,
                });
            }
            Outcome::Failed { failure, node } => {
                let e = self.error_of(request, failure, node.as_deref());
                self.count(e.outcome());
                e
            }
            Outcome::NotDelivered { last } => {
                // Each node's refusal was counted as it came; nobody
                // listening is counted here.
                if no_listener {
                    self.count("no_agent_online");
                }
                match last {
                    Some(failure) => self.error_of(request, failure, None),
                    None => match &request.agent_id {
                        Some(agent_id) => RelayError::AgentOffline {
                            tenant: request.tenant.clone(),
                            agent_id: agent_id.clone(),
                        },
                        None => RelayError::NoAgentOnline(request.tenant.clone()),
                    },
                }
            }
            // The serving node went silent (died, or lost NATS): whatever
            // it did with the request is unknown.
            Outcome::Lost {
                node,
                agent_id,
                acknowledged,
            } => {
                let e = RelayError::ForwardLost {
                    request_id: request.request_id.clone(),
                    node,
                    agent_id,
                    acknowledged,
                };
                self.count(e.outcome());
                e
            }
            Outcome::DeadlineExceeded => {
                let e = RelayError::DeadlineExceeded(request.budget);
                self.count(e.outcome());
                e
            }
            Outcome::ClusterUnavailable => {
                self.count("cluster_unavailable");
                RelayError::ClusterUnavailable(request.tenant.clone())
            }
        };
        Err(error)
    }
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

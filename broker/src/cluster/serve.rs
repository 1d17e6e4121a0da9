//! The serving side: while this node holds an agent session of a tenant, it
//! listens on the tenant's subject (pings, which any agent may answer) and
//! on the subject of each agent it holds (requests addressed to that agent),
//! in the nodes' queue group, and routes the requests other nodes forward to
//! its own agents, reporting progress to the forwarding node (see
//! [`super::forward`] for the exchange). The checks of a forwarded request
//! and its reports (Accepted, Progress, one end) are
//! `session::forward::Serving`'s; this module subscribes, routes and
//! publishes for it.
//!
//! Accepted and Reply go out with a reply subject of this node's (one inbox
//! per request): the forwarding node's ForwardAck there is the go-ahead to
//! route (none within a heartbeat: nothing is routed, NO_AGENT_ONLINE), and
//! the receipt of the answer (none: the answer is kept in the outcome
//! record, where the forwarding node looks before OUTCOME_UNKNOWN).

use std::collections::HashMap;
use std::sync::Arc;

use async_nats::Subject;
use futures_util::StreamExt;
use proto::pb::{self, Operation, forward_event::Event};
use session::forward::{Served, Serving};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use super::{Cluster, wire};
use crate::error::RelayError;
use crate::metrics::ForwardLabels;
use crate::routing::{Delivery, RouteRequest, Router};
use crate::sessions::now;
use crate::state::State;
use crate::store::{Admission, StoredAnswer};

/// One subscription (a tenant's, or one agent's) and the task reading it.
struct Listening {
    tenant: String,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// Listens for each tenant exactly while this node holds one of its agent
/// sessions; stops listening for all when the node starts draining, so the
/// other nodes stop sending it work. Runs until `state.shutdown`.
pub async fn run(state: Arc<State>, cluster: Arc<Cluster>) {
    let Some(mut presence) = state.registry.watch_presence() else {
        warn!("tenant presence is already watched; not serving forwarded requests");
        return;
    };
    let _ = cluster.outcomes.set(Arc::clone(&state.outcomes));
    let announcing = tokio::spawn(super::presence::run(
        Arc::clone(&state),
        Arc::clone(&cluster),
    ));
    // By subject.
    let mut listening: HashMap<String, Listening> = HashMap::new();
    // Sessions registered before the watch began.
    for tenant in state.registry.tenants_present() {
        update(&state, &cluster, &mut listening, tenant).await;
    }
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => break,
            tenant = presence.recv() => match tenant {
                Some(tenant) => update(&state, &cluster, &mut listening, tenant).await,
                None => break,
            },
        }
    }
    for (subject, l) in listening.drain() {
        debug!(tenant = %l.tenant, %subject, "no longer listening for forwarded requests");
        l.stop.cancel();
        let _ = l.task.await;
    }
    let _ = announcing.await;
}

/// Listens on exactly the subjects of `tenant` this node should: the
/// tenant's while it holds any of its agents, and each held agent's.
async fn update(
    state: &Arc<State>,
    cluster: &Arc<Cluster>,
    listening: &mut HashMap<String, Listening>,
    tenant: String,
) {
    let sessions = state.registry.sessions(&tenant);
    let mut wanted: Vec<String> = sessions
        .iter()
        .map(|s| cluster.agent_subject(&tenant, &s.agent_id))
        .collect();
    if !sessions.is_empty() {
        wanted.push(cluster.submit_subject(&tenant));
    }
    let stale: Vec<String> = listening
        .iter()
        .filter(|(subject, l)| l.tenant == tenant && !wanted.contains(subject))
        .map(|(subject, _)| subject.clone())
        .collect();
    for subject in stale {
        if let Some(l) = listening.remove(&subject) {
            info!(%tenant, %subject, "no agent for this subject left here; no longer listening");
            l.stop.cancel();
        }
    }
    for subject in wanted {
        if listening.contains_key(&subject) {
            continue;
        }
        match cluster
            .client
            .queue_subscribe(subject.clone(), cluster.queue_group())
            .await
        {
            Ok(subscriber) => {
                info!(%tenant, %subject, "listening for requests forwarded by other nodes");
                let stop = CancellationToken::new();
                let task = tokio::spawn(listen(
                    Arc::clone(state),
                    Arc::clone(cluster),
                    tenant.clone(),
                    subscriber,
                    stop.clone(),
                ));
                listening.insert(
                    subject,
                    Listening {
                        tenant: tenant.clone(),
                        stop,
                        task,
                    },
                );
            }
            // Only a closed client fails here: the node is stopping.
            Err(e) => warn!(%tenant, error = %e, "cannot listen for forwarded requests"),
        }
    }
    // Subscribed (or unsubscribed) first, announced after: a node that
    // hears of the agent finds this node listening.
    cluster.presence.changed();
}

async fn listen(
    state: Arc<State>,
    cluster: Arc<Cluster>,
    tenant: String,
    mut subscriber: async_nats::Subscriber,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            message = subscriber.next() => match message {
                Some(m) => spawn_serve(&state, &cluster, &tenant, m),
                None => return,
            },
        }
    }
    // Whatever NATS delivered before the unsubscription took effect is
    // still answered: it finds no agent, and the forwarding node asks
    // another node.
    if let Err(e) = subscriber.drain().await {
        debug!(%tenant, error = %e, "draining the subscription failed");
    }
    while let Some(m) = subscriber.next().await {
        spawn_serve(&state, &cluster, &tenant, m);
    }
}

fn spawn_serve(
    state: &Arc<State>,
    cluster: &Arc<Cluster>,
    tenant: &str,
    message: async_nats::Message,
) {
    let Some(reply) = message.reply.clone() else {
        debug!(%tenant, "forwarded request without a reply subject dropped");
        return;
    };
    tokio::spawn(serve(
        Arc::clone(state),
        Arc::clone(cluster),
        tenant.to_owned(),
        reply,
        message.payload,
    ));
}

/// Publishes one event to the forwarding node. A failed publish is only
/// logged: the forwarding node then hears nothing and says OUTCOME_UNKNOWN
/// after three missed heartbeats, which is the truth.
async fn tell(cluster: &Cluster, reply: &Subject, event: Event, acks: Option<&Subject>) {
    let payload = wire::encode(event).into();
    let sent = match acks {
        Some(acks) => {
            cluster
                .client
                .publish_with_reply(reply.clone(), acks.clone(), payload)
                .await
        }
        None => cluster.client.publish(reply.clone(), payload).await,
    };
    if let Err(e) = sent {
        debug!(error = %e, "cannot reach the forwarding node");
    }
}

fn count(state: &State, outcome: &'static str) {
    state
        .metrics
        .forwards
        .get_or_create(&ForwardLabels {
            direction: "in",
            outcome,
        })
        .inc();
}

/// Publishes what the machine has for the forwarding node, in order, each
/// with `acks` as its reply subject: where Accepted and Reply are
/// acknowledged, and what tells this task's events from those of a twin
/// serving a second delivery of the same publication.
async fn flush(cluster: &Cluster, reply: &Subject, acks: Option<&Subject>, machine: &mut Serving) {
    while let Some(event) = machine.poll_transmit() {
        if let Some(event) = event.event {
            tell(cluster, reply, event, acks).await;
        }
    }
}

/// Feeds the machine the forwarding node's acknowledgements until it has
/// an event, or awaits nothing more.
async fn await_ack(
    acks: &mut Option<async_nats::Subscriber>,
    machine: &mut Serving,
) -> Option<Served> {
    loop {
        if let Some(event) = machine.poll_event() {
            return Some(event);
        }
        let by = Instant::from_std(machine.poll_timeout()?);
        let next = async {
            match acks.as_mut() {
                Some(s) => s.next().await,
                None => std::future::pending().await,
            }
        };
        match tokio::time::timeout_at(by, next).await {
            // NATS's status for a message published with this subject as
            // its reply subject, when nobody listened where it went: not
            // the forwarding node's word, and counting it as one lost
            // every answer a forwarder had already given up on.
            Ok(Some(m)) if m.status == Some(async_nats::StatusCode::NO_RESPONDERS) => {
                machine.forwarder_unreachable(now());
            }
            Ok(Some(m)) if m.status.is_some() => {}
            Ok(Some(_)) => machine.acknowledged(now()),
            // Closed: the client is closing; as no acknowledgement.
            Ok(None) => *acks = None,
            Err(_) => machine.handle_timeout(now()),
        }
    }
}

/// Drives a [`Serving`] machine for one forwarded request: its checks and
/// reports are the machine's; routing to this node's agents, the awaited
/// record and publishing are this driver's.
async fn serve(
    state: Arc<State>,
    cluster: Arc<Cluster>,
    tenant: String,
    reply: Subject,
    payload: bytes::Bytes,
) {
    let decoded = wire::decode_request(&payload).ok();
    let request_id = decoded
        .as_ref()
        .map(|r| r.request_id.clone())
        .unwrap_or_default();
    let origin = decoded
        .as_ref()
        .map(|r| r.origin_node.clone())
        .unwrap_or_default();
    let traceparent = decoded
        .as_ref()
        .map(|r| r.traceparent.clone())
        .unwrap_or_default();
    let mut machine = Serving::new(
        now(),
        &cluster.node,
        cluster.heartbeat(),
        state.live().max_deadline,
        &tenant,
        decoded,
        state.shutdown.is_cancelled(),
    );
    // This node's agents may be revoked elsewhere (crate::lease): refused
    // before the forwarder is told the request was accepted.
    if !machine.is_done()
        && let Err(e) = state.tenants.require_current()
    {
        count(&state, e.outcome());
        return tell(&cluster, &reply, Event::Failure(wire::failure_of(&e)), None).await;
    }
    // Where the forwarding node acknowledges Accepted and the Reply.
    let (mut acks, ack_subject) = if machine.is_done() {
        (None, None)
    } else {
        let subject = cluster.client.new_inbox();
        match cluster.client.subscribe(subject.clone()).await {
            Ok(s) => (Some(s), Some(Subject::from(subject))),
            Err(e) => {
                debug!(error = %e, "cannot await the forwarding node's acknowledgements");
                (None, None)
            }
        }
    };
    let acks_to = ack_subject.as_ref();
    if acks_to.is_some() {
        flush(&cluster, &reply, acks_to, &mut machine).await;
    }
    let (request, operation, deadline) = match await_ack(&mut acks, &mut machine).await {
        Some(Served::Unconfirmed) => {
            count(&state, "unconfirmed");
            debug!(%tenant, %request_id, "the forwarding node did not confirm; routed nowhere");
            return flush(&cluster, &reply, acks_to, &mut machine).await;
        }
        Some(Served::Route {
            request,
            operation,
            deadline,
        }) => (request, operation, deadline),
        Some(Served::Refused(kind)) => {
            if kind == pb::ForwardFailureKind::ShuttingDown {
                count(&state, "shutting_down");
            } else {
                count(&state, "refused");
                warn!(%tenant, %request_id, "forwarded request refused: undecodable, for another tenant than its subject, or an unknown operation");
            }
            return flush(&cluster, &reply, None, &mut machine).await;
        }
        Some(Served::Undelivered(_)) | None => return,
    };
    let span = info_span!(
        "relay.forwarded",
        relay.tenant = %tenant,
        relay.request_id = %request_id,
        relay.origin_node = %origin
    );
    // The forwarding node's relay.submit span is this one's parent.
    crate::telemetry::continue_trace(&span, Some(&traceparent));
    async move {
        // Counted in flight here too, so that a draining node waits for it.
        let key = (tenant.clone(), request.request_id.clone());
        let _in_flight = state.in_flight_ids.insert(key.clone()).then(|| InFlight {
            state: Arc::clone(&state),
            key,
        });
        let (progress, mut delivered) = watch::channel(Delivery::default());
        let routed = state.registry.route(RouteRequest {
            tenant: tenant.clone(),
            request_id: request.request_id.clone(),
            operation,
            agent_id: (!request.agent_id.is_empty()).then(|| request.agent_id.clone()),
            envelope: request.envelope,
            deadline: Instant::from_std(deadline),
            budget: std::time::Duration::from_millis(request.budget_ms.into()),
            progress: Some(Arc::new(progress)),
        });
        tokio::pin!(routed);
        let mut reporting = true;
        let result = loop {
            let beat = machine.poll_timeout().map(Instant::from_std);
            let timer = async {
                match beat {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                result = &mut routed => break result,
                changed = delivered.changed(), if reporting => match changed {
                    Ok(()) => {
                        let d = delivered.borrow_and_update().clone();
                        machine.progress(now(), d.agent_id.as_deref(), d.acknowledged);
                    }
                    Err(_) => reporting = false,
                },
                _ = timer => machine.handle_timeout(now()),
            }
            flush(&cluster, &reply, acks_to, &mut machine).await;
        };
        let end = match result {
            Ok(answer) => {
                count(&state, "answered");
                debug!(agent_id = %answer.agent_id, "forwarded request answered");
                Event::Reply(pb::ForwardReply {
                    agent_id: answer.agent_id,
                    agent_version: answer.agent_version,
                    envelope: answer.envelope,
                    rtt_us: answer.rtt.as_micros().min(u128::from(u64::MAX)) as u64,
                })
            }
            Err(e) => {
                count(&state, e.outcome());
                info!(reason = %e.reason(), error = %e, "forwarded request failed");
                // The origin node records this too, but only once told: an
                // answer the agent posts here before then must find the
                // request awaited (see `keep_late_answer`). A create, so
                // the origin's changes nothing.
                if let RelayError::OutcomeUnknown {
                    agent_id,
                    acknowledged,
                    ..
                } = &e
                    && operation != Operation::Ping
                    && let Err(e) = state
                        .outcomes
                        .expect(&tenant, &request.request_id, agent_id, *acknowledged)
                        .await
                {
                    warn!(error = %e, "cannot record the awaited outcome");
                }
                Event::Failure(wire::failure_of(&e))
            }
        };
        machine.finish(now(), end);
        flush(&cluster, &reply, acks_to, &mut machine).await;
        if let Some(Served::Undelivered(answer)) = await_ack(&mut acks, &mut machine).await
            && operation != Operation::Ping
        {
            // The forwarding node may never have had it: keep it where
            // GetOutcome, and the forwarding node before OUTCOME_UNKNOWN,
            // find it.
            count(&state, "kept_undelivered");
            warn!(agent_id = %answer.agent_id, "the forwarding node did not acknowledge the answer; keeping it in the outcome record");
            let envelope = StoredAnswer::Envelope(answer.envelope);
            if let Err(e) = state
                .outcomes
                .record(&tenant, &request.request_id, &answer.agent_id, envelope, Admission::Relayed)
                .await
            {
                warn!(error = %e, "cannot keep an undelivered answer");
            }
        }
    }
    .instrument(span)
    .await
}

/// Removes a served request's id from the in-flight set however it ends.
struct InFlight {
    state: Arc<State>,
    key: (String, String),
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.state.in_flight_ids.remove(&self.key);
        self.state.request_ended.notify_waiters();
    }
}

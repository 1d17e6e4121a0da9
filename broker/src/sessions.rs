//! Live agent sessions and the routing of requests to them.
//!
//! The [`Router`] trait is the seam a cluster backplane sits behind: the
//! portal-facing service only ever calls `route`, and [`Registry`] is the
//! single-node implementation that hands requests to sessions it holds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;
use proto::pb::{self, BrokerFrame, GoodbyeReason, Operation, broker_frame};
use sas::KeySlot;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::error::RelayError;
use crate::metrics::Metrics;
use crate::time::now_unix_ms;

/// Frames queued towards one agent before senders wait.
pub const OUTBOUND_QUEUE: usize = 64;

pub type Outbound = mpsc::Sender<Result<BrokerFrame, Status>>;

/// What an agent answered.
#[derive(Debug)]
pub enum AgentAnswer {
    Envelope(Vec<u8>),
    Error { code: i32, message: String },
}

/// One authenticated agent session.
pub struct AgentSession {
    pub session_id: String,
    pub tenant: String,
    pub agent_id: String,
    pub agent_version: String,
    pub remote_addr: String,
    pub connected_since_ms: i64,
    last_seen_ms: AtomicI64,
    slot: AtomicU8,
    token_expiry_unix: AtomicU64,
    in_flight: AtomicU32,
    next_correlation: AtomicU64,
    pending: Mutex<HashMap<u64, oneshot::Sender<AgentAnswer>>>,
    outbound: Outbound,
    closed: CancellationToken,
    finished: CancellationToken,
    close_reason: Mutex<Option<(GoodbyeReason, String)>>,
}

fn slot_code(slot: KeySlot) -> u8 {
    match slot {
        KeySlot::Primary => 0,
        KeySlot::Secondary => 1,
    }
}

impl AgentSession {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        tenant: String,
        agent_id: String,
        agent_version: String,
        remote_addr: String,
        slot: KeySlot,
        token_expiry_unix: u64,
        outbound: Outbound,
    ) -> AgentSession {
        let now = now_unix_ms();
        AgentSession {
            session_id: format!("{:016x}", fastrand::u64(..)),
            tenant,
            agent_id,
            agent_version,
            remote_addr,
            connected_since_ms: now,
            last_seen_ms: AtomicI64::new(now),
            slot: AtomicU8::new(slot_code(slot)),
            token_expiry_unix: AtomicU64::new(token_expiry_unix),
            in_flight: AtomicU32::new(0),
            next_correlation: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            outbound,
            closed: CancellationToken::new(),
            finished: CancellationToken::new(),
            close_reason: Mutex::new(None),
        }
    }

    pub fn touch(&self) {
        self.last_seen_ms.store(now_unix_ms(), Ordering::Relaxed);
    }

    pub fn last_seen_ms(&self) -> i64 {
        self.last_seen_ms.load(Ordering::Relaxed)
    }

    pub fn slot(&self) -> KeySlot {
        match self.slot.load(Ordering::Relaxed) {
            0 => KeySlot::Primary,
            _ => KeySlot::Secondary,
        }
    }

    pub fn renew(&self, slot: KeySlot, expiry_unix: u64) {
        self.slot.store(slot_code(slot), Ordering::Relaxed);
        self.token_expiry_unix.store(expiry_unix, Ordering::Relaxed);
    }

    pub fn token_expiry_unix(&self) -> u64 {
        self.token_expiry_unix.load(Ordering::Relaxed)
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn outbound(&self) -> &Outbound {
        &self.outbound
    }

    /// Cancelled when the session is asked to close.
    pub fn closed(&self) -> &CancellationToken {
        &self.closed
    }

    /// Cancelled when the session's driver is done and its last frame
    /// (the Goodbye, if any) is queued: the outbound stream may end.
    pub fn finished(&self) -> &CancellationToken {
        &self.finished
    }

    /// Asks the session to end with `reason`. The first reason given wins.
    pub fn close(&self, reason: GoodbyeReason, message: impl Into<String>) {
        let mut current = self.close_reason.lock().unwrap_or_else(|e| e.into_inner());
        if current.is_none() {
            *current = Some((reason, message.into()));
        }
        drop(current);
        self.closed.cancel();
    }

    pub fn close_reason(&self) -> Option<(GoodbyeReason, String)> {
        self.close_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Delivers an answer to the request waiting on `correlation_id`, if any
    /// is still waiting on this session. Answers can only complete requests
    /// that were sent on the same session.
    pub fn complete(&self, correlation_id: u64, answer: AgentAnswer) -> bool {
        let waiter = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&correlation_id);
        match waiter {
            Some(tx) => tx.send(answer).is_ok(),
            None => false,
        }
    }

    /// Fails every request still waiting on this session (they see AgentLost).
    pub fn abandon_pending(&self) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn info(&self) -> pb::AgentInfo {
        pb::AgentInfo {
            agent_id: self.agent_id.clone(),
            agent_version: self.agent_version.clone(),
            connected_since_unix_ms: self.connected_since_ms,
            last_heartbeat_unix_ms: self.last_seen_ms(),
            session_id: self.session_id.clone(),
            in_flight: self.in_flight(),
            remote_addr: self.remote_addr.clone(),
        }
    }
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

/// A request to route to an agent of `tenant`.
#[derive(Debug)]
pub struct RouteRequest {
    pub tenant: String,
    pub request_id: String,
    pub operation: Operation,
    pub envelope: Vec<u8>,
    pub deadline: Instant,
    /// The deadline as the caller gave it, for error messages.
    pub budget: Duration,
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

/// The sessions this node holds, per tenant.
pub struct Registry {
    by_tenant: DashMap<String, Vec<Arc<AgentSession>>>,
    metrics: Arc<Metrics>,
}

impl Registry {
    pub fn new(metrics: Arc<Metrics>) -> Registry {
        Registry {
            by_tenant: DashMap::new(),
            metrics,
        }
    }

    /// Adds a session. A live session with the same agent id is replaced and
    /// told so: the agent reconnecting means the old one is half-open.
    pub fn register(&self, session: Arc<AgentSession>) {
        let mut list = self.by_tenant.entry(session.tenant.clone()).or_default();
        if let Some(pos) = list.iter().position(|s| s.agent_id == session.agent_id) {
            let old = list.remove(pos);
            old.close(
                GoodbyeReason::Replaced,
                "a newer session of this agent id took over",
            );
        }
        list.push(Arc::clone(&session));
        self.metrics
            .agent_gauge(&session.tenant)
            .set(list.len() as i64);
    }

    /// Removes a session if it is still registered.
    pub fn deregister(&self, session: &Arc<AgentSession>) {
        if let Some(mut list) = self.by_tenant.get_mut(&session.tenant) {
            list.retain(|s| !Arc::ptr_eq(s, session));
            self.metrics
                .agent_gauge(&session.tenant)
                .set(list.len() as i64);
        }
        self.by_tenant
            .remove_if(&session.tenant, |_, list| list.is_empty());
    }

    pub fn sessions(&self, tenant: &str) -> Vec<Arc<AgentSession>> {
        self.by_tenant
            .get(tenant)
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    pub fn agent_infos(&self, tenant: &str) -> Vec<pb::AgentInfo> {
        let mut infos: Vec<_> = self.sessions(tenant).iter().map(|s| s.info()).collect();
        infos.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
        infos
    }

    pub fn total_sessions(&self) -> usize {
        self.by_tenant.iter().map(|l| l.len()).sum()
    }

    /// Closes the tenant's sessions that match `pred`; how many.
    pub fn close_where(
        &self,
        tenant: &str,
        pred: impl Fn(&AgentSession) -> bool,
        reason: GoodbyeReason,
        message: &str,
    ) -> usize {
        let mut closed = 0;
        for s in self.sessions(tenant) {
            if pred(&s) {
                s.close(reason, message);
                closed += 1;
            }
        }
        closed
    }

    /// Closes every session on this node.
    pub fn close_all(&self, reason: GoodbyeReason, message: &str) {
        for list in self.by_tenant.iter() {
            for s in list.iter() {
                s.close(reason, message);
            }
        }
    }

    /// The live session with the fewest requests in flight; ties at random so
    /// that equal agents share the load.
    fn pick(&self, tenant: &str, exclude: &[String]) -> Option<Arc<AgentSession>> {
        let list = self.by_tenant.get(tenant)?;
        let live = list
            .iter()
            .filter(|s| !s.closed.is_cancelled() && !exclude.contains(&s.session_id));
        let least = live.clone().map(|s| s.in_flight()).min()?;
        let ties: Vec<_> = live.filter(|s| s.in_flight() == least).collect();
        ties.get(fastrand::usize(..ties.len()))
            .map(|s| Arc::clone(s))
    }
}

#[tonic::async_trait]
impl Router for Registry {
    async fn route(&self, request: RouteRequest) -> Result<RouteReply, RelayError> {
        let RouteRequest {
            tenant,
            request_id,
            operation,
            envelope,
            deadline,
            budget,
        } = request;
        let mut tried: Vec<String> = Vec::new();
        let mut envelope = Some(envelope);
        loop {
            let session = self
                .pick(&tenant, &tried)
                .ok_or_else(|| RelayError::NoAgentOnline(tenant.clone()))?;
            let correlation_id = session.next_correlation.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = oneshot::channel();
            session
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(correlation_id, tx);
            session.in_flight.fetch_add(1, Ordering::Relaxed);
            let _guard = PendingGuard {
                session: &session,
                correlation_id,
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            let frame = BrokerFrame {
                frame: Some(broker_frame::Frame::Request(pb::RelayedRequest {
                    correlation_id,
                    request_id: request_id.clone(),
                    operation: operation as i32,
                    envelope: envelope.take().unwrap_or_default(),
                    timeout_ms: remaining.as_millis().min(u32::MAX as u128) as u32,
                })),
            };
            let sent_at = Instant::now();
            match tokio::time::timeout_at(deadline, session.outbound.send(Ok(frame))).await {
                Err(_) => return Err(RelayError::DeadlineExceeded(budget)),
                Ok(Err(mpsc::error::SendError(returned))) => {
                    // The session ended before the request was queued to it:
                    // it was never delivered, so another agent may take it.
                    if let Ok(BrokerFrame {
                        frame: Some(broker_frame::Frame::Request(r)),
                    }) = returned
                    {
                        envelope = Some(r.envelope);
                    }
                    tried.push(session.session_id.clone());
                    continue;
                }
                Ok(Ok(())) => {}
            }
            return match tokio::time::timeout_at(deadline, rx).await {
                Err(_) => Err(RelayError::DeadlineExceeded(budget)),
                Ok(Err(_)) => Err(RelayError::AgentLost(session.agent_id.clone())),
                Ok(Ok(AgentAnswer::Envelope(envelope))) => Ok(RouteReply {
                    agent_id: session.agent_id.clone(),
                    agent_version: session.agent_version.clone(),
                    envelope,
                    rtt: sent_at.elapsed(),
                }),
                Ok(Ok(AgentAnswer::Error { code, message })) => Err(RelayError::AgentError {
                    agent_id: session.agent_id.clone(),
                    message: format!(
                        "{} ({})",
                        message,
                        pb::AgentErrorCode::try_from(code)
                            .map(|c| c.as_str_name())
                            .unwrap_or("AGENT_ERROR_CODE_UNSPECIFIED")
                    ),
                }),
            };
        }
    }
}

//! Live agent sessions, and the registry of the sessions this node holds.
//! Routing requests to them is in [`crate::routing`]. Each session's
//! protocol (delivery, timers, the Goodbyes it decides) is a
//! `session::broker::BrokerSession` machine that [`AgentSession`] holds and
//! [`crate::gateway`] drives.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Duration;

use dashmap::DashMap;
use proto::pb::{self, BrokerFrame, GoodbyeReason};
use sas::KeySlot;
use session::broker::{
    BrokerSession, CorrelationId, Event, LateVerdict, RequestEnd, SendError, Tally,
};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::Limits;
use crate::error::RelayError;
use crate::metrics::Metrics;
use crate::time::now_unix_ms;

pub use session::broker::PerMinute;

pub use crate::answer::AgentAnswer;

impl From<session::broker::Answer> for AgentAnswer {
    fn from(answer: session::broker::Answer) -> AgentAnswer {
        match answer {
            session::broker::Answer::Envelope(e) => AgentAnswer::Envelope(e),
            // At most 512 characters, control characters escaped: the agent
            // chooses it, and it is logged and shown to portals.
            session::broker::Answer::Error(e) => AgentAnswer::Error {
                code: e.code,
                refusal: e.refusal,
                message: crate::agent_text::printable(&e.message, 512),
            },
        }
    }
}

/// Where one request's Ack and end go: the routing task waiting for them.
pub(crate) struct Waiter {
    pub ack: Option<oneshot::Sender<()>>,
    pub end: oneshot::Sender<RequestEnd>,
}

/// The session's protocol machine and what its driver keeps beside it,
/// under one lock so that a request's waiter is in place before any event
/// about it can be dispatched.
struct Core {
    machine: BrokerSession,
    waiters: HashMap<CorrelationId, Waiter>,
    /// Events for the session's driver task (the rest go to waiters).
    backlog: VecDeque<Event>,
    /// The outbound stream, waiting for a frame.
    outbound: Option<Waker>,
}

/// One authenticated agent session: its identity, what the registry and
/// the status pages read without locking, and the protocol machine
/// ([`session::broker::BrokerSession`]) that decides everything else. The
/// session's driver task (`gateway::drive`) feeds it frames and timeouts;
/// routing tasks send requests through it; the outbound stream takes its
/// frames.
pub struct AgentSession {
    pub session_id: String,
    pub tenant: String,
    pub agent_id: String,
    pub agent_version: String,
    pub remote_addr: Option<SocketAddr>,
    pub connected_since_ms: i64,
    /// Wall time of the agent's last frame, for people (ListAgents, the
    /// status page); never for deciding anything: the machine judges
    /// silence on the monotonic clock.
    last_seen_unix_ms: AtomicI64,
    slot: AtomicU8,
    token_expiry_unix: AtomicU64,
    pub(crate) in_flight: AtomicU32,
    /// Answers that failed or never came since the last good one: a failing
    /// agent is chosen less (see `Registry::pick`).
    pub(crate) failures: AtomicU32,
    core: Mutex<Core>,
    /// Wakes the driver task: the machine has events or a new timer.
    wake_driver: Notify,
    finished: CancellationToken,
    /// Late answers not taken: their tenant's store writes at their bound.
    pub refused_busy: Mutex<PerMinute>,
}

/// The machine's clock: tokio's, so that paused time in tests moves it.
pub fn now() -> std::time::Instant {
    Instant::now().into_std()
}

fn slot_code(slot: KeySlot) -> u8 {
    match slot {
        KeySlot::Primary => 0,
        KeySlot::Secondary => 1,
    }
}

impl AgentSession {
    /// A session whose machine has just accepted the Hello; `welcome` is
    /// completed with the session id and queued.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        tenant: String,
        agent_id: String,
        agent_version: String,
        remote_addr: Option<SocketAddr>,
        slot: KeySlot,
        token_expiry_unix: u64,
        mut machine: BrokerSession,
        mut welcome: pb::Welcome,
    ) -> AgentSession {
        let wall = now_unix_ms();
        let session_id = format!("{:016x}", fastrand::u64(..));
        welcome.session_id = session_id.clone();
        machine.accept(now(), welcome, expiry_instant(token_expiry_unix));
        AgentSession {
            session_id,
            tenant,
            agent_id,
            agent_version,
            remote_addr,
            connected_since_ms: wall,
            last_seen_unix_ms: AtomicI64::new(wall),
            slot: AtomicU8::new(slot_code(slot)),
            token_expiry_unix: AtomicU64::new(token_expiry_unix),
            in_flight: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            core: Mutex::new(Core {
                machine,
                waiters: HashMap::new(),
                backlog: VecDeque::new(),
                outbound: None,
            }),
            wake_driver: Notify::new(),
            finished: CancellationToken::new(),
            refused_busy: Mutex::new(PerMinute::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the machine, then hands its events on: a request's to
    /// its waiter, the rest to the driver task; wakes the outbound stream
    /// and the driver, whose timer may have moved.
    fn with_machine<R>(
        &self,
        f: impl FnOnce(&mut BrokerSession, &mut HashMap<CorrelationId, Waiter>) -> R,
    ) -> R {
        let mut core = self.lock();
        let core = &mut *core;
        let result = f(&mut core.machine, &mut core.waiters);
        while let Some(event) = core.machine.poll_event() {
            match event {
                Event::Acknowledged(id) => {
                    if let Some(tx) = core.waiters.get_mut(&id).and_then(|w| w.ack.take()) {
                        let _ = tx.send(());
                    }
                }
                Event::Ended {
                    correlation_id,
                    end,
                    ..
                } => {
                    if let Some(w) = core.waiters.remove(&correlation_id) {
                        let _ = w.end.send(end);
                    }
                }
                other => core.backlog.push_back(other),
            }
        }
        if let Some(waker) = core.outbound.take() {
            waker.wake();
        }
        self.wake_driver.notify_one();
        result
    }

    /// Takes one agent frame.
    pub fn handle_frame(&self, frame: pb::AgentFrame) {
        self.last_seen_unix_ms
            .store(now_unix_ms(), Ordering::Relaxed);
        self.with_machine(|m, _| m.handle_frame(now(), frame));
    }

    pub fn handle_timeout(&self) {
        self.with_machine(|m, _| m.handle_timeout(now()));
    }

    /// When the driver must call [`Self::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.lock().machine.poll_timeout().map(Instant::from_std)
    }

    /// Resolves when the machine has something new for the driver.
    pub async fn driver_woken(&self) {
        self.wake_driver.notified().await
    }

    /// The events the driver task acts on, oldest first.
    pub fn take_events(&self) -> Vec<Event> {
        self.lock().backlog.drain(..).collect()
    }

    pub fn stream_ended(&self) {
        self.with_machine(|m, _| m.stream_ended(now()));
    }

    pub fn malformed(&self, message: &str) {
        self.with_machine(|m, _| m.malformed(now(), message));
    }

    /// The driver's verdict on a late reply; the unsolicited count, if one.
    pub fn late_verdict(
        &self,
        correlation_id: u64,
        request_id: String,
        verdict: LateVerdict,
    ) -> Option<Tally> {
        self.with_machine(|m, _| m.late_verdict(now(), correlation_id, request_id, verdict))
    }

    /// A late reply found unsolicited only after its Receipt went out.
    pub fn count_unsolicited(&self) -> Tally {
        self.with_machine(|m, _| m.count_unsolicited(now()))
    }

    /// Sends a request; `waiter` hears its Ack and its end.
    pub(crate) fn send_request(
        &self,
        request: pb::RelayedRequest,
        deadline: Instant,
        waiter: Waiter,
    ) -> Result<CorrelationId, SendError> {
        self.with_machine(|m, waiters| {
            let id = m.send_request(now(), request, deadline.into_std())?;
            waiters.insert(id, waiter);
            Ok(id)
        })
    }

    /// The next frame for the agent; `None` while there is none (the
    /// stream is woken when one comes) or once the stream is over.
    pub fn poll_outbound(&self, waker: &Waker) -> std::task::Poll<Option<BrokerFrame>> {
        let mut core = self.lock();
        if let Some(mut frame) = core.machine.poll_transmit() {
            // The machine has no wall clock: the heartbeat is stamped here.
            if let Some(pb::broker_frame::Frame::Heartbeat(beat)) = &mut frame.frame {
                beat.sent_unix_ms = now_unix_ms();
            }
            return std::task::Poll::Ready(Some(frame));
        }
        if self.finished.is_cancelled() {
            return std::task::Poll::Ready(None);
        }
        core.outbound = Some(waker.clone());
        std::task::Poll::Pending
    }

    /// Wall time of the agent's last frame, for display only.
    pub fn last_seen_unix_ms(&self) -> i64 {
        self.last_seen_unix_ms.load(Ordering::Relaxed)
    }

    pub fn slot(&self) -> KeySlot {
        match self.slot.load(Ordering::Relaxed) {
            0 => KeySlot::Primary,
            _ => KeySlot::Secondary,
        }
    }

    /// The renewed token: its key slot and expiry.
    pub fn renew(&self, slot: KeySlot, expiry_unix: u64) {
        self.slot.store(slot_code(slot), Ordering::Relaxed);
        self.token_expiry_unix.store(expiry_unix, Ordering::Relaxed);
        self.with_machine(|m, _| m.renewed(now(), expiry_instant(expiry_unix)));
    }

    pub fn renewal_refused(&self, message: String) {
        self.with_machine(|m, _| m.renewal_refused(now(), message));
    }

    pub fn token_expiry_unix(&self) -> u64 {
        self.token_expiry_unix.load(Ordering::Relaxed)
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The broker is shutting down: no new requests; the session says
    /// Goodbye once the ones it holds are answered.
    pub fn drain(&self) {
        self.with_machine(|m, _| m.drain(now()));
    }

    /// Whether the router may give this session a new request.
    pub fn is_routable(&self) -> bool {
        self.lock().machine.is_routable()
    }

    /// Asks the session to end with `reason`. The first reason given wins.
    pub fn close(&self, reason: GoodbyeReason, message: impl Into<String>) {
        self.with_machine(|m, _| m.close(now(), reason, message));
    }

    /// The driver is done: the outbound stream ends once its last frame
    /// (the Goodbye, if any) is taken.
    pub fn finish(&self) {
        self.finished.cancel();
        if let Some(waker) = self.lock().outbound.take() {
            waker.wake();
        }
    }

    pub(crate) fn note_failure(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn note_success(&self) {
        self.failures.store(0, Ordering::Relaxed);
    }

    /// Lower is better: requests outstanding, plus a penalty for recent
    /// failures so that an agent failing fast does not attract the load.
    fn load_score(&self) -> u32 {
        self.in_flight() + 2 * self.failures.load(Ordering::Relaxed).min(16)
    }

    fn info(&self) -> pb::AgentInfo {
        pb::AgentInfo {
            agent_id: self.agent_id.clone(),
            agent_version: self.agent_version.clone(),
            connected_since_unix_ms: self.connected_since_ms,
            last_heartbeat_unix_ms: self.last_seen_unix_ms(),
            session_id: self.session_id.clone(),
            in_flight: self.in_flight(),
            remote_addr: self.remote_addr.map(|a| a.to_string()).unwrap_or_default(),
        }
    }
}

/// A token's expiry (Unix seconds, the wall clock) on the machine's
/// monotonic clock: read once, when the token is taken.
pub fn expiry_instant(expiry_unix: u64) -> std::time::Instant {
    let left_ms = expiry_unix
        .saturating_mul(1000)
        .saturating_sub(u64::try_from(now_unix_ms()).unwrap_or(0));
    now() + Duration::from_millis(left_ms)
}

/// What [`Registry::pick`] found.
pub(crate) enum Pick {
    Session(Arc<AgentSession>),
    /// Live agents exist, but each has its most requests in flight.
    Busy,
    /// No live agent that was not tried already.
    None,
}

/// The sessions this node holds, per tenant.
pub struct Registry {
    by_tenant: DashMap<String, Vec<Arc<AgentSession>>>,
    /// Per tenant and source address: other tenants' agents behind the same
    /// address (a shared egress NAT) do not use up a tenant's allowance.
    by_source: DashMap<(String, IpAddr), u32>,
    by_connection: DashMap<SocketAddr, u32>,
    limits: Limits,
    pub(crate) metrics: Arc<Metrics>,
    /// Told the tenant's name whenever a session of it comes or goes; the
    /// cluster uses it to listen for a tenant's requests exactly while this
    /// node holds one of its agents.
    presence: std::sync::OnceLock<mpsc::UnboundedSender<String>>,
}

impl Registry {
    pub fn new(limits: Limits, metrics: Arc<Metrics>) -> Registry {
        Registry {
            by_tenant: DashMap::new(),
            by_source: DashMap::new(),
            by_connection: DashMap::new(),
            limits,
            metrics,
            presence: std::sync::OnceLock::new(),
        }
    }

    /// Names of tenants whose sessions on this node changed, from now on.
    /// Only one watcher: a second call gets `None`.
    pub fn watch_presence(&self) -> Option<mpsc::UnboundedReceiver<String>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.presence.set(tx).ok().map(|()| rx)
    }

    fn presence_changed(&self, tenant: &str) {
        if let Some(tx) = self.presence.get() {
            let _ = tx.send(tenant.to_owned());
        }
    }

    /// Tenants with at least one session on this node.
    pub fn tenants_present(&self) -> Vec<String> {
        self.by_tenant.iter().map(|e| e.key().clone()).collect()
    }

    /// Adds a session within the session limits. A live session with the
    /// same agent id is replaced and told so: the agent reconnecting means
    /// the old one is half-open.
    pub fn register(&self, session: Arc<AgentSession>) -> Result<(), RelayError> {
        if let Some(addr) = session.remote_addr {
            // Checked before any entry is made, so refusals leave nothing
            // behind in the maps.
            let on_conn = self.by_connection.get(&addr).map_or(0, |n| *n);
            if on_conn >= self.limits.sessions_per_connection {
                return Err(RelayError::TooManyStreams(
                    self.limits.sessions_per_connection,
                ));
            }
            let source = (session.tenant.clone(), addr.ip());
            let mut from_source = self.by_source.entry(source.clone()).or_default();
            if *from_source >= self.limits.sessions_per_source {
                drop(from_source);
                self.by_source.remove_if(&source, |_, n| *n == 0);
                return Err(RelayError::TooManySessions {
                    scope: "source",
                    limit: self.limits.sessions_per_source,
                });
            }
            *from_source += 1;
            drop(from_source);
            *self.by_connection.entry(addr).or_default() += 1;
        }
        let mut list = self.by_tenant.entry(session.tenant.clone()).or_default();
        let replaced = list.iter().position(|s| s.agent_id == session.agent_id);
        if replaced.is_none() && list.len() >= self.limits.sessions_per_tenant as usize {
            drop(list);
            self.release_addr(&session);
            return Err(RelayError::TooManySessions {
                scope: "tenant",
                limit: self.limits.sessions_per_tenant,
            });
        }
        if let Some(pos) = replaced {
            let old = list.remove(pos);
            old.close(
                GoodbyeReason::Replaced,
                "a newer session of this agent id took over",
            );
        }
        list.push(Arc::clone(&session));
        self.metrics
            .set_agents_connected(&session.tenant, list.len());
        drop(list);
        self.presence_changed(&session.tenant);
        Ok(())
    }

    fn release_addr(&self, session: &AgentSession) {
        if let Some(addr) = session.remote_addr {
            if let Some(mut n) = self.by_connection.get_mut(&addr) {
                *n = n.saturating_sub(1);
            }
            self.by_connection.remove_if(&addr, |_, n| *n == 0);
            let source = (session.tenant.clone(), addr.ip());
            if let Some(mut n) = self.by_source.get_mut(&source) {
                *n = n.saturating_sub(1);
            }
            self.by_source.remove_if(&source, |_, n| *n == 0);
        }
    }

    /// Removes a session (if still registered) and releases its connection
    /// and source counts. Called once, when the session's driver ends.
    pub fn deregister(&self, session: &Arc<AgentSession>) {
        if let Some(mut list) = self.by_tenant.get_mut(&session.tenant) {
            list.retain(|s| !Arc::ptr_eq(s, session));
            self.metrics
                .set_agents_connected(&session.tenant, list.len());
        }
        self.by_tenant
            .remove_if(&session.tenant, |_, list| list.is_empty());
        self.release_addr(session);
        self.presence_changed(&session.tenant);
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
        for s in self.all_sessions() {
            s.close(reason, message);
        }
    }

    /// Every session on this node, for shutdown.
    pub fn all_sessions(&self) -> Vec<Arc<AgentSession>> {
        self.by_tenant
            .iter()
            .flat_map(|l| l.value().clone())
            .collect()
    }

    /// Requests outstanding on this node's sessions.
    pub fn total_in_flight(&self) -> u64 {
        self.by_tenant
            .iter()
            .flat_map(|l| {
                l.value()
                    .iter()
                    .map(|s| u64::from(s.in_flight()))
                    .collect::<Vec<_>>()
            })
            .sum()
    }

    /// The routable session with the lowest load score; ties at random so
    /// that equal agents share the load. Sessions in `exclude` were tried;
    /// with an `addressee`, only that agent's sessions are considered.
    /// A picked session has one more request in flight: the caller releases
    /// it when the request ends.
    pub(crate) fn pick(&self, tenant: &str, exclude: &[String], addressee: Option<&str>) -> Pick {
        let Some(list) = self.by_tenant.get(tenant) else {
            return Pick::None;
        };
        let limit = self.limits.max_in_flight_per_agent;
        let live: Vec<&Arc<AgentSession>> = list
            .iter()
            .filter(|s| {
                s.is_routable()
                    && !exclude.contains(&s.session_id)
                    && addressee.is_none_or(|id| s.agent_id == id)
            })
            .collect();
        if live.is_empty() {
            return Pick::None;
        }
        // One reading of each score: they move under concurrent requests,
        // and a second reading could leave no session at the minimum.
        let open: Vec<(u32, &Arc<AgentSession>)> = live
            .into_iter()
            .filter(|s| s.in_flight() < limit)
            .map(|s| (s.load_score(), s))
            .collect();
        let Some(best) = open.iter().map(|(score, _)| *score).min() else {
            return Pick::Busy;
        };
        let ties: Vec<_> = open
            .iter()
            .filter(|(score, _)| *score == best)
            .map(|(_, s)| *s)
            .collect();
        let start = fastrand::usize(..ties.len());
        // Reserve the slot here, atomically, so that concurrent requests
        // cannot both take an agent's last one.
        for i in 0..ties.len() {
            let session = ties[(start + i) % ties.len()];
            if session
                .in_flight
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < limit).then_some(n + 1)
                })
                .is_ok()
            {
                return Pick::Session(Arc::clone(session));
            }
        }
        Pick::Busy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(max_in_flight: u32) -> Registry {
        let limits = Limits {
            max_in_flight_per_agent: max_in_flight,
            ..Limits::default()
        };
        Registry::new(limits, Arc::new(Metrics::new()))
    }

    /// A session as the gateway makes it: its machine past the Hello.
    pub(crate) fn new_session(
        tenant: &str,
        agent_id: &str,
        remote_addr: Option<SocketAddr>,
    ) -> AgentSession {
        let config = session::broker::Config {
            heartbeat_interval: Duration::from_secs(20),
            hello_timeout: Duration::from_secs(10),
            ack_timeout: Duration::from_secs(10),
            max_envelope_bytes: 1024,
            unsolicited_replies_per_minute: 16,
        };
        let mut machine = BrokerSession::new(now(), config);
        machine.handle_frame(
            now(),
            pb::AgentFrame {
                frame: Some(pb::agent_frame::Frame::Hello(pb::Hello::default())),
            },
        );
        machine.poll_event();
        AgentSession::new(
            tenant.into(),
            agent_id.into(),
            "1".into(),
            remote_addr,
            KeySlot::Primary,
            u64::MAX / 2000,
            machine,
            pb::Welcome::default(),
        )
    }

    fn session(registry: &Registry, agent_id: &str) -> Arc<AgentSession> {
        let s = Arc::new(new_session("t", agent_id, None));
        registry.register(Arc::clone(&s)).unwrap();
        s
    }

    fn picked(registry: &Registry) -> String {
        match registry.pick("t", &[], None) {
            Pick::Session(s) => {
                s.in_flight.fetch_sub(1, Ordering::Relaxed);
                s.agent_id.clone()
            }
            Pick::Busy => "busy".into(),
            Pick::None => "none".into(),
        }
    }

    #[test]
    fn the_least_loaded_agent_is_picked_and_a_failing_one_avoided() {
        let r = registry(8);
        let a = session(&r, "a");
        let b = session(&r, "b");
        a.in_flight.store(3, Ordering::Relaxed);
        assert_eq!(picked(&r), "b");
        a.in_flight.store(0, Ordering::Relaxed);
        // Equal load: both are chosen, at random.
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..64 {
            seen.insert(picked(&r));
        }
        assert_eq!(seen.len(), 2);
        // b keeps failing: a gets the work even with a request in flight.
        b.note_failure();
        a.in_flight.store(1, Ordering::Relaxed);
        assert_eq!(picked(&r), "a");
        b.note_success();
        assert_eq!(picked(&r), "b");
    }

    /// Loads change while a pick looks at them: concurrent picks and
    /// releases must never find no session at the minimum (which once
    /// panicked the routing task under 64 requests in flight).
    #[test]
    fn concurrent_picks_under_changing_load() {
        let r = Arc::new(registry(64));
        let sessions = [session(&r, "a"), session(&r, "b")];
        std::thread::scope(|scope| {
            for _ in 0..4 {
                let r = Arc::clone(&r);
                scope.spawn(move || {
                    for _ in 0..100_000 {
                        match r.pick("t", &[], None) {
                            Pick::Session(s) => {
                                s.in_flight.fetch_sub(1, Ordering::AcqRel);
                            }
                            Pick::Busy => {}
                            Pick::None => panic!("two live sessions"),
                        }
                    }
                });
            }
        });
        for s in &sessions {
            assert_eq!(s.in_flight(), 0);
        }
    }

    #[test]
    fn an_addressed_pick_takes_only_the_named_agent() {
        let r = registry(1);
        let _a = session(&r, "a");
        let b = session(&r, "b");
        let _c = session(&r, "c");
        for _ in 0..16 {
            match r.pick("t", &[], Some("b")) {
                Pick::Session(s) => {
                    assert_eq!(s.agent_id, "b");
                    s.in_flight.fetch_sub(1, Ordering::Relaxed);
                }
                _ => panic!("b is live"),
            }
        }
        // b full: busy, although a and c have room.
        b.in_flight.store(1, Ordering::Relaxed);
        assert!(matches!(r.pick("t", &[], Some("b")), Pick::Busy));
        assert!(matches!(r.pick("t", &[], Some("d")), Pick::None));
        assert!(matches!(
            r.pick("t", std::slice::from_ref(&b.session_id), Some("b")),
            Pick::None
        ));
    }

    #[test]
    fn full_agents_are_busy_draining_ones_are_skipped() {
        let r = registry(1);
        let a = session(&r, "a");
        assert!(matches!(r.pick("t", &[], None), Pick::Session(_)));
        // The slot is taken: the next pick finds every agent full.
        assert!(matches!(r.pick("t", &[], None), Pick::Busy));
        a.in_flight.store(0, Ordering::Relaxed);
        a.drain();
        assert!(matches!(r.pick("t", &[], None), Pick::None));
        assert!(matches!(r.pick("other", &[], None), Pick::None));
    }

    fn from(tenant: &str, agent_id: &str, port: u16) -> Arc<AgentSession> {
        Arc::new(new_session(
            tenant,
            agent_id,
            Some(SocketAddr::from(([10, 0, 0, 1], port))),
        ))
    }

    /// Behind one address (a shared NAT), each tenant has its own
    /// allowance: other tenants' sessions do not lock a tenant out.
    #[test]
    fn sessions_per_source_are_counted_per_tenant() {
        let limits = Limits {
            sessions_per_source: 2,
            ..Limits::default()
        };
        let r = Registry::new(limits, Arc::new(Metrics::new()));
        for (i, tenant) in ["a", "a", "b", "b"].iter().enumerate() {
            r.register(from(tenant, &format!("x{i}"), i as u16))
                .unwrap();
        }
        assert!(matches!(
            r.register(from("a", "x9", 9)),
            Err(RelayError::TooManySessions {
                scope: "source",
                ..
            })
        ));
        let victim = from("c", "v", 10);
        r.register(Arc::clone(&victim))
            .expect("another tenant's own allowance");
        r.deregister(&victim);
        assert!(
            r.by_source
                .get(&("c".to_owned(), [10, 0, 0, 1].into()))
                .is_none()
        );
    }

    #[test]
    fn session_limits_per_tenant_and_a_replacement_is_not_counted() {
        let limits = Limits {
            sessions_per_tenant: 1,
            ..Limits::default()
        };
        let r = Registry::new(limits, Arc::new(Metrics::new()));
        let _a = session(&r, "a");
        let b = Arc::new(new_session("t", "b", None));
        assert!(matches!(
            r.register(b),
            Err(RelayError::TooManySessions {
                scope: "tenant",
                ..
            })
        ));
        let again = session(&r, "a");
        assert_eq!(r.sessions("t").len(), 1);
        assert!(Arc::ptr_eq(&r.sessions("t")[0], &again));
    }
}

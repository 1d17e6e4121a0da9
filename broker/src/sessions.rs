//! Live agent sessions, and the registry of the sessions this node holds.
//! Routing requests to them is in [`crate::routing`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;
use proto::pb::{self, BrokerFrame, GoodbyeReason};
use sas::KeySlot;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::config::Limits;
use crate::error::RelayError;
use crate::metrics::Metrics;
use crate::time::now_unix_ms;

/// Frames queued towards one agent before senders wait.
pub const OUTBOUND_QUEUE: usize = 64;

pub type Outbound = mpsc::Sender<Result<BrokerFrame, Status>>;

pub use crate::answer::AgentAnswer;

/// The two stages of one request's delivery, as the router waits for them.
pub(crate) struct Waiter {
    pub ack: Option<oneshot::Sender<()>>,
    pub answer: oneshot::Sender<AgentAnswer>,
}

/// One authenticated agent session.
pub struct AgentSession {
    pub session_id: String,
    pub tenant: String,
    pub agent_id: String,
    pub agent_version: String,
    pub remote_addr: Option<SocketAddr>,
    pub connected_since_ms: i64,
    /// Wall time of the agent's last frame, for people (ListAgents, the
    /// status page); never for deciding anything, since the wall clock can
    /// be stepped.
    last_seen_unix_ms: AtomicI64,
    /// The monotonic clock the silence decision reads: `last_seen_nanos`
    /// counts from `opened`, so one atomic holds an `Instant`.
    opened: Instant,
    last_seen_nanos: AtomicU64,
    slot: AtomicU8,
    token_expiry_unix: AtomicU64,
    pub(crate) in_flight: AtomicU32,
    /// Answers that failed or never came since the last good one: a failing
    /// agent is chosen less (see `Registry::pick`).
    pub(crate) failures: AtomicU32,
    pub(crate) next_correlation: AtomicU64,
    pub(crate) pending: Mutex<HashMap<u64, Waiter>>,
    /// The agent (or the broker's own shutdown) asked for no new requests.
    draining: AtomicBool,
    outbound: Outbound,
    closed: CancellationToken,
    finished: CancellationToken,
    close_reason: Mutex<Option<(GoodbyeReason, String)>>,
    /// Replies for requests nobody awaits from this session.
    pub unsolicited: PerMinute,
    /// Late answers not taken: their tenant's store writes at their bound.
    pub refused_busy: PerMinute,
}

/// A session with no frame from its agent for this many heartbeat
/// intervals is closed as silent.
pub const SILENT_AFTER_INTERVALS: u32 = 3;

/// The window [`PerMinute`] counts in.
pub const MINUTE: Duration = Duration::from_secs(60);

/// Events counted per minute (from the first of them), for a limit and for
/// logging them once a minute with how many there were.
#[derive(Default)]
pub struct PerMinute(Mutex<Option<(std::time::Instant, u32)>>);

impl PerMinute {
    /// Counts one: how many in the current minute, and when this one starts
    /// a new minute, how many the one before had.
    pub fn note(&self) -> (u32, Option<u32>) {
        let now = std::time::Instant::now();
        let mut window = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match window.as_mut() {
            Some((since, n)) if now.duration_since(*since) < MINUTE => {
                *n += 1;
                (*n, None)
            }
            _ => {
                let before = window.map(|(_, n)| n);
                *window = Some((now, 1));
                (1, before)
            }
        }
    }
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
        remote_addr: Option<SocketAddr>,
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
            last_seen_unix_ms: AtomicI64::new(now),
            opened: Instant::now(),
            last_seen_nanos: AtomicU64::new(0),
            slot: AtomicU8::new(slot_code(slot)),
            token_expiry_unix: AtomicU64::new(token_expiry_unix),
            in_flight: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            next_correlation: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            draining: AtomicBool::new(false),
            outbound,
            closed: CancellationToken::new(),
            finished: CancellationToken::new(),
            close_reason: Mutex::new(None),
            unsolicited: PerMinute::default(),
            refused_busy: PerMinute::default(),
        }
    }

    /// Notes a frame from the agent.
    pub fn touch(&self) {
        self.last_seen_unix_ms
            .store(now_unix_ms(), Ordering::Relaxed);
        // u64 nanoseconds run out after 584 years of one session.
        let since_open = self.opened.elapsed().as_nanos() as u64;
        self.last_seen_nanos
            .fetch_max(since_open, Ordering::Relaxed);
    }

    /// Wall time of the agent's last frame, for display only.
    pub fn last_seen_unix_ms(&self) -> i64 {
        self.last_seen_unix_ms.load(Ordering::Relaxed)
    }

    /// Whether the agent has sent nothing for more than
    /// [`SILENT_AFTER_INTERVALS`] heartbeat intervals, on the monotonic
    /// clock: a wall clock stepped forward must not close healthy sessions,
    /// nor one stepped back keep a dead one.
    pub fn is_silent(&self, heartbeat_interval: Duration) -> bool {
        let last = self.opened + Duration::from_nanos(self.last_seen_nanos.load(Ordering::Relaxed));
        Instant::now().saturating_duration_since(last) > heartbeat_interval * SILENT_AFTER_INTERVALS
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

    /// No new requests go to a draining session; it closes once the ones it
    /// holds are answered.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Whether the router may give this session a new request.
    pub fn is_routable(&self) -> bool {
        !self.closed.is_cancelled() && !self.is_draining()
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

    /// The agent acknowledged `correlation_id`: it has the request and works
    /// on it.
    pub fn acknowledge(&self, correlation_id: u64) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = pending.get_mut(&correlation_id).and_then(|w| w.ack.take()) {
            let _ = tx.send(());
        }
    }

    /// Delivers an answer to the request waiting on `correlation_id`, if any
    /// is still waiting on this session. Answers can only complete requests
    /// that were sent on the same session. Gives the answer back when nobody
    /// waits for it any more (a late answer).
    pub fn complete(&self, correlation_id: u64, answer: AgentAnswer) -> Result<(), AgentAnswer> {
        let waiter = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&correlation_id);
        match waiter {
            Some(w) => w.answer.send(answer),
            None => Err(answer),
        }
    }

    /// Fails every request still waiting on this session: the router sees
    /// the session gone, with or without an Ack.
    pub fn abandon_pending(&self) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
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
    pub(crate) ack_timeout: Duration,
    pub(crate) metrics: Arc<Metrics>,
    /// Told the tenant's name whenever a session of it comes or goes; the
    /// cluster uses it to listen for a tenant's requests exactly while this
    /// node holds one of its agents.
    presence: std::sync::OnceLock<mpsc::UnboundedSender<String>>,
}

impl Registry {
    pub fn new(limits: Limits, ack_timeout: Duration, metrics: Arc<Metrics>) -> Registry {
        Registry {
            by_tenant: DashMap::new(),
            by_source: DashMap::new(),
            by_connection: DashMap::new(),
            limits,
            ack_timeout,
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
            .agent_gauge(&session.tenant)
            .set(list.len() as i64);
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
                .agent_gauge(&session.tenant)
                .set(list.len() as i64);
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
        Registry::new(limits, Duration::from_secs(10), Arc::new(Metrics::new()))
    }

    fn session(registry: &Registry, agent_id: &str) -> Arc<AgentSession> {
        let (tx, rx) = mpsc::channel(1);
        std::mem::forget(rx);
        let s = Arc::new(AgentSession::new(
            "t".into(),
            agent_id.into(),
            "1".into(),
            None,
            KeySlot::Primary,
            u64::MAX,
            tx,
        ));
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

    /// Silence is judged on tokio's monotonic clock: with time paused the
    /// wall clock barely moves, yet three intervals of advanced time make a
    /// session silent, and any frame makes it heard again.
    #[tokio::test(start_paused = true)]
    async fn silence_follows_the_monotonic_clock() {
        let interval = Duration::from_secs(10);
        let r = registry(8);
        let s = session(&r, "a");
        let wall_before = now_unix_ms();
        tokio::time::advance(interval * SILENT_AFTER_INTERVALS).await;
        assert!(
            !s.is_silent(interval),
            "exactly three intervals is not yet silent"
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(s.is_silent(interval));
        assert!(
            now_unix_ms() - wall_before < 30_000,
            "the wall clock did not see 30 s pass"
        );
        s.touch();
        assert!(!s.is_silent(interval));
        tokio::time::advance(interval * 2).await;
        s.touch();
        tokio::time::advance(interval * 2).await;
        assert!(
            !s.is_silent(interval),
            "the last frame counts, not the first"
        );
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
        let (tx, rx) = mpsc::channel(1);
        std::mem::forget(rx);
        Arc::new(AgentSession::new(
            tenant.into(),
            agent_id.into(),
            "1".into(),
            Some(SocketAddr::from(([10, 0, 0, 1], port))),
            KeySlot::Primary,
            u64::MAX,
            tx,
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
        let r = Registry::new(limits, Duration::from_secs(10), Arc::new(Metrics::new()));
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
    fn events_are_counted_per_minute() {
        let count = PerMinute::default();
        assert_eq!(count.note(), (1, None));
        assert_eq!(count.note(), (2, None));
        *count.0.lock().unwrap() = Some((std::time::Instant::now() - MINUTE, 40));
        assert_eq!(count.note(), (1, Some(40)), "a new minute");
    }

    #[test]
    fn session_limits_per_tenant_and_a_replacement_is_not_counted() {
        let limits = Limits {
            sessions_per_tenant: 1,
            ..Limits::default()
        };
        let r = Registry::new(limits, Duration::from_secs(10), Arc::new(Metrics::new()));
        let _a = session(&r, "a");
        let (tx, _rx) = mpsc::channel(1);
        let b = Arc::new(AgentSession::new(
            "t".into(),
            "b".into(),
            "1".into(),
            None,
            KeySlot::Primary,
            u64::MAX,
            tx,
        ));
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

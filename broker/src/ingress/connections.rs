//! Every connection on the gRPC port, from accept to close: how many there
//! are against the descriptor budget, which ones have not yet proved a key
//! (per source address, oldest first), and when each one must close.
//!
//! A connection is *authenticated* once it carries a call whose token the
//! ingress layer verified, or an agent session the gateway welcomed. Until
//! then it is cheap to drop: it is counted against its source address, it
//! is the first to be evicted when descriptors run short, and it is closed
//! soon after it falls idle.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::metrics::Metrics;

/// How far past its budget the port may go while evicted connections are
/// still closing (their tasks close them at their next poll): accepting
/// pauses beyond, so the overshoot is bounded whatever the arrival rate.
const EVICTION_SLACK: usize = 16;

/// The deadlines and limits of the gRPC port's connections.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub first_request_timeout: Duration,
    pub unauthenticated_idle_timeout: Duration,
    pub idle_timeout: Duration,
    pub unauthenticated_per_source: usize,
    /// Connections the port may hold at once (descriptors minus the reserve).
    pub budget: usize,
}

/// Why a connection was closed by the broker rather than by its peer; the
/// `reason` label of `relay_connections_closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// No HTTP/2 preface and first request within `first_request_timeout`.
    FirstRequestTimeout,
    /// Never authenticated, idle for `unauthenticated_idle_timeout`.
    UnauthenticatedIdle,
    /// Authenticated, idle for `idle_timeout`.
    Idle,
    /// Its source address already holds its unauthenticated connections.
    SourceLimit,
    /// The descriptor budget was reached and it was the oldest
    /// unauthenticated connection.
    Evicted,
}

impl CloseReason {
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::FirstRequestTimeout => "first_request_timeout",
            CloseReason::UnauthenticatedIdle => "unauthenticated_idle",
            CloseReason::Idle => "idle",
            CloseReason::SourceLimit => "source_limit",
            CloseReason::Evicted => "evicted",
        }
    }
}

/// The gRPC port's connections.
pub struct Connections {
    settings: Settings,
    metrics: Arc<Metrics>,
    next_id: AtomicU64,
    inner: Mutex<Inner>,
    /// Signalled whenever a connection closes.
    room: Notify,
    /// When a close was last logged.
    noted: Mutex<Option<Instant>>,
}

/// How often closes by deadline or limit are logged at info level.
const NOTE_EVERY: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Inner {
    open: usize,
    /// Not yet authenticated, by id (= age): the eviction order.
    unauthenticated: BTreeMap<u64, (IpAddr, CancellationToken)>,
    unauthenticated_per_source: HashMap<IpAddr, usize>,
}

impl Inner {
    fn forget_unauthenticated(&mut self, id: u64) {
        if let Some((ip, _)) = self.unauthenticated.remove(&id)
            && let Some(n) = self.unauthenticated_per_source.get_mut(&ip)
        {
            *n -= 1;
            if *n == 0 {
                self.unauthenticated_per_source.remove(&ip);
            }
        }
    }
}

impl Connections {
    pub fn new(settings: Settings, metrics: Arc<Metrics>) -> Arc<Connections> {
        Arc::new(Connections {
            settings,
            metrics,
            next_id: AtomicU64::new(0),
            inner: Mutex::new(Inner::default()),
            room: Notify::new(),
            noted: Mutex::new(None),
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Connections open now (handshakes included).
    pub fn open(&self) -> usize {
        self.lock().open
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a connection the broker closed, and says so in the log at
    /// most once per `NOTE_EVERY` (each close is a debug line): a flood
    /// of them is one line, not a log that fills the disk.
    pub fn count_closed(&self, reason: CloseReason, peer: IpAddr) {
        self.metrics.connection_closed(reason.label());
        let mut last = self.noted.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|at| at.elapsed() >= NOTE_EVERY) {
            *last = Some(Instant::now());
            drop(last);
            info!(reason = reason.label(), %peer,
                "closing gRPC connections that hold resources without using them; relay_connections_closed_total{{reason}} counts them");
        }
    }

    /// Returns once the port may take another connection: it is under its
    /// budget, or holds an unauthenticated connection to evict. Until then
    /// the accept loop waits and the kernel's queue holds new connections.
    pub async fn room(&self) {
        let mut logged = false;
        loop {
            let notified = self.room.notified();
            {
                let inner = self.lock();
                let budget = self.settings.budget;
                if inner.open < budget
                    || (!inner.unauthenticated.is_empty() && inner.open < budget + EVICTION_SLACK)
                {
                    return;
                }
            }
            if !logged {
                info!(
                    budget = self.settings.budget,
                    "the gRPC port holds its descriptor budget of authenticated connections; accepting pauses until one closes"
                );
                logged = true;
            }
            notified.await;
        }
    }

    /// Takes in a connection just accepted from `peer`, or refuses it
    /// because its source holds its unauthenticated connections. At the
    /// budget, the oldest unauthenticated connection is told to close.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<Arc<Conn>> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let close = CancellationToken::new();
        let evicted = {
            let mut inner = self.lock();
            let from_peer = inner
                .unauthenticated_per_source
                .get(&peer)
                .copied()
                .unwrap_or(0);
            if from_peer >= self.settings.unauthenticated_per_source {
                drop(inner);
                self.count_closed(CloseReason::SourceLimit, peer);
                debug!(%peer, limit = self.settings.unauthenticated_per_source,
                    "connection closed: its source address holds its unauthenticated connections");
                return None;
            }
            let evicted = if inner.open >= self.settings.budget {
                let oldest = inner.unauthenticated.keys().next().copied();
                oldest.and_then(|oldest| {
                    let victim = inner.unauthenticated.get(&oldest).cloned();
                    inner.forget_unauthenticated(oldest);
                    victim
                })
            } else {
                None
            };
            inner.open += 1;
            inner.unauthenticated.insert(id, (peer, close.clone()));
            *inner.unauthenticated_per_source.entry(peer).or_default() += 1;
            evicted
        };
        if let Some((victim, token)) = evicted {
            token.cancel();
            self.count_closed(CloseReason::Evicted, victim);
            debug!(peer = %victim, budget = self.settings.budget,
                "connection evicted: the descriptor budget is reached and it had not authenticated");
        }
        Some(Arc::new(Conn {
            id,
            peer,
            connections: Arc::clone(self),
            close,
            authenticated: AtomicBool::new(false),
            requested: AtomicBool::new(false),
            streams: AtomicUsize::new(0),
            epoch: Instant::now(),
            idle_since_ms: AtomicU64::new(0),
        }))
    }
}

/// One connection's state, shared by its IO (which enforces the deadlines)
/// and the ingress layer (which sees its calls).
pub struct Conn {
    id: u64,
    peer: IpAddr,
    connections: Arc<Connections>,
    /// Cancelled to close the connection (eviction).
    close: CancellationToken,
    authenticated: AtomicBool,
    /// Whether any call has arrived yet.
    requested: AtomicBool,
    /// Calls in progress.
    streams: AtomicUsize,
    /// When the connection was accepted.
    epoch: Instant,
    /// Since `epoch`, when the last call ended.
    idle_since_ms: AtomicU64,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("id", &self.id)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl Conn {
    pub fn peer(&self) -> IpAddr {
        self.peer
    }

    /// Resolves when the broker wants the connection closed.
    pub fn closed(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.close.clone().cancelled_owned()
    }

    pub fn first_request_timeout(&self) -> Duration {
        self.connections.settings.first_request_timeout
    }

    pub fn is_authenticated(&self) -> bool {
        self.authenticated.load(Ordering::Acquire)
    }

    /// The connection proved a key: it no longer counts against its source
    /// address and is no longer evicted.
    pub fn authenticate(&self) {
        if !self.authenticated.swap(true, Ordering::AcqRel) {
            self.connections.lock().forget_unauthenticated(self.id);
        }
    }

    /// Calls in progress.
    pub fn calls(&self) -> usize {
        self.streams.load(Ordering::Acquire)
    }

    /// A call starts; the guard ends it.
    pub fn call(self: &Arc<Self>) -> CallGuard {
        self.requested.store(true, Ordering::Release);
        self.streams.fetch_add(1, Ordering::AcqRel);
        CallGuard(Arc::clone(self))
    }

    /// When `start` is when the connection was handed to HTTP/2: `Ok` with
    /// the next time to look again, or why it must close now.
    pub fn verdict(&self, start: Instant, now: Instant) -> Result<Instant, CloseReason> {
        let s = self.connections.settings;
        if self.streams.load(Ordering::Acquire) > 0 {
            // A call in progress; its end starts the idle clock.
            return Ok(now + s.unauthenticated_idle_timeout.min(s.idle_timeout));
        }
        if !self.requested.load(Ordering::Acquire) {
            let deadline = start + s.first_request_timeout;
            return if now >= deadline {
                Err(CloseReason::FirstRequestTimeout)
            } else {
                Ok(deadline)
            };
        }
        let idle_since =
            self.epoch + Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
        let (limit, reason) = if self.is_authenticated() {
            (s.idle_timeout, CloseReason::Idle)
        } else {
            (
                s.unauthenticated_idle_timeout,
                CloseReason::UnauthenticatedIdle,
            )
        };
        let deadline = idle_since + limit;
        if now >= deadline {
            Err(reason)
        } else {
            Ok(deadline)
        }
    }

    pub fn count_closed(&self, reason: CloseReason) {
        self.connections.count_closed(reason, self.peer);
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let mut inner = self.connections.lock();
        inner.open -= 1;
        inner.forget_unauthenticated(self.id);
        drop(inner);
        self.connections.room.notify_waiters();
    }
}

/// A call in progress on a connection.
pub struct CallGuard(Arc<Conn>);

impl CallGuard {
    pub fn conn(&self) -> &Arc<Conn> {
        &self.0
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        let conn = &self.0;
        let ms = conn.epoch.elapsed().as_millis() as u64;
        conn.idle_since_ms.store(ms, Ordering::Release);
        conn.streams.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(budget: usize, per_source: usize) -> Settings {
        Settings {
            first_request_timeout: Duration::from_secs(10),
            unauthenticated_idle_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            unauthenticated_per_source: per_source,
            budget,
        }
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn a_source_gets_its_unauthenticated_connections_and_no_more() {
        let c = Connections::new(settings(100, 2), Arc::new(Metrics::new()));
        let first = c.admit(A).unwrap();
        let _second = c.admit(A).unwrap();
        assert!(c.admit(A).is_none());
        assert!(c.admit(B).is_some(), "another source is not limited");
        first.authenticate();
        assert!(
            c.admit(A).is_some(),
            "an authenticated one no longer counts"
        );
    }

    #[test]
    fn at_the_budget_the_oldest_unauthenticated_connection_is_evicted() {
        let c = Connections::new(settings(3, 10), Arc::new(Metrics::new()));
        let agent = c.admit(A).unwrap();
        agent.authenticate();
        let old = c.admit(B).unwrap();
        let young = c.admit(B).unwrap();
        let newcomer = c.admit(A).unwrap();
        assert!(old.close.is_cancelled(), "the oldest stranger goes");
        assert!(!young.close.is_cancelled());
        assert!(!agent.close.is_cancelled(), "an agent is never evicted");
        drop((old, young, newcomer));
        assert_eq!(c.open(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_follow_what_the_connection_did() {
        let c = Connections::new(settings(10, 10), Arc::new(Metrics::new()));
        let conn = c.admit(A).unwrap();
        let start = Instant::now();
        assert_eq!(
            conn.verdict(start, start + Duration::from_secs(10)),
            Err(CloseReason::FirstRequestTimeout)
        );
        let call = conn.call();
        assert!(conn.verdict(start, start + Duration::from_secs(60)).is_ok());
        tokio::time::advance(Duration::from_secs(1)).await;
        drop(call);
        let now = Instant::now();
        assert!(conn.verdict(start, now + Duration::from_secs(9)).is_ok());
        assert_eq!(
            conn.verdict(start, now + Duration::from_secs(10)),
            Err(CloseReason::UnauthenticatedIdle)
        );
        conn.authenticate();
        assert!(conn.verdict(start, now + Duration::from_secs(299)).is_ok());
        assert_eq!(
            conn.verdict(start, now + Duration::from_secs(300)),
            Err(CloseReason::Idle)
        );
    }
}

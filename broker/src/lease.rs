//! A lease on this node's view of the tenants (cluster mode).
//!
//! A node acts on its in-memory copy of the tenants (write-back enabled,
//! agents not revoked, keys) without asking NATS. That copy is only as good
//! as the node's link to the cluster: cut off from a JetStream quorum (a
//! network split, NATS down) or with a watch that fell behind, it keeps
//! serving settings the other nodes changed long ago. So the copy is
//! trusted only while it is *confirmed*: the watch's check asks the tenants
//! stream for its last sequence (answered by the stream leader, which needs
//! a quorum of its replicas), and once the watch has applied at least that
//! sequence, everything written before the question was asked is in the
//! copy. Each confirmation renews the lease until `asked + bound`; past
//! that, the node refuses to act on the copy ([`Lapsed`]) until a new
//! confirmation, which again waits for the watch to catch up.
//!
//! Sans I/O: the watch code feeds it what it sees, so the rules can be
//! tested on paused time.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Confirmations waiting for the watch to catch up, at most: a watch this
/// far behind is made again anyway, and the newest answers are the ones
/// that renew furthest.
const MAX_PENDING: usize = 32;

/// Why the view could not be confirmed lately.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// Never confirmed since the node started following the cluster.
    NotYet,
    /// The stream's state could not be read from a leader backed by a
    /// quorum (NATS unreachable, split, or electing).
    NoQuorum(String),
    /// The stream has changes the watch has not applied yet.
    Behind { applied: u64, stream_last: u64 },
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cause::NotYet => f.write_str("not confirmed yet"),
            Cause::NoQuorum(why) => write!(f, "cannot reach a JetStream quorum: {why}"),
            Cause::Behind {
                applied,
                stream_last,
            } => write!(
                f,
                "the tenant watch has applied revision {applied}, the stream is at {stream_last}"
            ),
        }
    }
}

/// The lease has run out: the view may be stale.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "this node's copy of the tenants was last confirmed current {} ago, beyond its lease of {} ({cause})",
    humantime::format_duration(round(*.since)),
    humantime::format_duration(*.bound)
)]
pub struct Lapsed {
    /// Since the last confirmation was asked (or the node began following).
    pub since: Duration,
    pub bound: Duration,
    pub cause: Cause,
}

fn round(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64 / 100 * 100)
}

/// See the module documentation.
pub struct Lease {
    bound: Duration,
    inner: Mutex<Inner>,
}

struct Inner {
    /// The view holds every change made before this instant.
    confirmed_at: Option<Instant>,
    /// When the node began following (for `since` before any confirmation).
    began: Instant,
    /// The highest revision the watch applied.
    applied: u64,
    /// Answers not yet covered by `applied`: (asked at, stream's last).
    pending: VecDeque<(Instant, u64)>,
    /// Why the last check failed, if it did.
    failure: Option<String>,
}

impl Lease {
    /// A lease of `bound` on a view that has applied up to `applied`,
    /// unconfirmed yet.
    pub fn new(bound: Duration, applied: u64) -> Lease {
        Lease {
            bound,
            inner: Mutex::new(Inner {
                confirmed_at: None,
                began: Instant::now(),
                applied,
                pending: VecDeque::new(),
                failure: None,
            }),
        }
    }

    pub fn bound(&self) -> Duration {
        self.bound
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The stream's last sequence was `stream_last` when read with a
    /// question sent at `asked`, from a leader backed by a quorum.
    pub fn answered(&self, asked: Instant, stream_last: u64) {
        let mut inner = self.inner();
        inner.failure = None;
        if stream_last <= inner.applied {
            inner.renew(asked);
            return;
        }
        if inner.pending.len() == MAX_PENDING {
            inner.pending.pop_front();
        }
        inner.pending.push_back((asked, stream_last));
    }

    /// The last check could not confirm the view.
    pub fn unanswered(&self, why: impl Into<String>) {
        self.inner().failure = Some(why.into());
    }

    /// The watch applied the change at `revision`.
    pub fn applied(&self, revision: u64) {
        let mut inner = self.inner();
        inner.applied = inner.applied.max(revision);
        while let Some(&(asked, stream_last)) = inner.pending.front() {
            if stream_last > inner.applied {
                break;
            }
            inner.pending.pop_front();
            inner.renew(asked);
        }
    }

    /// Whether the view may be acted on now.
    pub fn check(&self) -> Result<(), Lapsed> {
        let inner = self.inner();
        let now = Instant::now();
        if let Some(at) = inner.confirmed_at
            && now < at + self.bound
        {
            return Ok(());
        }
        let cause = match (&inner.failure, inner.pending.back()) {
            (Some(why), _) => Cause::NoQuorum(why.clone()),
            (None, Some(&(_, stream_last))) => Cause::Behind {
                applied: inner.applied,
                stream_last,
            },
            (None, None) => Cause::NotYet,
        };
        Err(Lapsed {
            since: now.saturating_duration_since(inner.confirmed_at.unwrap_or(inner.began)),
            bound: self.bound,
            cause,
        })
    }
}

impl Inner {
    fn renew(&mut self, asked: Instant) {
        self.confirmed_at = Some(self.confirmed_at.map_or(asked, |at| at.max(asked)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUND: Duration = Duration::from_secs(10);

    async fn pass(d: Duration) {
        tokio::time::sleep(d).await;
    }

    #[tokio::test(start_paused = true)]
    async fn unconfirmed_until_the_first_answer() {
        let lease = Lease::new(BOUND, 7);
        assert_eq!(lease.check().unwrap_err().cause, Cause::NotYet);
        lease.answered(Instant::now(), 7);
        assert_eq!(lease.check(), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn lapses_a_bound_after_the_last_question_was_asked() {
        let lease = Lease::new(BOUND, 3);
        let asked = Instant::now();
        // The answer took a while: the lease counts from the question.
        pass(Duration::from_secs(2)).await;
        lease.answered(asked, 3);
        pass(Duration::from_millis(7_900)).await;
        assert_eq!(lease.check(), Ok(()));
        pass(Duration::from_millis(100)).await;
        lease.unanswered("timed out");
        let lapsed = lease.check().unwrap_err();
        assert_eq!(lapsed.since, BOUND);
        assert_eq!(lapsed.cause, Cause::NoQuorum("timed out".into()));
        assert!(
            lapsed
                .to_string()
                .contains("cannot reach a JetStream quorum")
        );
        // Renewed by the next answer.
        lease.answered(Instant::now(), 3);
        assert_eq!(lease.check(), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_ahead_of_the_watch_renews_only_once_it_caught_up() {
        let lease = Lease::new(BOUND, 5);
        lease.answered(Instant::now(), 5);
        pass(BOUND).await;
        // Cut off meanwhile; back, the stream has a revoke at 9 the watch
        // has not applied: still refused.
        let asked = Instant::now();
        lease.answered(asked, 9);
        let lapsed = lease.check().unwrap_err();
        assert_eq!(
            lapsed.cause,
            Cause::Behind {
                applied: 5,
                stream_last: 9
            }
        );
        lease.applied(8);
        assert!(lease.check().is_err());
        pass(Duration::from_millis(300)).await;
        lease.applied(9);
        assert_eq!(lease.check(), Ok(()));
        // Renewed from the question, not from the catching up.
        pass(BOUND - Duration::from_millis(300)).await;
        assert!(lease.check().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn steady_writes_still_renew() {
        // Every answer is a little ahead of the watch; each is covered a
        // moment later, and renews from when it was asked.
        let lease = Lease::new(BOUND, 0);
        for revision in 1..200u64 {
            lease.answered(Instant::now(), revision);
            pass(Duration::from_millis(50)).await;
            lease.applied(revision);
            pass(Duration::from_millis(150)).await;
            assert_eq!(lease.check(), Ok(()), "revision {revision}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_answer_never_shortens_the_lease() {
        let lease = Lease::new(BOUND, 1);
        let early = Instant::now();
        pass(Duration::from_secs(5)).await;
        lease.answered(Instant::now(), 1);
        lease.answered(early, 1);
        pass(Duration::from_secs(9)).await;
        assert_eq!(lease.check(), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn pending_answers_are_bounded() {
        let lease = Lease::new(BOUND, 0);
        for revision in 1..=(MAX_PENDING as u64 * 2) {
            lease.answered(Instant::now(), revision);
        }
        assert_eq!(lease.inner().pending.len(), MAX_PENDING);
        lease.applied(MAX_PENDING as u64 * 2);
        assert_eq!(lease.check(), Ok(()));
        assert!(lease.inner().pending.is_empty());
    }
}

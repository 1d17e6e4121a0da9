//! Requests of the last [`MINUTES`] minutes, per wall-clock minute: how many
//! ended with each outcome and a coarse latency histogram, for the operator
//! status page. Prometheus keeps the long history; this answers "what is
//! happening right now" without a Prometheus server.
//!
//! One slot per minute in a ring, each behind its own mutex: a request locks
//! one slot for a few increments and allocates nothing. A slot left over from
//! an older minute is cleared by the first request of its new minute. The
//! caller passes the time in, so tests can drive minute rollover.

use std::sync::Mutex;
use std::time::Duration;

/// Minutes kept, the current (partial) one included.
pub const MINUTES: usize = 15;

/// Outcome labels, as `relay_requests_total` counts them; "other" catches a
/// label added to [`crate::error::RelayError::outcome`] but not here.
pub const OUTCOMES: [&str; 12] = [
    "delivered",
    "no_agent_online",
    "agents_busy",
    "deadline_exceeded",
    "outcome_unknown",
    "agent_error",
    "rate_limited",
    "writeback_disabled",
    "envelope_too_large",
    "shutting_down",
    "refused",
    "other",
];

/// Upper bounds of the latency buckets, in microseconds (1-2-5 steps from
/// 0.5 ms to the longest deadline); slower requests fall in one more bucket.
const BUCKET_BOUNDS_US: [u64; 17] = [
    500,
    1_000,
    2_000,
    5_000,
    10_000,
    20_000,
    50_000,
    100_000,
    200_000,
    500_000,
    1_000_000,
    2_000_000,
    5_000_000,
    10_000_000,
    20_000_000,
    60_000_000,
    300_000_000,
];
const BUCKETS: usize = BUCKET_BOUNDS_US.len() + 1;

const MINUTE_MS: i64 = 60_000;

#[derive(Clone, Copy, Default)]
struct Slot {
    /// Unix minute (ms / 60 000) the counts belong to.
    minute: i64,
    counts: [u32; OUTCOMES.len()],
    latency: [u32; BUCKETS],
    max_latency_us: u64,
}

/// The ring of the last [`MINUTES`] minutes.
pub struct RecentRequests {
    slots: [Mutex<Slot>; MINUTES],
}

impl Default for RecentRequests {
    fn default() -> Self {
        Self::new()
    }
}

/// One minute's requests, as the status page shows them.
#[derive(Debug, Clone, PartialEq)]
pub struct MinuteStats {
    /// Start of the minute, Unix ms.
    pub start_unix_ms: i64,
    /// Per [`OUTCOMES`] label, in that order.
    pub counts: [u32; OUTCOMES.len()],
    /// Requests that had a latency (all but those refused before routing).
    pub timed: u32,
    pub p50: Option<Duration>,
    pub p95: Option<Duration>,
}

impl MinuteStats {
    pub fn total(&self) -> u32 {
        self.counts.iter().sum()
    }

    pub fn count(&self, outcome: &str) -> u32 {
        OUTCOMES
            .iter()
            .position(|o| *o == outcome)
            .map_or(0, |i| self.counts[i])
    }
}

fn outcome_index(outcome: &str) -> usize {
    OUTCOMES
        .iter()
        .position(|o| *o == outcome)
        .unwrap_or(OUTCOMES.len() - 1)
}

fn bucket_index(latency_us: u64) -> usize {
    BUCKET_BOUNDS_US
        .iter()
        .position(|bound| latency_us <= *bound)
        .unwrap_or(BUCKETS - 1)
}

impl RecentRequests {
    pub fn new() -> RecentRequests {
        RecentRequests {
            slots: std::array::from_fn(|_| Mutex::new(Slot::default())),
        }
    }

    /// Counts one request that ended with `outcome` after `latency` (none
    /// for requests refused before they were routed).
    pub fn record_at(&self, now_unix_ms: i64, outcome: &str, latency: Option<Duration>) {
        let minute = now_unix_ms.div_euclid(MINUTE_MS);
        let mut slot = self.slots[ring_index(minute)]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if slot.minute != minute {
            *slot = Slot {
                minute,
                ..Slot::default()
            };
        }
        let i = outcome_index(outcome);
        slot.counts[i] = slot.counts[i].saturating_add(1);
        if let Some(latency) = latency {
            let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
            let b = bucket_index(us);
            slot.latency[b] = slot.latency[b].saturating_add(1);
            slot.max_latency_us = slot.max_latency_us.max(us);
        }
    }

    /// [`Self::record_at`] now.
    pub fn record(&self, outcome: &str, latency: Option<Duration>) {
        self.record_at(crate::time::now_unix_ms(), outcome, latency);
    }

    /// The last [`MINUTES`] minutes up to the one holding `now_unix_ms`,
    /// oldest first; minutes without requests are zeros.
    pub fn snapshot_at(&self, now_unix_ms: i64) -> Vec<MinuteStats> {
        let current = now_unix_ms.div_euclid(MINUTE_MS);
        (0..MINUTES as i64)
            .rev()
            .map(|ago| {
                let minute = current - ago;
                let slot = *self.slots[ring_index(minute)]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                // A slot of another minute is stale (or, after the clock
                // stepped back, from the future): not this minute's.
                let slot = if slot.minute == minute {
                    slot
                } else {
                    Slot::default()
                };
                let timed = slot.latency.iter().sum();
                MinuteStats {
                    start_unix_ms: minute * MINUTE_MS,
                    counts: slot.counts,
                    timed,
                    p50: percentile(&slot, 0.50),
                    p95: percentile(&slot, 0.95),
                }
            })
            .collect()
    }

    pub fn snapshot(&self) -> Vec<MinuteStats> {
        self.snapshot_at(crate::time::now_unix_ms())
    }
}

fn ring_index(minute: i64) -> usize {
    minute.rem_euclid(MINUTES as i64) as usize
}

/// The `q` quantile, interpolated linearly inside its bucket (as
/// Prometheus' `histogram_quantile` does) and never above the slowest
/// request seen, so one request reports its own bucket's span at most.
fn percentile(slot: &Slot, q: f64) -> Option<Duration> {
    let total: u64 = slot.latency.iter().map(|&n| u64::from(n)).sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (i, &n) in slot.latency.iter().enumerate() {
        let n = u64::from(n);
        if n > 0 && (below + n) as f64 >= rank {
            let lower = if i == 0 { 0 } else { BUCKET_BOUNDS_US[i - 1] };
            let upper = BUCKET_BOUNDS_US
                .get(i)
                .copied()
                .unwrap_or(slot.max_latency_us);
            let within = ((rank - below as f64) / n as f64).clamp(0.0, 1.0);
            let us = lower as f64 + within * (upper.saturating_sub(lower)) as f64;
            return Some(Duration::from_micros((us as u64).min(slot.max_latency_us)));
        }
        below += n;
    }
    Some(Duration::from_micros(slot.max_latency_us))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2023-11-14T22:13:00Z, the start of a minute.
    const T0: i64 = 1_700_000_000_000 - 1_700_000_000_000 % MINUTE_MS;
    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn counts_land_in_their_minute_and_outcome() {
        let recent = RecentRequests::new();
        recent.record_at(T0 + 1_000, "delivered", Some(3 * MS));
        recent.record_at(T0 + 59_999, "delivered", Some(3 * MS));
        recent.record_at(T0 + 60_000, "no_agent_online", Some(MS));
        recent.record_at(T0 + 60_001, "rate_limited", None);
        let snap = recent.snapshot_at(T0 + 61_000);
        assert_eq!(snap.len(), MINUTES);
        let (previous, current) = (&snap[MINUTES - 2], &snap[MINUTES - 1]);
        assert_eq!(previous.start_unix_ms, T0);
        assert_eq!(current.start_unix_ms, T0 + MINUTE_MS);
        assert_eq!((previous.count("delivered"), previous.total()), (2, 2));
        assert_eq!(current.count("no_agent_online"), 1);
        assert_eq!(current.count("rate_limited"), 1);
        assert_eq!((current.total(), current.timed), (2, 1));
        assert!(snap[..MINUTES - 2].iter().all(|m| m.total() == 0));
    }

    #[test]
    fn an_unknown_outcome_label_is_counted_as_other() {
        let recent = RecentRequests::new();
        recent.record_at(T0, "something_new", None);
        assert_eq!(recent.snapshot_at(T0)[MINUTES - 1].count("other"), 1);
    }

    #[test]
    fn a_slot_is_reused_after_the_ring_wraps_and_old_minutes_drop_out() {
        let recent = RecentRequests::new();
        recent.record_at(T0, "delivered", Some(MS));
        // Still visible as the oldest minute 14 minutes later...
        let later = T0 + 14 * MINUTE_MS;
        assert_eq!(recent.snapshot_at(later)[0].count("delivered"), 1);
        // ...gone at 15, even though nothing overwrote its slot yet...
        let wrapped = T0 + 15 * MINUTE_MS;
        assert!(recent.snapshot_at(wrapped).iter().all(|m| m.total() == 0));
        // ...and the same slot, written in its new minute, starts from zero.
        recent.record_at(wrapped, "agent_error", Some(MS));
        let snap = recent.snapshot_at(wrapped);
        assert_eq!(snap[MINUTES - 1].count("agent_error"), 1);
        assert_eq!(snap[MINUTES - 1].count("delivered"), 0);
    }

    #[test]
    fn a_clock_stepped_back_does_not_show_future_counts() {
        let recent = RecentRequests::new();
        recent.record_at(T0 + 5 * MINUTE_MS, "delivered", Some(MS));
        assert!(recent.snapshot_at(T0).iter().all(|m| m.total() == 0));
    }

    #[test]
    fn percentiles_follow_the_distribution() {
        let recent = RecentRequests::new();
        // 90 fast requests (about 3 ms), 10 slow ones (about 700 ms).
        for _ in 0..90 {
            recent.record_at(T0, "delivered", Some(3 * MS));
        }
        for _ in 0..10 {
            recent.record_at(T0, "delivered", Some(700 * MS));
        }
        let m = &recent.snapshot_at(T0)[MINUTES - 1];
        let p50 = m.p50.unwrap();
        let p95 = m.p95.unwrap();
        assert!(p50 > 2 * MS && p50 <= 5 * MS, "p50 {p50:?}");
        assert!(p95 > 500 * MS && p95 <= 700 * MS, "p95 {p95:?}");
    }

    #[test]
    fn a_single_request_reports_at_most_its_own_latency() {
        let recent = RecentRequests::new();
        recent.record_at(T0, "delivered", Some(Duration::from_micros(1_200)));
        let m = &recent.snapshot_at(T0)[MINUTES - 1];
        assert!(m.p95.unwrap() <= Duration::from_micros(1_200));
        assert!(m.p50.unwrap() > MS);
        // Slower than the last bound: between that bound and the maximum.
        recent.record_at(
            T0 + MINUTE_MS,
            "deadline_exceeded",
            Some(Duration::from_secs(400)),
        );
        let p95 = recent.snapshot_at(T0 + MINUTE_MS)[MINUTES - 1].p95.unwrap();
        assert!(
            p95 > Duration::from_secs(300) && p95 <= Duration::from_secs(400),
            "{p95:?}"
        );
    }

    #[test]
    fn a_minute_without_timed_requests_has_no_percentiles() {
        let recent = RecentRequests::new();
        recent.record_at(T0, "rate_limited", None);
        let m = &recent.snapshot_at(T0)[MINUTES - 1];
        assert_eq!((m.p50, m.p95), (None, None));
    }
}

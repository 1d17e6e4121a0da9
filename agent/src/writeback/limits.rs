//! The per-account limit on password operations (self-service norm: a
//! handful per user per hour). It lives in the agent because only the agent
//! sees which account a request is for: the envelope hides it from the
//! broker.
//!
//! A sliding-window log: per account, the times of the attempts let through
//! in the last hour. That makes "at most N in any hour" exact and says when
//! the next attempt will be allowed; it costs at most N timestamps per
//! account, and accounts with no attempt in the window are swept out.
//!
//! An attempt the password policy refused (too short, too simple, in the
//! history, too soon) is taken back out of the count: it changed nothing
//! and taught nothing about the account's secret, and a user who needs a
//! few tries to meet the rules must not be shut out for an hour. A wrong
//! current password stays counted, so guessing it stays throttled.
//!
//! The state is in memory. A restart forgets the counts, which at worst lets
//! one more burst of N through per restart; persisting them would put a disk
//! write on every password operation for a limit that is a brake on guessing
//! and abuse, not a security boundary (the directory's own lockout policy is
//! that).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The window the limit counts in.
pub const WINDOW: Duration = Duration::from_secs(3600);

/// Idle accounts are swept out at most this often: the sweep walks every
/// entry, and between sweeps an idle entry costs only its few timestamps.
const SWEEP_EVERY: Duration = Duration::from_secs(300);

/// Milliseconds on a clock that never goes back; injectable so tests can
/// move time.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The stable identity of an account: its forest and objectGUID, so that a
/// user named by UPN and by source anchor, or renamed, shares one count.
pub type AccountKey = (String, [u8; 16]);

/// An attempt let through and counted, to be forgiven (once: it is not
/// Clone) if the password policy refuses it.
#[derive(Debug, PartialEq, Eq)]
pub struct Counted {
    account: AccountKey,
    at_ms: u64,
}

/// An attempt over the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub limit: u32,
    /// When the oldest counted attempt leaves the window.
    pub retry_after: Duration,
}

#[derive(Default)]
struct State {
    attempts: HashMap<AccountKey, VecDeque<u64>>,
    next_sweep_ms: u64,
}

pub struct AccountLimiter {
    /// Attempts allowed per account in [`WINDOW`]; 0 means unlimited.
    per_hour: u32,
    clock: Clock,
    state: Mutex<State>,
}

/// Milliseconds since the limiter was made, on the monotonic clock: the
/// window is elapsed time, and a wall clock stepped back must not hold an
/// account shut for longer, nor one stepped forward open it early.
fn monotonic_clock() -> Clock {
    let start = Instant::now();
    Arc::new(move || start.elapsed().as_millis() as u64)
}

impl AccountLimiter {
    /// A limiter on the monotonic clock.
    pub fn new(per_hour: u32) -> AccountLimiter {
        AccountLimiter::with_clock(per_hour, monotonic_clock())
    }

    pub fn with_clock(per_hour: u32, clock: Clock) -> AccountLimiter {
        AccountLimiter {
            per_hour,
            clock,
            state: Mutex::new(State::default()),
        }
    }

    /// Counts an attempt for `account`, or refuses it without counting: a
    /// refused attempt never reaches the directory, and counting it would
    /// let a client that keeps retrying hold the account shut forever.
    pub fn check(&self, account: &AccountKey) -> Result<Option<Counted>, Limited> {
        if self.per_hour == 0 {
            return Ok(None);
        }
        let now = (self.clock)();
        let window = WINDOW.as_millis() as u64;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if now >= state.next_sweep_ms {
            state
                .attempts
                .retain(|_, times| times.back().is_some_and(|&t| t + window > now));
            state.next_sweep_ms = now + SWEEP_EVERY.as_millis() as u64;
        }
        let times = state.attempts.entry(account.clone()).or_default();
        while times.front().is_some_and(|&t| t + window <= now) {
            times.pop_front();
        }
        if times.len() >= self.per_hour as usize {
            let oldest = times.front().copied().unwrap_or(now);
            return Err(Limited {
                limit: self.per_hour,
                retry_after: Duration::from_millis(oldest + window - now),
            });
        }
        times.push_back(now);
        Ok(Some(Counted {
            account: account.clone(),
            at_ms: now,
        }))
    }

    /// Takes a counted attempt back out of the count (one entry of its
    /// time: concurrent attempts in the same millisecond each hold one).
    pub fn forgive(&self, counted: Counted) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(times) = state.attempts.get_mut(&counted.account)
            && let Some(i) = times.iter().rposition(|&t| t == counted.at_ms)
        {
            times.remove(i);
        }
    }

    /// Accounts currently tracked (for tests and diagnostics).
    pub fn tracked(&self) -> usize {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.attempts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn at(time: &Arc<AtomicU64>) -> Clock {
        let time = Arc::clone(time);
        Arc::new(move || time.load(Ordering::SeqCst))
    }

    fn key(n: u8) -> AccountKey {
        ("contoso".into(), [n; 16])
    }

    #[test]
    fn the_window_slides_and_says_when_the_next_attempt_is_allowed() {
        let now = Arc::new(AtomicU64::new(1_000_000));
        let limiter = AccountLimiter::with_clock(2, at(&now));
        limiter.check(&key(1)).unwrap();
        now.fetch_add(10 * 60_000, Ordering::SeqCst);
        limiter.check(&key(1)).unwrap();
        let limited = limiter.check(&key(1)).unwrap_err();
        assert_eq!(limited.limit, 2);
        assert_eq!(limited.retry_after, Duration::from_secs(50 * 60));
        // Refused attempts are not counted: the first slot frees on time.
        now.fetch_add(50 * 60_000, Ordering::SeqCst);
        limiter.check(&key(1)).unwrap();
        assert!(limiter.check(&key(1)).is_err());
    }

    #[test]
    fn a_forgiven_attempt_frees_its_slot_and_only_its_own() {
        let now = Arc::new(AtomicU64::new(1_000_000));
        let limiter = AccountLimiter::with_clock(2, at(&now));
        limiter.check(&key(1)).unwrap();
        now.fetch_add(60_000, Ordering::SeqCst);
        let second = limiter.check(&key(1)).unwrap().unwrap();
        assert!(limiter.check(&key(1)).is_err());
        limiter.forgive(second);
        limiter.check(&key(1)).unwrap();
        // The oldest counted attempt still decides when the next is allowed.
        assert_eq!(
            limiter.check(&key(1)).unwrap_err().retry_after,
            Duration::from_secs(59 * 60)
        );
        // Another account's forgiven attempt frees nothing here.
        let other = limiter.check(&key(2)).unwrap().unwrap();
        limiter.forgive(other);
        assert!(limiter.check(&key(1)).is_err());
        // Unlimited: nothing is counted, nothing to forgive.
        assert_eq!(
            AccountLimiter::with_clock(0, at(&now)).check(&key(1)),
            Ok(None)
        );
    }

    #[test]
    fn zero_is_unlimited_and_idle_accounts_are_swept() {
        let now = Arc::new(AtomicU64::new(0));
        let unlimited = AccountLimiter::with_clock(0, at(&now));
        for _ in 0..100 {
            unlimited.check(&key(1)).unwrap();
        }
        assert_eq!(unlimited.tracked(), 0);

        let limiter = AccountLimiter::with_clock(5, at(&now));
        for n in 0..50 {
            limiter.check(&key(n)).unwrap();
        }
        assert_eq!(limiter.tracked(), 50);
        now.fetch_add(WINDOW.as_millis() as u64, Ordering::SeqCst);
        limiter.check(&key(200)).unwrap();
        assert_eq!(limiter.tracked(), 1, "idle accounts are forgotten");
    }
}

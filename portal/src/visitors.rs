//! Per-visitor and per-account limits on what reaches the broker. The
//! broker limits a whole tenant (`tenant_requests_per_minute`); without
//! these, one anonymous browser could spend that allowance and lock every
//! other user of the tenant out (issue 17, observation 4).
//!
//! A visitor is an IP address: the peer's, or, when the peer is one of
//! `limits.trusted_proxies`, the address that proxy put in
//! `X-Forwarded-For`. An account is the name the user typed, kept only as a
//! keyed hash. Both are token buckets in tables of bounded size.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;

use crate::AppState;
use crate::config::Limits;

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

/// Who is asking: the address the limits and the log lines use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Visitor(pub IpAddr);

impl std::fmt::Display for Visitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl FromRequestParts<AppState> for Visitor {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // Without a peer (a router called in-process) every request is one
        // visitor.
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
        let forwarded = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok());
        Ok(Visitor(visitor_address(
            peer,
            forwarded,
            &state.limits.trusted_proxies,
        )))
    }
}

/// The peer, unless it is a trusted proxy: then the last address in
/// `X-Forwarded-For` that no trusted proxy added (the ones before it are
/// whatever the client claimed).
pub fn visitor_address<'a>(
    peer: IpAddr,
    forwarded: impl Iterator<Item = &'a str>,
    trusted: &[IpAddr],
) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let hops: Vec<&str> = forwarded.flat_map(|v| v.split(',')).collect();
    for hop in hops.iter().rev() {
        match hop.trim().parse::<IpAddr>() {
            Ok(address) if trusted.contains(&address) => continue,
            Ok(address) => return address,
            // A proxy that writes something else is misconfigured: limit
            // the proxy itself rather than trust the rest.
            Err(_) => return peer,
        }
    }
    peer
}

/// Why a request was not sent, and when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub scope: Scope,
    pub retry_after: Duration,
    /// The first refusal since this visitor or account was last admitted:
    /// worth a log line (later ones are not).
    pub first: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Visitor,
    Account,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Visitor => "visitor",
            Scope::Account => "account",
        }
    }
}

/// The tables of buckets.
pub struct Limiter {
    visitors: Mutex<Buckets<IpAddr>>,
    /// Calls that could change the account; see [`Limiter::refund`].
    accounts: Mutex<Buckets<u64>>,
    /// Every call about the account, refunded or not.
    attempts: Mutex<Buckets<u64>>,
    /// Keys the account hash, so that the table holds no account names.
    hasher: RandomState,
}

impl Limiter {
    pub fn new(limits: &Limits) -> Limiter {
        Limiter {
            visitors: Mutex::new(Buckets::new(
                limits.visitor_requests_per_minute,
                MINUTE,
                limits.tracked_visitors,
            )),
            accounts: Mutex::new(Buckets::new(
                limits.account_requests_per_hour,
                HOUR,
                limits.tracked_accounts,
            )),
            attempts: Mutex::new(Buckets::new(
                limits.account_attempts_per_hour,
                HOUR,
                limits.tracked_accounts,
            )),
            hasher: RandomState::new(),
        }
    }

    /// Takes one call from the visitor's allowance and, when given, the
    /// account's (both of its buckets); takes nothing when any is spent.
    pub fn admit(
        &self,
        visitor: Visitor,
        account: Option<&str>,
        now: Instant,
    ) -> Result<(), Limited> {
        let account = account.map(|a| self.key(a));
        let mut visitors = self.visitors.lock().unwrap_or_else(|e| e.into_inner());
        let mut accounts = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
        let mut attempts = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        visitors
            .check(&visitor.0, now)
            .map_err(|(retry_after, first)| Limited {
                scope: Scope::Visitor,
                retry_after,
                first,
            })?;
        if let Some(account) = &account {
            for buckets in [&mut *accounts, &mut *attempts] {
                buckets
                    .check(account, now)
                    .map_err(|(retry_after, first)| Limited {
                        scope: Scope::Account,
                        retry_after,
                        first,
                    })?;
            }
            accounts.take(account, now);
            attempts.take(account, now);
        }
        visitors.take(&visitor.0, now);
        Ok(())
    }

    /// Gives back the account's call taken by [`Limiter::admit`], for a call
    /// that could not have changed it (a policy read, a password the policy
    /// refused): typing mistakes must not use up the allowance of the valid
    /// reset that follows. The attempt stays counted.
    pub fn refund(&self, account: &str, now: Instant) {
        let key = self.key(account);
        let mut accounts = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
        accounts.give_back(&key, now);
    }

    fn key(&self, account: &str) -> u64 {
        self.hasher.hash_one(account.trim().to_lowercase())
    }
}

/// Token buckets by key: `rate` tokens per `period`, at most `rate` held.
struct Buckets<K> {
    rate: u32,
    period: Duration,
    max_entries: usize,
    map: HashMap<K, Bucket>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
    refusal_logged: bool,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    fn new(rate: u32, period: Duration, max_entries: usize) -> Buckets<K> {
        Buckets {
            rate,
            period,
            max_entries,
            map: HashMap::new(),
        }
    }

    fn capacity(&self) -> f64 {
        f64::from(self.rate)
    }

    fn refilled(&self, bucket: &Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        let per_second = self.capacity() / self.period.as_secs_f64();
        (bucket.tokens + elapsed * per_second).min(self.capacity())
    }

    /// `Err((retry after, first refusal))` when the key has no token left.
    fn check(&mut self, key: &K, now: Instant) -> Result<(), (Duration, bool)> {
        if self.rate == 0 {
            return Ok(());
        }
        let Some(bucket) = self.map.get(key) else {
            return Ok(());
        };
        let tokens = self.refilled(bucket, now);
        if tokens >= 1.0 {
            return Ok(());
        }
        let per_second = self.capacity() / self.period.as_secs_f64();
        // Whole seconds, as Retry-After says it; the epsilon keeps float
        // noise from adding one.
        let seconds = ((1.0 - tokens) / per_second - 1e-6).ceil().max(1.0);
        let retry_after = Duration::from_secs(seconds as u64);
        let bucket = self.map.get_mut(key).expect("just found");
        let first = !bucket.refusal_logged;
        bucket.refusal_logged = true;
        Err((retry_after, first))
    }

    fn take(&mut self, key: &K, now: Instant) {
        if self.rate == 0 {
            return;
        }
        if !self.map.contains_key(key) && self.map.len() >= self.max_entries {
            self.make_room(now);
        }
        let capacity = self.capacity();
        let tokens = match self.map.get(key) {
            Some(bucket) => self.refilled(bucket, now),
            None => capacity,
        };
        self.map.insert(
            key.clone(),
            Bucket {
                tokens: tokens - 1.0,
                at: now,
                refusal_logged: false,
            },
        );
    }

    /// One token back, never beyond the capacity.
    fn give_back(&mut self, key: &K, now: Instant) {
        let capacity = self.capacity();
        let Some(bucket) = self.map.get(key) else {
            return;
        };
        let tokens = (self.refilled(bucket, now) + 1.0).min(capacity);
        self.map.insert(
            key.clone(),
            Bucket {
                tokens,
                at: now,
                refusal_logged: false,
            },
        );
    }

    /// Forgets the buckets that have filled up again (as good as absent);
    /// when none has, the one used least recently.
    fn make_room(&mut self, now: Instant) {
        let capacity = self.capacity();
        let full: Vec<K> = self
            .map
            .iter()
            .filter(|(_, b)| self.refilled(b, now) >= capacity)
            .map(|(k, _)| k.clone())
            .collect();
        if !full.is_empty() {
            for key in full {
                self.map.remove(&key);
            }
            return;
        }
        let oldest = self
            .map
            .iter()
            .min_by_key(|(_, b)| b.at)
            .map(|(k, _)| k.clone());
        if let Some(key) = oldest {
            self.map.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_minute: u32, per_hour: u32, tracked: usize) -> Limits {
        Limits {
            visitor_requests_per_minute: per_minute,
            account_requests_per_hour: per_hour,
            account_attempts_per_hour: 0,
            tracked_visitors: tracked,
            tracked_accounts: tracked,
            ..Limits::default()
        }
    }

    fn visitor(last: u8) -> Visitor {
        Visitor(IpAddr::from([192, 0, 2, last]))
    }

    #[test]
    fn a_visitor_gets_its_burst_then_waits_for_a_token() {
        let limiter = Limiter::new(&limits(6, 0, 100));
        let t0 = Instant::now();
        for _ in 0..6 {
            limiter.admit(visitor(1), Some("ada"), t0).unwrap();
        }
        let refused = limiter.admit(visitor(1), Some("ada"), t0).unwrap_err();
        assert_eq!(refused.scope, Scope::Visitor);
        assert!(refused.first);
        // Six per minute: one token every ten seconds.
        assert_eq!(refused.retry_after, Duration::from_secs(10));
        assert!(!limiter.admit(visitor(1), None, t0).unwrap_err().first);
        // Another visitor has its own allowance.
        limiter.admit(visitor(2), Some("ada"), t0).unwrap();
        let later = t0 + Duration::from_secs(10);
        limiter.admit(visitor(1), None, later).unwrap();
        assert!(limiter.admit(visitor(1), None, later).is_err());
    }

    #[test]
    fn an_account_is_limited_whoever_asks_and_costs_no_visitor_token_when_refused() {
        let limiter = Limiter::new(&limits(100, 3, 100));
        let t0 = Instant::now();
        for n in 0..3 {
            limiter.admit(visitor(n), Some("Ada@Contoso"), t0).unwrap();
        }
        let refused = limiter
            .admit(visitor(9), Some(" ada@contoso "), t0)
            .unwrap_err();
        assert_eq!(refused.scope, Scope::Account);
        assert_eq!(refused.retry_after, Duration::from_secs(1200));
        limiter
            .admit(visitor(9), Some("grace@contoso"), t0)
            .unwrap();
    }

    #[test]
    fn refunded_calls_do_not_use_up_the_account_but_attempts_stay_bounded() {
        let limiter = Limiter::new(&Limits {
            account_attempts_per_hour: 8,
            ..limits(100, 3, 100)
        });
        let t0 = Instant::now();
        // The policy read, two typos of the policy step, three weak
        // passwords: all given back.
        for _ in 0..6 {
            limiter.admit(visitor(1), Some("ada"), t0).unwrap();
            limiter.refund("ada", t0);
        }
        // The valid reset still goes, and two more.
        for _ in 0..2 {
            limiter.admit(visitor(1), Some("Ada"), t0).unwrap();
        }
        // The attempts bound holds even for refunded calls.
        let refused = limiter.admit(visitor(1), Some("ada"), t0).unwrap_err();
        assert_eq!(refused.scope, Scope::Account);
        // A refund never lifts an account above its burst.
        let other = Limiter::new(&limits(100, 2, 100));
        other.admit(visitor(1), Some("grace"), t0).unwrap();
        for _ in 0..5 {
            other.refund("grace", t0);
        }
        for _ in 0..2 {
            other.admit(visitor(1), Some("grace"), t0).unwrap();
        }
        assert!(other.admit(visitor(1), Some("grace"), t0).is_err());
    }

    #[test]
    fn the_tables_stay_bounded() {
        let limiter = Limiter::new(&limits(2, 2, 10));
        let t0 = Instant::now();
        for n in 0..=255 {
            limiter
                .admit(visitor(n), Some(&format!("user{n}")), t0)
                .unwrap();
        }
        assert!(limiter.visitors.lock().unwrap().map.len() <= 10);
        assert!(limiter.accounts.lock().unwrap().map.len() <= 10);
    }

    #[test]
    fn forwarded_for_counts_only_from_a_trusted_proxy() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let peer: IpAddr = "198.51.100.7".parse().unwrap();
        let header = ["203.0.113.9, 198.51.100.20"];
        // The header from anyone else is ignored.
        assert_eq!(visitor_address(peer, header.into_iter(), &[proxy]), peer);
        // From the proxy: the last hop it added, not what the client claimed.
        assert_eq!(
            visitor_address(proxy, header.into_iter(), &[proxy]),
            "198.51.100.20".parse::<IpAddr>().unwrap()
        );
        let chained = ["203.0.113.9", "198.51.100.20, 10.0.0.1"];
        assert_eq!(
            visitor_address(proxy, chained.into_iter(), &[proxy]),
            "198.51.100.20".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            visitor_address(proxy, ["junk"].into_iter(), &[proxy]),
            proxy
        );
        assert_eq!(visitor_address(proxy, [].into_iter(), &[proxy]), proxy);
    }
}

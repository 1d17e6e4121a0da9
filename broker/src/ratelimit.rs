//! Per-tenant request rate limit: a token bucket per tenant, refilled
//! continuously, as large as one minute's allowance. A burst of resets after
//! an outage passes; a portal stuck in a loop is stopped with RATE_LIMITED
//! and a retry time, and no other tenant notices.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

struct Bucket {
    tokens: f64,
    updated: Instant,
}

pub struct TenantRateLimit {
    /// A SIGHUP can change it (crate::reload).
    per_minute: AtomicU32,
    buckets: DashMap<String, Mutex<Bucket>>,
}

impl TenantRateLimit {
    /// `per_minute == 0` turns the limit off.
    pub fn new(per_minute: u32) -> TenantRateLimit {
        TenantRateLimit {
            per_minute: AtomicU32::new(per_minute),
            buckets: DashMap::new(),
        }
    }

    pub fn per_minute(&self) -> u32 {
        self.per_minute.load(Ordering::Relaxed)
    }

    /// Buckets already filled keep their tokens, capped at the new size at
    /// their next use.
    pub fn set_per_minute(&self, per_minute: u32) {
        self.per_minute.store(per_minute, Ordering::Relaxed);
    }

    /// Takes one request's token, or says how long until one is available.
    pub fn check(&self, tenant: &str, now: Instant) -> Result<(), Duration> {
        let per_minute = self.per_minute();
        if per_minute == 0 {
            return Ok(());
        }
        let capacity = f64::from(per_minute);
        let per_sec = capacity / 60.0;
        let entry = self.buckets.entry(tenant.to_owned()).or_insert_with(|| {
            Mutex::new(Bucket {
                tokens: capacity,
                updated: now,
            })
        });
        let mut b = entry.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(b.updated).as_secs_f64();
        b.tokens = (b.tokens + elapsed * per_sec).min(capacity);
        b.updated = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / per_sec))
        }
    }

    /// Forgets a deleted tenant's bucket.
    pub fn forget(&self, tenant: &str) {
        self.buckets.remove(tenant);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minute_of_burst_then_the_refill_rate() {
        let limit = TenantRateLimit::new(60);
        let t0 = Instant::now();
        for _ in 0..60 {
            limit.check("a", t0).unwrap();
        }
        let wait = limit.check("a", t0).unwrap_err();
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        // Another tenant is untouched.
        limit.check("b", t0).unwrap();
        // One second later, one more request.
        limit.check("a", t0 + Duration::from_secs(1)).unwrap();
        assert!(limit.check("a", t0 + Duration::from_secs(1)).is_err());
    }

    #[test]
    fn zero_is_unlimited() {
        let limit = TenantRateLimit::new(0);
        let t0 = Instant::now();
        for _ in 0..10_000 {
            limit.check("a", t0).unwrap();
        }
    }
}

//! How many refusal lines a source may cause: a token bucket per source
//! address (a burst of [`BURST`], then [`PER_SECOND`]), in a map of at most
//! [`MAX_SOURCES`]; past that, new sources share one bucket (`None`), so a
//! spread-out flood is bounded too.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

pub const BURST: f64 = 20.0;
pub const PER_SECOND: f64 = 1.0;
pub const MAX_SOURCES: usize = 4096;

/// Whether a refusal is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Write,
    /// Written, after a summary of the `n` this source had dropped.
    AfterDrops(u64),
    Drop,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
    dropped: u64,
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * PER_SECOND).min(BURST);
        self.last = now;
    }
}

#[derive(Debug, Default)]
pub struct Limiter {
    /// `None`: the sources that found the map full, and calls without one.
    buckets: HashMap<Option<IpAddr>, Bucket>,
}

impl Limiter {
    pub fn admit(&mut self, source: Option<IpAddr>, now: Instant) -> Admit {
        let key = if self.buckets.contains_key(&source) || self.make_room(now) {
            source
        } else {
            None
        };
        let bucket = self.buckets.entry(key).or_insert(Bucket {
            tokens: BURST,
            last: now,
            dropped: 0,
        });
        bucket.refill(now);
        if bucket.tokens < 1.0 {
            bucket.dropped += 1;
            return Admit::Drop;
        }
        bucket.tokens -= 1.0;
        match std::mem::take(&mut bucket.dropped) {
            0 => Admit::Write,
            n => Admit::AfterDrops(n),
        }
    }

    /// Whether a new source fits, after forgetting the sources whose
    /// buckets are full again with nothing dropped (they are as new).
    fn make_room(&mut self, now: Instant) -> bool {
        if self.buckets.len() < MAX_SOURCES {
            return true;
        }
        self.buckets.retain(|source, b| {
            b.refill(now);
            source.is_none() || b.tokens < BURST || b.dropped > 0
        });
        self.buckets.len() < MAX_SOURCES
    }

    /// The sources that dropped lines and have since been quiet long
    /// enough to refill their burst, with how many they dropped.
    pub fn recovered(&mut self, now: Instant) -> Vec<(Option<IpAddr>, u64)> {
        let mut out = Vec::new();
        for (source, b) in &mut self.buckets {
            b.refill(now);
            if b.dropped > 0 && b.tokens >= BURST {
                out.push((*source, std::mem::take(&mut b.dropped)));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_source_gets_its_burst_then_one_a_second_and_a_summary() {
        let mut l = Limiter::default();
        let ip = Some(IpAddr::from([10, 0, 0, 1]));
        let t0 = Instant::now();
        for _ in 0..20 {
            assert_eq!(l.admit(ip, t0), Admit::Write);
        }
        for _ in 0..100 {
            assert_eq!(l.admit(ip, t0), Admit::Drop);
        }
        // Another source is not affected.
        assert_eq!(l.admit(Some(IpAddr::from([10, 0, 0, 2])), t0), Admit::Write);
        assert_eq!(
            l.admit(ip, t0 + Duration::from_secs(1)),
            Admit::AfterDrops(100)
        );
        assert_eq!(l.admit(ip, t0 + Duration::from_secs(1)), Admit::Drop);
        assert!(l.recovered(t0 + Duration::from_secs(2)).is_empty());
        assert_eq!(l.recovered(t0 + Duration::from_secs(60)), [(ip, 1)]);
        assert!(l.recovered(t0 + Duration::from_secs(61)).is_empty());
    }

    #[test]
    fn the_map_of_sources_is_bounded() {
        let mut l = Limiter::default();
        let t0 = Instant::now();
        for i in 0..(MAX_SOURCES as u32 + 100) {
            let ip = Some(IpAddr::from(i.to_be_bytes()));
            for _ in 0..25 {
                l.admit(ip, t0);
            }
        }
        assert!(l.buckets.len() <= MAX_SOURCES + 1);
        // The overflow shares one bucket: its burst was spent long ago.
        assert_eq!(l.admit(Some(IpAddr::from([255, 1, 1, 1])), t0), Admit::Drop);
    }
}

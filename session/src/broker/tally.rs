//! Events counted per minute on the caller's monotonic `now`, for a limit
//! and for logging them once a minute with how many there were.

use std::time::{Duration, Instant};

/// The window a [`PerMinute`] counts in.
pub const MINUTE: Duration = Duration::from_secs(60);

/// A count of events in the minute that began with the first of them.
#[derive(Debug, Default, Clone)]
pub struct PerMinute(Option<(Instant, u32)>);

/// What [`PerMinute::note`] counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Events in the current minute, this one included.
    pub count: u32,
    /// When this one began a new minute: how many the minute before had.
    pub before: Option<u32>,
}

impl PerMinute {
    /// Counts one event at `now`.
    pub fn note(&mut self, now: Instant) -> Tally {
        match self.0.as_mut() {
            Some((since, n)) if now.saturating_duration_since(*since) < MINUTE => {
                *n += 1;
                Tally {
                    count: *n,
                    before: None,
                }
            }
            _ => {
                let before = self.0.map(|(_, n)| n);
                self.0 = Some((now, 1));
                Tally { count: 1, before }
            }
        }
    }
}

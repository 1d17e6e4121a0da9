//! The wall clock, read in one place for every crate of the relay.
//!
//! Wall time is for what people read and what travels on the wire (token
//! expiry, envelope timestamps, `broker_time_unix_ms`, "connected since");
//! elapsed-time decisions such as heartbeat silence use a monotonic
//! `Instant` instead, because the wall clock can be stepped.
//!
//! No function here panics: a clock set before 1970, or one the OS cannot
//! read against the epoch, reads as 0 (the epoch). Every consumer already
//! treats 0 as "no time known" or as far in the past, which is the safe way
//! to be wrong about a clock.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch; 0 before 1970.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// [`unix_ms`] as the `int64` that relay.v1 messages carry; 0 before 1970.
pub fn unix_ms_i64() -> i64 {
    // u64 milliseconds pass i64::MAX only after some 292 million years.
    unix_ms() as i64
}

/// Whole seconds since the Unix epoch (token expiry); 0 before 1970.
pub fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_agree() {
        let secs = unix_secs();
        let ms = unix_ms();
        // Late 2020s or after, and the two units tell the same time.
        assert!(secs > 1_700_000_000, "{secs}");
        assert!(ms / 1000 >= secs && ms / 1000 - secs <= 1, "{ms} vs {secs}");
        assert!(unix_ms_i64() >= ms as i64);
    }
}

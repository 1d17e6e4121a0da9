//! The broker's names for the one wall clock in `proto::time`. Only the
//! edges of the broker read it; the token and protocol code take the time
//! as an argument, and elapsed-time decisions (heartbeat silence) use a
//! monotonic `Instant` instead.

pub use proto::time::unix_ms_i64 as now_unix_ms;
pub use proto::time::unix_secs as now_unix_secs;

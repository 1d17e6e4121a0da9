//! Node-to-node forwarding in cluster mode (PROTOCOL.md "Cluster mode:
//! between broker nodes"), without I/O or clock.
//!
//! A node that cannot give a portal's request to an agent of its own
//! publishes it for the node that holds the agent, and reads that node's
//! `ForwardEvent`s on a reply inbox. [`Forwarding`] is the forwarding node's
//! machine for one request, over all its attempts: it decides when another
//! node may be asked (the serving node said nothing reached an agent), when
//! the answer is final, and when the serving node's silence makes the
//! outcome unknown. [`Serving`] is the serving node's: its checks of the
//! forwarded request, Accepted, Progress on every change and every
//! heartbeat, and exactly one end. [`Presence`] is every node's view of
//! which live node holds which agents. The NATS code is their driver.

mod origin;
mod presence;
mod serving;

use std::time::Duration;

pub use origin::{Event, Forwarding, Outcome};
pub use presence::Presence;
pub use serving::{Served, Serving};

/// Serving nodes asked in turn for one request, at most.
pub const MAX_FORWARDS: u32 = 3;
/// Heartbeats a serving node may miss before it is presumed dead.
pub const MISSED_BEATS: u32 = 3;
/// How long after the deadline the serving node's final word is awaited, at
/// most (it computes the same deadline on receipt: give the word time to
/// travel back).
pub const FINAL_WORD: Duration = Duration::from_millis(500);

/// The settings of forwarding, the same on every node.
#[derive(Debug, Clone)]
pub struct Config {
    /// How often a serving node reports progress (`forward_heartbeat`).
    pub heartbeat: Duration,
    /// Attempts per request ([`MAX_FORWARDS`]).
    pub max_attempts: u32,
    /// See [`FINAL_WORD`].
    pub final_word: Duration,
}

impl Config {
    /// The defaults with this `forward_heartbeat`.
    pub fn with_heartbeat(heartbeat: Duration) -> Config {
        Config {
            heartbeat,
            max_attempts: MAX_FORWARDS,
            final_word: FINAL_WORD,
        }
    }

    /// How long a serving node may be silent.
    pub fn silence(&self) -> Duration {
        self.heartbeat * MISSED_BEATS
    }
}

/// Milliseconds for a `u32` field, saturating.
fn millis(d: Duration) -> u32 {
    d.as_millis().min(u128::from(u32::MAX)) as u32
}

//! The agent's and the broker's ends of a session (`session::agent`,
//! `session::broker`) connected through a simulated network on a fake
//! clock, driven by a script the input spells out: two bytes a step (time
//! steps, requests, connection cuts, one-way or two-way black holes, delays,
//! duplicated frames, Goodbyes the broker decides, broker drain, slower
//! handlers), up to 256 steps, then a healthy network for five simulated
//! minutes.
//!
//! Oracles (the world is `session/tests/sim/mod.rs`, shared with the
//! seeded replay in `session/tests/pair.rs`, which CI runs):
//! - a request is applied at most once;
//! - every relayed attempt ends exactly once; a request gets at most one
//!   outcome; it is re-routed only if it was never applied;
//! - an answer is the agent's own for that request; acknowledged means
//!   applied;
//! - after healing: every request has an outcome (answered, unknown, or no
//!   agent), every applied request's answer is in the broker's record, the
//!   agent's outbox holds nothing unconfirmed, and a session is open again.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../session/tests/sim/mod.rs"]
mod sim;

fuzz_target!(|data: &[u8]| {
    let steps = (data.len() / 2).min(256);
    sim::Pair::script(&mut sim::Bytes(data), steps);
});

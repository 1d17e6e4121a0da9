//! Both ends of a session connected through a simulated network on a fake
//! clock (`sim`): end-to-end delivery rules under scripted faults, then the
//! same invariants over a few hundred seeded random scripts (what the fuzz
//! target `session_pair` explores at length).
//!
//! The invariants, checked as the world runs and after it heals: a request
//! is applied at most once; every relayed attempt ends exactly once; a
//! request is re-routed only if it was never applied; an answer is the
//! agent's own for that request; acknowledged means applied; after healing
//! every request has one outcome (answered, unknown, or no agent), every
//! applied request's answer is in the broker's record, the agent's outbox
//! holds nothing unconfirmed, and a session is open again.

mod sim;

use std::time::Duration;

use proto::pb::GoodbyeReason;
use sim::{HEARTBEAT, Outcome, Pair, Seeded};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn a_request_is_answered_and_its_receipt_empties_the_outbox() {
    let mut pair = Pair::new();
    assert!(pair.agent.is_open());
    let id = pair.submit();
    pair.run(secs(1));
    assert_eq!(pair.outcome(&id), Some(Outcome::Answered));
    assert_eq!(pair.applied(&id), 1);
    assert_eq!(pair.answer(&id), Some(&sim::answer_of(&id)[..]));
    assert_eq!(pair.agent.outbox().unconfirmed(), 0);
    pair.heal_and_check();
}

#[test]
fn an_answer_lost_after_the_ack_is_unknown_then_arrives_late() {
    let mut pair = Pair::new();
    pair.set_work_time(secs(5));
    let id = pair.submit();
    pair.run(secs(1));
    assert_eq!(pair.applied(&id), 1, "acked and being applied");
    pair.cut();
    assert_eq!(
        pair.outcome(&id),
        Some(Outcome::Unknown { acknowledged: true })
    );
    assert!(pair.answer(&id).is_none());
    // The handler finishes between sessions; the next session posts it.
    pair.run(secs(10));
    assert_eq!(pair.answer(&id), Some(&sim::answer_of(&id)[..]));
    assert_eq!(pair.agent.outbox().unconfirmed(), 0);
    assert_eq!(pair.applied(&id), 1);
    pair.heal_and_check();
}

#[test]
fn a_request_that_never_reached_the_agent_is_unknown_unacknowledged() {
    let mut pair = Pair::new();
    pair.black_hole(true, false);
    let id = pair.submit();
    pair.run(secs(11));
    assert_eq!(
        pair.outcome(&id),
        Some(Outcome::Unknown {
            acknowledged: false
        }),
        "no Ack within the ack timeout"
    );
    assert_eq!(pair.applied(&id), 0);
    pair.heal_and_check();
}

#[test]
fn silence_ends_the_session_and_the_agent_reconnects() {
    let mut pair = Pair::new();
    assert_eq!(pair.sessions_opened, 1);
    pair.black_hole(true, true);
    pair.run(HEARTBEAT * 3 - secs(1));
    assert!(pair.agent.is_open(), "not yet three intervals");
    pair.run(secs(1));
    assert!(!pair.agent.is_open(), "three silent intervals end it");
    pair.run(sim::RECONNECT + secs(1));
    assert!(pair.agent.is_open());
    assert_eq!(pair.sessions_opened, 2);
    let id = pair.submit();
    pair.run(secs(1));
    assert_eq!(pair.outcome(&id), Some(Outcome::Answered));
    pair.heal_and_check();
}

#[test]
fn a_duplicated_request_is_applied_once_and_answered_once() {
    let mut pair = Pair::new();
    pair.duplicate(true, true);
    let id = pair.submit();
    pair.run(secs(2));
    assert_eq!(pair.applied(&id), 1);
    assert_eq!(pair.outcome(&id), Some(Outcome::Answered));
    pair.heal_and_check();
}

#[test]
fn a_draining_broker_says_goodbye_and_the_agent_comes_back() {
    let mut pair = Pair::new();
    pair.set_work_time(secs(3));
    let id = pair.submit();
    pair.run(Duration::from_millis(100));
    pair.broker_drain();
    // The request in flight finishes; then SHUTTING_DOWN, and a reconnect.
    pair.run(secs(5));
    assert_eq!(pair.outcome(&id), Some(Outcome::Answered));
    assert_eq!(pair.sessions_opened, 2);
    pair.heal_and_check();
}

#[test]
fn every_goodbye_the_broker_decides_is_followed_by_a_new_session() {
    for reason in [
        GoodbyeReason::Replaced,
        GoodbyeReason::KeyRotated,
        GoodbyeReason::AgentRevoked,
        GoodbyeReason::TenantDeleted,
        GoodbyeReason::ShuttingDown,
    ] {
        let mut pair = Pair::new();
        pair.broker_close(reason);
        pair.run(Duration::from_millis(10));
        assert!(!pair.agent.is_open(), "{reason:?}");
        pair.run(secs(2));
        assert_eq!(pair.sessions_opened, 2, "{reason:?}");
        pair.heal_and_check();
    }
}

#[test]
fn seeded_random_scripts_keep_every_invariant() {
    let (mut answered, mut unknown_acked, mut unknown, mut no_agent, mut late) = (0, 0, 0, 0, 0);
    for seed in 0..300u64 {
        // A failing invariant panics inside, naming the request; the guard
        // names the seed, which reproduces the run.
        let guard = NameOnPanic(seed);
        let pair = Pair::script(&mut Seeded(seed), 80);
        std::mem::forget(guard);
        for (id, outcome) in pair.outcomes() {
            match outcome {
                Outcome::Answered => answered += 1,
                Outcome::Unknown { acknowledged: true } => unknown_acked += 1,
                Outcome::Unknown {
                    acknowledged: false,
                } => unknown += 1,
                Outcome::NoAgent => no_agent += 1,
            }
            if matches!(outcome, Outcome::Unknown { .. }) && pair.answer(&id).is_some() {
                late += 1;
            }
        }
    }
    // The scripts reach every outcome, late answers included: otherwise
    // the invariants above would hold vacuously.
    eprintln!(
        "answered {answered}, unknown (acked) {unknown_acked}, unknown {unknown}, no agent {no_agent}, answered late {late}"
    );
    for (what, n) in [
        ("answered", answered),
        ("unknown after an Ack", unknown_acked),
        ("unknown without an Ack", unknown),
        ("no agent", no_agent),
        ("answered late", late),
    ] {
        assert!(n > 0, "no run ended {what}");
    }
}

/// Prints the seed of a run that panicked.
struct NameOnPanic(u64);

impl Drop for NameOnPanic {
    fn drop(&mut self) {
        eprintln!("the failing run: seed {}", self.0);
    }
}

#[test]
fn fuzz_inputs_replay_as_scripts() {
    // What the fuzz target does with its input, on a few fixed inputs: an
    // empty one, one that runs dry mid-step, and bytes from a generator.
    let mut generated = Vec::new();
    let mut source = Seeded(7);
    for _ in 0..400 {
        generated.push(sim::Source::byte(&mut source));
    }
    for input in [
        &[][..],
        &[3][..],
        &[3, 0, 5, 0, 3, 1, 2, 200][..],
        &generated[..],
    ] {
        Pair::script(&mut sim::Bytes(input), (input.len() / 2).min(256));
    }
}

/// The seeded replay at length, by hand: `PAIR_SEEDS=100000 cargo test -p
/// session --test pair -- --ignored` (seeds from 1000 up, past CI's).
#[test]
#[ignore = "long; run by hand"]
fn many_seeded_scripts_keep_every_invariant() {
    let n: u64 = std::env::var("PAIR_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    for seed in 1000..1000 + n {
        let guard = NameOnPanic(seed);
        Pair::script(&mut Seeded(seed), 256);
        std::mem::forget(guard);
    }
}

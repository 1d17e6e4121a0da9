//! The rules for routing one request over a node's sessions (Delivery,
//! points 1-3), attempt by attempt, on a simulated clock.

use std::time::{Duration, Instant};

use session::broker::{Answer, Next, RequestEnd, Route, Routed};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn an_answer_ends_routing() {
    let t0 = Instant::now();
    let mut r = Route::new(true, false, t0 + secs(30));
    let end = RequestEnd::Answered {
        answer: Answer::Envelope(b"x".to_vec()),
        rtt: secs(1),
    };
    assert_eq!(
        r.attempt_ended(t0, "dc01", end),
        Next::Done(Routed::Answered {
            answer: Answer::Envelope(b"x".to_vec()),
            rtt: secs(1)
        })
    );
}

#[test]
fn not_delivered_tries_another_session_until_the_deadline() {
    let t0 = Instant::now();
    let mut r = Route::new(true, false, t0 + secs(30));
    assert_eq!(
        r.attempt_ended(t0, "dc01", RequestEnd::NotDelivered),
        Next::TryAnother
    );
    assert_eq!(
        r.attempt_ended(t0 + secs(30), "dc01", RequestEnd::NotDelivered),
        Next::Done(Routed::DeadlineExceeded)
    );
}

#[test]
fn no_session_left_is_no_agent_online_or_busy() {
    let t0 = Instant::now();
    let mut r = Route::new(true, false, t0 + secs(30));
    assert_eq!(r.nowhere(false), Routed::NoAgentOnline);
    assert_eq!(r.nowhere(true), Routed::AgentsBusy);
}

/// Sent, no Ack, the session gone: the addressed agent may have it, so it
/// goes nowhere else (Delivery point 2).
#[test]
fn an_addressed_request_that_may_have_arrived_is_outcome_unknown() {
    let t0 = Instant::now();
    let mut r = Route::new(true, false, t0 + secs(30));
    assert_eq!(
        r.attempt_ended(
            t0,
            "dc01",
            RequestEnd::Lost {
                acknowledged: false
            }
        ),
        Next::Done(Routed::OutcomeUnknown {
            agent_id: "dc01".into(),
            acknowledged: false
        })
    );
}

/// After an Ack the request is never sent again (Delivery point 3).
#[test]
fn an_acknowledged_request_whose_answer_is_lost_is_outcome_unknown() {
    let t0 = Instant::now();
    let mut r = Route::new(true, false, t0 + secs(30));
    assert_eq!(
        r.attempt_ended(t0, "dc01", RequestEnd::Lost { acknowledged: true }),
        Next::Done(Routed::OutcomeUnknown {
            agent_id: "dc01".into(),
            acknowledged: true
        })
    );
    let mut r = Route::new(true, false, t0 + secs(30));
    assert_eq!(
        r.attempt_ended(
            t0 + secs(30),
            "dc01",
            RequestEnd::DeadlineExceeded {
                sent: true,
                acknowledged: true
            }
        ),
        Next::Done(Routed::OutcomeUnknown {
            agent_id: "dc01".into(),
            acknowledged: true
        })
    );
}

#[test]
fn the_deadline_before_anything_left_the_broker_is_deadline_exceeded() {
    let t0 = Instant::now();
    let mut r = Route::new(true, false, t0 + secs(30));
    assert_eq!(
        r.attempt_ended(
            t0 + secs(30),
            "dc01",
            RequestEnd::DeadlineExceeded {
                sent: false,
                acknowledged: false
            }
        ),
        Next::Done(Routed::DeadlineExceeded)
    );
}

/// A ping changes nothing: a lost one tries another agent, and an unknown
/// outcome is only a timeout.
#[test]
fn a_lost_ping_tries_another_agent_and_never_is_unknown() {
    let t0 = Instant::now();
    let mut r = Route::new(false, true, t0 + secs(30));
    assert_eq!(
        r.attempt_ended(
            t0,
            "a",
            RequestEnd::Lost {
                acknowledged: false
            }
        ),
        Next::TryAnother
    );
    assert_eq!(r.nowhere(false), Routed::NoAgentOnline);
    assert_eq!(
        r.attempt_ended(t0, "b", RequestEnd::Lost { acknowledged: true }),
        Next::Done(Routed::DeadlineExceeded)
    );
}

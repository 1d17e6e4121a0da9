//! Node-to-node forwarding on a simulated clock: one test per outcome of the
//! forwarding node's machine, and the serving node's reporting. Time is a
//! base `Instant` plus durations; nothing sleeps.

use std::time::{Duration, Instant};

use proto::pb::{self, ForwardFailureKind as Kind, Operation, forward_event};
use session::forward::{Config, Event, Forwarding, Outcome, Served, Serving};

const BEAT: Duration = Duration::from_secs(1);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn request(operation: Operation) -> pb::ForwardedRequest {
    pb::ForwardedRequest {
        tenant: "t".into(),
        request_id: "r1".into(),
        operation: operation as i32,
        agent_id: if operation == Operation::Ping {
            String::new()
        } else {
            "dc01".into()
        },
        ..Default::default()
    }
}

fn forwarding(t0: Instant, operation: Operation, deadline: Duration) -> Forwarding {
    Forwarding::new(
        t0,
        Config::with_heartbeat(BEAT),
        request(operation),
        t0 + deadline,
    )
}

fn event(e: forward_event::Event) -> pb::ForwardEvent {
    pb::ForwardEvent { event: Some(e) }
}

fn accepted(node: &str) -> pb::ForwardEvent {
    event(forward_event::Event::Accepted(pb::ForwardAccepted {
        node: node.into(),
    }))
}

fn progress(agent_id: &str, acknowledged: bool) -> pb::ForwardEvent {
    event(forward_event::Event::Progress(pb::ForwardProgress {
        agent_id: agent_id.into(),
        acknowledged,
    }))
}

fn failure(kind: Kind) -> pb::ForwardFailure {
    pb::ForwardFailure {
        kind: kind as i32,
        ..Default::default()
    }
}

fn failed(kind: Kind) -> pb::ForwardEvent {
    event(forward_event::Event::Failure(failure(kind)))
}

fn events(f: &mut Forwarding) -> Vec<Event> {
    std::iter::from_fn(|| f.poll_event()).collect()
}

fn done(f: &mut Forwarding) -> Outcome {
    match events(f).pop() {
        Some(Event::Done(outcome)) => outcome,
        other => panic!("not done: {other:?}"),
    }
}

#[test]
fn answered_through_the_serving_node() {
    let t0 = Instant::now();
    let mut f = forwarding(t0, Operation::ResetPassword, ms(10_000));
    let sent = f.poll_transmit().expect("the first attempt");
    assert_eq!(sent.timeout_ms, 10_000);
    assert!(f.poll_transmit().is_none());
    f.handle_frame(t0 + ms(5), accepted("b"));
    f.handle_frame(t0 + ms(6), progress("dc01", false));
    f.handle_frame(t0 + ms(7), progress("dc01", true));
    let reply = pb::ForwardReply {
        agent_id: "dc01".into(),
        envelope: b"sealed".to_vec(),
        ..Default::default()
    };
    f.handle_frame(
        t0 + ms(8),
        event(forward_event::Event::Reply(reply.clone())),
    );
    assert_eq!(
        done(&mut f),
        Outcome::Answered {
            reply,
            node: Some("b".into())
        }
    );
    assert_eq!(f.poll_timeout(), None);
}

#[test]
fn nothing_reached_an_agent_so_another_node_is_asked_up_to_three_times() {
    let t0 = Instant::now();
    let mut f = forwarding(t0, Operation::ResetPassword, ms(10_000));
    f.poll_transmit().unwrap();
    f.handle_frame(t0 + ms(100), failed(Kind::ShuttingDown));
    assert_eq!(
        events(&mut f),
        [Event::NotSent(failure(Kind::ShuttingDown))]
    );
    let second = f.poll_transmit().expect("a second attempt");
    assert_eq!(second.timeout_ms, 9_900, "the time left, not the budget");
    f.handle_frame(t0 + ms(200), failed(Kind::NoAgentOnline));
    f.poll_transmit().expect("a third attempt");
    f.handle_frame(t0 + ms(300), failed(Kind::AgentsBusy));
    assert!(f.poll_transmit().is_none(), "three attempts at most");
    assert_eq!(f.attempts(), 3);
    assert_eq!(
        done(&mut f),
        Outcome::NotDelivered {
            last: Some(failure(Kind::AgentsBusy))
        }
    );
}

#[test]
fn no_responders_means_no_node_holds_the_agent() {
    let t0 = Instant::now();
    let mut f = forwarding(t0, Operation::ResetPassword, ms(10_000));
    f.poll_transmit().unwrap();
    f.no_responders(t0);
    assert_eq!(done(&mut f), Outcome::NotDelivered { last: None });

    // After a node said it had nothing: that node's failure is the answer.
    let mut f = forwarding(t0, Operation::ResetPassword, ms(10_000));
    f.handle_frame(t0, failed(Kind::AgentsBusy));
    f.no_responders(t0);
    assert_eq!(
        done(&mut f),
        Outcome::NotDelivered {
            last: Some(failure(Kind::AgentsBusy))
        }
    );
}

#[test]
fn no_further_attempt_past_the_deadline() {
    let t0 = Instant::now();
    let mut f = forwarding(t0, Operation::ResetPassword, ms(1_000));
    f.handle_frame(t0 + ms(1_000), failed(Kind::NoAgentOnline));
    assert!(f.poll_transmit().is_none());
    assert_eq!(
        done(&mut f),
        Outcome::NotDelivered {
            last: Some(failure(Kind::NoAgentOnline))
        }
    );
    let mut late = forwarding(t0, Operation::ResetPassword, ms(0));
    assert!(late.poll_transmit().is_none());
    assert_eq!(done(&mut late), Outcome::NotDelivered { last: None });
}

#[test]
fn definite_failures_are_passed_on_as_they_are() {
    let t0 = Instant::now();
    for kind in [
        Kind::DeadlineExceeded,
        Kind::OutcomeUnknown,
        Kind::AgentError,
        Kind::Invalid,
        Kind::Unspecified,
    ] {
        let mut f = forwarding(t0, Operation::ResetPassword, ms(10_000));
        f.handle_frame(t0, accepted("b"));
        f.handle_frame(t0, failed(kind));
        assert_eq!(
            done(&mut f),
            Outcome::Failed {
                failure: failure(kind),
                node: Some("b".into())
            },
            "{kind:?}"
        );
        assert!(f.poll_transmit().is_none(), "{kind:?} is never retried");
    }
}

#[test]
fn a_silent_serving_node_makes_the_outcome_unknown() {
    let t0 = Instant::now();
    let mut f = forwarding(t0, Operation::ResetPassword, ms(60_000));
    f.handle_frame(t0 + ms(10), accepted("b"));
    f.handle_frame(t0 + ms(20), progress("dc01", true));
    assert_eq!(f.poll_timeout(), Some(t0 + ms(20) + BEAT * 3));
    f.handle_timeout(t0 + ms(19) + BEAT * 3);
    assert!(!f.is_done());
    f.handle_timeout(t0 + ms(20) + BEAT * 3);
    assert_eq!(
        done(&mut f),
        Outcome::Lost {
            node: Some("b".into()),
            agent_id: Some("dc01".into()),
            acknowledged: true
        }
    );
}

#[test]
fn silence_before_any_word_is_unknown_too() {
    let t0 = Instant::now();
    let mut f = forwarding(t0, Operation::ResetPassword, ms(60_000));
    f.handle_timeout(t0 + BEAT * 3);
    assert_eq!(
        done(&mut f),
        Outcome::Lost {
            node: None,
            agent_id: None,
            acknowledged: false
        }
    );
}

#[test]
fn a_silent_node_serving_a_ping_is_a_deadline_exceeded() {
    let t0 = Instant::now();
    let mut f = forwarding(t0, Operation::Ping, ms(60_000));
    f.handle_frame(t0, accepted("b"));
    f.handle_timeout(t0 + BEAT * 3);
    assert_eq!(done(&mut f), Outcome::DeadlineExceeded);
}

/// Heartbeats keep a node alive, but not past the deadline plus its final
/// word's way back: min(3 heartbeats, 500 ms).
#[test]
fn the_final_word_is_awaited_only_shortly_after_the_deadline() {
    let t0 = Instant::now();
    let mut f = forwarding(t0, Operation::ResetPassword, ms(2_500));
    f.handle_frame(t0, accepted("b"));
    for n in 1..=3 {
        f.handle_frame(t0 + BEAT * n, progress("dc01", false));
    }
    assert_eq!(f.poll_timeout(), Some(t0 + ms(3_000)));
    f.handle_timeout(t0 + ms(3_000));
    assert!(matches!(
        done(&mut f),
        Outcome::Lost {
            acknowledged: false,
            ..
        }
    ));
}

#[test]
fn an_undecodable_message_proves_the_node_alive() {
    let t0 = Instant::now();
    let mut f = forwarding(t0, Operation::ResetPassword, ms(60_000));
    f.undecodable(t0 + BEAT * 2);
    f.handle_frame(t0 + BEAT * 4, pb::ForwardEvent { event: None });
    f.handle_timeout(t0 + BEAT * 6);
    assert!(!f.is_done());
    assert_eq!(f.poll_timeout(), Some(t0 + BEAT * 7));
}

#[test]
fn an_unreachable_cluster_or_a_closed_inbox() {
    let t0 = Instant::now();
    let mut f = forwarding(t0, Operation::ResetPassword, ms(60_000));
    f.unavailable(t0);
    assert_eq!(done(&mut f), Outcome::ClusterUnavailable);
    let mut f = forwarding(t0, Operation::ResetPassword, ms(60_000));
    f.handle_frame(t0, progress("dc01", false));
    f.inbox_closed(t0);
    assert!(matches!(
        done(&mut f),
        Outcome::Lost {
            agent_id: Some(_),
            ..
        }
    ));
}

fn serving(t0: Instant, request: Option<pb::ForwardedRequest>, draining: bool) -> Serving {
    Serving::new(
        t0,
        "b",
        BEAT,
        Duration::from_secs(300),
        "t",
        request,
        draining,
    )
}

fn published(s: &mut Serving) -> Vec<forward_event::Event> {
    std::iter::from_fn(|| s.poll_transmit())
        .filter_map(|e| e.event)
        .collect()
}

fn failure_kind(events: &[forward_event::Event]) -> Option<i32> {
    match events {
        [forward_event::Event::Failure(f)] => Some(f.kind),
        _ => None,
    }
}

#[test]
fn the_serving_node_refuses_what_it_cannot_route() {
    let t0 = Instant::now();
    let mut s = serving(t0, None, false);
    assert_eq!(failure_kind(&published(&mut s)), Some(Kind::Invalid as i32));
    assert!(s.is_done());
    let mut other = request(Operation::ResetPassword);
    other.tenant = "other".into();
    let mut s = serving(t0, Some(other), false);
    assert_eq!(failure_kind(&published(&mut s)), Some(Kind::Invalid as i32));
    let mut s = serving(t0, Some(request(Operation::ResetPassword)), true);
    assert_eq!(
        failure_kind(&published(&mut s)),
        Some(Kind::ShuttingDown as i32)
    );
    assert_eq!(s.poll_event(), Some(Served::Refused(Kind::ShuttingDown)));
    let mut s = serving(t0, Some(request(Operation::Unspecified)), false);
    assert_eq!(failure_kind(&published(&mut s)), Some(Kind::Invalid as i32));
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn the_serving_node_reports_progress_on_change_and_every_heartbeat() {
    let t0 = Instant::now();
    let mut r = request(Operation::ResetPassword);
    r.timeout_ms = 5_000;
    let mut s = serving(t0, Some(r.clone()), false);
    assert!(matches!(
        &published(&mut s)[..],
        [forward_event::Event::Accepted(a)] if a.node == "b"
    ));
    assert_eq!(
        s.poll_event(),
        Some(Served::Route {
            request: r,
            operation: Operation::ResetPassword,
            deadline: t0 + ms(5_000)
        })
    );
    s.progress(t0 + ms(1), Some("dc01"), false);
    s.progress(t0 + ms(2), Some("dc01"), false);
    assert_eq!(published(&mut s).len(), 1, "only changes");
    s.progress(t0 + ms(3), Some("dc01"), true);
    assert_eq!(published(&mut s).len(), 1);
    assert_eq!(s.poll_timeout(), Some(t0 + BEAT));
    s.handle_timeout(t0 + BEAT);
    assert!(matches!(
        &published(&mut s)[..],
        [forward_event::Event::Progress(p)] if p.acknowledged && p.agent_id == "dc01"
    ));
    s.finish(
        t0 + ms(1500),
        forward_event::Event::Reply(pb::ForwardReply::default()),
    );
    s.finish(
        t0 + ms(1500),
        forward_event::Event::Failure(failure(Kind::Invalid)),
    );
    s.handle_timeout(t0 + BEAT * 2);
    assert!(
        matches!(&published(&mut s)[..], [forward_event::Event::Reply(_)]),
        "exactly one end, nothing after it"
    );
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn the_serving_node_caps_the_deadline() {
    let t0 = Instant::now();
    let mut r = request(Operation::Ping);
    r.timeout_ms = u32::MAX;
    let mut s = serving(t0, Some(r), false);
    assert!(matches!(
        s.poll_event(),
        Some(Served::Route { deadline, .. }) if deadline == t0 + Duration::from_secs(300)
    ));
}

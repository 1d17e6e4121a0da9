//! Node-to-node forwarding on a simulated clock: one test per outcome of the
//! forwarding node's machine, and the serving node's reporting. Time is a
//! base `Instant` plus durations; nothing sleeps.

use std::time::{Duration, Instant};

use proto::pb::{self, ForwardFailureKind as Kind, Operation, forward_event};
use session::forward::{Config, Event, Forwarding, Outcome, Presence, Served, Serving};

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

/// The events, with the Confirms (ForwardAcks to publish) left out.
fn done(f: &mut Forwarding) -> Outcome {
    let all = events(f);
    let mut all: Vec<_> = all.into_iter().filter(|e| *e != Event::Confirm).collect();
    match all.pop() {
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
    assert_eq!(events(&mut f), [Event::Confirm], "the go-ahead");
    f.handle_frame(t0 + ms(5), accepted("b"));
    assert_eq!(events(&mut f), [], "one go-ahead per attempt");
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
        events(&mut f),
        [
            Event::Confirm,
            Event::Done(Outcome::Answered {
                reply,
                node: Some("b".into())
            })
        ],
        "the Reply's receipt, then the end"
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
    f.no_responders(t0, false);
    assert_eq!(done(&mut f), Outcome::NotDelivered { last: None });

    // After a node said it had nothing: that node's failure is the answer.
    let mut f = forwarding(t0, Operation::ResetPassword, ms(10_000));
    f.handle_frame(t0, failed(Kind::AgentsBusy));
    f.no_responders(t0, false);
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
    f.handle_timeout(t0 + ms(19) + BEAT * 3, true);
    assert!(!f.is_done());
    f.handle_timeout(t0 + ms(20) + BEAT * 3, true);
    assert_eq!(
        done(&mut f),
        Outcome::Lost {
            node: Some("b".into()),
            agent_id: Some("dc01".into()),
            acknowledged: true
        }
    );
}

/// The serving node routes only after the go-ahead: silence before
/// Accepted proves that no agent got the request.
#[test]
fn silence_before_accepted_with_nobody_announced_is_no_agent_online() {
    let t0 = Instant::now();
    let mut f = forwarding(t0, Operation::ResetPassword, ms(60_000));
    f.poll_transmit().unwrap();
    f.handle_timeout(t0 + BEAT * 3, false);
    assert_eq!(done(&mut f), Outcome::NotDelivered { last: None });
    assert!(f.poll_transmit().is_none(), "nothing sent again");
}

/// A node cut off from NATS (its connection still listed by the server, so
/// no no-responders) is asked again while its presence lasts, and the
/// request ends NO_AGENT_ONLINE once attempts or presence run out.
#[test]
fn silence_before_accepted_while_a_node_is_announced_asks_again() {
    let t0 = Instant::now();
    let mut f = forwarding(t0, Operation::ResetPassword, ms(60_000));
    f.poll_transmit().unwrap();
    f.handle_timeout(t0 + BEAT * 3, true);
    assert!(!f.is_done());
    let second = f.poll_transmit().expect("another attempt");
    assert_eq!(second.timeout_ms, 57_000);
    f.handle_timeout(t0 + BEAT * 6, false);
    assert_eq!(done(&mut f), Outcome::NotDelivered { last: None });
    assert_eq!(f.attempts(), 2);
}

#[test]
fn silence_before_accepted_ends_after_three_attempts_at_most() {
    let t0 = Instant::now();
    let mut f = forwarding(t0, Operation::Ping, ms(60_000));
    for n in 1..=3 {
        f.poll_transmit().expect("an attempt");
        f.handle_timeout(t0 + BEAT * 3 * n, true);
    }
    assert!(f.poll_transmit().is_none());
    assert_eq!(done(&mut f), Outcome::NotDelivered { last: None });
}

/// A node's NATS server died: NATS says no responders while the node
/// resubscribes, but its presence still holds the agent. Published again
/// every quarter heartbeat, not counted as attempts.
#[test]
fn no_responders_while_a_node_is_announced_publishes_again() {
    let t0 = Instant::now();
    let mut f = forwarding(t0, Operation::ResetPassword, ms(10_000));
    f.poll_transmit().unwrap();
    f.no_responders(t0 + ms(1), true);
    assert!(!f.is_done());
    assert_eq!(f.poll_timeout(), Some(t0 + ms(251)));
    f.handle_timeout(t0 + ms(250), true);
    assert!(f.poll_transmit().is_none(), "not before the backoff");
    f.handle_timeout(t0 + ms(251), true);
    f.poll_transmit().expect("published again");
    f.no_responders(t0 + ms(252), true);
    f.handle_timeout(t0 + ms(502), true);
    f.poll_transmit().expect("and again");
    assert_eq!(f.attempts(), 1, "the same attempt");
    f.handle_frame(t0 + ms(510), accepted("c"));
    f.handle_frame(
        t0 + ms(520),
        event(forward_event::Event::Reply(pb::ForwardReply::default())),
    );
    assert!(matches!(done(&mut f), Outcome::Answered { .. }));
}

#[test]
fn no_responders_once_the_presence_lapsed_or_near_the_deadline() {
    let t0 = Instant::now();
    let mut f = forwarding(t0, Operation::ResetPassword, ms(10_000));
    f.poll_transmit().unwrap();
    f.no_responders(t0, true);
    f.handle_timeout(t0 + ms(250), false);
    assert_eq!(done(&mut f), Outcome::NotDelivered { last: None });
    let mut f = forwarding(t0, Operation::ResetPassword, ms(200));
    f.poll_transmit().unwrap();
    f.no_responders(t0, true);
    assert_eq!(done(&mut f), Outcome::NotDelivered { last: None });
}

/// After the go-ahead a Failure NO_AGENT_ONLINE (the serving node never got
/// it) still lets another node be asked.
#[test]
fn a_go_ahead_that_never_arrived_is_reported_and_asked_again() {
    let t0 = Instant::now();
    let mut f = forwarding(t0, Operation::ResetPassword, ms(10_000));
    f.poll_transmit().unwrap();
    f.handle_frame(t0 + ms(5), accepted("c"));
    f.handle_frame(t0 + BEAT, failed(Kind::NoAgentOnline));
    assert!(f.poll_transmit().is_some());
}

#[test]
fn a_silent_node_serving_a_ping_is_a_deadline_exceeded() {
    let t0 = Instant::now();
    let mut f = forwarding(t0, Operation::Ping, ms(60_000));
    f.handle_frame(t0, accepted("b"));
    f.handle_timeout(t0 + BEAT * 3, true);
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
    f.handle_timeout(t0 + ms(3_000), true);
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
    f.handle_timeout(t0 + BEAT * 6, true);
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
    f.handle_frame(t0, accepted("b"));
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
    assert_eq!(s.poll_event(), None, "no agent before the go-ahead");
    s.acknowledged(t0);
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
    s.acknowledged(t0 + BEAT * 2);
    assert_eq!(s.poll_timeout(), None);
    assert!(s.is_done());
}

#[test]
fn the_serving_node_caps_the_deadline() {
    let t0 = Instant::now();
    let mut r = request(Operation::Ping);
    r.timeout_ms = u32::MAX;
    let mut s = serving(t0, Some(r), false);
    s.acknowledged(t0 + ms(10));
    assert!(matches!(
        s.poll_event(),
        Some(Served::Route { deadline, .. }) if deadline == t0 + Duration::from_secs(300)
    ));
}

/// Without the go-ahead within a heartbeat, nothing goes to an agent and
/// the forwarding node hears NO_AGENT_ONLINE (should it hear at all).
#[test]
fn the_serving_node_routes_nothing_without_the_go_ahead() {
    let t0 = Instant::now();
    let mut s = serving(t0, Some(request(Operation::ResetPassword)), false);
    published(&mut s);
    assert_eq!(s.poll_timeout(), Some(t0 + BEAT));
    s.progress(t0 + ms(1), Some("dc01"), false);
    s.finish(
        t0 + ms(2),
        forward_event::Event::Reply(pb::ForwardReply::default()),
    );
    assert!(published(&mut s).is_empty(), "nothing is routed yet");
    s.handle_timeout(t0 + BEAT);
    assert_eq!(
        failure_kind(&published(&mut s)),
        Some(Kind::NoAgentOnline as i32)
    );
    assert_eq!(s.poll_event(), Some(Served::Unconfirmed));
    s.acknowledged(t0 + BEAT + ms(1));
    assert_eq!(s.poll_event(), None, "a late go-ahead routes nothing");
    assert!(s.is_done());
}

/// A Reply the forwarding node does not acknowledge within a heartbeat is
/// handed back to be kept in the outcome record.
#[test]
fn an_unacknowledged_reply_is_kept_for_the_outcome_record() {
    let t0 = Instant::now();
    let mut s = serving(t0, Some(request(Operation::ResetPassword)), false);
    s.acknowledged(t0);
    assert!(matches!(s.poll_event(), Some(Served::Route { .. })));
    let reply = pb::ForwardReply {
        agent_id: "dc01".into(),
        envelope: b"sealed".to_vec(),
        ..Default::default()
    };
    s.finish(t0 + ms(500), forward_event::Event::Reply(reply.clone()));
    assert!(!s.is_done());
    assert_eq!(s.poll_timeout(), Some(t0 + ms(500) + BEAT));
    s.handle_timeout(t0 + ms(499) + BEAT);
    assert_eq!(s.poll_event(), None);
    s.handle_timeout(t0 + ms(500) + BEAT);
    assert_eq!(s.poll_event(), Some(Served::Undelivered(reply)));
    assert!(s.is_done());

    // A Failure awaits no receipt.
    let mut s = serving(t0, Some(request(Operation::ResetPassword)), false);
    s.acknowledged(t0);
    s.finish(t0, forward_event::Event::Failure(failure(Kind::AgentError)));
    assert!(s.is_done());
}

/// NATS's no-responders status on the acknowledgement subject is no
/// receipt: a Reply that reached nobody (the forwarding node gave up, or is
/// reconnecting) is kept at once, and an Accepted that reached nobody
/// routes nothing.
#[test]
fn no_responders_on_the_acknowledgement_subject_is_no_acknowledgement() {
    let t0 = Instant::now();
    let mut s = serving(t0, Some(request(Operation::ResetPassword)), false);
    s.acknowledged(t0);
    assert!(matches!(s.poll_event(), Some(Served::Route { .. })));
    let reply = pb::ForwardReply {
        agent_id: "dc01".into(),
        envelope: b"sealed".to_vec(),
        ..Default::default()
    };
    s.finish(t0 + ms(100), forward_event::Event::Reply(reply.clone()));
    s.forwarder_unreachable(t0 + ms(101));
    assert_eq!(s.poll_event(), Some(Served::Undelivered(reply)));
    assert!(s.is_done());

    let mut s = serving(t0, Some(request(Operation::ResetPassword)), false);
    published(&mut s);
    s.forwarder_unreachable(t0 + ms(1));
    assert_eq!(s.poll_event(), Some(Served::Unconfirmed));
    assert_eq!(
        failure_kind(&published(&mut s)),
        Some(Kind::NoAgentOnline as i32)
    );
    s.acknowledged(t0 + ms(2));
    assert_eq!(s.poll_event(), None, "nothing is routed after it");
    assert!(s.is_done());

    // While routing (a Progress reached nobody): nothing changes but an
    // earlier heartbeat.
    let mut s = serving(t0, Some(request(Operation::ResetPassword)), false);
    s.acknowledged(t0);
    assert!(matches!(s.poll_event(), Some(Served::Route { .. })));
    s.forwarder_unreachable(t0 + ms(5));
    assert_eq!(s.poll_event(), None);
    assert!(!s.is_done());
}

fn announced(node: &str, tenant: &str, agents: &[&str], interval_ms: u32) -> pb::NodePresence {
    pb::NodePresence {
        node: node.into(),
        interval_ms,
        tenants: vec![pb::TenantPresence {
            tenant: tenant.into(),
            agent_ids: agents.iter().map(|a| a.to_string()).collect(),
        }],
        leaving: false,
    }
}

/// A node holds its agents for three of its intervals after it was last
/// heard: the bound after which a node that lost NATS counts as gone.
#[test]
fn presence_lapses_after_three_missed_announcements() {
    let t0 = Instant::now();
    let mut p = Presence::new();
    p.heard(t0, announced("c", "t", &["dc01"], 1_000));
    assert!(p.holds(t0, "t", Some("dc01"), "a"));
    assert!(p.holds(t0, "t", None, "a"), "any agent, for a ping");
    assert!(!p.holds(t0, "t", Some("dc02"), "a"));
    assert!(!p.holds(t0, "u", None, "a"));
    assert!(!p.holds(t0, "t", None, "c"), "not the asking node itself");
    assert!(p.holds(t0 + ms(2_999), "t", Some("dc01"), "a"));
    assert!(!p.holds(t0 + ms(3_000), "t", Some("dc01"), "a"));
    assert!(p.is_live(t0 + ms(2_999), "c"));
    assert!(!p.is_live(t0 + ms(3_000), "c"));
    p.heard(t0 + ms(3_500), announced("c", "t", &[], 1_000));
    assert!(!p.holds(t0 + ms(3_500), "t", Some("dc01"), "a"), "replaced");
    assert!(p.is_live(t0 + ms(3_500), "c"));
}

#[test]
fn a_leaving_node_is_withdrawn_at_once_and_dead_ones_pruned() {
    let t0 = Instant::now();
    let mut p = Presence::new();
    p.heard(t0, announced("c", "t", &["dc01"], 1_000));
    p.heard(t0, announced("d", "t", &["dc02"], 1_000));
    p.heard(
        t0 + ms(1),
        pb::NodePresence {
            node: "c".into(),
            leaving: true,
            ..Default::default()
        },
    );
    assert!(!p.holds(t0 + ms(1), "t", Some("dc01"), "a"));
    assert!(p.holds(t0 + ms(1), "t", Some("dc02"), "a"));
    p.prune(t0 + ms(89_999));
    assert!(p.holds(t0, "t", Some("dc02"), "a"), "kept a while");
    p.prune(t0 + ms(90_000));
    assert!(!p.holds(t0, "t", Some("dc02"), "a"), "forgotten");
}

/// NATS delivered one publication twice (across a reconnect): two serving
/// tasks answer on one inbox. Only the confirmed one counts; the twin's
/// NO_AGENT_ONLINE (it never got the go-ahead) must not start another
/// attempt, which would give the request to the agent a second time.
#[test]
fn a_twin_serving_a_second_delivery_is_ignored() {
    let t0 = Instant::now();
    let mut f = forwarding(t0, Operation::ResetPassword, ms(10_000));
    f.poll_transmit().unwrap();
    f.handle_frame_from(t0 + ms(1), "K1", accepted("c"));
    f.handle_frame_from(t0 + ms(2), "K2", accepted("c"));
    assert_eq!(events(&mut f), [Event::Confirm], "K1 only");
    f.handle_frame_from(t0 + BEAT, "K2", failed(Kind::NoAgentOnline));
    assert!(f.poll_transmit().is_none(), "no second attempt");
    assert!(events(&mut f).is_empty());
    f.handle_timeout(t0 + ms(1) + BEAT * 3, true);
    assert!(
        matches!(done(&mut f), Outcome::Lost { .. }),
        "the twin's messages do not keep the attempt alive"
    );
}

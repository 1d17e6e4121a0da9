//! The broker's end of an agent session on a simulated clock: one test per
//! delivery rule and per Goodbye the session decides on its own. Time is a
//! base `Instant` plus durations; nothing sleeps.

use std::time::{Duration, Instant};

use proto::pb::{self, AgentFrame, BrokerFrame, GoodbyeReason, agent_frame, broker_frame};
use session::broker::{
    Answer, BrokerSession, Config, End, Event, LateVerdict, Phase, Refusal, RequestEnd, SendError,
};

const BEAT: Duration = Duration::from_secs(20);
const ACK: Duration = Duration::from_secs(10);
const HELLO: Duration = Duration::from_secs(10);
const TOKEN: Duration = Duration::from_secs(3600);

fn config() -> Config {
    Config {
        heartbeat_interval: BEAT,
        hello_timeout: HELLO,
        ack_timeout: ACK,
        max_envelope_bytes: 1024,
        unsolicited_replies_per_minute: 2,
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn frame(f: agent_frame::Frame) -> AgentFrame {
    AgentFrame { frame: Some(f) }
}

fn hello() -> AgentFrame {
    frame(agent_frame::Frame::Hello(pb::Hello {
        tenant: "t".into(),
        agent_id: "dc01".into(),
        agent_version: "1".into(),
        token: "token".into(),
    }))
}

fn heartbeat() -> AgentFrame {
    frame(agent_frame::Frame::Heartbeat(pb::Heartbeat::default()))
}

fn ack(id: u64) -> AgentFrame {
    frame(agent_frame::Frame::Ack(pb::Ack { correlation_id: id }))
}

fn reply(id: u64, request_id: &str, envelope: &[u8]) -> AgentFrame {
    frame(agent_frame::Frame::Reply(pb::AgentReply {
        correlation_id: id,
        request_id: request_id.into(),
        result: Some(pb::agent_reply::Result::Envelope(envelope.to_vec())),
    }))
}

fn error_reply(id: u64, request_id: &str, code: pb::AgentErrorCode) -> AgentFrame {
    frame(agent_frame::Frame::Reply(pb::AgentReply {
        correlation_id: id,
        request_id: request_id.into(),
        result: Some(pb::agent_reply::Result::Error(pb::AgentError {
            code: code as i32,
            message: "no".into(),
            refusal: 0,
        })),
    }))
}

fn request(request_id: &str) -> pb::RelayedRequest {
    pb::RelayedRequest {
        request_id: request_id.into(),
        operation: pb::Operation::ResetPassword as i32,
        ..Default::default()
    }
}

fn transmits(s: &mut BrokerSession) -> Vec<broker_frame::Frame> {
    std::iter::from_fn(|| s.poll_transmit())
        .filter_map(|f: BrokerFrame| f.frame)
        .collect()
}

fn events(s: &mut BrokerSession) -> Vec<Event> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

/// An open session at `t0`, Welcome already taken off the wire.
fn open(t0: Instant) -> BrokerSession {
    let mut s = BrokerSession::new(t0, config());
    s.handle_frame(t0, hello());
    assert!(matches!(events(&mut s)[..], [Event::Hello(_)]));
    s.accept(t0, pb::Welcome::default(), t0 + TOKEN);
    assert!(matches!(
        transmits(&mut s)[..],
        [broker_frame::Frame::Welcome(_)]
    ));
    s
}

/// Sends a request and hands it to the wire; its correlation id.
fn sent(s: &mut BrokerSession, now: Instant, request_id: &str, deadline: Instant) -> u64 {
    let id = s.send_request(now, request(request_id), deadline).unwrap();
    let out = transmits(s);
    assert!(
        matches!(&out[..], [broker_frame::Frame::Request(r)] if r.correlation_id == id),
        "{out:?}"
    );
    id
}

fn goodbye_of(out: &[broker_frame::Frame]) -> Option<GoodbyeReason> {
    out.iter().find_map(|f| match f {
        broker_frame::Frame::Goodbye(g) => GoodbyeReason::try_from(g.reason).ok(),
        _ => None,
    })
}

fn closed_with(events: &[Event]) -> Option<GoodbyeReason> {
    events.iter().find_map(|e| match e {
        Event::Closed(End::Goodbye { reason, .. }) => Some(*reason),
        _ => None,
    })
}

fn ended(events: &[Event], id: u64) -> Option<RequestEnd> {
    events.iter().find_map(|e| match e {
        Event::Ended {
            correlation_id,
            end,
            ..
        } if *correlation_id == id => Some(end.clone()),
        _ => None,
    })
}

#[test]
fn hello_is_checked_by_the_driver_then_welcome_opens_the_session() {
    let t0 = Instant::now();
    let mut s = BrokerSession::new(t0, config());
    assert_eq!(s.phase(), Phase::AwaitingHello);
    assert_eq!(s.poll_timeout(), Some(t0 + HELLO));
    assert_eq!(
        s.send_request(t0, request("r"), t0 + secs(5)),
        Err(SendError::NotOpen)
    );
    s.handle_frame(t0, hello());
    assert!(matches!(&events(&mut s)[..], [Event::Hello(h)] if h.agent_id == "dc01"));
    assert_eq!(s.phase(), Phase::Authenticating);
    s.accept(t0 + secs(1), pb::Welcome::default(), t0 + TOKEN);
    assert_eq!(s.phase(), Phase::Open);
    assert!(s.is_routable());
    // The Welcome promises what the machine enforces.
    assert!(matches!(
        &transmits(&mut s)[..],
        [broker_frame::Frame::Welcome(w)] if w.heartbeat_interval_ms == 20_000
            && w.ack_timeout_ms == 10_000 && w.max_envelope_bytes == 1024
    ));
}

#[test]
fn a_first_frame_other_than_hello_ends_the_stream_without_goodbye() {
    let t0 = Instant::now();
    let mut s = BrokerSession::new(t0, config());
    s.handle_frame(t0, heartbeat());
    assert!(matches!(
        &events(&mut s)[..],
        [Event::Closed(End::NotOpened(Refusal::ProtocolViolation(_)))]
    ));
    assert!(transmits(&mut s).is_empty());
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn no_hello_within_the_hello_timeout() {
    let t0 = Instant::now();
    let mut s = BrokerSession::new(t0, config());
    s.handle_timeout(t0 + HELLO - Duration::from_millis(1));
    assert!(events(&mut s).is_empty());
    s.handle_timeout(t0 + HELLO);
    assert_eq!(
        events(&mut s),
        [Event::Closed(End::NotOpened(Refusal::HelloTimeout))]
    );
    assert!(s.is_closed());
}

#[test]
fn a_refused_hello_ends_the_stream_without_goodbye() {
    let t0 = Instant::now();
    let mut s = BrokerSession::new(t0, config());
    s.handle_frame(t0, hello());
    events(&mut s);
    s.refuse(t0);
    assert_eq!(
        events(&mut s),
        [Event::Closed(End::NotOpened(Refusal::Refused))]
    );
    assert!(transmits(&mut s).is_empty());
}

#[test]
fn heartbeats_go_out_every_interval() {
    let t0 = Instant::now();
    let mut s = open(t0);
    assert_eq!(s.poll_timeout(), Some(t0 + BEAT));
    s.handle_frame(t0 + BEAT - secs(1), heartbeat());
    s.handle_timeout(t0 + BEAT);
    assert!(matches!(
        transmits(&mut s)[..],
        [broker_frame::Frame::Heartbeat(_)]
    ));
    // A late wake-up sends one heartbeat, not the ones it missed.
    s.handle_frame(t0 + BEAT * 2, heartbeat());
    s.handle_timeout(t0 + BEAT * 3 + secs(1));
    assert_eq!(transmits(&mut s).len(), 1);
    assert_eq!(s.poll_timeout(), Some(t0 + BEAT * 4));
}

/// Silence is counted from the agent's last frame on the monotonic `now`.
#[test]
fn goodbye_heartbeat_timeout_after_three_silent_intervals() {
    let t0 = Instant::now();
    let mut s = open(t0);
    s.handle_frame(t0 + BEAT * 2, heartbeat());
    for n in 1..=4 {
        s.handle_timeout(t0 + BEAT * n);
    }
    assert!(!s.is_closed(), "the last frame counts, not the first");
    s.handle_timeout(t0 + BEAT * 5 - Duration::from_millis(1));
    assert!(!s.is_closed());
    s.handle_timeout(t0 + BEAT * 5);
    assert_eq!(
        goodbye_of(&transmits(&mut s)),
        Some(GoodbyeReason::HeartbeatTimeout)
    );
    assert_eq!(
        closed_with(&events(&mut s)),
        Some(GoodbyeReason::HeartbeatTimeout)
    );
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn ack_then_answer_then_receipt() {
    let t0 = Instant::now();
    let mut s = open(t0);
    let id = sent(&mut s, t0, "r1", t0 + secs(30));
    assert_eq!(s.in_flight(), 1);
    s.handle_frame(t0 + secs(1), ack(id));
    assert_eq!(events(&mut s), [Event::Acknowledged(id)]);
    s.handle_frame(t0 + secs(2), reply(id, "r1", b"sealed"));
    assert_eq!(
        events(&mut s),
        [Event::Ended {
            correlation_id: id,
            request_id: "r1".into(),
            end: RequestEnd::Answered {
                answer: Answer::Envelope(b"sealed".to_vec()),
                rtt: secs(2),
            },
        }]
    );
    assert!(matches!(
        &transmits(&mut s)[..],
        [broker_frame::Frame::Receipt(r)] if r.correlation_id == id && r.request_id == "r1"
    ));
    assert_eq!(s.in_flight(), 0);
}

#[test]
fn the_relayed_request_carries_the_time_left_and_fresh_correlation_ids() {
    let t0 = Instant::now();
    let mut s = open(t0);
    s.send_request(t0, request("a"), t0 + secs(7)).unwrap();
    s.send_request(t0 + secs(1), request("b"), t0 + secs(7))
        .unwrap();
    let out = transmits(&mut s);
    let got: Vec<(u64, u32)> = out
        .iter()
        .filter_map(|f| match f {
            broker_frame::Frame::Request(r) => Some((r.correlation_id, r.timeout_ms)),
            _ => None,
        })
        .collect();
    assert_eq!(got, [(1, 7000), (2, 6000)]);
}

#[test]
fn an_unknown_or_repeated_ack_is_ignored() {
    let t0 = Instant::now();
    let mut s = open(t0);
    let id = sent(&mut s, t0, "r1", t0 + secs(30));
    s.handle_frame(t0, ack(99));
    s.handle_frame(t0, ack(id));
    s.handle_frame(t0, ack(id));
    assert_eq!(events(&mut s), [Event::Acknowledged(id)]);
    assert!(!s.is_closed());
}

#[test]
fn goodbye_unresponsive_when_no_ack_within_the_ack_timeout() {
    let t0 = Instant::now();
    let mut s = open(t0);
    let id = sent(&mut s, t0, "r1", t0 + secs(30));
    assert_eq!(s.poll_timeout(), Some(t0 + ACK));
    s.handle_frame(t0 + secs(5), heartbeat());
    s.handle_timeout(t0 + ACK);
    assert_eq!(
        goodbye_of(&transmits(&mut s)),
        Some(GoodbyeReason::Unresponsive)
    );
    let ev = events(&mut s);
    assert_eq!(
        ended(&ev, id),
        Some(RequestEnd::Lost {
            acknowledged: false
        }),
        "the agent may have it: never NotDelivered"
    );
    assert_eq!(closed_with(&ev), Some(GoodbyeReason::Unresponsive));
}

#[test]
fn the_callers_deadline_before_the_ack_timeout_ends_only_the_request() {
    let t0 = Instant::now();
    let mut s = open(t0);
    let id = sent(&mut s, t0, "r1", t0 + secs(3));
    assert_eq!(s.poll_timeout(), Some(t0 + secs(3)));
    s.handle_timeout(t0 + secs(3));
    assert_eq!(
        ended(&events(&mut s), id),
        Some(RequestEnd::DeadlineExceeded {
            sent: true,
            acknowledged: false
        })
    );
    assert!(
        !s.is_closed(),
        "a short deadline is no proof of a dead agent"
    );
    // Its answer, if it comes, is a late one.
    s.handle_frame(t0 + secs(4), reply(id, "r1", b"x"));
    assert!(matches!(&events(&mut s)[..], [Event::LateReply { .. }]));
}

#[test]
fn the_callers_deadline_after_the_ack() {
    let t0 = Instant::now();
    let mut s = open(t0);
    let id = sent(&mut s, t0, "r1", t0 + secs(30));
    s.handle_frame(t0 + secs(1), ack(id));
    events(&mut s);
    s.handle_frame(t0 + secs(25), heartbeat());
    s.handle_timeout(t0 + secs(30));
    assert_eq!(
        ended(&events(&mut s), id),
        Some(RequestEnd::DeadlineExceeded {
            sent: true,
            acknowledged: true
        })
    );
}

#[test]
fn a_request_never_handed_out_is_not_delivered_and_never_sent() {
    let t0 = Instant::now();
    let mut s = open(t0);
    let id = s.send_request(t0, request("r1"), t0 + secs(30)).unwrap();
    s.stream_ended(t0);
    let ev = events(&mut s);
    assert_eq!(ended(&ev, id), Some(RequestEnd::NotDelivered));
    assert_eq!(ev.last(), Some(&Event::Closed(End::StreamEnded)));
    assert!(transmits(&mut s).is_empty());
}

#[test]
fn unavailable_before_the_ack_may_go_elsewhere() {
    let t0 = Instant::now();
    let mut s = open(t0);
    let id = sent(&mut s, t0, "r1", t0 + secs(30));
    s.handle_frame(t0, error_reply(id, "r1", pb::AgentErrorCode::Unavailable));
    assert_eq!(ended(&events(&mut s), id), Some(RequestEnd::NotDelivered));
    assert!(matches!(
        transmits(&mut s)[..],
        [broker_frame::Frame::Receipt(_)]
    ));
}

/// After an Ack a request is never offered elsewhere: neither an
/// UNAVAILABLE answer nor the session's end makes it NotDelivered.
#[test]
fn never_again_after_an_ack() {
    let t0 = Instant::now();
    let mut s = open(t0);
    let a = sent(&mut s, t0, "a", t0 + secs(30));
    let b = sent(&mut s, t0, "b", t0 + secs(30));
    s.handle_frame(t0, ack(a));
    s.handle_frame(t0, ack(b));
    s.handle_frame(t0, error_reply(a, "a", pb::AgentErrorCode::Unavailable));
    assert!(matches!(
        ended(&events(&mut s), a),
        Some(RequestEnd::Answered {
            answer: Answer::Error(_),
            ..
        })
    ));
    s.stream_ended(t0 + secs(1));
    assert_eq!(
        ended(&events(&mut s), b),
        Some(RequestEnd::Lost { acknowledged: true })
    );
}

#[test]
fn an_oversized_reply_envelope_becomes_an_agent_error() {
    let t0 = Instant::now();
    let mut s = open(t0);
    let id = sent(&mut s, t0, "r1", t0 + secs(30));
    s.handle_frame(t0, reply(id, "r1", &[0; 1025]));
    match ended(&events(&mut s), id) {
        Some(RequestEnd::Answered {
            answer: Answer::Error(e),
            ..
        }) => assert_eq!(e.code, pb::AgentErrorCode::Rejected as i32),
        other => panic!("{other:?}"),
    }
}

#[test]
fn late_replies_are_confirmed_on_the_drivers_verdict() {
    let t0 = Instant::now();
    let mut s = open(t0);
    s.handle_frame(t0, reply(0, "old", b"late"));
    assert_eq!(
        events(&mut s),
        [Event::LateReply {
            correlation_id: 0,
            request_id: "old".into(),
            answer: Answer::Envelope(b"late".to_vec()),
        }]
    );
    assert!(
        transmits(&mut s).is_empty(),
        "no Receipt before the verdict"
    );
    assert_eq!(
        s.late_verdict(t0, 0, "old".into(), LateVerdict::Taken),
        None
    );
    assert!(matches!(
        &transmits(&mut s)[..],
        [broker_frame::Frame::Receipt(r)] if r.request_id == "old"
    ));
    // Not taken: the agent posts it again later.
    s.late_verdict(t0, 0, "busy".into(), LateVerdict::TenantBusy);
    assert!(transmits(&mut s).is_empty());
    s.late_verdict(t0, 0, "again".into(), LateVerdict::Duplicate);
    assert_eq!(transmits(&mut s).len(), 1);
    assert!(!s.is_closed());
}

#[test]
fn goodbye_unsolicited_replies_past_the_rate() {
    let t0 = Instant::now();
    let mut s = open(t0);
    let verdict = |s: &mut BrokerSession, at: Instant| {
        s.late_verdict(at, 0, "x".into(), LateVerdict::Unsolicited)
            .unwrap()
    };
    assert_eq!(verdict(&mut s, t0).count, 1);
    assert_eq!(verdict(&mut s, t0 + secs(1)).count, 2);
    // A new minute starts the count again, and says how many the last had.
    let fresh = verdict(&mut s, t0 + secs(61));
    assert_eq!((fresh.count, fresh.before), (1, Some(2)));
    s.handle_frame(t0 + secs(62), heartbeat());
    verdict(&mut s, t0 + secs(62));
    assert!(!s.is_closed());
    s.count_unsolicited(t0 + secs(63));
    assert_eq!(
        goodbye_of(&transmits(&mut s)),
        Some(GoodbyeReason::UnsolicitedReplies)
    );
    assert!(s.is_closed());
}

#[test]
fn goodbye_protocol_violation_for_a_second_hello_or_an_empty_frame() {
    let t0 = Instant::now();
    let mut s = open(t0);
    s.handle_frame(t0, hello());
    assert_eq!(
        goodbye_of(&transmits(&mut s)),
        Some(GoodbyeReason::ProtocolViolation)
    );
    let mut s = open(t0);
    s.handle_frame(t0, AgentFrame { frame: None });
    assert_eq!(
        closed_with(&events(&mut s)),
        Some(GoodbyeReason::ProtocolViolation)
    );
}

#[test]
fn goodbye_malformed_frame() {
    let t0 = Instant::now();
    let mut s = open(t0);
    s.malformed(t0, "bad bytes");
    assert_eq!(
        goodbye_of(&transmits(&mut s)),
        Some(GoodbyeReason::MalformedFrame)
    );
}

#[test]
fn goodbye_token_expired_unless_renewed() {
    let t0 = Instant::now();
    let mut s = open(t0);
    s.handle_frame(
        t0,
        frame(agent_frame::Frame::RenewToken(pb::RenewToken {
            token: "fresh".into(),
        })),
    );
    assert_eq!(events(&mut s), [Event::RenewToken("fresh".into())]);
    s.renewed(t0, t0 + TOKEN * 2);
    // Heartbeats keep it alive past the first token's expiry.
    let mut now = t0;
    while now < t0 + TOKEN * 2 - BEAT {
        now += BEAT;
        s.handle_frame(now, heartbeat());
        s.handle_timeout(now);
    }
    assert!(!s.is_closed());
    s.handle_timeout(t0 + TOKEN * 2);
    assert_eq!(
        goodbye_of(&transmits(&mut s)),
        Some(GoodbyeReason::TokenExpired)
    );
}

#[test]
fn goodbye_renewal_refused() {
    let t0 = Instant::now();
    let mut s = open(t0);
    s.renewal_refused(t0, "bad signature");
    assert_eq!(
        goodbye_of(&transmits(&mut s)),
        Some(GoodbyeReason::RenewalRefused)
    );
}

#[test]
fn an_agent_draining_takes_no_new_requests_but_answers() {
    let t0 = Instant::now();
    let mut s = open(t0);
    let id = sent(&mut s, t0, "r1", t0 + secs(30));
    s.handle_frame(t0, frame(agent_frame::Frame::Drain(pb::Drain {})));
    assert_eq!(events(&mut s), [Event::AgentDraining]);
    assert!(!s.is_routable());
    assert_eq!(
        s.send_request(t0, request("r2"), t0 + secs(30)),
        Err(SendError::Draining)
    );
    s.handle_frame(t0, reply(id, "r1", b"ok"));
    assert!(matches!(
        ended(&events(&mut s), id),
        Some(RequestEnd::Answered { .. })
    ));
    assert!(!s.is_closed(), "the agent ends its own drained session");
}

#[test]
fn goodbye_shutting_down_once_a_draining_broker_holds_nothing() {
    let t0 = Instant::now();
    let mut idle = open(t0);
    idle.drain(t0);
    assert_eq!(
        goodbye_of(&transmits(&mut idle)),
        Some(GoodbyeReason::ShuttingDown)
    );

    let mut s = open(t0);
    let id = sent(&mut s, t0, "r1", t0 + secs(30));
    s.drain(t0);
    assert!(!s.is_closed(), "its request is still in flight");
    s.handle_frame(t0 + secs(1), ack(id));
    s.handle_frame(t0 + secs(2), reply(id, "r1", b"ok"));
    let out = transmits(&mut s);
    assert!(matches!(out[0], broker_frame::Frame::Receipt(_)));
    assert_eq!(goodbye_of(&out), Some(GoodbyeReason::ShuttingDown));
}

#[test]
fn goodbye_decided_by_the_driver_ends_every_request() {
    let t0 = Instant::now();
    let mut s = open(t0);
    let a = sent(&mut s, t0, "a", t0 + secs(30));
    s.handle_frame(t0, ack(a));
    let b = sent(&mut s, t0, "b", t0 + secs(30));
    let c = s.send_request(t0, request("c"), t0 + secs(30)).unwrap();
    s.close(t0, GoodbyeReason::Replaced, "newer session");
    s.close(t0, GoodbyeReason::AgentRevoked, "too late: the first wins");
    let ev = events(&mut s);
    assert_eq!(ended(&ev, a), Some(RequestEnd::Lost { acknowledged: true }));
    assert_eq!(
        ended(&ev, b),
        Some(RequestEnd::Lost {
            acknowledged: false
        })
    );
    assert_eq!(ended(&ev, c), Some(RequestEnd::NotDelivered));
    assert_eq!(closed_with(&ev), Some(GoodbyeReason::Replaced));
    let out = transmits(&mut s);
    assert!(
        matches!(&out[..], [broker_frame::Frame::Goodbye(g)] if g.reason == GoodbyeReason::Replaced as i32),
        "only the Goodbye, not the request never handed out: {out:?}"
    );
    assert_eq!(s.poll_timeout(), None);
}

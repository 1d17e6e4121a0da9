//! The agent's end of a session, one rule per test, in simulated time: a
//! fake clock (a base instant plus durations) and scripted broker frames.

use std::time::{Duration, Instant};

use proto::pb::{self, GoodbyeReason, agent_frame::Frame as Out, broker_frame::Frame as In};
use session::agent::{Agent, Cause, Config, Event, NextStep, Request};

const HEARTBEAT: Duration = Duration::from_secs(20);

struct Sim {
    agent: Agent,
    t0: Instant,
    now: Instant,
}

impl Sim {
    fn new() -> Sim {
        Sim::with(Config {
            token_lifetime: Duration::from_secs(600),
            drain_grace: Duration::from_secs(30),
            ..Config::default()
        })
    }

    fn with(config: Config) -> Sim {
        let t0 = Instant::now();
        Sim {
            agent: Agent::new(config),
            t0,
            now: t0,
        }
    }

    /// Moves the clock to `at` (since the start), firing every timeout on
    /// the way, as a driver would.
    fn advance_to(&mut self, at: Duration) {
        let target = self.t0 + at;
        while let Some(t) = self.agent.poll_timeout().filter(|t| *t <= target) {
            self.now = self.now.max(t);
            self.agent.handle_timeout(self.now);
        }
        self.now = target;
    }

    fn advance(&mut self, by: Duration) {
        let at = self.now + by - self.t0;
        self.advance_to(at);
    }

    fn start(&mut self) {
        self.agent.start(
            self.now,
            pb::Hello {
                tenant: "contoso".into(),
                agent_id: "dc01".into(),
                agent_version: "test".into(),
                token: "token-1".into(),
            },
        );
    }

    fn frame(&mut self, f: In) {
        self.agent
            .handle_frame(self.now, pb::BrokerFrame { frame: Some(f) });
    }

    fn welcome(&mut self) {
        self.frame(In::Welcome(pb::Welcome {
            session_id: format!("s{}", self.agent.generation()),
            heartbeat_interval_ms: HEARTBEAT.as_millis() as u32,
            max_envelope_bytes: 65536,
            broker_time_unix_ms: 1_000,
            token_expires_unix_ms: 601_000,
            ack_timeout_ms: 10_000,
            max_in_flight: 16,
        }));
    }

    /// Starts a session and opens it; drops the Hello and Welcomed.
    fn open(&mut self) {
        self.start();
        self.welcome();
        assert!(matches!(self.sent().first(), Some(Out::Hello(_))));
        assert!(matches!(
            self.events().first(),
            Some(Event::Welcomed { .. })
        ));
    }

    fn request(&mut self, cid: u64, id: &str) {
        self.frame(In::Request(pb::RelayedRequest {
            correlation_id: cid,
            request_id: id.into(),
            operation: pb::Operation::ResetPassword as i32,
            envelope: vec![7; 4].into(),
            timeout_ms: 30_000,
            ..Default::default()
        }));
    }

    fn sent(&mut self) -> Vec<Out> {
        std::iter::from_fn(|| self.agent.poll_transmit())
            .map(|f| f.frame.expect("a frame kind"))
            .collect()
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.agent.poll_event()).collect()
    }

    fn applied(&mut self) -> Vec<Request> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Apply(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    fn answer(&mut self, r: &Request) {
        self.agent.reply(
            self.now,
            r.ticket.clone(),
            pb::agent_reply::Result::Envelope(r.request_id.as_bytes().to_vec()),
        );
    }

    fn over(&mut self) -> Option<session::agent::End> {
        self.events().into_iter().find_map(|e| match e {
            Event::SessionOver(end) => Some(end),
            _ => None,
        })
    }
}

fn replies(frames: &[Out]) -> Vec<(u64, String)> {
    frames
        .iter()
        .filter_map(|f| match f {
            Out::Reply(r) => Some((r.correlation_id, r.request_id.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn hello_goes_first_and_alone() {
    let mut sim = Sim::new();
    assert_eq!(sim.agent.poll_timeout(), None, "no session, no timer");
    sim.start();
    let sent = sim.sent();
    assert_eq!(sent.len(), 1);
    let Out::Hello(hello) = &sent[0] else {
        panic!("{sent:?}")
    };
    assert_eq!(hello.token, "token-1");
    assert_eq!(
        sim.agent.poll_timeout(),
        Some(sim.t0 + Duration::from_secs(15))
    );
    // Nothing else goes out before Welcome, however long it takes.
    sim.advance(Duration::from_secs(14));
    assert!(sim.sent().is_empty());
}

#[test]
fn no_welcome_within_the_timeout_ends_the_attempt() {
    let mut sim = Sim::new();
    sim.start();
    sim.advance(Duration::from_secs(15));
    let end = sim.over().expect("over");
    assert!(matches!(end.cause, Cause::NoWelcome(_)), "{end:?}");
    assert_eq!(end.next, NextStep::Reconnect);
    assert_eq!(end.lasted, None);
}

#[test]
fn another_first_frame_than_welcome_ends_the_attempt() {
    let mut sim = Sim::new();
    sim.start();
    sim.frame(In::Heartbeat(pb::Heartbeat { sent_unix_ms: 1 }));
    let end = sim.over().expect("over");
    assert_eq!(
        end.cause,
        Cause::NoWelcome("expected Welcome, got Heartbeat".into())
    );
}

#[test]
fn a_request_is_acked_then_applied_once() {
    let mut sim = Sim::new();
    sim.open();
    sim.request(5, "r1");
    assert!(matches!(
        sim.sent()[..],
        [Out::Ack(pb::Ack { correlation_id: 5 })]
    ));
    let applied = sim.applied();
    assert_eq!(applied.len(), 1);
    assert_eq!(applied[0].request_id, "r1");
    assert_eq!(applied[0].envelope, vec![7; 4]);
    assert_eq!(applied[0].timeout, Duration::from_secs(30));
    // A duplicate while in hand: the Ack again, no second Apply.
    sim.request(5, "r1");
    assert!(matches!(sim.sent()[..], [Out::Ack(_)]));
    assert!(sim.applied().is_empty());
    // A duplicate once answered: the answer again, no Apply.
    sim.answer(&applied[0]);
    assert_eq!(replies(&sim.sent()), vec![(5, "r1".to_owned())]);
    sim.request(5, "r1");
    assert_eq!(replies(&sim.sent()), vec![(5, "r1".to_owned())]);
    assert!(sim.applied().is_empty());
}

#[test]
fn a_ping_is_answered_at_once_without_ack_or_outbox() {
    let mut sim = Sim::new();
    sim.open();
    sim.frame(In::Request(pb::RelayedRequest {
        correlation_id: 9,
        request_id: "p".into(),
        operation: pb::Operation::Ping as i32,
        envelope: Default::default(),
        timeout_ms: 1000,
        ..Default::default()
    }));
    let sent = sim.sent();
    assert_eq!(replies(&sent), vec![(9, "p".to_owned())]);
    assert!(!sent.iter().any(|f| matches!(f, Out::Ack(_))));
    assert!(sim.applied().is_empty());
    assert!(sim.agent.outbox().is_empty());
}

#[test]
fn a_reply_is_kept_until_its_receipt_and_posted_again_after_reconnecting() {
    let mut sim = Sim::new();
    sim.open();
    sim.request(5, "r1");
    sim.sent();
    let r = sim.applied().remove(0);
    sim.answer(&r);
    assert_eq!(replies(&sim.sent()), vec![(5, "r1".to_owned())]);
    assert_eq!(sim.agent.outbox().unconfirmed(), 1);
    // The connection dies before the Receipt: the next session posts it
    // again, late (correlation id 0), as soon as it is welcomed.
    sim.agent.connection_lost(sim.now, "reset");
    assert_eq!(sim.over().expect("over").next, NextStep::Reconnect);
    sim.advance(Duration::from_secs(1));
    sim.start();
    assert!(
        matches!(sim.sent()[..], [Out::Hello(_)]),
        "not before Welcome"
    );
    sim.welcome();
    assert_eq!(replies(&sim.sent()), vec![(0, "r1".to_owned())]);
    // Not again on the same session, even at heartbeats.
    sim.frame(In::Heartbeat(pb::Heartbeat::default()));
    sim.advance(HEARTBEAT);
    assert!(replies(&sim.sent()).is_empty());
    sim.frame(In::Receipt(pb::Receipt {
        correlation_id: 0,
        request_id: "r1".into(),
    }));
    assert!(sim.events().contains(&Event::Confirmed {
        request_id: "r1".into()
    }));
    assert_eq!(sim.agent.outbox().unconfirmed(), 0);
}

#[test]
fn a_reply_finished_after_its_session_goes_out_late() {
    let mut sim = Sim::new();
    sim.open();
    sim.request(5, "r1");
    sim.request(6, "r2");
    sim.sent();
    let rs = sim.applied();
    sim.agent.connection_lost(sim.now, "reset");
    sim.over();
    // Between sessions: kept for the next.
    sim.answer(&rs[0]);
    assert!(sim.sent().is_empty());
    sim.open_keeping_replies();
    // While a newer session is open: posted on it at once.
    sim.answer(&rs[1]);
    assert_eq!(replies(&sim.sent()), vec![(0, "r2".to_owned())]);
}

impl Sim {
    fn open_keeping_replies(&mut self) {
        self.start();
        self.welcome();
        let sent = self.sent();
        assert!(matches!(sent.first(), Some(Out::Hello(_))));
        assert_eq!(replies(&sent), vec![(0, "r1".to_owned())]);
        self.events();
    }
}

#[test]
fn heartbeats_go_out_every_interval() {
    let mut sim = Sim::new();
    sim.open();
    let mut beats = Vec::new();
    for step in 1..=10 {
        sim.advance_to(Duration::from_secs(5 * step));
        // The broker is alive.
        sim.frame(In::Heartbeat(pb::Heartbeat::default()));
        for f in sim.sent() {
            if matches!(f, Out::Heartbeat(_)) {
                beats.push(sim.now - sim.t0);
            }
        }
    }
    assert_eq!(
        beats,
        [20, 40].map(Duration::from_secs).to_vec(),
        "one beat per interval from Welcome"
    );
}

#[test]
fn a_silent_broker_ends_the_session_after_three_intervals() {
    let mut sim = Sim::new();
    sim.open();
    sim.advance_to(Duration::from_secs(30));
    sim.frame(In::Heartbeat(pb::Heartbeat::default()));
    // 59 s after the last frame: still alive.
    sim.advance_to(Duration::from_secs(89));
    assert!(sim.over().is_none());
    sim.advance_to(Duration::from_secs(90));
    let end = sim.over().expect("over");
    assert_eq!(end.cause, Cause::Silence(HEARTBEAT * 3));
    assert_eq!(end.next, NextStep::Reconnect);
    assert_eq!(end.lasted, Some(Duration::from_secs(90)));
    assert!(sim.sent().is_empty(), "nothing more goes out");
}

#[test]
fn the_token_is_renewed_at_half_its_lifetime() {
    let mut sim = Sim::new();
    sim.open();
    let mut renewals = Vec::new();
    for s in 1..=700u64 {
        sim.advance_to(Duration::from_secs(s));
        sim.frame(In::Heartbeat(pb::Heartbeat::default()));
        sim.sent();
        if sim.events().contains(&Event::RenewToken) {
            renewals.push(s);
            sim.agent.renewed_token(sim.now, format!("token-{s}"));
            let sent = sim.sent();
            assert!(
                matches!(&sent[..], [Out::RenewToken(t)] if t.token == format!("token-{s}")),
                "{sent:?}"
            );
        }
    }
    assert_eq!(renewals, vec![300, 600]);
}

#[test]
fn each_goodbye_reason_maps_to_its_next_step() {
    use GoodbyeReason as G;
    let cases = [
        (G::ShuttingDown, NextStep::ReconnectSoon),
        (G::AgentRevoked, NextStep::Revoked),
        (G::KeyRotated, NextStep::NewToken),
        (G::TokenExpired, NextStep::NewToken),
        (G::RenewalRefused, NextStep::NewToken),
        (G::UnsolicitedReplies, NextStep::BackOff),
        (G::TenantDeleted, NextStep::Reconnect),
        (G::HeartbeatTimeout, NextStep::Reconnect),
        (G::ProtocolViolation, NextStep::Reconnect),
        (G::Replaced, NextStep::Reconnect),
        (G::Unresponsive, NextStep::Reconnect),
        (G::MalformedFrame, NextStep::Reconnect),
        (G::Unspecified, NextStep::Reconnect),
    ];
    for (reason, next) in cases {
        let mut sim = Sim::new();
        sim.open();
        sim.advance(Duration::from_secs(7));
        sim.frame(In::Goodbye(pb::Goodbye {
            reason: reason as i32,
            message: "bye".into(),
        }));
        let end = sim.over().expect("over");
        assert_eq!(end.next, next, "{reason:?}");
        assert_eq!(
            end.cause,
            Cause::Goodbye {
                reason,
                message: "bye".into()
            }
        );
        assert_eq!(end.lasted, Some(Duration::from_secs(7)));
        assert_eq!(sim.agent.poll_timeout(), None);
    }
}

#[test]
fn unsolicited_replies_keep_the_outbox_for_the_next_session() {
    // The broker confirms (and drops) the unsolicited replies it takes
    // before closing: the outbox shrinks from one session to the next
    // instead of being thrown away with legitimate late answers in it.
    let mut sim = Sim::new();
    sim.open();
    for (cid, id) in [(1, "r1"), (2, "r2")] {
        sim.request(cid, id);
        sim.sent();
        let r = sim.applied().remove(0);
        sim.answer(&r);
    }
    sim.sent();
    sim.agent.connection_lost(sim.now, "reset");
    sim.over();
    sim.start();
    sim.welcome();
    assert_eq!(replies(&sim.sent()).len(), 2);
    sim.frame(In::Receipt(pb::Receipt {
        correlation_id: 0,
        request_id: "r1".into(),
    }));
    sim.frame(In::Goodbye(pb::Goodbye {
        reason: GoodbyeReason::UnsolicitedReplies as i32,
        message: String::new(),
    }));
    assert_eq!(sim.over().expect("over").next, NextStep::BackOff);
    sim.start();
    sim.welcome();
    let again = replies(&sim.sent());
    assert!(again.contains(&(0, "r2".to_owned())), "{again:?}");
    assert_eq!(sim.agent.outbox().unconfirmed(), 1);
}

#[test]
fn drain_waits_for_acked_requests_and_refuses_new_ones() {
    let mut sim = Sim::new();
    sim.open();
    sim.request(1, "r1");
    sim.request(2, "r2");
    sim.sent();
    let rs = sim.applied();
    sim.agent.shutdown(sim.now);
    assert!(matches!(sim.sent()[..], [Out::Drain(_)]));
    assert!(sim.agent.is_draining());
    // A request arriving now: UNAVAILABLE, no Ack, not applied.
    sim.request(3, "r3");
    let sent = sim.sent();
    let [Out::Reply(refusal)] = &sent[..] else {
        panic!("{sent:?}")
    };
    let Some(pb::agent_reply::Result::Error(e)) = &refusal.result else {
        panic!("{refusal:?}")
    };
    assert_eq!(e.code, pb::AgentErrorCode::Unavailable as i32);
    assert!(sim.applied().is_empty());
    sim.advance(Duration::from_secs(10));
    sim.answer(&rs[0]);
    assert!(sim.over().is_none(), "r2 is still in hand");
    sim.advance(Duration::from_secs(10));
    sim.answer(&rs[1]);
    // The last reply still goes out, and then the session is over.
    assert_eq!(replies(&sim.sent()).len(), 2);
    let end = sim.over().expect("over");
    assert_eq!(end.cause, Cause::Drained);
    assert_eq!(end.next, NextStep::Stop);
}

#[test]
fn drain_gives_up_after_the_grace() {
    let mut sim = Sim::new();
    sim.open();
    sim.request(1, "r1");
    sim.sent();
    sim.events();
    sim.advance_to(Duration::from_secs(5));
    sim.agent.shutdown(sim.now);
    sim.frame(In::Heartbeat(pb::Heartbeat::default()));
    sim.advance_to(Duration::from_secs(34));
    assert!(sim.over().is_none());
    sim.advance_to(Duration::from_secs(35));
    let end = sim.over().expect("over");
    assert_eq!(end.cause, Cause::DrainGraceOver { in_flight: 1 });
    assert_eq!(end.next, NextStep::Stop);
}

#[test]
fn shutdown_with_nothing_in_hand_or_before_welcome_ends_at_once() {
    let mut sim = Sim::new();
    sim.open();
    sim.agent.shutdown(sim.now);
    assert!(matches!(sim.sent()[..], [Out::Drain(_)]));
    assert_eq!(sim.over().expect("over").cause, Cause::Drained);

    let mut sim = Sim::new();
    sim.start();
    sim.agent.shutdown(sim.now);
    let end = sim.over().expect("over");
    assert_eq!((end.cause, end.next), (Cause::Shutdown, NextStep::Stop));
}

#[test]
fn a_goodbye_or_silence_while_draining_means_stop() {
    let mut sim = Sim::new();
    sim.open();
    sim.request(1, "r1");
    sim.agent.shutdown(sim.now);
    sim.frame(In::Goodbye(pb::Goodbye {
        reason: GoodbyeReason::ShuttingDown as i32,
        message: String::new(),
    }));
    assert_eq!(sim.over().expect("over").next, NextStep::Stop);
}

#[test]
fn a_request_read_is_applied_even_if_its_ack_never_left() {
    let mut sim = Sim::new();
    sim.open();
    sim.request(1, "r1");
    // The driver could not write the Ack: the connection is gone. The broker
    // handed r1 to this session and sends it nowhere else, so only this
    // agent can settle its record: it applies r1 and posts the answer late.
    sim.agent.connection_lost(sim.now, "broken pipe");
    assert!(sim.sent().is_empty());
    let events = sim.events();
    assert!(
        events.iter().any(|e| matches!(e, Event::Apply(_))),
        "{events:?}"
    );
}

//! The agent's end of a session (docs/PROTOCOL.md "The session, frame by
//! frame"), without I/O or clock.
//!
//! One [`Agent`] lives as long as the agent process: it spans sessions,
//! because the replies the broker has not confirmed ([`Outbox`]) outlive the
//! session they were answered on and are posted again on the next one. The
//! driver opens a connection, calls [`Agent::start`] (which queues the
//! Hello), feeds it the broker's frames ([`Agent::handle_frame`]), the
//! handler's answers ([`Agent::reply`]) and the passing of time
//! ([`Agent::handle_timeout`] at [`Agent::poll_timeout`]), and writes out
//! [`Agent::poll_transmit`] and acts on [`Agent::poll_event`] until
//! [`Event::SessionOver`]. It polls frames before events: an [`Event::Apply`]
//! follows the Ack it depends on, and one whose Ack was still queued when
//! the session ended is withdrawn, since the broker may route it elsewhere.

pub mod outbox;

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use proto::pb::{self, GoodbyeReason, agent_frame, agent_reply, broker_frame};

pub use outbox::Outbox;

/// How long to wait for Welcome after Hello (response headers included).
pub const WELCOME_TIMEOUT: Duration = Duration::from_secs(15);
/// The shortest heartbeat interval honoured, whatever a Welcome says: a
/// broker announcing 0 must not make the agent spin.
pub const MIN_HEARTBEAT: Duration = Duration::from_millis(100);
/// A broker silent for this many heartbeat intervals is gone.
pub const SILENT_INTERVALS: u32 = 3;

/// What the agent's end is configured with.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long after Hello the Welcome may take.
    pub welcome_timeout: Duration,
    /// The lifetime of the tokens the driver mints: each is renewed when
    /// half of it has passed, well before the broker's TOKEN_EXPIRED.
    pub token_lifetime: Duration,
    /// On shutdown, how long acknowledged requests may take to finish.
    pub drain_grace: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            welcome_timeout: WELCOME_TIMEOUT,
            token_lifetime: Duration::from_secs(3600),
            drain_grace: Duration::from_secs(30),
        }
    }
}

/// Names one relayed request of one session, for [`Agent::reply`]: a
/// correlation id means something only on the session that gave it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ticket {
    /// Which session (counted from 1 by [`Agent::start`]) the request came on.
    pub generation: u64,
    /// The broker's correlation id on that session.
    pub correlation_id: u64,
    /// The portal's request id.
    pub request_id: String,
}

/// A request to apply: it was acknowledged, and is handed out once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// What to pass back to [`Agent::reply`].
    pub ticket: Ticket,
    /// The portal's request id.
    pub request_id: String,
    /// The operation (never a ping: the core answers those itself).
    pub operation: pb::Operation,
    /// The portal's sealed envelope.
    pub envelope: Vec<u8>,
    /// How long the portal still waits, counted from its arrival.
    pub timeout: Duration,
}

/// What the driver should do after a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    /// Reconnect after the usual backoff (reset if the session was healthy).
    Reconnect,
    /// The broker is draining: reconnect soon, to the next address.
    ReconnectSoon,
    /// The broker judged this agent misbehaving (UNSOLICITED_REPLIES):
    /// reconnect only after a backoff that a long session does not reset.
    BackOff,
    /// The session's token is no longer good (key rotated, expired, renewal
    /// refused): mint a new one, then reconnect after the usual backoff.
    NewToken,
    /// The agent id was revoked: the broker refuses it until an
    /// administrator restores it, so reconnecting achieves nothing before.
    Revoked,
    /// The agent is stopping: do not reconnect.
    Stop,
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// The broker said Goodbye.
    Goodbye {
        /// The reason it gave (UNSPECIFIED for an unknown value).
        reason: GoodbyeReason,
        /// Its free text.
        message: String,
    },
    /// No Welcome: another first frame, the connection's end, or none in
    /// time.
    NoWelcome(String),
    /// Nothing from the broker for three heartbeat intervals.
    Silence(Duration),
    /// The driver reported the connection's end or error.
    ConnectionLost(String),
    /// Shutdown before the session was open.
    Shutdown,
    /// Shutdown: every acknowledged request was answered.
    Drained,
    /// Shutdown: the drain grace passed with this many requests unanswered.
    DrainGraceOver {
        /// Acknowledged requests still without an answer.
        in_flight: usize,
    },
}

/// The end of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct End {
    /// Why it ended.
    pub cause: Cause,
    /// What to do next.
    pub next: NextStep,
    /// How long it was open, from Welcome; `None` if it never was.
    pub lasted: Option<Duration>,
}

/// What the driver has to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The broker accepted the session.
    Welcomed {
        /// The broker's id of the session, for logs.
        session_id: String,
        /// The broker's clock at Welcome, to report skew.
        broker_time_unix_ms: i64,
        /// The heartbeat interval in force.
        heartbeat_interval: Duration,
    },
    /// Apply this request, then call [`Agent::reply`]. Handed out once per
    /// acknowledged request.
    Apply(Request),
    /// A request refused without an Ack because the agent is draining.
    RefusedDraining {
        /// The portal's request id.
        request_id: String,
    },
    /// The broker has this reply: nothing more to do for it.
    Confirmed {
        /// The portal's request id.
        request_id: String,
    },
    /// Half the token's lifetime has passed: mint a token and call
    /// [`Agent::renewed_token`].
    RenewToken,
    /// A frame that has no meaning here was ignored (for the log).
    Ignored(&'static str),
    /// The session is over; no more frames go out on it.
    SessionOver(End),
}

/// The agent's end of its sessions with the broker.
#[derive(Debug)]
pub struct Agent {
    config: Config,
    outbox: Outbox,
    generation: u64,
    state: State,
    transmit: VecDeque<pb::AgentFrame>,
    events: VecDeque<Event>,
}

#[derive(Debug)]
enum State {
    Idle,
    Hello { deadline: Instant },
    Open(Box<Open>),
}

#[derive(Debug)]
struct Open {
    welcomed: Instant,
    interval: Duration,
    last_seen: Instant,
    next_beat: Instant,
    renew_at: Instant,
    renewing: bool,
    /// Every request of this session, by correlation id, so that a
    /// duplicate is never applied again.
    seen: HashMap<u64, Seen>,
    /// Acknowledged requests not answered yet.
    in_flight: usize,
    drain_until: Option<Instant>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    InFlight,
    Answered(String),
    Other,
}

impl Agent {
    /// An agent with no session and an empty outbox.
    pub fn new(config: Config) -> Agent {
        Agent {
            config,
            outbox: Outbox::default(),
            generation: 0,
            state: State::Idle,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Begins a session on a fresh connection: queues `hello` (its token
    /// minted by the driver). A session still going is dropped first.
    pub fn start(&mut self, now: Instant, hello: pb::Hello) {
        self.transmit.clear();
        self.events.clear();
        self.generation += 1;
        self.state = State::Hello {
            deadline: now + self.config.welcome_timeout,
        };
        self.send(agent_frame::Frame::Hello(hello));
    }

    /// The current session's generation (0 before the first).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether a session is open (welcomed and not over).
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open(_))
    }

    /// Whether the open session is draining.
    pub fn is_draining(&self) -> bool {
        matches!(&self.state, State::Open(o) if o.drain_until.is_some())
    }

    /// Acknowledged requests of the open session not answered yet.
    pub fn in_flight(&self) -> usize {
        match &self.state {
            State::Open(open) => open.in_flight,
            _ => 0,
        }
    }

    /// The replies kept for the broker's Receipt.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// A frame from the broker.
    pub fn handle_frame(&mut self, now: Instant, frame: pb::BrokerFrame) {
        match &mut self.state {
            State::Idle => {}
            State::Hello { .. } => match frame.frame {
                Some(broker_frame::Frame::Welcome(w)) => self.welcomed(now, w),
                other => {
                    let got = match other {
                        Some(f) => frame_name(&f),
                        None => "an empty frame",
                    };
                    self.end(
                        Cause::NoWelcome(format!("expected Welcome, got {got}")),
                        NextStep::Reconnect,
                        now,
                    );
                }
            },
            State::Open(open) => {
                open.last_seen = now;
                match frame.frame {
                    Some(broker_frame::Frame::Request(r)) => self.request(r),
                    Some(broker_frame::Frame::Receipt(r)) => {
                        if self.outbox.confirmed(now, &r.request_id) {
                            self.events.push_back(Event::Confirmed {
                                request_id: r.request_id,
                            });
                        }
                    }
                    Some(broker_frame::Frame::Heartbeat(_)) => {}
                    Some(broker_frame::Frame::Goodbye(g)) => {
                        let reason =
                            GoodbyeReason::try_from(g.reason).unwrap_or(GoodbyeReason::Unspecified);
                        let next = if open.drain_until.is_some() {
                            NextStep::Stop
                        } else {
                            next_step(reason)
                        };
                        let cause = Cause::Goodbye {
                            reason,
                            message: g.message,
                        };
                        self.end(cause, next, now);
                    }
                    Some(broker_frame::Frame::Welcome(_)) => {
                        self.events.push_back(Event::Ignored("a second Welcome"));
                    }
                    None => self.events.push_back(Event::Ignored("an empty frame")),
                }
            }
        }
    }

    /// The driver lost the connection (the stream ended or broke).
    pub fn connection_lost(&mut self, now: Instant, why: impl Into<String>) {
        let why = why.into();
        match &self.state {
            State::Idle => {}
            State::Hello { .. } => self.end(Cause::NoWelcome(why), NextStep::Reconnect, now),
            State::Open(open) => {
                let next = if open.drain_until.is_some() {
                    NextStep::Stop
                } else {
                    NextStep::Reconnect
                };
                self.end(Cause::ConnectionLost(why), next, now);
            }
        }
    }

    /// The handler's answer to the request `ticket` names. On its own
    /// session it goes out with the correlation id; otherwise (the session
    /// ended meanwhile) it is kept and posted late, on the current session
    /// if one is open, else on the next. Either way it stays in the outbox
    /// until its Receipt.
    pub fn reply(&mut self, now: Instant, ticket: Ticket, result: agent_reply::Result) {
        let generation = self.generation;
        let mut reply = pb::AgentReply {
            correlation_id: ticket.correlation_id,
            request_id: ticket.request_id,
            result: Some(result),
        };
        let State::Open(open) = &mut self.state else {
            self.outbox.keep(now, &reply, None);
            return;
        };
        if ticket.generation != generation {
            reply.correlation_id = 0;
            self.outbox.keep(now, &reply, None);
            self.post_unconfirmed(now);
            return;
        }
        // A ticket this session did not hand out, or answered twice, has
        // nothing to count down.
        if let Some(seen @ Seen::InFlight) = open.seen.get_mut(&ticket.correlation_id) {
            *seen = Seen::Answered(reply.request_id.clone());
            open.in_flight -= 1;
        }
        let drained = open.drain_until.is_some() && open.in_flight == 0;
        self.outbox.keep(now, &reply, Some(generation));
        self.send(agent_frame::Frame::Reply(reply));
        if drained {
            self.end(Cause::Drained, NextStep::Stop, now);
        }
    }

    /// The token the driver minted after [`Event::RenewToken`].
    pub fn renewed_token(&mut self, now: Instant, token: String) {
        let lifetime = self.config.token_lifetime;
        if let State::Open(open) = &mut self.state {
            open.renewing = false;
            open.renew_at = now + lifetime / 2;
            self.send(agent_frame::Frame::RenewToken(pb::RenewToken { token }));
        }
    }

    /// The agent is stopping. An open session sends Drain, refuses new
    /// requests and ends once the acknowledged ones are answered or the
    /// drain grace is over; a session not open yet ends at once.
    pub fn shutdown(&mut self, now: Instant) {
        let grace = self.config.drain_grace;
        match &mut self.state {
            State::Idle => {}
            State::Hello { .. } => self.end(Cause::Shutdown, NextStep::Stop, now),
            State::Open(open) => {
                if open.drain_until.is_some() {
                    return;
                }
                open.drain_until = Some(now + grace);
                let idle = open.in_flight == 0;
                self.send(agent_frame::Frame::Drain(pb::Drain {}));
                if idle {
                    self.end(Cause::Drained, NextStep::Stop, now);
                }
            }
        }
    }

    /// Time has passed: Welcome deadline, heartbeat, silence, renewal,
    /// drain grace.
    pub fn handle_timeout(&mut self, now: Instant) {
        match &mut self.state {
            State::Idle => {}
            State::Hello { deadline } => {
                if now >= *deadline {
                    let t = self.config.welcome_timeout;
                    self.end(
                        Cause::NoWelcome(format!("no Welcome within {}s", t.as_secs())),
                        NextStep::Reconnect,
                        now,
                    );
                }
            }
            State::Open(open) => {
                let silence = open.interval * SILENT_INTERVALS;
                if now >= open.last_seen + silence {
                    let next = if open.drain_until.is_some() {
                        NextStep::Stop
                    } else {
                        NextStep::Reconnect
                    };
                    return self.end(Cause::Silence(silence), next, now);
                }
                if open.drain_until.is_some_and(|u| now >= u) {
                    let in_flight = open.in_flight;
                    return self.end(Cause::DrainGraceOver { in_flight }, NextStep::Stop, now);
                }
                if now >= open.renew_at && !open.renewing {
                    open.renewing = true;
                    self.events.push_back(Event::RenewToken);
                }
                if now >= open.next_beat {
                    // Delay rather than burst: a late wakeup sends one beat.
                    open.next_beat = now + open.interval;
                    self.send(agent_frame::Frame::Heartbeat(pb::Heartbeat {
                        sent_unix_ms: 0,
                    }));
                    // What this session has not carried (a reply whose
                    // session ended, answered while this one was starting).
                    self.post_unconfirmed(now);
                }
            }
        }
    }

    /// The next frame to write. A Heartbeat's `sent_unix_ms` is 0: the
    /// core has no wall clock, the driver stamps it.
    pub fn poll_transmit(&mut self) -> Option<pb::AgentFrame> {
        self.transmit.pop_front()
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Agent::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Idle => None,
            State::Hello { deadline } => Some(*deadline),
            State::Open(open) => {
                let mut at = open
                    .next_beat
                    .min(open.last_seen + open.interval * SILENT_INTERVALS);
                if !open.renewing {
                    at = at.min(open.renew_at);
                }
                if let Some(until) = open.drain_until {
                    at = at.min(until);
                }
                Some(at)
            }
        }
    }

    fn welcomed(&mut self, now: Instant, w: pb::Welcome) {
        let interval = Duration::from_millis(u64::from(w.heartbeat_interval_ms)).max(MIN_HEARTBEAT);
        self.state = State::Open(Box::new(Open {
            welcomed: now,
            interval,
            last_seen: now,
            next_beat: now + interval,
            renew_at: now + self.config.token_lifetime / 2,
            renewing: false,
            seen: HashMap::new(),
            in_flight: 0,
            drain_until: None,
        }));
        self.events.push_back(Event::Welcomed {
            session_id: w.session_id,
            broker_time_unix_ms: w.broker_time_unix_ms,
            heartbeat_interval: interval,
        });
        // Replies of earlier sessions that the broker never confirmed.
        self.post_unconfirmed(now);
    }

    fn request(&mut self, r: pb::RelayedRequest) {
        let generation = self.generation;
        let State::Open(open) = &mut self.state else {
            return;
        };
        match open.seen.get(&r.correlation_id) {
            // A duplicate: never applied again. Still in hand: the Ack again
            // (the broker ignores a repeated one). Answered: the answer again.
            Some(Seen::InFlight) => {
                let ack = pb::Ack {
                    correlation_id: r.correlation_id,
                };
                return self.send(agent_frame::Frame::Ack(ack));
            }
            Some(Seen::Answered(id)) => {
                if let Some(kept) = self.outbox.get(id) {
                    let reply = pb::AgentReply {
                        correlation_id: r.correlation_id,
                        ..kept.clone()
                    };
                    self.send(agent_frame::Frame::Reply(reply));
                }
                return;
            }
            Some(Seen::Other) => return,
            None => {}
        }
        let operation = pb::Operation::try_from(r.operation).unwrap_or(pb::Operation::Unspecified);
        if open.drain_until.is_some() {
            // No Ack: nothing was applied, so the broker may route it to
            // another agent.
            open.seen.insert(r.correlation_id, Seen::Other);
            let error = pb::AgentError {
                code: pb::AgentErrorCode::Unavailable as i32,
                message: "the agent is shutting down; the request was not applied".into(),
                refusal: pb::EnvelopeRefusal::Unspecified as i32,
            };
            let reply = pb::AgentReply {
                correlation_id: r.correlation_id,
                request_id: r.request_id.clone(),
                result: Some(agent_reply::Result::Error(error)),
            };
            self.send(agent_frame::Frame::Reply(reply));
            self.events.push_back(Event::RefusedDraining {
                request_id: r.request_id,
            });
            return;
        }
        if operation == pb::Operation::Ping {
            // Answered at once and not kept: a ping changes nothing, and
            // its answer is worthless once its caller has gone.
            open.seen.insert(r.correlation_id, Seen::Other);
            let reply = pb::AgentReply {
                correlation_id: r.correlation_id,
                request_id: r.request_id,
                result: Some(agent_reply::Result::Envelope(Vec::new())),
            };
            return self.send(agent_frame::Frame::Reply(reply));
        }
        // The Ack goes out before any work: from here on the broker gives
        // the request to nobody else.
        open.seen.insert(r.correlation_id, Seen::InFlight);
        open.in_flight += 1;
        self.send(agent_frame::Frame::Ack(pb::Ack {
            correlation_id: r.correlation_id,
        }));
        self.events.push_back(Event::Apply(Request {
            ticket: Ticket {
                generation,
                correlation_id: r.correlation_id,
                request_id: r.request_id.clone(),
            },
            request_id: r.request_id,
            operation,
            envelope: r.envelope.into(),
            timeout: Duration::from_millis(u64::from(r.timeout_ms)),
        }));
    }

    fn post_unconfirmed(&mut self, now: Instant) {
        for reply in self.outbox.to_post(now, self.generation) {
            self.send(agent_frame::Frame::Reply(reply));
        }
    }

    fn end(&mut self, cause: Cause, next: NextStep, now: Instant) {
        let lasted = match &self.state {
            State::Open(open) => Some(now.saturating_duration_since(open.welcomed)),
            _ => None,
        };
        self.state = State::Idle;
        if !matches!(cause, Cause::Drained | Cause::DrainGraceOver { .. }) {
            // Nothing more goes out on a dead session, and a request whose
            // Ack never left must not be applied either: the broker may give
            // it to another session. One whose Ack left is applied (and
            // answered late), since the broker now tells its caller the
            // outcome is unknown. A drained session still writes its last
            // replies and Drain.
            let unsent: HashSet<u64> = self
                .transmit
                .iter()
                .filter_map(|f| match &f.frame {
                    Some(agent_frame::Frame::Ack(a)) => Some(a.correlation_id),
                    _ => None,
                })
                .collect();
            self.transmit.clear();
            self.events.retain(
                |e| !matches!(e, Event::Apply(r) if unsent.contains(&r.ticket.correlation_id)),
            );
        }
        self.events.push_back(Event::SessionOver(End {
            cause,
            next,
            lasted,
        }));
    }

    fn send(&mut self, frame: agent_frame::Frame) {
        self.transmit
            .push_back(pb::AgentFrame { frame: Some(frame) });
    }
}

/// What a Goodbye tells a serving agent to do.
pub fn next_step(reason: GoodbyeReason) -> NextStep {
    match reason {
        GoodbyeReason::ShuttingDown => NextStep::ReconnectSoon,
        GoodbyeReason::AgentRevoked => NextStep::Revoked,
        GoodbyeReason::KeyRotated | GoodbyeReason::TokenExpired | GoodbyeReason::RenewalRefused => {
            NextStep::NewToken
        }
        GoodbyeReason::UnsolicitedReplies => NextStep::BackOff,
        GoodbyeReason::Unspecified
        | GoodbyeReason::TenantDeleted
        | GoodbyeReason::HeartbeatTimeout
        | GoodbyeReason::ProtocolViolation
        | GoodbyeReason::Replaced
        | GoodbyeReason::Unresponsive
        | GoodbyeReason::MalformedFrame => NextStep::Reconnect,
    }
}

fn frame_name(f: &broker_frame::Frame) -> &'static str {
    match f {
        broker_frame::Frame::Welcome(_) => "Welcome",
        broker_frame::Frame::Heartbeat(_) => "Heartbeat",
        broker_frame::Frame::Request(_) => "RelayedRequest",
        broker_frame::Frame::Goodbye(_) => "Goodbye",
        broker_frame::Frame::Receipt(_) => "Receipt",
    }
}

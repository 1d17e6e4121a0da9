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
//! [`Event::SessionOver`]. It polls frames before events, so an
//! [`Event::Apply`] follows the Ack it depends on; a request read is applied
//! even when the session ends before its Ack leaves, since the broker sends
//! a request it handed to a session nowhere else.

mod events;
mod frames;
pub mod outbox;

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use proto::pb::{self, agent_frame, agent_reply};

pub use events::{Cause, Config, End, Event, NextStep, Request, Ticket, next_step};
pub use outbox::Outbox;

/// How long to wait for Welcome after Hello (response headers included).
pub const WELCOME_TIMEOUT: Duration = Duration::from_secs(15);
/// The shortest heartbeat interval honoured, whatever a Welcome says: a
/// broker announcing 0 must not make the agent spin.
pub const MIN_HEARTBEAT: Duration = Duration::from_millis(100);
/// A broker silent for this many heartbeat intervals is gone.
pub const SILENT_INTERVALS: u32 = 3;

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
            // Nothing more goes out on a dead session. A request already
            // read is still applied, even if its Ack never left: the broker
            // handed it to this session, so it sends it nowhere else and
            // tells its caller the outcome is unknown (PROTOCOL.md,
            // Delivery, point 2); the answer, posted late, settles that
            // record. Dropping the Apply would leave it awaited for good.
            // A drained session still writes its last replies and Drain.
            self.transmit.clear();
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

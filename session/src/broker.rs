//! The broker's end of one agent session (PROTOCOL.md "The session, frame by
//! frame" and "Delivery"), without I/O or clock.
//!
//! [`BrokerSession`] takes the agent's frames and `now`, and gives the frames
//! to send, the [`Event`]s its driver must act on and the next instant it
//! wants to be woken. What needs state beyond one session (checking a token,
//! the registry of sessions, the outcome store) stays with the driver: the
//! machine asks with an event ([`Event::Hello`], [`Event::RenewToken`],
//! [`Event::LateReply`]) and takes the verdict through a method
//! ([`BrokerSession::accept`], [`BrokerSession::renewed`],
//! [`BrokerSession::late_verdict`], ...). What one session decides lives
//! here: the two-stage delivery of each request (Ack, answer, Receipt, the
//! ack timeout, the caller's deadline, never again after an Ack), and every
//! Goodbye the session gives on its own (HEARTBEAT_TIMEOUT, UNRESPONSIVE,
//! PROTOCOL_VIOLATION, TOKEN_EXPIRED, RENEWAL_REFUSED, UNSOLICITED_REPLIES,
//! SHUTTING_DOWN once a draining broker's session holds nothing). [`Route`]
//! holds the rules for trying one request on one session after another.

mod events;
mod frames;
mod requests;
mod route;
mod tally;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use proto::pb::{self, BrokerFrame, GoodbyeReason, broker_frame};

pub use events::{Answer, End, Event, LateVerdict, Phase, Refusal, RequestEnd, SendError};
use requests::Requests;
pub use route::{Next, Route, Routed};
pub use tally::{MINUTE, PerMinute, Tally};

/// A request's id on one session: the `correlation_id` of its
/// `RelayedRequest`, which the agent's Ack and AgentReply echo.
pub type CorrelationId = u64;

/// A session with no frame from its agent for this many heartbeat
/// intervals is closed as silent (HEARTBEAT_TIMEOUT).
pub const SILENT_AFTER_INTERVALS: u32 = 3;

/// The settings one session is run with.
#[derive(Debug, Clone)]
pub struct Config {
    /// How often heartbeats go both ways; three silent ones end the session.
    pub heartbeat_interval: Duration,
    /// How long the first frame (Hello) may take.
    pub hello_timeout: Duration,
    /// How long an Ack may take before the session is presumed dead.
    pub ack_timeout: Duration,
    /// A reply envelope over this reaches the portal as an agent error.
    pub max_envelope_bytes: usize,
    /// Replies for requests nobody awaits, per minute, before Goodbye
    /// UNSOLICITED_REPLIES.
    pub unsolicited_replies_per_minute: u32,
}

/// The broker's end of one agent session.
#[derive(Debug)]
pub struct BrokerSession {
    config: Config,
    phase: Phase,
    opened: Instant,
    last_heard: Instant,
    next_heartbeat: Option<Instant>,
    token_expires: Option<Instant>,
    broker_draining: bool,
    requests: Requests,
    transmit: VecDeque<BrokerFrame>,
    events: VecDeque<Event>,
    unsolicited: PerMinute,
}

impl BrokerSession {
    /// A session whose stream opened at `now`.
    pub fn new(now: Instant, config: Config) -> BrokerSession {
        BrokerSession {
            config,
            phase: Phase::AwaitingHello,
            opened: now,
            last_heard: now,
            next_heartbeat: None,
            token_expires: None,
            broker_draining: false,
            requests: Requests::default(),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            unsolicited: PerMinute::default(),
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Whether [`Self::send_request`] would take a request.
    pub fn is_routable(&self) -> bool {
        self.phase == Phase::Open
    }

    /// Requests sent on this session that have not ended.
    pub fn in_flight(&self) -> usize {
        self.requests.len()
    }

    /// The agent's last frame, on the monotonic clock.
    pub fn last_heard(&self) -> Instant {
        self.last_heard
    }

    /// The next frame to send, in order.
    pub fn poll_transmit(&mut self) -> Option<BrokerFrame> {
        let frame = self.transmit.pop_front()?;
        if let Some(broker_frame::Frame::Request(r)) = &frame.frame {
            self.requests.transmitted(r.correlation_id);
        }
        Some(frame)
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When to call [`Self::handle_timeout`] next; `None` once closed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let hello = self.opened + self.config.hello_timeout;
        let silence = self.last_heard + self.config.heartbeat_interval * SILENT_AFTER_INTERVALS;
        let timers = match self.phase {
            Phase::Closed => return None,
            Phase::AwaitingHello | Phase::Authenticating => [Some(hello), None, None, None],
            Phase::Open | Phase::Draining => [
                Some(silence),
                self.next_heartbeat,
                self.token_expires,
                self.requests.next_timeout(),
            ],
        };
        timers.into_iter().flatten().min()
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.phase {
            Phase::Closed => {}
            Phase::AwaitingHello | Phase::Authenticating => {
                if now >= self.opened + self.config.hello_timeout {
                    self.end(End::NotOpened(Refusal::HelloTimeout));
                }
            }
            Phase::Open | Phase::Draining => self.open_timers(now),
        }
    }

    fn open_timers(&mut self, now: Instant) {
        for (correlation_id, request_id, end) in self.requests.expire(now) {
            self.drop_queued(correlation_id);
            self.ended(correlation_id, request_id, end);
        }
        let interval = self.config.heartbeat_interval;
        if now >= self.last_heard + interval * SILENT_AFTER_INTERVALS {
            return self.goodbye(
                GoodbyeReason::HeartbeatTimeout,
                "no frame from the agent within three heartbeat intervals",
            );
        }
        if self.token_expires.is_some_and(|at| now >= at) {
            return self.goodbye(
                GoodbyeReason::TokenExpired,
                "the session's token expired without renewal",
            );
        }
        if self.requests.unacknowledged_past(now) {
            let message = format!(
                "a request was not acknowledged within {} ms",
                self.config.ack_timeout.as_millis()
            );
            return self.goodbye(GoodbyeReason::Unresponsive, message);
        }
        if let Some(mut at) = self.next_heartbeat.filter(|at| now >= *at) {
            // One heartbeat however late the wake-up: missed ones are not owed.
            while at <= now {
                at += interval;
            }
            self.next_heartbeat = Some(at);
            self.queue(broker_frame::Frame::Heartbeat(pb::Heartbeat {
                // The driver stamps its wall clock: the machine has none.
                sent_unix_ms: 0,
            }));
        }
        self.maybe_drained();
    }

    /// The driver accepted the Hello: Welcome goes out and the session opens.
    /// `token_expires` is the token's expiry on the monotonic clock. The
    /// driver fills the Welcome; its heartbeat interval, ack timeout and
    /// envelope limit are set here from [`Config`].
    pub fn accept(&mut self, now: Instant, mut welcome: pb::Welcome, token_expires: Instant) {
        if self.phase != Phase::Authenticating {
            return;
        }
        self.phase = Phase::Open;
        self.last_heard = now;
        self.next_heartbeat = Some(now + self.config.heartbeat_interval);
        self.token_expires = Some(token_expires);
        // What the Welcome promises is what this machine enforces.
        welcome.heartbeat_interval_ms = millis(self.config.heartbeat_interval);
        welcome.ack_timeout_ms = millis(self.config.ack_timeout);
        welcome.max_envelope_bytes =
            u32::try_from(self.config.max_envelope_bytes).unwrap_or(u32::MAX);
        self.queue(broker_frame::Frame::Welcome(welcome));
        if self.broker_draining {
            self.phase = Phase::Draining;
            self.maybe_drained();
        }
    }

    /// The driver refused the Hello: the stream ends with its status.
    pub fn refuse(&mut self, _now: Instant) {
        if matches!(self.phase, Phase::AwaitingHello | Phase::Authenticating) {
            self.end(End::NotOpened(Refusal::Refused));
        }
    }

    /// The renewed token is good until `token_expires` (monotonic).
    pub fn renewed(&mut self, _now: Instant, token_expires: Instant) {
        if matches!(self.phase, Phase::Open | Phase::Draining) {
            self.token_expires = Some(token_expires);
        }
    }

    /// The renewed token was refused: Goodbye RENEWAL_REFUSED.
    pub fn renewal_refused(&mut self, _now: Instant, message: impl Into<String>) {
        self.goodbye(GoodbyeReason::RenewalRefused, message);
    }

    /// Sends a request, due by `deadline`. The machine sets its
    /// `correlation_id` and `timeout_ms` (the time left at `now`).
    pub fn send_request(
        &mut self,
        now: Instant,
        mut request: pb::RelayedRequest,
        deadline: Instant,
    ) -> Result<CorrelationId, SendError> {
        match self.phase {
            Phase::Open => {}
            Phase::Draining => return Err(SendError::Draining),
            _ => return Err(SendError::NotOpen),
        }
        let ack_by = now + self.config.ack_timeout;
        let id = self
            .requests
            .insert(now, request.request_id.clone(), deadline, ack_by);
        request.correlation_id = id;
        request.timeout_ms = millis(deadline.saturating_duration_since(now));
        self.queue(broker_frame::Frame::Request(request));
        Ok(id)
    }

    /// The broker is shutting down: no new requests; Goodbye SHUTTING_DOWN
    /// once the session holds none (the driver closes it at `drain_grace`).
    pub fn drain(&mut self, _now: Instant) {
        self.broker_draining = true;
        if self.phase == Phase::Open {
            self.phase = Phase::Draining;
        }
        self.maybe_drained();
    }

    /// Ends the session with a Goodbye the driver decided (REPLACED,
    /// AGENT_REVOKED, KEY_ROTATED, TENANT_DELETED, SHUTTING_DOWN). The first
    /// reason wins. Before the Welcome the stream simply ends.
    pub fn close(&mut self, _now: Instant, reason: GoodbyeReason, message: impl Into<String>) {
        match self.phase {
            Phase::Closed => {}
            Phase::AwaitingHello | Phase::Authenticating => {
                self.end(End::NotOpened(Refusal::Refused))
            }
            Phase::Open | Phase::Draining => self.goodbye(reason, message),
        }
    }

    /// A frame from the agent did not decode.
    pub fn malformed(&mut self, _now: Instant, message: impl Into<String>) {
        match self.phase {
            Phase::Closed => {}
            Phase::AwaitingHello | Phase::Authenticating => {
                self.end(End::NotOpened(Refusal::Malformed(message.into())))
            }
            Phase::Open | Phase::Draining => self.goodbye(GoodbyeReason::MalformedFrame, message),
        }
    }

    /// The agent's stream ended or broke.
    pub fn stream_ended(&mut self, _now: Instant) {
        if self.phase != Phase::Closed {
            self.end(End::StreamEnded);
        }
    }

    /// Confirms or refuses a [`Event::LateReply`]. For
    /// [`LateVerdict::Unsolicited`], the session's count this minute (past
    /// the limit, the session is closed).
    pub fn late_verdict(
        &mut self,
        now: Instant,
        correlation_id: CorrelationId,
        request_id: String,
        verdict: LateVerdict,
    ) -> Option<Tally> {
        if self.phase == Phase::Closed {
            return None;
        }
        if verdict != LateVerdict::TenantBusy {
            self.receipt(correlation_id, request_id);
        }
        (verdict == LateVerdict::Unsolicited).then(|| self.count_unsolicited(now))
    }

    /// Counts a reply found unsolicited after its Receipt went out (the
    /// store decided later); past the limit, Goodbye UNSOLICITED_REPLIES.
    pub fn count_unsolicited(&mut self, now: Instant) -> Tally {
        let tally = self.unsolicited.note(now);
        let limit = self.config.unsolicited_replies_per_minute;
        if tally.count > limit {
            let message = format!(
                "{} replies within a minute for requests this agent was not given or that are no longer awaited (at most {limit})",
                tally.count
            );
            self.goodbye(GoodbyeReason::UnsolicitedReplies, message);
        }
        tally
    }

    fn queue(&mut self, frame: broker_frame::Frame) {
        self.transmit.push_back(BrokerFrame { frame: Some(frame) });
    }

    fn receipt(&mut self, correlation_id: CorrelationId, request_id: String) {
        self.queue(broker_frame::Frame::Receipt(pb::Receipt {
            correlation_id,
            request_id,
        }));
    }

    /// Takes a request's frame back if it was never handed out.
    fn drop_queued(&mut self, correlation_id: CorrelationId) {
        self.transmit.retain(|f| {
            !matches!(&f.frame, Some(broker_frame::Frame::Request(r)) if r.correlation_id == correlation_id)
        });
    }

    fn ended(&mut self, correlation_id: CorrelationId, request_id: String, end: RequestEnd) {
        self.events.push_back(Event::Ended {
            correlation_id,
            request_id,
            end,
        });
    }

    /// A draining broker says Goodbye once the session holds nothing.
    fn maybe_drained(&mut self) {
        if self.broker_draining && self.phase == Phase::Draining && self.requests.is_empty() {
            self.goodbye(
                GoodbyeReason::ShuttingDown,
                "the broker is shutting down; reconnect",
            );
        }
    }

    fn goodbye(&mut self, reason: GoodbyeReason, message: impl Into<String>) {
        if matches!(self.phase, Phase::Open | Phase::Draining) {
            self.end(End::Goodbye {
                reason,
                message: message.into(),
            });
        }
    }

    /// Closes the session: requests never handed out are taken back and
    /// end NotDelivered, the others Lost; the Goodbye (if any) goes last.
    fn end(&mut self, end: End) {
        self.phase = Phase::Closed;
        self.transmit
            .retain(|f| !matches!(f.frame, Some(broker_frame::Frame::Request(_))));
        for (correlation_id, request_id, request_end) in self.requests.abandon() {
            self.ended(correlation_id, request_id, request_end);
        }
        if let End::Goodbye { reason, message } = &end {
            self.queue(broker_frame::Frame::Goodbye(pb::Goodbye {
                reason: *reason as i32,
                message: message.clone(),
            }));
        }
        self.events.push_back(Event::Closed(end));
    }
}

/// Milliseconds for a `u32` field, saturating.
fn millis(d: Duration) -> u32 {
    d.as_millis().min(u128::from(u32::MAX)) as u32
}

//! What the agent's end gives its driver and what it is configured with:
//! the [`Event`]s, a session's [`End`] and the [`NextStep`] after it.

use std::time::Duration;

use proto::pb::{self, GoodbyeReason};

use super::WELCOME_TIMEOUT;

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

/// Names one relayed request of one session, for [`Agent::reply`](super::Agent::reply): a
/// correlation id means something only on the session that gave it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ticket {
    /// Which session (counted from 1 by [`Agent::start`](super::Agent::start)) the request came on.
    pub generation: u64,
    /// The broker's correlation id on that session.
    pub correlation_id: u64,
    /// The portal's request id.
    pub request_id: String,
}

/// A request to apply: it was acknowledged, and is handed out once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// What to pass back to [`Agent::reply`](super::Agent::reply).
    pub ticket: Ticket,
    /// The portal's request id.
    pub request_id: String,
    /// The operation (never a ping: the core answers those itself).
    pub operation: pb::Operation,
    /// The portal's sealed envelope.
    pub envelope: Vec<u8>,
    /// How long the portal still waits, counted from its arrival.
    pub timeout: Duration,
    /// The broker's W3C `traceparent` for this request; empty when none.
    pub traceparent: String,
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
    /// Apply this request, then call [`Agent::reply`](super::Agent::reply). Handed out once per
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
    /// [`Agent::renewed_token`](super::Agent::renewed_token).
    RenewToken,
    /// A frame that has no meaning here was ignored (for the log).
    Ignored(&'static str),
    /// The session is over; no more frames go out on it.
    SessionOver(End),
}

/// What a Goodbye tells a serving agent to do. After UNSOLICITED_REPLIES
/// the outbox is kept as it is: the broker confirmed (and dropped) each
/// unsolicited reply it took before closing, so the next session posts
/// fewer, while a legitimate late answer among them (one a broker restored
/// from an old backup does not know yet) is not thrown away.
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

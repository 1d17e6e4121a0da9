//! The broker end's vocabulary: its phases, how requests and sessions end,
//! and the events and verdicts exchanged with its driver.

use proto::pb::{self, GoodbyeReason};
use std::time::Duration;

use super::CorrelationId;

/// Where the session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The stream is open and nothing accepted yet.
    AwaitingHello,
    /// The Hello came; the driver is checking it.
    Authenticating,
    /// Welcome sent: the session takes requests.
    Open,
    /// The agent sent Drain, or the broker is shutting down: no new requests,
    /// answers still taken.
    Draining,
    /// Over; [`Event::Closed`] said how.
    Closed,
}

/// What an agent answered to a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// The agent's sealed reply, unchanged.
    Envelope(Vec<u8>),
    /// The agent's error, or one the session made of a reply it cannot pass
    /// on (an envelope over the limit, a reply with neither result). The
    /// message is the agent's text as it came: the driver escapes it.
    Error(pb::AgentError),
}

/// How one request sent on this session ended. Exactly one per request.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestEnd {
    /// The agent answered; a Receipt is already queued.
    Answered {
        answer: Answer,
        /// From [`BrokerSession::send_request`](super::BrokerSession::send_request) to the answer.
        rtt: Duration,
    },
    /// Nothing reached the agent (it was never handed to the stream, or the
    /// agent refused it as unavailable before an Ack): it may go elsewhere.
    NotDelivered,
    /// The agent may have it, and its answer will not come on this session:
    /// the session ended, or no Ack came within the ack timeout.
    Lost { acknowledged: bool },
    /// The caller's deadline passed. `sent`: the request was handed to the
    /// stream, so the agent may have it.
    DeadlineExceeded { sent: bool, acknowledged: bool },
}

/// What the driver must act on, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Check this Hello; answer with [`BrokerSession::accept`](super::BrokerSession::accept) or
    /// [`BrokerSession::refuse`](super::BrokerSession::refuse).
    Hello(pb::Hello),
    /// Check this token; answer with [`BrokerSession::renewed`](super::BrokerSession::renewed) or
    /// [`BrokerSession::renewal_refused`](super::BrokerSession::renewal_refused).
    RenewToken(String),
    /// The agent sent Drain: route it nothing new.
    AgentDraining,
    /// The agent acknowledged a request: from now on it is never sent again.
    Acknowledged(CorrelationId),
    /// A request ended.
    Ended {
        correlation_id: CorrelationId,
        request_id: String,
        end: RequestEnd,
    },
    /// A reply nobody waits for on this session (posted late, or after its
    /// request ended): decide with [`BrokerSession::late_verdict`](super::BrokerSession::late_verdict).
    LateReply {
        correlation_id: CorrelationId,
        request_id: String,
        answer: Answer,
    },
    /// The session is over. Its last frame (the Goodbye, if any) is queued.
    Closed(End),
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq)]
pub enum End {
    /// The broker said Goodbye.
    Goodbye {
        reason: GoodbyeReason,
        message: String,
    },
    /// It never opened: the stream ends with a status, no Goodbye.
    NotOpened(Refusal),
    /// The agent ended the stream, or it broke.
    StreamEnded,
}

/// Why a session never opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No Hello within the hello timeout.
    HelloTimeout,
    /// The first frame was not Hello, or a frame came before the verdict.
    ProtocolViolation(String),
    /// The first frame did not decode.
    Malformed(String),
    /// The driver refused the Hello ([`BrokerSession::refuse`](super::BrokerSession::refuse)).
    Refused,
}

/// Why [`BrokerSession::send_request`](super::BrokerSession::send_request) took nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("the session is not open")]
    NotOpen,
    #[error("the session is draining")]
    Draining,
}

/// The driver's decision on a [`Event::LateReply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LateVerdict {
    /// Kept as the request's late outcome: confirmed.
    Taken,
    /// A repeat of an answer already kept (its Receipt was lost): confirmed.
    Duplicate,
    /// Awaited from nobody on this agent: confirmed, and counted against
    /// the session's `unsolicited_replies_per_minute`.
    Unsolicited,
    /// The tenant's late answers are at their bound: not confirmed, so the
    /// agent posts it again later.
    TenantBusy,
}

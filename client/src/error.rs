//! Errors of the portal and admin clients: the broker's stable reason when it
//! gave one, so callers can match on it instead of on text.

use std::collections::HashMap;

pub use proto::Reason;
pub use proto::pb::EnvelopeRefusal;
use tonic::{Code, Status};

use crate::connect::ConnectError;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The broker refused or failed the call for a stated reason.
    #[error("{reason}: {message}")]
    Relay {
        reason: Reason,
        message: String,
        metadata: HashMap<String, String>,
    },
    /// A gRPC failure without a relay reason: the deadline passed on this
    /// side, the connection broke, or the peer is not a relay broker.
    #[error("{}: {}", .0.code(), .0.message())]
    Rpc(Status),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl ClientError {
    /// The relay reason, also for a deadline that expired on this side.
    pub fn reason(&self) -> Option<Reason> {
        match self {
            ClientError::Relay { reason, .. } => Some(*reason),
            ClientError::Rpc(s) if s.code() == Code::DeadlineExceeded => {
                Some(Reason::DeadlineExceeded)
            }
            _ => None,
        }
    }

    /// With reason AGENT_ERROR: which of the agent's checks refused the
    /// envelope (the `refusal` ErrorInfo entry), typed. `None` for other
    /// failures, for an agent error that is no envelope refusal, and for a
    /// refusal this release does not know. Like every status, the broker's
    /// word only: see [`crate::sealed::Provenance`].
    pub fn refusal(&self) -> Option<EnvelopeRefusal> {
        match self {
            ClientError::Relay {
                reason: Reason::AgentError,
                metadata,
                ..
            } => metadata
                .get(proto::REFUSAL_KEY)
                .and_then(|name| EnvelopeRefusal::from_name(name)),
            _ => None,
        }
    }

    pub fn code(&self) -> Option<Code> {
        match self {
            ClientError::Relay { reason, .. } => Some(reason.code()),
            ClientError::Rpc(s) => Some(s.code()),
            _ => None,
        }
    }
}

/// Whether tonic failed the call because its own deadline passed.
fn is_local_timeout(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        if err.is::<tonic::TimeoutExpired>() {
            return true;
        }
        source = err.source();
    }
    false
}

impl From<Status> for ClientError {
    fn from(status: Status) -> ClientError {
        if is_local_timeout(&status) {
            // The caller's deadline passed here first; the broker stops
            // waiting at the same deadline.
            return ClientError::Relay {
                reason: Reason::DeadlineExceeded,
                message: "the deadline passed before the broker answered".into(),
                metadata: HashMap::new(),
            };
        }
        match proto::reason_of(&status) {
            Some((reason, metadata)) => ClientError::Relay {
                reason,
                message: status.message().to_owned(),
                metadata,
            },
            None => ClientError::Rpc(status),
        }
    }
}

/// Whether the call failed before any byte of it could leave this process:
/// the broker refused the connection.
fn never_sent(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        source = err.source();
    }
    false
}

/// The error of a Submit. When the broker gave no reason (the connection
/// broke, the broker died, this side's deadline passed first) the request
/// may have reached an agent: that is OUTCOME_UNKNOWN, never a plain
/// transport error a portal might take for "nothing happened".
pub(crate) fn submit_failure(status: Status, request_id: &str) -> ClientError {
    let never_sent = never_sent(&status);
    match ClientError::from(status) {
        ClientError::Relay {
            reason: Reason::DeadlineExceeded,
            metadata,
            ..
        } if metadata.is_empty() => {
            outcome_unknown(request_id, "the deadline passed before the broker answered")
        }
        ClientError::Rpc(status) if !never_sent && may_have_run(status.code()) => outcome_unknown(
            request_id,
            &format!("the call to the broker failed: {}", status.message()),
        ),
        other => other,
    }
}

/// Codes that a broken or dying connection produces. The others (OUT_OF_RANGE
/// for a message over the broker's size limit, UNIMPLEMENTED, ...) are the
/// broker refusing the call before it looked at it.
fn may_have_run(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::Unknown
            | Code::Internal
            | Code::Cancelled
            | Code::Aborted
            | Code::DataLoss
    )
}

fn outcome_unknown(request_id: &str, why: &str) -> ClientError {
    ClientError::Relay {
        reason: Reason::OutcomeUnknown,
        message: format!(
            "{why}; the request may or may not have been applied. Ask for the outcome of {request_id:?} later"
        ),
        metadata: HashMap::from([
            ("request_id".to_owned(), request_id.to_owned()),
            ("acknowledged".to_owned(), "unknown".to_owned()),
        ]),
    }
}

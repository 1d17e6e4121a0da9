//! Errors of the portal and admin clients: the broker's stable reason when it
//! gave one, so callers can match on it instead of on text.

use std::collections::HashMap;

pub use proto::Reason;
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

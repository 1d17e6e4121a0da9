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

impl From<Status> for ClientError {
    fn from(status: Status) -> ClientError {
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

//! The seam between the session (transport) and the work an agent does.

use std::time::Instant;

use proto::pb::{AgentErrorCode, EnvelopeRefusal, Operation};

/// A portal request delivered to this agent.
#[derive(Debug)]
pub struct IncomingRequest {
    /// The portal's request id, for logs and event correlation.
    pub request_id: String,
    pub operation: Operation,
    /// The portal's sealed envelope.
    pub envelope: Vec<u8>,
    /// When the portal stops waiting for the answer.
    pub deadline: Instant,
    /// The broker's clock minus this agent's, measured when the session
    /// started: reported with expiry refusals, since skew is their usual cause.
    pub broker_clock_skew_ms: i64,
}

/// Why the handler produced no reply envelope. The message travels to the
/// portal through the broker in clear: it must never contain a secret.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct HandlerError {
    pub code: AgentErrorCode,
    /// Which check refused the envelope; UNSPECIFIED for an error that is
    /// not an envelope refusal. Travels as `AgentError.refusal`.
    pub refusal: EnvelopeRefusal,
    pub message: String,
}

impl HandlerError {
    pub fn new(code: AgentErrorCode, message: impl Into<String>) -> HandlerError {
        HandlerError {
            code,
            refusal: EnvelopeRefusal::Unspecified,
            message: message.into(),
        }
    }

    /// An envelope refused by one of the agent's checks (REJECTED).
    pub fn refused(refusal: EnvelopeRefusal, message: impl Into<String>) -> HandlerError {
        HandlerError {
            code: AgentErrorCode::Rejected,
            refusal,
            message: message.into(),
        }
    }

    /// The refusal, unless this is another kind of error.
    pub fn refusal(&self) -> Option<EnvelopeRefusal> {
        Some(self.refusal).filter(|r| *r != EnvelopeRefusal::Unspecified)
    }
}

/// Answers relayed requests. Pings never reach it: the session answers those.
#[tonic::async_trait]
pub trait RequestHandler: Send + Sync + 'static {
    /// Returns the sealed reply envelope for `request`.
    async fn handle(&self, request: IncomingRequest) -> Result<Vec<u8>, HandlerError>;
}

/// The handler of an agent that has no directory operations configured: it
/// answers every request with UNSUPPORTED_OPERATION, so the portal gets a
/// definite, specific answer instead of a timeout.
#[derive(Debug, Default, Clone)]
pub struct NoOperations;

#[tonic::async_trait]
impl RequestHandler for NoOperations {
    async fn handle(&self, request: IncomingRequest) -> Result<Vec<u8>, HandlerError> {
        Err(HandlerError::new(
            AgentErrorCode::UnsupportedOperation,
            format!(
                "this agent has no handler for {}",
                request.operation.as_str_name()
            ),
        ))
    }
}

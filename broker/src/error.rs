//! The broker's one error type, and the one place it becomes a gRPC status.
//!
//! Messages go to the peer: they name what was wrong (a tenant, a limit, a
//! right) and never contain a key, a token or an envelope byte.

use std::time::Duration;

use proto::Reason;
use sas::Right;
use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("tenant {0:?} does not exist")]
    UnknownTenant(String),
    #[error("password write-back is disabled for tenant {0:?}")]
    WritebackDisabled(String),
    #[error("no agent of tenant {0:?} is online")]
    NoAgentOnline(String),
    /// The addressed agent has no session (on this node, or in the cluster):
    /// nothing was sent. Sent as NO_AGENT_ONLINE with `agent_id` metadata.
    #[error(
        "agent {agent_id:?} of tenant {tenant:?}, whom the request is addressed to, is not connected; nothing was sent (seal it to another agent of the tenant)"
    )]
    AgentOffline { tenant: String, agent_id: String },
    #[error("the deadline of {} passed before an agent answered", humantime::format_duration(*.0))]
    DeadlineExceeded(Duration),
    #[error("the envelope has {size} bytes; the limit is {limit}")]
    EnvelopeTooLarge { size: usize, limit: usize },
    #[error(
        "no credential: send a shared access signature in the \"authorization\" metadata entry"
    )]
    MissingCredential,
    #[error("malformed shared access signature: {0}")]
    MalformedToken(#[from] sas::TokenError),
    /// Also a token of another tenant, and any token addressing a tenant
    /// that does not exist: the message names no tenant, so it is the same
    /// whether the addressed tenant exists or not.
    #[error(
        "the token's signature matches no current key of the addressed tenant for the token's right"
    )]
    BadSignature,
    #[error("the token expired")]
    TokenExpired,
    #[error("the token's expiry is more than {} ahead", humantime::format_duration(*.0))]
    TokenLifetimeTooLong(Duration),
    #[error("the {have} right does not allow this call; it needs {needs}")]
    WrongRight { have: Right, needs: String },
    #[error("agent {0:?} has been revoked for this tenant")]
    AgentRevoked(String),
    #[error("invalid tenant name: use 1-63 of [a-z0-9-], starting with a letter or digit")]
    InvalidTenantName,
    #[error("invalid agent id: use 1-64 of [A-Za-z0-9._-]")]
    InvalidAgentId,
    #[error("invalid request id: use 1-128 of [A-Za-z0-9._:-]")]
    InvalidRequestId,
    #[error(
        "invalid agent_id: a sealed request names the agent its envelope is addressed to, 1-64 of [A-Za-z0-9._-] (the agent id sealed in the envelope's header)"
    )]
    InvalidAddressee,
    #[error("invalid operation: {0}")]
    InvalidOperation(String),
    #[error("invalid key selector: {0}")]
    InvalidKeySelector(&'static str),
    #[error("protocol violation: {0}")]
    ProtocolViolation(String),
    #[error("no Hello arrived within {}", humantime::format_duration(*.0))]
    HelloTimeout(Duration),
    /// A unary call's message did not arrive within
    /// `limits.request_receive_timeout` of its headers: nothing was done.
    #[error("the request message did not arrive within {} of the call's start; nothing was done", humantime::format_duration(*.0))]
    RequestTooSlow(Duration),
    #[error("request {0:?} is already in flight for this tenant")]
    DuplicateRequestId(String),
    #[error("tenant {0:?} already exists")]
    TenantExists(String),
    #[error("agent {0:?} is not known to this tenant")]
    AgentNotFound(String),
    #[error(
        "the outcome of request {request_id:?} is unknown: agent {agent_id:?} {} but did not answer; it may or may not have been applied. Ask GetOutcome for it later",
        if *.acknowledged { "acknowledged it" } else { "may have received it" }
    )]
    OutcomeUnknown {
        request_id: String,
        agent_id: String,
        acknowledged: bool,
    },
    /// `awaited`: the agent the answer is awaited from (empty: not known)
    /// and whether it acknowledged the request; `None` while in flight.
    #[error("the agent has not posted the outcome of request {request_id:?} yet")]
    OutcomePending {
        request_id: String,
        awaited: Option<(String, bool)>,
    },
    #[error(
        "no outcome of request {0:?} is known: it was never relayed, or was kept longer than the outcome retention"
    )]
    OutcomeNotFound(String),
    #[error("tenant {tenant:?} is over its rate limit of {limit} requests per minute; retry in {} ms", .retry_after.as_millis())]
    RateLimited {
        tenant: String,
        limit: u32,
        retry_after: Duration,
    },
    #[error("every live agent of tenant {0:?} has its most requests in flight; retry shortly")]
    AgentsBusy(String),
    #[error("the {scope} already has {limit} agent sessions, the most allowed")]
    TooManySessions { scope: &'static str, limit: u32 },
    #[error(
        "this connection already carries {0} agent sessions, the most allowed; open a new connection per session"
    )]
    TooManyStreams(u32),
    /// Calls whose message is read before any token is checked (agent
    /// sessions before their Welcome, health checks) on a connection that
    /// has not authenticated yet.
    #[error(
        "this connection has not authenticated yet and already carries {0} calls without a token, the most allowed; wait for a session's Welcome or call with a token"
    )]
    UnauthenticatedStreams(u32),
    /// `message` is the agent's, with its code's name after it
    /// ([`RelayError::from_agent`]); `refusal` the agent's
    /// `AgentError.refusal`, unchanged (0: none).
    #[error("agent {agent_id:?} could not answer: {message}")]
    AgentError {
        agent_id: String,
        refusal: i32,
        message: String,
    },
    #[error("the broker is shutting down")]
    ShuttingDown,
    #[error("invalid agent key: {0}")]
    InvalidAgentKey(&'static str),
    #[error("the tenant already has {0} agent keys; retire one first")]
    TooManyAgentKeys(usize),
    #[error("no agent key {0:?} is registered")]
    AgentKeyNotFound(String),
    /// A failure of the store, made by the store (`store::StoreError`,
    /// which converts into this): opaque here, so this module needs nothing
    /// of the store.
    #[error("the broker's store failed; nothing was changed")]
    Store(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error(
        "this broker node cannot reach the other nodes of its cluster (NATS is unreachable), and holds no agent of tenant {0:?}; nothing was sent. Retry: another node may serve it"
    )]
    ClusterUnavailable(String),
    /// The lease on this node's copy of the tenants ran out
    /// ([`crate::lease`]): acting on it could honour a revoked agent or a
    /// disabled write-back.
    #[error(
        "{0}; this node acts on no tenant's settings until it has caught up, and nothing was sent. Retry: another node may serve it"
    )]
    StateUnconfirmed(crate::lease::Lapsed),
    #[error("broker node {node:?} refused the forwarded request: {message}; nothing was sent")]
    ForwardRefused { node: String, message: String },
    #[error(
        "the outcome of request {request_id:?} is unknown: {}; it may or may not have been applied. Ask GetOutcome for it later",
        forward_lost(.node.as_deref(), .agent_id.as_deref(), *.acknowledged)
    )]
    ForwardLost {
        request_id: String,
        /// The node that took it, if one said so.
        node: Option<String>,
        agent_id: Option<String>,
        acknowledged: bool,
    },
}

/// Where a forwarded request was when its serving node went silent.
fn forward_lost(node: Option<&str>, agent_id: Option<&str>, acknowledged: bool) -> String {
    match (node, agent_id) {
        (Some(node), Some(agent)) if acknowledged => {
            format!("broker node {node:?} stopped answering after agent {agent:?} acknowledged it")
        }
        (Some(node), Some(agent)) => {
            format!("broker node {node:?} stopped answering after passing it to agent {agent:?}")
        }
        (Some(node), None) => {
            format!("broker node {node:?} took it for its agents, then stopped answering")
        }
        (None, _) => "it was forwarded to the cluster and no node confirmed taking it".to_owned(),
    }
}

/// The `refusal` ErrorInfo entry: the name without its prefix, or the
/// number of a refusal this release does not know; `None` for none.
fn refusal_name(refusal: i32) -> Option<String> {
    use proto::pb::EnvelopeRefusal;
    match EnvelopeRefusal::try_from(refusal) {
        Ok(EnvelopeRefusal::Unspecified) => None,
        Ok(r) => Some(r.name().to_owned()),
        Err(_) => Some(refusal.to_string()),
    }
}

impl RelayError {
    /// An agent's AgentError, with its code's name (and its refusal's, for
    /// people reading logs) after the message; the refusal itself goes on
    /// unchanged.
    pub fn from_agent(agent_id: String, code: i32, refusal: i32, message: &str) -> RelayError {
        let code = proto::pb::AgentErrorCode::try_from(code)
            .map(|c| c.as_str_name())
            .unwrap_or("AGENT_ERROR_CODE_UNSPECIFIED");
        let message = match refusal_name(refusal) {
            Some(name) => format!("{message} (refusal {name}; {code})"),
            None => format!("{message} ({code})"),
        };
        RelayError::AgentError {
            agent_id,
            refusal,
            message,
        }
    }

    pub fn reason(&self) -> Reason {
        use RelayError as E;
        match self {
            E::UnknownTenant(_) => Reason::UnknownTenant,
            E::WritebackDisabled(_) => Reason::WritebackDisabled,
            E::NoAgentOnline(_) | E::AgentOffline { .. } => Reason::NoAgentOnline,
            E::DeadlineExceeded(_) => Reason::DeadlineExceeded,
            E::EnvelopeTooLarge { .. } => Reason::EnvelopeTooLarge,
            E::MissingCredential => Reason::MissingCredential,
            E::MalformedToken(_) => Reason::MalformedToken,
            E::BadSignature => Reason::BadSignature,
            E::TokenExpired => Reason::TokenExpired,
            E::TokenLifetimeTooLong(_) => Reason::TokenLifetimeTooLong,
            E::WrongRight { .. } => Reason::WrongRight,
            E::AgentRevoked(_) => Reason::AgentRevoked,
            E::InvalidTenantName => Reason::InvalidTenantName,
            E::InvalidAgentId => Reason::InvalidAgentId,
            E::InvalidRequestId => Reason::InvalidRequestId,
            E::InvalidAddressee => Reason::InvalidAgentId,
            E::InvalidOperation(_) => Reason::InvalidOperation,
            E::InvalidKeySelector(_) => Reason::InvalidKeySelector,
            E::ProtocolViolation(_) => Reason::ProtocolViolation,
            E::HelloTimeout(_) => Reason::HelloTimeout,
            E::RequestTooSlow(_) => Reason::ProtocolViolation,
            E::DuplicateRequestId(_) => Reason::DuplicateRequestId,
            E::TenantExists(_) => Reason::TenantExists,
            E::AgentNotFound(_) => Reason::AgentNotFound,
            E::OutcomeUnknown { .. } => Reason::OutcomeUnknown,
            E::OutcomePending { .. } => Reason::OutcomePending,
            E::OutcomeNotFound(_) => Reason::OutcomeNotFound,
            E::RateLimited { .. } => Reason::RateLimited,
            E::AgentsBusy(_) => Reason::AgentsBusy,
            E::TooManySessions { .. } => Reason::TooManySessions,
            E::TooManyStreams(_) | E::UnauthenticatedStreams(_) => Reason::TooManyStreams,
            E::AgentError { .. } => Reason::AgentError,
            E::ShuttingDown => Reason::ShuttingDown,
            E::Store(_) => Reason::StoreUnavailable,
            E::InvalidAgentKey(_) => Reason::InvalidAgentKey,
            E::TooManyAgentKeys(_) => Reason::TooManyAgentKeys,
            E::AgentKeyNotFound(_) => Reason::AgentKeyNotFound,
            E::ClusterUnavailable(_) | E::ForwardRefused { .. } => Reason::ClusterUnavailable,
            E::ForwardLost { .. } => Reason::OutcomeUnknown,
            E::StateUnconfirmed(_) => Reason::StateUnconfirmed,
        }
    }

    /// The outcome label for metrics: the reason in lower case.
    pub fn outcome(&self) -> &'static str {
        match self.reason() {
            Reason::NoAgentOnline => "no_agent_online",
            Reason::DeadlineExceeded => "deadline_exceeded",
            Reason::OutcomeUnknown => "outcome_unknown",
            Reason::RateLimited => "rate_limited",
            Reason::AgentsBusy => "agents_busy",
            Reason::AgentError => "agent_error",
            Reason::WritebackDisabled => "writeback_disabled",
            Reason::EnvelopeTooLarge => "envelope_too_large",
            Reason::ShuttingDown => "shutting_down",
            Reason::ClusterUnavailable => "cluster_unavailable",
            Reason::StateUnconfirmed => "state_unconfirmed",
            _ => "refused",
        }
    }

    pub(crate) fn metadata(&self) -> Vec<(&'static str, String)> {
        match self {
            RelayError::EnvelopeTooLarge { size, limit } => {
                vec![("size", size.to_string()), ("limit", limit.to_string())]
            }
            RelayError::DeadlineExceeded(d) => vec![("deadline_ms", d.as_millis().to_string())],
            RelayError::AgentOffline { agent_id, .. } => vec![("agent_id", agent_id.clone())],
            RelayError::AgentError {
                agent_id: agent,
                refusal,
                ..
            } => {
                let mut m = vec![("agent_id", agent.clone())];
                if let Some(name) = refusal_name(*refusal) {
                    m.push((proto::REFUSAL_KEY, name));
                }
                m
            }
            RelayError::OutcomePending {
                request_id,
                awaited: Some((agent_id, acknowledged)),
            } => vec![
                ("request_id", request_id.clone()),
                ("agent_id", agent_id.clone()),
                ("acknowledged", acknowledged.to_string()),
            ],
            RelayError::OutcomeUnknown {
                request_id,
                agent_id,
                acknowledged,
            } => vec![
                ("request_id", request_id.clone()),
                ("agent_id", agent_id.clone()),
                ("acknowledged", acknowledged.to_string()),
            ],
            RelayError::ForwardLost {
                request_id,
                node,
                agent_id,
                acknowledged,
            } => vec![
                ("request_id", request_id.clone()),
                ("agent_id", agent_id.clone().unwrap_or_default()),
                ("acknowledged", acknowledged.to_string()),
                ("node", node.clone().unwrap_or_default()),
            ],
            RelayError::ForwardRefused { node, .. } => vec![("node", node.clone())],
            RelayError::RateLimited {
                limit, retry_after, ..
            } => vec![
                ("limit", limit.to_string()),
                ("retry_after_ms", retry_after.as_millis().to_string()),
            ],
            RelayError::TooManySessions { scope, limit } => {
                vec![("scope", (*scope).to_owned()), ("limit", limit.to_string())]
            }
            RelayError::TooManyStreams(limit) | RelayError::UnauthenticatedStreams(limit) => {
                vec![("limit", limit.to_string())]
            }
            RelayError::RequestTooSlow(limit) => vec![("limit_ms", limit.as_millis().to_string())],
            _ => Vec::new(),
        }
    }
}

impl From<RelayError> for Status {
    fn from(err: RelayError) -> Status {
        // The store error's source chain is for the log, not the peer.
        if let RelayError::Store(source) = &err {
            tracing::error!(error = %source, cause = ?source.source(), "store failure");
        }
        proto::status(err.reason(), err.to_string(), &err.metadata())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::pb::{AgentErrorCode, EnvelopeRefusal};

    fn status_of(err: RelayError) -> (Status, std::collections::HashMap<String, String>) {
        let status = Status::from(err);
        let (reason, metadata) = proto::reason_of(&status).expect("a relay reason");
        assert_eq!(reason, Reason::AgentError);
        (status, metadata)
    }

    #[test]
    fn an_agent_refusal_is_carried_as_the_refusal_entry() {
        let (status, metadata) = status_of(RelayError::from_agent(
            "dc01".into(),
            AgentErrorCode::Rejected as i32,
            EnvelopeRefusal::UnknownKey as i32,
            "envelope sealed to key 0011223344556677, which this agent does not hold",
        ));
        assert_eq!(
            metadata.get("refusal").map(String::as_str),
            Some("UNKNOWN_KEY")
        );
        assert_eq!(metadata.get("agent_id").map(String::as_str), Some("dc01"));
        assert_eq!(
            status.message(),
            "agent \"dc01\" could not answer: envelope sealed to key 0011223344556677, \
             which this agent does not hold (refusal UNKNOWN_KEY; AGENT_ERROR_CODE_REJECTED)"
        );
    }

    #[test]
    fn other_agent_errors_have_no_refusal_and_unknown_ones_keep_their_number() {
        let (_, metadata) = status_of(RelayError::from_agent(
            "dc01".into(),
            AgentErrorCode::UnsupportedOperation as i32,
            0,
            "no handler",
        ));
        assert!(!metadata.contains_key("refusal"));
        let (_, metadata) = status_of(RelayError::from_agent(
            "dc01".into(),
            AgentErrorCode::Rejected as i32,
            999,
            "from a newer agent",
        ));
        assert_eq!(metadata.get("refusal").map(String::as_str), Some("999"));
    }
}

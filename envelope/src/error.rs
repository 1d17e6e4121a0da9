//! Why an envelope could not be made or opened. Every refusal has its own
//! variant so that agents log, count and report it precisely; no message ever
//! contains plaintext.

use crate::keys::KeyId;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not an X25519 public key")]
    InvalidPublicKey,
    #[error("not an X25519 private key")]
    InvalidPrivateKey,
    #[error("a key id is 16 hex digits")]
    InvalidKeyId,
    #[error("a fingerprint is 64 hex digits")]
    InvalidFingerprint,
}

/// Why a request envelope could not be sealed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("invalid {field}: {problem}")]
    Invalid {
        field: &'static str,
        problem: &'static str,
    },
    #[error("HPKE sealing failed")]
    Hpke,
}

/// Why an agent refused a request envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("malformed envelope: {0}")]
    Malformed(&'static str),
    #[error("envelope version {0} is not supported (this agent speaks version 1)")]
    UnsupportedVersion(u8),
    #[error("envelope addressed to tenant {found:?}, not to this agent's tenant {expected:?}")]
    WrongTenant { expected: String, found: String },
    #[error(
        "envelope addressed to agent {found:?}, not to this agent ({expected:?}): refused unopened"
    )]
    WrongAgent { expected: String, found: String },
    #[error("envelope sealed to key {0}, which this agent does not hold")]
    UnknownKey(KeyId),
    #[error("envelope from portal key {0}, which this agent has not pinned")]
    UnknownSender(KeyId),
    #[error(
        "envelope failed authentication: it was altered, or sealed by someone without the pinned portal key"
    )]
    AuthenticationFailed,
    #[error("envelope expired {expired_ms_ago} ms ago (clock skew allowance {allowance_ms} ms)")]
    Expired {
        expired_ms_ago: i64,
        allowance_ms: i64,
    },
    #[error("envelope issued {ahead_ms} ms in the future (clock skew allowance {allowance_ms} ms)")]
    NotYetValid { ahead_ms: i64, allowance_ms: i64 },
    #[error("envelope valid for {lifetime_ms} ms; at most {max_ms} ms is accepted")]
    LifetimeTooLong { lifetime_ms: i64, max_ms: i64 },
    #[error("envelope already seen: replay refused")]
    Replayed,
    #[error("invalid request body: {0}")]
    InvalidBody(&'static str),
}

impl OpenError {
    /// A stable name for logs, metrics and events.
    pub fn code(&self) -> &'static str {
        match self {
            OpenError::Malformed(_) => "MALFORMED",
            OpenError::UnsupportedVersion(_) => "UNSUPPORTED_VERSION",
            OpenError::WrongTenant { .. } => "WRONG_TENANT",
            OpenError::WrongAgent { .. } => "WRONG_AGENT",
            OpenError::UnknownKey(_) => "UNKNOWN_KEY",
            OpenError::UnknownSender(_) => "UNKNOWN_SENDER",
            OpenError::AuthenticationFailed => "AUTHENTICATION_FAILED",
            OpenError::Expired { .. } => "EXPIRED",
            OpenError::NotYetValid { .. } => "NOT_YET_VALID",
            OpenError::LifetimeTooLong { .. } => "LIFETIME_TOO_LONG",
            OpenError::Replayed => "REPLAYED",
            OpenError::InvalidBody(_) => "INVALID_BODY",
        }
    }
}

/// Why a portal refused a reply envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("malformed reply: {0}")]
    Malformed(&'static str),
    #[error("reply version {0} is not supported")]
    UnsupportedVersion(u8),
    #[error("reply failed authentication: it was altered, or does not answer this request")]
    AuthenticationFailed,
    #[error("invalid reply body: {0}")]
    InvalidBody(&'static str),
}

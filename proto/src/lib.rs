//! The relay.v1 wire protocol shared by the broker, the agent and portal clients.
//!
//! # Layout
//! - [`pb`]: code generated from `proto/relay/v1/*.proto` (messages, clients, servers).
//! - [`Reason`]: the stable machine-readable failure reasons carried in a
//!   `google.rpc.ErrorInfo` detail of every error status, and the two helpers
//!   that put them into a [`tonic::Status`] and read them back out.
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors, for gRPC reflection.
//! - [`codec`]: prost's codec, except that bytes that are not valid protobuf
//!   become `MALFORMED_MESSAGE` rather than a bare INTERNAL status.
//! - [`names`]: the syntax of tenant names, agent ids and request ids.
//! - [`time`]: the one wall clock of every crate, for timestamps people read
//!   and the wire carries; elapsed time is measured on `Instant`s instead.
//!
//! Generated types stay behind `pb`; the broker and clients convert them to
//! their own domain types at the edge.

use std::collections::HashMap;
use std::fmt;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

pub mod codec;
pub mod time;

/// Generated relay.v1 code.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("relay.v1");
}

/// The encoded `FileDescriptorSet` of every relay.v1 file (with source
/// comments), for the broker's gRPC reflection service.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/relay_descriptor.bin"));

/// Syntax rules for the names that travel in relay.v1 messages.
pub mod names {
    /// A tenant: 1-63 of `[a-z0-9-]`, starting with a letter or digit.
    pub fn is_valid_tenant(name: &str) -> bool {
        let b = name.as_bytes();
        (1..=63).contains(&b.len())
            && b[0].is_ascii_alphanumeric()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
    }

    /// An agent id: 1-64 of `[A-Za-z0-9._-]`.
    pub fn is_valid_agent_id(id: &str) -> bool {
        (1..=64).contains(&id.len())
            && id
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
    }

    /// A request id: 1-128 of `[A-Za-z0-9._:-]`.
    pub fn is_valid_request_id(id: &str) -> bool {
        (1..=128).contains(&id.len())
            && id
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-'))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn names() {
            assert!(is_valid_tenant("contoso-1"));
            assert!(!is_valid_tenant("-contoso"));
            assert!(!is_valid_tenant("Contoso"));
            assert!(!is_valid_tenant(""));
            assert!(!is_valid_tenant(&"a".repeat(64)));
            assert!(is_valid_agent_id("DC01.agent_2"));
            assert!(!is_valid_agent_id("a b"));
            assert!(is_valid_request_id("3f2a:9-x.y_z"));
            assert!(!is_valid_request_id(&"r".repeat(129)));
            assert!(!is_valid_request_id("r\n"));
        }
    }
}

impl fmt::Debug for pb::Hello {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hello")
            .field("tenant", &self.tenant)
            .field("agent_id", &self.agent_id)
            .field("agent_version", &self.agent_version)
            .field("token", &"***")
            .finish()
    }
}

impl fmt::Debug for pb::RenewToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RenewToken").field("token", &"***").finish()
    }
}

impl fmt::Debug for pb::TenantKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantKey")
            .field("right", &self.right)
            .field("slot", &self.slot)
            .field("key", &"***")
            .finish()
    }
}

/// The `ErrorInfo.domain` of every relay error.
pub const ERROR_DOMAIN: &str = "relay.v1";

/// The ErrorInfo metadata key of an agent's refusal (AGENT_ERROR).
pub const REFUSAL_KEY: &str = "refusal";

impl pb::EnvelopeRefusal {
    const PREFIX: &'static str = "ENVELOPE_REFUSAL_";

    /// The name without its `ENVELOPE_REFUSAL_` prefix (`UNKNOWN_KEY`): what
    /// the `refusal` ErrorInfo entry, a NOT_APPLIED reply's `reason` detail
    /// and the agent's event log carry.
    pub fn name(self) -> &'static str {
        let full = self.as_str_name();
        full.strip_prefix(Self::PREFIX).unwrap_or(full)
    }

    /// The refusal named by [`Self::name`]; `None` for a name this release
    /// does not know.
    pub fn from_name(name: &str) -> Option<pb::EnvelopeRefusal> {
        pb::EnvelopeRefusal::from_str_name(&format!("{}{name}", Self::PREFIX))
            .filter(|r| *r != pb::EnvelopeRefusal::Unspecified)
    }
}

macro_rules! reasons {
    ($($(#[$doc:meta])* $variant:ident => $name:literal, $code:ident;)*) => {
        /// Why a relay call failed. The string form is stable and is what
        /// clients match on; the gRPC code is the one each reason is sent with.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($(#[$doc])* $variant,)*
        }

        impl Reason {
            /// Every reason, for documentation and exhaustive tests.
            pub const ALL: &'static [Reason] = &[$(Reason::$variant,)*];

            /// The stable name carried in `ErrorInfo.reason`.
            pub fn as_str(self) -> &'static str {
                match self { $(Reason::$variant => $name,)* }
            }

            /// The gRPC status code this reason is sent with.
            pub fn code(self) -> Code {
                match self { $(Reason::$variant => Code::$code,)* }
            }

            /// Parses the stable name; `None` for a reason this version does not know.
            pub fn from_name(name: &str) -> Option<Reason> {
                match name { $($name => Some(Reason::$variant),)* _ => None }
            }
        }
    };
}

reasons! {
    /// The tenant does not exist.
    UnknownTenant => "UNKNOWN_TENANT", NotFound;
    /// Write-back is disabled for the tenant.
    WritebackDisabled => "WRITEBACK_DISABLED", FailedPrecondition;
    /// The tenant has no live agent session; returned at once.
    NoAgentOnline => "NO_AGENT_ONLINE", Unavailable;
    /// The caller's deadline passed before the agent answered.
    DeadlineExceeded => "DEADLINE_EXCEEDED", DeadlineExceeded;
    /// The envelope is larger than the broker's limit.
    EnvelopeTooLarge => "ENVELOPE_TOO_LARGE", InvalidArgument;
    /// No credential was presented.
    MissingCredential => "MISSING_CREDENTIAL", Unauthenticated;
    /// The credential is not a well-formed shared access signature.
    MalformedToken => "MALFORMED_TOKEN", Unauthenticated;
    /// The token's signature matches no current key of the addressed tenant
    /// (also sent for another tenant's token, and for a tenant that does not
    /// exist, so that a caller without a key learns nothing about a tenant).
    BadSignature => "BAD_SIGNATURE", Unauthenticated;
    /// The token's expiry has passed.
    TokenExpired => "TOKEN_EXPIRED", Unauthenticated;
    /// The token's expiry is further ahead than the broker accepts.
    TokenLifetimeTooLong => "TOKEN_LIFETIME_TOO_LONG", Unauthenticated;
    /// The token is valid but does not grant the right this call needs.
    WrongRight => "WRONG_RIGHT", PermissionDenied;
    /// The agent id was revoked by an administrator.
    AgentRevoked => "AGENT_REVOKED", PermissionDenied;
    /// The tenant name is not 1-63 of [a-z0-9-] starting alphanumeric.
    InvalidTenantName => "INVALID_TENANT_NAME", InvalidArgument;
    /// The agent id is not 1-64 of [A-Za-z0-9._-].
    InvalidAgentId => "INVALID_AGENT_ID", InvalidArgument;
    /// The request id is not 1-128 of [A-Za-z0-9._:-].
    InvalidRequestId => "INVALID_REQUEST_ID", InvalidArgument;
    /// The operation is unspecified or not allowed for this call.
    InvalidOperation => "INVALID_OPERATION", InvalidArgument;
    /// The right or key slot of an admin call is unspecified.
    InvalidKeySelector => "INVALID_KEY_SELECTOR", InvalidArgument;
    /// A message arrived that the protocol does not allow at this point.
    ProtocolViolation => "PROTOCOL_VIOLATION", InvalidArgument;
    /// The agent did not send its Hello within the hello timeout.
    HelloTimeout => "HELLO_TIMEOUT", DeadlineExceeded;
    /// A request with this id is already in flight for the tenant.
    DuplicateRequestId => "DUPLICATE_REQUEST_ID", AlreadyExists;
    /// A tenant with this name already exists.
    TenantExists => "TENANT_EXISTS", AlreadyExists;
    /// The agent id is not known to the tenant.
    AgentNotFound => "AGENT_NOT_FOUND", NotFound;
    /// The agent acknowledged the request (or may have received it) and no
    /// answer came: the request may or may not have been applied. The status
    /// carries the request id; ask GetOutcome later.
    OutcomeUnknown => "OUTCOME_UNKNOWN", Unknown;
    /// GetOutcome: the agent has not posted the outcome yet.
    OutcomePending => "OUTCOME_PENDING", Unavailable;
    /// GetOutcome: the broker knows no outcome for this request id.
    OutcomeNotFound => "OUTCOME_NOT_FOUND", NotFound;
    /// The tenant sent more requests than its rate limit allows.
    RateLimited => "RATE_LIMITED", ResourceExhausted;
    /// Every live agent of the tenant has its most requests in flight.
    AgentsBusy => "AGENTS_BUSY", ResourceExhausted;
    /// The tenant, or the source address, has the most sessions allowed.
    TooManySessions => "TOO_MANY_SESSIONS", ResourceExhausted;
    /// The connection already carries the most agent sessions allowed.
    TooManyStreams => "TOO_MANY_STREAMS", ResourceExhausted;
    /// A message could not be decoded as the expected protobuf message.
    MalformedMessage => "MALFORMED_MESSAGE", InvalidArgument;
    /// The agent answered with an error instead of a reply envelope.
    AgentError => "AGENT_ERROR", Aborted;
    /// The broker is shutting down.
    ShuttingDown => "SHUTTING_DOWN", Unavailable;
    /// The broker's store failed; nothing was changed.
    StoreUnavailable => "STORE_UNAVAILABLE", Internal;
    /// A registered agent key is malformed (key id, length, endorsements).
    InvalidAgentKey => "INVALID_AGENT_KEY", InvalidArgument;
    /// The tenant already has the most agent keys allowed; retire one first.
    TooManyAgentKeys => "TOO_MANY_AGENT_KEYS", ResourceExhausted;
    /// No registered agent key has that id.
    AgentKeyNotFound => "AGENT_KEY_NOT_FOUND", NotFound;
    /// Cluster mode: the node cannot reach the other broker nodes (NATS is
    /// unreachable), or the one it asked refused; nothing was sent to an
    /// agent. Another node may serve the request.
    ClusterUnavailable => "CLUSTER_UNAVAILABLE", Unavailable;
    /// Cluster mode: the node could not confirm within its lease that its
    /// copy of the tenants' settings is current (it cannot reach a
    /// JetStream quorum, or its watch is behind), so it acts on none of
    /// them; nothing was sent to an agent. Another node may serve the
    /// request; this one does once it has caught up.
    StateUnconfirmed => "STATE_UNCONFIRMED", Unavailable;
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Builds the status for `reason` with a human-readable `message` and
/// optional structured metadata (for example the envelope limit). The message
/// goes to the peer, so it must never contain a secret.
pub fn status(reason: Reason, message: impl Into<String>, metadata: &[(&str, String)]) -> Status {
    let metadata: HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    Status::with_error_details(
        reason.code(),
        message,
        ErrorDetails::with_error_info(reason.as_str(), ERROR_DOMAIN, metadata),
    )
}

/// The relay reason and its metadata carried by `status`, if it has one.
pub fn reason_of(status: &Status) -> Option<(Reason, HashMap<String, String>)> {
    let info = status.get_details_error_info()?;
    if info.domain != ERROR_DOMAIN {
        return None;
    }
    Some((Reason::from_name(&info.reason)?, info.metadata))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_round_trips_through_a_status() {
        for &reason in Reason::ALL {
            let st = status(reason, "detail", &[("limit", "65536".to_owned())]);
            assert_eq!(st.code(), reason.code());
            let (back, meta) = reason_of(&st).expect("reason present");
            assert_eq!(back, reason);
            assert_eq!(meta.get("limit").map(String::as_str), Some("65536"));
        }
    }

    #[test]
    fn refusal_names_round_trip_without_their_prefix() {
        for n in 1..=16 {
            let r = pb::EnvelopeRefusal::try_from(n).expect("defined");
            assert!(!r.name().starts_with("ENVELOPE_REFUSAL_"));
            assert_eq!(pb::EnvelopeRefusal::from_name(r.name()), Some(r));
        }
        assert_eq!(pb::EnvelopeRefusal::UnknownKey.name(), "UNKNOWN_KEY");
        assert_eq!(pb::EnvelopeRefusal::from_name("UNSPECIFIED"), None);
        assert_eq!(pb::EnvelopeRefusal::from_name("NO_SUCH"), None);
    }

    #[test]
    fn reason_names_are_unique() {
        let mut names: Vec<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
    }

    #[test]
    fn messages_with_secrets_mask_them_in_debug() {
        let hello = pb::Hello {
            tenant: "t".into(),
            agent_id: "a".into(),
            agent_version: "1".into(),
            token: "SharedAccessSignature sr=t&sig=SECRET".into(),
        };
        let frame = pb::AgentFrame {
            frame: Some(pb::agent_frame::Frame::Hello(hello)),
        };
        let renew = pb::RenewToken {
            token: "SECRET".into(),
        };
        let reply = pb::CreateTenantReply {
            configuration: None,
            keys: vec![pb::TenantKey {
                right: 1,
                slot: 1,
                key: "SECRET".into(),
            }],
        };
        let shown = format!("{frame:?} {renew:?} {reply:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(shown.contains("agent_id"));
    }

    #[test]
    fn a_status_without_details_has_no_reason() {
        assert!(reason_of(&Status::internal("boom")).is_none());
    }
}

#[cfg(test)]
mod docs {
    use super::Reason;

    /// The README's table must list every reason with the code it is sent with.
    #[test]
    fn the_readme_documents_every_reason() {
        let readme = include_str!("../../README.md");
        for reason in Reason::ALL {
            let code = format!("{:?}", reason.code());
            // Code's Debug is CamelCase; the table uses the canonical names.
            let canonical: String = code
                .chars()
                .enumerate()
                .flat_map(|(i, c)| {
                    let sep = (i > 0 && c.is_ascii_uppercase()).then_some('_');
                    sep.into_iter()
                        .chain(std::iter::once(c.to_ascii_uppercase()))
                })
                .collect();
            let row = format!("| `{}` | {} |", reason.as_str(), canonical);
            assert!(readme.contains(&row), "README lacks the row {row}");
        }
    }
}

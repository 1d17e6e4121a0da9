//! The broker-to-broker messages (relay.v1 cluster.proto) and subjects,
//! without I/O.

use prost::Message;
use proto::pb::{self, ForwardFailureKind, forward_event};

use crate::error::RelayError;

/// `<prefix>.v1.<tenant>.submit`. Tenant names are `[a-z0-9-]`, so they are
/// always one valid subject token.
pub fn submit_subject(prefix: &str, tenant: &str) -> String {
    format!("{prefix}.v1.{tenant}.submit")
}

/// `<prefix>.v1.<tenant>.agent.<agent id>`: where the node holding that
/// agent's session serves the requests addressed to it. Agent ids are
/// `[A-Za-z0-9._-]`; '.' separates subject tokens, so it is written '~',
/// which agent ids cannot contain: the token stays one, and distinct ids
/// stay distinct.
pub fn agent_subject(prefix: &str, tenant: &str, agent_id: &str) -> String {
    format!("{prefix}.v1.{tenant}.agent.{}", agent_id.replace('.', "~"))
}

/// Milliseconds for a `u32` field, saturating.
pub fn millis(d: std::time::Duration) -> u32 {
    d.as_millis().min(u128::from(u32::MAX)) as u32
}

pub fn encode(event: forward_event::Event) -> Vec<u8> {
    pb::ForwardEvent { event: Some(event) }.encode_to_vec()
}

pub fn decode_request(bytes: &[u8]) -> Result<pb::ForwardedRequest, prost::DecodeError> {
    pb::ForwardedRequest::decode(bytes)
}

pub fn decode_event(bytes: &[u8]) -> Result<forward_event::Event, &'static str> {
    pb::ForwardEvent::decode(bytes)
        .map_err(|_| "undecodable forward event")?
        .event
        .ok_or("forward event without a kind")
}

fn failure(kind: ForwardFailureKind) -> pb::ForwardFailure {
    pb::ForwardFailure {
        kind: kind as i32,
        ..Default::default()
    }
}

/// How the serving node reports the end of routing that did not give an
/// answer. Errors the router never returns become INVALID.
pub fn failure_of(err: &RelayError) -> pb::ForwardFailure {
    use ForwardFailureKind as K;
    match err {
        RelayError::NoAgentOnline(_) => failure(K::NoAgentOnline),
        RelayError::AgentOffline { agent_id, .. } => pb::ForwardFailure {
            kind: K::NoAgentOnline as i32,
            agent_id: agent_id.clone(),
            ..Default::default()
        },
        RelayError::AgentsBusy(_) => failure(K::AgentsBusy),
        RelayError::ShuttingDown => failure(K::ShuttingDown),
        RelayError::DeadlineExceeded(_) => failure(K::DeadlineExceeded),
        RelayError::OutcomeUnknown {
            agent_id,
            acknowledged,
            ..
        } => pb::ForwardFailure {
            kind: K::OutcomeUnknown as i32,
            agent_id: agent_id.clone(),
            acknowledged: *acknowledged,
            ..Default::default()
        },
        RelayError::AgentError {
            agent_id,
            refusal,
            message,
        } => pb::ForwardFailure {
            kind: K::AgentError as i32,
            agent_id: agent_id.clone(),
            message: message.clone(),
            refusal: *refusal,
            ..Default::default()
        },
        other => pb::ForwardFailure {
            kind: K::Invalid as i32,
            message: other.to_string(),
            ..Default::default()
        },
    }
}

/// What a failure reported by a serving node means on the forwarding node.
#[derive(Debug)]
pub enum Failure {
    /// Nothing reached an agent: another node may take the request.
    NotSent(RelayError),
    /// Definite: tell the portal.
    Final(RelayError),
}

/// The forwarding node's reading of a serving node's failure.
pub fn relay_error_of(
    f: pb::ForwardFailure,
    tenant: &str,
    request_id: &str,
    budget: std::time::Duration,
    node: &str,
) -> Failure {
    use ForwardFailureKind as K;
    match K::try_from(f.kind).unwrap_or(K::Unspecified) {
        K::NoAgentOnline if !f.agent_id.is_empty() => Failure::NotSent(RelayError::AgentOffline {
            tenant: tenant.to_owned(),
            agent_id: f.agent_id,
        }),
        K::NoAgentOnline | K::ShuttingDown => {
            Failure::NotSent(RelayError::NoAgentOnline(tenant.to_owned()))
        }
        K::AgentsBusy => Failure::NotSent(RelayError::AgentsBusy(tenant.to_owned())),
        K::DeadlineExceeded => Failure::Final(RelayError::DeadlineExceeded(budget)),
        K::OutcomeUnknown => Failure::Final(RelayError::OutcomeUnknown {
            request_id: request_id.to_owned(),
            agent_id: f.agent_id,
            acknowledged: f.acknowledged,
        }),
        // The message already ends with the agent's code (RelayError::from_agent);
        // the refusal goes on unchanged.
        K::AgentError => Failure::Final(RelayError::AgentError {
            agent_id: f.agent_id,
            refusal: f.refusal,
            message: f.message,
        }),
        K::Invalid | K::Unspecified => Failure::Final(RelayError::ForwardRefused {
            node: node.to_owned(),
            message: f.message,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn failures_keep_their_meaning_across_nodes() {
        let budget = Duration::from_secs(5);
        let cases = [
            RelayError::NoAgentOnline("t".into()),
            RelayError::AgentsBusy("t".into()),
            RelayError::ShuttingDown,
            RelayError::DeadlineExceeded(budget),
            RelayError::OutcomeUnknown {
                request_id: "r1".into(),
                agent_id: "dc01".into(),
                acknowledged: true,
            },
            RelayError::from_agent("dc01".into(), 3, 5, "unknown key"),
        ];
        let read: Vec<_> = cases
            .iter()
            .map(|e| relay_error_of(failure_of(e), "t", "r1", budget, "b"))
            .collect();
        assert!(matches!(
            read[0],
            Failure::NotSent(RelayError::NoAgentOnline(_))
        ));
        assert!(matches!(
            read[1],
            Failure::NotSent(RelayError::AgentsBusy(_))
        ));
        assert!(matches!(
            read[2],
            Failure::NotSent(RelayError::NoAgentOnline(_))
        ));
        for (case, got) in cases.iter().zip(&read).skip(3) {
            let Failure::Final(got) = got else {
                panic!("{case} must stay final");
            };
            assert_eq!(got.to_string(), case.to_string());
            assert_eq!(got.reason(), case.reason());
            assert_eq!(got.metadata(), case.metadata());
        }
    }

    #[test]
    fn an_offline_addressee_stays_named_across_nodes() {
        let e = RelayError::AgentOffline {
            tenant: "t".into(),
            agent_id: "dc1.contoso".into(),
        };
        let Failure::NotSent(RelayError::AgentOffline { agent_id, .. }) =
            relay_error_of(failure_of(&e), "t", "r1", Duration::from_secs(1), "b")
        else {
            panic!("an offline addressee is NotSent AgentOffline");
        };
        assert_eq!(agent_id, "dc1.contoso");
    }

    #[test]
    fn agent_subjects_are_one_token_per_agent() {
        assert_eq!(
            agent_subject("relay", "contoso", "dc1.contoso.example"),
            "relay.v1.contoso.agent.dc1~contoso~example"
        );
        assert_ne!(
            agent_subject("relay", "t", "a.b"),
            agent_subject("relay", "t", "a_b")
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode_event(&[0xff, 0xff, 0xff]).is_err());
        assert!(decode_event(&[]).is_err());
        assert!(decode_request(&[0x0a, 0xff]).is_err());
    }
}

//! The agents' write-back public keys per tenant: registered by agents with
//! the Listen right, read by portals through the configuration query. The
//! broker checks shape only; trust is decided by portals (pinned
//! fingerprints and endorsements), so a broker that swaps a key gains nothing.

use proto::pb;
use sas::Right;
use tonic::{Request, Response, Status};
use tracing::info;

use crate::audit::{Actor, Call, token_of};
use crate::error::RelayError;
use crate::relay_service::agent_key_to_pb;
use crate::state::State;
use crate::store::AgentKeyRecord;
use crate::time::now_unix_ms;

pub const MAX_AGENT_KEYS: usize = 8;
const MAX_ENDORSEMENTS: usize = 16;
const MAX_ENDORSEMENT_BYTES: usize = 256;

fn is_key_id(text: &str) -> bool {
    text.len() == 16 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn validate(key: &pb::AgentKey) -> Result<(), RelayError> {
    if !is_key_id(&key.key_id) {
        return Err(RelayError::InvalidAgentKey(
            "key_id must be 16 lowercase hex digits",
        ));
    }
    if key.public_key.len() != 32 {
        return Err(RelayError::InvalidAgentKey("public_key must be 32 bytes"));
    }
    if key.endorsements.len() > MAX_ENDORSEMENTS {
        return Err(RelayError::InvalidAgentKey("at most 16 endorsements"));
    }
    for e in &key.endorsements {
        if !is_key_id(&e.portal_key_id)
            || e.endorsement.is_empty()
            || e.endorsement.len() > MAX_ENDORSEMENT_BYTES
        {
            return Err(RelayError::InvalidAgentKey(
                "endorsements name a 16-hex-digit portal key id and carry 1-256 bytes",
            ));
        }
    }
    Ok(())
}

pub async fn register(
    state: &State,
    request: Request<pb::RegisterKeyRequest>,
) -> Result<Response<pb::RegisterKeyReply>, Status> {
    let tenant = request.get_ref().tenant.clone();
    let rpc = "relay.v1.AgentGateway/RegisterKey";
    let (call, actor) = audited_caller(state, &request, rpc, &tenant)?;
    let key = request.into_inner().key;
    // The key id is the agent's choice: written once it is known valid.
    let change = serde_json::json!({"registered_key": key.as_ref()
        .filter(|k| validate(k).is_ok()).map(|k| &k.key_id)});
    let result = register_key(state, &tenant, key).await;
    state
        .audit
        .done(call, Some(&tenant), &actor, Some(change), &result);
    Ok(Response::new(result?))
}

/// The caller of a key call, checked and, when refused, audited.
fn audited_caller<'a, T>(
    state: &State,
    request: &Request<T>,
    rpc: &'a str,
    tenant: &str,
) -> Result<(Call<'a>, Actor), RelayError> {
    let principal = state.audit.authorize_request(
        &state.authorizer,
        request,
        rpc,
        Some(tenant),
        &[Right::Listen],
    )?;
    let call = Call {
        rpc,
        peer: request.remote_addr(),
    };
    Ok((call, state.audit.actor(&principal, token_of(request))))
}

async fn register_key(
    state: &State,
    tenant: &str,
    key: Option<pb::AgentKey>,
) -> Result<pb::RegisterKeyReply, RelayError> {
    let key = key.ok_or(RelayError::InvalidAgentKey("no key given"))?;
    validate(&key)?;
    let key_id = key.key_id.clone();
    let record = state
        .tenants
        .update(tenant, move |r| {
            let endorsements = key
                .endorsements
                .iter()
                .map(|e| (e.portal_key_id.clone(), e.endorsement.clone()))
                .collect();
            if let Some(existing) = r.agent_keys.iter_mut().find(|k| k.key_id == key.key_id) {
                if existing.public_key != key.public_key {
                    return Err(RelayError::InvalidAgentKey(
                        "a different key is registered under this key id",
                    ));
                }
                existing.endorsements = endorsements;
                return Ok(());
            }
            if r.agent_keys.len() >= MAX_AGENT_KEYS {
                return Err(RelayError::TooManyAgentKeys(MAX_AGENT_KEYS));
            }
            r.agent_keys.push(AgentKeyRecord {
                key_id: key.key_id,
                public_key: key.public_key,
                registered_unix_ms: now_unix_ms(),
                endorsements,
            });
            Ok(())
        })
        .await?;
    info!(tenant = %tenant, key_id = %key_id, keys = record.agent_keys.len(), "agent key registered");
    Ok(pb::RegisterKeyReply {
        keys: record.agent_keys.iter().map(agent_key_to_pb).collect(),
    })
}

pub async fn retire(
    state: &State,
    request: Request<pb::RetireKeyRequest>,
) -> Result<Response<pb::RetireKeyReply>, Status> {
    let pb::RetireKeyRequest { tenant, key_id } = request.get_ref().clone();
    let rpc = "relay.v1.AgentGateway/RetireKey";
    let (call, actor) = audited_caller(state, &request, rpc, &tenant)?;
    let result = retire_key(state, &tenant, key_id.clone()).await;
    // The id is the agent's choice: written only when it has the shape of one.
    let change = serde_json::json!({"retired_key": is_key_id(&key_id).then_some(&key_id)});
    state
        .audit
        .done(call, Some(&tenant), &actor, Some(change), &result);
    Ok(Response::new(result?))
}

async fn retire_key(
    state: &State,
    tenant: &str,
    key_id: String,
) -> Result<pb::RetireKeyReply, RelayError> {
    let id = key_id.clone();
    let record = state
        .tenants
        .update(tenant, move |r| {
            let before = r.agent_keys.len();
            r.agent_keys.retain(|k| k.key_id != id);
            if r.agent_keys.len() == before {
                return Err(RelayError::AgentKeyNotFound(id));
            }
            Ok(())
        })
        .await?;
    info!(tenant = %tenant, key_id = %key_id, "agent key retired");
    Ok(pb::RetireKeyReply {
        keys: record.agent_keys.iter().map(agent_key_to_pb).collect(),
    })
}

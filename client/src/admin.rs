//! The administration client used by `relayctl` and tests.

use std::collections::BTreeMap;

use proto::pb;
use proto::pb::admin_client::AdminClient as Generated;
use sas::{Key, KeySlot, Right};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::connect::BrokerEndpoint;
use crate::credential::{Authorize, Credential};
use crate::error::ClientError;

type Inner = Generated<InterceptedService<Channel, Authorize>>;

/// A tenant's six keys, as returned once at creation. `Debug` shows none.
#[derive(Debug, Clone)]
pub struct TenantKeys(pub BTreeMap<(RightName, SlotName), Key>);

pub type RightName = &'static str;
pub type SlotName = &'static str;

impl TenantKeys {
    pub fn get(&self, right: Right, slot: KeySlot) -> Option<&Key> {
        self.0.get(&(right.as_str(), slot.as_str()))
    }
}

pub fn right_from_pb(value: i32) -> Option<Right> {
    match pb::Right::try_from(value).ok()? {
        pb::Right::Listen => Some(Right::Listen),
        pb::Right::Send => Some(Right::Send),
        pb::Right::Manage => Some(Right::Manage),
        pb::Right::Unspecified => None,
    }
}

pub fn slot_from_pb(value: i32) -> Option<KeySlot> {
    match pb::KeySlot::try_from(value).ok()? {
        pb::KeySlot::Primary => Some(KeySlot::Primary),
        pb::KeySlot::Secondary => Some(KeySlot::Secondary),
        pb::KeySlot::Unspecified => None,
    }
}

fn right_to_pb(right: Right) -> pb::Right {
    match right {
        Right::Listen => pb::Right::Listen,
        Right::Send => pb::Right::Send,
        Right::Manage => pb::Right::Manage,
        Right::Operator => pb::Right::Unspecified,
    }
}

fn slot_to_pb(slot: KeySlot) -> pb::KeySlot {
    match slot {
        KeySlot::Primary => pb::KeySlot::Primary,
        KeySlot::Secondary => pb::KeySlot::Secondary,
    }
}

fn key_from_pb(key: &pb::TenantKey) -> Result<(Right, KeySlot, Key), ClientError> {
    let bad = || ClientError::InvalidArgument("the broker returned a malformed key".into());
    let right = right_from_pb(key.right).ok_or_else(bad)?;
    let slot = slot_from_pb(key.slot).ok_or_else(bad)?;
    let k = Key::from_base64(&key.key).map_err(|_| bad())?;
    Ok((right, slot, k))
}

#[derive(Clone)]
pub struct AdminClient {
    inner: Inner,
}

impl AdminClient {
    pub async fn connect(
        endpoint: &BrokerEndpoint,
        credential: Credential,
    ) -> Result<AdminClient, ClientError> {
        let channel = endpoint.connect().await?;
        Ok(AdminClient::with_channel(channel, credential))
    }

    pub fn with_channel(channel: Channel, credential: Credential) -> AdminClient {
        AdminClient {
            inner: Generated::with_interceptor(channel, Authorize(credential)),
        }
    }

    pub async fn create_tenant(
        &self,
        tenant: &str,
        connector_name: Option<&str>,
        start_disabled: bool,
    ) -> Result<(pb::TenantConfiguration, TenantKeys), ClientError> {
        let reply = self
            .inner
            .clone()
            .create_tenant(pb::CreateTenantRequest {
                tenant: tenant.to_owned(),
                connector_name: connector_name.unwrap_or_default().to_owned(),
                start_disabled,
            })
            .await?
            .into_inner();
        let mut keys = BTreeMap::new();
        for k in &reply.keys {
            let (right, slot, key) = key_from_pb(k)?;
            keys.insert((right.as_str(), slot.as_str()), key);
        }
        Ok((reply.configuration.unwrap_or_default(), TenantKeys(keys)))
    }

    pub async fn delete_tenant(&self, tenant: &str) -> Result<(), ClientError> {
        self.inner
            .clone()
            .delete_tenant(pb::DeleteTenantRequest {
                tenant: tenant.to_owned(),
            })
            .await?;
        Ok(())
    }

    pub async fn list_tenants(&self) -> Result<Vec<pb::TenantConfiguration>, ClientError> {
        Ok(self
            .inner
            .clone()
            .list_tenants(pb::ListTenantsRequest {})
            .await?
            .into_inner()
            .tenants)
    }

    pub async fn set_writeback(
        &self,
        tenant: &str,
        enabled: bool,
    ) -> Result<pb::TenantConfiguration, ClientError> {
        Ok(self
            .inner
            .clone()
            .set_writeback(pb::SetWritebackRequest {
                tenant: tenant.to_owned(),
                enabled,
            })
            .await?
            .into_inner())
    }

    pub async fn list_agents(&self, tenant: &str) -> Result<pb::ListAgentsReply, ClientError> {
        Ok(self
            .inner
            .clone()
            .list_agents(pb::ListAgentsRequest {
                tenant: tenant.to_owned(),
            })
            .await?
            .into_inner())
    }

    /// Revokes an agent id; whether a live session was closed.
    pub async fn revoke_agent(&self, tenant: &str, agent_id: &str) -> Result<bool, ClientError> {
        Ok(self
            .inner
            .clone()
            .revoke_agent(pb::RevokeAgentRequest {
                tenant: tenant.to_owned(),
                agent_id: agent_id.to_owned(),
            })
            .await?
            .into_inner()
            .disconnected)
    }

    pub async fn restore_agent(&self, tenant: &str, agent_id: &str) -> Result<(), ClientError> {
        self.inner
            .clone()
            .restore_agent(pb::RestoreAgentRequest {
                tenant: tenant.to_owned(),
                agent_id: agent_id.to_owned(),
            })
            .await?;
        Ok(())
    }

    /// Replaces one key; returns the new key and the sessions it closed.
    pub async fn rotate_key(
        &self,
        tenant: &str,
        right: Right,
        slot: KeySlot,
    ) -> Result<(Key, u32), ClientError> {
        let reply = self
            .inner
            .clone()
            .rotate_key(pb::RotateKeyRequest {
                tenant: tenant.to_owned(),
                right: right_to_pb(right) as i32,
                slot: slot_to_pb(slot) as i32,
            })
            .await?
            .into_inner();
        let key = reply
            .key
            .as_ref()
            .ok_or_else(|| ClientError::InvalidArgument("the broker returned no key".into()))?;
        let (_, _, key) = key_from_pb(key)?;
        Ok((key, reply.sessions_closed))
    }
}

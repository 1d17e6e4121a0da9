//! Tenant administration: tenants, write-back switch, agents, keys.

use std::sync::Arc;

use proto::pb::admin_server::Admin;
use proto::pb::{self, GoodbyeReason};
use sas::{KeySlot, Right};
use tonic::{Request, Response, Status};
use tracing::info;

use crate::auth::Principal;
use crate::error::RelayError;
use crate::relay_service::configuration;
use crate::state::State;
use crate::store::TenantRecord;
use crate::time::now_unix_secs;

pub struct AdminService {
    state: Arc<State>,
}

const TENANT_ADMINS: &[Right] = &[Right::Manage, Right::Operator];

impl AdminService {
    pub fn new(state: Arc<State>) -> AdminService {
        AdminService { state }
    }

    fn authorize<T>(
        &self,
        request: &Request<T>,
        tenant: Option<&str>,
        accepted: &[Right],
    ) -> Result<Principal, RelayError> {
        self.state.authorizer.authorize_metadata(
            request.metadata(),
            tenant,
            accepted,
            now_unix_secs(),
        )
    }
}

fn pb_right(right: Right) -> pb::Right {
    match right {
        Right::Listen => pb::Right::Listen,
        Right::Send => pb::Right::Send,
        Right::Manage | Right::Operator => pb::Right::Manage,
    }
}

fn pb_slot(slot: KeySlot) -> pb::KeySlot {
    match slot {
        KeySlot::Primary => pb::KeySlot::Primary,
        KeySlot::Secondary => pb::KeySlot::Secondary,
    }
}

fn all_keys(record: &TenantRecord) -> Vec<pb::TenantKey> {
    let mut keys = Vec::new();
    for right in [Right::Listen, Right::Send, Right::Manage] {
        let pair = record.keys.pair(right).expect("tenant rights have keys");
        for (slot, key) in [
            (KeySlot::Primary, &pair.primary),
            (KeySlot::Secondary, &pair.secondary),
        ] {
            keys.push(pb::TenantKey {
                right: pb_right(right) as i32,
                slot: pb_slot(slot) as i32,
                key: key.to_base64().to_string(),
            });
        }
    }
    keys
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn create_tenant(
        &self,
        request: Request<pb::CreateTenantRequest>,
    ) -> Result<Response<pb::CreateTenantReply>, Status> {
        self.authorize(&request, None, &[Right::Operator])?;
        let body = request.into_inner();
        let connector = (!body.connector_name.is_empty()).then_some(body.connector_name);
        let record = self
            .state
            .tenants
            .create(&body.tenant, connector, !body.start_disabled)
            .await?;
        info!(tenant = %record.name, "tenant created");
        Ok(Response::new(pb::CreateTenantReply {
            configuration: Some(configuration(&self.state, &record.name)?),
            keys: all_keys(&record),
        }))
    }

    async fn delete_tenant(
        &self,
        request: Request<pb::DeleteTenantRequest>,
    ) -> Result<Response<pb::DeleteTenantReply>, Status> {
        let tenant = request.get_ref().tenant.clone();
        self.authorize(&request, Some(&tenant), &[Right::Operator])?;
        self.state.tenants.delete(&tenant).await?;
        self.state.rate_limit.forget(&tenant);
        self.state.registry.close_where(
            &tenant,
            |_| true,
            GoodbyeReason::TenantDeleted,
            "the tenant was deleted",
        );
        info!(tenant = %tenant, "tenant deleted");
        Ok(Response::new(pb::DeleteTenantReply {}))
    }

    async fn list_tenants(
        &self,
        request: Request<pb::ListTenantsRequest>,
    ) -> Result<Response<pb::ListTenantsReply>, Status> {
        self.authorize(&request, None, &[Right::Operator])?;
        let tenants = self
            .state
            .tenants
            .all()
            .iter()
            .filter_map(|r| configuration(&self.state, &r.name).ok())
            .collect();
        Ok(Response::new(pb::ListTenantsReply { tenants }))
    }

    async fn set_writeback(
        &self,
        request: Request<pb::SetWritebackRequest>,
    ) -> Result<Response<pb::TenantConfiguration>, Status> {
        let tenant = request.get_ref().tenant.clone();
        self.authorize(&request, Some(&tenant), TENANT_ADMINS)?;
        let enabled = request.get_ref().enabled;
        self.state.tenants.set_writeback(&tenant, enabled).await?;
        info!(tenant = %tenant, enabled, "write-back switched");
        Ok(Response::new(configuration(&self.state, &tenant)?))
    }

    async fn list_agents(
        &self,
        request: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsReply>, Status> {
        let tenant = request.get_ref().tenant.clone();
        self.authorize(&request, Some(&tenant), TENANT_ADMINS)?;
        let record = self.state.tenants.require(&tenant)?;
        Ok(Response::new(pb::ListAgentsReply {
            agents_online: self.state.registry.agent_infos(&tenant),
            revoked_agent_ids: record.revoked_agents.iter().cloned().collect(),
        }))
    }

    async fn revoke_agent(
        &self,
        request: Request<pb::RevokeAgentRequest>,
    ) -> Result<Response<pb::RevokeAgentReply>, Status> {
        let pb::RevokeAgentRequest { tenant, agent_id } = request.get_ref().clone();
        self.authorize(&request, Some(&tenant), TENANT_ADMINS)?;
        if !proto::names::is_valid_agent_id(&agent_id) {
            return Err(RelayError::InvalidAgentId.into());
        }
        let id = agent_id.clone();
        self.state
            .tenants
            .update(&tenant, move |r| {
                r.revoked_agents.insert(id);
                Ok(())
            })
            .await?;
        let closed = self.state.registry.close_where(
            &tenant,
            |s| s.agent_id == agent_id,
            GoodbyeReason::AgentRevoked,
            "this agent id was revoked by an administrator",
        );
        info!(tenant = %tenant, agent_id = %agent_id, disconnected = closed > 0, "agent revoked");
        Ok(Response::new(pb::RevokeAgentReply {
            disconnected: closed > 0,
        }))
    }

    async fn restore_agent(
        &self,
        request: Request<pb::RestoreAgentRequest>,
    ) -> Result<Response<pb::RestoreAgentReply>, Status> {
        let pb::RestoreAgentRequest { tenant, agent_id } = request.get_ref().clone();
        self.authorize(&request, Some(&tenant), TENANT_ADMINS)?;
        let id = agent_id.clone();
        self.state
            .tenants
            .update(&tenant, move |r| {
                if r.revoked_agents.remove(&id) {
                    Ok(())
                } else {
                    Err(RelayError::AgentNotFound(id))
                }
            })
            .await?;
        info!(tenant = %tenant, agent_id = %agent_id, "agent restored");
        Ok(Response::new(pb::RestoreAgentReply {}))
    }

    async fn rotate_key(
        &self,
        request: Request<pb::RotateKeyRequest>,
    ) -> Result<Response<pb::RotateKeyReply>, Status> {
        let body = request.get_ref().clone();
        self.authorize(&request, Some(&body.tenant), TENANT_ADMINS)?;
        let right = match pb::Right::try_from(body.right) {
            Ok(pb::Right::Listen) => Right::Listen,
            Ok(pb::Right::Send) => Right::Send,
            Ok(pb::Right::Manage) => Right::Manage,
            _ => {
                return Err(
                    RelayError::InvalidKeySelector("right must be listen, send or manage").into(),
                );
            }
        };
        let slot = match pb::KeySlot::try_from(body.slot) {
            Ok(pb::KeySlot::Primary) => KeySlot::Primary,
            Ok(pb::KeySlot::Secondary) => KeySlot::Secondary,
            _ => {
                return Err(
                    RelayError::InvalidKeySelector("slot must be primary or secondary").into(),
                );
            }
        };
        let key = self
            .state
            .tenants
            .rotate_key(&body.tenant, right, slot)
            .await?;
        let closed = if right == Right::Listen {
            self.state.registry.close_where(
                &body.tenant,
                |s| s.slot() == slot,
                GoodbyeReason::KeyRotated,
                "the key that signed this session's token was rotated",
            )
        } else {
            0
        };
        info!(tenant = %body.tenant, right = %right, slot = slot.as_str(), sessions_closed = closed, "key rotated");
        Ok(Response::new(pb::RotateKeyReply {
            key: Some(pb::TenantKey {
                right: pb_right(right) as i32,
                slot: pb_slot(slot) as i32,
                key: key.to_base64().to_string(),
            }),
            sessions_closed: closed as u32,
        }))
    }
}

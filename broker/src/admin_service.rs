//! Tenant administration: tenants, write-back switch, agents, keys.

use std::sync::Arc;

use proto::pb::admin_server::Admin;
use proto::pb::{self, GoodbyeReason};
use sas::{KeySlot, Right};
use serde_json::json;
use tonic::{Request, Response, Status};
use tracing::info;

use crate::audit::{Actor, Call};
use crate::error::RelayError;
use crate::relay_service::configuration;
use crate::state::State;
use crate::store::TenantRecord;

pub struct AdminService {
    state: Arc<State>,
}

const TENANT_ADMINS: &[Right] = &[Right::Manage, Right::Operator];

impl AdminService {
    pub fn new(state: Arc<State>) -> AdminService {
        AdminService { state }
    }

    /// Checks the call's token; a refusal is audited here, the rest of the
    /// call by [`Self::audited`] with the actor this returns.
    fn authorize<T>(
        &self,
        request: &Request<T>,
        rpc: &'static str,
        tenant: Option<&str>,
        accepted: &[Right],
    ) -> Result<(Call<'static>, Actor), RelayError> {
        let call = Call {
            rpc,
            peer: request.remote_addr(),
        };
        let token = crate::audit::token_of(request);
        let principal =
            self.state
                .audit
                .authorize(&self.state.authorizer, call, token, tenant, accepted)?;
        Ok((call, self.state.audit.actor(&principal, token)))
    }

    /// Writes the call's line (synced first when `change` says it changes
    /// something) and hands its result on.
    fn audited<T>(
        &self,
        (call, actor): (Call<'_>, Actor),
        tenant: Option<&str>,
        change: Option<serde_json::Value>,
        result: Result<T, RelayError>,
    ) -> Result<Response<T>, Status> {
        self.state.audit.done(call, tenant, &actor, change, &result);
        Ok(Response::new(result?))
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
        let rpc = "relay.v1.Admin/CreateTenant";
        let caller = self.authorize(&request, rpc, None, &[Right::Operator])?;
        let body = request.into_inner();
        let connector = (!body.connector_name.is_empty()).then_some(body.connector_name);
        let change = json!({"created": true, "writeback": !body.start_disabled,
            "connector_name": connector});
        let result = async {
            let record = self
                .state
                .tenants
                .create(&body.tenant, connector, !body.start_disabled)
                .await?;
            info!(tenant = %record.name, "tenant created");
            Ok(pb::CreateTenantReply {
                configuration: Some(configuration(&self.state, &record.name)?),
                keys: all_keys(&record),
            })
        }
        .await;
        self.audited(caller, Some(&body.tenant), Some(change), result)
    }

    async fn delete_tenant(
        &self,
        request: Request<pb::DeleteTenantRequest>,
    ) -> Result<Response<pb::DeleteTenantReply>, Status> {
        let tenant = request.get_ref().tenant.clone();
        let caller = self.authorize(
            &request,
            "relay.v1.Admin/DeleteTenant",
            Some(&tenant),
            &[Right::Operator],
        )?;
        let result = async {
            self.state.tenants.delete(&tenant).await?;
            self.state.rate_limit.forget(&tenant);
            self.state.registry.close_where(
                &tenant,
                |_| true,
                GoodbyeReason::TenantDeleted,
                "the tenant was deleted",
            );
            info!(tenant = %tenant, "tenant deleted");
            Ok(pb::DeleteTenantReply {})
        }
        .await;
        self.audited(
            caller,
            Some(&tenant),
            Some(json!({"deleted": true})),
            result,
        )
    }

    async fn list_tenants(
        &self,
        request: Request<pb::ListTenantsRequest>,
    ) -> Result<Response<pb::ListTenantsReply>, Status> {
        let caller = self.authorize(
            &request,
            "relay.v1.Admin/ListTenants",
            None,
            &[Right::Operator],
        )?;
        let tenants = self
            .state
            .tenants
            .all()
            .iter()
            .filter_map(|r| configuration(&self.state, &r.name).ok())
            .collect();
        self.audited(caller, None, None, Ok(pb::ListTenantsReply { tenants }))
    }

    async fn set_writeback(
        &self,
        request: Request<pb::SetWritebackRequest>,
    ) -> Result<Response<pb::TenantConfiguration>, Status> {
        let tenant = request.get_ref().tenant.clone();
        let caller = self.authorize(
            &request,
            "relay.v1.Admin/SetWriteback",
            Some(&tenant),
            TENANT_ADMINS,
        )?;
        let enabled = request.get_ref().enabled;
        let result = async {
            self.state.tenants.set_writeback(&tenant, enabled).await?;
            info!(tenant = %tenant, enabled, "write-back switched");
            configuration(&self.state, &tenant)
        }
        .await;
        let change = json!({"writeback": enabled});
        self.audited(caller, Some(&tenant), Some(change), result)
    }

    async fn list_agents(
        &self,
        request: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsReply>, Status> {
        let tenant = request.get_ref().tenant.clone();
        let caller = self.authorize(
            &request,
            "relay.v1.Admin/ListAgents",
            Some(&tenant),
            TENANT_ADMINS,
        )?;
        let result = self
            .state
            .tenants
            .require(&tenant)
            .map(|record| pb::ListAgentsReply {
                agents_online: self.state.registry.agent_infos(&tenant),
                revoked_agent_ids: record.revoked_agents.iter().cloned().collect(),
            });
        self.audited(caller, Some(&tenant), None, result)
    }

    async fn revoke_agent(
        &self,
        request: Request<pb::RevokeAgentRequest>,
    ) -> Result<Response<pb::RevokeAgentReply>, Status> {
        let pb::RevokeAgentRequest { tenant, agent_id } = request.get_ref().clone();
        let caller = self.authorize(
            &request,
            "relay.v1.Admin/RevokeAgent",
            Some(&tenant),
            TENANT_ADMINS,
        )?;
        // The id as sent is written only once it is known to be an id.
        let valid = proto::names::is_valid_agent_id(&agent_id);
        let change = json!({"revoked_agent": valid.then_some(&agent_id)});
        let result = async {
            if !valid {
                return Err(RelayError::InvalidAgentId);
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
            Ok(pb::RevokeAgentReply {
                disconnected: closed > 0,
            })
        }
        .await;
        self.audited(caller, Some(&tenant), Some(change), result)
    }

    async fn restore_agent(
        &self,
        request: Request<pb::RestoreAgentRequest>,
    ) -> Result<Response<pb::RestoreAgentReply>, Status> {
        let pb::RestoreAgentRequest { tenant, agent_id } = request.get_ref().clone();
        let caller = self.authorize(
            &request,
            "relay.v1.Admin/RestoreAgent",
            Some(&tenant),
            TENANT_ADMINS,
        )?;
        let valid = proto::names::is_valid_agent_id(&agent_id);
        let change = json!({"restored_agent": valid.then_some(&agent_id)});
        let id = agent_id.clone();
        let result = self
            .state
            .tenants
            .update(&tenant, move |r| {
                if r.revoked_agents.remove(&id) {
                    Ok(())
                } else {
                    Err(RelayError::AgentNotFound(id))
                }
            })
            .await
            .map(|_| {
                info!(tenant = %tenant, agent_id = %agent_id, "agent restored");
                pb::RestoreAgentReply {}
            });
        self.audited(caller, Some(&tenant), Some(change), result)
    }

    async fn rotate_key(
        &self,
        request: Request<pb::RotateKeyRequest>,
    ) -> Result<Response<pb::RotateKeyReply>, Status> {
        let body = request.get_ref().clone();
        let caller = self.authorize(
            &request,
            "relay.v1.Admin/RotateKey",
            Some(&body.tenant),
            TENANT_ADMINS,
        )?;
        let right = match pb::Right::try_from(body.right) {
            Ok(pb::Right::Listen) => Some(Right::Listen),
            Ok(pb::Right::Send) => Some(Right::Send),
            Ok(pb::Right::Manage) => Some(Right::Manage),
            _ => None,
        };
        let slot = match pb::KeySlot::try_from(body.slot) {
            Ok(pb::KeySlot::Primary) => Some(KeySlot::Primary),
            Ok(pb::KeySlot::Secondary) => Some(KeySlot::Secondary),
            _ => None,
        };
        let change = json!({"rotated_key": {
            "right": right.map(Right::as_str),
            "key_slot": slot.map(KeySlot::as_str),
        }});
        let result = async {
            let right = right.ok_or(RelayError::InvalidKeySelector(
                "right must be listen, send or manage",
            ))?;
            let slot = slot.ok_or(RelayError::InvalidKeySelector(
                "slot must be primary or secondary",
            ))?;
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
            Ok(pb::RotateKeyReply {
                key: Some(pb::TenantKey {
                    right: pb_right(right) as i32,
                    slot: pb_slot(slot) as i32,
                    key: key.to_base64().to_string(),
                }),
                sessions_closed: closed as u32,
            })
        }
        .await;
        self.audited(caller, Some(&body.tenant), Some(change), result)
    }
}

//! A caller who cannot prove a key of a tenant learns nothing about it, not
//! even whether it exists: every call that names a tenant answers another
//! tenant's valid token, and a made-up one, the same way for an existing
//! tenant and a missing one (issue 16, observation 8).

use proto::Reason;
use proto::pb::admin_client::AdminClient;
use proto::pb::agent_gateway_client::AgentGatewayClient;
use proto::pb::relay_client::RelayClient;
use proto::pb::{self, Operation, agent_frame};
use proto::time::unix_secs;
use sas::{Key, KeySlot, Right};
use tests::BrokerBuilder;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

/// Every call that addresses a tenant, with the right a caller needs for it.
#[derive(Debug, Clone, Copy)]
enum Rpc {
    Submit,
    Ping,
    GetOutcome,
    GetConfiguration,
    SetWriteback,
    ListAgents,
    RevokeAgent,
    RotateKey,
    DeleteTenant,
    RegisterKey,
    RetireKey,
    OpenSession,
}

const ALL: &[Rpc] = &[
    Rpc::Submit,
    Rpc::Ping,
    Rpc::GetOutcome,
    Rpc::GetConfiguration,
    Rpc::SetWriteback,
    Rpc::ListAgents,
    Rpc::RevokeAgent,
    Rpc::RotateKey,
    Rpc::DeleteTenant,
    Rpc::RegisterKey,
    Rpc::RetireKey,
    Rpc::OpenSession,
];

impl Rpc {
    fn right(self) -> Right {
        match self {
            Rpc::Submit | Rpc::Ping | Rpc::GetOutcome | Rpc::GetConfiguration => Right::Send,
            Rpc::SetWriteback
            | Rpc::ListAgents
            | Rpc::RevokeAgent
            | Rpc::RotateKey
            | Rpc::DeleteTenant => Right::Manage,
            Rpc::RegisterKey | Rpc::RetireKey | Rpc::OpenSession => Right::Listen,
        }
    }
}

fn with_token<T>(body: T, token: &str) -> Request<T> {
    let mut request = Request::new(body);
    request
        .metadata_mut()
        .insert("authorization", token.parse().expect("metadata"));
    request
}

/// The refusal of `rpc` on `tenant` with `token`.
async fn refusal(channel: &Channel, rpc: Rpc, addressed: &str, token: &str) -> Status {
    let tenant = addressed.to_owned();
    let relay = || RelayClient::new(channel.clone());
    let admin = || AdminClient::new(channel.clone());
    let gateway = || AgentGatewayClient::new(channel.clone());
    let result = match rpc {
        Rpc::Submit => relay()
            .submit(with_token(
                pb::SubmitRequest {
                    tenant,
                    request_id: "oracle-1".into(),
                    operation: Operation::ResetPassword as i32,
                    envelope: vec![1, 2, 3].into(),
                    agent_id: "dc01".into(),
                },
                token,
            ))
            .await
            .map(drop),
        Rpc::Ping => relay()
            .ping(with_token(pb::PingRequest { tenant }, token))
            .await
            .map(drop),
        Rpc::GetOutcome => relay()
            .get_outcome(with_token(
                pb::GetOutcomeRequest {
                    tenant,
                    request_id: "oracle-1".into(),
                },
                token,
            ))
            .await
            .map(drop),
        Rpc::GetConfiguration => relay()
            .get_configuration(with_token(pb::GetConfigurationRequest { tenant }, token))
            .await
            .map(drop),
        Rpc::SetWriteback => admin()
            .set_writeback(with_token(
                pb::SetWritebackRequest {
                    tenant,
                    enabled: false,
                },
                token,
            ))
            .await
            .map(drop),
        Rpc::ListAgents => admin()
            .list_agents(with_token(pb::ListAgentsRequest { tenant }, token))
            .await
            .map(drop),
        Rpc::RevokeAgent => admin()
            .revoke_agent(with_token(
                pb::RevokeAgentRequest {
                    tenant,
                    agent_id: "dc01".into(),
                },
                token,
            ))
            .await
            .map(drop),
        Rpc::RotateKey => admin()
            .rotate_key(with_token(
                pb::RotateKeyRequest {
                    tenant,
                    right: pb::Right::Send as i32,
                    slot: pb::KeySlot::Primary as i32,
                },
                token,
            ))
            .await
            .map(drop),
        Rpc::DeleteTenant => admin()
            .delete_tenant(with_token(pb::DeleteTenantRequest { tenant }, token))
            .await
            .map(drop),
        Rpc::RegisterKey => gateway()
            .register_key(with_token(
                pb::RegisterKeyRequest { tenant, key: None },
                token,
            ))
            .await
            .map(drop),
        Rpc::RetireKey => gateway()
            .retire_key(with_token(
                pb::RetireKeyRequest {
                    tenant,
                    key_id: "0123456789abcdef".into(),
                },
                token,
            ))
            .await
            .map(drop),
        Rpc::OpenSession => {
            let hello = pb::AgentFrame {
                frame: Some(agent_frame::Frame::Hello(pb::Hello {
                    tenant,
                    agent_id: "dc01".into(),
                    agent_version: "test".into(),
                    token: token.to_owned(),
                })),
            };
            gateway()
                .open_session(tokio_stream::iter(vec![hello]))
                .await
                .map(drop)
        }
    };
    match result {
        Ok(()) => panic!("{rpc:?} on {addressed:?} was accepted"),
        Err(status) => status,
    }
}

/// What a caller can tell apart: the code, the reason and the message.
fn answer(status: &Status) -> (Code, Option<Reason>, String) {
    (
        status.code(),
        proto::reason_of(status).map(|(r, _)| r),
        status.message().to_owned(),
    )
}

#[tokio::test]
async fn a_tenant_looks_the_same_whether_it_exists_or_not_to_a_caller_without_its_key() {
    let broker = BrokerBuilder::new().start().await;
    let a = broker.create_tenant("tenant-a").await;
    let _b = broker.create_tenant("tenant-b").await;
    let (existing, missing) = ("tenant-b", "tenant-c");
    let channel = broker.endpoint().connect().await.expect("channel");
    let made_up = Key::generate().expect("key");
    let expiry = unix_secs() + 600;

    for &rpc in ALL {
        let right = rpc.right();
        let of_a = sas::mint(&a.key(right, KeySlot::Primary), "tenant-a", right, expiry);
        let forged = |tenant: &str| sas::mint(&made_up, tenant, right, expiry);
        let cases = [
            (
                "a valid token of tenant A",
                refusal(&channel, rpc, existing, of_a.expose()).await,
                refusal(&channel, rpc, missing, of_a.expose()).await,
            ),
            (
                "a made-up token",
                refusal(&channel, rpc, existing, forged(existing).expose()).await,
                refusal(&channel, rpc, missing, forged(missing).expose()).await,
            ),
        ];
        for (who, on_existing, on_missing) in cases {
            assert_eq!(
                answer(&on_existing),
                answer(&on_missing),
                "{rpc:?} with {who}: the answers tell an existing tenant from a missing one"
            );
            assert_eq!(
                answer(&on_existing).0,
                Code::Unauthenticated,
                "{rpc:?} with {who}: {on_existing:?}"
            );
            assert_eq!(
                answer(&on_existing).1,
                Some(Reason::BadSignature),
                "{rpc:?} with {who}"
            );
        }
    }

    // The same token does work where it belongs, so the refusals above are
    // about the tenant addressed, not a broken token.
    let of_a = sas::mint(
        &a.key(Right::Send, KeySlot::Primary),
        "tenant-a",
        Right::Send,
        expiry,
    );
    RelayClient::new(channel.clone())
        .get_configuration(with_token(
            pb::GetConfigurationRequest {
                tenant: "tenant-a".into(),
            },
            of_a.expose(),
        ))
        .await
        .expect("tenant A's own configuration");

    // The operator may still learn which tenants exist.
    let operator = sas::mint(&broker.operator_key(), "*", Right::Operator, expiry);
    let status = refusal(&channel, Rpc::ListAgents, missing, operator.expose()).await;
    assert_eq!(
        proto::reason_of(&status).map(|(r, _)| r),
        Some(Reason::UnknownTenant)
    );
}

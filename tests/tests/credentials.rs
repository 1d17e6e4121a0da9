//! Shared access signatures: each right acts only where it should, a tenant's
//! credentials act on that tenant only, expired and forged tokens are
//! refused, and keys rotate without dropping agents that moved to the other key.

use proto::pb::agent_gateway_client::AgentGatewayClient;
use proto::pb::relay_client::RelayClient;
use proto::pb::{self, Operation, agent_frame};
use proto::time::unix_secs;
use relay_client::Reason;
use relay_client::admin::AdminClient;
use relay_client::credential::Credential;
use relay_client::portal_client::PortalClient;
use sas::{Key, KeySlot, Right};
use tests::{BrokerBuilder, reason};
use tonic::Code;

#[tokio::test]
async fn an_agent_with_tenant_a_credentials_cannot_register_for_tenant_b() {
    let broker = BrokerBuilder::new().start().await;
    let a = broker.create_tenant("tenant-a").await;
    let b = broker.create_tenant("tenant-b").await;

    // An agent configured for tenant B but holding tenant A's Listen key:
    // its token for B does not verify against B's keys.
    let mut intruder = broker
        .agent_process(&a, "intruder")
        .claim_tenant("tenant-b")
        .spawn();
    let refused = intruder.expect_line("refused").await;
    assert!(refused.contains("BAD_SIGNATURE"), "{refused}");
    intruder.stop().await;

    // A valid token of tenant A presented in a Hello for tenant B.
    let channel = broker.endpoint().connect().await.expect("channel");
    let token = sas::mint(
        &a.key(Right::Listen, KeySlot::Primary),
        "tenant-a",
        Right::Listen,
        unix_secs() + 600,
    );
    let hello = pb::AgentFrame {
        frame: Some(agent_frame::Frame::Hello(pb::Hello {
            tenant: "tenant-b".into(),
            agent_id: "intruder".into(),
            agent_version: "test".into(),
            token: token.expose().to_owned(),
        })),
    };
    let status = AgentGatewayClient::new(channel)
        .open_session(tokio_stream::iter(vec![hello]))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(
        proto::reason_of(&status).expect("reason").0,
        Reason::BadSignature
    );

    let config = broker
        .portal(&b, Right::Send)
        .await
        .configuration()
        .await
        .expect("config");
    assert!(config.agents_online.is_empty());
    let metrics = broker.metrics().await;
    // The Hello of tenant A's token for tenant B is a wrong signature.
    assert!(
        metrics.contains("relay_agent_session_refusals_total{reason=\"BAD_SIGNATURE\"}"),
        "{metrics}"
    );
    assert!(!metrics.contains("TENANT_MISMATCH"), "{metrics}");
}

#[tokio::test]
async fn each_right_acts_only_where_it_should() {
    let broker = BrokerBuilder::new().start().await;
    let tenant = broker.create_tenant("contoso").await;
    let _agent = broker.agent_process(&tenant, "dc01").start().await;
    let endpoint = broker.endpoint();

    // A Send token cannot manage.
    let send_admin = AdminClient::connect(&endpoint, tenant.credential(Right::Send))
        .await
        .expect("client");
    let err = send_admin
        .set_writeback("contoso", false)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), Some(Reason::WrongRight));
    assert_eq!(err.code(), Some(Code::PermissionDenied));
    assert_eq!(
        reason(
            send_admin
                .rotate_key("contoso", Right::Listen, KeySlot::Primary)
                .await
        ),
        Reason::WrongRight
    );

    // A Listen token cannot send, nor ping.
    let listen_portal =
        PortalClient::connect(&endpoint, "contoso", tenant.credential(Right::Listen))
            .await
            .expect("client");
    let err = listen_portal
        .submit("r1", Operation::ResetPassword, "dc01", vec![1], None)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), Some(Reason::WrongRight));
    assert_eq!(err.code(), Some(Code::PermissionDenied));
    assert_eq!(reason(listen_portal.ping(None).await), Reason::WrongRight);

    // Manage cannot submit resets, nor create tenants (operator only).
    let manage_portal = broker.portal(&tenant, Right::Manage).await;
    assert_eq!(
        reason(
            manage_portal
                .submit("r2", Operation::ResetPassword, "dc01", vec![1], None)
                .await
        ),
        Reason::WrongRight
    );
    let manage_admin = AdminClient::connect(&endpoint, tenant.credential(Right::Manage))
        .await
        .expect("client");
    assert_eq!(
        reason(manage_admin.create_tenant("other", None, false).await),
        Reason::WrongRight
    );
    // ...but it administers its own tenant.
    manage_admin
        .set_writeback("contoso", true)
        .await
        .expect("manage own tenant");

    // A key that is not the tenant's: bad signature, unauthenticated.
    let forged = PortalClient::connect(
        &endpoint,
        "contoso",
        Credential::new("contoso", Right::Send, Key::generate().expect("key")),
    )
    .await
    .expect("client");
    let err = forged.ping(None).await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::BadSignature));
    assert_eq!(err.code(), Some(Code::Unauthenticated));

    // A tenant's key signing for the operator resource is refused too.
    let fake_operator = AdminClient::connect(
        &endpoint,
        Credential::operator(tenant.key(Right::Manage, KeySlot::Primary)),
    )
    .await
    .expect("client");
    assert_eq!(
        reason(fake_operator.list_tenants().await),
        Reason::BadSignature
    );
}

#[tokio::test]
async fn missing_expired_and_overlong_tokens_are_refused() {
    let broker = BrokerBuilder::new().start().await;
    let tenant = broker.create_tenant("contoso").await;
    let channel = broker.endpoint().connect().await.expect("channel");
    let key = tenant.key(Right::Send, KeySlot::Primary);
    let call = |token: Option<String>| {
        let mut client = RelayClient::new(channel.clone());
        async move {
            let mut request = tonic::Request::new(pb::PingRequest {
                tenant: "contoso".into(),
            });
            if let Some(t) = token {
                request
                    .metadata_mut()
                    .insert("authorization", t.parse().expect("metadata"));
            }
            client.ping(request).await.unwrap_err()
        }
    };
    let check = |status: tonic::Status, expected: Reason| {
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        let (got, _) = proto::reason_of(&status).expect("reason");
        assert_eq!(got, expected);
        // The refusal never echoes the token back.
        assert!(!status.message().contains("sig="), "{status:?}");
    };
    check(call(None).await, Reason::MissingCredential);
    let expired = sas::mint(&key, "contoso", Right::Send, unix_secs() - 10);
    check(
        call(Some(expired.expose().to_owned())).await,
        Reason::TokenExpired,
    );
    let overlong = sas::mint(&key, "contoso", Right::Send, unix_secs() + 3 * 24 * 3600);
    check(
        call(Some(overlong.expose().to_owned())).await,
        Reason::TokenLifetimeTooLong,
    );
    check(
        call(Some("Bearer abc".into())).await,
        Reason::MalformedToken,
    );
}

#[tokio::test]
async fn rotating_to_the_secondary_key_keeps_agents_connected() {
    let broker = BrokerBuilder::new().start().await;
    let tenant = broker.create_tenant("contoso").await;
    let mut on_primary = broker.agent_process(&tenant, "on-primary").start().await;
    let _on_secondary = broker
        .agent_process(&tenant, "on-secondary")
        .key(tenant.key(Right::Listen, KeySlot::Secondary))
        .start()
        .await;
    let admin = broker.admin().await;
    let before = admin.list_agents("contoso").await.expect("agents");
    let session_of = |reply: &pb::ListAgentsReply, id: &str| {
        reply
            .agents_online
            .iter()
            .find(|a| a.agent_id == id)
            .map(|a| a.session_id.clone())
    };
    let secondary_session = session_of(&before, "on-secondary").expect("connected");

    let (new_primary, closed) = admin
        .rotate_key("contoso", Right::Listen, KeySlot::Primary)
        .await
        .expect("rotate");
    assert_eq!(closed, 1);
    assert_ne!(new_primary, tenant.key(Right::Listen, KeySlot::Primary));

    // The agent still on the old primary is told why and cannot come back.
    let gone = on_primary.expect_line("disconnected").await;
    assert!(gone.contains("KEY_ROTATED"), "{gone}");
    let refused = on_primary.expect_line("refused").await;
    assert!(refused.contains("BAD_SIGNATURE"), "{refused}");

    // The agent on the secondary key kept its session throughout.
    let after = admin.list_agents("contoso").await.expect("agents");
    assert_eq!(session_of(&after, "on-secondary"), Some(secondary_session));
    assert_eq!(session_of(&after, "on-primary"), None);
    let portal = broker.portal(&tenant, Right::Send).await;
    assert_eq!(
        portal.ping(None).await.expect("ping").agent_id,
        "on-secondary"
    );

    // An agent given the new primary key connects again.
    let _renewed = broker
        .agent_process(&tenant, "on-primary")
        .key(new_primary)
        .start()
        .await;

    // Send keys rotate the same way: the secondary keeps working.
    let secondary_portal = PortalClient::connect(
        &broker.endpoint(),
        "contoso",
        Credential::new(
            "contoso",
            Right::Send,
            tenant.key(Right::Send, KeySlot::Secondary),
        ),
    )
    .await
    .expect("client");
    admin
        .rotate_key("contoso", Right::Send, KeySlot::Primary)
        .await
        .expect("rotate send");
    assert_eq!(reason(portal.ping(None).await), Reason::BadSignature);
    secondary_portal
        .ping(None)
        .await
        .expect("secondary send key still valid");
}

#[tokio::test]
async fn revoked_agents_are_disconnected_and_refused_until_restored() {
    let broker = BrokerBuilder::new().start().await;
    let tenant = broker.create_tenant("contoso").await;
    let mut agent = broker.agent_process(&tenant, "dc01").start().await;
    let admin = broker.admin().await;

    assert!(admin.revoke_agent("contoso", "dc01").await.expect("revoke"));
    assert!(
        agent
            .expect_line("disconnected")
            .await
            .contains("AGENT_REVOKED")
    );
    assert!(agent.expect_line("refused").await.contains("AGENT_REVOKED"));
    let listed = admin.list_agents("contoso").await.expect("agents");
    assert!(listed.agents_online.is_empty());
    assert_eq!(listed.revoked_agent_ids, vec!["dc01".to_owned()]);

    admin
        .restore_agent("contoso", "dc01")
        .await
        .expect("restore");
    agent.expect_line("connected").await;
    assert_eq!(
        reason(admin.restore_agent("contoso", "dc01").await),
        Reason::AgentNotFound
    );

    // Deleting the tenant closes its sessions with the reason.
    admin.delete_tenant("contoso").await.expect("delete");
    assert!(
        agent
            .expect_line("disconnected")
            .await
            .contains("TENANT_DELETED")
    );
    // Its keys went with the tenant: to the agent, as to anyone without a
    // key, a deleted tenant looks like a wrong signature, never "no such
    // tenant" (docs/PROTOCOL.md, the order of the broker's checks).
    assert!(agent.expect_line("refused").await.contains("BAD_SIGNATURE"));
}

#[tokio::test]
async fn a_session_must_open_with_a_timely_valid_hello() {
    let broker = BrokerBuilder::new()
        .config("hello_timeout = \"300ms\"")
        .start()
        .await;
    let tenant = broker.create_tenant("contoso").await;
    let channel = broker.endpoint().connect().await.expect("channel");
    let open = |frames: Vec<pb::AgentFrame>, keep_open: bool| {
        let mut client = AgentGatewayClient::new(channel.clone());
        async move {
            let (tx, rx) = tokio::sync::mpsc::channel(8);
            for f in frames {
                tx.send(f).await.expect("queue");
            }
            let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
            let result = client.open_session(stream).await;
            if keep_open {
                drop(tx);
            }
            match result {
                Ok(_) => panic!("session accepted"),
                Err(status) => proto::reason_of(&status).expect("reason").0,
            }
        }
    };
    let token = sas::mint(
        &tenant.key(Right::Listen, KeySlot::Primary),
        "contoso",
        Right::Listen,
        unix_secs() + 600,
    );
    let hello = |agent_id: &str| pb::AgentFrame {
        frame: Some(agent_frame::Frame::Hello(pb::Hello {
            tenant: "contoso".into(),
            agent_id: agent_id.into(),
            agent_version: "test".into(),
            token: token.expose().to_owned(),
        })),
    };
    let heartbeat = pb::AgentFrame {
        frame: Some(agent_frame::Frame::Heartbeat(pb::Heartbeat {
            sent_unix_ms: 0,
        })),
    };
    assert_eq!(open(vec![], true).await, Reason::HelloTimeout);
    assert_eq!(
        open(vec![heartbeat], false).await,
        Reason::ProtocolViolation
    );
    assert_eq!(
        open(vec![hello("bad id!")], false).await,
        Reason::InvalidAgentId
    );
    // The refusals are counted by reason.
    let metrics = broker.metrics().await;
    for r in ["HELLO_TIMEOUT", "PROTOCOL_VIOLATION", "INVALID_AGENT_ID"] {
        assert!(
            metrics.contains(&format!("reason=\"{r}\"")),
            "{r}: {metrics}"
        );
    }
}

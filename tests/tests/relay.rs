//! Routing through the broker: agents answer pings, requests reach their own
//! tenant's agent only, and every portal-facing error has its own status.

use std::time::{Duration, Instant};

use proto::pb::Operation;
use relay_client::Reason;
use sas::Right;
use tests::{BrokerBuilder, EchoAgent, reason};
use tonic::Code;

#[tokio::test]
async fn an_agent_process_connects_and_answers_pings() {
    let broker = BrokerBuilder::new().start().await;
    let tenant = broker.create_tenant("contoso").await;
    let _agent = broker.agent_process(&tenant, "dc01").start().await;

    let portal = broker.portal(&tenant, Right::Send).await;
    let pong = portal.ping(None).await.expect("ping");
    assert_eq!(pong.agent_id, "dc01");
    assert_eq!(pong.agent_version, env!("CARGO_PKG_VERSION"));
    assert!(pong.broker_agent_rtt <= pong.round_trip);

    // The Manage right may ping too (administrators run it first).
    let admin_portal = broker.portal(&tenant, Right::Manage).await;
    assert_eq!(
        admin_portal.ping(None).await.expect("ping").agent_id,
        "dc01"
    );

    let config = portal.configuration().await.expect("configuration");
    assert!(config.writeback_enabled);
    assert_eq!(config.connector_name, "contoso - AAD");
    assert_eq!(config.agents_online.len(), 1);
    assert_eq!(config.agents_online[0].agent_id, "dc01");
    assert!(config.agents_online[0].connected_since_unix_ms > 0);
}

#[tokio::test]
async fn requests_reach_the_agent_of_their_own_tenant_only() {
    let broker = BrokerBuilder::new().start().await;
    let a = broker.create_tenant("tenant-a").await;
    let b = broker.create_tenant("tenant-b").await;
    let agent_a = EchoAgent::start(&broker, &a, "agent-a").await;
    let agent_b = EchoAgent::start(&broker, &b, "agent-b").await;
    let portal_a = broker.portal(&a, Right::Send).await;
    let portal_b = broker.portal(&b, Right::Send).await;

    for i in 0..10 {
        let reply = portal_a
            .submit(
                &format!("a-{i}"),
                Operation::ResetPassword,
                "agent-a",
                b"sealed-a".to_vec(),
                None,
            )
            .await
            .expect("submit a");
        assert_eq!(reply.agent_id, "agent-a");
        assert_eq!(reply.envelope, b"agent-a|sealed-a");
        let reply = portal_b
            .submit(
                &format!("b-{i}"),
                Operation::ChangePassword,
                "agent-b",
                b"sealed-b".to_vec(),
                None,
            )
            .await
            .expect("submit b");
        assert_eq!(reply.envelope, b"agent-b|sealed-b");
    }
    assert!(agent_a.request_ids().iter().all(|id| id.starts_with("a-")));
    assert!(agent_b.request_ids().iter().all(|id| id.starts_with("b-")));
    assert_eq!(agent_a.request_ids().len(), 10);
    assert_eq!(agent_b.request_ids().len(), 10);

    // Tenant A's Send key cannot address tenant B.
    let cross = relay_client::portal_client::PortalClient::connect(
        &broker.endpoint(),
        "tenant-b",
        a.credential(Right::Send),
    )
    .await
    .expect("client");
    assert_eq!(
        reason(
            cross
                .submit("x-1", Operation::ResetPassword, "agent-b", vec![1], None)
                .await
        ),
        Reason::BadSignature
    );
    assert_eq!(reason(cross.ping(None).await), Reason::BadSignature);
    assert!(agent_b.request_ids().iter().all(|id| id.starts_with("b-")));
}

#[tokio::test]
async fn every_portal_error_has_its_own_status() {
    let broker = BrokerBuilder::new()
        .config("max_envelope_bytes = 1024")
        .start()
        .await;
    let tenant = broker.create_tenant("contoso").await;
    let portal = broker.portal(&tenant, Right::Send).await;
    let submit = |id: &'static str, envelope: Vec<u8>, timeout: Option<Duration>| {
        let portal = portal.clone();
        async move {
            portal
                .submit(id, Operation::ResetPassword, "slow", envelope, timeout)
                .await
        }
    };

    // No agent online: refused at once, not at the deadline.
    let started = Instant::now();
    let err = submit("r1", vec![0; 16], Some(Duration::from_secs(20)))
        .await
        .unwrap_err();
    assert_eq!(err.reason(), Some(Reason::NoAgentOnline));
    assert_eq!(err.code(), Some(Code::Unavailable));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "NO_AGENT_ONLINE must not wait for the deadline"
    );

    // Unknown tenant: to a token of another tenant it looks like any
    // tenant it has no key of, not "no such tenant".
    let ghost = relay_client::portal_client::PortalClient::connect(
        &broker.endpoint(),
        "ghost",
        tenant.credential(Right::Send),
    )
    .await
    .expect("client");
    let err = ghost
        .submit("r2", Operation::ResetPassword, "dc01", vec![1], None)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), Some(Reason::BadSignature));
    assert_eq!(err.code(), Some(Code::Unauthenticated));

    // Envelope too large, with the limit stated.
    let err = submit("r3", vec![0; 1025], None).await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::EnvelopeTooLarge));
    match &err {
        relay_client::ClientError::Relay { metadata, .. } => {
            assert_eq!(metadata.get("limit").map(String::as_str), Some("1024"));
            assert_eq!(metadata.get("size").map(String::as_str), Some("1025"));
        }
        other => panic!("unexpected {other:?}"),
    }

    // Invalid request id and operation.
    assert_eq!(
        reason(submit("bad id", vec![1], None).await),
        Reason::InvalidRequestId
    );
    assert_eq!(
        reason(
            portal
                .submit("r4", Operation::Ping, "slow", vec![], None)
                .await
        ),
        Reason::InvalidOperation
    );

    // Deadline exceeded: the agent answers after the caller's deadline.
    let slow = EchoAgent::start_with_delay(&broker, &tenant, "slow", Duration::from_secs(3)).await;
    let started = Instant::now();
    let call = tokio::spawn(submit("r5", vec![1], Some(Duration::from_secs(1))));
    slow.wait_for_request("r5").await;
    let err = call.await.expect("join").unwrap_err();
    // The agent had the request: the deadline passing on the portal's side
    // does not mean nothing happened, so the status says OUTCOME_UNKNOWN.
    assert_eq!(err.reason(), Some(Reason::OutcomeUnknown), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "at the deadline, not the answer"
    );
    // The agent finishes later; its answer is kept and can be fetched by id.
    let late = tests::await_outcome(&portal, "r5")
        .await
        .expect("late outcome");
    assert_eq!(late.agent_id, "slow");
    assert_eq!(late.envelope, b"slow|\x01");
    assert_eq!(
        reason(portal.outcome("never-sent").await),
        Reason::OutcomeNotFound
    );

    // The same request id twice while the first is in flight.
    let first = tokio::spawn(submit("same", vec![1], Some(Duration::from_secs(10))));
    slow.wait_for_request("same").await;
    assert_eq!(
        reason(submit("same", vec![1], Some(Duration::from_secs(10))).await),
        Reason::DuplicateRequestId
    );
    assert_eq!(first.await.expect("join").expect("first").agent_id, "slow");

    // Write-back disabled: refused before routing, agents stay connected.
    broker
        .admin()
        .await
        .set_writeback("contoso", false)
        .await
        .expect("disable");
    let err = submit("r6", vec![1], None).await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::WritebackDisabled));
    assert_eq!(err.code(), Some(Code::FailedPrecondition));
    assert_eq!(
        portal.ping(None).await.expect("ping still works").agent_id,
        "slow"
    );
    slow.stop().await;
}

#[tokio::test]
async fn an_agent_error_and_a_lost_agent_are_reported_as_such() {
    let broker = BrokerBuilder::new().start().await;
    let tenant = broker.create_tenant("contoso").await;
    // The real binary has no directory operations yet: a definite answer.
    let mut agent = broker.agent_process(&tenant, "dc01").start().await;
    let portal = broker.portal(&tenant, Right::Send).await;
    let err = portal
        .submit("r1", Operation::ResetPassword, "dc01", vec![1, 2, 3], None)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), Some(Reason::AgentError));
    assert!(err.to_string().contains("UNSUPPORTED_OPERATION"), "{err}");

    // An agent that dies after acknowledging a request: OUTCOME_UNKNOWN, at
    // once, naming the request.
    agent.stop().await;
    let slow = EchoAgent::start_with_delay(&broker, &tenant, "slow", Duration::from_secs(30)).await;
    let call = tokio::spawn({
        let portal = portal.clone();
        async move {
            portal
                .submit(
                    "r2",
                    Operation::ResetPassword,
                    "slow",
                    vec![1],
                    Some(Duration::from_secs(20)),
                )
                .await
        }
    });
    slow.wait_for_request("r2").await;
    // The Ack was queued before the work started; a ping on the same
    // session returns behind it, so the broker holds the Ack now.
    portal.ping(None).await.expect("ping");
    let started = Instant::now();
    slow.kill().await;
    let err = call.await.expect("join").unwrap_err();
    assert_eq!(err.reason(), Some(Reason::OutcomeUnknown), "{err:?}");
    match &err {
        relay_client::error::ClientError::Relay { metadata, .. } => {
            assert_eq!(metadata.get("request_id").map(String::as_str), Some("r2"));
            assert_eq!(
                metadata.get("acknowledged").map(String::as_str),
                Some("true")
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// A request goes to the agent it is addressed to, and to no other: among
/// three agents of a tenant, each named agent gets exactly its own requests.
/// The addressee not connected: NO_AGENT_ONLINE at once, naming it, and no
/// other agent gets the request. No addressee: INVALID_AGENT_ID.
#[tokio::test]
async fn a_request_reaches_the_agent_it_names_and_no_other() {
    let broker = BrokerBuilder::new().start().await;
    let tenant = broker.create_tenant("contoso").await;
    let agents = [
        EchoAgent::start(&broker, &tenant, "dc01").await,
        EchoAgent::start(&broker, &tenant, "dc02.contoso.example").await,
        EchoAgent::start(&broker, &tenant, "dc03").await,
    ];
    let portal = broker.portal(&tenant, Right::Send).await;
    for i in 0..12 {
        let agent = &agents[i % 3].agent_id;
        let id = format!("r{i}");
        let reply = portal
            .submit(
                &id,
                Operation::ResetPassword,
                agent,
                id.clone().into_bytes(),
                None,
            )
            .await
            .expect("submit");
        assert_eq!(&reply.agent_id, agent);
        assert_eq!(reply.envelope, format!("{agent}|{id}").into_bytes());
    }
    for (k, agent) in agents.iter().enumerate() {
        let mut expected: Vec<String> = (0..12)
            .filter(|i| i % 3 == k)
            .map(|i| format!("r{i}"))
            .collect();
        let mut got = agent.request_ids();
        expected.sort();
        got.sort();
        assert_eq!(got, expected, "{} got exactly its own", agent.agent_id);
    }

    // Addressed to an agent that is not connected.
    let started = Instant::now();
    let err = portal
        .submit(
            "to-dc09",
            Operation::ResetPassword,
            "dc09",
            vec![1],
            Some(Duration::from_secs(20)),
        )
        .await
        .unwrap_err();
    assert_eq!(err.reason(), Some(Reason::NoAgentOnline), "{err:?}");
    assert_eq!(err.code(), Some(Code::Unavailable));
    match &err {
        relay_client::ClientError::Relay {
            metadata, message, ..
        } => {
            assert_eq!(metadata.get("agent_id").map(String::as_str), Some("dc09"));
            assert!(message.contains("dc09"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5), "at once");
    assert!(
        agents
            .iter()
            .all(|a| !a.request_ids().contains(&"to-dc09".to_owned())),
        "no other agent got it"
    );
    // Nothing was relayed: GetOutcome knows nothing of it (once the
    // broker has released the id: PENDING until then).
    assert_eq!(
        reason(tests::await_outcome(&portal, "to-dc09").await),
        Reason::OutcomeNotFound
    );

    // No addressee, or not an agent id.
    for bad in ["", "dc 01", "dc01/x", &"d".repeat(65)] {
        let err = portal
            .submit("r-bad", Operation::ResetPassword, bad, vec![1], None)
            .await
            .unwrap_err();
        assert_eq!(err.reason(), Some(Reason::InvalidAgentId), "{bad:?}");
        assert_eq!(err.code(), Some(Code::InvalidArgument));
        assert!(err.to_string().contains("agent_id"), "{err}");
    }
    // A ping is addressed to nobody: any agent answers it.
    assert!(portal.ping(None).await.is_ok());
    for agent in agents {
        agent.stop().await;
    }
}

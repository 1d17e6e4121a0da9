//! One outcome record per relayed request (issue 16, observations 1-3):
//! whatever happens to the caller's call, GetOutcome returns the agent's
//! answer for every request the broker relayed. Real broker process, real
//! TLS on loopback, the agent library's real session loop.

use std::time::Duration;

use proto::pb::Operation;
use relay_client::portal_client::{PortalClient, Submitted};
use relay_client::{ClientError, Reason};
use sas::Right;
use tests::faults::FaultProxy;
use tests::{BrokerBuilder, EchoAgent, await_outcome};

async fn submit(
    portal: &PortalClient,
    agent: &str,
    id: &str,
    timeout: Option<Duration>,
) -> Result<Submitted, ClientError> {
    portal
        .submit(
            id,
            Operation::ResetPassword,
            agent,
            id.as_bytes().to_vec(),
            timeout,
        )
        .await
}

/// The echo agent's answer to `id`: `<agent>|<id>`.
fn echo(agent: &str, id: &str) -> Vec<u8> {
    format!("{agent}|{id}").into_bytes()
}

#[tokio::test]
async fn an_answer_that_comes_after_the_caller_gave_up_is_kept_for_get_outcome() {
    let broker = BrokerBuilder::new().start().await;
    let tenant = broker.create_tenant("contoso").await;
    let mut agent =
        EchoAgent::start_with_delay(&broker, &tenant, "dc01", Duration::from_millis(600)).await;
    let portal = broker.portal(&tenant, Right::Send).await;

    // The caller's own deadline fires first and its call is gone (the
    // stream reset), while the broker's deadline (its default, 30 s) has not:
    // the routing task gets the answer with nobody to give it to.
    let gave_up = tokio::time::timeout(
        Duration::from_millis(200),
        submit(&portal, "dc01", "r1", None),
    )
    .await;
    assert!(gave_up.is_err(), "the caller gave up before the answer");
    agent.answered("r1").await;
    let kept = await_outcome(&portal, "r1")
        .await
        .expect("the answer is kept, not lost with the caller's call");
    assert_eq!(kept.agent_id, "dc01");
    assert_eq!(kept.envelope, echo("dc01", "r1"));
    assert_eq!(agent.request_ids(), vec!["r1".to_owned()], "relayed once");

    // With the caller's deadline sent as grpc-timeout, the answer lands on
    // either side of the broker's own deadline (which starts a little after
    // the server's): every trial ends with the answer fetchable.
    for (i, ms) in (294..=306).step_by(2).enumerate() {
        let id = format!("race-{i}");
        let _ = submit(&portal, "dc01", &id, Some(Duration::from_millis(ms))).await;
        agent.answered(&id).await;
        let kept = await_outcome(&portal, &id)
            .await
            .unwrap_or_else(|e| panic!("{id} (deadline {ms} ms) was lost: {e}"));
        assert_eq!(kept.envelope, echo("dc01", &id));
    }
    agent.stop().await;
}

#[tokio::test]
async fn a_request_answered_normally_can_be_fetched_by_id() {
    let broker = BrokerBuilder::new().start().await;
    let tenant = broker.create_tenant("contoso").await;
    let agent = EchoAgent::start(&broker, &tenant, "dc01").await;
    let portal = broker.portal(&tenant, Right::Send).await;
    let reply = submit(&portal, "dc01", "r1", None).await.expect("answered");
    // The record is written right after the reply: PENDING until then.
    let fetched = await_outcome(&portal, "r1").await.expect("fetchable");
    assert_eq!(
        (fetched.agent_id, fetched.envelope),
        (reply.agent_id, reply.envelope)
    );
    assert_eq!(
        portal
            .outcome("never-sent")
            .await
            .map(|_| ())
            .unwrap_err()
            .reason(),
        Some(Reason::OutcomeNotFound)
    );
    agent.stop().await;
}

#[tokio::test]
async fn after_a_no_ack_timeout_the_answered_retry_resolves_the_pending_outcome() {
    let broker = BrokerBuilder::new()
        .config("heartbeat_interval = \"1s\"")
        .config("keepalive_timeout = \"1s\"")
        .config("ack_timeout = \"1s\"")
        .start()
        .await;
    let tenant = broker.create_tenant("contoso").await;
    let proxy = FaultProxy::start(broker.grpc_addr.parse().expect("addr")).await;
    let portal = broker.portal(&tenant, Right::Send).await;
    let dead = EchoAgent::builder(&broker, &tenant, "dead")
        .broker_url(&proxy.https_url())
        .start()
        .await;
    // Its network path dies silently: the request is queued to it, no Ack
    // comes, the broker closes the session and has nowhere else to go.
    proxy.black_hole_new(true);
    proxy.black_hole();
    let err = submit(&portal, "dead", "r1", Some(Duration::from_secs(10)))
        .await
        .expect_err("no agent could answer");
    assert_eq!(err.reason(), Some(Reason::OutcomeUnknown), "{err}");
    match &err {
        ClientError::Relay { metadata, .. } => assert_eq!(
            metadata.get("acknowledged").map(String::as_str),
            Some("false")
        ),
        other => panic!("{other:?}"),
    }
    // PENDING, with what the portal was told: the agent it is awaited
    // from, which never acknowledged it.
    match portal.outcome("r1").await.map(|_| ()).unwrap_err() {
        ClientError::Relay {
            reason: Reason::OutcomePending,
            metadata,
            ..
        } => {
            assert_eq!(metadata.get("agent_id").map(String::as_str), Some("dead"));
            assert_eq!(
                metadata.get("acknowledged").map(String::as_str),
                Some("false")
            );
        }
        other => panic!("{other:?}"),
    };

    // The portal retries the same id; a live agent answers it.
    let alive = EchoAgent::start(&broker, &tenant, "alive").await;
    let reply = submit(&portal, "alive", "r1", Some(Duration::from_secs(10)))
        .await
        .expect("the retry is answered");
    assert_eq!(reply.envelope, echo("alive", "r1"));
    let fetched = await_outcome(&portal, "r1")
        .await
        .expect("PENDING resolves to the retry's answer");
    assert_eq!(fetched.agent_id, "alive");
    assert_eq!(fetched.envelope, echo("alive", "r1"));
    alive.stop().await;
    dead.kill().await;
}

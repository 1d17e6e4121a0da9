//! What operators rely on: the store survives `kill -9`, the health and
//! metrics endpoints tell the truth, shutdown is clean, and no key or token
//! ever reaches a log line.

use std::time::Duration;

use proto::pb::Operation;
use relay_client::Reason;
use sas::{KeySlot, Right};
use tests::{BrokerBuilder, EchoAgent, http, reason};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test]
async fn the_store_keeps_every_tenant_across_kill_9() {
    let mut broker = BrokerBuilder::new().start().await;
    let admin = broker.admin().await;
    let mut tenants = Vec::new();
    for i in 0..5 {
        tenants.push(broker.create_tenant(&format!("tenant-{i}")).await);
    }
    admin
        .set_writeback("tenant-3", false)
        .await
        .expect("disable");
    admin
        .revoke_agent("tenant-4", "old-dc")
        .await
        .expect("revoke");
    let (rotated, _) = admin
        .rotate_key("tenant-2", Right::Send, KeySlot::Secondary)
        .await
        .expect("rotate");

    broker.restart().await; // kill -9, then start on the same data directory

    let admin = broker.admin().await;
    let listed = admin.list_tenants().await.expect("list");
    let names: Vec<_> = listed.iter().map(|t| t.tenant.as_str()).collect();
    assert_eq!(
        names,
        ["tenant-0", "tenant-1", "tenant-2", "tenant-3", "tenant-4"]
    );
    assert!(!listed[3].writeback_enabled);
    assert!(listed[0].writeback_enabled);
    assert_eq!(
        admin
            .list_agents("tenant-4")
            .await
            .expect("agents")
            .revoked_agent_ids,
        vec!["old-dc".to_owned()]
    );
    // The keys survived too: an agent and a portal authenticate with them.
    let _agent = broker.agent_process(&tenants[0], "dc01").start().await;
    let portal = broker.portal(&tenants[0], Right::Send).await;
    assert_eq!(portal.ping(None).await.expect("ping").agent_id, "dc01");
    let rotated_portal = relay_client::portal_client::PortalClient::connect(
        &broker.endpoint(),
        "tenant-2",
        relay_client::credential::Credential::new("tenant-2", Right::Send, rotated),
    )
    .await
    .expect("client");
    assert_eq!(
        reason(rotated_portal.ping(None).await),
        Reason::NoAgentOnline,
        "the rotated key authenticates (and tenant-2 simply has no agent)"
    );
}

#[tokio::test]
async fn health_readiness_and_metrics_answer_as_documented() {
    let broker = BrokerBuilder::new().start().await;
    assert_eq!(http::get(&broker.operator_addr, "/healthz").await.0, 200);
    let (status, body) = http::get(&broker.operator_addr, "/readyz").await;
    assert_eq!((status, body.trim()), (200, "ready"));
    assert_eq!(http::get(&broker.operator_addr, "/nope").await.0, 404);

    // The standard gRPC health service, on the gRPC port.
    let channel = broker.endpoint().connect().await.expect("channel");
    let mut health = HealthClient::new(channel);
    for service in ["", "relay.v1.Relay", "relay.v1.AgentGateway"] {
        let reply = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health check")
            .into_inner();
        assert_eq!(reply.status(), ServingStatus::Serving, "{service:?}");
    }

    let tenant = broker.create_tenant("contoso").await;
    let agent_a = EchoAgent::start(&broker, &tenant, "dc01").await;
    let agent_b = EchoAgent::start(&broker, &tenant, "dc02").await;
    let metrics = broker.metrics().await;
    assert!(
        metrics.contains("relay_agents_connected{tenant=\"contoso\"} 2"),
        "{metrics}"
    );

    let portal = broker.portal(&tenant, Right::Send).await;
    for i in 0..3 {
        portal
            .submit(
                &format!("r{i}"),
                Operation::ResetPassword,
                if i % 2 == 0 { "dc01" } else { "dc02" },
                vec![1],
                None,
            )
            .await
            .expect("submit");
    }
    broker
        .admin()
        .await
        .set_writeback("contoso", false)
        .await
        .expect("disable");
    let _ = portal
        .submit("r9", Operation::ResetPassword, "dc01", vec![1], None)
        .await;
    let metrics = broker.metrics().await;
    assert!(
        metrics
            .contains("relay_requests_total{operation=\"reset_password\",outcome=\"delivered\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("relay_request_duration_seconds_count{operation=\"reset_password\"} 3"),
        "{metrics}"
    );

    agent_a.stop().await;
    agent_b.stop().await;
    // The gauge follows the sessions down; the broker notices the stream end.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = broker.metrics().await;
        if metrics.contains("relay_agents_connected{tenant=\"contoso\"} 0") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gauge never dropped: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sigterm_tells_agents_and_exits_cleanly() {
    let mut broker = BrokerBuilder::new().start().await;
    let tenant = broker.create_tenant("contoso").await;
    let mut agent = broker.agent_process(&tenant, "dc01").start().await;
    let status = broker.terminate().await;
    assert!(status.success(), "exit status {status:?}");
    let gone = agent.expect_line("disconnected").await;
    assert!(gone.contains("SHUTTING_DOWN"), "{gone}");
    assert!(broker.logs().contains("broker stopped"));
}

#[tokio::test]
async fn no_key_or_token_appears_in_any_log_line() {
    let broker = BrokerBuilder::new().rust_log("trace").start().await;
    let tenant = broker.create_tenant("contoso").await;
    let mut agent = broker
        .agent_process(&tenant, "dc01")
        .rust_log("trace")
        .start()
        .await;
    let portal = broker.portal(&tenant, Right::Send).await;
    portal.ping(None).await.expect("ping");
    let _ = portal
        .submit(
            "r1",
            Operation::ResetPassword,
            "dc01",
            b"opaque".to_vec(),
            None,
        )
        .await;
    // Failures log too: a forged key, a wrong right, a rotation.
    let forged = relay_client::portal_client::PortalClient::connect(
        &broker.endpoint(),
        "contoso",
        relay_client::credential::Credential::new(
            "contoso",
            Right::Send,
            tenant.key(Right::Listen, KeySlot::Primary),
        ),
    )
    .await
    .expect("client");
    let _ = forged.ping(None).await;
    let admin = broker.admin().await;
    let (fresh, _) = admin
        .rotate_key("contoso", Right::Listen, KeySlot::Secondary)
        .await
        .expect("rotate");
    agent.stop().await;

    let logs = format!("{}{}", broker.logs(), agent.logs());
    assert!(
        logs.lines().count() > 50,
        "trace logging captured too little to be meaningful"
    );
    let mut secrets = tenant.all_keys_base64();
    secrets.push(broker.operator_key().to_base64().to_string());
    secrets.push(fresh.to_base64().to_string());
    for secret in &secrets {
        // The whole key, and any 16-character run of it.
        assert!(!logs.contains(secret.as_str()), "a key appears in the logs");
        for window in secret.as_bytes().windows(16) {
            let w = std::str::from_utf8(window).expect("base64 is ascii");
            assert!(!logs.contains(w), "part of a key appears in the logs");
        }
    }
    for marker in ["SharedAccessSignature", "sig="] {
        assert!(!logs.contains(marker), "a token appears in the logs");
    }
    // Debug output of the objects that hold secrets.
    let shown = format!(
        "{:?} {:?} {:?}",
        tenant.keys,
        tenant.credential(Right::Send),
        tenant.credential(Right::Send).mint(Duration::from_secs(60))
    );
    for secret in &secrets {
        assert!(!shown.contains(secret.as_str()), "Debug output shows a key");
    }
    assert!(!shown.contains("sig="), "Debug output shows a token");
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let broker = BrokerBuilder::new()
        .config("log_format = \"json\"")
        .start()
        .await;
    let tenant = broker.create_tenant("contoso").await;
    let _agent = EchoAgent::start(&broker, &tenant, "dc01").await;
    let logs = broker.logs();
    let mut sessions = 0;
    for line in logs.lines() {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(value.get("level").is_some(), "{line}");
        if value["message"] == "agent session accepted" {
            // The session span's fields travel with the event.
            assert_eq!(value["span"]["tenant"], "contoso", "{line}");
            assert_eq!(value["span"]["agent_id"], "dc01", "{line}");
            sessions += 1;
        }
    }
    assert_eq!(sessions, 1, "{logs}");
}

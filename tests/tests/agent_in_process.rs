//! The fully wired agent started in-process with `writeback_agent::start`,
//! as the binary starts it: onboarded, with an embedded forest, behind a
//! real broker. It must connect, answer a sealed request from the forest,
//! and stop through its cancellation token, leaving the service's start
//! and stop in its event log.

use std::path::Path;
use std::time::Duration;

use envelope::body::outcome;
use envelope::{Anchor, KeyPair, RequestBody};
use proto::pb::Operation;
use relay_client::enrollment::EnrollmentBundle;
use relay_client::sealed::SealedPortal;
use sas::{KeySlot, Right};
use tests::agent_toml::AgentToml;
use tests::sealed::SETUP_PASSWORD;
use tests::{BrokerBuilder, write_key};
use tokio_util::sync::CancellationToken;
use writeback_agent::eventlog::ids;
use writeback_agent::{AgentConfig, AgentEvent};

const ADA_ANCHOR: &str = "LkwaO199ik6bbB0uP0BRYg==";

#[tokio::test]
async fn start_serves_requests_and_the_token_stops_it() {
    let broker = BrokerBuilder::new().start().await;
    let tenant = broker.create_tenant("contoso").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let listen = write_key(
        d,
        "listen.key",
        &tenant.key(Right::Listen, KeySlot::Primary),
    );
    std::fs::write(d.join("setup-password"), SETUP_PASSWORD).expect("password file");
    let forest = d.join("contoso.json");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/forests/contoso.json"),
        &forest,
    )
    .expect("copy sample forest");
    let text = AgentToml::new(&broker.url(), &broker.ca_file, "contoso", "dc01", &listen)
        .path("key_file", &d.join("agent.keys"))
        .path("setup_password_file", &d.join("setup-password"))
        .path("state_dir", &d.join("state"))
        .section(format!(
            "[[forests]]\nname = \"contoso\"\nkind = \"embedded\"\npath = {forest:?}\n"
        ))
        .build();
    let config = AgentConfig::from_toml(&text).expect("agent config");

    let portal_key = KeyPair::generate(&mut envelope::os_rng());
    let bundle = EnrollmentBundle::new("contoso", std::slice::from_ref(&portal_key.public));
    let report = writeback_agent::onboarding::init(&config, &bundle, SETUP_PASSWORD)
        .await
        .expect("init");

    let shutdown = CancellationToken::new();
    let mut agent = writeback_agent::start(config, shutdown.clone())
        .await
        .expect("start");
    let mut events = agent.events();
    let connected = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match events.recv().await.expect("events") {
                AgentEvent::Connected { .. } => return,
                AgentEvent::Refused { reason } => panic!("refused: {reason}"),
                _ => {}
            }
        }
    });
    connected.await.expect("the agent connects");

    let portal = SealedPortal::new(
        broker.portal(&tenant, Right::Send).await,
        portal_key,
        vec![report.fingerprint],
    );
    let reply = portal
        .submit(
            "in-process-1",
            Operation::GetPasswordPolicy,
            &RequestBody::without_passwords(Anchor::SourceAnchor(ADA_ANCHOR.into())),
            None,
        )
        .await
        .expect("the agent answers")
        .reply;
    assert_eq!(reply.outcome, outcome::SUCCESS, "{reply:?}");
    assert!(
        reply
            .details
            .iter()
            .any(|(k, v)| k == "source" && v == "Default Domain Policy"),
        "{reply:?}"
    );

    let log = d.join("state/events/events.jsonl");
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(20), agent.wait())
        .await
        .expect("the agent stops")
        .expect("cleanly");
    let ids: Vec<u64> = std::fs::read_to_string(&log)
        .expect("event log")
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|e| e["event_id"].as_u64())
        .collect();
    for id in [ids::SERVICE_STARTED, ids::SERVICE_STOPPED] {
        assert!(ids.contains(&u64::from(id)), "{id} missing from {ids:?}");
    }
}

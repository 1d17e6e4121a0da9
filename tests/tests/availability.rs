//! Availability: several active agents, two-stage delivery, half-open
//! sessions, broker crashes, graceful drain, proxies. Real broker process,
//! real TLS on loopback, the agent library's real session loop.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use proto::pb::Operation;
use relay_client::ClientError;
use relay_client::Reason;
use relay_client::portal_client::{PortalClient, Submitted};
use sas::Right;
use tests::connect_proxy::ConnectProxy;
use tests::faults::FaultProxy;
use tests::{BrokerBuilder, BrokerProcess, EchoAgent, Tenant, await_outcome};
use tokio::sync::mpsc;

/// Fast liveness for tests: keepalive PINGs every second, one second to
/// answer, and one second for an Ack.
const FAST_BROKER: [&str; 3] = [
    "heartbeat_interval = \"1s\"",
    "keepalive_timeout = \"1s\"",
    "ack_timeout = \"1s\"",
];
const FAST_AGENT: [&str; 2] = ["keepalive_interval = \"1s\"", "keepalive_timeout = \"1s\""];

async fn fast_broker() -> BrokerProcess {
    FAST_BROKER
        .iter()
        .fold(BrokerBuilder::new(), |b, line| b.config(*line))
        .start()
        .await
}

fn fast_agent(
    broker: &BrokerProcess,
    tenant: &Tenant,
    id: &str,
) -> tests::agents::EchoAgentBuilder {
    FAST_AGENT
        .iter()
        .fold(EchoAgent::builder(broker, tenant, id), |b, line| {
            b.config(*line)
        })
}

/// A fast broker with tenant "contoso", a fault proxy in front of it, and
/// the portal; the agent behind the proxy is `agent` (not yet started).
struct BehindProxy {
    broker: BrokerProcess,
    tenant: Tenant,
    proxy: FaultProxy,
    portal: PortalClient,
}

impl BehindProxy {
    async fn start() -> BehindProxy {
        let broker = fast_broker().await;
        let tenant = broker.create_tenant("contoso").await;
        let proxy = FaultProxy::start(broker.grpc_addr.parse().expect("addr")).await;
        let portal = broker.portal(&tenant, Right::Send).await;
        BehindProxy {
            broker,
            tenant,
            proxy,
            portal,
        }
    }

    fn agent(&self, id: &str) -> tests::agents::EchoAgentBuilder {
        fast_agent(&self.broker, &self.tenant, id).broker_url(&self.proxy.https_url())
    }
}

type Outcome = (String, Result<Submitted, ClientError>);

/// Submits `n` requests `<prefix>-<i>` with payload `<prefix>-<i>`,
/// `concurrency` at a time, request i addressed to `agents[i % len]` and, if
/// that one did not get it, to the next (as a portal re-seals); results
/// arrive on the channel as they end.
fn load(
    portal: &PortalClient,
    prefix: &str,
    n: usize,
    concurrency: usize,
    agents: &'static [&'static str],
) -> mpsc::UnboundedReceiver<Outcome> {
    let (portal, prefix) = (portal.clone(), prefix.to_owned());
    let mut ended = tests::load::load(n, concurrency, move |i| {
        let (portal, id) = (portal.clone(), format!("{prefix}-{i}"));
        async move {
            let result = tests::submit_any(
                &portal,
                &id,
                Operation::ResetPassword,
                id.clone().into_bytes(),
                agents,
                i,
                Some(Duration::from_secs(20)),
            )
            .await;
            (id, result)
        }
    });
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(e) = ended.recv().await {
            if tx.send(e.result).is_err() {
                break;
            }
        }
    });
    rx
}

/// Submits `id` (payload `id`) on its own task, 20 s deadline.
fn spawn_submit(
    portal: &PortalClient,
    id: &str,
    agent: &str,
) -> tokio::task::JoinHandle<Result<Submitted, ClientError>> {
    let (portal, id, agent) = (portal.clone(), id.to_owned(), agent.to_owned());
    tokio::spawn(async move {
        portal
            .submit(
                &id,
                Operation::ResetPassword,
                &agent,
                id.clone().into_bytes(),
                Some(Duration::from_secs(20)),
            )
            .await
    })
}

/// The agent that answered, checked against the echo: `<agent>|<payload>`.
fn answered_by(id: &str, reply: &Submitted) -> String {
    let text = String::from_utf8(reply.envelope.clone()).expect("echo is text");
    assert_eq!(
        text,
        format!("{}|{id}", reply.agent_id),
        "the answer belongs to {id}"
    );
    reply.agent_id.clone()
}

/// Waits until `check` holds, asking again every 50 ms (for broker state
/// that has no event to await), at most `limit`.
async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

async fn sessions_of(portal: &PortalClient) -> Vec<String> {
    portal
        .configuration()
        .await
        .expect("configuration")
        .agents_online
        .into_iter()
        .map(|a| a.session_id)
        .collect()
}

#[tokio::test]
async fn three_agents_share_the_load_and_a_killed_one_loses_nothing() {
    let broker = fast_broker().await;
    let tenant = broker.create_tenant("contoso").await;
    let delay = Duration::from_millis(40);
    let a = fast_agent(&broker, &tenant, "a").delay(delay).start().await;
    let b = fast_agent(&broker, &tenant, "b").delay(delay).start().await;
    let c = fast_agent(&broker, &tenant, "c").delay(delay).start().await;
    let portal = broker.portal(&tenant, Right::Send).await;

    // Under load, every agent gets work.
    let mut rx = load(&portal, "warm", 60, 9, &["a", "b", "c"]);
    let mut per_agent: HashMap<String, usize> = HashMap::new();
    while let Some((id, result)) = rx.recv().await {
        *per_agent
            .entry(answered_by(&id, &result.expect("warm-up request")))
            .or_default() += 1;
    }
    assert_eq!(
        per_agent.len(),
        3,
        "all three agents answered: {per_agent:?}"
    );
    assert!(
        per_agent.values().all(|&n| n >= 5),
        "the load is shared: {per_agent:?}"
    );

    // Kill one agent mid-load.
    let mut rx = load(&portal, "r", 120, 9, &["a", "b", "c"]);
    let mut results = Vec::new();
    let mut c = Some(c);
    let mut c_done = Vec::new();
    while let Some(outcome) = rx.recv().await {
        results.push(outcome);
        if results.len() == 30
            && let Some(agent) = c.take()
        {
            c_done = agent.kill().await;
        }
    }
    assert_eq!(results.len(), 120, "every request ended");
    let seen: HashMap<&str, HashSet<String>> =
        [("a", a.completed()), ("b", b.completed()), ("c", c_done)]
            .into_iter()
            .map(|(k, v)| (k, v.into_iter().collect()))
            .collect();
    let mut unknown = 0;
    for (id, result) in &results {
        match result {
            Ok(reply) => {
                let agent = answered_by(id, reply);
                assert!(seen[agent.as_str()].contains(id));
            }
            // Delivered to c (acknowledged) when it died: never sent again.
            Err(e) if e.reason() == Some(Reason::OutcomeUnknown) => {
                assert!(
                    !seen["a"].contains(id) && !seen["b"].contains(id),
                    "{id} was given to another agent after c had it"
                );
                unknown += 1;
            }
            Err(e) => panic!("{id}: {e}"),
        }
        // Never applied by two agents. (A killed agent applies nothing it
        // had not finished, like a process that died.)
        let handlers = seen.values().filter(|s| s.contains(id)).count();
        assert!(handlers <= 1, "{id} was applied by {handlers} agents");
    }
    // c had at most its requests in flight when it died.
    assert!(unknown <= 9, "{unknown} unknown outcomes");
    // Nothing lost, nothing doubled: each request ended exactly once.
    let ids: HashSet<&str> = results.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids.len(), 120);
    // a and b took over: the last requests, sent after the kill, are theirs.
    let tail = &results[results.len() - 30..];
    assert!(
        tail.iter()
            .all(|(_, r)| r.as_ref().is_ok_and(|s| s.agent_id != "c")),
        "a and b answer everything after the kill"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_request_its_agent_never_acknowledged_is_not_rerouted_but_resealed_by_the_portal() {
    let BehindProxy {
        broker,
        tenant,
        proxy,
        portal,
    } = BehindProxy::start().await;
    // The agent behind the proxy is the only one at first.
    let dead = fast_agent(&broker, &tenant, "behind-proxy")
        .broker_url(&proxy.https_url())
        .start()
        .await;
    assert_eq!(
        portal.ping(None).await.expect("ping").agent_id,
        "behind-proxy"
    );
    let alive = fast_agent(&broker, &tenant, "alive").start().await;
    // Its network path dies silently; the broker still believes in it.
    proxy.black_hole_new(true);
    proxy.black_hole();
    // Addressed to the black-holed agent: no Ack within the ack timeout, the
    // session is closed, and the broker gives the request to no other agent
    // (the envelope names that one): the outcome is unknown, unacknowledged.
    let err = portal
        .submit(
            "r0",
            Operation::ResetPassword,
            "behind-proxy",
            b"r0".to_vec(),
            Some(Duration::from_secs(10)),
        )
        .await
        .expect_err("the addressed agent never answers");
    assert_eq!(err.reason(), Some(Reason::OutcomeUnknown), "{err}");
    match &err {
        ClientError::Relay { metadata, .. } => {
            assert_eq!(metadata["acknowledged"], "false");
            assert_eq!(metadata["agent_id"], "behind-proxy");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        alive.request_ids().is_empty(),
        "not re-routed to another agent"
    );
    // The portal seals it again to another agent (same request id): the
    // live agent answers it, and everything after.
    let mut answered = HashMap::<String, usize>::new();
    for i in 0..6 {
        let id = format!("r{i}");
        let reply = tests::submit_any(
            &portal,
            &id,
            Operation::ResetPassword,
            id.clone().into_bytes(),
            &["behind-proxy", "alive"],
            0,
            Some(Duration::from_secs(10)),
        )
        .await
        .expect("answered by the live agent");
        *answered.entry(answered_by(&id, &reply)).or_default() += 1;
    }
    assert_eq!(answered.get("alive"), Some(&6), "{answered:?}");
    assert!(
        dead.request_ids().is_empty(),
        "nothing reached the black-holed agent"
    );
    alive.stop().await;
    dead.kill().await;
}

#[tokio::test]
async fn a_black_holed_session_is_dropped_and_replaced_on_both_sides() {
    let setup = BehindProxy::start().await;
    let mut agent = setup.agent("dc01").start().await;
    // The broker process lives as long as `_broker`.
    let BehindProxy {
        broker: _broker,
        proxy,
        portal,
        ..
    } = setup;
    let old = sessions_of(&portal).await;
    assert_eq!(old.len(), 1);

    // Packets vanish, nothing is closed; reconnecting is impossible too.
    let t0 = Instant::now();
    proxy.black_hole_new(true);
    proxy.black_hole();
    // Bound for these settings: PING interval + timeout (2 s) or three
    // missed heartbeats (3 s), plus scheduling slack. With the defaults
    // (20 s + 20 s) the same logic gives 40 s: within a minute.
    let bound = Duration::from_secs(8);
    eventually(bound, "the broker drops the dead session", || {
        let portal = portal.clone();
        async move { sessions_of(&portal).await.is_empty() }
    })
    .await;
    let reason = agent.disconnected().await;
    assert!(t0.elapsed() < bound, "the agent noticed too late: {reason}");

    // The network heals: the agent is back by itself with a new session
    // (after its attempt into the black hole times out).
    proxy.black_hole_new(false);
    let new_session = agent.connected().await;
    assert!(!old.contains(&new_session));
    assert_eq!(sessions_of(&portal).await, vec![new_session]);
    assert_eq!(portal.ping(None).await.expect("ping").agent_id, "dc01");
    agent.stop().await;
}

#[tokio::test]
async fn an_acknowledged_request_whose_session_dies_ends_unknown_then_its_outcome_is_fetched() {
    let setup = BehindProxy::start().await;
    let mut agent = setup
        .agent("dc01")
        .delay(Duration::from_secs(1))
        .start()
        .await;
    // The broker process lives as long as `_broker`.
    let BehindProxy {
        broker: _broker,
        proxy,
        portal,
        ..
    } = setup;
    let call = spawn_submit(&portal, "r1", "dc01");
    agent.wait_for_request("r1").await;
    // The agent queued its Ack before starting work; a ping over the same
    // session comes back behind it, so the broker has the Ack now.
    portal.ping(None).await.expect("ping");
    let started = Instant::now();
    proxy.cut();
    let err = call
        .await
        .expect("join")
        .expect_err("the answer cannot come back");
    assert_eq!(err.reason(), Some(Reason::OutcomeUnknown), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "at once, not at the deadline"
    );
    match &err {
        ClientError::Relay { metadata, .. } => {
            assert_eq!(metadata.get("request_id").map(String::as_str), Some("r1"));
            assert_eq!(
                metadata.get("acknowledged").map(String::as_str),
                Some("true")
            );
        }
        other => panic!("{other:?}"),
    }
    // The agent finishes, reconnects by itself, posts its answer: the
    // portal gets the real result by id.
    agent.connected().await;
    let late = await_outcome(&portal, "r1")
        .await
        .expect("the agent's real answer");
    assert_eq!(late.agent_id, "dc01");
    assert_eq!(late.envelope, b"dc01|r1");
    assert_eq!(agent.request_ids(), vec!["r1".to_owned()], "applied once");
    agent.stop().await;
}

#[tokio::test]
async fn after_kill_9_of_the_broker_agents_return_and_every_request_has_a_definite_status() {
    let mut broker = fast_broker().await;
    let tenant = broker.create_tenant("contoso").await;
    let delay = Duration::from_millis(300);
    let mut a = fast_agent(&broker, &tenant, "a").delay(delay).start().await;
    let mut b = fast_agent(&broker, &tenant, "b").delay(delay).start().await;
    let portal = broker.portal(&tenant, Right::Send).await;

    let mut rx = load(&portal, "r", 40, 8, &["a", "b"]);
    let mut results = Vec::new();
    while let Some(outcome) = rx.recv().await {
        results.push(outcome);
        if results.len() == 10 {
            broker.kill9().await;
        }
    }
    assert_eq!(results.len(), 40);
    // Each request: answered, OUTCOME_UNKNOWN naming it, or refused before
    // it left the portal (the broker was gone): nothing else, nothing lost.
    let mut unknown = Vec::new();
    for (id, result) in &results {
        match result {
            Ok(reply) => {
                answered_by(id, reply);
            }
            Err(e) if e.reason() == Some(Reason::OutcomeUnknown) => unknown.push(id.clone()),
            Err(ClientError::Rpc(status)) if status.code() == tonic::Code::Unavailable => {}
            Err(e) => panic!("{id}: not a definite status: {e:?}"),
        }
    }
    assert!(
        !unknown.is_empty(),
        "some requests were in flight at the kill"
    );

    broker.restart_in_place().await;
    // Nobody touches the agents: they come back by themselves.
    a.connected().await;
    b.connected().await;
    let portal = broker.portal(&tenant, Right::Send).await;
    // The store lost nothing: the same tenant and credentials work.
    assert!(
        broker
            .admin()
            .await
            .list_tenants()
            .await
            .expect("tenants")
            .iter()
            .any(|t| t.tenant == "contoso")
    );
    portal.ping(None).await.expect("ping after restart");
    // Every unknown outcome is resolved: the agents post the answers the
    // crash swallowed, and what no agent ever received is NOT_FOUND.
    let handled: HashSet<String> = a.request_ids().into_iter().chain(b.request_ids()).collect();
    for id in &unknown {
        if handled.contains(id) {
            // Not found until the agent, reconnected, has posted it.
            let started = Instant::now();
            let late = loop {
                match await_outcome(&portal, id).await {
                    Err(e)
                        if e.reason() == Some(Reason::OutcomeNotFound)
                            && started.elapsed() < Duration::from_secs(30) =>
                    {
                        tokio::time::sleep(Duration::from_millis(50)).await
                    }
                    other => break other,
                }
            };
            answered_by(id, &late.expect("the agent's answer"));
        } else {
            // Never relayed: NOT_FOUND. Or written to a session the crash
            // cut before any agent acknowledged it: its record is awaited,
            // unacknowledged (PROTOCOL.md, GetOutcome), which no agent
            // can answer; the portal treats it as unknown and reseals.
            match portal.outcome(id).await.map(|_| ()).unwrap_err() {
                e if e.reason() == Some(Reason::OutcomeNotFound) => {}
                ClientError::Relay {
                    reason: Reason::OutcomePending,
                    metadata,
                    ..
                } => assert_eq!(
                    metadata.get("acknowledged").map(String::as_str),
                    Some("false"),
                    "{id} never reached an agent, yet is pending acknowledged"
                ),
                other => panic!("{id} never reached an agent: {other:?}"),
            }
        }
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn sigterm_drains_the_broker_without_failing_a_request_in_flight() {
    let mut broker = fast_broker().await;
    let tenant = broker.create_tenant("contoso").await;
    let a = fast_agent(&broker, &tenant, "a")
        .delay(Duration::from_secs(1))
        .start()
        .await;
    let b = fast_agent(&broker, &tenant, "b")
        .delay(Duration::from_secs(1))
        .start()
        .await;
    let portal = broker.portal(&tenant, Right::Send).await;
    let calls: Vec<_> = (0..6)
        .map(|i| {
            let portal = portal.clone();
            tokio::spawn(async move {
                let id = format!("r{i}");
                let r = portal
                    .submit(
                        &id,
                        Operation::ResetPassword,
                        if i % 2 == 0 { "a" } else { "b" },
                        id.clone().into_bytes(),
                        Some(Duration::from_secs(20)),
                    )
                    .await;
                (id, r)
            })
        })
        .collect();
    for i in 0..6 {
        let id = format!("r{i}");
        let (a_has, b_has) = (a.request_ids().contains(&id), b.request_ids().contains(&id));
        if !a_has && !b_has {
            tokio::select! {
                _ = a.wait_for_request(&id) => {}
                _ = b.wait_for_request(&id) => {}
            }
        }
    }
    let status = broker.terminate().await;
    assert!(status.success(), "the broker exits cleanly: {status}");
    for call in calls {
        let (id, result) = call.await.expect("join");
        answered_by(
            &id,
            &result.unwrap_or_else(|e| panic!("{id} failed in the drain: {e}")),
        );
    }
    let logs = broker.logs();
    assert!(logs.contains("draining"), "{logs}");
    a.kill().await;
    b.kill().await;
}

#[tokio::test]
async fn a_stopping_agent_finishes_its_requests_and_gets_no_new_ones() {
    let broker = fast_broker().await;
    let tenant = broker.create_tenant("contoso").await;
    let slow = fast_agent(&broker, &tenant, "slow")
        .delay(Duration::from_secs(1))
        .start()
        .await;
    let portal = broker.portal(&tenant, Right::Send).await;
    let first = spawn_submit(&portal, "r1", "slow");
    slow.wait_for_request("r1").await;
    let other = fast_agent(&broker, &tenant, "other").start().await;
    let stopping = tokio::spawn(slow.stop());
    // While "slow" drains, new work goes to "other".
    eventually(
        Duration::from_secs(5),
        "the draining agent takes no new work",
        || {
            let portal = portal.clone();
            async move {
                // Addressed to the draining agent first: the broker says it
                // is not there, and the portal turns to the other.
                tests::submit_any(
                    &portal,
                    "probe",
                    Operation::ResetPassword,
                    b"probe".to_vec(),
                    &["slow", "other"],
                    0,
                    None,
                )
                .await
                .is_ok_and(|r| r.agent_id == "other")
            }
        },
    )
    .await;
    let reply = first
        .await
        .expect("join")
        .expect("r1 finished during the drain");
    assert_eq!(answered_by("r1", &reply), "slow");
    stopping.await.expect("the agent stopped");
    other.stop().await;
}

#[tokio::test]
async fn the_agent_works_through_an_http_connect_proxy_and_a_list_of_brokers() {
    let broker = BrokerBuilder::new().start().await;
    let tenant = broker.create_tenant("contoso").await;
    let proxy = ConnectProxy::start(Some(("svc-writeback".into(), "proxy-pass-123".into()))).await;
    let dir = tempfile::tempdir().expect("dir");
    let password_file = dir.path().join("proxy.password");
    std::fs::write(&password_file, "proxy-pass-123\n").expect("password file");
    // The first address is dead: the agent moves on to the next one.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let agent = EchoAgent::builder(&broker, &tenant, "dc01")
        .broker_toml(format!("[\"https://{dead}\", {:?}]", broker.url()))
        .config("[proxy]")
        .config(format!("url = {:?}", proxy.url()))
        .config("username = \"svc-writeback\"")
        .config(format!("password_file = {password_file:?}"))
        .start()
        .await;
    let portal = broker.portal(&tenant, Right::Send).await;
    let reply = portal
        .submit("r1", Operation::ResetPassword, "dc01", b"r1".to_vec(), None)
        .await
        .expect("through the proxy");
    answered_by("r1", &reply);
    // The first address refuses connections, so reaching the broker at all
    // means the agent moved on to the second.
    let tunnels = proxy.tunnels();
    assert!(tunnels.contains(&broker.grpc_addr), "{tunnels:?}");
    agent.stop().await;
}

//! Issue 19, points 1 and 3: a node acts on its copy of the tenants only
//! while it can confirm with a JetStream quorum that the copy is current
//! (`[cluster] state_lease`, broker/src/lease.rs). Cut off, it refuses the
//! tenants' requests with STATE_UNCONFIRMED within the lease and is not
//! ready; back, it catches up before it serves, so a revoke made meanwhile
//! is in force the moment it serves again.
//!
//! Without network namespaces: the minority side of a split is made by
//! stopping (SIGSTOP) the NATS servers a node is not connected to, a node
//! cut off alone by black-holing its NATS proxy, NATS down by stopping it.
//!
//! Needs `nats-server` (scripts/nats/install).

use std::time::{Duration, Instant};

use proto::pb::Operation;
use relay_client::Reason;
use relay_client::portal_client::PortalClient;
use tests::cluster::{BrokerCluster, BrokerClusterBuilder};
use tests::nats::NatsCluster;

/// The lease the tests give their nodes: short, to keep them quick.
const LEASE: Duration = Duration::from_secs(3);
/// A lapsed lease is noticed by the next request; the last confirmation
/// was asked at most a check (200 ms) and its timeout (500 ms) before the
/// cut.
const LEASE_SLACK: Duration = Duration::from_secs(1);
/// A stream leader left alone on the minority side still answers; the
/// node stops counting a replica the leader has not heard from for 3 s
/// (`PEER_SILENCE` in broker/src/cluster/kv/watch.rs).
const LEADER_NOTICES: Duration = Duration::from_secs(4);
/// How long a node may take to be ready and serving again after the heal.
const HEAL: Duration = Duration::from_secs(30);

fn builder(nodes: usize) -> BrokerClusterBuilder {
    BrokerCluster::builder(nodes)
        .fast_liveness()
        .cluster_config(format!("state_lease = \"{}s\"", LEASE.as_secs()))
}

fn signal(nats: &NatsCluster, i: usize, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &nats.pid(i).to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {signal} NATS node {i}");
}

/// Which NATS node broker node `name` is connected to.
async fn nats_of(nats: &NatsCluster, name: &str) -> usize {
    let wanted = format!("relay-broker {name}");
    for i in 0..nats.len() {
        let connz = nats.monitor(i, "/connz").await;
        let here = connz["connections"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["name"].as_str() == Some(wanted.as_str()));
        if here {
            return i;
        }
    }
    panic!("broker node {name} is connected to no NATS node");
}

async fn readyz(cluster: &BrokerCluster, i: usize) -> (u16, String) {
    tests::http::get(&cluster.node(i).operator_addr, "/readyz").await
}

/// Submits to `agent_id` through `portal` until it is refused with
/// STATE_UNCONFIRMED; every earlier attempt must have been answered.
/// How long after `since` the refusal came, and how many were answered.
async fn until_unconfirmed(
    portal: &PortalClient,
    agent_id: &str,
    since: Instant,
    limit: Duration,
) -> (Duration, usize) {
    let mut answered = 0;
    for attempt in 0.. {
        let id = format!("until-unconfirmed-{attempt}");
        let call = portal.submit(
            &id,
            Operation::ResetPassword,
            agent_id,
            id.as_bytes().to_vec(),
            Some(Duration::from_secs(2)),
        );
        match call.await {
            Ok(_) => answered += 1,
            Err(e) if e.reason() == Some(Reason::StateUnconfirmed) => {
                let message = e.to_string();
                assert!(message.contains("beyond its lease of 3s"), "{message}");
                return (since.elapsed(), answered);
            }
            Err(e) => panic!("{id}: {e}"),
        }
        assert!(
            since.elapsed() < limit,
            "still relayed {:?} after the cut ({answered} answered)",
            since.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    unreachable!()
}

/// The minority side of a split: the node's NATS server runs, its two
/// peers are stopped. Core NATS still works there, JetStream has no
/// quorum: the node refuses within its lease (plus, at worst, the time a
/// lone stream leader takes to notice), says why on /readyz, and serves
/// again once its peers are back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_jetstream_quorum_refuses_within_its_lease() {
    let cluster = builder(1).start().await;
    let tenant = cluster.create_tenant("contoso").await;
    let on_a = cluster.fast_echo_agent(0, &tenant, "dc01").start().await;
    cluster.await_routable(0, &tenant).await;
    let portal = cluster.portal(0, &tenant).await;
    assert_eq!(readyz(&cluster, 0).await.0, 200);

    let kept = nats_of(&cluster.nats, "a").await;
    let stopped: Vec<usize> = (0..cluster.nats.len()).filter(|&i| i != kept).collect();
    for &i in &stopped {
        signal(&cluster.nats, i, "-STOP");
    }
    let cut = Instant::now();
    let (took, answered) =
        until_unconfirmed(&portal, "dc01", cut, LEASE + LEASE_SLACK + LEADER_NOTICES).await;
    eprintln!("minority side: {answered} relayed, then STATE_UNCONFIRMED {took:?} after the cut");
    let (status, body) = readyz(&cluster, 0).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("tenants unconfirmed: "), "{body}");
    let confirmed = |text: &str| {
        tests::cluster::metric(
            text,
            "relay_cluster_tenants_confirmed",
            &[("node", cluster.name(0))],
        )
    };
    let text = cluster.metrics(0).await;
    assert_eq!(confirmed(&text), 0.0, "{text}");
    // Pings and the configuration act on the same copy.
    let err = portal
        .ping(Some(Duration::from_secs(2)))
        .await
        .expect_err("ping refused");
    assert_eq!(err.reason(), Some(Reason::StateUnconfirmed), "{err}");
    let err = portal
        .configuration()
        .await
        .expect_err("configuration refused");
    assert_eq!(err.reason(), Some(Reason::StateUnconfirmed), "{err}");

    for &i in &stopped {
        signal(&cluster.nats, i, "-CONT");
    }
    let healed = Instant::now();
    let ready = cluster.await_readyz(0, 200, HEAL).await;
    loop {
        match portal
            .submit(
                "after",
                Operation::ResetPassword,
                "dc01",
                b"after".to_vec(),
                Some(Duration::from_secs(2)),
            )
            .await
        {
            Ok(_) => break,
            Err(e) if e.reason() == Some(Reason::StateUnconfirmed) => {}
            Err(e) => panic!("after the heal: {e}"),
        }
        assert!(healed.elapsed() < HEAL, "still refused after the heal");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "healed: ready {ready:?}, serving {:?} later",
        healed.elapsed()
    );
    let text = cluster.metrics(0).await;
    assert_eq!(confirmed(&text), 1.0, "{text}");
    on_a.stop().await;
}

/// A node cut off alone (its NATS proxy black-holed; the other node keeps
/// NATS): an agent revoked through the other node serves through the
/// cut-off one for at most the lease, and never again once that node is
/// back: it catches up (and closes the revoked session) before it relays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_made_while_a_node_was_cut_off_is_enforced_before_it_serves_again() {
    let cluster = builder(2)
        .nats_nodes(1)
        .nats_through_proxies()
        .start()
        .await;
    let tenant = cluster.create_tenant("contoso").await;
    let mut revoked = cluster.fast_echo_agent(1, &tenant, "revoked").start().await;
    let kept = cluster.fast_echo_agent(1, &tenant, "kept").start().await;
    cluster.await_agent_serving(&tenant, "revoked").await;
    cluster.await_agent_serving(&tenant, "kept").await;
    let portal_b = cluster.portal(1, &tenant).await;
    let admin_a = cluster.node(0).admin().await;

    let proxy = &cluster.nats_proxies(1)[0];
    proxy.black_hole_new(true);
    proxy.black_hole();
    let cut = Instant::now();
    let on_a = admin_a
        .revoke_agent("contoso", "revoked")
        .await
        .expect("revoke through a");
    assert!(!on_a, "the session is on b");
    let revoked_at = Instant::now();
    let (took, answered) =
        until_unconfirmed(&portal_b, "revoked", revoked_at, LEASE + LEASE_SLACK).await;
    eprintln!(
        "cut off: the revoked agent served {answered} more, refused {took:?} after the revoke ({:?} after the cut)",
        cut.elapsed()
    );
    assert_eq!(readyz(&cluster, 1).await.0, 503);
    // The agent that was not revoked is not served either: b knows nothing.
    let err = portal_b
        .submit(
            "kept-cut",
            Operation::ResetPassword,
            "kept",
            b"kept-cut".to_vec(),
            Some(Duration::from_secs(2)),
        )
        .await
        .expect_err("b refuses every tenant");
    assert_eq!(err.reason(), Some(Reason::StateUnconfirmed), "{err}");

    // Back: nothing reaches the revoked agent, from the first moment on.
    // Until b has caught up it refuses (STATE_UNCONFIRMED); then its
    // session is closed and the request is forwarded, in this harness into
    // b's old black-holed NATS connection, which the server still counts
    // as subscribed (OUTCOME_UNKNOWN, the documented "vanished node" case):
    // what matters is what the agent received, checked below.
    proxy.black_hole_new(false);
    let healed = Instant::now();
    let mut refused = 0;
    while readyz(&cluster, 1).await.0 != 200 {
        let id = format!("revoked-after-{}", healed.elapsed().as_millis());
        match portal_b
            .submit(
                &id,
                Operation::ResetPassword,
                "revoked",
                id.as_bytes().to_vec(),
                Some(Duration::from_millis(500)),
            )
            .await
        {
            Ok(reply) => panic!("the revoked agent served {id}: {reply:?}"),
            Err(e) if e.reason() == Some(Reason::StateUnconfirmed) => refused += 1,
            Err(e) => eprintln!("{id}: {e}"),
        }
        assert!(healed.elapsed() < HEAL, "b did not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "b ready {:?} after the heal; {refused} refused meanwhile",
        healed.elapsed()
    );
    let reason = revoked.disconnected().await;
    assert!(reason.to_lowercase().contains("revoked"), "{reason}");
    let seen: Vec<String> = revoked
        .request_ids()
        .into_iter()
        .filter(|id| id.starts_with("revoked-after"))
        .collect();
    assert!(seen.is_empty(), "the revoked agent received {seen:?}");
    let reply = portal_b
        .submit(
            "kept-after",
            Operation::ResetPassword,
            "kept",
            b"kept-after".to_vec(),
            Some(Duration::from_secs(2)),
        )
        .await
        .expect("b serves the agent that was not revoked");
    assert_eq!(reply.agent_id, "kept");
    kept.stop().await;
}

/// NATS down entirely: every node refuses within its lease instead of
/// serving from memory (the trade-off), and serves again once NATS is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nats_down_every_node_refuses_within_its_lease() {
    let cluster = builder(2).nats_nodes(1).start().await;
    let tenant = cluster.create_tenant("contoso").await;
    let agents = [
        cluster.fast_echo_agent(0, &tenant, "on-a").start().await,
        cluster.fast_echo_agent(1, &tenant, "on-b").start().await,
    ];
    let portals = [
        cluster.portal(0, &tenant).await,
        cluster.portal(1, &tenant).await,
    ];
    cluster.await_agent_serving(&tenant, "on-a").await;
    cluster.await_agent_serving(&tenant, "on-b").await;

    signal(&cluster.nats, 0, "-STOP");
    let cut = Instant::now();
    for (i, id) in [(0, "on-a"), (1, "on-b")] {
        let (took, answered) = until_unconfirmed(&portals[i], id, cut, LEASE + LEASE_SLACK).await;
        eprintln!(
            "NATS down: node {} relayed {answered} to its own agent, then refused {took:?} after",
            cluster.name(i)
        );
        assert_eq!(readyz(&cluster, i).await.0, 503);
    }
    signal(&cluster.nats, 0, "-CONT");
    let back = Instant::now();
    for (i, id) in [(0, "on-a"), (1, "on-b")] {
        cluster.await_readyz(i, 200, HEAL).await;
        portals[i]
            .submit(
                "back",
                Operation::ResetPassword,
                id,
                b"back".to_vec(),
                Some(Duration::from_secs(2)),
            )
            .await
            .expect("served again");
    }
    eprintln!("NATS back: both nodes serving {:?} later", back.elapsed());
    for a in agents {
        a.stop().await;
    }
}

//! Forwarding that learns fast that nobody is there (issue 19): presence
//! announcements, the serving node's go-ahead and the answer's receipt
//! (docs/CLUSTER.md "Forwarding outcomes"), against real NATS failures.
//!
//! - the NATS server of the agent's node, or of the forwarding node, dies
//!   (kill -9) under load: no request ends NO_AGENT_ONLINE or
//!   OUTCOME_UNKNOWN, none reaches the agent twice;
//! - the agent's node is cut off from NATS without its connection closing
//!   (a black-holing proxy: NATS keeps routing to it): calls from another
//!   node end NO_AGENT_ONLINE within the bound, never OUTCOME_UNKNOWN.
//!
//! Needs `nats-server` (scripts/nats/install).

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use proto::pb::Operation;
use relay_client::Reason;
use relay_client::portal_client::PortalClient;
use tests::EchoAgent;
use tests::cluster::BrokerCluster;

/// The nodes' `forward_heartbeat` (the default): presence lapses after
/// three, a silent node is given up on after three.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// How each request of a load ended, by reason ("answered" for answers).
#[derive(Default, Debug)]
struct Tally {
    by_reason: BTreeMap<String, usize>,
    /// Ids answered OUTCOME_UNKNOWN.
    unknown: Vec<String>,
}

impl Tally {
    fn count(&self, reason: &str) -> usize {
        self.by_reason.get(reason).copied().unwrap_or(0)
    }
}

/// `n` requests addressed to `dc01` through `portal`, `concurrency` at a
/// time; `during` runs once a fifth of them ended.
async fn load_with<F: std::future::Future<Output = ()>>(
    portal: &PortalClient,
    prefix: &str,
    n: usize,
    during: F,
) -> Tally {
    let portal2 = portal.clone();
    let prefix2 = prefix.to_owned();
    let mut ended = tests::load::load(n, 8, move |i| {
        let (portal, id) = (portal2.clone(), format!("{prefix2}-{i}"));
        async move {
            let result = portal
                .submit(
                    &id,
                    Operation::ResetPassword,
                    "dc01",
                    id.as_bytes().to_vec(),
                    Some(Duration::from_secs(10)),
                )
                .await;
            (id, result)
        }
    });
    let mut tally = Tally::default();
    let mut during = Some(Box::pin(during));
    let mut done = 0;
    while let Some(e) = ended.recv().await {
        done += 1;
        let took = e.took;
        let (id, result) = e.result;
        let reason = match result {
            Ok(reply) => {
                let text = String::from_utf8(reply.envelope).expect("echo is text");
                assert_eq!(text, format!("dc01|{id}"), "the answer belongs to {id}");
                "answered".to_owned()
            }
            Err(e) => {
                eprintln!("{id} after {took:?}: {e}");
                if e.reason() == Some(Reason::OutcomeUnknown) {
                    tally.unknown.push(id.clone());
                }
                format!("{:?}", e.reason())
            }
        };
        *tally.by_reason.entry(reason).or_default() += 1;
        if done == n / 5
            && let Some(d) = during.take()
        {
            d.await;
        }
    }
    tally
}

/// Which NATS node broker node `name` is connected to now.
async fn nats_server_of(cluster: &BrokerCluster, name: &str) -> usize {
    let wanted = format!("relay-broker {name}");
    for k in 0..cluster.nats.len() {
        if !cluster.nats.is_running(k) {
            continue;
        }
        let connz = cluster.nats.monitor(k, "/connz?limit=1024").await;
        let found = connz["connections"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["name"].as_str() == Some(wanted.as_str()));
        if found {
            return k;
        }
    }
    panic!("broker node {name} is connected to no NATS node");
}

/// The agent saw each request at most once.
fn no_request_twice(agent: &EchoAgent) -> usize {
    let ids = agent.request_ids();
    let mut distinct: HashSet<&String> = HashSet::new();
    let twice: Vec<&String> = ids.iter().filter(|id| !distinct.insert(id)).collect();
    eprintln!("seen twice: {twice:?}");
    assert_eq!(
        distinct.len(),
        ids.len(),
        "a request reached the agent twice"
    );
    ids.len()
}

/// Load from a to the agent on c while the NATS server broker node
/// `victim_node` is connected to is killed.
async fn kill_under_load(victim_node: &str, prefix: &str) {
    let mut cluster = BrokerCluster::builder(3).fast_liveness().start().await;
    let tenant = cluster.create_tenant("contoso").await;
    let dc01 = cluster.fast_echo_agent(2, &tenant, "dc01").start().await;
    assert_eq!(cluster.await_routable(0, &tenant).await, "dc01");
    cluster.await_agent_serving(&tenant, "dc01").await;
    let portal = cluster.portal(0, &tenant).await;
    let (a_server, c_server) = (
        nats_server_of(&cluster, "a").await,
        nats_server_of(&cluster, "c").await,
    );
    let victim = nats_server_of(&cluster, victim_node).await;
    eprintln!("a on NATS {a_server}, c on NATS {c_server}; killing NATS {victim}");
    let n = 600;
    let started = Instant::now();
    let nats = &mut cluster.nats;
    let tally = load_with(&portal, prefix, n, async move {
        nats.kill9(victim).await;
        eprintln!("killed NATS {victim} {:?} into the load", started.elapsed());
    })
    .await;
    let seen = no_request_twice(&dc01);
    eprintln!(
        "{n} requests in {:?}: {:?}; the agent saw {seen}",
        started.elapsed(),
        tally.by_reason
    );
    assert_eq!(tally.count("Some(NoAgentOnline)"), 0, "{tally:?}");
    // OUTCOME_UNKNOWN only for an answer the forwarding node could not see
    // before the caller's deadline (its serving node kept it, waiting for a
    // JetStream election): GetOutcome must have it. Nothing is lost.
    for id in &tally.unknown {
        let started = Instant::now();
        let late = loop {
            match tests::await_outcome(&portal, id).await {
                Err(e)
                    if e.reason() == Some(Reason::OutcomeNotFound)
                        && started.elapsed() < Duration::from_secs(30) =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                other => break other,
            }
        };
        let late = late.unwrap_or_else(|e| panic!("{id} is lost: {e}"));
        let text = String::from_utf8(late.envelope).expect("echo is text");
        assert_eq!(text, format!("dc01|{id}"));
        eprintln!("{id}: OUTCOME_UNKNOWN, its answer in GetOutcome");
    }
    // Refused before anything was sent (the forwarding node reconnecting)
    // is the only other end allowed.
    assert_eq!(
        tally.count("answered") + tally.count("Some(ClusterUnavailable)") + tally.unknown.len(),
        n,
        "{tally:?}"
    );
    dc01.stop().await;
}

/// kill -9 of the NATS server the agent's node uses: while c subscribes
/// again, its presence still holds dc01, so a publishes again instead of
/// taking no-responders for NO_AGENT_ONLINE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_nodes_nats_server_dies_under_load() {
    kill_under_load("c", "c-server").await;
}

/// kill -9 of the NATS server the forwarding node uses: a request whose
/// Accepted or go-ahead was lost is asked again (nothing reached the agent);
/// one whose Reply was lost is found in the outcome record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forwarding_nodes_nats_server_dies_under_load() {
    kill_under_load("a", "a-server").await;
}

/// The agent's node loses NATS without its connection closing (a proxy
/// black-holes it: NATS keeps it subscribed and routes requests into the
/// void). Calls from a end NO_AGENT_ONLINE, never OUTCOME_UNKNOWN: nothing
/// reached the agent without c's go-ahead. Once c's presence lapsed (3
/// heartbeats), each call ends within 3 heartbeats of its publish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_nats_is_no_agent_online_within_the_bound() {
    let cluster = BrokerCluster::builder(2)
        .fast_liveness()
        .nats_nodes(1)
        .nats_through_proxies()
        .start()
        .await;
    let tenant = cluster.create_tenant("contoso").await;
    let dc01 = cluster.fast_echo_agent(1, &tenant, "dc01").start().await;
    assert_eq!(cluster.await_routable(0, &tenant).await, "dc01");
    let portal = cluster.portal(0, &tenant).await;
    let b_proxy = &cluster.nats_proxies(1)[0];
    b_proxy.black_hole_new(true);
    b_proxy.black_hole();
    let cut = Instant::now();
    let bound = HEARTBEAT * 3;
    let mut calls = Vec::new();
    while cut.elapsed() < Duration::from_secs(15) {
        let id = format!("cut-{}", calls.len());
        let started = Instant::now();
        let result = portal
            .submit(
                &id,
                Operation::ResetPassword,
                "dc01",
                id.as_bytes().to_vec(),
                Some(Duration::from_secs(10)),
            )
            .await;
        let took = started.elapsed();
        let since = started.duration_since(cut);
        let reason = result.err().and_then(|e| e.reason());
        eprintln!("{id} sent {since:?} after the cut: {reason:?} in {took:?}");
        assert_eq!(reason, Some(Reason::NoAgentOnline), "{id}");
        // Paced: a refusal takes ~3 ms, and an unpaced loop spends the
        // tenant's per-minute allowance (RATE_LIMITED) within 15 s.
        tokio::time::sleep(Duration::from_millis(40)).await;
        if since > bound {
            assert!(
                took <= bound + Duration::from_millis(500),
                "{id} took {took:?} after the presence lapsed"
            );
        }
        calls.push((since, took));
    }
    assert!(dc01.request_ids().iter().all(|id| !id.starts_with("cut-")));
    eprintln!("{} calls during the cut, all NO_AGENT_ONLINE", calls.len());
    dc01.stop().await;
}

//! Partitions of a cluster (issue 19): three NATS servers (n0, n1, n2) and
//! three broker nodes (a, b, c), each in a network namespace of its own
//! ([`tests::netns`]); one echo agent, dc01, on c; portals (in the test's
//! own namespace, which no cut touches) call a. Links are cut silently
//! (packets vanish, no process is touched) or NATS servers `kill -9`ed, and
//! the tests hold the cluster to the behaviour issue 19 asks for.
//!
//! Each test prints what it saw (counts by outcome, timings) before it
//! asserts, so a failing run still reports its numbers.
//!
//! Needs root (network namespaces) and `nats-server` (scripts/nats/install).

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use proto::pb::Operation;
use relay_client::portal_client::{PortalClient, Submitted};
use relay_client::{ClientError, Reason};
use tests::cluster::{BrokerCluster, BrokerClusterBuilder};
use tests::{EchoAgent, Tenant};

/// How long a node cut off from the NATS majority may act on what it last
/// knew: after it, it enforces every change made on the majority side or
/// refuses the tenant's requests and says it is not ready. The broker's
/// `state_lease`, left at its default here.
const LEASE_BOUND: Duration = broker::config::DEFAULT_STATE_LEASE;
/// How long calls to an agent whose node lost NATS may end otherwise than
/// NO_AGENT_ONLINE (or served elsewhere).
const NO_AGENT_BOUND: Duration = Duration::from_secs(10);
/// docs/CLUSTER.md: a write NATS cannot take is retried for 15 s, then
/// refused with STORE_UNAVAILABLE.
const STORE_BOUND: Duration = Duration::from_secs(15);
/// How long the cluster may take to come together after a heal: the
/// minority's NATS server rejoins its routes and the streams' Raft groups
/// (5.7-8.7 s after the heal in twelve runs with nats-server 2.10.27).
/// Meanwhile the node is not ready and refuses; the tests also hold it to
/// never acting on stale state while it converges.
const HEAL_BOUND: Duration = Duration::from_secs(20);
/// Scheduling on a loaded two-core machine, on top of a stated bound.
const SLACK: Duration = Duration::from_secs(3);
/// How long a split lasts.
const SPLIT: Duration = Duration::from_secs(25);
/// The load's duration around a NATS server's `kill -9`.
const LOAD: Duration = Duration::from_secs(20);

const MAJORITY: [&str; 4] = ["n0", "n1", "a", "b"];
const MINORITY: [&str; 2] = ["n2", "c"];
const NATS: [&str; 3] = ["n0", "n1", "n2"];
const A: usize = 0;
const C: usize = 2;
const AGENT: &str = "dc01";

/// Fast liveness, as in tests/tests/cluster.rs: keepalives every second,
/// `forward_heartbeat` 1 s. No tenant rate limit: the loads would hit
/// the default 600 a minute within seconds.
fn fast(builder: BrokerClusterBuilder) -> BrokerClusterBuilder {
    builder
        .fast_liveness()
        // A table: after every top-level line.
        .config("[limits]\ntenant_requests_per_minute = 0")
}

struct Setup {
    cluster: BrokerCluster,
    tenant: Tenant,
    agent: EchoAgent,
    portal_a: PortalClient,
}

/// The cluster in namespaces, tenant contoso, dc01 on c, routable from
/// every node, and one request answered through a.
async fn setup() -> Setup {
    let cluster = fast(BrokerCluster::builder(3).partitionable().pinned_nats())
        .start()
        .await;
    let tenant = cluster.create_tenant("contoso").await;
    let agent = cluster
        .echo_agent(C, &tenant, AGENT)
        .config("keepalive_interval = \"1s\"")
        .config("keepalive_timeout = \"1s\"")
        .start()
        .await;
    cluster.await_agent_serving(&tenant, AGENT).await;
    for i in 0..3 {
        assert_eq!(cluster.await_routable(i, &tenant).await, AGENT);
    }
    let mut servers = Vec::new();
    for node in ["a", "b", "c"] {
        let k = nats_server_of(&cluster, node).await;
        servers.push(format!("{node} on {}", cluster.nats.server_name(k)));
    }
    eprintln!("NATS servers in use: {}", servers.join(", "));
    let portal_a = cluster.portal(A, &tenant).await;
    let reply = submit(&portal_a, "before", Duration::from_secs(5))
        .await
        .expect("answered before any fault");
    assert_eq!(reply.agent_id, AGENT);
    Setup {
        cluster,
        tenant,
        agent,
        portal_a,
    }
}

/// Submits `id` (payload the id) addressed to dc01.
async fn submit(
    portal: &PortalClient,
    id: &str,
    deadline: Duration,
) -> Result<Submitted, ClientError> {
    portal
        .submit(
            id,
            Operation::ResetPassword,
            AGENT,
            id.as_bytes().to_vec(),
            Some(deadline),
        )
        .await
}

/// "answered" or the reason's name.
fn label(result: &Result<Submitted, ClientError>) -> String {
    match result {
        Ok(_) => "answered".into(),
        Err(e) => e
            .reason()
            .map_or_else(|| format!("transport: {e}"), |r| format!("{r:?}")),
    }
}

/// (1) A 2|1 split: {n0, n1, a, b} | {n2, c}. Write-back is disabled and
/// dc01 revoked through a during the split. Within LEASE_BOUND of the
/// change c either enforces it (WRITEBACK_DISABLED) or refuses with a
/// reason of its own while its /readyz is 503; dc01 answers nothing after
/// the bound; after the heal every node agrees within LEASE_BOUND.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minority_node_enforces_changes_or_refuses_within_the_lease() {
    let Setup {
        cluster,
        tenant,
        agent,
        ..
    } = setup().await;
    let net = cluster.net();
    let portal_c = cluster.portal(C, &tenant).await;
    let admin_a = cluster.node(A).admin().await;

    net.split(&[&MAJORITY, &MINORITY]);
    let split_at = Instant::now();
    // The majority takes writes (after an election if n2 led the bucket).
    let (disabled, took) = timed(admin_a.set_writeback(&tenant.name, false)).await;
    if let Err(e) = disabled {
        panic!("disable through a, on the majority side, after {took:?}: {e}");
    }
    let (revoked, took) = timed(admin_a.revoke_agent(&tenant.name, AGENT)).await;
    if let Err(e) = revoked {
        panic!("revoke through a, on the majority side, after {took:?}: {e}");
    }
    let changed_at = Instant::now();
    eprintln!(
        "disabled and revoked through a {:?} into the split",
        split_at.elapsed()
    );

    // c, asked over and over: (since the change when the call was made,
    // outcome, /readyz). Timed from the call's start: a call c admitted
    // just inside the lease may be answered just outside it (the
    // documented "a request relayed just before may still be answered").
    let mut seen = Vec::new();
    let mut k = 0;
    while split_at.elapsed() < SPLIT {
        k += 1;
        let id = format!("minority-{k}");
        let asked = changed_at.elapsed();
        let result = submit(&portal_c, &id, Duration::from_secs(5)).await;
        let ready = cluster.readyz(C).await;
        seen.push((asked, label(&result), ready));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let arrived_during = agent.request_ids().len();
    // Compliant: the change enforced, or a refusal of c's own (not "the
    // call may have reached an agent") while c says it is not ready.
    let compliant = |outcome: &str, ready: u16| {
        outcome == "WritebackDisabled"
            || (ready == 503
                && outcome != "answered"
                && outcome != "OutcomeUnknown"
                && outcome != "DeadlineExceeded")
    };
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    let mut late = Vec::new();
    for (at, outcome, ready) in &seen {
        *tally
            .entry(format!(
                "{} {outcome} readyz={ready}",
                phase(*at, LEASE_BOUND)
            ))
            .or_default() += 1;
        if *at > LEASE_BOUND && !compliant(outcome, *ready) {
            late.push(format!("{at:?}: {outcome} readyz={ready}"));
        }
    }
    let first_compliant = seen
        .iter()
        .find(|(_, o, r)| compliant(o, *r))
        .map(|(at, _, _)| *at);
    eprintln!(
        "c during the split ({} calls): {tally:#?}\nfirst compliant {first_compliant:?} after \
         the change; dc01 got {arrived_during} requests in all",
        seen.len()
    );

    net.heal();
    let healed_at = Instant::now();
    // After the heal: c enforces the change, is ready, and dc01 is nowhere;
    // until then it refuses (not ready), and never serves.
    let mut stale_after_heal = Vec::new();
    let converged = loop {
        let result = submit(&portal_c, "after-heal", Duration::from_secs(5)).await;
        let ready = cluster.readyz(C).await;
        let enabled_on_c = portal_c
            .configuration()
            .await
            .map(|c| c.writeback_enabled)
            .unwrap_or(true);
        let outcome = label(&result);
        // Refused or enforced are both fine here (readiness, read after
        // the call, may already have turned); reaching dc01 is not.
        if ["answered", "OutcomeUnknown", "DeadlineExceeded"].contains(&outcome.as_str()) {
            stale_after_heal.push(format!(
                "{:?}: {outcome} readyz={ready}",
                healed_at.elapsed()
            ));
        }
        if outcome == "WritebackDisabled" && ready == 200 && !enabled_on_c {
            break Some(healed_at.elapsed());
        }
        if healed_at.elapsed() > HEAL_BOUND {
            eprintln!(
                "not converged after the heal: {outcome}, readyz {ready}, enabled {enabled_on_c}"
            );
            break None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("converged {converged:?} after the heal");

    assert!(
        late.is_empty(),
        "c not compliant {LEASE_BOUND:?} after the change: {late:#?}"
    );
    // The first call made after the bound, as calls are spaced.
    assert!(
        first_compliant.is_some_and(|at| at <= LEASE_BOUND + SLACK),
        "c never compliant within {LEASE_BOUND:?}: {first_compliant:?}"
    );
    assert!(
        stale_after_heal.is_empty(),
        "c acted on stale state after the heal: {stale_after_heal:#?}"
    );
    assert!(
        converged.is_some(),
        "no convergence within {HEAL_BOUND:?} of the heal"
    );
    drop(agent);
}

/// "before" or "after" `bound`.
fn phase(at: Duration, bound: Duration) -> &'static str {
    if at <= bound {
        "before bound:"
    } else {
        "after bound:"
    }
}

/// (2) c cut off from every NATS server, not from its agent (nor from the
/// test). Calls from a to dc01 end NO_AGENT_ONLINE (or are served) within
/// NO_AGENT_BOUND, never a stream of OUTCOME_UNKNOWN for requests that
/// reached no agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_nats_stops_taking_forwarded_requests() {
    let Setup {
        cluster,
        agent,
        portal_a,
        ..
    } = setup().await;
    cluster.net().isolate("c", &NATS);
    let cut_at = Instant::now();
    let mut seen = Vec::new();
    let mut k = 0;
    while cut_at.elapsed() < SPLIT {
        k += 1;
        let id = format!("cut-{k}");
        let started = cut_at.elapsed();
        let result = submit(&portal_a, &id, Duration::from_secs(5)).await;
        seen.push((started, id, label(&result), cut_at.elapsed() - started));
    }
    let reached = agent.request_ids();
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    let mut blind_unknown = 0;
    let mut late = Vec::new();
    for (at, id, outcome, took) in &seen {
        *tally
            .entry(format!("{} {outcome}", phase(*at, NO_AGENT_BOUND)))
            .or_default() += 1;
        if outcome == "OutcomeUnknown" && !reached.contains(id) {
            blind_unknown += 1;
        }
        if *at > NO_AGENT_BOUND && outcome != "NoAgentOnline" && outcome != "answered" {
            late.push(format!("{id} at {at:?}: {outcome} in {took:?}"));
        }
    }
    eprintln!(
        "calls from a with c cut off from NATS ({} calls): {tally:#?}\n{blind_unknown} \
         OUTCOME_UNKNOWN for requests that reached no agent; c /readyz {}",
        seen.len(),
        cluster.readyz(C).await
    );

    cluster.net().heal();
    let healed_at = Instant::now();
    let portal_a2 = portal_a.clone();
    let back = loop {
        if submit(&portal_a2, "after-heal", Duration::from_secs(5))
            .await
            .is_ok()
        {
            break Some(healed_at.elapsed());
        }
        if healed_at.elapsed() > HEAL_BOUND {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("dc01 answered through a again {back:?} after the heal");

    assert!(late.is_empty(), "after {NO_AGENT_BOUND:?}: {late:#?}");
    assert!(
        blind_unknown <= 2,
        "{blind_unknown} requests that reached no agent ended OUTCOME_UNKNOWN"
    );
    assert!(
        back.is_some(),
        "dc01 not reachable through a after the heal"
    );
}

/// A write through c during a split.
#[derive(Clone, Copy, Debug)]
enum MinorityWrite {
    /// SetWriteback(false) of contoso.
    Disable,
    /// CreateTenant "minority".
    Create,
}

/// (3a) On the minority side a change of a tenant is refused with
/// STORE_UNAVAILABLE within the documented 15 s, with nothing changed; the
/// majority side writes meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_the_minority_side_is_refused_within_the_documented_bound() {
    write_on_the_minority_side(MinorityWrite::Disable).await;
}

/// (3b) The same for creating a tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creation_on_the_minority_side_is_refused_within_the_documented_bound() {
    write_on_the_minority_side(MinorityWrite::Create).await;
}

/// (3) Splits {n0, n1, a, b} | {n2, c}, makes `write` through c and a
/// tenant creation through a at once; c's write must be refused
/// STORE_UNAVAILABLE within STORE_BOUND, a's succeed; after the heal c
/// knows a's tenant and nothing of its own write was applied.
async fn write_on_the_minority_side(write: MinorityWrite) {
    let Setup {
        cluster, tenant, ..
    } = setup().await;
    let admin_a = cluster.node(A).admin().await;
    let admin_c = cluster.node(C).admin().await;
    cluster.net().split(&[&MAJORITY, &MINORITY]);

    let ((minority, minority_took), (majority, majority_took)) = tokio::join!(
        timed(async {
            match write {
                MinorityWrite::Disable => {
                    admin_c.set_writeback(&tenant.name, false).await.map(drop)
                }
                MinorityWrite::Create => admin_c
                    .create_tenant("minority", None, false)
                    .await
                    .map(drop),
            }
        }),
        timed(async {
            admin_a
                .create_tenant("majority", None, false)
                .await
                .map(drop)
        }),
    );
    let show = |r: &Result<(), ClientError>| match r {
        Ok(()) => "ok".to_owned(),
        Err(e) => e
            .reason()
            .map_or_else(|| e.to_string(), |r| format!("{r:?}")),
    };
    eprintln!(
        "minority: {write:?} {} in {minority_took:?}; majority: create {} in {majority_took:?}",
        show(&minority),
        show(&majority)
    );
    let reason = minority.as_ref().err().and_then(ClientError::reason);
    assert_eq!(
        reason,
        Some(Reason::StoreUnavailable),
        "{write:?} through c: {}",
        show(&minority)
    );
    assert!(
        minority_took <= STORE_BOUND + SLACK,
        "{write:?} through c refused only after {minority_took:?}"
    );
    assert!(
        majority.is_ok(),
        "the majority side takes writes: {}",
        show(&majority)
    );

    // Healed: c converges on the majority's state, nothing of its refused
    // write applied.
    cluster.net().heal();
    let healed_at = Instant::now();
    let ready_in = cluster.await_readyz(C, 200, HEAL_BOUND).await;
    let tenants = loop {
        let names: Vec<String> = match admin_c.list_tenants().await {
            Ok(list) => list.into_iter().map(|t| t.tenant).collect(),
            Err(_) => Vec::new(),
        };
        if names.iter().any(|n| n == "majority") {
            break names;
        }
        assert!(
            healed_at.elapsed() < HEAL_BOUND,
            "c never learnt of the majority's tenant: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!(
        "c ready {ready_in:?} and converged {:?} after the heal: {tenants:?}",
        healed_at.elapsed()
    );
    assert!(!tenants.iter().any(|n| n == "minority"), "{tenants:?}");
    let configuration = cluster
        .portal(C, &tenant)
        .await
        .configuration()
        .await
        .expect("configuration on c");
    assert!(
        configuration.writeback_enabled,
        "the refused disable was applied"
    );
}

/// A call's result and how long it took.
async fn timed<T>(call: impl Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let result = call.await;
    (result, started.elapsed())
}

/// The NATS server (index) broker node `node` is connected to, from the
/// servers' `/connz` (the broker names its connection "relay-broker <node>").
async fn nats_server_of(cluster: &BrokerCluster, node: &str) -> usize {
    let name = format!("relay-broker {node}");
    for k in 0..cluster.nats.len() {
        let connz = cluster.nats.monitor(k, "/connz").await;
        let found = connz["connections"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["name"].as_str() == Some(name.as_str()));
        if found {
            return k;
        }
    }
    panic!("broker node {node} is connected to no NATS server");
}

/// What a load saw: counts by outcome and the three numbers that must be 0.
#[derive(Debug, Default)]
struct Tally {
    by_outcome: BTreeMap<String, usize>,
    /// OUTCOME_UNKNOWN whose outcome GetOutcome never gave, or refused as
    /// not sent although the agent got it.
    lost: Vec<String>,
    /// Request ids the agent applied more than once.
    applied_twice: Vec<String>,
    no_agent_online: usize,
    /// Calls answered that ended 10 s or more after the kill: the load
    /// went on through the failover.
    answered_after_kill: usize,
}

/// Loads a with calls to dc01 for LOAD, `kill -9` of the NATS server
/// broker node `victim_node` uses 5 s in, and tallies.
async fn kill_nats_under_load(victim_node: &str) -> Tally {
    let Setup {
        mut cluster,
        agent,
        portal_a,
        ..
    } = setup().await;
    let victim = nats_server_of(&cluster, victim_node).await;
    eprintln!(
        "a uses {}, c uses {}; killing {}",
        cluster
            .nats
            .server_name(nats_server_of(&cluster, "a").await),
        cluster
            .nats
            .server_name(nats_server_of(&cluster, "c").await),
        cluster.nats.server_name(victim)
    );
    let started = Instant::now();
    let calls = {
        let portal = portal_a.clone();
        tests::load::load(100_000, 4, move |i| {
            let portal = portal.clone();
            async move {
                if started.elapsed() > LOAD {
                    return None;
                }
                let id = format!("load-{i}");
                let result = submit(&portal, &id, Duration::from_secs(10)).await;
                // Paced: a load, not a flood of the two cores.
                tokio::time::sleep(Duration::from_millis(20)).await;
                Some((id, result))
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(5)).await;
    cluster.nats.kill9(victim).await;
    let killed_at = started.elapsed();
    let mut calls = calls;
    let mut results = Vec::new();
    while let Some(ended) = calls.recv().await {
        match ended.result {
            Some(r) => results.push((ended.at - started, r)),
            None => break,
        }
    }
    // The other workers' last calls.
    tokio::time::sleep(Duration::from_millis(100)).await;
    while let Ok(ended) = calls.try_recv() {
        if let Some(r) = ended.result {
            results.push((ended.at - started, r));
        }
    }
    drop(calls);
    let reached = agent.request_ids();
    let mut tally = Tally::default();
    for (at, (id, result)) in &results {
        let mut outcome = label(result);
        if outcome == "answered" && *at > killed_at + Duration::from_secs(10) {
            tally.answered_after_kill += 1;
        }
        if outcome == "OutcomeUnknown" {
            outcome = match bounded_outcome(&portal_a, id).await {
                Ok(_) => "OutcomeUnknown, then retrieved".into(),
                Err(e) => {
                    let got = if reached.contains(id) {
                        "got"
                    } else {
                        "never got"
                    };
                    tally
                        .lost
                        .push(format!("{id} (the agent {got} it): GetOutcome {e}"));
                    "OutcomeUnknown, lost".into()
                }
            };
        }
        let not_sent = ["NoAgentOnline", "ClusterUnavailable", "AgentsBusy"];
        if not_sent.contains(&outcome.as_str()) && reached.contains(id) {
            tally
                .lost
                .push(format!("{id}: {outcome} but the agent got it"));
        }
        if outcome == "NoAgentOnline" {
            tally.no_agent_online += 1;
        }
        *tally.by_outcome.entry(outcome).or_default() += 1;
    }
    let mut applied: BTreeMap<String, usize> = BTreeMap::new();
    for id in agent.completed() {
        *applied.entry(id).or_default() += 1;
    }
    tally.applied_twice = applied
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(id, _)| id)
        .collect();
    let mut agent = agent;
    // Every event but a plain answer: sessions lost and opened, refusals.
    let events: Vec<_> = agent
        .events()
        .into_iter()
        .filter(|e| {
            !matches!(
                e,
                writeback_agent::AgentEvent::Answered { refusal: None, .. }
            )
        })
        .collect();
    eprintln!(
        "killed at {killed_at:?}; {} calls: {tally:#?}; agent events other than answers: {events:?}",
        results.len(),
    );
    tally
}

/// GetOutcome through `portal` until it is no longer pending, within 20 s.
async fn bounded_outcome(portal: &PortalClient, id: &str) -> Result<Submitted, ClientError> {
    let started = Instant::now();
    loop {
        match portal.outcome(id).await {
            Err(e)
                if e.reason() == Some(Reason::OutcomePending)
                    && started.elapsed() < Duration::from_secs(20) =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}

fn assert_three_zeros(tally: &Tally) {
    assert!(
        tally.answered_after_kill > 0,
        "nothing answered once the failover was over: {tally:?}"
    );
    assert!(tally.lost.is_empty(), "lost: {:#?}", tally.lost);
    assert!(
        tally.applied_twice.is_empty(),
        "applied twice: {:?}",
        tally.applied_twice
    );
    assert_eq!(
        tally.no_agent_online, 0,
        "NO_AGENT_ONLINE while dc01 was connected to a live node"
    );
}

/// (4) `kill -9` of the NATS server c (dc01's node) uses, under load through
/// a: nothing lost, nothing applied twice, no NO_AGENT_ONLINE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_agent_nodes_nats_server_under_load() {
    let tally = kill_nats_under_load("c").await;
    assert_three_zeros(&tally);
}

/// (5) `kill -9` of the NATS server a (the forwarding node) uses, under
/// load: the same three zeros; an OUTCOME_UNKNOWN is always retrievable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_forwarding_nodes_nats_server_under_load() {
    let tally = kill_nats_under_load("a").await;
    assert_three_zeros(&tally);
}

/// `kill -9` of the third NATS server, the one only b (no agent, no portal)
/// uses: the streams it led elect again while a forwards to c; the same
/// three zeros. With the two tests above, each NATS server is killed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_idle_nodes_nats_server_under_load() {
    let tally = kill_nats_under_load("b").await;
    assert_three_zeros(&tally);
}

/// The harness itself: a cut is silent (a connection attempt times out,
/// it is not refused) and a heal restores the link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lab_cuts_and_heals_links_between_namespaces() {
    let lab = tests::netns::NetLab::new(&["x", "y"]);
    assert_ne!(lab.ip("x"), lab.ip("y"));
    // A listener in y (a fixed port: the namespace is the lab's own), reached from the host (nothing cut).
    let mut server = lab
        .command("y", tests::nats::nats_server_bin())
        .args(["-a", &lab.ip("y").to_string(), "-p", "4222"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("nats-server in y");
    let target = format!("{}:4222", lab.ip("y"));
    let connect = |within: Duration| {
        let target = target.clone();
        async move { tokio::time::timeout(within, tokio::net::TcpStream::connect(target)).await }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !matches!(connect(Duration::from_secs(1)).await, Ok(Ok(_))) {
        assert!(Instant::now() < deadline, "y's listener never reachable");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Cut host|y: a connection attempt hangs (silent), it is not refused.
    lab.cut(tests::netns::HOST, "y");
    assert!(lab.is_cut("y", tests::netns::HOST));
    assert!(
        connect(Duration::from_secs(2)).await.is_err(),
        "the cut is silent: it times out"
    );
    lab.heal();
    assert!(
        matches!(connect(Duration::from_secs(5)).await, Ok(Ok(_))),
        "healed"
    );
    let _ = server.kill();
    let _ = server.wait();
}

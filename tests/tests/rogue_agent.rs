//! A tenant's own agent turned hostile (issue 17, observation 2): with only
//! its tenant's Listen key it posts replies nobody asked for, or floods the
//! broker with big late answers to requests it did hold. Another tenant's
//! pings and GetOutcome calls keep their latency, the broker's memory and
//! store stay within the stated bounds, and the rogue session is closed.
//! Real broker process, TLS on loopback; the attack comes from 127.0.0.2 so
//! per-address limits do not touch the bystander on 127.0.0.1.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message;
use proto::pb::{self, GoodbyeReason, Operation, agent_frame, agent_reply};
use relay_client::Reason;
use relay_client::portal_client::PortalClient;
use sas::Right;
use tests::pressure::{Bystander, ProcStat, Sampler, assert_unharmed};
use tests::raw::{self, RawSession};
use tests::{BrokerBuilder, BrokerProcess, EchoAgent, Tenant, await_outcome};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// The size of each hostile reply: just under the 64 KiB envelope limit.
const REPLY_BYTES: usize = 60 * 1024;
/// Every bystander ping and GetOutcome within this: unloaded they take a
/// few milliseconds; a second is what a person at a reset page notices.
const LATENCY_BOUND: Duration = Duration::from_secs(1);

/// A channel whose connections come from the attacker's address.
async fn attacker_channel(broker: &BrokerProcess) -> Channel {
    broker
        .endpoint()
        .endpoint()
        .expect("endpoint")
        .local_address(Some(ATTACKER))
        .connect()
        .await
        .expect("connect from 127.0.0.2")
}

fn reply(correlation_id: u64, request_id: &str) -> Vec<u8> {
    pb::AgentFrame {
        frame: Some(agent_frame::Frame::Reply(pb::AgentReply {
            correlation_id,
            request_id: request_id.into(),
            result: Some(agent_reply::Result::Envelope(vec![0x5a; REPLY_BYTES])),
        })),
    }
    .encode_to_vec()
}

fn store_bytes(broker: &BrokerProcess) -> u64 {
    std::fs::metadata(broker.data_dir().join("broker.redb"))
        .expect("store file")
        .len()
}

/// A counter's value in the broker's /metrics text (0 when absent).
fn counter(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// The bystander tenant's GetOutcome of a kept record, every quarter
/// second while the attack runs: each call's latency and result.
struct OutcomeProbe {
    stop: CancellationToken,
    task: JoinHandle<Vec<(Duration, Result<(), String>)>>,
}

impl OutcomeProbe {
    fn start(portal: PortalClient, request_id: &'static str) -> OutcomeProbe {
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut calls = Vec::new();
                let mut every = tokio::time::interval(tests::pressure::BYSTANDER_EVERY);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return calls,
                        _ = every.tick() => {}
                    }
                    let at = Instant::now();
                    let got = tokio::time::timeout(LATENCY_BOUND, portal.outcome(request_id)).await;
                    let result = match got {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err(format!("no answer within {LATENCY_BOUND:?}")),
                    };
                    calls.push((at.elapsed(), result));
                }
            }
        });
        OutcomeProbe { stop, task }
    }

    /// Asserts every call succeeded within the bound; the slowest.
    async fn stop(self, min_calls: usize) -> Duration {
        self.stop.cancel();
        let calls = self.task.await.expect("probe");
        assert!(calls.len() >= min_calls, "{} GetOutcome calls", calls.len());
        let failed: Vec<_> = calls.iter().filter(|(_, r)| r.is_err()).collect();
        assert!(failed.is_empty(), "GetOutcome calls failed: {failed:?}");
        let slowest = calls.iter().map(|(l, _)| *l).max().unwrap_or_default();
        assert!(slowest <= LATENCY_BOUND, "slowest GetOutcome {slowest:?}");
        slowest
    }
}

/// The legitimate tenant: its own agent, a kept outcome, a portal.
async fn bystander(broker: &BrokerProcess) -> (Tenant, EchoAgent, PortalClient) {
    let tenant = broker.create_tenant("bystander").await;
    let agent = EchoAgent::start(broker, &tenant, "dc01").await;
    let portal = broker.portal(&tenant, Right::Send).await;
    portal
        .submit(
            "kept-1",
            Operation::ResetPassword,
            "dc01",
            b"x".to_vec(),
            None,
        )
        .await
        .expect("the bystander's request is answered");
    await_outcome(&portal, "kept-1")
        .await
        .expect("the bystander's outcome is kept");
    (tenant, agent, portal)
}

/// Sends `frames` on `session` from a task of its own until they are all
/// queued or `stop`; how many were.
fn pump(
    session: &RawSession,
    frames: impl Iterator<Item = Vec<u8>> + Send + 'static,
    stop: CancellationToken,
) -> JoinHandle<usize> {
    let tx = session.sender();
    tokio::spawn(async move {
        let mut sent = 0;
        for frame in frames {
            tokio::select! {
                queued = tx.send(frame) => if queued.is_err() { break },
                _ = stop.cancelled() => break,
            }
            sent += 1;
        }
        sent
    })
}

#[tokio::test]
async fn ten_thousand_forged_replies_are_dropped_and_the_rogue_session_closed() {
    /// Replies the rogue gets onto the wire at least, over as many sessions
    /// as it takes (each is closed past the limit, and it reconnects).
    const REPLIES: usize = 10_000;
    /// Nothing of the rogue's is stored: the store may grow only by the
    /// bystander's own records and redb's page allocation.
    const STORE_GROWTH_BOUND: u64 = 1 << 20;
    /// Above the RSS at the start: a session's buffers (a message of up to
    /// 80 KiB being decoded, the HTTP/2 window) and the allocator's arenas;
    /// nothing per reply is kept. Before: 1.5 GB for the same attack.
    const RSS_GROWTH_BOUND: u64 = 64 << 20;
    /// The broker's default `unsolicited_replies_per_minute`.
    const UNSOLICITED_LIMIT: u64 = 16;

    let broker = BrokerBuilder::new().start().await;
    let pid = broker.pid();
    let (_tenant, agent, portal) = bystander(&broker).await;
    let rogue = broker.create_tenant("rogue").await;
    let store_before = store_bytes(&broker);
    let before = ProcStat::of(pid);

    let sampler = Sampler::start(pid);
    let pings = Bystander::start(portal.clone(), LATENCY_BOUND);
    let outcomes = OutcomeProbe::start(portal.clone(), "kept-1");
    let started = Instant::now();
    let channel = attacker_channel(&broker).await;
    let (mut sent, mut sessions) = (0, 0);
    while sent < REPLIES {
        let mut session = RawSession::open(&channel, raw::hello(&rogue, "rogue-1"))
            .await
            .expect("the rogue's session is accepted");
        sessions += 1;
        let stop = CancellationToken::new();
        let first = sent;
        // As fast as it can, until the broker closes the session.
        let frames = (first..).map(|i| reply(i as u64 + 1_000_000, &format!("forged-{i}")));
        let pumping = pump(&session, frames, stop.clone());
        let goodbye = session.goodbye().await;
        stop.cancel();
        sent += pumping.await.expect("pump");
        assert_eq!(
            goodbye.reason(),
            GoodbyeReason::UnsolicitedReplies,
            "{}",
            goodbye.message
        );
    }
    let attack = started.elapsed();
    let during = ProcStat::of(pid);
    let peak = sampler.stop().await;
    let calls = pings.stop().await;
    let slowest_outcome = outcomes.stop(4).await;
    drop(channel);
    let after = ProcStat::of(pid);
    let store_after = store_bytes(&broker);
    let metrics = broker.metrics().await;
    let refused = counter(
        &metrics,
        "relay_agent_replies_refused_total{reason=\"unsolicited\"}",
    );

    eprintln!(
        "{sent} forged replies of {REPLY_BYTES} bytes over {sessions} sessions in {attack:?}; \
         the broker refused {refused} as unsolicited"
    );
    eprintln!("broker before: {before}");
    eprintln!(
        "broker during: {during} (peaks: RSS {} MiB, {} descriptors, {} threads)",
        peak.rss_bytes >> 20,
        peak.open_fds,
        peak.threads
    );
    eprintln!("broker after:  {after}");
    eprintln!("store file: {store_before} bytes before, {store_after} after");
    let slowest_ping = assert_unharmed(&calls, 4, LATENCY_BOUND);
    eprintln!(
        "bystander: {} pings, slowest {slowest_ping:?}; GetOutcome slowest {slowest_outcome:?}",
        calls.len()
    );

    assert!(
        refused >= sessions as u64 * UNSOLICITED_LIMIT,
        "each session was closed only past its limit: {refused} refused, {sessions} sessions"
    );
    assert!(
        peak.rss_bytes <= before.rss_bytes + RSS_GROWTH_BOUND,
        "RSS peaked at {} MiB from {} MiB",
        peak.rss_bytes >> 20,
        before.rss_mib()
    );
    assert!(
        store_after <= store_before + STORE_GROWTH_BOUND,
        "the store grew from {store_before} to {store_after} bytes"
    );
    let forged = broker
        .portal(&rogue, Right::Send)
        .await
        .outcome("forged-1")
        .await
        .map(|_| ())
        .expect_err("a forged reply makes no record");
    assert_eq!(forged.reason(), Some(Reason::OutcomeNotFound), "{forged}");
    assert!(
        broker
            .logs()
            .contains("too many replies for requests it was never given"),
        "the closing is logged"
    );
    agent.stop().await;
}

#[tokio::test]
async fn a_flood_of_late_replies_is_bounded_per_tenant() {
    /// Requests the rogue's agent holds past their deadline, then answers
    /// late with 60 KiB each: 60 MiB offered.
    const REQUESTS: usize = 1_000;
    /// The rogue tenant's outcome bytes, configured small so that the bound
    /// is reached: 8 MiB of 60 KiB answers is about 136 of them.
    const MAX_OUTCOME_BYTES: u64 = 8 << 20;
    /// The store file holds the rogue's bounded records; redb's
    /// copy-on-write pages and freed space can take about as much again.
    const STORE_GROWTH_BOUND: u64 = 3 * MAX_OUTCOME_BYTES;
    /// Late answers of the tenant on their way to the store at most
    /// (`max_pending_outcome_writes_per_tenant`, default 64: 3.75 MiB of
    /// payloads), the session's buffers and the allocator's arenas.
    const RSS_GROWTH_BOUND: u64 = 64 << 20;
    /// Rounds of posting again what was not taken; each takes at least the
    /// tenant's 64 pending writes, so 1,000 need about 16.
    const MAX_ROUNDS: usize = 40;
    /// The bystander's calls are measured over at least this much from the
    /// start of the flood (eight of each), however fast the broker is done.
    const MEASURED_FOR: Duration = Duration::from_secs(2);

    let broker = BrokerBuilder::new()
        .config("[limits]")
        .config("tenant_requests_per_minute = 0")
        .config(format!(
            "max_outcome_bytes_per_tenant = {MAX_OUTCOME_BYTES}"
        ))
        .start()
        .await;
    let pid = broker.pid();
    let (_tenant, agent, portal) = bystander(&broker).await;
    let rogue = broker.create_tenant("rogue").await;
    let rogue_portal = broker.portal(&rogue, Right::Send).await;
    let channel = attacker_channel(&broker).await;
    let mut session = RawSession::open(&channel, raw::hello(&rogue, "rogue-1"))
        .await
        .expect("the rogue's session is accepted");

    // The rogue's agent takes requests, acknowledges them and sits on them
    // until each caller's deadline has passed: each one's outcome is
    // awaited from it, so its late answers are admitted.
    let held = Arc::new(Mutex::new(Vec::new()));
    let holding = tokio::spawn({
        let held = Arc::clone(&held);
        let ack = session.sender();
        async move {
            for _ in 0..REQUESTS {
                let request = session.next_request().await;
                let frame = pb::AgentFrame {
                    frame: Some(agent_frame::Frame::Ack(pb::Ack {
                        correlation_id: request.correlation_id,
                    })),
                };
                let _ = ack.send(frame.encode_to_vec()).await;
                held.lock().unwrap().push(request.request_id);
            }
            session
        }
    });
    for batch in 0..REQUESTS / 50 {
        let calls: Vec<_> = (0..50)
            .map(|i| {
                let portal = rogue_portal.clone();
                let id = format!("held-{}", batch * 50 + i);
                tokio::spawn(async move {
                    portal
                        .submit(
                            &id,
                            Operation::ResetPassword,
                            "rogue-1",
                            b"x".to_vec(),
                            Some(Duration::from_millis(200)),
                        )
                        .await
                })
            })
            .collect();
        for call in calls {
            let err = call
                .await
                .expect("join")
                .expect_err("nobody answers in time");
            assert!(
                matches!(
                    err.reason(),
                    Some(Reason::OutcomeUnknown | Reason::DeadlineExceeded)
                ),
                "{err}"
            );
        }
    }
    let session = tokio::time::timeout(Duration::from_secs(30), holding)
        .await
        .expect("the rogue got every request")
        .expect("holding");
    // Each call's routing wrote its awaited record before the call heard
    // OUTCOME_UNKNOWN (and one still being routed admits its answer too).
    let ids = std::mem::take(&mut *held.lock().unwrap());
    assert_eq!(ids.len(), REQUESTS);

    let store_before = store_bytes(&broker);
    let before = ProcStat::of(pid);
    let sampler = Sampler::start(pid);
    let pings = Bystander::start(portal.clone(), LATENCY_BOUND);
    let outcomes = OutcomeProbe::start(portal.clone(), "kept-1");
    let started = Instant::now();
    let stop = CancellationToken::new();
    // As the real agent does, the rogue posts again what the broker did not
    // confirm (a reply refused at the tenant's bound is still awaited),
    // round after round, until nothing it holds is awaited any more.
    let (mut sent, mut rounds) = (0, 0);
    let mut outstanding = ids.clone();
    let (mut kept, mut busy) = (0, 0);
    while !outstanding.is_empty() && rounds < MAX_ROUNDS {
        rounds += 1;
        let frames = std::mem::take(&mut outstanding)
            .into_iter()
            .map(|id| reply(0, &id));
        sent += pump(&session, frames, stop.clone()).await.expect("pump");
        // Until the broker has taken or refused every one (or ten seconds).
        let settle = Instant::now() + Duration::from_secs(10);
        loop {
            let metrics = broker.metrics().await;
            kept = counter(&metrics, "relay_late_outcomes_total");
            busy = counter(
                &metrics,
                "relay_agent_replies_refused_total{reason=\"tenant_busy\"}",
            );
            if kept + busy >= sent as u64 || Instant::now() > settle {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for id in &ids {
            if let Err(e) = rogue_portal.outcome(id).await
                && e.reason() == Some(Reason::OutcomePending)
            {
                outstanding.push(id.clone());
            }
        }
    }
    // The bystander measured for at least its window.
    while started.elapsed() < MEASURED_FOR {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let attack = started.elapsed();
    let during = ProcStat::of(pid);
    let peak = sampler.stop().await;
    let calls = pings.stop().await;
    let slowest_outcome = outcomes.stop(4).await;
    stop.cancel();
    drop((session, channel));
    let after = ProcStat::of(pid);
    let store_after = store_bytes(&broker);

    eprintln!(
        "{sent} late replies of {REPLY_BYTES} bytes in {rounds} rounds, {attack:?}: {kept} kept, {busy} refused (tenant's store writes at their bound)"
    );
    eprintln!("broker before: {before}");
    eprintln!(
        "broker during: {during} (peaks: RSS {} MiB, {} descriptors, {} threads)",
        peak.rss_bytes >> 20,
        peak.open_fds,
        peak.threads
    );
    eprintln!("broker after:  {after}");
    eprintln!("store file: {store_before} bytes before, {store_after} after");
    let slowest_ping = assert_unharmed(&calls, 4, LATENCY_BOUND);
    eprintln!(
        "bystander: {} pings, slowest {slowest_ping:?}; GetOutcome slowest {slowest_outcome:?}",
        calls.len()
    );

    assert!(
        store_after <= store_before + STORE_GROWTH_BOUND,
        "the store grew from {store_before} to {store_after} bytes"
    );
    assert!(
        peak.rss_bytes <= before.rss_bytes + RSS_GROWTH_BOUND,
        "RSS peaked at {} MiB from {} MiB",
        peak.rss_bytes >> 20,
        before.rss_mib()
    );
    // What the store holds of the rogue: answers within its bytes (those
    // that expire first made room, and are gone), nothing awaited any more:
    // only answers were evicted for the bound, never an awaited record.
    let (mut answered, mut evicted) = (0u64, 0u64);
    for id in &ids {
        match rogue_portal.outcome(id).await {
            Ok(_) => answered += 1,
            Err(e) if e.reason() == Some(Reason::OutcomeNotFound) => evicted += 1,
            Err(e) => panic!("{id}: {e}"),
        }
    }
    eprintln!(
        "the rogue tenant's records: {answered} answers kept, {evicted} evicted for its bytes"
    );
    assert!(answered > 0, "late answers are kept");
    assert!(
        answered * REPLY_BYTES as u64 <= MAX_OUTCOME_BYTES,
        "{answered} answers of {REPLY_BYTES} bytes kept"
    );
    assert_eq!(answered + evicted, REQUESTS as u64);
    assert_eq!(kept, REQUESTS as u64, "every late answer was taken once");
    await_outcome(&portal, "kept-1")
        .await
        .expect("the bystander's outcome is its own");
    agent.stop().await;
}

/// The refusal itself, without the session's closing: with the limit out of
/// the way, all 10,000 forged replies reach the broker on one session, and
/// each is dropped as it arrives, nothing stored, nothing kept.
#[tokio::test]
async fn ten_thousand_forged_replies_on_one_session_cost_no_store_work() {
    const REPLIES: usize = 10_000;
    /// As in the test above: nothing of the rogue's is stored or kept.
    const STORE_GROWTH_BOUND: u64 = 1 << 20;
    const RSS_GROWTH_BOUND: u64 = 64 << 20;

    let broker = BrokerBuilder::new()
        .config("[limits]")
        .config("unsolicited_replies_per_minute = 1000000")
        .start()
        .await;
    let pid = broker.pid();
    let (_tenant, agent, portal) = bystander(&broker).await;
    let rogue = broker.create_tenant("rogue").await;
    let channel = attacker_channel(&broker).await;
    let session = RawSession::open(&channel, raw::hello(&rogue, "rogue-1"))
        .await
        .expect("the rogue's session is accepted");
    let store_before = store_bytes(&broker);
    let before = ProcStat::of(pid);

    let sampler = Sampler::start(pid);
    let pings = Bystander::start(portal.clone(), LATENCY_BOUND);
    let outcomes = OutcomeProbe::start(portal.clone(), "kept-1");
    let started = Instant::now();
    let frames = (0..REPLIES).map(|i| reply(i as u64 + 1, &format!("forged-{i}")));
    let sent = pump(&session, frames, CancellationToken::new())
        .await
        .expect("pump");
    // Until the broker has refused every one (bounded).
    let deadline = Instant::now() + Duration::from_secs(30);
    let refused = loop {
        let metrics = broker.metrics().await;
        let refused = counter(
            &metrics,
            "relay_agent_replies_refused_total{reason=\"unsolicited\"}",
        );
        if refused >= REPLIES as u64 || Instant::now() > deadline {
            break refused;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let attack = started.elapsed();
    let during = ProcStat::of(pid);
    let peak = sampler.stop().await;
    let calls = pings.stop().await;
    let slowest_outcome = outcomes.stop(1).await;
    drop((session, channel));
    let after = ProcStat::of(pid);
    let store_after = store_bytes(&broker);

    eprintln!(
        "{sent} forged replies of {REPLY_BYTES} bytes on one session in {attack:?}; the broker refused {refused} as unsolicited"
    );
    eprintln!("broker before: {before}");
    eprintln!(
        "broker during: {during} (peaks: RSS {} MiB, {} descriptors, {} threads)",
        peak.rss_bytes >> 20,
        peak.open_fds,
        peak.threads
    );
    eprintln!("broker after:  {after}");
    eprintln!("store file: {store_before} bytes before, {store_after} after");
    let slowest_ping = assert_unharmed(&calls, 1, LATENCY_BOUND);
    eprintln!(
        "bystander: {} pings, slowest {slowest_ping:?}; GetOutcome slowest {slowest_outcome:?}",
        calls.len()
    );
    assert_eq!(
        refused, REPLIES as u64,
        "every forged reply reached the broker and was refused"
    );
    assert!(
        peak.rss_bytes <= before.rss_bytes + RSS_GROWTH_BOUND,
        "RSS peaked at {} MiB from {} MiB",
        peak.rss_bytes >> 20,
        before.rss_mib()
    );
    assert!(
        store_after <= store_before + STORE_GROWTH_BOUND,
        "the store grew from {store_before} to {store_after} bytes"
    );
    agent.stop().await;
}

//! Overload and abuse protection: each limit, when provoked, is answered with
//! its own reason, and another tenant keeps working meanwhile.
//!
//! Covered elsewhere: the hello timeout and a first frame that is not Hello
//! (credentials.rs), the per-user-account rate limit (writeback.rs).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use proto::pb::relay_client::RelayClient;
use proto::pb::{self, GoodbyeReason, Operation};
use relay_client::credential::Authorize;
use relay_client::{ClientError, Reason};
use sas::Right;
use tests::pressure::{Bystander, ProcStat, Sampler, assert_unharmed};
use tests::raw::{self, RawSession};
use tests::{BrokerBuilder, BrokerProcess, EchoAgent, Tenant, reason};
use tokio::io::AsyncReadExt;
use tonic::Code;

fn metadata(err: &ClientError) -> &HashMap<String, String> {
    match err {
        ClientError::Relay { metadata, .. } => metadata,
        other => panic!("no relay reason: {other:?}"),
    }
}

/// The reason and metadata of a refused agent session.
fn refusal(result: Result<RawSession, tonic::Status>) -> (Reason, HashMap<String, String>) {
    let status = result.err().expect("the session should be refused");
    proto::reason_of(&status).unwrap_or_else(|| panic!("no relay reason: {status:?}"))
}

/// A ping through `tenant`'s own agent: that tenant still works.
async fn assert_pings(broker: &BrokerProcess, tenant: &Tenant, agent_id: &str) {
    let pong = broker
        .portal(tenant, Right::Send)
        .await
        .ping(None)
        .await
        .expect("the other tenant still works");
    assert_eq!(pong.agent_id, agent_id);
}

// Past its requests per minute a tenant gets RATE_LIMITED with a retry time;
// another tenant's allowance is its own.
#[tokio::test]
async fn a_tenant_over_its_request_rate_is_told_when_to_retry() {
    let broker = BrokerBuilder::new()
        .config("[limits]")
        .config("tenant_requests_per_minute = 3")
        .start()
        .await;
    let a = broker.create_tenant("tenant-a").await;
    let b = broker.create_tenant("tenant-b").await;
    let _agent_a = EchoAgent::start(&broker, &a, "agent-a").await;
    let _agent_b = EchoAgent::start(&broker, &b, "agent-b").await;
    let portal_a = broker.portal(&a, Right::Send).await;
    for i in 0..3 {
        portal_a
            .submit(
                &format!("a-{i}"),
                Operation::ResetPassword,
                "agent-a",
                vec![1],
                None,
            )
            .await
            .expect("within the limit");
    }
    let err = portal_a
        .submit("a-3", Operation::ResetPassword, "agent-a", vec![1], None)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), Some(Reason::RateLimited), "{err:?}");
    assert_eq!(err.code(), Some(Code::ResourceExhausted));
    assert_eq!(metadata(&err)["limit"], "3");
    // One request's allowance comes back every 20 s.
    let retry: u64 = metadata(&err)["retry_after_ms"]
        .parse()
        .expect("milliseconds");
    assert!(retry > 0 && retry <= 20_000, "{retry}");

    let reply = broker
        .portal(&b, Right::Send)
        .await
        .submit("b-0", Operation::ResetPassword, "agent-b", vec![1], None)
        .await
        .expect("the other tenant is not limited");
    assert_eq!(reply.agent_id, "agent-b");
}

// AGENTS_BUSY once every agent holds max_in_flight_per_agent requests; with
// a second agent the next request goes there instead.
#[tokio::test]
async fn a_busy_agent_gets_no_more_than_its_requests_in_flight() {
    let broker = BrokerBuilder::new()
        .config("[limits]")
        .config("max_in_flight_per_agent = 1")
        .start()
        .await;
    let a = broker.create_tenant("tenant-a").await;
    let b = broker.create_tenant("tenant-b").await;
    let delay = Duration::from_secs(2);
    let slow_1 = EchoAgent::start_with_delay(&broker, &a, "slow-1", delay).await;
    let _agent_b = EchoAgent::start(&broker, &b, "agent-b").await;
    let portal = broker.portal(&a, Right::Send).await;
    let submit = |id: &'static str, agent: &'static str| {
        let portal = portal.clone();
        async move {
            portal
                .submit(
                    id,
                    Operation::ResetPassword,
                    agent,
                    vec![1],
                    Some(Duration::from_secs(20)),
                )
                .await
        }
    };

    let r1 = tokio::spawn(submit("r1", "slow-1"));
    slow_1.wait_for_request("r1").await;
    let err = submit("r2", "slow-1").await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::AgentsBusy), "{err:?}");
    assert_eq!(err.code(), Some(Code::ResourceExhausted));
    assert_pings(&broker, &b, "agent-b").await;
    assert_eq!(r1.await.expect("join").expect("r1").agent_id, "slow-1");

    let _slow_2 = EchoAgent::start_with_delay(&broker, &a, "slow-2", delay).await;
    let r3 = tokio::spawn(submit("r3", "slow-1"));
    slow_1.wait_for_request("r3").await;
    // The full agent is busy for the request addressed to it; the idle
    // agent takes the one addressed to it.
    assert_eq!(
        submit("r3b", "slow-1").await.unwrap_err().reason(),
        Some(Reason::AgentsBusy)
    );
    let r4 = submit("r4", "slow-2")
        .await
        .expect("the idle agent takes it");
    let r3 = r3.await.expect("join").expect("r3");
    assert_ne!(r3.agent_id, r4.agent_id);
}

// A tenant at sessions_per_tenant cannot add an agent id (TOO_MANY_SESSIONS),
// but an agent id it has may reconnect (the new session replaces the old).
#[tokio::test]
async fn a_tenant_at_its_session_limit_adds_no_agent_but_may_replace_one() {
    let broker = BrokerBuilder::new()
        .config("[limits]")
        .config("sessions_per_tenant = 1")
        .start()
        .await;
    let a = broker.create_tenant("tenant-a").await;
    let b = broker.create_tenant("tenant-b").await;
    let mut dc01 = EchoAgent::start(&broker, &a, "dc01").await;

    let refused = raw::refused_agent(&broker, &a, "dc02").await;
    assert!(refused.contains("TOO_MANY_SESSIONS"), "{refused}");
    let channel = broker.endpoint().connect().await.expect("channel");
    let (why, meta) = refusal(RawSession::open(&channel, raw::hello(&a, "dc03")).await);
    assert_eq!(why, Reason::TooManySessions);
    assert_eq!(meta["scope"], "tenant");
    assert_eq!(meta["limit"], "1");

    let _other = EchoAgent::start(&broker, &b, "dc02").await;
    assert_pings(&broker, &b, "dc02").await;

    let mut again = RawSession::open(&channel, raw::hello(&a, "dc01"))
        .await
        .expect("the same agent id is not refused");
    let replaced = dc01.disconnected().await;
    assert!(replaced.contains("REPLACED"), "{replaced}");
    // The agent reconnects, replacing the hand-made session in turn.
    dc01.connected().await;
    assert_eq!(again.goodbye().await.reason(), GoodbyeReason::Replaced);
    assert_pings(&broker, &a, "dc01").await;
}

// Past sessions_per_source agent sessions of one tenant from one address,
// the tenant's next is refused TOO_MANY_SESSIONS with scope "source"; its
// first ones, and other tenants' sessions from the same address, keep working.
#[tokio::test]
async fn a_source_address_at_its_session_limit_is_refused() {
    let broker = BrokerBuilder::new()
        .config("[limits]")
        .config("sessions_per_source = 2")
        .start()
        .await;
    let a = broker.create_tenant("tenant-a").await;
    let b = broker.create_tenant("tenant-b").await;
    let _agent_a1 = EchoAgent::start(&broker, &a, "agent-a1").await;
    let _agent_a2 = EchoAgent::start(&broker, &a, "agent-a2").await;

    let channel = broker.endpoint().connect().await.expect("channel");
    let (why, meta) = refusal(RawSession::open(&channel, raw::hello(&a, "agent-a3")).await);
    assert_eq!(why, Reason::TooManySessions);
    assert_eq!(meta["scope"], "source");
    assert_eq!(meta["limit"], "2");

    let _agent_b = EchoAgent::start(&broker, &b, "agent-b").await;
    assert_pings(&broker, &b, "agent-b").await;
    let pong = broker
        .portal(&a, Right::Send)
        .await
        .ping(None)
        .await
        .expect("tenant a's first agents still work");
    assert!(pong.agent_id.starts_with("agent-a"), "{}", pong.agent_id);
}

// Observation 6 of issue 17: behind one address (a shared egress NAT), other
// tenants' sessions at the per-source limit do not lock a victim tenant's
// agent out: each tenant has its own allowance per address.
#[tokio::test]
async fn other_tenants_behind_one_address_do_not_lock_a_tenant_out() {
    use std::net::{IpAddr, Ipv4Addr};
    use tests::pressure::{Bystander, ProcStat, assert_unharmed};
    /// A small limit keeps the test quick; the default is 1,024.
    const PER_SOURCE: usize = 16;
    /// Behind the NAT.
    const SHARED: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    /// A ping is a few milliseconds; a second is what a person notices.
    const LATENCY_BOUND: Duration = Duration::from_secs(1);

    let broker = BrokerBuilder::new()
        .config("[limits]")
        .config(format!("sessions_per_source = {PER_SOURCE}"))
        .start()
        .await;
    let bystander = broker.create_tenant("bystander").await;
    let _agent = EchoAgent::start(&broker, &bystander, "dc01").await;
    let pings = Bystander::start(broker.portal(&bystander, Right::Send).await, LATENCY_BOUND);
    let before = ProcStat::of(broker.pid());
    let connect = || async {
        broker
            .endpoint()
            .endpoint()
            .expect("endpoint")
            .local_address(Some(SHARED))
            .connect()
            .await
            .expect("connect from 127.0.0.2")
    };
    let mut held = Vec::new();
    for tenant in ["noisy-1", "noisy-2"] {
        let t = broker.create_tenant(tenant).await;
        for i in 0..PER_SOURCE {
            let session = RawSession::open(&connect().await, raw::hello(&t, &format!("a{i}")))
                .await
                .unwrap_or_else(|e| panic!("{tenant} session {i}: {e}"));
            held.push(session);
        }
        // Each at its own limit from the shared address.
        let (why, meta) =
            refusal(RawSession::open(&connect().await, raw::hello(&t, "one-more")).await);
        assert_eq!(
            (why, meta["scope"].as_str()),
            (Reason::TooManySessions, "source")
        );
    }
    let during = ProcStat::of(broker.pid());
    // 32 sessions of others from the address: the victim still gets in.
    let victim = broker.create_tenant("victim").await;
    let session = RawSession::open(&connect().await, raw::hello(&victim, "dc01"))
        .await
        .expect("the victim's agent connects behind the shared address");
    assert!(!session.welcome.session_id.is_empty());
    let calls = pings.stop().await;
    drop(held);
    let after = ProcStat::of(broker.pid());
    eprintln!("broker before: {before}");
    eprintln!(
        "broker with {} sessions from one address: {during}",
        2 * PER_SOURCE
    );
    eprintln!("broker after:  {after}");
    let slowest = assert_unharmed(&calls, 1, LATENCY_BOUND);
    eprintln!("bystander: {} pings, slowest {slowest:?}", calls.len());
}

// A second agent session on the same connection is refused TOO_MANY_STREAMS
// (sessions_per_connection defaults to 1); the first one stays.
#[tokio::test]
async fn one_connection_carries_one_agent_session() {
    let broker = BrokerBuilder::new().start().await;
    let a = broker.create_tenant("tenant-a").await;
    let b = broker.create_tenant("tenant-b").await;
    let channel = broker.endpoint().connect().await.expect("channel");
    let _first = RawSession::open(&channel, raw::hello(&a, "dc01"))
        .await
        .expect("the first session is welcome");
    let (why, meta) = refusal(RawSession::open(&channel, raw::hello(&a, "dc02")).await);
    assert_eq!(why, Reason::TooManyStreams);
    assert_eq!(meta["limit"], "1");

    let online = broker
        .portal(&a, Right::Send)
        .await
        .configuration()
        .await
        .expect("configuration")
        .agents_online;
    let ids: Vec<_> = online.iter().map(|a| a.agent_id.as_str()).collect();
    assert_eq!(ids, ["dc01"]);
    let _agent_b = EchoAgent::start(&broker, &b, "agent-b").await;
    assert_pings(&broker, &b, "agent-b").await;
}

// An envelope over max_envelope_bytes is ENVELOPE_TOO_LARGE; a message over
// the decoding limit (max_envelope_bytes + 16 KiB) is refused by tonic before
// the service sees it, with a status naming the limit.
#[tokio::test]
async fn oversized_messages_are_refused_with_the_limit() {
    let broker = BrokerBuilder::new()
        .config("max_envelope_bytes = 1024")
        .start()
        .await;
    let a = broker.create_tenant("tenant-a").await;
    let b = broker.create_tenant("tenant-b").await;
    let _agent_b = EchoAgent::start(&broker, &b, "agent-b").await;
    let portal_a = broker.portal(&a, Right::Send).await;
    assert_eq!(
        reason(
            portal_a
                .submit(
                    "r1",
                    Operation::ResetPassword,
                    "agent-b",
                    vec![0; 1025],
                    None
                )
                .await
        ),
        Reason::EnvelopeTooLarge
    );

    // The generated client, not PortalClient: this status carries no relay
    // reason, and PortalClient reports such a Submit failure as OUTCOME_UNKNOWN.
    let channel = broker.endpoint().connect().await.expect("channel");
    let mut client = RelayClient::with_interceptor(channel, Authorize(a.credential(Right::Send)));
    let status = client
        .submit(pb::SubmitRequest {
            tenant: a.name.clone(),
            request_id: "r2".into(),
            operation: Operation::ResetPassword as i32,
            envelope: vec![0; 128 * 1024].into(),
            agent_id: "agent-a".into(),
        })
        .await
        .unwrap_err();
    // tonic 0.14 answers OUT_OF_RANGE ("decoded message length too large").
    assert!(
        matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{status:?}"
    );
    let limit = (1024 + 16 * 1024).to_string();
    assert!(status.message().contains(&limit), "{status:?}");

    let reply = broker
        .portal(&b, Right::Send)
        .await
        .submit("b-1", Operation::ResetPassword, "agent-b", vec![1], None)
        .await
        .expect("the other tenant still works");
    assert_eq!(reply.agent_id, "agent-b");
}

// A connection that never completes its TLS handshake is closed after
// tls_handshake_timeout; other connections are served meanwhile.
#[tokio::test]
async fn a_stalled_tls_handshake_is_cut_off() {
    let broker = BrokerBuilder::new()
        .config("[limits]")
        .config("tls_handshake_timeout = \"500ms\"")
        .start()
        .await;
    let tenant = broker.create_tenant("contoso").await;
    let mut stalled = tokio::net::TcpStream::connect(&broker.grpc_addr)
        .await
        .expect("connect");
    let started = Instant::now();

    broker
        .portal(&tenant, Right::Send)
        .await
        .configuration()
        .await
        .expect("another connection is served");

    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), stalled.read(&mut buf))
        .await
        .expect("the broker never closed the stalled connection");
    let elapsed = started.elapsed();
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(elapsed >= Duration::from_millis(400), "{elapsed:?}");
}

// Bytes that are not the expected protobuf message are named as such:
// MALFORMED_MESSAGE for a call, a MALFORMED_FRAME Goodbye on a session; a
// second Hello on a session ends it with PROTOCOL_VIOLATION.
#[tokio::test]
async fn malformed_and_unexpected_messages_are_named() {
    let broker = BrokerBuilder::new().start().await;
    let a = broker.create_tenant("tenant-a").await;
    let b = broker.create_tenant("tenant-b").await;
    let _agent_b = EchoAgent::start(&broker, &b, "agent-b").await;
    let connect = || async { broker.endpoint().connect().await.expect("channel") };

    let token = a.credential(Right::Send).mint(Duration::from_secs(300));
    let status = raw::unary::<pb::SubmitReply>(
        &connect().await,
        raw::SUBMIT,
        vec![0xff; 10],
        token.expose(),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let (why, meta) = proto::reason_of(&status).expect("reason");
    assert_eq!(why, Reason::MalformedMessage);
    assert_eq!(meta["message_type"], "SubmitRequest");

    let mut garbled = RawSession::open(&connect().await, raw::hello(&a, "garbled"))
        .await
        .expect("welcome");
    garbled.send_bytes(vec![0xff; 10]).await;
    assert_eq!(
        garbled.goodbye().await.reason(),
        GoodbyeReason::MalformedFrame
    );

    let mut twice = RawSession::open(&connect().await, raw::hello(&a, "twice"))
        .await
        .expect("welcome");
    twice.send(&raw::hello(&a, "twice")).await;
    assert_eq!(
        twice.goodbye().await.reason(),
        GoodbyeReason::ProtocolViolation
    );

    assert_pings(&broker, &b, "agent-b").await;
}

// Text an agent chooses (its version, an AgentError's message) is logged
// with its control characters escaped: a newline or a terminal escape in it
// cannot forge a line of the broker's log.
#[tokio::test]
async fn agent_text_is_escaped_in_the_brokers_log() {
    let broker = BrokerBuilder::new().start().await;
    let before = ProcStat::of(broker.pid());
    let a = broker.create_tenant("tenant-a").await;
    let b = broker.create_tenant("bystander").await;
    let _b_agent = EchoAgent::start(&broker, &b, "b-agent").await;
    let bystander = Bystander::start(broker.portal(&b, Right::Send).await, Duration::from_secs(5));
    let sampler = Sampler::start(broker.pid());
    let channel = broker.endpoint().connect().await.expect("channel");
    let mut hello = raw::hello(&a, "rogue");
    if let Some(pb::agent_frame::Frame::Hello(h)) = &mut hello.frame {
        h.agent_version = "9.9\n2026-12-05T00:00:00Z ERROR forged version\u{1b}[31m".into();
    }
    let mut session = RawSession::open(&channel, hello).await.expect("session");
    let portal = broker.portal(&a, Right::Send).await;
    let submit = tokio::spawn(async move {
        portal
            .submit("r-1", Operation::ResetPassword, "rogue", vec![1], None)
            .await
    });
    let request = session.next_request().await;
    session
        .send(&pb::AgentFrame {
            frame: Some(pb::agent_frame::Frame::Reply(pb::AgentReply {
                correlation_id: request.correlation_id,
                request_id: request.request_id,
                result: Some(pb::agent_reply::Result::Error(pb::AgentError {
                    code: pb::AgentErrorCode::Internal as i32,
                    message: "failed\r\n2026-12-05T00:00:01Z ERROR forged message\u{1b}[2J".into(),
                    refusal: 0,
                })),
            })),
        })
        .await;
    let err = submit.await.expect("task").unwrap_err();
    assert_eq!(err.reason(), Some(Reason::AgentError), "{err}");

    let logs = broker.logs();
    for forged in ["ERROR forged version", "ERROR forged message"] {
        assert!(
            !logs
                .lines()
                .any(|l| l.starts_with("2026-12-05T00:00") || l.trim_start().starts_with(forged)),
            "a forged line in the log:\n{logs}"
        );
        assert!(
            logs.contains(forged),
            "the text is logged, escaped:\n{logs}"
        );
    }
    assert!(logs.contains("\\n2026-12-05T00:00:00Z"), "{logs}");
    assert!(logs.contains("\\r\\n2026-12-05T00:00:01Z"), "{logs}");
    assert!(
        !logs.contains('\u{1b}'),
        "no raw escape character in the log"
    );
    // A few bystander pings beside the forged text, all answered promptly.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let calls = bystander.stop().await;
    let slowest = assert_unharmed(&calls, 2, Duration::from_secs(1));
    let peak = sampler.stop().await;
    let after = ProcStat::of(broker.pid());
    eprintln!("before {before}; peak {peak:?}; after {after}; bystander slowest {slowest:?}");
}

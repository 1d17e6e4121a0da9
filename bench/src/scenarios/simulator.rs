//! `bench simulate`: many idle agents in one process, each a real TLS +
//! HTTP/2 connection with the agent's keepalive settings and one
//! `OpenSession` stream: Hello with a fresh Listen token, Welcome, then a
//! heartbeat every interval the broker asks for, a token renewal at
//! half-life, nothing else. When a session ends it reconnects with the real
//! agent's backoff (`writeback_agent::backoff`, the agent's default
//! 500 ms to 30 s, full jitter, reset after a healthy minute), so a restart
//! of the broker meets the reconnect storm real agents would make.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use proto::pb::agent_gateway_client::AgentGatewayClient;
use proto::pb::broker_frame::Frame as BrokerFrameKind;
use proto::pb::{self, AgentFrame, agent_frame};
use relay_client::connect::{BrokerEndpoint, CONNECT_TIMEOUT, HANDSHAKE_ALLOWANCE};
use relay_client::credential::Credential;
use sas::{Key, Right};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;
use writeback_agent::HEALTHY_SESSION;
use writeback_agent::backoff::Backoff;

/// The agent's defaults (`reconnect_min`, `reconnect_max`, `token_lifetime`).
const RECONNECT_MIN: Duration = Duration::from_millis(500);
const RECONNECT_MAX: Duration = Duration::from_secs(30);
const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// The agent's limits on each stage of a new session: TCP, TLS and HTTP/2
/// (`connect::CONNECT_TIMEOUT + HANDSHAKE_ALLOWANCE`), then the answer to
/// the session and the Welcome frame (`WELCOME_TIMEOUT` in the agent's
/// session.rs), so that a simulated agent gives up and backs off when a real
/// one would.
const DIAL_TIMEOUT: Duration =
    Duration::from_secs(CONNECT_TIMEOUT.as_secs() + HANDSHAKE_ALLOWANCE.as_secs());
const WELCOME_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    url: String,
    #[arg(long)]
    ca: PathBuf,
    /// Lines of `tenant<TAB>listen key (base64)`.
    #[arg(long)]
    tenants: PathBuf,
    /// Index of this process's first agent (agent ids are `sim-<index>`).
    #[arg(long)]
    first: usize,
    #[arg(long)]
    count: usize,
    /// Agent `i` belongs to tenant `i / agents_per_tenant`.
    #[arg(long)]
    agents_per_tenant: usize,
    /// Source addresses; agent `i` binds to `sources[i % len]`.
    #[arg(long, value_delimiter = ',')]
    sources: Vec<IpAddr>,
    /// First connections at once while ramping up.
    #[arg(long, default_value_t = 64)]
    ramp: usize,
}

#[derive(Default)]
struct Counters {
    connected: AtomicU64,
    attempts: AtomicU64,
    failures: AtomicU64,
    /// Failures that were timeouts (the broker did not answer in time),
    /// as opposed to refusals and resets.
    timeouts: AtomicU64,
    /// Failed attempts by error message, for the log.
    failure_kinds: Mutex<BTreeMap<String, u64>>,
}

/// Runs the agents until killed; prints `started` at once, then
/// `status connected=N attempts=N failures=N timeouts=N` every second.
pub async fn simulate(args: Args) -> anyhow::Result<()> {
    raise_nofile();
    anyhow::ensure!(!args.sources.is_empty(), "no --sources");
    let text = std::fs::read_to_string(&args.tenants)
        .with_context(|| format!("read {}", args.tenants.display()))?;
    let mut tenants = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let Some((tenant, key)) = line.split_once('\t') else {
            bail!("bad line in the tenants file: {line:?}");
        };
        let key = Key::from_base64(&zeroize::Zeroizing::new(key.to_owned()))?;
        tenants.push(Credential::new(tenant, Right::Listen, key));
    }
    let base = BrokerEndpoint::new(args.url.clone(), Some(&args.ca)).endpoint()?;
    let endpoints: Vec<Endpoint> = args
        .sources
        .iter()
        .map(|ip| base.clone().local_address(Some(*ip)))
        .collect();
    let counters = Arc::new(Counters::default());
    let ramp = Arc::new(Semaphore::new(args.ramp.max(1)));
    for i in args.first..args.first + args.count {
        let credential = tenants
            .get(i / args.agents_per_tenant)
            .with_context(|| format!("no tenant for agent {i}"))?
            .clone();
        tokio::spawn(agent(
            credential,
            format!("sim-{i}"),
            endpoints[i % endpoints.len()].clone(),
            Arc::clone(&counters),
            Arc::clone(&ramp),
        ));
    }
    println!("started");
    let mut logged_failures = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let failures = counters.failures.load(Ordering::Relaxed);
        println!(
            "status connected={} attempts={} failures={failures} timeouts={}",
            counters.connected.load(Ordering::Relaxed),
            counters.attempts.load(Ordering::Relaxed),
            counters.timeouts.load(Ordering::Relaxed),
        );
        if failures != logged_failures {
            logged_failures = failures;
            let kinds = counters
                .failure_kinds
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            eprintln!("failed attempts so far, by error: {kinds:#?}");
        }
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit.
pub fn raise_nofile() {
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("cannot raise RLIMIT_NOFILE: {e}");
    }
}

/// One agent, forever: a session, then the agent's backoff, again.
async fn agent(
    credential: Credential,
    agent_id: String,
    endpoint: Endpoint,
    counters: Arc<Counters>,
    ramp: Arc<Semaphore>,
) {
    let mut backoff = Backoff::new(RECONNECT_MIN, RECONNECT_MAX);
    // Only the very first connection waits for a ramp slot.
    let mut slot = Arc::clone(&ramp).acquire_owned().await.ok();
    loop {
        counters.attempts.fetch_add(1, Ordering::Relaxed);
        match session(&credential, &agent_id, &endpoint, &counters, slot.take()).await {
            Ok(lasted) if lasted >= HEALTHY_SESSION => backoff.reset(),
            Ok(_) => {}
            Err(e) => {
                counters.failures.fetch_add(1, Ordering::Relaxed);
                if is_timeout(&e) {
                    counters.timeouts.fetch_add(1, Ordering::Relaxed);
                }
                *counters
                    .failure_kinds
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(format!("{e:#}"))
                    .or_default() += 1;
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Whether an attempt failed because something did not happen in time (the
/// TCP connect, the whole dial, the answer, Welcome) rather than being
/// refused or reset.
fn is_timeout(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause.is::<tokio::time::error::Elapsed>()
            || cause
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
    })
}

/// One session until it ends; how long it was up.
async fn session(
    credential: &Credential,
    agent_id: &str,
    endpoint: &Endpoint,
    counters: &Counters,
    ramp_slot: Option<OwnedSemaphorePermit>,
) -> anyhow::Result<Duration> {
    let (tx, rx) = mpsc::channel::<AgentFrame>(4);
    let hello = AgentFrame {
        frame: Some(agent_frame::Frame::Hello(pb::Hello {
            tenant: credential.resource.clone(),
            agent_id: agent_id.to_owned(),
            agent_version: "bench-simulator".into(),
            token: credential.mint(TOKEN_LIFETIME).expose().to_owned(),
        })),
    };
    tx.try_send(hello).context("queue Hello")?;
    let channel = tokio::time::timeout(DIAL_TIMEOUT, endpoint.connect())
        .await
        .context("no connection within the agent's dial timeout")?
        .context("connect")?;
    let mut client = AgentGatewayClient::new(channel);
    let mut inbound = tokio::time::timeout(
        WELCOME_TIMEOUT,
        client.open_session(ReceiverStream::new(rx)),
    )
    .await
    .context("no answer to the session in time")?
    .context("open the session")?
    .into_inner();
    let welcome = match tokio::time::timeout(WELCOME_TIMEOUT, inbound.message())
        .await
        .context("no Welcome in time")?
        .context("read Welcome")?
    {
        Some(pb::BrokerFrame {
            frame: Some(BrokerFrameKind::Welcome(welcome)),
        }) => welcome,
        other => bail!("expected Welcome, got {other:?}"),
    };
    drop(ramp_slot);
    counters.connected.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let interval = Duration::from_millis(u64::from(welcome.heartbeat_interval_ms.max(100)));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    let mut renew_at = started + TOKEN_LIFETIME / 2;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let beat = agent_frame::Frame::Heartbeat(pb::Heartbeat { sent_unix_ms: 0 });
                let _ = tx.try_send(AgentFrame { frame: Some(beat) });
                if Instant::now() >= renew_at {
                    let token = credential.mint(TOKEN_LIFETIME).expose().to_owned();
                    let renew = agent_frame::Frame::RenewToken(pb::RenewToken { token });
                    let _ = tx.try_send(AgentFrame { frame: Some(renew) });
                    renew_at = Instant::now() + TOKEN_LIFETIME / 2;
                }
            }
            frame = inbound.message() => match frame {
                Ok(Some(pb::BrokerFrame { frame: Some(BrokerFrameKind::Goodbye(_)) }))
                | Ok(None)
                | Err(_) => break,
                Ok(Some(_)) => {}
            }
        }
    }
    counters.connected.fetch_sub(1, Ordering::Relaxed);
    Ok(started.elapsed())
}

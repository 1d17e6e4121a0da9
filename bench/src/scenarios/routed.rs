//! `routed`: portal client -> broker -> agent -> back, everything as in
//! production except the directory. The caller is a `SealedPortal` (portal
//! key, the agent key's fingerprint pinned) calling `submit`: seal, relay,
//! open the reply; the agent is a separate
//! process running the agent library's session loop with its real
//! `EnvelopeHandler` (open, replay window and request ids recorded durably,
//! seal the reply), whose directory operation answers success at once.
//! [`measure_between`] does the onboarding and the measurement for any
//! pair of brokers: the same one here, two cluster nodes in
//! [`routed_cross_node`](super::routed_cross_node).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use envelope::body::outcome;
use envelope::{KeyPair, PublicKey, ReplyBody, RequestBody, RequestHeader};
use proto::pb::{self, Operation};
use relay_client::admin::TenantKeys;
use relay_client::credential::{Authorize, Credential};
use relay_client::portal_client::PortalClient;
use relay_client::sealed::SealedPortal;
use sas::{KeySlot, Right};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use writeback_agent::envelopes::{DurableReplay, EnvelopeHandler, KeySource, Operations, Validity};
use writeback_agent::{AgentConfig, AgentEvent, EventSink};

use super::Context;
use crate::broker::Broker;
use crate::load::{self, Call, Measured, Processes};
use crate::payload;
use crate::procs::{Proc, this_binary};

pub const TENANT: &str = "bench";
const AGENT_ID: &str = "bench-agent";
/// The deadline of each relayed call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The routed figures, with the sizes of what travelled.
#[derive(Debug, Clone, Serialize)]
pub struct Routed {
    #[serde(flatten)]
    pub measured: Measured,
    /// Sealed request envelope, bytes (512 bytes of plaintext inside).
    pub request_envelope_bytes: usize,
    /// Sealed reply envelope, bytes (512 bytes of plaintext inside).
    pub reply_envelope_bytes: usize,
}

/// `bench agent`: one agent with the production envelope handler.
#[derive(clap::Args)]
pub struct AgentArgs {
    #[arg(long)]
    broker: String,
    #[arg(long)]
    ca: PathBuf,
    #[arg(long)]
    listen_key_file: PathBuf,
    /// The agent's X25519 private key, base64, in a file.
    #[arg(long)]
    agent_key_file: PathBuf,
    /// The pinned portal public key, base64.
    #[arg(long)]
    portal_key: String,
    /// Where the replay store lives.
    #[arg(long)]
    state_dir: PathBuf,
}

/// The directory double: every request succeeds at once.
struct Succeed;

#[tonic::async_trait]
impl Operations for Succeed {
    async fn apply(&self, _header: &RequestHeader, _body: &RequestBody) -> ReplyBody {
        payload::reply_body()
    }
}

/// Runs the agent until killed; prints `connected` for each session.
pub async fn agent(args: AgentArgs) -> anyhow::Result<()> {
    // Logs only: the bench exports no traces.
    let _logs = writeback_agent::telemetry::init(Default::default(), &Default::default())?;
    let config = AgentConfig::from_toml(&format!(
        "broker = {:?}\nca_file = {:?}\ntenant = {TENANT:?}\nagent_id = {AGENT_ID:?}\n\
         listen_key_file = {:?}\n",
        args.broker, args.ca, args.listen_key_file
    ))?;
    let private = B64.decode(std::fs::read_to_string(&args.agent_key_file)?.trim())?;
    let agent_key = KeyPair::from_private_bytes(&private)?;
    let portal_key = PublicKey::from_bytes(&B64.decode(&args.portal_key)?)?;
    let handler = Arc::new(EnvelopeHandler {
        tenant: TENANT.to_owned(),
        agent_id: AGENT_ID.to_owned(),
        keys: KeySource::Fixed {
            keys: vec![agent_key],
            portals: vec![portal_key],
        },
        validity: Validity::default(),
        replay: Arc::new(DurableReplay::open(&args.state_dir.join("replay.redb"))?),
        operations: Arc::new(Succeed),
        events: None,
    });
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if let AgentEvent::Connected { session_id, .. } = event {
                println!("connected session={session_id}");
            }
        }
    });
    writeback_agent::run(
        &config,
        handler,
        EventSink::new(tx),
        CancellationToken::new(),
    )
    .await?;
    Ok(())
}

#[derive(Clone)]
struct RoutedCall {
    client: PortalClient,
    sealed: Arc<SealedPortal>,
    agent_key: PublicKey,
    body: Arc<RequestBody>,
    next_id: Arc<AtomicU64>,
}

impl RoutedCall {
    /// One call taken apart, for the sizes of the request and reply
    /// envelopes, which `SealedPortal::submit` does not show.
    async fn sealed_call(&self) -> anyhow::Result<(usize, usize)> {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let request_id = format!("bench-{n}");
        let (envelope, pending) = self.sealed.seal(
            &request_id,
            Operation::ResetPassword,
            &self.body,
            &self.agent_key,
            AGENT_ID,
        )?;
        let sent = envelope.len();
        let submitted = self
            .client
            .submit(
                &request_id,
                Operation::ResetPassword,
                AGENT_ID,
                envelope,
                Some(CALL_TIMEOUT),
            )
            .await?;
        let reply = pending.open(&submitted.envelope)?;
        anyhow::ensure!(
            reply.outcome == outcome::SUCCESS,
            "the agent answered outcome {}: {}",
            reply.outcome,
            reply.message
        );
        Ok((sent, submitted.envelope.len()))
    }
}

impl Call for RoutedCall {
    /// What a portal calls: `SealedPortal::submit` (the agent key it seals
    /// to is cached for a minute), which seals, relays and opens the reply.
    async fn call(&self) -> anyhow::Result<()> {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let answer = self
            .sealed
            .submit(
                &format!("bench-{n}"),
                Operation::ResetPassword,
                &self.body,
                Some(CALL_TIMEOUT),
            )
            .await?;
        anyhow::ensure!(
            answer.reply.outcome == outcome::SUCCESS,
            "the agent answered outcome {}: {}",
            answer.reply.outcome,
            answer.reply.message
        );
        Ok(())
    }
}

/// A fresh directory for the agent's replay store: in the run's directory,
/// or under `--agent-state-dir` with the guard that removes it.
fn agent_state_dir(
    ctx: &Context,
    dir: &std::path::Path,
) -> anyhow::Result<(PathBuf, Option<tempfile::TempDir>)> {
    match &ctx.settings.agent_state_dir {
        None => Ok((dir.join("agent-state"), None)),
        Some(base) => {
            std::fs::create_dir_all(base)?;
            let guard = tempfile::Builder::new()
                .prefix("relay-bench-agent-")
                .tempdir_in(base)?;
            Ok((guard.path().to_owned(), Some(guard)))
        }
    }
}

/// The broker's `[limits]` for the routed scenarios.
pub fn limits(ctx: &Context) -> Vec<String> {
    vec![
        // Unlimited: the benchmark is the runaway portal the limit stops.
        "tenant_requests_per_minute = 0".to_owned(),
        format!(
            "max_in_flight_per_agent = {}",
            (ctx.settings.plan.concurrency * 2).max(64)
        ),
    ]
}

pub async fn measure(ctx: &Context) -> anyhow::Result<Routed> {
    let dir = ctx.subdir("routed")?;
    let broker = Broker::start(
        ctx.broker_bin()?,
        &dir.join("broker"),
        &ctx.pki,
        &limits(ctx),
        &ctx.settings.rust_log,
    )
    .await?;
    let keys = broker.create_tenant(&broker.admin().await?, TENANT).await?;
    let routed = measure_between(
        ctx,
        &dir,
        &keys,
        &broker,
        &broker,
        &[("broker", broker.pid()?)],
    )
    .await;
    drop(broker);
    routed
}

/// How long a change made through one broker node may take to be seen by
/// another (a tenant, an agent key, an agent's subscription); on one node
/// it is there at once.
const PROPAGATION_TIMEOUT: Duration = Duration::from_secs(15);

/// Calls `f` until it succeeds, every 50 ms, for at most
/// [`PROPAGATION_TIMEOUT`]; then fails with its last error.
async fn until_ok<T, E, F, Fut>(what: &str, mut f: F) -> anyhow::Result<T>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + PROPAGATION_TIMEOUT;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                anyhow::bail!("{what}: still failing after {PROPAGATION_TIMEOUT:?}: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Onboards an agent on `agent_side`, calls it through `caller_side` (the
/// same broker, or another node of one cluster) and measures; `processes`
/// are the scenario's processes other than the caller and the agent.
pub async fn measure_between(
    ctx: &Context,
    dir: &std::path::Path,
    keys: &TenantKeys,
    agent_side: &Broker,
    caller_side: &Broker,
    processes: &Processes,
) -> anyhow::Result<Routed> {
    let key = |right| {
        keys.get(right, KeySlot::Primary)
            .cloned()
            .with_context(|| format!("the tenant has no primary {right:?} key"))
    };
    let listen_key = key(Right::Listen)?;
    let send_key = key(Right::Send)?;

    // Onboarding, as `writeback-agent init` and the portal administrator do
    // it: the agent key is registered with the broker, the portal pins its
    // fingerprint, the agent pins the portal key.
    let mut rng = envelope::os_rng();
    let portal_key = KeyPair::generate(&mut rng);
    let agent_key = KeyPair::generate(&mut rng);
    let listen = Credential::new(TENANT, Right::Listen, listen_key.clone());
    let gateway = pb::agent_gateway_client::AgentGatewayClient::with_interceptor(
        agent_side.endpoint().connect().await?,
        Authorize(listen),
    );
    let registration = pb::RegisterKeyRequest {
        tenant: TENANT.to_owned(),
        key: Some(pb::AgentKey {
            key_id: agent_key.public.key_id().to_hex(),
            public_key: agent_key.public.as_bytes().to_vec(),
            registered_unix_ms: 0,
            endorsements: Vec::new(),
        }),
    };
    // Another node than the one that created the tenant may not know it yet.
    until_ok("register the agent key", || {
        let mut gateway = gateway.clone();
        let registration = registration.clone();
        async move { gateway.register_key(registration).await }
    })
    .await?;
    let listen_key_file = dir.join("listen.key");
    broker::tls::write(&listen_key_file, listen_key.to_base64().as_bytes(), 0o600)?;
    let agent_key_file = dir.join("agent.key");
    broker::tls::write(
        &agent_key_file,
        B64.encode(agent_key.private_bytes().as_slice()).as_bytes(),
        0o600,
    )?;

    let (state_dir, _state_dir_guard) = agent_state_dir(ctx, dir)?;
    let mut cmd = this_binary("agent")?;
    cmd.arg("--broker")
        .arg(agent_side.url())
        .arg("--ca")
        .arg(&agent_side.ca_file)
        .arg("--listen-key-file")
        .arg(&listen_key_file)
        .arg("--agent-key-file")
        .arg(&agent_key_file)
        .arg("--portal-key")
        .arg(B64.encode(portal_key.public.as_bytes()))
        .arg("--state-dir")
        .arg(&state_dir)
        .env("RUST_LOG", &ctx.settings.rust_log);
    let mut agent = Proc::spawn("bench agent", cmd, &dir.join("agent.log"))?;
    agent.expect_line("connected").await?;

    let client = PortalClient::connect(
        &caller_side.endpoint(),
        TENANT,
        PortalClient::send_credential(TENANT, send_key),
    )
    .await?;
    let mut sealed = SealedPortal::new(
        client.clone(),
        portal_key,
        vec![agent_key.public.fingerprint()],
    );
    if let Some(count) = ctx.settings.portal_prepared {
        sealed = sealed.with_prepared(count);
    }
    // What SealedPortal::submit does when its cached key is older than a
    // minute: the broker's list of agent keys, checked against the pinned
    // fingerprint.
    let trusted = until_ok("find the agent key through the caller's broker", || async {
        let configuration = client.configuration().await?;
        anyhow::Ok(sealed.trusted_key(&configuration.agent_keys)?)
    })
    .await?;
    // The caller's broker can reach the agent (across nodes: once the
    // agent's node listens for the tenant and NATS has told the others).
    until_ok("ping the agent through the caller's broker", || {
        client.ping(Some(CALL_TIMEOUT))
    })
    .await?;
    let call = RoutedCall {
        client,
        sealed: Arc::new(sealed),
        agent_key: trusted,
        body: Arc::new(payload::request_body()),
        next_id: Arc::new(AtomicU64::new(0)),
    };
    let (request_envelope_bytes, reply_envelope_bytes) = call.sealed_call().await?;
    let processes: Vec<_> = processes
        .iter()
        .copied()
        .chain([("agent", agent.pid()?)])
        .collect();
    let measured = load::measure(call, &ctx.settings.plan, &processes).await;
    agent.kill9().await?;
    Ok(Routed {
        measured: measured?,
        request_envelope_bytes,
        reply_envelope_bytes,
    })
}

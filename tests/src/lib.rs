//! A small harness for cross-crate integration tests: real `relay-broker` and
//! `writeback-agent` processes, real TLS on loopback, ports from
//! `127.0.0.1:0`, readiness awaited from the processes' own status lines.
//!
//! ```ignore
//! let broker = BrokerBuilder::new().start().await;
//! let tenant = broker.create_tenant("contoso").await;
//! let agent = broker.agent_process(&tenant, "dc01").start().await;
//! ```
//!
//! # Layout
//!
//! - the crate root: [`BrokerBuilder`] and [`BrokerProcess`], tenants,
//!   keys, and the submit helpers most tests share
//! - [`agents`], [`agent_toml`]: the real `writeback-agent` process and an
//!   in-process echo agent that records what reached it; their TOML
//! - [`deployment`], [`sealed`], [`scenarios`]: a broker with an onboarded
//!   `writeback-agent` and the sample forests; onboarded in-process agents
//!   for envelope tests; one table of directory scenarios
//! - [`nats`], [`cluster`]: a real NATS cluster (`nats-server` processes)
//!   and broker nodes in cluster mode on it
//! - [`netns`]: network namespaces on a bridge, one per NATS server and
//!   broker node, with silent cuts between them (partitions, issue 19);
//!   `BrokerClusterBuilder::partitionable` puts a cluster in them and
//!   `tests/tests/partitions.rs` splits it
//! - [`faults`], [`connect_proxy`], [`tinyproxy`]: a TCP proxy that
//!   injects faults; an HTTP CONNECT proxy of our own; Debian's tinyproxy
//!   in a namespace, a real forward proxy (`tests/tests/proxy.rs`)
//! - [`load`], [`pressure`], [`attacks`]: the load generator; what an
//!   attack costs; connections that hold descriptors
//! - [`malicious`], [`raw`]: a broker under the attacker's control; the
//!   relay protocol spoken by hand
//! - [`http`], [`http_request`], [`web`], [`browser`]: HTTP/1.0 for the
//!   operator endpoints and pages; a browser stand-in; headless Chromium
//!   (in a chosen language with `Browser::start_in`), with axe-core
//! - [`oidc`]: a real OpenID provider (oidc-provider under Node.js) and
//!   portals that sign in there

pub mod agent_toml;
pub mod agents;
pub mod attacks;
pub mod browser;
pub mod cluster;
pub mod connect_proxy;
pub mod deployment;
pub mod faults;
pub mod http;
pub mod http_request;
pub mod load;
pub mod malicious;
pub mod nats;
pub mod netns;
pub mod oidc;
pub mod pressure;
pub mod raw;
pub mod scenarios;
pub mod sealed;
pub mod tinyproxy;
pub mod web;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use relay_client::admin::{AdminClient, TenantKeys};
use relay_client::connect::BrokerEndpoint;
use relay_client::credential::Credential;
use relay_client::portal_client::PortalClient;
use sas::{Key, KeySlot, Right};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub use agents::{AgentProcess, AgentProcessBuilder, EchoAgent};

/// How long a process may take to report readiness before a test fails.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Builds the workspace binaries once per test process and returns the
/// directory holding them (the same profile as the running test).
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/<test-binary>
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test binary lives in target/<profile>/deps")
            .to_owned();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = std::process::Command::new(cargo);
        // What cargo sets for the running test crate (its package's name and
        // version, manifest, OUT_DIR...), inherited here, would make this
        // nested build fingerprint differently: ring's build script reruns
        // when CARGO_PKG_NAME or CARGO_MANIFEST_DIR change, and with it half
        // the tree is rebuilt, here (25-50 s before the first process
        // starts) and again at the next `cargo test`.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            let per_crate = ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_BIN_"]
                .iter()
                .any(|p| key.starts_with(p))
                || [
                    "CARGO_CRATE_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "CARGO_RUSTC_CURRENT_DIR",
                    "OUT_DIR",
                ]
                .contains(&key.as_ref());
            if per_crate {
                cmd.env_remove(key.as_ref());
            }
        }
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "broker",
            "-p",
            "writeback-agent",
            "-p",
            "relayctl",
            "-p",
            "portal",
            "--bins",
            // As the tests crate's own dependency has it (Cargo.toml): the
            // agent binds with Kerberos in tests/tests/samba/kerberos.rs,
            // and the same features keep this build from rebuilding the tree.
            "--features",
            "writeback-agent/kerberos",
        ]);
        if dir.ends_with("release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build for the binaries");
        assert!(status.success(), "building the binaries failed");
        dir
    })
}

pub fn bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// Waits for a line starting with `prefix` on a child's stdout and returns it;
/// panics with the process's stderr log when it exits or times out first.
pub async fn await_line(
    child: &mut tokio::process::Child,
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    prefix: &str,
    log: &Path,
) -> String {
    let wait = async {
        while let Some(line) = lines.next_line().await.expect("read child stdout") {
            if line.starts_with(prefix) {
                return Some(line);
            }
        }
        None
    };
    match tokio::time::timeout(STARTUP_TIMEOUT, wait).await {
        Ok(Some(line)) => line,
        outcome => {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            let tail: String = log
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            // How it exited says what an empty log cannot (a signal, an
            // exec failure).
            let how = if outcome.is_err() {
                "timed out".to_owned()
            } else {
                match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
                    Ok(Ok(status)) => format!("process exited: {status}"),
                    Ok(Err(e)) => format!("process exited: {e}"),
                    Err(_) => "stdout closed, process still running".to_owned(),
                }
            };
            panic!("no {prefix:?} line ({how}); log tail:\n{tail}");
        }
    }
}

/// A running in-process agent: its events, its stop switch and its task.
pub struct Spawned {
    pub events: tokio::sync::mpsc::UnboundedReceiver<writeback_agent::AgentEvent>,
    pub shutdown: tokio_util::sync::CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
}

/// Runs the agent library's real session loop with `handler` on a task.
pub fn spawn_agent(
    config: writeback_agent::AgentConfig,
    handler: std::sync::Arc<dyn writeback_agent::RequestHandler>,
) -> Spawned {
    let (tx, events) = tokio::sync::mpsc::unbounded_channel();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            writeback_agent::run(
                &config,
                handler,
                writeback_agent::EventSink::new(tx),
                shutdown,
            )
            .await
            .expect("agent run");
        }
    });
    Spawned {
        events,
        shutdown,
        task,
    }
}

/// Waits for the next Connected event of an in-process agent.
pub async fn await_connected(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<writeback_agent::AgentEvent>,
    who: &str,
) -> String {
    let wait = async {
        while let Some(event) = events.recv().await {
            if let writeback_agent::AgentEvent::Connected { session_id, .. } = event {
                return Some(session_id);
            }
        }
        None
    };
    match tokio::time::timeout(STARTUP_TIMEOUT, wait).await {
        Ok(Some(session_id)) => session_id,
        _ => panic!("agent {who} did not connect"),
    }
}

/// Settings of a broker to start.
pub struct BrokerBuilder {
    extra_config: Vec<String>,
    sections: Vec<String>,
    pki: Option<broker::tls::DevPki>,
    rust_log: String,
    dir: Option<tempfile::TempDir>,
    open_files: Option<u64>,
    place: Option<nats::Place>,
}

impl Default for BrokerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl BrokerBuilder {
    pub fn new() -> BrokerBuilder {
        BrokerBuilder {
            extra_config: Vec::new(),
            sections: Vec::new(),
            pki: None,
            rust_log: "info".into(),
            dir: None,
            open_files: None,
            place: None,
        }
    }

    /// Runs the broker inside a network namespace ([`netns`]), listening
    /// on its address there (both ports still chosen by the kernel)
    /// instead of 127.0.0.1. The certificate must name that address.
    pub fn place(mut self, place: nats::Place) -> Self {
        self.place = Some(place);
        self
    }

    /// Adds a `key = value` line to the broker's TOML config.
    pub fn config(mut self, line: impl Into<String>) -> Self {
        self.extra_config.push(line.into());
        self
    }

    /// Adds a TOML table (`[cluster]` and its keys) after every top-level
    /// line, where TOML needs it.
    pub fn section(mut self, text: impl Into<String>) -> Self {
        self.sections.push(text.into());
        self
    }

    /// Presents this certificate instead of one from a fresh development
    /// CA, so that several brokers can share one CA file (cluster nodes).
    pub fn pki(mut self, pki: broker::tls::DevPki) -> Self {
        self.pki = Some(pki);
        self
    }

    /// Runs the broker with this descriptor limit (soft and hard), as
    /// systemd's default soft limit of 1,024 would.
    pub fn open_files_limit(mut self, limit: u64) -> Self {
        self.open_files = Some(limit);
        self
    }

    pub fn rust_log(mut self, filter: impl Into<String>) -> Self {
        self.rust_log = filter.into();
        self
    }

    pub async fn start(self) -> BrokerProcess {
        let dir = match self.dir {
            Some(d) => d,
            None => tempfile::tempdir().expect("temp dir"),
        };
        let pki = match self.pki {
            Some(pki) => pki,
            None => {
                broker::tls::generate_dev_pki(&dir.path().join("pki"), &["127.0.0.1".to_owned()])
                    .expect("dev pki")
            }
        };
        let config_path = dir.path().join("broker.toml");
        let host = self
            .place
            .as_ref()
            .map_or_else(|| "127.0.0.1".to_owned(), |p| p.ip.to_string());
        let mut config = format!(
            "listen = \"{host}:0\"\noperator_listen = \"{host}:0\"\ndata_dir = {:?}\ntls_cert = {:?}\ntls_key = {:?}\n",
            dir.path().join("data"),
            pki.server_cert,
            pki.server_key
        );
        for line in self.extra_config.iter().chain(&self.sections) {
            config.push_str(line);
            config.push('\n');
        }
        std::fs::write(&config_path, config).expect("write broker config");
        let mut broker = BrokerProcess {
            dir,
            ca_file: pki.ca_cert,
            config_path,
            rust_log: self.rust_log,
            open_files: self.open_files,
            netns: self.place.map(|p| p.netns),
            child: None,
            grpc_addr: String::new(),
            operator_addr: String::new(),
            restarts: 0,
        };
        broker.spawn().await;
        broker
    }
}

/// A running `relay-broker` process and its files.
pub struct BrokerProcess {
    dir: tempfile::TempDir,
    pub ca_file: PathBuf,
    config_path: PathBuf,
    rust_log: String,
    open_files: Option<u64>,
    /// The network namespace it runs in, if not the test's own.
    netns: Option<String>,
    child: Option<Child>,
    pub grpc_addr: String,
    pub operator_addr: String,
    restarts: u32,
}

impl BrokerProcess {
    async fn spawn(&mut self) {
        let log = self.log_path(self.restarts);
        let stderr = std::fs::File::create(&log).expect("broker log file");
        // prlimit and `ip netns exec` exec the broker: the pid stays the
        // broker's.
        let mut argv: Vec<std::ffi::OsString> = Vec::new();
        if let Some(ns) = &self.netns {
            argv.extend(["ip", "netns", "exec", ns].map(Into::into));
        }
        if let Some(n) = self.open_files {
            argv.extend([format!("--nofile={n}:{n}"), "--".into()].map(Into::into));
            argv.insert(argv.len() - 2, "prlimit".into());
        }
        argv.push(bin("relay-broker").into());
        let mut command = Command::new(&argv[0]);
        command.args(&argv[1..]);
        let mut child = command
            .arg("--config")
            .arg(&self.config_path)
            .env("RUST_LOG", &self.rust_log)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn relay-broker");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let ready = await_line(&mut child, &mut lines, "relay-broker ready", &log).await;
        let field = |name: &str| {
            ready
                .split_whitespace()
                .find_map(|f| f.strip_prefix(name))
                .expect("address in ready line")
                .to_owned()
        };
        self.grpc_addr = field("grpc=");
        self.operator_addr = field("operator=");
        // Keep draining stdout so the broker never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.child = Some(child);
    }

    /// Log file of the n-th run of this broker (0 = first start).
    pub fn log_path(&self, run: u32) -> PathBuf {
        self.dir.path().join(format!("broker-{run}.log"))
    }

    /// Everything this broker has logged, over all its runs.
    pub fn logs(&self) -> String {
        (0..=self.restarts)
            .map(|n| std::fs::read_to_string(self.log_path(n)).unwrap_or_default())
            .collect()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.grpc_addr)
    }

    pub fn endpoint(&self) -> BrokerEndpoint {
        BrokerEndpoint::new(self.url(), Some(&self.ca_file))
    }

    pub fn operator_key(&self) -> Key {
        relay_client::credential::read_key_file(&self.data_dir().join("operator.key"))
            .expect("operator key")
    }

    pub async fn admin(&self) -> AdminClient {
        AdminClient::connect(&self.endpoint(), Credential::operator(self.operator_key()))
            .await
            .expect("admin client")
    }

    pub async fn create_tenant(&self, name: &str) -> Tenant {
        let (_, keys) = self
            .admin()
            .await
            .create_tenant(name, None, false)
            .await
            .expect("create tenant");
        Tenant {
            name: name.to_owned(),
            keys,
        }
    }

    /// A portal client of `tenant` with the given right and key slot.
    pub async fn portal(&self, tenant: &Tenant, right: Right) -> PortalClient {
        PortalClient::connect(&self.endpoint(), &tenant.name, tenant.credential(right))
            .await
            .expect("portal client")
    }

    pub fn agent_process(&self, tenant: &Tenant, agent_id: &str) -> AgentProcessBuilder {
        AgentProcessBuilder::new(self, tenant, agent_id)
    }

    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .and_then(Child::id)
            .expect("broker running")
    }

    /// `kill -9`: no shutdown path runs.
    pub async fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.start_kill().expect("SIGKILL");
            child.wait().await.expect("reap broker");
        }
    }

    /// SIGTERM, then waits for the exit status.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("broker running");
        let pid = child.id().expect("pid");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .expect("broker exits after SIGTERM")
            .expect("reap broker")
    }

    /// `kill -9`, then starts the broker again on the same data directory
    /// and the same ports, so agents find it without being told.
    pub async fn restart_in_place(&mut self) {
        self.kill9().await;
        let config = std::fs::read_to_string(&self.config_path).expect("read broker config");
        let config = config
            .replace(
                "listen = \"127.0.0.1:0\"\noperator",
                &format!("listen = \"{}\"\noperator", self.grpc_addr),
            )
            .replace(
                "operator_listen = \"127.0.0.1:0\"",
                &format!("operator_listen = \"{}\"", self.operator_addr),
            );
        std::fs::write(&self.config_path, config).expect("write broker config");
        self.restarts += 1;
        self.spawn().await;
    }

    /// Starts the broker again on the same data directory (new ports).
    pub async fn restart(&mut self) {
        self.kill9().await;
        self.restarts += 1;
        self.spawn().await;
    }

    pub async fn metrics(&self) -> String {
        http::get(&self.operator_addr, "/metrics").await.1
    }
}

/// A tenant created through the admin API, with its keys.
pub struct Tenant {
    pub name: String,
    pub keys: TenantKeys,
}

impl Tenant {
    pub fn key(&self, right: Right, slot: KeySlot) -> Key {
        self.keys.get(right, slot).expect("tenant key").clone()
    }

    pub fn credential(&self, right: Right) -> Credential {
        Credential::new(&self.name, right, self.key(right, KeySlot::Primary))
    }

    /// Every key of the tenant in base64, for searching logs.
    pub fn all_keys_base64(&self) -> Vec<String> {
        self.keys
            .0
            .values()
            .map(|k| k.to_base64().to_string())
            .collect()
    }
}

/// Writes a key to a 0600 file in `dir` and returns its path.
pub fn write_key(dir: &Path, name: &str, key: &Key) -> PathBuf {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .expect("key file");
    std::io::Write::write_all(&mut f, key.to_base64().as_bytes()).expect("write key");
    path
}

/// The relay reason of a failed client call.
pub fn reason<T: std::fmt::Debug>(
    result: Result<T, relay_client::ClientError>,
) -> relay_client::Reason {
    let err = result.expect_err("the call should fail");
    err.reason()
        .unwrap_or_else(|| panic!("error without a relay reason: {err}"))
}

/// Fetches a late outcome the way a portal would: asks again while the
/// broker answers OUTCOME_PENDING (the broker has no push for it), within
/// [`STARTUP_TIMEOUT`].
pub async fn await_outcome(
    portal: &PortalClient,
    request_id: &str,
) -> Result<relay_client::portal_client::Submitted, relay_client::ClientError> {
    let started = std::time::Instant::now();
    loop {
        match portal.outcome(request_id).await {
            Err(e)
                if e.reason() == Some(proto::Reason::OutcomePending)
                    && started.elapsed() < STARTUP_TIMEOUT =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

/// Submits an opaque (echo) envelope the way `SealedPortal` addresses a
/// sealed one: to `agents[first % len]`, and when the broker says that agent
/// did not get it (not connected, busy, or no Ack: OUTCOME_UNKNOWN with
/// acknowledged=false), to the next one, once per agent, under the same
/// request id. The broker itself never gives a request to another agent
/// than the one named.
pub async fn submit_any(
    portal: &PortalClient,
    request_id: &str,
    operation: proto::pb::Operation,
    envelope: Vec<u8>,
    agents: &[&str],
    first: usize,
    timeout: Option<Duration>,
) -> Result<relay_client::portal_client::Submitted, relay_client::ClientError> {
    use proto::Reason;
    let mut last = None;
    for k in 0..agents.len() {
        let agent = agents[(first + k) % agents.len()];
        let mut result = portal
            .submit(request_id, operation, agent, envelope.clone(), timeout)
            .await;
        // The broker may still be closing the previous attempt's id.
        for _ in 0..40 {
            if k == 0
                || !matches!(&result, Err(e) if e.reason() == Some(Reason::DuplicateRequestId))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
            result = portal
                .submit(request_id, operation, agent, envelope.clone(), timeout)
                .await;
        }
        let moved_on = match &result {
            Err(relay_client::ClientError::Relay {
                reason: Reason::NoAgentOnline | Reason::AgentsBusy,
                ..
            }) => true,
            Err(relay_client::ClientError::Relay {
                reason: Reason::OutcomeUnknown,
                metadata,
                ..
            }) => metadata.get("acknowledged").map(String::as_str) == Some("false"),
            _ => false,
        };
        if !moved_on {
            return result;
        }
        last = Some(result);
    }
    last.expect("at least one agent")
}

/// Submits an opaque (echo) envelope to an agent the broker names: a ping
/// finds one (the least loaded, or in cluster mode one on some node), and
/// the request is addressed to it; when the broker says it did not get it,
/// another ping finds another (at most three times). For tests about
/// routing across agents and nodes rather than about one named agent.
pub async fn submit_pinged(
    portal: &PortalClient,
    request_id: &str,
    operation: proto::pb::Operation,
    envelope: Vec<u8>,
    timeout: Option<Duration>,
) -> Result<relay_client::portal_client::Submitted, relay_client::ClientError> {
    let mut last = None;
    for _ in 0..3 {
        let agent = match portal.ping(timeout).await {
            Ok(pong) => pong.agent_id,
            Err(e) => return last.unwrap_or(Err(e)),
        };
        let result = submit_any(
            portal,
            request_id,
            operation,
            envelope.clone(),
            &[agent.as_str()],
            0,
            timeout,
        )
        .await;
        let moved_on = matches!(
            &result,
            Err(relay_client::ClientError::Relay {
                reason: proto::Reason::NoAgentOnline | proto::Reason::AgentsBusy,
                ..
            })
        );
        if !moved_on {
            return result;
        }
        last = Some(result);
    }
    last.expect("tried")
}

//! Agents for tests: the real `writeback-agent` binary, and an in-process
//! agent with an echo handler that records what reached it.

use crate::agent_toml::AgentToml;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sas::{KeySlot, Right};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use writeback_agent::{AgentConfig, AgentEvent, HandlerError, IncomingRequest, RequestHandler};

use crate::{BrokerProcess, STARTUP_TIMEOUT, Tenant, bin, write_key};

pub struct AgentProcessBuilder {
    url: String,
    ca_file: PathBuf,
    tenant: String,
    agent_id: String,
    key: sas::Key,
    rust_log: String,
    dir: tempfile::TempDir,
}

impl AgentProcessBuilder {
    pub fn new(broker: &BrokerProcess, tenant: &Tenant, agent_id: &str) -> Self {
        AgentProcessBuilder {
            url: broker.url(),
            ca_file: broker.ca_file.clone(),
            tenant: tenant.name.clone(),
            agent_id: agent_id.to_owned(),
            key: tenant.key(Right::Listen, KeySlot::Primary),
            rust_log: "info".into(),
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// Uses this Listen key instead of the tenant's primary one.
    pub fn key(mut self, key: sas::Key) -> Self {
        self.key = key;
        self
    }

    /// Presents this tenant name in Hello (for cross-tenant tests).
    pub fn claim_tenant(mut self, tenant: &str) -> Self {
        self.tenant = tenant.to_owned();
        self
    }

    pub fn rust_log(mut self, filter: &str) -> Self {
        self.rust_log = filter.to_owned();
        self
    }

    /// Starts the process without waiting for anything.
    pub fn spawn(self) -> AgentProcess {
        let key_file = write_key(self.dir.path(), "listen.key", &self.key);
        let config = self.dir.path().join("agent.toml");
        AgentToml::new(
            &self.url,
            &self.ca_file,
            &self.tenant,
            &self.agent_id,
            &key_file,
        )
        .write(&config);
        let log = self.dir.path().join("agent.log");
        let mut child = Command::new(bin("writeback-agent"))
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", &self.rust_log)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("agent log"))
            .kill_on_drop(true)
            .spawn()
            .expect("spawn writeback-agent");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        AgentProcess {
            child,
            lines: rx,
            log,
            _dir: self.dir,
        }
    }

    /// Starts the process and waits until its session is established.
    pub async fn start(self) -> AgentProcess {
        let mut agent = self.spawn();
        agent.expect_line("connected").await;
        agent
    }
}

/// A running `writeback-agent` process.
pub struct AgentProcess {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl AgentProcess {
    /// Waits for the next status line starting with `prefix` (skipping others).
    pub async fn expect_line(&mut self, prefix: &str) -> String {
        let deadline = tokio::time::Instant::now() + STARTUP_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) if line.starts_with(prefix) => return line,
                Ok(Some(_)) => continue,
                outcome => panic!(
                    "agent printed no {prefix:?} line ({}); log:\n{}",
                    if outcome.is_err() {
                        "timed out"
                    } else {
                        "exited"
                    },
                    self.logs()
                ),
            }
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("agent running")
    }

    /// The configuration file it was started with.
    pub fn config_path(&self) -> PathBuf {
        self._dir.path().join("agent.toml")
    }

    /// The status lines printed since the last wait, without waiting.
    pub fn printed(&mut self) -> Vec<String> {
        std::iter::from_fn(|| self.lines.try_recv().ok()).collect()
    }

    pub async fn stop(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// What an [`EchoAgent`] saw, with a notification on every arrival.
#[derive(Default)]
pub struct Seen {
    request_ids: Mutex<Vec<String>>,
    /// Requests whose work finished: what the agent applied.
    completed: Mutex<Vec<String>>,
    arrived: tokio::sync::Notify,
    /// Set by [`EchoAgent::kill`]: work in progress never finishes, as in a
    /// process that died.
    dead: CancellationToken,
}

struct Echo {
    agent_id: String,
    delay: Duration,
    seen: Arc<Seen>,
}

#[tonic::async_trait]
impl RequestHandler for Echo {
    async fn handle(&self, request: IncomingRequest) -> Result<Vec<u8>, HandlerError> {
        self.seen
            .request_ids
            .lock()
            .expect("seen")
            .push(request.request_id.clone());
        self.seen.arrived.notify_waiters();
        tokio::select! {
            _ = tokio::time::sleep(self.delay) => {}
            _ = self.seen.dead.cancelled() => std::future::pending::<()>().await,
        }
        if self.seen.dead.is_cancelled() {
            std::future::pending::<()>().await;
        }
        self.seen
            .completed
            .lock()
            .expect("completed")
            .push(request.request_id.clone());
        let mut reply = format!("{}|", self.agent_id).into_bytes();
        reply.extend_from_slice(&request.envelope);
        Ok(reply)
    }
}

/// Settings of an [`EchoAgent`].
pub struct EchoAgentBuilder {
    broker_url: String,
    ca_file: std::path::PathBuf,
    listen_key: sas::Key,
    tenant: String,
    agent_id: String,
    delay: Duration,
    extra: Vec<String>,
}

impl EchoAgentBuilder {
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Connect to this address instead (a proxy in front of the broker), or
    /// to a TOML value such as `["https://a", "https://b"]`.
    pub fn broker_toml(mut self, value: impl Into<String>) -> Self {
        self.broker_url = value.into();
        self
    }

    pub fn broker_url(self, url: &str) -> Self {
        self.broker_toml(format!("{url:?}"))
    }

    /// Adds a line to the agent's TOML configuration (tables go last).
    pub fn config(mut self, line: impl Into<String>) -> Self {
        self.extra.push(line.into());
        self
    }

    /// Starts the agent without waiting for its session.
    pub fn spawn(self) -> EchoAgent {
        let dir = tempfile::tempdir().expect("temp dir");
        let key_file = write_key(dir.path(), "listen.key", &self.listen_key);
        let mut toml = AgentToml::new(
            &self.broker_url,
            &self.ca_file,
            &self.tenant,
            &self.agent_id,
            &key_file,
        );
        if self.broker_url.starts_with('"') || self.broker_url.starts_with('[') {
            toml = toml.broker_value(self.broker_url.clone());
        }
        for line in &self.extra {
            toml = toml.line(line.clone());
        }
        let config = AgentConfig::from_toml(&toml.build()).expect("agent config");
        let seen = Arc::new(Seen::default());
        let handler = Arc::new(Echo {
            agent_id: self.agent_id.clone(),
            delay: self.delay,
            seen: Arc::clone(&seen),
        });
        let crate::Spawned {
            events,
            shutdown,
            task,
        } = crate::spawn_agent(config, handler);
        EchoAgent {
            agent_id: self.agent_id,
            seen,
            events,
            shutdown,
            task,
            _dir: dir,
        }
    }

    /// Starts the agent and waits for its first session.
    pub async fn start(self) -> EchoAgent {
        let mut agent = self.spawn();
        agent.connected().await;
        agent
    }
}

/// An in-process agent (the library's real session loop) whose handler
/// answers `<agent_id>|<envelope>` after an optional delay.
pub struct EchoAgent {
    pub agent_id: String,
    seen: Arc<Seen>,
    events: mpsc::UnboundedReceiver<AgentEvent>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl EchoAgent {
    pub async fn start(broker: &BrokerProcess, tenant: &Tenant, agent_id: &str) -> EchoAgent {
        Self::start_with_delay(broker, tenant, agent_id, Duration::ZERO).await
    }

    pub async fn start_with_delay(
        broker: &BrokerProcess,
        tenant: &Tenant,
        agent_id: &str,
        delay: Duration,
    ) -> EchoAgent {
        EchoAgent::builder(broker, tenant, agent_id)
            .delay(delay)
            .start()
            .await
    }

    /// For agents with other settings: another address (a proxy in
    /// between), extra configuration lines.
    pub fn builder(broker: &BrokerProcess, tenant: &Tenant, agent_id: &str) -> EchoAgentBuilder {
        EchoAgentBuilder {
            broker_url: broker.url(),
            ca_file: broker.ca_file.clone(),
            listen_key: tenant.key(Right::Listen, KeySlot::Primary),
            tenant: tenant.name.clone(),
            agent_id: agent_id.to_owned(),
            delay: Duration::ZERO,
            extra: Vec::new(),
        }
    }

    /// Every event the agent reported since the last wait, in order.
    pub fn events(&mut self) -> Vec<AgentEvent> {
        let mut out = Vec::new();
        while let Ok(e) = self.events.try_recv() {
            out.push(e);
        }
        out
    }

    /// Waits until the handler answered `request_id`.
    pub async fn answered(&mut self, request_id: &str) {
        let wait = async {
            while let Some(event) = self.events.recv().await {
                if matches!(&event, AgentEvent::Answered { request_id: id, .. } if id == request_id)
                {
                    return;
                }
            }
        };
        tokio::time::timeout(STARTUP_TIMEOUT, wait)
            .await
            .unwrap_or_else(|_| panic!("{} never answered {request_id}", self.agent_id));
    }

    /// Waits for a Disconnected event; its reason.
    pub async fn disconnected(&mut self) -> String {
        let wait = async {
            while let Some(event) = self.events.recv().await {
                if let AgentEvent::Disconnected { reason } = event {
                    return reason;
                }
            }
            String::from("the agent stopped")
        };
        tokio::time::timeout(STARTUP_TIMEOUT, wait)
            .await
            .unwrap_or_else(|_| panic!("{} never disconnected", self.agent_id))
    }

    /// Waits for the next Connected event.
    pub async fn connected(&mut self) -> String {
        crate::await_connected(&mut self.events, &self.agent_id).await
    }

    pub fn request_ids(&self) -> Vec<String> {
        self.seen.request_ids.lock().expect("seen").clone()
    }

    /// Waits until a request with this id has reached the handler.
    pub async fn wait_for_request(&self, request_id: &str) {
        let wait = async {
            loop {
                let notified = self.seen.arrived.notified();
                if self.request_ids().iter().any(|id| id == request_id) {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(STARTUP_TIMEOUT, wait)
            .await
            .unwrap_or_else(|_| panic!("request {request_id} never reached {}", self.agent_id));
    }

    /// Stops gracefully: the agent drains (finishes what it acknowledged).
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }

    /// Dies on the spot, like a crashed process: the session is dropped
    /// mid-request and work in progress never finishes. Returns the ids of
    /// the requests it completed.
    pub async fn kill(self) -> Vec<String> {
        self.seen.dead.cancel();
        self.task.abort();
        let seen = Arc::clone(&self.seen);
        let _ = self.task.await;
        seen.completed.lock().expect("completed").clone()
    }

    /// Requests whose work finished (applied, for a real agent).
    pub fn completed(&self) -> Vec<String> {
        self.seen.completed.lock().expect("completed").clone()
    }
}

//! A whole deployment for write-back tests: a broker process, a tenant, the
//! sample forests copied into a temporary directory, a `writeback-agent`
//! process onboarded with its own `init` command, and a sealed portal that
//! pinned the fingerprint `init` printed.

use crate::agent_toml::AgentToml;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use directory::embedded::EmbeddedDirectory;
use envelope::{Anchor, KeyPair, Password, ReplyBody, RequestBody};
use proto::pb::Operation;
use relay_client::enrollment::EnrollmentBundle;
use relay_client::sealed::SealedPortal;
use sas::{KeySlot, Right};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::sealed::SETUP_PASSWORD;
use crate::{BrokerBuilder, BrokerProcess, Tenant, await_line, bin, write_key};

pub struct Deployment {
    pub broker: BrokerProcess,
    pub tenant: Tenant,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub portal: SealedPortal,
    /// The key the agent was enrolled with and the fingerprint it pins,
    /// for another portal of the same tenant ([`Deployment::another_portal`]).
    portal_key: KeyPair,
    fingerprint: envelope::Fingerprint,
    agent: tokio::process::Child,
    next_id: std::sync::atomic::AtomicU64,
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/forests")
}

impl Deployment {
    /// Starts everything with the given sample forests; `extra` is appended
    /// to the agent's configuration (top-level keys only).
    pub async fn start(forests: &[&str], extra: &str) -> Deployment {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut forest_sections = String::new();
        for name in forests {
            let forest_dir = dir.path().join("forests").join(name);
            std::fs::create_dir_all(&forest_dir).expect("forest dir");
            let file = forest_dir.join(format!("{name}.json"));
            std::fs::copy(examples().join(format!("{name}.json")), &file)
                .expect("copy sample forest");
            forest_sections.push_str(&format!(
                "\n[[forests]]\nname = {name:?}\nkind = \"embedded\"\npath = {file:?}\n"
            ));
        }
        Self::start_with(dir, &forest_sections, extra).await
    }

    /// Starts everything with the given `[[forests]]` sections.
    pub async fn start_with(
        dir: tempfile::TempDir,
        forest_sections: &str,
        extra: &str,
    ) -> Deployment {
        let broker = BrokerBuilder::new().start().await;
        let tenant = broker.create_tenant("contoso").await;
        let d = dir.path();
        let listen = write_key(
            d,
            "listen.key",
            &tenant.key(Right::Listen, KeySlot::Primary),
        );
        std::fs::write(d.join("setup-password"), SETUP_PASSWORD).expect("password file");
        let config = d.join("agent.toml");
        AgentToml::new(&broker.url(), &broker.ca_file, "contoso", "dc01", &listen)
            .path("key_file", &d.join("agent.keys"))
            .path("setup_password_file", &d.join("setup-password"))
            .path("state_dir", &d.join("state"))
            .line(extra)
            .section(forest_sections)
            .write(&config);

        let Onboarded {
            portal_key,
            fingerprint,
            child: agent,
            ..
        } = onboard(&config, "contoso", d).await;
        let portal = SealedPortal::new(
            broker.portal(&tenant, Right::Send).await,
            portal_key.clone(),
            vec![fingerprint],
        );
        Deployment {
            broker,
            tenant,
            dir,
            config,
            portal,
            portal_key,
            fingerprint,
            agent,
            next_id: std::sync::atomic::AtomicU64::new(1),
        }
    }

    /// A second portal of the same tenant, with its own broker connection.
    pub async fn another_portal(&self) -> SealedPortal {
        SealedPortal::new(
            self.broker.portal(&self.tenant, Right::Send).await,
            self.portal_key.clone(),
            vec![self.fingerprint],
        )
    }

    pub fn forest_file(&self, name: &str) -> PathBuf {
        self.dir
            .path()
            .join("forests")
            .join(name)
            .join(format!("{name}.json"))
    }

    /// The forest as it is on disk now.
    pub fn forest(&self, name: &str) -> EmbeddedDirectory {
        EmbeddedDirectory::open(name, self.forest_file(name)).expect("open forest")
    }

    /// Seals, relays and opens one request.
    pub async fn ask(&self, operation: Operation, body: RequestBody) -> ReplyBody {
        let n = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.portal
            .submit(&format!("req-{n}"), operation, &body, None)
            .await
            .unwrap_or_else(|e| panic!("request {n} failed: {e}"))
            .reply
    }

    pub async fn reset(&self, anchor: Anchor, password: &str) -> ReplyBody {
        self.ask(
            Operation::ResetPassword,
            RequestBody::reset(anchor, Password::new(password)),
        )
        .await
    }

    pub async fn change(&self, anchor: Anchor, current: &str, new: &str) -> ReplyBody {
        self.ask(
            Operation::ChangePassword,
            RequestBody::change(anchor, Password::new(current), Password::new(new)),
        )
        .await
    }

    /// Every event the agent logged, parsed.
    pub fn events(&self) -> Vec<serde_json::Value> {
        let path = self.dir.path().join("state/events/events.jsonl");
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("event lines are JSON"))
            .collect()
    }

    pub fn event_log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("state/events/events.jsonl"))
            .unwrap_or_default()
    }

    /// Runs `writeback-agent --config <config> <args>`.
    pub fn agent_cli(&self, args: &[&str]) -> Output {
        std::process::Command::new(bin("writeback-agent"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("run writeback-agent")
    }

    pub async fn stop(mut self) {
        let _ = self.agent.start_kill();
        let _ = self.agent.wait().await;
    }
}

/// A detail of a reply.
pub fn detail<'a>(reply: &'a ReplyBody, key: &str) -> Option<&'a str> {
    reply
        .details
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

pub fn upn(name: &str) -> Anchor {
    Anchor::UserPrincipalName(name.to_owned())
}

/// The reference web portal, in-process, serving a deployment's
/// `SealedPortal` (the key the agent was onboarded with and the fingerprint
/// `init` printed) on a free loopback port.
pub struct WebPortal {
    pub server: portal::Server,
    pub shutdown: tokio_util::sync::CancellationToken,
}

impl WebPortal {
    pub async fn start(sealed: SealedPortal) -> WebPortal {
        let state = portal::AppState::new(
            sealed,
            portal::Settings {
                title: "Contoso password reset".into(),
                request_timeout: std::time::Duration::from_secs(20),
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let shutdown = tokio_util::sync::CancellationToken::new();
        let server = portal::serve_on(listener, state, shutdown.clone()).expect("serve");
        WebPortal { server, shutdown }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.server.wait().await.expect("graceful stop");
    }
}

/// A `writeback-agent` onboarded and running.
pub struct Onboarded {
    /// The portal key the agent was enrolled with.
    pub portal_key: KeyPair,
    /// The agent key fingerprint `init` printed, for the portal to pin.
    pub fingerprint: envelope::Fingerprint,
    pub child: tokio::process::Child,
    /// The agent's stderr log.
    pub log: PathBuf,
}

/// Onboards an agent as an administrator does (an enrollment bundle with a
/// fresh portal key, `writeback-agent init`), then starts it with `config`
/// and waits until it is connected. Files go to `dir`.
pub async fn onboard(config: &Path, tenant: &str, dir: &Path) -> Onboarded {
    onboard_with(config, tenant, dir, tokio::process::Command::new).await
}

/// [`onboard`], with every `writeback-agent` command (`init`, then the
/// agent) made by `command` from the binary's path: to run it in a network
/// namespace (`ip netns exec`) or with its own environment.
pub async fn onboard_with(
    config: &Path,
    tenant: &str,
    dir: &Path,
    command: impl Fn(PathBuf) -> tokio::process::Command,
) -> Onboarded {
    let portal_key = KeyPair::generate(&mut envelope::os_rng());
    let bundle = dir.join("enrollment.json");
    std::fs::write(
        &bundle,
        serde_json::to_string(&EnrollmentBundle::new(
            tenant,
            std::slice::from_ref(&portal_key.public),
        ))
        .expect("json"),
    )
    .expect("bundle");
    let init = command(bin("writeback-agent"))
        .arg("--config")
        .arg(config)
        .args(["init", "--enrollment"])
        .arg(&bundle)
        .output()
        .await
        .expect("run init");
    let stdout = String::from_utf8_lossy(&init.stdout).into_owned();
    assert!(
        init.status.success(),
        "init failed: {stdout}{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let fingerprint = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("key fingerprint"))
        .expect("init prints the fingerprint")
        .trim()
        .to_owned();

    let log = dir.join("agent.log");
    let mut child = command(bin("writeback-agent"))
        .arg("--config")
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("agent log"))
        .kill_on_drop(true)
        .spawn()
        .expect("spawn writeback-agent");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    await_line(&mut child, &mut lines, "connected", &log).await;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Onboarded {
        portal_key,
        fingerprint: envelope::Fingerprint::parse(&fingerprint).expect("fingerprint"),
        child,
        log,
    }
}

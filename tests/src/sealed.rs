//! Onboarded agents for end-to-end envelope tests: a keyring made the way
//! `writeback-agent init` makes it, the agent library's real envelope
//! handler, and a directory double that records what reached it.

use crate::agent_toml::AgentToml;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use envelope::body::outcome;
use envelope::{KeyPair, ReplyBody, RequestBody, RequestHeader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use writeback_agent::envelopes::{DurableReplay, EnvelopeHandler, KeySource, Operations, Validity};
use writeback_agent::keyring::{AgentKey, Keyring};
use writeback_agent::{AgentConfig, AgentEvent};

use crate::write_key;

pub const SETUP_PASSWORD: &str = "correct horse battery staple";

/// What the directory double saw: (request id, new password).
#[derive(Default)]
pub struct Applied(pub Mutex<Vec<(String, String)>>);

impl Applied {
    pub fn all(&self) -> Vec<(String, String)> {
        self.0.lock().expect("applied").clone()
    }
}

/// A directory double: applies nothing, records what arrived, answers success.
pub struct Recording(pub Arc<Applied>);

#[tonic::async_trait]
impl Operations for Recording {
    async fn apply(&self, header: &RequestHeader, body: &RequestBody) -> ReplyBody {
        let password = body
            .new_password
            .as_ref()
            .map(|p| p.expose().to_owned())
            .unwrap_or_default();
        self.0
            .0
            .lock()
            .expect("applied")
            .push((header.request_id.clone(), password));
        ReplyBody {
            outcome: outcome::SUCCESS,
            message: "the password was changed".into(),
            details: Vec::new(),
        }
    }
}

/// A tenant's keys on both sides, as onboarding leaves them.
pub struct Onboarded {
    pub tenant: String,
    pub portal: KeyPair,
    pub agent_key: KeyPair,
    pub keyring: PathBuf,
    pub dir: tempfile::TempDir,
}

/// Makes a keyring for `tenant` pinning a fresh portal key.
pub fn onboard(tenant: &str) -> Onboarded {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut rng = envelope::os_rng();
    let portal = KeyPair::generate(&mut rng);
    let agent_key = KeyPair::generate(&mut rng);
    let keyring = dir.path().join("agent.keys");
    Keyring {
        tenant: tenant.to_owned(),
        keys: vec![AgentKey {
            pair: agent_key.clone(),
            created_unix_ms: 1,
            superseded_unix_ms: None,
            endorsements: Vec::new(),
            active: true,
        }],
        portals: vec![portal.public.clone()],
    }
    .save(&keyring, SETUP_PASSWORD)
    .expect("save keyring");
    Onboarded {
        tenant: tenant.to_owned(),
        portal,
        agent_key,
        keyring,
        dir,
    }
}

/// An in-process agent opening envelopes with a keyring.
pub struct SealedAgent {
    pub applied: Arc<Applied>,
    events: mpsc::UnboundedReceiver<AgentEvent>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl SealedAgent {
    /// Connects to `url` as `agent_id` of `tenant`, keeping its replay
    /// window in `state_dir`.
    pub async fn start(
        url: &str,
        ca_file: &Path,
        listen_key: &sas::Key,
        agent_id: &str,
        onboarded: &Onboarded,
        state_dir: &Path,
    ) -> SealedAgent {
        let applied = Arc::new(Applied::default());
        Self::start_sharing(
            url, ca_file, listen_key, agent_id, onboarded, state_dir, applied,
        )
        .await
    }

    /// As [`SealedAgent::start`], applying to `applied`: agents sharing one
    /// directory (and, from `onboarded`, one keyring).
    pub async fn start_sharing(
        url: &str,
        ca_file: &Path,
        listen_key: &sas::Key,
        agent_id: &str,
        onboarded: &Onboarded,
        state_dir: &Path,
        applied: Arc<Applied>,
    ) -> SealedAgent {
        let key_file = write_key(
            onboarded.dir.path(),
            &format!("{agent_id}.listen"),
            listen_key,
        );
        let toml = AgentToml::new(url, ca_file, &onboarded.tenant, agent_id, &key_file);
        let config = AgentConfig::from_toml(&toml.build()).expect("agent config");
        let handler = Arc::new(EnvelopeHandler {
            tenant: onboarded.tenant.clone(),
            agent_id: agent_id.to_owned(),
            keys: KeySource::keyring(
                &onboarded.keyring,
                zeroize::Zeroizing::new(SETUP_PASSWORD.to_owned()),
            )
            .expect("keyring"),
            validity: Validity::default(),
            replay: Arc::new(
                DurableReplay::open(&state_dir.join("replay.redb")).expect("replay store"),
            ),
            operations: Arc::new(Recording(Arc::clone(&applied))),
            events: None,
        });
        let crate::Spawned {
            events,
            shutdown,
            task,
        } = crate::spawn_agent(config, handler);
        let mut agent = SealedAgent {
            applied,
            events,
            shutdown,
            task,
        };
        agent.connected().await;
        agent
    }

    pub async fn connected(&mut self) {
        crate::await_connected(&mut self.events, "sealed agent").await;
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

/// A reset of ada@contoso.example sealed by `portal` to `agent` and
/// addressed to the agent id `dc01` (the one the refusal tests start), with
/// the header fields a refusal test varies: the tenant it names and when it
/// was issued (valid for two minutes from then).
pub fn seal_reset(
    portal: &KeyPair,
    agent: &envelope::PublicKey,
    tenant: &str,
    request_id: &str,
    issued_at_ms: u64,
) -> (Vec<u8>, envelope::PendingReply) {
    let header = RequestHeader {
        tenant: tenant.into(),
        agent_key_id: agent.key_id(),
        portal_key_id: portal.public.key_id(),
        agent_id: "dc01".into(),
        request_id: request_id.into(),
        operation: proto::pb::Operation::ResetPassword as i32 as u8,
        issued_at_ms,
        expires_at_ms: issued_at_ms + 120_000,
    };
    let body = RequestBody::reset(
        envelope::Anchor::UserPrincipalName("ada@contoso.example".into()),
        envelope::Password::new("Refusal-Test-Pass-1"),
    );
    envelope::seal_request(portal, agent, &header, &body, &mut envelope::os_rng()).expect("seal")
}

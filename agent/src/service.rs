//! The fully wired agent: event log, connector space, envelope handler,
//! replay store, scheduled rotation and imports around the session loop of
//! [`crate::run`]. The binary and in-process tests start the same thing, so
//! what a test sees is what a deployment runs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use directory::DirectoryError;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::AgentConfig;
use crate::connector::ConnectorSpace;
use crate::envelopes::{
    DurableReplay, EnvelopeHandler, KeySource, NoDirectory, Operations, ReplayStoreError, Validity,
};
use crate::eventlog::{self, Event, EventLog, Level, ids};
use crate::forests::open_forests;
use crate::keyring::{Keyring, KeyringError};
use crate::onboarding;
use crate::writeback::Writeback;
use crate::writeback::limits::AccountLimiter;
use crate::{AgentError, AgentEvent, EventSink, NoOperations, RequestHandler};

/// How many session events a slow subscriber may fall behind before it
/// misses some: the broadcast keeps no more, so an ignored subscription
/// costs bounded memory however long the agent runs.
const EVENT_BACKLOG: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the event log in {}", dir.display())]
    EventLog {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Opening a forest or the first import of the connector space.
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    #[error(
        "the keyring needs the setup password: set setup_password_file or WRITEBACK_AGENT_SETUP_PASSWORD"
    )]
    NoSetupPassword,
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    #[error("cannot create {}", path.display())]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Replay(#[from] ReplayStoreError),
}

/// A running agent. Cancel the token given to [`start`] to stop it, then
/// [`Agent::wait`].
pub struct Agent {
    /// The event log the agent writes (service, session and request events).
    pub event_log: Arc<EventLog>,
    /// The index of every configured forest's accounts.
    pub connector_space: Arc<ConnectorSpace>,
    first_events: broadcast::Receiver<AgentEvent>,
    events: broadcast::Sender<AgentEvent>,
    task: JoinHandle<Result<(), AgentError>>,
    /// Where the next session goes; a reload replaces it.
    pub endpoints: Arc<crate::reload::LiveEndpoints>,
}

impl Agent {
    /// Session events. The first call gets every event since [`start`]
    /// (its receiver was made before the session loop ran); later calls get
    /// the events from then on.
    pub fn events(&mut self) -> broadcast::Receiver<AgentEvent> {
        std::mem::replace(&mut self.first_events, self.events.subscribe())
    }

    /// Waits until the agent has stopped (after the token is cancelled, or
    /// when it cannot start its session loop at all, e.g. an unreadable
    /// Listen key).
    pub async fn wait(self) -> Result<(), AgentError> {
        self.task.await.map_err(|_| AgentError::Panicked)?
    }
}

/// Opens the event log, the forests (importing the connector space) and the
/// keyring, then starts the session loop and the background jobs. Returns
/// once they run; cancel `shutdown` to stop them, then [`Agent::wait`].
pub async fn start(config: AgentConfig, shutdown: CancellationToken) -> Result<Agent, StartError> {
    let event_log = Arc::new(
        EventLog::open(
            &config.event_log_dir(),
            config.event_log_max_bytes,
            eventlog::DEFAULT_KEEP,
        )
        .map_err(|source| StartError::EventLog {
            dir: config.event_log_dir(),
            source,
        })?
        .with_sinks(config.events.sinks()),
    );
    let space = Arc::new(ConnectorSpace::new(open_forests(&config)?));
    if !config.forests.is_empty() {
        let report = space
            .import(|forest, n| {
                tracing::info!(forest, accounts = n, "importing the connector space")
            })
            .await?;
        tracing::info!(accounts = report.total, "connector space ready");
    }
    let operations: Arc<dyn Operations> = if config.forests.is_empty() {
        Arc::new(NoDirectory)
    } else {
        Arc::new(Writeback {
            tenant: config.tenant.clone(),
            space: Arc::clone(&space),
            events: Arc::clone(&event_log),
            enabled: config.writeback_enabled,
            limiter: AccountLimiter::new(config.limits.resets_per_account_per_hour),
        })
    };
    let handler: Arc<dyn RequestHandler> = match &config.key_file {
        Some(path) => {
            let password = config.setup_password().ok_or(StartError::NoSetupPassword)?;
            let keys = KeySource::keyring(path, password)?;
            let state_dir = config.state_dir();
            std::fs::create_dir_all(&state_dir).map_err(|source| StartError::StateDir {
                path: state_dir.clone(),
                source,
            })?;
            let replay = Arc::new(DurableReplay::open(&state_dir.join("replay.redb"))?);
            Arc::new(EnvelopeHandler {
                tenant: config.tenant.clone(),
                agent_id: config.agent_id(),
                keys,
                validity: Validity {
                    skew_allowance: config.clock_skew_allowance,
                    max_lifetime: config.max_envelope_lifetime,
                },
                replay,
                operations,
                events: Some(Arc::clone(&event_log)),
            })
        }
        None => Arc::new(NoOperations),
    };
    if let (Some(every), Some(_)) = (config.rotate_every, &config.key_file) {
        tokio::spawn(scheduled_rotation(config.clone(), every, shutdown.clone()));
    }
    if !config.forests.is_empty() {
        tokio::spawn(periodic_import(
            Arc::clone(&space),
            config.import_interval,
            shutdown.clone(),
        ));
    }
    let (broadcast_tx, first_events) = broadcast::channel(EVENT_BACKLOG);
    // The event log gets every session event, however slow a subscriber.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn({
        let event_log = Arc::clone(&event_log);
        let tenant = config.tenant.clone();
        let broadcast_tx = broadcast_tx.clone();
        async move {
            while let Some(event) = rx.recv().await {
                if let Some(logged) = relay_event(&tenant, &event) {
                    event_log.write(&logged);
                }
                // Nobody subscribed is fine.
                let _ = broadcast_tx.send(event);
            }
        }
    });
    let mut started = Event::new(
        ids::SERVICE_STARTED,
        Level::Information,
        "password write-back service started",
    );
    started.tenant = Some(config.tenant.clone());
    event_log.write(&started);
    let endpoints = Arc::new(crate::reload::LiveEndpoints::new(&config));
    let task = tokio::spawn({
        let event_log = Arc::clone(&event_log);
        let endpoints = Arc::clone(&endpoints);
        async move {
            let result =
                crate::run_live(&config, endpoints, handler, EventSink::new(tx), shutdown).await;
            let mut stopped = Event::new(
                ids::SERVICE_STOPPED,
                Level::Information,
                "password write-back service stopped",
            );
            stopped.tenant = Some(config.tenant.clone());
            event_log.write(&stopped);
            result
        }
    });
    Ok(Agent {
        event_log,
        connector_space: space,
        first_events,
        events: broadcast_tx,
        task,
        endpoints,
    })
}

/// The event-log entry for a session event: sessions established (31019,
/// the relay heartbeat), refused (32009 for credential problems, else
/// 32002) and lost (32014, the agent retries).
fn relay_event(tenant: &str, event: &AgentEvent) -> Option<Event> {
    let mut e = match event {
        AgentEvent::Connected { skew_ms, .. } => Event::new(
            ids::HEARTBEAT,
            Level::Information,
            format!("connected to the relay; broker clock skew {skew_ms} ms"),
        ),
        AgentEvent::Refused { reason } => {
            let auth = [
                "BAD_SIGNATURE",
                "TOKEN_",
                "MALFORMED_TOKEN",
                "MISSING_CREDENTIAL",
                "WRONG_RIGHT",
                "TENANT_MISMATCH",
                "AGENT_REVOKED",
            ]
            .iter()
            .any(|r| reason.contains(r));
            let id = if auth {
                ids::AUTH_TOKEN_ERROR
            } else {
                ids::RELAY_ERROR
            };
            Event::new(
                id,
                Level::Error,
                format!("the relay refused the session: {reason}"),
            )
        }
        AgentEvent::Disconnected { reason } => Event::new(
            ids::RELAY_RETRY,
            Level::Warning,
            format!("relay session lost ({reason}); reconnecting"),
        ),
        AgentEvent::Answered { .. } => return None,
    };
    e.tenant = Some(tenant.to_owned());
    Some(e)
}

/// Keeps the connector space current between requests.
async fn periodic_import(space: Arc<ConnectorSpace>, every: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
        if let Err(e) = space.import(|_, _| {}).await {
            tracing::warn!(error = %e, "connector space import failed; retrying at the next interval");
        }
    }
}

/// Rotates the key when it reaches `every`, checking hourly. Meant for
/// single-agent tenants (or a keyring shared by all agents): with several
/// agents holding copies, rotate by hand with --stage and import.
async fn scheduled_rotation(config: AgentConfig, every: Duration, shutdown: CancellationToken) {
    loop {
        if let (Some(path), Some(password)) = (&config.key_file, config.setup_password())
            && let Ok(ring) = Keyring::load(path, &password)
            && onboarding::rotation_due(&ring, every, proto::time::unix_ms())
        {
            match onboarding::rotate(&config, &password, true).await {
                Ok(r) => tracing::info!(key_id = %r.key_id, "scheduled key rotation done"),
                Err(e) => {
                    tracing::error!(error = %e, "scheduled key rotation failed; retrying in an hour")
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

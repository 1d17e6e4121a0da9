//! The on-prem password write-back agent, for the administrators who run
//! it and for tests that start it in-process: [`start`] wires everything
//! the `writeback-agent` binary runs (event log, forests, connector space,
//! keyring, replay store) around the session loop, which holds an outbound
//! session to the broker, reconnects with jittered backoff for as long as
//! it runs, and hands relayed requests to a [`RequestHandler`].
//!
//! # Layout
//! - [`service`]: [`start`], the fully wired agent, and its [`Agent`] handle.
//! - [`session`] over [`outbox`]: one session with the broker (Hello,
//!   heartbeats, requests, replies kept until the broker acknowledges them).
//! - [`backoff`]: the jittered reconnect delay; [`run`] is the loop.
//! - [`handler`]: the [`RequestHandler`] seam that requests go through.
//! - [`envelopes`]: opening sealed requests (keys, validity, the durable
//!   replay window) and sealing the answers.
//! - [`writeback`]: the password operations against the directory.
//! - [`connector`]: the connector space, the agent's index of every forest's
//!   accounts, which resolves the anchor a portal sends to one account.
//! - [`forests`]: the configured forests opened as directory backends.
//! - [`kerberos`]: the keytab, ticket cache and krb5.conf a Kerberos bind
//!   reads, set before the agent runs (it re-executes itself once).
//! - [`keyring`], [`onboarding`]: the agent's key pairs and pinned portal
//!   keys; init, import, rotation and activation.
//! - [`status`], [`doctor`]: what `status` and `doctor` report.
//! - [`eventlog`]: the event log, with the AD Connect event ids, and its
//!   copies to journald and syslog.
//! - [`config`]: the agent's TOML configuration.
//! - [`reload`]: SIGHUP (the broker addresses and CA file for the next
//!   connection) and `check-config`.
//! - [`telemetry`]: log output to stderr, text or JSON lines.

pub mod backoff;
pub mod config;
pub mod connector;
pub mod doctor;
pub mod envelopes;
pub mod eventlog;
pub mod forests;
pub mod handler;
pub mod kerberos;
pub mod keyring;
pub mod onboarding;
pub mod outbox;
pub mod reload;
pub mod service;
pub mod session;
pub mod status;
pub mod telemetry;
pub mod writeback;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use self::session::{SessionContext, SessionEnd, SessionError, run_session};
use ::session::agent::NextStep;
pub use config::AgentConfig;
pub use handler::{HandlerError, IncomingRequest, NoOperations, RequestHandler};
pub use service::{Agent, StartError, start};

use backoff::Backoff;
use outbox::Outbox;
use relay_client::credential::{Credential, CredentialError};

/// A session that stayed up this long resets the backoff.
pub const HEALTHY_SESSION: Duration = Duration::from_secs(60);

/// What the agent reports as it runs, for the binary's status lines and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEvent {
    Connected {
        session_id: String,
        skew_ms: i64,
    },
    Disconnected {
        reason: String,
    },
    Refused {
        reason: String,
    },
    /// A request was answered: with a reply envelope (a sealed NOT_APPLIED
    /// refusal included), or with an AgentError, carrying its refusal when
    /// it is an envelope refusal (`EXPIRED`, `UNKNOWN_KEY`, ...).
    Answered {
        request_id: String,
        refusal: Option<proto::pb::EnvelopeRefusal>,
    },
}

/// Where events go; dropping events when nobody listens is fine.
#[derive(Clone, Default)]
pub struct EventSink(Option<mpsc::UnboundedSender<AgentEvent>>);

impl EventSink {
    pub fn new(tx: mpsc::UnboundedSender<AgentEvent>) -> EventSink {
        EventSink(Some(tx))
    }

    pub fn emit(&self, event: AgentEvent) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(event);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Credential(#[from] CredentialError),
    #[error("the agent's task panicked")]
    Panicked,
}

/// Runs the agent until `shutdown` is cancelled. Never gives up on the
/// broker: every failure is logged and followed by a jittered retry.
pub async fn run(
    config: &AgentConfig,
    handler: Arc<dyn RequestHandler>,
    events: EventSink,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    let endpoints = Arc::new(reload::LiveEndpoints::new(config));
    run_live(config, endpoints, handler, events, shutdown).await
}

/// [`run`], dialing whatever `endpoints` holds at each connection, so that
/// a reload ([`reload`]) changes where the next session goes.
pub async fn run_live(
    config: &AgentConfig,
    endpoints: Arc<reload::LiveEndpoints>,
    handler: Arc<dyn RequestHandler>,
    events: EventSink,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    let credential = Credential::from_key_file(
        config.tenant.clone(),
        sas::Right::Listen,
        &config.listen_key_file,
    )?;
    let ctx = SessionContext {
        keepalive: (config.keepalive_interval, config.keepalive_timeout),
        tenant: config.tenant.clone(),
        agent_id: config.agent_id(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        credential,
        token_lifetime: config.token_lifetime,
        handler,
        events: events.clone(),
        outbox: Arc::new(Outbox::new(::session::agent::Config {
            token_lifetime: config.token_lifetime,
            drain_grace: config.drain_grace,
            ..Default::default()
        })),
    };
    info!(tenant = %ctx.tenant, agent_id = %ctx.agent_id, broker = %config.broker, "agent starting");
    let mut backoff = Backoff::new(config.reconnect_min, config.reconnect_max);
    let mut next = 0;
    loop {
        let dialing = endpoints.current();
        let endpoint = &dialing[next % dialing.len()];
        // Whatever happens, the next attempt goes to the next address.
        next += 1;
        let mut delay = None;
        match run_session(&ctx, endpoint, &shutdown).await {
            Ok(SessionEnd::Shutdown) => break,
            Ok(SessionEnd::Ended {
                lasted,
                reason,
                goodbye,
                next: step,
            }) => {
                // Closed for posting replies nobody asked for: however long
                // the session lasted, reconnecting at once would repeat it.
                let misbehaved = step == NextStep::BackOff;
                if lasted >= HEALTHY_SESSION && !misbehaved {
                    backoff.reset();
                }
                if misbehaved {
                    error!(%reason, "the broker closed the session for replies it does not expect: for requests it never gave this agent, or whose records it no longer has (a store restored from an old backup); reconnecting after a backoff");
                }
                if let Some(g) = goodbye {
                    info!(goodbye = g.as_str_name(), "session closed by the broker");
                }
                if step == NextStep::ReconnectSoon {
                    // A draining node: go elsewhere soon, but spread out so
                    // its agents do not all arrive at once.
                    delay = Some(config.reconnect_min.mul_f64(fastrand::f64()));
                }
                // Revoked: the broker refuses this agent id until an
                // administrator restores it; retrying with backoff is what
                // lets a restore take effect without a restart.
                warn!(%reason, "session ended; reconnecting");
                events.emit(AgentEvent::Disconnected { reason });
                if step == NextStep::Stop {
                    // The session ended while draining: the agent is stopping.
                    break;
                }
            }
            Err(SessionError::Refused(e)) => {
                error!(error = %e, "the broker refused the session");
                events.emit(AgentEvent::Refused {
                    reason: e.to_string(),
                });
            }
            Err(e) => {
                warn!(error = %e, "cannot reach the broker");
                events.emit(AgentEvent::Disconnected {
                    reason: e.to_string(),
                });
            }
        }
        let delay = delay.unwrap_or_else(|| backoff.next_delay());
        info!(
            delay_ms = delay.as_millis() as u64,
            next = %{ let e = endpoints.current(); e[next % e.len()].url.clone() },
            "waiting before reconnecting"
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => break,
        }
    }
    info!("agent stopped");
    Ok(())
}

//! `writeback-agent`: the on-prem password write-back agent.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use agent_client::agent::config::LogFormat;
use agent_client::agent::{self, AgentConfig, AgentEvent, EventSink, NoOperations};
use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

/// On-prem password write-back agent.
///
/// Connects outbound to the relay broker over TLS, authenticates with the
/// tenant's Listen key, and answers the requests relayed to it. Reconnects
/// with jittered backoff for as long as it runs. Logs go to stderr; one line
/// per session event goes to stdout (`connected ...`, `disconnected ...`,
/// `refused ...`).
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// TOML configuration file (see examples/agent.toml).
    #[arg(long, env = "WRITEBACK_AGENT_CONFIG")]
    config: Option<PathBuf>,
    /// Broker address, https://host:port.
    #[arg(long, env = "WRITEBACK_AGENT_BROKER")]
    broker: Option<String>,
    /// PEM CA bundle that signs the broker's certificate.
    #[arg(long, env = "WRITEBACK_AGENT_CA_FILE")]
    ca_file: Option<PathBuf>,
    #[arg(long, env = "WRITEBACK_AGENT_TENANT")]
    tenant: Option<String>,
    #[arg(long, env = "WRITEBACK_AGENT_ID")]
    agent_id: Option<String>,
    /// File holding the tenant's Listen key.
    #[arg(long, env = "WRITEBACK_AGENT_LISTEN_KEY_FILE")]
    listen_key_file: Option<PathBuf>,
    #[arg(long, env = "WRITEBACK_AGENT_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
}

impl Cli {
    fn config(&self) -> anyhow::Result<AgentConfig> {
        let mut table = match &self.config {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {}", path.display()))?
                .parse::<toml::Table>()
                .with_context(|| format!("invalid config file {}", path.display()))?,
            None => toml::Table::new(),
        };
        let mut set = |key: &str, value: Option<String>| {
            if let Some(v) = value {
                table.insert(key.to_owned(), toml::Value::String(v));
            }
        };
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        set("broker", self.broker.clone());
        set("ca_file", path(&self.ca_file));
        set("tenant", self.tenant.clone());
        set("agent_id", self.agent_id.clone());
        set("listen_key_file", path(&self.listen_key_file));
        set(
            "log_format",
            self.log_format.map(|f| match f {
                LogFormat::Text => "text".to_owned(),
                LogFormat::Json => "json".to_owned(),
            }),
        );
        Ok(AgentConfig::from_toml(&toml::to_string(&table)?)?)
    }
}

fn print_event(event: &AgentEvent) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match event {
        AgentEvent::Connected {
            session_id,
            skew_ms,
        } => writeln!(out, "connected session_id={session_id} skew_ms={skew_ms}")?,
        AgentEvent::Disconnected { reason } => writeln!(out, "disconnected reason={reason:?}")?,
        AgentEvent::Refused { reason } => writeln!(out, "refused reason={reason:?}")?,
        AgentEvent::Answered { .. } => return Ok(()),
    }
    out.flush()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = cli.config()?;
    agent_client::telemetry::init(config.log_format);
    let shutdown = CancellationToken::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            let _ = print_event(&event);
        }
    });
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            wait_for_signal().await;
            shutdown.cancel();
        }
    });
    agent::run(
        &config,
        Arc::new(NoOperations),
        EventSink::new(tx),
        shutdown,
    )
    .await?;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

//! `reset-portal`: the reference password reset portal.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use portal::config::PortalConfig;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// A reference password reset portal for the relay (a demo: it does not
/// verify who the user is).
///
/// Once listening it prints one line to stdout:
/// `reset-portal ready http=ADDR`. Logs go to stderr (`RUST_LOG`).
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// TOML configuration file (see examples/portal.toml).
    #[arg(long, env = "RESET_PORTAL_CONFIG")]
    config: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let config = PortalConfig::load(&cli.config)?;
    let shutdown = CancellationToken::new();
    let server = portal::serve(config, shutdown.clone())
        .await
        .context("cannot start the portal")?;
    // Before the ready line: a SIGTERM sent as soon as it appears must
    // find the handler in place, not the default action.
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle Ctrl-C")?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "reset-portal ready http={}", server.addr)?;
        out.flush()?;
    }
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
        }
        tracing::info!("shutting down: finishing the requests in flight");
        shutdown.cancel();
    });
    server.wait().await?;
    Ok(())
}

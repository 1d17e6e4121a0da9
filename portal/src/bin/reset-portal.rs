//! `reset-portal`: the reference password reset portal.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use portal::config::PortalConfig;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// A reference password reset portal for the relay. Users sign in at an
/// OpenID provider (`identity_check = "oidc"`), or, in a demo, are not
/// verified at all (`"none"`).
///
/// Once listening it prints one line to stdout:
/// `reset-portal ready http=ADDR`. Logs go to stderr (`RUST_LOG`).
/// SIGHUP reloads the configuration (the title and request_timeout change
/// live); SIGTERM finishes the requests in flight (`/readyz` answers 503
/// meanwhile) and stops.
#[derive(Parser)]
#[command(name = "reset-portal", version, subcommand_negates_reqs = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// TOML configuration file (see examples/portal.toml).
    #[arg(long, env = "RESET_PORTAL_CONFIG", required = true)]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Checks a configuration file and the files it names (the Send key,
    /// the portal key, the CSRF key, the CA file; with `[oidc]`, the session
    /// key, client secret and provider CA) without starting: prints
    /// `configuration OK: FILE`, or the problem and exits 1.
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
    },
}

/// `check-config`: exits 0 with `configuration OK: FILE` on stdout, or 1
/// with the problem on stderr.
fn check_config(path: PathBuf) -> ! {
    match portal::reload::check_file(&path) {
        Ok(()) => {
            println!("configuration OK: {}", path.display());
            std::process::exit(0)
        }
        Err(e) => {
            eprintln!(
                "configuration invalid: {}: {}",
                path.display(),
                portal::reload::chain(&e)
            );
            std::process::exit(1)
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::CheckConfig { config }) = cli.command {
        check_config(config);
    }
    let path = cli.config.context("--config is required")?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let config = PortalConfig::load(&path)?;
    let running = config.clone();
    let shutdown = CancellationToken::new();
    // Before the portal serves: SIGHUP's default action would kill it.
    let hangup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let server = portal::serve(config, shutdown.clone())
        .await
        .context("cannot start the portal")?;
    tokio::spawn(portal::reload::on_hangup(
        std::sync::Arc::clone(&server.settings),
        running,
        path,
        hangup,
        shutdown.clone(),
    ));
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

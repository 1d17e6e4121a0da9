//! One benchmark run: locate (and build) the broker, make a development
//! PKI, run the chosen scenarios in order, then print the table and write
//! the JSON and the plot. A scenario that fails is reported and the others
//! still run; the exit status says whether all succeeded.

use std::time::Instant;

use anyhow::Context as _;

use crate::cli::{Scenario, Settings};
use crate::report::{Report, Versions};
use crate::scenarios::{self, Context};

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    scenarios::simulator::raise_nofile();
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this bench binary is not optimised; run it with `cargo run --release -p bench`"
        );
    }
    let wants = |s: Scenario| settings.scenarios.contains(&s);
    // Missing tools fail the run before anything is measured.
    let nats_server = if wants(Scenario::NatsTls) || wants(Scenario::RoutedCrossNode) {
        Some(scenarios::nats_tls::nats_server()?)
    } else {
        None
    };
    let broker_bin =
        if wants(Scenario::Routed) || wants(Scenario::RoutedCrossNode) || wants(Scenario::Sessions)
        {
            Some(crate::broker::ensure_binary(
                settings.broker_bin.as_deref(),
                settings.build,
            )?)
        } else {
            None
        };
    let work = tempfile::Builder::new()
        .prefix("relay-bench-")
        .tempdir()
        .context("create a working directory")?;
    let pki = broker::tls::generate_dev_pki(&work.path().join("pki"), &["127.0.0.1".to_owned()])?;
    let mut report = Report::new(
        &settings,
        Versions::collect(broker_bin.as_deref(), nats_server.as_deref()),
    );
    let ctx = Context {
        settings,
        dir: work.path().to_owned(),
        pki,
        broker_bin,
    };

    // On Ctrl-C or SIGTERM the scenario in progress is dropped, and with it
    // the processes it started (they are killed when dropped).
    tokio::select! {
        () = run_all(&ctx, &mut report) => {}
        signal = interrupted() => {
            anyhow::bail!("interrupted by {signal}: the processes started were stopped");
        }
    }
    report.conclude();
    print!("{}", report.table());

    if let Some(path) = &ctx.settings.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json + "\n").with_context(|| format!("write {}", path.display()))?;
        eprintln!("report written to {}", path.display());
    }
    if let Some(path) = &ctx.settings.plot {
        match crate::plot::write(&serde_json::to_value(&report)?, path) {
            Ok(()) => eprintln!("plot written to {}", path.display()),
            Err(e) => eprintln!("no plot: {e:#}"),
        }
    }
    if ctx.settings.keep_dir {
        eprintln!("working directory kept: {}", work.keep().display());
    }
    anyhow::ensure!(
        report.errors.is_empty(),
        "{} scenario(s) failed: {}",
        report.errors.len(),
        report.errors.keys().copied().collect::<Vec<_>>().join(", ")
    );
    Ok(())
}

async fn run_all(ctx: &Context, report: &mut Report) {
    for &scenario in &ctx.settings.scenarios {
        eprintln!("running {}...", scenario.name());
        let started = Instant::now();
        match run_one(ctx, scenario, report).await {
            Ok(()) => eprintln!(
                "  {} done in {:.1} s",
                scenario.name(),
                started.elapsed().as_secs_f64()
            ),
            Err(e) => {
                eprintln!("  {} FAILED: {e:#}", scenario.name());
                report.errors.insert(scenario.name(), format!("{e:#}"));
            }
        }
    }
}

/// Waits for Ctrl-C or SIGTERM; which one.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "Ctrl-C",
        _ = term.recv() => "SIGTERM",
    }
}

async fn run_one(ctx: &Context, scenario: Scenario, report: &mut Report) -> anyhow::Result<()> {
    match scenario {
        Scenario::Crypto => {
            report.crypto = Some(scenarios::crypto::measure(ctx.settings.crypto_iterations)?);
        }
        Scenario::DirectTonic => {
            report.direct_tonic = Some(scenarios::direct_tonic::measure(ctx).await?);
        }
        Scenario::Routed => report.routed = Some(scenarios::routed::measure(ctx).await?),
        Scenario::RoutedCrossNode => {
            report.routed_cross_node = Some(scenarios::routed_cross_node::measure(ctx).await?);
        }
        Scenario::NatsTls => report.nats_tls = Some(scenarios::nats_tls::measure(ctx).await?),
        Scenario::Sessions => {
            let (sessions, reconnect) = scenarios::sessions::measure(ctx).await?;
            report.sessions = Some(sessions);
            report.reconnect = Some(reconnect);
        }
    }
    Ok(())
}

//! Flags, and the settings of a run derived from them (`--quick` or full).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::load::Plan;
use crate::scenarios;

/// Measures the relay (portal client -> broker -> agent, envelopes sealed
/// end to end; on one broker, and across two broker nodes of a cluster)
/// beside a direct tonic unary call and NATS request-reply, all over TLS on
/// loopback with separate processes; then idle agent sessions, a kill -9
/// and restart of the broker under them, and the envelope crypto.
#[derive(Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Role>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Tools, and the roles of the helper processes the benchmark starts.
#[derive(Subcommand)]
pub enum Role {
    /// Draws the SVG of the latency distributions from a JSON report.
    Plot {
        #[arg(long)]
        json: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Prints the median of each ratio and figure over several JSON
    /// reports (the targets are judged on the median of 3 runs).
    Median {
        #[arg(required = true, num_args = 1..)]
        reports: Vec<PathBuf>,
    },
    #[command(flatten)]
    Helper(Helper),
}

/// The processes a run starts: this binary in another role (hidden).
#[derive(Subcommand)]
pub enum Helper {
    #[command(hide = true)]
    Agent(scenarios::routed::AgentArgs),
    #[command(hide = true)]
    EchoServer(scenarios::direct_tonic::ServerArgs),
    #[command(hide = true)]
    NatsResponder(scenarios::nats_tls::ResponderArgs),
    #[command(hide = true)]
    Simulate(scenarios::simulator::Args),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Portal client -> broker -> agent and back, sealed envelopes.
    #[value(name = "routed")]
    Routed,
    /// The same with the agent on another broker node: two brokers in
    /// cluster mode on a three-node NATS cluster.
    #[value(name = "routed_cross_node")]
    RoutedCrossNode,
    /// A tonic unary echo over TLS: the floor for one gRPC hop.
    #[value(name = "direct_tonic")]
    DirectTonic,
    /// NATS request-reply through nats-server with TLS.
    #[value(name = "nats_tls")]
    NatsTls,
    /// Idle agent sessions, broker memory, then kill -9 and reconnect.
    #[value(name = "sessions")]
    Sessions,
    /// CPU time of sealing and opening a request and its reply.
    #[value(name = "crypto")]
    Crypto,
}

impl Scenario {
    pub const ALL: [Scenario; 6] = [
        Scenario::Crypto,
        Scenario::DirectTonic,
        Scenario::Routed,
        Scenario::RoutedCrossNode,
        Scenario::NatsTls,
        Scenario::Sessions,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Routed => "routed",
            Scenario::RoutedCrossNode => "routed_cross_node",
            Scenario::DirectTonic => "direct_tonic",
            Scenario::NatsTls => "nats_tls",
            Scenario::Sessions => "sessions",
            Scenario::Crypto => "crypto",
        }
    }
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// Scenarios to run, comma-separated [default: all].
    #[arg(long, value_delimiter = ',', value_enum)]
    pub scenarios: Vec<Scenario>,
    /// Small sizes: the whole run takes under a minute.
    #[arg(long)]
    pub quick: bool,
    /// Sequential calls measured for latency [default: 10000; quick 2000].
    #[arg(long)]
    pub requests: Option<usize>,
    /// Sequential calls before the latency measurement [default: requests/10].
    #[arg(long)]
    pub warmup: Option<usize>,
    /// How long the throughput measurement lasts [default: 10s; quick 3s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Calls in flight for throughput.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Idle agent sessions [default: 20000; quick 2000]. Capped by this
    /// machine's RLIMIT_NOFILE hard limit (the broker needs a descriptor per
    /// session); the report says so when it is.
    #[arg(long)]
    pub sessions: Option<usize>,
    /// Source addresses the sessions come from: 127.0.0.2, 127.0.0.3, ...
    #[arg(long, default_value_t = 8)]
    pub sources: usize,
    /// Session simulator processes [default: one per 5000 sessions].
    #[arg(long)]
    pub simulators: Option<usize>,
    /// Agents per tenant in the sessions scenario (tenants = sessions / this).
    #[arg(long, default_value_t = 1000)]
    pub agents_per_tenant: usize,
    /// Seal/open cycles timed by the crypto scenario [default: 5000; quick 1000].
    #[arg(long)]
    pub crypto_iterations: Option<usize>,
    /// Where the routed agent keeps its replay store [default: the run's
    /// working directory, on disk as in production]. A tmpfs such as
    /// /dev/shm shows what the store's fsync costs.
    #[arg(long)]
    pub agent_state_dir: Option<PathBuf>,
    /// Encapsulations the routed caller's `SealedPortal` keeps ready
    /// [default: the library's default]; 0 seals each request entirely on
    /// the caller's path, as before they existed.
    #[arg(long)]
    pub portal_prepared: Option<usize>,
    /// Writes the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Writes an SVG of the latency distributions here.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Do not run `cargo build --release -p broker` first.
    #[arg(long)]
    pub no_build: bool,
    /// The relay-broker binary [default: target/release/relay-broker].
    #[arg(long)]
    pub broker_bin: Option<PathBuf>,
    /// RUST_LOG of the broker and the agent [default: info, as in production].
    #[arg(long, default_value = "info")]
    pub log: String,
    /// Keep the working directory (configs, logs, stores) and print its path.
    #[arg(long)]
    pub keep_dir: bool,
}

/// Everything a run needs, sizes resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    pub mode: &'static str,
    pub scenarios: Vec<Scenario>,
    pub plan: Plan,
    pub sessions: usize,
    pub sources: usize,
    pub simulators: Option<usize>,
    pub agents_per_tenant: usize,
    pub crypto_iterations: usize,
    pub agent_state_dir: Option<PathBuf>,
    pub portal_prepared: Option<usize>,
    pub json: Option<PathBuf>,
    pub plot: Option<PathBuf>,
    pub build: bool,
    pub broker_bin: Option<PathBuf>,
    pub rust_log: String,
    pub keep_dir: bool,
}

impl RunArgs {
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let quick = self.quick;
        let pick = |flag: Option<usize>, full: usize, small: usize| {
            flag.unwrap_or(if quick { small } else { full })
        };
        let requests = pick(self.requests, 10_000, 2_000);
        anyhow::ensure!(requests > 0, "--requests must be at least 1");
        anyhow::ensure!(self.concurrency > 0, "--concurrency must be at least 1");
        anyhow::ensure!(
            (1..=250).contains(&self.sources),
            "--sources must be between 1 and 250"
        );
        anyhow::ensure!(
            self.agents_per_tenant > 0,
            "--agents-per-tenant must be at least 1"
        );
        let duration = self.duration.unwrap_or(if quick {
            Duration::from_secs(3)
        } else {
            Duration::from_secs(10)
        });
        let scenarios = if self.scenarios.is_empty() {
            Scenario::ALL.to_vec()
        } else {
            // The order of ALL, whatever the order of the flag.
            Scenario::ALL
                .into_iter()
                .filter(|s| self.scenarios.contains(s))
                .collect()
        };
        Ok(Settings {
            mode: if quick { "quick" } else { "full" },
            scenarios,
            plan: Plan {
                warmup: self.warmup.unwrap_or(requests / 10),
                requests,
                concurrency: self.concurrency,
                duration,
                warmup_duration: if quick {
                    Duration::from_millis(500)
                } else {
                    Duration::from_secs(2)
                },
            },
            sessions: pick(self.sessions, 20_000, 2_000),
            sources: self.sources,
            simulators: self.simulators,
            agents_per_tenant: self.agents_per_tenant,
            crypto_iterations: pick(self.crypto_iterations, 5_000, 1_000),
            agent_state_dir: self.agent_state_dir.clone(),
            portal_prepared: self.portal_prepared,
            json: self.json.clone(),
            plot: self.plot.clone(),
            build: !self.no_build,
            broker_bin: self.broker_bin.clone(),
            rust_log: self.log.clone(),
            keep_dir: self.keep_dir,
        })
    }
}

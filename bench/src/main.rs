//! `bench`: measures the relay beside a direct gRPC call and NATS
//! request-reply, and across two broker nodes of a cluster beside one
//! broker; holds many idle agent sessions on one broker, restarts it under
//! them, and times the envelope crypto. Run it as
//! `cargo run --release -p bench -- [flags]`; `docs/BENCHMARKS.md` explains
//! the method and records the figures.
//!
//! # Layout
//! - [`cli`]: flags, and the settings a run derives from them.
//! - [`run`]: one benchmark run: the scenarios in order, the report.
//! - [`scenarios`]: one module per scenario, each with the helper process
//!   it needs (agent, echo server, NATS responder, session simulator).
//! - [`load`]: the load driver: sequential calls for latency, 64 in flight
//!   for throughput.
//! - [`stats`]: percentiles and distributions.
//! - [`report`]: the JSON report, the table, the targets of issue 8.
//! - [`plot`]: the SVG of the latency distributions.
//! - [`procs`], [`broker`]: child processes, and the real `relay-broker`.
//! - [`payload`]: the 512-byte payloads every scenario carries.
//! - [`echo`]: the generated code of the direct_tonic echo service.

mod broker;
mod cli;
mod echo;
mod load;
mod payload;
mod plot;
mod procs;
mod report;
mod run;
mod scenarios;
mod stats;

use clap::Parser;

use cli::{Cli, Helper, Role};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        None => runtime.block_on(run::run(cli.run.settings()?)),
        Some(Role::Plot { json, out }) => plot::from_json_file(&json, &out),
        Some(Role::Median { reports }) => report::print_medians(&reports),
        Some(Role::Helper(helper)) => runtime.block_on(async {
            procs::exit_with_parent();
            match helper {
                Helper::Agent(args) => scenarios::routed::agent(args).await,
                Helper::EchoServer(args) => scenarios::direct_tonic::server(args).await,
                Helper::NatsResponder(args) => scenarios::nats_tls::responder(args).await,
                Helper::Simulate(args) => scenarios::simulator::simulate(args).await,
            }
        }),
    }
}

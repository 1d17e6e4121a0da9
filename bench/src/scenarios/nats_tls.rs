//! `nats_tls`: request-reply through a `nats-server` process with TLS (the
//! same development certificate as the broker), the responder a separate
//! process subscribed in a queue group, the client async-nats. This is what
//! a relay built on NATS would do: agents connect out and subscribe, the
//! portal sends a request and waits for the reply.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures_util::StreamExt;

use super::Context;
use crate::load::{self, Call, Measured};
use crate::payload;
use crate::procs::{Proc, this_binary};

const SUBJECT: &str = "bench.echo";
const QUEUE_GROUP: &str = "responders";

/// `bench nats-responder`: answers every request with its payload.
#[derive(clap::Args)]
pub struct ResponderArgs {
    #[arg(long)]
    url: String,
    #[arg(long)]
    ca: PathBuf,
}

async fn connect(url: &str, ca: &Path) -> anyhow::Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .add_root_certificates(ca.to_owned())
        .require_tls(true)
        .connect(url)
        .await
        .with_context(|| format!("connect to nats-server at {url}"))
}

/// Runs the responder; prints `ready` once subscribed.
pub async fn responder(args: ResponderArgs) -> anyhow::Result<()> {
    let client = connect(&args.url, &args.ca).await?;
    let mut requests = client
        .queue_subscribe(SUBJECT, QUEUE_GROUP.to_owned())
        .await?;
    client.flush().await?;
    println!("ready");
    while let Some(message) = requests.next().await {
        if let Some(reply) = message.reply {
            client.publish(reply, message.payload).await?;
        }
    }
    Ok(())
}

/// Where nats-server is, or how to get it.
pub fn nats_server() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file())
        .context(
            "nats-server is not installed: run scripts/bench/install-nats (apt-get, needs \
             root), or leave nats_tls and routed_cross_node out \
             (--scenarios routed,direct_tonic,sessions,crypto)",
        )
}

#[derive(Clone)]
struct NatsCall {
    client: async_nats::Client,
    /// Cloning it is a reference count, as with the other clients' payloads.
    payload: bytes::Bytes,
}

impl Call for NatsCall {
    async fn call(&self) -> anyhow::Result<()> {
        let reply = self
            .client
            .request(SUBJECT, self.payload.clone())
            .await
            .context("NATS request")?;
        anyhow::ensure!(reply.payload.len() == payload::PAYLOAD_BYTES, "short reply");
        Ok(())
    }
}

pub async fn measure(ctx: &Context) -> anyhow::Result<Measured> {
    let server_bin = nats_server()?;
    let dir = ctx.subdir("nats_tls")?;
    let config = dir.join("nats.conf");
    std::fs::write(
        &config,
        format!(
            "host: \"127.0.0.1\"\nport: -1\nports_file_dir: {:?}\n\
             tls {{\n  cert_file: {:?}\n  key_file: {:?}\n}}\n",
            dir, ctx.pki.server_cert, ctx.pki.server_key
        ),
    )?;
    let mut cmd = tokio::process::Command::new(&server_bin);
    cmd.arg("-c").arg(&config);
    let mut server = Proc::spawn("nats-server", cmd, &dir.join("nats-server.log"))?;
    let url = client_url(&dir, server.pid()?, &server).await?;

    let mut cmd = this_binary("nats-responder")?;
    cmd.arg("--url").arg(&url).arg("--ca").arg(&ctx.pki.ca_cert);
    let mut responder = Proc::spawn("nats responder", cmd, &dir.join("responder.log"))?;
    responder.expect_line("ready").await?;

    let call = NatsCall {
        client: connect(&url, &ctx.pki.ca_cert).await?,
        payload: payload::bytes().into(),
    };
    let processes = [
        ("nats_server", server.pid()?),
        ("responder", responder.pid()?),
    ];
    let measured = load::measure(call, &ctx.settings.plan, &processes).await;
    responder.kill9().await?;
    server.kill9().await?;
    measured
}

/// The client URL from the ports file nats-server writes once it listens.
async fn client_url(dir: &Path, pid: u32, server: &Proc) -> anyhow::Result<String> {
    let ports = ports_file(dir, pid, server).await?;
    ports["nats"][0]
        .as_str()
        .map(str::to_owned)
        .context("no client URL in the ports file")
}

/// The ports file nats-server writes into `dir` (`ports_file_dir`) once it
/// listens: `{"nats": ["tls://127.0.0.1:P"], "monitoring": [...], "cluster": [...]}`.
pub async fn ports_file(dir: &Path, pid: u32, server: &Proc) -> anyhow::Result<serde_json::Value> {
    let file = dir.join(format!("nats-server_{pid}.ports"));
    let deadline = tokio::time::Instant::now() + crate::procs::READY_TIMEOUT;
    loop {
        // It may be read while being written: retry until it parses.
        if let Ok(text) = std::fs::read_to_string(&file)
            && let Ok(ports) = serde_json::from_str::<serde_json::Value>(&text)
            && ports["nats"][0].is_string()
        {
            return Ok(ports);
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "nats-server wrote no ports file {}; log:\n{}",
                file.display(),
                server.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

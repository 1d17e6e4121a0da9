//! `routed_cross_node`: the routed call when the agent is on another broker
//! node than the caller. Three `nats-server` processes form a JetStream
//! cluster (TLS on client connections, the same development certificate as
//! everything else); two `relay-broker` processes run in cluster mode on it
//! (`[cluster]`, key-value buckets with 3 replicas, as in production). The
//! agent connects to node B, the caller to node A: each call goes caller ->
//! A -> NATS -> B -> agent and back. Node A uses NATS server n0 and node B
//! n1, so every call also crosses a route between two NATS servers, the
//! usual case when nodes pick their NATS server at random (2 in 3 with three
//! servers). Everything else (the caller, the agent, the payloads, the
//! limits) is the `routed` scenario's, so the two compare directly.

use std::path::Path;

use anyhow::{Context as _, ensure};
use serde::Serialize;

use super::Context;
use super::nats_tls::{nats_server, ports_file};
use super::routed::{self, Routed, TENANT};
use crate::broker::{Broker, http_get};
use crate::procs::{Proc, READY_TIMEOUT};

/// NATS servers in the cluster: the smallest that survives losing one with
/// replicated JetStream.
const NATS_NODES: usize = 3;

/// The cross-node figures, and what proves they were cross-node.
#[derive(Debug, Clone, Serialize)]
pub struct CrossNode {
    #[serde(flatten)]
    pub routed: Routed,
    pub broker_nodes: usize,
    pub nats_nodes: usize,
    /// Calls node A forwarded to node B and got an answer for (A's
    /// `relay_cluster_forwards_total{direction="out",outcome="answered"}`),
    /// warm-ups included: at least every measured call.
    pub forwarded_calls: u64,
    /// Messages the NATS servers received (from clients and over routes,
    /// `in_msgs` of `/varz`, all three summed) per forwarded call, over the
    /// whole measurement: what one call costs NATS.
    pub nats_messages_per_call: f64,
}

pub async fn measure(ctx: &Context) -> anyhow::Result<CrossNode> {
    let dir = ctx.subdir("routed_cross_node")?;
    let nats = NatsCluster::start(ctx, &dir.join("nats")).await?;
    let storage_key_file = dir.join("storage.key");
    broker::tls::write(
        &storage_key_file,
        sas::Key::generate()?.to_base64().as_bytes(),
        0o600,
    )?;
    let node = |name: &str, nats_url: &str| {
        format!(
            "[cluster]\nnode_name = {name:?}\nnats_urls = [{nats_url:?}]\nnats_ca_file = {:?}\n\
             storage_key_file = {storage_key_file:?}\nkv_replicas = {NATS_NODES}\n",
            ctx.pki.ca_cert
        )
    };
    let start = |name: &str, nats_url: &str| {
        let dir = dir.join(format!("broker-{name}"));
        let tables = node(name, nats_url);
        async move {
            Broker::start_with_tables(
                ctx.broker_bin()?,
                &dir,
                &ctx.pki,
                &routed::limits(ctx),
                &tables,
                &ctx.settings.rust_log,
            )
            .await
        }
    };
    // One after the other: the first creates the buckets and the operator
    // key, the second finds them.
    let a = start("a", &nats.client_urls[0]).await?;
    let b = start("b", &nats.client_urls[1]).await?;
    // Through A; B learns of it from the tenants bucket.
    let keys = a.create_tenant(&a.admin().await?, TENANT).await?;

    let mut processes = vec![("broker_a", a.pid()?), ("broker_b", b.pid()?)];
    for pid in nats.pids()? {
        processes.push(("nats", pid));
    }
    let messages_before = nats.messages_in().await?;
    let routed = routed::measure_between(ctx, &dir, &keys, &b, &a, &processes).await?;
    let messages = nats.messages_in().await? - messages_before;
    // Every measured call went through node A's forwarding (a call A
    // answered from an agent of its own would not count here).
    let forwarded_calls = a.forwards_answered().await?;
    let measured_calls = routed.measured.throughput_calls + routed.measured.latency.samples as u64;
    ensure!(
        forwarded_calls >= measured_calls,
        "node A forwarded {forwarded_calls} calls, fewer than the {measured_calls} measured"
    );
    drop((a, b, nats));
    Ok(CrossNode {
        routed,
        broker_nodes: 2,
        nats_nodes: NATS_NODES,
        forwarded_calls,
        nats_messages_per_call: (messages as f64 / forwarded_calls.max(1) as f64 * 10.0).round()
            / 10.0,
    })
}

/// A JetStream cluster of [`NATS_NODES`] nats-server processes on loopback,
/// killed when dropped.
struct NatsCluster {
    nodes: Vec<Proc>,
    /// `tls://127.0.0.1:P` of each node.
    client_urls: Vec<String>,
    /// `127.0.0.1:P` of each node's monitoring endpoint.
    monitoring: Vec<String>,
}

impl NatsCluster {
    /// Starts the nodes and waits until each one's `/healthz` answers 200,
    /// which nats-server 2.9 does once JetStream has a meta leader.
    async fn start(ctx: &Context, dir: &Path) -> anyhow::Result<NatsCluster> {
        let bin = nats_server()?;
        // The route ports are picked first (bound together, then released),
        // so that every node starts with routes to all the others; client
        // and monitoring ports are the server's choice, read from its ports
        // file.
        let listeners = (0..NATS_NODES)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .collect::<Result<Vec<_>, _>>()?;
        let route_ports = listeners
            .iter()
            .map(|l| Ok(l.local_addr()?.port()))
            .collect::<std::io::Result<Vec<u16>>>()?;
        drop(listeners);
        let mut nodes = Vec::new();
        let mut client_urls = Vec::new();
        let mut monitoring = Vec::new();
        for (i, port) in route_ports.iter().enumerate() {
            let node_dir = dir.join(format!("n{i}"));
            std::fs::create_dir_all(&node_dir)?;
            let routes: Vec<String> = route_ports
                .iter()
                .filter(|p| *p != port)
                .map(|p| format!("\"nats://127.0.0.1:{p}\""))
                .collect();
            let config = node_dir.join("nats.conf");
            std::fs::write(
                &config,
                format!(
                    "server_name: \"n{i}\"\nhost: \"127.0.0.1\"\nport: -1\nhttp: \"127.0.0.1:-1\"\n\
                     ports_file_dir: {node_dir:?}\njetstream {{\n  store_dir: {:?}\n}}\n\
                     cluster {{\n  name: \"relay-bench\"\n  listen: \"127.0.0.1:{port}\"\n  \
                     routes: [{}]\n}}\ntls {{\n  cert_file: {:?}\n  key_file: {:?}\n}}\n",
                    node_dir.join("store"),
                    routes.join(", "),
                    ctx.pki.server_cert,
                    ctx.pki.server_key,
                ),
            )?;
            let mut cmd = tokio::process::Command::new(&bin);
            cmd.arg("-c").arg(&config);
            let node = Proc::spawn(
                &format!("nats-server n{i}"),
                cmd,
                &node_dir.join("nats-server.log"),
            )?;
            let ports = ports_file(&node_dir, node.pid()?, &node).await?;
            let port = |key: &str| {
                ports[key][0]
                    .as_str()
                    .map(str::to_owned)
                    .with_context(|| format!("no {key} port in n{i}'s ports file: {ports}"))
            };
            client_urls.push(port("nats")?);
            monitoring.push(port("monitoring")?.trim_start_matches("http://").to_owned());
            nodes.push(node);
        }
        let cluster = NatsCluster {
            nodes,
            client_urls,
            monitoring,
        };
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        for (node, addr) in cluster.nodes.iter().zip(&cluster.monitoring) {
            while let Err(e) = http_get(addr, "/healthz").await {
                ensure!(
                    tokio::time::Instant::now() < deadline,
                    "{} not healthy after {}s ({e:#}); log:\n{}",
                    node.name,
                    READY_TIMEOUT.as_secs(),
                    node.log_tail()
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
        Ok(cluster)
    }

    fn pids(&self) -> anyhow::Result<Vec<u32>> {
        self.nodes.iter().map(Proc::pid).collect()
    }

    /// Messages all nodes have received so far (`in_msgs` of `/varz`).
    async fn messages_in(&self) -> anyhow::Result<u64> {
        let mut total = 0;
        for addr in &self.monitoring {
            let varz: serde_json::Value = serde_json::from_str(&http_get(addr, "/varz").await?)?;
            total += varz["in_msgs"]
                .as_u64()
                .with_context(|| format!("no in_msgs in /varz of {addr}"))?;
        }
        Ok(total)
    }
}

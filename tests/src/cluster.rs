//! Several `relay-broker` nodes in cluster mode (issue 9) on a real NATS
//! cluster ([`crate::nats`]), everything on loopback.
//!
//! ```ignore
//! let cluster = BrokerCluster::start(3).await; // nodes a, b, c on 3 NATS nodes
//! let tenant = cluster.create_tenant("contoso").await; // through a, known to all
//! let agent = cluster.echo_agent(2, &tenant, "dc01").start().await; // on c
//! cluster.await_routable(0, &tenant).await; // a reaches it through NATS
//! let portal = cluster.portal(0, &tenant).await;
//! ```
//!
//! Every node presents the same certificate from one development CA, so one
//! CA file serves agents and portals on any node; each node has its own data
//! directory; all read the same storage key file. Broker node `i` is given
//! NATS node `i mod n`'s URL first, then the others' (the NATS client may
//! still pick any of them, and learns the rest from the servers).
//!
//! With [`BrokerClusterBuilder::nats_through_proxies`] each broker node
//! reaches NATS through fault proxies of its own ([`crate::faults`]), to cut
//! one node off NATS while NATS itself stays up. With more than one NATS
//! node the servers advertise their direct addresses, and the client may
//! reconnect to those around the proxy: use it with one NATS node.
//!
//! One cluster at a time per test process: a cluster is six or more
//! processes, and the tests measure sub-second propagation, which a second
//! cluster starting beside it on a small machine would distort.
//! [`BrokerClusterBuilder::start`] waits until the previous cluster is
//! dropped.
//!
//! When a test panics, dropping the cluster prints the tail of every
//! broker node's and NATS node's log.

use crate::agent_toml::AgentToml;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use directory::embedded::EmbeddedDirectory;
use envelope::{Fingerprint, KeyPair};
use relay_client::Reason;
use relay_client::portal_client::PortalClient;
use relay_client::sealed::SealedPortal;
use sas::{KeySlot, Right};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::agents::EchoAgentBuilder;
use crate::faults::FaultProxy;
use crate::nats::{NatsCluster, Place};
use crate::netns::NetLab;
use crate::sealed::SETUP_PASSWORD;
use crate::{BrokerBuilder, BrokerProcess, EchoAgent, STARTUP_TIMEOUT, Tenant, write_key};

/// Node names, in node order.
pub const NODE_NAMES: [&str; 5] = ["a", "b", "c", "d", "e"];

/// The broker's default `subject_prefix`.
pub const SUBJECT_PREFIX: &str = "relay";

/// How often awaited conditions are polled.
const POLL: Duration = Duration::from_millis(20);

/// Lines of each log shown when a test fails, unless `RELAY_TEST_LOG_LINES`
/// asks for more (to debug a rare failure).
fn tail_lines() -> usize {
    std::env::var("RELAY_TEST_LOG_LINES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(40)
}

static ONE_AT_A_TIME: Semaphore = Semaphore::const_new(1);

/// Settings of a cluster to start.
pub struct BrokerClusterBuilder {
    nodes: usize,
    nats_nodes: usize,
    nats_proxies: bool,
    pinned_nats: bool,
    partitionable: bool,
    config: Vec<String>,
    cluster_config: Vec<String>,
    rust_log: String,
}

impl BrokerClusterBuilder {
    /// NATS nodes (3 by default). Buckets keep `min(3, n)` replicas.
    pub fn nats_nodes(mut self, n: usize) -> Self {
        self.nats_nodes = n;
        self
    }

    /// Each broker node reaches each NATS node through a fault proxy of its
    /// own ([`BrokerCluster::nats_proxies`]). See the module documentation.
    pub fn nats_through_proxies(mut self) -> Self {
        self.nats_proxies = true;
        self
    }

    /// Broker node `i` is given only NATS node `i mod n`'s URL, so it
    /// connects there (a on n0, b on n1, c on n2) rather than to a server
    /// the client picks at random; it learns the others from that server
    /// and reconnects to them when it is lost. For tests whose fault must
    /// hit a known set of nodes, e.g. a NATS server only c uses.
    pub fn pinned_nats(mut self) -> Self {
        self.pinned_nats = true;
        self
    }

    /// Every NATS node and broker node in a network namespace of its own on
    /// one bridge ([`crate::netns`]), members `n0`, `n1`, ... and `a`, `b`,
    /// ..., reachable from the test's namespace, so that a test can cut
    /// links between them ([`BrokerCluster::net`]).
    pub fn partitionable(mut self) -> Self {
        self.partitionable = true;
        self
    }

    /// A top-level `key = value` line for every node's configuration.
    pub fn config(mut self, line: impl Into<String>) -> Self {
        self.config.push(line.into());
        self
    }

    /// A `key = value` line in every node's `[cluster]` table (not
    /// `node_name`, `nats_urls`, `storage_key_file` or `kv_replicas`: the
    /// harness sets those).
    pub fn cluster_config(mut self, line: impl Into<String>) -> Self {
        self.cluster_config.push(line.into());
        self
    }

    /// Fast liveness for failure tests: heartbeats and HTTP/2 keepalives
    /// every second, one second to answer, one second for an Ack, and
    /// `forward_heartbeat` 1 s (the default, written out), so a silent peer
    /// or node is given up on after about three seconds.
    pub fn fast_liveness(self) -> Self {
        self.config("heartbeat_interval = \"1s\"")
            .config("keepalive_timeout = \"1s\"")
            .config("ack_timeout = \"1s\"")
            .cluster_config("forward_heartbeat = \"1s\"")
    }

    pub fn rust_log(mut self, filter: impl Into<String>) -> Self {
        self.rust_log = filter.into();
        self
    }

    /// Starts NATS, then the broker nodes one after the other, each ready
    /// (its "relay-broker ready" line) before the next starts.
    pub async fn start(self) -> BrokerCluster {
        assert!(
            (1..=NODE_NAMES.len()).contains(&self.nodes),
            "1 to {} broker nodes",
            NODE_NAMES.len()
        );
        let permit = ONE_AT_A_TIME.acquire().await.expect("never closed");
        let began = Instant::now();
        let dir = tempfile::tempdir().expect("temp dir");
        let net = self.partitionable.then(|| {
            let members: Vec<String> = (0..self.nats_nodes)
                .map(|k| format!("n{k}"))
                .chain(NODE_NAMES[..self.nodes].iter().map(|n| (*n).to_owned()))
                .collect();
            NetLab::new(&members.iter().map(String::as_str).collect::<Vec<_>>())
        });
        let place = |member: &str| {
            net.as_ref().map(|lab| Place {
                netns: lab.namespace(member),
                ip: lab.ip(member),
            })
        };
        // One certificate for every node: it names every address of the lab.
        let names: Vec<String> = std::iter::once("127.0.0.1".to_owned())
            .chain(
                net.iter()
                    .flat_map(NetLab::all_ips)
                    .map(|ip| ip.to_string()),
            )
            .collect();
        let pki = broker::tls::generate_dev_pki(&dir.path().join("pki"), &names).expect("dev pki");
        let storage_key_file = write_key(
            dir.path(),
            "cluster.key",
            &sas::Key::generate().expect("storage key"),
        );
        let mut nats = NatsCluster::builder(self.nats_nodes);
        if net.is_some() {
            nats = nats.places(
                (0..self.nats_nodes)
                    .map(|k| place(&format!("n{k}")).expect("a lab"))
                    .collect(),
            );
        }
        let nats = nats.start().await;
        let mut node_times = Vec::new();
        let mut cluster = BrokerCluster {
            nodes: Vec::new(),
            running: Vec::new(),
            proxies: Vec::new(),
            nats,
            pki,
            storage_key_file,
            net,
            _dir: dir,
            _permit: permit,
        };
        for (i, name) in NODE_NAMES.iter().enumerate().take(self.nodes) {
            let n = cluster.nats.len();
            let mut urls = Vec::new();
            let mut proxies = Vec::new();
            let reachable = if self.pinned_nats { 1 } else { n };
            for k in (0..reachable).map(|k| (i + k) % n) {
                let url = cluster.nats.client_url(k).to_owned();
                if self.nats_proxies {
                    let target = url
                        .rsplit_once("://")
                        .map_or(url.as_str(), |(_, addr)| addr)
                        .parse()
                        .expect("NATS client address");
                    let proxy = FaultProxy::start(target).await;
                    urls.push(format!("nats://{}", proxy.addr()));
                    proxies.push(proxy);
                } else {
                    urls.push(url);
                }
            }
            let mut section = format!(
                "[cluster]\nnode_name = {:?}\nnats_urls = {urls:?}\nstorage_key_file = {:?}\n",
                name, cluster.storage_key_file
            );
            if n < 3 {
                section.push_str(&format!("kv_replicas = {n}\n"));
            }
            for line in &self.cluster_config {
                section.push_str(line);
                section.push('\n');
            }
            let mut builder = BrokerBuilder::new();
            if let Some(lab) = &cluster.net {
                builder = builder.place(Place {
                    netns: lab.namespace(name),
                    ip: lab.ip(name),
                });
            }
            let builder = self
                .config
                .iter()
                .fold(builder, |b, line| b.config(line.clone()))
                .pki(cluster.pki.clone())
                .rust_log(self.rust_log.clone())
                .section(section);
            let node_began = Instant::now();
            cluster.nodes.push(builder.start().await);
            node_times.push(format!("{name} {:?}", node_began.elapsed()));
            cluster.running.push(true);
            cluster.proxies.push(proxies);
        }
        eprintln!(
            "broker cluster ready in {:?}: NATS ({} nodes) {:?}, broker nodes {}",
            began.elapsed(),
            cluster.nats.len(),
            cluster.nats.started_in(),
            node_times.join(", ")
        );
        cluster
    }
}

/// Running broker nodes on a running NATS cluster. Dropping it kills every
/// process (SIGKILL) and removes their files.
pub struct BrokerCluster {
    // Fields drop in order: the brokers go before NATS.
    nodes: Vec<BrokerProcess>,
    running: Vec<bool>,
    proxies: Vec<Vec<FaultProxy>>,
    pub nats: NatsCluster,
    pki: broker::tls::DevPki,
    storage_key_file: PathBuf,
    // After the processes: their namespaces go once they are killed.
    net: Option<NetLab>,
    _dir: tempfile::TempDir,
    _permit: SemaphorePermit<'static>,
}

impl BrokerCluster {
    /// `n` broker nodes on a three-node NATS cluster, default settings.
    pub async fn start(n: usize) -> BrokerCluster {
        BrokerCluster::builder(n).start().await
    }

    pub fn builder(n: usize) -> BrokerClusterBuilder {
        BrokerClusterBuilder {
            nodes: n,
            nats_nodes: 3,
            nats_proxies: false,
            pinned_nats: false,
            partitionable: false,
            config: Vec::new(),
            cluster_config: Vec::new(),
            // RELAY_TEST_RUST_LOG: more detail from every node, to debug.
            rust_log: std::env::var("RELAY_TEST_RUST_LOG").unwrap_or_else(|_| "info".into()),
        }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn node(&self, i: usize) -> &BrokerProcess {
        &self.nodes[i]
    }

    pub fn node_mut(&mut self, i: usize) -> &mut BrokerProcess {
        &mut self.nodes[i]
    }

    /// The `node_name` of node `i`: a, b, c, ...
    pub fn name(&self, i: usize) -> &'static str {
        NODE_NAMES[i]
    }

    /// Whether node `i` runs (not killed by [`Self::kill9_node`]).
    pub fn is_running(&self, i: usize) -> bool {
        self.running[i]
    }

    /// The CA every node's certificate chains to.
    pub fn ca_file(&self) -> &Path {
        &self.pki.ca_cert
    }

    pub fn pki(&self) -> &broker::tls::DevPki {
        &self.pki
    }

    pub fn storage_key_file(&self) -> &Path {
        &self.storage_key_file
    }

    /// The fault proxies broker node `i` reaches NATS through (its first
    /// NATS node first); empty without [`BrokerClusterBuilder::nats_through_proxies`].
    pub fn nats_proxies(&self, i: usize) -> &[FaultProxy] {
        &self.proxies[i]
    }

    /// The network of a [`BrokerClusterBuilder::partitionable`] cluster,
    /// to cut and heal links.
    pub fn net(&self) -> &NetLab {
        self.net
            .as_ref()
            .expect("a cluster started with partitionable()")
    }

    /// `kill -9` of broker node `i`.
    pub async fn kill9_node(&mut self, i: usize) {
        self.nodes[i].kill9().await;
        self.running[i] = false;
    }

    /// Every node's address as a TOML array, starting with node `first`,
    /// then the following nodes in order: an agent's `broker` list.
    pub fn urls_toml(&self, first: usize) -> String {
        let n = self.nodes.len();
        let urls: Vec<String> = (0..n).map(|k| self.nodes[(first + k) % n].url()).collect();
        format!("{urls:?}")
    }

    /// An in-process echo agent of `tenant` that connects to node `first`,
    /// and to the next nodes in turn when that fails.
    pub fn echo_agent(&self, first: usize, tenant: &Tenant, agent_id: &str) -> EchoAgentBuilder {
        EchoAgent::builder(&self.nodes[first], tenant, agent_id).broker_toml(self.urls_toml(first))
    }

    /// An echo agent connecting to node `first` first, with keepalives
    /// every second (the agent's side of [`BrokerClusterBuilder::fast_liveness`]).
    pub fn fast_echo_agent(
        &self,
        first: usize,
        tenant: &Tenant,
        agent_id: &str,
    ) -> EchoAgentBuilder {
        self.echo_agent(first, tenant, agent_id)
            .config("keepalive_interval = \"1s\"")
            .config("keepalive_timeout = \"1s\"")
    }

    /// A portal client of `tenant` (Send key) on node `i`.
    pub async fn portal(&self, i: usize, tenant: &Tenant) -> PortalClient {
        self.nodes[i].portal(tenant, Right::Send).await
    }

    /// Creates `name` through the first running node and waits until every
    /// running node knows it.
    pub async fn create_tenant(&self, name: &str) -> Tenant {
        let first = self.running_nodes().next().expect("a running node");
        let tenant = self.nodes[first].create_tenant(name).await;
        for i in self.running_nodes() {
            self.await_tenant(i, &tenant).await;
        }
        tenant
    }

    /// Waits until node `i` knows `tenant` and its keys (GetConfiguration no
    /// longer answers BAD_SIGNATURE, which is what a tenant a node does not
    /// know looks like to a tenant's token); how long that took.
    pub async fn await_tenant(&self, i: usize, tenant: &Tenant) -> Duration {
        let started = Instant::now();
        let portal = self.portal(i, tenant).await;
        loop {
            match portal.configuration().await {
                Ok(_) => return started.elapsed(),
                Err(e) if e.reason() == Some(Reason::BadSignature) => {}
                Err(e) => panic!(
                    "GetConfiguration of {} on node {}: {e}",
                    tenant.name,
                    self.name(i)
                ),
            }
            assert!(
                started.elapsed() < STARTUP_TIMEOUT,
                "node {} never learnt of tenant {}",
                self.name(i),
                tenant.name
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until a Ping of `tenant` through node `i` reaches an agent (on
    /// any node), asking again while the answer is BAD_SIGNATURE (the node
    /// does not know the tenant yet),
    /// NO_AGENT_ONLINE or CLUSTER_UNAVAILABLE; the agent that answered.
    pub async fn await_routable(&self, i: usize, tenant: &Tenant) -> String {
        let started = Instant::now();
        let portal = self.portal(i, tenant).await;
        loop {
            match portal.ping(Some(Duration::from_secs(5))).await {
                Ok(pong) => return pong.agent_id,
                Err(e)
                    if matches!(
                        e.reason(),
                        Some(
                            Reason::BadSignature
                                | Reason::NoAgentOnline
                                | Reason::ClusterUnavailable
                        )
                    ) && started.elapsed() < STARTUP_TIMEOUT => {}
                Err(e) => panic!(
                    "no agent of {} reachable through node {} after {:?}: {e}",
                    tenant.name,
                    self.name(i),
                    started.elapsed()
                ),
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Where requests for `tenant` are forwarded between nodes.
    pub fn submit_subject(tenant: &Tenant) -> String {
        format!("{SUBJECT_PREFIX}.v1.{}.submit", tenant.name)
    }

    /// The subject requests addressed to `agent_id` are served on ('.' in
    /// the agent id written '~').
    pub fn agent_subject(tenant: &Tenant, agent_id: &str) -> String {
        format!(
            "{SUBJECT_PREFIX}.v1.{}.agent.{}",
            tenant.name,
            agent_id.replace('.', "~")
        )
    }

    /// Waits until every running NATS node sees the subscription of the
    /// node holding `agent_id` to its subject.
    pub async fn await_agent_serving(&self, tenant: &Tenant, agent_id: &str) {
        let subject = Self::agent_subject(tenant, agent_id);
        for k in 0..self.nats.len() {
            if self.nats.is_running(k) {
                self.nats.await_interest(k, &subject, 1).await;
            }
        }
    }

    /// Waits until every running NATS node sees at least `nodes`
    /// subscriptions to `tenant`'s subject: that many broker nodes hold an
    /// agent of it and take forwarded requests.
    pub async fn await_serving(&self, tenant: &Tenant, nodes: u64) {
        let subject = Self::submit_subject(tenant);
        for k in 0..self.nats.len() {
            if self.nats.is_running(k) {
                self.nats.await_interest(k, &subject, nodes).await;
            }
        }
    }

    /// The status of node `i`'s `/readyz`.
    pub async fn readyz(&self, i: usize) -> u16 {
        crate::http::get(&self.nodes[i].operator_addr, "/readyz")
            .await
            .0
    }

    /// Waits until node `i`'s `/readyz` answers `status`, at most `limit`;
    /// how long that took.
    pub async fn await_readyz(&self, i: usize, status: u16, limit: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let now = self.readyz(i).await;
            if now == status {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < limit,
                "node {} /readyz still {now}, not {status}, after {limit:?}",
                self.name(i)
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Node `i`'s `/metrics` text.
    pub async fn metrics(&self, i: usize) -> String {
        self.nodes[i].metrics().await
    }

    /// The tail of every broker node's log and every NATS node's log.
    pub fn log_tails(&self) -> String {
        let mut out = String::new();
        for (i, node) in self.nodes.iter().enumerate() {
            out.push_str(&format!(
                "--- broker node {}{} ---\n{}\n",
                self.name(i),
                if self.running[i] { "" } else { " (killed)" },
                tail(&node.logs(), tail_lines())
            ));
        }
        for k in 0..self.nats.len() {
            out.push_str(&format!(
                "--- NATS node {}{} ---\n{}\n",
                self.nats.server_name(k),
                if self.nats.is_running(k) {
                    ""
                } else {
                    " (stopped)"
                },
                tail(&self.nats.logs(k), tail_lines() / 2)
            ));
        }
        out
    }

    fn running_nodes(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|&i| self.running[i])
    }
}

impl Drop for BrokerCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tails());
        }
    }
}

/// The sum of the samples of metric `name` whose labels include `labels`
/// (Prometheus text format); 0 when there is none.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (label_set, value) = match rest.strip_prefix('{') {
                Some(rest) => rest.split_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            let matches = labels.iter().all(|(key, want)| {
                label_set
                    .split(',')
                    .any(|pair| pair == format!("{key}={want:?}"))
            });
            matches.then(|| value.trim().parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A real `writeback-agent` process for a cluster: onboarded with its own
/// `init` (a fresh portal key pinned in its keyring), writing to copies of
/// the sample forests, given every node's address starting with one node.
pub struct WritebackAgent {
    portal_key: KeyPair,
    fingerprint: Fingerprint,
    child: tokio::process::Child,
    log: PathBuf,
    dir: tempfile::TempDir,
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/forests")
}

impl WritebackAgent {
    /// Onboards and starts agent `agent_id` of `tenant` on node `first`,
    /// with the sample forests `forests`; returns once it is connected.
    pub async fn start(
        cluster: &BrokerCluster,
        first: usize,
        tenant: &Tenant,
        agent_id: &str,
        forests: &[&str],
    ) -> WritebackAgent {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        let mut forest_sections = String::new();
        for name in forests {
            let forest_dir = d.join("forests").join(name);
            std::fs::create_dir_all(&forest_dir).expect("forest dir");
            let file = forest_dir.join(format!("{name}.json"));
            std::fs::copy(examples().join(format!("{name}.json")), &file)
                .expect("copy sample forest");
            forest_sections.push_str(&format!(
                "\n[[forests]]\nname = {name:?}\nkind = \"embedded\"\npath = {file:?}\n"
            ));
        }
        let listen = write_key(
            d,
            "listen.key",
            &tenant.key(Right::Listen, KeySlot::Primary),
        );
        std::fs::write(d.join("setup-password"), SETUP_PASSWORD).expect("password file");
        let config = d.join("agent.toml");
        AgentToml::new("", cluster.ca_file(), &tenant.name, agent_id, &listen)
            .broker_value(cluster.urls_toml(first))
            .path("key_file", &d.join("agent.keys"))
            .path("setup_password_file", &d.join("setup-password"))
            .path("state_dir", &d.join("state"))
            .section(forest_sections)
            .write(&config);

        let crate::deployment::Onboarded {
            portal_key,
            fingerprint,
            child,
            log,
        } = crate::deployment::onboard(&config, &tenant.name, d).await;
        WritebackAgent {
            portal_key,
            fingerprint,
            child,
            log,
            dir,
        }
    }

    /// A sealed portal on `portal`'s node holding the key this agent was
    /// onboarded with and pinning the fingerprint `init` printed.
    pub fn sealed_portal(&self, portal: PortalClient) -> SealedPortal {
        SealedPortal::new(portal, self.portal_key.clone(), vec![self.fingerprint])
    }

    /// The forest `name` as it is on disk now.
    pub fn forest(&self, name: &str) -> EmbeddedDirectory {
        let file = self
            .dir
            .path()
            .join("forests")
            .join(name)
            .join(format!("{name}.json"));
        EmbeddedDirectory::open(name, file).expect("open forest")
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

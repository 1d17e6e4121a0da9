//! A real NATS cluster on loopback for the tests of the broker's cluster
//! mode (issue 9): `n` processes of `nats-server` (2.10 from Debian trixie,
//! installed by `scripts/nats/install`; docs/CLUSTER.md says why not 2.9), JetStream on, each node with its own store
//! directory in a temp dir.
//!
//! ```ignore
//! let mut nats = NatsCluster::start(3).await;
//! let client = nats.connect(0).await; // pinned to node 0
//! nats.kill9(2).await;
//! nats.restart(2).await; // same name and store, new ports
//! ```
//!
//! No fixed ports: every node is configured with `port: -1`, `http:
//! 127.0.0.1:-1` and cluster `listen: 127.0.0.1:-1`, and the harness reads
//! the ports the server picked from the JSON file it writes into
//! `ports_file_dir`. The mesh forms without knowing ports in advance: node k
//! starts with routes to the nodes started before it, and gossip connects
//! the rest. nats-server 2.9 refuses clustered JetStream on a node with no
//! configured route at all ("JetStream cluster requires configured routes or
//! solicited leafnode"), so node 0 starts with one route to a loopback port
//! nobody listens on (bound and released here); once every node runs, each
//! node's configuration is rewritten with routes to all the others and
//! reloaded (SIGHUP), so the placeholder is gone.
//!
//! Ready means, for every running node: `/healthz` answers 200 (503 until
//! JetStream has a meta leader and the node's streams are current), `/jsz`
//! shows a meta group of `n` peers whose leader is a running node, the same
//! on every node (after a `kill9` of the meta leader that takes a new
//! election: a few seconds), `/routez` has a route to every other running
//! node (a full mesh: losing any one node never splits the rest), and
//! `/varz` shows exactly the routes of the node's current configuration
//! (the reloads took effect), and every stream the node holds has a
//! running leader in its view (each stream elects its own leader, seconds
//! after its leader is killed). Readiness is polled with a short interval
//! under [`crate::STARTUP_TIMEOUT`]. Even when ready again after a kill,
//! creating a consumer (a key-value watch) may time out for a second or two
//! more: retry it.
//!
//! Every node pings its clients every 5 s and drops them after 2
//! unanswered, as examples/cluster/nats.conf recommends, so a broker node
//! whose namespace is cut off is dropped (its subscriptions with it) within
//! 10-15 s.
//!
//! `start(1)` runs one standalone JetStream server (no cluster block).
//!
//! [`NatsClusterBuilder::places`] runs each node inside a network namespace
//! ([`crate::netns`]) and listens on the namespace's address instead of
//! 127.0.0.1 (ports still `-1`): for the partition tests.
//!
//! TLS ([`NatsClusterBuilder::tls`]) covers client connections, the ones the
//! broker makes; routes between the nodes stay plain TCP on loopback.
//! Monitoring is plain HTTP on loopback either way.
//!
//! With nats-server 2.9, create key-value buckets with [`create_kv_bucket`],
//! not async-nats' `create_key_value` (see there).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::STARTUP_TIMEOUT;

/// How often readiness and ports files are polled.
const POLL: Duration = Duration::from_millis(20);

/// Certificate files for TLS on client connections.
#[derive(Clone, Debug)]
pub struct NatsTls {
    /// The servers' certificate (PEM), valid for 127.0.0.1.
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The CA clients trust to verify `cert`.
    pub ca: PathBuf,
}

/// Settings of a cluster to start.
pub struct NatsClusterBuilder {
    nodes: usize,
    cluster_name: String,
    tls: Option<NatsTls>,
    user: Option<(String, String)>,
    places: Vec<Place>,
}

/// Where a node runs: a network namespace and its address there
/// ([`crate::netns`]), instead of the test's own loopback.
#[derive(Clone, Debug)]
pub struct Place {
    /// The namespace's name, for `ip netns exec`.
    pub netns: String,
    /// The address the node listens on and advertises.
    pub ip: std::net::Ipv4Addr,
}

impl NatsClusterBuilder {
    /// Runs node `i` inside `places[i]` (one per node), listening on its
    /// address instead of 127.0.0.1 (for partition tests).
    pub fn places(mut self, places: Vec<Place>) -> Self {
        assert_eq!(places.len(), self.nodes, "one place per NATS node");
        self.places = places;
        self
    }

    /// TLS on client connections with this certificate; clients made by
    /// [`NatsCluster::connect_options`] trust `ca` and require TLS.
    pub fn tls(
        mut self,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
        ca: impl Into<PathBuf>,
    ) -> Self {
        self.tls = Some(NatsTls {
            cert: cert.into(),
            key: key.into(),
            ca: ca.into(),
        });
        self
    }

    /// Clients must authenticate with this user and password.
    pub fn user(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some((user.into(), password.into()));
        self
    }

    /// The cluster's name (`cluster { name }`); "relay-test" by default.
    pub fn cluster_name(mut self, name: impl Into<String>) -> Self {
        self.cluster_name = name.into();
        self
    }

    /// Starts the nodes one after the other and waits until the cluster is
    /// ready (see the module documentation).
    pub async fn start(self) -> NatsCluster {
        assert!(self.nodes >= 1, "a NATS cluster needs at least one node");
        let began = Instant::now();
        let dir = tempfile::tempdir().expect("temp dir");
        let nodes = (0..self.nodes)
            .map(|i| {
                let name = format!("n{i}");
                let node_dir = dir.path().join(&name);
                std::fs::create_dir_all(node_dir.join("store")).expect("node dir");
                Node {
                    name,
                    place: self.places.get(i).cloned(),
                    dir: node_dir,
                    child: None,
                    runs: 0,
                    ports: None,
                    server_id: String::new(),
                    routes: Vec::new(),
                }
            })
            .collect();
        let mut cluster = NatsCluster {
            nodes,
            cluster_name: self.cluster_name,
            tls: self.tls,
            user: self.user,
            bin: nats_server_bin(),
            started_in: Duration::ZERO,
            dir,
        };
        let n = cluster.nodes.len();
        for i in 0..n {
            let routes = match i {
                _ if n == 1 => Vec::new(),
                0 => vec![unused_route(cluster.nodes[0].host())],
                _ => (0..i).map(|j| cluster.cluster_url(j).to_owned()).collect(),
            };
            cluster.spawn(i, routes).await;
        }
        for i in 0..n {
            cluster.reconfigure(i);
        }
        cluster.await_ready().await;
        cluster.started_in = began.elapsed();
        cluster
    }
}

/// A running NATS cluster; dropping it kills every node (SIGKILL) and
/// removes the stores.
pub struct NatsCluster {
    nodes: Vec<Node>,
    cluster_name: String,
    tls: Option<NatsTls>,
    user: Option<(String, String)>,
    bin: PathBuf,
    started_in: Duration,
    // Last, so the processes are killed before their files go.
    dir: tempfile::TempDir,
}

struct Node {
    /// `server_name`: n0, n1, ... (also the JetStream peer's identity).
    name: String,
    /// Its namespace, or None for the test's own (loopback).
    place: Option<Place>,
    /// Config, ports files, logs and `store/`.
    dir: PathBuf,
    child: Option<Child>,
    /// How many times it was started.
    runs: u32,
    /// The ports of its latest run.
    ports: Option<Ports>,
    /// `server_id` of its latest run (a new one on every start).
    server_id: String,
    /// The routes in its current configuration.
    routes: Vec<String>,
}

impl Node {
    /// The address it listens on.
    fn host(&self) -> String {
        self.place
            .as_ref()
            .map_or_else(|| "127.0.0.1".to_owned(), |p| p.ip.to_string())
    }
}

#[derive(Clone, Debug)]
struct Ports {
    /// `nats://127.0.0.1:P` (`tls://` with TLS).
    client: String,
    /// `127.0.0.1:P` of the HTTP monitoring endpoint.
    monitoring: String,
    /// `nats://127.0.0.1:P` of the route listener (clusters of 2 or more).
    cluster: Option<String>,
}

impl NatsCluster {
    /// `n` nodes, plain TCP, no authentication.
    pub async fn start(n: usize) -> NatsCluster {
        NatsCluster::builder(n).start().await
    }

    /// `n` nodes with TLS on client connections (see [`NatsClusterBuilder::tls`]).
    pub async fn start_tls(
        n: usize,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
        ca: impl Into<PathBuf>,
    ) -> NatsCluster {
        NatsCluster::builder(n).tls(cert, key, ca).start().await
    }

    pub fn builder(n: usize) -> NatsClusterBuilder {
        NatsClusterBuilder {
            nodes: n,
            cluster_name: "relay-test".into(),
            tls: None,
            user: None,
            places: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// How long [`NatsClusterBuilder::start`] took, until ready.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    pub fn cluster_name(&self) -> &str {
        &self.cluster_name
    }

    /// The `server_name` of node `i` (`n{i}`), as in JetStream cluster info.
    pub fn server_name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// The node index of a server name (e.g. a stream's leader).
    pub fn index_of(&self, server_name: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.name == server_name)
            .unwrap_or_else(|| panic!("no NATS node named {server_name:?}"))
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].child.is_some()
    }

    pub fn pid(&self, i: usize) -> u32 {
        self.nodes[i]
            .child
            .as_ref()
            .and_then(Child::id)
            .expect("NATS node running")
    }

    /// Client URL of node `i`'s latest run. It changes on [`Self::restart`].
    pub fn client_url(&self, i: usize) -> &str {
        &self.ports(i).client
    }

    /// Client URLs of the running nodes, in node order.
    pub fn client_urls(&self) -> Vec<String> {
        self.running()
            .map(|i| self.client_url(i).to_owned())
            .collect()
    }

    /// [`Self::client_urls`] joined by commas, the usual form in configs.
    pub fn client_url_list(&self) -> String {
        self.client_urls().join(",")
    }

    /// `127.0.0.1:P` of node `i`'s HTTP monitoring endpoint.
    pub fn monitoring_addr(&self, i: usize) -> &str {
        &self.ports(i).monitoring
    }

    /// The route listener URL of node `i`'s latest run.
    pub fn cluster_url(&self, i: usize) -> &str {
        self.ports(i)
            .cluster
            .as_deref()
            .expect("a single node has no route listener")
    }

    pub fn tls(&self) -> Option<&NatsTls> {
        self.tls.as_ref()
    }

    /// The CA clients must trust, with TLS.
    pub fn ca(&self) -> Option<&Path> {
        self.tls.as_ref().map(|t| t.ca.as_path())
    }

    /// User and password clients must present, if set.
    pub fn user(&self) -> Option<(&str, &str)> {
        self.user.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// Connect options with this cluster's CA and credentials.
    pub fn connect_options(&self) -> async_nats::ConnectOptions {
        let mut options = async_nats::ConnectOptions::new();
        if let Some(tls) = &self.tls {
            options = options
                .add_root_certificates(tls.ca.clone())
                .require_tls(true);
        }
        if let Some((user, password)) = &self.user {
            options = options.user_and_password(user.clone(), password.clone());
        }
        options
    }

    /// A client of node `i` only: it ignores the other servers the cluster
    /// advertises, so everything it does goes through node `i`.
    pub async fn connect(&self, i: usize) -> async_nats::Client {
        let url = self.client_url(i);
        self.connect_options()
            .ignore_discovered_servers()
            .connect(url)
            .await
            .unwrap_or_else(|e| panic!("connect to NATS node {i} at {url}: {e}"))
    }

    /// A client given every running node, free to fail over among them.
    pub async fn connect_any(&self) -> async_nats::Client {
        self.connect_options()
            .connect(self.client_urls())
            .await
            .unwrap_or_else(|e| panic!("connect to NATS at {}: {e}", self.client_url_list()))
    }

    /// `kill -9` of node `i`: no shutdown path runs.
    pub async fn kill9(&mut self, i: usize) {
        let mut child = self.nodes[i].child.take().expect("NATS node running");
        child.start_kill().expect("SIGKILL nats-server");
        child.wait().await.expect("reap nats-server");
    }

    /// Starts node `i` again (after [`Self::kill9`]; a running node is
    /// killed first) with the same server name and store directory, then
    /// waits until the cluster is ready. Its ports change: read
    /// [`Self::client_url`] again. The other running nodes are reloaded
    /// with its new route URL.
    pub async fn restart(&mut self, i: usize) {
        if self.is_running(i) {
            self.kill9(i).await;
        }
        let routes = self.routes_for(i);
        self.spawn(i, routes).await;
        for k in self.running().collect::<Vec<_>>() {
            if k != i {
                self.reconfigure(k);
            }
        }
        self.await_ready().await;
    }

    /// Waits until every running node is ready (see the module docs);
    /// panics with the nodes' log tails after [`crate::STARTUP_TIMEOUT`].
    pub async fn await_ready(&mut self) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            self.check_alive();
            let not_ready = match self.not_ready().await {
                None => return,
                Some(why) => why,
            };
            if std::env::var_os("NATS_DEBUG").is_some() {
                eprintln!("{:?} not ready: {not_ready}", Instant::now());
            }
            if Instant::now() > deadline {
                panic!(
                    "NATS cluster not ready after {STARTUP_TIMEOUT:?}: {not_ready}\n{}",
                    self.log_tails()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until node `i` knows at least `count` subscriptions matching
    /// `subject` (a plain subject, no wildcards), local or imported over
    /// routes from other nodes (`/subsz?test=`): from then on a message or
    /// request published on node `i` reaches them.
    pub async fn await_interest(&self, i: usize, subject: &str, count: u64) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let path = format!("/subsz?subs=1&test={subject}");
        loop {
            let subsz = self.monitor(i, &path).await;
            if subsz["num_matches"].as_u64().unwrap_or(0) >= count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "NATS node {i} never saw {count} subscriptions for {subject:?}: {subsz}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// GET a monitoring endpoint of node `i` (`/varz`, `/jsz`, ...) as JSON.
    pub async fn monitor(&self, i: usize, path: &str) -> Value {
        let addr = self.monitoring_addr(i);
        let (status, body) = http_get(addr, path)
            .await
            .unwrap_or_else(|e| panic!("GET {path} of NATS node {i}: {e}"));
        assert_eq!(status, 200, "GET {path} of NATS node {i}: {body}");
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET {path} of NATS node {i}: {e}: {body}"))
    }

    /// Names of the nodes node `i` has a route to (`/routez`), sorted.
    pub async fn route_peers(&self, i: usize) -> Vec<String> {
        let routez = self.monitor(i, "/routez").await;
        let peers: Vec<String> = routez["routes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["remote_id"].as_str())
            .map(|id| {
                self.nodes
                    .iter()
                    .find(|n| n.server_id == id)
                    .map_or_else(|| id.to_owned(), |n| n.name.clone())
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        peers
    }

    /// Log file of node `i`'s run `run` (1 = first start).
    pub fn log_path(&self, i: usize, run: u32) -> PathBuf {
        self.nodes[i].dir.join(format!("nats-{run}.log"))
    }

    /// Everything node `i` has logged, over all its runs.
    pub fn logs(&self, i: usize) -> String {
        (1..=self.nodes[i].runs)
            .map(|run| std::fs::read_to_string(self.log_path(i, run)).unwrap_or_default())
            .collect()
    }

    /// The temp dir holding every node's files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn ports(&self, i: usize) -> &Ports {
        self.nodes[i]
            .ports
            .as_ref()
            .expect("NATS node started at least once")
    }

    fn running(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|&i| self.is_running(i))
    }

    /// Route URLs for node `i`: the latest cluster URL of every other node,
    /// running or not (a stopped node gets them back when it restarts).
    fn routes_for(&self, i: usize) -> Vec<String> {
        (0..self.nodes.len())
            .filter(|&j| j != i && self.nodes[j].ports.is_some())
            .map(|j| self.cluster_url(j).to_owned())
            .collect()
    }

    fn config_path(&self, i: usize) -> PathBuf {
        self.nodes[i].dir.join("nats.conf")
    }

    fn write_config(&mut self, i: usize, routes: Vec<String>) {
        let node = &self.nodes[i];
        let host = node.host();
        let mut config = format!(
            "server_name: {:?}\nhost: {host:?}\nport: -1\nhttp: \"{host}:-1\"\n\
             ports_file_dir: {:?}\njetstream {{\n  store_dir: {:?}\n}}\n\
             ping_interval: \"5s\"\nping_max: 2\n",
            node.name,
            node.dir,
            node.dir.join("store"),
        );
        if self.nodes.len() > 1 {
            let quoted: Vec<String> = routes.iter().map(|r| format!("{r:?}")).collect();
            config.push_str(&format!(
                "cluster {{\n  name: {:?}\n  listen: \"{host}:-1\"\n  routes: [{}]\n}}\n",
                self.cluster_name,
                quoted.join(", ")
            ));
        }
        if let Some(tls) = &self.tls {
            config.push_str(&format!(
                "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  timeout: 5\n}}\n",
                tls.cert, tls.key
            ));
        }
        if let Some((user, password)) = &self.user {
            config.push_str(&format!(
                "authorization {{\n  user: {user:?}\n  password: {password:?}\n}}\n"
            ));
        }
        std::fs::write(self.config_path(i), config).expect("write nats.conf");
        self.nodes[i].routes = routes;
    }

    /// Rewrites running node `i`'s config with routes to all the other
    /// nodes and reloads it (SIGHUP), if its routes differ.
    fn reconfigure(&mut self, i: usize) {
        let routes = self.routes_for(i);
        if routes == self.nodes[i].routes || self.nodes.len() == 1 {
            return;
        }
        self.write_config(i, routes);
        let status = std::process::Command::new("kill")
            .args(["-HUP", &self.pid(i).to_string()])
            .status()
            .expect("kill -HUP");
        assert!(status.success(), "kill -HUP nats-server");
    }

    /// Starts node `i` with `routes` and waits for its ports file.
    async fn spawn(&mut self, i: usize, routes: Vec<String>) {
        self.write_config(i, routes);
        self.nodes[i].runs += 1;
        let log_path = self.log_path(i, self.nodes[i].runs);
        let log = std::fs::File::create(&log_path).expect("nats log file");
        // `ip netns exec` execs the server: the pid (and the ports file's
        // name) stays the server's.
        let mut command = match &self.nodes[i].place {
            None => Command::new(&self.bin),
            Some(place) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &place.netns]).arg(&self.bin);
                c
            }
        };
        let mut child = command
            .arg("-c")
            .arg(self.config_path(i))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("nats log file"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.bin.display()));
        let pid = child.id().expect("nats-server pid");
        let ports_file = self.nodes[i].dir.join(format!("nats-server_{pid}.ports"));
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let ports = loop {
            if let Some(status) = child.try_wait().expect("nats-server status") {
                panic!(
                    "nats-server {} exited ({status}):\n{}",
                    self.nodes[i].name,
                    tail(&log_path)
                );
            }
            // The file may be read while being written: retry until it parses.
            if let Some(ports) = std::fs::read_to_string(&ports_file)
                .ok()
                .and_then(|text| parse_ports(&text, self.nodes.len() > 1))
            {
                break ports;
            }
            assert!(
                Instant::now() < deadline,
                "nats-server {} wrote no ports file {}:\n{}",
                self.nodes[i].name,
                ports_file.display(),
                tail(&log_path)
            );
            tokio::time::sleep(POLL).await;
        };
        let node = &mut self.nodes[i];
        node.child = Some(child);
        node.ports = Some(ports);
        let varz = self.monitor(i, "/varz").await;
        self.nodes[i].server_id = varz["server_id"]
            .as_str()
            .expect("server_id in /varz")
            .to_owned();
    }

    /// Panics if a node that should run has exited.
    fn check_alive(&mut self) {
        for i in 0..self.nodes.len() {
            let exited = match self.nodes[i].child.as_mut() {
                Some(child) => child.try_wait().expect("nats-server status"),
                None => None,
            };
            if let Some(status) = exited {
                panic!(
                    "nats-server {} exited ({status}):\n{}",
                    self.nodes[i].name,
                    tail(&self.log_path(i, self.nodes[i].runs))
                );
            }
        }
    }

    /// Why the cluster is not ready yet, or None when it is.
    async fn not_ready(&self) -> Option<String> {
        let running: Vec<usize> = self.running().collect();
        let clustered = self.nodes.len() > 1;
        let mut meta_leader: Option<String> = None;
        for &i in &running {
            let name = &self.nodes[i].name;
            let addr = self.monitoring_addr(i);
            match http_get(addr, "/healthz").await {
                Ok((200, _)) => {}
                Ok((status, body)) => return Some(format!("{name} /healthz {status} {body}")),
                Err(e) => return Some(format!("{name} /healthz: {e}")),
            }
            if !clustered {
                continue;
            }
            let jsz = match get_json(addr, "/jsz?accounts=true&streams=true").await {
                Ok(v) => v,
                Err(e) => return Some(format!("{name} /jsz: {e}")),
            };
            let meta = &jsz["meta_cluster"];
            let leader = meta["leader"].as_str().unwrap_or_default();
            if meta["cluster_size"].as_u64().unwrap_or(0) < self.nodes.len() as u64 {
                return Some(format!("{name} meta group not formed: {meta}"));
            }
            // A killed leader stays named until the others time it out.
            if !running.iter().any(|&j| self.nodes[j].name == leader) {
                return Some(format!("{name} sees no running meta leader: {meta}"));
            }
            if meta_leader.get_or_insert_with(|| leader.to_owned()) != leader {
                return Some(format!("nodes disagree on the meta leader: {meta}"));
            }
            // Each replicated stream elects its own leader, seconds after a
            // kill; until then its writes fail.
            for stream in jsz["account_details"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|account| account["stream_detail"].as_array().into_iter().flatten())
            {
                let leader = stream["cluster"]["leader"].as_str().unwrap_or_default();
                if !running.iter().any(|&j| self.nodes[j].name == leader) {
                    return Some(format!(
                        "{name} sees no running leader of stream {}: {}",
                        stream["name"], stream["cluster"]
                    ));
                }
            }
            let routez = match get_json(addr, "/routez").await {
                Ok(v) => v,
                Err(e) => return Some(format!("{name} /routez: {e}")),
            };
            let remote: BTreeSet<&str> = routez["routes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["remote_id"].as_str())
                .collect();
            for &j in &running {
                if j != i && !remote.contains(self.nodes[j].server_id.as_str()) {
                    return Some(format!("{name} has no route to {}", self.nodes[j].name));
                }
            }
            let varz = match get_json(addr, "/varz").await {
                Ok(v) => v,
                Err(e) => return Some(format!("{name} /varz: {e}")),
            };
            let configured: BTreeSet<String> = varz["cluster"]["urls"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect();
            let expected: BTreeSet<String> = self.nodes[i]
                .routes
                .iter()
                .map(|r| r.trim_start_matches("nats://").to_owned())
                .collect();
            if configured != expected {
                return Some(format!(
                    "{name} routes {configured:?}, configured {expected:?} (reload pending)"
                ));
            }
        }
        None
    }

    fn log_tails(&self) -> String {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].runs > 0)
            .map(|i| {
                format!(
                    "--- {} (run {}) ---\n{}",
                    self.nodes[i].name,
                    self.nodes[i].runs,
                    tail(&self.log_path(i, self.nodes[i].runs))
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(child) = node.child.as_mut() {
                let _ = child.start_kill();
            }
        }
    }
}

/// Creates a key-value bucket as `async_nats` `create_key_value` would:
/// its stream `KV_<bucket>` with the same settings, then opens it. Needed
/// with nats-server 2.9: `create_key_value` (and `create_or_update_key_value`,
/// `update_key_value`) first reads the account info, which async-nats 0.46
/// cannot parse from 2.9 ("data did not match any variant of untagged enum
/// Response": it requires `reserved_memory` and `reserved_storage`, which
/// 2.9 does not send). Buckets with a mirror or sources are not covered.
pub async fn create_kv_bucket(
    js: &async_nats::jetstream::Context,
    config: async_nats::jetstream::kv::Config,
) -> Result<async_nats::jetstream::kv::Store, async_nats::Error> {
    use async_nats::jetstream::stream;
    assert!(
        config.mirror.is_none() && config.sources.is_none(),
        "create_kv_bucket makes plain buckets only"
    );
    js.create_stream(stream::Config {
        name: format!("KV_{}", config.bucket),
        description: (!config.description.is_empty()).then_some(config.description),
        subjects: vec![format!("$KV.{}.>", config.bucket)],
        max_messages_per_subject: config.history.max(1),
        max_bytes: config.max_bytes,
        max_age: config.max_age,
        max_message_size: config.max_value_size,
        storage: config.storage,
        republish: config.republish,
        allow_rollup: true,
        deny_delete: true,
        deny_purge: false,
        allow_direct: true,
        num_replicas: config.num_replicas.max(1),
        discard: stream::DiscardPolicy::New,
        placement: config.placement,
        ..Default::default()
    })
    .await?;
    Ok(js.get_key_value(config.bucket).await?)
}

/// Where `nats-server` is: on the PATH, or in /usr/sbin where Debian puts it
/// (not on the PATH of most non-root users).
pub fn nats_server_bin() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file())
        .expect("nats-server is not installed: run scripts/nats/install (apt-get, needs root)")
}

/// A route URL on a port nobody listens on at `host`: a loopback port
/// bound, then released (in a namespace of its own, `host` has no listener
/// on it either). Node 0's first route, only until the real ones are known.
fn unused_route(host: String) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let port = listener.local_addr().expect("local addr").port();
    format!("nats://{host}:{port}")
}

/// `{"nats":["nats://127.0.0.1:P"],"monitoring":["http://127.0.0.1:P"],
/// "cluster":["nats://127.0.0.1:P"]}`
fn parse_ports(text: &str, clustered: bool) -> Option<Ports> {
    let v: Value = serde_json::from_str(text).ok()?;
    let first = |key: &str| v[key][0].as_str().map(str::to_owned);
    let cluster = first("cluster");
    if clustered && cluster.is_none() {
        return None;
    }
    Some(Ports {
        client: first("nats")?,
        monitoring: first("monitoring")?
            .trim_start_matches("http://")
            .to_owned(),
        cluster,
    })
}

/// The last 40 lines of a log file.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

async fn get_json(addr: &str, path: &str) -> Result<Value, String> {
    match http_get(addr, path).await? {
        (200, body) => serde_json::from_str(&body).map_err(|e| format!("{e}: {body}")),
        (status, body) => Err(format!("{status} {body}")),
    }
}

/// One HTTP/1.0 GET (the server closes the connection after the answer):
/// (status, body).
async fn http_get(addr: &str, path: &str) -> Result<(u16, String), String> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| format!("GET http://{addr}{path} timed out"))?
        .map_err(|e| format!("GET http://{addr}{path}: {e}"))?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("GET http://{addr}{path}: no status line in {head:?}"))?;
    Ok((status, body.to_owned()))
}

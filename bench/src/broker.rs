//! The real `relay-broker` binary as the benchmark runs it: built in release
//! mode, TLS with a development CA, its own data directory, restartable in
//! place (same ports, same store) after a `kill -9`; alone with its embedded
//! store, or as a node of a cluster (a `[cluster]` table).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use broker::tls::DevPki;
use relay_client::admin::{AdminClient, TenantKeys};
use relay_client::connect::BrokerEndpoint;
use relay_client::credential::{Credential, read_key_file};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::procs::Proc;

/// Finds (and unless told otherwise, first builds) the release broker.
pub fn ensure_binary(explicit: Option<&Path>, build: bool) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        anyhow::ensure!(
            path.is_file(),
            "--broker-bin {} is not a file",
            path.display()
        );
        return Ok(path.to_owned());
    }
    let exe = std::env::current_exe().context("path of the bench binary")?;
    // target/<profile>/bench -> target/release/relay-broker
    let target = exe
        .parent()
        .and_then(Path::parent)
        .context("the bench binary is not in a cargo target directory")?;
    let bin = target.join("release").join("relay-broker");
    if build {
        eprintln!("building relay-broker (cargo build --release -p broker)...");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            // Inherited from `cargo run`, it would change the fingerprints.
            .env_remove("CARGO_MANIFEST_DIR")
            .env("CARGO_TARGET_DIR", target)
            .args([
                "build",
                "--quiet",
                "--release",
                "-p",
                "broker",
                "--bin",
                "relay-broker",
            ])
            .status()
            .context("run cargo build")?;
        anyhow::ensure!(
            status.success(),
            "building relay-broker failed; build it yourself with \
             `cargo build --release -p broker` and pass --no-build"
        );
    }
    anyhow::ensure!(
        bin.is_file(),
        "no relay-broker at {}: run `cargo build --release -p broker`, or pass --broker-bin",
        bin.display()
    );
    Ok(bin)
}

/// A running broker and what it needs to run again.
pub struct Broker {
    proc: Proc,
    bin: PathBuf,
    dir: PathBuf,
    pub ca_file: PathBuf,
    pki: DevPki,
    limits: Vec<String>,
    /// TOML tables after `[limits]` (`[cluster]`), verbatim.
    tables: String,
    rust_log: String,
    pub grpc_addr: String,
    pub operator_addr: String,
    restarts: u32,
}

impl Broker {
    /// The running broker's process id.
    pub fn pid(&self) -> anyhow::Result<u32> {
        self.proc.pid()
    }

    /// Starts a broker in `dir` with `limits` (`key = value` lines of its
    /// `[limits]` table) and waits until it is ready.
    pub async fn start(
        bin: &Path,
        dir: &Path,
        pki: &DevPki,
        limits: &[String],
        rust_log: &str,
    ) -> anyhow::Result<Broker> {
        Broker::start_with_tables(bin, dir, pki, limits, "", rust_log).await
    }

    /// [`start`](Self::start) with more of the configuration: `tables` are
    /// TOML tables (a `[cluster]` table) written after `[limits]`.
    pub async fn start_with_tables(
        bin: &Path,
        dir: &Path,
        pki: &DevPki,
        limits: &[String],
        tables: &str,
        rust_log: &str,
    ) -> anyhow::Result<Broker> {
        std::fs::create_dir_all(dir)?;
        let (proc, grpc_addr, operator_addr) = spawn(
            bin,
            dir,
            pki,
            limits,
            tables,
            rust_log,
            "127.0.0.1:0",
            "127.0.0.1:0",
            0,
        )
        .await?;
        Ok(Broker {
            proc,
            bin: bin.to_owned(),
            dir: dir.to_owned(),
            ca_file: pki.ca_cert.clone(),
            pki: pki.clone(),
            limits: limits.to_vec(),
            tables: tables.to_owned(),
            rust_log: rust_log.to_owned(),
            grpc_addr,
            operator_addr,
            restarts: 0,
        })
    }

    /// `kill -9`: nothing of the shutdown path runs.
    pub async fn kill9(&mut self) -> anyhow::Result<()> {
        self.proc.kill9().await
    }

    /// Starts the broker again on the same ports and data directory (after
    /// [`kill9`](Self::kill9)) and waits until it is ready.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        self.restarts += 1;
        let (proc, grpc, operator) = spawn(
            &self.bin,
            &self.dir,
            &self.pki,
            &self.limits,
            &self.tables,
            &self.rust_log,
            &self.grpc_addr,
            &self.operator_addr,
            self.restarts,
        )
        .await?;
        anyhow::ensure!(
            grpc == self.grpc_addr && operator == self.operator_addr,
            "the broker came back on other ports"
        );
        self.proc = proc;
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.grpc_addr)
    }

    pub fn endpoint(&self) -> BrokerEndpoint {
        BrokerEndpoint::new(self.url(), Some(&self.ca_file))
    }

    pub fn rss_bytes(&self) -> anyhow::Result<u64> {
        self.proc.rss_bytes()
    }

    /// CPU time (user + system) the broker process has used so far.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let pid = self.proc.pid()?;
        crate::load::process_cpu(pid)
            .map(|d| d.as_secs_f64())
            .with_context(|| format!("read /proc/{pid}/stat"))
    }

    pub async fn admin(&self) -> anyhow::Result<AdminClient> {
        let key = read_key_file(&self.dir.join("data").join("operator.key"))?;
        Ok(AdminClient::connect(&self.endpoint(), Credential::operator(key)).await?)
    }

    /// Creates a tenant; its keys.
    pub async fn create_tenant(
        &self,
        admin: &AdminClient,
        name: &str,
    ) -> anyhow::Result<TenantKeys> {
        let (_, keys) = admin
            .create_tenant(name, None, false)
            .await
            .with_context(|| format!("create tenant {name}"))?;
        Ok(keys)
    }

    /// Agent sessions connected now, over all tenants (`/metrics`).
    pub async fn agents_connected(&self) -> anyhow::Result<u64> {
        let body = http_get(&self.operator_addr, "/metrics").await?;
        Ok(sum_metric(&body, "relay_agents_connected"))
    }

    /// Cluster mode: requests this node forwarded to another node and got
    /// an answer for (`/metrics`).
    pub async fn forwards_answered(&self) -> anyhow::Result<u64> {
        let body = http_get(&self.operator_addr, "/metrics").await?;
        Ok(sum_metric(
            &body,
            r#"relay_cluster_forwards_total{direction="out",outcome="answered"}"#,
        ))
    }
}

#[allow(clippy::too_many_arguments)]
async fn spawn(
    bin: &Path,
    dir: &Path,
    pki: &DevPki,
    limits: &[String],
    tables: &str,
    rust_log: &str,
    listen: &str,
    operator_listen: &str,
    run: u32,
) -> anyhow::Result<(Proc, String, String)> {
    let mut config = format!(
        "listen = {listen:?}\noperator_listen = {operator_listen:?}\ndata_dir = {:?}\n\
         tls_cert = {:?}\ntls_key = {:?}\n[limits]\n",
        dir.join("data"),
        pki.server_cert,
        pki.server_key,
    );
    for line in limits {
        config.push_str(line);
        config.push('\n');
    }
    config.push_str(tables);
    let config_path = dir.join("broker.toml");
    std::fs::write(&config_path, config)?;
    let mut cmd = tokio::process::Command::new(bin);
    cmd.arg("--config")
        .arg(&config_path)
        .env("RUST_LOG", rust_log);
    let mut proc = Proc::spawn("relay-broker", cmd, &dir.join(format!("broker-{run}.log")))?;
    let ready = proc.expect_line("relay-broker ready").await?;
    let field = |name: &str| {
        ready
            .split_whitespace()
            .find_map(|f| f.strip_prefix(name))
            .map(str::to_owned)
            .with_context(|| format!("no {name} in {ready:?}"))
    };
    let grpc = field("grpc=")?;
    let operator = field("operator=")?;
    Ok((proc, grpc, operator))
}

/// A plain HTTP/1.0 GET of the operator port; the body.
pub async fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect to {addr}"))?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    match response.split_once("\r\n\r\n") {
        Some((head, body))
            if head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200") =>
        {
            Ok(body.to_owned())
        }
        _ => bail!(
            "GET {path} from {addr} failed: {}",
            response.lines().next().unwrap_or("")
        ),
    }
}

/// The sum of a Prometheus metric over all its label sets.
fn sum_metric(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_a_metric_over_its_labels() {
        let text = "# HELP relay_agents_connected x\n# TYPE relay_agents_connected gauge\n\
                    relay_agents_connected{tenant=\"a\"} 3\nrelay_agents_connected{tenant=\"b\"} 4\n\
                    relay_agents_connected_total 100\nrelay_requests_total{x=\"y\"} 9\n";
        assert_eq!(sum_metric(text, "relay_agents_connected"), 7);
        assert_eq!(sum_metric("", "relay_agents_connected"), 0);
        let forwards = "relay_cluster_forwards_total{direction=\"out\",outcome=\"answered\"} 12\n\
                        relay_cluster_forwards_total{direction=\"out\",outcome=\"no_agent_online\"} 2\n\
                        relay_cluster_forwards_total{direction=\"in\",outcome=\"answered\"} 5\n";
        assert_eq!(
            sum_metric(
                forwards,
                r#"relay_cluster_forwards_total{direction="out",outcome="answered"}"#
            ),
            12
        );
    }
}

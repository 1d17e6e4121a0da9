//! `sessions`: N idle agents (the simulator, several processes, several
//! 127.0.0.x source addresses) on one broker; the broker's resident memory
//! per session; then `kill -9` of the broker, a restart on the same ports
//! and store, and the time until all N are connected again, counted by the
//! broker itself (`relay_agents_connected` on /metrics).

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sas::{KeySlot, Right};
use serde::Serialize;

use super::Context;
use crate::broker::Broker;
use crate::procs::{Proc, this_binary};

/// Descriptors the broker keeps for itself (store, listeners, logs, ...).
const NOFILE_RESERVE: u64 = 200;
/// Sessions per simulator process when not told otherwise.
const SESSIONS_PER_SIMULATOR: usize = 5_000;
/// How often the broker's count is read.
const POLL: Duration = Duration::from_millis(100);
/// How long the memory is left to settle once every session is up.
const SETTLE: Duration = Duration::from_secs(3);
/// How long reconnecting may take before the scenario gives up waiting.
const RECONNECT_LIMIT: Duration = Duration::from_secs(180);

#[derive(Debug, Clone, Serialize)]
pub struct Sessions {
    /// Sessions held at once.
    pub count: u64,
    /// Sessions asked for (`--sessions`).
    pub requested: usize,
    /// Why fewer than requested were opened, if they were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limited_by: Option<String>,
    pub broker_rss_before_bytes: u64,
    pub broker_rss_after_bytes: u64,
    pub broker_rss_bytes_per_session: u64,
    /// From starting the simulators until the broker counted all N.
    pub connect_seconds: f64,
    /// CPU time (user + system) the broker spent meanwhile, per session:
    /// TCP, TLS and HTTP/2 handshakes, Hello, Welcome.
    pub broker_cpu_us_per_session: f64,
    pub tenants: usize,
    pub source_addresses: usize,
    pub simulator_processes: usize,
    /// The simulators' own resident memory per session (for scale: a real
    /// agent is a process of its own).
    pub simulator_rss_bytes_per_session: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Reconnect {
    /// Sessions connected again when the measurement ended.
    pub count: u64,
    /// From the `kill -9` until the broker counted all of them again.
    pub seconds: f64,
    /// From the `kill -9` until the new broker printed its ready line.
    pub broker_ready_seconds: f64,
    /// CPU time (user + system) of the new broker until all were back, per
    /// session: with the broker alone on the machine (here it shares the
    /// cores with the simulators), it could take this many per second
    /// per core.
    pub broker_cpu_us_per_session: f64,
    pub all_reconnected: bool,
    /// Connection attempts the simulated agents made from the kill until
    /// all were back, and how many of them failed (refused, reset, timed
    /// out): each failure doubles that agent's backoff ceiling.
    pub attempts: u64,
    pub failed_attempts: u64,
    /// Of those, the ones that timed out (the broker did not answer in
    /// time: what overload causes). The others were refused or reset,
    /// nearly all while the old process was being torn down and the new
    /// one was not yet listening.
    pub failed_timeouts: u64,
    /// `[seconds since the kill, sessions connected]`, twice a second.
    pub timeline: Vec<[f64; 2]>,
}

pub async fn measure(ctx: &Context) -> anyhow::Result<(Sessions, Reconnect)> {
    let settings = &ctx.settings;
    let requested = settings.sessions;
    anyhow::ensure!(requested > 0, "--sessions must be at least 1");
    let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    let most = hard.saturating_sub(NOFILE_RESERVE) as usize;
    let (count, limited_by) = if requested > most {
        let why = format!(
            "RLIMIT_NOFILE hard limit {hard} on this machine (the broker holds a descriptor \
             per session; raising the hard limit needs CAP_SYS_RESOURCE)"
        );
        eprintln!(
            "sessions: {requested} requested, {count} possible: {why}",
            count = most
        );
        (most, Some(why))
    } else {
        (requested, None)
    };
    let per_tenant = settings.agents_per_tenant.min(count);
    let tenants = count.div_ceil(per_tenant);
    let sources: Vec<IpAddr> = (0..settings.sources)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i as u8)))
        .collect();
    let simulators = settings
        .simulators
        .unwrap_or_else(|| count.div_ceil(SESSIONS_PER_SIMULATOR))
        .clamp(1, count);

    let dir = ctx.subdir("sessions")?;
    let limits = [
        format!("sessions_per_tenant = {per_tenant}"),
        format!("sessions_per_source = {}", count.div_ceil(sources.len())),
    ];
    let mut broker = Broker::start(
        ctx.broker_bin()?,
        &dir.join("broker"),
        &ctx.pki,
        &limits,
        &settings.rust_log,
    )
    .await?;
    let admin = broker.admin().await?;
    let mut lines = String::new();
    for t in 0..tenants {
        let name = format!("t{t:05}");
        let keys = broker.create_tenant(&admin, &name).await?;
        let key = keys
            .get(Right::Listen, KeySlot::Primary)
            .context("no Listen key")?;
        lines.push_str(&format!("{name}\t{}\n", key.to_base64().as_str()));
    }
    drop(admin);
    let tenants_file = dir.join("tenants.tsv");
    broker::tls::write(&tenants_file, lines.as_bytes(), 0o600)?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = broker.rss_bytes()?;
    let cpu_before = broker.cpu_seconds()?;

    let started = Instant::now();
    let mut sims = Vec::new();
    let per_sim = count.div_ceil(simulators);
    for s in 0..simulators {
        let first = s * per_sim;
        let n = per_sim.min(count - first);
        let mut cmd = this_binary("simulate")?;
        cmd.arg("--url")
            .arg(broker.url())
            .arg("--ca")
            .arg(&ctx.pki.ca_cert)
            .arg("--tenants")
            .arg(&tenants_file)
            .arg("--first")
            .arg(first.to_string())
            .arg("--count")
            .arg(n.to_string())
            .arg("--agents-per-tenant")
            .arg(per_tenant.to_string())
            .arg("--sources")
            .arg(
                sources
                    .iter()
                    .map(IpAddr::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            );
        let mut sim = Proc::spawn(
            &format!("simulator {s}"),
            cmd,
            &dir.join(format!("simulator-{s}.log")),
        )?;
        sim.expect_line("started").await?;
        sims.push(sim);
    }
    let limit = Duration::from_secs(60) + Duration::from_millis(5 * count as u64);
    let reached = wait_for(&broker, count as u64, started, limit).await?;
    anyhow::ensure!(
        reached == count as u64,
        "only {reached} of {count} sessions connected within {}s; see the logs in {}",
        limit.as_secs(),
        dir.display()
    );
    let connect_seconds = round3(started.elapsed());
    let connect_cpu = broker.cpu_seconds()? - cpu_before;
    tokio::time::sleep(SETTLE).await;
    let rss_after = broker.rss_bytes()?;
    let mut sim_rss = 0;
    for sim in &sims {
        sim_rss += sim.rss_bytes()?;
    }
    let sessions = Sessions {
        count: count as u64,
        requested,
        limited_by,
        broker_rss_before_bytes: rss_before,
        broker_rss_after_bytes: rss_after,
        broker_rss_bytes_per_session: rss_after.saturating_sub(rss_before) / count as u64,
        connect_seconds,
        broker_cpu_us_per_session: per_session_us(connect_cpu, count as u64),
        tenants,
        source_addresses: sources.len(),
        simulator_processes: simulators,
        simulator_rss_bytes_per_session: sim_rss / count as u64,
    };

    let before = attempts(&mut sims).await;
    broker.kill9().await?;
    let killed = Instant::now();
    broker.start_again().await?;
    let broker_ready_seconds = round3(killed.elapsed());
    let mut timeline = Vec::new();
    let back = wait_for_timeline(
        &broker,
        count as u64,
        killed,
        RECONNECT_LIMIT,
        &mut timeline,
    )
    .await?;
    let seconds = round3(killed.elapsed());
    let reconnect_cpu = broker.cpu_seconds()?;
    let after = attempts(&mut sims).await;
    let reconnect = Reconnect {
        count: back,
        seconds,
        broker_ready_seconds,
        broker_cpu_us_per_session: per_session_us(reconnect_cpu, back),
        all_reconnected: back == count as u64,
        attempts: after.0.saturating_sub(before.0),
        failed_attempts: after.1.saturating_sub(before.1),
        failed_timeouts: after.2.saturating_sub(before.2),
        timeline,
    };
    for sim in &mut sims {
        sim.kill9().await?;
    }
    drop(broker);
    Ok((sessions, reconnect))
}

/// Connection attempts, failures and timeouts so far, over all
/// simulators, from the status line each prints every second.
async fn attempts(sims: &mut [Proc]) -> (u64, u64, u64) {
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut total = (0, 0, 0);
    for sim in sims {
        if let Some(line) = sim.latest_line("status ") {
            total.0 += status_field(&line, "attempts=");
            total.1 += status_field(&line, "failures=");
            total.2 += status_field(&line, "timeouts=");
        }
    }
    total
}

fn status_field(line: &str, name: &str) -> u64 {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(name)?.parse().ok())
        .unwrap_or(0)
}

/// Polls the broker's count until it reaches `target` or `limit` has passed
/// since `since`; the last count read.
async fn wait_for(
    broker: &Broker,
    target: u64,
    since: Instant,
    limit: Duration,
) -> anyhow::Result<u64> {
    wait_for_timeline(broker, target, since, limit, &mut Vec::new()).await
}

/// [`wait_for`], noting the count twice a second in `timeline`.
async fn wait_for_timeline(
    broker: &Broker,
    target: u64,
    since: Instant,
    limit: Duration,
    timeline: &mut Vec<[f64; 2]>,
) -> anyhow::Result<u64> {
    let mut last = 0;
    let mut reported = Instant::now();
    let mut next_sample = Duration::ZERO;
    while since.elapsed() < limit {
        // Reading may fail while the broker is busy; that is only a miss.
        if let Ok(n) = broker.agents_connected().await {
            last = n;
            let at = since.elapsed();
            if at >= next_sample || n >= target {
                timeline.push([round3(at), n as f64]);
                next_sample = at + Duration::from_millis(500);
            }
            if n >= target {
                return Ok(n);
            }
        }
        if reported.elapsed() >= Duration::from_secs(5) {
            eprintln!(
                "sessions: {last} of {target} connected after {:.1}s",
                since.elapsed().as_secs_f64()
            );
            reported = Instant::now();
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(last)
}

/// CPU seconds per session, in µs, to one decimal (the clock ticks 10 ms).
fn per_session_us(cpu_seconds: f64, sessions: u64) -> f64 {
    (cpu_seconds * 1e7 / sessions.max(1) as f64).round() / 10.0
}

fn round3(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

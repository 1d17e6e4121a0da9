//! `crypto`: the envelope work of one request, in this process on one
//! thread: the portal seals the request (HPKE auth mode, X25519,
//! HKDF-SHA256, ChaCha20-Poly1305), the agent opens it and seals the reply,
//! the portal opens the reply. 512-byte bodies, as the routed scenario.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use envelope::body::operation;
use envelope::{KeyPair, Recipient, RequestHeader};
use serde::Serialize;

use crate::payload;

/// Mean time per operation, µs, and the thread's CPU time per full cycle.
#[derive(Debug, Clone, Serialize)]
pub struct Crypto {
    pub iterations: usize,
    pub seal_request_us: f64,
    pub open_request_us: f64,
    pub seal_reply_us: f64,
    pub open_reply_us: f64,
    /// CPU time of the thread per cycle (all four operations), µs.
    pub seal_open_us: f64,
    /// Where the CPU time was read: `sched` (/proc/thread-self/sched,
    /// nanoseconds), `stat` (clock ticks) or `wall` (no CPU clock found).
    pub cpu_clock: &'static str,
}

/// Cycles before the measured ones.
const WARMUP: usize = 100;

pub fn measure(iterations: usize) -> anyhow::Result<Crypto> {
    std::thread::spawn(move || cycles(iterations))
        .join()
        .map_err(|_| anyhow::anyhow!("the crypto thread panicked"))?
}

fn cycles(iterations: usize) -> anyhow::Result<Crypto> {
    anyhow::ensure!(iterations > 0, "--crypto-iterations must be at least 1");
    let mut rng = envelope::os_rng();
    let portal = KeyPair::generate(&mut rng);
    let agent = KeyPair::generate(&mut rng);
    let body = payload::request_body();
    let reply = payload::reply_body();
    let now_ms = proto::time::unix_ms();
    let keys = [agent.clone()];
    let portals = [portal.public.clone()];
    let recipient = Recipient {
        tenant: "bench",
        agent_id: "bench-agent",
        keys: &keys,
        trusted_portals: &portals,
        now_ms,
        skew_allowance_ms: 60_000,
        max_lifetime_ms: 600_000,
    };
    let mut spent = [Duration::ZERO; 4];
    let mut cpu_start = None;
    let mut wall_start = Instant::now();
    for i in 0..WARMUP + iterations {
        if i == WARMUP {
            spent = [Duration::ZERO; 4];
            cpu_start = thread_cpu();
            wall_start = Instant::now();
        }
        let header = RequestHeader {
            tenant: "bench".into(),
            agent_key_id: agent.public.key_id(),
            portal_key_id: portal.public.key_id(),
            agent_id: "bench-agent".into(),
            request_id: format!("crypto-{i}"),
            operation: operation::RESET_PASSWORD,
            issued_at_ms: now_ms,
            expires_at_ms: now_ms + 120_000,
        };
        let t0 = Instant::now();
        let (sealed, pending) =
            envelope::seal_request(&portal, &agent.public, &header, &body, &mut rng)?;
        let t1 = Instant::now();
        let opened = envelope::open_request(&sealed, &recipient).context("open the request")?;
        let t2 = Instant::now();
        let sealed_reply = opened.seal_reply(&reply, &mut rng)?;
        let t3 = Instant::now();
        let answer = pending.open(&sealed_reply).context("open the reply")?;
        let t4 = Instant::now();
        anyhow::ensure!(answer == reply, "the reply changed on the way");
        for (slot, (a, b)) in spent
            .iter_mut()
            .zip([(t0, t1), (t1, t2), (t2, t3), (t3, t4)])
        {
            *slot += b - a;
        }
    }
    let wall = wall_start.elapsed();
    let (cpu, clock) = match (cpu_start, thread_cpu()) {
        (Some((start, clock)), Some((end, _))) => (end.saturating_sub(start), clock),
        _ => (wall, "wall"),
    };
    let per = |d: Duration| (d.as_nanos() as f64 / iterations as f64 / 100.0).round() / 10.0;
    Ok(Crypto {
        iterations,
        seal_request_us: per(spent[0]),
        open_request_us: per(spent[1]),
        seal_reply_us: per(spent[2]),
        open_reply_us: per(spent[3]),
        seal_open_us: per(cpu),
        cpu_clock: clock,
    })
}

/// CPU time of the calling thread so far, and which clock gave it.
fn thread_cpu() -> Option<(Duration, &'static str)> {
    if let Ok(sched) = std::fs::read_to_string("/proc/thread-self/sched")
        && let Some(ms) = sched_runtime_ms(&sched)
    {
        return Some((Duration::from_secs_f64(ms / 1000.0), "sched"));
    }
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    Some((crate::load::stat_cpu(&stat)?, "stat"))
}

fn sched_runtime_ms(sched: &str) -> Option<f64> {
    let line = sched
        .lines()
        .find(|l| l.trim_start().starts_with("se.sum_exec_runtime"))?;
    line.split(':').nth(1)?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_scheduler_runtime() {
        let sched = "bench (1, #threads: 1)\n---\nse.exec_start   :   14501016.752233\n\
                     se.sum_exec_runtime                          :             0.099428\n";
        assert_eq!(sched_runtime_ms(sched), Some(0.099428));
        assert_eq!(sched_runtime_ms("nothing"), None);
    }

    #[test]
    fn a_few_cycles() {
        let c = cycles(5).unwrap();
        assert_eq!(c.iterations, 5);
        assert!(c.seal_request_us > 0.0 && c.open_reply_us > 0.0, "{c:?}");
    }
}

//! The load driver every request-reply scenario shares: a warm-up, then
//! sequential calls (one in flight) for latency, then a fixed time with a
//! number of calls in flight for throughput.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::stats::{self, Summary};

/// Sizes of one measurement.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Sequential calls before measuring.
    pub warmup: usize,
    /// Sequential calls measured for latency.
    pub requests: usize,
    /// Calls in flight during the throughput measurement.
    pub concurrency: usize,
    /// Length of the throughput measurement.
    pub duration: Duration,
    /// Calls at full concurrency before the throughput measurement.
    pub warmup_duration: Duration,
}

/// One request-reply through the system under test.
pub trait Call: Clone + Send + Sync + 'static {
    fn call(&self) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// What a scenario measured.
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    /// One call in flight.
    #[serde(flatten)]
    pub latency: Summary,
    /// Completed calls per second with `concurrency` in flight.
    pub rps: f64,
    pub concurrency: usize,
    pub throughput_calls: u64,
    pub throughput_seconds: f64,
    /// Latency of the calls during the throughput measurement.
    pub loaded: Summary,
    /// CPU time (user + system) each process of the scenario spent per
    /// call during the throughput measurement, µs, and their `total`: what
    /// bounds throughput on two cores, and a figure that other work on the
    /// machine disturbs far less than it disturbs latency.
    pub cpu_us_per_call: BTreeMap<String, f64>,
    /// `[percentile, µs]` of the sequential calls, for the plot.
    pub distribution: Vec<[f64; 2]>,
}

/// The processes of a scenario, by role, whose CPU time is counted; the
/// caller (this process) is always counted. Processes of the same role are
/// summed.
pub type Processes = [(&'static str, u32)];

/// CPU time (user + system) of process `pid` so far, from /proc/PID/stat.
pub(crate) fn process_cpu(pid: u32) -> Option<Duration> {
    stat_cpu(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// User + system CPU time from the text of a `/proc/.../stat` file (of a
/// process or a thread).
pub(crate) fn stat_cpu(stat: &str) -> Option<Duration> {
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th of the whole line, in ticks of 10 ms (USER_HZ = 100).
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

fn cpu_snapshot(processes: &Processes) -> Vec<(&'static str, Option<Duration>)> {
    std::iter::once(("caller", std::process::id()))
        .chain(processes.iter().copied())
        .map(|(role, pid)| (role, process_cpu(pid)))
        .collect()
}

fn cpu_per_call(
    before: &[(&'static str, Option<Duration>)],
    after: &[(&'static str, Option<Duration>)],
    calls: u64,
) -> BTreeMap<String, f64> {
    let mut out: BTreeMap<String, f64> = BTreeMap::new();
    let mut total = 0.0;
    for ((role, start), (_, end)) in before.iter().zip(after) {
        if let (Some(start), Some(end)) = (start, end) {
            let us = end.saturating_sub(*start).as_secs_f64() * 1e6 / calls.max(1) as f64;
            total += us;
            // Several processes of one role (the nodes of a NATS cluster)
            // are counted together.
            *out.entry((*role).to_owned()).or_default() += us;
        }
    }
    out.insert("total".to_owned(), total);
    for us in out.values_mut() {
        *us = (*us * 10.0).round() / 10.0;
    }
    out
}

/// Runs `plan` against `call`. Any failed call fails the measurement: a
/// benchmark that drops errors measures something else.
pub async fn measure<C: Call>(
    call: C,
    plan: &Plan,
    processes: &Processes,
) -> anyhow::Result<Measured> {
    for i in 0..plan.warmup {
        call.call()
            .await
            .with_context(|| format!("warm-up call {i} failed"))?;
    }
    let mut samples = Vec::with_capacity(plan.requests);
    for i in 0..plan.requests {
        let started = Instant::now();
        call.call()
            .await
            .with_context(|| format!("sequential call {i} failed"))?;
        samples.push(started.elapsed().as_nanos() as u64);
    }
    let latency = stats::summarize(&mut samples);
    let distribution = stats::distribution(&samples);

    // Warm the connections up at full concurrency, then measure.
    in_flight(&call, plan.concurrency, plan.warmup_duration).await?;
    let cpu_before = cpu_snapshot(processes);
    let started = Instant::now();
    let mut loaded = in_flight(&call, plan.concurrency, plan.duration).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_after = cpu_snapshot(processes);
    let calls = loaded.len() as u64;
    Ok(Measured {
        latency,
        rps: (calls as f64 / elapsed).round(),
        concurrency: plan.concurrency,
        throughput_calls: calls,
        throughput_seconds: (elapsed * 1000.0).round() / 1000.0,
        loaded: stats::summarize(&mut loaded),
        cpu_us_per_call: cpu_per_call(&cpu_before, &cpu_after, calls),
        distribution,
    })
}

/// Keeps `concurrency` calls in flight for `duration`; the latency of each
/// call completed. Calls started before the end are waited for.
async fn in_flight<C: Call>(
    call: &C,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Vec<u64>> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let call = call.clone();
        let stop = Arc::clone(&stop);
        workers.spawn(async move {
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                call.call().await.context("call under load failed")?;
                samples.push(started.elapsed().as_nanos() as u64);
            }
            anyhow::Ok(samples)
        });
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    while let Some(joined) = workers.join_next().await {
        all.extend(joined.context("load worker panicked")??);
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone)]
    struct Sleep;

    impl Call for Sleep {
        async fn call(&self) -> anyhow::Result<()> {
            tokio::time::sleep(Duration::from_millis(1)).await;
            Ok(())
        }
    }

    #[tokio::test]
    async fn measures_latency_and_throughput() {
        let plan = Plan {
            warmup: 2,
            requests: 20,
            concurrency: 8,
            duration: Duration::from_millis(200),
            warmup_duration: Duration::from_millis(10),
        };
        let m = measure(Sleep, &plan, &[]).await.unwrap();
        assert_eq!(m.latency.samples, 20);
        assert!(m.latency.p50_us >= 1000.0, "{m:?}");
        // Eight in flight, about a millisecond each (timer granularity
        // makes it less): well above one call at a time.
        assert!(m.rps > 1000.0, "{m:?}");
        assert_eq!(m.loaded.samples as u64, m.throughput_calls);
        assert!(m.cpu_us_per_call.contains_key("caller"), "{m:?}");
    }

    #[test]
    fn reads_this_processs_cpu_time() {
        let start = process_cpu(std::process::id()).expect("/proc/self/stat");
        let spin = Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < Duration::from_millis(60) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let end = process_cpu(std::process::id()).unwrap();
        assert!(end > start, "{start:?} -> {end:?}");
        let per = cpu_per_call(&[("caller", Some(start))], &[("caller", Some(end))], 2);
        assert_eq!(per["total"], per["caller"]);
    }

    #[test]
    fn processes_of_one_role_are_summed() {
        let ms = Duration::from_millis;
        let before = [
            ("caller", Some(ms(0))),
            ("nats", Some(ms(10))),
            ("nats", Some(ms(20))),
        ];
        let after = [
            ("caller", Some(ms(30))),
            ("nats", Some(ms(20))),
            ("nats", Some(ms(40))),
        ];
        let per = cpu_per_call(&before, &after, 10);
        assert_eq!(per["caller"], 3000.0);
        assert_eq!(per["nats"], 3000.0);
        assert_eq!(per["total"], 6000.0);
        assert_eq!(per.len(), 3);
    }
}

//! What an attack costs the broker and what it does to everyone else: the
//! broker's resident memory, open descriptors and threads read from
//! `/proc`, and a bystander tenant whose calls run every quarter second
//! beside the attack, each one's latency and result kept.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use relay_client::portal_client::PortalClient;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How often the bystander calls.
pub const BYSTANDER_EVERY: Duration = Duration::from_millis(250);

/// One look at a process's resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub rss_bytes: u64,
    pub open_fds: usize,
    pub threads: usize,
}

impl ProcStat {
    /// Reads `/proc/<pid>`; panics when the process is gone.
    pub fn of(pid: u32) -> ProcStat {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_else(|e| panic!("process {pid} is gone: {e}"));
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
        };
        let open_fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count())
            .unwrap_or_else(|e| panic!("cannot list /proc/{pid}/fd: {e}"));
        ProcStat {
            rss_bytes: field("VmRSS:") * 1024,
            open_fds,
            threads: field("Threads:") as usize,
        }
    }

    pub fn rss_mib(&self) -> u64 {
        self.rss_bytes >> 20
    }
}

impl std::fmt::Display for ProcStat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RSS {} MiB, {} descriptors, {} threads",
            self.rss_mib(),
            self.open_fds,
            self.threads
        )
    }
}

/// The largest of each figure over the samples taken while an attack runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Peak {
    pub rss_bytes: u64,
    pub open_fds: usize,
    pub threads: usize,
}

/// Samples `pid` every 100 ms until stopped; returns the peaks.
pub struct Sampler {
    stop: CancellationToken,
    task: JoinHandle<Peak>,
}

impl Sampler {
    pub fn start(pid: u32) -> Sampler {
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut peak = Peak::default();
                loop {
                    let now = ProcStat::of(pid);
                    peak.rss_bytes = peak.rss_bytes.max(now.rss_bytes);
                    peak.open_fds = peak.open_fds.max(now.open_fds);
                    peak.threads = peak.threads.max(now.threads);
                    tokio::select! {
                        _ = stop.cancelled() => return peak,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
            }
        });
        Sampler { stop, task }
    }

    pub async fn stop(self) -> Peak {
        self.stop.cancel();
        self.task.await.expect("sampler")
    }
}

/// One bystander call.
#[derive(Debug, Clone)]
pub struct Call {
    pub at: Instant,
    pub latency: Duration,
    /// `None` when it succeeded, else what went wrong.
    pub error: Option<String>,
}

/// A legitimate tenant's portal pinging its own agent every quarter second
/// (each call with `deadline`) while something else goes on.
pub struct Bystander {
    stop: CancellationToken,
    calls: Arc<Mutex<Vec<Call>>>,
    task: JoinHandle<()>,
}

impl Bystander {
    pub fn start(portal: PortalClient, deadline: Duration) -> Bystander {
        let stop = CancellationToken::new();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let stop = stop.clone();
            let calls = Arc::clone(&calls);
            async move {
                let mut every = tokio::time::interval(BYSTANDER_EVERY);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = every.tick() => {}
                    }
                    let at = Instant::now();
                    let result = tokio::time::timeout(deadline, portal.ping(Some(deadline))).await;
                    let error = match result {
                        Ok(Ok(_)) => None,
                        Ok(Err(e)) => Some(e.to_string()),
                        Err(_) => Some(format!("no answer within {deadline:?}")),
                    };
                    calls.lock().unwrap().push(Call {
                        at,
                        latency: at.elapsed(),
                        error,
                    });
                }
            }
        });
        Bystander { stop, calls, task }
    }

    /// Stops and returns every call made.
    pub async fn stop(self) -> Vec<Call> {
        self.stop.cancel();
        self.task.await.expect("bystander");
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

/// Asserts that every bystander call succeeded within `bound` and that
/// there were at least `min_calls`; returns the slowest latency.
pub fn assert_unharmed(calls: &[Call], min_calls: usize, bound: Duration) -> Duration {
    assert!(
        calls.len() >= min_calls,
        "the bystander made {} calls, expected at least {min_calls}",
        calls.len()
    );
    let failed: Vec<_> = calls.iter().filter(|c| c.error.is_some()).collect();
    assert!(failed.is_empty(), "bystander calls failed: {failed:?}");
    let slowest = calls.iter().map(|c| c.latency).max().unwrap_or_default();
    assert!(
        slowest <= bound,
        "the slowest bystander call took {slowest:?}, bound {bound:?}"
    );
    slowest
}

//! The versions of everything measured, and of the machine.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::procs::first_line_of;

/// Versions of everything measured, and of the machine.
#[derive(Debug, Clone, Serialize)]
pub struct Versions {
    pub bench: &'static str,
    /// `release` unless someone ran the benchmark unoptimised.
    pub bench_profile: &'static str,
    pub git_commit: Option<String>,
    /// Whether the work tree had uncommitted changes.
    pub git_dirty: Option<bool>,
    pub rustc: &'static str,
    /// Resolved versions from Cargo.lock.
    pub crates: BTreeMap<&'static str, &'static str>,
    pub relay_broker: Option<String>,
    pub nats_server: Option<String>,
    pub kernel: Option<String>,
    pub cpu_model: Option<String>,
    pub cpus: usize,
}

impl Versions {
    pub fn collect(broker_bin: Option<&Path>, nats_server: Option<&Path>) -> Versions {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let git = |args: &[&str]| {
            std::process::Command::new("git")
                .arg("-C")
                .arg(&repo)
                .args(args)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        };
        Versions {
            bench: env!("CARGO_PKG_VERSION"),
            bench_profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
            git_commit: git(&["rev-parse", "HEAD"]),
            git_dirty: git(&["status", "--porcelain"]).map(|s| !s.is_empty()),
            rustc: env!("BENCH_RUSTC_VERSION"),
            crates: env!("BENCH_CRATE_VERSIONS")
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .collect(),
            relay_broker: broker_bin.and_then(|b| first_line_of(b, &["--version"])),
            nats_server: nats_server.and_then(|n| first_line_of(n, &["--version"])),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .map(|s| s.trim().to_owned()),
            cpu_model: std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|c| {
                c.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            }),
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        }
    }
}

//! Child processes: this binary re-executed in a helper role, the broker,
//! nats-server. Each child's stderr goes to a log file; its stdout carries
//! the status lines the benchmark waits for.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// How long a child may take to print its ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// This binary, to run in a helper role (`bench agent ...`).
pub fn this_binary(role: &str) -> anyhow::Result<Command> {
    let exe = std::env::current_exe().context("path of the bench binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg(role);
    Ok(cmd)
}

/// A running child: its stdout lines and its stderr log.
pub struct Proc {
    pub name: String,
    child: Child,
    /// The write end of the child's stdin, never written: when this process
    /// dies, however it dies, the child reads end-of-file (see
    /// [`exit_with_parent`]).
    _stdin: Option<tokio::process::ChildStdin>,
    lines: mpsc::UnboundedReceiver<String>,
    log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with stderr to `log`; the child is killed when dropped.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> anyhow::Result<Proc> {
        let stderr = std::fs::File::create(log)
            .with_context(|| format!("create the log file {}", log.display()))?;
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {name}"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("child stdout")?;
        let (tx, lines) = mpsc::unbounded_channel();
        // Keep reading, so the child never blocks on a full pipe.
        tokio::spawn(async move {
            let mut stdout = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = stdout.next_line().await {
                let _ = tx.send(line);
            }
        });
        Ok(Proc {
            name: name.to_owned(),
            child,
            _stdin: stdin,
            lines,
            log: log.to_owned(),
        })
    }

    /// Waits for a stdout line starting with `prefix`; fails with the log's
    /// tail when the child exits or takes longer than [`READY_TIMEOUT`].
    pub async fn expect_line(&mut self, prefix: &str) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) if line.starts_with(prefix) => return Ok(line),
                Ok(Some(_)) => {}
                Ok(None) => bail!(
                    "{} exited before printing {prefix:?}; log {}:\n{}",
                    self.name,
                    self.log.display(),
                    self.log_tail()
                ),
                Err(_) => bail!(
                    "{} printed no {prefix:?} within {}s; log {}:\n{}",
                    self.name,
                    READY_TIMEOUT.as_secs(),
                    self.log.display(),
                    self.log_tail()
                ),
            }
        }
    }

    /// The newest stdout line starting with `prefix` among those printed
    /// since the last look (the others are dropped).
    pub fn latest_line(&mut self, prefix: &str) -> Option<String> {
        let mut latest = None;
        while let Ok(line) = self.lines.try_recv() {
            if line.starts_with(prefix) {
                latest = Some(line);
            }
        }
        latest
    }

    /// The last lines of the child's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    pub fn pid(&self) -> anyhow::Result<u32> {
        self.child
            .id()
            .with_context(|| format!("{} has exited", self.name))
    }

    /// Resident memory now.
    pub fn rss_bytes(&self) -> anyhow::Result<u64> {
        rss_bytes(self.pid()?)
    }

    /// `kill -9`, and reaps the child.
    pub async fn kill9(&mut self) -> anyhow::Result<()> {
        // tokio's start_kill sends SIGKILL.
        self.child.start_kill().ok();
        self.child.wait().await.context("reap child")?;
        Ok(())
    }
}

/// In a helper role: exits this process when its stdin ends, which is when
/// the benchmark that started it has gone (even after a `kill -9`), so no
/// helper outlives its run.
pub fn exit_with_parent() {
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        while let Ok(n) = std::io::Read::read(&mut std::io::stdin(), &mut sink) {
            if n == 0 {
                break;
            }
        }
        std::process::exit(0);
    });
}

/// VmRSS of a process, from /proc.
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    parse_vm_rss(&status).with_context(|| format!("no VmRSS in /proc/{pid}/status"))
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The first line a command prints (stdout, else stderr), for versions.
pub fn first_line_of(program: &Path, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .ok()?;
    let text = if out.stdout.is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    String::from_utf8_lossy(&text)
        .lines()
        .next()
        .map(|l| l.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vm_rss() {
        let status = "Name:\tbench\nVmPeak:\t  2000 kB\nVmRSS:\t    1234 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(1234 * 1024));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
        assert!(rss_bytes(std::process::id()).unwrap() > 0);
    }
}

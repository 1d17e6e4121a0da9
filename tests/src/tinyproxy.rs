//! Debian's tinyproxy (scripts/proxy/install) as the forward proxy of an
//! on-prem network: a real proxy, not ours, so the agent's CONNECT client
//! is held to what a proxy in the field answers. It runs in a network
//! namespace of a [`NetLab`], with Basic credentials, logging each
//! connection to a file the test reads.

use std::net::{SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::netns::NetLab;

/// tinyproxy's usual port.
pub const PORT: u16 = 8888;
/// How long tinyproxy may take to listen.
const STARTUP: Duration = Duration::from_secs(10);

pub struct Tinyproxy {
    child: Option<Child>,
    pub addr: SocketAddrV4,
    log: PathBuf,
}

impl Tinyproxy {
    /// Starts tinyproxy in `member`'s namespace, listening on its address,
    /// requiring `user`/`password`; its files go to `dir`.
    pub async fn start(
        lab: &NetLab,
        member: &str,
        dir: &Path,
        user: &str,
        password: &str,
    ) -> Tinyproxy {
        let addr = SocketAddrV4::new(lab.ip(member), PORT);
        let log = dir.join("tinyproxy.log");
        let config = dir.join("tinyproxy.conf");
        // No Allow, Deny or ConnectPort lines: every client of the lab and
        // every port may tunnel; the credentials are the gate.
        std::fs::write(
            &config,
            format!(
                "Port {PORT}\nListen {}\nTimeout 30\nMaxClients 16\nLogFile {:?}\nLogLevel Connect\nBasicAuth {user} {password}\nDisableViaHeader Yes\n",
                addr.ip(),
                log.display().to_string()
            ),
        )
        .expect("tinyproxy config");
        let binary = ["/usr/bin/tinyproxy", "/usr/sbin/tinyproxy"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("tinyproxy is installed (scripts/proxy/install)");
        let child = lab
            .command(member, binary)
            .arg("-d")
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn tinyproxy");
        let proxy = Tinyproxy {
            child: Some(child),
            addr,
            log,
        };
        let started = Instant::now();
        while tokio::net::TcpStream::connect(SocketAddr::V4(addr))
            .await
            .is_err()
        {
            assert!(
                started.elapsed() < STARTUP,
                "tinyproxy did not listen on {addr}: {}",
                proxy.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        proxy
    }

    /// `http://ip:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What tinyproxy logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops it (SIGKILL: a proxy that is just gone) and waits.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        self.stop();
    }
}

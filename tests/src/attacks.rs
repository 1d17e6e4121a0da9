//! Connections that hold a server's descriptors without using them, for
//! the tests of issue 17: TLS connections that never speak HTTP/2, and HTTP
//! requests whose headers never end. Each comes from a loopback address of
//! its own choosing (127.0.0.2 and up), so per-source limits leave the
//! legitimate clients on 127.0.0.1 alone.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use crate::BrokerProcess;

/// The test process holds thousands of sockets: its soft descriptor limit
/// goes up to its hard one (the broker's is set by the builder). A shell
/// started from here inherits the hard limit, so it can tell it.
pub fn raise_own_descriptor_limit() {
    let hard = std::process::Command::new("sh")
        .args(["-c", "ulimit -Hn"])
        .output()
        .expect("ulimit -Hn");
    let hard = String::from_utf8_lossy(&hard.stdout).trim().to_owned();
    let status = std::process::Command::new("prlimit")
        .args([
            format!("--nofile={hard}:"),
            "--pid".to_owned(),
            std::process::id().to_string(),
        ])
        .status()
        .expect("run prlimit");
    assert!(
        status.success(),
        "cannot raise this process's descriptor limit"
    );
}

/// 127.0.0.`n`.
pub fn loopback(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// A TLS client that trusts the broker's CA and offers h2, as gRPC does.
pub fn tls_client(broker: &BrokerProcess) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&broker.ca_file).expect("CA file") {
        roots.add(cert.expect("CA certificate")).expect("CA");
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    TlsConnector::from(Arc::new(config))
}

/// What became of one connection of an attack.
#[derive(Debug, Clone, Copy)]
pub struct Held {
    /// It got past the TLS handshake (TLS) or sent its half request (HTTP).
    pub established: bool,
    /// From the start of the attack to the server closing it; `None` if it
    /// was still open after the wait.
    pub closed_after: Option<Duration>,
    /// How long the server kept it open once established.
    pub held_for: Duration,
}

/// Reads until the server closes `stream` or `wait` passes.
async fn await_close(stream: &mut (impl AsyncRead + Unpin), wait: Duration) -> bool {
    let mut buf = [0u8; 512];
    tokio::time::timeout(wait, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// A connection from `source` to the gRPC port `to` that finishes its TLS
/// handshake and never sends a byte of HTTP/2; waits up to `wait` for the
/// broker to close it.
pub async fn idle_tls(
    source: IpAddr,
    to: SocketAddr,
    tls: TlsConnector,
    start: Instant,
    wait: Duration,
) -> Held {
    let refused = |opened: Instant| Held {
        established: false,
        closed_after: Some(start.elapsed()),
        held_for: opened.elapsed(),
    };
    let opened = Instant::now();
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(source, 0))
        .expect("bind the attacker's address");
    let Ok(tcp) = socket.connect(to).await else {
        return refused(opened);
    };
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let Ok(Ok(mut stream)) = tokio::time::timeout(wait, tls.connect(name, tcp)).await else {
        return refused(opened);
    };
    let established = Instant::now();
    let closed = await_close(&mut stream, wait).await;
    Held {
        established: true,
        closed_after: closed.then(|| start.elapsed()),
        held_for: established.elapsed(),
    }
}

/// A plain-HTTP connection from `source` to `to` that sends a request line
/// and some headers and never finishes them; waits up to `wait` for the
/// server to close it.
pub async fn half_sent_http(
    source: IpAddr,
    to: SocketAddr,
    start: Instant,
    wait: Duration,
) -> Held {
    let opened = Instant::now();
    let refused = || Held {
        established: false,
        closed_after: Some(start.elapsed()),
        held_for: opened.elapsed(),
    };
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(source, 0))
        .expect("bind the attacker's address");
    let Ok(mut stream) = socket.connect(to).await else {
        return refused();
    };
    let head = b"GET /readyz HTTP/1.1\r\nHost: relay\r\nUser-Agent: slow\r\nX-Never: ";
    if stream.write_all(head).await.is_err() {
        return refused();
    }
    let closed = await_close(&mut stream, wait).await;
    Held {
        established: true,
        closed_after: closed.then(|| start.elapsed()),
        held_for: opened.elapsed(),
    }
}

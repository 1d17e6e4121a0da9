//! The gRPC listener: a socket with a deep accept queue, an accept loop that
//! takes connections off it as soon as they arrive, and a TLS handshake per
//! connection as a task of its own. Finished handshakes come out as a
//! stream for tonic, which serves HTTP/2 on them.
//!
//! This is what lets a node absorb the reconnect storm after a restart, when
//! every agent dials within the same second. tonic's own loop takes one
//! connection per turn of the runtime behind a listen queue of 1,024, so
//! under a storm the kernel drops SYNs and agents sit out TCP
//! retransmissions (1, 3, 7 s) and then their dial timeout. And a handshake
//! is two steps (the ClientHello, answered with the key exchange and the
//! certificate signature; then the client's Finished): with every handshake
//! started at once, the second steps queue behind all the first ones and
//! none finishes until all have started, so beyond what the CPU does within
//! `tls_handshake_timeout` the node would finish none. Here at most
//! `max_concurrent_handshakes` are past their ClientHello at once, oldest
//! first, and the others wait their turn (within their timeout).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::server::Acceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::Stream;
use tokio_util::sync::WaitForCancellationFutureOwned;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tracing::{debug, warn};

use crate::ingress::{Conn, ConnInfo, Connections};

/// Handshaken connections waiting for tonic to take them.
const READY_QUEUE: usize = 1024;
/// After an accept error that is not about one connection (descriptors
/// exhausted), how long the loop waits before it tries again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// How long a handshake keeps its slot while waiting for the client's
/// Finished: a client that answers slowly (or never) lets the next one in.
const SLOT_HOLD: Duration = Duration::from_secs(1);

/// How the listener treats each connection.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// From accept to the end of the TLS handshake, waiting included.
    pub handshake_timeout: Duration,
    /// Handshakes past their ClientHello at once.
    pub max_handshakes: usize,
    /// TCP keepalive idle time of accepted connections.
    pub tcp_keepalive: Duration,
}

/// Binds `addr` with an accept queue of `backlog` connections (the kernel
/// caps it at `net.core.somaxconn`).
pub fn bind(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As std and tokio do: a restarted node can listen again at once.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// A TLS connection, handshake done, with the deadlines of its
/// [`Conn`]: HTTP/2 reads through it, so when a deadline passes (or the
/// connection is evicted) the next read fails and hyper closes it. Boxed,
/// so that tonic's task for the connection stays small.
pub struct TlsConnection(Box<Inner>);

struct Inner {
    stream: TlsStream<TcpStream>,
    conn: Arc<Conn>,
    /// When the connection was handed to HTTP/2.
    start: tokio::time::Instant,
    check: Pin<Box<tokio::time::Sleep>>,
    evicted: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl TlsConnection {
    fn new(stream: TlsStream<TcpStream>, conn: Arc<Conn>) -> TlsConnection {
        let start = tokio::time::Instant::now();
        TlsConnection(Box::new(Inner {
            stream,
            check: Box::pin(tokio::time::sleep_until(
                start + conn.first_request_timeout(),
            )),
            evicted: Box::pin(conn.closed()),
            conn,
            start,
        }))
    }
}

impl Connected for TlsConnection {
    type ConnectInfo = ConnInfo;

    /// What tonic gives a plain TCP connection (`Request::remote_addr`),
    /// and the connection's state for the ingress layer.
    fn connect_info(&self) -> ConnInfo {
        let tcp = self.0.stream.get_ref().0;
        ConnInfo {
            tcp: TcpConnectInfo {
                local_addr: tcp.local_addr().ok(),
                remote_addr: tcp.peer_addr().ok(),
            },
            conn: Arc::clone(&self.0.conn),
        }
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self.0;
        if this.evicted.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "evicted: the descriptor budget is reached",
            )));
        }
        if let Poll::Ready(read) = Pin::new(&mut this.stream).poll_read(cx, buf) {
            return Poll::Ready(read);
        }
        // Nothing to read: is the connection past a deadline? The verdict
        // is taken now, not only when the timer fires: a call that began
        // since brings the next look closer than the first-request deadline
        // the timer was set to. Only an earlier deadline moves the timer
        // (one that is later finds the timer firing early and looking again),
        // so a busy connection does not touch the timer wheel on each read.
        // A verdict of Ok is always in the future, so the loop ends.
        loop {
            match this.conn.verdict(this.start, tokio::time::Instant::now()) {
                Ok(next) => {
                    if next < this.check.deadline() || this.check.is_elapsed() {
                        this.check.as_mut().reset(next);
                    }
                    if this.check.as_mut().poll(cx).is_pending() {
                        break;
                    }
                }
                Err(reason) => {
                    this.conn.count_closed(reason);
                    debug!(peer = %this.conn.peer(), reason = reason.label(), "connection closed");
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        reason.label(),
                    )));
                }
            }
        }
        Poll::Pending
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0.stream).poll_shutdown(cx)
    }
}

/// TLS connections, handshake done, in the order they finished it.
pub struct TlsIncoming {
    ready: mpsc::Receiver<TlsConnection>,
}

impl Stream for TlsIncoming {
    type Item = io::Result<TlsConnection>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.ready.poll_recv(cx).map(|next| next.map(Ok))
    }
}

/// Starts accepting on `listener`. The listener closes when the returned
/// stream is dropped (tonic drops it when it stops serving).
pub fn serve_tls(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    settings: Settings,
    connections: Arc<Connections>,
) -> TlsIncoming {
    let (tx, ready) = mpsc::channel(READY_QUEUE);
    tokio::spawn(accept_loop(listener, tls, settings, connections, tx));
    TlsIncoming { ready }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    settings: Settings,
    connections: Arc<Connections>,
    ready: mpsc::Sender<TlsConnection>,
) {
    let keepalive = socket2::TcpKeepalive::new().with_time(settings.tcp_keepalive);
    let slots = Arc::new(Semaphore::new(settings.max_handshakes));
    let mut warned: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            _ = ready.closed() => return,
            accepted = async {
                // At the descriptor budget with nobody to evict, new
                // connections wait in the kernel's queue.
                connections.room().await;
                listener.accept().await
            } => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                // Refused: dropped, so closed at once.
                let Some(conn) = connections.admit(peer.ip()) else {
                    continue;
                };
                if let Err(e) = stream.set_nodelay(true) {
                    debug!(error = %e, "cannot set TCP_NODELAY");
                }
                if let Err(e) = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive) {
                    debug!(error = %e, "cannot set TCP keepalive");
                }
                tokio::spawn(handshake(
                    stream,
                    conn,
                    Arc::clone(&tls),
                    settings.handshake_timeout,
                    Arc::clone(&slots),
                    ready.clone(),
                ));
            }
            // The peer gave up before the connection was taken.
            Err(e) if is_per_connection(&e) => debug!(error = %e, "accept"),
            Err(e) => {
                // Descriptors or memory exhausted: the kernel's queue holds
                // the connections meanwhile.
                if warned.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
                    warn!(error = %e, "cannot accept connections; retrying");
                    warned = Some(Instant::now());
                }
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
        }
    }
}

fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
    )
}

async fn handshake(
    stream: TcpStream,
    conn: Arc<Conn>,
    tls: Arc<ServerConfig>,
    timeout: Duration,
    slots: Arc<Semaphore>,
    ready: mpsc::Sender<TlsConnection>,
) {
    let handshake = async {
        // Reading the ClientHello costs nothing: a client that sends
        // nothing holds no slot.
        let start = LazyConfigAcceptor::new(Acceptor::default(), stream).await?;
        // The semaphore is fair: oldest first.
        let Ok(slot) = slots.acquire().await else {
            return Err(io::Error::other("the listener stopped"));
        };
        // The key exchange and the signature happen here, then the answer
        // goes out and the client's Finished is awaited.
        let mut finish = pin!(start.into_stream(tls));
        tokio::select! {
            done = &mut finish => done,
            _ = tokio::time::sleep(SLOT_HOLD) => {
                drop(slot);
                finish.await
            }
        }
    };
    let evicted = conn.closed();
    let handshake = async {
        tokio::select! {
            done = handshake => done,
            _ = evicted => Err(io::Error::other("evicted: the descriptor budget is reached")),
        }
    };
    match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok(stream)) => {
            // Fails only when the server has stopped.
            let _ = ready.send(TlsConnection::new(stream, conn)).await;
        }
        Ok(Err(e)) => debug!(error = %e, "TLS handshake failed"),
        Err(_) => debug!(?timeout, "TLS handshake timed out"),
    }
}

#[cfg(test)]
mod tests {
    use tokio_rustls::TlsConnector;
    use tokio_rustls::rustls::pki_types::pem::PemObject as _;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};
    use tokio_stream::StreamExt as _;

    use super::*;

    const WAIT: Duration = Duration::from_secs(5);

    /// With a single handshake slot, a connection that never sends its
    /// ClientHello does not keep the next client out; the connection that
    /// comes out speaks h2 and carries the client's address.
    #[tokio::test]
    async fn a_silent_connection_holds_no_handshake_slot() {
        let dir = tempfile::tempdir().unwrap();
        let pki = crate::tls::generate_dev_pki(dir.path(), &["127.0.0.1".into()]).unwrap();
        let config = crate::tls::server_config(&pki.server_cert, &pki.server_key).unwrap();
        let listener = bind("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let addr = listener.local_addr().unwrap();
        let settings = Settings {
            handshake_timeout: WAIT * 2,
            max_handshakes: 1,
            tcp_keepalive: Duration::from_secs(30),
        };
        let connections = Connections::new(
            crate::ingress::connections::Settings {
                first_request_timeout: WAIT * 2,
                unauthenticated_idle_timeout: WAIT * 2,
                idle_timeout: WAIT * 2,
                unauthenticated_per_source: 16,
                budget: 16,
            },
            Arc::new(crate::metrics::Metrics::new()),
        );
        let mut incoming = serve_tls(listener, config, settings, connections);

        let _silent = TcpStream::connect(addr).await.unwrap();
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&pki.ca_cert).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = vec![b"h2".to_vec()];
        let tcp = TcpStream::connect(addr).await.unwrap();
        let client_addr = tcp.local_addr().unwrap();
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let tls = tokio::time::timeout(
            WAIT,
            TlsConnector::from(Arc::new(client)).connect(name, tcp),
        )
        .await
        .expect("the handshake waited for the silent connection")
        .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));

        let served = tokio::time::timeout(WAIT, incoming.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(served.connect_info().tcp.remote_addr, Some(client_addr));
    }
}

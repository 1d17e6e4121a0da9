//! A minimal HTTP/1.1 CONNECT proxy for tests, standing in for the forward
//! proxy of an on-prem network: optional Basic credentials, loopback targets
//! only, and a record of what it tunnelled and whom it refused.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::{CancellationToken, DropGuard};

/// The longest request head accepted.
pub const MAX_HEAD: usize = 8 * 1024;
/// How long a client may take to send its request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting to the target may take.
const TARGET_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Record {
    tunnels: Vec<String>,
    refused_auth: usize,
}

struct Shared {
    /// `base64(user:pass)` expected in `Proxy-Authorization: Basic`.
    expected: Option<String>,
    record: Mutex<Record>,
}

/// A CONNECT proxy on `127.0.0.1:0`; dropping it stops the listener and
/// closes every tunnel.
pub struct ConnectProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    _stop: DropGuard,
}

impl ConnectProxy {
    /// Starts the proxy; with `credentials`, every request must carry them.
    pub async fn start(credentials: Option<(String, String)>) -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind connect proxy");
        let addr = listener.local_addr().expect("connect proxy address");
        let shared = Arc::new(Shared {
            expected: credentials.map(|(user, pass)| STANDARD.encode(format!("{user}:{pass}"))),
            record: Mutex::new(Record::default()),
        });
        let stop = CancellationToken::new();
        tokio::spawn({
            let shared = shared.clone();
            let stop = stop.clone();
            async move {
                loop {
                    let client = tokio::select! {
                        accepted = listener.accept() => match accepted {
                            Ok((client, _)) => client,
                            Err(_) => continue,
                        },
                        _ = stop.cancelled() => return,
                    };
                    let shared = shared.clone();
                    let stop = stop.clone();
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = serve(client, &shared) => {}
                            _ = stop.cancelled() => {}
                        }
                    });
                }
            }
        });
        ConnectProxy {
            addr,
            shared,
            _stop: stop.drop_guard(),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The `host:port` targets tunnelled so far, in order.
    pub fn tunnels(&self) -> Vec<String> {
        self.shared.record.lock().unwrap().tunnels.clone()
    }

    /// How many requests were answered 407.
    pub fn refused_auth(&self) -> usize {
        self.shared.record.lock().unwrap().refused_auth
    }
}

/// What to answer a request that gets no tunnel.
enum Refusal {
    BadRequest,
    MethodNotAllowed,
    AuthRequired,
    Forbidden,
    BadGateway,
}

impl Refusal {
    fn response(&self) -> &'static str {
        match self {
            Refusal::BadRequest => {
                "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            }
            Refusal::MethodNotAllowed => {
                "HTTP/1.1 405 Method Not Allowed\r\nAllow: CONNECT\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            }
            Refusal::AuthRequired => {
                "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            }
            Refusal::Forbidden => {
                "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            }
            Refusal::BadGateway => {
                "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            }
        }
    }
}

async fn serve(mut client: TcpStream, shared: &Shared) {
    let Ok(Some((head, rest))) = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut client)).await
    else {
        return;
    };
    let (target, mut upstream) = match open(&head, shared).await {
        Ok(opened) => opened,
        Err(refusal) => {
            if matches!(refusal, Refusal::AuthRequired) {
                shared.record.lock().unwrap().refused_auth += 1;
            }
            let _ = client.write_all(refusal.response().as_bytes()).await;
            let _ = client.shutdown().await;
            return;
        }
    };
    if client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    shared.record.lock().unwrap().tunnels.push(target);
    if !rest.is_empty() && upstream.write_all(&rest).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

/// The request head as text, and whatever the client sent after it.
async fn read_head(client: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = client.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(pos + 4);
            return Some((String::from_utf8(buf).ok()?, rest));
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
    }
}

/// Checks the request and connects to its target.
async fn open(head: &str, shared: &Shared) -> Result<(String, TcpStream), Refusal> {
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(Refusal::BadRequest);
    };
    if !version.starts_with("HTTP/1.") {
        return Err(Refusal::BadRequest);
    }
    if method != "CONNECT" {
        return Err(Refusal::MethodNotAllowed);
    }
    if let Some(expected) = &shared.expected {
        let given = lines
            .filter_map(|l| l.split_once(':'))
            .find_map(|(name, value)| {
                name.trim()
                    .eq_ignore_ascii_case("proxy-authorization")
                    .then(|| value.trim())
            });
        let ok = given
            .and_then(|v| v.strip_prefix("Basic "))
            .is_some_and(|v| v.trim() == expected);
        if !ok {
            return Err(Refusal::AuthRequired);
        }
    }
    let (host, port) = target.rsplit_once(':').ok_or(Refusal::BadRequest)?;
    let port: u16 = port.parse().map_err(|_| Refusal::BadRequest)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return Err(Refusal::Forbidden);
    }
    let upstream = tokio::time::timeout(TARGET_TIMEOUT, TcpStream::connect((host, port)))
        .await
        .map_err(|_| Refusal::BadGateway)?
        .map_err(|_| Refusal::BadGateway)?;
    let _ = upstream.set_nodelay(true);
    Ok((target.to_owned(), upstream))
}

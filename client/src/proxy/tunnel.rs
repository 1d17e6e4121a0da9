//! [`ProxyConnector`]: the tonic connector that reaches the broker through
//! a CONNECT tunnel. The CONNECT exchange itself is hyper-util's `Tunnel`;
//! around it are the steps `doctor` also runs one by one (resolve the
//! proxy, dial it, open the tunnel), so the pre-flight and the agent's
//! session cannot take different paths.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderValue, Uri};
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower::Service;
use zeroize::Zeroizing;

use super::error::ProxyError;
use super::record::Recorded;
use super::route::{Auth, ResolvedProxy};
use super::{MAX_RESPONSE_HEAD, PROXY_ANSWER_TIMEOUT, PROXY_DIAL_TIMEOUT, PROXY_RESOLVE_TIMEOUT};

/// How much of the proxy's status line an error message quotes.
const MAX_QUOTED_STATUS: usize = 200;

/// The stream through the tunnel, ready for TLS to the broker.
pub type TunnelStream = TokioIo<Recorded<TcpStream>>;

/// An open tunnel and the status line the proxy answered with.
#[derive(Debug)]
pub struct Opened {
    pub stream: TunnelStream,
    pub answer: String,
}

/// A tonic connector that opens a CONNECT tunnel to the requested URI's
/// host and port; tonic then runs the endpoint's TLS over the tunnel.
#[derive(Debug, Clone)]
pub struct ProxyConnector {
    proxy: Arc<ResolvedProxy>,
}

impl ProxyConnector {
    pub fn new(proxy: ResolvedProxy) -> ProxyConnector {
        ProxyConnector {
            proxy: Arc::new(proxy),
        }
    }

    pub fn proxy(&self) -> &ResolvedProxy {
        &self.proxy
    }

    /// All three steps: what a connection to the broker does.
    pub async fn tunnel(&self, broker: &Uri) -> Result<TunnelStream, ProxyError> {
        let addrs = self.resolve().await?;
        let stream = self.dial(&addrs).await?;
        Ok(self.open(stream, broker).await?.stream)
    }

    /// Step 1: the proxy's addresses.
    pub async fn resolve(&self) -> Result<Vec<SocketAddr>, ProxyError> {
        let name = &self.proxy.name;
        let unresolvable = |e| ProxyError::Unresolvable {
            proxy: name.clone(),
            source: Arc::new(e),
        };
        let addrs: Vec<SocketAddr> = tokio::time::timeout(
            PROXY_RESOLVE_TIMEOUT,
            tokio::net::lookup_host(name.address.as_str()),
        )
        .await
        .map_err(|_| unresolvable(timed_out("no DNS answer", PROXY_RESOLVE_TIMEOUT)))?
        .map_err(unresolvable)?
        .collect();
        if addrs.is_empty() {
            return Err(unresolvable(std::io::Error::other("no addresses")));
        }
        Ok(addrs)
    }

    /// Step 2: TCP to the first address that answers.
    pub async fn dial(&self, addrs: &[SocketAddr]) -> Result<TcpStream, ProxyError> {
        let attempt = async {
            let mut last = std::io::Error::other("no addresses");
            for addr in addrs {
                match TcpStream::connect(addr).await {
                    Ok(stream) => return Ok(stream),
                    Err(e) => last = e,
                }
            }
            Err(last)
        };
        let stream = tokio::time::timeout(PROXY_DIAL_TIMEOUT, attempt)
            .await
            .map_err(|_| timed_out("connection timed out", PROXY_DIAL_TIMEOUT))
            .and_then(|r| r)
            .map_err(|e| ProxyError::Unreachable {
                proxy: self.proxy.name.clone(),
                source: Arc::new(e),
            })?;
        // Small gRPC frames must not wait for Nagle; tonic's own setting
        // applies only to the connector it builds itself.
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// Step 3: CONNECT to the broker's `host:port` over `stream`.
    pub async fn open(&self, stream: TcpStream, broker: &Uri) -> Result<Opened, ProxyError> {
        let target = connect_target(broker)?;
        let (recorded, recording) = Recorded::new(stream);
        let dialed = Dialed(Arc::new(Mutex::new(Some(TokioIo::new(recorded)))));
        let mut tunnel = Tunnel::new(self.proxy.uri.clone(), dialed);
        if let Some(auth) = self.authorization().await? {
            tunnel = tunnel.with_auth(auth);
        }
        let exchange = async {
            std::future::poll_fn(|cx| tunnel.poll_ready(cx)).await?;
            tunnel.call(broker.clone()).await
        };
        let answer = tokio::time::timeout(PROXY_ANSWER_TIMEOUT, exchange)
            .await
            .map_err(|_| ProxyError::NoAnswer {
                proxy: self.proxy.name.clone(),
                timeout: PROXY_ANSWER_TIMEOUT,
            })?;
        let head = recording.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match answer {
            Ok(stream) => {
                let mut inner = stream.into_inner();
                inner.stop_recording();
                let answer = self.check_success(&head)?;
                Ok(Opened {
                    stream: TokioIo::new(inner),
                    answer,
                })
            }
            Err(err) => Err(self.classify(&err, &head, &target)),
        }
    }

    /// `Basic base64(user:password)`, with a table's password read now so
    /// that a rotated password needs no restart. Our copies are zeroized;
    /// the header value handed to hyper-util is not (it is `Bytes`), but it
    /// is marked sensitive and dropped with this connection attempt.
    async fn authorization(&self) -> Result<Option<HeaderValue>, ProxyError> {
        let (username, path) = match &self.proxy.auth {
            Auth::None => return Ok(None),
            Auth::Header { value, .. } => return Ok(Some(value.clone())),
            Auth::File { username, path } => (username, path),
        };
        let text = Zeroizing::new(tokio::fs::read_to_string(path).await.map_err(|e| {
            ProxyError::PasswordFile {
                path: path.clone(),
                source: Arc::new(e),
            }
        })?);
        let password = text.trim_end_matches(['\n', '\r']);
        // Sized up front: a reallocation would leave a copy of the
        // credentials behind in freed memory.
        let mut pair = Zeroizing::new(String::with_capacity(username.len() + 1 + password.len()));
        pair.push_str(username);
        pair.push(':');
        pair.push_str(password);
        let mut header = Zeroizing::new(String::with_capacity(8 + pair.len() * 4 / 3 + 4));
        header.push_str("Basic ");
        STANDARD.encode_string(pair.as_bytes(), &mut header);
        let mut value = HeaderValue::from_str(&header)
            .map_err(|_| ProxyError::Config("the proxy credentials cannot form a header"))?;
        value.set_sensitive(true);
        Ok(Some(value))
    }

    /// The status line of a 2xx answer; hyper-util drops anything after
    /// the head, so bytes there would corrupt the TLS that follows.
    fn check_success(&self, head: &[u8]) -> Result<String, ProxyError> {
        let end = head_end(head).unwrap_or(head.len());
        if end < head.len() {
            return Err(self.malformed("data after a successful CONNECT answer"));
        }
        Ok(status_line(head))
    }

    /// hyper-util says only "unsuccessful" or "auth required"; what the
    /// proxy actually sent says more.
    fn classify(
        &self,
        err: &(dyn std::error::Error + 'static),
        head: &[u8],
        target: &str,
    ) -> ProxyError {
        let proxy = self.proxy.name.clone();
        if let Some(io) = io_source(err) {
            return ProxyError::Broken {
                proxy,
                source: Arc::new(std::io::Error::new(io.kind(), io.to_string())),
            };
        }
        if head_end(head).is_none() {
            return self.malformed(if head.len() >= MAX_RESPONSE_HEAD {
                "response head longer than 8 KiB"
            } else {
                "connection closed before the end of the response head"
            });
        }
        let line = status_line(head);
        if !line.starts_with("HTTP/1.") {
            return self.malformed("not an HTTP/1.x response");
        }
        match status_code(&line) {
            Some(401 | 407) => match self.proxy.auth.username() {
                Some(username) => ProxyError::CredentialsRefused {
                    proxy,
                    username: username.to_owned(),
                    status_line: line,
                },
                None => ProxyError::CredentialsRequired {
                    proxy,
                    status_line: line,
                },
            },
            Some(_) => ProxyError::TunnelRefused {
                proxy,
                target: target.to_owned(),
                status_line: line,
            },
            None => self.malformed("no status code in the status line"),
        }
    }

    fn malformed(&self, problem: &'static str) -> ProxyError {
        ProxyError::Malformed {
            proxy: self.proxy.name.clone(),
            problem,
        }
    }
}

fn timed_out(what: &str, after: std::time::Duration) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("{what} within {}s", after.as_secs()),
    )
}

fn io_source<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    let mut source = err.source();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        source = e.source();
    }
    None
}

/// The offset just past the blank line ending the head.
fn head_end(head: &[u8]) -> Option<usize> {
    head.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
}

/// The first line, printable and bounded, for quoting.
fn status_line(head: &[u8]) -> String {
    let end = head
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(head.len());
    String::from_utf8_lossy(&head[..end])
        .chars()
        .take(MAX_QUOTED_STATUS)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// The code of `HTTP/1.x SSS reason`.
fn status_code(status_line: &str) -> Option<u16> {
    let code = status_line.split(' ').nth(1)?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

/// `host:port` for a CONNECT request to `uri`, as hyper-util sends it.
pub(crate) fn connect_target(uri: &Uri) -> Result<String, ProxyError> {
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| ProxyError::NoTarget(uri.to_string()))?;
    Ok(format!("{host}:{}", uri.port_u16().unwrap_or(443)))
}

/// The already dialed connection, handed to `Tunnel` as its "connector"
/// so that dialing stays a separate, separately reported step.
#[derive(Clone)]
struct Dialed(Arc<Mutex<Option<TokioIo<Recorded<TcpStream>>>>>);

impl Service<Uri> for Dialed {
    type Response = TokioIo<Recorded<TcpStream>>;
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<Self::Response, std::io::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), std::io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _proxy: Uri) -> Self::Future {
        let taken = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        std::future::ready(taken.ok_or_else(|| std::io::Error::other("connection already used")))
    }
}

impl Service<Uri> for ProxyConnector {
    type Response = TunnelStream;
    type Error = ProxyError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ProxyError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connector = self.clone();
        Box::pin(async move { connector.tunnel(&uri).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::route::{self, Route};
    use crate::proxy::tests::config;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn connector(config: &crate::proxy::ProxyConfig) -> ProxyConnector {
        let broker: Uri = "https://broker:443".parse().unwrap();
        match route::resolve(Some(config), false, &broker).unwrap() {
            Route::Proxy(p) => ProxyConnector::new(p),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn connect_targets_keep_the_port() {
        let t = |s: &str| connect_target(&s.parse().unwrap()).unwrap();
        assert_eq!(t("https://broker.example"), "broker.example:443");
        assert_eq!(t("https://127.0.0.1:8443"), "127.0.0.1:8443");
        assert_eq!(t("https://[::1]:8443"), "[::1]:8443");
    }

    #[test]
    fn status_codes_are_parsed_strictly() {
        assert_eq!(
            status_code("HTTP/1.1 200 Connection established"),
            Some(200)
        );
        assert_eq!(status_code("HTTP/1.0 407"), Some(407));
        assert_eq!(status_code("HTTP/1.1 20 short"), None);
        assert_eq!(status_code("HTTP/1.1"), None);
    }

    /// A proxy that answers every request with `answer`.
    async fn scripted_proxy(answer: &'static [u8]) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf).await;
                let _ = stream.write_all(answer).await;
            }
        });
        url
    }

    #[tokio::test]
    async fn odd_answers_are_named() {
        let cases: [(&[u8], &str); 6] = [
            (
                b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n",
                "refused the tunnel to broker:443 with status line \"HTTP/1.1 502 Bad Gateway\"",
            ),
            (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP/1.x response"),
            (
                b"HTTP/1.1 200 OK\r\n\r\nearly",
                "data after a successful CONNECT answer",
            ),
            (b"HTTP/1.1 200 OK\r\n", "connection closed before the end"),
            (
                b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n",
                "requires credentials (it answered \"HTTP/1.1 407 Proxy Authentication Required\"): set username and password_file in [proxy]",
            ),
            (b"HTTP/1.1 2000 OK\r\n\r\n", "no status code"),
        ];
        for (answer, expected) in cases {
            let mut c = config(&scripted_proxy(answer).await);
            c.username = None;
            c.password_file = None;
            let err = connector(&c)
                .tunnel(&"https://broker:443".parse().unwrap())
                .await
                .unwrap_err();
            assert!(err.to_string().contains(expected), "{err}");
            assert!(err.to_string().contains("(from [proxy])"), "{err}");
        }
    }

    #[tokio::test]
    async fn a_refused_password_names_the_user_not_the_password() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "hunter2\n").unwrap();
        // tinyproxy answers wrong credentials with 401, not 407.
        for answer in [
            &b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n"[..],
            &b"HTTP/1.0 401 Unauthorized\r\n\r\n"[..],
        ] {
            let mut c = config(&scripted_proxy(answer).await);
            c.password_file = Some(file.clone());
            let err = connector(&c)
                .tunnel(&"https://broker:443".parse().unwrap())
                .await
                .unwrap_err();
            let text = err.with_sources();
            assert!(
                text.contains("refused our credentials for user \"svc\" (it answered \"HTTP/1."),
                "{text}"
            );
            assert!(!text.contains("hunter2") && !format!("{err:?}").contains("hunter2"));
        }
    }

    #[tokio::test]
    async fn a_missing_password_file_is_named_before_the_exchange() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = config(&format!("http://{}", listener.local_addr().unwrap()));
        let err = connector(&c)
            .tunnel(&"https://broker:443".parse().unwrap())
            .await
            .unwrap_err();
        assert!(
            err.with_sources()
                .starts_with("cannot read the proxy password file /nonexistent/proxy.password"),
            "{err}"
        );
    }
}

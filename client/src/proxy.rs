//! Reaching the broker through an HTTP CONNECT proxy, for on-prem networks
//! whose only way out is a forward proxy. The proxy sees a tunnel to
//! `host:port` and nothing else: TLS to the broker runs end to end through
//! it, verified exactly as without a proxy.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::Uri;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zeroize::Zeroizing;

/// How long dialing the proxy may take. This and [`PROXY_ANSWER_TIMEOUT`]
/// add up to less than [`crate::connect::CONNECT_TIMEOUT`], so a silent
/// proxy is reported as such rather than as a generic broker timeout.
pub const PROXY_DIAL_TIMEOUT: Duration = Duration::from_secs(4);
/// How long the proxy may take to answer the CONNECT request.
pub const PROXY_ANSWER_TIMEOUT: Duration = Duration::from_secs(4);
/// The longest response head accepted from the proxy.
pub const MAX_RESPONSE_HEAD: usize = 8 * 1024;
/// How much of the proxy's status line an error message quotes.
const MAX_QUOTED_STATUS: usize = 200;

/// The `[proxy]` table of the agent's configuration.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// `http://host:port`. The connection to the proxy itself is plain
    /// HTTP; what goes through the tunnel is TLS to the broker.
    pub url: String,
    /// User for `Proxy-Authorization: Basic`; needs `password_file`.
    #[serde(default)]
    pub username: Option<String>,
    /// A file (mode 0600) holding the proxy password, read at each connect
    /// so that a rotated password needs no restart.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

// Manual, because a url with `user:password@` in it (refused by
// `validate`, but Debug may run before that) must not leak into logs.
impl fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyConfig")
            .field("url", &masked_url(&self.url))
            .field("username", &self.username)
            .field("password_file", &self.password_file)
            .finish()
    }
}

/// The url with any userinfo replaced by `***`.
fn masked_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) if scheme.is_empty() => format!("***@{}", &rest[at + 1..]),
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

impl ProxyConfig {
    /// Checks the settings without touching the network or the password file.
    pub fn validate(&self) -> Result<(), &'static str> {
        self.address().map(|_| ())?;
        match (&self.username, &self.password_file) {
            (Some(_), None) => Err("username needs password_file"),
            (None, Some(_)) => Err("password_file needs username"),
            (Some(user), Some(_)) if user.contains(':') => Err("username must not contain ':'"),
            _ => Ok(()),
        }
    }

    /// `host:port` of the proxy.
    fn address(&self) -> Result<String, &'static str> {
        if self.url.starts_with("https://") {
            return Err(
                "url must be http://host:port: https:// proxies are not supported (TLS to the broker stays end to end through the tunnel either way)",
            );
        }
        if !self.url.starts_with("http://") {
            return Err("url must be http://host:port");
        }
        let uri: Uri = self
            .url
            .parse()
            .map_err(|_| "url must be http://host:port")?;
        let authority = uri.authority().ok_or("url must be http://host:port")?;
        if authority.as_str().contains('@') {
            return Err("url must not hold credentials: set username and password_file");
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err("url must be http://host:port, without a path");
        }
        let port = uri.port_u16().unwrap_or(80);
        Ok(format!("{}:{port}", authority.host()))
    }
}

/// Why the tunnel through the proxy could not be opened. No variant holds
/// the password.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProxyError {
    #[error("invalid proxy setting: {0}")]
    Config(&'static str),
    #[error("cannot read the proxy password file {path}")]
    PasswordFile {
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("cannot reach the proxy at {proxy}")]
    Unreachable {
        proxy: String,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("the connection to the proxy at {proxy} failed during the CONNECT exchange")]
    Broken {
        proxy: String,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error(
        "the proxy at {proxy} did not answer the CONNECT request within {}s",
        timeout.as_secs()
    )]
    NoAnswer { proxy: String, timeout: Duration },
    #[error(
        "the proxy at {proxy} requires credentials (407 Proxy Authentication Required): set username and password_file in [proxy]"
    )]
    CredentialsRequired { proxy: String },
    #[error(
        "the proxy at {proxy} refused our credentials (407 Proxy Authentication Required): check username and password_file"
    )]
    CredentialsRefused { proxy: String },
    #[error("the proxy at {proxy} refused the tunnel to {target} with status line {status_line:?}")]
    TunnelRefused {
        proxy: String,
        target: String,
        status_line: String,
    },
    #[error("malformed response from the proxy at {proxy}: {problem}")]
    Malformed {
        proxy: String,
        problem: &'static str,
    },
    #[error("broker address {0} has no host to tunnel to")]
    NoTarget(String),
}

impl ProxyError {
    /// The message with every source appended, for log lines that show
    /// only one Display.
    pub fn with_sources(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(err) = source {
            text.push_str(": ");
            text.push_str(&err.to_string());
            source = err.source();
        }
        text
    }
}

/// A tonic connector that opens a CONNECT tunnel to the requested URI's
/// host and port; tonic then runs the endpoint's TLS over the tunnel.
#[derive(Debug, Clone)]
pub struct ProxyConnector {
    config: Arc<ProxyConfig>,
    proxy: String,
}

impl ProxyConnector {
    pub fn new(config: ProxyConfig) -> Result<ProxyConnector, ProxyError> {
        config.validate().map_err(ProxyError::Config)?;
        let proxy = config.address().map_err(ProxyError::Config)?;
        Ok(ProxyConnector {
            config: Arc::new(config),
            proxy,
        })
    }

    /// Opens a tunnel to `target` (`host:port`) and returns the stream,
    /// positioned right after the proxy's answer.
    pub async fn tunnel(&self, target: &str) -> Result<TcpStream, ProxyError> {
        let authorization = self.authorization().await?;
        let proxy = &self.proxy;
        let mut stream = tokio::time::timeout(PROXY_DIAL_TIMEOUT, TcpStream::connect(proxy))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connection timed out"))
            .and_then(|r| r)
            .map_err(|e| ProxyError::Unreachable {
                proxy: proxy.clone(),
                source: Arc::new(e),
            })?;
        // Small gRPC frames must not wait for Nagle; tonic's own setting
        // applies only to the connector it builds itself.
        let _ = stream.set_nodelay(true);
        // Sized up front: a reallocation would leave a copy of the
        // credentials behind in freed memory.
        let auth_len = authorization.as_ref().map_or(0, |a| a.len());
        let mut request = Zeroizing::new(String::with_capacity(2 * target.len() + auth_len + 64));
        request.push_str(&format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"));
        if let Some(value) = &authorization {
            request.push_str("Proxy-Authorization: Basic ");
            request.push_str(value);
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        let broken = |e| ProxyError::Broken {
            proxy: proxy.clone(),
            source: Arc::new(e),
        };
        stream.write_all(request.as_bytes()).await.map_err(broken)?;
        let status_line = tokio::time::timeout(PROXY_ANSWER_TIMEOUT, self.read_head(&mut stream))
            .await
            .map_err(|_| ProxyError::NoAnswer {
                proxy: proxy.clone(),
                timeout: PROXY_ANSWER_TIMEOUT,
            })??;
        self.check_status(&status_line, target, authorization.is_some())?;
        Ok(stream)
    }

    /// `base64(user:password)`, with the password read now.
    async fn authorization(&self) -> Result<Option<Zeroizing<String>>, ProxyError> {
        let (Some(user), Some(path)) = (&self.config.username, &self.config.password_file) else {
            return Ok(None);
        };
        let text = Zeroizing::new(tokio::fs::read_to_string(path).await.map_err(|e| {
            ProxyError::PasswordFile {
                path: path.clone(),
                source: Arc::new(e),
            }
        })?);
        let mut pair = Zeroizing::new(String::with_capacity(user.len() + 1 + text.len()));
        pair.push_str(user);
        pair.push(':');
        pair.push_str(text.trim_end_matches(['\n', '\r']));
        Ok(Some(Zeroizing::new(STANDARD.encode(pair.as_bytes()))))
    }

    /// Reads the response head and returns its status line. Reads stop at
    /// the blank line: after a 2xx nothing else can have arrived, since TLS
    /// has the client speak first.
    async fn read_head(&self, stream: &mut TcpStream) -> Result<String, ProxyError> {
        let malformed = |problem| ProxyError::Malformed {
            proxy: self.proxy.clone(),
            problem,
        };
        let mut head = Vec::with_capacity(512);
        let mut buf = [0u8; 1024];
        let end = loop {
            let n = stream
                .read(&mut buf)
                .await
                .map_err(|e| ProxyError::Broken {
                    proxy: self.proxy.clone(),
                    source: Arc::new(e),
                })?;
            if n == 0 {
                return Err(malformed(
                    "connection closed before the end of the response head",
                ));
            }
            head.extend_from_slice(&buf[..n]);
            if let Some(pos) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos + 4;
            }
            if head.len() > MAX_RESPONSE_HEAD {
                return Err(malformed("response head longer than 8 KiB"));
            }
        };
        let line_end = head.windows(2).position(|w| w == b"\r\n").unwrap_or(end);
        let status_line = String::from_utf8_lossy(&head[..line_end])
            .chars()
            .take(MAX_QUOTED_STATUS)
            .map(|c| if c.is_control() { '?' } else { c })
            .collect::<String>();
        if !status_line.starts_with("HTTP/1.") {
            return Err(malformed("not an HTTP/1.x response"));
        }
        if end < head.len() && status_code(&status_line).is_some_and(|c| (200..300).contains(&c)) {
            return Err(malformed("data after a successful CONNECT answer"));
        }
        Ok(status_line)
    }

    fn check_status(
        &self,
        status_line: &str,
        target: &str,
        sent_credentials: bool,
    ) -> Result<(), ProxyError> {
        let proxy = self.proxy.clone();
        match status_code(status_line) {
            Some(200..=299) => Ok(()),
            Some(407) if sent_credentials => Err(ProxyError::CredentialsRefused { proxy }),
            Some(407) => Err(ProxyError::CredentialsRequired { proxy }),
            Some(_) => Err(ProxyError::TunnelRefused {
                proxy,
                target: target.to_owned(),
                status_line: status_line.to_owned(),
            }),
            None => Err(ProxyError::Malformed {
                proxy,
                problem: "no status code in the status line",
            }),
        }
    }
}

/// The code of `HTTP/1.x SSS reason`.
fn status_code(status_line: &str) -> Option<u16> {
    let code = status_line.split(' ').nth(1)?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

/// `host:port` for a CONNECT request to `uri`, brackets kept around IPv6.
fn connect_target(uri: &Uri) -> Result<String, ProxyError> {
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| ProxyError::NoTarget(uri.to_string()))?;
    let default_port = if uri.scheme_str() == Some("http") {
        80
    } else {
        443
    };
    let port = uri.port_u16().unwrap_or(default_port);
    if host.contains(':') && !host.starts_with('[') {
        Ok(format!("[{host}]:{port}"))
    } else {
        Ok(format!("{host}:{port}"))
    }
}

impl tower::Service<Uri> for ProxyConnector {
    type Response = TokioIo<TcpStream>;
    type Error = ProxyError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ProxyError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connector = self.clone();
        Box::pin(async move {
            let target = connect_target(&uri)?;
            connector.tunnel(&target).await.map(TokioIo::new)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> ProxyConfig {
        ProxyConfig {
            url: url.to_owned(),
            username: Some("svc".into()),
            password_file: Some("/nonexistent/proxy.password".into()),
        }
    }

    #[test]
    fn urls_are_checked() {
        assert_eq!(
            config("http://proxy.example:3128").address().unwrap(),
            "proxy.example:3128"
        );
        assert_eq!(
            config("http://proxy.example").address().unwrap(),
            "proxy.example:80"
        );
        assert_eq!(
            config("http://[::1]:3128/").address().unwrap(),
            "[::1]:3128"
        );
        assert!(
            config("https://proxy.example:3128")
                .validate()
                .unwrap_err()
                .contains("https:// proxies are not supported")
        );
        assert!(config("proxy.example:3128").validate().is_err());
        assert!(config("http://proxy.example:3128/path").validate().is_err());
        let mut half = config("http://p:1");
        half.password_file = None;
        assert!(half.validate().is_err());
    }

    #[test]
    fn credentials_in_the_url_are_refused_and_masked() {
        let c = config("http://svc:hunter2@proxy.example:3128");
        assert!(c.validate().unwrap_err().contains("credentials"));
        let debug = format!("{c:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("***@proxy.example:3128"), "{debug}");
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
        let cases: [(&[u8], &str); 4] = [
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
        ];
        for (answer, expected) in cases {
            let connector = ProxyConnector::new(ProxyConfig {
                url: scripted_proxy(answer).await,
                username: None,
                password_file: None,
            })
            .unwrap();
            let err = connector.tunnel("broker:443").await.unwrap_err();
            assert!(err.to_string().contains(expected), "{err}");
        }
    }

    #[tokio::test]
    async fn a_missing_password_file_is_named_without_the_network() {
        let connector = ProxyConnector::new(config("http://127.0.0.1:9")).unwrap();
        let err = connector.tunnel("broker:443").await.unwrap_err();
        assert!(
            err.with_sources()
                .starts_with("cannot read the proxy password file /nonexistent/proxy.password"),
            "{err}"
        );
    }
}

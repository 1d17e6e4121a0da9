//! Outbound connections to the broker: always TLS, verified against a
//! configured CA file or the system roots, directly or through an HTTP
//! CONNECT proxy ([`crate::proxy`]: the `[proxy]` table, or for callers
//! that opt in, `HTTPS_PROXY`/`NO_PROXY`). There is no switch that turns
//! verification off.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::proxy::{ProxyConfig, ProxyConnector, ProxyError, Route};

/// Interval of HTTP/2 keepalive pings: inside the 20-30 s band so idle
/// timeouts of middleboxes never see an idle connection, and a dead peer is
/// found within a minute.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Beyond the TCP connect: the TLS and HTTP/2 handshakes.
pub const HANDSHAKE_ALLOWANCE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("broker address {0:?} is not an https:// URL")]
    NotHttps(String),
    #[error("broker address {0:?} is invalid")]
    InvalidUri(String),
    #[error("cannot read the CA file {path}")]
    CaFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the broker at {url} did not complete the connection (TCP, TLS, HTTP/2) within {}",
        humantime::format_duration(*.after)
    )]
    Timeout { url: String, after: Duration },
    // The causes are in the Display (connection refused, certificate not
    // trusted, ...) because the agent logs this with `%err`, one level deep.
    #[error("cannot connect to the broker at {url}: {}", causes(source))]
    Transport {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    // The proxy's message is part of this Display, not only a source,
    // because the agent logs connect failures with `%err`, which shows one
    // level: "cannot reach the broker" must say what the proxy said.
    #[error("cannot connect to the broker at {url} through the proxy: {}", .cause.with_sources())]
    Proxy { url: String, cause: ProxyError },
}

/// Where the broker is and how to verify it.
#[derive(Debug, Clone)]
pub struct BrokerEndpoint {
    /// `https://host:port`.
    pub url: String,
    /// PEM CA bundle to trust instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// Name to verify in the certificate when it differs from the URL's host.
    pub tls_server_name: Option<String>,
    /// HTTP CONNECT proxy to tunnel through (the `[proxy]` table); when
    /// absent, see `proxy_from_env`.
    pub proxy: Option<ProxyConfig>,
    /// Without a `proxy`, take one from `HTTPS_PROXY`/`ALL_PROXY` and
    /// honour `NO_PROXY`. Off by default: a portal library should not
    /// change path because of its host's environment unless asked to.
    pub proxy_from_env: bool,
}

impl BrokerEndpoint {
    pub fn new(url: impl Into<String>, ca_file: Option<&Path>) -> BrokerEndpoint {
        BrokerEndpoint {
            url: url.into(),
            ca_file: ca_file.map(Path::to_owned),
            tls_server_name: None,
            proxy: None,
            proxy_from_env: false,
        }
    }

    pub fn with_proxy(mut self, proxy: ProxyConfig) -> Self {
        self.proxy = Some(proxy);
        self
    }

    pub fn with_proxy_from_env(mut self, from_env: bool) -> Self {
        self.proxy_from_env = from_env;
        self
    }

    /// The path connections take: direct, or which proxy and from which
    /// setting. Environment variables are read now, as at each connect.
    pub fn route(&self) -> Result<Route, ConnectError> {
        let uri: http::Uri = self
            .url
            .parse()
            .map_err(|_| ConnectError::InvalidUri(self.url.clone()))?;
        crate::proxy::route::resolve(self.proxy.as_ref(), self.proxy_from_env, &uri).map_err(
            |cause| ConnectError::Proxy {
                url: self.url.clone(),
                cause,
            },
        )
    }

    /// The tonic endpoint, TLS and keepalive configured, not yet connected.
    pub fn endpoint(&self) -> Result<Endpoint, ConnectError> {
        if !self.url.starts_with("https://") {
            return Err(ConnectError::NotHttps(self.url.clone()));
        }
        let mut tls = ClientTlsConfig::new();
        tls = match &self.ca_file {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|source| ConnectError::CaFile {
                    path: path.clone(),
                    source,
                })?;
                tls.ca_certificate(Certificate::from_pem(pem))
            }
            None => tls.with_native_roots(),
        };
        if let Some(name) = &self.tls_server_name {
            tls = tls.domain_name(name.clone());
        }
        let endpoint = Endpoint::from_shared(self.url.clone())
            .map_err(|_| ConnectError::InvalidUri(self.url.clone()))?
            .tls_config(tls)
            .map_err(|source| ConnectError::Transport {
                url: self.url.clone(),
                source,
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .tcp_nodelay(true);
        Ok(endpoint)
    }

    /// Connects now, so that a wrong address, certificate or proxy setting
    /// fails here. Through a proxy, tonic still applies the endpoint's TLS
    /// on top of the tunnel the connector returns.
    pub async fn connect(&self) -> Result<Channel, ConnectError> {
        self.connect_endpoint(self.endpoint()?).await
    }

    /// [`connect`](Self::connect) with other HTTP/2 keepalive settings (the
    /// agent's configuration may shorten them).
    pub async fn connect_with_keepalive(
        &self,
        interval: Duration,
        timeout: Duration,
    ) -> Result<Channel, ConnectError> {
        let endpoint = self
            .endpoint()?
            .http2_keep_alive_interval(interval)
            .keep_alive_timeout(timeout);
        self.connect_endpoint(endpoint).await
    }

    async fn connect_endpoint(&self, endpoint: Endpoint) -> Result<Channel, ConnectError> {
        // tonic's connect timeout covers the TCP connect only; a peer that
        // accepts and then never completes TLS (a black-holed path) would
        // otherwise hold the caller forever.
        tokio::time::timeout(CONNECT_TIMEOUT + HANDSHAKE_ALLOWANCE, self.dial(endpoint))
            .await
            .map_err(|_| ConnectError::Timeout {
                url: self.url.clone(),
                after: CONNECT_TIMEOUT + HANDSHAKE_ALLOWANCE,
            })?
    }

    async fn dial(&self, endpoint: Endpoint) -> Result<Channel, ConnectError> {
        let proxy = match self.route()? {
            Route::Direct { .. } => {
                return endpoint
                    .connect()
                    .await
                    .map_err(|source| ConnectError::Transport {
                        url: self.url.clone(),
                        source,
                    });
            }
            Route::Proxy(proxy) => proxy,
        };
        endpoint
            .connect_with_connector(ProxyConnector::new(proxy))
            .await
            .map_err(|source| match proxy_error(&source) {
                Some(cause) => ConnectError::Proxy {
                    url: self.url.clone(),
                    cause,
                },
                None => ConnectError::Transport {
                    url: self.url.clone(),
                    source,
                },
            })
    }
}

/// The proxy's error, when that is what tonic's error wraps.
fn proxy_error(err: &tonic::transport::Error) -> Option<ProxyError> {
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        if let Some(proxy) = e.downcast_ref::<ProxyError>() {
            return Some(proxy.clone());
        }
        source = e.source();
    }
    None
}

/// An error and its sources, innermost last, without repeats.
fn causes(err: &tonic::transport::Error) -> String {
    let mut parts: Vec<String> = vec![err.to_string()];
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}

//! Reaching the broker through an HTTP CONNECT proxy, for on-prem networks
//! whose only way out is a forward proxy. The proxy sees a tunnel to
//! `host:port` and nothing else: TLS to the broker runs end to end through
//! it, verified exactly as without a proxy.
//!
//! The protocol is hyper-util's: its `Tunnel` speaks CONNECT and its
//! `Matcher` reads `HTTPS_PROXY`/`ALL_PROXY`/`NO_PROXY` the way curl does.
//! This module adds what an operator needs on top: where the setting came
//! from, errors that name the proxy and what it answered, timeouts, and a
//! password read from a file at each connect.
//!
//! # Layout
//! - [`route`]: which path a connection takes (the `[proxy]` table, else
//!   the environment, else direct) and why.
//! - [`tunnel`]: [`ProxyConnector`], the tonic connector, in steps that
//!   `doctor` runs one at a time.
//! - [`error`]: why a tunnel could not be opened ([`ProxyError`]).

pub mod error;
mod record;
pub mod route;
pub mod tunnel;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use http::Uri;
use serde::Deserialize;

pub use error::ProxyError;
pub use route::{ProxySource, ResolvedProxy, Route};
pub use tunnel::ProxyConnector;

/// How long resolving the proxy's name may take.
pub const PROXY_RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long dialing the proxy may take. The three proxy timeouts add up to
/// less than [`crate::connect::CONNECT_TIMEOUT`] (which tonic applies to
/// the whole connector), so a silent proxy is reported as such rather than
/// as a generic broker timeout.
pub const PROXY_DIAL_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the proxy may take to answer the CONNECT request.
pub const PROXY_ANSWER_TIMEOUT: Duration = Duration::from_secs(4);
/// The longest response head accepted from the proxy (hyper-util's limit).
pub const MAX_RESPONSE_HEAD: usize = 8 * 1024;

/// The `[proxy]` table of the agent's configuration. When present it wins
/// over the environment's `HTTPS_PROXY`/`ALL_PROXY` and `NO_PROXY`.
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
    /// Hosts reached directly, in `NO_PROXY` syntax: comma-separated
    /// names (matching subdomains too), IPs, CIDR ranges, or `*`.
    #[serde(default)]
    pub no_proxy: Option<String>,
}

// Manual, because a url with `user:password@` in it (refused by
// `validate`, but Debug may run before that) must not leak into logs.
impl fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyConfig")
            .field("url", &masked_url(&self.url))
            .field("username", &self.username)
            .field("password_file", &self.password_file)
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

/// The url with any userinfo replaced by `***`.
pub(crate) fn masked_url(url: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn config(url: &str) -> ProxyConfig {
        ProxyConfig {
            url: url.to_owned(),
            username: Some("svc".into()),
            password_file: Some("/nonexistent/proxy.password".into()),
            no_proxy: None,
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
}

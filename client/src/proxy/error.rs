//! Why the tunnel through the proxy could not be opened. Every variant
//! that involves a proxy names it and where its setting came from, since
//! the operator may not know an environment variable is in play. No
//! variant holds a password.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::route::ProxySource;

/// A proxy as error messages name it: `host:port (from HTTPS_PROXY)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyName {
    /// `host:port`.
    pub address: String,
    pub source: ProxySource,
}

impl fmt::Display for ProxyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (from {})", self.address, self.source)
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProxyError {
    #[error("invalid proxy setting: {0}")]
    Config(&'static str),
    #[error("invalid proxy setting in {var}: {problem}")]
    Environment {
        var: &'static str,
        problem: &'static str,
    },
    #[error("cannot read the proxy password file {path}")]
    PasswordFile {
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("cannot resolve the proxy host of {proxy}")]
    Unresolvable {
        proxy: ProxyName,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("cannot reach the proxy at {proxy}")]
    Unreachable {
        proxy: ProxyName,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("the connection to the proxy at {proxy} failed during the CONNECT exchange")]
    Broken {
        proxy: ProxyName,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error(
        "the proxy at {proxy} did not answer the CONNECT request within {}s",
        timeout.as_secs()
    )]
    NoAnswer { proxy: ProxyName, timeout: Duration },
    // 407 is the standard answer, but proxies in the field also answer 401
    // (tinyproxy does to wrong credentials): the status line is quoted.
    #[error(
        "the proxy at {proxy} requires credentials (it answered {status_line:?}): {}",
        required_hint(&proxy.source)
    )]
    CredentialsRequired {
        proxy: ProxyName,
        status_line: String,
    },
    #[error(
        "the proxy at {proxy} refused our credentials for user {username:?} (it answered {status_line:?}): {}",
        refused_hint(&proxy.source)
    )]
    CredentialsRefused {
        proxy: ProxyName,
        username: String,
        status_line: String,
    },
    #[error("the proxy at {proxy} refused the tunnel to {target} with status line {status_line:?}")]
    TunnelRefused {
        proxy: ProxyName,
        target: String,
        status_line: String,
    },
    #[error("malformed response from the proxy at {proxy}: {problem}")]
    Malformed {
        proxy: ProxyName,
        problem: &'static str,
    },
    #[error("broker address {0} has no host to tunnel to")]
    NoTarget(String),
}

fn required_hint(source: &ProxySource) -> String {
    match source {
        ProxySource::Table => "set username and password_file in [proxy]".into(),
        ProxySource::Env(var) => format!("put user:password@ in {var}"),
    }
}

fn refused_hint(source: &ProxySource) -> String {
    match source {
        ProxySource::Table => "check username and password_file in [proxy]".into(),
        ProxySource::Env(var) => format!("check the user and password in {var}"),
    }
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

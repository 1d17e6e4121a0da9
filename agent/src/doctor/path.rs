//! The network path to the broker, checked step by step along the route
//! the agent's session takes: the route itself (direct, or which proxy and
//! from which setting), then DNS and TCP to the first hop (the broker, or
//! the proxy), then the CONNECT tunnel. The proxy steps are the session's
//! own connector run one step at a time, so they cannot drift apart.

use std::time::Duration;

use relay_client::connect::BrokerEndpoint;
use relay_client::proxy::{ProxyConnector, ProxyError, ResolvedProxy, Route};
use tonic::codegen::http::Uri;

use super::{Check, check};

/// How long the direct TCP check waits.
const DIRECT_TCP_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the path checks; true when TLS to the broker is worth trying.
pub(super) async fn path_checks(endpoint: &BrokerEndpoint, checks: &mut Vec<Check>) -> bool {
    let route = match endpoint.route() {
        Ok(route) => route,
        Err(e) => {
            let mut c = check("broker path", false, e.to_string());
            c.fix.push(
                "correct the [proxy] table, or HTTPS_PROXY/ALL_PROXY in the agent's environment"
                    .into(),
            );
            checks.push(c);
            return false;
        }
    };
    checks.push(check("broker path", true, route.to_string()));
    let Ok(broker) = endpoint.url.parse::<Uri>() else {
        return false;
    };
    match route {
        Route::Direct { .. } => direct(&broker, checks).await,
        Route::Proxy(proxy) => through_proxy(proxy, &broker, checks).await,
    }
}

async fn direct(broker: &Uri, checks: &mut Vec<Check>) -> bool {
    let host = broker.host().unwrap_or_default();
    let with_port = format!("{host}:{}", broker.port_u16().unwrap_or(443));
    let addrs: Vec<_> = match tokio::net::lookup_host(with_port.as_str()).await {
        Ok(a) => a.collect(),
        Err(e) => {
            checks.push(check("broker DNS", false, format!("{with_port}: {e}")));
            return false;
        }
    };
    checks.push(check(
        "broker DNS",
        !addrs.is_empty(),
        format!("{with_port} -> {addrs:?}"),
    ));
    let Some(addr) = addrs.first() else {
        return false;
    };
    match tokio::time::timeout(DIRECT_TCP_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => {
            checks.push(check("broker TCP", true, format!("connected to {addr}")));
            true
        }
        other => {
            let why = match other {
                Ok(Err(e)) => e.to_string(),
                _ => format!("no answer within {}s", DIRECT_TCP_TIMEOUT.as_secs()),
            };
            let mut c = check("broker TCP", false, format!("{addr}: {why}"));
            c.fix.push("allow outbound TCP to the broker (port 443 by default) in the firewall, or set a proxy ([proxy] or HTTPS_PROXY)".into());
            checks.push(c);
            false
        }
    }
}

async fn through_proxy(proxy: ResolvedProxy, broker: &Uri, checks: &mut Vec<Check>) -> bool {
    let source = proxy.source();
    let url = proxy.url();
    let connector = ProxyConnector::new(proxy);
    let fail = |name: &str, err: &ProxyError, fix: String| {
        let mut c = check(name, false, err.with_sources());
        c.fix.push(fix);
        c
    };
    let addrs = match connector.resolve().await {
        Ok(addrs) => addrs,
        Err(e) => {
            checks.push(fail(
                "proxy DNS",
                &e,
                format!("check the proxy host name in {source}, or this host's DNS"),
            ));
            return false;
        }
    };
    checks.push(check(
        "proxy DNS",
        true,
        format!("{} -> {addrs:?}", connector.proxy().name().address),
    ));
    let stream = match connector.dial(&addrs).await {
        Ok(stream) => stream,
        Err(e) => {
            checks.push(fail(
                "proxy TCP",
                &e,
                format!("start the proxy at {url}, or correct {source}; allow outbound TCP to it"),
            ));
            return false;
        }
    };
    let peer = stream
        .peer_addr()
        .map_or_else(|_| url.clone(), |a| a.to_string());
    checks.push(check(
        "proxy TCP",
        true,
        format!("connected to the proxy {url} at {peer}"),
    ));
    match connector.open(stream, broker).await {
        Ok(opened) => {
            checks.push(check(
                "proxy CONNECT",
                true,
                format!(
                    "the proxy {url} opened a tunnel to {}: {:?}",
                    broker.authority().map_or("", |a| a.as_str()),
                    opened.answer
                ),
            ));
            true
        }
        Err(e) => {
            let fix = match &e {
                ProxyError::CredentialsRequired { .. } | ProxyError::CredentialsRefused { .. } => {
                    format!("give the proxy user's current password in {source}")
                }
                ProxyError::PasswordFile { path, .. } => {
                    format!("make {} readable by the agent's account", path.display())
                }
                ProxyError::TunnelRefused { target, .. } => format!(
                    "have the proxy allow CONNECT to {target} (its allow list and CONNECT ports)"
                ),
                _ => format!("check that {url} is an HTTP CONNECT proxy"),
            };
            checks.push(fail("proxy CONNECT", &e, fix));
            false
        }
    }
}

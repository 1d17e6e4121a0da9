//! Which path a connection to the broker takes. Precedence: the `[proxy]`
//! table when configured (its `no_proxy` list applies); otherwise, for
//! callers that opt in (the agent), `HTTPS_PROXY` (or `https_proxy`), else
//! `ALL_PROXY` (or `all_proxy`), with `NO_PROXY` (or `no_proxy`); otherwise
//! direct. `HTTP_PROXY` is never used: the broker is always https.
//!
//! Matching and URL parsing are hyper-util's `Matcher` (curl's rules);
//! this module only remembers which variable won, so messages can say.

use std::fmt;
use std::path::PathBuf;

use http::{HeaderValue, Uri};
use hyper_util::client::proxy::matcher::Matcher;

use super::ProxyConfig;
use super::error::{ProxyError, ProxyName};

/// Where the proxy setting in force came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxySource {
    /// The `[proxy]` table of the configuration.
    Table,
    /// The environment variable of that name.
    Env(&'static str),
}

impl fmt::Display for ProxySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxySource::Table => f.write_str("[proxy]"),
            ProxySource::Env(var) => f.write_str(var),
        }
    }
}

/// Credentials for `Proxy-Authorization: Basic`.
#[derive(Clone)]
pub(crate) enum Auth {
    None,
    /// From the table: the password is read from the file at each connect.
    File {
        username: String,
        path: PathBuf,
    },
    /// From the environment URL, already encoded (and marked sensitive) by
    /// hyper-util.
    Header {
        username: String,
        value: HeaderValue,
    },
}

impl Auth {
    pub(crate) fn username(&self) -> Option<&str> {
        match self {
            Auth::None => None,
            Auth::File { username, .. } | Auth::Header { username, .. } => Some(username),
        }
    }
}

/// A proxy the connection goes through, with its credentials.
#[derive(Clone)]
pub struct ResolvedProxy {
    /// `http://host:port/`, never with userinfo.
    pub(crate) uri: Uri,
    pub(crate) name: ProxyName,
    pub(crate) auth: Auth,
}

impl ResolvedProxy {
    /// `http://host:port`, safe to print.
    pub fn url(&self) -> String {
        format!("http://{}", self.name.address)
    }

    /// The proxy's name, port and source as errors print them.
    pub fn name(&self) -> &ProxyName {
        &self.name
    }

    pub fn source(&self) -> ProxySource {
        self.name.source
    }

    /// The proxy user, if any (never the password).
    pub fn username(&self) -> Option<&str> {
        self.auth.username()
    }
}

// Manual: the credentials stay out of logs.
impl fmt::Debug for ResolvedProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolvedProxy")
            .field("url", &self.url())
            .field("source", &self.name.source)
            .field("username", &self.username())
            .finish()
    }
}

/// The path to the broker.
#[derive(Debug, Clone)]
pub enum Route {
    /// No proxy; `bypass` says why when a proxy is set but not used.
    Direct {
        bypass: Option<String>,
    },
    Proxy(ResolvedProxy),
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Route::Direct { bypass: None } => f.write_str("direct"),
            Route::Direct { bypass: Some(why) } => write!(f, "direct ({why})"),
            Route::Proxy(p) => write!(f, "through proxy {} (from {})", p.url(), p.source()),
        }
    }
}

/// The route to `broker` (an `https://` URI). `use_env` lets the
/// environment supply a proxy when there is no table.
pub fn resolve(
    table: Option<&ProxyConfig>,
    use_env: bool,
    broker: &Uri,
) -> Result<Route, ProxyError> {
    match table {
        Some(table) => from_table(table, broker),
        None if use_env => from_env(|name| std::env::var(name).ok(), broker),
        None => Ok(Route::Direct { bypass: None }),
    }
}

fn from_table(table: &ProxyConfig, broker: &Uri) -> Result<Route, ProxyError> {
    table.validate().map_err(ProxyError::Config)?;
    let matcher = Matcher::builder()
        .https(table.url.as_str())
        .no(table.no_proxy.as_deref().unwrap_or_default())
        .build();
    let Some(intercept) = matcher.intercept(broker) else {
        return Ok(Route::Direct {
            bypass: Some("the broker's host is in [proxy] no_proxy".into()),
        });
    };
    let auth = match (&table.username, &table.password_file) {
        (Some(username), Some(path)) => Auth::File {
            username: username.clone(),
            path: path.clone(),
        },
        _ => Auth::None,
    };
    proxy(intercept.uri(), ProxySource::Table, auth).map(Route::Proxy)
}

/// The first of `names` that is set and not empty, with its value.
fn first_set(
    lookup: &impl Fn(&str) -> Option<String>,
    names: [&'static str; 2],
) -> Option<(&'static str, String)> {
    names
        .into_iter()
        .find_map(|n| lookup(n).filter(|v| !v.trim().is_empty()).map(|v| (n, v)))
}

pub(crate) fn from_env(
    lookup: impl Fn(&str) -> Option<String>,
    broker: &Uri,
) -> Result<Route, ProxyError> {
    let Some((var, value)) = first_set(&lookup, ["HTTPS_PROXY", "https_proxy"])
        .or_else(|| first_set(&lookup, ["ALL_PROXY", "all_proxy"]))
    else {
        return Ok(Route::Direct { bypass: None });
    };
    let no = first_set(&lookup, ["NO_PROXY", "no_proxy"]);
    let matcher = |no: &str| Matcher::builder().https(value.as_str()).no(no).build();
    let no_value = no.as_ref().map_or("", |(_, v)| v.as_str());
    let Some(intercept) = matcher(no_value).intercept(broker) else {
        if matcher("").intercept(broker).is_some() {
            let no_var = no.map_or("NO_PROXY", |(n, _)| n);
            return Ok(Route::Direct {
                bypass: Some(format!(
                    "the broker's host is in {no_var}; {var} is not used"
                )),
            });
        }
        return Err(ProxyError::Environment {
            var,
            problem: "not a proxy URL: expected http://[user:password@]host:port",
        });
    };
    if intercept.uri().scheme_str() != Some("http") {
        return Err(ProxyError::Environment {
            var,
            problem: "only http:// proxies are supported (not https:// or socks)",
        });
    }
    let auth = match intercept.basic_auth() {
        Some(value) => Auth::Header {
            username: env_username(&value_of(&lookup, var)),
            value: value.clone(),
        },
        None => Auth::None,
    };
    proxy(intercept.uri(), ProxySource::Env(var), auth).map(Route::Proxy)
}

fn value_of(lookup: &impl Fn(&str) -> Option<String>, var: &str) -> String {
    lookup(var).unwrap_or_default()
}

/// The user part of `scheme://user:password@host`, as written.
fn env_username(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or_default();
    let userinfo = authority.rsplit_once('@').map_or("", |(u, _)| u);
    userinfo.split(':').next().unwrap_or_default().to_owned()
}

fn proxy(uri: &Uri, source: ProxySource, auth: Auth) -> Result<ResolvedProxy, ProxyError> {
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or(ProxyError::Config("the proxy URL has no host"))?;
    let port = uri.port_u16().unwrap_or(80);
    let address = format!("{host}:{port}");
    let uri = format!("http://{address}/")
        .parse()
        .map_err(|_| ProxyError::Config("the proxy URL is not http://host:port"))?;
    Ok(ResolvedProxy {
        uri,
        name: ProxyName { address, source },
        auth,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        }
    }

    fn broker() -> Uri {
        "https://broker.example.com:8443".parse().unwrap()
    }

    #[test]
    fn https_proxy_wins_over_all_proxy_and_names_itself() {
        let route = from_env(
            env(&[
                ("ALL_PROXY", "http://all:1"),
                ("https_proxy", "http://svc:s3cret@proxy.corp:3128"),
            ]),
            &broker(),
        )
        .unwrap();
        assert_eq!(
            route.to_string(),
            "through proxy http://proxy.corp:3128 (from https_proxy)"
        );
        let Route::Proxy(p) = route else { panic!() };
        assert_eq!(p.username(), Some("svc"));
        assert!(!format!("{p:?}").contains("s3cret"));
        let all = from_env(env(&[("ALL_PROXY", "proxy.corp:8080")]), &broker()).unwrap();
        assert_eq!(
            all.to_string(),
            "through proxy http://proxy.corp:8080 (from ALL_PROXY)"
        );
    }

    #[test]
    fn no_proxy_sends_the_broker_direct() {
        let route = from_env(
            env(&[
                ("HTTPS_PROXY", "http://proxy.corp:3128"),
                ("NO_PROXY", "localhost, .example.com"),
            ]),
            &broker(),
        )
        .unwrap();
        assert_eq!(
            route.to_string(),
            "direct (the broker's host is in NO_PROXY; HTTPS_PROXY is not used)"
        );
        let elsewhere = from_env(
            env(&[
                ("HTTPS_PROXY", "http://proxy.corp:3128"),
                ("NO_PROXY", "example.org,10.0.0.0/8"),
            ]),
            &broker(),
        )
        .unwrap();
        assert!(matches!(elsewhere, Route::Proxy(_)));
        assert_eq!(from_env(env(&[]), &broker()).unwrap().to_string(), "direct");
    }

    #[test]
    fn unusable_environment_proxies_are_named() {
        for value in ["socks5://p:1080", "https://p:3128"] {
            let err = from_env(env(&[("HTTPS_PROXY", value)]), &broker()).unwrap_err();
            assert!(err.to_string().contains("in HTTPS_PROXY"), "{err}");
        }
    }

    #[test]
    fn the_table_wins_and_has_its_own_no_proxy() {
        let mut table = super::super::tests::config("http://proxy.corp:3128");
        let route = resolve(Some(&table), true, &broker()).unwrap();
        assert_eq!(
            route.to_string(),
            "through proxy http://proxy.corp:3128 (from [proxy])"
        );
        table.no_proxy = Some("broker.example.com".into());
        let route = resolve(Some(&table), true, &broker()).unwrap();
        assert!(
            matches!(route, Route::Direct { bypass: Some(_) }),
            "{route}"
        );
        assert_eq!(
            resolve(None, false, &broker()).unwrap().to_string(),
            "direct"
        );
    }
}

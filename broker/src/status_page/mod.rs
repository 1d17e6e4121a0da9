//! The operator status page on the operator port: `GET /status` (nodes,
//! tenants, agents, the last minutes' requests) and its login,
//! `GET`/`POST /status/login`.
//!
//! The page names tenants and agents, so it needs the operator credential,
//! checked by the same [`crate::auth::Authorizer`] as the Admin service:
//! scripts send `Authorization: SharedAccessSignature ...`; browsers paste a
//! token into the login form once and send it back as a cookie.
//!
//! - `render`: the HTML, from a plain view of the state.
//! - `chart`: the SVG chart of requests per minute.
//! - `refresh`: reloading on request, or every N s when asked to.

mod chart;
mod refresh;
mod render;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State as Extract;
use axum::extract::rejection::FormRejection;
use axum::extract::{ConnectInfo, RawQuery};
use axum::http::{Extensions, HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use proto::pb::AgentInfo;
use sas::Right;
use tracing::info;
use zeroize::Zeroizing;

use crate::audit::{Actor, Audit, Call};
use crate::auth::Authorizer;
use crate::error::RelayError;
use crate::state::State;
use crate::store::TenantRecord;
use crate::time::{now_unix_ms, now_unix_secs};

/// The cookie that carries the operator token back from a browser.
pub const COOKIE_NAME: &str = "relay_operator";
pub const LOGIN_PATH: &str = "/status/login";

const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; \
     img-src 'self' data:; form-action 'self'; frame-ancestors 'none'";

/// Why a request carries no usable operator credential. The messages are
/// shown on the page: they say what is wrong with the token, never echo it.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("no operator token was given")]
    Missing,
    #[error("this token does not carry the Operator right: it is a {0} token")]
    NotOperator(Right),
    #[error("the token expired; mint a new one with `relayctl operator-token`")]
    Expired,
    #[error(
        "the token's signature matches no key: it was not signed with this broker's operator key"
    )]
    BadSignature,
    #[error("{0}")]
    Other(RelayError),
}

impl From<RelayError> for Refused {
    fn from(err: RelayError) -> Refused {
        match err {
            RelayError::WrongRight { have, .. } => Refused::NotOperator(have),
            RelayError::TokenExpired => Refused::Expired,
            RelayError::BadSignature => Refused::BadSignature,
            other => Refused::Other(other),
        }
    }
}

impl Refused {
    /// 403 for a genuine token without the right; 401 for everything else.
    fn status(&self) -> StatusCode {
        match self {
            Refused::NotOperator(_) => StatusCode::FORBIDDEN,
            _ => StatusCode::UNAUTHORIZED,
        }
    }
}

/// Where the token came from: a refused header gets an error page (a script
/// sent it), a refused cookie the login form (a browser did).
enum Source {
    Header,
    Cookie,
}

pub fn routes() -> Router<Arc<State>> {
    Router::new()
        .route("/status", get(status))
        .route(LOGIN_PATH, get(login_form).post(login))
        .route_layer(axum::middleware::map_response(security_headers))
}

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// The token of the `Authorization` header or, failing that, of the cookie.
fn presented(headers: &HeaderMap) -> Option<(Source, Zeroizing<String>)> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        // Not ASCII: not a token; the parser says so.
        let text = value.to_str().unwrap_or_default();
        return Some((Source::Header, Zeroizing::new(text.to_owned())));
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE_NAME)?.strip_prefix('='))
        .map(|value| (Source::Cookie, Zeroizing::new(cookie_decode(value))))
}

/// A cookie value cannot hold the space after `SharedAccessSignature`, and
/// a verified operator token has no other character a cookie refuses (its
/// resource is `*`, its signature base64url, its expiry digits).
fn cookie_encode(token: &str) -> String {
    token.replace(' ', "%20")
}

fn cookie_decode(value: &str) -> String {
    value.replace("%20", " ")
}

fn session_cookie(token: &str, max_age_secs: u64) -> String {
    // No `Secure`: the operator port is plain HTTP (and private), so a
    // browser would drop a Secure cookie. HttpOnly keeps it from scripts,
    // SameSite=Strict from other sites' requests, Path from other routes.
    format!(
        "{COOKIE_NAME}={}; Max-Age={max_age_secs}; Path=/status; HttpOnly; SameSite=Strict",
        cookie_encode(token)
    )
}

fn clear_cookie() -> String {
    format!("{COOKIE_NAME}=; Max-Age=0; Path=/status; HttpOnly; SameSite=Strict")
}

/// Checks an operator token, auditing a refusal; on success, the seconds it
/// has left and who it proves.
fn verify(
    audit: &Audit,
    authorizer: &Authorizer,
    call: Call<'_>,
    token: &str,
    now_unix: u64,
) -> Result<(u64, Actor), Refused> {
    let token = Some(token.trim()).filter(|t| !t.is_empty());
    let principal = audit
        .authorize_at(authorizer, call, token, None, &[Right::Operator], now_unix)
        .map_err(|e| match e {
            RelayError::MissingCredential => Refused::Missing,
            other => Refused::from(other),
        })?;
    let remaining = principal.expiry_unix.saturating_sub(now_unix);
    Ok((remaining, audit.actor(&principal, token)))
}

/// [`verify`] now, for a call of the status page.
fn verify_call(
    state: &State,
    rpc: &'static str,
    extensions: &Extensions,
    token: &str,
) -> Result<(u64, Call<'static>, Actor), Refused> {
    let call = Call {
        rpc,
        peer: peer_of(extensions),
    };
    let (remaining, actor) = verify(
        &state.audit,
        &state.authorizer,
        call,
        token,
        now_unix_secs(),
    )?;
    Ok((remaining, call, actor))
}

/// The caller's address, which the operator port's server records.
fn peer_of(extensions: &Extensions) -> Option<SocketAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| *peer)
}

fn see_other(location: &'static str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response()
}

async fn status(
    Extract(state): Extract<Arc<State>>,
    extensions: Extensions,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let Some((source, token)) = presented(&headers) else {
        return see_other(LOGIN_PATH);
    };
    match (
        verify_call(&state, "status/view", &extensions, &token),
        source,
    ) {
        (Ok((_, call, actor)), source) => {
            // A script's use of the operator token; a browser's cookie was
            // audited at its login.
            if matches!(source, Source::Header) {
                let ok = Ok::<(), RelayError>(());
                state.audit.done(call, None, &actor, None, &ok);
            }
            let peers = match state.cluster.as_ref().and_then(|c| c.meta.get()) {
                Some(meta) => Some(crate::cluster::nodes::list(meta).await),
                None => None,
            };
            let refresh_secs = refresh::requested(query.as_deref());
            Html(render::status_page(&view(&state, peers, refresh_secs))).into_response()
        }
        // The login form says what was wrong with the cookie.
        (Err(_), Source::Cookie) => see_other(LOGIN_PATH),
        (Err(refused), Source::Header) => {
            info!(reason = %refused, "status page refused a token");
            let mut response = (
                refused.status(),
                Html(render::refused_page(&refused.to_string())),
            )
                .into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("SharedAccessSignature"),
            );
            response
        }
    }
}

async fn login_form(
    Extract(state): Extract<Arc<State>>,
    extensions: Extensions,
    headers: HeaderMap,
) -> Response {
    match presented(&headers) {
        Some((Source::Cookie, token)) => {
            match verify_call(&state, "status/login", &extensions, &token) {
                Ok(_) => see_other("/status"),
                Err(refused) => (
                    [(header::SET_COOKIE, clear_cookie())],
                    Html(render::login_page(Some(&format!(
                        "the saved token no longer works: {refused}"
                    )))),
                )
                    .into_response(),
            }
        }
        _ => Html(render::login_page(None)).into_response(),
    }
}

#[derive(serde::Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
}

// No CSRF token in this form, on purpose: the session cookie is
// SameSite=Strict, so no other site's request carries it, and the form
// posts to its own origin (CSP form-action 'self'). A forged login could
// only store a token the forger already holds as an operator.
async fn login(
    Extract(state): Extract<Arc<State>>,
    extensions: Extensions,
    form: Result<axum::Form<LoginForm>, FormRejection>,
) -> Response {
    let token = Zeroizing::new(form.map(|f| f.0.token).unwrap_or_default());
    match verify_call(&state, "status/login", &extensions, &token) {
        Ok((remaining, call, actor)) => {
            let ok = Ok::<(), RelayError>(());
            state.audit.done(call, None, &actor, None, &ok);
            (
                StatusCode::SEE_OTHER,
                [
                    (header::LOCATION, "/status".to_owned()),
                    (header::SET_COOKIE, session_cookie(token.trim(), remaining)),
                ],
            )
                .into_response()
        }
        Err(refused) => {
            info!(reason = %refused, "status page login refused");
            (
                refused.status(),
                Html(render::login_page(Some(&refused.to_string()))),
            )
                .into_response()
        }
    }
}

/// Copies out what the page shows of a tenant: never its keys.
fn tenant_view(record: &TenantRecord, agents: Vec<AgentInfo>) -> render::TenantView {
    render::TenantView {
        name: record.name.clone(),
        connector_name: record.connector_name.clone(),
        writeback_enabled: record.writeback_enabled,
        agents,
    }
}

/// `peers`: in cluster mode, the nodes announced in the meta bucket (this
/// one among them, usually).
fn view(
    state: &State,
    peers: Option<Vec<crate::cluster::nodes::NodeRecord>>,
    refresh_secs: Option<u32>,
) -> render::StatusView {
    let now = now_unix_ms();
    let cluster = state.cluster.as_ref().map(|c| render::ClusterView {
        this: c.node.clone(),
        others: peers
            .unwrap_or_default()
            .into_iter()
            .filter(|p| p.name != c.node)
            .map(|p| render::PeerView {
                seen_ago: Duration::from_millis(now.saturating_sub(p.seen_unix_ms).max(0) as u64),
                name: p.name,
                version: p.version,
                condition: p.condition,
                started_unix_ms: p.started_unix_ms,
                agents: p.agents,
                in_flight: p.in_flight,
            })
            .collect(),
    });
    render::StatusView {
        now_unix_ms: now,
        node: render::NodeView {
            version: env!("CARGO_PKG_VERSION"),
            condition: state.condition(),
            detail: state.condition_detail(),
            started_unix_ms: state.started_unix_ms,
            uptime: state.started.elapsed(),
        },
        cluster,
        tenants: state
            .tenants
            .all()
            .iter()
            .map(|t| tenant_view(t, state.registry.agent_infos(&t.name)))
            .collect(),
        minutes: state.recent.snapshot_at(now),
        refresh_secs,
    }
}

#[cfg(test)]
mod tests;

//! A reference password reset portal: a small web server that shows portal
//! developers how to call the relay broker correctly. It seals every request
//! on the server (the browser never sees a key), shows the on-prem password
//! policy before the user types, and when the directory refuses, names the
//! exact rule that failed; when the outcome is unknown it says so and lets
//! the user check again.
//!
//! With `identity_check = "oidc"` the user signs in at an OpenID provider
//! and acts on the account its verified ID token names ([`oidc`]); with
//! `"none"` (demos only) it does **not** verify who the user is. See
//! [`config::IdentityCheck`].
//!
//! # Layout
//! - [`config`]: the TOML configuration and the keys it names.
//! - [`csrf`]: the per-browser cookie and the signed token every form carries.
//! - [`handlers`]: the routes: account, policy, password, outcome.
//! - [`policy`]: the policy reply's details, in plain words.
//! - [`outcomes`]: outcome codes and broker failures, in plain words.
//! - [`pages`]: server-rendered HTML, escaped, without scripts.
//! - [`i18n`]: every sentence, in English and German, by `Accept-Language`.
//! - [`visitors`]: per-visitor and per-account limits on what reaches the
//!   broker.
//! - [`reload`]: SIGHUP (title and request timeout live) and `check-config`.
//! - [`oidc`]: OpenID Connect sign-in (`identity_check = "oidc"`).
//! - [`session`]: the signed cookies its sessions live in.
//! - [`signin_pages`]: its pages and the signed-in line.
//!
//! It is served by [`http_serve`], with deadlines for each request's
//! headers and body and caps on connections per visitor and in all.
//! `/healthz` answers 200 while the process runs, `/readyz` 200 while it
//! serves and 503 once it drains (after SIGTERM, while the requests in
//! flight finish).

pub mod config;
pub mod csrf;
pub mod handlers;
pub mod i18n;
pub mod oidc;
pub mod outcomes;
pub mod pages;
pub mod policy;
pub mod reload;
pub mod session;
pub mod signin_pages;
pub mod visitors;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use relay_client::portal_client::PortalClient;
use relay_client::sealed::SealedPortal;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{ConfigError, IdentityCheck, Limits, PortalConfig};
use crate::csrf::Csrf;
use crate::visitors::Limiter;

/// The largest form accepted: an account and three passwords fit many times.
pub const MAX_FORM_BYTES: usize = 8 * 1024;

/// No scripts, no frames, no foreign resources; forms post back here only.
/// OpenID sign-in fits: the way to the provider is a link or a 303 answer
/// to a GET, never a form post or a redirect after one (browsers apply
/// form-action to those too), and the provider comes back with a GET.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// How long the start-up check of the broker may take.
const BROKER_CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// What every page needs besides the broker.
#[derive(Debug, Clone)]
pub struct Settings {
    pub title: String,
    pub request_timeout: Duration,
}

impl Settings {
    pub fn from_config(config: &PortalConfig) -> Settings {
        Settings {
            title: config.title.clone(),
            request_timeout: config.request_timeout,
        }
    }
}

/// Shared by every request. The one [`SealedPortal`] keeps the reply keys of
/// requests whose outcome was unknown, so "Check again" can open the late
/// answer.
#[derive(Clone)]
pub struct AppState {
    pub portal: Arc<SealedPortal>,
    pub csrf: Arc<Csrf>,
    /// Read per request: a reload replaces them ([`reload`]).
    pub settings: Arc<reload::LiveSettings>,
    pub limits: Arc<Limits>,
    pub limiter: Arc<Limiter>,
    /// Cancelled when the portal starts draining: `/readyz` answers 503.
    pub draining: CancellationToken,
    /// OpenID Connect sign-in; `None` with `identity_check = "none"`.
    pub oidc: Option<Arc<oidc::Oidc>>,
}

impl AppState {
    /// With the default [`Limits`].
    pub fn new(portal: SealedPortal, settings: Settings) -> AppState {
        AppState {
            portal: Arc::new(portal),
            csrf: Arc::new(Csrf::new()),
            settings: Arc::new(reload::LiveSettings::new(settings)),
            limits: Arc::new(Limits::default()),
            limiter: Arc::new(Limiter::new(&Limits::default())),
            draining: CancellationToken::new(),
            oidc: None,
        }
    }

    /// With OpenID Connect sign-in (`identity_check = "oidc"`).
    pub fn with_oidc(self, oidc: Arc<oidc::Oidc>) -> AppState {
        AppState {
            oidc: Some(oidc),
            ..self
        }
    }

    /// With a configured CSRF key instead of the per-process one.
    pub fn with_csrf(self, csrf: Csrf) -> AppState {
        AppState {
            csrf: Arc::new(csrf),
            ..self
        }
    }

    pub fn with_limits(self, limits: Limits) -> AppState {
        AppState {
            limiter: Arc::new(Limiter::new(&limits)),
            limits: Arc::new(limits),
            ..self
        }
    }
}

/// The three things a user can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// A forgotten password: set a new one (administrative reset).
    Reset,
    /// A known password: change it (the current one is verified).
    Change,
    /// A locked-out account: clear the lockout.
    Unlock,
}

impl Task {
    pub fn name(self) -> &'static str {
        match self {
            Task::Reset => "reset",
            Task::Change => "change",
            Task::Unlock => "unlock",
        }
    }

    pub fn path(self) -> &'static str {
        match self {
            Task::Reset => "/reset",
            Task::Change => "/change",
            Task::Unlock => "/unlock",
        }
    }

    /// Where step 1 posts: the policy for reset and change, the unlock itself.
    pub fn step_one_action(self) -> &'static str {
        match self {
            Task::Reset => "/reset/policy",
            Task::Change => "/change/policy",
            Task::Unlock => "/unlock",
        }
    }

    /// The heading in English; pages use [`i18n::Msg::Heading`].
    pub fn heading(self) -> String {
        i18n::Lang::En.text(&i18n::Msg::Heading(self))
    }
}

/// The portal's routes, with CSRF cookies, the form size limit and the
/// security headers on every response.
pub fn app(state: AppState) -> Router {
    let mut routes = handlers::routes();
    if state.oidc.is_some() {
        routes = routes.merge(oidc::routes());
    }
    routes
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        // Inside the CSRF layer: the sign-out button needs the browser's token.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            signin_pages::decorate,
        ))
        .layer(middleware::from_fn_with_state(
            state.csrf.clone(),
            csrf::browser_cookie,
        ))
        // Probes get no cookie.
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

/// 200 while the process runs.
async fn healthz() -> &'static str {
    "ok\n"
}

/// 200 while serving, 503 once draining: a balancer stops sending here.
async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if state.draining.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else {
        (StatusCode::OK, "ready\n")
    }
}

/// Middleware: what no page may be without. Nothing is cached (pages hold
/// account names and answers), nothing is framed, sniffed or referred.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let set = [
        (header::CACHE_CONTROL, "no-store"),
        (header::PRAGMA, "no-cache"),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ];
    for (name, value) in set {
        headers.insert::<HeaderName>(name, HeaderValue::from_static(value));
    }
    response
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the listener's address")]
    LocalAddr(#[source] std::io::Error),
    #[error(transparent)]
    Oidc(#[from] oidc::OidcError),
}

/// A running portal.
pub struct Server {
    /// The bound address (the real port when the configuration said 0).
    pub addr: SocketAddr,
    /// What a reload changes ([`reload::on_hangup`]).
    pub settings: Arc<reload::LiveSettings>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Until the shutdown token is cancelled and the requests in flight
    /// have finished.
    pub async fn wait(self) -> std::io::Result<()> {
        self.task.await.map_err(std::io::Error::other)?
    }
}

/// Loads the keys, binds `config.listen` and serves until `shutdown`.
pub async fn serve(
    config: PortalConfig,
    shutdown: CancellationToken,
) -> Result<Server, StartError> {
    let client = config.client()?;
    let mut state = AppState::new(
        config.sealed_portal(client.clone())?,
        Settings::from_config(&config),
    )
    .with_limits(config.limits.clone());
    match &config.csrf_key_file {
        Some(path) => state = state.with_csrf(Csrf::with_key(&config::read_csrf_key(path)?)),
        None => warn!(
            "no csrf_key_file: this process made its own CSRF key, so a second replica \
             behind the same balancer will refuse the forms this one serves (and a restart \
             expires the forms open now)"
        ),
    }
    let oidc = match (&config.identity_check, &config.oidc) {
        (IdentityCheck::Oidc, Some(table)) => Some(Arc::new(oidc::Oidc::new(table.clone())?)),
        _ => {
            warn!(
                "identity_check = \"none\": anyone who reaches this portal can reset any \
                 account's password. For demos only; configure identity_check = \"oidc\""
            );
            None
        }
    };
    if let Some(oidc) = &oidc {
        state = state.with_oidc(Arc::clone(oidc));
    }
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let server = serve_on(listener, state.clone(), shutdown.clone())?;
    if let Some(oidc) = oidc {
        tokio::spawn(oidc.keep_discovered(shutdown));
    }
    tokio::spawn(check_broker(client, state));
    Ok(server)
}

/// Serves `state` on an already bound listener (tests bring their own
/// [`SealedPortal`]).
pub fn serve_on(
    listener: TcpListener,
    mut state: AppState,
    shutdown: CancellationToken,
) -> Result<Server, StartError> {
    state.draining = shutdown.clone();
    let addr = listener.local_addr().map_err(StartError::LocalAddr)?;
    let l = &state.limits;
    let limits = http_serve::Limits {
        header_timeout: l.header_timeout,
        body_timeout: l.body_timeout,
        max_body_bytes: MAX_FORM_BYTES,
        max_connections: l.max_connections,
        max_connections_per_source: l.connections_per_visitor,
        unlimited_sources: l.trusted_proxies.clone(),
    };
    // Each cut is logged by http_serve with the peer's address.
    let on_cut: http_serve::OnCut = Arc::new(|_| {});
    let settings = Arc::clone(&state.settings);
    let service = app(state);
    let task = tokio::spawn(async move {
        http_serve::serve(listener, "portal", service, limits, on_cut, shutdown).await;
        info!("stopped");
        Ok(())
    });
    Ok(Server {
        addr,
        settings,
        task,
    })
}

/// Tells the operator at start whether the broker answers and one of its
/// agent keys is trusted: a wrong pin is found now, not by the first user.
async fn check_broker(client: PortalClient, state: AppState) {
    let call = tokio::time::timeout(BROKER_CHECK_TIMEOUT, client.configuration()).await;
    match call {
        Err(_) => warn!("the broker does not answer yet"),
        Ok(Ok(config)) => match state.portal.trusted_key(&config.agent_keys) {
            Ok(key) => info!(
                tenant = client.tenant(),
                writeback_enabled = config.writeback_enabled,
                agents_online = config.agents_online.len(),
                seal_to = %key.key_id(),
                "broker reachable"
            ),
            Err(err) => warn!(%err, "broker reachable, but requests cannot be sealed"),
        },
        Ok(Err(err)) => warn!(%err, "the broker does not answer yet"),
    }
}

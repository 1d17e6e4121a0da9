//! `identity_check = "oidc"`: OpenID Connect sign-in (authorization code
//! flow with PKCE, `state` and `nonce`), the account acted on taken from a
//! claim of the verified ID token, never from a form.
//!
//! | route | does |
//! |---|---|
//! | `GET /signin?next=/reset` | a pending sign-in in a signed cookie, then 303 to the provider |
//! | `GET /signin/callback` | state checked, code exchanged, ID token verified, session cookie set |
//! | `POST /signout` | the session cookie cleared (CSRF checked); a link to end the provider's session too |
//!
//! Redirects to the provider are 303 answers to GETs, never form posts, so
//! the CSP's `form-action 'self'` holds. Nothing is stored server-side:
//! replicas share `session_key_file` ([`crate::session`]).

mod callback;
pub mod config;
pub mod http;
mod identity;

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::header::{LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use openidconnect::core::{CoreAuthenticationFlow, CoreClient};
use openidconnect::{
    AuthenticationContextClass, ClientId, ClientSecret, CsrfToken, EndSessionUrl, EndpointMaybeSet,
    EndpointNotSet, EndpointSet, IssuerUrl, LogoutRequest, Nonce, PkceCodeChallenge,
    PostLogoutRedirectUrl, ProviderMetadataWithLogout, RedirectUrl, Scope,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

pub use self::callback::check_strength;
pub use self::config::{AnchorKind, OidcConfig, OidcConfigError};
use self::http::{HttpClient, HttpError};
pub use self::identity::Identity;
use crate::csrf::{CarriesToken, Checked};
use crate::i18n::Lang;
use crate::session::{self, PENDING_COOKIE, SESSION_COOKIE, Signer};
use crate::{AppState, Task, signin_pages};

pub const SIGNIN_PATH: &str = "/signin";
pub const CALLBACK_PATH: &str = "/signin/callback";
pub const SIGNOUT_PATH: &str = "/signout";
/// Time to sign in at the provider (a second factor included).
const PENDING_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// Discovery retried while the provider is down at start, backing off to...
const RETRY_MAX: Duration = Duration::from_secs(60);
/// ...and read again this often, so that rotated signing keys are learnt.
const REFRESH: Duration = Duration::from_secs(60 * 60);
const SESSION_KIND: &str = "session";
const PENDING_KIND: &str = "pending";

/// The client as discovery leaves it: the authorization endpoint known,
/// the token and userinfo endpoints as the provider advertised them.
type Provider = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error(transparent)]
    Config(#[from] OidcConfigError),
    #[error("cannot set up the HTTP client for the identity provider")]
    Http(#[source] HttpError),
    #[error("oidc.issuer {0:?} is not a URL")]
    Issuer(String),
    #[error("oidc.redirect_url {0:?} is not a URL")]
    RedirectUrl(String),
}

/// Who signed in, as the session cookie carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedIn {
    /// The value of the configured `account_claim`.
    pub account: String,
    /// What `account` is to the directory.
    #[serde(default)]
    pub anchor: AnchorKind,
}

/// The sign-in under way, in its own short-lived signed cookie.
#[derive(Serialize, Deserialize)]
struct Pending {
    state: String,
    nonce: String,
    pkce_verifier: String,
    next: String,
}

pub struct Oidc {
    config: OidcConfig,
    issuer: IssuerUrl,
    redirect: RedirectUrl,
    client_secret: Option<zeroize::Zeroizing<String>>,
    signer: Signer,
    http: HttpClient,
    /// `None` until discovery succeeds: sign-in is then unavailable.
    provider: RwLock<Option<Arc<Provider>>>,
    /// The provider's RP-initiated logout endpoint, if it advertises one.
    end_session: RwLock<Option<EndSessionUrl>>,
}

impl Oidc {
    /// Reads the files `config` names; contacts nobody.
    pub fn new(config: OidcConfig) -> Result<Oidc, OidcError> {
        config.validate()?;
        let secrets = config.read_files()?;
        let http = HttpClient::new(secrets.ca_pem.as_deref()).map_err(OidcError::Http)?;
        let issuer = IssuerUrl::new(config.issuer.clone())
            .map_err(|_| OidcError::Issuer(config.issuer.clone()))?;
        let redirect = RedirectUrl::new(config.redirect_url.clone())
            .map_err(|_| OidcError::RedirectUrl(config.redirect_url.clone()))?;
        Ok(Oidc {
            signer: Signer::new(&secrets.session_key),
            client_secret: secrets.client_secret,
            config,
            issuer,
            redirect,
            http,
            provider: RwLock::new(None),
            end_session: RwLock::new(None),
        })
    }

    pub fn is_available(&self) -> bool {
        self.provider().is_some()
    }

    fn provider(&self) -> Option<Arc<Provider>> {
        self.provider
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads the provider's discovery document and keys once.
    pub async fn discover(&self) -> Result<(), String> {
        let metadata = ProviderMetadataWithLogout::discover_async(self.issuer.clone(), &self.http)
            .await
            .map_err(|e| crate::reload::chain(&e))?;
        if metadata.token_endpoint().is_none() {
            return Err("the provider advertises no token_endpoint".into());
        }
        let end_session = metadata.additional_metadata().end_session_endpoint.clone();
        let secret = self
            .client_secret
            .as_ref()
            .map(|s| ClientSecret::new(s.as_str().to_owned()));
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(self.config.client_id.clone()),
            secret,
        )
        .set_redirect_uri(self.redirect.clone());
        *self.provider.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(client));
        *self.end_session.write().unwrap_or_else(|e| e.into_inner()) = end_session;
        Ok(())
    }

    /// Where to end the session at the provider too, coming back to the
    /// portal's start page (registered at the provider as a post-logout
    /// redirect URI); `None` when the provider has no such endpoint.
    pub fn provider_logout_url(&self) -> Option<String> {
        let endpoint = self
            .end_session
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()?;
        let base = self.config.redirect_url.strip_suffix(CALLBACK_PATH)?;
        let back = PostLogoutRedirectUrl::new(format!("{base}/")).ok()?;
        let request = LogoutRequest::from(endpoint)
            .set_client_id(ClientId::new(self.config.client_id.clone()))
            .set_post_logout_redirect_uri(back);
        Some(request.http_get_url().to_string())
    }

    /// Discovery until it succeeds (the portal serves meanwhile and says
    /// sign-in is unavailable), then again every hour.
    pub async fn keep_discovered(self: Arc<Oidc>, shutdown: CancellationToken) {
        let mut wait = Duration::from_secs(1);
        loop {
            match self.discover().await {
                Ok(()) => {
                    info!(issuer = %self.config.issuer, "identity provider discovered");
                    wait = REFRESH;
                }
                Err(err) if self.is_available() => {
                    warn!(issuer = %self.config.issuer, %err,
                        "identity provider refresh failed; the keys read before stay in use");
                    wait = RETRY_MAX;
                }
                Err(err) => {
                    error!(issuer = %self.config.issuer, %err,
                        "identity provider unreachable: sign-in is unavailable until it answers");
                    wait = (wait * 2).min(RETRY_MAX);
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// The session the request's cookie carries, if valid and unexpired.
    pub fn signed_in(&self, headers: &HeaderMap) -> Option<SignedIn> {
        let cookie = session::cookie(headers, SESSION_COOKIE)?;
        self.signer
            .open(SESSION_KIND, cookie, SystemTime::now())
            // debug, not info: anyone can send a bad cookie, as often as they like.
            .inspect_err(|err| debug!(%err, "session cookie not accepted"))
            .ok()
    }

    fn set(&self, name: &str, value: &str, lifetime: Duration) -> (axum::http::HeaderName, String) {
        let secure = self.config.secure_cookies();
        (
            SET_COOKIE,
            session::set_cookie(name, value, lifetime, secure),
        )
    }

    fn clear(&self, name: &str) -> (axum::http::HeaderName, String) {
        (
            SET_COOKIE,
            session::clear_cookie(name, self.config.secure_cookies()),
        )
    }
}

/// The sign-in routes; added only when `identity_check = "oidc"`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(SIGNIN_PATH, get(signin))
        .route(CALLBACK_PATH, get(callback::callback))
        .route(SIGNOUT_PATH, post(signout))
}

/// Where a sign-in may return to: a task's first page or the start page,
/// never a URL from outside (no open redirect).
pub fn safe_next(path: &str) -> &'static str {
    [Task::Reset, Task::Change, Task::Unlock]
        .into_iter()
        .find(|t| path == t.path() || path.starts_with(&format!("{}/", t.path())))
        .map_or("/", Task::path)
}

/// 303 to `/signin`, coming back to `path` afterwards.
pub fn to_signin(path: &str) -> Response {
    let location = format!("{SIGNIN_PATH}?next={}", safe_next(path));
    (StatusCode::SEE_OTHER, [(LOCATION, location)]).into_response()
}

fn oidc(state: &AppState) -> &Oidc {
    state
        .oidc
        .as_deref()
        .expect("the sign-in routes are added only with identity_check = \"oidc\"")
}

#[derive(Deserialize)]
struct SigninQuery {
    #[serde(default)]
    next: String,
}

async fn signin(
    State(state): State<AppState>,
    lang: Lang,
    Query(query): Query<SigninQuery>,
) -> Response {
    let oidc = oidc(&state);
    let settings = state.settings.current();
    let Some(provider) = oidc.provider() else {
        warn!("sign-in asked for while the identity provider is unreachable");
        return signin_pages::unavailable(&settings, lang);
    };
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request = provider
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .set_pkce_challenge(challenge);
    for scope in &oidc.config.scopes {
        request = request.add_scope(Scope::new(scope.clone()));
    }
    for acr in &oidc.config.required_acr {
        request = request.add_auth_context_value(AuthenticationContextClass::new(acr.clone()));
    }
    let (url, csrf_state, nonce) = request.url();
    let pending = Pending {
        state: csrf_state.secret().clone(),
        nonce: nonce.secret().clone(),
        pkce_verifier: verifier.secret().clone(),
        next: safe_next(&query.next).to_owned(),
    };
    let cookie = oidc
        .signer
        .seal(PENDING_KIND, &pending, SystemTime::now(), PENDING_LIFETIME);
    let set = oidc.set(PENDING_COOKIE, &cookie, PENDING_LIFETIME);
    (StatusCode::SEE_OTHER, [(LOCATION, url.to_string()), set]).into_response()
}

#[derive(Deserialize)]
struct SignOutForm {
    #[serde(default)]
    csrf: String,
}

impl CarriesToken for SignOutForm {
    fn csrf_token(&self) -> &str {
        &self.csrf
    }
}

async fn signout(
    State(state): State<AppState>,
    lang: Lang,
    headers: HeaderMap,
    _: Checked<SignOutForm>,
) -> Response {
    let oidc = oidc(&state);
    if let Some(who) = oidc.signed_in(&headers) {
        info!(account = %who.account, "signed out");
    }
    let clear = oidc.clear(SESSION_COOKIE);
    let provider_logout = oidc.provider_logout_url();
    let page =
        signin_pages::signed_out(&state.settings.current(), lang, provider_logout.as_deref());
    ([clear], page).into_response()
}

#[cfg(test)]
mod tests;

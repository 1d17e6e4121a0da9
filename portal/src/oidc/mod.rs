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

pub mod config;
pub mod http;
mod identity;

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::header::{LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{AppendHeaders, IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndSessionUrl, EndpointMaybeSet,
    EndpointNotSet, EndpointSet, IssuerUrl, LogoutRequest, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, PostLogoutRedirectUrl, ProviderMetadataWithLogout, RedirectUrl, Scope,
    TokenResponse,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

pub use self::config::{OidcConfig, OidcConfigError};
use self::http::{HttpClient, HttpError};
pub use self::identity::Identity;
use crate::csrf::{CarriesToken, Checked};
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
        .route(CALLBACK_PATH, get(callback))
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

async fn signin(State(state): State<AppState>, Query(query): Query<SigninQuery>) -> Response {
    let oidc = oidc(&state);
    let settings = state.settings.current();
    let Some(provider) = oidc.provider() else {
        warn!("sign-in asked for while the identity provider is unreachable");
        return signin_pages::unavailable(&settings);
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
    if !oidc.config.required_acr.is_empty() {
        for acr in &oidc.config.required_acr {
            request = request.add_auth_context_value(
                openidconnect::AuthenticationContextClass::new(acr.clone()),
            );
        }
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
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
    /// RFC 9207: which provider answered, against mix-up attacks.
    iss: Option<String>,
}

/// Why a sign-in was not accepted: logged in full, shown in plain words.
enum Refused {
    /// Not this browser's sign-in, or too old (forged or replayed `state`).
    NotOurs(String),
    /// The provider said no (cancelled, no such user...).
    Provider(String),
    /// The code or the ID token did not check out.
    Invalid(String),
    /// Valid, but not strong enough (`required_amr`, `required_acr`).
    TooWeak(String),
    /// Valid, but without a usable account claim.
    NoAccount(String),
}

async fn callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<CallbackQuery>,
) -> Response {
    let oidc = oidc(&state);
    let settings = state.settings.current();
    // The pending cookie is for one callback only, whatever its outcome.
    let clear = oidc.clear(PENDING_COOKIE);
    let Some(provider) = oidc.provider() else {
        return signin_pages::unavailable(&settings);
    };
    match complete(oidc, &provider, &headers, query).await {
        Ok((who, next)) => {
            info!(account = %who.account, "signed in");
            let lifetime = oidc.config.session_lifetime;
            let cookie = oidc
                .signer
                .seal(SESSION_KIND, &who, SystemTime::now(), lifetime);
            let set = oidc.set(SESSION_COOKIE, &cookie, lifetime);
            // Appended, not inserted: both Set-Cookie headers must go out.
            let cookies = AppendHeaders([clear, set]);
            (StatusCode::SEE_OTHER, [(LOCATION, next)], cookies).into_response()
        }
        Err(refused) => {
            let page = match &refused {
                Refused::NotOurs(why) => {
                    warn!(why, "sign-in callback refused: not this browser's sign-in");
                    signin_pages::not_ours(&settings)
                }
                Refused::Provider(why) => {
                    warn!(why, "the identity provider did not sign the user in");
                    signin_pages::provider_refused(&settings, why)
                }
                Refused::Invalid(why) => {
                    error!(
                        why,
                        "sign-in callback refused: the code or ID token did not verify"
                    );
                    signin_pages::invalid(&settings)
                }
                Refused::TooWeak(why) => {
                    warn!(why, "sign-in refused: authentication not strong enough");
                    signin_pages::too_weak(&settings)
                }
                Refused::NoAccount(why) => {
                    warn!(why, "sign-in refused: no account in the ID token");
                    signin_pages::no_account(&settings, &oidc.config.account_claim)
                }
            };
            // Any session from before is ended too: a refused sign-in must
            // not leave the previous user acting.
            let clear_session = oidc.clear(SESSION_COOKIE);
            let cookies = AppendHeaders([clear, clear_session]);
            (StatusCode::FORBIDDEN, cookies, page).into_response()
        }
    }
}

/// The callback's checks, in order: this browser's pending sign-in and its
/// `state`, the provider's answer, the code exchange with the PKCE
/// verifier, the ID token (signature, issuer, audience, expiry, nonce),
/// the strength of the authentication, the account claim.
async fn complete(
    oidc: &Oidc,
    provider: &Provider,
    headers: &HeaderMap,
    query: CallbackQuery,
) -> Result<(SignedIn, String), Refused> {
    let pending: Pending = session::cookie(headers, PENDING_COOKIE)
        .ok_or_else(|| Refused::NotOurs("no pending sign-in cookie".into()))
        .and_then(|c| {
            oidc.signer
                .open(PENDING_KIND, c, SystemTime::now())
                .map_err(|e| Refused::NotOurs(e.to_string()))
        })?;
    // Not a secret compared with an attacker's guesses: the state only has
    // to match the value this browser's own signed cookie holds.
    if query.state.as_deref() != Some(pending.state.as_str()) {
        return Err(Refused::NotOurs(
            "state differs from the pending sign-in's".into(),
        ));
    }
    if query
        .iss
        .as_deref()
        .is_some_and(|iss| iss != oidc.issuer.as_str())
    {
        return Err(Refused::NotOurs(format!(
            "the answer names another issuer: {:?}",
            query.iss
        )));
    }
    if let Some(error) = query.error {
        let description = query.error_description.unwrap_or_default();
        return Err(Refused::Provider(
            format!("{error} {description}").trim().to_owned(),
        ));
    }
    let code = query
        .code
        .ok_or_else(|| Refused::Invalid("the callback carries no code".into()))?;
    let token = provider
        .exchange_code(AuthorizationCode::new(code))
        .map_err(|e| Refused::Invalid(e.to_string()))?
        .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier))
        .request_async(&oidc.http)
        .await
        .map_err(|e| Refused::Invalid(format!("code exchange: {}", crate::reload::chain(&e))))?;
    let id_token = token
        .id_token()
        .ok_or_else(|| Refused::Invalid("the token answer has no ID token".into()))?;
    let claims = id_token
        .claims(&provider.id_token_verifier(), &Nonce::new(pending.nonce))
        .map_err(|e| Refused::Invalid(format!("ID token: {}", crate::reload::chain(&e))))?;
    let subject = claims.subject().as_str();
    let amr: Vec<&str> = claims
        .auth_method_refs()
        .map(|v| v.iter().map(|m| m.as_str()).collect())
        .unwrap_or_default();
    let acr = claims.auth_context_ref().map(|a| a.as_str());
    check_strength(&oidc.config, &amr, acr).map_err(|why| {
        Refused::TooWeak(format!("sub {subject}: {why} (amr {amr:?}, acr {acr:?})"))
    })?;
    // The signature was verified above: the payload's claims are the
    // provider's, whichever one is configured (`upn` is not a standard
    // claim, so it is read from the JSON rather than typed accessors).
    let account = claim(&id_token.to_string(), &oidc.config.account_claim).ok_or_else(|| {
        Refused::NoAccount(format!(
            "sub {subject}: no usable {:?} claim",
            oidc.config.account_claim
        ))
    })?;
    Ok((SignedIn { account }, pending.next))
}

/// Whether `amr` holds every required method and `acr` is one accepted.
pub fn check_strength(config: &OidcConfig, amr: &[&str], acr: Option<&str>) -> Result<(), String> {
    let missing: Vec<&str> = config
        .required_amr
        .iter()
        .map(String::as_str)
        .filter(|m| !amr.contains(m))
        .collect();
    if !missing.is_empty() {
        return Err(format!("amr lacks {missing:?}"));
    }
    if !config.required_acr.is_empty()
        && !acr.is_some_and(|a| config.required_acr.iter().any(|r| r == a))
    {
        return Err(format!("acr is not one of {:?}", config.required_acr));
    }
    Ok(())
}

/// A string claim of a compact JWT (already verified), usable as an
/// account: not empty, not too long, no control characters.
fn claim(jwt: &str, name: &str) -> Option<String> {
    let payload = jwt.split('.').nth(1)?;
    let json: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    let value = json.get(name)?.as_str()?.trim();
    let usable = !value.is_empty()
        && value.len() <= crate::handlers::MAX_ACCOUNT_BYTES
        && !value.chars().any(char::is_control);
    usable.then(|| value.to_owned())
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
    headers: HeaderMap,
    Checked { form: _, token: _ }: Checked<SignOutForm>,
) -> Response {
    let oidc = oidc(&state);
    if let Some(who) = oidc.signed_in(&headers) {
        info!(account = %who.account, "signed out");
    }
    let clear = oidc.clear(SESSION_COOKIE);
    let provider_logout = oidc.provider_logout_url();
    let page = signin_pages::signed_out(&state.settings.current(), provider_logout.as_deref());
    ([clear], page).into_response()
}

#[cfg(test)]
mod tests;

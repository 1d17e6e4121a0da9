//! `GET /signin/callback`: the provider's answer checked, in order: this
//! browser's pending sign-in and its `state`, the issuer named (RFC 9207),
//! the provider's error if any, the code exchanged with the PKCE verifier,
//! the ID token verified (signature, issuer, audience, expiry, nonce), the
//! strength of the authentication, the account claim. Only then a session.

use std::time::SystemTime;

use axum::extract::{Query, State};
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{AppendHeaders, IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openidconnect::{AuthorizationCode, Nonce, PkceCodeVerifier, TokenResponse};
use serde::Deserialize;
use tracing::{error, info, warn};

use super::Oidc;
use super::config::OidcConfig;
use super::{PENDING_KIND, Pending, Provider, SESSION_KIND, SignedIn, oidc};
use crate::i18n::Lang;
use crate::session::{self, PENDING_COOKIE, SESSION_COOKIE};
use crate::{AppState, signin_pages};

#[derive(Deserialize)]
pub(super) struct CallbackQuery {
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

pub(super) async fn callback(
    State(state): State<AppState>,
    lang: Lang,
    headers: HeaderMap,
    Query(query): Query<CallbackQuery>,
) -> Response {
    let oidc = oidc(&state);
    let settings = state.settings.current();
    // The pending cookie is for one callback only, whatever its outcome.
    let clear = oidc.clear(PENDING_COOKIE);
    let Some(provider) = oidc.provider() else {
        return signin_pages::unavailable(&settings, lang);
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
                    signin_pages::not_ours(&settings, lang)
                }
                Refused::Provider(why) => {
                    warn!(why, "the identity provider did not sign the user in");
                    signin_pages::provider_refused(&settings, lang, why)
                }
                Refused::Invalid(why) => {
                    error!(
                        why,
                        "sign-in callback refused: the code or ID token did not verify"
                    );
                    signin_pages::invalid(&settings, lang)
                }
                Refused::TooWeak(why) => {
                    warn!(why, "sign-in refused: authentication not strong enough");
                    signin_pages::too_weak(&settings, lang)
                }
                Refused::NoAccount(why) => {
                    warn!(why, "sign-in refused: no account in the ID token");
                    signin_pages::no_account(&settings, lang, &oidc.config.account_claim)
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
    let anchor = oidc.config.anchor;
    Ok((SignedIn { account, anchor }, pending.next))
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
pub(super) fn claim(jwt: &str, name: &str) -> Option<String> {
    let payload = jwt.split('.').nth(1)?;
    let json: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    let value = json.get(name)?.as_str()?.trim();
    let usable = !value.is_empty()
        && value.len() <= crate::handlers::MAX_ACCOUNT_BYTES
        && !value.chars().any(char::is_control);
    usable.then(|| value.to_owned())
}

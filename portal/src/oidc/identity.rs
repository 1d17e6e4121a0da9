//! Who the request may act for, as an extractor: every handler that names
//! an account takes one, so none can forget the sign-in.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};

use envelope::Anchor;

use super::{AnchorKind, SignedIn, safe_next, to_signin};
use crate::i18n::Lang;
use crate::{AppState, signin_pages};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// `identity_check = "none"`: the account comes from the form (demo).
    Anyone,
    /// `identity_check = "oidc"`: the account of the valid session cookie.
    SignedIn(SignedIn),
}

impl Identity {
    /// How the directory finds `account`, the one [`crate::handlers`]
    /// settled on.
    pub fn anchor(&self, account: &str) -> Anchor {
        match self {
            Identity::SignedIn(SignedIn {
                anchor: AnchorKind::SourceAnchor,
                ..
            }) => Anchor::SourceAnchor(account.to_owned()),
            _ => Anchor::UserPrincipalName(account.to_owned()),
        }
    }
}

impl FromRequestParts<AppState> for Identity {
    /// Without a session: 303 to `/signin`, returning to this task after
    /// (a page linking there, for a form post).
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let Some(oidc) = state.oidc.as_deref() else {
            return Ok(Identity::Anyone);
        };
        if let Some(who) = oidc.signed_in(&parts.headers) {
            return Ok(Identity::SignedIn(who));
        }
        // A form posted after the session expired gets a page, not a
        // redirect: browsers apply the CSP's form-action 'self' to every
        // redirect after a form post, and the chain ends at the provider.
        if parts.method == Method::POST {
            let settings = state.settings.current();
            let lang = parts
                .headers
                .get(axum::http::header::ACCEPT_LANGUAGE)
                .and_then(|v| v.to_str().ok())
                .map_or(Lang::En, Lang::negotiate);
            let page = signin_pages::expired(&settings, lang, safe_next(parts.uri.path()));
            return Err((StatusCode::UNAUTHORIZED, page).into_response());
        }
        Err(to_signin(parts.uri.path()))
    }
}

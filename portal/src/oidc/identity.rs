//! Who the request may act for, as an extractor: every handler that names
//! an account takes one, so none can forget the sign-in.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::Response;

use super::{SignedIn, to_signin};
use crate::AppState;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// `identity_check = "none"`: the account comes from the form (demo).
    Anyone,
    /// `identity_check = "oidc"`: the account of the valid session cookie.
    SignedIn(SignedIn),
}

impl FromRequestParts<AppState> for Identity {
    /// Without a session: 303 to `/signin`, returning to this task after.
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let Some(oidc) = state.oidc.as_deref() else {
            return Ok(Identity::Anyone);
        };
        oidc.signed_in(&parts.headers)
            .map(Identity::SignedIn)
            .ok_or_else(|| to_signin(parts.uri.path()))
    }
}

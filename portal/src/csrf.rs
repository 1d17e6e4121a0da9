//! Cross-site request forgery protection: the synchronizer-token pattern
//! without server-side sessions. Each browser gets a random id in the
//! `portal_csrf` cookie (HttpOnly, SameSite=Strict); every form carries
//! HMAC-SHA256(server key, that id), and a POST is accepted only when its
//! token matches the cookie it came with. Another site can neither read the
//! cookie nor compute the token, and a token taken from one browser fails
//! with any other browser's cookie.
//!
//! The server key comes from `csrf_key_file`, shared by every replica behind
//! a balancer so that each accepts the forms the others served. Without it
//! the key is made at start and never stored: a restart invalidates the
//! forms open at that moment, and two replicas refuse each other's forms.

use std::sync::Arc;

use axum::extract::{Form, FromRequest, Request, State};
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde::de::DeserializeOwned;
use tracing::warn;

use crate::i18n::{Lang, Msg};
use crate::{AppState, pages};

pub const COOKIE_NAME: &str = "portal_csrf";
/// The form field carrying the token.
pub const FIELD: &str = "csrf";
/// Bytes of randomness in a browser id.
const ID_BYTES: usize = 32;
/// Binds the tag to its purpose, should the key ever sign anything else.
const CONTEXT: &[u8] = b"relay portal csrf v1\n";

/// The CSRF key and the random source for browser ids.
pub struct Csrf {
    key: hmac::Key,
    rng: SystemRandom,
}

/// Why a POST was refused; for the log, never shown in detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the request carries no portal_csrf cookie")]
    NoCookie,
    #[error("the form's token does not match the browser's cookie")]
    BadToken,
}

impl Csrf {
    pub fn new() -> Csrf {
        let rng = SystemRandom::new();
        // ring fails only when the operating system has no random source,
        // and then nothing in this portal could be secure.
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng)
            .expect("the operating system's random number generator works");
        Csrf { key, rng }
    }

    /// With a configured key (`csrf_key_file`), shared by replicas.
    pub fn with_key(key: &[u8]) -> Csrf {
        Csrf {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
            rng: SystemRandom::new(),
        }
    }

    /// A fresh browser id, for the cookie.
    pub fn new_browser_id(&self) -> String {
        let mut id = [0u8; ID_BYTES];
        self.rng
            .fill(&mut id)
            .expect("the operating system's random number generator works");
        URL_SAFE_NO_PAD.encode(id)
    }

    /// The token that forms served to `browser_id` carry.
    pub fn token(&self, browser_id: &str) -> String {
        URL_SAFE_NO_PAD.encode(hmac::sign(&self.key, &message(browser_id)))
    }

    /// Whether `token` was made for `browser_id`, in constant time.
    pub fn verify(&self, browser_id: Option<&str>, token: &str) -> Result<(), Refusal> {
        let id = browser_id.ok_or(Refusal::NoCookie)?;
        let tag = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| Refusal::BadToken)?;
        hmac::verify(&self.key, &message(id), &tag).map_err(|_| Refusal::BadToken)
    }
}

impl Default for Csrf {
    fn default() -> Csrf {
        Csrf::new()
    }
}

fn message(browser_id: &str) -> Vec<u8> {
    [CONTEXT, browser_id.as_bytes()].concat()
}

/// The browser's id, from its cookie or just made (`fresh`: the request
/// carried none, so no form it posts can be trusted).
#[derive(Debug, Clone)]
pub struct Browser {
    pub id: String,
    pub fresh: bool,
}

/// The `portal_csrf` cookie's value when it looks like one of ours.
fn cookie_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value.to_owned())
        .filter(|v| {
            v.len() == URL_SAFE_NO_PAD.encode([0u8; ID_BYTES]).len()
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Middleware: gives every browser an id cookie and every handler the
/// [`Browser`]. Without TLS the cookie cannot carry `Secure` nor a
/// `__Host-` name; behind a TLS proxy a production portal adds both.
pub async fn browser_cookie(
    State(csrf): State<Arc<Csrf>>,
    mut request: Request,
    next: Next,
) -> Response {
    let browser = match cookie_id(request.headers()) {
        Some(id) => Browser { id, fresh: false },
        None => Browser {
            id: csrf.new_browser_id(),
            fresh: true,
        },
    };
    request.extensions_mut().insert(browser.clone());
    let mut response = next.run(request).await;
    if browser.fresh {
        let cookie = format!(
            "{COOKIE_NAME}={}; Path=/; HttpOnly; SameSite=Strict",
            browser.id
        );
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(SET_COOKIE, value);
        }
    }
    response
}

/// A form field that carries the CSRF token.
pub trait CarriesToken {
    fn csrf_token(&self) -> &str;
}

/// A posted form whose token matched the browser's cookie, and the token
/// to put in the page rendered in answer. Every POST handler takes one, so
/// none can forget the check.
pub struct Checked<T> {
    pub form: T,
    pub token: String,
}

impl<T> FromRequest<AppState> for Checked<T>
where
    T: DeserializeOwned + CarriesToken + Send,
{
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Response> {
        let browser = request.extensions().get::<Browser>().cloned();
        let path = request.uri().path().to_owned();
        let lang = Lang::from_headers(request.headers());
        let Form(form) = Form::<T>::from_request(request, state)
            .await
            .map_err(|rejection| {
                warn!(%path, %rejection, "unreadable form");
                let page = pages::problem(
                    &state.settings.current(),
                    lang,
                    &lang.text(&Msg::FormUnreadableHeading),
                    &lang.text(&Msg::FormUnreadable),
                );
                (rejection.status(), page).into_response()
            })?;
        // A cookie made for this very request proves nothing.
        let known = browser.filter(|b| !b.fresh);
        let verified = match &known {
            Some(b) => state
                .csrf
                .verify(Some(&b.id), form.csrf_token())
                .map(|()| state.csrf.token(&b.id)),
            None => Err(Refusal::NoCookie),
        };
        match verified {
            Ok(token) => Ok(Checked { form, token }),
            Err(refusal) => {
                warn!(%path, %refusal, "form refused: CSRF check failed");
                let page = pages::problem(
                    &state.settings.current(),
                    lang,
                    &lang.text(&Msg::FormExpiredHeading),
                    &lang.text(&Msg::FormExpired),
                );
                Err((StatusCode::FORBIDDEN, page).into_response())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_accepted_with_its_own_cookie_only() {
        let csrf = Csrf::new();
        let alice = csrf.new_browser_id();
        let mallory = csrf.new_browser_id();
        let token = csrf.token(&alice);
        assert_eq!(csrf.verify(Some(&alice), &token), Ok(()));
        // Missing cookie.
        assert_eq!(csrf.verify(None, &token), Err(Refusal::NoCookie));
        // Wrong token, empty token, not base64.
        let mut wrong = token.clone().into_bytes();
        wrong[0] = if wrong[0] == b'A' { b'B' } else { b'A' };
        let wrong = String::from_utf8(wrong).unwrap();
        assert_eq!(csrf.verify(Some(&alice), &wrong), Err(Refusal::BadToken));
        assert_eq!(csrf.verify(Some(&alice), ""), Err(Refusal::BadToken));
        assert_eq!(csrf.verify(Some(&alice), "%%%"), Err(Refusal::BadToken));
        // A token from another browser's cookie.
        assert_eq!(csrf.verify(Some(&mallory), &token), Err(Refusal::BadToken));
        // A token from another portal instance (another key).
        assert_eq!(
            Csrf::new().verify(Some(&alice), &token),
            Err(Refusal::BadToken)
        );
    }

    #[test]
    fn replicas_with_the_same_key_accept_each_others_tokens() {
        let one = Csrf::with_key(&[1u8; 32]);
        let two = Csrf::with_key(&[1u8; 32]);
        let other = Csrf::with_key(&[2u8; 32]);
        let id = one.new_browser_id();
        let token = one.token(&id);
        assert_eq!(two.verify(Some(&id), &token), Ok(()));
        assert_eq!(other.verify(Some(&id), &token), Err(Refusal::BadToken));
    }

    #[test]
    fn the_cookie_is_found_among_others_and_must_look_like_ours() {
        let csrf = Csrf::new();
        let id = csrf.new_browser_id();
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_str(&format!("theme=dark; {COOKIE_NAME}={id}; x=1")).unwrap(),
        );
        assert_eq!(cookie_id(&headers), Some(id));
        headers.insert(
            COOKIE,
            HeaderValue::from_static("portal_csrf=short; other=1"),
        );
        assert_eq!(cookie_id(&headers), None);
    }
}

//! Signed cookies, so that replicas behind a balancer need no shared store:
//! whatever one replica signs with the configured `session_key_file`, any
//! other accepts. Two kinds: the session (who signed in, until when) and the
//! pending sign-in (state, nonce, PKCE verifier, where to return).
//!
//! A value is `base64url(json) "." base64url(HMAC-SHA256(key, context, kind,
//! json))`. The JSON carries its own expiry, checked after the signature, so
//! a copied cookie stops working at the same moment everywhere. Signed, not
//! encrypted: the browser that holds a cookie may read it (it holds only
//! what that browser's own sign-in produced), but cannot change it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use axum::http::header::COOKIE;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The signed-in session.
pub const SESSION_COOKIE: &str = "portal_session";
/// The sign-in under way, between the redirect to the provider and back.
pub const PENDING_COOKIE: &str = "portal_signin";
/// Binds a tag to its purpose, should the key ever sign anything else.
const CONTEXT: &[u8] = b"relay portal session v1\n";
/// A cookie longer than this is not one of ours (browsers cap at 4 KiB).
const MAX_COOKIE_BYTES: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CookieError {
    #[error("the cookie is not a signed value")]
    Malformed,
    #[error("the cookie's signature does not match this portal's session key")]
    BadSignature,
    #[error("the cookie has expired")]
    Expired,
}

/// What a signed cookie holds: the value and its expiry (seconds since the
/// epoch).
#[derive(Serialize, serde::Deserialize)]
struct Envelope<T> {
    exp: u64,
    #[serde(rename = "v")]
    value: T,
}

/// The HMAC key the cookies are signed with.
pub struct Signer {
    key: hmac::Key,
}

impl Signer {
    pub fn new(key: &[u8]) -> Signer {
        Signer {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
        }
    }

    /// `value` signed for cookie `kind`, valid for `lifetime` from `now`.
    pub fn seal<T: Serialize>(
        &self,
        kind: &str,
        value: &T,
        now: SystemTime,
        lifetime: Duration,
    ) -> String {
        let exp = seconds(now).saturating_add(lifetime.as_secs());
        let json =
            serde_json::to_vec(&Envelope { exp, value }).expect("plain structs serialise to JSON");
        let tag = hmac::sign(&self.key, &message(kind, &json));
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&json),
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// The value of a cookie `kind` this key signed, unless expired at `now`.
    pub fn open<T: DeserializeOwned>(
        &self,
        kind: &str,
        cookie: &str,
        now: SystemTime,
    ) -> Result<T, CookieError> {
        if cookie.len() > MAX_COOKIE_BYTES {
            return Err(CookieError::Malformed);
        }
        let (json, tag) = cookie.split_once('.').ok_or(CookieError::Malformed)?;
        let json = URL_SAFE_NO_PAD
            .decode(json)
            .map_err(|_| CookieError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| CookieError::Malformed)?;
        hmac::verify(&self.key, &message(kind, &json), &tag)
            .map_err(|_| CookieError::BadSignature)?;
        let envelope: Envelope<T> =
            serde_json::from_slice(&json).map_err(|_| CookieError::Malformed)?;
        if envelope.exp <= seconds(now) {
            return Err(CookieError::Expired);
        }
        Ok(envelope.value)
    }
}

/// The kind is part of the signed message: a pending-sign-in cookie can
/// never pass for a session.
fn message(kind: &str, json: &[u8]) -> Vec<u8> {
    [CONTEXT, kind.as_bytes(), b"\n", json].concat()
}

fn seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The value of cookie `name` in the request, if any.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value)
}

/// A `Set-Cookie` value. HttpOnly always; SameSite=Lax because the
/// provider's redirect back is a cross-site top-level GET, which Strict
/// would strip the cookie from; `Secure` when the portal is served over
/// HTTPS (`secure`), which the browser then enforces.
pub fn set_cookie(name: &str, value: &str, max_age: Duration, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{name}={value}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{secure}",
        max_age.as_secs()
    )
}

/// A `Set-Cookie` value that deletes cookie `name`.
pub fn clear_cookie(name: &str, secure: bool) -> String {
    set_cookie(name, "", Duration::ZERO, secure)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
    struct Who {
        account: String,
    }

    fn ada() -> Who {
        Who {
            account: "ada@contoso.example".into(),
        }
    }

    #[test]
    fn a_cookie_opens_with_the_same_key_until_it_expires() {
        let now = SystemTime::now();
        let one = Signer::new(&[1u8; 32]);
        let cookie = one.seal("session", &ada(), now, Duration::from_secs(600));
        // Another replica with the same key.
        let two = Signer::new(&[1u8; 32]);
        assert_eq!(two.open::<Who>("session", &cookie, now), Ok(ada()));
        let later = now + Duration::from_secs(601);
        assert_eq!(
            two.open::<Who>("session", &cookie, later),
            Err(CookieError::Expired)
        );
        let other = Signer::new(&[2u8; 32]);
        assert_eq!(
            other.open::<Who>("session", &cookie, now),
            Err(CookieError::BadSignature)
        );
    }

    #[test]
    fn a_changed_cookie_or_another_kind_is_refused() {
        let now = SystemTime::now();
        let signer = Signer::new(&[1u8; 32]);
        let cookie = signer.seal("session", &ada(), now, Duration::from_secs(600));
        assert_eq!(
            signer.open::<Who>("pending", &cookie, now),
            Err(CookieError::BadSignature)
        );
        // The payload rewritten to name another account, signature kept.
        let (_, tag) = cookie.split_once('.').unwrap();
        let forged_json = serde_json::to_vec(&Envelope {
            exp: seconds(now) + 600,
            value: Who {
                account: "grace@contoso.example".into(),
            },
        })
        .unwrap();
        let forged = format!("{}.{tag}", URL_SAFE_NO_PAD.encode(forged_json));
        assert_eq!(
            signer.open::<Who>("session", &forged, now),
            Err(CookieError::BadSignature)
        );
        for junk in ["", ".", "abc", "a.b.c", "%%.%%"] {
            assert!(signer.open::<Who>("session", junk, now).is_err(), "{junk}");
        }
        let huge = "a".repeat(MAX_COOKIE_BYTES + 1);
        assert_eq!(
            signer.open::<Who>("session", &huge, now),
            Err(CookieError::Malformed)
        );
    }

    #[test]
    fn cookies_are_found_by_name_and_set_with_their_attributes() {
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_static("portal_csrf=x; portal_session=abc.def"),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("abc.def"));
        assert_eq!(cookie(&headers, PENDING_COOKIE), None);
        let set = set_cookie(SESSION_COOKIE, "v", Duration::from_secs(900), true);
        assert_eq!(
            set,
            "portal_session=v; Path=/; Max-Age=900; HttpOnly; SameSite=Lax; Secure"
        );
        assert!(clear_cookie(PENDING_COOKIE, false).contains("Max-Age=0"));
    }
}

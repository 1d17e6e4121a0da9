//! Shared access signatures: the relay's bearer credentials, modelled on Azure
//! Relay's SAS tokens.
//!
//! # Layout
//! - [`Key`]: a 256-bit HMAC key, zeroized on drop, masked in `Debug`.
//! - [`Right`], [`KeySlot`]: what a key grants and which of its two keys it is.
//! - [`mint`]: signs a token for a resource, right and expiry.
//! - [`Token::parse`] and [`Token::verify`]: the broker's side.
//!
//! Clients never send a key, only a token signed with it:
//!
//! ```text
//! SharedAccessSignature sr=<resource>&sig=<base64url HMAC-SHA256>&se=<expiry, Unix s>&skn=<right>
//! ```
//!
//! The signed string is `relay.v1\n<resource>\n<right>\n<expiry>`; the resource
//! is a tenant name, or `*` for the operator credential. This crate has no
//! clock and no I/O: the caller passes the current time in.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::{Zeroize, Zeroizing};

/// The prefix of every token string.
pub const TOKEN_PREFIX: &str = "SharedAccessSignature ";
/// The resource of the operator credential.
pub const OPERATOR_RESOURCE: &str = "*";
/// Bytes in a key.
pub const KEY_LEN: usize = 32;
/// The longest token string accepted, so a parser never works on huge input.
pub const MAX_TOKEN_LEN: usize = 512;

/// What a key grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Right {
    /// Agents: open sessions, answer requests.
    Listen,
    /// Portals: submit requests, ping.
    Send,
    /// Tenant administrators.
    Manage,
    /// The broker operator: creates and deletes tenants, administers all.
    Operator,
}

impl Right {
    /// The name used as `skn` in tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            Right::Listen => "listen",
            Right::Send => "send",
            Right::Manage => "manage",
            Right::Operator => "operator",
        }
    }

    /// Parses an `skn` value.
    pub fn from_name(name: &str) -> Option<Right> {
        Some(match name {
            "listen" => Right::Listen,
            "send" => Right::Send,
            "manage" => Right::Manage,
            "operator" => Right::Operator,
            _ => return None,
        })
    }
}

impl fmt::Display for Right {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Each right has two keys so that clients can move to one while the other is
/// replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeySlot {
    Primary,
    Secondary,
}

impl KeySlot {
    pub fn as_str(self) -> &'static str {
        match self {
            KeySlot::Primary => "primary",
            KeySlot::Secondary => "secondary",
        }
    }
}

/// Why a key could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("key is not valid base64")]
    NotBase64,
    #[error("key must be {KEY_LEN} bytes, found {0}")]
    WrongLength(usize),
    #[error("the system random number generator failed")]
    Random,
}

/// A 256-bit signing key. Its bytes never appear in `Debug` output and are
/// zeroized when it is dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Key(Zeroizing<[u8; KEY_LEN]>);

impl Key {
    /// A fresh key from the operating system's random number generator.
    pub fn generate() -> Result<Key, KeyError> {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        SystemRandom::new()
            .fill(bytes.as_mut())
            .map_err(|_| KeyError::Random)?;
        Ok(Key(bytes))
    }

    /// Reads a key from standard base64, ignoring surrounding white space.
    pub fn from_base64(text: &str) -> Result<Key, KeyError> {
        let mut decoded = Zeroizing::new(
            STANDARD
                .decode(text.trim())
                .map_err(|_| KeyError::NotBase64)?,
        );
        if decoded.len() != KEY_LEN {
            let len = decoded.len();
            decoded.zeroize();
            return Err(KeyError::WrongLength(len));
        }
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        bytes.copy_from_slice(&decoded);
        Ok(Key(bytes))
    }

    /// The key as standard base64, in a buffer that is zeroized on drop.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.0.as_ref()))
    }

    fn hmac_key(&self) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, self.0.as_ref())
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(***)")
    }
}

impl serde::Serialize for Key {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_base64())
    }
}

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Key, D::Error> {
        let text = Zeroizing::new(String::deserialize(deserializer)?);
        Key::from_base64(&text).map_err(serde::de::Error::custom)
    }
}

/// A token string. It is a bearer credential, so `Debug` masks it.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedToken(Zeroizing<String>);

impl SignedToken {
    /// The token text, to put on the wire and nowhere else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SignedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SignedToken(***)")
    }
}

fn string_to_sign(resource: &str, right: Right, expiry_unix: u64) -> String {
    format!("relay.v1\n{resource}\n{}\n{expiry_unix}", right.as_str())
}

/// Signs a token for `resource` (a tenant, or [`OPERATOR_RESOURCE`]) with the
/// given right, valid until `expiry_unix` (seconds).
pub fn mint(key: &Key, resource: &str, right: Right, expiry_unix: u64) -> SignedToken {
    let tag = hmac::sign(
        &key.hmac_key(),
        string_to_sign(resource, right, expiry_unix).as_bytes(),
    );
    let sig = URL_SAFE_NO_PAD.encode(tag.as_ref());
    SignedToken(Zeroizing::new(format!(
        "{TOKEN_PREFIX}sr={resource}&sig={sig}&se={expiry_unix}&skn={}",
        right.as_str()
    )))
}

/// Why a token string was refused before any key was tried.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token is longer than {MAX_TOKEN_LEN} bytes")]
    TooLong,
    #[error("token does not start with \"SharedAccessSignature \"")]
    MissingPrefix,
    #[error("token field {0:?} is malformed")]
    MalformedField(&'static str),
    #[error("token lacks the field {0:?}")]
    MissingField(&'static str),
    #[error("token repeats a field")]
    DuplicateField,
    #[error("token has an unknown field")]
    UnknownField,
    #[error("token names an unknown right")]
    UnknownRight,
}

/// A parsed, not yet verified token.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// The tenant (or `*`) the token was signed for.
    pub resource: String,
    pub right: Right,
    /// Expiry, Unix seconds.
    pub expiry_unix: u64,
    signature: [u8; 32],
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("resource", &self.resource)
            .field("right", &self.right)
            .field("expiry_unix", &self.expiry_unix)
            .finish_non_exhaustive()
    }
}

impl Token {
    /// Parses a token string. Never echoes any part of the input in its errors.
    pub fn parse(text: &str) -> Result<Token, TokenError> {
        if text.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong);
        }
        let fields = text
            .strip_prefix(TOKEN_PREFIX)
            .ok_or(TokenError::MissingPrefix)?;
        let (mut sr, mut sig, mut se, mut skn) = (None, None, None, None);
        for field in fields.split('&') {
            let (name, value) = field
                .split_once('=')
                .ok_or(TokenError::MalformedField("field"))?;
            let slot = match name {
                "sr" => &mut sr,
                "sig" => &mut sig,
                "se" => &mut se,
                "skn" => &mut skn,
                _ => return Err(TokenError::UnknownField),
            };
            if slot.replace(value).is_some() {
                return Err(TokenError::DuplicateField);
            }
        }
        let resource = sr.ok_or(TokenError::MissingField("sr"))?;
        if resource.is_empty() || !resource.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::MalformedField("sr"));
        }
        let decoded = URL_SAFE_NO_PAD
            .decode(sig.ok_or(TokenError::MissingField("sig"))?)
            .map_err(|_| TokenError::MalformedField("sig"))?;
        let signature: [u8; 32] = decoded
            .try_into()
            .map_err(|_| TokenError::MalformedField("sig"))?;
        let se = se.ok_or(TokenError::MissingField("se"))?;
        if se.is_empty() || se.len() > 20 || !se.bytes().all(|b| b.is_ascii_digit()) {
            return Err(TokenError::MalformedField("se"));
        }
        let expiry_unix = se.parse().map_err(|_| TokenError::MalformedField("se"))?;
        let right = Right::from_name(skn.ok_or(TokenError::MissingField("skn"))?)
            .ok_or(TokenError::UnknownRight)?;
        Ok(Token {
            resource: resource.to_owned(),
            right,
            expiry_unix,
            signature,
        })
    }

    /// Which of the two keys signed this token, if either. Both keys are always
    /// checked, each in constant time, so timing tells nothing about which
    /// matched or how much of the signature was right.
    pub fn verify(&self, primary: &Key, secondary: &Key) -> Option<KeySlot> {
        let message = string_to_sign(&self.resource, self.right, self.expiry_unix);
        let p = hmac::verify(&primary.hmac_key(), message.as_bytes(), &self.signature).is_ok();
        let s = hmac::verify(&secondary.hmac_key(), message.as_bytes(), &self.signature).is_ok();
        match (p, s) {
            (true, _) => Some(KeySlot::Primary),
            (false, true) => Some(KeySlot::Secondary),
            (false, false) => None,
        }
    }

    /// Whether the token has expired at `now_unix`.
    pub fn is_expired(&self, now_unix: u64) -> bool {
        self.expiry_unix <= now_unix
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> (Key, Key) {
        (Key::generate().unwrap(), Key::generate().unwrap())
    }

    #[test]
    fn minted_tokens_verify_with_the_signing_key_only() {
        let (p, s) = keys();
        let t = Token::parse(mint(&p, "contoso", Right::Send, 1000).expose()).unwrap();
        assert_eq!(t.verify(&p, &s), Some(KeySlot::Primary));
        assert_eq!(t.verify(&s, &p), Some(KeySlot::Secondary));
        let (x, y) = keys();
        assert_eq!(t.verify(&x, &y), None);
        assert_eq!(t.resource, "contoso");
        assert_eq!(t.right, Right::Send);
    }

    #[test]
    fn changing_any_signed_field_breaks_the_signature() {
        let (p, s) = keys();
        let good = mint(&p, "contoso", Right::Listen, 1000);
        for forged in [
            good.expose().replace("sr=contoso", "sr=fabrikam"),
            good.expose().replace("skn=listen", "skn=manage"),
            good.expose().replace("se=1000", "se=9999"),
        ] {
            let t = Token::parse(&forged).unwrap();
            assert_eq!(t.verify(&p, &s), None, "{forged:?}");
        }
    }

    #[test]
    fn expiry_is_exclusive() {
        let (p, _) = keys();
        let t = Token::parse(mint(&p, "a", Right::Send, 100).expose()).unwrap();
        assert!(!t.is_expired(99));
        assert!(t.is_expired(100));
    }

    #[test]
    fn malformed_tokens_get_specific_errors() {
        let (p, _) = keys();
        let good = mint(&p, "a", Right::Send, 100);
        let g = good.expose();
        assert_eq!(Token::parse("Bearer x"), Err(TokenError::MissingPrefix));
        assert_eq!(
            Token::parse(&g.replace("&skn=send", "")),
            Err(TokenError::MissingField("skn"))
        );
        assert_eq!(
            Token::parse(&format!("{g}&sr=b")),
            Err(TokenError::DuplicateField)
        );
        assert_eq!(
            Token::parse(&format!("{g}&x=1")),
            Err(TokenError::UnknownField)
        );
        assert_eq!(
            Token::parse(&g.replace("se=100", "se=-1")),
            Err(TokenError::MalformedField("se"))
        );
        assert_eq!(
            Token::parse(&g.replace("skn=send", "skn=root")),
            Err(TokenError::UnknownRight)
        );
        assert_eq!(
            Token::parse(&"x".repeat(MAX_TOKEN_LEN + 1)),
            Err(TokenError::TooLong)
        );
        let sig_start = g.find("sig=").unwrap() + 4;
        let mut short = g.to_owned();
        short.replace_range(sig_start..sig_start + 4, "");
        assert_eq!(Token::parse(&short), Err(TokenError::MalformedField("sig")));
    }

    #[test]
    fn keys_round_trip_and_never_show_in_debug() {
        let k = Key::generate().unwrap();
        let b64 = k.to_base64();
        assert_eq!(Key::from_base64(&b64).unwrap(), k);
        assert_eq!(format!("{k:?}"), "Key(***)");
        let t = mint(&k, "a", Right::Send, 1);
        assert!(!format!("{t:?}").contains("sig"));
        let parsed = Token::parse(t.expose()).unwrap();
        let sig_text = t
            .expose()
            .split("sig=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap();
        assert!(!format!("{parsed:?}").contains(sig_text));
        assert_eq!(Key::from_base64("AAAA"), Err(KeyError::WrongLength(3)));
        assert_eq!(Key::from_base64("!!"), Err(KeyError::NotBase64));
    }
}

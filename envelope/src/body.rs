//! The plaintexts inside envelopes. Both are padded with zero bytes to a
//! fixed block, so the ciphertext's length tells the broker neither the
//! password's length nor which outcome a reply carries.
//!
//! ```text
//! request body                         reply body
//!   u8   anchor kind (1, 2)              u16  outcome code
//!   u16  anchor length, anchor           u16  message length, message (UTF-8)
//!   u8   flags (bit 0 unlock,            u8   detail count
//!        bit 1 must change at logon)     per detail: u8 key length, key,
//!   u16  new password length, UTF-8                  u16 value length, value
//!   u16  current password length, UTF-8
//!   zero padding to a multiple of 256    zero padding to a multiple of 512
//! ```

use std::fmt;

use zeroize::Zeroizing;

use crate::wire::Reader;

pub const REQUEST_BLOCK: usize = 256;
pub const REPLY_BLOCK: usize = 512;
/// The longest anchor, password or detail value, in bytes. Both sides
/// enforce every limit: the sealer refuses to seal past it, the opener
/// refuses to open past it (`INVALID_BODY` at the agent).
pub const MAX_FIELD: usize = 1024;
/// The longest reply message, in bytes.
pub const MAX_MESSAGE: usize = 4096;
/// The most details a reply carries.
pub const MAX_DETAILS: usize = 32;
/// The longest detail key, in bytes.
pub const MAX_DETAIL_KEY: usize = 64;

/// Operation numbers (relay.v1 `Operation`) that envelopes carry.
pub mod operation {
    pub const RESET_PASSWORD: u8 = 2;
    pub const CHANGE_PASSWORD: u8 = 3;
    pub const UNLOCK_ACCOUNT: u8 = 4;
    pub const GET_PASSWORD_POLICY: u8 = 5;
}

/// Outcome codes carried in [`ReplyBody::outcome`]. Stable: portals show a
/// message per code and read the details listed with each. The same
/// vocabulary, typed: [`Outcome`].
pub mod outcome {
    use super::Outcome;

    pub const SUCCESS: u16 = Outcome::Success as u16;
    /// details: min_length
    pub const PASSWORD_TOO_SHORT: u16 = Outcome::PasswordTooShort as u16;
    /// details: missing (categories), contains (account name or display name token)
    pub const FAILS_COMPLEXITY: u16 = Outcome::FailsComplexity as u16;
    /// details: history_length
    pub const IN_HISTORY: u16 = Outcome::InHistory as u16;
    /// details: allowed_after_unix_ms
    pub const CHANGED_TOO_RECENTLY: u16 = Outcome::ChangedTooRecently as u16;
    pub const WRONG_CURRENT_PASSWORD: u16 = Outcome::WrongCurrentPassword as u16;
    pub const ACCOUNT_DISABLED: u16 = Outcome::AccountDisabled as u16;
    pub const ACCOUNT_LOCKED: u16 = Outcome::AccountLocked as u16;
    pub const USER_NOT_FOUND: u16 = Outcome::UserNotFound as u16;
    pub const SEVERAL_MATCHES: u16 = Outcome::SeveralMatches as u16;
    /// details: right (the directory locations go to the agent's event
    /// log only: the reply reaches an anonymous end user)
    pub const PERMISSION_DENIED: u16 = Outcome::PermissionDenied as u16;
    pub const PROTECTED_ACCOUNT: u16 = Outcome::ProtectedAccount as u16;
    pub const WRITEBACK_DISABLED: u16 = Outcome::WritebackDisabled as u16;
    pub const DIRECTORY_UNAVAILABLE: u16 = Outcome::DirectoryUnavailable as u16;
    /// The agent's per-account limit on password operations was reached;
    /// nothing was done. details: limit (operations per hour),
    /// retry_after_secs
    pub const RATE_LIMITED: u16 = Outcome::RateLimited as u16;
    /// The domain refused the password for a policy reason the agent cannot
    /// attribute to one rule (a banned-password list, a password filter, a
    /// policy it cannot read, or, on a change, possibly the history).
    /// details: history_length (only when the history may be the reason)
    pub const POLICY_REFUSED: u16 = Outcome::PolicyRefused as u16;
    /// The agent refused THIS delivery of the envelope after opening it and
    /// did nothing with it. It says nothing about other deliveries of the
    /// same envelope: a broker can replay an envelope to obtain a genuine
    /// NOT_APPLIED (REPLAYED) and show it instead of the first delivery's
    /// answer, so it never means "nothing was changed". details: reason (the
    /// relay.v1 `EnvelopeRefusal` name without its prefix: INVALID_BODY,
    /// LIFETIME_TOO_LONG, EXPIRED, NOT_YET_VALID, REPLAYED,
    /// DUPLICATE_REQUEST_ID, REQUEST_ID_MISMATCH, OPERATION_MISMATCH,
    /// REPLAY_STORE_UNAVAILABLE)
    pub const NOT_APPLIED: u16 = Outcome::NotApplied as u16;
}

macro_rules! outcomes {
    ($($variant:ident = $code:literal => $name:literal,)*) => {
        /// The outcome vocabulary as a type: matching on it exhaustively makes
        /// an added outcome fail to compile wherever it is not handled.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u16)]
        pub enum Outcome {
            $($variant = $code,)*
        }

        impl Outcome {
            /// Every outcome, in code order.
            pub const ALL: &'static [Outcome] = &[$(Outcome::$variant,)*];

            /// The outcome a code names; `None` for a code this release does
            /// not know (a newer agent's).
            pub fn from_code(code: u16) -> Option<Outcome> {
                match code {
                    $($code => Some(Outcome::$variant),)*
                    _ => None,
                }
            }

            pub fn code(self) -> u16 {
                self as u16
            }

            /// The stable name (PROTOCOL.md "Reply body").
            pub fn name(self) -> &'static str {
                match self {
                    $(Outcome::$variant => $name,)*
                }
            }
        }
    };
}

outcomes! {
    Success = 0 => "SUCCESS",
    PasswordTooShort = 1 => "PASSWORD_TOO_SHORT",
    FailsComplexity = 2 => "FAILS_COMPLEXITY",
    InHistory = 3 => "IN_HISTORY",
    ChangedTooRecently = 4 => "CHANGED_TOO_RECENTLY",
    WrongCurrentPassword = 5 => "WRONG_CURRENT_PASSWORD",
    AccountDisabled = 6 => "ACCOUNT_DISABLED",
    AccountLocked = 7 => "ACCOUNT_LOCKED",
    UserNotFound = 8 => "USER_NOT_FOUND",
    SeveralMatches = 9 => "SEVERAL_MATCHES",
    PermissionDenied = 10 => "PERMISSION_DENIED",
    ProtectedAccount = 11 => "PROTECTED_ACCOUNT",
    WritebackDisabled = 12 => "WRITEBACK_DISABLED",
    DirectoryUnavailable = 13 => "DIRECTORY_UNAVAILABLE",
    RateLimited = 14 => "RATE_LIMITED",
    PolicyRefused = 15 => "POLICY_REFUSED",
    NotApplied = 16 => "NOT_APPLIED",
}

/// A password: zeroized on drop, never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(Zeroizing<String>);

impl Password {
    pub fn new(text: impl Into<String>) -> Password {
        Password(Zeroizing::new(text.into()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// How the portal names the account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Anchor {
    /// The cloud source anchor: by default the base64 objectGUID.
    SourceAnchor(String),
    UserPrincipalName(String),
}

/// What the user asked for, as sealed by the portal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestBody {
    pub anchor: Anchor,
    /// Also clear the lockout (reset with unlock).
    pub unlock: bool,
    /// Require a change at next logon (pwdLastSet = 0).
    pub must_change: bool,
    pub new_password: Option<Password>,
    pub current_password: Option<Password>,
}

impl RequestBody {
    pub fn reset(anchor: Anchor, new_password: Password) -> RequestBody {
        RequestBody {
            anchor,
            unlock: false,
            must_change: false,
            new_password: Some(new_password),
            current_password: None,
        }
    }

    pub fn change(anchor: Anchor, current: Password, new_password: Password) -> RequestBody {
        RequestBody {
            anchor,
            unlock: false,
            must_change: false,
            new_password: Some(new_password),
            current_password: Some(current),
        }
    }

    pub fn without_passwords(anchor: Anchor) -> RequestBody {
        RequestBody {
            anchor,
            unlock: false,
            must_change: false,
            new_password: None,
            current_password: None,
        }
    }

    /// Whether this body fits `operation`.
    pub fn check(&self, op: u8) -> Result<(), &'static str> {
        let has_new = self.new_password.as_ref().is_some_and(|p| !p.0.is_empty());
        let has_current = self
            .current_password
            .as_ref()
            .is_some_and(|p| !p.0.is_empty());
        let flags = self.unlock || self.must_change;
        match op {
            operation::RESET_PASSWORD if has_new && !has_current => Ok(()),
            operation::RESET_PASSWORD => Err("a reset carries a new password and no current one"),
            operation::CHANGE_PASSWORD if has_new && has_current && !flags => Ok(()),
            operation::CHANGE_PASSWORD => {
                Err("a change carries the current and the new password, and no flags")
            }
            operation::UNLOCK_ACCOUNT | operation::GET_PASSWORD_POLICY
                if !has_new && !has_current && !flags =>
            {
                Ok(())
            }
            operation::UNLOCK_ACCOUNT | operation::GET_PASSWORD_POLICY => {
                Err("this operation carries no password and no flags")
            }
            _ => Err("the operation cannot travel in an envelope"),
        }
    }

    /// The padded plaintext.
    pub fn encode(&self) -> Result<Zeroizing<Vec<u8>>, &'static str> {
        let mut out = Zeroizing::new(Vec::with_capacity(REQUEST_BLOCK));
        let (kind, anchor) = match &self.anchor {
            Anchor::SourceAnchor(a) => (1u8, a),
            Anchor::UserPrincipalName(a) => (2u8, a),
        };
        if anchor.is_empty() || anchor.len() > MAX_FIELD {
            return Err("the anchor must have 1-1024 bytes");
        }
        out.push(kind);
        put_u16_field(&mut out, anchor.as_bytes());
        out.push(u8::from(self.unlock) | (u8::from(self.must_change) << 1));
        for p in [&self.new_password, &self.current_password] {
            let bytes = p.as_ref().map_or(&[][..], |p| p.0.as_bytes());
            if bytes.len() > MAX_FIELD {
                return Err("a password must have at most 1024 bytes");
            }
            put_u16_field(&mut out, bytes);
        }
        pad(&mut out, REQUEST_BLOCK);
        Ok(out)
    }

    /// Parses a decrypted, padded request body (the parser behind [`crate::open_request`]).
    pub fn decode(bytes: &[u8]) -> Result<RequestBody, &'static str> {
        let mut r = Reader::new(bytes);
        let kind = r.u8("anchor kind")?;
        let anchor = utf8(u16_field(&mut r, "anchor")?, "anchor")?;
        if anchor.is_empty() || anchor.len() > MAX_FIELD {
            return Err("the anchor must have 1-1024 bytes");
        }
        let anchor = match kind {
            1 => Anchor::SourceAnchor(anchor),
            2 => Anchor::UserPrincipalName(anchor),
            _ => return Err("unknown anchor kind"),
        };
        let flags = r.u8("flags")?;
        if flags & !0b11 != 0 {
            return Err("unknown flags");
        }
        let mut password = |what| -> Result<Option<Password>, &'static str> {
            let bytes = u16_field(&mut r, what)?;
            if bytes.is_empty() {
                return Ok(None);
            }
            if bytes.len() > MAX_FIELD {
                return Err("a password must have at most 1024 bytes");
            }
            let text = std::str::from_utf8(bytes).map_err(|_| what)?;
            Ok(Some(Password::new(text)))
        };
        let new_password = password("new password")?;
        let current_password = password("current password")?;
        check_padding(r.rest(), bytes.len(), REQUEST_BLOCK)?;
        Ok(RequestBody {
            anchor,
            unlock: flags & 1 != 0,
            must_change: flags & 2 != 0,
            new_password,
            current_password,
        })
    }
}

/// The agent's answer, sealed back to the portal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyBody {
    /// The outcome code (0 = success; the agent defines the others).
    pub outcome: u16,
    /// What to tell the user, in plain words.
    pub message: String,
    /// Structured details, for example ("min_length", "12").
    pub details: Vec<(String, String)>,
}

impl ReplyBody {
    /// The outcome, typed; `None` for a code this release does not know.
    pub fn typed_outcome(&self) -> Option<Outcome> {
        Outcome::from_code(self.outcome)
    }

    /// The value of detail `key`, if the reply has it.
    pub fn detail(&self, key: &str) -> Option<&str> {
        self.details
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The padded plaintext.
    pub fn encode(&self) -> Result<Zeroizing<Vec<u8>>, &'static str> {
        let mut out = Zeroizing::new(Vec::with_capacity(REPLY_BLOCK));
        out.extend_from_slice(&self.outcome.to_be_bytes());
        if self.message.len() > MAX_MESSAGE {
            return Err("the message must have at most 4096 bytes");
        }
        put_u16_field(&mut out, self.message.as_bytes());
        if self.details.len() > MAX_DETAILS {
            return Err("at most 32 details");
        }
        out.push(self.details.len() as u8);
        for (k, v) in &self.details {
            if k.is_empty() || k.len() > MAX_DETAIL_KEY || v.len() > MAX_FIELD {
                return Err("detail keys have 1-64 bytes, values at most 1024");
            }
            out.push(k.len() as u8);
            out.extend_from_slice(k.as_bytes());
            put_u16_field(&mut out, v.as_bytes());
        }
        pad(&mut out, REPLY_BLOCK);
        Ok(out)
    }

    /// Parses a decrypted, padded reply body.
    pub fn decode(bytes: &[u8]) -> Result<ReplyBody, &'static str> {
        let mut r = Reader::new(bytes);
        let outcome = r.u16("outcome")?;
        let message = utf8(u16_field(&mut r, "message")?, "message")?;
        if message.len() > MAX_MESSAGE {
            return Err("the message must have at most 4096 bytes");
        }
        let count = r.u8("detail count")?;
        if count as usize > MAX_DETAILS {
            return Err("at most 32 details");
        }
        let mut details = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let klen = r.u8("detail key length")? as usize;
            let key = utf8(r.take(klen, "detail key")?, "detail key")?;
            let value = utf8(u16_field(&mut r, "detail value")?, "detail value")?;
            if key.is_empty() || key.len() > MAX_DETAIL_KEY || value.len() > MAX_FIELD {
                return Err("detail keys have 1-64 bytes, values at most 1024");
            }
            details.push((key, value));
        }
        check_padding(r.rest(), bytes.len(), REPLY_BLOCK)?;
        Ok(ReplyBody {
            outcome,
            message,
            details,
        })
    }
}

fn put_u16_field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn u16_field<'a>(r: &mut Reader<'a>, what: &'static str) -> Result<&'a [u8], &'static str> {
    let n = r.u16(what)? as usize;
    r.take(n, what)
}

fn utf8(bytes: &[u8], what: &'static str) -> Result<String, &'static str> {
    String::from_utf8(bytes.to_vec()).map_err(|_| what)
}

fn pad(out: &mut Vec<u8>, block: usize) {
    let target = out.len().div_ceil(block).max(1) * block;
    out.resize(target, 0);
}

fn check_padding(rest: &[u8], total: usize, block: usize) -> Result<(), &'static str> {
    if !total.is_multiple_of(block) || rest.iter().any(|&b| b != 0) {
        return Err("padding");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_codes_are_dense_and_round_trip() {
        for (i, o) in Outcome::ALL.iter().enumerate() {
            assert_eq!(o.code() as usize, i);
            assert_eq!(Outcome::from_code(o.code()), Some(*o));
        }
        assert_eq!(Outcome::from_code(Outcome::ALL.len() as u16), None);
        assert_eq!(outcome::NOT_APPLIED, 16);
        assert_eq!(Outcome::NotApplied.name(), "NOT_APPLIED");
    }
}

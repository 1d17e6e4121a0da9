//! End-to-end envelopes between reset portals and on-prem agents, which the
//! relay broker carries without being able to read, forge, replay or
//! redirect them. No networking and no clock: time and randomness are
//! passed in, so everything here can be tested and fuzzed alone.
//!
//! # Layout
//! - [`keys`]: X25519 key pairs, key ids and fingerprints.
//! - [`wire`]: the request header's byte layout.
//! - [`body`]: the padded plaintexts (request and reply bodies).
//! - [`request`]: sealing (portal) and opening (agent) requests with HPKE
//!   (RFC 9180) in auth mode.
//! - [`reply`]: replies sealed under a key exported from the request's HPKE
//!   context, as RFC 9458 does for Oblivious HTTP responses.
//! - [`replay`]: the agent's replay window.
//! - [`endorse`]: an agent's new key endorsed by its older one, so portals
//!   trust it without a new fingerprint check and still see a substituted key.
//! - [`keystore`]: private keys at rest under the administrator's setup
//!   password (Argon2id, ChaCha20-Poly1305).
//! - [`error`]: one error per refusal.
//!
//! The byte-level specification is `docs/PROTOCOL.md`.

#![forbid(unsafe_code)]

pub mod body;
pub mod endorse;
pub mod error;
pub mod keys;
pub mod keystore;
pub mod replay;
pub mod reply;
pub mod request;
pub mod wire;

pub use body::{Anchor, Outcome, Password, ReplyBody, RequestBody};
pub use error::{KeyError, OpenError, ReplyError, SealError};
pub use keys::{Fingerprint, KeyId, KeyPair, PublicKey};
pub use replay::ReplayWindow;
pub use request::{
    OpenedRequest, PendingReply, PreparedSeal, Recipient, RefusalReply, Refused, open_request,
    open_request_sealing_refusals, prepare_seal, seal_prepared, seal_request,
};
pub use wire::{RequestHeader, valid_agent_id};

/// The operating system's random number generator, for callers without one.
pub fn os_rng() -> impl rand_core::CryptoRng {
    rand_core::UnwrapErr(getrandom::SysRng)
}

//! Sealing a request (portal) and opening it (agent).
//!
//! HPKE (RFC 9180) in auth mode, suite DHKEM(X25519, HKDF-SHA256) /
//! HKDF-SHA256 / ChaCha20-Poly1305: the portal's static key authenticates
//! the sender, so only a holder of a pinned portal key can make an envelope
//! the agent accepts. `info` is the constant [`REQUEST_INFO`]; the header
//! (everything before the ciphertext, enc included) is the associated data.

use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::{Deserializable, OpModeR, OpModeS, Serializable};
use rand_core::CryptoRng;
use zeroize::Zeroizing;

use crate::body::RequestBody;
use crate::error::{OpenError, SealError};
use crate::keys::{KEY_LEN, Kem, KeyPair, PublicKey};
use crate::reply::{ReplyKeys, export_reply_secret};
use crate::wire::{RequestHeader, parse_request};

/// The HPKE `info` of every request.
pub const REQUEST_INFO: &[u8] = b"relay.v1 request";

type EncappedKey = <Kem as hpke::Kem>::EncappedKey;

/// What the portal keeps to open the reply to a request it sealed.
pub struct PendingReply {
    pub(crate) keys: ReplyKeys,
    pub header: RequestHeader,
}

type SenderContext = hpke::aead::AeadCtxS<ChaCha20Poly1305, HkdfSha256, Kem>;

/// The half of sealing a request that does not depend on the request:
/// HPKE's auth-mode encapsulation from a portal key to an agent key (an
/// ephemeral key pair and two X25519 operations, nearly all of the cost).
/// A portal can make these ahead of time, so that a user's request waits
/// only for the AEAD. Each is used once: [`seal_prepared`] consumes it.
pub struct PreparedSeal {
    agent_key_id: crate::keys::KeyId,
    portal_key_id: crate::keys::KeyId,
    enc: [u8; KEY_LEN],
    ctx: SenderContext,
}

impl PreparedSeal {
    /// The agent key it seals to.
    pub fn agent_key_id(&self) -> crate::keys::KeyId {
        self.agent_key_id
    }
}

impl std::fmt::Debug for PreparedSeal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedSeal")
            .field("agent_key_id", &self.agent_key_id)
            .field("portal_key_id", &self.portal_key_id)
            .finish_non_exhaustive()
    }
}

/// Makes the encapsulation of one request from `portal` to `agent`.
pub fn prepare_seal(
    portal: &KeyPair,
    agent: &PublicKey,
    rng: &mut impl CryptoRng,
) -> Result<PreparedSeal, SealError> {
    let mode = OpModeS::Auth((portal.private.clone(), portal.public.inner.clone()));
    let (enc, ctx) = hpke::setup_sender_with_rng::<ChaCha20Poly1305, HkdfSha256, Kem>(
        &mode,
        &agent.inner,
        REQUEST_INFO,
        rng,
    )
    .map_err(|_| SealError::Hpke)?;
    let mut enc_bytes = [0u8; KEY_LEN];
    enc_bytes.copy_from_slice(&enc.to_bytes());
    Ok(PreparedSeal {
        agent_key_id: agent.key_id(),
        portal_key_id: portal.public.key_id(),
        enc: enc_bytes,
        ctx,
    })
}

/// Seals `body` from `portal` to `agent`. The header's key ids are filled in
/// from the keys; the rest of it (tenant, addressee agent id, request id,
/// operation, times) is the caller's.
pub fn seal_request(
    portal: &KeyPair,
    agent: &PublicKey,
    header: &RequestHeader,
    body: &RequestBody,
    rng: &mut impl CryptoRng,
) -> Result<(Vec<u8>, PendingReply), SealError> {
    // Checked before the encapsulation, which is the costly part.
    let header = checked(header, agent.key_id(), portal.public.key_id(), body)?;
    seal_checked(prepare_seal(portal, agent, rng)?, header, body)
}

/// Seals `body` with an encapsulation made by [`prepare_seal`]: the same
/// envelope [`seal_request`] makes. The header's key ids are filled in from
/// the prepared keys.
pub fn seal_prepared(
    prepared: PreparedSeal,
    header: &RequestHeader,
    body: &RequestBody,
) -> Result<(Vec<u8>, PendingReply), SealError> {
    let header = checked(header, prepared.agent_key_id, prepared.portal_key_id, body)?;
    seal_checked(prepared, header, body)
}

/// The header with its key ids, once it and the body are valid.
fn checked(
    header: &RequestHeader,
    agent_key_id: crate::keys::KeyId,
    portal_key_id: crate::keys::KeyId,
    body: &RequestBody,
) -> Result<RequestHeader, SealError> {
    let mut header = header.clone();
    header.agent_key_id = agent_key_id;
    header.portal_key_id = portal_key_id;
    header
        .validate()
        .map_err(|(field, problem)| SealError::Invalid { field, problem })?;
    body.check(header.operation)
        .map_err(|problem| SealError::Invalid {
            field: "body",
            problem,
        })?;
    Ok(header)
}

fn seal_checked(
    prepared: PreparedSeal,
    header: RequestHeader,
    body: &RequestBody,
) -> Result<(Vec<u8>, PendingReply), SealError> {
    let PreparedSeal { enc, mut ctx, .. } = prepared;
    let plaintext = body.encode().map_err(|problem| SealError::Invalid {
        field: "body",
        problem,
    })?;
    let mut out = Vec::with_capacity(128 + plaintext.len());
    header.encode(&mut out);
    out.extend_from_slice(&enc);
    let ciphertext = ctx.seal(&plaintext, &out).map_err(|_| SealError::Hpke)?;
    let secret = export_reply_secret(&ctx).map_err(|_| SealError::Hpke)?;
    out.extend_from_slice(&ciphertext);
    Ok((
        out,
        PendingReply {
            keys: ReplyKeys { secret, enc },
            header,
        },
    ))
}

/// What an agent needs to open requests.
pub struct Recipient<'a> {
    /// The tenant this agent serves.
    pub tenant: &'a str,
    /// This agent's own id (its `Hello.agent_id`): only envelopes addressed
    /// to it are opened.
    pub agent_id: &'a str,
    /// The agent's key pairs: the current one and any kept for overlap.
    pub keys: &'a [KeyPair],
    /// The portal keys pinned at onboarding.
    pub trusted_portals: &'a [PublicKey],
    /// The agent's clock, Unix milliseconds.
    pub now_ms: u64,
    /// How far the portal's clock may be off.
    pub skew_allowance_ms: u64,
    /// The longest validity window accepted.
    pub max_lifetime_ms: u64,
}

/// An authenticated, decrypted request.
pub struct OpenedRequest {
    pub header: RequestHeader,
    pub body: RequestBody,
    /// The encapsulated key: unique per envelope, the replay cache's key.
    pub enc: [u8; KEY_LEN],
    pub(crate) reply: ReplyKeys,
}

impl std::fmt::Debug for OpenedRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedRequest")
            .field("header", &self.header)
            .field("body", &self.body)
            .finish_non_exhaustive()
    }
}

/// Authenticates and decrypts a request, then checks its validity window.
/// Replays are the caller's to check, with [`OpenedRequest::enc`] (see
/// [`crate::replay::ReplayWindow`]).
pub fn open_request(bytes: &[u8], to: &Recipient<'_>) -> Result<OpenedRequest, OpenError> {
    open_request_sealing_refusals(bytes, to).map_err(|r| r.error)
}

/// Why [`open_request_sealing_refusals`] refused a request.
#[derive(Debug)]
pub struct Refused {
    pub error: OpenError,
    /// Set when the refusal came after the envelope was authenticated and
    /// decrypted (`INVALID_BODY`, `LIFETIME_TOO_LONG`, `EXPIRED`,
    /// `NOT_YET_VALID`): seals the refusal to the portal that sealed it.
    /// Boxed: it holds the reply keys, and refusals are the rare path.
    pub reply: Option<Box<RefusalReply>>,
}

/// What seals a reply to a request refused after it was decrypted.
pub struct RefusalReply {
    pub(crate) keys: ReplyKeys,
}

impl std::fmt::Debug for RefusalReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefusalReply").finish_non_exhaustive()
    }
}

impl From<OpenError> for Refused {
    fn from(error: OpenError) -> Refused {
        Refused { error, reply: None }
    }
}

/// [`open_request`], with what seals a reply to the portal when the
/// refusal came after decryption (steps 8-11 of PROTOCOL.md "Order of
/// checks").
pub fn open_request_sealing_refusals(
    bytes: &[u8],
    to: &Recipient<'_>,
) -> Result<OpenedRequest, Refused> {
    let parsed = parse_request(bytes)?;
    let header = parsed.header;
    if header.tenant != to.tenant {
        return Err(OpenError::WrongTenant {
            expected: to.tenant.to_owned(),
            found: header.tenant,
        }
        .into());
    }
    if header.agent_id != to.agent_id {
        return Err(OpenError::WrongAgent {
            expected: to.agent_id.to_owned(),
            found: header.agent_id,
        }
        .into());
    }
    let key = to
        .keys
        .iter()
        .find(|k| k.public.key_id() == header.agent_key_id)
        .ok_or(OpenError::UnknownKey(header.agent_key_id))?;
    let sender = to
        .trusted_portals
        .iter()
        .find(|p| p.key_id() == header.portal_key_id)
        .ok_or(OpenError::UnknownSender(header.portal_key_id))?;
    let encapped = EncappedKey::from_bytes(parsed.enc).map_err(|_| OpenError::Malformed("enc"))?;
    let mut ctx = hpke::setup_receiver::<ChaCha20Poly1305, HkdfSha256, Kem>(
        &OpModeR::Auth(sender.inner.clone()),
        &key.private,
        &encapped,
        REQUEST_INFO,
    )
    .map_err(|_| OpenError::AuthenticationFailed)?;
    let plaintext = Zeroizing::new(
        ctx.open(parsed.ciphertext, parsed.aad)
            .map_err(|_| OpenError::AuthenticationFailed)?,
    );
    let secret = export_reply_secret(&ctx).map_err(|_| OpenError::AuthenticationFailed)?;
    let mut enc = [0u8; KEY_LEN];
    enc.copy_from_slice(parsed.enc);
    // Authentic from here on: a refusal can be sealed to the portal.
    let late = |error: OpenError| Refused {
        error,
        reply: Some(Box::new(RefusalReply {
            keys: ReplyKeys {
                secret: secret.clone(),
                enc,
            },
        })),
    };
    let body = RequestBody::decode(&plaintext).map_err(|e| late(OpenError::InvalidBody(e)))?;
    body.check(header.operation)
        .map_err(|e| late(OpenError::InvalidBody(e)))?;
    // u64 throughout, with saturating arithmetic: times near the ends of the
    // range must be refused by the checks, not wrap or overflow.
    let (now, skew) = (to.now_ms, to.skew_allowance_ms);
    let (issued, expires) = (header.issued_at_ms, header.expires_at_ms);
    let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let lifetime = expires.saturating_sub(issued);
    if expires <= issued || lifetime > to.max_lifetime_ms {
        return Err(late(OpenError::LifetimeTooLong {
            lifetime_ms: as_i64(lifetime),
            max_ms: as_i64(to.max_lifetime_ms),
        }));
    }
    if now > expires.saturating_add(skew) {
        return Err(late(OpenError::Expired {
            expired_ms_ago: as_i64(now - expires),
            allowance_ms: as_i64(skew),
        }));
    }
    if issued > now.saturating_add(skew) {
        return Err(late(OpenError::NotYetValid {
            ahead_ms: as_i64(issued - now),
            allowance_ms: as_i64(skew),
        }));
    }
    Ok(OpenedRequest {
        header,
        body,
        enc,
        reply: ReplyKeys { secret, enc },
    })
}

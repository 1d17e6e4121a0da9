//! Sealed replies, in the manner of RFC 9458 §4.4 (Oblivious HTTP response
//! encapsulation): the reply key comes from a secret exported from the
//! request's HPKE context, so only the portal that sealed the request can
//! open the reply, and a reply cannot be moved to another request.
//!
//! ```text
//! secret         = Export(request context, "relay.v1 response", 32)
//! response_nonce = random(32)
//! prk            = HKDF-Extract(salt = enc || response_nonce, ikm = secret)
//! key            = HKDF-Expand(prk, "key", 32)
//! nonce          = HKDF-Expand(prk, "nonce", 12)
//! reply          = 0x01 || response_nonce || ChaCha20-Poly1305(key, nonce, aad = "", padded body)
//! ```

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use hkdf::Hkdf;
use rand_core::CryptoRng;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::body::ReplyBody;
use crate::error::ReplyError;
use crate::keys::KEY_LEN;
use crate::request::{OpenedRequest, PendingReply, RefusalReply};
use crate::wire::{Reader, TAG_LEN, VERSION};

/// The exporter context of the reply secret.
pub const RESPONSE_LABEL: &[u8] = b"relay.v1 response";
pub const RESPONSE_NONCE_LEN: usize = 32;

/// The secret exported from a request's context, and the request's enc.
pub(crate) struct ReplyKeys {
    pub secret: Zeroizing<[u8; 32]>,
    pub enc: [u8; KEY_LEN],
}

pub(crate) fn export_reply_secret<Ctx: Exporter>(
    ctx: &Ctx,
) -> Result<Zeroizing<[u8; 32]>, hpke::HpkeError> {
    let mut secret = Zeroizing::new([0u8; 32]);
    ctx.export_into(RESPONSE_LABEL, secret.as_mut())?;
    Ok(secret)
}

/// Both HPKE context types export; this lets one function serve both.
pub(crate) trait Exporter {
    fn export_into(&self, label: &[u8], out: &mut [u8]) -> Result<(), hpke::HpkeError>;
}

type SenderCtx =
    hpke::aead::AeadCtxS<hpke::aead::ChaCha20Poly1305, hpke::kdf::HkdfSha256, crate::keys::Kem>;
type ReceiverCtx =
    hpke::aead::AeadCtxR<hpke::aead::ChaCha20Poly1305, hpke::kdf::HkdfSha256, crate::keys::Kem>;

impl Exporter for SenderCtx {
    fn export_into(&self, label: &[u8], out: &mut [u8]) -> Result<(), hpke::HpkeError> {
        self.export(label, out)
    }
}

impl Exporter for ReceiverCtx {
    fn export_into(&self, label: &[u8], out: &mut [u8]) -> Result<(), hpke::HpkeError> {
        self.export(label, out)
    }
}

impl ReplyKeys {
    fn aead(&self, response_nonce: &[u8]) -> (ChaCha20Poly1305, Nonce) {
        let mut salt = Vec::with_capacity(KEY_LEN + RESPONSE_NONCE_LEN);
        salt.extend_from_slice(&self.enc);
        salt.extend_from_slice(response_nonce);
        let hk = Hkdf::<Sha256>::new(Some(&salt), self.secret.as_ref());
        let mut key = Zeroizing::new([0u8; 32]);
        let mut nonce = [0u8; 12];
        // 32 and 12 bytes are far below HKDF-SHA256's output limit.
        hk.expand(b"key", key.as_mut()).expect("valid HKDF length");
        hk.expand(b"nonce", &mut nonce).expect("valid HKDF length");
        let cipher = ChaCha20Poly1305::new_from_slice(key.as_ref()).expect("32-byte key");
        (cipher, Nonce::from(nonce))
    }
}

impl OpenedRequest {
    /// Seals the agent's answer to this request.
    pub fn seal_reply(
        &self,
        body: &ReplyBody,
        rng: &mut impl CryptoRng,
    ) -> Result<Vec<u8>, ReplyError> {
        seal_with(&self.reply, body, rng)
    }
}

impl RefusalReply {
    /// Seals the agent's answer (its refusal) to the refused request.
    pub fn seal_reply(
        &self,
        body: &ReplyBody,
        rng: &mut impl CryptoRng,
    ) -> Result<Vec<u8>, ReplyError> {
        seal_with(&self.keys, body, rng)
    }
}

fn seal_with(
    keys: &ReplyKeys,
    body: &ReplyBody,
    rng: &mut impl CryptoRng,
) -> Result<Vec<u8>, ReplyError> {
    let plaintext = body.encode().map_err(ReplyError::InvalidBody)?;
    let mut response_nonce = [0u8; RESPONSE_NONCE_LEN];
    rng.fill_bytes(&mut response_nonce);
    let (cipher, nonce) = keys.aead(&response_nonce);
    let ciphertext = cipher
        .encrypt(&nonce, plaintext.as_slice())
        .map_err(|_| ReplyError::InvalidBody("encryption failed"))?;
    let mut out = Vec::with_capacity(1 + RESPONSE_NONCE_LEN + ciphertext.len());
    out.push(VERSION);
    out.extend_from_slice(&response_nonce);
    out.extend_from_slice(&ciphertext);
    Ok(out)
}

impl PendingReply {
    /// Authenticates and decrypts the agent's reply to this request.
    pub fn open(&self, bytes: &[u8]) -> Result<ReplyBody, ReplyError> {
        let mut r = Reader::new(bytes);
        let version = r.u8("empty reply").map_err(ReplyError::Malformed)?;
        if version != VERSION {
            return Err(ReplyError::UnsupportedVersion(version));
        }
        let response_nonce = r
            .take(RESPONSE_NONCE_LEN, "response nonce")
            .map_err(ReplyError::Malformed)?;
        let ciphertext = r.rest();
        if ciphertext.len() < TAG_LEN {
            return Err(ReplyError::Malformed("ciphertext"));
        }
        let (cipher, nonce) = self.keys.aead(response_nonce);
        let plaintext = Zeroizing::new(
            cipher
                .decrypt(&nonce, ciphertext)
                .map_err(|_| ReplyError::AuthenticationFailed)?,
        );
        ReplyBody::decode(&plaintext).map_err(ReplyError::InvalidBody)
    }
}

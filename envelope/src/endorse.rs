//! Key endorsements: how a portal comes to trust an agent's new key without
//! a new out-of-band fingerprint check, while a broker that substitutes a
//! key of its own is still detected.
//!
//! The agent seals a statement naming its new public key to each pinned
//! portal key, in HPKE auth mode with an older agent key as the sender. Only
//! a holder of that older private key can produce a statement the portal
//! opens, so trust flows from the fingerprint confirmed at onboarding along
//! the chain of rotations.
//!
//! ```text
//! endorsement = 0x01 || endorser key id (8) || portal key id (8) || enc (32) || ciphertext
//! plaintext   = new public key (32) || issued at, Unix ms (u64 BE)
//! info = "relay.v1 key endorsement", aad = tenant (ASCII)
//! ```

use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::{Deserializable, OpModeR, OpModeS, Serializable};
use rand_core::CryptoRng;

use crate::keys::{KEY_LEN, Kem, KeyId, KeyPair, PublicKey};
use crate::wire::{Reader, VERSION};

pub const ENDORSEMENT_INFO: &[u8] = b"relay.v1 key endorsement";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndorseError {
    #[error("malformed endorsement: {0}")]
    Malformed(&'static str),
    #[error("endorsement addressed to portal key {0}, not this portal's")]
    NotForThisPortal(KeyId),
    #[error("endorsement made by key {0}, which this portal does not trust")]
    UntrustedEndorser(KeyId),
    #[error("endorsement failed authentication")]
    AuthenticationFailed,
    #[error("endorsement names another key than the one announced")]
    WrongKey,
    #[error("sealing failed")]
    Seal,
}

/// Seals a statement that `new_key` belongs to the same agent as `endorser`.
pub fn endorse(
    endorser: &KeyPair,
    new_key: &PublicKey,
    portal: &PublicKey,
    tenant: &str,
    issued_at_ms: u64,
    rng: &mut impl CryptoRng,
) -> Result<Vec<u8>, EndorseError> {
    let mode = OpModeS::Auth((endorser.private.clone(), endorser.public.inner.clone()));
    let (enc, mut ctx) = hpke::setup_sender_with_rng::<ChaCha20Poly1305, HkdfSha256, Kem>(
        &mode,
        &portal.inner,
        ENDORSEMENT_INFO,
        rng,
    )
    .map_err(|_| EndorseError::Seal)?;
    let mut plaintext = Vec::with_capacity(40);
    plaintext.extend_from_slice(new_key.as_bytes());
    plaintext.extend_from_slice(&issued_at_ms.to_be_bytes());
    let ct = ctx
        .seal(&plaintext, tenant.as_bytes())
        .map_err(|_| EndorseError::Seal)?;
    let mut out = vec![VERSION];
    out.extend_from_slice(&endorser.public.key_id().0);
    out.extend_from_slice(&portal.key_id().0);
    out.extend_from_slice(&enc.to_bytes());
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Checks an endorsement of `announced` for this portal; returns the key id
/// of the endorser and the statement's time.
pub fn verify_endorsement(
    blob: &[u8],
    announced: &PublicKey,
    portal: &KeyPair,
    trusted: &[PublicKey],
    tenant: &str,
) -> Result<(KeyId, u64), EndorseError> {
    let mut r = Reader::new(blob);
    if r.u8("version").map_err(EndorseError::Malformed)? != VERSION {
        return Err(EndorseError::Malformed("version"));
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(
        r.take(8, "endorser key id")
            .map_err(EndorseError::Malformed)?,
    );
    let endorser_id = KeyId(id);
    id.copy_from_slice(
        r.take(8, "portal key id")
            .map_err(EndorseError::Malformed)?,
    );
    if KeyId(id) != portal.public.key_id() {
        return Err(EndorseError::NotForThisPortal(KeyId(id)));
    }
    let endorser = trusted
        .iter()
        .find(|k| k.key_id() == endorser_id)
        .ok_or(EndorseError::UntrustedEndorser(endorser_id))?;
    let enc = r.take(KEY_LEN, "enc").map_err(EndorseError::Malformed)?;
    let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(enc)
        .map_err(|_| EndorseError::Malformed("enc"))?;
    let mut ctx = hpke::setup_receiver::<ChaCha20Poly1305, HkdfSha256, Kem>(
        &OpModeR::Auth(endorser.inner.clone()),
        &portal.private,
        &enc,
        ENDORSEMENT_INFO,
    )
    .map_err(|_| EndorseError::AuthenticationFailed)?;
    let plaintext = ctx
        .open(r.rest(), tenant.as_bytes())
        .map_err(|_| EndorseError::AuthenticationFailed)?;
    if plaintext.len() != KEY_LEN + 8 {
        return Err(EndorseError::Malformed("statement"));
    }
    if plaintext[..KEY_LEN] != announced.as_bytes()[..] {
        return Err(EndorseError::WrongKey);
    }
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&plaintext[KEY_LEN..]);
    Ok((endorser_id, u64::from_be_bytes(ts)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_follows_endorsements_and_nothing_else() {
        let mut rng = crate::os_rng();
        let portal = KeyPair::generate(&mut rng);
        let old = KeyPair::generate(&mut rng);
        let new = KeyPair::generate(&mut rng);
        let rogue = KeyPair::generate(&mut rng);
        let trusted = [old.public.clone()];
        let e = endorse(&old, &new.public, &portal.public, "contoso", 7, &mut rng).unwrap();
        assert_eq!(
            verify_endorsement(&e, &new.public, &portal, &trusted, "contoso"),
            Ok((old.public.key_id(), 7))
        );
        // The broker announces its own key with a genuine endorsement: refused.
        assert_eq!(
            verify_endorsement(&e, &rogue.public, &portal, &trusted, "contoso"),
            Err(EndorseError::WrongKey)
        );
        // A rogue key endorsing itself is not trusted.
        let selfish = endorse(
            &rogue,
            &rogue.public,
            &portal.public,
            "contoso",
            7,
            &mut rng,
        )
        .unwrap();
        assert!(matches!(
            verify_endorsement(&selfish, &rogue.public, &portal, &trusted, "contoso"),
            Err(EndorseError::UntrustedEndorser(_))
        ));
        // Moved to another tenant, or altered: refused.
        assert_eq!(
            verify_endorsement(&e, &new.public, &portal, &trusted, "fabrikam"),
            Err(EndorseError::AuthenticationFailed)
        );
        let mut altered = e.clone();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        assert_eq!(
            verify_endorsement(&altered, &new.public, &portal, &trusted, "contoso"),
            Err(EndorseError::AuthenticationFailed)
        );
    }
}

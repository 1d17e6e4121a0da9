//! X25519 key pairs of agents (recipients) and portals (senders), their key
//! ids and their fingerprints.

use std::fmt;

use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, Serializable};
use rand_core::CryptoRng;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::KeyError;

pub(crate) type Kem = X25519HkdfSha256;
pub(crate) type HpkePrivateKey = <Kem as hpke::Kem>::PrivateKey;
pub(crate) type HpkePublicKey = <Kem as hpke::Kem>::PublicKey;

/// Bytes of a serialized public or private key.
pub const KEY_LEN: usize = 32;

/// Names a public key in envelopes: the first 8 bytes of
/// SHA-256("relay.v1 key id" || public key).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 8]);

impl KeyId {
    pub fn to_hex(&self) -> String {
        hex_lower(&self.0)
    }

    pub fn from_hex(text: &str) -> Result<KeyId, KeyError> {
        let bytes = decode_hex(text).ok_or(KeyError::InvalidKeyId)?;
        Ok(KeyId(bytes.try_into().map_err(|_| KeyError::InvalidKeyId)?))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// What administrators compare out of band: SHA-256("relay.v1 fingerprint"
/// || public key), shown as 16 groups of 4 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// Parses the displayed form; spaces, colons and dashes are ignored.
    pub fn parse(text: &str) -> Result<Fingerprint, KeyError> {
        let compact: String = text
            .chars()
            .filter(|c| !matches!(c, ' ' | ':' | '-'))
            .collect();
        let bytes = decode_hex(&compact).ok_or(KeyError::InvalidFingerprint)?;
        Ok(Fingerprint(
            bytes.try_into().map_err(|_| KeyError::InvalidFingerprint)?,
        ))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = hex_lower(&self.0);
        let groups: Vec<&str> = (0..16).map(|i| &hex[i * 4..i * 4 + 4]).collect();
        f.write_str(&groups.join(" "))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// An X25519 public key, with its key id (computed once: every seal and
/// every open looks keys up by id).
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    bytes: [u8; KEY_LEN],
    key_id: KeyId,
    pub(crate) inner: HpkePublicKey,
}

impl PublicKey {
    pub fn from_bytes(bytes: &[u8]) -> Result<PublicKey, KeyError> {
        let inner = HpkePublicKey::from_bytes(bytes).map_err(|_| KeyError::InvalidPublicKey)?;
        let bytes: [u8; KEY_LEN] = bytes.try_into().map_err(|_| KeyError::InvalidPublicKey)?;
        Ok(PublicKey::new(bytes, inner))
    }

    fn new(bytes: [u8; KEY_LEN], inner: HpkePublicKey) -> PublicKey {
        PublicKey {
            key_id: key_id_of(&bytes),
            bytes,
            inner,
        }
    }

    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }

    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    pub fn fingerprint(&self) -> Fingerprint {
        let digest = Sha256::new()
            .chain_update(b"relay.v1 fingerprint")
            .chain_update(self.bytes)
            .finalize();
        let mut fp = [0u8; 32];
        fp.copy_from_slice(&digest);
        Fingerprint(fp)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.key_id())
    }
}

/// An X25519 key pair. The private half is zeroized on drop and never shown
/// by `Debug`.
#[derive(Clone)]
pub struct KeyPair {
    pub(crate) private: HpkePrivateKey,
    pub public: PublicKey,
}

impl KeyPair {
    /// A fresh key pair from `rng`.
    pub fn generate(rng: &mut impl CryptoRng) -> KeyPair {
        let (private, public) = Kem::gen_keypair_with_rng(rng);
        Self::from_parts(private, public)
    }

    /// The key pair RFC 9180's DeriveKeyPair makes from `ikm` (for test
    /// vectors; real keys come from [`KeyPair::generate`]).
    pub fn derive(ikm: &[u8]) -> KeyPair {
        let (private, public) = Kem::derive_keypair(ikm);
        Self::from_parts(private, public)
    }

    /// Rebuilds a key pair from its 32-byte private key.
    pub fn from_private_bytes(bytes: &[u8]) -> Result<KeyPair, KeyError> {
        let private = HpkePrivateKey::from_bytes(bytes).map_err(|_| KeyError::InvalidPrivateKey)?;
        let public = Kem::sk_to_pk(&private);
        Ok(Self::from_parts(private, public))
    }

    fn from_parts(private: HpkePrivateKey, public: HpkePublicKey) -> KeyPair {
        let mut bytes = [0u8; KEY_LEN];
        bytes.copy_from_slice(&public.to_bytes());
        KeyPair {
            private,
            public: PublicKey::new(bytes, public),
        }
    }

    /// The private key's bytes, to be stored encrypted and nowhere else.
    pub fn private_bytes(&self) -> Zeroizing<[u8; KEY_LEN]> {
        let mut out = Zeroizing::new([0u8; KEY_LEN]);
        out.copy_from_slice(&self.private.to_bytes());
        out
    }
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyPair({}, private: ***)", self.public.key_id())
    }
}

fn key_id_of(public: &[u8; KEY_LEN]) -> KeyId {
    let digest = Sha256::new()
        .chain_update(b"relay.v1 key id")
        .chain_update(public)
        .finalize();
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest[..8]);
    KeyId(id)
}

pub(crate) fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

pub(crate) fn decode_hex(text: &str) -> Option<Vec<u8>> {
    // from_str_radix alone would accept a leading '+'.
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

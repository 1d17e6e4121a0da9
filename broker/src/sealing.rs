//! The storage key: it seals what the broker keeps at rest, so that no
//! disk, bucket or backup holds a tenant's keys in the clear. One code path
//! for both modes: a single node seals its tenant records before they reach
//! redb (`store/sealed.rs`), a cluster seals them before they reach NATS
//! (tenant records and the meta bucket's operator key). A single node reads
//! the key from `storage_key_file` (created in the data directory when it
//! is not set); every node of a cluster loads the same key from
//! `cluster.storage_key_file`.
//!
//! A sealed value is `version (1) || key id (4) || nonce (12) ||
//! AES-256-GCM ciphertext and tag`. The associated data is the header and
//! a context naming where the value lives (`<bucket>/<key>`), so a record
//! copied under another key or into another bucket no longer opens. The
//! key id (an HMAC of a fixed label under the key: it names the key and
//! reveals nothing of it) tells "sealed with another storage key, and
//! which" apart from "altered": GCM alone cannot.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

const KEY_LEN: usize = 32;
const VERSION: u8 = 1;
const KEY_ID_LEN: usize = 4;
const HEADER_LEN: usize = 1 + KEY_ID_LEN + NONCE_LEN;
const TAG_LEN: usize = 16;
// The label is part of every key id already written: it keeps its name.
const KEY_ID_LABEL: &[u8] = b"relay cluster storage key id v1";

/// Loading the key or sealing with it failed. No message contains key
/// material.
#[derive(Debug, thiserror::Error)]
pub enum StorageKeyError {
    #[error("cannot read the storage key file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the storage key file {path} must hold 32 bytes in standard base64 \
         (`openssl rand -base64 32` writes one)"
    )]
    Format { path: PathBuf },
    #[error("cannot write the storage key file {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the system random number generator failed")]
    Random,
    #[error("the value is too long for AES-GCM to seal")]
    TooLong,
}

/// A sealed value that does not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnsealError {
    #[error("the sealed value has {0} bytes, fewer than any sealed value")]
    TooShort(usize),
    #[error("the sealed value has format version {0}; this broker reads version {VERSION}")]
    UnknownVersion(u8),
    #[error(
        "the value was sealed under storage key id {sealed}, the configured key is {configured} \
         (is storage_key_file the key that sealed the store, and the same on every node?)"
    )]
    WrongKey { sealed: KeyId, configured: KeyId },
    #[error("the sealed value was altered, or moved from another key")]
    Tampered,
}

/// A storage key's id: a short hash that names the key in records,
/// backups and errors. Printed as 8 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub [u8; KEY_ID_LEN]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl KeyId {
    /// The id of the key that sealed `sealed`, from its header; `None` if
    /// the bytes are no sealed value this broker reads.
    pub fn of_sealed(sealed: &[u8]) -> Option<KeyId> {
        if sealed.len() < HEADER_LEN + TAG_LEN || sealed[0] != VERSION {
            return None;
        }
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&sealed[1..1 + KEY_ID_LEN]);
        Some(KeyId(id))
    }
}

/// The leading byte of every sealed value (a JSON record starts with `{`).
pub const SEALED_VERSION: u8 = VERSION;

/// The AES-256 key. Its bytes are zeroized on drop and never printed.
pub struct StorageKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
    key_id: [u8; KEY_ID_LEN],
}

impl fmt::Debug for StorageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StorageKey(***)")
    }
}

impl StorageKey {
    /// Reads the key file: standard base64 of 32 bytes, surrounding white
    /// space (a trailing newline) allowed.
    pub fn load(path: &Path) -> Result<StorageKey, StorageKeyError> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|source| {
            StorageKeyError::Read {
                path: path.to_owned(),
                source,
            }
        })?);
        warn_if_readable_by_others(path);
        StorageKey::from_base64(&text).ok_or_else(|| StorageKeyError::Format {
            path: path.to_owned(),
        })
    }

    /// `None` unless `text` is standard base64 of exactly 32 bytes.
    pub fn from_base64(text: &str) -> Option<StorageKey> {
        let decoded = Zeroizing::new(STANDARD.decode(text.trim()).ok()?);
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        if decoded.len() != KEY_LEN {
            return None;
        }
        bytes.copy_from_slice(&decoded);
        Some(StorageKey::from_bytes(bytes))
    }

    /// A fresh key from the operating system's random number generator.
    pub fn generate() -> Result<StorageKey, StorageKeyError> {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        SystemRandom::new()
            .fill(bytes.as_mut())
            .map_err(|_| StorageKeyError::Random)?;
        Ok(StorageKey::from_bytes(bytes))
    }

    /// The key's id, for records and messages; never the key.
    pub fn id(&self) -> KeyId {
        KeyId(self.key_id)
    }

    /// Writes a fresh key to `path` (mode 0600, not over an existing file):
    /// the single node's key when none is configured.
    pub fn create(path: &Path) -> Result<StorageKey, StorageKeyError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let key = StorageKey::generate()?;
        let failed = |source| StorageKeyError::Write {
            path: path.to_owned(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(failed)?;
        let mut text = key.to_base64();
        text.push('\n');
        file.write_all(text.as_bytes()).map_err(failed)?;
        file.sync_all().map_err(failed)?;
        Ok(key)
    }

    /// The key file's text (without the newline).
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.bytes.as_ref()))
    }

    fn from_bytes(bytes: Zeroizing<[u8; KEY_LEN]>) -> StorageKey {
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, bytes.as_ref()),
            KEY_ID_LABEL,
        );
        let mut key_id = [0u8; KEY_ID_LEN];
        key_id.copy_from_slice(&tag.as_ref()[..KEY_ID_LEN]);
        StorageKey { bytes, key_id }
    }

    // Built per call rather than kept: ring does not zeroize its key
    // schedule, and AES key expansion costs far less than a NATS round trip.
    fn aead(&self) -> LessSafeKey {
        let unbound =
            UnboundKey::new(&AES_256_GCM, self.bytes.as_ref()).expect("a 32-byte AES-256 key");
        LessSafeKey::new(unbound)
    }

    /// Encrypts `plaintext` for the place `context` names, with a fresh
    /// random nonce.
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Result<Vec<u8>, StorageKeyError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| StorageKeyError::Random)?;
        let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
        out.push(VERSION);
        out.extend_from_slice(&self.key_id);
        out.extend_from_slice(&nonce);
        let aad = associated_data(&out, context);
        // Zeroized: it holds the plaintext until sealed in place (and if
        // sealing fails); with room for the tag, it is never reallocated.
        let mut sealed = Zeroizing::new(Vec::with_capacity(plaintext.len() + TAG_LEN));
        sealed.extend_from_slice(plaintext);
        self.aead()
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut *sealed,
            )
            .map_err(|_| StorageKeyError::TooLong)?;
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Decrypts what [`StorageKey::seal`] made for the same `context`.
    pub fn unseal(&self, context: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, UnsealError> {
        if sealed.len() < HEADER_LEN + TAG_LEN {
            return Err(UnsealError::TooShort(sealed.len()));
        }
        let (header, ciphertext) = sealed.split_at(HEADER_LEN);
        if header[0] != VERSION {
            return Err(UnsealError::UnknownVersion(header[0]));
        }
        if header[1..1 + KEY_ID_LEN] != self.key_id {
            let mut sealed = [0u8; KEY_ID_LEN];
            sealed.copy_from_slice(&header[1..1 + KEY_ID_LEN]);
            return Err(UnsealError::WrongKey {
                sealed: KeyId(sealed),
                configured: self.id(),
            });
        }
        let nonce = Nonce::try_assume_unique_for_key(&header[1 + KEY_ID_LEN..])
            .map_err(|_| UnsealError::Tampered)?;
        let mut buffer = Zeroizing::new(ciphertext.to_vec());
        let plain_len = self
            .aead()
            .open_in_place(
                nonce,
                Aad::from(associated_data(header, context)),
                &mut buffer,
            )
            .map_err(|_| UnsealError::Tampered)?
            .len();
        buffer.truncate(plain_len);
        Ok(buffer)
    }
}

fn associated_data(header: &[u8], context: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(HEADER_LEN + context.len());
    aad.extend_from_slice(&header[..HEADER_LEN]);
    aad.extend_from_slice(context.as_bytes());
    aad
}

fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            path = %path.display(),
            "the storage key file is readable by other users; chmod 600 it"
        );
    }
}

/// A fixed key for the crate's tests: 32 bytes of 7, never a real secret.
#[cfg(test)]
pub(crate) fn test_key() -> std::sync::Arc<StorageKey> {
    std::sync::Arc::new(StorageKey::from_bytes(Zeroizing::new([7u8; KEY_LEN])))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTEXT: &str = "relay_tenants/contoso";

    #[test]
    fn sealed_values_open_with_the_same_key_and_context() {
        let key = StorageKey::generate().unwrap();
        let sealed = key.seal(CONTEXT, b"tenant record").unwrap();
        assert_eq!(sealed[0], VERSION);
        assert_eq!(&key.unseal(CONTEXT, &sealed).unwrap()[..], b"tenant record");
        // A fresh nonce each time: equal records do not look equal.
        assert_ne!(key.seal(CONTEXT, b"tenant record").unwrap(), sealed);
        assert_eq!(
            &key.unseal(CONTEXT, &key.seal(CONTEXT, b"").unwrap())
                .unwrap()[..],
            b""
        );
    }

    #[test]
    fn altered_moved_or_foreign_values_do_not_open() {
        let key = StorageKey::generate().unwrap();
        let sealed = key.seal(CONTEXT, b"tenant record").unwrap();
        for i in [HEADER_LEN - 1, HEADER_LEN, sealed.len() - 1] {
            let mut altered = sealed.clone();
            altered[i] ^= 1;
            assert_eq!(
                key.unseal(CONTEXT, &altered),
                Err(UnsealError::Tampered),
                "byte {i}"
            );
        }
        assert_eq!(
            key.unseal("relay_tenants/fabrikam", &sealed),
            Err(UnsealError::Tampered)
        );
        let other = StorageKey::generate().unwrap();
        let err = other.unseal(CONTEXT, &sealed).unwrap_err();
        assert_eq!(
            err,
            UnsealError::WrongKey {
                sealed: key.id(),
                configured: other.id()
            }
        );
        let text = err.to_string();
        assert!(text.contains(&format!("key id {}", key.id())), "{text}");
        assert!(
            text.contains(&format!("configured key is {}", other.id())),
            "{text}"
        );
        assert_eq!(key.id().to_string().len(), 8);
        assert_eq!(KeyId::of_sealed(&sealed), Some(key.id()));
        let mut future = sealed.clone();
        future[0] = 2;
        assert_eq!(
            key.unseal(CONTEXT, &future),
            Err(UnsealError::UnknownVersion(2))
        );
        assert_eq!(
            key.unseal(CONTEXT, &sealed[..HEADER_LEN + TAG_LEN - 1]),
            Err(UnsealError::TooShort(HEADER_LEN + TAG_LEN - 1))
        );
    }

    #[test]
    fn the_key_file_is_base64_with_an_optional_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("storage.key");
        let key = StorageKey::generate().unwrap();
        std::fs::write(&path, format!("{}\n", key.to_base64().as_str())).unwrap();
        let loaded = StorageKey::load(&path).unwrap();
        let sealed = key.seal(CONTEXT, b"x").unwrap();
        assert_eq!(&loaded.unseal(CONTEXT, &sealed).unwrap()[..], b"x");
        // The format of the other key files: one tool writes them all.
        let text = sas::Key::generate().unwrap().to_base64();
        assert!(StorageKey::from_base64(&text).is_some());

        std::fs::write(&path, "c2hvcnQ=\n").unwrap();
        let err = StorageKey::load(&path).unwrap_err();
        assert!(matches!(err, StorageKeyError::Format { .. }), "{err}");
        assert!(!err.to_string().contains("c2hvcnQ"), "{err}");
        let missing = StorageKey::load(&dir.path().join("none")).unwrap_err();
        assert!(matches!(missing, StorageKeyError::Read { .. }), "{missing}");
    }

    #[test]
    fn debug_shows_no_key_material() {
        let key = StorageKey::generate().unwrap();
        let shown = format!("{key:?}");
        assert_eq!(shown, "StorageKey(***)");
        assert!(!shown.contains(key.to_base64().as_str()));
    }
}

//! The agent's keyring: its write-back key pairs (current and older ones kept
//! for the rotation overlap) and the portal keys pinned at onboarding,
//! stored in one file sealed under the setup password (Argon2id, then
//! ChaCha20-Poly1305; mode 0600). The same file, copied with the setup
//! password, lets a second agent join.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use envelope::keystore::{self, KeystoreError};
use envelope::{KeyPair, PublicKey};
use relay_client::enrollment::EnrollmentError;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// One of the agent's key pairs.
#[derive(Clone)]
pub struct AgentKey {
    pub pair: KeyPair,
    pub created_unix_ms: u64,
    /// Set when a newer key took over; the key is dropped after the overlap.
    pub superseded_unix_ms: Option<u64>,
    /// Endorsements of this key by the previous one: (portal key id, bytes).
    pub endorsements: Vec<(String, Vec<u8>)>,
    /// Whether the key has been registered with the broker (portals seal to
    /// it). A staged key is not, so that every agent can get it first.
    pub active: bool,
}

/// Everything the agent needs to open envelopes and answer them.
#[derive(Clone)]
pub struct Keyring {
    pub tenant: String,
    /// Oldest first; the last one is current.
    pub keys: Vec<AgentKey>,
    pub portals: Vec<PublicKey>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("tenant", &self.tenant)
            .field(
                "keys",
                &self
                    .keys
                    .iter()
                    .map(|k| k.pair.public.key_id())
                    .collect::<Vec<_>>(),
            )
            .field(
                "portals",
                &self
                    .portals
                    .iter()
                    .map(PublicKey::key_id)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Sealed {
        path: PathBuf,
        #[source]
        source: KeystoreError,
    },
    #[error("{path} is not a keyring: {problem}")]
    Invalid { path: PathBuf, problem: String },
    #[error(transparent)]
    Enrollment(#[from] EnrollmentError),
    #[error("the enrollment bundle is for tenant {bundle:?}, this agent serves {configured:?}")]
    EnrollmentTenant { bundle: String, configured: String },
}

#[derive(Serialize, Deserialize)]
struct StoredKey {
    private_key: Zeroizing<String>,
    created_unix_ms: u64,
    #[serde(default)]
    superseded_unix_ms: Option<u64>,
    #[serde(default)]
    endorsements: Vec<(String, String)>,
    #[serde(default = "yes")]
    active: bool,
}

fn yes() -> bool {
    true
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    version: u32,
    tenant: String,
    keys: Vec<StoredKey>,
    portal_keys: Vec<String>,
}

impl Keyring {
    /// The newest active key: the one portals seal to.
    pub fn current(&self) -> &AgentKey {
        self.keys
            .iter()
            .rev()
            .find(|k| k.active)
            .or(self.keys.last())
            .expect("a keyring always has a key")
    }

    pub fn key_pairs(&self) -> Vec<KeyPair> {
        self.keys.iter().map(|k| k.pair.clone()).collect()
    }

    /// Reads and opens a keyring file.
    pub fn load(path: &Path, password: &str) -> Result<Keyring, KeyringError> {
        let sealed = std::fs::read(path).map_err(|source| KeyringError::Read {
            path: path.to_owned(),
            source,
        })?;
        let plaintext = keystore::open_with_password(&sealed, password).map_err(|source| {
            KeyringError::Sealed {
                path: path.to_owned(),
                source,
            }
        })?;
        let invalid = |problem: String| KeyringError::Invalid {
            path: path.to_owned(),
            problem,
        };
        let stored: Stored =
            serde_json::from_slice(&plaintext).map_err(|e| invalid(e.to_string()))?;
        if stored.version != 1 || stored.keys.is_empty() {
            return Err(invalid("unsupported version or no key".into()));
        }
        let mut keys = Vec::new();
        for k in &stored.keys {
            let bytes = Zeroizing::new(
                STANDARD
                    .decode(k.private_key.as_bytes())
                    .map_err(|_| invalid("private key is not base64".into()))?,
            );
            let pair = KeyPair::from_private_bytes(&bytes).map_err(|e| invalid(e.to_string()))?;
            let endorsements = k
                .endorsements
                .iter()
                .map(|(portal, blob)| {
                    STANDARD
                        .decode(blob)
                        .map(|b| (portal.clone(), b))
                        .map_err(|_| invalid("endorsement is not base64".into()))
                })
                .collect::<Result<_, _>>()?;
            keys.push(AgentKey {
                pair,
                created_unix_ms: k.created_unix_ms,
                superseded_unix_ms: k.superseded_unix_ms,
                endorsements,
                active: k.active,
            });
        }
        let portals = stored
            .portal_keys
            .iter()
            .map(|p| {
                decode_public(p).ok_or_else(|| invalid("portal key is not an X25519 key".into()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Keyring {
            tenant: stored.tenant,
            keys,
            portals,
        })
    }

    /// Seals and writes the keyring (mode 0600, replaced atomically).
    pub fn save(&self, path: &Path, password: &str) -> Result<(), KeyringError> {
        let stored = Stored {
            version: 1,
            tenant: self.tenant.clone(),
            keys: self
                .keys
                .iter()
                .map(|k| StoredKey {
                    private_key: Zeroizing::new(STANDARD.encode(k.pair.private_bytes().as_ref())),
                    created_unix_ms: k.created_unix_ms,
                    superseded_unix_ms: k.superseded_unix_ms,
                    endorsements: k
                        .endorsements
                        .iter()
                        .map(|(p, b)| (p.clone(), STANDARD.encode(b)))
                        .collect(),
                    active: k.active,
                })
                .collect(),
            portal_keys: self
                .portals
                .iter()
                .map(|p| STANDARD.encode(p.as_bytes()))
                .collect(),
        };
        let plaintext =
            Zeroizing::new(
                serde_json::to_vec(&stored).map_err(|e| KeyringError::Invalid {
                    path: path.to_owned(),
                    problem: e.to_string(),
                })?,
            );
        let sealed = keystore::seal_with_password(&plaintext, password, &mut envelope::os_rng())
            .map_err(|source| KeyringError::Sealed {
                path: path.to_owned(),
                source,
            })?;
        write_private(path, &sealed)
    }
}

/// A base64 X25519 public key.
fn decode_public(text: &str) -> Option<PublicKey> {
    let bytes = STANDARD.decode(text).ok()?;
    PublicKey::from_bytes(&bytes).ok()
}

/// Writes `bytes` to `path` with mode 0600 via a temporary file and rename,
/// so a crash never leaves a half-written keyring.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), KeyringError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| KeyringError::Write {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keyring_round_trips_and_needs_its_password() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.keys");
        let mut rng = envelope::os_rng();
        let ring = Keyring {
            tenant: "contoso".into(),
            keys: vec![AgentKey {
                pair: KeyPair::generate(&mut rng),
                created_unix_ms: 5,
                superseded_unix_ms: None,
                endorsements: vec![("00112233aabbccdd".into(), vec![1, 2, 3])],
                active: true,
            }],
            portals: vec![KeyPair::generate(&mut rng).public],
        };
        ring.save(&path, "a long setup password").unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let back = Keyring::load(&path, "a long setup password").unwrap();
        assert_eq!(back.current().pair.public, ring.current().pair.public);
        assert_eq!(back.portals, ring.portals);
        assert_eq!(back.current().endorsements, ring.current().endorsements);
        assert!(matches!(
            Keyring::load(&path, "not the setup password"),
            Err(KeyringError::Sealed { .. })
        ));
        let raw = std::fs::read(&path).unwrap();
        let private = ring.current().pair.private_bytes();
        assert!(!raw.windows(32).any(|w| w == private.as_ref()));
        assert!(!format!("{back:?}").contains(&STANDARD.encode(private.as_ref())));
    }
}

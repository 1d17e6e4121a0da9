//! The enrollment bundle: how a portal's public keys reach a tenant's
//! agents. The portal administrator makes it (`relayctl`, or a portal of
//! its own) and the on-prem administrator feeds it to `writeback-agent init`;
//! its JSON is a file format a second implementation shares
//! (docs/PROTOCOL.md), so it lives with the rest of the wire vocabulary.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use envelope::PublicKey;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
#[error("the enrollment bundle is invalid: {0}")]
pub struct EnrollmentError(pub String);

/// What the portal administrator hands the on-prem administrator: the
/// tenant and the portal's public keys. Public material, but its integrity
/// matters: the on-prem administrator confirms the portal fingerprint shown
/// by `writeback-agent init` with the portal administrator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentBundle {
    pub version: u32,
    pub tenant: String,
    /// Base64 X25519 public keys of the portal.
    pub portal_keys: Vec<String>,
}

impl EnrollmentBundle {
    pub fn new(tenant: &str, portal_keys: &[PublicKey]) -> EnrollmentBundle {
        EnrollmentBundle {
            version: 1,
            tenant: tenant.to_owned(),
            portal_keys: portal_keys
                .iter()
                .map(|k| STANDARD.encode(k.as_bytes()))
                .collect(),
        }
    }

    pub fn parse(text: &str) -> Result<EnrollmentBundle, EnrollmentError> {
        let bundle: EnrollmentBundle =
            serde_json::from_str(text).map_err(|e| EnrollmentError(e.to_string()))?;
        if bundle.version != 1 {
            return Err(EnrollmentError("unsupported version".into()));
        }
        if bundle.portal_keys.is_empty() {
            return Err(EnrollmentError("no portal key".into()));
        }
        bundle.keys()?;
        Ok(bundle)
    }

    pub fn keys(&self) -> Result<Vec<PublicKey>, EnrollmentError> {
        self.portal_keys
            .iter()
            .map(|p| {
                decode_public(p).ok_or_else(|| EnrollmentError("a portal key is not X25519".into()))
            })
            .collect()
    }
}

/// A base64 X25519 public key.
fn decode_public(text: &str) -> Option<PublicKey> {
    let bytes = STANDARD.decode(text).ok()?;
    PublicKey::from_bytes(&bytes).ok()
}

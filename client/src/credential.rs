//! Credentials held by clients: a key that never leaves this process, from
//! which short-lived tokens are minted for each call or session.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sas::{Key, Right, SignedToken};
use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// Lifetime of the tokens minted for single calls.
pub const CALL_TOKEN_LIFETIME: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("cannot read the key file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the key file {path} does not hold a key: {source}")]
    Invalid {
        path: PathBuf,
        #[source]
        source: sas::KeyError,
    },
}

/// A key and what it is for. `Debug` shows no key material.
#[derive(Debug, Clone)]
pub struct Credential {
    /// The tenant, or `*` for the operator key.
    pub resource: String,
    pub right: Right,
    key: Key,
}

impl Credential {
    pub fn new(resource: impl Into<String>, right: Right, key: Key) -> Credential {
        Credential {
            resource: resource.into(),
            right,
            key,
        }
    }

    /// The operator credential.
    pub fn operator(key: Key) -> Credential {
        Credential::new(sas::OPERATOR_RESOURCE, Right::Operator, key)
    }

    /// Reads a base64 key from a file (as written by `relayctl` or the broker).
    pub fn from_key_file(
        resource: impl Into<String>,
        right: Right,
        path: &Path,
    ) -> Result<Credential, CredentialError> {
        let key = read_key_file(path)?;
        Ok(Credential::new(resource, right, key))
    }

    /// A token valid for `lifetime` from now.
    pub fn mint(&self, lifetime: Duration) -> SignedToken {
        let expiry = Duration::from_millis(proto::time::unix_ms())
            .checked_add(lifetime)
            .map_or(0, |d| d.as_secs());
        sas::mint(&self.key, &self.resource, self.right, expiry)
    }
}

pub fn read_key_file(path: &Path) -> Result<Key, CredentialError> {
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|source| {
        CredentialError::Read {
            path: path.to_owned(),
            source,
        }
    })?);
    Key::from_base64(&text).map_err(|source| CredentialError::Invalid {
        path: path.to_owned(),
        source,
    })
}

/// Adds a freshly minted token to every call. The metadata value is marked
/// sensitive, so HTTP/2 never indexes it and `Debug` never prints it.
#[derive(Debug, Clone)]
pub struct Authorize(pub Credential);

impl Interceptor for Authorize {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let token = self.0.mint(CALL_TOKEN_LIFETIME);
        let mut value = AsciiMetadataValue::try_from(token.expose())
            .map_err(|_| Status::internal("minted token is not valid metadata"))?;
        value.set_sensitive(true);
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }
}

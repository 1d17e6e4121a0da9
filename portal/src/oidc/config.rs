//! The `[oidc]` table: which provider, which client, which claim names the
//! account and how strong the sign-in must have been.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub const DEFAULT_ACCOUNT_CLAIM: &str = "preferred_username";
pub const DEFAULT_SESSION_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// A session is for one task, not a working day: past this, a stolen
/// cookie is worth too much.
pub const MAX_SESSION_LIFETIME: Duration = Duration::from_secs(60 * 60);
/// Length of the session key, in bytes.
pub const SESSION_KEY_BYTES: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The provider's issuer URL, as its ID tokens name it; discovery reads
    /// `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    pub client_id: String,
    /// The client secret, alone in a file. Absent for a public client: the
    /// code exchange is then protected by PKCE only.
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// The portal's public URL + `/signin/callback`, exactly as registered
    /// at the provider. `https://` makes the cookies `Secure`.
    pub redirect_url: String,
    /// The ID token claim whose value is the account acted on, sent to the
    /// directory as its user principal name.
    #[serde(default = "default_account_claim")]
    pub account_claim: String,
    /// What the claim's value is to the directory: the account's
    /// userPrincipalName (the default), or its source anchor (the base64
    /// objectGUID, or what the sync engine was configured with), which
    /// stays the same when the account is renamed.
    #[serde(default)]
    pub anchor: AnchorKind,
    /// Authentication methods the ID token's `amr` must all list, such as
    /// `["mfa"]`.
    #[serde(default)]
    pub required_amr: Vec<String>,
    /// When not empty, the ID token's `acr` must be one of these.
    #[serde(default)]
    pub required_acr: Vec<String>,
    /// Signs the session cookies: 32 random bytes, base64. Give every
    /// replica the same file.
    pub session_key_file: PathBuf,
    #[serde(default = "default_session_lifetime", with = "humantime_serde")]
    pub session_lifetime: Duration,
    /// Scopes asked for besides `openid`.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// PEM CA bundle that signs the provider's certificate; the system
    /// roots when absent.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnchorKind {
    #[default]
    UserPrincipalName,
    SourceAnchor,
}

#[derive(Debug, thiserror::Error)]
pub enum OidcConfigError {
    #[error(
        "oidc.issuer {0:?} is not an https:// URL (http:// is accepted for 127.0.0.1 and localhost only)"
    )]
    Issuer(String),
    #[error("oidc.redirect_url {0:?} is not an http(s) URL ending in /signin/callback")]
    RedirectUrl(String),
    #[error("oidc.client_id is empty")]
    ClientId,
    #[error("oidc.account_claim is empty")]
    AccountClaim,
    #[error("oidc.session_lifetime must be between 1m and 1h")]
    SessionLifetime,
    #[error("cannot read the session key file {path}")]
    SessionKeyRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the session key file {path} does not hold 32 bytes in base64 (`head -c 32 /dev/urandom | base64`)"
    )]
    SessionKey { path: PathBuf },
    #[error("cannot read the client secret file {path}")]
    ClientSecretRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the client secret file {path} is empty")]
    ClientSecretEmpty { path: PathBuf },
    #[error("the CA file {path} is unreadable or holds no PEM certificate")]
    CaFile {
        path: PathBuf,
        #[source]
        source: Option<std::io::Error>,
    },
}

impl OidcConfig {
    pub fn validate(&self) -> Result<(), OidcConfigError> {
        if !is_https_or_loopback(&self.issuer) {
            return Err(OidcConfigError::Issuer(self.issuer.clone()));
        }
        if !(is_https_or_loopback(&self.redirect_url)
            && self.redirect_url.ends_with(crate::oidc::CALLBACK_PATH))
        {
            return Err(OidcConfigError::RedirectUrl(self.redirect_url.clone()));
        }
        if self.client_id.trim().is_empty() {
            return Err(OidcConfigError::ClientId);
        }
        if self.account_claim.trim().is_empty() {
            return Err(OidcConfigError::AccountClaim);
        }
        if self.session_lifetime < Duration::from_secs(60)
            || self.session_lifetime > MAX_SESSION_LIFETIME
        {
            return Err(OidcConfigError::SessionLifetime);
        }
        Ok(())
    }

    /// Whether the portal is reached over HTTPS, so cookies can be `Secure`.
    pub fn secure_cookies(&self) -> bool {
        self.redirect_url.starts_with("https://")
    }

    /// The files it names read: the session key, the client secret, the
    /// CA bundle (`check-config` and start).
    pub fn read_files(&self) -> Result<Secrets, OidcConfigError> {
        let session_key = read_session_key(&self.session_key_file)?;
        let client_secret = match &self.client_secret_file {
            Some(path) => Some(read_client_secret(path)?),
            None => None,
        };
        let ca_pem = match &self.ca_file {
            Some(path) => Some(read_ca(path)?),
            None => None,
        };
        Ok(Secrets {
            session_key,
            client_secret,
            ca_pem,
        })
    }
}

/// What the configured files hold; keys are wiped when dropped.
pub struct Secrets {
    pub session_key: zeroize::Zeroizing<Vec<u8>>,
    pub client_secret: Option<zeroize::Zeroizing<String>>,
    pub ca_pem: Option<Vec<u8>>,
}

/// A provider in the same machine (tests, a local demo) may be plain HTTP;
/// anywhere else its keys and tokens need TLS.
fn is_https_or_loopback(url: &str) -> bool {
    if url.starts_with("https://") {
        return true;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    matches!(host, "127.0.0.1" | "localhost" | "[::1]")
}

fn read_session_key(path: &Path) -> Result<zeroize::Zeroizing<Vec<u8>>, OidcConfigError> {
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|source| {
        OidcConfigError::SessionKeyRead {
            path: path.to_owned(),
            source,
        }
    })?);
    let bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, text.trim())
        .map(zeroize::Zeroizing::new)
        .map_err(|_| OidcConfigError::SessionKey {
            path: path.to_owned(),
        })?;
    if bytes.len() != SESSION_KEY_BYTES {
        return Err(OidcConfigError::SessionKey {
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}

fn read_client_secret(path: &Path) -> Result<zeroize::Zeroizing<String>, OidcConfigError> {
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|source| {
        OidcConfigError::ClientSecretRead {
            path: path.to_owned(),
            source,
        }
    })?);
    let secret = text.trim();
    if secret.is_empty() {
        return Err(OidcConfigError::ClientSecretEmpty {
            path: path.to_owned(),
        });
    }
    Ok(zeroize::Zeroizing::new(secret.to_owned()))
}

fn read_ca(path: &Path) -> Result<Vec<u8>, OidcConfigError> {
    let pem = std::fs::read(path).map_err(|source| OidcConfigError::CaFile {
        path: path.to_owned(),
        source: Some(source),
    })?;
    if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
        return Err(OidcConfigError::CaFile {
            path: path.to_owned(),
            source: None,
        });
    }
    Ok(pem)
}

fn default_account_claim() -> String {
    DEFAULT_ACCOUNT_CLAIM.to_owned()
}

fn default_session_lifetime() -> Duration {
    DEFAULT_SESSION_LIFETIME
}

fn default_scopes() -> Vec<String> {
    vec!["profile".to_owned(), "email".to_owned()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &str) -> Result<OidcConfig, String> {
        let text = format!(
            "issuer = \"https://login.contoso.example\"\nclient_id = \"reset-portal\"\n\
             redirect_url = \"https://reset.contoso.example/signin/callback\"\n\
             session_key_file = \"session.key\"\n{extra}"
        );
        let config: OidcConfig = toml::from_str(&text).map_err(|e| e.to_string())?;
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }

    #[test]
    fn defaults_apply() {
        let config = parse("").unwrap();
        assert_eq!(config.account_claim, "preferred_username");
        assert_eq!(config.session_lifetime, Duration::from_secs(900));
        assert!(config.required_amr.is_empty() && config.required_acr.is_empty());
        assert!(config.secure_cookies());
        assert_eq!(config.anchor, AnchorKind::UserPrincipalName);
        let config = parse("account_claim = \"onprem_guid\"\nanchor = \"source_anchor\"").unwrap();
        assert_eq!(config.anchor, AnchorKind::SourceAnchor);
        assert!(
            parse("anchor = \"dn\"")
                .unwrap_err()
                .contains("source_anchor")
        );
    }

    #[test]
    fn mistakes_are_named() {
        assert!(parse("secret = \"x\"").unwrap_err().contains("secret"));
        assert!(
            parse("session_lifetime = \"8h\"")
                .unwrap_err()
                .contains("session_lifetime")
        );
        assert!(
            parse("account_claim = \"\"")
                .unwrap_err()
                .contains("account_claim")
        );
        let err = parse("").map(|_| ()).and_then(|()| {
            let text = "issuer = \"http://login.contoso.example\"\nclient_id = \"c\"\n\
                 redirect_url = \"https://reset.contoso.example/signin/callback\"\n\
                 session_key_file = \"k\"\n";
            let c: OidcConfig = toml::from_str(text).unwrap();
            c.validate().map_err(|e| e.to_string())
        });
        assert!(err.unwrap_err().contains("oidc.issuer"));
    }

    #[test]
    fn plain_http_is_for_loopback_only() {
        assert!(is_https_or_loopback("http://127.0.0.1:4000/"));
        assert!(is_https_or_loopback("http://localhost:4000"));
        assert!(is_https_or_loopback("https://login.example"));
        assert!(!is_https_or_loopback("http://127.0.0.1.evil.example/"));
        assert!(!is_https_or_loopback("http://login.example"));
        assert!(!is_https_or_loopback("ftp://127.0.0.1/"));
    }

    #[test]
    fn the_files_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("session.key");
        let config = OidcConfig {
            session_key_file: key.clone(),
            client_secret_file: Some(dir.path().join("secret")),
            ..parse("").unwrap()
        };
        let err = config.read_files().err().unwrap();
        assert!(
            matches!(err, OidcConfigError::SessionKeyRead { .. }),
            "{err}"
        );
        std::fs::write(&key, "c2hvcnQ=\n").unwrap();
        let err = config.read_files().err().unwrap();
        assert!(matches!(err, OidcConfigError::SessionKey { .. }), "{err}");
        let good = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [9u8; 32]);
        std::fs::write(&key, good).unwrap();
        let err = config.read_files().err().unwrap();
        assert!(
            matches!(err, OidcConfigError::ClientSecretRead { .. }),
            "{err}"
        );
        std::fs::write(dir.path().join("secret"), "\n").unwrap();
        let err = config.read_files().err().unwrap();
        assert!(
            matches!(err, OidcConfigError::ClientSecretEmpty { .. }),
            "{err}"
        );
        std::fs::write(dir.path().join("secret"), "s3cret\n").unwrap();
        let secrets = config.read_files().unwrap();
        assert_eq!(secrets.session_key.as_slice(), &[9u8; 32]);
        assert_eq!(secrets.client_secret.unwrap().as_str(), "s3cret");
    }
}

//! Typed portal configuration, read from TOML with unknown keys refused. The
//! files it names (the Send key, the portal's private key) and the pinned
//! fingerprints stay on the server: the browser only ever sees what its
//! user typed.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use envelope::{Fingerprint, KeyError, KeyPair};
use relay_client::connect::{BrokerEndpoint, ConnectError};
use relay_client::credential::{CredentialError, read_key_file};
use relay_client::portal_client::PortalClient;
use relay_client::sealed::SealedPortal;
use serde::{Deserialize, Deserializer};

use crate::oidc::{OidcConfig, OidcConfigError};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_TITLE: &str = "Password reset";
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The broker cuts longer deadlines to its `max_deadline` (5 minutes by
/// default); no user waits that long in front of a form anyway.
pub const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortalConfig {
    /// Address of the portal's HTTP listener. Put a TLS-terminating reverse
    /// proxy in front of it for anything but a local demo.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The broker's address, `https://host:port`.
    pub broker: String,
    /// PEM CA bundle that signs the broker's certificate; the system roots
    /// when absent.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    pub tenant: String,
    /// The tenant's Send key (base64), e.g. `send.primary.key` as written by
    /// `relayctl tenant create --keys-dir`.
    pub send_key_file: PathBuf,
    /// The portal's private key, from `relayctl portal keygen --key-out`.
    pub portal_key_file: PathBuf,
    /// The key that signs the forms' CSRF tokens: 32 random bytes, base64
    /// (`head -c 32 /dev/urandom | base64`). Give every replica behind a
    /// balancer the same file, so each accepts the forms the others served.
    /// When absent each process makes its own key at start.
    #[serde(default)]
    pub csrf_key_file: Option<PathBuf>,
    /// Fingerprints of the agent keys to seal to, as `writeback-agent init`
    /// printed them on-prem and the on-prem administrator read them out.
    #[serde(deserialize_with = "fingerprints")]
    pub trusted_agent_keys: Vec<Fingerprint>,
    /// Shown in every page's title and header.
    #[serde(default = "default_title")]
    pub title: String,
    /// Deadline of each call through the broker.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How the portal knows who the user is. Required, so that nobody runs
    /// this reference believing it checks identity.
    pub identity_check: IdentityCheck,
    /// What one visitor may cost the portal and the tenant's broker quota.
    #[serde(default)]
    pub limits: Limits,
    /// The OpenID provider, with `identity_check = "oidc"`.
    #[serde(default)]
    pub oidc: Option<OidcConfig>,
}

/// Bounds on what one visitor (one IP address) can make the portal do, and
/// send through it: the broker limits the whole tenant, so without these
/// one anonymous browser could spend every other user's allowance.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Calls to the broker per visitor per minute, in bursts of up to as
    /// many; 0 = unlimited. A user needs two or three (the policy, then the
    /// reset, once more after a typo).
    pub visitor_requests_per_minute: u32,
    /// Calls about one account per hour, whoever asks, in bursts of up to
    /// as many; 0 = unlimited. Only what could change the account counts:
    /// reading its policy, and a password the policy refused, are given
    /// back, so a user who mistypes is not locked out of a valid reset.
    pub account_requests_per_hour: u32,
    /// Every call about one account per hour, refused ones included: the
    /// bound that keeps the given-back calls from flooding the broker and
    /// the agent; 0 = unlimited.
    pub account_attempts_per_hour: u32,
    /// Visitors and accounts remembered, each; beyond, the one seen least
    /// recently is forgotten, so memory stays bounded.
    pub tracked_visitors: usize,
    pub tracked_accounts: usize,
    /// Reverse proxies whose `X-Forwarded-For` header names the visitor.
    /// From any other peer the header is ignored (anyone can send it).
    pub trusted_proxies: Vec<IpAddr>,
    /// How long a request's headers may take to arrive, from the
    /// connection's opening or the previous answer (so also how long an
    /// idle connection stays open).
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// How long a request's body (a form) may take to arrive.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// Connections open at once; at the cap the oldest idle one is closed.
    pub max_connections: usize,
    /// Connections open at once from one address (trusted proxies excepted).
    pub connections_per_visitor: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            visitor_requests_per_minute: 10,
            account_requests_per_hour: 20,
            account_attempts_per_hour: 60,
            tracked_visitors: 10_000,
            tracked_accounts: 10_000,
            trusted_proxies: Vec::new(),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            max_connections: 512,
            connections_per_visitor: 32,
        }
    }
}

/// How the portal establishes that the user owns the account they name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdentityCheck {
    /// None at all: anyone who reaches the portal can act on any account.
    /// A real portal verifies the user first (sign-in with multi-factor
    /// authentication, a code sent to a registered phone...) and takes the
    /// account from that verified identity, never from a form field: see
    /// `handlers::account_to_act_on`, where it plugs in. For demos only.
    None,
    /// OpenID Connect sign-in (the `[oidc]` table): the account is a claim
    /// of the verified ID token ([`crate::oidc`]).
    Oidc,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("in {path}")]
    In {
        path: PathBuf,
        #[source]
        source: Box<ConfigError>,
    },
    #[error(transparent)]
    Syntax(#[from] toml::de::Error),
    #[error("broker {0:?} is not an https:// URL")]
    NotHttps(String),
    #[error("tenant is empty")]
    NoTenant,
    #[error(
        "trusted_agent_keys is empty: pin the fingerprint that `writeback-agent init` printed on-prem"
    )]
    NoTrustedKeys,
    #[error("request_timeout must be between 1s and 5m")]
    RequestTimeout,
    #[error("limits.{0}")]
    Limit(&'static str),
    #[error("cannot read the tenant's Send key")]
    SendKey(#[source] CredentialError),
    #[error("cannot read the portal key file {path}")]
    PortalKeyRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the portal key file {path} is not base64 (it is written by `relayctl portal keygen`)")]
    PortalKeyBase64 { path: PathBuf },
    #[error("the portal key file {path} does not hold a portal key")]
    PortalKey {
        path: PathBuf,
        #[source]
        source: KeyError,
    },
    #[error("cannot read the CSRF key file {path}")]
    CsrfKeyRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the CSRF key file {path} does not hold 32 bytes in base64 (`head -c 32 /dev/urandom | base64`)"
    )]
    CsrfKey { path: PathBuf },
    #[error("identity_check = \"oidc\" needs an [oidc] table")]
    OidcMissing,
    #[error("an [oidc] table is configured but identity_check is not \"oidc\"")]
    OidcUnused,
    #[error(transparent)]
    Oidc(#[from] OidcConfigError),
    #[error("cannot set up the connection to the broker")]
    Broker(#[source] ConnectError),
    #[error("the CA file {path} is unreadable or holds no PEM certificate")]
    CaFile {
        path: PathBuf,
        #[source]
        source: Option<std::io::Error>,
    },
}

impl PortalConfig {
    pub fn from_toml(text: &str) -> Result<PortalConfig, ConfigError> {
        let config: PortalConfig = toml::from_str(text)?;
        if !config.broker.starts_with("https://") {
            return Err(ConfigError::NotHttps(config.broker));
        }
        if config.tenant.is_empty() {
            return Err(ConfigError::NoTenant);
        }
        if config.trusted_agent_keys.is_empty() {
            return Err(ConfigError::NoTrustedKeys);
        }
        if config.request_timeout < Duration::from_secs(1)
            || config.request_timeout > MAX_REQUEST_TIMEOUT
        {
            return Err(ConfigError::RequestTimeout);
        }
        config.limits.validate()?;
        match (config.identity_check, &config.oidc) {
            (IdentityCheck::Oidc, None) => return Err(ConfigError::OidcMissing),
            (IdentityCheck::Oidc, Some(oidc)) => oidc.validate()?,
            (IdentityCheck::None, Some(_)) => return Err(ConfigError::OidcUnused),
            (IdentityCheck::None, None) => {}
        }
        Ok(config)
    }

    pub fn load(path: &Path) -> Result<PortalConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        PortalConfig::from_toml(&text).map_err(|e| ConfigError::In {
            path: path.to_owned(),
            source: Box::new(e),
        })
    }

    /// The broker client, holding the Send key. Its channel connects on
    /// first use, so the portal starts (and tells its users the service
    /// cannot be reached) while the broker is down.
    pub fn client(&self) -> Result<PortalClient, ConfigError> {
        let send_key = read_key_file(&self.send_key_file).map_err(ConfigError::SendKey)?;
        let channel = BrokerEndpoint::new(self.broker.clone(), self.ca_file.as_deref())
            .endpoint()
            .map_err(ConfigError::Broker)?
            .connect_lazy();
        Ok(PortalClient::with_channel(
            channel,
            self.tenant.clone(),
            PortalClient::send_credential(&self.tenant, send_key),
        ))
    }

    /// The sealing client over `client`, with the portal's key and the pins.
    pub fn sealed_portal(&self, client: PortalClient) -> Result<SealedPortal, ConfigError> {
        let portal_key = read_portal_key(&self.portal_key_file)?;
        Ok(SealedPortal::new(
            client,
            portal_key,
            self.trusted_agent_keys.clone(),
        ))
    }
}

impl Limits {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.tracked_visitors == 0 || self.tracked_accounts == 0 {
            return Err(ConfigError::Limit("tracked_* must be at least 1"));
        }
        if self.header_timeout.is_zero() || self.body_timeout.is_zero() {
            return Err(ConfigError::Limit("*_timeout must be positive"));
        }
        if self.max_connections == 0
            || self.connections_per_visitor == 0
            || self.connections_per_visitor > self.max_connections
        {
            return Err(ConfigError::Limit(
                "connections_per_visitor must be at least 1 and at most max_connections",
            ));
        }
        Ok(())
    }
}

/// The portal's key pair from its base64 file, as `relayctl portal keygen`
/// writes it; every copy of the private key is wiped when dropped.
pub fn read_portal_key(path: &Path) -> Result<KeyPair, ConfigError> {
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|source| {
        ConfigError::PortalKeyRead {
            path: path.to_owned(),
            source,
        }
    })?);
    let bytes = zeroize::Zeroizing::new(
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, text.trim()).map_err(
            |_| ConfigError::PortalKeyBase64 {
                path: path.to_owned(),
            },
        )?,
    );
    KeyPair::from_private_bytes(&bytes).map_err(|source| ConfigError::PortalKey {
        path: path.to_owned(),
        source,
    })
}

/// The length of the CSRF key, in bytes.
pub const CSRF_KEY_BYTES: usize = 32;

/// The CSRF key from its base64 file; every copy is wiped when dropped.
pub fn read_csrf_key(path: &Path) -> Result<zeroize::Zeroizing<Vec<u8>>, ConfigError> {
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|source| {
        ConfigError::CsrfKeyRead {
            path: path.to_owned(),
            source,
        }
    })?);
    let bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, text.trim())
        .map(zeroize::Zeroizing::new)
        .map_err(|_| ConfigError::CsrfKey {
            path: path.to_owned(),
        })?;
    if bytes.len() != CSRF_KEY_BYTES {
        return Err(ConfigError::CsrfKey {
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}

fn fingerprints<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Fingerprint>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|text| {
            Fingerprint::parse(text)
                .map_err(|e| serde::de::Error::custom(format!("trusted agent key {text:?}: {e}")))
        })
        .collect()
}

fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN.parse().expect("valid default address")
}

fn default_title() -> String {
    DEFAULT_TITLE.to_owned()
}

fn default_request_timeout() -> Duration {
    DEFAULT_REQUEST_TIMEOUT
}

#[cfg(test)]
mod tests {
    use super::*;

    const FINGERPRINT: &str =
        "0123 4567 89ab cdef 0123 4567 89ab cdef 0123 4567 89ab cdef 0123 4567 89ab cdef";

    fn minimal(extra: &str) -> String {
        format!(
            "broker = \"https://relay.example:443\"\ntenant = \"contoso\"\n\
             send_key_file = \"send.primary.key\"\nportal_key_file = \"portal.key\"\n\
             trusted_agent_keys = [\"{FINGERPRINT}\"]\n{extra}"
        )
    }

    #[test]
    fn the_example_config_parses() {
        let config = PortalConfig::from_toml(include_str!("../../examples/portal.toml")).unwrap();
        assert_eq!(config.identity_check, IdentityCheck::None);
    }

    #[test]
    fn the_example_oidc_table_parses_when_uncommented() {
        let example = include_str!("../../examples/portal.toml");
        let (head, table) = example.split_once("# [oidc]\n").unwrap();
        let table: String = table
            .lines()
            .filter(|l| !l.starts_with("# #"))
            .map(|l| format!("{}\n", l.trim_start_matches("# ")))
            .collect();
        let text = format!("{head}[oidc]\n{table}")
            .replace("identity_check = \"none\"", "identity_check = \"oidc\"");
        let config = PortalConfig::from_toml(&text).unwrap();
        assert_eq!(config.identity_check, IdentityCheck::Oidc);
        let oidc = config.oidc.unwrap();
        assert_eq!(oidc.required_amr, ["mfa"]);
        assert_eq!(oidc.account_claim, "preferred_username");
    }

    #[test]
    fn oidc_needs_its_table_and_none_refuses_one() {
        let err = PortalConfig::from_toml(&minimal("identity_check = \"oidc\"")).unwrap_err();
        assert!(matches!(err, ConfigError::OidcMissing), "{err}");
        let table = "[oidc]\nissuer = \"https://login.example\"\nclient_id = \"c\"\n\
             redirect_url = \"https://reset.example/signin/callback\"\n\
             session_key_file = \"k\"\n";
        let err = PortalConfig::from_toml(&minimal(&format!("identity_check = \"none\"\n{table}")))
            .unwrap_err();
        assert!(matches!(err, ConfigError::OidcUnused), "{err}");
        let config =
            PortalConfig::from_toml(&minimal(&format!("identity_check = \"oidc\"\n{table}")))
                .unwrap();
        assert!(config.oidc.is_some());
        let bad = table.replace("/signin/callback", "/callback");
        let err = PortalConfig::from_toml(&minimal(&format!("identity_check = \"oidc\"\n{bad}")))
            .unwrap_err();
        assert!(err.to_string().contains("redirect_url"), "{err}");
        let bad = format!("{table}client_secret = \"inline\"\n");
        let err = PortalConfig::from_toml(&minimal(&format!("identity_check = \"oidc\"\n{bad}")))
            .unwrap_err();
        assert!(err.to_string().contains("client_secret"), "{err}");
    }

    #[test]
    fn defaults_apply() {
        let config = PortalConfig::from_toml(&minimal("identity_check = \"none\"")).unwrap();
        assert_eq!(config.listen, DEFAULT_LISTEN.parse().unwrap());
        assert_eq!(config.title, DEFAULT_TITLE);
        assert_eq!(config.request_timeout, DEFAULT_REQUEST_TIMEOUT);
        assert_eq!(config.trusted_agent_keys[0].to_string(), FINGERPRINT);
        assert_eq!(config.limits, Limits::default());
        assert_eq!(config.limits.visitor_requests_per_minute, 10);
        assert_eq!(config.limits.account_attempts_per_hour, 60);
    }

    #[test]
    fn identity_check_must_be_spelled_out() {
        let err = PortalConfig::from_toml(&minimal("")).unwrap_err();
        assert!(err.to_string().contains("identity_check"), "{err}");
        let err = PortalConfig::from_toml(&minimal("identity_check = \"mfa\"")).unwrap_err();
        assert!(err.to_string().contains("none"), "{err}");
    }

    #[test]
    fn mistakes_are_named() {
        let with = |extra: &str| {
            PortalConfig::from_toml(&minimal(&format!("identity_check = \"none\"\n{extra}")))
                .unwrap_err()
                .to_string()
        };
        assert!(with("verify = false").contains("verify"));
        assert!(with("request_timeout = \"10m\"").contains("request_timeout"));
        assert!(with("[limits]\nconnections_per_visitor = 0").contains("connections_per_visitor"));
        assert!(with("[limits]\ntrusted_proxy = []").contains("trusted_proxy"));
        let text = minimal("identity_check = \"none\"")
            .replace("https://relay", "http://relay")
            .replace(FINGERPRINT, "abcd");
        let err = PortalConfig::from_toml(&text).unwrap_err().to_string();
        assert!(
            err.contains("\"abcd\"") && err.contains("64 hex digits"),
            "{err}"
        );
        let text = minimal("identity_check = \"none\"").replace("https://relay", "http://relay");
        assert!(matches!(
            PortalConfig::from_toml(&text),
            Err(ConfigError::NotHttps(_))
        ));
        let text = minimal("identity_check = \"none\"").replace(&format!("\"{FINGERPRINT}\""), "");
        assert!(matches!(
            PortalConfig::from_toml(&text),
            Err(ConfigError::NoTrustedKeys)
        ));
    }

    #[tokio::test]
    async fn keys_load_from_the_files_relayctl_writes() {
        let dir = tempfile::tempdir().unwrap();
        let send = dir.path().join("send.primary.key");
        std::fs::write(&send, sas::Key::generate().unwrap().to_base64().as_str()).unwrap();
        let pair = KeyPair::generate(&mut envelope::os_rng());
        let portal = dir.path().join("portal.key");
        let encoded = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            pair.private_bytes().as_ref(),
        );
        std::fs::write(&portal, format!("{encoded}\n")).unwrap();
        let text = minimal("identity_check = \"none\"")
            .replace("send.primary.key", send.to_str().unwrap())
            .replace("portal.key", portal.to_str().unwrap());
        let config = PortalConfig::from_toml(&text).unwrap();
        assert_eq!(read_portal_key(&portal).unwrap().public, pair.public);
        let client = config.client().unwrap();
        config.sealed_portal(client.clone()).unwrap();

        std::fs::write(&portal, "not base64!").unwrap();
        let err = config.sealed_portal(client).err().unwrap();
        assert!(matches!(err, ConfigError::PortalKeyBase64 { .. }), "{err}");

        let csrf = dir.path().join("csrf.key");
        let key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 32]);
        std::fs::write(&csrf, format!("{key}\n")).unwrap();
        assert_eq!(read_csrf_key(&csrf).unwrap().as_slice(), &[7u8; 32]);
        let short = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 16]);
        std::fs::write(&csrf, short).unwrap();
        let err = read_csrf_key(&csrf).unwrap_err();
        assert!(matches!(err, ConfigError::CsrfKey { .. }), "{err}");
        let err = read_csrf_key(&dir.path().join("absent")).unwrap_err();
        assert!(matches!(err, ConfigError::CsrfKeyRead { .. }), "{err}");
    }
}

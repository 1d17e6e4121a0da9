//! Onboarding and key rotation, run by the on-prem administrator:
//!
//! - `init`: make (or reopen) the keyring, pin the portal keys from the
//!   enrollment bundle, register the public key with the broker. Running it
//!   again is harmless and repairs the broker's copy.
//! - `import`: a second agent takes a copy of the keyring (setup password).
//! - `rotate`: a new key, endorsed by the current one for every pinned
//!   portal; staged first when several agents must receive it, then
//!   activated (registered) so portals seal to it; older keys are dropped
//!   once the overlap has passed.

use std::path::Path;
use std::time::Duration;

use envelope::endorse::endorse;
use envelope::{Fingerprint, KeyId, KeyPair};
use proto::pb::{self, agent_gateway_client::AgentGatewayClient};
use proto::time::unix_ms;
use sas::Right;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tracing::info;

use super::config::AgentConfig;
use super::keyring::{AgentKey, Keyring, KeyringError};
use relay_client::connect::{BrokerEndpoint, ConnectError};
use relay_client::credential::{Authorize, Credential, CredentialError};
use relay_client::enrollment::EnrollmentBundle;
use relay_client::error::ClientError;

#[derive(Debug, thiserror::Error)]
pub enum OnboardingError {
    #[error("the configuration has no key_file")]
    NoKeyFile,
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    #[error(transparent)]
    Credential(#[from] CredentialError),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("the broker refused: {0}")]
    Broker(#[from] ClientError),
    #[error("the keyring is for tenant {keyring:?}, this agent serves {configured:?}")]
    TenantMismatch { keyring: String, configured: String },
    #[error("no staged key to activate")]
    NothingStaged,
    #[error("cannot endorse the new key: {0}")]
    Endorse(#[from] envelope::endorse::EndorseError),
}

/// What `init` and `rotate` report to the administrator.
#[derive(Debug, Clone)]
pub struct KeyReport {
    pub tenant: String,
    pub key_id: KeyId,
    /// Read this to the portal administrator, who pins it.
    pub fingerprint: Fingerprint,
    pub portal_fingerprints: Vec<Fingerprint>,
    /// Whether a new key was made (false when an existing keyring was reused).
    pub created: bool,
    /// Keys dropped because their overlap had passed.
    pub dropped: Vec<KeyId>,
}

fn key_file(config: &AgentConfig) -> Result<&Path, OnboardingError> {
    config.key_file.as_deref().ok_or(OnboardingError::NoKeyFile)
}

/// Registers keys with the broker using the tenant's Listen key.
pub struct Registrar {
    tenant: String,
    client: AgentGatewayClient<InterceptedService<Channel, Authorize>>,
}

impl Registrar {
    pub async fn connect(config: &AgentConfig) -> Result<Registrar, OnboardingError> {
        let endpoint = BrokerEndpoint {
            url: config.broker.first(),
            ca_file: config.ca_file.clone(),
            tls_server_name: config.tls_server_name.clone(),
            proxy: config.proxy.clone(),
            // As the session does: HTTPS_PROXY/NO_PROXY when there is no [proxy].
            proxy_from_env: true,
        };
        let credential =
            Credential::from_key_file(&config.tenant, Right::Listen, &config.listen_key_file)?;
        let channel = endpoint.connect().await?;
        Ok(Registrar {
            tenant: config.tenant.clone(),
            client: AgentGatewayClient::with_interceptor(channel, Authorize(credential)),
        })
    }

    pub async fn register(&self, key: &AgentKey) -> Result<Vec<pb::AgentKey>, OnboardingError> {
        let reply = self
            .client
            .clone()
            .register_key(pb::RegisterKeyRequest {
                tenant: self.tenant.clone(),
                key: Some(pb::AgentKey {
                    key_id: key.pair.public.key_id().to_hex(),
                    public_key: key.pair.public.as_bytes().to_vec(),
                    registered_unix_ms: 0,
                    endorsements: key
                        .endorsements
                        .iter()
                        .map(|(portal_key_id, endorsement)| pb::KeyEndorsement {
                            portal_key_id: portal_key_id.clone(),
                            endorsement: endorsement.clone(),
                        })
                        .collect(),
                }),
            })
            .await
            .map_err(ClientError::from)?;
        Ok(reply.into_inner().keys)
    }

    pub async fn retire(&self, key_id: KeyId) -> Result<(), OnboardingError> {
        let result = self
            .client
            .clone()
            .retire_key(pb::RetireKeyRequest {
                tenant: self.tenant.clone(),
                key_id: key_id.to_hex(),
            })
            .await;
        match result {
            Ok(_) => Ok(()),
            // Already gone: retiring is idempotent.
            Err(status) => match ClientError::from(status) {
                ClientError::Relay {
                    reason: proto::Reason::AgentKeyNotFound,
                    ..
                } => Ok(()),
                other => Err(other.into()),
            },
        }
    }
}

fn report(ring: &Keyring, created: bool, dropped: Vec<KeyId>) -> KeyReport {
    let current = &ring.current().pair.public;
    KeyReport {
        tenant: ring.tenant.clone(),
        key_id: current.key_id(),
        fingerprint: current.fingerprint(),
        portal_fingerprints: ring.portals.iter().map(|p| p.fingerprint()).collect(),
        created,
        dropped,
    }
}

/// Makes the keyring (or reopens it), pins the bundle's portal keys and
/// registers every active key with the broker.
pub async fn init(
    config: &AgentConfig,
    bundle: &EnrollmentBundle,
    password: &str,
) -> Result<KeyReport, OnboardingError> {
    if bundle.tenant != config.tenant {
        return Err(KeyringError::EnrollmentTenant {
            bundle: bundle.tenant.clone(),
            configured: config.tenant.clone(),
        }
        .into());
    }
    let path = key_file(config)?;
    let portals = bundle.keys().map_err(KeyringError::from)?;
    let (mut ring, created) = if path.exists() {
        (Keyring::load(path, password)?, false)
    } else {
        let pair = KeyPair::generate(&mut envelope::os_rng());
        let ring = Keyring {
            tenant: config.tenant.clone(),
            keys: vec![AgentKey {
                pair,
                created_unix_ms: unix_ms(),
                superseded_unix_ms: None,
                endorsements: Vec::new(),
                active: true,
            }],
            portals: Vec::new(),
        };
        (ring, true)
    };
    if ring.tenant != config.tenant {
        return Err(OnboardingError::TenantMismatch {
            keyring: ring.tenant,
            configured: config.tenant.clone(),
        });
    }
    for p in portals {
        if !ring.portals.contains(&p) {
            ring.portals.push(p);
        }
    }
    ring.save(path, password)?;
    let registrar = Registrar::connect(config).await?;
    for key in ring.keys.iter().filter(|k| k.active) {
        registrar.register(key).await?;
    }
    info!(tenant = %ring.tenant, key_id = %ring.current().pair.public.key_id(), created, "onboarding complete");
    Ok(report(&ring, created, Vec::new()))
}

/// Copies another agent's keyring after checking it opens with the setup
/// password and serves this agent's tenant.
pub fn import(
    config: &AgentConfig,
    from: &Path,
    password: &str,
) -> Result<KeyReport, OnboardingError> {
    let ring = Keyring::load(from, password)?;
    if ring.tenant != config.tenant {
        return Err(OnboardingError::TenantMismatch {
            keyring: ring.tenant,
            configured: config.tenant.clone(),
        });
    }
    ring.save(key_file(config)?, password)?;
    Ok(report(&ring, false, Vec::new()))
}

/// Makes a new key endorsed by the current one. With `activate`, registers
/// it at once (portals switch to it); otherwise it is staged until
/// [`activate`], so every agent can import it first.
pub async fn rotate(
    config: &AgentConfig,
    password: &str,
    activate_now: bool,
) -> Result<KeyReport, OnboardingError> {
    let path = key_file(config)?;
    let mut ring = Keyring::load(path, password)?;
    let now = unix_ms();
    let current = ring.current().pair.clone();
    let fresh = KeyPair::generate(&mut envelope::os_rng());
    let mut endorsements = Vec::new();
    for portal in &ring.portals {
        let blob = endorse(
            &current,
            &fresh.public,
            portal,
            &ring.tenant,
            now,
            &mut envelope::os_rng(),
        )?;
        endorsements.push((portal.key_id().to_hex(), blob));
    }
    ring.keys.retain(|k| k.active); // an earlier staged key is replaced
    ring.keys.push(AgentKey {
        pair: fresh,
        created_unix_ms: now,
        superseded_unix_ms: None,
        endorsements,
        active: false,
    });
    ring.save(path, password)?;
    info!(key_id = %ring.keys.last().map(|k| k.pair.public.key_id()).unwrap_or(KeyId([0; 8])), "new key staged");
    if activate_now {
        return activate(config, password).await;
    }
    let staged = ring.keys.last().expect("just pushed");
    Ok(KeyReport {
        key_id: staged.pair.public.key_id(),
        fingerprint: staged.pair.public.fingerprint(),
        ..report(&ring, true, Vec::new())
    })
}

/// Registers the staged key so portals seal to it, marks the previous keys
/// superseded, and drops keys whose overlap has passed.
pub async fn activate(config: &AgentConfig, password: &str) -> Result<KeyReport, OnboardingError> {
    let path = key_file(config)?;
    let mut ring = Keyring::load(path, password)?;
    let now = unix_ms();
    let staged = ring
        .keys
        .iter()
        .position(|k| !k.active)
        .ok_or(OnboardingError::NothingStaged)?;
    let registrar = Registrar::connect(config).await?;
    registrar.register(&ring.keys[staged]).await?;
    for (i, k) in ring.keys.iter_mut().enumerate() {
        if i == staged {
            k.active = true;
        } else if k.superseded_unix_ms.is_none() {
            k.superseded_unix_ms = Some(now);
        }
    }
    ring.save(path, password)?;
    let dropped = drop_expired(config, password, &registrar).await?;
    let ring = Keyring::load(path, password)?;
    Ok(report(&ring, true, dropped))
}

/// Drops keys superseded longer than the overlap ago, here and at the broker.
pub async fn drop_expired(
    config: &AgentConfig,
    password: &str,
    registrar: &Registrar,
) -> Result<Vec<KeyId>, OnboardingError> {
    let path = key_file(config)?;
    let mut ring = Keyring::load(path, password)?;
    let overlap = config.key_overlap.as_millis() as u64;
    let now = unix_ms();
    let expired: Vec<KeyId> = ring
        .keys
        .iter()
        .filter(|k| k.superseded_unix_ms.is_some_and(|t| t + overlap <= now))
        .map(|k| k.pair.public.key_id())
        .collect();
    for id in &expired {
        registrar.retire(*id).await?;
    }
    if !expired.is_empty() {
        ring.keys
            .retain(|k| !expired.contains(&k.pair.public.key_id()));
        ring.save(path, password)?;
        info!(
            dropped = expired.len(),
            "superseded keys dropped after the overlap"
        );
    }
    Ok(expired)
}

/// Whether the current key is older than `rotate_every`.
pub fn rotation_due(ring: &Keyring, every: Duration, now: u64) -> bool {
    ring.current().created_unix_ms + every.as_millis() as u64 <= now
}

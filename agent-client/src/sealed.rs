//! What a reset portal calls: seal the user's request to the tenant's agents,
//! relay it, and open the sealed answer. The broker supplies the agents'
//! public keys, but the portal trusts only a key whose fingerprint its
//! administrator pinned (confirmed out of band with the on-prem
//! administrator) or one endorsed by a trusted key along the rotation chain.
//! A broker that substitutes a key is refused here, before anything is sealed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use envelope::endorse::verify_endorsement;
use envelope::{
    Fingerprint, KeyId, KeyPair, PendingReply, PublicKey, ReplyBody, RequestBody, RequestHeader,
};
use proto::pb::{self, Operation};

use crate::error::ClientError;
use crate::portal::PortalClient;

/// How long a sealed request stays valid by default.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum SealedError {
    #[error(transparent)]
    Relay(#[from] ClientError),
    #[error("the tenant has no registered agent key: run `writeback-agent init` on-prem")]
    NoAgentKey,
    #[error(
        "none of the agent keys the broker offers is trusted (key ids {offered}): \
         their fingerprints are not pinned and no trusted key endorses them; \
         the broker may be substituting keys"
    )]
    KeyNotTrusted { offered: String },
    #[error("cannot seal the request: {0}")]
    Seal(#[from] envelope::SealError),
    #[error("the agent refused the envelope: {0}")]
    Refused(String),
    #[error("the reply could not be opened: {0}")]
    Reply(#[from] envelope::ReplyError),
}

/// A portal's sealing client for one tenant.
pub struct SealedPortal {
    client: PortalClient,
    portal_key: KeyPair,
    pinned: Vec<Fingerprint>,
    validity: Duration,
}

/// The agent's answer, opened.
#[derive(Debug, Clone)]
pub struct Answer {
    pub agent_id: String,
    pub agent_key_id: KeyId,
    pub reply: ReplyBody,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn operation_of(op: Operation) -> u8 {
    op as i32 as u8
}

impl SealedPortal {
    /// `pinned` are the agent key fingerprints the portal administrator
    /// confirmed with the on-prem administrator.
    pub fn new(
        client: PortalClient,
        portal_key: KeyPair,
        pinned: Vec<Fingerprint>,
    ) -> SealedPortal {
        SealedPortal {
            client,
            portal_key,
            pinned,
            validity: DEFAULT_VALIDITY,
        }
    }

    pub fn with_validity(mut self, validity: Duration) -> SealedPortal {
        self.validity = validity;
        self
    }

    /// The newest agent key this portal can trust, from the broker's list.
    pub fn trusted_key(&self, offered: &[pb::AgentKey]) -> Result<PublicKey, SealedError> {
        if offered.is_empty() {
            return Err(SealedError::NoAgentKey);
        }
        let tenant = self.client.tenant();
        let portal_key_id = self.portal_key.public.key_id().to_hex();
        // What the broker sent, oldest first; a key whose id does not match
        // its bytes is ignored.
        let keys: Vec<(PublicKey, &pb::AgentKey)> = offered
            .iter()
            .filter_map(|offer| {
                let key = PublicKey::from_bytes(&offer.public_key).ok()?;
                (key.key_id().to_hex() == offer.key_id).then_some((key, offer))
            })
            .collect();
        let mut trusted: Vec<PublicKey> = keys
            .iter()
            .filter(|(k, _)| self.pinned.contains(&k.fingerprint()))
            .map(|(k, _)| k.clone())
            .collect();
        // Extend trust along endorsements until nothing changes.
        loop {
            let newly: Vec<PublicKey> = keys
                .iter()
                .filter(|(k, _)| !trusted.contains(k))
                .filter(|(k, offer)| {
                    offer.endorsements.iter().any(|e| {
                        e.portal_key_id == portal_key_id
                            && verify_endorsement(
                                &e.endorsement,
                                k,
                                &self.portal_key,
                                &trusted,
                                tenant,
                            )
                            .is_ok()
                    })
                })
                .map(|(k, _)| k.clone())
                .collect();
            if newly.is_empty() {
                break;
            }
            trusted.extend(newly);
        }
        // The broker lists keys oldest first: seal to the newest trusted one.
        keys.iter()
            .rev()
            .map(|(k, _)| k)
            .find(|k| trusted.contains(k))
            .cloned()
            .ok_or_else(|| SealedError::KeyNotTrusted {
                offered: offered
                    .iter()
                    .map(|k| k.key_id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Seals `body` for `operation`, relays it, and opens the agent's answer.
    pub async fn submit(
        &self,
        request_id: &str,
        operation: Operation,
        body: &RequestBody,
        timeout: Option<Duration>,
    ) -> Result<Answer, SealedError> {
        let config = self.client.configuration().await?;
        let agent_key = self.trusted_key(&config.agent_keys)?;
        let (envelope, pending) = self.seal(request_id, operation, body, &agent_key)?;
        let submitted = self
            .client
            .submit(request_id, operation, envelope, timeout)
            .await
            .map_err(|e| match &e {
                ClientError::Relay {
                    reason: proto::Reason::AgentError,
                    message,
                    ..
                } => SealedError::Refused(message.clone()),
                _ => SealedError::Relay(e),
            })?;
        Ok(Answer {
            agent_id: submitted.agent_id,
            agent_key_id: agent_key.key_id(),
            reply: pending.open(&submitted.envelope)?,
        })
    }

    /// Seals without sending (for callers that relay themselves).
    pub fn seal(
        &self,
        request_id: &str,
        operation: Operation,
        body: &RequestBody,
        agent_key: &PublicKey,
    ) -> Result<(Vec<u8>, PendingReply), SealedError> {
        let now = now_ms();
        let header = RequestHeader {
            tenant: self.client.tenant().to_owned(),
            agent_key_id: agent_key.key_id(),
            portal_key_id: self.portal_key.public.key_id(),
            request_id: request_id.to_owned(),
            operation: operation_of(operation),
            issued_at_ms: now,
            expires_at_ms: now + self.validity.as_millis() as u64,
        };
        Ok(envelope::seal_request(
            &self.portal_key,
            agent_key,
            &header,
            body,
            &mut envelope::os_rng(),
        )?)
    }
}

//! Who may do what: checks a shared access signature against the keys of the
//! tenant it names (or the operator key) and against the call's tenant and
//! needed rights.

use std::sync::Arc;
use std::time::Duration;

use sas::{Key, KeySlot, Right, Token};
use tonic::metadata::MetadataMap;

use crate::error::RelayError;
use crate::tenants::Tenants;

/// The metadata entry that carries the token on portal and admin calls.
pub const AUTHORIZATION: &str = "authorization";

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub right: Right,
    /// The tenant the token was issued for; `*` for the operator.
    pub resource: String,
    /// Which key of the pair signed the token.
    pub slot: KeySlot,
    /// That key's id ([`key_id`]), for the audit trail.
    pub key_id: String,
    pub expiry_unix: u64,
}

/// A refused token, with what it proved before it was refused, for the
/// audit trail ([`crate::audit`]).
#[derive(Debug)]
pub struct Refusal {
    pub error: RelayError,
    /// What a token whose signature verified proved (then refused as
    /// expired, too long lived, of the wrong right...).
    pub proven: Option<Proven>,
    /// The tenant a parsed token names, unverified.
    pub claimed_tenant: Option<String>,
}

/// The key a token's signature verified against.
#[derive(Debug, Clone)]
pub struct Proven {
    pub right: Right,
    pub slot: KeySlot,
    pub key_id: String,
}

/// A key's id: 8 hex digits of a hash of the key, so that an audit line
/// tells a rotated key from its successor. 32 bits of a hash of 256
/// random bits give nothing towards the key.
pub fn key_id(key: &Key) -> String {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(b"relay key id\0");
    context.update(key.to_base64().as_bytes());
    let digest = context.finish();
    digest.as_ref()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl From<RelayError> for Refusal {
    fn from(error: RelayError) -> Refusal {
        Refusal {
            error,
            proven: None,
            claimed_tenant: None,
        }
    }
}

pub struct Authorizer {
    tenants: Arc<Tenants>,
    operator_key: Key,
    /// A random key no token is signed with: what a token is checked against
    /// when the tenant it addresses has no key for it (see `authorize`).
    dummy_key: Key,
    max_token_lifetime: Duration,
}

impl Authorizer {
    pub fn new(tenants: Arc<Tenants>, operator_key: Key, max_token_lifetime: Duration) -> Self {
        Authorizer {
            tenants,
            operator_key,
            dummy_key: Key::generate().expect("the system random source works"),
            max_token_lifetime,
        }
    }

    /// Authenticates the token in `metadata` for a call on `tenant` (or on no
    /// tenant in particular) that any of `accepted` may make.
    pub fn authorize_metadata(
        &self,
        metadata: &MetadataMap,
        tenant: Option<&str>,
        accepted: &[Right],
        now_unix: u64,
    ) -> Result<Principal, RelayError> {
        self.authorize_headers(metadata.as_ref(), tenant, accepted, now_unix)
    }

    /// [`Self::authorize_metadata`] on the HTTP headers of a call, before
    /// tonic has made them metadata (the ingress layer).
    pub fn authorize_headers(
        &self,
        headers: &http::HeaderMap,
        tenant: Option<&str>,
        accepted: &[Right],
        now_unix: u64,
    ) -> Result<Principal, RelayError> {
        let text = headers
            .get(AUTHORIZATION)
            .ok_or(RelayError::MissingCredential)?
            .to_str()
            .map_err(|_| RelayError::MalformedToken(sas::TokenError::MissingPrefix))?;
        self.authorize(text, tenant, accepted, now_unix)
    }

    /// The checks, in an order that tells a caller who cannot prove a key of
    /// the addressed tenant nothing about that tenant, not even whether it
    /// exists (docs/PROTOCOL.md, "The order of the broker's checks"):
    /// token syntax, tenant name syntax, then the signature against the keys
    /// of the addressed tenant only, then expiry, lifetime, the operator's
    /// tenant existence, and the right. The ingress layer calls it first
    /// with no tenant, on the headers alone (the token's own tenant), before
    /// any body is read; the services call it again with the addressed one.
    pub fn authorize(
        &self,
        token_text: &str,
        tenant: Option<&str>,
        accepted: &[Right],
        now_unix: u64,
    ) -> Result<Principal, RelayError> {
        self.check(token_text, tenant, accepted, now_unix)
            .map_err(|refusal| refusal.error)
    }

    /// [`Self::authorize`], saying on a refusal what the token proved.
    pub fn check(
        &self,
        token_text: &str,
        tenant: Option<&str>,
        accepted: &[Right],
        now_unix: u64,
    ) -> Result<Principal, Box<Refusal>> {
        let token =
            Token::parse(token_text).map_err(|e| Box::new(Refusal::from(RelayError::from(e))))?;
        let unproven = |error| {
            Box::new(Refusal {
                error,
                proven: None,
                claimed_tenant: Some(token.resource.clone()),
            })
        };
        if let Some(tenant) = tenant
            && !proto::names::is_valid_tenant(tenant)
        {
            return Err(unproven(RelayError::InvalidTenantName));
        }
        let (slot, key_id) = if token.right == Right::Operator {
            if token.resource != sas::OPERATOR_RESOURCE {
                return Err(unproven(RelayError::BadSignature));
            }
            let slot = token
                .verify(&self.operator_key, &self.operator_key)
                .ok_or_else(|| unproven(RelayError::BadSignature))?;
            (slot, key_id(&self.operator_key))
        } else {
            // A token names its own tenant; only a token of the addressed
            // tenant can be checked against that tenant's keys. Every other
            // case (another tenant's token, a missing tenant, a right without
            // keys) is checked against the dummy key, so the answer and the
            // time it takes are those of a wrong signature on an existing
            // tenant: they cannot tell whether the tenant exists.
            let addressed = tenant.unwrap_or(&token.resource);
            let record = (token.resource == addressed)
                .then(|| self.tenants.get(addressed))
                .flatten();
            let pair = record.as_ref().and_then(|r| r.keys.pair(token.right));
            let slot = match pair {
                Some(pair) => token.verify(&pair.primary, &pair.secondary),
                None => token.verify(&self.dummy_key, &self.dummy_key).and(None),
            };
            let slot = slot.ok_or_else(|| unproven(RelayError::BadSignature))?;
            let pair = pair.expect("a slot verified against the tenant's pair");
            let key = match slot {
                KeySlot::Primary => &pair.primary,
                KeySlot::Secondary => &pair.secondary,
            };
            (slot, key_id(key))
        };
        let proven = |error| {
            Box::new(Refusal {
                error,
                proven: Some(Proven {
                    right: token.right,
                    slot,
                    key_id: key_id.clone(),
                }),
                claimed_tenant: Some(token.resource.clone()),
            })
        };
        if token.is_expired(now_unix) {
            return Err(proven(RelayError::TokenExpired));
        }
        if token.expiry_unix > now_unix.saturating_add(self.max_token_lifetime.as_secs()) {
            return Err(proven(RelayError::TokenLifetimeTooLong(
                self.max_token_lifetime,
            )));
        }
        // Only the operator gets here without a proven key of the tenant, and
        // the operator may know which tenants exist.
        if let Some(tenant) = tenant
            && token.right == Right::Operator
        {
            self.tenants.require(tenant).map_err(proven)?;
        }
        if !accepted.contains(&token.right) {
            return Err(proven(RelayError::WrongRight {
                have: token.right,
                needs: accepted
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(" or "),
            }));
        }
        Ok(Principal {
            right: token.right,
            resource: token.resource,
            slot,
            key_id,
            expiry_unix: token.expiry_unix,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    async fn setup() -> (tempfile::TempDir, Arc<Tenants>, Authorizer, Key) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb"), crate::sealing::test_key()).unwrap();
        let tenants = Arc::new(Tenants::load(store).unwrap());
        tenants.create("a", None, true).await.unwrap();
        tenants.create("b", None, true).await.unwrap();
        let op = Key::generate().unwrap();
        let auth = Authorizer::new(Arc::clone(&tenants), op.clone(), Duration::from_secs(3600));
        (dir, tenants, auth, op)
    }

    const NOW: u64 = 1_700_000_000;

    #[tokio::test]
    async fn each_check_has_its_own_error() {
        let (_d, tenants, auth, op) = setup().await;
        let a = tenants.get("a").unwrap();
        let send = |exp| sas::mint(&a.keys.send.primary, "a", Right::Send, exp);
        let ok = send(NOW + 60);
        let p = auth
            .authorize(ok.expose(), Some("a"), &[Right::Send], NOW)
            .unwrap();
        assert_eq!(p.slot, KeySlot::Primary);

        let reason = |r: Result<Principal, RelayError>| r.unwrap_err().reason();
        use proto::Reason as R;
        assert_eq!(
            reason(auth.authorize(ok.expose(), Some("a"), &[Right::Send], NOW + 60)),
            R::TokenExpired
        );
        assert_eq!(
            reason(auth.authorize(ok.expose(), Some("a"), &[Right::Manage], NOW)),
            R::WrongRight
        );
        assert_eq!(
            reason(auth.authorize(send(NOW).expose(), Some("a"), &[Right::Send], NOW)),
            R::TokenExpired
        );
        assert_eq!(
            reason(auth.authorize(send(NOW + 7200).expose(), Some("a"), &[Right::Send], NOW)),
            R::TokenLifetimeTooLong
        );
        let listen_signed_with_send_key =
            sas::mint(&a.keys.send.primary, "a", Right::Listen, NOW + 60);
        assert_eq!(
            reason(auth.authorize(
                listen_signed_with_send_key.expose(),
                Some("a"),
                &[Right::Listen],
                NOW
            )),
            R::BadSignature
        );
        assert_eq!(
            reason(auth.authorize("nope", Some("a"), &[Right::Send], NOW)),
            R::MalformedToken
        );

        let operator = sas::mint(&op, "*", Right::Operator, NOW + 60);
        assert!(
            auth.authorize(
                operator.expose(),
                Some("b"),
                &[Right::Manage, Right::Operator],
                NOW
            )
            .is_ok()
        );
        assert_eq!(
            reason(auth.authorize(operator.expose(), Some("b"), &[Right::Send], NOW)),
            R::WrongRight
        );
        assert_eq!(
            reason(auth.authorize(
                operator.expose(),
                Some("zz"),
                &[Right::Manage, Right::Operator],
                NOW
            )),
            R::UnknownTenant
        );
        let fake_operator = sas::mint(&a.keys.manage.primary, "*", Right::Operator, NOW + 60);
        assert_eq!(
            reason(auth.authorize(fake_operator.expose(), None, &[Right::Operator], NOW)),
            R::BadSignature
        );
    }

    /// What a caller without a key of a tenant learns about it: the same
    /// error, whether the tenant exists or not.
    #[tokio::test]
    async fn a_tenant_without_a_proven_key_looks_the_same_whether_it_exists_or_not() {
        let (_d, tenants, auth, _op) = setup().await;
        let a = tenants.get("a").unwrap();
        let made_up = Key::generate().unwrap();
        for right in [Right::Send, Right::Listen, Right::Manage] {
            let answers = |tenant: &str| {
                let tokens = [
                    sas::mint(&a.keys.pair(right).unwrap().primary, "a", right, NOW + 60),
                    sas::mint(&made_up, tenant, right, NOW + 60),
                    sas::mint(&made_up, tenant, right, NOW - 60),
                    sas::mint(&made_up, tenant, right, NOW + 999_999),
                ];
                tokens
                    .iter()
                    .map(|t| {
                        auth.authorize(t.expose(), Some(tenant), &[right], NOW)
                            .unwrap_err()
                            .to_string()
                    })
                    .collect::<Vec<_>>()
            };
            let existing = answers("b");
            assert_eq!(existing, answers("zz"), "{right}");
            assert!(
                existing
                    .iter()
                    .all(|m| *m == RelayError::BadSignature.to_string()),
                "{existing:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_rotated_key_no_longer_verifies_and_the_other_still_does() {
        let (_d, tenants, auth, _op) = setup().await;
        let old = tenants.get("a").unwrap();
        let primary = sas::mint(&old.keys.listen.primary, "a", Right::Listen, NOW + 60);
        let secondary = sas::mint(&old.keys.listen.secondary, "a", Right::Listen, NOW + 60);
        tenants
            .rotate_key("a", Right::Listen, KeySlot::Primary)
            .await
            .unwrap();
        assert!(
            auth.authorize(primary.expose(), Some("a"), &[Right::Listen], NOW)
                .is_err()
        );
        let p = auth
            .authorize(secondary.expose(), Some("a"), &[Right::Listen], NOW)
            .unwrap();
        assert_eq!(p.slot, KeySlot::Secondary);
    }
}

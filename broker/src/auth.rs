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
    pub expiry_unix: u64,
}

pub struct Authorizer {
    tenants: Arc<Tenants>,
    operator_key: Key,
    max_token_lifetime: Duration,
}

impl Authorizer {
    pub fn new(tenants: Arc<Tenants>, operator_key: Key, max_token_lifetime: Duration) -> Self {
        Authorizer {
            tenants,
            operator_key,
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
        let text = metadata
            .get(AUTHORIZATION)
            .ok_or(RelayError::MissingCredential)?
            .to_str()
            .map_err(|_| RelayError::MalformedToken(sas::TokenError::MissingPrefix))?;
        self.authorize(text, tenant, accepted, now_unix)
    }

    /// The checks, in an order that reveals nothing to a caller who cannot
    /// sign: the addressed tenant must exist, then the signature must match
    /// a current key, then expiry, then scope and right.
    pub fn authorize(
        &self,
        token_text: &str,
        tenant: Option<&str>,
        accepted: &[Right],
        now_unix: u64,
    ) -> Result<Principal, RelayError> {
        let token = Token::parse(token_text)?;
        if let Some(tenant) = tenant {
            if !proto::names::is_valid_tenant(tenant) {
                return Err(RelayError::InvalidTenantName);
            }
            self.tenants.require(tenant)?;
        }
        let slot = if token.right == Right::Operator {
            if token.resource != sas::OPERATOR_RESOURCE {
                return Err(RelayError::BadSignature);
            }
            token
                .verify(&self.operator_key, &self.operator_key)
                .ok_or(RelayError::BadSignature)?
        } else {
            let record = self
                .tenants
                .get(&token.resource)
                .ok_or(RelayError::BadSignature)?;
            let pair = record
                .keys
                .pair(token.right)
                .ok_or(RelayError::BadSignature)?;
            token
                .verify(&pair.primary, &pair.secondary)
                .ok_or(RelayError::BadSignature)?
        };
        if token.is_expired(now_unix) {
            return Err(RelayError::TokenExpired);
        }
        if token.expiry_unix > now_unix.saturating_add(self.max_token_lifetime.as_secs()) {
            return Err(RelayError::TokenLifetimeTooLong(self.max_token_lifetime));
        }
        if let Some(tenant) = tenant
            && token.right != Right::Operator
            && token.resource != tenant
        {
            return Err(RelayError::TenantMismatch(tenant.to_owned()));
        }
        if !accepted.contains(&token.right) {
            return Err(RelayError::WrongRight {
                have: token.right,
                needs: accepted
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(" or "),
            });
        }
        Ok(Principal {
            right: token.right,
            resource: token.resource,
            slot,
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
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
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
            reason(auth.authorize(ok.expose(), Some("zz"), &[Right::Send], NOW)),
            R::UnknownTenant
        );
        assert_eq!(
            reason(auth.authorize(ok.expose(), Some("b"), &[Right::Send], NOW)),
            R::TenantMismatch
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
        let fake_operator = sas::mint(&a.keys.manage.primary, "*", Right::Operator, NOW + 60);
        assert_eq!(
            reason(auth.authorize(fake_operator.expose(), None, &[Right::Operator], NOW)),
            R::BadSignature
        );
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

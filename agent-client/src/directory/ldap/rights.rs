//! The service account's effective rights: which SIDs it acts with, the
//! security descriptors that decide, and the report `doctor` prints.

use ldap3::controls::RawControl;
use ldap3::{Ldap, Scope, SearchEntry};

use super::{LdapDirectory, SD_FLAGS_DACL, SD_FLAGS_OID, parent_dn};
use crate::directory::sd::{SecurityDescriptor, missing_rights_below};
use crate::directory::{DirectoryError, OuRights, Refusal, Right};

impl LdapDirectory {
    /// The SIDs the service account acts with: its own, its groups', and
    /// the well-known ones every authenticated account has.
    pub(super) async fn service_sids(
        &self,
        ldap: &mut Ldap,
    ) -> Result<Vec<String>, DirectoryError> {
        let e = self
            .read(ldap, &self.settings.bind_dn, &["objectSid", "tokenGroups"])
            .await?;
        let mut sids = vec!["S-1-1-0".to_owned(), "S-1-5-11".to_owned()];
        for attr in ["objectSid", "tokenGroups"] {
            for raw in e.bin_attrs.get(attr).into_iter().flatten() {
                sids.extend(crate::directory::sd::sid_string(raw));
            }
        }
        Ok(sids)
    }

    pub(super) async fn descriptor(
        &self,
        ldap: &mut Ldap,
        dn: &str,
    ) -> Result<SecurityDescriptor, DirectoryError> {
        let control = RawControl {
            ctype: SD_FLAGS_OID.to_owned(),
            crit: true,
            val: Some(SD_FLAGS_DACL.to_vec()),
        };
        let (entries, _) = ldap
            .with_controls(control)
            .search(
                dn,
                Scope::Base,
                "(objectClass=*)",
                vec!["nTSecurityDescriptor"],
            )
            .await
            .map_err(|e| DirectoryError(format!("read the security descriptor of {dn}: {e}")))?
            .success()
            .map_err(|e| DirectoryError(format!("read the security descriptor of {dn}: {e}")))?;
        let entry = entries
            .into_iter()
            .next()
            .map(SearchEntry::construct)
            .ok_or_else(|| DirectoryError(format!("no object {dn}")))?;
        let raw = entry
            .bin_attrs
            .get("nTSecurityDescriptor")
            .and_then(|v| v.first())
            .ok_or_else(|| DirectoryError(format!("{dn} returned no security descriptor")))?;
        SecurityDescriptor::parse(raw).map_err(|e| DirectoryError(format!("{dn}: {e}")))
    }

    /// A permission refusal naming the OU, the right and whether inheritance is blocked there.
    pub(super) async fn denied(&self, ldap: &mut Ldap, dn: &str, needed: &[Right]) -> Refusal {
        let ou = parent_dn(dn);
        let (right, blocked) = match (
            self.descriptor(ldap, &ou).await,
            self.service_sids(ldap).await,
        ) {
            (Ok(sd), Ok(sids)) => {
                let missing = missing_rights_below(&sd, &sids);
                let right = needed
                    .iter()
                    .find(|r| missing.contains(r))
                    .copied()
                    .unwrap_or(needed[0]);
                (right, sd.protected())
            }
            _ => (needed[0], false),
        };
        Refusal::PermissionDenied {
            right,
            ou,
            inheritance_blocked: blocked,
        }
    }

    pub(super) async fn rights_report(&self) -> Result<Vec<OuRights>, DirectoryError> {
        let mut ldap = self.connect().await?;
        let base = self.base_dn(&mut ldap).await?;
        let sids = self.service_sids(&mut ldap).await?;
        let (ous, _) = ldap
            .search(
                &base,
                Scope::Subtree,
                "(objectClass=organizationalUnit)",
                vec!["ou"],
            )
            .await
            .map_err(|e| DirectoryError(e.to_string()))?
            .success()
            .map_err(|e| DirectoryError(e.to_string()))?;
        let mut out = Vec::new();
        for ou in ous.into_iter().map(SearchEntry::construct) {
            let (users, _) = ldap
                .search(
                    &ou.dn,
                    Scope::OneLevel,
                    "(&(objectCategory=person)(objectClass=user))",
                    vec!["1.1"],
                )
                .await
                .map_err(|e| DirectoryError(e.to_string()))?
                .success()
                .map_err(|e| DirectoryError(e.to_string()))?;
            if users.is_empty() {
                continue;
            }
            let sd = self.descriptor(&mut ldap, &ou.dn).await?;
            out.push(OuRights {
                user_count: users.len(),
                missing: missing_rights_below(&sd, &sids),
                inheritance_blocked: sd.protected(),
                dn: ou.dn,
            });
        }
        let _ = ldap.unbind().await;
        Ok(out)
    }
}

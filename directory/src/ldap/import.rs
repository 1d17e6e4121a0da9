//! The connector-space import: every user account of the forest, or only
//! those changed since a cursor (moves and renames bump uSNChanged, so they
//! are among them), and the tombstones of accounts deleted since.

use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::controls::RawControl;
use ldap3::{Ldap, Scope, SearchEntry};

use super::controllers::Attempt;
use super::{LdapDirectory, PAGE_SIZE, UAC_DISABLED, first, first_i64};
use crate::{Account, DirectoryError, Imported};

/// LDAP_SERVER_SHOW_DELETED_OID: lets a search return tombstones.
const SHOW_DELETED_OID: &str = "1.2.840.113556.1.4.417";

const ACCOUNT_ATTRS: [&str; 6] = [
    "sAMAccountName",
    "userPrincipalName",
    "objectGUID",
    "displayName",
    "userAccountControl",
    "uSNChanged",
];

fn object_guid(e: &SearchEntry) -> Option<[u8; 16]> {
    e.bin_attrs
        .get("objectGUID")
        .and_then(|v| v.first())
        .and_then(|g| <[u8; 16]>::try_from(g.as_slice()).ok())
}

impl LdapDirectory {
    fn account(&self, e: SearchEntry) -> Option<Account> {
        Some(Account {
            forest: self.name.clone(),
            sam_account_name: first(&e, "sAMAccountName").unwrap_or_default().to_owned(),
            user_principal_name: first(&e, "userPrincipalName")
                .unwrap_or_default()
                .to_owned(),
            object_guid: object_guid(&e)?,
            display_name: first(&e, "displayName").unwrap_or_default().to_owned(),
            enabled: first_i64(&e, "userAccountControl") as u64 & UAC_DISABLED == 0,
            usn_changed: first_i64(&e, "uSNChanged").max(0) as u64,
            dn: e.dn,
        })
    }

    pub(super) async fn refresh_account(
        &self,
        account: &Account,
    ) -> Result<Option<Account>, DirectoryError> {
        let mut ldap = self.connect().await?;
        let entry = self
            .read_by_guid(&mut ldap, &account.object_guid, &ACCOUNT_ATTRS)
            .await;
        let _ = ldap.unbind().await;
        let entry = entry.map_err(|e| match e {
            Attempt::Final(e) => e,
            Attempt::Elsewhere(why) => DirectoryError(format!("forest {}: {why}", self.name)),
        })?;
        Ok(entry.and_then(|e| self.account(e)))
    }

    pub(super) async fn import_accounts(
        &self,
        since: Option<u64>,
    ) -> Result<Imported, DirectoryError> {
        let mut ldap = self.connect().await?;
        let root = self.read(&mut ldap, "", &["highestCommittedUSN"]).await?;
        let cursor = first_i64(&root, "highestCommittedUSN").max(0) as u64;
        let base = self.base_dn(&mut ldap).await?;
        let filter = match since {
            Some(usn) => format!(
                "(&(objectCategory=person)(objectClass=user)(uSNChanged>={}))",
                usn + 1
            ),
            None => "(&(objectCategory=person)(objectClass=user))".to_owned(),
        };
        let adapters: Vec<Box<dyn Adapter<_, _>>> = vec![
            Box::new(EntriesOnly::new()),
            Box::new(PagedResults::new(PAGE_SIZE)),
        ];
        let mut stream = ldap
            .streaming_search_with(
                adapters,
                &base,
                Scope::Subtree,
                &filter,
                ACCOUNT_ATTRS.to_vec(),
            )
            .await
            .map_err(|e| DirectoryError(format!("forest {}: search failed: {e}", self.name)))?;
        let mut accounts = Vec::new();
        while let Some(entry) = stream
            .next()
            .await
            .map_err(|e| DirectoryError(format!("forest {}: search failed: {e}", self.name)))?
        {
            accounts.extend(self.account(SearchEntry::construct(entry)));
        }
        let result = stream.finish().await;
        if result.rc != 0 {
            return Err(DirectoryError(format!(
                "forest {}: search ended with {} {}",
                self.name, result.rc, result.text
            )));
        }
        // Deletions are also found on use (noSuchObject): a failed
        // tombstone search must not cost the accounts just read.
        let deleted = match since {
            Some(usn) => self
                .tombstones(&mut ldap, &base, usn)
                .await
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "deleted accounts not imported");
                    Vec::new()
                }),
            None => Vec::new(),
        };
        let _ = ldap.unbind().await;
        Ok(Imported {
            accounts,
            deleted,
            cursor,
        })
    }

    /// objectGUIDs of user objects deleted after `usn`. AD shows tombstones
    /// only to those who may list CN=Deleted Objects (by default the
    /// domain's administrators): for a delegated service account this finds
    /// none, and a deleted account is noticed on use instead.
    async fn tombstones(
        &self,
        ldap: &mut Ldap,
        base: &str,
        usn: u64,
    ) -> Result<Vec<[u8; 16]>, DirectoryError> {
        let show_deleted = RawControl {
            ctype: SHOW_DELETED_OID.to_owned(),
            crit: true,
            val: None,
        };
        let filter = format!(
            "(&(isDeleted=TRUE)(objectClass=user)(uSNChanged>={}))",
            usn + 1
        );
        let (entries, _) = ldap
            .with_controls(show_deleted)
            .search(base, Scope::Subtree, &filter, vec!["objectGUID"])
            .await
            .and_then(|r| r.success())
            .map_err(|e| {
                DirectoryError(format!(
                    "forest {}: search for deleted accounts failed: {e}",
                    self.name
                ))
            })?;
        Ok(entries
            .into_iter()
            .filter_map(|e| object_guid(&SearchEntry::construct(e)))
            .collect())
    }
}

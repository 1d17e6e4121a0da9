//! The connector-space import: every user account of the forest, or only
//! those changed since a cursor.

use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::{Scope, SearchEntry};

use super::{LdapDirectory, PAGE_SIZE, UAC_DISABLED, first, first_i64};
use crate::directory::{Account, DirectoryError};

impl LdapDirectory {
    pub(super) async fn import_accounts(
        &self,
        since: Option<u64>,
    ) -> Result<(Vec<Account>, u64), DirectoryError> {
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
                vec![
                    "sAMAccountName",
                    "userPrincipalName",
                    "objectGUID",
                    "displayName",
                    "userAccountControl",
                    "uSNChanged",
                ],
            )
            .await
            .map_err(|e| DirectoryError(format!("forest {}: search failed: {e}", self.name)))?;
        let mut accounts = Vec::new();
        while let Some(entry) = stream
            .next()
            .await
            .map_err(|e| DirectoryError(format!("forest {}: search failed: {e}", self.name)))?
        {
            let e = SearchEntry::construct(entry);
            let Some(guid) = e
                .bin_attrs
                .get("objectGUID")
                .and_then(|v| v.first())
                .and_then(|g| <[u8; 16]>::try_from(g.as_slice()).ok())
            else {
                continue;
            };
            accounts.push(Account {
                forest: self.name.clone(),
                sam_account_name: first(&e, "sAMAccountName").unwrap_or_default().to_owned(),
                user_principal_name: first(&e, "userPrincipalName")
                    .unwrap_or_default()
                    .to_owned(),
                object_guid: guid,
                display_name: first(&e, "displayName").unwrap_or_default().to_owned(),
                enabled: first_i64(&e, "userAccountControl") as u64 & UAC_DISABLED == 0,
                usn_changed: first_i64(&e, "uSNChanged").max(0) as u64,
                dn: e.dn,
            });
        }
        let result = stream.finish().await;
        if result.rc != 0 {
            return Err(DirectoryError(format!(
                "forest {}: search ended with {} {}",
                self.name, result.rc, result.text
            )));
        }
        let _ = ldap.unbind().await;
        Ok((accounts, cursor))
    }
}

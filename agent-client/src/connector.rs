//! The connector space: the agent's index of the accounts of every
//! configured forest, so that the anchor a portal sends (the cloud source
//! anchor — by default the base64 objectGUID — or the userPrincipalName)
//! resolves to one forest and distinguished name. The first import reads
//! everything; later imports ask each forest only for what changed.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use envelope::Anchor;
use tokio::sync::RwLock;
use tracing::info;

use crate::directory::{Account, Directory, DirectoryError};

/// Progress is reported every this many accounts on long imports.
pub const PROGRESS_EVERY: usize = 1000;

/// How an anchor failed to resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unresolved {
    NotFound,
    /// (forest, dn) of every match.
    SeveralMatches(Vec<(String, String)>),
}

/// What one import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// forest -> accounts read in this import.
    pub read: Vec<(String, usize)>,
    /// Accounts indexed in total afterwards.
    pub total: usize,
    pub incremental: bool,
}

#[derive(Default)]
struct Index {
    /// (forest index, dn) -> account
    accounts: HashMap<(usize, String), Account>,
    /// base64 objectGUID -> keys of `accounts`
    by_guid: HashMap<String, Vec<(usize, String)>>,
    /// lower-case UPN -> keys of `accounts`
    by_upn: HashMap<String, Vec<(usize, String)>>,
    cursors: HashMap<usize, u64>,
}

impl Index {
    fn remove(&mut self, key: &(usize, String)) {
        if let Some(old) = self.accounts.remove(key) {
            if let Some(list) = self.by_guid.get_mut(&STANDARD.encode(old.object_guid)) {
                list.retain(|k| k != key);
            }
            if let Some(list) = self.by_upn.get_mut(&old.user_principal_name.to_lowercase()) {
                list.retain(|k| k != key);
            }
        }
    }

    fn insert(&mut self, forest: usize, account: Account) {
        let key = (forest, account.dn.clone());
        self.remove(&key);
        self.by_guid
            .entry(STANDARD.encode(account.object_guid))
            .or_default()
            .push(key.clone());
        if !account.user_principal_name.is_empty() {
            self.by_upn
                .entry(account.user_principal_name.to_lowercase())
                .or_default()
                .push(key.clone());
        }
        self.accounts.insert(key, account);
    }
}

pub struct ConnectorSpace {
    forests: Vec<Arc<dyn Directory>>,
    index: RwLock<Index>,
}

impl ConnectorSpace {
    pub fn new(forests: Vec<Arc<dyn Directory>>) -> ConnectorSpace {
        ConnectorSpace {
            forests,
            index: RwLock::new(Index::default()),
        }
    }

    pub fn forests(&self) -> &[Arc<dyn Directory>] {
        &self.forests
    }

    /// Imports every forest: everything the first time, then only changes.
    /// `progress(forest, accounts so far)` is called every
    /// [`PROGRESS_EVERY`] accounts and at the end of each forest.
    pub async fn import(
        &self,
        mut progress: impl FnMut(&str, usize),
    ) -> Result<ImportReport, DirectoryError> {
        let mut report = ImportReport::default();
        for (i, forest) in self.forests.iter().enumerate() {
            let since = self.index.read().await.cursors.get(&i).copied();
            report.incremental |= since.is_some();
            let (accounts, cursor) = forest.import(since).await?;
            let read = accounts.len();
            let mut index = self.index.write().await;
            for (n, account) in accounts.into_iter().enumerate() {
                index.insert(i, account);
                if (n + 1) % PROGRESS_EVERY == 0 {
                    progress(forest.forest(), n + 1);
                }
            }
            index.cursors.insert(i, cursor);
            drop(index);
            progress(forest.forest(), read);
            if read > 0 {
                info!(
                    forest = forest.forest(),
                    accounts = read,
                    incremental = since.is_some(),
                    "connector space import"
                );
            }
            report.read.push((forest.forest().to_owned(), read));
        }
        report.total = self.index.read().await.accounts.len();
        Ok(report)
    }

    /// The one account the anchor names.
    pub async fn resolve(
        &self,
        anchor: &Anchor,
    ) -> Result<(Arc<dyn Directory>, Account), Unresolved> {
        let index = self.index.read().await;
        let keys = match anchor {
            Anchor::SourceAnchor(a) => index.by_guid.get(a.trim()),
            Anchor::UserPrincipalName(upn) => index.by_upn.get(&upn.trim().to_lowercase()),
        };
        match keys.map(Vec::as_slice) {
            None | Some([]) => Err(Unresolved::NotFound),
            Some([key]) => {
                let account = index
                    .accounts
                    .get(key)
                    .cloned()
                    .ok_or(Unresolved::NotFound)?;
                Ok((Arc::clone(&self.forests[key.0]), account))
            }
            Some(many) => {
                let mut matches: Vec<_> = many
                    .iter()
                    .map(|(f, dn)| (self.forests[*f].forest().to_owned(), dn.clone()))
                    .collect();
                matches.sort();
                Err(Unresolved::SeveralMatches(matches))
            }
        }
    }

    /// Resolves, and on a miss imports the changes once and tries again, so
    /// an account created a minute ago is found.
    pub async fn resolve_fresh(
        &self,
        anchor: &Anchor,
    ) -> Result<(Arc<dyn Directory>, Account), Unresolved> {
        match self.resolve(anchor).await {
            Err(Unresolved::NotFound) => {
                if let Err(e) = self.import(|_, _| {}).await {
                    tracing::warn!(error = %e, "incremental import failed");
                }
                self.resolve(anchor).await
            }
            other => other,
        }
    }

    pub async fn len(&self) -> usize {
        self.index.read().await.accounts.len()
    }

    pub async fn is_empty(&self) -> bool {
        self.len().await == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::{OuRights, Refusal, ResultantPolicy};
    use envelope::Password;
    use std::sync::Mutex;

    /// A forest that only imports, from a list the test edits.
    struct Listed {
        name: String,
        accounts: Mutex<Vec<Account>>,
    }

    fn account(forest: &str, dn: &str, upn: &str, guid: u8, usn: u64) -> Account {
        Account {
            forest: forest.into(),
            dn: dn.into(),
            sam_account_name: dn.into(),
            user_principal_name: upn.into(),
            object_guid: [guid; 16],
            display_name: dn.into(),
            enabled: true,
            usn_changed: usn,
        }
    }

    #[tonic::async_trait]
    impl Directory for Listed {
        fn forest(&self) -> &str {
            &self.name
        }
        async fn import(&self, since: Option<u64>) -> Result<(Vec<Account>, u64), DirectoryError> {
            let all = self.accounts.lock().unwrap().clone();
            let cursor = all.iter().map(|a| a.usn_changed).max().unwrap_or(0);
            Ok((
                all.into_iter()
                    .filter(|a| since.is_none_or(|s| a.usn_changed > s))
                    .collect(),
                cursor,
            ))
        }
        async fn reset_password(
            &self,
            _: &str,
            _: &Password,
            _: bool,
            _: bool,
        ) -> Result<(), Refusal> {
            unreachable!()
        }
        async fn change_password(
            &self,
            _: &str,
            _: &Password,
            _: &Password,
        ) -> Result<(), Refusal> {
            unreachable!()
        }
        async fn unlock(&self, _: &str) -> Result<(), Refusal> {
            unreachable!()
        }
        async fn policy(&self, _: &str) -> Result<ResultantPolicy, Refusal> {
            unreachable!()
        }
        async fn effective_rights(&self) -> Result<Vec<OuRights>, DirectoryError> {
            unreachable!()
        }
    }

    #[tokio::test]
    async fn anchors_resolve_across_forests_and_imports_are_incremental() {
        let contoso = Arc::new(Listed {
            name: "contoso".into(),
            accounts: Mutex::new(vec![
                account("contoso", "CN=Ada", "ada@contoso.example", 1, 5),
                account("contoso", "CN=Dup", "dup@example.org", 3, 6),
            ]),
        });
        let fabrikam = Arc::new(Listed {
            name: "fabrikam".into(),
            accounts: Mutex::new(vec![account("fabrikam", "CN=Dup", "dup@example.org", 4, 2)]),
        });
        let space = ConnectorSpace::new(vec![contoso.clone(), fabrikam.clone()]);
        let mut calls = Vec::new();
        let first = space
            .import(|f, n| calls.push((f.to_owned(), n)))
            .await
            .unwrap();
        assert!(!first.incremental);
        assert_eq!(first.total, 3);
        assert_eq!(
            calls,
            [("contoso".to_owned(), 2), ("fabrikam".to_owned(), 1)]
        );

        let (dir, ada) = space
            .resolve(&Anchor::UserPrincipalName("ADA@contoso.example".into()))
            .await
            .unwrap();
        assert_eq!((dir.forest(), ada.dn.as_str()), ("contoso", "CN=Ada"));
        let by_guid = Anchor::SourceAnchor(STANDARD.encode([1u8; 16]));
        assert_eq!(space.resolve(&by_guid).await.unwrap().1.dn, "CN=Ada");
        assert_eq!(
            space
                .resolve(&Anchor::UserPrincipalName("dup@example.org".into()))
                .await
                .err()
                .unwrap(),
            Unresolved::SeveralMatches(vec![
                ("contoso".into(), "CN=Dup".into()),
                ("fabrikam".into(), "CN=Dup".into())
            ])
        );
        assert_eq!(
            space
                .resolve(&Anchor::UserPrincipalName("nobody@x".into()))
                .await
                .err()
                .unwrap(),
            Unresolved::NotFound
        );

        // A rename and a new account: the next import reads only those.
        {
            let mut list = contoso.accounts.lock().unwrap();
            list[0].user_principal_name = "ada.l@contoso.example".into();
            list[0].usn_changed = 9;
            list.push(account("contoso", "CN=New", "new@contoso.example", 7, 10));
        }
        let second = space.import(|_, _| {}).await.unwrap();
        assert!(second.incremental);
        assert_eq!(
            second.read,
            [("contoso".to_owned(), 2), ("fabrikam".to_owned(), 0)]
        );
        assert!(
            space
                .resolve(&Anchor::UserPrincipalName("ada@contoso.example".into()))
                .await
                .is_err()
        );
        assert!(
            space
                .resolve(&Anchor::UserPrincipalName("ada.l@contoso.example".into()))
                .await
                .is_ok()
        );

        // A miss triggers one incremental import.
        contoso.accounts.lock().unwrap().push(account(
            "contoso",
            "CN=Late",
            "late@contoso.example",
            8,
            11,
        ));
        assert!(
            space
                .resolve_fresh(&Anchor::UserPrincipalName("late@contoso.example".into()))
                .await
                .is_ok()
        );
    }
}

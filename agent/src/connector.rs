//! The connector space: the agent's index of the accounts of every
//! configured forest, so that the anchor a portal sends (the cloud source
//! anchor — by default the base64 objectGUID — or the userPrincipalName)
//! resolves to one account. An account is (forest, objectGUID), as in AD:
//! a move or a rename changes its DN, not its identity. The first import
//! reads everything; later imports ask each forest only for what changed,
//! deletions (tombstones) included where the service account can see them.
//! Where it cannot, a deleted account is found on use: the backend answers
//! [`Refusal::UserNotFound`] and
//! [`ConnectorSpace::forget`] drops it.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use envelope::Anchor;
use tokio::sync::RwLock;
use tracing::{info, warn};

#[cfg(doc)]
use directory::Refusal;
use directory::{Account, Directory, DirectoryError};

/// Progress is reported every this many accounts on long imports.
pub const PROGRESS_EVERY: usize = 1000;

/// How an anchor failed to resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unresolved {
    NotFound,
    /// (forest, dn) of every match: distinct objects (objectGUIDs).
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

/// (forest index, objectGUID): an account's identity.
type Key = (usize, [u8; 16]);

#[derive(Default)]
struct Index {
    accounts: HashMap<Key, Account>,
    /// lower-case UPN -> keys of `accounts`
    by_upn: HashMap<String, Vec<Key>>,
    cursors: HashMap<usize, u64>,
}

impl Index {
    fn remove(&mut self, key: &Key) {
        if let Some(old) = self.accounts.remove(key) {
            let upn = old.user_principal_name.to_lowercase();
            if let Some(list) = self.by_upn.get_mut(&upn) {
                list.retain(|k| k != key);
                if list.is_empty() {
                    self.by_upn.remove(&upn);
                }
            }
        }
    }

    fn insert(&mut self, forest: usize, account: Account) {
        let key = (forest, account.object_guid);
        self.remove(&key);
        if !account.user_principal_name.is_empty() {
            self.by_upn
                .entry(account.user_principal_name.to_lowercase())
                .or_default()
                .push(key);
        }
        self.accounts.insert(key, account);
    }

    fn keys(&self, anchor: &Anchor, forests: usize) -> Vec<Key> {
        match anchor {
            Anchor::SourceAnchor(a) => {
                let Some(guid) = STANDARD
                    .decode(a.trim())
                    .ok()
                    .and_then(|b| <[u8; 16]>::try_from(b).ok())
                else {
                    return Vec::new();
                };
                (0..forests)
                    .map(|f| (f, guid))
                    .filter(|k| self.accounts.contains_key(k))
                    .collect()
            }
            Anchor::UserPrincipalName(upn) => self
                .by_upn
                .get(&upn.trim().to_lowercase())
                .cloned()
                .unwrap_or_default(),
        }
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

    fn forest_index(&self, name: &str) -> Option<usize> {
        self.forests.iter().position(|f| f.forest() == name)
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
            let imported = forest.import(since).await?;
            let read = imported.accounts.len();
            let deleted = imported.deleted.len();
            let mut index = self.index.write().await;
            if since.is_none() {
                // A full import is the whole truth: what it lacks is gone.
                let stale: Vec<Key> = index
                    .accounts
                    .keys()
                    .filter(|k| k.0 == i)
                    .copied()
                    .collect();
                for key in stale {
                    index.remove(&key);
                }
            }
            for (n, account) in imported.accounts.into_iter().enumerate() {
                index.insert(i, account);
                if (n + 1) % PROGRESS_EVERY == 0 {
                    progress(forest.forest(), n + 1);
                }
            }
            for guid in imported.deleted {
                index.remove(&(i, guid));
            }
            index.cursors.insert(i, imported.cursor);
            drop(index);
            progress(forest.forest(), read);
            if read + deleted > 0 {
                info!(
                    forest = forest.forest(),
                    accounts = read,
                    deleted,
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
        match index.keys(anchor, self.forests.len()).as_slice() {
            [] => Err(Unresolved::NotFound),
            [key] => {
                let account = index
                    .accounts
                    .get(key)
                    .cloned()
                    .ok_or(Unresolved::NotFound)?;
                Ok((Arc::clone(&self.forests[key.0]), account))
            }
            many => {
                let mut matches: Vec<_> = many
                    .iter()
                    .filter_map(|k| {
                        let a = index.accounts.get(k)?;
                        Some((self.forests[k.0].forest().to_owned(), a.dn.clone()))
                    })
                    .collect();
                matches.sort();
                Err(Unresolved::SeveralMatches(matches))
            }
        }
    }

    /// Resolves, and on a miss imports the changes once and tries again, so
    /// an account created a minute ago is found. Several matches are each
    /// read again first: one may be a stale entry for an account deleted or
    /// renamed since (which an import without tombstones cannot tell).
    pub async fn resolve_fresh(
        &self,
        anchor: &Anchor,
    ) -> Result<(Arc<dyn Directory>, Account), Unresolved> {
        match self.resolve(anchor).await {
            Err(Unresolved::NotFound) => {
                if let Err(e) = self.import(|_, _| {}).await {
                    warn!(error = %e, "incremental import failed");
                }
                self.resolve(anchor).await
            }
            Err(Unresolved::SeveralMatches(_)) => {
                let keys = self.index.read().await.keys(anchor, self.forests.len());
                for key in keys {
                    let Some(account) = self.index.read().await.accounts.get(&key).cloned() else {
                        continue;
                    };
                    self.recheck(key.0, &account).await;
                }
                self.resolve(anchor).await
            }
            found => found,
        }
    }

    /// Reads the account again from its forest and updates the index: gone
    /// (`None`), or as it is now. A forest that cannot answer leaves the
    /// entry as it was.
    async fn recheck(&self, forest: usize, account: &Account) -> Option<Account> {
        match self.forests[forest].refresh(account).await {
            Ok(Some(now)) => {
                self.index.write().await.insert(forest, now.clone());
                Some(now)
            }
            Ok(None) => {
                self.index
                    .write()
                    .await
                    .remove(&(forest, account.object_guid));
                None
            }
            Err(e) => {
                warn!(forest = %account.forest, error = %e, "could not read an account again");
                Some(account.clone())
            }
        }
    }

    /// Drops an account its forest reported as gone (by objectGUID), so the
    /// anchor can resolve to what exists now.
    pub async fn forget(&self, account: &Account) {
        if let Some(i) = self.forest_index(&account.forest) {
            self.index.write().await.remove(&(i, account.object_guid));
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
    use directory::{ContainerRights, Imported, Refusal, ResultantPolicy};
    use envelope::Password;
    use std::sync::Mutex;

    /// A forest that only imports, from a list the test edits.
    struct Listed {
        name: String,
        accounts: Mutex<Vec<Account>>,
        /// Tombstones: (objectGUID, uSNChanged of the deletion).
        deleted: Mutex<Vec<([u8; 16], u64)>>,
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
        async fn import(&self, since: Option<u64>) -> Result<Imported, DirectoryError> {
            let all = self.accounts.lock().unwrap().clone();
            let gone = self.deleted.lock().unwrap().clone();
            let cursor = all
                .iter()
                .map(|a| a.usn_changed)
                .chain(gone.iter().map(|g| g.1))
                .max()
                .unwrap_or(0);
            let after = |usn: u64| since.is_none_or(|s| usn > s);
            Ok(Imported {
                accounts: all.into_iter().filter(|a| after(a.usn_changed)).collect(),
                deleted: gone
                    .into_iter()
                    .filter(|g| since.is_some() && after(g.1))
                    .map(|g| g.0)
                    .collect(),
                cursor,
            })
        }
        async fn refresh(&self, account: &Account) -> Result<Option<Account>, DirectoryError> {
            let all = self.accounts.lock().unwrap();
            Ok(all
                .iter()
                .find(|a| a.object_guid == account.object_guid)
                .cloned())
        }
        async fn reset_password(
            &self,
            _: &Account,
            _: &Password,
            _: bool,
            _: bool,
        ) -> Result<(), Refusal> {
            unreachable!()
        }
        async fn change_password(
            &self,
            _: &Account,
            _: &Password,
            _: &Password,
        ) -> Result<(), Refusal> {
            unreachable!()
        }
        async fn unlock(&self, _: &Account) -> Result<(), Refusal> {
            unreachable!()
        }
        async fn policy(&self, _: &Account) -> Result<ResultantPolicy, Refusal> {
            unreachable!()
        }
        async fn effective_rights(&self) -> Result<Vec<ContainerRights>, DirectoryError> {
            unreachable!()
        }
    }

    fn listed(name: &str, accounts: Vec<Account>) -> Arc<Listed> {
        Arc::new(Listed {
            name: name.into(),
            accounts: Mutex::new(accounts),
            deleted: Mutex::new(Vec::new()),
        })
    }

    #[tokio::test]
    async fn anchors_resolve_across_forests_and_imports_are_incremental() {
        let contoso = listed(
            "contoso",
            vec![
                account("contoso", "CN=Ada", "ada@contoso.example", 1, 5),
                account("contoso", "CN=Dup", "dup@example.org", 3, 6),
            ],
        );
        let fabrikam = listed(
            "fabrikam",
            vec![account("fabrikam", "CN=Dup", "dup@example.org", 4, 2)],
        );
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

    #[tokio::test]
    async fn moves_and_deletions_follow_the_object_guid() {
        let contoso = listed(
            "contoso",
            vec![
                account("contoso", "CN=Ada,OU=Old", "ada@contoso.example", 1, 5),
                account("contoso", "CN=Bob", "bob@contoso.example", 2, 6),
            ],
        );
        let space = ConnectorSpace::new(vec![contoso.clone()]);
        space.import(|_, _| {}).await.unwrap();
        let ada = Anchor::UserPrincipalName("ada@contoso.example".into());

        // A move: same objectGUID, new DN and uSNChanged. One account, at its new DN.
        contoso.accounts.lock().unwrap()[0].dn = "CN=Ada,OU=New".into();
        contoso.accounts.lock().unwrap()[0].usn_changed = 9;
        space.import(|_, _| {}).await.unwrap();
        assert_eq!(space.resolve(&ada).await.unwrap().1.dn, "CN=Ada,OU=New");
        assert_eq!(space.len().await, 2);

        // A deletion seen as a tombstone by the incremental import.
        contoso.accounts.lock().unwrap().remove(1);
        contoso.deleted.lock().unwrap().push(([2; 16], 10));
        space.import(|_, _| {}).await.unwrap();
        let bob = Anchor::UserPrincipalName("bob@contoso.example".into());
        assert_eq!(space.resolve(&bob).await.err(), Some(Unresolved::NotFound));

        // A deletion the import cannot see (no tombstone), then a new account
        // with the same UPN: the stale entry is read again and dropped rather
        // than reported as a second match.
        {
            let mut list = contoso.accounts.lock().unwrap();
            list.clear();
            list.push(account("contoso", "CN=Ada2", "ada@contoso.example", 7, 11));
        }
        space.import(|_, _| {}).await.unwrap();
        assert!(matches!(
            space.resolve(&ada).await,
            Err(Unresolved::SeveralMatches(_))
        ));
        let (_, now) = space.resolve_fresh(&ada).await.unwrap();
        assert_eq!(now.object_guid, [7; 16]);
        assert_eq!(space.len().await, 1);

        // An account the backend found gone on use is forgotten.
        space.forget(&now).await;
        assert_eq!(space.resolve(&ada).await.err(), Some(Unresolved::NotFound));
    }
}

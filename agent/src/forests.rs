//! Opens the configured forests: LDAPS to Active Directory, or embedded
//! files. An embedded forest is re-read whenever its
//! file changes on disk, so a fix an administrator applies with
//! `writeback-agent directory grant` takes effect in the running agent, as a
//! change on a domain controller would.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use envelope::Password;
use tokio::sync::RwLock;

use super::config::{AgentConfig, ForestConfig, ForestKind};
use directory::embedded::EmbeddedDirectory;
use directory::ldap::{Credentials, LdapDirectory, LdapSettings, SrvLookup};
use directory::{
    Account, ContainerRights, Directory, DirectoryError, Eligibility, Imported, Refusal,
    ResultantPolicy,
};
use zeroize::Zeroizing;

pub fn open_forests(config: &AgentConfig) -> Result<Vec<Arc<dyn Directory>>, DirectoryError> {
    config
        .forests
        .iter()
        .map(|f| match f.kind {
            ForestKind::Embedded => {
                let path = f.path.as_deref().ok_or_else(|| {
                    DirectoryError(format!(
                        "forest {}: an embedded forest needs a path",
                        f.name
                    ))
                })?;
                Ok(Arc::new(Reloading::open(&f.name, path)?) as Arc<dyn Directory>)
            }
            ForestKind::Ldap => Ok(Arc::new(open_ldap(f)?) as Arc<dyn Directory>),
        })
        .collect()
}

/// One `ldap` forest's backend, as configured.
pub fn open_ldap(f: &ForestConfig) -> Result<LdapDirectory, DirectoryError> {
    let missing =
        |what: &str| DirectoryError(format!("forest {}: an ldap forest needs {what}", f.name));
    let credentials = match (&f.bind_password_file, &f.principal) {
        (Some(file), _) => Credentials::Password(read_password(&f.name, file)?),
        (None, Some(principal)) => Credentials::Kerberos {
            principal: principal.clone(),
        },
        (None, None) => return Err(missing("bind_password_file or keytab_file and principal")),
    };
    let settings = LdapSettings {
        urls: f.domain_controllers(),
        srv: f.dns_srv.as_ref().map(|domain| SrvLookup {
            domain: domain.clone(),
            nameserver: f.dns_server,
        }),
        ca_file: f.ca_file.clone().ok_or_else(|| missing("ca_file"))?,
        bind_dn: f.bind_dn.clone().ok_or_else(|| missing("bind_dn"))?,
        credentials,
        base_dn: f.base_dn.clone(),
    };
    LdapDirectory::new(&f.name, settings)
}

fn read_password(forest: &str, file: &Path) -> Result<Zeroizing<String>, DirectoryError> {
    let text = Zeroizing::new(std::fs::read_to_string(file).map_err(|e| {
        DirectoryError(format!(
            "forest {forest}: cannot read {}: {e}",
            file.display()
        ))
    })?);
    Ok(Zeroizing::new(
        text.trim_end_matches(['\n', '\r']).to_owned(),
    ))
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// An embedded forest that follows its file.
pub struct Reloading {
    name: String,
    path: PathBuf,
    inner: RwLock<(Option<SystemTime>, Arc<EmbeddedDirectory>)>,
}

impl Reloading {
    pub fn open(name: &str, path: &Path) -> Result<Reloading, DirectoryError> {
        let stamp = modified(path);
        let inner = EmbeddedDirectory::open(name, path)?;
        Ok(Reloading {
            name: name.to_owned(),
            path: path.to_owned(),
            inner: RwLock::new((stamp, Arc::new(inner))),
        })
    }

    /// The current directory, re-read first if the file changed.
    async fn current(&self) -> Result<Arc<EmbeddedDirectory>, DirectoryError> {
        let stamp = modified(&self.path);
        {
            let guard = self.inner.read().await;
            if guard.0 == stamp {
                return Ok(Arc::clone(&guard.1));
            }
        }
        let mut guard = self.inner.write().await;
        if guard.0 != stamp {
            let fresh = EmbeddedDirectory::open(&self.name, &self.path)?;
            *guard = (stamp, Arc::new(fresh));
            tracing::info!(forest = %self.name, "forest file changed on disk; re-read");
        }
        Ok(Arc::clone(&guard.1))
    }

    /// Records the file's new stamp after our own write, so it is not re-read.
    async fn wrote(&self) {
        self.inner.write().await.0 = modified(&self.path);
    }
}

fn unavailable(e: DirectoryError) -> Refusal {
    Refusal::DirectoryUnavailable(e.0)
}

#[tonic::async_trait]
impl Directory for Reloading {
    fn forest(&self) -> &str {
        &self.name
    }

    async fn import(&self, since: Option<u64>) -> Result<Imported, DirectoryError> {
        self.current().await?.import(since).await
    }

    async fn refresh(&self, account: &Account) -> Result<Option<Account>, DirectoryError> {
        self.current().await?.refresh(account).await
    }

    async fn reset_password(
        &self,
        account: &Account,
        new: &Password,
        unlock: bool,
        must_change: bool,
    ) -> Result<(), Refusal> {
        let dir = self.current().await.map_err(unavailable)?;
        let result = dir.reset_password(account, new, unlock, must_change).await;
        self.wrote().await;
        result
    }

    async fn change_password(
        &self,
        account: &Account,
        current: &Password,
        new: &Password,
    ) -> Result<(), Refusal> {
        let dir = self.current().await.map_err(unavailable)?;
        let result = dir.change_password(account, current, new).await;
        self.wrote().await;
        result
    }

    async fn unlock(&self, account: &Account) -> Result<(), Refusal> {
        let dir = self.current().await.map_err(unavailable)?;
        let result = dir.unlock(account).await;
        self.wrote().await;
        result
    }

    async fn policy(&self, account: &Account) -> Result<ResultantPolicy, Refusal> {
        self.current()
            .await
            .map_err(unavailable)?
            .policy(account)
            .await
    }

    async fn eligibility(&self, account: &Account) -> Result<Eligibility, Refusal> {
        self.current()
            .await
            .map_err(unavailable)?
            .eligibility(account)
            .await
    }

    async fn effective_rights(&self) -> Result<Vec<ContainerRights>, DirectoryError> {
        self.current().await?.effective_rights().await
    }
}

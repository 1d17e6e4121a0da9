//! The Active Directory backend: LDAPS (or StartTLS) with certificate
//! verification against a configured CA, acting as the forest's service
//! account. Active Directory refuses password writes on unencrypted
//! connections, and so does this backend: there is no plain LDAP.
//!
//! Failures are classified by LDAP result code and the 8-hex-digit extended
//! error at the start of the diagnostic text, never by its English, which
//! differs between Windows and Samba. AD answers every policy failure with
//! the same `0000052D`; the reason is then the rule the DC named, or one
//! the backend can check itself, or "refused by the domain's policy or a
//! password filter" (see `policy.rs`): never a guess. Samba refuses a
//! change the service account has no right to as a constraint violation
//! with no extended error; the user's DACL then tells whether the right is
//! what is missing.
//!
//! Every operation acts on the account's objectGUID: it reads the entry at
//! `<GUID=...>` (AD's extended DN form; Samba 4.17 accepts it as a search
//! base and as the target of a modify), so a moved or renamed account is
//! found where it now is and a deleted one is [`Refusal::UserNotFound`]
//! (noSuchObject). Its state is what the DC computes: disabled from
//! userAccountControl, locked out from msDS-User-Account-Control-Computed
//! (UF_LOCKOUT), which is clear once the lockout duration has passed though
//! lockoutTime stays set. Account expiry (accountExpires) refuses logons,
//! not password changes or resets, on AD and on Samba alike: it is not
//! checked here.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use envelope::Password;
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Mod, Scope, SearchEntry};
use rustls::pki_types::pem::PemObject;
use zeroize::Zeroizing;

use super::{
    Account, ContainerRights, Directory, DirectoryError, DirectoryRight, Eligibility, Imported,
    Refusal, ResultantPolicy, ServiceAccount, UnreadablePolicy,
};
pub use policy::interval_secs;

mod import;
mod policy;
mod rights;

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const PAGE_SIZE: i32 = 500;
/// LDAP_SERVER_SD_FLAGS_OID with DACL_SECURITY_INFORMATION (4): lets a
/// non-administrator read the DACL part of nTSecurityDescriptor.
const SD_FLAGS_OID: &str = "1.2.840.113556.1.4.801";
const SD_FLAGS_DACL: [u8; 5] = [0x30, 0x03, 0x02, 0x01, 0x04];
const UAC_DISABLED: u64 = 0x2;
/// UF_LOCKOUT in msDS-User-Account-Control-Computed: locked out now, as the
/// DC computes it from lockoutTime and the resultant lockout duration.
const UF_LOCKOUT: u64 = 0x10;
/// LDAP noSuchObject.
const NO_SUCH_OBJECT: u32 = 32;

/// How to reach and act in one forest.
#[derive(Clone)]
pub struct LdapSettings {
    /// `ldaps://host:636`, or `ldap://host:389` (StartTLS is then required).
    pub url: String,
    /// PEM CA bundle that signs the domain controller's certificate.
    pub ca_file: PathBuf,
    /// The service account write-back acts as.
    pub bind_dn: String,
    pub bind_password: Zeroizing<String>,
    /// The domain's naming context; read from the rootDSE when absent.
    pub base_dn: Option<String>,
}

impl std::fmt::Debug for LdapSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LdapSettings")
            .field("url", &self.url)
            .field("bind_dn", &self.bind_dn)
            .finish_non_exhaustive()
    }
}

pub struct LdapDirectory {
    name: String,
    settings: LdapSettings,
    tls: Arc<rustls::ClientConfig>,
}

/// An LDAP failure, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdapFailure {
    pub rc: u32,
    /// The 8-hex-digit extended error (e.g. "0000052D"), when present.
    pub code: Option<String>,
    pub text: String,
}

impl LdapFailure {
    fn from_result(rc: u32, text: &str) -> LdapFailure {
        let code = text
            .get(..8)
            .filter(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(str::to_ascii_uppercase);
        LdapFailure {
            rc,
            code,
            text: text.to_owned(),
        }
    }

    fn is_policy(&self) -> bool {
        self.rc == 19 && self.code.as_deref() == Some("0000052D")
    }

    fn is_wrong_password(&self) -> bool {
        self.rc == 19 && self.code.as_deref() == Some("00000056") || self.rc == 49
    }

    fn is_access_denied(&self) -> bool {
        self.rc == 50 || self.code.as_deref() == Some("00002098")
    }
}

/// Windows FILETIME (100 ns since 1601) to Unix ms; 0 stays 0.
fn filetime_to_unix_ms(ft: i64) -> u64 {
    if ft <= 0 {
        return 0;
    }
    ((ft / 10_000) - 11_644_473_600_000).max(0) as u64
}

/// The quoted UTF-16LE form unicodePwd takes.
pub fn unicode_pwd(password: &str) -> Zeroizing<Vec<u8>> {
    let quoted = Zeroizing::new(format!("\"{password}\""));
    Zeroizing::new(quoted.encode_utf16().flat_map(u16::to_le_bytes).collect())
}

fn parent_dn(dn: &str) -> String {
    // DN components are separated by unescaped commas.
    let bytes = dn.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b',' => return dn[i + 1..].to_owned(),
            _ => i += 1,
        }
    }
    String::new()
}

fn first<'a>(e: &'a SearchEntry, attr: &str) -> Option<&'a str> {
    e.attrs
        .get(attr)
        .and_then(|v| v.first())
        .map(String::as_str)
}

fn first_i64(e: &SearchEntry, attr: &str) -> i64 {
    first(e, attr).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// The extended DN naming an object by its objectGUID, wherever it is.
fn guid_dn(guid: &[u8; 16]) -> String {
    format!("<GUID={}>", crate::sd::guid_string(guid))
}

/// What an operation needs to know about the account first.
struct UserState {
    /// Where the account is now (for refusals naming its OU).
    dn: String,
    sam: String,
    display_name: String,
    disabled: bool,
    locked: bool,
    protected: bool,
    pwd_last_set_ms: u64,
}

impl LdapDirectory {
    pub fn new(name: &str, settings: LdapSettings) -> Result<LdapDirectory, DirectoryError> {
        if !(settings.url.starts_with("ldaps://") || settings.url.starts_with("ldap://")) {
            return Err(DirectoryError(format!(
                "forest {name}: url must be ldaps:// or ldap:// (with StartTLS)"
            )));
        }
        let pem = std::fs::read(&settings.ca_file).map_err(|e| {
            DirectoryError(format!(
                "forest {name}: cannot read {}: {e}",
                settings.ca_file.display()
            ))
        })?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
            let cert =
                cert.map_err(|e| DirectoryError(format!("forest {name}: bad CA file: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| DirectoryError(format!("forest {name}: bad CA certificate: {e}")))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| DirectoryError(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(LdapDirectory {
            name: name.to_owned(),
            settings,
            tls: Arc::new(tls),
        })
    }

    /// A bound connection for a password operation, its failure a refusal.
    async fn session(&self) -> Result<Ldap, Refusal> {
        self.connect()
            .await
            .map_err(|e| Refusal::DirectoryUnavailable(e.0))
    }

    /// A connection bound as the service account.
    async fn connect(&self) -> Result<Ldap, DirectoryError> {
        let settings = LdapConnSettings::new()
            .set_config(Arc::clone(&self.tls))
            .set_conn_timeout(CONNECT_TIMEOUT)
            .set_starttls(self.settings.url.starts_with("ldap://"));
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &self.settings.url)
            .await
            .map_err(|e| {
                DirectoryError(format!(
                    "forest {}: cannot connect to {}: {e}",
                    self.name, self.settings.url
                ))
            })?;
        ldap3::drive!(conn);
        let bound = ldap
            .simple_bind(&self.settings.bind_dn, &self.settings.bind_password)
            .await
            .map_err(|e| DirectoryError(format!("forest {}: bind failed: {e}", self.name)))?;
        if bound.rc != 0 {
            return Err(DirectoryError(format!(
                "forest {}: bind as {} failed: result {} {}",
                self.name, self.settings.bind_dn, bound.rc, bound.text
            )));
        }
        Ok(ldap)
    }

    async fn base_dn(&self, ldap: &mut Ldap) -> Result<String, DirectoryError> {
        if let Some(b) = &self.settings.base_dn {
            return Ok(b.clone());
        }
        let root = self.read(ldap, "", &["defaultNamingContext"]).await?;
        first(&root, "defaultNamingContext")
            .map(str::to_owned)
            .ok_or_else(|| DirectoryError("the rootDSE has no defaultNamingContext".into()))
    }

    async fn read(
        &self,
        ldap: &mut Ldap,
        dn: &str,
        attrs: &[&str],
    ) -> Result<SearchEntry, DirectoryError> {
        let (entries, result) = ldap
            .search(dn, Scope::Base, "(objectClass=*)", attrs.to_vec())
            .await
            .map_err(|e| DirectoryError(format!("search {dn}: {e}")))?
            .non_error()
            .map_err(|e| DirectoryError(format!("search {dn}: {e}")))?;
        let _ = result;
        entries
            .into_iter()
            .next()
            .map(SearchEntry::construct)
            .ok_or_else(|| DirectoryError(format!("no object {dn}")))
    }

    /// The entry of the object with `guid`: `Ok(None)` when noSuchObject.
    async fn read_by_guid(
        &self,
        ldap: &mut Ldap,
        guid: &[u8; 16],
        attrs: &[&str],
    ) -> Result<Option<SearchEntry>, DirectoryError> {
        let base = guid_dn(guid);
        let ldap3::SearchResult(entries, result) = ldap
            .search(&base, Scope::Base, "(objectClass=*)", attrs.to_vec())
            .await
            .map_err(|e| DirectoryError(format!("forest {}: search {base}: {e}", self.name)))?;
        match result.rc {
            0 => Ok(entries.into_iter().next().map(SearchEntry::construct)),
            NO_SUCH_OBJECT => Ok(None),
            rc => Err(DirectoryError(format!(
                "forest {}: search {base}: result {rc}: {}",
                self.name, result.text
            ))),
        }
    }

    /// The account's state now, read by objectGUID. The computed attribute
    /// is constructed: AD returns it only when asked for by name.
    async fn user_state(&self, ldap: &mut Ldap, account: &Account) -> Result<UserState, Refusal> {
        let e = self
            .read_by_guid(
                ldap,
                &account.object_guid,
                &[
                    "sAMAccountName",
                    "displayName",
                    "userAccountControl",
                    "msDS-User-Account-Control-Computed",
                    "adminCount",
                    "pwdLastSet",
                ],
            )
            .await
            .map_err(|e| Refusal::DirectoryUnavailable(e.0))?
            .ok_or(Refusal::UserNotFound)?;
        Ok(UserState {
            sam: first(&e, "sAMAccountName").unwrap_or_default().to_owned(),
            display_name: first(&e, "displayName").unwrap_or_default().to_owned(),
            disabled: first_i64(&e, "userAccountControl") as u64 & UAC_DISABLED != 0,
            locked: first_i64(&e, "msDS-User-Account-Control-Computed") as u64 & UF_LOCKOUT != 0,
            protected: first_i64(&e, "adminCount") == 1,
            pwd_last_set_ms: filetime_to_unix_ms(first_i64(&e, "pwdLastSet")),
            dn: e.dn,
        })
    }

    /// Modifies the object with `guid`. A result code means the DC refused
    /// the whole modify (LDAP modifies are atomic); no result at all means
    /// the request may have been applied.
    async fn modify(
        &self,
        ldap: &mut Ldap,
        guid: &[u8; 16],
        mods: Vec<Mod<Vec<u8>>>,
    ) -> Result<(), Modified> {
        let target = guid_dn(guid);
        let result = ldap.modify(&target, mods).await.map_err(|e| {
            Modified::Unconfirmed(format!("forest {}: modify {target}: {e}", self.name))
        })?;
        if result.rc == 0 {
            Ok(())
        } else {
            Err(Modified::Refused(LdapFailure::from_result(
                result.rc,
                &result.text,
            )))
        }
    }
}

/// How a modify failed.
enum Modified {
    Refused(LdapFailure),
    Unconfirmed(String),
}

/// A failure with no more specific meaning, reported with its code and text
/// (for the event log: never shown to users).
fn unexpected(forest: &str, f: Modified) -> Refusal {
    match f {
        Modified::Refused(f) if f.rc == NO_SUCH_OBJECT => Refusal::UserNotFound,
        Modified::Refused(f) => {
            Refusal::DirectoryUnavailable(format!("forest {forest}: result {}: {}", f.rc, f.text))
        }
        Modified::Unconfirmed(why) => Refusal::WriteUnconfirmed(why),
    }
}

fn set(values: &[&[u8]]) -> HashSet<Vec<u8>> {
    values.iter().map(|v| v.to_vec()).collect()
}

#[async_trait::async_trait]
impl Directory for LdapDirectory {
    fn forest(&self) -> &str {
        &self.name
    }

    async fn import(&self, since: Option<u64>) -> Result<Imported, DirectoryError> {
        self.import_accounts(since).await
    }

    async fn refresh(&self, account: &Account) -> Result<Option<Account>, DirectoryError> {
        self.refresh_account(account).await
    }

    async fn reset_password(
        &self,
        account: &Account,
        new: &Password,
        unlock: bool,
        must_change: bool,
    ) -> Result<(), Refusal> {
        let mut ldap = self.session().await?;
        let user = self.user_state(&mut ldap, account).await?;
        if user.disabled {
            return Err(Refusal::AccountDisabled);
        }
        if user.protected {
            return Err(Refusal::ProtectedAccount);
        }
        let encoded = unicode_pwd(new.expose());
        let mut mods = vec![Mod::Replace(b"unicodePwd".to_vec(), set(&[&encoded]))];
        let mut needed = vec![DirectoryRight::ResetPassword];
        // Only a lockout in force is cleared: a service account delegated
        // Reset Password alone (a common delegation) can still reset every
        // account that is not locked out.
        if unlock && user.locked {
            mods.push(Mod::Replace(b"lockoutTime".to_vec(), set(&[b"0"])));
            needed.push(DirectoryRight::WriteLockoutTime);
        }
        if must_change {
            mods.push(Mod::Replace(b"pwdLastSet".to_vec(), set(&[b"0"])));
            needed.push(DirectoryRight::WritePwdLastSet);
        }
        let outcome = match self.modify(&mut ldap, &account.object_guid, mods).await {
            Ok(()) => Ok(()),
            Err(Modified::Refused(f)) if f.is_access_denied() => {
                Err(self.denied(&mut ldap, &user.dn, &needed).await)
            }
            Err(Modified::Refused(f)) if f.is_policy() => Err(self
                .policy_refusal(&mut ldap, &user.dn, &user, new, false, &f.text)
                .await),
            Err(f) => Err(unexpected(&self.name, f)),
        };
        let _ = ldap.unbind().await;
        outcome
    }

    async fn change_password(
        &self,
        account: &Account,
        current: &Password,
        new: &Password,
    ) -> Result<(), Refusal> {
        let mut ldap = self.session().await?;
        let user = self.user_state(&mut ldap, account).await?;
        if user.disabled {
            return Err(Refusal::AccountDisabled);
        }
        if user.locked {
            return Err(Refusal::AccountLocked);
        }
        let old = unicode_pwd(current.expose());
        let fresh = unicode_pwd(new.expose());
        let mods = vec![
            Mod::Delete(b"unicodePwd".to_vec(), set(&[&old])),
            Mod::Add(b"unicodePwd".to_vec(), set(&[&fresh])),
        ];
        let outcome = match self.modify(&mut ldap, &account.object_guid, mods).await {
            Ok(()) => Ok(()),
            Err(Modified::Refused(f)) if f.is_wrong_password() => {
                Err(Refusal::WrongCurrentPassword)
            }
            Err(Modified::Refused(f)) if f.is_policy() => Err(self
                .policy_refusal(&mut ldap, &user.dn, &user, new, true, &f.text)
                .await),
            // Samba refuses a change without the right as a constraint
            // violation with no extended error: the user's DACL says whether
            // that is what happened.
            Err(Modified::Refused(f))
                if f.is_access_denied()
                    || f.code.is_none()
                        && self
                            .holds(&mut ldap, &user.dn, DirectoryRight::ChangePassword)
                            .await
                            == Some(false) =>
            {
                // AdminSDHolder's DACL decided, not a delegation doctor can
                // fix: as the embedded backend answers.
                if user.protected {
                    Err(Refusal::ProtectedAccount)
                } else {
                    Err(self
                        .denied(&mut ldap, &user.dn, &[DirectoryRight::ChangePassword])
                        .await)
                }
            }
            Err(f) => Err(unexpected(&self.name, f)),
        };
        let _ = ldap.unbind().await;
        outcome
    }

    async fn unlock(&self, account: &Account) -> Result<(), Refusal> {
        let mut ldap = self.session().await?;
        let user = self.user_state(&mut ldap, account).await?;
        if user.protected {
            return Err(Refusal::ProtectedAccount);
        }
        let outcome = match self
            .modify(
                &mut ldap,
                &account.object_guid,
                vec![Mod::Replace(b"lockoutTime".to_vec(), set(&[b"0"]))],
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(Modified::Refused(f)) if f.is_access_denied() => Err(self
                .denied(&mut ldap, &user.dn, &[DirectoryRight::WriteLockoutTime])
                .await),
            Err(f) => Err(unexpected(&self.name, f)),
        };
        let _ = ldap.unbind().await;
        outcome
    }

    async fn eligibility(&self, account: &Account) -> Result<Eligibility, Refusal> {
        self.user_eligibility(account).await
    }

    async fn effective_rights(&self) -> Result<Vec<ContainerRights>, DirectoryError> {
        self.rights_report().await
    }

    async fn service_account(&self) -> Result<Option<ServiceAccount>, DirectoryError> {
        self.service_account_info().await.map(Some)
    }

    async fn policy(&self, account: &Account) -> Result<ResultantPolicy, Refusal> {
        let mut ldap = self.session().await?;
        let policy = match self.user_state(&mut ldap, account).await {
            Ok(user) => self
                .resultant_policy(&mut ldap, &user.dn)
                .await
                .map_err(|e| Refusal::DirectoryUnavailable(e.0)),
            Err(r) => Err(r),
        };
        let _ = ldap.unbind().await;
        policy
    }

    async fn unreadable_policies(&self) -> Result<Vec<UnreadablePolicy>, DirectoryError> {
        self.unreadable_psos().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_quoted_utf16le() {
        assert_eq!(
            unicode_pwd("ab").as_slice(),
            &[0x22, 0, b'a', 0, b'b', 0, 0x22, 0]
        );
    }

    #[test]
    fn failures_are_classified_by_code_not_text() {
        let policy = LdapFailure::from_result(
            19,
            "0000052D: Constraint violation - whatever the text says",
        );
        assert!(policy.is_policy() && !policy.is_wrong_password());
        assert!(LdapFailure::from_result(19, "00000056: AtrErr").is_wrong_password());
        assert!(LdapFailure::from_result(50, "00002098: SecErr").is_access_denied());
        assert!(LdapFailure::from_result(50, "").is_access_denied());
        assert!(!LdapFailure::from_result(19, "Password too short").is_policy());
    }

    #[test]
    fn objects_are_named_by_guid_in_the_standard_string_form() {
        // A user's objectGUID as Samba 4.17 returned it (base64
        // otVSBygvAkCIE57q8Tn98g==), and the extended DN that found it.
        let guid = [
            0xa2, 0xd5, 0x52, 0x07, 0x28, 0x2f, 0x02, 0x40, 0x88, 0x13, 0x9e, 0xea, 0xf1, 0x39,
            0xfd, 0xf2,
        ];
        assert_eq!(
            guid_dn(&guid),
            "<GUID=0752d5a2-2f28-4002-8813-9eeaf139fdf2>"
        );
    }

    #[test]
    fn a_vanished_object_is_not_found_and_an_unanswered_write_is_unconfirmed() {
        let gone = Modified::Refused(LdapFailure::from_result(
            32,
            "0000208D: NameErr: DSID-03100288, problem 2001 (NO_OBJECT)",
        ));
        assert_eq!(unexpected("test", gone), Refusal::UserNotFound);
        assert_eq!(
            unexpected("test", Modified::Unconfirmed("connection reset".into())),
            Refusal::WriteUnconfirmed("connection reset".into())
        );
        assert_eq!(
            unexpected(
                "test",
                Modified::Refused(LdapFailure::from_result(53, "unwilling"))
            ),
            Refusal::DirectoryUnavailable("forest test: result 53: unwilling".into())
        );
    }

    #[test]
    fn times_and_dns() {
        assert_eq!(filetime_to_unix_ms(0), 0);
        assert_eq!(filetime_to_unix_ms(116_444_736_000_000_000 + 10_000), 1);
        assert_eq!(interval_secs(-864_000_000_000), 86_400);
        assert_eq!(parent_dn("CN=Doe\\, John,OU=Staff,DC=x"), "OU=Staff,DC=x");
    }
}

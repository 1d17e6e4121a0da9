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
use ldap3::{Ldap, Mod, Scope, SearchEntry};
use rustls::pki_types::pem::PemObject;
use zeroize::Zeroizing;

use super::{
    Account, ContainerRights, Directory, DirectoryError, Eligibility, Imported, Refusal,
    ResultantPolicy, ServiceAccount, UnreadablePolicy,
};
use controllers::{Attempt, Controllers, DC_CONNECT_TIMEOUT, fails_over};
pub use dns::SrvLookup;
pub use kerberos::KERBEROS_BUILT;
pub use policy::interval_secs;

mod connection;
pub mod controllers;
mod dns;
mod import;
mod kerberos;
mod operations;
mod policy;
mod rights;

pub const CONNECT_TIMEOUT: Duration = DC_CONNECT_TIMEOUT;
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
    /// The domain controllers, each `ldaps://host:636` or `ldap://host:389`
    /// (StartTLS is then required), asked in this order (the one that
    /// answered last first).
    pub urls: Vec<String>,
    /// Also the DCs DNS names (`_ldap._tcp.dc._msdcs.<domain>`), asked
    /// before `urls`.
    pub srv: Option<SrvLookup>,
    /// PEM CA bundle that signs the domain controller's certificate.
    pub ca_file: PathBuf,
    /// The service account write-back acts as.
    pub bind_dn: String,
    /// How it proves who it is.
    pub credentials: Credentials,
    /// The domain's naming context; read from the rootDSE when absent.
    pub base_dn: Option<String>,
}

/// How the service account binds.
#[derive(Clone)]
pub enum Credentials {
    /// A simple bind as `bind_dn` (over TLS only).
    Password(Zeroizing<String>),
    /// A SASL GSSAPI bind as this Kerberos principal (`svc@REALM`), its
    /// tickets from the process's Kerberos environment: see `kerberos.rs`.
    Kerberos { principal: String },
}

impl std::fmt::Debug for LdapSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LdapSettings")
            .field("urls", &self.urls)
            .field("bind_dn", &self.bind_dn)
            .finish_non_exhaustive()
    }
}

pub struct LdapDirectory {
    name: String,
    settings: LdapSettings,
    tls: Arc<rustls::ClientConfig>,
    controllers: Controllers,
    /// Where the DCs found in DNS are, by URL (`dns.rs`).
    resolved: std::sync::Mutex<std::collections::HashMap<String, Vec<std::net::SocketAddr>>>,
}

/// What asking one DC found, for doctor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerProbe {
    pub url: String,
    /// The DC's dnsHostName when it answered, or why it did not.
    pub answer: Result<String, String>,
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

/// An LDAP GeneralizedTime (`20261205131500.0Z`, UTC) as Unix ms.
fn generalized_time_ms(text: &str) -> Option<i64> {
    let t = text.as_bytes();
    if t.len() < 15 || !t[..14].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let rfc3339 = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &text[0..4],
        &text[4..6],
        &text[6..8],
        &text[8..10],
        &text[10..12],
        &text[12..14]
    );
    let at = humantime::parse_rfc3339(&rfc3339).ok()?;
    let ms = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis();
    i64::try_from(ms).ok()
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
        if settings.urls.is_empty() && settings.srv.is_none() {
            return Err(DirectoryError(format!(
                "forest {name}: no domain controller is configured"
            )));
        }
        if let Some(url) = settings
            .urls
            .iter()
            .find(|u| !(u.starts_with("ldaps://") || u.starts_with("ldap://")))
        {
            return Err(DirectoryError(format!(
                "forest {name}: {url}: a domain controller's url must be ldaps:// or ldap:// (with StartTLS)"
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
            controllers: Controllers::new(),
            resolved: Default::default(),
        })
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
    /// A DC that drops the connection or declines the search is
    /// `Elsewhere`: a read may be asked of the next DC.
    async fn read_by_guid(
        &self,
        ldap: &mut Ldap,
        guid: &[u8; 16],
        attrs: &[&str],
    ) -> Result<Option<SearchEntry>, Attempt<DirectoryError>> {
        let base = guid_dn(guid);
        let ldap3::SearchResult(entries, result) = ldap
            .search(&base, Scope::Base, "(objectClass=*)", attrs.to_vec())
            .await
            .map_err(|e| Attempt::Elsewhere(format!("search {base}: {e}")))?;
        match result.rc {
            0 => Ok(entries.into_iter().next().map(SearchEntry::construct)),
            NO_SUCH_OBJECT => Ok(None),
            rc if fails_over(&LdapFailure::from_result(rc, &result.text)) => Err(
                Attempt::Elsewhere(format!("search {base}: result {rc}: {}", result.text)),
            ),
            rc => Err(Attempt::Final(DirectoryError(format!(
                "forest {}: search {base}: result {rc}: {}",
                self.name, result.text
            )))),
        }
    }

    /// The account's state now, read by objectGUID. The computed attribute
    /// is constructed: AD returns it only when asked for by name.
    async fn user_state(
        &self,
        ldap: &mut Ldap,
        account: &Account,
    ) -> Result<UserState, Attempt<Refusal>> {
        let e = match self
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
        {
            Ok(Some(e)) => e,
            Ok(None) => return Err(Refusal::UserNotFound.into()),
            Err(Attempt::Elsewhere(why)) => return Err(Attempt::Elsewhere(why)),
            Err(Attempt::Final(e)) => return Err(Refusal::DirectoryUnavailable(e.0).into()),
        };
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
            return Ok(());
        }
        let failure = LdapFailure::from_result(result.rc, &result.text);
        if fails_over(&failure) {
            Err(Modified::Declined(format!(
                "modify {target}: result {}: {}",
                failure.rc, failure.text
            )))
        } else {
            Err(Modified::Refused(failure))
        }
    }
}

/// How a modify failed.
enum Modified {
    Refused(LdapFailure),
    /// Refused by this DC, not the domain: another DC may apply it.
    Declined(String),
    Unconfirmed(String),
}

/// A failure with no more specific meaning, reported with its code and text
/// (for the event log: never shown to users).
fn unexpected(forest: &str, f: Modified) -> Attempt<Refusal> {
    match f {
        Modified::Refused(f) if f.rc == NO_SUCH_OBJECT => Refusal::UserNotFound.into(),
        Modified::Refused(f) => {
            Refusal::DirectoryUnavailable(format!("forest {forest}: result {}: {}", f.rc, f.text))
                .into()
        }
        Modified::Declined(why) => Attempt::Elsewhere(why),
        // Possibly applied: never re-sent to another DC.
        Modified::Unconfirmed(why) => Refusal::WriteUnconfirmed(why).into(),
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
        let mut walk = self.failover().await;
        loop {
            let (url, mut ldap) = self.next_dc(&mut walk).await?;
            let outcome = self
                .reset_on(&mut ldap, account, new, unlock, must_change)
                .await;
            if let Some(done) = self.settle(&mut walk, &url, ldap, outcome).await {
                return done;
            }
        }
    }

    async fn change_password(
        &self,
        account: &Account,
        current: &Password,
        new: &Password,
    ) -> Result<(), Refusal> {
        let mut walk = self.failover().await;
        loop {
            let (url, mut ldap) = self.next_dc(&mut walk).await?;
            let outcome = self.change_on(&mut ldap, account, current, new).await;
            if let Some(done) = self.settle(&mut walk, &url, ldap, outcome).await {
                return done;
            }
        }
    }

    async fn unlock(&self, account: &Account) -> Result<(), Refusal> {
        let mut walk = self.failover().await;
        loop {
            let (url, mut ldap) = self.next_dc(&mut walk).await?;
            let outcome = self.unlock_on(&mut ldap, account).await;
            if let Some(done) = self.settle(&mut walk, &url, ldap, outcome).await {
                return done;
            }
        }
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
        let mut walk = self.failover().await;
        loop {
            let (url, mut ldap) = self.next_dc(&mut walk).await?;
            let outcome = match self.user_state(&mut ldap, account).await {
                Ok(user) => self
                    .resultant_policy(&mut ldap, &user.dn)
                    .await
                    .map_err(|e| Refusal::DirectoryUnavailable(e.0).into()),
                Err(e) => Err(e),
            };
            if let Some(done) = self.settle(&mut walk, &url, ldap, outcome).await {
                return done;
            }
        }
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
        assert!(matches!(
            unexpected("test", gone),
            Attempt::Final(Refusal::UserNotFound)
        ));
        // Possibly applied: final, never asked of another DC.
        assert!(matches!(
            unexpected("test", Modified::Unconfirmed("connection reset".into())),
            Attempt::Final(Refusal::WriteUnconfirmed(why)) if why == "connection reset"
        ));
        // Declined by this DC: the next one is asked.
        assert!(matches!(
            unexpected("test", Modified::Declined("result 52: unavailable".into())),
            Attempt::Elsewhere(_)
        ));
        assert!(matches!(
            unexpected(
                "test",
                Modified::Refused(LdapFailure::from_result(80, "other"))
            ),
            Attempt::Final(Refusal::DirectoryUnavailable(why)) if why == "forest test: result 80: other"
        ));
    }

    #[tokio::test]
    async fn a_forest_whose_every_dc_fails_names_each_and_why() {
        let ca = tempfile::NamedTempFile::new().unwrap();
        let closed = || {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("ldaps://127.0.0.1:{}", l.local_addr().unwrap().port())
        };
        let urls = vec![closed(), closed()];
        let dir = LdapDirectory::new(
            "test",
            LdapSettings {
                urls: urls.clone(),
                ca_file: ca.path().to_owned(),
                bind_dn: "CN=svc".into(),
                credentials: Credentials::Password(Zeroizing::new("x".into())),
                base_dn: None,
                srv: None,
            },
        )
        .unwrap();
        let err = dir.import(None).await.unwrap_err().0;
        assert!(
            err.starts_with("forest test: no domain controller answered: "),
            "{err}"
        );
        for url in &urls {
            assert!(err.contains(&format!("{url}: cannot connect")), "{err}");
        }
        assert_eq!(dir.controllers.last_good(), None);
        let probes = dir.probe_controllers().await;
        assert_eq!(probes.len(), 2);
        assert!(probes.iter().all(|p| p.answer.is_err()));
        assert!(
            LdapDirectory::new(
                "test",
                LdapSettings {
                    urls: vec!["https://dc".into()],
                    ..dir.settings.clone()
                }
            )
            .is_err()
        );
    }

    #[test]
    fn a_dcs_current_time_is_read_as_utc() {
        assert_eq!(generalized_time_ms("19700101000001.0Z"), Some(1000));
        assert_eq!(
            generalized_time_ms("20261205131500.0Z"),
            Some(1_796_476_500_000)
        );
        assert_eq!(generalized_time_ms("2026"), None);
    }

    #[test]
    fn times_and_dns() {
        assert_eq!(filetime_to_unix_ms(0), 0);
        assert_eq!(filetime_to_unix_ms(116_444_736_000_000_000 + 10_000), 1);
        assert_eq!(interval_secs(-864_000_000_000), 86_400);
        assert_eq!(parent_dn("CN=Doe\\, John,OU=Staff,DC=x"), "OU=Staff,DC=x");
    }
}

//! SASL GSSAPI (Kerberos) binds, for a service account whose password is
//! kept in a keytab instead of a file the agent reads.
//!
//! The tickets come from the process's Kerberos environment, as MIT
//! Kerberos reads it: `KRB5_CLIENT_KTNAME` (the keytab it gets initial
//! tickets from by itself), `KRB5CCNAME` (where it caches them) and
//! `KRB5_CONFIG`. The crate's safe wrappers offer no
//! `gss_acquire_cred_from`, and this workspace allows no `unsafe`, so the
//! agent sets these before it starts (it re-executes itself with them).
//!
//! Over LDAPS, Kerberos authenticates only: no SASL security layer is
//! negotiated inside TLS (AD and Samba refuse sign or seal there), and the
//! tls-server-end-point channel binding ties the bind to this TLS session.
//! The DC's service name is `ldap/<its dnsHostName>`, read from the rootDSE
//! (anonymously, over the verified TLS), so a URL may name the DC by address.

use std::time::Duration;

use ldap3::{Ldap, LdapResult};

use super::DirectoryError;
use super::controllers::Attempt;

/// Whether this build can bind with Kerberos (the `kerberos` feature).
pub const KERBEROS_BUILT: bool = cfg!(feature = "kerberos");

/// The DC's own host name, from its rootDSE, read before any bind.
#[cfg(feature = "kerberos")]
pub async fn dns_host_name(ldap: &mut Ldap, url: &str) -> Result<String, Attempt<DirectoryError>> {
    let (entries, _) = ldap
        .search(
            "",
            ldap3::Scope::Base,
            "(objectClass=*)",
            vec!["dnsHostName"],
        )
        .await
        .and_then(|r| r.success())
        .map_err(|e| Attempt::Elsewhere(format!("{url}: cannot read the rootDSE: {e}")))?;
    entries
        .into_iter()
        .next()
        .map(ldap3::SearchEntry::construct)
        .and_then(|e| e.attrs.get("dnsHostName").and_then(|v| v.first()).cloned())
        .ok_or_else(|| {
            Attempt::Final(DirectoryError(format!(
                "{url}: the rootDSE names no dnsHostName, so the DC's Kerberos service name is unknown"
            )))
        })
}

#[cfg(feature = "kerberos")]
pub async fn bind(
    ldap: &mut Ldap,
    url: &str,
    principal: &str,
    timeout: Duration,
) -> Result<LdapResult, Attempt<DirectoryError>> {
    use cross_krb5::{Cred, InitiateFlags, K5Cred};
    let host = dns_host_name(ldap, url).await?;
    // Acquiring may ask the KDC for a ticket: blocking calls.
    let who = principal.to_owned();
    let cred = tokio::task::spawn_blocking(move || {
        Cred::client_acquire(InitiateFlags::empty(), Some(&who))
    })
    .await
    .map_err(|e| Attempt::Final(DirectoryError(format!("{url}: kerberos: {e}"))))?
    .map_err(|e| {
        Attempt::Final(DirectoryError(format!(
            "no Kerberos credentials for {principal} (check keytab_file holds its keys and the KDC of its realm answers): {e:#}"
        )))
    })?;
    ldap.with_timeout(timeout);
    ldap.sasl_gssapi_cred_bind(cred, &host).await.map_err(|e| {
        // A DC unknown to the KDC, or a clock too far off, fails here.
        Attempt::Elsewhere(format!(
            "{url}: Kerberos bind as {principal} to ldap/{host} failed: {e}"
        ))
    })
}

#[cfg(not(feature = "kerberos"))]
pub async fn bind(
    _ldap: &mut Ldap,
    _url: &str,
    principal: &str,
    _timeout: Duration,
) -> Result<LdapResult, Attempt<DirectoryError>> {
    Err(Attempt::Final(DirectoryError(format!(
        "cannot bind as {principal}: this build has no Kerberos support (the directory crate's kerberos feature)"
    ))))
}

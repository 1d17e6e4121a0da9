//! One provisioned Samba domain as the tests see it: its env files, binds
//! and administrative commands.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use directory::ldap::{Credentials, LdapDirectory, LdapSettings};
use envelope::Password;
use zeroize::Zeroizing;

pub const HOW: &str = "needs Samba AD DCs: run scripts/test, or scripts/samba/up target/samba && RELAY_SAMBA_DIR=target/samba cargo test -p tests --test samba -- --ignored";

/// One provisioned domain: its env files, merged.
pub struct Dc {
    env: HashMap<String, String>,
}

impl Dc {
    pub fn load(which: &str) -> Dc {
        let base = PathBuf::from(
            std::env::var("RELAY_SAMBA_DIR")
                .unwrap_or_else(|_| panic!("RELAY_SAMBA_DIR is not set: {HOW}")),
        );
        let base = if base.is_absolute() {
            base
        } else {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(base)
        };
        let mut env = HashMap::new();
        for file in ["env", "fixtures.env", "users.env"] {
            let path = base.join(which).join(file);
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
                panic!(
                    "{}: {e} — the Samba DCs are not set up: {HOW}",
                    path.display()
                )
            });
            for line in text.lines() {
                if let Some((k, v)) = line.split_once('=') {
                    env.insert(k.to_owned(), v.to_owned());
                }
            }
        }
        Dc { env }
    }

    pub fn get(&self, key: &str) -> &str {
        self.env
            .get(key)
            .unwrap_or_else(|| panic!("{key} missing from the Samba env files"))
    }

    pub fn password(&self, file_key: &str) -> String {
        std::fs::read_to_string(self.get(file_key))
            .expect("password file")
            .trim_end()
            .to_owned()
    }

    pub fn directory(&self, name: &str) -> LdapDirectory {
        LdapDirectory::new(
            name,
            LdapSettings {
                urls: vec![self.get("LDAPS_URL").to_owned()],
                ca_file: PathBuf::from(self.get("CA_FILE")),
                bind_dn: self.get("SERVICE_ACCOUNT_DN").to_owned(),
                credentials: Credentials::Password(Zeroizing::new(
                    self.password("SERVICE_ACCOUNT_PASSWORD_FILE"),
                )),
                base_dn: Some(self.get("BASE_DN").to_owned()),
                srv: None,
            },
        )
        .expect("ldap directory")
    }

    /// A connection over LDAPS that verifies the DC against its CA.
    async fn connect(&self) -> ldap3::Ldap {
        use rustls::pki_types::pem::PemObject;
        let pem = std::fs::read(self.get("CA_FILE")).expect("ca");
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
            roots.add(c.expect("cert")).expect("root");
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("tls")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let settings = ldap3::LdapConnSettings::new().set_config(Arc::new(tls));
        let (conn, ldap) = ldap3::LdapConnAsync::with_settings(settings, self.get("LDAPS_URL"))
            .await
            .expect("connect");
        ldap3::drive!(conn);
        ldap
    }

    /// Whether `password` binds as `dn` (with the bind's diagnostic on failure).
    pub async fn binds(&self, dn: &str, password: &str) -> Result<(), String> {
        let mut ldap = self.connect().await;
        let r = ldap.simple_bind(dn, password).await.expect("bind");
        if r.rc == 0 {
            Ok(())
        } else {
            Err(format!("rc {} {}", r.rc, r.text))
        }
    }

    pub fn samba_tool(&self, args: &[&str]) {
        let out = std::process::Command::new("samba-tool")
            .args(args)
            .args(["-s", self.get("SMB_CONF")])
            .output()
            .expect("samba-tool");
        assert!(
            out.status.success(),
            "samba-tool {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

pub fn pw(p: &str) -> Password {
    Password::new(p)
}

impl Dc {
    /// Reads `attrs` of `dn` as the domain's administrator (what the DC
    /// itself holds, constructed attributes included when named).
    pub async fn admin_read(&self, dn: &str, attrs: &[&str]) -> HashMap<String, Vec<String>> {
        let mut ldap = self.connect().await;
        ldap.simple_bind(self.get("ADMIN_DN"), &self.password("ADMIN_PASSWORD_FILE"))
            .await
            .expect("bind")
            .success()
            .expect("admin bind");
        let (entries, _) = ldap
            .search(dn, ldap3::Scope::Base, "(objectClass=*)", attrs.to_vec())
            .await
            .expect("search")
            .success()
            .expect("admin read");
        let _ = ldap.unbind().await;
        entries
            .into_iter()
            .next()
            .map(|e| ldap3::SearchEntry::construct(e).attrs)
            .unwrap_or_default()
    }

    /// An LDAP backend bound as the domain's administrator, who (unlike a
    /// delegated service account) may see tombstones.
    pub fn admin_directory(&self, name: &str) -> LdapDirectory {
        LdapDirectory::new(
            name,
            LdapSettings {
                urls: vec![self.get("LDAPS_URL").to_owned()],
                ca_file: PathBuf::from(self.get("CA_FILE")),
                bind_dn: self.get("ADMIN_DN").to_owned(),
                credentials: Credentials::Password(Zeroizing::new(
                    self.password("ADMIN_PASSWORD_FILE"),
                )),
                base_dn: Some(self.get("BASE_DN").to_owned()),
                srv: None,
            },
        )
        .expect("admin directory")
    }
}

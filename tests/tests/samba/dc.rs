//! One provisioned Samba domain as the tests see it: its env files, binds
//! and administrative commands.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use agent_client::directory::ldap::{LdapDirectory, LdapSettings};
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
                url: self.get("LDAPS_URL").to_owned(),
                ca_file: PathBuf::from(self.get("CA_FILE")),
                bind_dn: self.get("SERVICE_ACCOUNT_DN").to_owned(),
                bind_password: Zeroizing::new(self.password("SERVICE_ACCOUNT_PASSWORD_FILE")),
                base_dn: Some(self.get("BASE_DN").to_owned()),
            },
        )
        .expect("ldap directory")
    }

    /// Whether `password` binds as `dn` (with the bind's diagnostic on failure).
    pub async fn binds(&self, dn: &str, password: &str) -> Result<(), String> {
        let pem = std::fs::read(self.get("CA_FILE")).expect("ca");
        let mut roots = rustls::RootCertStore::empty();
        use rustls::pki_types::pem::PemObject;
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
        let (conn, mut ldap) = ldap3::LdapConnAsync::with_settings(settings, self.get("LDAPS_URL"))
            .await
            .expect("connect");
        ldap3::drive!(conn);
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

/// The account at `dn` as a full import reads it (what the connector space
/// hands the backend).
pub async fn account(dir: &LdapDirectory, dn: &str) -> agent_client::directory::Account {
    use agent_client::directory::Directory;
    dir.import(None)
        .await
        .expect("import")
        .accounts
        .into_iter()
        .find(|a| a.dn.eq_ignore_ascii_case(dn))
        .unwrap_or_else(|| panic!("{dn} not imported"))
}

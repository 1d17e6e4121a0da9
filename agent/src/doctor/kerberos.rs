//! doctor's Kerberos checks of a forest that binds with a keytab: the
//! keytab is readable and holds the principal's keys, and this host's
//! clock is within Kerberos' five minutes of the DC's. Whether a ticket is
//! obtained shows in the forest's bind check, which binds with it.

use std::time::Duration;

use super::{Check, check};
use crate::config::ForestConfig;
use crate::forests::open_ldap;

/// Kerberos refuses tickets from a client this far off (MIT's and AD's
/// default `clockskew`).
const KERBEROS_SKEW: Duration = Duration::from_secs(300);

pub async fn kerberos_checks(forest: &ForestConfig) -> Vec<Check> {
    let (Some(keytab), Some(principal)) = (&forest.keytab_file, &forest.principal) else {
        return Vec::new();
    };
    let name = &forest.name;
    let mut checks = Vec::new();
    let title = format!("forest {name}: kerberos keytab");
    checks.push(match std::fs::read(keytab) {
        Err(e) => {
            let mut c = check(title, false, format!("cannot read {}: {e}", keytab.display()));
            c.fix.push(format!(
                "make {} readable by the agent's user (mode 0600, owned by it)",
                keytab.display()
            ));
            c
        }
        Ok(bytes) => match principals(&bytes) {
            Some(found) if found.iter().any(|p| p.eq_ignore_ascii_case(principal)) => check(
                title,
                true,
                format!("{} holds keys for {principal}", keytab.display()),
            ),
            found => {
                let mut c = check(
                    title,
                    false,
                    match found {
                        Some(found) => format!(
                            "{} holds no keys for {principal} (it has: {})",
                            keytab.display(),
                            found.join(", ")
                        ),
                        None => format!("{} is not a keytab", keytab.display()),
                    },
                );
                c.fix.push(format!(
                    "on a DC: samba-tool domain exportkeytab --principal={principal} {} \
                     (Windows: ktpass /princ {principal} /mapuser <account> /crypto AES256-SHA1 /ptype KRB5_NT_PRINCIPAL /pass * /out {})",
                    keytab.display(),
                    keytab.display()
                ));
                c
            }
        },
    });
    let title = format!("forest {name}: kerberos clock skew");
    let skew = match open_ldap(forest) {
        Ok(directory) => directory.clock_offset().await,
        Err(e) => Err(e),
    };
    checks.push(match skew {
        Ok((url, offset_ms)) => {
            let ok = offset_ms.unsigned_abs() <= KERBEROS_SKEW.as_millis() as u64;
            let mut c = check(
                title,
                ok,
                format!(
                    "this host's clock is {offset_ms} ms behind {url}'s (negative: ahead); Kerberos allows {}s",
                    KERBEROS_SKEW.as_secs()
                ),
            );
            if !ok {
                c.fix.push(
                    "synchronise this host's clock with the domain's (chronyc makestep, or w32tm /resync)".into(),
                );
            }
            c
        }
        Err(e) => check(title, false, format!("the DC's clock cannot be read: {e}")),
    });
    checks
}

/// The fixes for a Kerberos bind that failed with `error`, by what the
/// DC or the Kerberos library said.
pub fn bind_fixes(forest: &ForestConfig, error: &str) -> Vec<String> {
    let Some(principal) = forest
        .principal
        .as_deref()
        .filter(|_| forest.keytab_file.is_some())
    else {
        return Vec::new();
    };
    let mut fixes = Vec::new();
    if error.contains("Sign or Seal are required") {
        fixes.push(
            "on a Samba DC: set \"ldap server require strong auth = allow_sasl_over_tls\" in smb.conf's [global] and restart samba (its default allows only simple binds over TLS; Windows DCs accept Kerberos over LDAPS as they are)".into(),
        );
    }
    if error.contains("Server not found in Kerberos database") {
        fixes.push(
            "register the DC's LDAP service name on its computer account: setspn -S ldap/<DC's dnsHostName> <DC>$ (Samba: samba-tool spn add ldap/<DC's dnsHostName> <DC>$)".into(),
        );
    }
    if error.contains("kew") {
        fixes.push(
            "synchronise this host's clock with the domain's (chronyc makestep, or w32tm /resync)"
                .into(),
        );
    }
    if error.contains("no Kerberos credentials") || fixes.is_empty() {
        fixes.push(format!(
            "check that keytab_file holds current keys for {principal} (export it again after a password change) and that krb5_conf names the KDCs of its realm"
        ));
    }
    fixes
}

/// The principals a keytab (MIT's format 0x0502) holds keys for; `None`
/// when it is not one.
fn principals(bytes: &[u8]) -> Option<Vec<String>> {
    let mut r = Reader(bytes);
    if r.u16()? != 0x0502 {
        return None;
    }
    let mut out: Vec<String> = Vec::new();
    while !r.0.is_empty() {
        let size = r.u32()? as i32;
        let entry = r.take(size.unsigned_abs() as usize)?;
        if size <= 0 {
            continue; // a deleted entry's hole
        }
        let mut e = Reader(entry);
        let components = e.u16()?;
        let realm = e.counted()?;
        let mut names = Vec::new();
        for _ in 0..components {
            names.push(e.counted()?);
        }
        let principal = format!("{}@{realm}", names.join("/"));
        if !out.contains(&principal) {
            out.push(principal);
        }
    }
    Some(out)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn counted(&mut self) -> Option<String> {
        let n = self.u16()? as usize;
        Some(String::from_utf8_lossy(self.take(n)?).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_kerberos_bind_names_its_fix() {
        let forest: ForestConfig = toml::from_str(
            "name = \"f\"\nkind = \"ldap\"\nkeytab_file = \"k\"\nprincipal = \"svc@R\"\n",
        )
        .unwrap();
        let fixes = bind_fixes(
            &forest,
            "bind failed: result 8 SASL:[GSSAPI]: Sign or Seal are required.",
        );
        assert!(fixes[0].contains("allow_sasl_over_tls"), "{fixes:?}");
        let fixes = bind_fixes(&forest, "no Kerberos credentials for svc@R: ...");
        assert!(fixes[0].contains("keytab_file holds current keys for svc@R"));
        assert!(bind_fixes(&forest, "Server not found in Kerberos database")[0].contains("setspn"));
    }

    fn entry(realm: &str, names: &[&str]) -> Vec<u8> {
        let mut e = (names.len() as u16).to_be_bytes().to_vec();
        for part in std::iter::once(realm).chain(names.iter().copied()) {
            e.extend((part.len() as u16).to_be_bytes());
            e.extend(part.as_bytes());
        }
        e.extend([0, 0, 0, 1, 0, 0, 0, 0, 2, 0, 18, 0, 2, 0xaa, 0xbb]);
        let mut out = (e.len() as u32).to_be_bytes().to_vec();
        out.extend(e);
        out
    }

    #[test]
    fn a_keytab_lists_its_principals_once_each() {
        let mut keytab = vec![0x05, 0x02];
        keytab.extend(entry("TEST.EXAMPLE", &["svc-writeback"]));
        keytab.extend(entry("TEST.EXAMPLE", &["svc-writeback"]));
        // A hole left by a deleted entry.
        keytab.extend((-4i32).to_be_bytes());
        keytab.extend([0; 4]);
        keytab.extend(entry("TEST.EXAMPLE", &["HTTP", "web.test.example"]));
        assert_eq!(
            principals(&keytab).unwrap(),
            [
                "svc-writeback@TEST.EXAMPLE",
                "HTTP/web.test.example@TEST.EXAMPLE"
            ]
        );
        assert_eq!(principals(b"not a keytab"), None);
        assert_eq!(principals(&keytab[..keytab.len() - 3]), None);
    }
}

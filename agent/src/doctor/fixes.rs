//! The commands doctor prints to fix the service account's rights, ready to
//! run as printed: on a Windows DC (dsacls in cmd or PowerShell; a deny's
//! removal in PowerShell with the ActiveDirectory module) and on a Samba DC
//! (samba-tool, ldbmodify), naming the real account. Pure: text from the
//! rights report.
//!
//! A missing grant is fixed where it lasts: on the container whose
//! protected DACL stops inheritance (so sub-OUs created there later are
//! covered too), else on the container holding the users. A deny cannot be
//! overridden by a grant (denies come first), so its fix is its removal.
//! Embedded forests get the agent's own `directory` commands instead.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use directory::sd::USER_CLASS;
use directory::{ContainerRights, DirectoryRight, ServiceAccount};

/// Where Samba keeps the domain database on a DC installed with defaults.
pub const SAMBA_SAM_LDB: &str = "/var/lib/samba/private/sam.ldb";

/// The fix commands for one forest's rights report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fixes {
    pub windows: Vec<String>,
    pub samba: Vec<String>,
}

/// Text inside bash double quotes: `\`, `"`, `$` and `` ` `` escaped (so a
/// DN's own `\,` reaches the command intact).
fn dq(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if matches!(c, '\\' | '"' | '$' | '`') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Text inside bash single quotes.
fn sq(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Text inside PowerShell single quotes.
fn ps(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The SDDL ACE granting `right` on user objects below, inheritable.
pub fn grant_ace(right: DirectoryRight, sid: &str) -> String {
    let access = match right {
        DirectoryRight::ResetPassword | DirectoryRight::ChangePassword => "CR",
        DirectoryRight::WriteLockoutTime | DirectoryRight::WritePwdLastSet => "WP",
    };
    format!("(OA;CIIO;{access};{};{USER_CLASS};{sid})", right.guid())
}

fn dsacls_grant(right: DirectoryRight) -> &'static str {
    match right {
        DirectoryRight::ResetPassword => "CA;Reset Password;user",
        DirectoryRight::ChangePassword => "CA;Change Password;user",
        DirectoryRight::WriteLockoutTime => "WP;lockoutTime;user",
        DirectoryRight::WritePwdLastSet => "WP;pwdLastSet;user",
    }
}

/// An LDIF `dn:` line; base64 (`dn::`) when the DN is not plain ASCII or
/// starts with a character LDIF reserves.
fn ldif_dn(dn: &str) -> String {
    let plain = dn.bytes().all(|b| (0x20..0x7f).contains(&b))
        && !dn.starts_with([' ', ':', '<'])
        && !dn.ends_with(' ');
    if plain {
        format!("dn: {dn}")
    } else {
        format!("dn:: {}", STANDARD.encode(dn))
    }
}

/// Grants by target DN (first spelling kept), rights in [`DirectoryRight::ALL`] order.
fn grants(rights: &[ContainerRights]) -> Vec<(String, Vec<DirectoryRight>)> {
    let mut by_target: BTreeMap<String, (String, Vec<DirectoryRight>)> = BTreeMap::new();
    for c in rights.iter().filter(|c| !c.ungranted.is_empty()) {
        let target = c.blocked_at.as_deref().unwrap_or(&c.dn);
        let entry = by_target
            .entry(target.to_ascii_lowercase())
            .or_insert_with(|| (target.to_owned(), Vec::new()));
        for r in &c.ungranted {
            if !entry.1.contains(r) {
                entry.1.push(*r);
            }
        }
    }
    by_target
        .into_values()
        .map(|(dn, mut rs)| {
            rs.sort();
            (dn, rs)
        })
        .collect()
}

/// The fixes for an Active Directory forest (Windows or Samba DCs).
pub fn directory_fixes(rights: &[ContainerRights], account: &ServiceAccount) -> Fixes {
    let mut out = Fixes::default();
    let who = format!("{}\\{}", account.netbios_domain, account.sam_account_name);
    for (dn, rs) in grants(rights) {
        for r in &rs {
            out.windows.push(format!(
                "dsacls \"{dn}\" /I:S /G \"{who}:{}\"",
                dsacls_grant(*r)
            ));
        }
        let aces: String = rs.iter().map(|r| grant_ace(*r, &account.sid)).collect();
        out.samba.push(format!(
            "samba-tool dsacl set --objectdn={} --sddl={}",
            dq(&dn),
            dq(&aces)
        ));
    }
    let mut removed: Vec<String> = Vec::new();
    for deny in rights.iter().flat_map(|c| &c.denied_by) {
        let key = deny.at.to_ascii_lowercase();
        if removed.contains(&key) {
            continue;
        }
        removed.push(key);
        let Some(dacl) = &deny.dacl_without else {
            let manual = format!(
                "remove the ACE {} from the DACL of {} (it holds entries doctor cannot rewrite: use ADSI Edit, Advanced security settings)",
                deny.ace, deny.at
            );
            out.windows.push(manual.clone());
            out.samba.push(manual);
            continue;
        };
        // The DACL is rewritten from its explicit ACEs without the denies;
        // the DC recomputes the inherited ones. A PowerShell line (not
        // wrapped in `powershell -Command "..."`, whose `$acl` a PowerShell
        // prompt would expand before the inner shell saw it).
        out.windows.push(format!(
            "Import-Module ActiveDirectory; $acl = Get-Acl -Path {p}; $acl.SetSecurityDescriptorSddlForm({d}, 'Access'); Set-Acl -Path {p} -AclObject $acl",
            p = ps(&format!("AD:{}", deny.at)),
            d = ps(dacl),
        ));
        out.samba.push(format!(
            "printf '%s\\n' {} 'changetype: modify' 'replace: nTSecurityDescriptor' {} | ldbmodify -H {SAMBA_SAM_LDB} --controls=sd_flags:1:4",
            sq(&ldif_dn(&deny.at)),
            sq(&format!("nTSecurityDescriptor: {dacl}")),
        ));
    }
    out
}

/// The fixes for an embedded forest: `writeback-agent directory grant`
/// where the grant lasts, and `directory remove-deny` for each deny.
pub fn embedded_fixes(config_hint: &str, forest: &str, rights: &[ContainerRights]) -> Vec<String> {
    let names = |rs: &[DirectoryRight]| {
        rs.iter()
            .map(|r| right_arg(*r))
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut out: Vec<String> = grants(rights)
        .into_iter()
        .map(|(dn, rs)| {
            format!(
                "writeback-agent {config_hint}directory grant --forest {forest} --ou {} --rights {}",
                dq(&dn),
                names(&rs)
            )
        })
        .collect();
    let mut denies: BTreeMap<String, (String, Vec<DirectoryRight>)> = BTreeMap::new();
    for d in rights.iter().flat_map(|c| &c.denied_by) {
        let entry = denies
            .entry(d.at.to_ascii_lowercase())
            .or_insert_with(|| (d.at.clone(), Vec::new()));
        if !entry.1.contains(&d.right) {
            entry.1.push(d.right);
        }
    }
    for (at, mut rs) in denies.into_values() {
        rs.sort();
        out.push(format!(
            "writeback-agent {config_hint}directory remove-deny --forest {forest} --dn {} --rights {}",
            dq(&at),
            names(&rs)
        ));
    }
    out
}

fn right_arg(r: DirectoryRight) -> &'static str {
    match r {
        DirectoryRight::ResetPassword => "reset-password",
        DirectoryRight::ChangePassword => "change-password",
        DirectoryRight::WriteLockoutTime => "write-lockout-time",
        DirectoryRight::WritePwdLastSet => "write-pwd-last-set",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use directory::DenyAce;

    const SID: &str = "S-1-5-21-1-2-3-1105";

    fn account() -> ServiceAccount {
        ServiceAccount {
            dn: "CN=svc-writeback,CN=Users,DC=doctor,DC=test".into(),
            sam_account_name: "svc-writeback".into(),
            sid: SID.into(),
            netbios_domain: "DOCTOR".into(),
        }
    }

    fn container(
        dn: &str,
        ungranted: &[DirectoryRight],
        blocked_at: Option<&str>,
    ) -> ContainerRights {
        ContainerRights {
            dn: dn.into(),
            is_ou: true,
            user_count: 1,
            affected: 1,
            missing: ungranted.to_vec(),
            ungranted: ungranted.to_vec(),
            blocked_at: blocked_at.map(str::to_owned),
            denied_by: Vec::new(),
        }
    }

    #[test]
    fn grants_go_where_inheritance_is_blocked_once_per_place() {
        let west = "OU=Region-West,OU=Corp,DC=doctor,DC=test";
        let rights = [
            container(
                &format!("OU=Team-A,OU=Dept-Sales,{west}"),
                &[
                    DirectoryRight::ResetPassword,
                    DirectoryRight::WritePwdLastSet,
                ],
                Some(west),
            ),
            container(
                &format!("OU=Dept-Sales,{west}"),
                &[DirectoryRight::WriteLockoutTime],
                Some(west),
            ),
            container(
                "OU=Other,DC=doctor,DC=test",
                &[DirectoryRight::ResetPassword],
                None,
            ),
        ];
        let f = directory_fixes(&rights, &account());
        assert_eq!(
            f.samba,
            [
                format!(
                    "samba-tool dsacl set --objectdn=\"OU=Other,DC=doctor,DC=test\" --sddl=\"(OA;CIIO;CR;00299570-246d-11d0-a768-00aa006e0529;bf967aba-0de6-11d0-a285-00aa003049e2;{SID})\""
                ),
                format!(
                    "samba-tool dsacl set --objectdn=\"{west}\" --sddl=\"(OA;CIIO;CR;00299570-246d-11d0-a768-00aa006e0529;bf967aba-0de6-11d0-a285-00aa003049e2;{SID})(OA;CIIO;WP;28630ebf-41d5-11d1-a9c1-0000f80367c1;bf967aba-0de6-11d0-a285-00aa003049e2;{SID})(OA;CIIO;WP;bf967a0a-0de6-11d0-a285-00aa003049e2;bf967aba-0de6-11d0-a285-00aa003049e2;{SID})\""
                ),
            ]
        );
        assert_eq!(f.windows.len(), 4);
        assert!(f.windows.contains(&format!(
            "dsacls \"{west}\" /I:S /G \"DOCTOR\\svc-writeback:CA;Reset Password;user\""
        )));
        assert!(f.windows.iter().all(|l| !l.contains("Team-A")));
    }

    #[test]
    fn a_deny_is_removed_not_outgranted() {
        let dn = "OU=No Reset,OU=Corp,DC=doctor,DC=test";
        let mut c = container(dn, &[], None);
        c.missing = vec![DirectoryRight::ResetPassword];
        c.denied_by = vec![DenyAce {
            right: DirectoryRight::ResetPassword,
            at: dn.into(),
            ace: format!(
                "(OD;CI;CR;00299570-246d-11d0-a768-00aa006e0529;bf967aba-0de6-11d0-a285-00aa003049e2;{SID})"
            ),
            dacl_without: Some("D:AI(A;;RPLCLORC;;;S-1-5-11)".into()),
        }];
        let f = directory_fixes(&[c.clone(), c], &account());
        assert_eq!(
            f.samba,
            [format!(
                "printf '%s\\n' 'dn: {dn}' 'changetype: modify' 'replace: nTSecurityDescriptor' 'nTSecurityDescriptor: D:AI(A;;RPLCLORC;;;S-1-5-11)' | ldbmodify -H /var/lib/samba/private/sam.ldb --controls=sd_flags:1:4"
            )]
        );
        assert_eq!(f.windows.len(), 1);
        assert!(
            f.windows[0].contains(
                "SetSecurityDescriptorSddlForm('D:AI(A;;RPLCLORC;;;S-1-5-11)', 'Access')"
            )
        );
        assert!(!f.windows[0].contains("/G"), "no grant for a deny");
    }

    #[test]
    fn quoting_keeps_escaped_dns_intact() {
        assert_eq!(dq(r#"CN=Doe\, John $x"#), r#""CN=Doe\\, John \$x""#);
        assert_eq!(sq("dn: OU=O'Brien"), r"'dn: OU=O'\''Brien'");
        assert_eq!(ldif_dn("OU=Zürich,DC=x"), "dn:: T1U9WsO8cmljaCxEQz14");
    }
}

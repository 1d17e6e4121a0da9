//! Building blocks for tests that make their own fixtures in a shared DC:
//! names no other test or earlier run uses, a delegated OU, a protected
//! DACL, and the agent's `[[forests]]` section.

use crate::dc::Dc;

/// A short random suffix for OU, user, group and PSO names.
pub fn unique_tag() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{:06x}", (nanos ^ std::process::id()) & 0xff_ffff)
}

/// The four rights, inherited by user objects below `ou` (as the
/// Delegation of Control wizard grants them).
pub fn delegate(dc: &Dc, ou: &str) {
    let sid = dc.get("SERVICE_ACCOUNT_SID").to_owned();
    let user = "bf967aba-0de6-11d0-a285-00aa003049e2";
    let sddl: String = [
        ("CR", "00299570-246d-11d0-a768-00aa006e0529"),
        ("CR", "ab721a53-1e2f-11d0-9819-00aa0040529b"),
        ("WP", "28630ebf-41d5-11d1-a9c1-0000f80367c1"),
        ("WP", "bf967a0a-0de6-11d0-a285-00aa003049e2"),
    ]
    .iter()
    .map(|(kind, guid)| format!("(OA;CIIO;{kind};{guid};{user};{sid})"))
    .collect();
    dc.samba_tool(&[
        "dsacl",
        "set",
        &format!("--objectdn={ou}"),
        &format!("--sddl={sddl}"),
    ]);
}

/// Blocks inheritance on `dn` as ADUC's "Disable inheritance, convert to
/// explicit" does. samba-tool 4.17 has no command for it; Samba's Python
/// bindings (samba-tool's own) do, as in scripts/samba/setup-delegation.
pub fn protect_dacl(dc: &Dc, dn: &str) {
    const SCRIPT: &str = r#"
import sys
from samba.auth import system_session
from samba.dcerpc import security
from samba.param import LoadParm
from samba.samdb import SamDB
from samba.sd_utils import SDUtils

conf, dn = sys.argv[1], sys.argv[2]
lp = LoadParm()
lp.load(conf)
samdb = SamDB(url=lp.samdb_url(), session_info=system_session(lp), lp=lp)
sdu = SDUtils(samdb)
sd = sdu.read_sd_on_dn(dn)
aces = sd.dacl.aces
for ace in aces:
    ace.flags &= ~security.SEC_ACE_FLAG_INHERITED_ACE
sd.dacl.aces = aces
sd.type |= security.SEC_DESC_DACL_PROTECTED
sdu.modify_sd_on_dn(dn, sd, controls=["sd_flags:1:%d" % security.SECINFO_DACL])
"#;
    let out = std::process::Command::new("/usr/bin/python3")
        .args(["-c", SCRIPT, dc.get("SMB_CONF"), dn])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "protect the DACL of {dn}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `[[forests]]` section of an agent acting in `dc` as its service account.
pub fn forest_section(dc: &Dc, name: &str) -> String {
    format!(
        "\n[[forests]]\nname = {name:?}\nkind = \"ldap\"\nurl = {:?}\nca_file = {:?}\nbind_dn = {:?}\nbind_password_file = {:?}\nbase_dn = {:?}\n",
        dc.get("LDAPS_URL"),
        dc.get("CA_FILE"),
        dc.get("SERVICE_ACCOUNT_DN"),
        dc.get("SERVICE_ACCOUNT_PASSWORD_FILE"),
        dc.get("BASE_DN"),
    )
}

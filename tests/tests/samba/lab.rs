//! Fixtures a test makes for itself in a shared DC: names no other test
//! or earlier run uses, OUs with the write-back delegation, users, blocked
//! inheritance, plain containers, and shims that run commands printed for
//! a DC installed with defaults against these test DCs.

use directory::ldap::LdapDirectory;

use crate::dc::Dc;

impl Dc {
    /// Runs a Python script with Samba's bindings as `setup-delegation`
    /// does (`/usr/bin/python3`, the interpreter samba-tool runs under),
    /// with smb.conf as its first argument; returns its standard output.
    pub fn samba_python(&self, script: &str, args: &[&str]) -> String {
        use std::io::Write;
        let mut child = std::process::Command::new("/usr/bin/python3")
            .arg("-")
            .arg(self.get("SMB_CONF"))
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(script.as_bytes())
            .expect("script");
        let out = child.wait_with_output().expect("python3");
        assert!(
            out.status.success(),
            "python3 {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Protects the DACL of `dn` (blocks inheritance), turning the ACEs it
    /// had inherited into explicit ones, as `setup-delegation` does.
    pub fn block_inheritance(&self, dn: &str) {
        self.samba_python(
            r#"
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
"#,
            &[dn],
        );
    }

    /// Adds an object of `class` (e.g. `container`, which samba-tool 4.17
    /// cannot create) at `dn`.
    pub fn add_object(&self, dn: &str, class: &str) {
        self.samba_python(
            r#"
import sys
from samba.auth import system_session
from samba.param import LoadParm
from samba.samdb import SamDB

conf, dn, cls = sys.argv[1], sys.argv[2], sys.argv[3]
lp = LoadParm()
lp.load(conf)
samdb = SamDB(url=lp.samdb_url(), session_info=system_session(lp), lp=lp)
samdb.add({"dn": dn, "objectClass": cls})
"#,
            &[dn, class],
        );
    }

    /// Runs one command line printed for a DC (by doctor) exactly as
    /// printed, through [`Dc::on_the_dc_shims`].
    pub fn run_on_the_dc(&self, line: &str) {
        let shims = self.on_the_dc_shims();
        let path = format!(
            "{}:{}",
            shims.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = std::process::Command::new("bash")
            .args(["-c", line])
            .env("PATH", path)
            .output()
            .expect("bash");
        assert!(
            out.status.success(),
            "{line}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A directory of shims that make a command printed for a Samba DC
    /// installed with defaults act on this test DC: `samba-tool` gets
    /// `-s <its smb.conf>`, and `ldbmodify` gets its smb.conf and this DC's
    /// sam.ldb for `/var/lib/samba/private/sam.ldb`. Put first in PATH.
    pub fn on_the_dc_shims(&self) -> tempfile::TempDir {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("shim dir");
        let which = |cmd: &str| {
            let out = std::process::Command::new("sh")
                .args(["-c", &format!("command -v {cmd}")])
                .output()
                .expect("command -v");
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        let conf = self.get("SMB_CONF");
        let sam = format!("{}/private/sam.ldb", self.get("SAMBA_DIR"));
        let shims = [
            (
                "samba-tool",
                format!("#!/bin/sh\nexec {} \"$@\" -s {conf}\n", which("samba-tool")),
            ),
            (
                "ldbmodify",
                format!(
                    "#!/bin/bash\nargs=()\nfor a in \"$@\"; do\n  [[ $a == /var/lib/samba/private/sam.ldb ]] && a={sam}\n  args+=(\"$a\")\ndone\nexec {} --configfile={conf} \"${{args[@]}}\"\n",
                    which("ldbmodify")
                ),
            ),
        ];
        for (name, body) in shims {
            let path = dir.path().join(name);
            std::fs::write(&path, body).expect("shim");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        dir
    }
}

impl Dc {
    /// The agent's `[[forests]]` section for this domain as forest `name`
    /// (LDAPS as the service account).
    pub fn forest_section(&self, name: &str) -> String {
        format!(
            "\n[[forests]]\nname = {name:?}\nkind = \"ldap\"\nurl = {:?}\nca_file = {:?}\nbind_dn = {:?}\nbind_password_file = {:?}\n",
            self.get("LDAPS_URL"),
            self.get("CA_FILE"),
            self.get("SERVICE_ACCOUNT_DN"),
            self.get("SERVICE_ACCOUNT_PASSWORD_FILE"),
        )
    }
}

/// The account at `dn` as a full import reads it (what the connector space
/// hands the backend).
pub async fn account(dir: &LdapDirectory, dn: &str) -> directory::Account {
    use directory::Directory;
    dir.import(None)
        .await
        .expect("import")
        .accounts
        .into_iter()
        .find(|a| a.dn.eq_ignore_ascii_case(dn))
        .unwrap_or_else(|| panic!("{dn} not imported"))
}

/// A short name no other run (or engineer) uses: `prefix` and 6 hex digits.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .subsec_nanos();
    format!(
        "{prefix}{:06x}",
        (nanos ^ std::process::id().rotate_left(16)) & 0xff_ffff
    )
}

/// The four write-back rights, as `scripts/samba/setup-delegation` grants
/// them: inherited by the user objects below the OU.
pub fn delegation_aces(sid: &str) -> Vec<String> {
    const USER_CLASS: &str = "bf967aba-0de6-11d0-a285-00aa003049e2";
    [
        ("CR", "00299570-246d-11d0-a768-00aa006e0529"),
        ("CR", "ab721a53-1e2f-11d0-9819-00aa0040529b"),
        ("WP", "28630ebf-41d5-11d1-a9c1-0000f80367c1"),
        ("WP", "bf967a0a-0de6-11d0-a285-00aa003049e2"),
    ]
    .into_iter()
    .map(|(kind, right)| format!("(OA;CIIO;{kind};{right};{USER_CLASS};{sid})"))
    .collect()
}

impl Dc {
    /// A new OU of this test's own under the domain head, with the four
    /// write-back rights delegated to the service account. Returns its DN.
    pub fn own_ou(&self, prefix: &str) -> String {
        let dn = format!("OU={},{}", unique(prefix), self.get("BASE_DN"));
        self.samba_tool(&["ou", "add", &dn]);
        self.delegate(&dn);
        dn
    }

    /// Grants the four write-back rights on `ou` (inherited by the user
    /// objects below it), in one call.
    pub fn delegate(&self, ou: &str) {
        let sddl: String = delegation_aces(self.get("SERVICE_ACCOUNT_SID")).concat();
        self.samba_tool(&[
            "dsacl",
            "set",
            &format!("--objectdn={ou}"),
            &format!("--sddl={sddl}"),
        ]);
    }

    /// Creates user `sam` in `ou_dn`; samba-tool makes its CN the
    /// sAMAccountName and its UPN sam@<dns domain>. Returns its DN.
    pub fn create_user(&self, ou_dn: &str, sam: &str, password: &str) -> String {
        let base = format!(",{}", self.get("BASE_DN"));
        let relative = ou_dn
            .strip_suffix(&base)
            .unwrap_or_else(|| panic!("{ou_dn} is not under {base}"));
        self.samba_tool(&[
            "user",
            "create",
            sam,
            password,
            &format!("--userou={relative}"),
        ]);
        format!("CN={sam},{ou_dn}")
    }

    /// The anchor a portal sends for a user created by [`Dc::create_user`].
    pub fn upn(&self, sam: &str) -> envelope::Anchor {
        envelope::Anchor::UserPrincipalName(format!(
            "{sam}@{}",
            self.get("DNS_DOMAIN").to_lowercase()
        ))
    }

    /// The `[[forests]]` section of an ldap forest named `name` for this DC,
    /// bound as `bind_dn` with the password in `password_file`.
    pub fn forest_section_as(&self, name: &str, bind_dn: &str, password_file: &str) -> String {
        format!(
            "\n[[forests]]\nname = {name:?}\nkind = \"ldap\"\nurl = {:?}\nca_file = {:?}\nbind_dn = {bind_dn:?}\nbind_password_file = {password_file:?}\nbase_dn = {:?}\n",
            self.get("LDAPS_URL"),
            self.get("CA_FILE"),
            self.get("BASE_DN"),
        )
    }

    /// Deletes the OU and everything in it (cleanup; failures are ignored
    /// so that they never hide the test's own result).
    pub fn remove_ou(&self, ou_dn: &str) {
        let _ = std::process::Command::new("samba-tool")
            .args(["ou", "delete", ou_dn, "--force-subtree-delete"])
            .args(["-s", self.get("SMB_CONF")])
            .output();
    }
}

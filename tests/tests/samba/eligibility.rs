//! Eligibility first: what GET_PASSWORD_POLICY says each operation would
//! answer, against what the operation then answers on a real DC, and
//! against the embedded backend's answer for the same scenario (a copy of
//! the contoso sample forest changed to match). Each operation runs on a
//! user of its own, made for the scenario, so that one operation's effect
//! (a reset's unlock) cannot decide another's answer.

use std::path::Path;

use directory::DirectoryRight;
use directory::embedded::{Ace, EmbeddedDirectory};
use envelope::body::outcome;
use envelope::{Anchor, RequestBody};
use proto::pb::Operation;
use relay_client::outcome::outcome_name;
use tests::deployment::{Deployment, detail};

use crate::dc::Dc;
use crate::lab::unique;

const LOCKOUT_TIME: &str = "28630ebf-41d5-11d1-a9c1-0000f80367c1";
const CHANGE_PASSWORD: &str = "ab721a53-1e2f-11d0-9819-00aa0040529b";
const PASSWORD: &str = "Eligible-Start-2024!";
const NEW: &str = "Zq7-Unrelated-Passphrase-2026";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Scenario {
    Ordinary,
    Disabled,
    Protected,
    /// adminCount=1, and Change Password denied to the service account.
    ProtectedWithoutChangePassword,
    /// Outside the delegation: only what a user object gets by default
    /// (Change Password for Everyone).
    NoRights,
    /// Outside the delegation, and Change Password denied too.
    NoRightsAtAll,
    /// Not locked out, Write lockoutTime denied: the reset's unlock flag
    /// clears nothing, so Reset Password alone is enough.
    WithoutWriteLockoutTime,
    LockedWithoutWriteLockoutTime,
    Locked,
}

const ALL: [Scenario; 9] = [
    Scenario::Ordinary,
    Scenario::Disabled,
    Scenario::Protected,
    Scenario::ProtectedWithoutChangePassword,
    Scenario::NoRights,
    Scenario::NoRightsAtAll,
    Scenario::WithoutWriteLockoutTime,
    Scenario::LockedWithoutWriteLockoutTime,
    Scenario::Locked,
];

/// The OUs and the lockout policy one run makes for itself.
struct Lab {
    dc: Dc,
    /// Delegated the four rights.
    delegated: String,
    /// Delegated nothing.
    bare: String,
    /// Locks an account out for 30 minutes after 3 bad passwords.
    pso: String,
}

impl Lab {
    fn new() -> Lab {
        let dc = Dc::load("dc1");
        let delegated = dc.own_ou("Eligible-");
        let bare = format!("OU={},{}", unique("Ineligible-"), dc.get("BASE_DN"));
        dc.samba_tool(&["ou", "add", &bare]);
        let pso = unique("ElPso");
        dc.samba_tool(&[
            "domain",
            "passwordsettings",
            "pso",
            "create",
            &pso,
            "1",
            "--account-lockout-threshold=3",
            "--account-lockout-duration=30",
            "--reset-account-lockout-after=30",
        ]);
        Lab {
            dc,
            delegated,
            bare,
            pso,
        }
    }

    /// A new user in the state `scenario` names; its anchor.
    async fn user(&self, scenario: Scenario) -> Anchor {
        let dc = &self.dc;
        let sam = unique("el");
        let ou = match scenario {
            Scenario::NoRights | Scenario::NoRightsAtAll => &self.bare,
            _ => &self.delegated,
        };
        let dn = dc.create_user(ou, &sam, PASSWORD);
        match scenario {
            Scenario::Disabled => dc.samba_tool(&["user", "disable", &sam]),
            Scenario::Protected => set_admin_count(dc, &dn),
            Scenario::ProtectedWithoutChangePassword | Scenario::NoRightsAtAll => {
                if scenario == Scenario::ProtectedWithoutChangePassword {
                    set_admin_count(dc, &dn);
                }
                let sid = dc.get("SERVICE_ACCOUNT_SID");
                dc.samba_tool(&[
                    "dsacl",
                    "set",
                    &format!("--objectdn={dn}"),
                    &format!("--sddl=(OD;;CR;{CHANGE_PASSWORD};;{sid})"),
                ]);
            }
            Scenario::WithoutWriteLockoutTime => {
                let sid = dc.get("SERVICE_ACCOUNT_SID");
                dc.samba_tool(&[
                    "dsacl",
                    "set",
                    &format!("--objectdn={dn}"),
                    &format!("--sddl=(OD;;WP;{LOCKOUT_TIME};;{sid})"),
                ]);
            }
            Scenario::LockedWithoutWriteLockoutTime | Scenario::Locked => {
                if scenario == Scenario::LockedWithoutWriteLockoutTime {
                    let sid = dc.get("SERVICE_ACCOUNT_SID");
                    dc.samba_tool(&[
                        "dsacl",
                        "set",
                        &format!("--objectdn={dn}"),
                        &format!("--sddl=(OD;;WP;{LOCKOUT_TIME};;{sid})"),
                    ]);
                }
                dc.samba_tool(&[
                    "domain",
                    "passwordsettings",
                    "pso",
                    "apply",
                    &self.pso,
                    &sam,
                ]);
                for _ in 0..4 {
                    let _ = dc.binds(&dn, "Wrong-Password-1").await;
                }
                let locked = dc.binds(&dn, PASSWORD).await.expect_err("locked out");
                assert!(locked.contains("775"), "{locked}");
            }
            Scenario::Ordinary | Scenario::NoRights => {}
        }
        dc.upn(&sam)
    }

    fn remove(self) {
        self.dc
            .samba_tool(&["domain", "passwordsettings", "pso", "delete", &self.pso]);
        self.dc.remove_ou(&self.delegated);
        self.dc.remove_ou(&self.bare);
    }
}

fn set_admin_count(dc: &Dc, dn: &str) {
    dc.samba_python(
        r#"
import sys
import ldb
from samba.auth import system_session
from samba.param import LoadParm
from samba.samdb import SamDB

conf, dn = sys.argv[1], sys.argv[2]
lp = LoadParm()
lp.load(conf)
samdb = SamDB(url=lp.samdb_url(), session_info=system_session(lp), lp=lp)
m = ldb.Message()
m.dn = ldb.Dn(samdb, dn)
m["adminCount"] = ldb.MessageElement("1", ldb.FLAG_MOD_REPLACE, "adminCount")
samdb.modify(m)
"#,
        &[dn],
    );
}

/// The policy reply's (locked, reset, change, unlock).
async fn said(d: &Deployment, anchor: &Anchor) -> [String; 4] {
    let r = d
        .ask(
            Operation::GetPasswordPolicy,
            RequestBody::without_passwords(anchor.clone()),
        )
        .await;
    assert_eq!(r.outcome, outcome::SUCCESS, "{r:?}");
    assert!(
        r.details.iter().all(|(_, v)| !v.contains("DC=")),
        "no DN: {r:?}"
    );
    ["locked", "reset", "change", "unlock"].map(|k| {
        detail(&r, k)
            .unwrap_or_else(|| panic!("no {k}: {r:?}"))
            .to_owned()
    })
}

/// An operation's reply as a verdict: the password rules pass.
fn verdict(outcome_code: u16) -> String {
    match outcome_code {
        outcome::SUCCESS
        | outcome::PASSWORD_TOO_SHORT
        | outcome::FAILS_COMPLEXITY
        | outcome::IN_HISTORY
        | outcome::POLICY_REFUSED
        | outcome::CHANGED_TOO_RECENTLY => "ok".into(),
        other => outcome_name(other).into(),
    }
}

/// The embedded backend's answer for the same scenario: the contoso
/// sample, with ada made to match (barbara is the sample's locked user,
/// alan has no rights through blocked inheritance).
async fn embedded(scenario: Scenario) -> [String; 4] {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("contoso.json");
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/forests/contoso.json");
    let mut forest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sample).expect("sample")).expect("json");
    if scenario == Scenario::ProtectedWithoutChangePassword {
        // Protected accounts carry AdminSDHolder's DACL: the deny goes there.
        let svc = forest["service_account"].clone();
        forest["domains"][0]["admin_sd_holder"]
            .as_array_mut()
            .expect("admin_sd_holder")
            .insert(
                0,
                serde_json::json!({"type": "deny", "right": "change-password", "trustee": svc}),
            );
    }
    std::fs::write(&file, forest.to_string()).expect("write");
    let forest = EmbeddedDirectory::open("contoso", &file).expect("open");
    let dn = |cn: &str, ou: &str| format!("CN={cn},OU={ou},OU=Users,DC=contoso,DC=example");
    let ada = dn("Ada Lovelace", "Staff");
    let user = match scenario {
        Scenario::Ordinary => ada,
        Scenario::Disabled => {
            forest.set_enabled(&ada, false).expect("disable");
            ada
        }
        Scenario::Protected | Scenario::ProtectedWithoutChangePassword => dn("Contoso Admin", "IT"),
        Scenario::NoRightsAtAll => dn("Alan Turing", "Executives"),
        Scenario::NoRights => {
            // A user created in AD gets Change Password for Everyone from
            // the user class's default descriptor: the embedded forest
            // holds only what its file says, so the grant is added here.
            let alan = dn("Alan Turing", "Executives");
            forest
                .add_ace(
                    &alan,
                    Ace::allow(DirectoryRight::ChangePassword, "Everyone", false),
                )
                .expect("grant");
            alan
        }
        Scenario::WithoutWriteLockoutTime => {
            let svc = forest.service_account();
            forest
                .add_ace(
                    &ada,
                    Ace::deny(DirectoryRight::WriteLockoutTime, &svc, false),
                )
                .expect("deny");
            ada
        }
        Scenario::LockedWithoutWriteLockoutTime | Scenario::Locked => {
            if scenario == Scenario::LockedWithoutWriteLockoutTime {
                let svc = forest.service_account();
                forest
                    .add_ace(
                        &ada,
                        Ace::deny(DirectoryRight::WriteLockoutTime, &svc, false),
                    )
                    .expect("deny");
            }
            forest.lock(&ada).expect("lock");
            ada
        }
    };
    let account = forest.account_state(&user).expect("user").account;
    use directory::Directory;
    let e = forest.eligibility(&account).await.expect("eligibility");
    let details = writeback_agent::writeback::eligibility::details(&e);
    let value = |k: &str| {
        details
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    ["locked", "reset", "change", "unlock"].map(value)
}

#[tokio::test]
#[ignore = "needs Samba AD DCs: run scripts/test (see tests/tests/samba/main.rs)"]
async fn the_policy_reply_says_what_each_operation_then_answers_on_samba() {
    let lab = Lab::new();
    let scratch = tempfile::tempdir().expect("dir");
    let d = Deployment::start_with(scratch, &lab.dc.forest_section("test"), "").await;
    for scenario in ALL {
        // Each operation on a user of its own, asked about just before.
        let mut told = Vec::new();
        let mut done = Vec::new();
        let anchor = lab.user(scenario).await;
        told.push(said(&d, &anchor).await);
        let mut reset = RequestBody::reset(anchor, envelope::Password::new(NEW));
        reset.unlock = true;
        done.push(verdict(
            d.ask(Operation::ResetPassword, reset).await.outcome,
        ));

        let anchor = lab.user(scenario).await;
        told.push(said(&d, &anchor).await);
        done.push(verdict(d.change(anchor, PASSWORD, NEW).await.outcome));

        let anchor = lab.user(scenario).await;
        told.push(said(&d, &anchor).await);
        let unlock = RequestBody::without_passwords(anchor);
        done.push(verdict(
            d.ask(Operation::UnlockAccount, unlock).await.outcome,
        ));

        assert!(
            told.iter().all(|t| *t == told[0]),
            "{scenario:?}: users made alike are told alike: {told:?}"
        );
        let told = told.swap_remove(0);
        assert_eq!(told[1..], done[..], "{scenario:?}: told, then done");
        assert_eq!(
            told,
            embedded(scenario).await,
            "{scenario:?}: Samba and the embedded backend"
        );
        let expected_locked = matches!(
            scenario,
            Scenario::Locked | Scenario::LockedWithoutWriteLockoutTime
        );
        assert_eq!(told[0], expected_locked.to_string(), "{scenario:?}");
        if scenario == Scenario::WithoutWriteLockoutTime {
            // Reset Password alone resets an account that is not locked out.
            assert_eq!(told[1], "ok", "{scenario:?}: {told:?}");
            assert_eq!(told[3], "PERMISSION_DENIED", "{scenario:?}: {told:?}");
        }
    }
    d.stop().await;
    lab.remove();
}

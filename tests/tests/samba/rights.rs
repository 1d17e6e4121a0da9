//! The rights table (directory::eligibility::PasswordOperation::rights)
//! against Samba 4.17: for every operation the agent performs, with every
//! combination of flags, the rights it lists suffice (granted alone, the
//! operation succeeds) and each of them is needed (granted all but that
//! one, the operation is refused as PERMISSION_DENIED naming it). In
//! particular, setting pwdLastSet = 0 (must change) needs Write pwdLastSet
//! and nothing more, and an unlock (lockoutTime = 0) Write lockoutTime and
//! nothing more. The users here are not locked out, so a reset's unlock
//! flag writes nothing and needs no Write lockoutTime.
//!
//! Change Password is the exception to "needed" here: every user object's
//! own DACL grants it to Everyone, which a grant or deny on an OU cannot
//! take away; eligibility.rs shows it needed with a user whose own DACL
//! lacks it.

use std::collections::BTreeMap;

use directory::eligibility::PasswordOperation;
use directory::ldap::LdapDirectory;
use directory::{Directory, DirectoryRight, Refusal};

use crate::dc::{Dc, pw};
use crate::lab::{account, delegation_aces, unique};

/// An OU granting the service account exactly `rights` on its users, with
/// one user in it; returns (OU, user DN).
fn ou_granting(dc: &Dc, rights: &[DirectoryRight]) -> (String, String) {
    let ou = format!("OU={},{}", unique("Rights"), dc.get("BASE_DN"));
    dc.samba_tool(&["ou", "add", &ou]);
    let aces = delegation_aces(dc.get("SERVICE_ACCOUNT_SID"));
    let sddl: String = DirectoryRight::ALL
        .iter()
        .zip(&aces)
        .filter(|(r, _)| rights.contains(r))
        .map(|(_, ace)| ace.as_str())
        .collect();
    if !sddl.is_empty() {
        dc.samba_tool(&[
            "dsacl",
            "set",
            &format!("--objectdn={ou}"),
            &format!("--sddl={sddl}"),
        ]);
    }
    let user = dc.create_user(&ou, &unique("rt"), "Created-For-Rights-1!");
    (ou, user)
}

async fn perform(
    dir: &LdapDirectory,
    user: &str,
    op: PasswordOperation,
    n: usize,
) -> Result<(), Refusal> {
    let who = account(dir, user).await;
    match op {
        PasswordOperation::Reset {
            unlock,
            must_change,
        } => {
            dir.reset_password(
                &who,
                &pw(&format!("Rights-Reset-{n}-Ok!")),
                unlock,
                must_change,
            )
            .await
        }
        PasswordOperation::Unlock => dir.unlock(&who).await,
        PasswordOperation::Change => unreachable!("not checked here (module docs)"),
    }
}

#[tokio::test]
#[ignore = "needs Samba AD DCs: run scripts/test (see tests/tests/samba.rs)"]
async fn each_operation_needs_its_rights_and_no_more() {
    let dc = Dc::load("dc1");
    let dir = dc.directory("test");
    // One OU per set of rights granted, shared by the operations asking it.
    let mut ous: BTreeMap<Vec<DirectoryRight>, (String, String)> = BTreeMap::new();
    let mut n = 0;
    let mut failures = Vec::new();
    for op in PasswordOperation::PERFORMED {
        if op == PasswordOperation::Change {
            continue;
        }
        // These users are not locked out, and the unlock flag clears only a
        // lockout in force: a reset with it needs what one without needs.
        // (eligibility.rs shows Write lockoutTime needed for a locked user.)
        let needed = match op {
            PasswordOperation::Reset {
                unlock: true,
                must_change,
            } => PasswordOperation::Reset {
                unlock: false,
                must_change,
            }
            .rights(),
            _ => op.rights(),
        };
        let mut cases = vec![(needed.clone(), None)];
        for missing in &needed {
            let granted: Vec<_> = needed.iter().copied().filter(|r| r != missing).collect();
            cases.push((granted, Some(*missing)));
        }
        for (granted, missing) in cases {
            let (_, user) = ous
                .entry(granted.clone())
                .or_insert_with(|| ou_granting(&dc, &granted))
                .clone();
            n += 1;
            let got = perform(&dir, &user, op, n).await;
            let ok = match (missing, &got) {
                (None, Ok(())) => true,
                (Some(m), Err(Refusal::PermissionDenied { right, .. })) => *right == m,
                _ => false,
            };
            println!("{op:?} granted {granted:?}: {got:?}");
            if !ok {
                failures.push(format!(
                    "{op:?} with only {granted:?}: expected {}, got {got:?}",
                    missing.map_or("success".to_owned(), |m| format!("{m:?} denied"))
                ));
            }
        }
    }
    for (ou, _) in ous.values() {
        dc.remove_ou(ou);
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

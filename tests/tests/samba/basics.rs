//! The fixtures of `scripts/samba/setup-delegation`: reset, change,
//! policy refusals, lockout, delegation and two forests through the relay.

use directory::{Directory, DirectoryRight, Refusal};
use envelope::body::outcome;
use tests::deployment::{Deployment, detail};

use crate::dc::{Dc, pw};
use crate::lab::account;

#[tokio::test]
#[ignore = "needs Samba AD DCs: run scripts/test (see tests/tests/samba.rs)"]
async fn admin_reset_user_change_and_policy_failures_against_samba() {
    let dc = Dc::load("dc1");
    let dir = dc.directory("test");
    let staff1 = dc.get("STAFF1_DN").to_owned();
    let old = dc.get("STAFF1_PASSWORD").to_owned();

    // Import finds the fixtures, and the cursor makes the next import incremental.
    let all = dir.import(None).await.expect("import");
    assert!(
        all.accounts
            .iter()
            .any(|a| a.dn.eq_ignore_ascii_case(&staff1)),
        "staff1 imported"
    );
    let again = dir
        .import(Some(all.cursor))
        .await
        .expect("incremental import");
    assert!(
        again.accounts.len() < all.accounts.len(),
        "an incremental import reads only changes"
    );
    let staff = account(&dir, &staff1).await;

    // Admin reset: the new password binds, the old one no longer does.
    dir.reset_password(&staff, &pw("Reset-By-Agent-2024!"), false, false)
        .await
        .expect("reset");
    dc.binds(&staff1, "Reset-By-Agent-2024!")
        .await
        .expect("new password binds");
    let refused = dc
        .binds(&staff1, &old)
        .await
        .expect_err("old password refused");
    assert!(refused.contains("rc 49"), "{refused}");

    // Too short and complexity, each with its rule.
    assert_eq!(
        dir.reset_password(&staff, &pw("Ab1!"), false, false).await,
        Err(Refusal::TooShort { min_length: 7 })
    );
    match dir
        .reset_password(&staff, &pw("onlylowercase"), false, false)
        .await
    {
        Err(Refusal::FailsComplexity { missing, .. }) => assert!(!missing.is_empty()),
        other => panic!("expected complexity, got {other:?}"),
    }

    // User change with the right and the wrong current password, and history.
    assert_eq!(
        dir.change_password(
            &staff,
            &pw("Not-The-Password-1"),
            &pw("Changed-By-User-2024!")
        )
        .await,
        Err(Refusal::WrongCurrentPassword)
    );
    dir.change_password(
        &staff,
        &pw("Reset-By-Agent-2024!"),
        &pw("Changed-By-User-2024!"),
    )
    .await
    .expect("user change");
    dc.binds(&staff1, "Changed-By-User-2024!")
        .await
        .expect("changed password binds");
    assert_eq!(
        dir.change_password(
            &staff,
            &pw("Changed-By-User-2024!"),
            &pw("Reset-By-Agent-2024!")
        )
        .await,
        Err(Refusal::InHistory { history_length: 24 })
    );

    // Force change at next logon: the bind now reports "must change" (data 773).
    dir.reset_password(&staff, &pw("Temporary-Pass-2024!"), false, true)
        .await
        .expect("reset must change");
    let must = dc
        .binds(&staff1, "Temporary-Pass-2024!")
        .await
        .expect_err("must change");
    assert!(must.contains("773"), "{must}");

    // The policy as the portal shows it.
    let policy = dir
        .policy(&staff)
        .await
        .expect("policy")
        .known()
        .expect("the domain policy is readable");
    assert_eq!(policy.min_length, 7);
    assert!(policy.complexity);
}

#[tokio::test]
#[ignore = "needs Samba AD DCs: run scripts/test (see tests/tests/samba.rs)"]
async fn lockout_is_cleared_by_unlock_and_reset_with_unlock() {
    let dc = Dc::load("dc1");
    let dir = dc.directory("test");
    let user = dc.get("STAFF1_DN").to_owned();
    let staff = account(&dir, &user).await;
    dir.reset_password(&staff, &pw("Before-Lockout-2024!"), false, false)
        .await
        .expect("known password");
    dc.samba_tool(&[
        "domain",
        "passwordsettings",
        "set",
        "--account-lockout-threshold=3",
    ]);
    for _ in 0..4 {
        let _ = dc.binds(&user, "Wrong-Password-1").await;
    }
    let locked = dc
        .binds(&user, "Before-Lockout-2024!")
        .await
        .expect_err("locked out");
    assert!(
        locked.contains("775") || locked.contains("rc 49"),
        "{locked}"
    );
    assert_eq!(
        dir.change_password(
            &staff,
            &pw("Before-Lockout-2024!"),
            &pw("While-Locked-2024!")
        )
        .await,
        Err(Refusal::AccountLocked)
    );
    dir.unlock(&staff).await.expect("unlock");
    dc.binds(&user, "Before-Lockout-2024!")
        .await
        .expect("unlocked account binds");
    // Lock again, then a reset with unlock.
    for _ in 0..4 {
        let _ = dc.binds(&user, "Wrong-Password-1").await;
    }
    dir.reset_password(&staff, &pw("After-Unlock-2024!"), true, false)
        .await
        .expect("reset with unlock");
    dc.binds(&user, "After-Unlock-2024!")
        .await
        .expect("binds after reset with unlock");
    dc.samba_tool(&[
        "domain",
        "passwordsettings",
        "set",
        "--account-lockout-threshold=0",
    ]);
}

#[tokio::test]
#[ignore = "needs Samba AD DCs: run scripts/test (see tests/tests/samba.rs)"]
async fn delegation_and_blocked_inheritance_are_reported_then_fixed() {
    let dc = Dc::load("dc1");
    let dir = dc.directory("test");
    // No delegation at all on OU=Other.
    let other1 = account(&dir, dc.get("OTHER1_DN")).await;
    match dir
        .reset_password(&other1, &pw("Other-Reset-2024!"), false, false)
        .await
    {
        Err(Refusal::PermissionDenied {
            right,
            container,
            blocked_at,
            denied_at,
        }) => {
            assert_eq!(right, DirectoryRight::ResetPassword);
            assert!(
                container.eq_ignore_ascii_case(dc.get("OTHER_OU")),
                "{container}"
            );
            assert_eq!((blocked_at, denied_at), (None, None));
        }
        other => panic!("expected permission denied, got {other:?}"),
    }
    // Blocked inheritance on OU=Executives.
    let exec1 = dc.get("EXEC1_DN").to_owned();
    let exec1_account = account(&dir, &exec1).await;
    match dir
        .reset_password(&exec1_account, &pw("Exec-Reset-2024!"), false, false)
        .await
    {
        Err(Refusal::PermissionDenied {
            container,
            blocked_at,
            ..
        }) => {
            let exec = dc.get("EXECUTIVES_OU");
            assert!(container.eq_ignore_ascii_case(exec), "{container}");
            assert!(
                blocked_at.is_some_and(|b| b.eq_ignore_ascii_case(exec)),
                "blocked at Executives itself"
            );
        }
        other => panic!("expected permission denied, got {other:?}"),
    }
    // Doctor's view: the OU, its user count, inheritance blocked.
    let rights = dir.effective_rights().await.expect("rights");
    let exec = rights
        .iter()
        .find(|o| o.dn.eq_ignore_ascii_case(dc.get("EXECUTIVES_OU")))
        .expect("Executives listed");
    assert_eq!(exec.user_count, 1);
    assert!(exec.is_ou);
    assert!(
        exec.blocked_at
            .as_deref()
            .is_some_and(|b| b.eq_ignore_ascii_case(dc.get("EXECUTIVES_OU"))),
        "{exec:?}"
    );
    // Change Password is granted to Everyone on every user object by the
    // user class's default descriptor: not missing.
    assert_eq!(
        exec.missing,
        [
            DirectoryRight::ResetPassword,
            DirectoryRight::WriteLockoutTime,
            DirectoryRight::WritePwdLastSet
        ]
    );
    let staff = rights
        .iter()
        .find(|o| o.dn.eq_ignore_ascii_case(dc.get("STAFF_OU")))
        .expect("Staff listed");
    assert!(
        staff.missing.is_empty(),
        "Staff inherits the delegation: {staff:?}"
    );

    // The doctor command over LDAP names the OU, its user count and the fix.
    let scratch = tempfile::tempdir().expect("dir");
    let listen = tests::write_key(
        scratch.path(),
        "listen.key",
        &sas::Key::generate().expect("key"),
    );
    let config = scratch.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "broker = \"https://127.0.0.1:1\"\ntenant = \"contoso\"\nlisten_key_file = {listen:?}\n\n[[forests]]\nname = \"test\"\nkind = \"ldap\"\nurl = {:?}\nca_file = {:?}\nbind_dn = {:?}\nbind_password_file = {:?}\n",
            dc.get("LDAPS_URL"),
            dc.get("CA_FILE"),
            dc.get("SERVICE_ACCOUNT_DN"),
            dc.get("SERVICE_ACCOUNT_PASSWORD_FILE"),
        ),
    )
    .expect("config");
    let doctor = || {
        let out = std::process::Command::new(tests::bin("writeback-agent"))
            .arg("--config")
            .arg(&config)
            .arg("doctor")
            .output()
            .expect("doctor");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, text) = doctor();
    assert_eq!(code, Some(1), "{text}");
    let executives = dc.get("EXECUTIVES_OU").to_lowercase();
    let line = text
        .lines()
        .find(|l| l.to_lowercase().contains(&executives) && l.contains("(1 users)"))
        .unwrap_or_else(|| panic!("doctor lists Executives with its user count: {text}"));
    assert!(line.contains("inheritance is blocked here"), "{line}");
    assert!(text.contains("fix: dsacls"), "{text}");

    // The fix: grant on the OU itself, as doctor prints it (dsacls' Samba equivalent).
    let sid = dc.get("SERVICE_ACCOUNT_SID").to_owned();
    for ace in [
        format!(
            "(OA;CIIO;CR;00299570-246d-11d0-a768-00aa006e0529;bf967aba-0de6-11d0-a285-00aa003049e2;{sid})"
        ),
        format!(
            "(OA;CIIO;CR;ab721a53-1e2f-11d0-9819-00aa0040529b;bf967aba-0de6-11d0-a285-00aa003049e2;{sid})"
        ),
        format!(
            "(OA;CIIO;WP;28630ebf-41d5-11d1-a9c1-0000f80367c1;bf967aba-0de6-11d0-a285-00aa003049e2;{sid})"
        ),
        format!(
            "(OA;CIIO;WP;bf967a0a-0de6-11d0-a285-00aa003049e2;bf967aba-0de6-11d0-a285-00aa003049e2;{sid})"
        ),
    ] {
        dc.samba_tool(&[
            "dsacl",
            "set",
            &format!("--objectdn={}", dc.get("EXECUTIVES_OU")),
            &format!("--sddl={ace}"),
        ]);
    }
    dir.reset_password(&exec1_account, &pw("Exec-Reset-2024!"), false, false)
        .await
        .expect("reset after the fix");
    dc.binds(&exec1, "Exec-Reset-2024!").await.expect("binds");
    let rights = dir.effective_rights().await.expect("rights");
    let exec = rights
        .iter()
        .find(|o| o.dn.eq_ignore_ascii_case(dc.get("EXECUTIVES_OU")))
        .expect("listed");
    assert!(exec.missing.is_empty(), "{exec:?}");
    let (_, text) = doctor();
    assert!(
        !text
            .to_lowercase()
            .contains(&format!("{executives} (1 users)")),
        "Executives is no longer listed once fixed: {text}"
    );
}

#[tokio::test]
#[ignore = "needs Samba AD DCs: run scripts/test (see tests/tests/samba.rs)"]
async fn two_forests_end_to_end_through_the_relay() {
    let dc1 = Dc::load("dc1");
    let dc2 = Dc::load("dc2");
    let dir = tempfile::tempdir().expect("dir");
    let mut sections = String::new();
    for (name, dc) in [("test", &dc1), ("fabrikam", &dc2)] {
        sections.push_str(&format!(
            "\n[[forests]]\nname = {name:?}\nkind = \"ldap\"\nurl = {:?}\nca_file = {:?}\nbind_dn = {:?}\nbind_password_file = {:?}\nbase_dn = {:?}\n",
            dc.get("LDAPS_URL"),
            dc.get("CA_FILE"),
            dc.get("SERVICE_ACCOUNT_DN"),
            dc.get("SERVICE_ACCOUNT_PASSWORD_FILE"),
            dc.get("BASE_DN"),
        ));
    }
    let d = Deployment::start_with(dir, &sections, "").await;
    for dc in [&dc1, &dc2] {
        let user = dc.get("STAFF1_USER");
        let upn = format!("{user}@{}", dc.get("DNS_DOMAIN").to_lowercase());
        let anchor = envelope::Anchor::UserPrincipalName(upn.clone());
        let weak = d.reset(anchor.clone(), "short").await;
        assert_eq!(weak.outcome, outcome::PASSWORD_TOO_SHORT, "{upn}: {weak:?}");
        assert_eq!(detail(&weak, "min_length"), Some("7"));
        let good = d.reset(anchor, "Through-The-Relay-2024!").await;
        assert_eq!(good.outcome, outcome::SUCCESS, "{upn}: {good:?}");
        dc.binds(dc.get("STAFF1_DN"), "Through-The-Relay-2024!")
            .await
            .expect("the reset reached the right forest");
    }
    d.stop().await;
}

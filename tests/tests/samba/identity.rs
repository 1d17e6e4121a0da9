//! Which account the agent acts on and what state it is in, as AD sees
//! them: moved and deleted users, a lockout that has expired, and what a
//! directory failure tells the user. Each test works in an OU of its own
//! (the DCs are shared), with the write-back rights delegated on it.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use directory::Directory;
use envelope::body::outcome;
use envelope::{Anchor, RequestBody};
use proto::pb::Operation;
use tests::deployment::{Deployment, detail};

use crate::dc::Dc;
use crate::lab::{account, unique};

/// The agent, with dc1 as forest "test" bound as the service account. The
/// periodic import is an hour away: only a miss (or nothing) imports.
async fn agent(dc: &Dc) -> Deployment {
    let section = dc.forest_section_as(
        "test",
        dc.get("SERVICE_ACCOUNT_DN"),
        dc.get("SERVICE_ACCOUNT_PASSWORD_FILE"),
    );
    let dir = tempfile::tempdir().expect("dir");
    Deployment::start_with(dir, &section, "import_interval = \"1h\"").await
}

#[tokio::test]
#[ignore = "needs Samba AD DCs: run scripts/test (see tests/tests/samba.rs)"]
async fn a_moved_user_is_reset_before_and_after_the_next_import() {
    let dc = Dc::load("dc1");
    let ou = dc.own_ou("Identity-");
    let dest = format!("OU=Moved,{ou}");
    dc.samba_tool(&["ou", "add", &dest]);
    let sam = unique("idm");
    let dn = dc.create_user(&ou, &sam, "Created-Pass-2024!");
    let guid = account(&dc.directory("test"), &dn).await.object_guid;
    let d = agent(&dc).await;

    // The connector space holds the account at its first DN.
    let r = d.reset(dc.upn(&sam), "Before-Move-2024!").await;
    assert_eq!(r.outcome, outcome::SUCCESS, "{r:?}");

    dc.samba_tool(&["user", "move", &sam, &dest]);
    let moved = format!("CN={sam},{dest}");
    let r = d.reset(dc.upn(&sam), "Moved-Before-Import-1!").await;
    assert_eq!(r.outcome, outcome::SUCCESS, "before the import: {r:?}");
    dc.binds(&moved, "Moved-Before-Import-1!")
        .await
        .expect("the reset reached the moved account");

    // A user the agent has not seen yet: the miss runs the incremental
    // import, which reads the moved account at its new DN.
    let other = unique("idn");
    dc.create_user(&ou, &other, "Other-Pass-2024!");
    let r = d.reset(dc.upn(&other), "Triggers-Import-2024!").await;
    assert_eq!(r.outcome, outcome::SUCCESS, "{r:?}");

    for (anchor, password) in [
        (dc.upn(&sam), "Moved-After-Import-2!"),
        (
            Anchor::SourceAnchor(STANDARD.encode(guid)),
            "By-Source-Anchor-3!",
        ),
    ] {
        let r = d.reset(anchor, password).await;
        assert_eq!(r.outcome, outcome::SUCCESS, "after the import: {r:?}");
        dc.binds(&moved, password)
            .await
            .expect("the reset reached the moved account");
    }
    d.stop().await;
    dc.remove_ou(&ou);
}

#[tokio::test]
#[ignore = "needs Samba AD DCs: run scripts/test (see tests/tests/samba.rs)"]
async fn a_deleted_user_is_not_found_and_a_recreated_one_is_reset() {
    let dc = Dc::load("dc1");
    let ou = dc.own_ou("Identity-");
    let sam = unique("idd");
    let dn = dc.create_user(&ou, &sam, "Created-Pass-2024!");
    let d = agent(&dc).await;
    let r = d.reset(dc.upn(&sam), "Before-Delete-2024!").await;
    assert_eq!(r.outcome, outcome::SUCCESS, "{r:?}");

    // What an import can see of the deletion: the tombstone, for an account
    // that may list CN=Deleted Objects (the administrator; a delegated
    // service account by default may not, and finds the deletion on use).
    let admin = dc.admin_directory("test");
    let guid = account(&admin, &dn).await.object_guid;
    let cursor = admin.import(None).await.expect("import").cursor;
    dc.samba_tool(&["user", "delete", &sam]);
    let after = admin
        .import(Some(cursor))
        .await
        .expect("incremental import");
    assert!(
        after.deleted.contains(&guid),
        "the tombstone is reported: {:?}",
        after.deleted
    );

    let r = d.reset(dc.upn(&sam), "After-Delete-2024!").await;
    assert_eq!(r.outcome, outcome::USER_NOT_FOUND, "{r:?}");
    assert!(dc.binds(&dn, "After-Delete-2024!").await.is_err());

    // The same name again is another object (a new objectGUID): the anchor
    // now names it, and only it.
    dc.create_user(&ou, &sam, "Recreated-Pass-2024!");
    let r = d.reset(dc.upn(&sam), "Recreated-Reset-2024!").await;
    assert_eq!(r.outcome, outcome::SUCCESS, "{r:?}");
    dc.binds(&dn, "Recreated-Reset-2024!")
        .await
        .expect("the reset reached the new account");
    d.stop().await;
    dc.remove_ou(&ou);
}

#[tokio::test]
#[ignore = "needs Samba AD DCs: run scripts/test (see tests/tests/samba.rs)"]
async fn an_expired_lockout_no_longer_refuses_a_change_while_a_current_one_does() {
    let dc = Dc::load("dc1");
    let ou = dc.own_ou("Identity-");
    let sam = unique("idl");
    let dn = dc.create_user(&ou, &sam, "Before-Lockout-2024!");
    // A PSO of this test's own, on this user only: the domain's lockout
    // settings stay as they are. One minute is the shortest lockout
    // duration samba-tool accepts (it counts whole minutes).
    let pso = unique("IdPso");
    dc.samba_tool(&[
        "domain",
        "passwordsettings",
        "pso",
        "create",
        &pso,
        "1",
        "--account-lockout-threshold=3",
        "--account-lockout-duration=1",
        "--reset-account-lockout-after=1",
    ]);
    dc.samba_tool(&["domain", "passwordsettings", "pso", "apply", &pso, &sam]);
    let d = agent(&dc).await;

    for _ in 0..4 {
        let _ = dc.binds(&dn, "Wrong-Password-1").await;
    }
    let locked = dc
        .binds(&dn, "Before-Lockout-2024!")
        .await
        .expect_err("locked out");
    assert!(locked.contains("775"), "{locked}");
    let r = d
        .change(dc.upn(&sam), "Before-Lockout-2024!", "During-Lockout-2024!")
        .await;
    assert_eq!(r.outcome, outcome::ACCOUNT_LOCKED, "{r:?}");
    // The policy reply said so before any password was typed.
    let ask = || {
        d.ask(
            Operation::GetPasswordPolicy,
            RequestBody::without_passwords(dc.upn(&sam)),
        )
    };
    let r = ask().await;
    assert_eq!(
        (detail(&r, "locked"), detail(&r, "change")),
        (Some("true"), Some("ACCOUNT_LOCKED")),
        "{r:?}"
    );

    // Wait the lockout out without a logon (a successful one would clear
    // lockoutTime and hide what is tested): lockoutTime stays set, and AD
    // no longer computes the account as locked.
    tokio::time::sleep(Duration::from_secs(65)).await;
    let state = dc
        .admin_read(&dn, &["lockoutTime", "msDS-User-Account-Control-Computed"])
        .await;
    let value = |k: &str| -> u64 {
        state
            .get(k)
            .and_then(|v| v.first())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    assert_ne!(value("lockoutTime"), 0, "lockoutTime stays set: {state:?}");
    assert_eq!(
        value("msDS-User-Account-Control-Computed") & 0x10,
        0,
        "{state:?}"
    );

    let r = ask().await;
    assert_eq!(
        (detail(&r, "locked"), detail(&r, "change")),
        (Some("false"), Some("ok")),
        "an expired lockout is not locked: {r:?}"
    );
    let r = d
        .change(dc.upn(&sam), "Before-Lockout-2024!", "After-Lockout-2024!")
        .await;
    assert_eq!(r.outcome, outcome::SUCCESS, "{r:?}");
    dc.binds(&dn, "After-Lockout-2024!")
        .await
        .expect("the changed password binds");
    d.stop().await;
    dc.samba_tool(&["domain", "passwordsettings", "pso", "delete", &pso]);
    dc.remove_ou(&ou);
}

#[tokio::test]
#[ignore = "needs Samba AD DCs: run scripts/test (see tests/tests/samba.rs)"]
async fn a_directory_failure_reaches_the_event_log_not_the_reply() {
    let dc = Dc::load("dc1");
    let ou = dc.own_ou("Identity-");
    // The forest is bound as an account of this test's own, whose password
    // then changes under the running agent (the shared service account's
    // must not).
    let binder = unique("idb");
    let binder_dn = dc.create_user(&ou, &binder, "Binder-Pass-2024!");
    let sam = unique("idu");
    let dn = dc.create_user(&ou, &sam, "Target-Pass-2024!");
    let dir = tempfile::tempdir().expect("dir");
    let password_file = dir.path().join("binder-password");
    std::fs::write(&password_file, "Binder-Pass-2024!").expect("password file");
    let section = dc.forest_section_as("test", &binder_dn, password_file.to_str().expect("utf-8"));
    let d = Deployment::start_with(dir, &section, "import_interval = \"1h\"").await;

    dc.samba_tool(&[
        "user",
        "setpassword",
        &binder,
        "--newpassword=Binder-Changed-2024!",
    ]);
    let r = d.reset(dc.upn(&sam), "Never-Applied-2024!").await;
    assert_eq!(r.outcome, outcome::DIRECTORY_UNAVAILABLE, "{r:?}");
    assert!(r.details.is_empty(), "{r:?}");
    let lower = r.message.to_lowercase();
    for leak in [
        "cn=", "ou=", "dc=", &binder, "result", "49", "52e", "80090308", "dsid", "source4", ".c:",
    ] {
        assert!(!lower.contains(leak), "{leak:?} reached the reply: {r:?}");
    }
    // The event log has it all, for the administrator.
    let events = d.events();
    let detail = events
        .iter()
        .filter(|e| e["outcome"] == "DIRECTORY_UNAVAILABLE")
        .filter_map(|e| e["message"].as_str())
        .find(|m| m.to_lowercase().contains(&binder_dn.to_lowercase()))
        .unwrap_or_else(|| panic!("an event names the bind DN: {events:?}"));
    assert!(detail.contains("49"), "{detail}");

    // Nothing changed in AD.
    assert!(dc.binds(&dn, "Never-Applied-2024!").await.is_err());
    dc.binds(&dn, "Target-Pass-2024!")
        .await
        .expect("the old password still binds");
    d.stop().await;
    dc.remove_ou(&ou);
}

#[tokio::test]
#[ignore = "needs Samba AD DCs: run scripts/test (see tests/tests/samba.rs)"]
async fn an_expired_account_is_reset_and_changed_as_ad_allows() {
    // accountExpires refuses logons (data 701), not password writes: AD and
    // Samba accept a reset and a change, so the agent must not refuse them.
    let dc = Dc::load("dc1");
    let ou = dc.own_ou("Identity-");
    let sam = unique("ide");
    let dn = dc.create_user(&ou, &sam, "Before-Expiry-2024!");
    dc.samba_tool(&["user", "setexpiry", &sam, "--days=0"]);
    let d = agent(&dc).await;
    let expired = dc
        .binds(&dn, "Before-Expiry-2024!")
        .await
        .expect_err("an expired account does not bind");
    assert!(expired.contains("701"), "{expired}");

    let r = d.reset(dc.upn(&sam), "Reset-While-Expired-1!").await;
    assert_eq!(r.outcome, outcome::SUCCESS, "{r:?}");
    let r = d
        .change(
            dc.upn(&sam),
            "Reset-While-Expired-1!",
            "Changed-While-Expired-2!",
        )
        .await;
    assert_eq!(r.outcome, outcome::SUCCESS, "{r:?}");

    // The new password is the one AD holds: it binds once the expiry is lifted.
    dc.samba_tool(&["user", "setexpiry", &sam, "--noexpiry"]);
    dc.binds(&dn, "Changed-While-Expired-2!")
        .await
        .expect("the changed password binds");
    d.stop().await;
    dc.remove_ou(&ou);
}

//! Eligibility against the operations themselves: for each scenario, what
//! [`Directory::eligibility`] says each operation would answer is what the
//! operation, run on a fresh copy of the same forest, then answers (the
//! password rules aside).

use super::*;
use crate::Eligibility;

/// A new password every sample policy accepts (the PSO's 14 characters
/// included) and no sample user's name is in.
const NEW: &str = "Zq7-Unrelated-Passphrase-2026";

/// An operation's answer as eligibility can know it: the password rules
/// pass, and a permission refusal is the right it names.
fn verdict(r: Result<(), Refusal>) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err(r) if r.is_policy_rule() => "ok".into(),
        Err(Refusal::PermissionDenied { right, .. }) => format!("denied {}", right.as_str()),
        Err(r) => format!("{r:?}"),
    }
}

/// (reset with unlock, change, unlock) as eligibility says.
fn said(e: &Eligibility) -> [String; 3] {
    [
        verdict(e.reset(true, false)),
        verdict(e.change()),
        verdict(e.unlock()),
    ]
}

/// Checks that eligibility and the operations agree for the user at `dn`
/// whose password is `current`, each operation on a fresh `make()`; returns
/// the eligibility and the verdicts.
async fn agree(make: &dyn Fn() -> Fixture, dn: &str, current: &str) -> (Eligibility, [String; 3]) {
    let fx = make();
    let e = fx.dir.eligibility(&acct(&fx.dir, dn)).await.unwrap();
    let fx = make();
    let reset = fx
        .dir
        .reset_password(&acct(&fx.dir, dn), &pw(NEW), true, false)
        .await;
    let fx = make();
    let change = fx
        .dir
        .change_password(&acct(&fx.dir, dn), &pw(current), &pw(NEW))
        .await;
    let fx = make();
    let unlock = fx.dir.unlock(&acct(&fx.dir, dn)).await;
    let done = [verdict(reset), verdict(change), verdict(unlock)];
    assert_eq!(said(&e), done, "{dn}: eligibility {e:?}");
    (e, done)
}

fn strs(v: [&str; 3]) -> [String; 3] {
    v.map(str::to_owned)
}

#[tokio::test]
async fn every_contoso_user_is_eligible_for_what_the_operations_then_do() {
    let make = || sample("contoso");
    let protected = strs(["ProtectedAccount", "ok", "ProtectedAccount"]);
    let cases: [(&str, [String; 3]); 10] = [
        (ADA, strs(["ok", "ok", "ok"])),
        (GRACE, strs(["ok", "ok", "ok"])),
        (
            ALAN,
            strs([
                "denied Reset Password",
                "denied Change Password",
                "denied Write lockoutTime",
            ]),
        ),
        (EDSGER, strs(["AccountDisabled", "AccountDisabled", "ok"])),
        (BARBARA, strs(["ok", "AccountLocked", "ok"])),
        // Minimum age is a password rule: left to the change itself.
        (KATHERINE, strs(["ok", "ok", "ok"])),
        (CHARLES, strs(["denied Reset Password", "ok", "ok"])),
        (LINUS, strs(["ok", "ok", "ok"])),
        (ADMIN, protected),
        (TIM, strs(["ok", "ok", "ok"])),
    ];
    for (dn, expected) in cases {
        let current = CONTOSO_PASSWORDS
            .iter()
            .find(|(d, _)| *d == dn)
            .map(|(_, p)| *p)
            .unwrap();
        let (e, done) = agree(&make, dn, current).await;
        assert_eq!(done, expected, "{dn}");
        assert_eq!(e.locked, dn == BARBARA, "{dn}");
        assert_eq!(e.enabled, dn != EDSGER, "{dn}");
        assert_eq!(e.protected, dn == ADMIN, "{dn}");
    }
}

#[tokio::test]
async fn missing_rights_and_lockouts_agree_with_the_operations() {
    let x = |aces: Value, locked: bool| {
        move || {
            let fx = small_forest(aces.clone(), |_| {});
            if locked {
                fx.dir.lock(X_ADA).unwrap();
            }
            fx
        }
    };
    let all = |rights: &[&str]| -> Value {
        Value::Array(
            rights
                .iter()
                .map(|r| ace("allow", r, X_SVC, true))
                .collect(),
        )
    };
    let every = [
        "reset-password",
        "change-password",
        "write-lockout-time",
        "write-pwd-last-set",
    ];
    // No Reset Password.
    let (e, done) = agree(&x(all(&every[1..]), false), X_ADA, "Start-Passw0rd").await;
    assert_eq!(done, strs(["denied Reset Password", "ok", "ok"]));
    assert!(!e.locked && e.container == X_PEOPLE);
    // Locked, without Write lockoutTime: the reset (with unlock) and the
    // unlock are refused, the change by the lockout.
    let rights = all(&["reset-password", "change-password", "write-pwd-last-set"]);
    let (e, done) = agree(&x(rights.clone(), true), X_ADA, "Start-Passw0rd").await;
    assert!(e.locked);
    assert_eq!(
        done,
        strs([
            "denied Write lockoutTime",
            "AccountLocked",
            "denied Write lockoutTime"
        ])
    );
    // Not locked: the reset's unlock flag clears nothing and needs no
    // Write lockoutTime (Reset Password alone is a common delegation).
    let (e, done) = agree(&x(rights, false), X_ADA, "Start-Passw0rd").await;
    assert!(!e.locked);
    assert_eq!(done, strs(["ok", "ok", "denied Write lockoutTime"]));
    // Locked, with Write lockoutTime.
    let (e, done) = agree(&x(all(&every), true), X_ADA, "Start-Passw0rd").await;
    assert!(e.locked);
    assert_eq!(done, strs(["ok", "AccountLocked", "ok"]));
    // Nothing at all, and an explicit deny on the user object.
    let (_, done) = agree(&x(json!([]), false), X_ADA, "Start-Passw0rd").await;
    assert_eq!(
        done,
        strs([
            "denied Reset Password",
            "denied Change Password",
            "denied Write lockoutTime"
        ])
    );
    let deny_on_user = || {
        small_forest(all(&every), |f| {
            f["users"][1]["aces"] = json!([ace("deny", "write-lockout-time", X_SVC, false)]);
        })
    };
    // Not locked: only the unlock needs the denied right.
    let (_, done) = agree(&deny_on_user, X_ADA, "Start-Passw0rd").await;
    assert_eq!(done, strs(["ok", "ok", "denied Write lockoutTime"]));
}

#[tokio::test]
async fn protected_and_disabled_accounts_agree_with_the_operations() {
    // AdminSDHolder without Change Password: even a change is refused.
    let bare = || {
        small_forest(json!([ace("allow", "generic-all", X_SVC, true)]), |f| {
            f["users"][1]["admin_count"] = json!(1);
        })
    };
    let (e, done) = agree(&bare, X_ADA, "Start-Passw0rd").await;
    assert!(e.protected && e.rights.is_empty());
    assert_eq!(
        done,
        strs(["ProtectedAccount", "ProtectedAccount", "ProtectedAccount"])
    );
    // Disabled and locked: disabled decides a reset and a change; an
    // unlock goes ahead.
    let disabled = || {
        let fx = small_forest(json!([ace("allow", "generic-all", X_SVC, true)]), |f| {
            f["users"][1]["enabled"] = json!(false);
        });
        fx.dir.lock(X_ADA).unwrap();
        fx
    };
    let (e, done) = agree(&disabled, X_ADA, "Start-Passw0rd").await;
    assert!(e.locked && !e.enabled);
    assert_eq!(done, strs(["AccountDisabled", "AccountDisabled", "ok"]));
}

#[tokio::test]
async fn an_expired_lockout_is_not_locked_and_a_deleted_account_is_not_found() {
    let fx = small_forest(json!([ace("allow", "generic-all", X_SVC, true)]), |_| {});
    let ada = acct(&fx.dir, X_ADA);
    fx.dir.lock(X_ADA).unwrap();
    assert!(fx.dir.eligibility(&ada).await.unwrap().locked);
    fx.advance(30 * 60 * 1000);
    let e = fx.dir.eligibility(&ada).await.unwrap();
    assert!(!e.locked);
    assert_eq!(e.change(), Ok(()));
    fx.dir.delete_user(X_ADA).unwrap();
    assert_eq!(fx.dir.eligibility(&ada).await, Err(Refusal::UserNotFound));
}

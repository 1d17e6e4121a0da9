//! The backend through its public API, against the sample forests and
//! small forests built here.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use serde_json::{Value, json};
use tempfile::TempDir;

use super::*;
use crate::{Category, Contained};

mod eligibility;
mod identity;

/// 2026-06-01T00:00:00Z.
const T0: u64 = 1_780_272_000_000;
const DAY_MS: u64 = 86_400_000;

const D: &str = "DC=contoso,DC=example";
const SVC: &str = "CN=svc-writeback,OU=Service Accounts,DC=contoso,DC=example";
const STAFF: &str = "OU=Staff,OU=Users,DC=contoso,DC=example";
const EXEC: &str = "OU=Executives,OU=Users,DC=contoso,DC=example";
const ADA: &str = "CN=Ada Lovelace,OU=Staff,OU=Users,DC=contoso,DC=example";
const GRACE: &str = "CN=Grace Hopper,OU=Staff,OU=Users,DC=contoso,DC=example";
const ALAN: &str = "CN=Alan Turing,OU=Executives,OU=Users,DC=contoso,DC=example";
const EDSGER: &str = "CN=Edsger Dijkstra,OU=Staff,OU=Users,DC=contoso,DC=example";
const BARBARA: &str = "CN=Barbara Liskov,OU=Staff,OU=Users,DC=contoso,DC=example";
const KATHERINE: &str = "CN=Katherine Johnson,OU=Staff,OU=Users,DC=contoso,DC=example";
const CHARLES: &str = "CN=Charles Babbage,OU=Staff,OU=Users,DC=contoso,DC=example";
const LINUS: &str = "CN=Linus Torvalds,OU=IT,OU=Users,DC=contoso,DC=example";
const ADMIN: &str = "CN=Contoso Admin,OU=IT,OU=Users,DC=contoso,DC=example";
const TIM: &str = "CN=Tim Berners-Lee,OU=Users,DC=emea,DC=contoso,DC=example";

fn pw(s: &str) -> Password {
    Password::new(s)
}

/// The account at `dn` as the connector space would hand it over; a DN
/// that names no user gets an objectGUID no user has.
fn acct(dir: &EmbeddedDirectory, dn: &str) -> Account {
    dir.account_state(dn)
        .map(|s| s.account)
        .unwrap_or_else(|| Account {
            forest: "nowhere".into(),
            dn: dn.into(),
            sam_account_name: String::new(),
            user_principal_name: String::new(),
            object_guid: [0xee; 16],
            display_name: String::new(),
            enabled: true,
            usn_changed: 0,
        })
}

fn samples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/forests")
}

struct Fixture {
    _dir: TempDir,
    forest: String,
    path: PathBuf,
    dir: EmbeddedDirectory,
    now: Arc<AtomicU64>,
}

impl Fixture {
    fn reopen(&self) -> EmbeddedDirectory {
        let now = self.now.clone();
        EmbeddedDirectory::open_with_clock(
            &self.forest,
            &self.path,
            Arc::new(move || now.load(Ordering::SeqCst)),
        )
        .unwrap()
    }

    fn advance(&self, ms: u64) {
        self.now.fetch_add(ms, Ordering::SeqCst);
    }
}

fn open_text(name: &str, text: &str) -> Fixture {
    let tmp = TempDir::new().unwrap();
    let path = tmp.path().join(name);
    std::fs::write(&path, text).unwrap();
    let now = Arc::new(AtomicU64::new(T0));
    let clock_now = now.clone();
    let forest = name.trim_end_matches(".json").to_owned();
    let dir = EmbeddedDirectory::open_with_clock(
        &forest,
        &path,
        Arc::new(move || clock_now.load(Ordering::SeqCst)),
    )
    .unwrap();
    Fixture {
        _dir: tmp,
        forest,
        path,
        dir,
        now,
    }
}

fn sample(name: &str) -> Fixture {
    let text = std::fs::read_to_string(samples_dir().join(format!("{name}.json"))).unwrap();
    open_text(&format!("{name}.json"), &text)
}

fn denied(
    right: DirectoryRight,
    container: &str,
    blocked_at: Option<&str>,
    denied_at: Option<&str>,
) -> Refusal {
    Refusal::PermissionDenied {
        right,
        container: container.to_owned(),
        blocked_at: blocked_at.map(str::to_owned),
        denied_at: denied_at.map(str::to_owned),
    }
}

// ---------------------------------------------------------------- samples

/// Every sample user and the password its file documents.
const CONTOSO_PASSWORDS: [(&str, &str); 11] = [
    (ADA, "Analytical-Engine-1843"),
    (GRACE, "COBOL-Compiler-1959"),
    (ALAN, "Enigma-Bombe-1940"),
    (EDSGER, "Shortest-Path-1956"),
    (BARBARA, "Substitution-1987"),
    (KATHERINE, "Orbital-Mechanics-1962"),
    (CHARLES, "Difference-Engine-1822"),
    (LINUS, "Kernel-Maintainer-1991"),
    (ADMIN, "Apollo-Guidance-1969"),
    (SVC, "Relay-Agent-Secret-2026!"),
    (TIM, "World-Wide-Web-1989"),
];

const FABRIKAM_PASSWORDS: [(&str, &str); 4] = [
    (
        "CN=Ada Lovelace,OU=People,DC=fabrikam,DC=example",
        "Countess-Of-Ockham-1815",
    ),
    (
        "CN=Grace Hopper,OU=People,DC=fabrikam,DC=example",
        "Harvard-Mark-I-1944",
    ),
    (
        "CN=Hedy Lamarr,OU=People,DC=fabrikam,DC=example",
        "Frequency-Hopping-1942",
    ),
    (
        "CN=svc-writeback,OU=Service Accounts,DC=fabrikam,DC=example",
        "Fabrikam-Relay-Agent-2026!",
    ),
];

#[tokio::test]
async fn both_sample_forests_parse_and_their_documented_passwords_bind() {
    for name in ["contoso", "fabrikam"] {
        let text = std::fs::read_to_string(samples_dir().join(format!("{name}.json"))).unwrap();
        parse(&text, T0).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let contoso = sample("contoso");
    assert_eq!(contoso.dir.service_account(), SVC);
    for (dn, password) in CONTOSO_PASSWORDS {
        assert!(contoso.dir.check_password(dn, &pw(password)), "{dn}");
        assert!(!contoso.dir.check_password(dn, &pw("wrong")), "{dn}");
        // Every sample password meets its own account's policy.
        let policy = contoso
            .dir
            .policy(&acct(&contoso.dir, dn))
            .await
            .unwrap()
            .known()
            .unwrap();
        let state = contoso.dir.account_state(dn).unwrap();
        rules::check_new_password(
            &policy,
            password,
            &state.account.sam_account_name,
            &state.account.display_name,
        )
        .unwrap_or_else(|r| panic!("{dn}: {r}"));
    }
    let fabrikam = sample("fabrikam");
    assert_eq!(
        fabrikam.dir.service_account(),
        "CN=svc-writeback,OU=Service Accounts,DC=fabrikam,DC=example"
    );
    for (dn, password) in FABRIKAM_PASSWORDS {
        assert!(fabrikam.dir.check_password(dn, &pw(password)), "{dn}");
    }

    // The documented collisions across the two forests.
    let Imported {
        accounts: c,
        cursor: _,
        ..
    } = contoso.dir.import(None).await.unwrap();
    let Imported {
        accounts: f,
        cursor: _,
        ..
    } = fabrikam.dir.import(None).await.unwrap();
    let c_ada = c.iter().find(|a| a.dn == ADA).unwrap();
    let c_grace = c.iter().find(|a| a.dn == GRACE).unwrap();
    let same_upn: Vec<_> = f
        .iter()
        .filter(|a| {
            a.user_principal_name
                .eq_ignore_ascii_case(&c_ada.user_principal_name)
        })
        .collect();
    assert_eq!(same_upn.len(), 1);
    assert_eq!(same_upn[0].sam_account_name, "alovelace");
    let same_guid: Vec<_> = f
        .iter()
        .filter(|a| a.object_guid == c_grace.object_guid)
        .collect();
    assert_eq!(same_guid.len(), 1);
    assert_eq!(same_guid[0].sam_account_name, "ghopper");
    assert!(
        c.iter().all(|a| a.forest == "contoso"),
        "the configured name"
    );
    assert!(f.iter().all(|a| a.forest == "fabrikam"));
}

// ---------------------------------------------------------------- reset

#[tokio::test]
async fn reset_sets_the_password_pwd_last_set_and_a_new_usn() {
    let fx = sample("contoso");
    let before = fx.dir.account_state(ADA).unwrap();
    fx.dir
        .reset_password(&acct(&fx.dir, ADA), &pw("Brand-New-Passw0rd"), false, false)
        .await
        .unwrap();
    assert!(fx.dir.check_password(ADA, &pw("Brand-New-Passw0rd")));
    assert!(!fx.dir.check_password(ADA, &pw("Analytical-Engine-1843")));
    let after = fx.dir.account_state(ADA).unwrap();
    assert_eq!(after.pwd_last_set_ms, T0);
    assert_eq!(after.account.usn_changed, 12_101);
    assert!(after.account.usn_changed > before.account.usn_changed);
    assert_eq!(after.passwords_kept, before.passwords_kept + 1);
    assert_eq!(after.ou, STAFF);

    // must_change: pwdLastSet = 0.
    fx.dir
        .reset_password(&acct(&fx.dir, ADA), &pw("Another-Passw0rd"), false, true)
        .await
        .unwrap();
    assert_eq!(fx.dir.account_state(ADA).unwrap().pwd_last_set_ms, 0);
}

#[tokio::test]
async fn reset_skips_history_and_minimum_age() {
    let fx = sample("contoso");
    // Katherine's password was set "now" (minimum age 1 day): a reset ignores it,
    // and may even set the current password again.
    fx.dir
        .reset_password(
            &acct(&fx.dir, KATHERINE),
            &pw("Orbital-Mechanics-1962"),
            false,
            false,
        )
        .await
        .unwrap();
    fx.dir
        .reset_password(
            &acct(&fx.dir, ADA),
            &pw("Bernoulli-Numbers-1843"),
            false,
            false,
        )
        .await
        .unwrap();
    assert!(fx.dir.check_password(ADA, &pw("Bernoulli-Numbers-1843")));
}

#[tokio::test]
async fn reset_of_a_locked_account_unlocks_only_when_asked() {
    let fx = sample("contoso");
    let locked = fx.dir.account_state(BARBARA).unwrap().lockout_time_ms;
    assert_ne!(locked, 0);
    fx.dir
        .reset_password(
            &acct(&fx.dir, BARBARA),
            &pw("Open-Closed-Rule-1"),
            false,
            false,
        )
        .await
        .unwrap();
    assert!(fx.dir.check_password(BARBARA, &pw("Open-Closed-Rule-1")));
    assert_eq!(
        fx.dir.account_state(BARBARA).unwrap().lockout_time_ms,
        locked
    );
    assert_eq!(
        fx.dir
            .change_password(
                &acct(&fx.dir, BARBARA),
                &pw("Open-Closed-Rule-1"),
                &pw("Open-Closed-Rule-2")
            )
            .await,
        Err(Refusal::AccountLocked)
    );
    fx.dir
        .reset_password(
            &acct(&fx.dir, BARBARA),
            &pw("Open-Closed-Rule-3"),
            true,
            false,
        )
        .await
        .unwrap();
    assert_eq!(fx.dir.account_state(BARBARA).unwrap().lockout_time_ms, 0);
}

#[tokio::test]
async fn reset_refusals_in_the_order_ad_checks_them() {
    let fx = sample("contoso");
    let good = pw("Quite-G00d-Password");
    let reset = |dn: &'static str, p: &'static str| {
        let d = fx.dir.clone();
        async move { d.reset_password(&acct(&d, dn), &pw(p), false, false).await }
    };
    assert!(matches!(
        fx.dir
            .reset_password(
                &acct(&fx.dir, "CN=Nobody,OU=Staff,OU=Users,DC=contoso,DC=example"),
                &good,
                false,
                false
            )
            .await,
        Err(Refusal::UserNotFound)
    ));
    // A group is not a user (its objectGUID names no user).
    assert!(matches!(
        fx.dir
            .reset_password(
                &acct(&fx.dir, "CN=IT Admins,OU=Groups,DC=contoso,DC=example"),
                &good,
                false,
                false
            )
            .await,
        Err(Refusal::UserNotFound)
    ));
    // Disabled comes first, even before policy.
    assert_eq!(reset(EDSGER, "x").await, Err(Refusal::AccountDisabled));
    assert_eq!(
        reset(ADMIN, "Quite-G00d-Password").await,
        Err(Refusal::ProtectedAccount)
    );
    // Permission before policy: a too-short password still gets PermissionDenied.
    assert_eq!(
        reset(ALAN, "x").await,
        Err(denied(
            DirectoryRight::ResetPassword,
            EXEC,
            Some(EXEC),
            None
        ))
    );
    assert_eq!(
        reset(CHARLES, "Quite-G00d-Password").await,
        Err(denied(
            DirectoryRight::ResetPassword,
            STAFF,
            None,
            Some(CHARLES)
        ))
    );
    assert_eq!(
        reset(ADA, "Sh0rt!").await,
        Err(Refusal::TooShort { min_length: 8 })
    );
    assert_eq!(
        reset(ADA, "alllowercase").await,
        Err(Refusal::FailsComplexity {
            missing: vec![Category::Uppercase, Category::Digit, Category::Symbol],
            contains: None
        })
    );
    assert_eq!(
        reset(ADA, "Lovelace-2026").await,
        Err(Refusal::FailsComplexity {
            missing: vec![],
            contains: Some(Contained::DisplayName("Lovelace".into()))
        })
    );
    assert_eq!(
        reset(ADA, "My-ADA-Pass-1").await,
        Err(Refusal::FailsComplexity {
            missing: vec![],
            contains: Some(Contained::AccountName("ada".into()))
        })
    );
    // The PSO of IT Admins (14) applies to Linus; the child domain's policy to Tim.
    assert_eq!(
        reset(LINUS, "Twelve-Chars1").await,
        Err(Refusal::TooShort { min_length: 14 })
    );
    assert_eq!(
        reset(TIM, "Nine-Ch1!").await,
        Err(Refusal::TooShort { min_length: 10 })
    );
    assert_eq!(
        reset(TIM, "Berners-2026!").await,
        Err(Refusal::FailsComplexity {
            missing: vec![],
            contains: Some(Contained::DisplayName("Berners".into()))
        })
    );
    // Nothing was changed by any refusal.
    assert!(fx.dir.check_password(ADA, &pw("Analytical-Engine-1843")));
    assert!(fx.dir.check_password(ALAN, &pw("Enigma-Bombe-1940")));
    let Imported { cursor, .. } = fx.dir.import(None).await.unwrap();
    assert_eq!(cursor, 12_100);
    // Other users reset fine.
    reset(GRACE, "Quite-G00d-Password").await.unwrap();
    reset(LINUS, "Fourteen-Chars-1").await.unwrap();
    reset(TIM, "Ten-Chars-1!").await.unwrap();
}

/// A one-domain forest: the service account, one OU with `ou_aces`, and Ada in it.
fn small_forest(ou_aces: Value, extra: impl FnOnce(&mut Value)) -> Fixture {
    let salt = b"0123456789abcdef";
    let mut forest = json!({
        "service_account": "CN=svc,OU=Svc,DC=x,DC=test",
        "highest_usn": 10,
        "domains": [{
            "dns_name": "x.test",
            "netbios_name": "X",
            "policy": {"min_length": 8, "complexity": true, "history_length": 2,
                       "min_age_secs": 0, "max_age_secs": 0},
            "admin_sd_holder": []
        }],
        "ous": [
            {"dn": "OU=Svc,DC=x,DC=test"},
            {"dn": "OU=Groups,DC=x,DC=test"},
            {"dn": "OU=People,DC=x,DC=test", "aces": ou_aces}
        ],
        "groups": [
            {"dn": "CN=Helpdesk,OU=Groups,DC=x,DC=test", "member_of": ["CN=Tier2,OU=Groups,DC=x,DC=test"]},
            {"dn": "CN=Tier2,OU=Groups,DC=x,DC=test"}
        ],
        "users": [
            {"dn": "CN=svc,OU=Svc,DC=x,DC=test", "sam_account_name": "svc",
             "user_principal_name": "svc@x.test", "object_guid": "00000000-0000-0000-0000-000000000001",
             "display_name": "svc", "enabled": true, "pwd_last_set": 1,
             "member_of": ["CN=Helpdesk,OU=Groups,DC=x,DC=test"],
             "passwords": [verifier::make_verifier("Svc-Passw0rd", salt)], "usn_changed": 1},
            {"dn": "CN=Ada,OU=People,DC=x,DC=test", "sam_account_name": "ada",
             "user_principal_name": "ada@x.test", "object_guid": "00000000-0000-0000-0000-000000000002",
             "display_name": "Ada Lovelace", "enabled": true, "pwd_last_set": 1,
             "passwords": [verifier::make_verifier("Start-Passw0rd", salt)], "usn_changed": 2}
        ]
    });
    extra(&mut forest);
    open_text("x.json", &serde_json::to_string_pretty(&forest).unwrap())
}

const X_ADA: &str = "CN=Ada,OU=People,DC=x,DC=test";
const X_PEOPLE: &str = "OU=People,DC=x,DC=test";
const X_SVC: &str = "CN=svc,OU=Svc,DC=x,DC=test";

fn ace(kind: &str, right: &str, trustee: &str, inheritable: bool) -> Value {
    json!({"type": kind, "right": right, "trustee": trustee, "inheritable": inheritable})
}

#[tokio::test]
async fn unlock_and_must_change_need_their_property_rights() {
    let p = pw("Fresh-Passw0rd");
    // The reset's unlock flag needs Write lockoutTime only for a lockout in
    // force (lockoutTime in Unix ms here).
    let now_ms = proto::time::unix_ms();
    let locked = small_forest(json!([ace("allow", "reset-password", X_SVC, true)]), |f| {
        f["users"][1]["lockout_time"] = json!(now_ms)
    });
    assert_eq!(
        locked
            .dir
            .reset_password(&acct(&locked.dir, X_ADA), &p, true, false)
            .await,
        Err(denied(
            DirectoryRight::WriteLockoutTime,
            X_PEOPLE,
            None,
            None
        ))
    );
    let fx = small_forest(json!([ace("allow", "reset-password", X_SVC, true)]), |_| {});
    assert_eq!(
        fx.dir
            .reset_password(&acct(&fx.dir, X_ADA), &p, false, true)
            .await,
        Err(denied(
            DirectoryRight::WritePwdLastSet,
            X_PEOPLE,
            None,
            None
        ))
    );
    assert_eq!(
        fx.dir.unlock(&acct(&fx.dir, X_ADA)).await,
        Err(denied(
            DirectoryRight::WriteLockoutTime,
            X_PEOPLE,
            None,
            None
        ))
    );
    assert_eq!(
        fx.dir
            .change_password(&acct(&fx.dir, X_ADA), &pw("Start-Passw0rd"), &p)
            .await,
        Err(denied(DirectoryRight::ChangePassword, X_PEOPLE, None, None))
    );
    fx.dir
        .reset_password(&acct(&fx.dir, X_ADA), &p, false, false)
        .await
        .unwrap();
    // Grants to a nested group count; so do the broad rights.
    fx.dir
        .add_ace(
            X_PEOPLE,
            Ace::allow(
                AceRight::WriteAllProperties,
                "CN=Tier2,OU=Groups,DC=x,DC=test",
                true,
            ),
        )
        .unwrap();
    fx.dir
        .reset_password(&acct(&fx.dir, X_ADA), &pw("Fresh-Passw0rd-2"), true, true)
        .await
        .unwrap();
}

#[tokio::test]
async fn deny_beats_allow_and_object_aces_beat_inherited_ones() {
    let fx = small_forest(
        json!([
            ace("allow", "generic-all", "Everyone", true),
            ace(
                "deny",
                "write-pwd-last-set",
                "CN=Helpdesk,OU=Groups,DC=x,DC=test",
                true
            )
        ]),
        |_| {},
    );
    let p = pw("Fresh-Passw0rd");
    assert_eq!(
        fx.dir
            .reset_password(&acct(&fx.dir, X_ADA), &p, false, true)
            .await,
        Err(denied(
            DirectoryRight::WritePwdLastSet,
            X_PEOPLE,
            None,
            Some(X_PEOPLE)
        ))
    );
    let rights = fx.dir.effective_rights().await.unwrap();
    let people = rights.iter().find(|o| o.dn == X_PEOPLE).unwrap();
    assert_eq!(people.missing, vec![DirectoryRight::WritePwdLastSet]);
    // An explicit allow on the user object comes before the inherited deny.
    fx.dir
        .add_ace(
            X_ADA,
            Ace::allow(DirectoryRight::WritePwdLastSet, X_SVC, false),
        )
        .unwrap();
    fx.dir
        .reset_password(&acct(&fx.dir, X_ADA), &p, false, true)
        .await
        .unwrap();
    // An explicit deny on the object beats the inherited allow.
    fx.dir
        .add_ace(
            X_ADA,
            Ace::deny(DirectoryRight::ResetPassword, X_SVC, false),
        )
        .unwrap();
    assert_eq!(
        fx.dir
            .reset_password(&acct(&fx.dir, X_ADA), &p, false, false)
            .await,
        Err(denied(
            DirectoryRight::ResetPassword,
            X_PEOPLE,
            None,
            Some(X_ADA)
        ))
    );
}

#[tokio::test]
async fn a_protected_user_object_receives_nothing_from_its_ou() {
    let fx = small_forest(json!([ace("allow", "generic-all", X_SVC, true)]), |_| {});
    fx.dir.set_inheritance(X_ADA, true).unwrap();
    assert_eq!(
        fx.dir
            .reset_password(&acct(&fx.dir, X_ADA), &pw("Fresh-Passw0rd"), false, false)
            .await,
        Err(denied(
            DirectoryRight::ResetPassword,
            X_PEOPLE,
            Some(X_ADA),
            None
        ))
    );
    fx.dir.set_inheritance(X_ADA, false).unwrap();
    fx.dir
        .reset_password(&acct(&fx.dir, X_ADA), &pw("Fresh-Passw0rd"), false, false)
        .await
        .unwrap();
}

// ---------------------------------------------------------------- change

#[tokio::test]
async fn change_succeeds_then_minimum_age_history_and_policy_apply() {
    let fx = sample("contoso");
    let current = pw("Analytical-Engine-1843");
    fx.dir
        .change_password(&acct(&fx.dir, ADA), &current, &pw("Punched-Cards-1804"))
        .await
        .unwrap();
    assert!(fx.dir.check_password(ADA, &pw("Punched-Cards-1804")));
    assert_eq!(fx.dir.account_state(ADA).unwrap().pwd_last_set_ms, T0);
    // Minimum age: one day from now.
    let current = pw("Punched-Cards-1804");
    assert_eq!(
        fx.dir
            .change_password(&acct(&fx.dir, ADA), &current, &pw("Jacquard-Loom-1804"))
            .await,
        Err(Refusal::ChangedTooRecently {
            allowed_after_unix_ms: T0 + DAY_MS
        })
    );
    fx.advance(DAY_MS);
    // History: the current password and the older ones are refused.
    for old in [
        "Punched-Cards-1804",
        "Analytical-Engine-1843",
        "Bernoulli-Numbers-1843",
    ] {
        assert_eq!(
            fx.dir
                .change_password(&acct(&fx.dir, ADA), &current, &pw(old))
                .await,
            Err(Refusal::InHistory { history_length: 24 }),
            "{old}"
        );
    }
    assert_eq!(
        fx.dir
            .change_password(&acct(&fx.dir, ADA), &current, &pw("Sh0rt!"))
            .await,
        Err(Refusal::TooShort { min_length: 8 })
    );
    assert_eq!(
        fx.dir
            .change_password(&acct(&fx.dir, ADA), &current, &pw("lovelace-lovelace"))
            .await,
        Err(Refusal::FailsComplexity {
            missing: vec![Category::Uppercase, Category::Digit],
            contains: Some(Contained::DisplayName("Lovelace".into()))
        })
    );
    fx.dir
        .change_password(&acct(&fx.dir, ADA), &current, &pw("Jacquard-Loom-1804"))
        .await
        .unwrap();
}

#[tokio::test]
async fn change_refusals_in_the_order_ad_checks_them() {
    let fx = sample("contoso");
    let new = pw("Quite-G00d-Password");
    let change = |dn: &'static str, current: &'static str| {
        let d = fx.dir.clone();
        let new = new.clone();
        async move { d.change_password(&acct(&d, dn), &pw(current), &new).await }
    };
    assert!(matches!(
        change("CN=Nobody,DC=contoso,DC=example", "x").await,
        Err(Refusal::UserNotFound)
    ));
    assert_eq!(
        change(EDSGER, "Shortest-Path-1956").await,
        Err(Refusal::AccountDisabled)
    );
    // Locked comes before the password check.
    assert_eq!(change(BARBARA, "wrong").await, Err(Refusal::AccountLocked));
    assert_eq!(
        change(ADA, "wrong").await,
        Err(Refusal::WrongCurrentPassword)
    );
    // The wrong password is reported before the minimum age.
    assert_eq!(
        change(KATHERINE, "wrong").await,
        Err(Refusal::WrongCurrentPassword)
    );
    assert_eq!(
        change(KATHERINE, "Orbital-Mechanics-1962").await,
        Err(Refusal::ChangedTooRecently {
            allowed_after_unix_ms: T0 + DAY_MS
        })
    );
    assert_eq!(
        change(ALAN, "Enigma-Bombe-1940").await,
        Err(denied(
            DirectoryRight::ChangePassword,
            EXEC,
            Some(EXEC),
            None
        ))
    );
    // Charles is denied Reset Password only.
    change(CHARLES, "Difference-Engine-1822").await.unwrap();
    // AdminSDHolder grants Change Password to Everyone (AD's default).
    change(ADMIN, "Apollo-Guidance-1969").await.unwrap();
    // A day later Katherine may change.
    fx.advance(DAY_MS);
    change(KATHERINE, "Orbital-Mechanics-1962").await.unwrap();
}

#[tokio::test]
async fn a_protected_account_without_change_password_on_admin_sd_holder_is_refused_as_protected() {
    let fx = small_forest(json!([ace("allow", "generic-all", X_SVC, true)]), |f| {
        f["users"][1]["admin_count"] = json!(1);
    });
    assert_eq!(
        fx.dir
            .change_password(
                &acct(&fx.dir, X_ADA),
                &pw("Start-Passw0rd"),
                &pw("Fresh-Passw0rd")
            )
            .await,
        Err(Refusal::ProtectedAccount)
    );
    assert_eq!(
        fx.dir.unlock(&acct(&fx.dir, X_ADA)).await,
        Err(Refusal::ProtectedAccount)
    );
}

#[tokio::test]
async fn history_length_bounds_what_is_remembered() {
    // history_length 2: the current and the previous password are refused,
    // the one before is allowed again.
    let fx = small_forest(json!([ace("allow", "generic-all", X_SVC, true)]), |_| {});
    let steps = ["Second-Passw0rd", "Third-Passw0rd"];
    let mut current = "Start-Passw0rd";
    for next in steps {
        fx.dir
            .change_password(&acct(&fx.dir, X_ADA), &pw(current), &pw(next))
            .await
            .unwrap();
        current = next;
    }
    assert_eq!(
        fx.dir
            .change_password(&acct(&fx.dir, X_ADA), &pw(current), &pw("Second-Passw0rd"))
            .await,
        Err(Refusal::InHistory { history_length: 2 })
    );
    fx.dir
        .change_password(&acct(&fx.dir, X_ADA), &pw(current), &pw("Start-Passw0rd"))
        .await
        .unwrap();
}

#[tokio::test]
async fn at_most_24_passwords_are_kept() {
    let fx = small_forest(json!([ace("allow", "generic-all", X_SVC, true)]), |_| {});
    for i in 0..30 {
        fx.dir
            .reset_password(
                &acct(&fx.dir, X_ADA),
                &pw(&format!("Passw0rd-{i}")),
                false,
                false,
            )
            .await
            .unwrap();
    }
    assert_eq!(fx.dir.account_state(X_ADA).unwrap().passwords_kept, 24);
    fx.reopen();
}

// ---------------------------------------------------------------- unlock, policy

#[tokio::test]
async fn unlock_clears_lockout_time_and_has_its_own_refusals() {
    let fx = sample("contoso");
    fx.dir.unlock(&acct(&fx.dir, BARBARA)).await.unwrap();
    assert_eq!(fx.dir.account_state(BARBARA).unwrap().lockout_time_ms, 0);
    let usn = fx.dir.account_state(BARBARA).unwrap().account.usn_changed;
    // Unlocking an account that is not locked changes nothing.
    fx.dir.unlock(&acct(&fx.dir, BARBARA)).await.unwrap();
    assert_eq!(
        fx.dir.account_state(BARBARA).unwrap().account.usn_changed,
        usn
    );
    assert_eq!(
        fx.dir.unlock(&acct(&fx.dir, ADMIN)).await,
        Err(Refusal::ProtectedAccount)
    );
    assert_eq!(
        fx.dir.unlock(&acct(&fx.dir, ALAN)).await,
        Err(denied(
            DirectoryRight::WriteLockoutTime,
            EXEC,
            Some(EXEC),
            None
        ))
    );
    assert!(matches!(
        fx.dir
            .unlock(&acct(&fx.dir, "CN=Nobody,DC=contoso,DC=example"))
            .await,
        Err(Refusal::UserNotFound)
    ));
    // lock() is what failed logons would do.
    fx.dir.lock(ADA).unwrap();
    assert_eq!(fx.dir.account_state(ADA).unwrap().lockout_time_ms, T0);
    assert_eq!(
        fx.dir
            .change_password(
                &acct(&fx.dir, ADA),
                &pw("Analytical-Engine-1843"),
                &pw("Whatever-1234")
            )
            .await,
        Err(Refusal::AccountLocked)
    );
    // Disabled accounts can be unlocked.
    fx.dir.lock(EDSGER).unwrap();
    fx.dir.unlock(&acct(&fx.dir, EDSGER)).await.unwrap();
}

#[tokio::test]
async fn policy_is_the_domains_or_the_winning_psos() {
    let fx = sample("contoso");
    let ada = fx
        .dir
        .policy(&acct(&fx.dir, ADA))
        .await
        .unwrap()
        .known()
        .unwrap();
    assert_eq!(
        ada,
        Policy {
            source: "Default Domain Policy".into(),
            min_length: 8,
            complexity: true,
            history_length: 24,
            min_age_secs: 86_400,
            max_age_secs: 42 * 86_400,
        }
    );
    let linus = fx
        .dir
        .policy(&acct(&fx.dir, LINUS))
        .await
        .unwrap()
        .known()
        .unwrap();
    assert_eq!(
        (linus.source.as_str(), linus.min_length),
        ("IT Admins PSO", 14)
    );
    let tim = fx
        .dir
        .policy(&acct(&fx.dir, TIM))
        .await
        .unwrap()
        .known()
        .unwrap();
    assert_eq!(
        (tim.source.as_str(), tim.min_length),
        ("Default Domain Policy", 10)
    );
    assert!(matches!(
        fx.dir
            .policy(&acct(&fx.dir, "CN=Nobody,DC=contoso,DC=example"))
            .await,
        Err(Refusal::UserNotFound)
    ));
    // DNs compare case-insensitively.
    assert_eq!(
        fx.dir
            .policy(&acct(&fx.dir, &ADA.to_uppercase()))
            .await
            .unwrap()
            .known()
            .unwrap(),
        ada
    );
}

#[tokio::test]
async fn psos_apply_through_nested_groups_and_direct_links_win() {
    let settings = |min: u32| {
        json!({"min_length": min, "complexity": true, "history_length": 5,
               "min_age_secs": 0, "max_age_secs": 0})
    };
    let fx = small_forest(json!([ace("allow", "generic-all", X_SVC, true)]), |f| {
        f["users"][1]["member_of"] = json!(["CN=Helpdesk,OU=Groups,DC=x,DC=test"]);
        f["domains"][0]["password_settings"] = json!([
            {"name": "Tier2", "precedence": 5, "settings": settings(12),
             "applies_to": ["CN=Tier2,OU=Groups,DC=x,DC=test"]},
            {"name": "Helpdesk", "precedence": 7, "settings": settings(10),
             "applies_to": ["CN=Helpdesk,OU=Groups,DC=x,DC=test"]}
        ]);
    });
    // Through Helpdesk, nested in Tier2: precedence 5 wins.
    let p = fx
        .dir
        .policy(&acct(&fx.dir, X_ADA))
        .await
        .unwrap()
        .known()
        .unwrap();
    assert_eq!(
        (p.source.as_str(), p.min_length, p.history_length),
        ("Tier2", 12, 5)
    );

    let fx = small_forest(json!([]), |f| {
        f["domains"][0]["password_settings"] = json!([
            {"name": "Group", "precedence": 1, "settings": settings(12),
             "applies_to": ["CN=Helpdesk,OU=Groups,DC=x,DC=test"]},
            {"name": "Direct", "precedence": 99, "settings": settings(20),
             "applies_to": [X_SVC]}
        ]);
    });
    let p = fx
        .dir
        .policy(&acct(&fx.dir, X_SVC))
        .await
        .unwrap()
        .known()
        .unwrap();
    assert_eq!((p.source.as_str(), p.min_length), ("Direct", 20));
    assert_eq!(
        fx.dir
            .policy(&acct(&fx.dir, X_ADA))
            .await
            .unwrap()
            .known()
            .unwrap()
            .source,
        "Default Domain Policy"
    );
}

// ---------------------------------------------------------------- import, effective rights

#[tokio::test]
async fn import_returns_changes_after_the_cursor() {
    let fx = sample("contoso");
    let Imported {
        accounts: all,
        cursor,
        ..
    } = fx.dir.import(None).await.unwrap();
    assert_eq!(all.len(), 11);
    assert_eq!(cursor, 12_100);
    assert!(all.windows(2).all(|w| w[0].usn_changed <= w[1].usn_changed));
    let ada = all.iter().find(|a| a.dn == ADA).unwrap();
    assert_eq!(ada.sam_account_name, "ada");
    assert_eq!(ada.user_principal_name, "ada@contoso.example");
    assert_eq!(ada.display_name, "Ada Lovelace");
    assert!(ada.enabled);
    assert_eq!(
        Guid(ada.object_guid).to_string(),
        "3b1a4c2e-7d5f-4e8a-9b6c-1d2e3f405162"
    );
    // The source anchor the sample documents.
    assert_eq!(
        base64::engine::general_purpose::STANDARD.encode(ada.object_guid),
        "LkwaO199ik6bbB0uP0BRYg=="
    );
    assert!(!all.iter().find(|a| a.dn == EDSGER).unwrap().enabled);

    let Imported {
        accounts: none,
        cursor: same,
        ..
    } = fx.dir.import(Some(cursor)).await.unwrap();
    assert!(none.is_empty());
    assert_eq!(same, cursor);

    fx.dir
        .reset_password(
            &acct(&fx.dir, GRACE),
            &pw("Quite-G00d-Password"),
            false,
            false,
        )
        .await
        .unwrap();
    fx.dir.lock(ADA).unwrap();
    let Imported {
        accounts: changed,
        cursor: next,
        ..
    } = fx.dir.import(Some(cursor)).await.unwrap();
    let dns: Vec<_> = changed.iter().map(|a| a.dn.as_str()).collect();
    assert_eq!(dns, [GRACE, ADA]);
    assert_eq!(next, cursor + 2);
    assert_eq!(changed[1].usn_changed, next);
    let Imported {
        accounts: changed,
        cursor: _,
        ..
    } = fx.dir.import(Some(cursor + 1)).await.unwrap();
    assert_eq!(changed.len(), 1);
    // Refusals change nothing.
    let _ = fx
        .dir
        .reset_password(&acct(&fx.dir, ALAN), &pw("x"), false, false)
        .await;
    assert!(fx.dir.import(Some(next)).await.unwrap().accounts.is_empty());
}

#[tokio::test]
async fn effective_rights_name_the_blocked_ou_and_doctors_fixes_work() {
    let fx = sample("contoso");
    let rights = fx.dir.effective_rights().await.unwrap();
    let summary: Vec<(&str, usize, usize, usize, Option<&str>)> = rights
        .iter()
        .map(|o| {
            (
                o.dn.as_str(),
                o.user_count,
                o.affected,
                o.missing.len(),
                o.blocked_at.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            // Charles's own deny: one of five enabled users (Edsger is
            // disabled) is affected, not the whole OU.
            (STAFF, 5, 1, 1, None),
            (EXEC, 1, 1, 4, Some(EXEC)),
            // The admin (adminCount=1) is refused as protected, not counted.
            ("OU=IT,OU=Users,DC=contoso,DC=example", 1, 0, 0, None),
            ("OU=Service Accounts,DC=contoso,DC=example", 1, 0, 0, None),
            ("OU=Users,DC=emea,DC=contoso,DC=example", 1, 0, 0, None),
        ]
    );
    let exec = &rights[1];
    assert_eq!(exec.missing, DirectoryRight::ALL.to_vec());

    // Doctor's fix: grant the missing rights on the OU itself.
    for r in &exec.missing {
        fx.dir
            .grant(EXEC, *r, &fx.dir.service_account(), true)
            .unwrap();
    }
    // Granting twice changes nothing.
    let Imported { cursor, .. } = fx.dir.import(None).await.unwrap();
    fx.dir
        .grant(EXEC, DirectoryRight::ResetPassword, SVC, true)
        .unwrap();
    assert_eq!(fx.dir.import(None).await.unwrap().cursor, cursor);
    let rights = fx.dir.effective_rights().await.unwrap();
    assert_eq!(
        rights[1].blocked_at, None,
        "granted on the protected OU itself"
    );
    assert!(rights[1].missing.is_empty());
    // Charles's deny is named where it is, and no grant is proposed for it.
    let staff = &rights[0];
    assert_eq!(staff.missing, [DirectoryRight::ResetPassword]);
    assert!(staff.ungranted.is_empty());
    assert_eq!(staff.denied_by.len(), 1);
    assert_eq!(staff.denied_by[0].at, CHARLES);
    assert_eq!(
        fx.dir
            .remove_denies(CHARLES, DirectoryRight::ResetPassword)
            .unwrap(),
        1
    );
    let rights = fx.dir.effective_rights().await.unwrap();
    assert!(rights.iter().all(|o| o.missing.is_empty()), "{rights:?}");
    // The fix survives a restart.
    let again = fx.reopen();
    again
        .reset_password(
            &acct(&again, ALAN),
            &pw("Quite-G00d-Password"),
            false,
            false,
        )
        .await
        .unwrap();
    assert!(again.check_password(ALAN, &pw("Quite-G00d-Password")));
}

#[tokio::test]
async fn unblocking_inheritance_lets_the_delegation_through() {
    let fx = sample("contoso");
    fx.dir.set_inheritance(EXEC, false).unwrap();
    let rights = fx.dir.effective_rights().await.unwrap();
    let exec = rights.iter().find(|o| o.dn == EXEC).unwrap();
    assert!(exec.missing.is_empty() && exec.blocked_at.is_none());
    fx.dir
        .reset_password(&acct(&fx.dir, ALAN), &pw("Quite-G00d-Password"), true, true)
        .await
        .unwrap();
    // And blocking it again on Staff cuts Ada off.
    fx.dir.set_inheritance(STAFF, true).unwrap();
    assert_eq!(
        fx.reopen()
            .reset_password(
                &acct(&fx.dir, ADA),
                &pw("Quite-G00d-Password"),
                false,
                false
            )
            .await,
        Err(denied(
            DirectoryRight::ResetPassword,
            STAFF,
            Some(STAFF),
            None
        ))
    );
    assert!(
        fx.dir
            .set_inheritance("OU=Nowhere,DC=contoso,DC=example", true)
            .is_err()
    );
    assert!(
        fx.dir
            .grant(
                EXEC,
                DirectoryRight::ResetPassword,
                "CN=Stranger,DC=x",
                true
            )
            .is_err()
    );
    assert!(
        fx.dir
            .grant(
                "OU=Nowhere,DC=contoso,DC=example",
                DirectoryRight::ResetPassword,
                SVC,
                true
            )
            .is_err()
    );
    // The domain head accepts ACEs too.
    fx.dir
        .grant(D, DirectoryRight::ResetPassword, SVC, true)
        .unwrap();
}

// ---------------------------------------------------------------- persistence

#[tokio::test]
async fn changes_survive_reopening_and_leave_no_temporary_files() {
    let fx = sample("contoso");
    let katherine_set = fx.dir.account_state(KATHERINE).unwrap().pwd_last_set_ms;
    assert_eq!(katherine_set, T0, "-1 is resolved at open");
    fx.dir
        .reset_password(&acct(&fx.dir, ADA), &pw("Persisted-Passw0rd"), true, false)
        .await
        .unwrap();
    fx.dir.lock(GRACE).unwrap();
    fx.dir.set_enabled(EDSGER, true).unwrap();
    fx.advance(5 * DAY_MS);
    let again = fx.reopen();
    assert!(again.check_password(ADA, &pw("Persisted-Passw0rd")));
    assert_ne!(again.account_state(GRACE).unwrap().lockout_time_ms, 0);
    assert!(again.account_state(EDSGER).unwrap().account.enabled);
    assert_eq!(again.import(None).await.unwrap().cursor, 12_103);
    // The -1 was written as the time it was resolved, not re-resolved.
    assert_eq!(again.account_state(KATHERINE).unwrap().pwd_last_set_ms, T0);
    let text = std::fs::read_to_string(&fx.path).unwrap();
    assert!(!text.contains("Persisted-Passw0rd"));
    assert!(text.contains("_comment"), "comments are kept");
    let entries: Vec<_> = std::fs::read_dir(fx.path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, ["contoso.json"]);
}

#[cfg(unix)]
#[tokio::test]
async fn the_files_permissions_are_kept() {
    use std::os::unix::fs::PermissionsExt;
    let fx = sample("contoso");
    std::fs::set_permissions(&fx.path, std::fs::Permissions::from_mode(0o600)).unwrap();
    fx.dir.lock(ADA).unwrap();
    let mode = std::fs::metadata(&fx.path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn a_failed_save_changes_nothing_and_reports_the_directory_unavailable() {
    let fx = sample("contoso");
    // Make the file's directory vanish: the temporary file cannot be created.
    let gone = TempDir::new().unwrap();
    let path = gone.path().join("contoso.json");
    std::fs::copy(&fx.path, &path).unwrap();
    let dir = EmbeddedDirectory::open("contoso", &path).unwrap();
    drop(gone);
    assert!(matches!(
        dir.reset_password(&acct(&dir, ADA), &pw("Never-Saved-Passw0rd"), false, false).await,
        Err(Refusal::DirectoryUnavailable(why)) if why.contains("could not save")
    ));
    assert!(dir.check_password(ADA, &pw("Analytical-Engine-1843")));
    assert_eq!(dir.import(None).await.unwrap().cursor, 12_100);
    assert!(dir.lock(ADA).is_err());
    assert_eq!(dir.account_state(ADA).unwrap().lockout_time_ms, 0);
}

#[tokio::test]
async fn concurrent_operations_all_land() {
    let fx = sample("contoso");
    let mut tasks = Vec::new();
    for (i, dn) in [ADA, GRACE, CHARLES, LINUS, TIM].into_iter().enumerate() {
        let d = fx.dir.clone();
        tasks.push(tokio::spawn(async move {
            d.change_password(
                &acct(&d, dn),
                &pw(CONTOSO_PASSWORDS.iter().find(|(u, _)| *u == dn).unwrap().1),
                &pw(&format!("Concurrent-Passw0rd-{i}")),
            )
            .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let again = fx.reopen();
    assert_eq!(again.import(None).await.unwrap().cursor, 12_105);
    assert!(again.check_password(TIM, &pw("Concurrent-Passw0rd-4")));
}

// ---------------------------------------------------------------- validation

fn open_err(forest: Value) -> String {
    let tmp = TempDir::new().unwrap();
    let path = tmp.path().join("bad.json");
    std::fs::write(&path, forest.to_string()).unwrap();
    EmbeddedDirectory::open("bad", &path).unwrap_err().0
}

#[test]
fn invalid_files_are_refused_with_the_reason() {
    let base = || {
        let text = std::fs::read_to_string(samples_dir().join("contoso.json")).unwrap();
        serde_json::from_str::<Value>(&text).unwrap()
    };
    type Edit = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(Edit, &str)> = vec![
        (Box::new(|f| f["colour"] = json!("blue")), "unknown field"),
        (
            Box::new(|f| f["users"][0]["passwords"] = json!(["Analytical-Engine-1843"])),
            "not a password verifier",
        ),
        (
            Box::new(|f| f["users"][1]["user_principal_name"] = json!("ADA@contoso.example")),
            "not unique",
        ),
        (
            Box::new(|f| f["users"][1]["object_guid"] = f["users"][0]["object_guid"].clone()),
            "objectGUID",
        ),
        (
            Box::new(|f| f["users"][0]["dn"] = json!("CN=Ada,OU=Nowhere,DC=contoso,DC=example")),
            "parent",
        ),
        (
            Box::new(|f| {
                f["ous"][0]["aces"][0]["trustee"] = json!("CN=Ghost,DC=contoso,DC=example")
            }),
            "trustee",
        ),
        (
            Box::new(|f| f["ous"][0]["aces"][0]["right"] = json!("read-everything")),
            "unknown right",
        ),
        (Box::new(|f| f["highest_usn"] = json!(5)), "highest_usn"),
        (
            Box::new(|f| f["service_account"] = json!("CN=Nobody,DC=contoso,DC=example")),
            "service_account",
        ),
        (
            Box::new(|f| {
                f["users"][0]["member_of"] = json!(["CN=Nope,OU=Groups,DC=contoso,DC=example"])
            }),
            "not a group",
        ),
        (
            Box::new(|f| f["domains"][0]["password_settings"][0]["applies_to"] = json!([TIM])),
            "another domain",
        ),
        (
            Box::new(|f| f["domains"][0]["policy"]["history_length"] = json!(25)),
            "history_length",
        ),
        (
            Box::new(|f| f["users"][0]["object_guid"] = json!("not-a-guid")),
            "GUID",
        ),
    ];
    for (edit, expected) in cases {
        let mut f = base();
        edit(&mut f);
        let e = open_err(f);
        assert!(e.contains(expected), "expected {expected:?} in {e:?}");
    }
    let tmp = TempDir::new().unwrap();
    assert!(EmbeddedDirectory::open("x", tmp.path().join("missing.json")).is_err());
}

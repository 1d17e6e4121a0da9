//! What the agent says when the domain refuses a password, and the policy
//! it shows, against what Samba really enforces: a fine-grained policy the
//! service account cannot read (applied through a group), complexity as AD
//! counts it, history only on a change, and a maximum age of "never".

use directory::{Category, Directory, Refusal, ResultantPolicy};
use envelope::RequestBody;
use envelope::body::outcome;
use proto::pb::Operation;
use tests::deployment::{Deployment, detail};

use crate::dc::{Dc, pw};
use crate::lab::{account, unique};

/// `writeback-agent doctor` over the forest: (exit code, stdout).
fn doctor(dc: &Dc, scratch: &std::path::Path) -> (Option<i32>, String) {
    let listen = tests::write_key(scratch, "listen.key", &sas::Key::generate().expect("key"));
    let config = scratch.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "broker = \"https://127.0.0.1:1\"\ntenant = \"contoso\"\nlisten_key_file = {listen:?}\n{}",
            dc.forest_section("test")
        ),
    )
    .expect("config");
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
}

#[tokio::test]
#[ignore = "needs Samba AD DCs: run scripts/test (see tests/tests/samba/main.rs)"]
async fn an_unreadable_pso_is_unknown_never_zeros_and_doctor_fixes_it() {
    let dc = Dc::load("dc1");
    let dir = dc.directory("test");
    let ou = dc.own_ou("PolicyLab-");
    let sam = unique("pso");
    let user_dn = dc.create_user(&ou, &sam, "Start-Password-2024!");
    let user = account(&dir, &user_dn).await;
    let group = unique("PsoGroup");
    let pso = unique("Strict");
    dc.samba_tool(&["group", "add", &group]);
    dc.samba_tool(&["group", "addmembers", &group, &sam]);
    dc.samba_tool(&[
        "domain",
        "passwordsettings",
        "pso",
        "create",
        &pso,
        "5",
        "--min-pwd-length=14",
        "--complexity=on",
        "--history-length=3",
        "--max-pwd-age=0",
    ]);
    dc.samba_tool(&["domain", "passwordsettings", "pso", "apply", &pso, &group]);

    // By default the service account sees which PSO applies, not its settings.
    assert_eq!(
        dir.policy(&user).await,
        Ok(ResultantPolicy::Unreadable {
            source: pso.clone()
        })
    );
    // The DC names the rule; the agent says that rule with the DC's number
    // (not "in history", not "at least 0 characters").
    assert_eq!(
        dir.reset_password(&user, &pw("Short-Pass-1"), false, false)
            .await,
        Err(Refusal::TooShort { min_length: 14 })
    );
    match dir
        .reset_password(&user, &pw("correct horse battery 9"), false, false)
        .await
    {
        Err(Refusal::FailsComplexity { missing, contains }) => {
            assert_eq!(missing, vec![Category::Uppercase, Category::Symbol]);
            assert_eq!(contains, None);
        }
        other => panic!("expected complexity, got {other:?}"),
    }

    // Through the relay: the portal is told the rules are unknown, with no
    // number, and a short password is refused with the DC's length.
    let scratch = tempfile::tempdir().expect("dir");
    let d = Deployment::start_with(scratch, &dc.forest_section("test"), "").await;
    let upn = dc.upn(&sam);
    let policy = d
        .ask(
            Operation::GetPasswordPolicy,
            RequestBody::without_passwords(upn.clone()),
        )
        .await;
    assert_eq!(policy.outcome, outcome::SUCCESS, "{policy:?}");
    assert_eq!(detail(&policy, "settings_readable"), Some("false"));
    assert_eq!(detail(&policy, "source"), Some(pso.as_str()));
    assert_eq!(detail(&policy, "min_length"), None, "{policy:?}");
    let short = d.reset(upn.clone(), "Short-Pass-1").await;
    assert_eq!(short.outcome, outcome::PASSWORD_TOO_SHORT, "{short:?}");
    assert_eq!(detail(&short, "min_length"), Some("14"));
    d.stop().await;

    // doctor names the policy and prints the grant; run as printed, it
    // makes every PSO readable (granted on the container, so later ones too).
    let scratch = tempfile::tempdir().expect("dir");
    let (_, text) = doctor(&dc, scratch.path());
    let check = text
        .lines()
        .find(|l| l.contains("password policies readable"))
        .unwrap_or_else(|| panic!("doctor has a policy check: {text}"));
    assert!(check.contains("FAIL") && check.contains(&pso), "{check}");
    let fix = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("fix on a Samba DC: "))
        .find(|l| l.contains("Password Settings Container"))
        .unwrap_or_else(|| panic!("doctor prints the samba-tool grant: {text}"));
    assert!(
        fix.contains(dc.get("SERVICE_ACCOUNT_SID")),
        "the fix names the real account: {fix}"
    );
    assert!(text.contains("dsacls"), "and the Windows line: {text}");
    dc.run_on_the_dc(fix);
    let (_, text) = doctor(&dc, scratch.path());
    let check = text
        .lines()
        .find(|l| l.contains("password policies readable"))
        .expect("policy check");
    assert!(check.contains(" ok "), "{check}");

    // Now the policy is read exactly, "never expires" included.
    let policy = dir
        .policy(&user)
        .await
        .expect("policy")
        .known()
        .expect("readable after the fix");
    assert_eq!(
        (
            policy.source.as_str(),
            policy.min_length,
            policy.history_length,
            policy.max_age_secs
        ),
        (pso.as_str(), 14, 3, 0)
    );
}

#[tokio::test]
#[ignore = "needs Samba AD DCs: run scripts/test (see tests/tests/samba/main.rs)"]
async fn complexity_and_history_are_what_the_domain_enforces() {
    let dc = Dc::load("dc1");
    let dir = dc.directory("test");
    let ou = dc.own_ou("RulesLab-");
    let user_dn = dc.create_user(&ou, &unique("rules"), "Start-Password-2024!");
    let user = account(&dir, &user_dn).await;

    // A space is no symbol: the DC refuses, and so does the agent's rule.
    match dir
        .reset_password(&user, &pw("correct horse battery 9"), false, false)
        .await
    {
        Err(Refusal::FailsComplexity { missing, .. }) => {
            assert_eq!(missing, vec![Category::Uppercase, Category::Symbol]);
        }
        other => panic!("expected complexity, got {other:?}"),
    }
    dc.binds(&user_dn, "Start-Password-2024!")
        .await
        .expect("nothing changed");

    // An administrative reset to the current password: AD checks no
    // history on a reset, and neither does the agent.
    dir.reset_password(&user, &pw("Start-Password-2024!"), false, false)
        .await
        .expect("a reset to a previous password is allowed");
    // A user change to the current password: the DC names the history.
    assert_eq!(
        dir.change_password(
            &user,
            &pw("Start-Password-2024!"),
            &pw("Start-Password-2024!")
        )
        .await,
        Err(Refusal::InHistory { history_length: 24 })
    );
    dir.change_password(
        &user,
        &pw("Start-Password-2024!"),
        &pw("Second-Password-2024!"),
    )
    .await
    .expect("a new password is accepted");
    dc.binds(&user_dn, "Second-Password-2024!")
        .await
        .expect("binds");
}

#[tokio::test]
#[ignore = "needs Samba AD DCs: run scripts/test (see tests/tests/samba/main.rs)"]
async fn a_domain_password_that_never_expires_is_shown_as_never() {
    // dc2: its other tests do not depend on the maximum age.
    let dc = Dc::load("dc2");
    let dir = dc.directory("fabrikam");
    dc.samba_tool(&["domain", "passwordsettings", "set", "--max-pwd-age=0"]);
    let staff1 = account(&dir, dc.get("STAFF1_DN")).await;
    let policy = dir.policy(&staff1).await;
    dc.samba_tool(&["domain", "passwordsettings", "set", "--max-pwd-age=42"]);
    let policy = policy.expect("policy").known().expect("domain policy");
    assert_eq!(policy.source, "Default Domain Policy");
    assert_eq!(policy.max_age_secs, 0, "never, not 922337203685 s");
    let policy = dir
        .policy(&staff1)
        .await
        .expect("policy")
        .known()
        .expect("domain policy");
    assert_eq!(policy.max_age_secs, 42 * 86_400);
}

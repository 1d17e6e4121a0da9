//! Password operations as users meet them: through the broker and a real
//! agent process, sealed end to end, against the embedded forests with
//! Active Directory's semantics. Every outcome code is provoked for real and
//! its details checked; the event log holds the matching Entra event ids
//! and never a password.

use directory::Directory;
use envelope::body::outcome;
use envelope::{Anchor, Password, RequestBody};
use proto::pb::Operation;
use tests::deployment::{Deployment, detail, upn};

const ADA: &str = "CN=Ada Lovelace,OU=Staff,OU=Users,DC=contoso,DC=example";
const ADA_ANCHOR: &str = "LkwaO199ik6bbB0uP0BRYg==";
const GRACE: &str = "CN=Grace Hopper,OU=Staff,OU=Users,DC=contoso,DC=example";
const GRACE_ANCHOR: &str = "Sm4tjzscXUqOf6CxwtPk9Q==";
const BARBARA: &str = "CN=Barbara Liskov,OU=Staff,OU=Users,DC=contoso,DC=example";
const EXECUTIVES: &str = "OU=Executives,OU=Users,DC=contoso,DC=example";
const HEDY: &str = "CN=Hedy Lamarr,OU=People,DC=fabrikam,DC=example";

fn ada() -> Anchor {
    Anchor::SourceAnchor(ADA_ANCHOR.into())
}

fn event_ids(d: &Deployment) -> Vec<u64> {
    d.events()
        .iter()
        .filter_map(|e| e["event_id"].as_u64())
        .collect()
}

#[tokio::test]
async fn every_outcome_is_reported_with_its_exact_reason() {
    let d = Deployment::start(&["contoso", "fabrikam"], "").await;
    let passwords_used = std::cell::RefCell::new(Vec::new());
    let remember = |p: &str| {
        passwords_used.borrow_mut().push(p.to_owned());
        p.to_owned()
    };

    // The policy, before the user types.
    let policy = d
        .ask(
            Operation::GetPasswordPolicy,
            RequestBody::without_passwords(ada()),
        )
        .await;
    assert_eq!(policy.outcome, outcome::SUCCESS);
    assert_eq!(detail(&policy, "min_length"), Some("8"));
    assert_eq!(detail(&policy, "source"), Some("Default Domain Policy"));
    let linus = d
        .ask(
            Operation::GetPasswordPolicy,
            RequestBody::without_passwords(upn("linus@contoso.example")),
        )
        .await;
    assert_eq!(detail(&linus, "min_length"), Some("14"));
    assert_eq!(detail(&linus, "source"), Some("IT Admins PSO"));

    // User change into a password in history (before anything touches ada).
    let r = d
        .change(
            ada(),
            &remember("Analytical-Engine-1843"),
            &remember("Bernoulli-Numbers-1843"),
        )
        .await;
    assert_eq!(r.outcome, outcome::IN_HISTORY, "{r:?}");
    assert_eq!(detail(&r, "history_length"), Some("24"));

    // Too short, with the minimum.
    let r = d.reset(ada(), &remember("Ab1!")).await;
    assert_eq!(r.outcome, outcome::PASSWORD_TOO_SHORT, "{r:?}");
    assert_eq!(detail(&r, "min_length"), Some("8"));
    assert!(r.message.contains("at least 8 characters"), "{}", r.message);

    // Complexity: which categories are missing; the account's name.
    let r = d.reset(ada(), &remember("onlylowercaseletters")).await;
    assert_eq!(r.outcome, outcome::FAILS_COMPLEXITY, "{r:?}");
    let missing = detail(&r, "missing").expect("missing categories");
    assert!(
        missing.contains("uppercase letter") && missing.contains("digit"),
        "{missing}"
    );
    let r = d.reset(ada(), &remember("Lovelace-Rules-2024")).await;
    assert_eq!(r.outcome, outcome::FAILS_COMPLEXITY, "{r:?}");
    // What matched, as the directory holds it, and which rule it broke.
    assert_eq!(detail(&r, "contains"), Some("Lovelace"), "{r:?}");
    assert_eq!(detail(&r, "contains_kind"), Some("display_name"), "{r:?}");
    assert!(
        d.forest("contoso")
            .check_password(ADA, &Password::new("Analytical-Engine-1843"))
    );

    // A good one: the directory's password changes.
    let r = d.reset(ada(), &remember("Difference-Engine-No2!")).await;
    assert_eq!(r.outcome, outcome::SUCCESS, "{r:?}");
    // The worked example in PROTOCOL.md (and its vector) is this reply.
    let vectors: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/test-vectors/envelope-v1.json"
        ))
        .expect("vectors"),
    )
    .expect("json");
    let example = &vectors["reply"]["body"];
    assert_eq!(example["outcome"], u64::from(r.outcome));
    assert_eq!(example["message"], r.message.as_str());
    assert_eq!(
        example["details"].as_array().map(Vec::len),
        Some(r.details.len())
    );
    let forest = d.forest("contoso");
    assert!(!forest.check_password(ADA, &Password::new("Analytical-Engine-1843")));
    assert!(forest.check_password(ADA, &Password::new("Difference-Engine-No2!")));

    // Changed too recently (domain minimum age), with when it is allowed.
    let r = d
        .change(
            upn("katherine@contoso.example"),
            &remember("Orbital-Mechanics-1962"),
            &remember("Trajectory-Math-1969"),
        )
        .await;
    assert_eq!(r.outcome, outcome::CHANGED_TOO_RECENTLY, "{r:?}");
    assert!(
        detail(&r, "allowed_after_unix_ms")
            .expect("when")
            .parse::<u64>()
            .is_ok()
    );

    // Wrong current password.
    let r = d
        .change(
            upn("grace@contoso.example"),
            &remember("Not-Her-Password-1"),
            &remember("Nanoseconds-Wire-1"),
        )
        .await;
    assert_eq!(r.outcome, outcome::WRONG_CURRENT_PASSWORD, "{r:?}");

    // Disabled, locked, protected.
    let r = d
        .reset(
            upn("edsger@contoso.example"),
            &remember("Go-To-Considered-1968"),
        )
        .await;
    assert_eq!(r.outcome, outcome::ACCOUNT_DISABLED, "{r:?}");
    let r = d
        .change(
            upn("barbara@contoso.example"),
            &remember("Substitution-1987"),
            &remember("Principle-Of-1988!"),
        )
        .await;
    assert_eq!(r.outcome, outcome::ACCOUNT_LOCKED, "{r:?}");
    let r = d
        .reset(
            upn("admin@contoso.example"),
            &remember("Moon-Landing-1969!"),
        )
        .await;
    assert_eq!(r.outcome, outcome::PROTECTED_ACCOUNT, "{r:?}");

    // Permission denied: the reply names the right only (it reaches an
    // anonymous end user); the event log names the OU and the block.
    let r = d
        .reset(
            upn("alan@contoso.example"),
            &remember("Turing-Machine-1936"),
        )
        .await;
    assert_eq!(r.outcome, outcome::PERMISSION_DENIED, "{r:?}");
    assert_eq!(
        r.details,
        [("right".to_owned(), "Reset Password".to_owned())]
    );
    assert!(!r.message.contains("DC="), "no DN reaches the user: {r:?}");
    let events = d.events();
    let refused = events
        .iter()
        .rev()
        .find(|e| e["event_id"] == 33004)
        .expect("an insufficient-permissions event");
    assert_eq!(refused["container"], EXECUTIVES, "{refused}");
    assert_eq!(refused["blocked_at"], EXECUTIVES, "{refused}");
    assert!(refused.get("denied_at").is_none(), "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("inheritance is blocked at")),
        "{refused}"
    );
    let r = d
        .reset(
            upn("charles@contoso.example"),
            &remember("Analytical-Engine-1837"),
        )
        .await;
    assert_eq!(r.outcome, outcome::PERMISSION_DENIED, "{r:?}");
    assert_eq!(detail(&r, "ou"), None);

    // Not found; several matches across the two forests (UPN and source anchor).
    let r = d
        .reset(
            upn("nobody@contoso.example"),
            &remember("Whoever-You-Are-1"),
        )
        .await;
    assert_eq!(r.outcome, outcome::USER_NOT_FOUND, "{r:?}");
    let r = d
        .reset(upn("ada@contoso.example"), &remember("Ambiguous-Ada-2024"))
        .await;
    assert_eq!(r.outcome, outcome::SEVERAL_MATCHES, "{r:?}");
    assert_eq!(detail(&r, "forests"), Some("contoso,fabrikam"));
    let r = d
        .reset(
            Anchor::SourceAnchor(GRACE_ANCHOR.into()),
            &remember("Ambiguous-Grace-2024"),
        )
        .await;
    assert_eq!(r.outcome, outcome::SEVERAL_MATCHES, "{r:?}");

    // The right forest: a fabrikam-only user changes in fabrikam.
    let r = d
        .reset(
            upn("hedy@fabrikam.example"),
            &remember("Spread-Spectrum-1941"),
        )
        .await;
    assert_eq!(r.outcome, outcome::SUCCESS, "{r:?}");
    assert!(
        d.forest("fabrikam")
            .check_password(HEDY, &Password::new("Spread-Spectrum-1941"))
    );

    // Reset with unlock, and a plain unlock (the lock applied behind the
    // running agent's back, which re-reads the forest).
    let mut with_unlock = RequestBody::reset(
        upn("barbara@contoso.example"),
        Password::new(remember("Abstract-Data-Types-1974")),
    );
    with_unlock.unlock = true;
    let r = d.ask(Operation::ResetPassword, with_unlock).await;
    assert_eq!(r.outcome, outcome::SUCCESS, "{r:?}");
    assert_eq!(
        d.forest("contoso")
            .account_state(BARBARA)
            .expect("barbara")
            .lockout_time_ms,
        0
    );
    d.forest("contoso").lock(GRACE).expect("lock grace");
    let r = d
        .ask(
            Operation::UnlockAccount,
            RequestBody::without_passwords(upn("grace@contoso.example")),
        )
        .await;
    assert_eq!(r.outcome, outcome::SUCCESS, "{r:?}");
    assert_eq!(
        d.forest("contoso")
            .account_state(GRACE)
            .expect("grace")
            .lockout_time_ms,
        0
    );

    // Force change at next logon.
    let mut must_change = RequestBody::reset(
        upn("grace@contoso.example"),
        Password::new(remember("Temporary-Pass-2024")),
    );
    must_change.must_change = true;
    let r = d.ask(Operation::ResetPassword, must_change).await;
    assert_eq!(r.outcome, outcome::SUCCESS, "{r:?}");
    assert_eq!(
        d.forest("contoso")
            .account_state(GRACE)
            .expect("grace")
            .pwd_last_set_ms,
        0
    );

    // The directory going away: a definite DIRECTORY_UNAVAILABLE.
    std::fs::remove_dir_all(d.forest_file("fabrikam").parent().expect("dir"))
        .expect("remove forest");
    let r = d
        .reset(
            upn("hedy@fabrikam.example"),
            &remember("Spread-Spectrum-1942"),
        )
        .await;
    assert_eq!(r.outcome, outcome::DIRECTORY_UNAVAILABLE, "{r:?}");

    // The event log: the expected ids, and no password at all.
    let ids = event_ids(&d);
    for expected in [
        31001, 31002, 31003, 31006, 31008, 33002, 33003, 33004, 33005, 33006, 33007, 33008, 33009,
        31015,
    ] {
        assert!(
            ids.contains(&expected),
            "event {expected} missing from {ids:?}"
        );
    }
    let denied = d
        .events()
        .into_iter()
        .find(|e| {
            e["event_id"] == 33004
                && e["account_dn"] == "CN=Alan Turing,OU=Executives,OU=Users,DC=contoso,DC=example"
        })
        .expect("a 33004 event for alan");
    assert_eq!(denied["outcome"], "PERMISSION_DENIED");
    assert!(
        denied["request_id"]
            .as_str()
            .is_some_and(|r| r.starts_with("req-"))
    );
    let text = d.event_log_text();
    for p in passwords_used.borrow().iter() {
        assert!(
            !text.contains(p.as_str()),
            "a password reached the event log"
        );
    }
    d.stop().await;
}

#[tokio::test]
async fn blocked_inheritance_is_diagnosed_fixed_and_then_works() {
    let d = Deployment::start(&["contoso"], "").await;
    let alan = upn("alan@contoso.example");
    let r = d.reset(alan.clone(), "Enigma-Codebreaker-1941").await;
    assert_eq!(r.outcome, outcome::PERMISSION_DENIED);
    assert!(
        d.event_log_text().contains(&format!(
            "lacks the Reset Password right on {EXECUTIVES} (inheritance is blocked at {EXECUTIVES})"
        )),
        "{}",
        d.event_log_text()
    );

    // Doctor lists the OU with its user count and the fix, and fails.
    let out = d.agent_cli(&["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains(&format!("{EXECUTIVES} (1 users)")), "{text}");
    assert!(text.contains("inheritance is blocked here"), "{text}");
    // Charles's object-level deny is named too, with its removal (a grant
    // cannot override a deny).
    assert!(
        text.contains("Reset Password denied by deny Reset Password"),
        "{text}"
    );
    let fixes: Vec<String> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("fix: writeback-agent "))
        .map(str::to_owned)
        .collect();
    assert_eq!(fixes.len(), 2, "a grant and a deny removal: {text}");
    assert!(fixes[1].contains("directory remove-deny"), "{fixes:?}");
    let json = d.agent_cli(&["doctor", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).expect("doctor --json");
    assert_eq!(report["ok"], false);

    // Apply the printed fixes exactly as printed.
    for fix in &fixes {
        let applied = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{} {fix}", tests::bin("writeback-agent").display()))
            .output()
            .expect("apply fix");
        assert!(
            applied.status.success(),
            "{fix}: {}",
            String::from_utf8_lossy(&applied.stderr)
        );
    }

    // The running agent sees the change; the reset now succeeds; doctor passes.
    let r = d.reset(alan, "Enigma-Codebreaker-1941").await;
    assert_eq!(r.outcome, outcome::SUCCESS, "{r:?}");
    let forest = d.forest("contoso");
    let rights = forest.effective_rights().await.expect("rights");
    assert!(rights.iter().all(|o| o.missing.is_empty()));
    let out = d.agent_cli(&["doctor"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    d.stop().await;
}

#[tokio::test]
async fn the_on_prem_switch_refuses_every_request() {
    let d = Deployment::start(&["contoso"], "writeback_enabled = false").await;
    let r = d.reset(ada(), "Perfectly-Good-Pass-1").await;
    assert_eq!(r.outcome, outcome::WRITEBACK_DISABLED, "{r:?}");
    assert!(
        d.forest("contoso")
            .check_password(ADA, &Password::new("Analytical-Engine-1843"))
    );
    let status = d.agent_cli(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status --json");
    assert_eq!(status["enabled_on_this_agent"], false);
    assert_eq!(status["connector"], "contoso - AAD");
    assert_eq!(status["keys"][0]["state"], "current");
    assert_eq!(status["keys"][0]["registered"], true);
    assert_eq!(status["agents_online"][0]["agent_id"], "dc01");
    d.stop().await;
}

#[tokio::test]
async fn the_agent_limits_password_operations_per_account() {
    let d = Deployment::start(&["contoso"], "[limits]\nresets_per_account_per_hour = 2").await;
    for password in ["Difference-Engine-No1", "Difference-Engine-No2"] {
        let r = d.reset(ada(), password).await;
        assert_eq!(r.outcome, outcome::SUCCESS, "{r:?}");
    }
    // The same account under its other anchor shares the count.
    let r = d
        .reset(upn("ada@contoso.example"), "Difference-Engine-No3")
        .await;
    assert_eq!(r.outcome, outcome::RATE_LIMITED, "{r:?}");
    assert!(
        r.message.starts_with(
            "too many password operations for this account: at most 2 per hour; try again in about"
        ),
        "{}",
        r.message
    );
    assert_eq!(detail(&r, "limit"), Some("2"));
    let forest = d.forest("contoso");
    assert!(forest.check_password(ADA, &Password::new("Difference-Engine-No2")));

    // Other accounts and policy queries are not held back.
    let r = d
        .reset(upn("grace@contoso.example"), "Nanoseconds-Wire-1")
        .await;
    assert_eq!(r.outcome, outcome::SUCCESS, "{r:?}");
    let r = d
        .ask(
            Operation::GetPasswordPolicy,
            RequestBody::without_passwords(ada()),
        )
        .await;
    assert_eq!(r.outcome, outcome::SUCCESS, "{r:?}");

    let limited = d
        .events()
        .into_iter()
        .find(|e| e["event_id"] == 33100)
        .expect("a rate-limit event");
    assert_eq!(limited["account_dn"], ADA);
    assert_eq!(limited["outcome"], "RATE_LIMITED");
    d.stop().await;
}

//! The eligibility details of GET_PASSWORD_POLICY against what each
//! operation then answers, through [`Writeback`] and an embedded copy of
//! the sample forest; and the per-account limit, which does not count
//! refusals by the password rules.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use envelope::{Anchor, KeyId, Password};

use super::*;
use directory::embedded::{Ace, EmbeddedDirectory};
use directory::{DirectoryRight, Eligibility, Policy};

const SVC: &str = "CN=svc-writeback,OU=Service Accounts,DC=contoso,DC=example";
const BARBARA: &str = "CN=Barbara Liskov,OU=Staff,OU=Users,DC=contoso,DC=example";
const CHARLES: &str = "CN=Charles Babbage,OU=Staff,OU=Users,DC=contoso,DC=example";

/// A new password every sample policy accepts.
const NEW: &str = "Zq7-Unrelated-Passphrase-2026";

struct Agent {
    writeback: Writeback,
    forest: EmbeddedDirectory,
    _dir: tempfile::TempDir,
}

/// The agent over a fresh copy of the contoso sample, changed by `prepare`.
async fn agent(per_hour: u32, prepare: &dyn Fn(&EmbeddedDirectory)) -> Agent {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("contoso.json");
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/forests/contoso.json");
    std::fs::copy(sample, &file).unwrap();
    let forest = EmbeddedDirectory::open("contoso", &file).unwrap();
    prepare(&forest);
    let space = Arc::new(ConnectorSpace::new(vec![Arc::new(forest.clone())]));
    space.import(|_, _| {}).await.unwrap();
    let now = Arc::new(AtomicU64::new(1_000_000));
    let writeback = Writeback {
        tenant: "contoso".into(),
        space,
        events: Arc::new(EventLog::open(dir.path(), 1 << 20, 1).unwrap()),
        enabled: true,
        limiter: AccountLimiter::with_clock(per_hour, Arc::new(move || now.load(Ordering::SeqCst))),
    };
    Agent {
        writeback,
        forest,
        _dir: dir,
    }
}

fn header(op: u8) -> RequestHeader {
    RequestHeader {
        tenant: "contoso".into(),
        agent_key_id: KeyId([0; 8]),
        portal_key_id: KeyId([0; 8]),
        agent_id: "dc1-agent".into(),
        request_id: "req-eligibility".into(),
        operation: op,
        issued_at_ms: 0,
        expires_at_ms: 1,
    }
}

fn sam(name: &str) -> Anchor {
    Anchor::UserPrincipalName(format!("{name}@contoso.example"))
}

async fn policy(a: &Agent, name: &str) -> ReplyBody {
    let body = RequestBody::without_passwords(sam(name));
    a.writeback
        .apply(&header(operation::GET_PASSWORD_POLICY), &body)
        .await
}

/// The operation's reply as a verdict: `ok` for success and for a refusal
/// by the password rules (eligibility leaves those to the write), else the
/// outcome's name.
fn verdict(reply: &ReplyBody) -> String {
    match reply.outcome {
        outcome::SUCCESS
        | outcome::PASSWORD_TOO_SHORT
        | outcome::FAILS_COMPLEXITY
        | outcome::IN_HISTORY
        | outcome::POLICY_REFUSED
        | outcome::CHANGED_TOO_RECENTLY => "ok".into(),
        other => outcome_name(other).into(),
    }
}

/// The policy reply's (locked, reset, change, unlock), each checked against
/// the operation run on a fresh forest prepared the same way.
async fn agree(name: &str, current: &str, prepare: &dyn Fn(&EmbeddedDirectory)) -> [String; 4] {
    let a = agent(0, prepare).await;
    let reply = policy(&a, name).await;
    assert_eq!(reply.outcome, outcome::SUCCESS, "{name}: {reply:?}");
    let said = ["locked", "reset", "change", "unlock"].map(|k| {
        reply
            .detail(k)
            .unwrap_or_else(|| panic!("{name}: no {k} in {reply:?}"))
            .to_owned()
    });
    assert!(
        reply.encode().unwrap().len() == envelope::body::REPLY_BLOCK,
        "{name}: the reply outgrew its block"
    );
    assert!(
        reply.details.iter().all(|(_, v)| !v.contains("DC=")),
        "{name}: a DN in {reply:?}"
    );

    let mut done = Vec::new();
    // The reference portal's reset: with the unlock flag.
    let a = agent(0, prepare).await;
    let mut body = RequestBody::reset(sam(name), Password::new(NEW));
    body.unlock = true;
    done.push(
        a.writeback
            .apply(&header(operation::RESET_PASSWORD), &body)
            .await,
    );
    let a = agent(0, prepare).await;
    let body = RequestBody::change(sam(name), Password::new(current), Password::new(NEW));
    done.push(
        a.writeback
            .apply(&header(operation::CHANGE_PASSWORD), &body)
            .await,
    );
    let a = agent(0, prepare).await;
    let body = RequestBody::without_passwords(sam(name));
    done.push(
        a.writeback
            .apply(&header(operation::UNLOCK_ACCOUNT), &body)
            .await,
    );
    let done: Vec<String> = done.iter().map(verdict).collect();
    assert_eq!(
        said[1..],
        done[..],
        "{name}: eligibility against the operations"
    );
    said
}

fn strs(v: [&str; 4]) -> [String; 4] {
    v.map(str::to_owned)
}

fn nothing(_: &EmbeddedDirectory) {}

#[tokio::test]
async fn the_policy_reply_says_what_each_operation_then_answers() {
    assert_eq!(
        agree("ada", "Analytical-Engine-1843", &nothing).await,
        strs(["false", "ok", "ok", "ok"]),
        "ordinary"
    );
    assert_eq!(
        agree("edsger", "Shortest-Path-1956", &nothing).await,
        strs(["false", "ACCOUNT_DISABLED", "ACCOUNT_DISABLED", "ok"]),
        "disabled"
    );
    assert_eq!(
        agree("admin", "Apollo-Guidance-1969", &nothing).await,
        strs(["false", "PROTECTED_ACCOUNT", "ok", "PROTECTED_ACCOUNT"]),
        "protected (AdminSDHolder lets a user change)"
    );
    assert_eq!(
        agree("charles", "Difference-Engine-1822", &nothing).await,
        strs(["false", "PERMISSION_DENIED", "ok", "ok"]),
        "no Reset Password (a deny on the user object)"
    );
    assert_eq!(
        agree("alan", "Enigma-Bombe-1940", &nothing).await,
        strs([
            "false",
            "PERMISSION_DENIED",
            "PERMISSION_DENIED",
            "PERMISSION_DENIED"
        ]),
        "no rights at all (inheritance blocked)"
    );
    assert_eq!(
        agree("barbara", "Substitution-1987", &nothing).await,
        strs(["true", "ok", "ACCOUNT_LOCKED", "ok"]),
        "locked, with Write lockoutTime"
    );
    let no_lockout_right = |f: &EmbeddedDirectory| {
        f.add_ace(
            BARBARA,
            Ace::deny(DirectoryRight::WriteLockoutTime, SVC, false),
        )
        .unwrap();
    };
    assert_eq!(
        agree("barbara", "Substitution-1987", &no_lockout_right).await,
        strs([
            "true",
            "PERMISSION_DENIED",
            "ACCOUNT_LOCKED",
            "PERMISSION_DENIED"
        ]),
        "locked, without Write lockoutTime"
    );
    // Katherine changed her password at open: the minimum age is a rule of
    // the password policy, answered by the change itself.
    assert_eq!(
        agree("katherine", "Orbital-Mechanics-1962", &nothing).await,
        strs(["false", "ok", "ok", "ok"]),
    );
}

#[tokio::test]
async fn not_found_and_the_switch_stay_as_they_were() {
    let a = agent(0, &nothing).await;
    let r = policy(&a, "nobody").await;
    assert_eq!(r.outcome, outcome::USER_NOT_FOUND, "{r:?}");
    // Deleted since the import: found gone, as before.
    a.forest.delete_user(CHARLES).unwrap();
    let r = policy(&a, "charles").await;
    assert_eq!(r.outcome, outcome::USER_NOT_FOUND, "{r:?}");

    let mut a = agent(0, &nothing).await;
    a.writeback.enabled = false;
    let r = policy(&a, "ada").await;
    assert_eq!(r.outcome, outcome::WRITEBACK_DISABLED, "{r:?}");
    assert!(r.details.is_empty());
}

/// The size of a reply's fields, padding aside.
fn fields(reply: &ReplyBody) -> usize {
    reply
        .encode()
        .unwrap()
        .iter()
        .rposition(|b| *b != 0)
        .unwrap()
        + 1
}

#[test]
fn the_longest_policy_reply_fits_its_block() {
    let refused = Eligibility {
        enabled: true,
        locked: false,
        protected: false,
        rights: Default::default(),
        container: String::new(),
    };
    let known = |source: String, max_age_secs| {
        ResultantPolicy::Known(Policy {
            source,
            min_length: 127,
            complexity: true,
            history_length: 24,
            min_age_secs: 998 * 86_400,
            max_age_secs,
        })
    };
    // The Default Domain Policy with every rule: the whole message.
    let ordinary = policy_and_eligibility(
        &known("Default Domain Policy".into(), 999 * 86_400),
        Some(&refused),
    );
    assert!(
        ordinary.message.contains("letters without case"),
        "{ordinary:?}"
    );
    assert!(fields(&ordinary) <= envelope::body::REPLY_BLOCK);
    // A PSO name of AD's longest CN (64), every rule shown, ages in the
    // hundreds of days or never: the complexity rule is named, not spelt out.
    for max_age in [0, 999 * 86_400] {
        let reply = policy_and_eligibility(&known("P".repeat(64), max_age), Some(&refused));
        assert!(
            fields(&reply) <= envelope::body::REPLY_BLOCK,
            "{} bytes: {reply:?}",
            fields(&reply)
        );
        assert!(reply.message.contains("three kinds"), "{reply:?}");
        assert_eq!(reply.detail("complexity"), Some("true"));
        assert_eq!(reply.detail("unlock"), Some("PERMISSION_DENIED"));
    }
}

#[tokio::test]
async fn refusals_by_the_password_rules_do_not_use_up_the_hour() {
    let a = agent(2, &nothing).await;
    let reset = |new: &'static str| {
        let body = RequestBody::reset(sam("ada"), Password::new(new));
        let w = &a.writeback;
        async move { w.apply(&header(operation::RESET_PASSWORD), &body).await }
    };
    // Too short, too simple, again and again: none counts.
    for _ in 0..3 {
        assert_eq!(reset("short").await.outcome, outcome::PASSWORD_TOO_SHORT);
        assert_eq!(
            reset("alllowercaseletters").await.outcome,
            outcome::FAILS_COMPLEXITY
        );
    }
    // Katherine's minimum age refuses her change: not counted either.
    for _ in 0..3 {
        let body = RequestBody::change(
            sam("katherine"),
            Password::new("Orbital-Mechanics-1962"),
            Password::new(NEW),
        );
        let r = a
            .writeback
            .apply(&header(operation::CHANGE_PASSWORD), &body)
            .await;
        assert_eq!(r.outcome, outcome::CHANGED_TOO_RECENTLY, "{r:?}");
    }
    // A wrong current password counts: guessing stays throttled.
    let guess = RequestBody::change(sam("ada"), Password::new("Guess-1"), Password::new(NEW));
    let r = a
        .writeback
        .apply(&header(operation::CHANGE_PASSWORD), &guess)
        .await;
    assert_eq!(r.outcome, outcome::WRONG_CURRENT_PASSWORD);
    assert_eq!(reset(NEW).await.outcome, outcome::SUCCESS);
    assert_eq!(reset("short").await.outcome, outcome::RATE_LIMITED);
    // So do refusals that do not depend on the password: a disabled account.
    let disabled = || RequestBody::reset(sam("edsger"), Password::new(NEW));
    for expected in [
        outcome::ACCOUNT_DISABLED,
        outcome::ACCOUNT_DISABLED,
        outcome::RATE_LIMITED,
    ] {
        let r = a
            .writeback
            .apply(&header(operation::RESET_PASSWORD), &disabled())
            .await;
        assert_eq!(r.outcome, expected, "{r:?}");
    }
}

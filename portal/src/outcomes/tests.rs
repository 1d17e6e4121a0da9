use std::collections::HashMap;

use envelope::body::outcome;

use super::*;

fn en(msg: &Msg) -> String {
    Lang::En.text(msg)
}

fn reply(code: u16, message: &str, details: &[(&str, &str)]) -> ReplyBody {
    ReplyBody {
        outcome: code,
        message: message.to_owned(),
        details: details
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

fn say(code: u16, details: &[(&str, &str)]) -> String {
    en(&refusal(
        &reply(code, "the agent's own words", details),
        Task::Change,
        "ada@contoso.example",
        true,
    ))
}

/// An outcome code, its details, and words the sentence must contain.
type Case = (u16, Vec<(&'static str, &'static str)>, Vec<&'static str>);

#[test]
fn every_outcome_has_its_own_sentence_built_from_its_details() {
    let cases: Vec<Case> = vec![
        (
            outcome::PASSWORD_TOO_SHORT,
            vec![("min_length", "12")],
            vec!["The password must have at least 12 characters."],
        ),
        (
            outcome::FAILS_COMPLEXITY,
            vec![("missing", "uppercase letter, digit")],
            vec!["add an uppercase letter or a digit"],
        ),
        (
            outcome::FAILS_COMPLEXITY,
            vec![("missing", "uppercase letter, digit, symbol")],
            vec!["from two of these: uppercase letters, digits, symbols"],
        ),
        (
            outcome::FAILS_COMPLEXITY,
            vec![("contains", "Lovelace"), ("contains_kind", "display_name")],
            vec![
                "must not contain a part of your full name",
                "\u{201c}Lovelace\u{201d}",
            ],
        ),
        (
            outcome::FAILS_COMPLEXITY,
            vec![("contains", "ada"), ("contains_kind", "account_name")],
            vec!["must not contain your account name (\u{201c}ada\u{201d})"],
        ),
        (
            outcome::IN_HISTORY,
            vec![("history_length", "24")],
            vec!["differ from your last 24 passwords"],
        ),
        (
            outcome::CHANGED_TOO_RECENTLY,
            vec![("allowed_after_unix_ms", "1764151200000")],
            vec!["changed too recently", "after 2025-11-26 10:00:00 UTC"],
        ),
        (
            outcome::WRONG_CURRENT_PASSWORD,
            vec![],
            vec!["current password is not correct"],
        ),
        (
            outcome::ACCOUNT_DISABLED,
            vec![],
            vec!["account is disabled"],
        ),
        (
            outcome::ACCOUNT_LOCKED,
            vec![],
            vec!["locked out", "Unlock it first"],
        ),
        (
            outcome::USER_NOT_FOUND,
            vec![],
            vec!["No account named \u{201c}ada@contoso.example\u{201d} was found"],
        ),
        (
            outcome::SEVERAL_MATCHES,
            vec![("forests", "contoso,fabrikam")],
            vec!["Several accounts", "resolve the duplicate"],
        ),
        (
            outcome::PERMISSION_DENIED,
            vec![("right", "Reset Password")],
            vec![
                "not allowed to change this account",
                "lacks the Reset Password permission",
                "Your help desk can fix this",
            ],
        ),
        (
            outcome::PROTECTED_ACCOUNT,
            vec![],
            vec!["protected administrator account", "cannot be changed"],
        ),
        (
            outcome::WRITEBACK_DISABLED,
            vec![],
            vec!["write-back is turned off"],
        ),
        (
            outcome::DIRECTORY_UNAVAILABLE,
            vec![],
            vec!["directory could not be reached"],
        ),
        (
            outcome::RATE_LIMITED,
            vec![("limit", "5"), ("retry_after_secs", "130")],
            vec!["at most 5 per hour", "try again in 3 minutes"],
        ),
        (
            outcome::POLICY_REFUSED,
            vec![("history_length", "24")],
            vec![
                "may be one of your last 24 passwords",
                "Nothing was changed",
            ],
        ),
        (
            outcome::POLICY_REFUSED,
            vec![],
            vec![
                "password rules refused this password",
                "Nothing was changed",
            ],
        ),
        (
            outcome::NOT_APPLIED,
            vec![("reason", "REPLAYED")],
            vec![
                "could not confirm whether your password was changed",
                "did not act on this delivery of your request.",
                "Try signing in with your new password",
            ],
        ),
    ];
    for (code, details, expected) in &cases {
        let sentence = say(*code, details);
        for words in expected {
            assert!(
                sentence.contains(words),
                "outcome {code}: {words:?} not in {sentence:?}"
            );
        }
        assert!(
            !sentence.contains("agent's own words"),
            "outcome {code} fell back: {sentence:?}"
        );
    }
    // Every refusal code 1..=16 is covered above.
    let mut covered: Vec<u16> = cases.iter().map(|(c, ..)| *c).collect();
    covered.dedup();
    assert_eq!(covered, (1..=16).collect::<Vec<_>>());
}

/// NOT_APPLIED is sealed, but covers one delivery only: a broker can replay
/// an envelope to obtain a genuine one. Never "nothing was changed".
#[test]
fn not_applied_is_not_shown_as_nothing_changed() {
    for reason in ["REPLAYED", "DUPLICATE_REQUEST_ID", "REQUEST_ID_MISMATCH"] {
        for task in [Task::Reset, Task::Change, Task::Unlock] {
            let sentence = en(&refusal(
                &reply(
                    outcome::NOT_APPLIED,
                    "nothing was done with this delivery",
                    &[("reason", reason)],
                ),
                task,
                "ada@contoso.example",
                true,
            ));
            assert!(
                !sentence.to_lowercase().contains("nothing was"),
                "{sentence}"
            );
            assert!(sentence.contains("could not confirm"), "{sentence}");
        }
    }
}

/// The agent's message is free text from on-prem: never shown, whatever it
/// holds; missing details give a general sentence instead.
#[test]
fn missing_details_never_show_the_agents_words() {
    for code in [
        outcome::PASSWORD_TOO_SHORT,
        outcome::FAILS_COMPLEXITY,
        outcome::IN_HISTORY,
        outcome::CHANGED_TOO_RECENTLY,
        outcome::PERMISSION_DENIED,
        outcome::RATE_LIMITED,
        99,
    ] {
        let sentence = say(code, &[]);
        assert!(!sentence.contains("agent's own words"), "{sentence}");
        assert!(sentence.ends_with('.'), "{sentence}");
    }
}

/// A DN in the message or a detail reaches no sentence, in either mode.
#[test]
fn no_dn_reaches_a_sentence() {
    let dn = "CN=Ada Lovelace,OU=Staff,DC=contoso,DC=example";
    for code in 1..=17 {
        for verified in [true, false] {
            let r = reply(
                code,
                &format!("refused for {dn}"),
                &[
                    ("right", dn),
                    ("contains", dn),
                    ("reason", dn),
                    ("forests", dn),
                ],
            );
            for task in [Task::Reset, Task::Change, Task::Unlock] {
                for lang in Lang::ALL {
                    let sentence = lang.text(&refusal(&r, task, "ada", verified));
                    assert!(!sentence.contains("DC="), "{code}: {sentence}");
                    assert!(!sentence.contains("OU="), "{code}: {sentence}");
                }
            }
        }
    }
    assert_eq!(directory_free("Reset Password"), Some("Reset Password"));
    assert_eq!(directory_free("Executives-PSO"), Some("Executives-PSO"));
    assert_eq!(directory_free("cn=x"), None);
    assert_eq!(directory_free("in ou=Staff"), None);
}

/// To a visitor whose identity is not verified, an unknown account and the
/// refusals that only an existing account gets all read the same.
#[test]
fn an_unverified_visitor_cannot_tell_accounts_apart() {
    let codes = [
        outcome::USER_NOT_FOUND,
        outcome::ACCOUNT_DISABLED,
        outcome::PROTECTED_ACCOUNT,
        outcome::PERMISSION_DENIED,
        outcome::SEVERAL_MATCHES,
        99,
    ];
    for task in [Task::Reset, Task::Change, Task::Unlock] {
        let sentences: Vec<Msg> = codes
            .iter()
            .map(|c| {
                refusal(
                    &reply(*c, "", &[("right", "Reset Password")]),
                    task,
                    "ada",
                    false,
                )
            })
            .collect();
        assert!(
            sentences.iter().all(|m| *m == Msg::CannotHere(task)),
            "{sentences:?}"
        );
        for outcome in [
            Some(Outcome::AccountDisabled),
            Some(Outcome::ProtectedAccount),
            Some(Outcome::PermissionDenied),
            None,
        ] {
            assert_eq!(
                ineligible(outcome, task, "ada", false),
                Msg::CannotHere(task)
            );
        }
    }
    let text = en(&Msg::CannotHere(Task::Reset));
    assert!(
        text.starts_with("This account cannot be reset here."),
        "{text}"
    );
    // Verified, the same refusals are specific.
    assert_eq!(
        ineligible(Some(Outcome::AccountDisabled), Task::Reset, "ada", true),
        Msg::AccountDisabled
    );
    assert_eq!(
        en(&ineligible(
            Some(Outcome::AccountLocked),
            Task::Change,
            "ada",
            false
        )),
        en(&Msg::AccountLocked(Task::Change))
    );
}

fn relay(reason: Reason, metadata: &[(&str, &str)]) -> Trouble {
    Trouble::Sealed(SealedError::Relay(ClientError::Relay {
        reason,
        message: "detail for the log".into(),
        metadata: metadata
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<HashMap<_, _>>(),
    }))
}

/// The sentence of a failure the user may retry, which must not claim
/// that nothing was changed: it is the broker's word.
fn try_again(f: Failure) -> String {
    match f {
        Failure::TryAgain(m) => {
            let s = en(&m);
            assert!(!s.to_lowercase().contains("nothing was changed"), "{s}");
            s
        }
        other => panic!("expected TryAgain, got {other:?}"),
    }
}

#[test]
fn broker_failures_say_what_happened_to_the_password() {
    let reset = |t: &Trouble| failure(t, Task::Reset, true);
    let not_connected = try_again(reset(&relay(Reason::NoAgentOnline, &[])));
    assert!(
        not_connected.contains("on-premises service is not connected"),
        "{not_connected}"
    );
    assert!(
        not_connected.contains("We could not confirm whether your password was changed"),
        "{not_connected}"
    );
    assert!(
        not_connected.contains("Try signing in with your new password"),
        "{not_connected}"
    );
    assert!(
        try_again(reset(&relay(Reason::WritebackDisabled, &[])))
            .contains("write-back is turned off")
    );
    assert!(
        try_again(reset(&relay(
            Reason::RateLimited,
            &[("retry_after_ms", "30000")]
        )))
        .contains("in 30 seconds")
    );
    assert!(try_again(reset(&relay(Reason::AgentsBusy, &[]))).contains("busy"));
    assert!(try_again(reset(&relay(Reason::ShuttingDown, &[]))).contains("restarting"));
    assert!(
        try_again(reset(&Trouble::Sealed(SealedError::Relay(
            ClientError::Rpc(tonic::Status::unimplemented("no such method"))
        ))))
        .contains("cannot be reached")
    );
    let unlock = try_again(failure(
        &relay(Reason::NoAgentOnline, &[]),
        Task::Unlock,
        true,
    ));
    assert!(
        unlock.contains("whether your account was unlocked"),
        "{unlock}"
    );
    match reset(&relay(Reason::OutcomeUnknown, &[])) {
        Failure::Unknown { message, can_check } => {
            assert!(can_check);
            assert!(en(&message).contains("could not confirm whether your password was changed"));
        }
        other => panic!("{other:?}"),
    }
    // No reply key is kept after these: no "Check again".
    for trouble in [relay(Reason::DeadlineExceeded, &[]), Trouble::NoAnswer] {
        assert!(matches!(
            reset(&trouble),
            Failure::Unknown {
                can_check: false,
                ..
            }
        ));
    }
    // A policy query changes nothing, whatever became of it.
    assert!(
        try_again(failure(&Trouble::NoAnswer, Task::Reset, false))
            .contains("did not answer in time")
    );
    assert_eq!(
        try_again(failure(
            &relay(Reason::NoAgentOnline, &[]),
            Task::Reset,
            false
        )),
        "The password service reports that the on-premises service is not connected. \
         Please try again later."
    );
    // Operator problems, on the broker's word: not confirmed.
    for trouble in [
        relay(Reason::BadSignature, &[]),
        relay(Reason::UnknownTenant, &[]),
        Trouble::Sealed(SealedError::Refused {
            refusal: Some(relay_client::EnvelopeRefusal::UnknownSender),
            message: "portal key unknown".into(),
        }),
    ] {
        let f = reset(&trouble);
        assert_eq!(
            f,
            Failure::Misconfigured {
                nothing_sent: false
            }
        );
        let text = f.text(Lang::En);
        assert!(!text.contains("nothing was changed"), "{text}");
    }
    // ...and known here, before anything was sent.
    for trouble in [
        Trouble::Sealed(SealedError::KeyNotTrusted {
            offered: "0011223344556677".into(),
        }),
        Trouble::Sealed(SealedError::NoAgentKey),
    ] {
        let f = reset(&trouble);
        assert_eq!(f, Failure::Misconfigured { nothing_sent: true });
        assert_eq!(f.message(), Msg::Misconfigured);
    }
    assert!(
        matches!(failure(&relay(Reason::OutcomeUnknown, &[]), Task::Unlock, true),
            Failure::Unknown { message, .. } if en(&message).contains("whether your account was unlocked"))
    );
}

#[test]
fn check_again_keeps_the_question_open_until_answered() {
    let pending = check_failure(&relay(Reason::OutcomePending, &[]), Task::Reset);
    assert!(matches!(
        pending,
        Failure::Unknown {
            can_check: true,
            ..
        }
    ));
    let lost = check_failure(
        &Trouble::Sealed(SealedError::NotPending("portal-0".into())),
        Task::Reset,
    );
    assert!(matches!(
        lost,
        Failure::Unknown {
            can_check: false,
            ..
        }
    ));
    let gone = check_failure(&relay(Reason::OutcomeNotFound, &[]), Task::Reset);
    assert!(matches!(
        gone,
        Failure::Unknown {
            can_check: false,
            ..
        }
    ));
}

use super::*;
use crate::Category;

const SAMBA: &str = "0000052D: Constraint violation - check_password_restrictions: ";
const WINDOWS: &str = "0000052D: SvcErr: DSID-031A126C, problem 5003 (WILL_NOT_PERFORM), data 0";

fn policy(history_length: u32, min_age_secs: u64) -> ResultantPolicy {
    ResultantPolicy::Known(Policy {
        source: "Default Domain Policy".into(),
        min_length: 7,
        complexity: true,
        history_length,
        min_age_secs,
        max_age_secs: 0,
    })
}

fn refused(diagnostic: &str, policy: &ResultantPolicy, change: bool, new: &str) -> Refusal {
    attribute(
        &Refused {
            diagnostic,
            policy,
            sam: "pol1",
            display_name: "Pol One",
            pwd_last_set_ms: 1_000_000,
            now_ms: 2_000_000,
            change,
        },
        new,
    )
}

#[test]
fn samba_names_the_rule_and_the_agent_says_that_rule() {
    let p = policy(24, 0);
    assert_eq!(
        refused(
            &format!(
                "{SAMBA}the password is too short. It should be equal or longer than 14 characters!"
            ),
            &p,
            false,
            "Ab1!"
        ),
        Refusal::TooShort { min_length: 14 }
    );
    // "correct horse battery 9": a space is in no category of AD's rule.
    assert_eq!(
        refused(
            &format!("{SAMBA}the password does not meet the complexity criteria!"),
            &p,
            false,
            "correct horse battery 9"
        ),
        Refusal::FailsComplexity {
            missing: vec![Category::Uppercase, Category::Symbol],
            contains: None
        }
    );
    assert_eq!(
        refused(
            &format!("{SAMBA}the password was already used (previous password)!"),
            &p,
            true,
            "Long-Enough-Passw0rd"
        ),
        Refusal::InHistory { history_length: 24 }
    );
    let young = policy(24, 86_400);
    assert_eq!(
        refused(
            &format!("{SAMBA}password is too young to change!"),
            &young,
            true,
            "Long-Enough-Passw0rd"
        ),
        Refusal::ChangedTooRecently {
            allowed_after_unix_ms: 1_000_000 + 86_400_000
        }
    );
}

#[test]
fn a_refusal_no_rule_explains_is_never_called_history() {
    let p = policy(24, 0);
    // Windows names no rule; length and complexity pass: on a reset, AD
    // checks no history, so only a filter or a banned list remains.
    assert_eq!(
        refused(WINDOWS, &p, false, "Long-Enough-Passw0rd"),
        Refusal::PolicyRefused {
            history_length: None
        }
    );
    // On a change the history may be the reason: said as a possibility.
    assert_eq!(
        refused(WINDOWS, &p, true, "Long-Enough-Passw0rd"),
        Refusal::PolicyRefused {
            history_length: Some(24)
        }
    );
    // Rules the agent can check itself are named, also without a text.
    assert_eq!(
        refused(WINDOWS, &p, false, "Ab1!"),
        Refusal::TooShort { min_length: 7 }
    );
    assert!(matches!(
        refused(WINDOWS, &p, false, "correct horse battery 9"),
        Refusal::FailsComplexity { .. }
    ));
}

#[test]
fn an_unreadable_policy_is_never_read_as_zeros() {
    let unknown = ResultantPolicy::Unreadable {
        source: "Executives-PSO".into(),
    };
    // The DC's number is used when it gives one.
    assert_eq!(
        refused(
            &format!(
                "{SAMBA}the password is too short. It should be equal or longer than 14 characters!"
            ),
            &unknown,
            false,
            "Ab1!-short"
        ),
        Refusal::TooShort { min_length: 14 }
    );
    for change in [false, true] {
        assert_eq!(
            refused(WINDOWS, &unknown, change, "x"),
            Refusal::PolicyRefused {
                history_length: None
            }
        );
    }
    assert_eq!(
        refused(
            &format!("{SAMBA}the password was already used (in history)!"),
            &unknown,
            true,
            "Long-Enough-Passw0rd"
        ),
        Refusal::PolicyRefused {
            history_length: None
        }
    );
}

#[test]
fn complexity_the_dc_counts_differently_is_not_given_a_made_up_rule() {
    // Samba counts `€` in its fifth category, AD in none: if a DC refuses
    // a password the documented rule accepts, no category is named.
    assert_eq!(
        refused(
            &format!("{SAMBA}the password does not meet the complexity criteria!"),
            &policy(0, 0),
            false,
            "Abcdefgh1"
        ),
        Refusal::FailsComplexity {
            missing: Vec::new(),
            contains: None
        }
    );
}

#[test]
fn never_expiring_and_unreadable_settings() {
    assert_eq!(interval_secs(i64::MIN), 0);
    assert_eq!(interval_secs(0), 0);
    assert_eq!(interval_secs(-36_288_000_000_000), 42 * 86_400);
    let mut entry = SearchEntry {
        dn: "CN=Execs,CN=Password Settings Container,CN=System,DC=x".into(),
        attrs: Default::default(),
        bin_attrs: Default::default(),
    };
    assert_eq!(pso_settings(&entry), None);
    for (k, v) in [
        ("cn", "Execs"),
        ("msDS-MinimumPasswordLength", "14"),
        ("msDS-PasswordComplexityEnabled", "TRUE"),
        ("msDS-PasswordHistoryLength", "5"),
        ("msDS-MinimumPasswordAge", "0"),
        ("msDS-MaximumPasswordAge", "-9223372036854775808"),
    ] {
        entry.attrs.insert(k.into(), vec![v.into()]);
    }
    let p = pso_settings(&entry).expect("readable");
    assert_eq!((p.min_length, p.history_length, p.max_age_secs), (14, 5, 0));
    assert_eq!(rdn_value(&entry.dn), "Execs");
}

//! The password policy of one account, from the details of the agent's
//! GET_PASSWORD_POLICY answer (`source`, `min_length`, `complexity`,
//! `history_length`, `min_age_secs`, `max_age_secs`), in plain words; and
//! whether the task can succeed at all (`locked`, and `reset`, `change`,
//! `unlock`: `ok` or the outcome the operation would be refused with now,
//! whatever the password), so a user who cannot succeed is told before
//! typing a password.
//!
//! Between step 2 and its re-renders the policy travels in a hidden form
//! field, so the portal keeps no state per user. It is only shown, never
//! trusted: a user who edits it misleads only themself, and the agent
//! enforces the real policy.

use envelope::{Outcome, ReplyBody};
use serde::{Deserialize, Serialize};

use crate::Task;
use crate::i18n::{Lang, Msg};
use crate::outcomes::directory_free;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PolicyView {
    /// Where the policy comes from: "Default Domain Policy" or a PSO's name.
    pub source: Option<String>,
    pub min_length: Option<u32>,
    pub complexity: Option<bool>,
    pub history_length: Option<u32>,
    pub min_age_secs: Option<u64>,
    pub max_age_secs: Option<u64>,
    /// The account is locked out: step 2 of a reset says it unlocks it.
    pub locked: bool,
}

/// Whether the task can succeed, from the policy answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eligibility {
    /// Go on to the password step. An agent that predates the eligibility
    /// details lands here too: the operation itself refuses if it must.
    Eligible { locked: bool },
    /// Refused whatever the password, with this outcome (`None`: a name
    /// this portal does not know, a newer agent's).
    Refused(Option<Outcome>),
}

/// What the answer says of `task`: its own detail (`reset`, `change`,
/// `unlock`), then the lockout, which a change cannot get past (a reset
/// clears it, and an unlock is what clears it).
pub fn eligibility(reply: &ReplyBody, task: Task) -> Eligibility {
    let locked = detail(reply, "locked").map(str::trim) == Some("true");
    match detail(reply, task.name()).map(str::trim) {
        None | Some("ok") => {}
        Some(name) => {
            let known = Outcome::ALL
                .iter()
                .copied()
                .find(|o| o.name() == name && *o != Outcome::Success);
            return Eligibility::Refused(known);
        }
    }
    if locked && task == Task::Change {
        return Eligibility::Refused(Some(Outcome::AccountLocked));
    }
    Eligibility::Eligible { locked }
}

/// A detail of a reply, by key.
pub fn detail<'a>(reply: &'a ReplyBody, key: &str) -> Option<&'a str> {
    reply
        .details
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

impl PolicyView {
    pub fn from_reply(reply: &ReplyBody) -> PolicyView {
        let number = |key| detail(reply, key).and_then(|v| v.parse().ok());
        PolicyView {
            // A PSO's name is fine to show; a DN is not.
            source: detail(reply, "source")
                .and_then(directory_free)
                .map(str::to_owned),
            min_length: number("min_length").and_then(|n: u64| u32::try_from(n).ok()),
            complexity: detail(reply, "complexity").and_then(|v| v.parse().ok()),
            history_length: number("history_length").and_then(|n: u64| u32::try_from(n).ok()),
            min_age_secs: number("min_age_secs"),
            max_age_secs: number("max_age_secs"),
            locked: eligibility(reply, Task::Reset) == Eligibility::Eligible { locked: true },
        }
    }

    /// The rules, one sentence each, in the order users meet them. An
    /// administrative reset skips history and minimum age (as Active
    /// Directory does), so the reset page does not list them. Empty when
    /// no detail is understood: the agent's own sentence is not shown (it
    /// is free text from on-prem, in its language), the page says the
    /// rules will be named on submission instead.
    pub fn rules(&self, task: Task, lang: Lang) -> Vec<String> {
        let mut rules = Vec::new();
        if let Some(n) = self.min_length.filter(|n| *n > 0) {
            rules.push(Msg::RuleMinLength(n));
        }
        if self.complexity == Some(true) {
            rules.push(Msg::RuleComplexity);
            // Advice, not a promise: Windows domains refuse the account name
            // and parts of the full name, Samba domains do not.
            rules.push(Msg::RuleAvoidName);
        }
        if task == Task::Change {
            if let Some(n) = self.history_length.filter(|n| *n > 0) {
                rules.push(Msg::RuleHistory(n));
            }
            if let Some(secs) = self.min_age_secs.filter(|s| *s > 0) {
                rules.push(Msg::RuleMinAge(secs));
            }
        }
        if let Some(secs) = self.max_age_secs.filter(|s| *s > 0) {
            rules.push(Msg::RuleMaxAge(secs));
        }
        rules.iter().map(|m| lang.text(m)).collect()
    }

    /// For the hidden form field.
    pub fn to_hidden(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// From the hidden form field; `None` when it was tampered into nonsense.
    pub fn from_hidden(text: &str) -> Option<PolicyView> {
        serde_json::from_str(text).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contoso() -> ReplyBody {
        let d = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        ReplyBody {
            outcome: 0,
            message: "Your new password needs at least 8 characters.".into(),
            details: vec![
                d("source", "Default Domain Policy"),
                d("min_length", "8"),
                d("complexity", "true"),
                d("history_length", "24"),
                d("min_age_secs", "86400"),
                d("max_age_secs", "3628800"),
            ],
        }
    }

    #[test]
    fn every_detail_becomes_a_rule() {
        let policy = PolicyView::from_reply(&contoso());
        assert_eq!(policy.source.as_deref(), Some("Default Domain Policy"));
        let change = policy.rules(Task::Change, Lang::En).join(" ");
        for words in [
            "At least 8 characters.",
            "three of these groups",
            "account name",
            "last 24 passwords",
            "once every 1 day.",
            "expires after 42 days.",
        ] {
            assert!(change.contains(words), "{words:?} missing from {change}");
        }
        let reset = policy.rules(Task::Reset, Lang::En).join(" ");
        assert!(reset.contains("At least 8 characters."));
        assert!(!reset.contains("last 24") && !reset.contains("once every"));
    }

    #[test]
    fn the_agents_own_words_and_dns_are_never_shown() {
        let mut reply = contoso();
        reply.details.clear();
        reply.message = "No PSO at CN=Ada,OU=Staff,DC=contoso,DC=example".into();
        let policy = PolicyView::from_reply(&reply);
        assert!(policy.rules(Task::Reset, Lang::En).is_empty());
        reply.details.push((
            "source".into(),
            "CN=Execs,CN=Password Settings Container".into(),
        ));
        assert_eq!(PolicyView::from_reply(&reply).source, None);
    }

    #[test]
    fn an_unreadable_policy_shows_no_numbers() {
        let reply = ReplyBody {
            outcome: 0,
            message: "The password rules for this account could not be read.".into(),
            details: vec![
                ("source".into(), "Executives-PSO".into()),
                ("settings_readable".into(), "false".into()),
            ],
        };
        let policy = PolicyView::from_reply(&reply);
        assert!(policy.rules(Task::Change, Lang::En).is_empty());
    }

    #[test]
    fn eligibility_comes_from_the_tasks_own_detail_and_the_lockout() {
        let with = |details: &[(&str, &str)]| ReplyBody {
            outcome: 0,
            message: String::new(),
            details: details
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        let older_agent = with(&[("min_length", "8")]);
        for task in [Task::Reset, Task::Change] {
            assert_eq!(
                eligibility(&older_agent, task),
                Eligibility::Eligible { locked: false }
            );
        }
        let disabled = with(&[("reset", "ACCOUNT_DISABLED"), ("change", "ok")]);
        assert_eq!(
            eligibility(&disabled, Task::Reset),
            Eligibility::Refused(Some(Outcome::AccountDisabled))
        );
        assert_eq!(
            eligibility(&disabled, Task::Change),
            Eligibility::Eligible { locked: false }
        );
        let newer = with(&[("change", "SOMETHING_NEW"), ("reset", "SUCCESS")]);
        assert_eq!(
            eligibility(&newer, Task::Change),
            Eligibility::Refused(None)
        );
        assert_eq!(eligibility(&newer, Task::Reset), Eligibility::Refused(None));
        let locked = with(&[("locked", "true"), ("reset", "ok"), ("change", "ok")]);
        assert_eq!(
            eligibility(&locked, Task::Reset),
            Eligibility::Eligible { locked: true }
        );
        assert_eq!(
            eligibility(&locked, Task::Change),
            Eligibility::Refused(Some(Outcome::AccountLocked))
        );
        assert!(PolicyView::from_reply(&locked).locked);
        assert!(!PolicyView::from_reply(&disabled).locked);
    }

    #[test]
    fn the_hidden_field_round_trips_and_nonsense_is_dropped() {
        let policy = PolicyView::from_reply(&contoso());
        assert_eq!(PolicyView::from_hidden(&policy.to_hidden()), Some(policy));
        assert_eq!(PolicyView::from_hidden("<script>"), None);
    }
}

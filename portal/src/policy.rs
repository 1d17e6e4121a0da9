//! The password policy of one account, from the details of the agent's
//! GET_PASSWORD_POLICY answer (`source`, `min_length`, `complexity`,
//! `history_length`, `min_age_secs`, `max_age_secs`), in plain words.
//!
//! Between step 2 and its re-renders the policy travels in a hidden form
//! field, so the portal keeps no state per user. It is only shown, never
//! trusted: a user who edits it misleads only themself, and the agent
//! enforces the real policy.

use envelope::ReplyBody;
use serde::{Deserialize, Serialize};

use crate::Task;

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
    /// The agent's own sentence, shown when no detail is understood.
    pub message: String,
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
            source: detail(reply, "source").map(str::to_owned),
            min_length: number("min_length").and_then(|n: u64| u32::try_from(n).ok()),
            complexity: detail(reply, "complexity").and_then(|v| v.parse().ok()),
            history_length: number("history_length").and_then(|n: u64| u32::try_from(n).ok()),
            min_age_secs: number("min_age_secs"),
            max_age_secs: number("max_age_secs"),
            message: reply.message.clone(),
        }
    }

    /// The rules, one sentence each, in the order users meet them. An
    /// administrative reset skips history and minimum age (as Active
    /// Directory does), so the reset page does not list them.
    pub fn rules(&self, task: Task) -> Vec<String> {
        let mut rules = Vec::new();
        if let Some(n) = self.min_length.filter(|n| *n > 0) {
            rules.push(format!("At least {n} characters."));
        }
        if self.complexity == Some(true) {
            rules.push(
                "Characters from at least three of these groups: uppercase letters, \
                 lowercase letters, digits, symbols (such as ! $ # %). Spaces do not count."
                    .to_owned(),
            );
            // Advice, not a promise: Windows domains refuse the account name
            // and parts of the full name, Samba domains do not.
            rules.push("Avoid your account name and parts of your full name.".to_owned());
        }
        if task == Task::Change {
            if let Some(n) = self.history_length.filter(|n| *n > 0) {
                rules.push(format!(
                    "It must differ from your last {n} passwords, the current one included."
                ));
            }
            if let Some(secs) = self.min_age_secs.filter(|s| *s > 0) {
                rules.push(format!(
                    "You can change your password once every {}.",
                    span(secs)
                ));
            }
        }
        if let Some(secs) = self.max_age_secs.filter(|s| *s > 0) {
            rules.push(format!("It expires after {}.", span(secs)));
        }
        if rules.is_empty() && !self.message.is_empty() {
            rules.push(self.message.clone());
        }
        rules
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

/// A duration in the largest whole unit that fits: "1 day", "42 days", "90 minutes".
pub fn span(secs: u64) -> String {
    let (n, unit) = match secs {
        s if s % 86_400 == 0 => (s / 86_400, "day"),
        s if s % 3_600 == 0 => (s / 3_600, "hour"),
        s if s % 60 == 0 => (s / 60, "minute"),
        s => (s, "second"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
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
        let change = policy.rules(Task::Change).join(" ");
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
        let reset = policy.rules(Task::Reset).join(" ");
        assert!(reset.contains("At least 8 characters."));
        assert!(!reset.contains("last 24") && !reset.contains("once every"));
    }

    #[test]
    fn without_details_the_agents_sentence_is_shown() {
        let mut reply = contoso();
        reply.details.clear();
        let rules = PolicyView::from_reply(&reply).rules(Task::Reset);
        assert_eq!(rules, vec![reply.message]);
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
        let rules = policy.rules(Task::Change);
        assert_eq!(rules, vec![reply.message.clone()]);
        assert!(!rules.join(" ").contains('0'), "{rules:?}");
    }

    #[test]
    fn the_hidden_field_round_trips_and_nonsense_is_dropped() {
        let policy = PolicyView::from_reply(&contoso());
        assert_eq!(PolicyView::from_hidden(&policy.to_hidden()), Some(policy));
        assert_eq!(PolicyView::from_hidden("<script>"), None);
    }

    #[test]
    fn spans_use_the_largest_whole_unit() {
        assert_eq!(span(86_400), "1 day");
        assert_eq!(span(3_628_800), "42 days");
        assert_eq!(span(5_400), "90 minutes");
        assert_eq!(span(7_200), "2 hours");
        assert_eq!(span(61), "61 seconds");
    }
}

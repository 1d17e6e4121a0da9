//! What to tell the user, in plain words: the agent's outcome codes (with
//! their details, so the sentence names the exact rule) and the broker's
//! failures (with what they mean for the password: changed, not changed, or
//! not known). Sentences are plain text; [`crate::pages`] escapes them.

use std::time::{Duration, UNIX_EPOCH};

use agent_client::ClientError;
use agent_client::sealed::SealedError;
use envelope::ReplyBody;
use envelope::body::outcome;
use proto::Reason;

use crate::Task;
use crate::policy::detail;

/// What the user is told when the fault is the operator's; the log gets the detail.
pub const MISCONFIGURED: &str =
    "The service is misconfigured, so nothing was changed. Please contact your help desk.";

/// The sentence for a successful answer.
pub fn success(task: Task) -> &'static str {
    match task {
        Task::Reset | Task::Change => {
            "Your password was changed. You can sign in with the new password now."
        }
        Task::Unlock => "Your account was unlocked. You can sign in again.",
    }
}

/// The sentence for an agent's refusal, naming the rule from its details
/// and falling back to the agent's own message when they are missing.
pub fn refusal(reply: &ReplyBody, task: Task, account: &str) -> String {
    let d = |key| detail(reply, key);
    let number = |key| d(key).and_then(|v| v.parse::<u64>().ok());
    let fallback = || agents_words(reply);
    match reply.outcome {
        outcome::PASSWORD_TOO_SHORT => match d("min_length") {
            Some(n) => format!("The password must have at least {n} characters."),
            None => fallback(),
        },
        outcome::FAILS_COMPLEXITY => {
            let mut parts = Vec::new();
            if let Some(missing) = d("missing").filter(|m| !m.trim().is_empty()) {
                parts.push(missing_categories(missing));
            }
            if let Some(name) = d("contains").filter(|c| !c.is_empty()) {
                let what = match d("contains_kind") {
                    Some("account_name") => "your account name",
                    Some("display_name") => "a part of your full name",
                    _ => "your account name or a part of your full name",
                };
                parts.push(format!(
                    "The password must not contain {what} (\u{201c}{name}\u{201d})."
                ));
            }
            if parts.is_empty() {
                fallback()
            } else {
                parts.join(" ")
            }
        }
        outcome::IN_HISTORY => match d("history_length") {
            Some(n) => format!(
                "The password must differ from your last {n} passwords, the current one included. Choose one you have not used before."
            ),
            None => fallback(),
        },
        outcome::CHANGED_TOO_RECENTLY => match number("allowed_after_unix_ms") {
            Some(ms) => format!(
                "Your password was changed too recently. You can change it again after {}.",
                format_time(ms)
            ),
            None => fallback(),
        },
        outcome::WRONG_CURRENT_PASSWORD => {
            "The current password is not correct, so nothing was changed.".to_owned()
        }
        outcome::ACCOUNT_DISABLED => {
            "This account is disabled, so nothing was changed. Please contact your help desk."
                .to_owned()
        }
        outcome::ACCOUNT_LOCKED => {
            "This account is locked out, so its password cannot be changed. \
             Unlock it first (\u{201c}Unlock your account\u{201d}), then try again."
                .to_owned()
        }
        outcome::USER_NOT_FOUND => format!(
            "No account named \u{201c}{account}\u{201d} was found. Check the spelling: \
             use your full sign-in name, such as name@example.com."
        ),
        outcome::SEVERAL_MATCHES => format!(
            "Several accounts are named \u{201c}{account}\u{201d}{}, so nothing was changed. \
             Please contact your help desk: they must resolve the duplicate.",
            d("forests").map_or(String::new(), |f| format!(" (in {})", f.replace(',', ", ")))
        ),
        // The agent no longer says where in the directory (that is for the
        // help desk, in its event log): only which permission is missing.
        outcome::PERMISSION_DENIED => match d("right") {
            Some(right) => format!(
                "The password service is not allowed to change this account (it lacks the \
                 {right} permission). Nothing was changed. Your help desk can fix this."
            ),
            None => fallback(),
        },
        outcome::PROTECTED_ACCOUNT => format!(
            "This is a protected administrator account: it cannot be {} from this portal. \
             Nothing was changed. Please contact your help desk.",
            match task {
                Task::Reset => "reset",
                Task::Change => "changed",
                Task::Unlock => "unlocked",
            }
        ),
        outcome::WRITEBACK_DISABLED => {
            "Password write-back is turned off on the on-premises service, so nothing was changed. \
             Please contact your help desk."
                .to_owned()
        }
        outcome::DIRECTORY_UNAVAILABLE => {
            "The on-premises directory could not be reached, so nothing was changed. \
             Please try again later."
                .to_owned()
        }
        outcome::POLICY_REFUSED => match d("history_length").filter(|n| *n != "0") {
            Some(n) => format!(
                "Your organisation's password rules refused this password: it may be one of \
                 your last {n} passwords, or contain a word that is not allowed. Nothing was \
                 changed; choose a different password."
            ),
            None => "Your organisation's password rules refused this password: it may contain \
                     a word that is not allowed. Nothing was changed; choose a different password."
                .to_owned(),
        },
        outcome::RATE_LIMITED => match (d("limit"), number("retry_after_secs")) {
            (Some(limit), Some(secs)) => format!(
                "Too many attempts for this account: at most {limit} per hour. Nothing was changed; \
                 try again in {}.",
                minutes(Duration::from_secs(secs))
            ),
            _ => fallback(),
        },
        _ => fallback(),
    }
}

/// "add an uppercase letter or a digit", from the agent's `missing`.
fn missing_categories(missing: &str) -> String {
    let names: Vec<&str> = missing
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    // Three groups are required and the agent names the usual four a user
    // can add (not letters without case): with n of them missing, n - 1
    // must be added.
    let needed = names.len().saturating_sub(1).max(1);
    if needed == 1 {
        let singular: Vec<String> = names.iter().map(|n| with_article(n)).collect();
        format!(
            "The password needs one more kind of character: add {}.",
            singular.join(" or ")
        )
    } else {
        let plural: Vec<String> = names.iter().map(|n| format!("{n}s")).collect();
        format!(
            "The password needs characters from at least three groups (uppercase \
             letters, lowercase letters, digits, symbols; spaces do not count): add \
             characters from {} of these: {}.",
            if needed == 2 { "two" } else { "three" },
            plural.join(", ")
        )
    }
}

fn with_article(name: &str) -> String {
    let vowel = name.starts_with(['a', 'e', 'i', 'o', 'u']);
    format!("{} {name}", if vowel { "an" } else { "a" })
}

/// The agent's message as a sentence.
fn agents_words(reply: &ReplyBody) -> String {
    let message = reply.message.trim();
    if message.is_empty() {
        return format!(
            "The request was refused ({}), and nothing was changed.",
            agent_client::agent::writeback::outcome_name(reply.outcome)
        );
    }
    let mut chars = message.chars();
    let first = chars.next().map(|c| c.to_uppercase().collect::<String>());
    let end = if message.ends_with(['.', '!', '?']) {
        ""
    } else {
        "."
    };
    format!("{}{}{end}", first.unwrap_or_default(), chars.as_str())
}

/// "2025-11-26 10:00:00 UTC".
pub fn format_time(unix_ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(unix_ms))
        .to_string()
        .replace('T', " ")
        .replace('Z', " UTC")
}

/// "about 3 minutes", rounded up, at least one.
fn minutes(d: Duration) -> String {
    let n = d.as_secs().div_ceil(60).max(1);
    format!("about {n} minute{}", if n == 1 { "" } else { "s" })
}

/// Why no answer can be shown: the portal's bound on the whole call passed,
/// or the call failed.
#[derive(Debug, thiserror::Error)]
pub enum Trouble {
    #[error("no answer within the portal's own time limit")]
    NoAnswer,
    #[error(transparent)]
    Sealed(#[from] SealedError),
}

/// What a failure means for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Nothing was changed; the user may try again.
    NothingChanged(String),
    /// It may have been applied. `can_check`: this portal holds the key to
    /// open the late answer, so a "Check again" button can ask for it.
    Unknown { message: String, can_check: bool },
    /// The operator's problem; the user sees [`MISCONFIGURED`].
    Misconfigured,
}

/// What a failed call means. `writes`: whether the request could change
/// something (a policy query cannot, so its outcome never matters).
pub fn failure(trouble: &Trouble, task: Task, writes: bool) -> Failure {
    let unknown = |can_check: bool| {
        if !writes {
            return Failure::NothingChanged(
                "The on-premises service did not answer in time. Please try again.".into(),
            );
        }
        let what = match task {
            Task::Unlock => "whether your account was unlocked",
            Task::Reset | Task::Change => "whether your password was changed",
        };
        let next = if can_check {
            "Use \u{201c}Check again\u{201d} in a moment to ask for the answer."
        } else {
            "Try signing in before you try again."
        };
        Failure::Unknown {
            message: format!(
                "We could not confirm {what}: the request may have reached the on-premises \
                 service, but no answer came back in time. {next}"
            ),
            can_check,
        }
    };
    let err = match trouble {
        Trouble::NoAnswer => return unknown(false),
        Trouble::Sealed(err) => err,
    };
    let nothing = |s: &str| Failure::NothingChanged(s.to_owned());
    match err {
        SealedError::Relay(ClientError::Relay {
            reason, metadata, ..
        }) => match reason {
            Reason::NoAgentOnline => nothing(
                "The on-premises service is not connected, so nothing was changed. \
                 Please try again later.",
            ),
            Reason::WritebackDisabled => nothing(
                "Password write-back is turned off for your organisation, so nothing was changed. \
                 Please contact your help desk.",
            ),
            Reason::OutcomeUnknown => unknown(true),
            Reason::DeadlineExceeded => unknown(false),
            Reason::RateLimited => {
                let wait = metadata
                    .get("retry_after_ms")
                    .and_then(|ms| ms.parse().ok())
                    .map_or("a minute".to_owned(), |ms| {
                        minutes(Duration::from_millis(ms))
                    });
                Failure::NothingChanged(format!(
                    "The service is receiving too many requests, so nothing was changed. \
                     Please try again in {wait}."
                ))
            }
            Reason::AgentsBusy => nothing(
                "The on-premises service is busy, so nothing was changed. \
                 Please try again in a moment.",
            ),
            Reason::ShuttingDown | Reason::ClusterUnavailable => nothing(
                "The service is restarting, so nothing was changed. Please try again in a moment.",
            ),
            _ => Failure::Misconfigured,
        },
        // The broker could not be reached or refused the call before
        // relaying (a Submit that may have run is OUTCOME_UNKNOWN instead).
        SealedError::Relay(ClientError::Rpc(_) | ClientError::Connect(_)) => nothing(
            "The password service cannot be reached right now, so nothing was changed. \
             Please try again later.",
        ),
        // The answer came but cannot be opened: whatever it said is lost.
        SealedError::Reply(_) => unknown(false),
        SealedError::Relay(ClientError::InvalidArgument(_))
        | SealedError::NoAgentKey
        | SealedError::KeyNotTrusted { .. }
        | SealedError::Seal(_)
        | SealedError::Refused(_)
        | SealedError::NotPending(_) => Failure::Misconfigured,
    }
}

/// What a failed "Check again" means: the original request's fate is still
/// open unless the answer says otherwise.
pub fn check_failure(trouble: &Trouble, task: Task) -> Failure {
    let what = match task {
        Task::Unlock => "whether your account was unlocked",
        Task::Reset | Task::Change => "whether your password was changed",
    };
    let err = match trouble {
        Trouble::NoAnswer => None,
        Trouble::Sealed(err) => Some(err),
    };
    match err {
        Some(e) if e.reason() == Some(Reason::OutcomePending) => Failure::Unknown {
            message: format!(
                "No answer yet: the on-premises service has not reported {what}. \
                 Please check again in a moment."
            ),
            can_check: true,
        },
        Some(e) if e.reason() == Some(Reason::OutcomeNotFound) => Failure::Unknown {
            message: format!(
                "The service has no record of an answer to this request, so we cannot tell {what}. \
                 Try signing in before you try again."
            ),
            can_check: false,
        },
        Some(SealedError::NotPending(_)) => Failure::Unknown {
            message: format!(
                "This portal can no longer check that request (it was restarted, or the answer \
                 was already shown), so we cannot tell {what}. Try signing in before you try again."
            ),
            can_check: false,
        },
        // A definite refusal of the original request: nothing was done.
        Some(SealedError::Refused(_)) => Failure::Misconfigured,
        Some(SealedError::Reply(_)) => Failure::Unknown {
            message: format!(
                "The answer arrived but could not be read, so we cannot tell {what}. \
                 Try signing in before you try again."
            ),
            can_check: false,
        },
        _ => Failure::Unknown {
            message: format!(
                "We could not reach the service to ask {what}. Please check again in a moment."
            ),
            can_check: true,
        },
    }
}

#[cfg(test)]
mod tests;

//! What to tell the user, in plain words: the agent's outcome codes (with
//! their details, so the sentence names the exact rule) and the broker's
//! failures (with what they mean for the password: changed, not changed, or
//! not known). Sentences are plain text; [`crate::pages`] escapes them.
//!
//! "Nothing was changed" is said only when it is known: a sealed reply says
//! so (the agent's authenticated word), or nothing left this portal. The
//! broker is not trusted (PROTOCOL.md "Threat model"): it can deliver the
//! envelope and then answer with any status, so a failure it reports
//! ([`relay_client::sealed::Provenance::Broker`]), and a sealed NOT_APPLIED
//! (which covers one delivery only), are shown as "could not confirm".

use std::time::{Duration, UNIX_EPOCH};

use envelope::{Outcome, ReplyBody};
use proto::Reason;
use relay_client::ClientError;
use relay_client::sealed::SealedError;

use crate::Task;
use crate::policy::detail;

/// What the user is told when the fault is the operator's and nothing left
/// this portal; the log gets the detail.
pub const MISCONFIGURED: &str =
    "The service is misconfigured, so nothing was changed. Please contact your help desk.";

/// What the user is told when the broker reports an operator's problem
/// (a refused token, an unsealed refusal, ...): its word alone.
pub const MISCONFIGURED_UNCONFIRMED: &str = "The service reports that it is misconfigured, \
     and we could not confirm whether anything was changed. Please contact your help desk.";

/// "whether your password was changed", for a task.
fn whether(task: Task) -> &'static str {
    match task {
        Task::Unlock => "whether your account was unlocked",
        Task::Reset | Task::Change => "whether your password was changed",
    }
}

/// What to try after an unconfirmed request.
fn sign_in_hint(task: Task) -> &'static str {
    match task {
        Task::Unlock => "Try signing in; if your account is still locked, try again",
        Task::Reset | Task::Change => {
            "Try signing in with your new password; if that fails, try again"
        }
    }
}

/// The sentence for a request that may or may not have been applied:
/// `why` (a sentence: the broker's or the agent's account of it, as such),
/// and what to do.
fn unconfirmed(task: Task, why: &str, when: &str) -> String {
    format!(
        "{why}. We could not confirm {}. {} {when}.",
        whether(task),
        sign_in_hint(task)
    )
}

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
    let Some(code) = reply.typed_outcome() else {
        return fallback();
    };
    match code {
        // Not a refusal: callers show [`success`] instead.
        Outcome::Success => success(task).to_owned(),
        // Sealed, but for this delivery only: a broker can replay an
        // envelope to obtain a genuine NOT_APPLIED and show it instead of
        // the first delivery's answer. Never "nothing was changed".
        Outcome::NotApplied => unconfirmed(
            task,
            &format!(
                "The on-premises service did not act on this delivery of your request ({})",
                d("reason").unwrap_or("no reason given")
            ),
            "in a moment",
        ),
        Outcome::PasswordTooShort => match d("min_length") {
            Some(n) => format!("The password must have at least {n} characters."),
            None => fallback(),
        },
        Outcome::FailsComplexity => {
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
        Outcome::InHistory => match d("history_length") {
            Some(n) => format!(
                "The password must differ from your last {n} passwords, the current one included. Choose one you have not used before."
            ),
            None => fallback(),
        },
        Outcome::ChangedTooRecently => match number("allowed_after_unix_ms") {
            Some(ms) => format!(
                "Your password was changed too recently. You can change it again after {}.",
                format_time(ms)
            ),
            None => fallback(),
        },
        Outcome::WrongCurrentPassword => {
            "The current password is not correct, so nothing was changed.".to_owned()
        }
        Outcome::AccountDisabled => {
            "This account is disabled, so nothing was changed. Please contact your help desk."
                .to_owned()
        }
        Outcome::AccountLocked => "This account is locked out, so its password cannot be changed. \
             Unlock it first (\u{201c}Unlock your account\u{201d}), then try again."
            .to_owned(),
        Outcome::UserNotFound => format!(
            "No account named \u{201c}{account}\u{201d} was found. Check the spelling: \
             use your full sign-in name, such as name@example.com."
        ),
        Outcome::SeveralMatches => format!(
            "Several accounts are named \u{201c}{account}\u{201d}{}, so nothing was changed. \
             Please contact your help desk: they must resolve the duplicate.",
            d("forests").map_or(String::new(), |f| format!(" (in {})", f.replace(',', ", ")))
        ),
        // The agent no longer says where in the directory (that is for the
        // help desk, in its event log): only which permission is missing.
        Outcome::PermissionDenied => match d("right") {
            Some(right) => format!(
                "The password service is not allowed to change this account (it lacks the \
                 {right} permission). Nothing was changed. Your help desk can fix this."
            ),
            None => fallback(),
        },
        Outcome::ProtectedAccount => format!(
            "This is a protected administrator account: it cannot be {} from this portal. \
             Nothing was changed. Please contact your help desk.",
            match task {
                Task::Reset => "reset",
                Task::Change => "changed",
                Task::Unlock => "unlocked",
            }
        ),
        Outcome::WritebackDisabled => {
            "Password write-back is turned off on the on-premises service, so nothing was changed. \
             Please contact your help desk."
                .to_owned()
        }
        Outcome::DirectoryUnavailable => {
            "The on-premises directory could not be reached, so nothing was changed. \
             Please try again later."
                .to_owned()
        }
        Outcome::PolicyRefused => match d("history_length").filter(|n| *n != "0") {
            Some(n) => format!(
                "Your organisation's password rules refused this password: it may be one of \
                 your last {n} passwords, or contain a word that is not allowed. Nothing was \
                 changed; choose a different password."
            ),
            None => "Your organisation's password rules refused this password: it may contain \
                     a word that is not allowed. Nothing was changed; choose a different password."
                .to_owned(),
        },
        Outcome::RateLimited => match (d("limit"), number("retry_after_secs")) {
            (Some(limit), Some(secs)) => format!(
                "Too many attempts for this account: at most {limit} per hour. Nothing was changed; \
                 try again in {}.",
                minutes(Duration::from_secs(secs))
            ),
            _ => fallback(),
        },
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
            "The request was refused ({}).",
            relay_client::outcome::outcome_name(reply.outcome)
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
    /// The form is shown again with this message: the user may try again.
    /// It says "nothing was changed" only when that is known (nothing left
    /// this portal); on the broker's word it says the request could not be
    /// confirmed.
    TryAgain(String),
    /// It may have been applied. `can_check`: this portal holds the key to
    /// open the late answer, so a "Check again" button can ask for it.
    Unknown { message: String, can_check: bool },
    /// The operator's problem; the user sees [`MISCONFIGURED`] when nothing
    /// left this portal (`nothing_sent`), else [`MISCONFIGURED_UNCONFIRMED`].
    Misconfigured { nothing_sent: bool },
}

impl Failure {
    /// The sentence for the user.
    pub fn text(&self) -> &str {
        match self {
            Failure::TryAgain(m) | Failure::Unknown { message: m, .. } => m,
            Failure::Misconfigured { nothing_sent: true } => MISCONFIGURED,
            Failure::Misconfigured {
                nothing_sent: false,
            } => MISCONFIGURED_UNCONFIRMED,
        }
    }
}

/// What a failed call means. `writes`: whether the request could change
/// something (a policy query cannot, so its outcome never matters).
///
/// Every failure but those decided in this portal is the broker's word
/// ([`SealedError::is_broker_word`]): the request may have been delivered
/// and applied whatever the broker says, so none of them is shown as
/// "nothing was changed".
pub fn failure(trouble: &Trouble, task: Task, writes: bool) -> Failure {
    let unknown = |can_check: bool| {
        if !writes {
            return Failure::TryAgain(
                "The on-premises service did not answer in time. Please try again.".into(),
            );
        }
        let next = if can_check {
            "Use \u{201c}Check again\u{201d} in a moment to ask for the answer."
        } else {
            "Try signing in before you try again."
        };
        Failure::Unknown {
            message: format!(
                "We could not confirm {}: the request may have reached the on-premises \
                 service, but no answer came back in time. {next}",
                whether(task)
            ),
            can_check,
        }
    };
    // The broker's account of why it did not relay: shown as its word.
    let broker_says = |why: &str, when: &str| {
        Failure::TryAgain(if writes {
            unconfirmed(task, why, when)
        } else {
            format!("{why}. Please try again {when}.")
        })
    };
    let err = match trouble {
        Trouble::NoAnswer => return unknown(false),
        Trouble::Sealed(err) => err,
    };
    match err {
        SealedError::Relay(ClientError::Relay {
            reason, metadata, ..
        }) => match reason {
            Reason::NoAgentOnline => broker_says(
                "The password service reports that the on-premises service is not connected",
                "later",
            ),
            Reason::WritebackDisabled => broker_says(
                "The password service reports that password write-back is turned off for \
                 your organisation",
                "after contacting your help desk",
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
                broker_says(
                    "The password service reports that it is receiving too many requests",
                    &format!("in {wait}"),
                )
            }
            Reason::AgentsBusy => broker_says(
                "The password service reports that the on-premises service is busy",
                "in a moment",
            ),
            Reason::ShuttingDown | Reason::ClusterUnavailable | Reason::StateUnconfirmed => {
                broker_says(
                    "The password service reports that it is restarting",
                    "in a moment",
                )
            }
            _ => Failure::Misconfigured {
                nothing_sent: false,
            },
        },
        // The call failed: a status without a relay reason, from the broker
        // or the connection (a Submit that may have run is OUTCOME_UNKNOWN
        // instead).
        SealedError::Relay(ClientError::Rpc(_)) => {
            broker_says("The password service cannot be reached right now", "later")
        }
        // No connection was made: nothing left this portal.
        SealedError::Relay(ClientError::Connect(_)) => Failure::TryAgain(
            "The password service cannot be reached right now, so nothing was changed. \
             Please try again later."
                .into(),
        ),
        // The answer came but cannot be opened: whatever it said is lost.
        SealedError::Reply(_) => unknown(false),
        // An unsealed refusal: the broker's word.
        SealedError::Refused { .. } => Failure::Misconfigured {
            nothing_sent: false,
        },
        // Decided here, before anything was sent.
        SealedError::Relay(ClientError::InvalidArgument(_))
        | SealedError::NoAgentKey
        | SealedError::KeyNotTrusted { .. }
        | SealedError::Seal(_)
        | SealedError::NotPending(_) => Failure::Misconfigured { nothing_sent: true },
    }
}

/// What a failed "Check again" means: the original request's fate is still
/// open unless a sealed answer says otherwise.
pub fn check_failure(trouble: &Trouble, task: Task) -> Failure {
    let what = whether(task);
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
        // An unsealed refusal of the original request: the broker's word.
        Some(SealedError::Refused { .. }) => Failure::Misconfigured {
            nothing_sent: false,
        },
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

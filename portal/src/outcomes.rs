//! What to tell the user: the agent's outcome codes (with their details, so
//! the sentence names the exact rule) and the broker's failures (with what
//! they mean for the password: changed, not changed, or not known), as
//! [`Msg`]s that [`crate::i18n`] words in the user's language.
//!
//! "Nothing was changed" is said only when it is known: a sealed reply says
//! so (the agent's authenticated word), or nothing left this portal. The
//! broker is not trusted (PROTOCOL.md "Threat model"): it can deliver the
//! envelope and then answer with any status, so a failure it reports
//! ([`relay_client::sealed::Provenance::Broker`]), and a sealed NOT_APPLIED
//! (which covers one delivery only), are shown as "could not confirm".
//!
//! Nothing the directory says is shown as it came: the agent's `message` is
//! free text from on-prem (it can name a DN or an OU), so it is never shown;
//! the few details that are (a policy's name, a missing right, the part of
//! a name a password contains) pass [`directory_free`] first. To a visitor
//! whose identity is not verified, every refusal that would tell whether an
//! account exists reads the same ([`Msg::CannotHere`]).

use std::time::Duration;

use envelope::{Outcome, ReplyBody};
use proto::Reason;
use relay_client::ClientError;
use relay_client::sealed::SealedError;

use crate::Task;
use crate::i18n::{BrokerWhy, CheckTrouble, Group, Lang, Msg, NameKind, When};
use crate::policy::detail;

/// `text` when it can be shown to anyone: short, one line, and naming no
/// directory object (`CN=`, `OU=`, `DC=`, as in a DN).
pub fn directory_free(text: &str) -> Option<&str> {
    let lower = text.to_ascii_lowercase();
    let dn = ["cn=", "ou=", "dc=", "o=", "l="].iter().any(|rdn| {
        lower
            .match_indices(rdn)
            .any(|(i, _)| i == 0 || !lower.as_bytes()[i - 1].is_ascii_alphanumeric())
    });
    let plain = !text.trim().is_empty() && text.len() <= 64 && !text.chars().any(char::is_control);
    (plain && !dn).then_some(text)
}

/// The sentence for a successful answer.
pub fn success(task: Task) -> Msg {
    Msg::Success(task)
}

/// The sentence for an agent's refusal, naming the rule from its details.
/// `verified`: the portal established who the user is (a sign-in), so it
/// may say which account exists and why it is refused; without, every
/// refusal that tells an account apart reads [`Msg::CannotHere`].
pub fn refusal(reply: &ReplyBody, task: Task, account: &str, verified: bool) -> Msg {
    let d = |key| detail(reply, key);
    let number = |key| d(key).and_then(|v| v.trim().parse::<u64>().ok());
    let Some(code) = reply.typed_outcome() else {
        return refused(verified, task);
    };
    match code {
        // Not a refusal: callers show [`success`] instead.
        Outcome::Success => Msg::Success(task),
        // Sealed, but for this delivery only: a broker can replay an
        // envelope to obtain a genuine NOT_APPLIED and show it instead of
        // the first delivery's answer. Never "nothing was changed".
        Outcome::NotApplied => Msg::NotApplied(task),
        Outcome::PasswordTooShort => number("min_length").map_or(Msg::PolicyNotMet, Msg::TooShort),
        Outcome::FailsComplexity => complexity(reply, verified),
        Outcome::InHistory => number("history_length").map_or(Msg::PolicyNotMet, Msg::InHistory),
        Outcome::ChangedTooRecently => {
            number("allowed_after_unix_ms").map_or(Msg::PolicyNotMet, Msg::ChangedTooRecently)
        }
        Outcome::WrongCurrentPassword => Msg::WrongCurrentPassword,
        Outcome::AccountLocked => Msg::AccountLocked(task),
        Outcome::WritebackDisabled => Msg::WritebackDisabled,
        Outcome::DirectoryUnavailable => Msg::DirectoryUnavailable,
        Outcome::PolicyRefused => Msg::PolicyRefused(number("history_length").filter(|n| *n != 0)),
        Outcome::RateLimited => {
            Msg::AgentRateLimited(number("limit").zip(number("retry_after_secs")))
        }
        // These tell an existing account from a mistyped one.
        Outcome::UserNotFound
        | Outcome::AccountDisabled
        | Outcome::ProtectedAccount
        | Outcome::PermissionDenied
        | Outcome::SeveralMatches
            if !verified =>
        {
            Msg::CannotHere(task)
        }
        Outcome::UserNotFound => Msg::UserNotFound(account.to_owned()),
        Outcome::SeveralMatches => Msg::SeveralMatches(account.to_owned()),
        Outcome::AccountDisabled => Msg::AccountDisabled,
        Outcome::ProtectedAccount => Msg::ProtectedAccount(task),
        // Only which permission is missing; where in the directory is for
        // the help desk, in the agent's event log.
        Outcome::PermissionDenied => {
            Msg::PermissionDenied(d("right").and_then(directory_free).map(str::to_owned))
        }
    }
}

/// An outcome this portal does not know (a newer agent's), or names no
/// more than "refused".
fn refused(verified: bool, task: Task) -> Msg {
    if verified {
        Msg::Refused
    } else {
        Msg::CannotHere(task)
    }
}

/// The refusal of step 1: the policy answer said the task would be refused
/// with `outcome` whatever the password (`None`: a name this portal does
/// not know).
pub fn ineligible(outcome: Option<Outcome>, task: Task, account: &str, verified: bool) -> Msg {
    match outcome {
        Some(outcome) => refusal(
            &ReplyBody {
                outcome: outcome.code(),
                message: String::new(),
                details: Vec::new(),
            },
            task,
            account,
            verified,
        ),
        None => refused(verified, task),
    }
}

fn complexity(reply: &ReplyBody, verified: bool) -> Msg {
    let missing: Vec<Group> = detail(reply, "missing")
        .unwrap_or("")
        .split(',')
        .filter_map(|name| match name.trim() {
            "uppercase letter" => Some(Group::Uppercase),
            "lowercase letter" => Some(Group::Lowercase),
            "digit" => Some(Group::Digit),
            "symbol" => Some(Group::Symbol),
            _ => None,
        })
        .collect();
    if let Some(name) = detail(reply, "contains").filter(|c| !c.is_empty()) {
        let kind = match detail(reply, "contains_kind") {
            Some("account_name") => NameKind::Account,
            Some("display_name") => NameKind::Display,
            _ => NameKind::Either,
        };
        // A part of someone's full name is theirs to see, not a visitor's.
        let name = directory_free(name).filter(|_| verified).map(str::to_owned);
        return Msg::MustNotContain(kind, name);
    }
    // Three groups are required and the agent names the usual four a user
    // can add (not letters without case): with n of them missing, n - 1
    // must be added.
    match missing.len() {
        0 => Msg::PolicyNotMet,
        1 | 2 => Msg::MissingOne(missing),
        _ => Msg::MissingSeveral(missing),
    }
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
    TryAgain(Msg),
    /// It may have been applied. `can_check`: this portal holds the key to
    /// open the late answer, so a "Check again" button can ask for it.
    Unknown { message: Msg, can_check: bool },
    /// The operator's problem; the user sees [`Msg::Misconfigured`] when
    /// nothing left this portal (`nothing_sent`), else
    /// [`Msg::MisconfiguredUnconfirmed`].
    Misconfigured { nothing_sent: bool },
}

impl Failure {
    pub fn message(&self) -> Msg {
        match self {
            Failure::TryAgain(m) | Failure::Unknown { message: m, .. } => m.clone(),
            Failure::Misconfigured { nothing_sent: true } => Msg::Misconfigured,
            Failure::Misconfigured {
                nothing_sent: false,
            } => Msg::MisconfiguredUnconfirmed,
        }
    }

    /// The sentence for the user.
    pub fn text(&self, lang: Lang) -> String {
        lang.text(&self.message())
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
            return Failure::TryAgain(Msg::PolicyNoAnswer);
        }
        Failure::Unknown {
            message: Msg::NoAnswer { task, can_check },
            can_check,
        }
    };
    // The broker's account of why it did not relay: shown as its word.
    let broker_says = |why: BrokerWhy, when: When| {
        Failure::TryAgain(if writes {
            Msg::Unconfirmed { task, why, when }
        } else {
            Msg::BrokerSays { why, when }
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
            Reason::NoAgentOnline => broker_says(BrokerWhy::NotConnected, When::Later),
            Reason::WritebackDisabled => broker_says(BrokerWhy::WritebackOff, When::AfterHelpDesk),
            Reason::OutcomeUnknown => unknown(true),
            Reason::DeadlineExceeded => unknown(false),
            Reason::RateLimited => {
                let wait = metadata
                    .get("retry_after_ms")
                    .and_then(|ms| ms.parse().ok())
                    .map_or(60, |ms| Duration::from_millis(ms).as_secs().max(1));
                broker_says(BrokerWhy::TooManyRequests, When::In(wait))
            }
            Reason::AgentsBusy => broker_says(BrokerWhy::Busy, When::InAMoment),
            Reason::ShuttingDown | Reason::ClusterUnavailable | Reason::StateUnconfirmed => {
                broker_says(BrokerWhy::Restarting, When::InAMoment)
            }
            _ => Failure::Misconfigured {
                nothing_sent: false,
            },
        },
        // The call failed: a status without a relay reason, from the broker
        // or the connection (a Submit that may have run is OUTCOME_UNKNOWN
        // instead).
        SealedError::Relay(ClientError::Rpc(_)) => broker_says(BrokerWhy::Unreachable, When::Later),
        // No connection was made: nothing left this portal.
        SealedError::Relay(ClientError::Connect(_)) => {
            Failure::TryAgain(Msg::UnreachableNothingChanged)
        }
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
    let open = |trouble, can_check| Failure::Unknown {
        message: Msg::CheckFailed(task, trouble),
        can_check,
    };
    let err = match trouble {
        Trouble::NoAnswer => None,
        Trouble::Sealed(err) => Some(err),
    };
    match err {
        Some(e) if e.reason() == Some(Reason::OutcomePending) => open(CheckTrouble::Pending, true),
        Some(e) if e.reason() == Some(Reason::OutcomeNotFound) => {
            open(CheckTrouble::NoRecord, false)
        }
        Some(SealedError::NotPending(_)) => open(CheckTrouble::NoLongerHere, false),
        // An unsealed refusal of the original request: the broker's word.
        Some(SealedError::Refused { .. }) => Failure::Misconfigured {
            nothing_sent: false,
        },
        Some(SealedError::Reply(_)) => open(CheckTrouble::Unreadable, false),
        _ => open(CheckTrouble::Unreachable, true),
    }
}

#[cfg(test)]
mod tests;

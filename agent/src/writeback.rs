//! The agent's password operations: resolve the anchor in the connector
//! space, act in the right forest as its service account, and answer with
//! the exact outcome. Every request leaves its events in the event log
//! (started, then succeeded or failed with the specific reason's event).

pub mod eligibility;
#[cfg(test)]
mod eligibility_tests;
#[cfg(test)]
mod identity_tests;
pub mod limits;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use envelope::body::{operation, outcome};
use envelope::{ReplyBody, RequestBody, RequestHeader};
use tracing::{Instrument, info, info_span, warn};

use super::envelopes::Operations;
use super::eventlog::{Event, EventLog, Level, ids};
use crate::connector::{ConnectorSpace, Unresolved};
use directory::{Account, Directory, Eligibility, Refusal, ResultantPolicy};
use limits::{AccountLimiter, Counted, Limited};
use relay_client::outcome::outcome_name;

pub struct Writeback {
    pub tenant: String,
    pub space: Arc<ConnectorSpace>,
    pub events: Arc<EventLog>,
    /// The on-prem switch: when off, every request is refused as
    /// WRITEBACK_DISABLED without touching the directory.
    pub enabled: bool,
    /// The per-account limit on resets, changes and unlocks.
    pub limiter: AccountLimiter,
}

/// What a portal shows for DIRECTORY_UNAVAILABLE before anything was
/// written. Anonymous end users read it: no DN, LDAP code or server text.
pub const UNAVAILABLE_MESSAGE: &str = "the directory could not be reached or answered unexpectedly; nothing was changed. Try again later or contact your help desk";

/// What a portal shows when the change was sent but never confirmed.
pub const UNCONFIRMED_MESSAGE: &str = "the directory stopped answering after the change was sent, so it may or may not have been applied. Try signing in with the new password, or contact your help desk";

/// What a portal shows when no account matches (or it no longer exists).
pub const NOT_FOUND_MESSAGE: &str = "no account matches in any configured forest";

/// What a portal shows when the service account lacks a right: where it is
/// missing is for the event log.
pub const PERMISSION_MESSAGE: &str =
    "the password service is not allowed to change this account; your help desk can fix this";

/// The outcome code, details and 33xxx event of a refusal. The reply's
/// message is what the user sees; for DIRECTORY_UNAVAILABLE it is a plain
/// sentence, and the refusal's full text (`refusal.to_string()`) belongs in
/// the event log and the agent's log only.
pub fn refusal_reply(refusal: &Refusal) -> (ReplyBody, u32) {
    let detail = |k: &str, v: String| (k.to_owned(), v);
    let (code, details, event) = match refusal {
        Refusal::TooShort { min_length } => (
            outcome::PASSWORD_TOO_SHORT,
            vec![detail("min_length", min_length.to_string())],
            ids::POLICY_VIOLATION,
        ),
        Refusal::FailsComplexity { missing, contains } => {
            let mut d = Vec::new();
            if !missing.is_empty() {
                let names: Vec<_> = missing.iter().map(|c| c.as_str()).collect();
                d.push(detail("missing", names.join(", ")));
            }
            if let Some(c) = contains {
                d.push(detail("contains", c.text().to_owned()));
                d.push(detail("contains_kind", c.kind().to_owned()));
            }
            (outcome::FAILS_COMPLEXITY, d, ids::POLICY_VIOLATION)
        }
        Refusal::InHistory { history_length } => (
            outcome::IN_HISTORY,
            vec![detail("history_length", history_length.to_string())],
            ids::POLICY_VIOLATION,
        ),
        Refusal::PolicyRefused { history_length } => (
            outcome::POLICY_REFUSED,
            history_length
                .map(|n| detail("history_length", n.to_string()))
                .into_iter()
                .collect(),
            ids::POLICY_VIOLATION,
        ),
        Refusal::ChangedTooRecently {
            allowed_after_unix_ms,
        } => (
            outcome::CHANGED_TOO_RECENTLY,
            vec![detail(
                "allowed_after_unix_ms",
                allowed_after_unix_ms.to_string(),
            )],
            ids::POLICY_VIOLATION,
        ),
        Refusal::WrongCurrentPassword => (
            outcome::WRONG_CURRENT_PASSWORD,
            vec![],
            ids::WRONG_CURRENT_PASSWORD,
        ),
        Refusal::UserNotFound => (outcome::USER_NOT_FOUND, vec![], ids::USER_NOT_FOUND),
        Refusal::AccountDisabled => (outcome::ACCOUNT_DISABLED, vec![], ids::ACCOUNT_DISABLED),
        Refusal::AccountLocked => (outcome::ACCOUNT_LOCKED, vec![], ids::ACCOUNT_LOCKED),
        // The DNs (container, where inheritance is blocked, the deny) are
        // for administrators: the reply reaches an anonymous end user, so
        // they go to the event log only (see [`Done::place`]).
        Refusal::PermissionDenied { right, .. } => (
            outcome::PERMISSION_DENIED,
            vec![detail("right", right.as_str().to_owned())],
            ids::INSUFFICIENT_PERMISSIONS,
        ),
        Refusal::ProtectedAccount => (
            outcome::PROTECTED_ACCOUNT,
            vec![],
            ids::INSUFFICIENT_PERMISSIONS,
        ),
        Refusal::DirectoryUnavailable(_) | Refusal::WriteUnconfirmed(_) => (
            outcome::DIRECTORY_UNAVAILABLE,
            vec![],
            ids::DIRECTORY_CONFIGURATION_ERROR,
        ),
    };
    let message = match refusal {
        Refusal::DirectoryUnavailable(_) => UNAVAILABLE_MESSAGE.to_owned(),
        Refusal::WriteUnconfirmed(_) => UNCONFIRMED_MESSAGE.to_owned(),
        Refusal::UserNotFound => NOT_FOUND_MESSAGE.to_owned(),
        Refusal::PermissionDenied { .. } => PERMISSION_MESSAGE.to_owned(),
        other => other.to_string(),
    };
    (
        ReplyBody {
            outcome: code,
            message,
            details,
        },
        event,
    )
}

/// A permission refusal's container, where inheritance is blocked and the
/// deny that decides: for the event log's fields, never the reply.
fn refusal_place(refusal: &Refusal) -> Option<Place> {
    match refusal {
        Refusal::PermissionDenied {
            container,
            blocked_at,
            denied_at,
            ..
        } => Some((container.clone(), blocked_at.clone(), denied_at.clone())),
        _ => None,
    }
}

/// (container, blocked_at, denied_at) of a permission refusal.
type Place = (String, Option<String>, Option<String>);

/// The reply to an attempt over the per-account limit.
fn limited_reply(limited: &Limited) -> ReplyBody {
    let secs = limited.retry_after.as_millis().div_ceil(1000);
    let minutes = secs.div_ceil(60).max(1);
    ReplyBody {
        outcome: outcome::RATE_LIMITED,
        message: format!(
            "too many password operations for this account: at most {} per hour; try again in about {minutes} minute{}",
            limited.limit,
            if minutes == 1 { "" } else { "s" }
        ),
        details: vec![
            ("limit".into(), limited.limit.to_string()),
            ("retry_after_secs".into(), secs.to_string()),
        ],
    }
}

/// The policy reply with the eligibility details, within one reply block
/// (docs/PROTOCOL.md, "Reply body") so that every ordinary reply has the
/// same length: when a long policy name and every rule would outgrow it,
/// the message names the complexity rule without spelling it out (the
/// details still carry it).
fn policy_and_eligibility(policy: &ResultantPolicy, eligible: Option<&Eligibility>) -> ReplyBody {
    let with = |brief| {
        let mut reply = policy_reply(policy, brief);
        reply
            .details
            .extend(eligible.map(eligibility::details).unwrap_or_default());
        reply
    };
    let full = with(false);
    match full.encode() {
        Ok(body) if body.len() > envelope::body::REPLY_BLOCK => with(true),
        _ => full,
    }
}

fn policy_reply(policy: &ResultantPolicy, brief: bool) -> ReplyBody {
    let d = |k: &str, v: String| (k.to_owned(), v);
    let policy = match policy {
        ResultantPolicy::Known(p) => p,
        // Never zeros: a portal that shows "at least 0 characters" is
        // worse than one that says it does not know.
        ResultantPolicy::Unreadable { source } => {
            return ReplyBody {
                outcome: outcome::SUCCESS,
                message: "The password rules for this account could not be read. Choose a long \
                          password with upper and lower case letters, digits and symbols."
                    .into(),
                details: vec![
                    d("source", source.clone()),
                    d("settings_readable", "false".into()),
                ],
            };
        }
    };
    let mut rules = vec![format!("at least {} characters", policy.min_length)];
    if policy.complexity && brief {
        rules.push("characters of three kinds, and not your name".into());
    } else if policy.complexity {
        rules.push(
            "characters from three of: uppercase letters, lowercase letters, digits, symbols, \
             letters without case; avoid your account name and parts of your name"
                .into(),
        );
    }
    if policy.history_length > 0 {
        rules.push(format!(
            "not one of your last {} passwords",
            policy.history_length
        ));
    }
    let expiry = if policy.max_age_secs == 0 {
        " It never expires.".to_owned()
    } else {
        String::new()
    };
    ReplyBody {
        outcome: outcome::SUCCESS,
        message: format!("Your new password needs {}.{expiry}", rules.join("; ")),
        details: vec![
            d("source", policy.source.clone()),
            d("settings_readable", "true".into()),
            d("min_length", policy.min_length.to_string()),
            d("complexity", policy.complexity.to_string()),
            d("history_length", policy.history_length.to_string()),
            d("min_age_secs", policy.min_age_secs.to_string()),
            d("max_age_secs", policy.max_age_secs.to_string()),
        ],
    }
}

/// (started, succeeded, failed) event ids and a name per operation.
fn event_ids(op: u8) -> (u32, u32, u32, &'static str) {
    match op {
        operation::CHANGE_PASSWORD => (
            ids::CHANGE_STARTED,
            ids::CHANGE_SUCCEEDED,
            ids::CHANGE_FAILED,
            "change_password",
        ),
        operation::UNLOCK_ACCOUNT => (
            ids::RESET_STARTED,
            ids::RESET_SUCCEEDED,
            ids::RESET_FAILED,
            "unlock_account",
        ),
        operation::GET_PASSWORD_POLICY => (
            ids::RESET_STARTED,
            ids::RESET_SUCCEEDED,
            ids::RESET_FAILED,
            "get_password_policy",
        ),
        _ => (
            ids::RESET_STARTED,
            ids::RESET_SUCCEEDED,
            ids::RESET_FAILED,
            "reset_password",
        ),
    }
}

#[tonic::async_trait]
impl Operations for Writeback {
    async fn apply(&self, header: &RequestHeader, body: &RequestBody) -> ReplyBody {
        let (started, succeeded, failed, op_name) = event_ids(header.operation);
        let event = |id: u32,
                     level: Level,
                     message: String,
                     dn: Option<&str>,
                     forest: Option<&str>,
                     outcome_code: Option<u16>| {
            let mut e = Event::new(id, level, message);
            e.tenant = Some(self.tenant.clone());
            e.request_id = Some(header.request_id.clone());
            e.operation = Some(op_name.to_owned());
            e.account_dn = dn.map(str::to_owned);
            e.forest = forest.map(str::to_owned);
            e.outcome = outcome_code.map(|c| outcome_name(c).to_owned());
            e
        };
        self.events.write(&event(
            started,
            Level::Information,
            format!("{op_name} started"),
            None,
            None,
            None,
        ));

        let Done {
            reply,
            detail_event,
            detail_text,
            place,
            dn,
            forest,
        } = self.run(header, body).await;
        if reply.outcome == outcome::SUCCESS {
            self.events.write(&event(
                succeeded,
                Level::Information,
                format!("{op_name} succeeded"),
                dn.as_deref(),
                forest.as_deref(),
                Some(reply.outcome),
            ));
        } else {
            if let Some(id) = detail_event {
                // The limit doing its job is not a fault of the agent.
                let level = match reply.outcome {
                    outcome::RATE_LIMITED => Level::Warning,
                    _ => Level::Error,
                };
                if let Some(text) = &detail_text {
                    warn!(
                        outcome = outcome_name(reply.outcome),
                        dn = dn.as_deref().unwrap_or(""),
                        forest = forest.as_deref().unwrap_or(""),
                        error = %text,
                        "request failed"
                    );
                }
                let mut e = event(
                    id,
                    level,
                    detail_text.unwrap_or_else(|| reply.message.clone()),
                    dn.as_deref(),
                    forest.as_deref(),
                    Some(reply.outcome),
                );
                if let Some((container, blocked_at, denied_at)) = place {
                    e.container = Some(container);
                    e.blocked_at = blocked_at;
                    e.denied_at = denied_at;
                }
                self.events.write(&e);
            }
            self.events.write(&event(
                failed,
                Level::Error,
                format!("{op_name} failed: {}", outcome_name(reply.outcome)),
                dn.as_deref(),
                forest.as_deref(),
                Some(reply.outcome),
            ));
        }
        info!(
            outcome = outcome_name(reply.outcome),
            dn = dn.as_deref().unwrap_or(""),
            "request done"
        );
        reply
    }
}

impl Writeback {
    /// Counts an operation that is about to reach the directory against the
    /// account's limit. It counts whatever its outcome but a refusal by the
    /// password policy (see [`Writeback::run`]), so guessing the current
    /// password through CHANGE_PASSWORD is throttled; policy queries write
    /// nothing and are never limited.
    fn count_attempt(&self, op: u8, account: &Account) -> Result<Option<Counted>, Limited> {
        match op {
            operation::RESET_PASSWORD | operation::CHANGE_PASSWORD | operation::UNLOCK_ACCOUNT => {
                self.limiter
                    .check(&(account.forest.clone(), account.object_guid))
            }
            _ => Ok(None),
        }
    }

    /// The reply, the specific failure event (and its text, when it says
    /// more than the reply may), and the account's DN and forest if found.
    async fn run(&self, header: &RequestHeader, body: &RequestBody) -> Done {
        if !self.enabled {
            let reply = ReplyBody {
                outcome: outcome::WRITEBACK_DISABLED,
                message: "password write-back is disabled on this agent".into(),
                details: Vec::new(),
            };
            return Done::unresolved(reply, ids::DIRECTORY_CONFIGURATION_ERROR);
        }
        let mut found = self.space.resolve_fresh(&body.anchor).await;
        // At most once: the account was deleted (or replaced) since the
        // connector space last saw it; the anchor may now name another.
        let mut retried = false;
        loop {
            let (directory, account) = match found {
                Ok(found) => found,
                Err(Unresolved::NotFound) => {
                    let reply = ReplyBody {
                        outcome: outcome::USER_NOT_FOUND,
                        message: NOT_FOUND_MESSAGE.into(),
                        details: Vec::new(),
                    };
                    return Done::unresolved(reply, ids::USER_NOT_FOUND);
                }
                Err(Unresolved::SeveralMatches(matches)) => {
                    let forests: Vec<_> = matches.iter().map(|(f, _)| f.as_str()).collect();
                    let reply = ReplyBody {
                        outcome: outcome::SEVERAL_MATCHES,
                        message: format!(
                            "{} accounts match, in forests {}: an administrator must resolve the duplicate",
                            matches.len(),
                            forests.join(", ")
                        ),
                        details: vec![("forests".into(), forests.join(","))],
                    };
                    return Done::unresolved(reply, ids::SEVERAL_MATCHES);
                }
            };
            let done = |reply, detail_event, detail_text| Done {
                reply,
                detail_event,
                detail_text,
                place: None,
                dn: Some(account.dn.clone()),
                forest: Some(account.forest.clone()),
            };
            let counted = match self.count_attempt(header.operation, &account) {
                Ok(counted) => counted,
                Err(limited) => {
                    return done(limited_reply(&limited), Some(ids::RATE_LIMITED), None);
                }
            };
            // The directory call alone, for the trace: forest, operation and
            // result code; never the DN or a password.
            let span = info_span!(
                "directory.apply",
                directory.forest = %account.forest,
                directory.operation = event_ids(header.operation).3,
                directory.outcome = tracing::field::Empty,
            );
            let acted = self
                .act(header.operation, body, &*directory, &account)
                .instrument(span.clone())
                .await;
            span.record(
                "directory.outcome",
                match &acted {
                    Ok(reply) => outcome_name(reply.outcome),
                    Err(refusal) => outcome_name(refusal_reply(refusal).0.outcome),
                },
            );
            // Refused by the rules before anything was written, and whatever
            // the account's secret: typing until the rules are met is not
            // guessing, and must not use up the hour.
            if let (Some(counted), Err(refusal)) = (counted, &acted)
                && refusal.is_policy_rule()
            {
                self.limiter.forgive(counted);
            }
            match acted {
                Err(Refusal::UserNotFound) if !retried => {
                    info!(
                        forest = %account.forest,
                        dn = %account.dn,
                        "the account no longer exists; resolving the anchor again"
                    );
                    self.space.forget(&account).await;
                    retried = true;
                    found = self.space.resolve_fresh(&body.anchor).await;
                }
                Ok(reply) => return done(reply, None, None),
                Err(refusal) => {
                    let (reply, id) = refusal_reply(&refusal);
                    let text = Some(refusal.to_string()).filter(|t| *t != reply.message);
                    return Done {
                        place: refusal_place(&refusal),
                        ..done(reply, Some(id), text)
                    };
                }
            }
        }
    }

    /// The operation itself, on the resolved account.
    async fn act(
        &self,
        op: u8,
        body: &RequestBody,
        directory: &dyn Directory,
        account: &Account,
    ) -> Result<ReplyBody, Refusal> {
        let success = |message: &str| ReplyBody {
            outcome: outcome::SUCCESS,
            message: message.into(),
            details: Vec::new(),
        };
        match op {
            operation::RESET_PASSWORD => {
                let new = body.new_password.as_ref().ok_or_else(|| {
                    Refusal::DirectoryUnavailable("a reset without a password".into())
                })?;
                directory
                    .reset_password(account, new, body.unlock, body.must_change)
                    .await?;
                Ok(success("the password was changed"))
            }
            operation::CHANGE_PASSWORD => match (&body.current_password, &body.new_password) {
                (Some(current), Some(new)) => {
                    directory.change_password(account, current, new).await?;
                    Ok(success("the password was changed"))
                }
                _ => Err(Refusal::DirectoryUnavailable(
                    "a change needs both passwords".into(),
                )),
            },
            operation::UNLOCK_ACCOUNT => {
                directory.unlock(account).await?;
                Ok(success("the account was unlocked"))
            }
            operation::GET_PASSWORD_POLICY => {
                let policy = directory.policy(account).await?;
                let eligible = match directory.eligibility(account).await {
                    Ok(e) => Some(e),
                    Err(Refusal::UserNotFound) => return Err(Refusal::UserNotFound),
                    // The policy is still worth showing: without the
                    // details a portal goes on and learns at the write,
                    // as with an agent that predates them.
                    Err(e) => {
                        warn!(
                            forest = %account.forest,
                            error = %e,
                            "eligibility unknown; the policy reply goes without it"
                        );
                        None
                    }
                };
                Ok(policy_and_eligibility(&policy, eligible.as_ref()))
            }
            _ => Err(Refusal::DirectoryUnavailable(
                "unsupported operation".into(),
            )),
        }
    }
}

/// What [`Writeback::run`] found.
struct Done {
    reply: ReplyBody,
    detail_event: Option<u32>,
    /// The detail event's text when it differs from the reply's message.
    detail_text: Option<String>,
    /// A permission refusal's container, blocked_at and denied_at: for the
    /// event log, never the reply.
    place: Option<Place>,
    dn: Option<String>,
    forest: Option<String>,
}

impl Done {
    /// A failure before any account was found.
    fn unresolved(reply: ReplyBody, event: u32) -> Done {
        Done {
            reply,
            detail_event: Some(event),
            detail_text: None,
            place: None,
            dn: None,
            forest: None,
        }
    }
}

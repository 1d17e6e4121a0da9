//! Every sentence the portal shows, in each language it speaks, chosen by
//! the browser's `Accept-Language`.
//!
//! The catalogue is typed: [`Msg`] names each sentence with its values, and
//! each language is one exhaustive `match` ([`en`], [`de`]), so a sentence
//! added without its translation does not compile. Values that come from
//! the directory are passed in already filtered ([`crate::outcomes`]); the
//! catalogue only words them.

use std::convert::Infallible;

use axum::extract::FromRequestParts;
use axum::http::header::ACCEPT_LANGUAGE;
use axum::http::request::Parts;

use crate::Task;

pub mod de;
pub mod en;

/// A language of the portal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    #[default]
    En,
    De,
}

impl Lang {
    pub const ALL: &'static [Lang] = &[Lang::En, Lang::De];

    /// The BCP 47 tag, for `<html lang>`.
    pub fn tag(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::De => "de",
        }
    }

    /// The sentence in this language.
    pub fn text(self, msg: &Msg) -> String {
        match self {
            Lang::En => en::text(msg),
            Lang::De => de::text(msg),
        }
    }

    /// The language the browser prefers most among those spoken here,
    /// honouring q-values; English when none is.
    pub fn negotiate(accept_language: &str) -> Lang {
        let mut best: Option<(f32, Lang)> = None;
        for item in accept_language.split(',') {
            let mut parts = item.split(';');
            let range = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            let primary = range.split('-').next().unwrap_or("");
            let lang = match primary {
                "en" | "*" => Lang::En,
                "de" => Lang::De,
                _ => continue,
            };
            // The first of equal weights wins: the browser's own order.
            if q > 0.0 && best.is_none_or(|(b, _)| q > b) {
                best = Some((q, lang));
            }
        }
        best.map_or(Lang::En, |(_, lang)| lang)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Lang {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Lang, Infallible> {
        Ok(Lang::from_headers(&parts.headers))
    }
}

impl Lang {
    pub fn from_headers(headers: &axum::http::HeaderMap) -> Lang {
        let header = headers
            .get_all(ACCEPT_LANGUAGE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(",");
        Lang::negotiate(&header)
    }
}

/// Why the broker did not relay a request, in its own words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerWhy {
    NotConnected,
    WritebackOff,
    TooManyRequests,
    Busy,
    Restarting,
    Unreachable,
}

/// When to try again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum When {
    Later,
    InAMoment,
    AfterHelpDesk,
    /// In about this long.
    In(u64),
}

/// A character group the complexity rule counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Uppercase,
    Lowercase,
    Digit,
    Symbol,
}

/// What a failed "Check again" found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckTrouble {
    Pending,
    NoRecord,
    NoLongerHere,
    Unreadable,
    Unreachable,
}

/// What the password must not contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    Account,
    Display,
    Either,
}

/// Every sentence and label. Values are plain text; pages escape them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    // Page furniture.
    Banner,
    Heading(Task),
    HomeHeading,
    TasksLabel,
    AccountIntro(Task),
    AccountButton(Task),
    AccountLabel,
    AccountLabelShort,
    RulesHeading,
    RulesUnknown,
    RulesUnreadable,
    PolicySource(String),
    CurrentPassword,
    NewPassword,
    ConfirmPassword,
    PasswordButton(Task),
    ResetAlsoUnlocks,
    UseAnotherAccount,
    StartAgain,
    BackToStart,
    CheckAgain,
    HelpDeskReference(String),
    SupportCode(String),
    NotFoundHeading,
    NotFound,
    TooManyHeading,
    UnknownRequestHeading,
    UnknownRequest,
    FormUnreadableHeading,
    FormUnreadable,
    FormExpiredHeading,
    FormExpired,
    // Sign-in (identity_check = "oidc").
    ConfirmIntro(Task),
    SigninUnavailableHeading,
    SigninUnavailable,
    SigninExpiredHeading,
    SigninExpired,
    SignIn,
    SigninNotAcceptedHeading,
    SigninNotOurs,
    SigninNotCompletedHeading,
    SigninProviderRefused(String),
    SigninInvalid,
    SigninTooWeakHeading,
    SigninTooWeak,
    SigninNoAccountHeading,
    SigninNoAccount(String),
    SignedOutHeading,
    SignedOut,
    ProviderSignoutIntro,
    ProviderSignoutLink,
    SignedInAs,
    SignOut,
    // The portal's own checks, before anything is sent.
    EnterAccount,
    NotAnAccount,
    EnterCurrentPassword,
    EnterNewPassword,
    PasswordsDiffer,
    PasswordTooLong(usize),
    TooManyFromVisitor(u64),
    TooManyForAccount(u64),
    // The rules of step 2.
    RuleMinLength(u32),
    RuleComplexity,
    RuleAvoidName,
    RuleHistory(u32),
    RuleMinAge(u64),
    RuleMaxAge(u64),
    /// A duration in its largest whole unit, seconds given.
    Span(u64),
    /// A moment, milliseconds since 1970, as the user reads it.
    Time(u64),
    // Outcomes.
    Success(Task),
    NotApplied(Task),
    TooShort(u64),
    MissingOne(Vec<Group>),
    MissingSeveral(Vec<Group>),
    MustNotContain(NameKind, Option<String>),
    InHistory(u64),
    ChangedTooRecently(u64),
    PolicyNotMet,
    WrongCurrentPassword,
    AccountDisabled,
    AccountLocked(Task),
    UserNotFound(String),
    SeveralMatches(String),
    PermissionDenied(Option<String>),
    ProtectedAccount(Task),
    WritebackDisabled,
    DirectoryUnavailable,
    PolicyRefused(Option<u64>),
    AgentRateLimited(Option<(u64, u64)>),
    Refused,
    /// To a visitor whose identity is not verified: one sentence for
    /// every refusal that would tell whether an account exists.
    CannotHere(Task),
    // Failures on the way.
    Misconfigured,
    MisconfiguredUnconfirmed,
    PolicyNoAnswer,
    NoAnswer {
        task: Task,
        can_check: bool,
    },
    Unconfirmed {
        task: Task,
        why: BrokerWhy,
        when: When,
    },
    BrokerSays {
        why: BrokerWhy,
        when: When,
    },
    UnreachableNothingChanged,
    CheckFailed(Task, CheckTrouble),
}

impl Msg {
    /// One of each sentence, with sample values: what the completeness
    /// tests and the "no English left" test walk through.
    pub fn samples() -> Vec<Msg> {
        use Msg::*;
        let tasks = [Task::Reset, Task::Change, Task::Unlock];
        let whys = [
            BrokerWhy::NotConnected,
            BrokerWhy::WritebackOff,
            BrokerWhy::TooManyRequests,
            BrokerWhy::Busy,
            BrokerWhy::Restarting,
            BrokerWhy::Unreachable,
        ];
        let whens = [
            When::Later,
            When::InAMoment,
            When::AfterHelpDesk,
            When::In(120),
        ];
        let checks = [
            CheckTrouble::Pending,
            CheckTrouble::NoRecord,
            CheckTrouble::NoLongerHere,
            CheckTrouble::Unreadable,
            CheckTrouble::Unreachable,
        ];
        let mut all = vec![
            Banner,
            HomeHeading,
            TasksLabel,
            AccountLabel,
            AccountLabelShort,
            RulesHeading,
            RulesUnknown,
            RulesUnreadable,
            PolicySource("Default Domain Policy".into()),
            CurrentPassword,
            NewPassword,
            ConfirmPassword,
            ResetAlsoUnlocks,
            UseAnotherAccount,
            StartAgain,
            BackToStart,
            CheckAgain,
            HelpDeskReference("portal-0123456789abcdef".into()),
            SupportCode("0123-4567".into()),
            NotFoundHeading,
            NotFound,
            TooManyHeading,
            UnknownRequestHeading,
            UnknownRequest,
            FormUnreadableHeading,
            FormUnreadable,
            FormExpiredHeading,
            FormExpired,
            SigninUnavailableHeading,
            SigninUnavailable,
            SigninExpiredHeading,
            SigninExpired,
            SignIn,
            SigninNotAcceptedHeading,
            SigninNotOurs,
            SigninNotCompletedHeading,
            SigninProviderRefused("access_denied".into()),
            SigninInvalid,
            SigninTooWeakHeading,
            SigninTooWeak,
            SigninNoAccountHeading,
            SigninNoAccount("preferred_username".into()),
            SignedOutHeading,
            SignedOut,
            ProviderSignoutIntro,
            ProviderSignoutLink,
            SignedInAs,
            SignOut,
            EnterAccount,
            NotAnAccount,
            EnterCurrentPassword,
            EnterNewPassword,
            PasswordsDiffer,
            PasswordTooLong(256),
            TooManyFromVisitor(1),
            TooManyFromVisitor(30),
            TooManyForAccount(1200),
            RuleMinLength(8),
            RuleComplexity,
            RuleAvoidName,
            RuleHistory(24),
            RuleMinAge(86_400),
            RuleMaxAge(3_628_800),
            Span(1),
            Span(5_400),
            Span(7_200),
            Span(86_400),
            Time(1_764_151_200_000),
            TooShort(8),
            MissingOne(vec![Group::Uppercase, Group::Digit]),
            MissingSeveral(vec![Group::Uppercase, Group::Lowercase, Group::Symbol]),
            MustNotContain(NameKind::Account, Some("ada".into())),
            MustNotContain(NameKind::Display, None),
            MustNotContain(NameKind::Either, None),
            InHistory(24),
            ChangedTooRecently(1_764_151_200_000),
            PolicyNotMet,
            WrongCurrentPassword,
            AccountDisabled,
            UserNotFound("ada@contoso.example".into()),
            SeveralMatches("ada@contoso.example".into()),
            PermissionDenied(Some("Reset Password".into())),
            PermissionDenied(None),
            WritebackDisabled,
            DirectoryUnavailable,
            PolicyRefused(Some(24)),
            PolicyRefused(None),
            AgentRateLimited(Some((5, 600))),
            AgentRateLimited(None),
            Refused,
            Misconfigured,
            MisconfiguredUnconfirmed,
            PolicyNoAnswer,
            UnreachableNothingChanged,
        ];
        for task in tasks {
            all.extend([
                Heading(task),
                AccountIntro(task),
                ConfirmIntro(task),
                AccountButton(task),
                PasswordButton(task),
                Success(task),
                NotApplied(task),
                AccountLocked(task),
                ProtectedAccount(task),
                CannotHere(task),
                NoAnswer {
                    task,
                    can_check: true,
                },
                NoAnswer {
                    task,
                    can_check: false,
                },
            ]);
            for why in whys {
                for when in &whens {
                    all.push(Unconfirmed {
                        task,
                        why,
                        when: when.clone(),
                    });
                }
            }
            all.extend(checks.iter().map(|c| CheckFailed(task, *c)));
        }
        for why in whys {
            all.extend(whens.iter().map(|when| BrokerSays {
                why,
                when: when.clone(),
            }));
        }
        all
    }
}

/// The unit a duration is worded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Day,
    Hour,
    Minute,
    Second,
}

/// The largest unit that divides `secs`: 86400 is 1 day, 5400 is 90 minutes.
fn largest_unit(secs: u64) -> (u64, Unit) {
    match secs {
        s if s % 86_400 == 0 && s > 0 => (s / 86_400, Unit::Day),
        s if s % 3_600 == 0 && s > 0 => (s / 3_600, Unit::Hour),
        s if s % 60 == 0 && s > 0 => (s / 60, Unit::Minute),
        s => (s, Unit::Second),
    }
}

/// Year, month, day, hour, minute, second in UTC (the civil calendar from
/// days since 1970, after Howard Hinnant's `civil_from_days`).
fn utc(unix_ms: u64) -> (i64, u32, u32, u64, u64, u64) {
    let secs = unix_ms / 1000;
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, rest / 3600, rest % 3600 / 60, rest % 60)
}

#[cfg(test)]
mod tests;

//! English: the portal's first language, and the fallback.

use super::{BrokerWhy, CheckTrouble, Group, Msg, NameKind, When};
use crate::Task;

/// "whether your password was changed".
fn whether(task: Task) -> &'static str {
    match task {
        Task::Unlock => "whether your account was unlocked",
        Task::Reset | Task::Change => "whether your password was changed",
    }
}

fn sign_in_hint(task: Task) -> &'static str {
    match task {
        Task::Unlock => "Try signing in; if your account is still locked, try again",
        Task::Reset | Task::Change => {
            "Try signing in with your new password; if that fails, try again"
        }
    }
}

fn why(why: BrokerWhy) -> &'static str {
    match why {
        BrokerWhy::NotConnected => {
            "The password service reports that the on-premises service is not connected"
        }
        BrokerWhy::WritebackOff => {
            "The password service reports that password write-back is turned off for \
             your organisation"
        }
        BrokerWhy::TooManyRequests => {
            "The password service reports that it is receiving too many requests"
        }
        BrokerWhy::Busy => "The password service reports that the on-premises service is busy",
        BrokerWhy::Restarting => "The password service reports that it is restarting",
        BrokerWhy::Unreachable => "The password service cannot be reached right now",
    }
}

fn when(when: &When) -> String {
    match when {
        When::Later => "later".into(),
        When::InAMoment => "in a moment".into(),
        When::AfterHelpDesk => "after contacting your help desk".into(),
        When::In(secs) => format!("in {}", wait(*secs)),
    }
}

/// "30 seconds", "20 minutes".
fn wait(secs: u64) -> String {
    match secs {
        0..=1 => "a second".to_owned(),
        2..=90 => format!("{secs} seconds"),
        _ => {
            let minutes = secs.div_ceil(60);
            format!("{minutes} minute{}", if minutes == 1 { "" } else { "s" })
        }
    }
}

fn span(secs: u64) -> String {
    let (n, unit) = super::largest_unit(secs);
    let unit = match unit {
        super::Unit::Day => "day",
        super::Unit::Hour => "hour",
        super::Unit::Minute => "minute",
        super::Unit::Second => "second",
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// "2025-11-26 10:00:00 UTC".
fn time(unix_ms: u64) -> String {
    let (y, mo, d, h, mi, s) = super::utc(unix_ms);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} UTC")
}

fn group(g: Group) -> &'static str {
    match g {
        Group::Uppercase => "uppercase letter",
        Group::Lowercase => "lowercase letter",
        Group::Digit => "digit",
        Group::Symbol => "symbol",
    }
}

fn with_article(name: &str) -> String {
    let vowel = name.starts_with(['a', 'e', 'i', 'o', 'u']);
    format!("{} {name}", if vowel { "an" } else { "a" })
}

fn verb(task: Task) -> &'static str {
    match task {
        Task::Reset => "reset",
        Task::Change => "changed",
        Task::Unlock => "unlocked",
    }
}

pub fn text(msg: &Msg) -> String {
    match msg {
        Msg::Banner => "Demo portal: identity verification is not part of this reference. \
             A real portal makes users prove who they are (for example with multi-factor \
             authentication) before they reach these pages."
            .into(),
        Msg::Heading(Task::Reset) => "Reset a forgotten password".into(),
        Msg::Heading(Task::Change) => "Change your password".into(),
        Msg::Heading(Task::Unlock) => "Unlock your account".into(),
        Msg::HomeHeading => "What do you need?".into(),
        Msg::TasksLabel => "Tasks".into(),
        Msg::AccountIntro(Task::Reset) => "Enter your account. The next step shows your \
             organisation's password rules before you choose a new password."
            .into(),
        Msg::AccountIntro(Task::Change) => "Enter your account. The next step shows your \
             organisation's password rules; you will need your current password."
            .into(),
        Msg::AccountIntro(Task::Unlock) => "If your account was locked after too many sign-in \
             attempts, unlock it here. Your password does not change."
            .into(),
        Msg::AccountButton(Task::Unlock) => "Unlock account".into(),
        Msg::AccountButton(Task::Reset | Task::Change) => "Continue".into(),
        Msg::AccountLabel => "Account (your sign-in name, such as name@example.com)".into(),
        Msg::AccountLabelShort => "Account".into(),
        Msg::RulesHeading => "Your new password needs".into(),
        Msg::RulesUnknown => "Your organisation's password rules (any rule your password \
             breaks is named when you submit it)."
            .into(),
        Msg::RulesUnreadable => "The password rules for this account could not be read. Any \
             rule your password breaks is named when you submit it."
            .into(),
        Msg::PolicySource(source) => format!("Policy: {source}"),
        Msg::CurrentPassword => "Current password".into(),
        Msg::NewPassword => "New password".into(),
        Msg::ConfirmPassword => "Confirm new password".into(),
        Msg::PasswordButton(Task::Change) => "Change password".into(),
        Msg::PasswordButton(Task::Reset | Task::Unlock) => "Set new password".into(),
        Msg::ResetAlsoUnlocks => "This account is locked out. Setting a new password also \
             unlocks it."
            .into(),
        Msg::UseAnotherAccount => "Use another account".into(),
        Msg::StartAgain => "Start again".into(),
        Msg::BackToStart => "Back to the start page".into(),
        Msg::CheckAgain => "Check again".into(),
        Msg::HelpDeskReference(id) => format!("Reference for your help desk: {id}"),
        Msg::SupportCode(code) => format!("Support code for your help desk: {code}"),
        Msg::NotFoundHeading => "Page not found".into(),
        Msg::NotFound => "There is no page at this address.".into(),
        Msg::TooManyHeading => "Too many attempts".into(),
        Msg::UnknownRequestHeading => "Unknown request".into(),
        Msg::UnknownRequest => "This request reference is not one this portal issues. \
             Nothing was checked."
            .into(),
        Msg::FormUnreadableHeading => "This form could not be read".into(),
        Msg::FormUnreadable => "The form arrived incomplete or too large. Nothing was sent. \
             Go back and try again."
            .into(),
        Msg::FormExpiredHeading => "This form has expired".into(),
        Msg::FormExpired => "This form's security check failed: it was opened in another \
             browser, the portal restarted, or cookies are blocked. Nothing was sent. \
             Start again from the first page."
            .into(),
        Msg::ConfirmIntro(Task::Reset) => "The next step shows your organisation's password \
             rules before you choose a new password."
            .into(),
        Msg::ConfirmIntro(Task::Change) => "The next step shows your organisation's password \
             rules; you will need your current password."
            .into(),
        Msg::ConfirmIntro(Task::Unlock) => "If your account was locked after too many sign-in \
             attempts, unlock it here. Your password does not change."
            .into(),
        Msg::SigninUnavailableHeading => "Sign-in is unavailable".into(),
        Msg::SigninUnavailable => "The portal cannot reach the identity provider, so you cannot \
             sign in right now. Nothing was changed. Try again in a few minutes; if it persists, \
             contact your help desk."
            .into(),
        Msg::SigninExpiredHeading => "Sign in again".into(),
        Msg::SigninExpired => "Your sign-in has expired, so nothing was sent. Sign in again to \
             continue."
            .into(),
        Msg::SignIn => "Sign in".into(),
        Msg::SigninNotAcceptedHeading => "Sign-in not accepted".into(),
        Msg::SigninNotOurs => "This sign-in answer does not belong to a sign-in started in this \
             browser, or it took too long. You are not signed in. Start again from the first page."
            .into(),
        Msg::SigninNotCompletedHeading => "Sign-in not completed".into(),
        Msg::SigninProviderRefused(why) => {
            format!("The identity provider did not sign you in ({why}). You are not signed in.")
        }
        Msg::SigninInvalid => "The identity provider's answer could not be verified. You are not \
             signed in. Start again; if it persists, contact your help desk."
            .into(),
        Msg::SigninTooWeakHeading => "Stronger sign-in needed".into(),
        Msg::SigninTooWeak => "Your sign-in did not use the verification this portal requires \
             (for example multi-factor authentication). You are not signed in and nothing was \
             changed. Sign in again with your second factor, or ask your help desk to set one up."
            .into(),
        Msg::SigninNoAccountHeading => "No account to act on".into(),
        Msg::SigninNoAccount(claim) => format!(
            "The identity provider did not say which account is yours (no usable \"{claim}\" \
             claim). You are not signed in. Contact your help desk."
        ),
        Msg::SignedOutHeading => "Signed out".into(),
        Msg::SignedOut => "You are signed out of this portal.".into(),
        Msg::ProviderSignoutIntro => "On a shared computer, also sign out of".into(),
        Msg::ProviderSignoutLink => "your organisation's sign-in service".into(),
        Msg::SignedInAs => "Signed in as".into(),
        Msg::SignOut => "Sign out".into(),
        Msg::EnterAccount => {
            "Enter your account: your sign-in name, such as name@example.com.".into()
        }
        Msg::NotAnAccount => {
            "That is not an account name: use your sign-in name, such as name@example.com.".into()
        }
        Msg::EnterCurrentPassword => "Enter your current password.".into(),
        Msg::EnterNewPassword => "Enter a new password.".into(),
        Msg::PasswordsDiffer => {
            "The two new passwords differ. Type the same new password in both fields.".into()
        }
        Msg::PasswordTooLong(n) => {
            format!("The password is too long: use at most {n} characters.")
        }
        Msg::TooManyFromVisitor(secs) => format!(
            "Too many requests from your network address. Nothing was sent. Try again in {}.",
            wait(*secs)
        ),
        Msg::TooManyForAccount(secs) => format!(
            "Too many requests for this account. Nothing was sent. Try again in {}.",
            wait(*secs)
        ),
        Msg::RuleMinLength(n) => format!("At least {n} characters."),
        Msg::RuleComplexity => "Characters from at least three of these groups: uppercase \
             letters, lowercase letters, digits, symbols (such as ! $ # %). Spaces do not count."
            .into(),
        Msg::RuleAvoidName => "Avoid your account name and parts of your full name.".into(),
        Msg::RuleHistory(n) => {
            format!("It must differ from your last {n} passwords, the current one included.")
        }
        Msg::RuleMinAge(secs) => {
            format!("You can change your password once every {}.", span(*secs))
        }
        Msg::RuleMaxAge(secs) => format!("It expires after {}.", span(*secs)),
        Msg::Span(secs) => span(*secs),
        Msg::Time(ms) => time(*ms),
        Msg::Success(Task::Reset | Task::Change) => {
            "Your password was changed. You can sign in with the new password now.".into()
        }
        Msg::Success(Task::Unlock) => "Your account was unlocked. You can sign in again.".into(),
        Msg::NotApplied(task) => format!(
            "The on-premises service did not act on this delivery of your request. We could \
             not confirm {}. {} in a moment.",
            whether(*task),
            sign_in_hint(*task)
        ),
        Msg::TooShort(n) => format!("The password must have at least {n} characters."),
        Msg::MissingOne(groups) => {
            let names: Vec<String> = groups.iter().map(|g| with_article(group(*g))).collect();
            format!(
                "The password needs one more kind of character: add {}.",
                names.join(" or ")
            )
        }
        Msg::MissingSeveral(groups) => {
            let names: Vec<String> = groups.iter().map(|g| format!("{}s", group(*g))).collect();
            let needed = groups.len().saturating_sub(1);
            format!(
                "The password needs characters from at least three groups (uppercase \
                 letters, lowercase letters, digits, symbols; spaces do not count): add \
                 characters from {} of these: {}.",
                if needed == 2 { "two" } else { "three" },
                names.join(", ")
            )
        }
        Msg::MustNotContain(kind, name) => {
            let what = match kind {
                NameKind::Account => "your account name",
                NameKind::Display => "a part of your full name",
                NameKind::Either => "your account name or a part of your full name",
            };
            match name {
                Some(name) => {
                    format!("The password must not contain {what} (\u{201c}{name}\u{201d}).")
                }
                None => format!("The password must not contain {what}."),
            }
        }
        Msg::InHistory(n) => format!(
            "The password must differ from your last {n} passwords, the current one included. \
             Choose one you have not used before."
        ),
        Msg::ChangedTooRecently(ms) => format!(
            "Your password was changed too recently. You can change it again after {}.",
            time(*ms)
        ),
        Msg::PolicyNotMet => "The password does not meet your organisation's password rules, \
             so nothing was changed. Choose a different password."
            .into(),
        Msg::WrongCurrentPassword => {
            "The current password is not correct, so nothing was changed.".into()
        }
        Msg::AccountDisabled => "This account is disabled, so nothing was changed. Please \
             contact your help desk."
            .into(),
        Msg::AccountLocked(task) => format!(
            "This account is locked out, so its password cannot be {}. Unlock it first \
             (\u{201c}Unlock your account\u{201d}) or set a new one (\u{201c}Reset a \
             forgotten password\u{201d}), then try again.",
            verb(*task)
        ),
        Msg::UserNotFound(account) => format!(
            "No account named \u{201c}{account}\u{201d} was found. Check the spelling: \
             use your full sign-in name, such as name@example.com."
        ),
        Msg::SeveralMatches(account) => format!(
            "Several accounts are named \u{201c}{account}\u{201d}, so nothing was changed. \
             Please contact your help desk: they must resolve the duplicate."
        ),
        Msg::PermissionDenied(Some(right)) => format!(
            "The password service is not allowed to change this account (it lacks the \
             {right} permission). Nothing was changed. Your help desk can fix this."
        ),
        Msg::PermissionDenied(None) => "The password service is not allowed to change this \
             account. Nothing was changed. Your help desk can fix this."
            .into(),
        Msg::ProtectedAccount(task) => format!(
            "This is a protected administrator account: it cannot be {} from this portal. \
             Nothing was changed. Please contact your help desk.",
            verb(*task)
        ),
        Msg::WritebackDisabled => "Password write-back is turned off on the on-premises \
             service, so nothing was changed. Please contact your help desk."
            .into(),
        Msg::DirectoryUnavailable => "The on-premises directory could not be reached, so \
             nothing was changed. Please try again later."
            .into(),
        Msg::PolicyRefused(Some(n)) => format!(
            "Your organisation's password rules refused this password: it may be one of \
             your last {n} passwords, or contain a word that is not allowed. Nothing was \
             changed; choose a different password."
        ),
        Msg::PolicyRefused(None) => "Your organisation's password rules refused this \
             password: it may contain a word that is not allowed. Nothing was changed; \
             choose a different password."
            .into(),
        Msg::AgentRateLimited(Some((limit, secs))) => format!(
            "Too many attempts for this account: at most {limit} per hour. Nothing was \
             changed; try again in {}.",
            wait(*secs)
        ),
        Msg::AgentRateLimited(None) => "Too many attempts for this account. Nothing was \
             changed; try again later."
            .into(),
        Msg::Refused => "The request was refused, so nothing was changed. Please contact your \
             help desk."
            .into(),
        Msg::CannotHere(task) => format!(
            "This account cannot be {} here. Check that you typed your sign-in name \
             correctly; if it is right, contact your help desk and give them the support \
             code below.",
            verb(*task)
        ),
        Msg::Misconfigured => "The service is misconfigured, so nothing was changed. Please \
             contact your help desk."
            .into(),
        Msg::MisconfiguredUnconfirmed => "The service reports that it is misconfigured, and \
             we could not confirm whether anything was changed. Please contact your help desk."
            .into(),
        Msg::PolicyNoAnswer => {
            "The on-premises service did not answer in time. Please try again.".into()
        }
        Msg::NoAnswer { task, can_check } => format!(
            "We could not confirm {}: the request may have reached the on-premises service, \
             but no answer came back in time. {}",
            whether(*task),
            if *can_check {
                "Use \u{201c}Check again\u{201d} in a moment to ask for the answer."
            } else {
                "Try signing in before you try again."
            }
        ),
        Msg::Unconfirmed {
            task,
            why: w,
            when: at,
        } => format!(
            "{}. We could not confirm {}. {} {}.",
            why(*w),
            whether(*task),
            sign_in_hint(*task),
            when(at)
        ),
        Msg::BrokerSays { why: w, when: at } => {
            format!("{}. Please try again {}.", why(*w), when(at))
        }
        Msg::UnreachableNothingChanged => "The password service cannot be reached right now, \
             so nothing was changed. Please try again later."
            .into(),
        Msg::CheckFailed(task, trouble) => {
            let what = whether(*task);
            match trouble {
                CheckTrouble::Pending => format!(
                    "No answer yet: the on-premises service has not reported {what}. \
                     Please check again in a moment."
                ),
                CheckTrouble::NoRecord => format!(
                    "The service has no record of an answer to this request, so we cannot \
                     tell {what}. Try signing in before you try again."
                ),
                CheckTrouble::NoLongerHere => format!(
                    "This portal can no longer check that request (it was restarted, or the \
                     answer was already shown), so we cannot tell {what}. Try signing in \
                     before you try again."
                ),
                CheckTrouble::Unreadable => format!(
                    "The answer arrived but could not be read, so we cannot tell {what}. \
                     Try signing in before you try again."
                ),
                CheckTrouble::Unreachable => format!(
                    "We could not reach the service to ask {what}. Please check again in a \
                     moment."
                ),
            }
        }
    }
}

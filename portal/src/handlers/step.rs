//! The pages after a request was sent: step 2 or a refusal after the
//! policy, the result of an answered request, and what a failure leaves
//! the user to do. Every refusal and failure carries its support code.

use axum::response::{IntoResponse, Response};
use envelope::body::outcome;
use envelope::{Outcome, ReplyBody};
use proto::pb::Operation;
use relay_client::outcome::outcome_name;
use tracing::info;

use crate::i18n::{Lang, Msg};
use crate::outcomes::{self, Failure};
use crate::pages::{self, Alert, support_code};
use crate::policy::{Eligibility, PolicyView, eligibility};
use crate::{Settings, Task};

/// What a page after a sent request needs.
pub(super) struct Step<'a> {
    pub settings: &'a Settings,
    pub lang: Lang,
    pub task: Task,
    pub token: &'a str,
    pub account: &'a str,
    pub request_id: &'a str,
    pub verified: bool,
}

impl Step<'_> {
    /// Step 1 again, with why the request did not go through.
    pub fn account_again(&self, message: &Msg) -> Response {
        let alert = failed(self.lang, self.request_id, message);
        // Verified means signed in: the account is the session's, shown
        // read-only, never a field to edit.
        if self.verified {
            return crate::signin_pages::confirm_step(
                self.settings,
                self.lang,
                self.task,
                self.token,
                self.account,
                Some(&alert),
            )
            .into_response();
        }
        pages::account_step(
            self.settings,
            self.lang,
            self.task,
            self.token,
            self.account,
            Some(&alert),
        )
        .into_response()
    }

    /// Step 2, or step 1 with the refusal when the answer says the task
    /// cannot succeed whatever the password: nobody types a password for
    /// a disabled account.
    pub fn after_policy(&self, reply: &ReplyBody) -> Response {
        let operation = Operation::GetPasswordPolicy.as_str_name();
        if reply.typed_outcome() != Some(Outcome::Success) {
            log_refusal(self.request_id, operation, outcome_name(reply.outcome));
            let message = outcomes::refusal(reply, self.task, self.account, self.verified);
            return self.account_again(&message);
        }
        match eligibility(reply, self.task) {
            Eligibility::Refused(outcome) => {
                let name = outcome.map_or("UNKNOWN", Outcome::name);
                log_refusal(self.request_id, operation, name);
                let message = outcomes::ineligible(outcome, self.task, self.account, self.verified);
                self.account_again(&message)
            }
            Eligibility::Eligible { .. } => {
                let policy = PolicyView::from_reply(reply);
                pages::password_step(
                    self.settings,
                    self.lang,
                    self.task,
                    self.token,
                    self.account,
                    &policy,
                    None,
                )
                .into_response()
            }
        }
    }

    /// The end of a task whose request was answered (reset, change, unlock,
    /// or a late answer): the result page, or `Err(alert)` for the caller
    /// to show the form again with.
    pub fn answered(&self, operation: &str, reply: &ReplyBody) -> Result<Response, Alert> {
        if reply.outcome == outcome::SUCCESS {
            let alert = Alert::Success(self.lang.text(&outcomes::success(self.task)));
            return Ok(pages::result(self.settings, self.lang, self.task, &alert).into_response());
        }
        log_refusal(self.request_id, operation, outcome_name(reply.outcome));
        let message = outcomes::refusal(reply, self.task, self.account, self.verified);
        Err(failed(self.lang, self.request_id, &message))
    }

    /// The page for an unknown outcome, or `Err(alert)` for the caller to
    /// re-render its form with (the user may retry).
    pub fn after_failure(&self, failure: Failure) -> Result<Response, Alert> {
        match failure {
            Failure::Unknown {
                message,
                can_check: true,
            } => Ok(pages::unknown(
                self.settings,
                self.lang,
                self.task,
                self.token,
                self.account,
                self.request_id,
                &self.lang.text(&message),
            )
            .into_response()),
            Failure::Unknown {
                message,
                can_check: false,
            } => {
                let alert = failed(self.lang, self.request_id, &message);
                Ok(pages::result(self.settings, self.lang, self.task, &alert).into_response())
            }
            other => Err(failed(self.lang, self.request_id, &other.message())),
        }
    }
}

/// Logs a sealed refusal: the help desk looks it up by its support code.
fn log_refusal(request_id: &str, operation: &str, outcome: &str) {
    let support_code = support_code(request_id);
    info!(request_id, support_code, operation, outcome, "refused");
}

/// The alert for a request that was sent and did not succeed.
fn failed(lang: Lang, request_id: &str, message: &Msg) -> Alert {
    Alert::Failed {
        message: lang.text(message),
        support_code: support_code(request_id),
    }
}

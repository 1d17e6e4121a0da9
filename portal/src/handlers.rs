//! The routes. Each task is at most two steps, each a plain form POST:
//!
//! | route | does |
//! |---|---|
//! | `GET /` | the three tasks |
//! | `GET /reset`, `GET /change` | step 1: which account |
//! | `POST /reset/policy`, `POST /change/policy` | GET_PASSWORD_POLICY; step 2: the rules, then the password fields |
//! | `POST /reset`, `POST /change` | RESET_PASSWORD, CHANGE_PASSWORD |
//! | `GET /unlock`, `POST /unlock` | UNLOCK_ACCOUNT |
//! | `POST /outcome` | "Check again" after an unknown outcome |
//! | `GET /style.css` | the stylesheet |
//!
//! Every request is sealed here, on the server; the browser sends only what
//! its user typed and the CSRF token. Before anything is sent, the
//! visitor's and the account's allowances are checked ([`crate::visitors`]):
//! past them the answer is 429 with Retry-After, and the broker hears
//! nothing.
//!
//! Every page is in the language the browser asks for ([`Lang`]). Every
//! refusal and failure of a request that was sent shows its support code
//! ([`pages::support_code`]) and is logged with it, so the help desk can
//! find the request from what the user reads out.

use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use envelope::{Outcome, Password, ReplyBody, RequestBody};
use proto::pb::Operation;
use relay_client::connect::{CONNECT_TIMEOUT, HANDSHAKE_ALLOWANCE};
use relay_client::outcome::outcome_name;
use ring::rand::{SecureRandom, SystemRandom};
use serde::Deserialize;
use tracing::{error, info, warn};
use zeroize::Zeroizing;

use crate::csrf::{Browser, CarriesToken, Checked};
use crate::i18n::{Lang, Msg};
use crate::oidc::Identity;
use crate::outcomes::{self, Failure, Trouble};
use crate::pages::{self, Alert, support_code};
use crate::policy::PolicyView;
use crate::visitors::{Scope, Visitor};
use crate::{AppState, Settings, Task};

mod step;
use step::Step;

/// Active Directory's limit. 256 characters of UTF-8 also fit the
/// envelope's 1024-byte field.
pub const MAX_PASSWORD_CHARS: usize = 256;
/// The envelope's limit for the anchor.
pub const MAX_ACCOUNT_BYTES: usize = 1024;
/// Beyond the request deadline, the whole call may take this long to
/// connect to the broker (TCP, TLS, HTTP/2) and read its configuration.
const CONNECT_ALLOWANCE: Duration = CONNECT_TIMEOUT.saturating_add(HANDSHAKE_ALLOWANCE);

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/style.css", get(style))
        .route(
            "/reset",
            get(|s: State<AppState>, l: Lang, b, i: Identity| start(Task::Reset, s, l, b, i)).post(
                |s: State<AppState>, v: Visitor, l: Lang, i: Identity, f| {
                    apply(Task::Reset, s, v, l, i, f)
                },
            ),
        )
        .route(
            "/reset/policy",
            post(|s: State<AppState>, v: Visitor, l: Lang, i: Identity, f| {
                policy(Task::Reset, s, v, l, i, f)
            }),
        )
        .route(
            "/change",
            get(|s: State<AppState>, l: Lang, b, i: Identity| start(Task::Change, s, l, b, i))
                .post(|s: State<AppState>, v: Visitor, l: Lang, i: Identity, f| {
                    apply(Task::Change, s, v, l, i, f)
                }),
        )
        .route(
            "/change/policy",
            post(|s: State<AppState>, v: Visitor, l: Lang, i: Identity, f| {
                policy(Task::Change, s, v, l, i, f)
            }),
        )
        .route(
            "/unlock",
            get(|s: State<AppState>, l: Lang, b, i: Identity| start(Task::Unlock, s, l, b, i))
                .post(unlock),
        )
        .route("/outcome", post(check_again))
        .fallback(not_found)
}

#[derive(Deserialize)]
pub struct AccountForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    account: String,
}

/// Step 2 of reset and change. Passwords are wiped from memory when the
/// form is dropped (the web stack's own read buffers are beyond reach).
#[derive(Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    account: String,
    /// The policy shown in step 2, carried for re-rendering; see [`PolicyView`].
    #[serde(default)]
    policy: String,
    #[serde(default)]
    current_password: Zeroizing<String>,
    #[serde(default)]
    new_password: Zeroizing<String>,
    #[serde(default)]
    confirm_password: Zeroizing<String>,
}

#[derive(Deserialize)]
pub struct OutcomeForm {
    #[serde(default)]
    csrf: String,
    request_id: String,
    task: Task,
    #[serde(default)]
    account: String,
}

impl CarriesToken for AccountForm {
    fn csrf_token(&self) -> &str {
        &self.csrf
    }
}

impl CarriesToken for PasswordForm {
    fn csrf_token(&self) -> &str {
        &self.csrf
    }
}

impl CarriesToken for OutcomeForm {
    fn csrf_token(&self) -> &str {
        &self.csrf
    }
}

/// The account the user may act on. With `identity_check = "oidc"` it is
/// the signed-in session's, from the verified ID token; whatever account a
/// form posts is ignored (and logged when it differs), so editing the page
/// cannot aim the request at someone else. With `"none"` (demos only) it
/// comes from the form, and anyone could reset anyone's password.
fn account_to_act_on(identity: &Identity, typed: &str) -> Result<String, Msg> {
    if let Identity::SignedIn(who) = identity {
        if !typed.trim().is_empty() && typed.trim() != who.account {
            warn!(signed_in = %who.account, posted = %typed.trim(),
                "a form named another account than the signed-in one; ignored");
        }
        return Ok(who.account.clone());
    }
    let account = typed.trim();
    if account.is_empty() {
        return Err(Msg::EnterAccount);
    }
    if account.len() > MAX_ACCOUNT_BYTES || account.chars().any(char::is_control) {
        return Err(Msg::NotAnAccount);
    }
    Ok(account.to_owned())
}

/// Whether the portal verified who the user is before they named the
/// account. With `identity_check = "none"` it never has, so refusals that
/// would tell whether an account exists all read the same
/// ([`outcomes::refusal`]); a signed-in session has.
fn identity_verified(identity: &Identity) -> bool {
    matches!(identity, Identity::SignedIn(_))
}

/// What the portal catches itself, before anything is sent.
fn check_passwords(task: Task, form: &PasswordForm) -> Option<Msg> {
    let too_long = |p: &str| p.chars().count() > MAX_PASSWORD_CHARS;
    if task == Task::Change && form.current_password.is_empty() {
        return Some(Msg::EnterCurrentPassword);
    }
    if form.new_password.is_empty() {
        return Some(Msg::EnterNewPassword);
    }
    if *form.new_password != *form.confirm_password {
        return Some(Msg::PasswordsDiffer);
    }
    if too_long(&form.new_password) || too_long(&form.current_password) {
        return Some(Msg::PasswordTooLong(MAX_PASSWORD_CHARS));
    }
    None
}

fn new_request_id() -> String {
    let mut bytes = [0u8; 8];
    // As for the CSRF key: without an OS random source nothing is secure.
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the operating system's random number generator works");
    format!("portal-{:016x}", u64::from_be_bytes(bytes))
}

fn is_request_id(id: &str) -> bool {
    id.strip_prefix("portal-")
        .is_some_and(|hex| hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Seals, relays and opens one request, within the configured deadline.
async fn send(
    state: &AppState,
    request_id: &str,
    operation: Operation,
    body: &RequestBody,
) -> Result<ReplyBody, Trouble> {
    let deadline = state.settings.current().request_timeout;
    let call = state
        .portal
        .submit(request_id, operation, body, Some(deadline));
    // The gRPC deadline bounds the Submit; this also bounds the connection
    // and the configuration call before it, against a broker that accepts
    // and then never answers.
    match tokio::time::timeout(deadline + CONNECT_ALLOWANCE, call).await {
        Ok(Ok(answer)) => {
            info!(
                request_id,
                operation = operation.as_str_name(),
                outcome = outcome_name(answer.reply.outcome),
                agent_id = %answer.agent_id,
                "answered"
            );
            Ok(answer.reply)
        }
        Ok(Err(err)) => Err(Trouble::Sealed(err)),
        Err(_) => Err(Trouble::NoAnswer),
    }
}

/// A sealed refusal of the password itself: the account was not changed
/// and the user only needs another try, so it is given back to the
/// account's allowance ([`crate::visitors::Limiter::refund`]).
fn refused_by_policy(reply: &ReplyBody) -> bool {
    matches!(
        reply.typed_outcome(),
        Some(
            Outcome::PasswordTooShort
                | Outcome::FailsComplexity
                | Outcome::InHistory
                | Outcome::PolicyRefused
                | Outcome::ChangedTooRecently
        )
    )
}

/// The answer for a visitor or an account past its allowance, without
/// contacting the broker; `None` when the request may go.
fn over_limit(
    state: &AppState,
    lang: Lang,
    visitor: Visitor,
    account: Option<&str>,
) -> Option<Response> {
    let limited = state
        .limiter
        .admit(visitor, account, Instant::now())
        .err()?;
    let seconds = limited.retry_after.as_secs();
    // One line per burst: a flood must not flood the log as well.
    if limited.first {
        warn!(%visitor, scope = limited.scope.as_str(), retry_after_s = seconds,
            "requests limited before reaching the broker");
    }
    let message = match limited.scope {
        Scope::Visitor => Msg::TooManyFromVisitor(seconds),
        Scope::Account => Msg::TooManyForAccount(seconds),
    };
    let page = pages::problem(
        &state.settings.current(),
        lang,
        &lang.text(&Msg::TooManyHeading),
        &lang.text(&message),
    );
    let retry_after = [(RETRY_AFTER, seconds.max(1).to_string())];
    Some((StatusCode::TOO_MANY_REQUESTS, retry_after, page).into_response())
}

/// Logs what the user is not shown, with the support code they are.
fn log_failure(request_id: &str, operation: &str, trouble: &Trouble, failure: &Failure) {
    let support_code = support_code(request_id);
    if matches!(failure, Failure::Misconfigured { .. }) {
        error!(request_id, support_code, operation, error = %trouble, "request failed: the portal or the deployment needs an operator");
    } else {
        warn!(request_id, support_code, operation, error = %trouble, "request failed");
    }
}

async fn home(State(state): State<AppState>, lang: Lang) -> Html<String> {
    pages::home(&state.settings.current(), lang)
}

async fn style() -> impl IntoResponse {
    ([(CONTENT_TYPE, "text/css; charset=utf-8")], pages::STYLE)
}

async fn not_found(State(state): State<AppState>, lang: Lang) -> Response {
    let page = pages::problem(
        &state.settings.current(),
        lang,
        &lang.text(&Msg::NotFoundHeading),
        &lang.text(&Msg::NotFound),
    );
    (StatusCode::NOT_FOUND, page).into_response()
}

async fn start(
    task: Task,
    State(state): State<AppState>,
    lang: Lang,
    Extension(browser): Extension<Browser>,
    identity: Identity,
) -> Html<String> {
    let token = state.csrf.token(&browser.id);
    step_one(
        &state.settings.current(),
        lang,
        task,
        &token,
        &identity,
        "",
        None,
    )
}

/// Step 1: the account field, or once signed in, the session's account
/// shown read-only (no field to edit).
fn step_one(
    settings: &Settings,
    lang: Lang,
    task: Task,
    token: &str,
    identity: &Identity,
    typed: &str,
    alert: Option<&Alert>,
) -> Html<String> {
    match identity {
        Identity::SignedIn(who) => {
            crate::signin_pages::confirm_step(settings, lang, task, token, &who.account, alert)
        }
        Identity::Anyone => pages::account_step(settings, lang, task, token, typed, alert),
    }
}

/// Step 1 posted: fetch the policy and show step 2.
async fn policy(
    task: Task,
    State(state): State<AppState>,
    visitor: Visitor,
    lang: Lang,
    identity: Identity,
    Checked { form, token }: Checked<AccountForm>,
) -> Response {
    let settings = &state.settings.current();
    let account = match account_to_act_on(&identity, &form.account) {
        Ok(a) => a,
        Err(why) => {
            let alert = Alert::Error(lang.text(&why));
            return pages::account_step(settings, lang, task, &token, &form.account, Some(&alert))
                .into_response();
        }
    };
    if let Some(limited) = over_limit(&state, lang, visitor, Some(&account)) {
        return limited;
    }
    let request_id = new_request_id();
    let body = RequestBody::without_passwords(identity.anchor(&account));
    let sent = send(&state, &request_id, Operation::GetPasswordPolicy, &body).await;
    // Reading the policy changes nothing: it counts as an attempt only.
    state.limiter.refund(&account, Instant::now());
    let step = Step {
        settings,
        lang,
        task,
        token: &token,
        account: &account,
        request_id: &request_id,
        verified: identity_verified(&identity),
    };
    match sent {
        Ok(reply) => step.after_policy(&reply),
        Err(trouble) => {
            let failure = outcomes::failure(&trouble, task, false);
            let operation = Operation::GetPasswordPolicy.as_str_name();
            log_failure(&request_id, operation, &trouble, &failure);
            step.account_again(&failure.message())
        }
    }
}

/// Step 2 posted: reset or change.
async fn apply(
    task: Task,
    State(state): State<AppState>,
    visitor: Visitor,
    lang: Lang,
    identity: Identity,
    Checked { mut form, token }: Checked<PasswordForm>,
) -> Response {
    let settings = &state.settings.current();
    let account = match account_to_act_on(&identity, &form.account) {
        Ok(a) => a,
        Err(why) => {
            let alert = Alert::Error(lang.text(&why));
            return pages::account_step(settings, lang, task, &token, &form.account, Some(&alert))
                .into_response();
        }
    };
    let policy = PolicyView::from_hidden(&form.policy).unwrap_or_default();
    let step2 = |alert: Alert| {
        pages::password_step(
            settings,
            lang,
            task,
            &token,
            &account,
            &policy,
            Some(&alert),
        )
        .into_response()
    };
    if let Some(problem) = check_passwords(task, &form) {
        return step2(Alert::Error(lang.text(&problem)));
    }
    if let Some(limited) = over_limit(&state, lang, visitor, Some(&account)) {
        return limited;
    }
    // Moved, not copied, into the zeroizing Password the envelope is sealed from.
    let new = Password::new(std::mem::take(&mut *form.new_password));
    let anchor = identity.anchor(&account);
    let (operation, body) = match task {
        Task::Change => {
            let current = Password::new(std::mem::take(&mut *form.current_password));
            (
                Operation::ChangePassword,
                RequestBody::change(anchor, current, new),
            )
        }
        // Routed for reset and change only; unlock has no password step.
        // A reset also unlocks: someone who forgot their password has often
        // locked the account guessing it, and "sign in now" must be true.
        Task::Reset | Task::Unlock => (
            Operation::ResetPassword,
            RequestBody {
                unlock: true,
                ..RequestBody::reset(anchor, new)
            },
        ),
    };
    drop(form);
    let request_id = new_request_id();
    let sent = send(&state, &request_id, operation, &body).await;
    drop(body);
    if matches!(&sent, Ok(reply) if refused_by_policy(reply)) {
        state.limiter.refund(&account, Instant::now());
    }
    let step = Step {
        settings,
        lang,
        task,
        token: &token,
        account: &account,
        request_id: &request_id,
        verified: identity_verified(&identity),
    };
    match sent {
        Ok(reply) => step
            .answered(operation.as_str_name(), &reply)
            .unwrap_or_else(step2),
        Err(trouble) => {
            let failure = outcomes::failure(&trouble, task, true);
            log_failure(&request_id, operation.as_str_name(), &trouble, &failure);
            step.after_failure(failure).unwrap_or_else(step2)
        }
    }
}

async fn unlock(
    State(state): State<AppState>,
    visitor: Visitor,
    lang: Lang,
    identity: Identity,
    Checked { form, token }: Checked<AccountForm>,
) -> Response {
    let task = Task::Unlock;
    let settings = &state.settings.current();
    let form_again = |account: &str, alert: Alert| {
        step_one(
            settings,
            lang,
            task,
            &token,
            &identity,
            account,
            Some(&alert),
        )
        .into_response()
    };
    let account = match account_to_act_on(&identity, &form.account) {
        Ok(a) => a,
        Err(why) => return form_again(&form.account, Alert::Error(lang.text(&why))),
    };
    if let Some(limited) = over_limit(&state, lang, visitor, Some(&account)) {
        return limited;
    }
    let request_id = new_request_id();
    let body = RequestBody::without_passwords(identity.anchor(&account));
    let operation = Operation::UnlockAccount;
    let sent = send(&state, &request_id, operation, &body).await;
    let step = Step {
        settings,
        lang,
        task,
        token: &token,
        account: &account,
        request_id: &request_id,
        verified: identity_verified(&identity),
    };
    match sent {
        Ok(reply) => step
            .answered(operation.as_str_name(), &reply)
            .unwrap_or_else(|alert| form_again(&account, alert)),
        Err(trouble) => {
            let failure = outcomes::failure(&trouble, task, true);
            log_failure(&request_id, operation.as_str_name(), &trouble, &failure);
            step.after_failure(failure)
                .unwrap_or_else(|alert| form_again(&account, alert))
        }
    }
}

/// "Check again": the late answer of a request whose outcome was unknown,
/// opened with the reply key the shared [`relay_client::sealed::SealedPortal`] kept.
async fn check_again(
    State(state): State<AppState>,
    visitor: Visitor,
    lang: Lang,
    identity: Identity,
    Checked { form, token }: Checked<OutcomeForm>,
) -> Response {
    // Signed in, the messages name the session's account, not the form's.
    let form = match &identity {
        Identity::SignedIn(who) => OutcomeForm {
            account: who.account.clone(),
            ..form
        },
        Identity::Anyone => form,
    };
    let settings = &state.settings.current();
    let task = form.task;
    if !is_request_id(&form.request_id) {
        let page = pages::problem(
            settings,
            lang,
            &lang.text(&Msg::UnknownRequestHeading),
            &lang.text(&Msg::UnknownRequest),
        );
        return (StatusCode::BAD_REQUEST, page).into_response();
    }
    // The request was counted against its account when it was sent.
    if let Some(limited) = over_limit(&state, lang, visitor, None) {
        return limited;
    }
    let request_id = form.request_id.as_str();
    let call = state.portal.outcome(request_id);
    let checked = tokio::time::timeout(settings.request_timeout + CONNECT_ALLOWANCE, call)
        .await
        .map_err(|_| Trouble::NoAnswer)
        .and_then(|r| r.map_err(Trouble::Sealed));
    let step = Step {
        settings,
        lang,
        task,
        token: &token,
        account: &form.account,
        request_id,
        verified: identity_verified(&identity),
    };
    let result = |alert: Alert| pages::result(settings, lang, task, &alert).into_response();
    match checked {
        Ok(answer) => {
            info!(
                request_id,
                outcome = outcome_name(answer.reply.outcome),
                "late answer"
            );
            step.answered("GET_OUTCOME", &answer.reply)
                .unwrap_or_else(result)
        }
        Err(trouble) => {
            let failure = outcomes::check_failure(&trouble, task);
            log_failure(request_id, "GET_OUTCOME", &trouble, &failure);
            step.after_failure(failure).unwrap_or_else(result)
        }
    }
}

#[cfg(test)]
mod language_tests;
#[cfg(test)]
mod tests;

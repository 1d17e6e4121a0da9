//! The sign-in pages of `identity_check = "oidc"`, and the "Signed in as …
//! · Sign out" line every page shows then. Kept apart from [`crate::pages`]
//! (built on its layout) so that the two change independently.
//!
//! Stable element ids for browser tests: `signed-in` (the line),
//! `signout-form` and its button `signout`; the task forms keep
//! `reset-form`, `change-form`, `unlock-form` and `submit`.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};

use crate::csrf::{Browser, FIELD};
use crate::oidc::SIGNOUT_PATH;
use crate::pages::{self, escape};
use crate::{AppState, Settings, Task};

/// Pages are a few KiB; anything larger is passed through undecorated.
const MAX_PAGE_BYTES: usize = 256 * 1024;

/// The first step of a task once signed in: the account is the session's,
/// shown, not asked for. The form carries no `account` field at all.
pub fn confirm_step(
    settings: &Settings,
    task: Task,
    token: &str,
    account: &str,
    message: Option<&str>,
) -> Html<String> {
    let (intro, action, button) = match task {
        Task::Reset => (
            "The next step shows your organisation's password rules before you choose a \
             new password.",
            "/reset/policy",
            "Continue",
        ),
        Task::Change => (
            "The next step shows your organisation's password rules; you will need your \
             current password.",
            "/change/policy",
            "Continue",
        ),
        Task::Unlock => (
            "If your account was locked after too many sign-in attempts, unlock it here. \
             Your password does not change.",
            "/unlock",
            "Unlock account",
        ),
    };
    let alert = message.map_or(String::new(), |m| {
        format!(
            "<div id=\"result\" class=\"result error\" role=\"alert\"><p>{}</p></div>\n",
            escape(m)
        )
    });
    let content = format!(
        "{alert}<p>Account: <strong id=\"account\">{account}</strong></p>\n<p>{intro}</p>\n\
         <form id=\"{task}-form\" method=\"post\" action=\"{action}\">\n\
         <input type=\"hidden\" name=\"{FIELD}\" value=\"{token}\">\n\
         <button id=\"submit\" type=\"submit\">{button}</button>\n</form>\n",
        account = escape(account),
        task = task.name(),
        token = escape(token),
    );
    pages::layout(settings, task.heading(), &content)
}

/// Discovery has not succeeded: nobody can sign in, so nothing can be done.
pub fn unavailable(settings: &Settings) -> Response {
    let page = pages::problem(
        settings,
        "Sign-in is unavailable",
        "The portal cannot reach the identity provider, so you cannot sign in right now. \
         Nothing was changed. Try again in a few minutes; if it persists, contact your help desk.",
    );
    (StatusCode::SERVICE_UNAVAILABLE, page).into_response()
}

/// A form posted without a valid session (it expired, or the user signed
/// out in another tab). Nothing was sent.
pub fn expired(settings: &Settings, next: &str) -> Html<String> {
    let content = format!(
        "<div id=\"result\" class=\"result error\" role=\"alert\"><p>Your sign-in has \
         expired, so nothing was sent. Sign in again to continue.</p></div>\n\
         <p><a id=\"signin\" href=\"{}?next={}\">Sign in</a></p>\n",
        crate::oidc::SIGNIN_PATH,
        escape(next)
    );
    pages::layout(settings, "Sign in again", &content)
}

pub fn not_ours(settings: &Settings) -> Html<String> {
    pages::problem(
        settings,
        "Sign-in not accepted",
        "This sign-in answer does not belong to a sign-in started in this browser, or it \
         took too long. You are not signed in. Start again from the first page.",
    )
}

pub fn provider_refused(settings: &Settings, why: &str) -> Html<String> {
    pages::problem(
        settings,
        "Sign-in not completed",
        &format!("The identity provider did not sign you in ({why}). You are not signed in."),
    )
}

pub fn invalid(settings: &Settings) -> Html<String> {
    pages::problem(
        settings,
        "Sign-in not accepted",
        "The identity provider's answer could not be verified. You are not signed in. \
         Start again; if it persists, contact your help desk.",
    )
}

pub fn too_weak(settings: &Settings) -> Html<String> {
    pages::problem(
        settings,
        "Stronger sign-in needed",
        "Your sign-in did not use the verification this portal requires (for example \
         multi-factor authentication). You are not signed in and nothing was changed. \
         Sign in again with your second factor, or ask your help desk to set one up.",
    )
}

pub fn no_account(settings: &Settings, claim: &str) -> Html<String> {
    pages::problem(
        settings,
        "No account to act on",
        &format!(
            "The identity provider did not say which account is yours (no usable \"{claim}\" \
             claim). You are not signed in. Contact your help desk."
        ),
    )
}

/// After sign-out. The provider's own session may still be open (on a
/// shared computer the next person would be signed straight back in), so
/// a link ends it too when the provider offers RP-initiated logout.
pub fn signed_out(settings: &Settings, provider_logout: Option<&str>) -> Html<String> {
    let provider = provider_logout.map_or(String::new(), |url| {
        format!(
            "<p>On a shared computer, also <a id=\"provider-signout\" href=\"{}\">sign out of \
             your organisation's sign-in service</a>.</p>\n",
            escape(url)
        )
    });
    let content = format!(
        "<div id=\"result\" class=\"result success\" role=\"status\">\
         <p>You are signed out of this portal.</p></div>\n{provider}\
         <p><a href=\"/\">Back to the start page</a></p>\n"
    );
    pages::layout(settings, "Signed out", &content)
}

/// The line under the header when signed in.
fn signed_in_line(account: &str, token: &str) -> String {
    format!(
        "<form id=\"signout-form\" class=\"signed-in\" method=\"post\" action=\"{SIGNOUT_PATH}\">\n\
         <p id=\"signed-in\">Signed in as <strong>{}</strong> \u{b7} \
         <input type=\"hidden\" name=\"{FIELD}\" value=\"{}\">\
         <button id=\"signout\" type=\"submit\">Sign out</button></p>\n</form>\n",
        escape(account),
        escape(token),
    )
}

/// Middleware, with `identity_check = "oidc"` only: drops the demo banner
/// (identity is verified now) and puts the signed-in line at the top of
/// every HTML page. Done on the rendered page rather than inside
/// [`crate::pages`] so that its templates need no signed-in parameter.
pub async fn decorate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(oidc) = state.oidc.clone() else {
        return next.run(request).await;
    };
    let who = oidc.signed_in(request.headers());
    let browser = request.extensions().get::<Browser>().cloned();
    let response = next.run(request).await;
    let is_html = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if !is_html {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_PAGE_BYTES).await else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "page too large\n").into_response();
    };
    let mut page = String::from_utf8_lossy(&bytes).into_owned();
    let banner = page.find("<p id=\"demo-banner\"").and_then(|start| {
        let len = page[start..].find("</p>\n")?;
        Some(start..start + len + "</p>\n".len())
    });
    if let Some(range) = banner {
        page.replace_range(range, "");
    }
    if let (Some(who), Some(browser)) = (who, browser) {
        let line = signed_in_line(&who.account, &state.csrf.token(&browser.id));
        if let Some(at) = page.find("<main>\n") {
            page.insert_str(at + "<main>\n".len(), &line);
        }
    }
    parts.headers.remove(CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(page))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            title: "Contoso".into(),
            request_timeout: std::time::Duration::from_secs(30),
        }
    }

    #[test]
    fn the_confirm_step_has_no_account_field_and_escapes() {
        let Html(page) = confirm_step(&settings(), Task::Reset, "tok", "<ada>", Some("<b>"));
        assert!(!page.contains("name=\"account\""), "{page}");
        assert!(page.contains("&lt;ada&gt;") && page.contains("&lt;b&gt;"));
        assert!(page.contains("action=\"/reset/policy\""));
        let line = signed_in_line("\"x", "t");
        assert!(line.contains("&quot;x") && line.contains("action=\"/signout\""));
    }
}

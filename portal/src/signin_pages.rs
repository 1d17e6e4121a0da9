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
use crate::i18n::{Lang, Msg};
use crate::oidc::SIGNOUT_PATH;
use crate::pages::{self, Alert, escape};
use crate::{AppState, Settings, Task};

/// Pages are a few KiB; anything larger is passed through undecorated.
const MAX_PAGE_BYTES: usize = 256 * 1024;

/// The first step of a task once signed in: the account is the session's,
/// shown, not asked for. The form carries no `account` field at all.
pub fn confirm_step(
    settings: &Settings,
    lang: Lang,
    task: Task,
    token: &str,
    account: &str,
    message: Option<&Alert>,
) -> Html<String> {
    let action = task.step_one_action();
    let content = format!(
        "{alert}<p>{label}: <strong id=\"account\">{account}</strong></p>\n<p>{intro}</p>\n\
         <form id=\"{task}-form\" method=\"post\" action=\"{action}\">\n\
         <input type=\"hidden\" name=\"{FIELD}\" value=\"{token}\">\n\
         <button id=\"submit\" type=\"submit\">{button}</button>\n</form>\n",
        alert = pages::alert(lang, message),
        label = escape(&lang.text(&Msg::AccountLabelShort)),
        account = escape(account),
        intro = escape(&lang.text(&Msg::ConfirmIntro(task))),
        button = escape(&lang.text(&Msg::AccountButton(task))),
        task = task.name(),
        token = escape(token),
    );
    pages::layout(settings, lang, &lang.text(&Msg::Heading(task)), &content)
}

/// A page of heading and sentence.
fn problem(settings: &Settings, lang: Lang, heading: Msg, text: Msg) -> Html<String> {
    pages::problem(settings, lang, &lang.text(&heading), &lang.text(&text))
}

/// Discovery has not succeeded: nobody can sign in, so nothing can be done.
pub fn unavailable(settings: &Settings, lang: Lang) -> Response {
    let page = problem(
        settings,
        lang,
        Msg::SigninUnavailableHeading,
        Msg::SigninUnavailable,
    );
    (StatusCode::SERVICE_UNAVAILABLE, page).into_response()
}

/// A form posted without a valid session (it expired, or the user signed
/// out in another tab). Nothing was sent.
pub fn expired(settings: &Settings, lang: Lang, next: &str) -> Html<String> {
    let content = format!(
        "<div id=\"result\" class=\"result error\" role=\"alert\"><p>{}</p></div>\n\
         <p><a id=\"signin\" href=\"{}?next={}\">{}</a></p>\n",
        escape(&lang.text(&Msg::SigninExpired)),
        crate::oidc::SIGNIN_PATH,
        escape(next),
        escape(&lang.text(&Msg::SignIn)),
    );
    pages::layout(
        settings,
        lang,
        &lang.text(&Msg::SigninExpiredHeading),
        &content,
    )
}

pub fn not_ours(settings: &Settings, lang: Lang) -> Html<String> {
    problem(
        settings,
        lang,
        Msg::SigninNotAcceptedHeading,
        Msg::SigninNotOurs,
    )
}

pub fn provider_refused(settings: &Settings, lang: Lang, why: &str) -> Html<String> {
    problem(
        settings,
        lang,
        Msg::SigninNotCompletedHeading,
        Msg::SigninProviderRefused(why.to_owned()),
    )
}

pub fn invalid(settings: &Settings, lang: Lang) -> Html<String> {
    problem(
        settings,
        lang,
        Msg::SigninNotAcceptedHeading,
        Msg::SigninInvalid,
    )
}

pub fn too_weak(settings: &Settings, lang: Lang) -> Html<String> {
    problem(
        settings,
        lang,
        Msg::SigninTooWeakHeading,
        Msg::SigninTooWeak,
    )
}

pub fn no_account(settings: &Settings, lang: Lang, claim: &str) -> Html<String> {
    problem(
        settings,
        lang,
        Msg::SigninNoAccountHeading,
        Msg::SigninNoAccount(claim.to_owned()),
    )
}

/// After sign-out. The provider's own session may still be open (on a
/// shared computer the next person would be signed straight back in), so
/// a link ends it too when the provider offers RP-initiated logout.
pub fn signed_out(settings: &Settings, lang: Lang, provider_logout: Option<&str>) -> Html<String> {
    let provider = provider_logout.map_or(String::new(), |url| {
        format!(
            "<p>{} <a id=\"provider-signout\" href=\"{}\">{}</a>.</p>\n",
            escape(&lang.text(&Msg::ProviderSignoutIntro)),
            escape(url),
            escape(&lang.text(&Msg::ProviderSignoutLink)),
        )
    });
    let content = format!(
        "<div id=\"result\" class=\"result success\" role=\"status\">\
         <p>{}</p></div>\n{provider}\
         <p><a href=\"/\">{}</a></p>\n",
        escape(&lang.text(&Msg::SignedOut)),
        escape(&lang.text(&Msg::BackToStart)),
    );
    pages::layout(settings, lang, &lang.text(&Msg::SignedOutHeading), &content)
}

/// The line under the header when signed in.
fn signed_in_line(lang: Lang, account: &str, token: &str) -> String {
    format!(
        "<form id=\"signout-form\" class=\"signed-in\" method=\"post\" action=\"{SIGNOUT_PATH}\">\n\
         <p id=\"signed-in\">{} <strong>{}</strong> \u{b7} \
         <input type=\"hidden\" name=\"{FIELD}\" value=\"{}\">\
         <button id=\"signout\" type=\"submit\">{}</button></p>\n</form>\n",
        escape(&lang.text(&Msg::SignedInAs)),
        escape(account),
        escape(token),
        escape(&lang.text(&Msg::SignOut)),
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
    let lang = request
        .headers()
        .get(axum::http::header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .map_or(Lang::En, Lang::negotiate);
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
    // The banner is an <aside> of its own (pages::layout); it says nobody
    // is verified, which is no longer true.
    let banner = page.find("<aside class=\"banner\"").and_then(|start| {
        let len = page[start..].find("</aside>\n")?;
        Some(start..start + len + "</aside>\n".len())
    });
    if let Some(range) = banner {
        page.replace_range(range, "");
    }
    if let (Some(who), Some(browser)) = (who, browser) {
        let line = signed_in_line(lang, &who.account, &state.csrf.token(&browser.id));
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
        let alert = Alert::Error("<b>".into());
        let Html(page) = confirm_step(
            &settings(),
            Lang::En,
            Task::Reset,
            "tok",
            "<ada>",
            Some(&alert),
        );
        assert!(!page.contains("name=\"account\""), "{page}");
        assert!(page.contains("&lt;ada&gt;") && page.contains("&lt;b&gt;"));
        assert!(page.contains("action=\"/reset/policy\""));
        let line = signed_in_line(Lang::En, "\"x", "t");
        assert!(line.contains("&quot;x") && line.contains("action=\"/signout\""));
    }
}

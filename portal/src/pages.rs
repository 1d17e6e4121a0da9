//! Server-rendered pages: plain HTML without scripts, every dynamic value
//! escaped. Password inputs are always rendered empty. Element ids are
//! stable, for browser tests: forms `reset-form`, `change-form`,
//! `unlock-form` (and `outcome-form`); inputs `account`, `current-password`,
//! `new-password`, `confirm-password`; buttons `submit`; the error
//! (`role="alert"`) or success (`role="status"`) container `result`; the
//! password rules `policy`.

use axum::response::Html;

use crate::csrf::FIELD;
use crate::policy::PolicyView;
use crate::{Settings, Task};

/// Shown on every page, so nobody mistakes this reference for a product.
pub const BANNER: &str = "Demo portal: identity verification is not part of this reference. \
     A real portal makes users prove who they are (for example with multi-factor \
     authentication) before they reach these pages.";

/// Text for HTML content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A message about what just happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Alert {
    Error(String),
    Success(String),
}

impl Alert {
    fn render(&self) -> String {
        let (class, role, text) = match self {
            Alert::Error(t) => ("error", "alert", t),
            Alert::Success(t) => ("success", "status", t),
        };
        format!(
            "<div id=\"result\" class=\"result {class}\" role=\"{role}\"><p>{}</p></div>\n",
            escape(text)
        )
    }
}

/// The page around `content`; also used by [`crate::signin_pages`].
pub fn layout(settings: &Settings, heading: &str, content: &str) -> Html<String> {
    let title = escape(&settings.title);
    Html(format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{heading} \u{2013} {title}</title>\n\
         <link rel=\"stylesheet\" href=\"/style.css\">\n</head>\n<body>\n\
         <header><a class=\"site\" href=\"/\">{title}</a></header>\n\
         <p id=\"demo-banner\" class=\"banner\">{banner}</p>\n\
         <main>\n<h1>{heading}</h1>\n{content}</main>\n</body>\n</html>\n",
        heading = escape(heading),
        banner = escape(BANNER),
    ))
}

fn hidden(name: &str, value: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"{name}\" value=\"{}\">\n",
        escape(value)
    )
}

/// A labelled input; `value` is `None` for passwords, which are never echoed.
fn field(id: &str, name: &str, label: &str, attrs: &str, value: Option<&str>) -> String {
    let value = value.map_or(String::new(), |v| format!(" value=\"{}\"", escape(v)));
    format!(
        "<div class=\"field\"><label for=\"{id}\">{label}</label>\n\
         <input id=\"{id}\" name=\"{name}\" {attrs}{value}></div>\n"
    )
}

fn password(id: &str, name: &str, label: &str, autocomplete: &str) -> String {
    field(
        id,
        name,
        label,
        &format!("type=\"password\" autocomplete=\"{autocomplete}\" required"),
        None,
    )
}

fn alert(alert: Option<&Alert>) -> String {
    alert.map_or(String::new(), Alert::render)
}

pub fn home(settings: &Settings) -> Html<String> {
    let links: String = [Task::Reset, Task::Change, Task::Unlock]
        .iter()
        .map(|t| format!("<li><a href=\"{}\">{}</a></li>\n", t.path(), t.heading()))
        .collect();
    layout(
        settings,
        "What do you need?",
        &format!("<nav aria-label=\"Tasks\"><ul class=\"tasks\">\n{links}</ul></nav>\n"),
    )
}

/// Step 1 (reset, change) or the only step (unlock): which account.
pub fn account_step(
    settings: &Settings,
    task: Task,
    token: &str,
    account: &str,
    message: Option<&Alert>,
) -> Html<String> {
    let (intro, action, button) = match task {
        Task::Reset => (
            "Enter your account. The next step shows your organisation's password rules \
             before you choose a new password.",
            "/reset/policy",
            "Continue",
        ),
        Task::Change => (
            "Enter your account. The next step shows your organisation's password rules; \
             you will need your current password.",
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
    let content = format!(
        "{alert}<p>{intro}</p>\n\
         <form id=\"{task}-form\" method=\"post\" action=\"{action}\">\n{csrf}{account}\
         <button id=\"submit\" type=\"submit\">{button}</button>\n</form>\n",
        alert = alert(message),
        task = task.name(),
        csrf = hidden(FIELD, token),
        account = field(
            "account",
            "account",
            "Account (your sign-in name, such as name@example.com)",
            "type=\"text\" autocomplete=\"username\" autocapitalize=\"none\" \
             spellcheck=\"false\" required",
            Some(account),
        ),
    );
    layout(settings, task.heading(), &content)
}

/// Step 2 (reset, change): the rules first, then the password fields.
pub fn password_step(
    settings: &Settings,
    task: Task,
    token: &str,
    account: &str,
    policy: &PolicyView,
    message: Option<&Alert>,
) -> Html<String> {
    let rules: String = policy
        .rules(task)
        .iter()
        .map(|r| format!("<li>{}</li>\n", escape(r)))
        .collect();
    // The policy travels in a hidden field; a form posted without it still
    // gets the exact rule in the refusal, just not the list.
    let rules = if rules.is_empty() {
        "<li>Your organisation's password rules (any rule your password breaks is named \
         when you submit it).</li>\n"
            .to_owned()
    } else {
        rules
    };
    let source = policy.source.as_deref().map_or(String::new(), |s| {
        format!("<p class=\"source\">Policy: {}</p>\n", escape(s))
    });
    let current = match task {
        Task::Change => password(
            "current-password",
            "current_password",
            "Current password",
            "current-password",
        ),
        Task::Reset | Task::Unlock => String::new(),
    };
    let button = match task {
        Task::Change => "Change password",
        Task::Reset | Task::Unlock => "Set new password",
    };
    let content = format!(
        "{alert}<section id=\"policy\" aria-labelledby=\"policy-heading\">\n\
         <h2 id=\"policy-heading\">Your new password needs</h2>\n<ul>\n{rules}</ul>\n{source}</section>\n\
         <form id=\"{task}-form\" method=\"post\" action=\"{path}\">\n{csrf}{policy}{account}\
         {current}{new}{confirm}<button id=\"submit\" type=\"submit\">{button}</button>\n</form>\n\
         <p><a href=\"{path}\">Use another account</a></p>\n",
        alert = alert(message),
        task = task.name(),
        path = task.path(),
        csrf = hidden(FIELD, token),
        policy = hidden("policy", &policy.to_hidden()),
        account = field(
            "account",
            "account",
            "Account",
            "type=\"text\" autocomplete=\"username\" readonly",
            Some(account),
        ),
        new = password(
            "new-password",
            "new_password",
            "New password",
            "new-password"
        ),
        confirm = password(
            "confirm-password",
            "confirm_password",
            "Confirm new password",
            "new-password",
        ),
    );
    layout(settings, task.heading(), &content)
}

/// The end of a task: success, or a refusal with nothing left to do here.
pub fn result(settings: &Settings, task: Task, message: &Alert) -> Html<String> {
    let content = format!(
        "{}<p><a href=\"{}\">Start again</a> \u{b7} <a href=\"/\">Back to the start page</a></p>\n",
        message.render(),
        task.path()
    );
    layout(settings, task.heading(), &content)
}

/// The outcome is not known yet; the button asks again for the same request.
pub fn unknown(
    settings: &Settings,
    task: Task,
    token: &str,
    account: &str,
    request_id: &str,
    message: &str,
) -> Html<String> {
    let content = format!(
        "{alert}<form id=\"outcome-form\" method=\"post\" action=\"/outcome\">\n\
         {csrf}{id}{task}{account}<button id=\"submit\" type=\"submit\">Check again</button>\n</form>\n\
         <p class=\"source\">Reference for your help desk: {rid}</p>\n",
        alert = Alert::Error(message.to_owned()).render(),
        csrf = hidden(FIELD, token),
        id = hidden("request_id", request_id),
        task = hidden("task", task.name()),
        account = hidden("account", account),
        rid = escape(request_id),
    );
    layout(settings, task.heading(), &content)
}

/// A page for requests that cannot be served (expired form, unknown page).
pub fn problem(settings: &Settings, heading: &str, message: &str) -> Html<String> {
    let content = format!(
        "{}<p><a href=\"/\">Back to the start page</a></p>\n",
        Alert::Error(message.to_owned()).render()
    );
    layout(settings, heading, &content)
}

/// Served at /style.css, so the CSP needs no 'unsafe-inline'.
pub const STYLE: &str = "\
body{font:16px/1.5 system-ui,sans-serif;margin:0;color:#1b1b1b;background:#f6f7f9}
header{background:#1f3a5f;padding:.75rem 1.5rem}
header a.site{color:#fff;font-weight:600;text-decoration:none}
.banner{margin:0;padding:.5rem 1.5rem;background:#fff4ce;border-bottom:1px solid #e0c96b}
main{max-width:34rem;margin:2rem auto;padding:0 1.5rem}
h1{font-size:1.5rem}
h2{font-size:1.1rem;margin-top:0}
.field{margin:1rem 0}
label{display:block;font-weight:600;margin-bottom:.25rem}
input{font:inherit;width:100%;box-sizing:border-box;padding:.5rem;border:1px solid #767676;border-radius:4px;background:#fff}
input[readonly]{background:#eef0f3}
button{font:inherit;padding:.5rem 1.25rem;border:0;border-radius:4px;background:#1f5fa8;color:#fff;cursor:pointer}
a:focus,input:focus,button:focus{outline:3px solid #f2a900;outline-offset:2px}
#policy{background:#fff;border:1px solid #d0d4da;border-radius:4px;padding:1rem}
.result{border-radius:4px;padding:.25rem 1rem;margin:1rem 0}
.error{background:#fde7e9;border:1px solid #c50f1f}
.success{background:#dff6dd;border:1px solid #107c10}
.source{color:#555;font-size:.9rem}
.tasks li{margin:.5rem 0}
";

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            title: "Contoso <IT>".into(),
            request_timeout: std::time::Duration::from_secs(30),
        }
    }

    #[test]
    fn escape_covers_markup_and_both_quotes() {
        assert_eq!(
            escape(r#"<a href="x" title='y'>&amp;</a>"#),
            "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;amp;&lt;/a&gt;"
        );
        assert_eq!(escape("ada@contoso.example"), "ada@contoso.example");
    }

    #[test]
    fn typed_values_are_escaped_everywhere() {
        let evil = "\"><script>alert(1)</script>";
        let Html(page) = account_step(
            &settings(),
            Task::Reset,
            "tok",
            evil,
            Some(&Alert::Error(evil.into())),
        );
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("Contoso &lt;IT&gt;"));
        let Html(page) = unknown(&settings(), Task::Change, "tok", evil, "portal-1", evil);
        assert!(!page.contains("<script>"), "{page}");
    }

    #[test]
    fn password_step_shows_the_rules_before_the_fields_and_no_values() {
        let policy = PolicyView {
            min_length: Some(8),
            source: Some("Default Domain Policy".into()),
            ..PolicyView::default()
        };
        let Html(page) = password_step(&settings(), Task::Change, "tok", "ada", &policy, None);
        let rules = page.find("id=\"policy\"").unwrap();
        let fields = page.find("id=\"current-password\"").unwrap();
        assert!(rules < fields);
        assert!(page.contains("At least 8 characters."));
        for id in ["current-password", "new-password", "confirm-password"] {
            let input = &page[page.find(&format!("<input id=\"{id}\"")).unwrap()..];
            let input = &input[..input.find('>').unwrap()];
            assert!(!input.contains("value="), "{input}");
            assert!(page.contains(&format!("<label for=\"{id}\">")));
        }
        assert!(page.contains("autocomplete=\"current-password\""));
        assert!(page.contains("id=\"change-form\""));
    }
}

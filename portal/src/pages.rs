//! Server-rendered pages: plain HTML without scripts, every dynamic value
//! escaped. Password inputs are always rendered empty. Element ids are
//! stable, for browser tests: forms `reset-form`, `change-form`,
//! `unlock-form` (and `outcome-form`); inputs `account`, `current-password`,
//! `new-password`, `confirm-password`; buttons `submit`; the error
//! (`role="alert"`) or success (`role="status"`) container `result`, and in
//! it the `support-code`; the password rules `policy`, their list
//! `policy-rules` (which the new password fields name in
//! `aria-describedby`); the note that a reset unlocks, `locked-note`. Every
//! sentence comes from [`crate::i18n`], in the page's `<html lang>`.

use axum::response::Html;

use crate::csrf::FIELD;
use crate::i18n::{Lang, Msg};
use crate::policy::PolicyView;
use crate::{Settings, Task};

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
    /// Caught here, before anything was sent: nothing to look up.
    Error(String),
    Success(String),
    /// A refusal or failure of a request that was sent: shown with the
    /// support code the help desk finds it by ([`support_code`]).
    Failed {
        message: String,
        support_code: String,
    },
}

impl Alert {
    fn render(&self, lang: Lang) -> String {
        let (class, role, text) = match self {
            Alert::Error(t) | Alert::Failed { message: t, .. } => ("error", "alert", t),
            Alert::Success(t) => ("success", "status", t),
        };
        let code = match self {
            Alert::Failed { support_code, .. } => format!(
                "<p id=\"support-code\" class=\"support\">{}</p>",
                escape(&lang.text(&Msg::SupportCode(support_code.clone())))
            ),
            Alert::Error(_) | Alert::Success(_) => String::new(),
        };
        format!(
            "<div id=\"result\" class=\"result {class}\" role=\"{role}\"><p>{}</p>{code}</div>\n",
            escape(text)
        )
    }
}

/// The code a user reads out to the help desk: the first 8 hex digits of
/// the request id, `portal-abcd1234...` giving `ABCD-1234`. The portal logs
/// it as `support_code`, and the agent's event log holds the request id it
/// starts (`grep portal-abcd1234`).
pub fn support_code(request_id: &str) -> String {
    let hex: String = request_id
        .strip_prefix("portal-")
        .unwrap_or(request_id)
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(8)
        .collect::<String>()
        .to_ascii_uppercase();
    let (a, b) = hex.split_at(hex.len().min(4));
    format!("{a}-{b}")
}

/// The page around `content`; also used by [`crate::signin_pages`].
pub fn layout(settings: &Settings, lang: Lang, heading: &str, content: &str) -> Html<String> {
    let title = escape(&settings.title);
    Html(format!(
        "<!doctype html>\n<html lang=\"{tag}\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{heading} \u{2013} {title}</title>\n\
         <link rel=\"stylesheet\" href=\"/style.css\">\n</head>\n<body>\n\
         <header><a class=\"site\" href=\"/\">{title}</a></header>\n\
         <aside class=\"banner\"><p id=\"demo-banner\">{banner}</p></aside>\n\
         <main>\n<h1>{heading}</h1>\n{content}</main>\n</body>\n</html>\n",
        tag = lang.tag(),
        heading = escape(heading),
        banner = escape(&lang.text(&Msg::Banner)),
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
        "<div class=\"field\"><label for=\"{id}\">{}</label>\n\
         <input id=\"{id}\" name=\"{name}\" {attrs}{value}></div>\n",
        escape(label)
    )
}

/// `described_by`: the id of what a screen reader reads with the field (the
/// rules, for a new password).
fn password(
    id: &str,
    name: &str,
    label: &str,
    autocomplete: &str,
    described_by: Option<&str>,
) -> String {
    let described = described_by.map_or(String::new(), |d| format!(" aria-describedby=\"{d}\""));
    field(
        id,
        name,
        label,
        &format!("type=\"password\" autocomplete=\"{autocomplete}\"{described} required"),
        None,
    )
}

pub(crate) fn alert(lang: Lang, alert: Option<&Alert>) -> String {
    alert.map_or(String::new(), |a| a.render(lang))
}

pub fn home(settings: &Settings, lang: Lang) -> Html<String> {
    let links: String = [Task::Reset, Task::Change, Task::Unlock]
        .iter()
        .map(|t| {
            format!(
                "<li><a href=\"{}\">{}</a></li>\n",
                t.path(),
                escape(&lang.text(&Msg::Heading(*t)))
            )
        })
        .collect();
    layout(
        settings,
        lang,
        &lang.text(&Msg::HomeHeading),
        &format!(
            "<nav aria-label=\"{}\"><ul class=\"tasks\">\n{links}</ul></nav>\n",
            escape(&lang.text(&Msg::TasksLabel))
        ),
    )
}

/// Step 1 (reset, change) or the only step (unlock): which account.
pub fn account_step(
    settings: &Settings,
    lang: Lang,
    task: Task,
    token: &str,
    account: &str,
    message: Option<&Alert>,
) -> Html<String> {
    let action = task.step_one_action();
    let content = format!(
        "{alert}<p>{intro}</p>\n\
         <form id=\"{task}-form\" method=\"post\" action=\"{action}\">\n{csrf}{account}\
         <button id=\"submit\" type=\"submit\">{button}</button>\n</form>\n",
        alert = alert(lang, message),
        intro = escape(&lang.text(&Msg::AccountIntro(task))),
        button = escape(&lang.text(&Msg::AccountButton(task))),
        task = task.name(),
        csrf = hidden(FIELD, token),
        account = field(
            "account",
            "account",
            &lang.text(&Msg::AccountLabel),
            "type=\"text\" autocomplete=\"username\" autocapitalize=\"none\" \
             spellcheck=\"false\" required",
            Some(account),
        ),
    );
    layout(settings, lang, &lang.text(&Msg::Heading(task)), &content)
}

/// Step 2 (reset, change): the rules first, then the password fields, which
/// point to the rules (`aria-describedby`) so a screen reader reads them
/// with each field.
pub fn password_step(
    settings: &Settings,
    lang: Lang,
    task: Task,
    token: &str,
    account: &str,
    policy: &PolicyView,
    message: Option<&Alert>,
) -> Html<String> {
    let rules: String = policy
        .rules(task, lang)
        .iter()
        .map(|r| format!("<li>{}</li>\n", escape(r)))
        .collect();
    // The policy travels in a hidden field; a form posted without it still
    // gets the exact rule in the refusal, just not the list.
    let rules = if rules.is_empty() {
        format!("<li>{}</li>\n", escape(&lang.text(&Msg::RulesUnknown)))
    } else {
        rules
    };
    let source = policy.source.as_deref().map_or(String::new(), |s| {
        format!(
            "<p class=\"source\">{}</p>\n",
            escape(&lang.text(&Msg::PolicySource(s.to_owned())))
        )
    });
    // The agent said the account is locked; a reset unlocks it too.
    let locked = if policy.locked && task == Task::Reset {
        format!(
            "<p id=\"locked-note\" class=\"note\">{}</p>\n",
            escape(&lang.text(&Msg::ResetAlsoUnlocks))
        )
    } else {
        String::new()
    };
    let current = match task {
        Task::Change => password(
            "current-password",
            "current_password",
            &lang.text(&Msg::CurrentPassword),
            "current-password",
            None,
        ),
        Task::Reset | Task::Unlock => String::new(),
    };
    let content = format!(
        "{alert}{locked}<section id=\"policy\" aria-labelledby=\"policy-heading\">\n\
         <h2 id=\"policy-heading\">{heading}</h2>\n<ul id=\"policy-rules\">\n{rules}</ul>\n{source}</section>\n\
         <form id=\"{task}-form\" method=\"post\" action=\"{path}\">\n{csrf}{policy}{account}\
         {current}{new}{confirm}<button id=\"submit\" type=\"submit\">{button}</button>\n</form>\n\
         <p><a href=\"{path}\">{another}</a></p>\n",
        alert = alert(lang, message),
        heading = escape(&lang.text(&Msg::RulesHeading)),
        button = escape(&lang.text(&Msg::PasswordButton(task))),
        another = escape(&lang.text(&Msg::UseAnotherAccount)),
        task = task.name(),
        path = task.path(),
        csrf = hidden(FIELD, token),
        policy = hidden("policy", &policy.to_hidden()),
        account = field(
            "account",
            "account",
            &lang.text(&Msg::AccountLabelShort),
            "type=\"text\" autocomplete=\"username\" readonly",
            Some(account),
        ),
        new = password(
            "new-password",
            "new_password",
            &lang.text(&Msg::NewPassword),
            "new-password",
            Some("policy-rules"),
        ),
        confirm = password(
            "confirm-password",
            "confirm_password",
            &lang.text(&Msg::ConfirmPassword),
            "new-password",
            Some("policy-rules"),
        ),
    );
    layout(settings, lang, &lang.text(&Msg::Heading(task)), &content)
}

/// The end of a task: success, or a refusal with nothing left to do here.
pub fn result(settings: &Settings, lang: Lang, task: Task, message: &Alert) -> Html<String> {
    let content = format!(
        "{}<p><a href=\"{}\">{}</a> \u{b7} <a href=\"/\">{}</a></p>\n",
        message.render(lang),
        task.path(),
        escape(&lang.text(&Msg::StartAgain)),
        escape(&lang.text(&Msg::BackToStart)),
    );
    layout(settings, lang, &lang.text(&Msg::Heading(task)), &content)
}

/// The outcome is not known yet; the button asks again for the same request.
pub fn unknown(
    settings: &Settings,
    lang: Lang,
    task: Task,
    token: &str,
    account: &str,
    request_id: &str,
    message: &str,
) -> Html<String> {
    let failed = Alert::Failed {
        message: message.to_owned(),
        support_code: support_code(request_id),
    };
    let content = format!(
        "{alert}<form id=\"outcome-form\" method=\"post\" action=\"/outcome\">\n\
         {csrf}{id}{task}{account}<button id=\"submit\" type=\"submit\">{check}</button>\n</form>\n\
         <p class=\"source\">{rid}</p>\n",
        alert = failed.render(lang),
        check = escape(&lang.text(&Msg::CheckAgain)),
        csrf = hidden(FIELD, token),
        id = hidden("request_id", request_id),
        task = hidden("task", task.name()),
        account = hidden("account", account),
        rid = escape(&lang.text(&Msg::HelpDeskReference(request_id.to_owned()))),
    );
    layout(settings, lang, &lang.text(&Msg::Heading(task)), &content)
}

/// A page for requests that cannot be served (expired form, unknown page).
pub fn problem(settings: &Settings, lang: Lang, heading: &str, message: &str) -> Html<String> {
    let content = format!(
        "{}<p><a href=\"/\">{}</a></p>\n",
        Alert::Error(message.to_owned()).render(lang),
        escape(&lang.text(&Msg::BackToStart)),
    );
    layout(settings, lang, heading, &content)
}

/// Served at /style.css, so the CSP needs no 'unsafe-inline'.
pub const STYLE: &str = "\
body{font:16px/1.5 system-ui,sans-serif;margin:0;color:#1b1b1b;background:#f6f7f9}
header{background:#1f3a5f;padding:.75rem 1.5rem}
header a.site{color:#fff;font-weight:600;text-decoration:none}
.banner p{margin:0}
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
.source,.support{color:#555;font-size:.9rem}
.note{background:#eef4fb;border:1px solid #1f5fa8;border-radius:4px;padding:.5rem 1rem}
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
            Lang::En,
            Task::Reset,
            "tok",
            evil,
            Some(&Alert::Error(evil.into())),
        );
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("Contoso &lt;IT&gt;"));
        let Html(page) = unknown(
            &settings(),
            Lang::En,
            Task::Change,
            "tok",
            evil,
            "portal-1",
            evil,
        );
        assert!(!page.contains("<script>"), "{page}");
    }

    #[test]
    fn the_support_code_is_the_start_of_the_request_id() {
        assert_eq!(support_code("portal-abcd1234ef567890"), "ABCD-1234");
        let failed = Alert::Failed {
            message: "Refused.".into(),
            support_code: support_code("portal-0123456789abcdef"),
        };
        let html = failed.render(Lang::En);
        assert!(
            html.contains("Support code for your help desk: 0123-4567"),
            "{html}"
        );
        assert!(failed.render(Lang::De).contains("Supportcode"));
    }

    #[test]
    fn a_locked_account_is_told_that_a_reset_unlocks_it() {
        let policy = PolicyView {
            locked: true,
            ..PolicyView::default()
        };
        let Html(page) = password_step(
            &settings(),
            Lang::En,
            Task::Reset,
            "t",
            "ada",
            &policy,
            None,
        );
        assert!(
            page.contains("Setting a new password also unlocks it."),
            "{page}"
        );
    }

    #[test]
    fn password_step_shows_the_rules_before_the_fields_and_no_values() {
        let policy = PolicyView {
            min_length: Some(8),
            source: Some("Default Domain Policy".into()),
            ..PolicyView::default()
        };
        let Html(page) = password_step(
            &settings(),
            Lang::En,
            Task::Change,
            "tok",
            "ada",
            &policy,
            None,
        );
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
        // The new password fields point to the rules, the current one not.
        assert!(page.contains("<ul id=\"policy-rules\">"));
        for id in ["new-password", "confirm-password"] {
            let input = &page[page.find(&format!("<input id=\"{id}\"")).unwrap()..];
            let input = &input[..input.find('>').unwrap()];
            assert!(
                input.contains("aria-describedby=\"policy-rules\""),
                "{input}"
            );
        }
        assert!(!page.contains("locked-note"));
        assert!(page.contains("id=\"change-form\""));
    }
}

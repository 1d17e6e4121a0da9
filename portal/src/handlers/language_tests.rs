//! Every page with `Accept-Language: de`: German throughout, `lang="de"`,
//! and no English sentence of the catalogue left on it.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use envelope::ReplyBody;
use tower::ServiceExt;

use super::Step;
use crate::i18n::{Lang, Msg};
use crate::outcomes::Failure;
use crate::{AppState, Settings, Task, app};

/// English fragments (between punctuation) of three words or more that
/// the German sentence does not share (shared ones are values, such as a
/// policy's name), escaped as pages print them.
fn english_fragments() -> Vec<String> {
    let mut fragments = Vec::new();
    for msg in Msg::samples() {
        let (en, de) = (Lang::En.text(&msg), Lang::De.text(&msg));
        for part in en.split(['.', ':', ';', ',', '(', ')', '\u{201c}', '\u{201d}']) {
            let part = part.trim();
            if part.split_whitespace().count() >= 3 && !de.contains(part) {
                fragments.push(crate::pages::escape(part));
            }
        }
    }
    fragments.sort();
    fragments.dedup();
    fragments
}

fn assert_german(what: &str, page: &str) {
    assert!(page.contains("<html lang=\"de\">"), "{what}: {page}");
    for fragment in english_fragments() {
        assert!(
            !page.contains(&fragment),
            "{what}: English {fragment:?} in {page}"
        );
    }
}

async fn text(response: axum::response::Response) -> (StatusCode, String) {
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    (status, String::from_utf8(bytes.to_vec()).expect("utf-8"))
}

fn german(path: &str) -> Request<Body> {
    Request::get(path)
        .header(header::ACCEPT_LANGUAGE, "de-DE,de;q=0.9,en;q=0.5")
        .body(Body::empty())
        .expect("request")
}

fn reply(outcome: u16, details: &[(&str, &str)]) -> ReplyBody {
    ReplyBody {
        outcome,
        message: "The agent's own words about CN=Ada,OU=Staff,DC=contoso,DC=example".into(),
        details: details
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

#[tokio::test]
async fn every_page_is_german_for_a_german_browser() {
    let state: AppState = super::tests::nowhere().with_limits(crate::config::Limits {
        visitor_requests_per_minute: 1,
        ..crate::config::Limits::default()
    });
    let router = app(state);
    // The check finds English where there is some.
    let (_, english) = text(
        router
            .clone()
            .oneshot(Request::get("/reset").body(Body::empty()).unwrap())
            .await
            .unwrap(),
    )
    .await;
    let fragments = english_fragments();
    assert!(fragments.len() > 100, "{}", fragments.len());
    assert!(english.contains("<html lang=\"en\">"));
    assert!(
        fragments
            .iter()
            .filter(|f| english.contains(f.as_str()))
            .count()
            >= 2
    );
    for path in ["/", "/reset", "/change", "/unlock", "/no-such-page"] {
        let (status, page) = text(router.clone().oneshot(german(path)).await.unwrap()).await;
        assert!(status == StatusCode::OK || status == StatusCode::NOT_FOUND);
        assert_german(path, &page);
    }
    // An expired form, and then a failure and 429 need a browser's cookie.
    let post = |cookie: Option<&str>, body: &str| {
        let mut request = Request::post("/unlock")
            .header(header::ACCEPT_LANGUAGE, "de")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(c) = cookie {
            request = request.header(header::COOKIE, c);
        }
        request.body(Body::from(body.to_owned())).unwrap()
    };
    let (status, page) = text(router.clone().oneshot(post(None, "csrf=x")).await.unwrap()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_german("expired form", &page);

    let first = router.clone().oneshot(german("/unlock")).await.unwrap();
    let cookie = first.headers()[header::SET_COOKIE].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let (_, form) = text(first).await;
    let start = form.find("name=\"csrf\" value=\"").unwrap() + 19;
    let token = &form[start..start + form[start..].find('"').unwrap()];
    let body = format!("csrf={token}&account=ada%40contoso.example");
    let (_, page) = text(
        router
            .clone()
            .oneshot(post(Some(&cookie), &body))
            .await
            .unwrap(),
    )
    .await;
    assert!(page.contains("Passwortdienst"), "{page}");
    assert!(page.contains("Supportcode"), "{page}");
    assert_german("unreachable broker", &page);
    let (status, page) = text(
        router
            .clone()
            .oneshot(post(Some(&cookie), &body))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_german("429", &page);
}

#[tokio::test]
async fn the_answered_steps_are_german_too() {
    let settings = Settings {
        title: "Test portal".into(),
        request_timeout: Duration::from_secs(5),
    };
    let step = |task| Step {
        settings: &settings,
        lang: Lang::De,
        task,
        token: "tok",
        account: "ada@contoso.example",
        request_id: "portal-abcd1234ef567890",
        verified: false,
    };
    let policy = reply(
        0,
        &[
            ("source", "Default Domain Policy"),
            ("min_length", "8"),
            ("complexity", "true"),
            ("history_length", "24"),
            ("min_age_secs", "86400"),
            ("max_age_secs", "3628800"),
            ("locked", "true"),
            ("reset", "ok"),
            ("change", "ok"),
        ],
    );
    let mut pages = Vec::new();
    pages.push(("reset step 2", step(Task::Reset).after_policy(&policy)));
    pages.push((
        "change refused: locked",
        step(Task::Change).after_policy(&policy),
    ));
    let disabled = reply(0, &[("reset", "ACCOUNT_DISABLED")]);
    pages.push(("reset refused", step(Task::Reset).after_policy(&disabled)));
    let unlocked = reply(0, &[]);
    pages.push((
        "unlocked",
        step(Task::Unlock)
            .answered("UNLOCK_ACCOUNT", &unlocked)
            .unwrap(),
    ));
    let unknown = Failure::Unknown {
        message: Msg::NoAnswer {
            task: Task::Reset,
            can_check: true,
        },
        can_check: true,
    };
    pages.push(("unknown", step(Task::Reset).after_failure(unknown).unwrap()));
    for (what, response) in pages {
        let (_, page) = text(response).await;
        assert_german(what, &page);
        assert!(!page.contains("DC="), "{what}: {page}");
    }
    // The refusals of step 2, each on the password step.
    for (code, details) in [
        (1, vec![("min_length", "8")]),
        (2, vec![("missing", "uppercase letter, digit")]),
        (3, vec![("history_length", "24")]),
        (4, vec![("allowed_after_unix_ms", "1764151200000")]),
        (5, vec![]),
        (8, vec![]),
        (15, vec![]),
        (99, vec![]),
    ] {
        let alert = step(Task::Change)
            .answered("CHANGE_PASSWORD", &reply(code, &details))
            .unwrap_err();
        let page = crate::pages::password_step(
            &settings,
            Lang::De,
            Task::Change,
            "tok",
            "ada",
            &crate::policy::PolicyView::from_reply(&policy),
            Some(&alert),
        );
        assert_german(&format!("refusal {code}"), &page.0);
        assert!(!page.0.contains("DC="), "{code}: {}", page.0);
    }
}

//! The router without a broker: a [`SealedPortal`] whose broker is a closed
//! port, so anything actually sent fails with "cannot be reached".

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use relay_client::connect::BrokerEndpoint;
use relay_client::portal_client::PortalClient;
use relay_client::sealed::SealedPortal;
use tower::ServiceExt;

use crate::{AppState, CONTENT_SECURITY_POLICY, MAX_FORM_BYTES, Settings, app};

pub(super) fn nowhere() -> AppState {
    let channel = BrokerEndpoint::new("https://127.0.0.1:1", None)
        .endpoint()
        .expect("endpoint")
        .connect_lazy();
    let key = sas::Key::generate().expect("key");
    let client = PortalClient::with_channel(
        channel,
        "contoso",
        PortalClient::send_credential("contoso", key),
    );
    let portal = SealedPortal::new(
        client,
        envelope::KeyPair::generate(&mut envelope::os_rng()),
        Vec::new(),
    );
    AppState::new(
        portal,
        Settings {
            title: "Test portal".into(),
            request_timeout: Duration::from_secs(5),
        },
    )
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

async fn call(router: &axum::Router, request: Request<Body>) -> Reply {
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    Reply {
        status,
        headers,
        body: String::from_utf8(bytes.to_vec()).expect("utf-8"),
    }
}

fn get(path: &str, cookie: Option<&str>) -> Request<Body> {
    let mut request = Request::get(path);
    if let Some(c) = cookie {
        request = request.header(header::COOKIE, c);
    }
    request.body(Body::empty()).expect("request")
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

fn post(path: &str, cookie: Option<&str>, fields: &[(&str, &str)]) -> Request<Body> {
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        request = request.header(header::COOKIE, c);
    }
    request.body(Body::from(body.join("&"))).expect("request")
}

/// A browser's first visit: its cookie (`name=value`) and the form token.
async fn visit(router: &axum::Router, path: &str) -> (String, String) {
    let page = call(router, get(path, None)).await;
    let set_cookie = page.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_owned();
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let start = page
        .body
        .find("name=\"csrf\" value=\"")
        .expect("token field")
        + 19;
    let token = page.body[start..start + page.body[start..].find('"').unwrap()].to_owned();
    (cookie, token)
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let router = app(nowhere());
    for request in [
        get("/", None),
        get("/reset", None),
        get("/style.css", None),
        get("/no-such-page", None),
        post("/reset", None, &[("csrf", "x")]),
    ] {
        let path = request.uri().path().to_owned();
        let reply = call(&router, request).await;
        let h = |name: &str| {
            reply
                .headers
                .get(name)
                .unwrap_or_else(|| panic!("{path}: no {name}"))
                .to_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(h("cache-control"), "no-store", "{path}");
        assert_eq!(h("pragma"), "no-cache");
        assert_eq!(h("content-security-policy"), CONTENT_SECURITY_POLICY);
        assert_eq!(h("x-content-type-options"), "nosniff");
        assert_eq!(h("referrer-policy"), "no-referrer");
        assert_eq!(h("x-frame-options"), "DENY");
    }
}

#[tokio::test]
async fn the_reset_form_is_accessible_and_sets_the_csrf_cookie() {
    let router = app(nowhere());
    let reply = call(&router, get("/reset", None)).await;
    assert_eq!(reply.status, StatusCode::OK);
    let cookie = reply.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(cookie.starts_with("portal_csrf="), "{cookie}");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    let page = &reply.body;
    for part in [
        "<html lang=\"en\">",
        "id=\"reset-form\"",
        "action=\"/reset/policy\"",
        "<label for=\"account\">",
        "<input id=\"account\"",
        "autocomplete=\"username\"",
        "<button id=\"submit\" type=\"submit\">",
        "Demo portal: identity verification is not part of this reference",
    ] {
        assert!(page.contains(part), "{part:?} missing");
    }
    assert!(!page.contains("<script"));
    // A browser that has the cookie keeps it.
    let (cookie, _) = visit(&router, "/unlock").await;
    let again = call(&router, get("/unlock", Some(&cookie))).await;
    assert!(again.headers.get(header::SET_COOKIE).is_none());
    assert!(again.body.contains("id=\"unlock-form\""));
}

#[tokio::test]
async fn posts_without_a_valid_token_are_forbidden() {
    let router = app(nowhere());
    let (alice, alice_token) = visit(&router, "/reset").await;
    let (mallory, _) = visit(&router, "/reset").await;
    let account = ("account", "ada@contoso.example");
    let cases = [
        (
            "no cookie",
            post("/reset/policy", None, &[("csrf", &alice_token), account]),
        ),
        ("no token", post("/reset/policy", Some(&alice), &[account])),
        (
            "wrong token",
            post("/reset/policy", Some(&alice), &[("csrf", "AAAA"), account]),
        ),
        (
            "another browser's token",
            post(
                "/unlock",
                Some(&mallory),
                &[("csrf", &alice_token), account],
            ),
        ),
    ];
    for (what, request) in cases {
        let reply = call(&router, request).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{what}");
        assert!(reply.body.contains("This form has expired"), "{what}");
        assert!(reply.body.contains("role=\"alert\""), "{what}");
    }
}

#[tokio::test]
async fn mismatched_passwords_are_caught_before_anything_is_sent() {
    let router = app(nowhere());
    let (cookie, token) = visit(&router, "/reset").await;
    let reply = call(
        &router,
        post(
            "/reset",
            Some(&cookie),
            &[
                ("csrf", &token),
                ("account", "ada@contoso.example"),
                ("new_password", "Typed-Once-1843"),
                ("confirm_password", "Typed-Twice-1843"),
            ],
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body.contains("The two new passwords differ"));
    assert!(
        !reply.body.contains("cannot be reached"),
        "something was sent"
    );
    assert!(!reply.body.contains("Typed-Once") && !reply.body.contains("Typed-Twice"));
    assert!(reply.body.contains("value=\"ada@contoso.example\""));
    assert!(
        reply
            .body
            .contains("id=\"result\" class=\"result error\" role=\"alert\"")
    );
}

#[tokio::test]
async fn an_unreachable_broker_is_reported_and_nothing_changed() {
    let router = app(nowhere());
    let (cookie, token) = visit(&router, "/change").await;
    let reply = call(
        &router,
        post(
            "/change/policy",
            Some(&cookie),
            &[("csrf", &token), ("account", "ada@contoso.example")],
        ),
    )
    .await;
    assert!(
        reply
            .body
            .contains("The password service cannot be reached right now. Please try again later."),
        "{}",
        reply.body
    );
    assert!(reply.body.contains("value=\"ada@contoso.example\""));
}

#[tokio::test]
async fn oversized_forms_and_foreign_request_ids_are_refused() {
    let router = app(nowhere());
    let (cookie, token) = visit(&router, "/unlock").await;
    let big = "x".repeat(MAX_FORM_BYTES + 1);
    let reply = call(
        &router,
        post(
            "/unlock",
            Some(&cookie),
            &[("csrf", &token), ("account", &big)],
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);

    let check = |id: &str| {
        post(
            "/outcome",
            Some(&cookie),
            &[
                ("csrf", &token),
                ("request_id", id),
                ("task", "reset"),
                ("account", "ada@contoso.example"),
            ],
        )
    };
    let reply = call(&router, check("relayctl-1")).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    // Well formed, but this portal never sealed it: no key to open an answer.
    let reply = call(&router, check("portal-0123456789abcdef")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body.contains("can no longer check"), "{}", reply.body);
}

#[tokio::test]
async fn a_visitor_past_its_allowance_gets_429_and_nothing_is_sent() {
    let limits = crate::config::Limits {
        visitor_requests_per_minute: 2,
        ..crate::config::Limits::default()
    };
    let router = app(nowhere().with_limits(limits));
    let (cookie, token) = visit(&router, "/unlock").await;
    let unlock = |account: &str| {
        post(
            "/unlock",
            Some(&cookie),
            &[("csrf", &token), ("account", account)],
        )
    };
    for _ in 0..2 {
        let reply = call(&router, unlock("ada@contoso.example")).await;
        assert!(reply.body.contains("cannot be reached"), "{}", reply.body);
    }
    let reply = call(&router, unlock("grace@contoso.example")).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reply.headers[header::RETRY_AFTER], "30");
    assert!(
        reply
            .body
            .contains("Too many requests from your network address. Nothing was sent. Try again in 30 seconds."),
        "{}",
        reply.body
    );
    assert_eq!(reply.headers["cache-control"], "no-store");
    // A form the portal refuses itself costs nothing.
    let reply = call(&router, unlock("")).await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn the_probes_answer_without_a_cookie_and_readyz_fails_while_draining() {
    let state = nowhere();
    let draining = state.draining.clone();
    let router = app(state);
    for path in ["/healthz", "/readyz"] {
        let reply = call(&router, get(path, None)).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert!(reply.headers.get(header::SET_COOKIE).is_none(), "{path}");
    }
    draining.cancel();
    let reply = call(&router, get("/readyz", None)).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    let reply = call(&router, get("/healthz", None)).await;
    assert_eq!(reply.status, StatusCode::OK);
}

/// Step 1 answered by a fake policy reply, as `handlers::policy` renders it.
fn after_policy(task: crate::Task, details: &[(&str, &str)], verified: bool) -> String {
    let settings = Settings {
        title: "Test portal".into(),
        request_timeout: Duration::from_secs(5),
    };
    let reply = envelope::ReplyBody {
        outcome: 0,
        message: "Policy of CN=Ada Lovelace,OU=Staff,DC=contoso,DC=example".into(),
        details: details
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    };
    let step = super::Step {
        settings: &settings,
        lang: crate::i18n::Lang::En,
        task,
        token: "tok",
        account: "ada@contoso.example",
        request_id: "portal-abcd1234ef567890",
        verified,
    };
    let response = step.after_policy(&reply);
    let bytes = futures_body(response);
    String::from_utf8(bytes).expect("utf-8")
}

fn futures_body(response: axum::response::Response) -> Vec<u8> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime
        .block_on(axum::body::to_bytes(response.into_body(), 1 << 20))
        .expect("body")
        .to_vec()
}

#[test]
fn an_ineligible_account_is_refused_at_step_one_without_password_fields() {
    use crate::Task;
    for (task, key, value) in [
        (Task::Reset, "reset", "ACCOUNT_DISABLED"),
        (Task::Reset, "reset", "PROTECTED_ACCOUNT"),
        (Task::Change, "change", "PERMISSION_DENIED"),
        (Task::Change, "change", "A_NEWER_REASON"),
    ] {
        let page = after_policy(task, &[("min_length", "8"), (key, value)], false);
        assert!(!page.contains("new-password"), "{value}: {page}");
        assert!(page.contains("id=\"account\""), "{value}");
        assert!(page.contains("cannot be"), "{value}: {page}");
        assert!(page.contains("here. Check that you typed your sign-in name"));
        assert!(page.contains("Support code for your help desk: ABCD-1234"));
        assert!(!page.contains("DC="), "{page}");
    }
    // Verified, the refusal says why.
    let page = after_policy(Task::Reset, &[("reset", "ACCOUNT_DISABLED")], true);
    assert!(page.contains("This account is disabled"), "{page}");
    // The other task's refusal does not stop this one.
    let page = after_policy(
        Task::Change,
        &[("reset", "PROTECTED_ACCOUNT"), ("change", "ok")],
        false,
    );
    assert!(page.contains("id=\"new-password\""), "{page}");
}

#[test]
fn a_locked_account_can_be_reset_but_not_changed() {
    use crate::Task;
    let locked = [
        ("locked", "true"),
        ("reset", "ok"),
        ("change", "ok"),
        ("min_length", "8"),
    ];
    let page = after_policy(Task::Reset, &locked, false);
    assert!(page.contains("id=\"new-password\""), "{page}");
    assert!(
        page.contains("Setting a new password also unlocks it."),
        "{page}"
    );
    let page = after_policy(Task::Change, &locked, false);
    assert!(!page.contains("new-password"), "{page}");
    assert!(page.contains("Unlock it first"), "{page}");
    assert!(page.contains("ABCD-1234"));
    // An agent without the eligibility details: step 2 as before.
    let page = after_policy(Task::Change, &[("min_length", "8")], false);
    assert!(page.contains("id=\"current-password\""), "{page}");
    assert!(!page.contains("also unlocks"));
    assert!(!page.contains("DC="), "{page}");
}

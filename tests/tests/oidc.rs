//! `identity_check = "oidc"` in headless Chromium against a real OpenID
//! provider (oidc-provider, tests/web/provider.mjs): the account acted on
//! is the signed-in one whatever the forms say, weak sign-ins and forged
//! callbacks are refused, replicas with one session key accept each
//! other's sessions, and an immutable-id claim can name the account. Keyboard only; screenshots under
//! target/browser-artifacts/.

use fantoccini::Locator;
use tests::browser::{Browser, keys};
use tests::deployment::{Deployment, WebPortal};
use tests::oidc::{self, Bound, Provider};

const ADA: &str = "CN=Ada Lovelace,OU=Staff,OU=Users,DC=contoso,DC=example";
const ADA_NOW: &str = "Analytical-Engine-1843";
const GRACE: &str = "CN=Grace Hopper,OU=Staff,OU=Users,DC=contoso,DC=example";
const GRACE_NOW: &str = "COBOL-Compiler-1959";

/// Fills `field` by keyboard: Tab until it has the focus, then type.
async fn wait_for(browser: &Browser, id: &str) -> String {
    let found = browser
        .client
        .wait()
        .at_most(std::time::Duration::from_secs(20))
        .for_element(Locator::Id(id))
        .await;
    match found {
        Ok(element) => element.text().await.expect("text"),
        Err(e) => {
            let url = current_url(browser).await;
            let html = browser.html().await;
            panic!("#{id} never appeared ({e}) at {url}:\n{html}")
        }
    }
}

/// At the provider's login form: user and password by keyboard.
async fn sign_in_at_provider(browser: &Browser, user: &str) {
    wait_for(browser, "login-form").await;
    browser.screenshot("oidc-provider-login").await;
    browser.from_the_top().await;
    browser.tab_to_and_type("login", user).await;
    browser.tab_to_and_type("password", "pass").await;
    browser.press(keys::ENTER).await;
}

/// The status line and headers of `GET path` with a `Cookie` header.
async fn get_with_cookie(base: &str, path: &str, cookie: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    answer.split("\r\n\r\n").next().unwrap_or("").to_owned()
}

async fn current_url(browser: &Browser) -> String {
    browser.client.current_url().await.expect("url").to_string()
}

/// A deployment, a provider and one portal signing in there with `extra`
/// in its `[oidc]` table.
async fn setup(extra: &str) -> (Deployment, Provider, WebPortal) {
    let d = Deployment::start(&["contoso"], "").await;
    let bound = Bound::new().await;
    let provider = Provider::start(&[bound.callback()]).await;
    let key = oidc::session_key_file(d.dir.path(), "session.key", [7; 32]);
    let config = oidc::config(&provider.issuer, &bound, &key, extra);
    let sealed = d.another_portal().await;
    let web = oidc::web_portal(sealed, bound, config).await;
    (d, provider, web)
}

#[tokio::test]
async fn a_signed_in_user_resets_their_own_account_whatever_the_form_says() {
    use envelope::Password;
    const GOOD: &str = "Signed-In-Passw0rd-2026";
    const AGAIN: &str = "Tampered-Form-Passw0rd-2026";

    let (d, _provider, web) = setup("required_amr = [\"mfa\"]").await;
    let base = web.base();
    let browser = Browser::start().await;
    let forest = || d.forest("contoso");

    // No session: /reset goes to the provider, and back after sign-in.
    browser.goto(&format!("{base}/reset")).await;
    assert_eq!(browser.unlabelled_fields().await, Vec::<String>::new());
    sign_in_at_provider(&browser, "ada").await;
    wait_for(&browser, "reset-form").await;
    assert!(current_url(&browser).await.ends_with("/reset"));
    assert!(
        browser
            .client
            .get_named_cookie("portal_signin")
            .await
            .is_err(),
        "the pending sign-in cookie is used once"
    );
    assert_eq!(browser.text("#account").await, "ada@contoso.example");
    let line = wait_for(&browser, "signed-in").await;
    assert!(line.contains("ada@contoso.example"), "{line}");
    assert!(!browser.html().await.contains("demo-banner"));
    assert_eq!(browser.unlabelled_fields().await, Vec::<String>::new());
    browser.check_page("oidc-signed-in").await;

    // The policy of the signed-in account, then the reset.
    browser.from_the_top().await;
    browser.tab_to_and_type("submit", keys::ENTER).await;
    let policy = wait_for(&browser, "policy").await;
    assert!(policy.contains("At least 8 characters"), "{policy}");
    browser.from_the_top().await;
    browser.tab_to_and_type("new-password", GOOD).await;
    browser.tab_to_and_type("confirm-password", GOOD).await;
    browser.press(keys::ENTER).await;
    let done = wait_for(&browser, "result").await;
    assert!(done.to_lowercase().contains("changed"), "{done}");
    assert!(forest().check_password(ADA, &Password::new(GOOD)));
    browser.check_page("oidc-reset-done").await;

    // Again, with the forms edited to name grace: an `account` field added
    // to step 1, the read-only one of step 2 rewritten.
    browser.goto(&format!("{base}/reset")).await;
    wait_for(&browser, "reset-form").await;
    browser
        .client
        .execute(
            "const i = document.createElement('input'); i.type = 'hidden'; i.name = 'account';\
             i.value = 'grace@contoso.example'; document.getElementById('reset-form').appendChild(i);",
            vec![],
        )
        .await
        .expect("add a field");
    browser.from_the_top().await;
    browser.tab_to_and_type("submit", keys::ENTER).await;
    wait_for(&browser, "policy").await;
    let shown: String = browser
        .client
        .execute("return document.getElementById('account').value;", vec![])
        .await
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    assert_eq!(
        shown, "ada@contoso.example",
        "step 2 is for the session's account"
    );
    browser
        .client
        .execute(
            "const a = document.getElementById('account'); a.removeAttribute('readonly');\
             a.value = 'grace@contoso.example';",
            vec![],
        )
        .await
        .expect("edit the account field");
    browser.from_the_top().await;
    browser.tab_to_and_type("new-password", AGAIN).await;
    browser.tab_to_and_type("confirm-password", AGAIN).await;
    browser.press(keys::ENTER).await;
    let done = wait_for(&browser, "result").await;
    assert!(done.to_lowercase().contains("changed"), "{done}");
    assert!(
        forest().check_password(ADA, &Password::new(AGAIN)),
        "the signed-in account got the reset"
    );
    assert!(
        forest().check_password(GRACE, &Password::new(GRACE_NOW)),
        "grace's password is unchanged"
    );
    assert!(!forest().check_password(GRACE, &Password::new(AGAIN)));

    // Sign out (CSRF-checked form): /reset asks for a sign-in again.
    browser.from_the_top().await;
    browser.tab_to_and_type("signout", keys::ENTER).await;
    let out = wait_for(&browser, "result").await;
    assert!(out.contains("signed out"), "{out}");
    assert!(
        browser
            .client
            .get_named_cookie("portal_session")
            .await
            .is_err(),
        "the session cookie is gone"
    );
    browser.check_page("oidc-signed-out").await;
    // And out of the provider (RP-initiated logout, its confirmation form
    // by keyboard): the next /reset asks for a sign-in again.
    browser.from_the_top().await;
    browser
        .tab_to_and_type("provider-signout", keys::ENTER)
        .await;
    browser
        .client
        .wait()
        .for_element(Locator::Css("button[name=logout]"))
        .await
        .expect("the provider's logout confirmation")
        .send_keys(keys::ENTER)
        .await
        .expect("confirm");
    let home = format!("{base}/");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while current_url(&browser).await != home {
        assert!(std::time::Instant::now() < deadline, "not back at {home}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    browser.goto(&format!("{base}/reset")).await;
    wait_for(&browser, "login-form").await;
    browser.close().await;
    web.stop().await;
}

#[tokio::test]
async fn a_sign_in_without_mfa_and_a_forged_state_are_refused() {
    use envelope::Password;

    let (d, _provider, web) = setup("required_amr = [\"mfa\"]").await;
    let base = web.base();
    let browser = Browser::start().await;

    // A forged state on the callback, while this browser has a sign-in
    // under way: refused, and no session.
    browser.goto(&format!("{base}/signin?next=/reset")).await;
    wait_for(&browser, "login-form").await;
    browser
        .goto(&format!(
            "{base}/signin/callback?code=stolen-code&state=forged-state"
        ))
        .await;
    let refused = wait_for(&browser, "result").await;
    assert!(
        refused.contains("does not belong to a sign-in"),
        "{refused}"
    );
    assert!(browser.html().await.contains("Sign-in not accepted"));
    browser.check_page("oidc-forged-state").await;
    browser.goto(&format!("{base}/reset")).await;
    assert!(
        !current_url(&browser).await.starts_with(&base),
        "no session after a forged callback"
    );

    // bob signs in with a password only: refused, clearly.
    sign_in_at_provider(&browser, "bob").await;
    let refused = wait_for(&browser, "result").await;
    assert!(refused.contains("multi-factor"), "{refused}");
    assert!(browser.html().await.contains("Stronger sign-in needed"));
    assert!(current_url(&browser).await.contains("/signin/callback"));
    browser.check_page("oidc-mfa-required").await;

    // And no reset is possible: every task page wants a sign-in again.
    for path in ["/reset", "/change", "/unlock"] {
        browser.goto(&format!("{base}{path}")).await;
        let html = browser.html().await;
        assert!(!html.contains("id=\"signed-in\""), "{path}: {html}");
        assert!(!html.contains("reset-form"), "{path}");
    }
    assert!(
        d.forest("contoso")
            .check_password(ADA, &Password::new(ADA_NOW))
    );
    browser.close().await;
    web.stop().await;
}

#[tokio::test]
async fn replicas_with_one_session_key_accept_each_others_sessions() {
    let d = Deployment::start(&["contoso"], "").await;
    let (one, two, three) = (Bound::new().await, Bound::new().await, Bound::new().await);
    let provider = Provider::start(&[one.callback(), two.callback(), three.callback()]).await;
    let shared = oidc::session_key_file(d.dir.path(), "shared.key", [7; 32]);
    let other = oidc::session_key_file(d.dir.path(), "other.key", [8; 32]);
    let c1 = oidc::config(&provider.issuer, &one, &shared, "");
    let c2 = oidc::config(&provider.issuer, &two, &shared, "");
    let c3 = oidc::config(&provider.issuer, &three, &other, "");
    let one = oidc::web_portal(d.another_portal().await, one, c1).await;
    let two = oidc::web_portal(d.another_portal().await, two, c2).await;
    let three = oidc::web_portal(d.another_portal().await, three, c3).await;
    let browser = Browser::start().await;

    browser.goto(&format!("{}/unlock", one.base())).await;
    sign_in_at_provider(&browser, "grace").await;
    wait_for(&browser, "unlock-form").await;
    assert_eq!(browser.text("#account").await, "grace@contoso.example");

    // Cookies are per host, not per port: the other replicas see it.
    browser.goto(&format!("{}/unlock", two.base())).await;
    wait_for(&browser, "unlock-form").await;
    assert_eq!(browser.text("#account").await, "grace@contoso.example");
    // The provider would sign the browser in again at once, so the third
    // replica is asked directly, with the session cookie the browser holds.
    let cookie = browser
        .client
        .get_named_cookie("portal_session")
        .await
        .expect("a session cookie");
    let cookie = format!("portal_session={}", cookie.value());
    let answer = get_with_cookie(&two.base(), "/unlock", &cookie).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let answer = get_with_cookie(&three.base(), "/unlock", &cookie).await;
    assert!(
        answer.starts_with("HTTP/1.1 303") && answer.contains("location: /signin?next=/unlock"),
        "a portal with another session key accepted the session: {answer}"
    );
    browser.close().await;
    for web in [one, two, three] {
        web.stop().await;
    }
}

#[tokio::test]
async fn an_immutable_id_claim_can_name_the_account_as_its_source_anchor() {
    use envelope::Password;
    const GOOD: &str = "Anchored-Passw0rd-2026";

    let extra = "account_claim = \"onprem_anchor\"\nanchor = \"source_anchor\"";
    let (d, _provider, web) = setup(extra).await;
    let base = web.base();
    let browser = Browser::start().await;

    browser.goto(&format!("{base}/reset")).await;
    sign_in_at_provider(&browser, "grace").await;
    wait_for(&browser, "reset-form").await;
    assert_eq!(browser.text("#account").await, "Sm4tjzscXUqOf6CxwtPk9Q==");
    browser.from_the_top().await;
    browser.tab_to_and_type("submit", keys::ENTER).await;
    wait_for(&browser, "policy").await;
    browser.from_the_top().await;
    browser.tab_to_and_type("new-password", GOOD).await;
    browser.tab_to_and_type("confirm-password", GOOD).await;
    browser.press(keys::ENTER).await;
    let done = wait_for(&browser, "result").await;
    assert!(done.to_lowercase().contains("changed"), "{done}");
    let forest = d.forest("contoso");
    assert!(forest.check_password(GRACE, &Password::new(GOOD)));
    assert!(forest.check_password(ADA, &Password::new(ADA_NOW)));
    browser.close().await;
    web.stop().await;
}

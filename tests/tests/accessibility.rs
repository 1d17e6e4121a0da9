//! Every page people see, in headless Chromium at a laptop's and a phone's
//! width: no serious or critical axe-core violation (WCAG 2.x A and AA,
//! best practices), no distinguished name, and a screenshot of each under
//! target/browser-artifacts/a11y-*.png. Each test visits all its pages and
//! then fails once, listing every problem of every page.
//!
//! Needs scripts/browser/install (Chromium) and scripts/web/install
//! (axe-core).

use fantoccini::Locator;
use proto::pb::Operation;
use sas::Right;
use tests::browser::{Browser, keys};
use tests::{BrokerBuilder, EchoAgent};

/// A laptop and a phone (an iPhone's 375 CSS pixels).
const SIZES: [(u32, u32); 2] = [(1280, 900), (375, 812)];

fn operator_token(key: &sas::Key) -> String {
    let expiry = proto::time::unix_secs() + 3600;
    sas::mint(key, sas::OPERATOR_RESOURCE, Right::Operator, expiry)
        .expose()
        .to_owned()
}

/// Types into the field with this id and presses Enter there, submitting
/// its form.
async fn fill_and_submit(browser: &Browser, fields: &[(&str, &str)]) {
    let mut last = None;
    for (id, text) in fields {
        let field = browser
            .client
            .find(Locator::Id(id))
            .await
            .unwrap_or_else(|e| panic!("no #{id}: {e}"));
        field.clear().await.expect("clear");
        field.send_keys(text).await.expect("type");
        last = Some(field);
    }
    last.expect("a field")
        .send_keys(keys::ENTER)
        .await
        .expect("submit");
}

async fn wait_for(browser: &Browser, css: &str) {
    browser
        .client
        .wait()
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css} never appeared: {e}"));
}

fn assert_none(problems: &[String]) {
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// The checks are not vacuous: a field without a label and a DN, added to
/// a clean page, are both found.
#[tokio::test]
async fn the_checks_find_a_broken_page() {
    let broker = BrokerBuilder::new().start().await;
    let browser = Browser::start().await;
    browser
        .goto(&format!("http://{}/status/login", broker.operator_addr))
        .await;
    assert!(browser.accessibility_problems("clean").await.is_empty());
    assert_eq!(browser.dn_on_page().await, None);
    browser
        .client
        .execute(
            "const main = document.querySelector('main');\
             main.insertAdjacentHTML('beforeend', '<input id=\"bare\"><p>OU=Staff,DC=contoso</p>');",
            vec![],
        )
        .await
        .expect("break the page");
    let found = browser.accessibility_problems("broken").await;
    assert!(
        found
            .iter()
            .any(|v| v.id == "label" && v.nodes.iter().any(|n| n.target == "#bare")),
        "{found:?}"
    );
    let dn = browser.dn_on_page().await.expect("the DN is found");
    assert!(dn.contains("ou=staff"), "{dn}");
    browser.close().await;
}

#[tokio::test]
async fn the_status_pages_pass_axe_at_both_widths() {
    let broker = BrokerBuilder::new().start().await;
    let tenant = broker.create_tenant("contoso").await;
    broker.create_tenant("fabrikam").await;
    let _agent = EchoAgent::start(&broker, &tenant, "dc01").await;
    let portal = broker.portal(&tenant, Right::Send).await;
    portal
        .submit(
            "a11y",
            Operation::ResetPassword,
            "dc01",
            b"x".to_vec(),
            None,
        )
        .await
        .expect("submit");
    let token = operator_token(&broker.operator_key());
    let base = format!("http://{}", broker.operator_addr);

    let browser = Browser::start().await;
    let mut problems = Vec::new();
    for (width, height) in SIZES {
        browser.set_width(width, height).await;
        browser.client.delete_all_cookies().await.expect("sign out");
        let name = |page: &str| format!("a11y-status-{page}-{width}");

        browser.goto(&format!("{base}/status")).await;
        wait_for(&browser, "#token").await;
        problems.extend(browser.page_problems(&name("login")).await);

        fill_and_submit(&browser, &[("token", "SharedAccessSignature sr=x")]).await;
        wait_for(&browser, "#error").await;
        problems.extend(browser.page_problems(&name("login-refused")).await);

        fill_and_submit(&browser, &[("token", &token)]).await;
        wait_for(&browser, "tr[data-agent-id=\"dc01\"]").await;
        let html = browser.html().await;
        assert!(!html.contains("http-equiv=\"refresh\""), "reloads unasked");
        problems.extend(browser.page_problems(&name("agents")).await);

        // The opt-in reload. axe's meta-refresh rule flags any refresh
        // under 20 hours, as it cannot know the reader asked for this one
        // and has a Stop link; the rest of the page is checked as usual.
        browser
            .client
            .find(Locator::Id("auto-refresh"))
            .await
            .expect("the opt-in link")
            .click()
            .await
            .expect("opt in");
        wait_for(&browser, "#stop-refresh").await;
        assert!(
            browser
                .html()
                .await
                .contains("<meta http-equiv=\"refresh\" content=\"30\">")
        );
        browser.screenshot(&name("refreshing")).await;
        let found = browser.accessibility_problems(&name("refreshing")).await;
        assert!(found.iter().any(|v| v.id == "meta-refresh"), "{found:?}");
        problems.extend(
            found
                .iter()
                .filter(|v| v.id != "meta-refresh")
                .map(|v| format!("{}: {v}", name("refreshing"))),
        );
        browser
            .client
            .find(Locator::Id("stop-refresh"))
            .await
            .expect("the stop link")
            .click()
            .await
            .expect("stop");
        wait_for(&browser, "#auto-refresh").await;
        assert!(!browser.html().await.contains("http-equiv=\"refresh\""));
    }
    browser.close().await;
    assert_none(&problems);
}

#[tokio::test]
async fn the_portal_pages_pass_axe_at_both_widths() {
    use tests::deployment::{Deployment, WebPortal};

    let d = Deployment::start(&["contoso"], "").await;
    let web = WebPortal::start(d.portal).await;
    let base = web.base();
    let browser = Browser::start().await;
    let mut problems = Vec::new();
    // A user per width: each run resets its user's password.
    for ((width, height), user, good) in [
        (SIZES[0], "ada", "Accessible-Passw0rd-2026"),
        (SIZES[1], "grace", "Narrow-Screen-Passw0rd-26"),
    ] {
        browser.set_width(width, height).await;
        let name = |page: &str| format!("a11y-portal-{page}-{width}");
        let account = format!("{user}@contoso.example");

        browser.goto(&format!("{base}/")).await;
        problems.extend(browser.page_problems(&name("home")).await);
        browser.goto(&format!("{base}/no-such-page")).await;
        problems.extend(browser.page_problems(&name("not-found")).await);

        for task in ["reset", "change", "unlock"] {
            browser.goto(&format!("{base}/{task}")).await;
            wait_for(&browser, "#account").await;
            problems.extend(browser.page_problems(&name(task)).await);
        }

        // Change, step 2: the current password too.
        browser.goto(&format!("{base}/change")).await;
        fill_and_submit(&browser, &[("account", &account)]).await;
        wait_for(&browser, "#policy").await;
        problems.extend(browser.page_problems(&name("change-step2")).await);

        // Reset, step 2 with the policy; a refusal; a success.
        browser.goto(&format!("{base}/reset")).await;
        fill_and_submit(&browser, &[("account", &account)]).await;
        wait_for(&browser, "#policy").await;
        problems.extend(browser.page_problems(&name("reset-step2")).await);
        fill_and_submit(
            &browser,
            &[("new-password", "Sh0rt-1"), ("confirm-password", "Sh0rt-1")],
        )
        .await;
        wait_for(&browser, "#result").await;
        problems.extend(browser.page_problems(&name("reset-refused")).await);
        fill_and_submit(
            &browser,
            &[("new-password", good), ("confirm-password", good)],
        )
        .await;
        wait_for(&browser, "#result").await;
        let done = browser.text("#result").await;
        assert!(done.to_lowercase().contains("changed"), "{done}");
        problems.extend(browser.page_problems(&name("reset-done")).await);

        browser.goto(&format!("{base}/unlock")).await;
        fill_and_submit(&browser, &[("account", "barbara@contoso.example")]).await;
        wait_for(&browser, "#result").await;
        problems.extend(browser.page_problems(&name("unlock-done")).await);
    }
    browser.close().await;
    web.stop().await;
    assert_none(&problems);
}

#[tokio::test]
async fn accounts_that_cannot_be_reset_are_refused_before_any_password_field() {
    use tests::deployment::{Deployment, WebPortal};

    let d = Deployment::start(&["contoso"], "").await;
    let web = WebPortal::start(d.portal).await;
    let base = web.base();
    let browser = Browser::start().await;
    let mut problems = Vec::new();
    let (width, height) = SIZES[1];
    browser.set_width(width, height).await;
    // Refused on the first page, before any password field: disabled,
    // protected, and outside the service account's delegation. To an
    // unverified visitor all three read alike, with a support code.
    for (who, why) in [
        ("edsger", "disabled"),
        ("admin", "protected"),
        ("alan", "no-rights"),
    ] {
        browser.goto(&format!("{base}/reset")).await;
        fill_and_submit(&browser, &[("account", &format!("{who}@contoso.example"))]).await;
        wait_for(&browser, "#result").await;
        let said = browser.text("#result").await;
        assert!(said.contains("cannot be reset here"), "{who}: {said}");
        assert!(said.contains("Support code"), "{who}: {said}");
        let html = browser.html().await;
        assert!(
            !html.contains("new-password") && html.contains("id=\"account\""),
            "{who}: a password field on the refusal, or no step 1"
        );
        problems.extend(
            browser
                .page_problems(&format!("a11y-portal-ineligible-{why}-{width}"))
                .await,
        );
    }

    browser.close().await;
    web.stop().await;
    assert_none(&problems);
}

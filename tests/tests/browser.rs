//! The pages people look at, in headless Chromium: the operator status page
//! and the reference reset portal. Keyboard only, labels on every field,
//! screenshots saved under target/browser-artifacts/.

use std::time::{Duration, Instant};

use fantoccini::Locator;
use proto::pb::Operation;
use sas::Right;
use tests::browser::{Browser, keys};
use tests::{BrokerBuilder, EchoAgent};

fn operator_token(key: &sas::Key) -> String {
    let expiry = proto::time::unix_secs() + 3600;
    sas::mint(key, sas::OPERATOR_RESOURCE, Right::Operator, expiry)
        .expose()
        .to_owned()
}

/// Reloads `url` until the page's HTML satisfies `check` (the status page
/// reloads only on request, as its reader would), at most `limit`.
async fn reload_until(
    browser: &Browser,
    url: &str,
    limit: Duration,
    check: impl Fn(&str) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        browser.goto(url).await;
        if check(&browser.html().await) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "{url}: condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_status_page_shows_connected_agents_and_forgets_a_stopped_one() {
    let broker = BrokerBuilder::new()
        .config("heartbeat_interval = \"1s\"")
        .config("keepalive_timeout = \"1s\"")
        .start()
        .await;
    let tenant = broker.create_tenant("contoso").await;
    let agent = EchoAgent::start(&broker, &tenant, "dc01").await;
    let portal = broker.portal(&tenant, Right::Send).await;
    for i in 0..3 {
        let id = format!("r{i}");
        portal
            .submit(
                &id,
                Operation::ResetPassword,
                "dc01",
                id.clone().into_bytes(),
                None,
            )
            .await
            .expect("submit");
    }

    let browser = Browser::start().await;
    let base = format!("http://{}", broker.operator_addr);
    // Without a credential: the login form.
    browser.goto(&format!("{base}/status")).await;
    let url = browser.client.current_url().await.expect("url");
    assert!(url.path().ends_with("/status/login"), "{url}");
    assert_eq!(browser.unlabelled_fields().await, Vec::<String>::new());

    // Keyboard only: Tab to the token field, type, Enter.
    browser
        .client
        .find(Locator::Css("body"))
        .await
        .expect("body")
        .send_keys(keys::TAB)
        .await
        .expect("tab");
    let mut tabs = 1;
    while browser.focused_id().await != "token" {
        browser.press(keys::TAB).await;
        tabs += 1;
        assert!(tabs < 10, "the token field is not reachable with Tab");
    }
    browser.press(&operator_token(&broker.operator_key())).await;
    browser.press(keys::ENTER).await;

    let agents = browser
        .client
        .wait()
        .for_element(Locator::Css("tr[data-agent-id=\"dc01\"]"))
        .await
        .expect("the connected agent is listed");
    assert!(agents.text().await.expect("row").contains("dc01"));
    assert!(browser.text("#tenant-contoso").await.contains("contoso"));
    browser
        .client
        .find(Locator::Css("svg#requests-chart"))
        .await
        .expect("the requests chart");
    let html = browser.html().await;
    for key in tenant.all_keys_base64() {
        assert!(!html.contains(&key), "a tenant key is on the page");
    }
    browser.check_page("status-page").await;

    // The agent stops (its process dies): gone within the keepalive bound.
    agent.kill().await;
    let gone = reload_until(
        &browser,
        &format!("{base}/status"),
        Duration::from_secs(10),
        |html| !html.contains("data-agent-id=\"dc01\""),
    )
    .await;
    println!("the stopped agent left the page after {gone:?}");
    browser.check_page("status-page-agent-gone").await;
    browser.close().await;
}

/// Fills `field` by keyboard: Tab until it has the focus, then type.
async fn result_text(browser: &Browser) -> String {
    browser
        .client
        .wait()
        .for_element(Locator::Id("result"))
        .await
        .expect("a result on the page")
        .text()
        .await
        .expect("result text")
}

#[tokio::test]
async fn a_user_resets_changes_and_unlocks_in_the_portal_with_the_keyboard() {
    use directory::embedded::EmbeddedDirectory;
    use envelope::Password;
    use tests::deployment::{Deployment, WebPortal};

    const ADA: &str = "CN=Ada Lovelace,OU=Staff,OU=Users,DC=contoso,DC=example";
    const ADA_NOW: &str = "Analytical-Engine-1843";
    const GOOD: &str = "Browser-Passw0rd-2026";

    let d = Deployment::start(&["contoso"], "").await;
    let forest_file = d.forest_file("contoso");
    let web = WebPortal::start(d.portal).await;
    let base = web.base();
    let browser = Browser::start().await;
    let forest = || EmbeddedDirectory::open("contoso", &forest_file).expect("forest");

    // Reset, step 1: the account, by keyboard.
    browser.goto(&format!("{base}/reset")).await;
    assert_eq!(browser.unlabelled_fields().await, Vec::<String>::new());
    browser.from_the_top().await;
    browser
        .tab_to_and_type("account", "ada@contoso.example")
        .await;
    browser.press(keys::ENTER).await;
    // Step 2: the policy is there before the password fields.
    let policy = browser
        .client
        .wait()
        .for_element(Locator::Id("policy"))
        .await
        .expect("the policy")
        .text()
        .await
        .expect("policy text");
    assert!(policy.contains("At least 8 characters"), "{policy}");
    assert_eq!(browser.unlabelled_fields().await, Vec::<String>::new());

    // A weak password: the exact rule, the account kept, the password not.
    browser.from_the_top().await;
    browser.tab_to_and_type("new-password", "Sh0rt-1").await;
    browser.tab_to_and_type("confirm-password", "Sh0rt-1").await;
    browser.press(keys::ENTER).await;
    let refusal = result_text(&browser).await;
    assert!(refusal.contains("at least 8 characters"), "{refusal}");
    let html = browser.html().await;
    assert!(html.contains("ada@contoso.example"), "the account is kept");
    assert!(!html.contains("Sh0rt-1"), "the password is not echoed");
    assert!(
        forest().check_password(ADA, &Password::new(ADA_NOW)),
        "unchanged"
    );
    browser.check_page("portal-reset-refused").await;

    // A good one: success, and the directory has it.
    browser.from_the_top().await;
    browser.tab_to_and_type("new-password", GOOD).await;
    browser.tab_to_and_type("confirm-password", GOOD).await;
    browser.press(keys::ENTER).await;
    let done = result_text(&browser).await;
    assert!(done.to_lowercase().contains("changed"), "{done}");
    assert!(forest().check_password(ADA, &Password::new(GOOD)));
    assert!(!forest().check_password(ADA, &Password::new(ADA_NOW)));
    browser.check_page("portal-reset-done").await;

    // Change with a wrong current password: reported as such.
    browser.goto(&format!("{base}/change")).await;
    browser.from_the_top().await;
    browser
        .tab_to_and_type("account", "grace@contoso.example")
        .await;
    browser.press(keys::ENTER).await;
    browser
        .client
        .wait()
        .for_element(Locator::Id("policy"))
        .await
        .expect("the policy");
    assert_eq!(browser.unlabelled_fields().await, Vec::<String>::new());
    browser.from_the_top().await;
    browser
        .tab_to_and_type("current-password", "Not-Her-Passw0rd-1")
        .await;
    browser.tab_to_and_type("new-password", GOOD).await;
    browser.tab_to_and_type("confirm-password", GOOD).await;
    browser.press(keys::ENTER).await;
    let wrong = result_text(&browser).await;
    assert!(wrong.contains("current password is not correct"), "{wrong}");
    browser.check_page("portal-change-wrong-current").await;

    // Unlock.
    browser.goto(&format!("{base}/unlock")).await;
    assert_eq!(browser.unlabelled_fields().await, Vec::<String>::new());
    browser.from_the_top().await;
    browser
        .tab_to_and_type("account", "barbara@contoso.example")
        .await;
    browser.press(keys::ENTER).await;
    let unlocked = result_text(&browser).await;
    assert!(unlocked.contains("unlocked"), "{unlocked}");
    // And the directory agrees: her lockout time is cleared.
    let forest_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&forest_file).expect("forest file"))
            .expect("forest json");
    assert!(
        lockout_of(&forest_json, "barbara").is_some_and(|t| t == 0),
        "barbara is still locked in the directory"
    );
    browser.check_page("portal-unlock").await;

    browser.close().await;
    web.stop().await;
}

#[tokio::test]
async fn a_locked_out_user_who_resets_can_sign_in_as_the_page_says() {
    use directory::embedded::EmbeddedDirectory;
    use envelope::Password;
    use tests::deployment::{Deployment, WebPortal};

    const BARBARA: &str = "CN=Barbara Liskov,OU=Staff,OU=Users,DC=contoso,DC=example";
    const GOOD: &str = "Unlocked-By-Reset-2026";

    let d = Deployment::start(&["contoso"], "").await;
    let forest_file = d.forest_file("contoso");
    let before: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&forest_file).expect("forest file"))
            .expect("forest json");
    assert!(
        lockout_of(&before, "barbara").is_some_and(|t| t > 0),
        "the sample's barbara starts locked out"
    );
    let web = WebPortal::start(d.portal).await;
    let browser = Browser::start().await;

    browser.goto(&format!("{}/reset", web.base())).await;
    browser.from_the_top().await;
    browser
        .tab_to_and_type("account", "barbara@contoso.example")
        .await;
    browser.press(keys::ENTER).await;
    let policy = browser
        .client
        .wait()
        .for_element(Locator::Id("policy"))
        .await
        .expect("the policy")
        .text()
        .await
        .expect("policy text");
    // Advice, not a promise some domains do not keep.
    assert!(policy.contains("Avoid your account name"), "{policy}");
    assert!(!policy.contains("must not contain"), "{policy}");
    browser.from_the_top().await;
    browser.tab_to_and_type("new-password", GOOD).await;
    browser.tab_to_and_type("confirm-password", GOOD).await;
    browser.press(keys::ENTER).await;
    let done = result_text(&browser).await;
    assert!(done.contains("You can sign in"), "{done}");
    browser.check_page("portal-reset-locked-user").await;

    // What the page says is true in the directory: the new password, and
    // no lockout left to stop the sign-in.
    let after: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&forest_file).expect("forest file"))
            .expect("forest json");
    assert_eq!(lockout_of(&after, "barbara"), Some(0), "still locked out");
    let forest = EmbeddedDirectory::open("contoso", &forest_file).expect("forest");
    assert!(forest.check_password(BARBARA, &Password::new(GOOD)));

    browser.close().await;
    web.stop().await;
}

/// The lockout time of the user with this sAMAccountName in a forest file
/// (0 or absent: not locked).
fn lockout_of(value: &serde_json::Value, sam: &str) -> Option<i64> {
    match value {
        serde_json::Value::Object(map) => {
            if map.get("sam_account_name").and_then(|v| v.as_str()) == Some(sam) {
                return Some(
                    map.get("lockout_time")
                        .and_then(|v| v.as_i64())
                        .unwrap_or(0),
                );
            }
            map.values().find_map(|v| lockout_of(v, sam))
        }
        serde_json::Value::Array(items) => items.iter().find_map(|v| lockout_of(v, sam)),
        _ => None,
    }
}

//! The pages people look at, in headless Chromium: the operator status page
//! and the reference reset portal. Keyboard only, labels on every field,
//! screenshots saved under target/browser-artifacts/.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fantoccini::Locator;
use proto::pb::Operation;
use sas::Right;
use tests::browser::{Browser, keys};
use tests::{BrokerBuilder, EchoAgent};

fn operator_token(key: &sas::Key) -> String {
    let expiry = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 3600;
    sas::mint(key, sas::OPERATOR_RESOURCE, Right::Operator, expiry)
        .expose()
        .to_owned()
}

/// Reloads `url` until the page's HTML satisfies `check` (the status page
/// refreshes itself every 5 s; a test need not wait for that), at most
/// `limit`.
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
            .submit(&id, Operation::ResetPassword, id.clone().into_bytes(), None)
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
    browser.screenshot("status-page").await;

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
    browser.screenshot("status-page-agent-gone").await;
    browser.close().await;
}

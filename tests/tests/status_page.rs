//! The operator status page on the operator port: it needs the operator
//! token (header or login cookie), lists each tenant's connected agents and
//! the last minutes' requests, and shows no secret.

use std::time::Duration;

use proto::pb::Operation;
use proto::time::unix_secs;
use relay_client::Reason;
use sas::{Key, KeySlot, Right};
use tests::http_request::{self, Response};
use tests::{BrokerBuilder, BrokerProcess, EchoAgent, STARTUP_TIMEOUT, http, reason};

/// An operator token, as `relayctl operator-token` mints it.
fn operator_token(key: &Key, expiry_unix: u64) -> String {
    sas::mint(key, sas::OPERATOR_RESOURCE, Right::Operator, expiry_unix)
        .expose()
        .to_owned()
}

async fn status_with_token(broker: &BrokerProcess, token: &str) -> Response {
    http_request::get(
        &broker.operator_addr,
        "/status",
        &[("Authorization", token)],
    )
    .await
}

fn assert_security_headers(r: &Response) {
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(
        r.header("content-security-policy"),
        Some(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'"
        )
    );
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
}

/// The rows of one tenant's section of the agents table.
fn tenant_section<'a>(page: &'a str, tenant: &str) -> &'a str {
    page.split(&format!("<tbody id=\"tenant-{tenant}\""))
        .nth(1)
        .and_then(|s| s.split("</tbody>").next())
        .unwrap_or_else(|| panic!("no section of tenant {tenant}:\n{page}"))
}

/// The "All" row under the requests table.
fn totals(page: &str) -> &str {
    page.split("id=\"requests-total\"")
        .nth(1)
        .and_then(|s| s.split("</tr>").next())
        .expect("totals row")
}

#[tokio::test]
async fn the_page_needs_the_operator_token_and_lists_agents_and_requests() {
    let broker = BrokerBuilder::new().start().await;
    let tenant = broker.create_tenant("contoso").await;
    broker.create_tenant("fabrikam").await;
    let agent = EchoAgent::start(&broker, &tenant, "dc01").await;
    let addr = &broker.operator_addr;
    let op = broker.operator_key();

    let anonymous = http_request::get(addr, "/status", &[]).await;
    assert_eq!(anonymous.status, 303);
    assert_eq!(anonymous.header("location"), Some("/status/login"));
    assert_security_headers(&anonymous);

    // Each refused token says why, and the page never repeats it.
    let manage = sas::mint(
        &tenant.key(Right::Manage, KeySlot::Primary),
        "contoso",
        Right::Manage,
        unix_secs() + 600,
    );
    let foreign = operator_token(&Key::generate().expect("key"), unix_secs() + 600);
    let expired = operator_token(&op, unix_secs() - 10);
    for (token, status, why) in [
        (
            manage.expose(),
            403,
            "this token does not carry the Operator right",
        ),
        (
            foreign.as_str(),
            401,
            "the token&#39;s signature matches no key",
        ),
        (expired.as_str(), 401, "the token expired"),
        ("Bearer abc", 401, "malformed shared access signature"),
    ] {
        let r = status_with_token(&broker, token).await;
        assert_eq!(r.status, status, "{why}: {}", r.body);
        assert!(r.body.contains(why), "{why}: {}", r.body);
        assert!(!r.body.contains(token), "the refused token is not echoed");
        assert!(!r.body.contains("data-agent-id"));
        assert_security_headers(&r);
    }

    let token = operator_token(&op, unix_secs() + 3600);
    let r = status_with_token(&broker, &token).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_security_headers(&r);
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("text/html"))
    );
    let page = r.body;
    assert!(
        !page.contains("http-equiv=\"refresh\""),
        "no reload unless asked"
    );
    let asked = http_request::get(
        &broker.operator_addr,
        "/status?refresh=30",
        &[("Authorization", token.as_str())],
    )
    .await;
    assert_eq!(asked.status, 200, "{}", asked.body);
    assert!(
        asked
            .body
            .contains("<meta http-equiv=\"refresh\" content=\"30\">")
    );
    assert!(asked.body.contains("Stop refreshing"));
    assert!(page.contains("<table id=\"agents\">"));
    assert!(tenant_section(&page, "contoso").contains("<tr data-agent-id=\"dc01\">"));
    assert!(tenant_section(&page, "contoso").contains("127.0.0.1:"));
    assert!(tenant_section(&page, "fabrikam").contains("no agent online"));
    assert!(page.contains("1 of 2 tenants have no agent online: fabrikam."));
    let mut secrets = tenant.all_keys_base64();
    secrets.push(op.to_base64().to_string());
    secrets.push(token.clone());
    for secret in &secrets {
        assert!(!page.contains(secret.as_str()), "a secret is on the page");
    }

    let portal = broker.portal(&tenant, Right::Send).await;
    for i in 0..3 {
        portal
            .submit(
                &format!("r{i}"),
                Operation::ResetPassword,
                "dc01",
                vec![1],
                None,
            )
            .await
            .expect("submit");
    }
    let page = status_with_token(&broker, &token).await.body;
    assert!(
        totals(&page).contains("data-outcome=\"delivered\">3</td>"),
        "{page}"
    );
    assert!(page.contains("<svg id=\"requests-chart\" role=\"img\" aria-label=\""));
    assert_eq!(page.matches("<g class=\"minute\"").count(), 15);
    assert!(page.contains("3 requests, 3 delivered, 0 failed"));

    agent.stop().await;
    let started = std::time::Instant::now();
    let page = loop {
        let page = status_with_token(&broker, &token).await.body;
        if !page.contains("data-agent-id=\"dc01\"") {
            break page;
        }
        assert!(
            started.elapsed() < STARTUP_TIMEOUT,
            "the stopped agent is still listed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(tenant_section(&page, "contoso").contains("no agent online"));
    assert_eq!(reason(portal.ping(None).await), Reason::NoAgentOnline);
    let page = status_with_token(&broker, &token).await.body;
    assert!(totals(&page).contains("data-outcome=\"no_agent_online\">1</td>"));

    // The other operator endpoints stay open.
    assert_eq!(http::get(addr, "/healthz").await.0, 200);
    assert_eq!(http::get(addr, "/metrics").await.0, 200);
}

#[tokio::test]
async fn a_browser_signs_in_with_a_pasted_token_kept_in_a_cookie() {
    let broker = BrokerBuilder::new().start().await;
    let tenant = broker.create_tenant("contoso").await;
    let _agent = EchoAgent::start(&broker, &tenant, "dc01").await;
    let addr = &broker.operator_addr;
    let op = broker.operator_key();

    let form = http_request::get(addr, "/status/login", &[]).await;
    assert_eq!(form.status, 200);
    assert_security_headers(&form);
    assert!(form.body.contains("<label for=\"token\">"));
    assert!(form.body.contains("id=\"submit\""));

    let expired = operator_token(&op, unix_secs() - 10);
    let send = sas::mint(
        &tenant.key(Right::Send, KeySlot::Primary),
        "contoso",
        Right::Send,
        unix_secs() + 600,
    );
    for (token, status, why) in [
        (expired.as_str(), 401, "the token expired"),
        (
            send.expose(),
            403,
            "this token does not carry the Operator right",
        ),
        ("", 401, "no operator token was given"),
    ] {
        let r = http_request::post_form(addr, "/status/login", &[("token", token)]).await;
        assert_eq!(r.status, status, "{why}: {}", r.body);
        assert!(r.body.contains(why), "{why}: {}", r.body);
        assert!(r.body.contains("id=\"token\""), "the form again");
        assert!(r.header("set-cookie").is_none());
        assert_security_headers(&r);
    }

    // Pasted with the newline a terminal copy adds.
    let token = operator_token(&op, unix_secs() + 3600);
    let r =
        http_request::post_form(addr, "/status/login", &[("token", &format!("{token}\n"))]).await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.header("location"), Some("/status"));
    let set_cookie = r.header("set-cookie").expect("Set-Cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/status"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    let max_age: u64 = set_cookie
        .split("Max-Age=")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .and_then(|s| s.parse().ok())
        .expect("Max-Age");
    assert!((3500..=3600).contains(&max_age), "{max_age}");
    let cookie = set_cookie.split(';').next().expect("name=value");
    assert!(cookie.starts_with("relay_operator="));

    let page = http_request::get(addr, "/status", &[("Cookie", cookie)]).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("<tr data-agent-id=\"dc01\">"));
    let again = http_request::get(addr, "/status/login", &[("Cookie", cookie)]).await;
    assert_eq!(
        (again.status, again.header("location")),
        (303, Some("/status"))
    );

    // A cookie whose token expired sends the browser back to the form,
    // which says why and clears it.
    let stale = format!(
        "relay_operator={}",
        operator_token(&op, unix_secs() - 10).replace(' ', "%20")
    );
    let r = http_request::get(addr, "/status", &[("Cookie", &stale)]).await;
    assert_eq!(
        (r.status, r.header("location")),
        (303, Some("/status/login"))
    );
    let r = http_request::get(addr, "/status/login", &[("Cookie", &stale)]).await;
    assert_eq!(r.status, 200);
    assert!(
        r.body
            .contains("the saved token no longer works: the token expired")
    );
    assert!(
        r.header("set-cookie")
            .is_some_and(|c| c.starts_with("relay_operator=;") && c.contains("Max-Age=0"))
    );
}

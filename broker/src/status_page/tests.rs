use std::collections::BTreeSet;
use std::time::Duration;

use sas::Key;

use super::*;
use crate::recent::RecentRequests;
use crate::store::{Store, TenantKeys};
use crate::tenants::Tenants;

const NOW: u64 = 1_700_000_000;

async fn authorizer() -> (tempfile::TempDir, Arc<Tenants>, Authorizer, Key) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.redb"), crate::sealing::test_key()).unwrap();
    let tenants = Arc::new(Tenants::load(store).unwrap());
    tenants.create("contoso", None, true).await.unwrap();
    let op = Key::generate().unwrap();
    let auth = Authorizer::new(
        Arc::clone(&tenants),
        op.clone(),
        Duration::from_secs(86_400),
    );
    (dir, tenants, auth, op)
}

/// The seconds an operator token has left, or why it is refused.
fn verify(auth: &Authorizer, token: &str, now: u64) -> Result<u64, Refused> {
    let call = Call {
        rpc: "status/login",
        peer: None,
    };
    super::verify(&Audit::disabled(), auth, call, token, now).map(|(left, _)| left)
}

#[tokio::test]
async fn each_refused_token_gets_its_own_reason_and_status() {
    let (_d, tenants, auth, op) = authorizer().await;
    let operator = sas::mint(&op, "*", Right::Operator, NOW + 3600);
    assert_eq!(verify(&auth, operator.expose(), NOW).unwrap(), 3600);
    assert_eq!(
        verify(&auth, &format!("  {}\n", operator.expose()), NOW).unwrap(),
        3600,
        "pasted with white space around it"
    );

    let refused = |token: &str| verify(&auth, token, NOW).unwrap_err();
    let expired = sas::mint(&op, "*", Right::Operator, NOW - 1);
    let r = refused(expired.expose());
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.to_string().starts_with("the token expired"), "{r}");

    let foreign = sas::mint(&Key::generate().unwrap(), "*", Right::Operator, NOW + 60);
    let r = refused(foreign.expose());
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(
        r.to_string()
            .starts_with("the token's signature matches no key")
    );

    let record = tenants.get("contoso").unwrap();
    let manage = sas::mint(
        &record.keys.manage.primary,
        "contoso",
        Right::Manage,
        NOW + 60,
    );
    let r = refused(manage.expose());
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(
        r.to_string()
            .starts_with("this token does not carry the Operator right")
    );
    assert!(r.to_string().contains("manage"));

    let r = refused("Basic b3BlcmF0b3I6c2VjcmV0");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(
        r.to_string()
            .starts_with("malformed shared access signature"),
        "{r}"
    );
    assert!(
        !r.to_string().contains("b3BlcmF0b3I6c2VjcmV0"),
        "the input is not echoed"
    );

    assert!(matches!(refused("  "), Refused::Missing));
}

#[test]
fn the_cookie_round_trips_a_token_and_carries_its_attributes() {
    let token = sas::mint(&Key::generate().unwrap(), "*", Right::Operator, NOW);
    let cookie = session_cookie(token.expose(), 1800);
    assert!(!cookie.split(';').next().unwrap().contains(' '));
    for attribute in [
        "Max-Age=1800",
        "Path=/status",
        "HttpOnly",
        "SameSite=Strict",
    ] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    let value = cookie.split(';').next().unwrap();
    let mut headers = HeaderMap::new();
    headers.insert(
        header::COOKIE,
        HeaderValue::from_str(&format!("theme=dark; {value}; other=1")).unwrap(),
    );
    let (source, found) = presented(&headers).unwrap();
    assert!(matches!(source, Source::Cookie));
    assert_eq!(found.as_str(), token.expose());
}

#[test]
fn the_authorization_header_wins_over_the_cookie() {
    let mut headers = HeaderMap::new();
    headers.insert(header::COOKIE, HeaderValue::from_static("relay_operator=x"));
    headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_static("SharedAccessSignature sr=*"),
    );
    let (source, found) = presented(&headers).unwrap();
    assert!(matches!(source, Source::Header));
    assert_eq!(found.as_str(), "SharedAccessSignature sr=*");
    assert!(presented(&HeaderMap::new()).is_none());
    let mut other = HeaderMap::new();
    other.insert(
        header::COOKIE,
        HeaderValue::from_static("relay_operatorx=1"),
    );
    assert!(presented(&other).is_none(), "only the exact cookie name");
}

#[test]
fn no_secret_of_a_tenant_reaches_the_page() {
    let keys = TenantKeys::generate().unwrap();
    let mut secrets = Vec::new();
    for right in [Right::Listen, Right::Send, Right::Manage] {
        let pair = keys.pair(right).unwrap();
        for key in [&pair.primary, &pair.secondary] {
            secrets.push(key.to_base64().to_string());
            let token = sas::mint(key, "contoso", right, NOW + 60);
            let sig = token.expose().split("sig=").nth(1).unwrap();
            secrets.push(sig.split('&').next().unwrap().to_owned());
        }
    }
    let record = TenantRecord {
        name: "contoso".into(),
        connector_name: "contoso - AAD".into(),
        writeback_enabled: true,
        created_unix_ms: 0,
        modified_unix_ms: 0,
        keys,
        revoked_agents: BTreeSet::new(),
        agent_keys: Vec::new(),
    };
    let agent = AgentInfo {
        agent_id: "dc01".into(),
        agent_version: "1.0".into(),
        connected_since_unix_ms: 1,
        last_heartbeat_unix_ms: 2,
        session_id: "0123456789abcdef".into(),
        in_flight: 0,
        remote_addr: "192.0.2.7:50123".into(),
    };
    let recent = RecentRequests::new();
    recent.record_at(
        NOW as i64 * 1000,
        "delivered",
        Some(Duration::from_millis(3)),
    );
    let page = render::status_page(&render::StatusView {
        now_unix_ms: NOW as i64 * 1000,
        node: render::NodeView {
            version: "0.1.0",
            condition: "ready",
            detail: None,
            started_unix_ms: 0,
            uptime: Duration::from_secs(5),
        },
        cluster: None,
        tenants: vec![tenant_view(&record, vec![agent])],
        minutes: recent.snapshot_at(NOW as i64 * 1000),
        refresh_secs: None,
    });
    assert!(page.contains("data-agent-id=\"dc01\""));
    for secret in &secrets {
        // Every 12-character window of each key and signature.
        for start in 0..=secret.len() - 12 {
            let window = &secret[start..start + 12];
            assert!(
                !page.contains(window),
                "{window:?} of a secret is on the page"
            );
        }
    }
    assert!(!page.contains("0123456789abcdef"), "nor a session id");
}

#[test]
fn a_lapsed_lease_is_shown_with_its_cause() {
    let page = render::status_page(&render::StatusView {
        now_unix_ms: NOW as i64 * 1000,
        node: render::NodeView {
            version: "0.1.0",
            condition: "tenants unconfirmed",
            detail: Some(
                "last confirmed current 12s ago (cannot reach a JetStream quorum: <timed out>)"
                    .into(),
            ),
            started_unix_ms: 0,
            uptime: Duration::from_secs(5),
        },
        cluster: None,
        tenants: Vec::new(),
        minutes: RecentRequests::new().snapshot_at(NOW as i64 * 1000),
        refresh_secs: None,
    });
    assert!(
        page.contains("<td class=\"warn\">tenants unconfirmed: last confirmed current 12s ago (cannot reach a JetStream quorum: &lt;timed out&gt;)</td>"),
        "{page}"
    );
}

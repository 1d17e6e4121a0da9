use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::callback::claim;
use super::*;

fn config(amr: &[&str], acr: &[&str]) -> OidcConfig {
    let text = "issuer = \"https://login.contoso.example\"\nclient_id = \"c\"\n\
         redirect_url = \"https://reset.contoso.example/signin/callback\"\n\
         session_key_file = \"k\"\n";
    OidcConfig {
        required_amr: amr.iter().map(|s| s.to_string()).collect(),
        required_acr: acr.iter().map(|s| s.to_string()).collect(),
        ..toml::from_str(text).unwrap()
    }
}

#[test]
fn sign_in_returns_to_a_task_page_only() {
    assert_eq!(safe_next("/reset"), "/reset");
    assert_eq!(safe_next("/reset/policy"), "/reset");
    assert_eq!(safe_next("/unlock"), "/unlock");
    assert_eq!(safe_next("/resetx"), "/");
    assert_eq!(safe_next("https://evil.example/"), "/");
    assert_eq!(safe_next("//evil.example/reset"), "/");
    assert_eq!(safe_next(""), "/");
}

#[test]
fn strength_needs_every_amr_and_one_acr() {
    assert!(check_strength(&config(&[], &[]), &[], None).is_ok());
    let mfa = config(&["mfa"], &[]);
    assert!(check_strength(&mfa, &["pwd", "mfa"], None).is_ok());
    let err = check_strength(&mfa, &["pwd"], None).unwrap_err();
    assert!(err.contains("mfa"), "{err}");
    assert!(check_strength(&mfa, &[], None).is_err());
    let acr = config(&[], &["urn:mace:incommon:iap:silver", "phr"]);
    assert!(check_strength(&acr, &[], Some("phr")).is_ok());
    assert!(check_strength(&acr, &[], Some("pwd")).is_err());
    assert!(check_strength(&acr, &[], None).is_err());
}

#[test]
fn the_account_claim_must_be_a_plain_string() {
    let jwt = |payload: &str| format!("e30.{}.sig", URL_SAFE_NO_PAD.encode(payload));
    let token = jwt(r#"{"preferred_username":" ada@contoso.example ","upn":7,"email":"a\nb"}"#);
    assert_eq!(
        claim(&token, "preferred_username").as_deref(),
        Some("ada@contoso.example")
    );
    assert_eq!(claim(&token, "upn"), None);
    assert_eq!(claim(&token, "email"), None);
    assert_eq!(claim(&token, "absent"), None);
    assert_eq!(claim(&jwt(r#"{"upn":""}"#), "upn"), None);
    assert_eq!(claim("not a jwt", "upn"), None);
}

#[test]
fn the_anchor_kind_comes_from_the_sign_in() {
    use envelope::Anchor;
    let who = |anchor| {
        Identity::SignedIn(SignedIn {
            account: "Sm4tjzscXUqOf6CxwtPk9Q==".into(),
            anchor,
        })
    };
    assert_eq!(
        who(AnchorKind::SourceAnchor).anchor("Sm4tjzscXUqOf6CxwtPk9Q=="),
        Anchor::SourceAnchor("Sm4tjzscXUqOf6CxwtPk9Q==".into())
    );
    assert_eq!(
        who(AnchorKind::UserPrincipalName).anchor("ada@contoso.example"),
        Anchor::UserPrincipalName("ada@contoso.example".into())
    );
    assert_eq!(
        Identity::Anyone.anchor("ada@contoso.example"),
        Anchor::UserPrincipalName("ada@contoso.example".into())
    );
    // A session cookie from before the field existed is a UPN.
    let old: SignedIn = serde_json::from_str(r#"{"account":"ada@contoso.example"}"#).unwrap();
    assert_eq!(old.anchor, AnchorKind::UserPrincipalName);
}

mod routes {
    //! The router in oidc mode, without a provider (discovery never ran)
    //! nor a broker: what a session cookie does and does not open.

    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use axum::body::Body;
    use axum::http::{Method, Request, StatusCode, header};
    use relay_client::connect::BrokerEndpoint;
    use relay_client::portal_client::PortalClient;
    use relay_client::sealed::SealedPortal;
    use tower::ServiceExt;

    use super::super::*;
    use crate::session::Signer;
    use crate::{AppState, Settings, app};

    const KEY: [u8; 32] = [3; 32];

    fn router(dir: &std::path::Path) -> axum::Router {
        let key = dir.join("session.key");
        std::fs::write(
            &key,
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, KEY),
        )
        .unwrap();
        let text = format!(
            "issuer = \"http://127.0.0.1:1\"\nclient_id = \"c\"\n\
             redirect_url = \"http://127.0.0.1:8080/signin/callback\"\n\
             session_key_file = {key:?}\n"
        );
        let oidc = Oidc::new(toml::from_str(&text).unwrap()).unwrap();
        let channel = BrokerEndpoint::new("https://127.0.0.1:1", None)
            .endpoint()
            .unwrap()
            .connect_lazy();
        let key = sas::Key::generate().unwrap();
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
        let settings = Settings {
            title: "Test portal".into(),
            request_timeout: Duration::from_secs(5),
        };
        app(AppState::new(portal, settings).with_oidc(Arc::new(oidc)))
    }

    fn session(key: [u8; 32], account: &str) -> String {
        let who = SignedIn {
            account: account.into(),
            anchor: AnchorKind::UserPrincipalName,
        };
        let value = Signer::new(&key).seal(
            SESSION_KIND,
            &who,
            SystemTime::now(),
            Duration::from_secs(60),
        );
        format!("{SESSION_COOKIE}={value}")
    }

    async fn call(router: &axum::Router, request: Request<Body>) -> (StatusCode, String, String) {
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let location = response
            .headers()
            .get(header::LOCATION)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, location, String::from_utf8(body.to_vec()).unwrap())
    }

    fn get(path: &str, cookie: &str) -> Request<Body> {
        Request::get(path)
            .header(header::COOKIE, cookie)
            .body(Body::empty())
            .unwrap()
    }

    #[tokio::test]
    async fn tasks_need_a_session_signed_with_the_configured_key() {
        let dir = tempfile::tempdir().unwrap();
        let router = router(dir.path());
        for cookie in ["", &session([9; 32], "ada@contoso.example")] {
            for path in ["/reset", "/change", "/unlock"] {
                let (status, location, _) = call(&router, get(path, cookie)).await;
                assert_eq!(status, StatusCode::SEE_OTHER, "{path}");
                assert_eq!(location, format!("/signin?next={path}"));
            }
        }
        // A posted form without a session links to sign-in.
        let request = Request::builder()
            .method(Method::POST)
            .uri("/reset/policy")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from("account=grace%40contoso.example"))
            .unwrap();
        // A page, not a redirect: CSP form-action would block the chain.
        let (status, location, page) = call(&router, request).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(location, "");
        assert!(page.contains("href=\"/signin?next=/reset\""), "{page}");

        let cookie = session(KEY, "ada@contoso.example");
        let (status, _, page) = call(&router, get("/reset", &cookie)).await;
        assert_eq!(status, StatusCode::OK);
        assert!(page.contains("id=\"signed-in\""), "{page}");
        assert!(page.contains("ada@contoso.example"));
        assert!(!page.contains("name=\"account\""), "{page}");
        assert!(!page.contains("demo-banner"), "{page}");
    }

    #[tokio::test]
    async fn without_discovery_sign_in_says_it_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let router = router(dir.path());
        for path in ["/signin?next=/reset", "/signin/callback?code=x&state=y"] {
            let (status, _, page) = call(&router, get(path, "")).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
            assert!(page.contains("Sign-in is unavailable"), "{page}");
        }
    }
}

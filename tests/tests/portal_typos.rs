//! Issue 22, point 4: limits that do not punish typing. With an account
//! allowance of 2, a user who asks for the policy twice (a typo in step 1,
//! then again) and has three weak passwords refused still gets the valid
//! reset through: only calls that could change the account count against
//! it; the attempts bound (here 10) still holds them all.

use std::time::Duration;

use directory::embedded::EmbeddedDirectory;
use envelope::Password;
use tests::deployment::Deployment;
use tests::web::Browser;

const ADA: &str = "CN=Ada Lovelace,OU=Staff,OU=Users,DC=contoso,DC=example";

#[tokio::test]
async fn typos_and_weak_passwords_do_not_lock_a_user_out_of_a_valid_reset() {
    let d = Deployment::start(&["contoso"], "").await;
    let forest_file = d.forest_file("contoso");
    let state = portal::AppState::new(
        d.another_portal().await,
        portal::Settings {
            title: "Contoso password reset".into(),
            request_timeout: Duration::from_secs(20),
        },
    )
    .with_limits(portal::config::Limits {
        account_requests_per_hour: 2,
        account_attempts_per_hour: 10,
        visitor_requests_per_minute: 100,
        ..portal::config::Limits::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let web = portal::serve_on(listener, state, shutdown.clone()).expect("serve");
    let mut browser = Browser::new(web.addr.to_string());
    let page = browser.get("/reset").await;
    let token = page.field("csrf").expect("csrf token");
    let account = ("account", "ada@contoso.example");

    for _ in 0..2 {
        let page = browser
            .post("/reset/policy", &[("csrf", &token), account])
            .await;
        assert_eq!(page.status, 200);
        assert!(page.body.contains("id=\"new-password\""), "{}", page.body);
    }
    for weak in ["Sh0rt-1", "short", "Tiny-2"] {
        let page = browser
            .post(
                "/reset",
                &[
                    ("csrf", &token),
                    account,
                    ("new_password", weak),
                    ("confirm_password", weak),
                ],
            )
            .await;
        assert_eq!(page.status, 200, "{weak}: {}", page.body);
        assert!(
            page.body.contains("role=\"alert\""),
            "{weak}: {}",
            page.body
        );
        assert!(!page.body.contains("Too many"), "{weak}: {}", page.body);
    }
    const GOOD: &str = "Typo-Proof-Passw0rd-2026";
    let page = browser
        .post(
            "/reset",
            &[
                ("csrf", &token),
                account,
                ("new_password", GOOD),
                ("confirm_password", GOOD),
            ],
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("Your password was changed."),
        "{}",
        page.body
    );
    let forest = EmbeddedDirectory::open("contoso", &forest_file).expect("forest");
    assert!(forest.check_password(ADA, &Password::new(GOOD)));

    // The attempts bound still holds: 10 calls in all, then 429.
    let mut limited = false;
    for _ in 0..6 {
        let page = browser
            .post("/reset/policy", &[("csrf", &token), account])
            .await;
        limited |= page.status == 429 && page.body.contains("for this account");
    }
    assert!(limited, "the attempts bound did not hold");
    shutdown.cancel();
    web.wait().await.expect("stop");
}

//! The reference reset portal over HTTP, without a browser, in front of a
//! real broker and a real onboarded agent with the sample forest: the
//! policy first, a too-short password refused with the exact rule, a good
//! one accepted and checked in the directory, and no password ever echoed
//! into a page or written to the event log.

use directory::embedded::EmbeddedDirectory;
use envelope::Password;
use tests::deployment::{Deployment, WebPortal};
use tests::web::{Browser, Page};

const ADA: &str = "CN=Ada Lovelace,OU=Staff,OU=Users,DC=contoso,DC=example";
const TOO_SHORT: &str = "Sh0rt-1";
const GOOD: &str = "Portal-Passw0rd-2026";
const WRONG_CURRENT: &str = "Not-Her-Passw0rd-1";

fn assert_contains(page: &Page, words: &str) {
    assert!(
        page.body.contains(words),
        "{words:?} not in the page:\n{}",
        page.body
    );
}

#[tokio::test]
async fn a_user_resets_a_password_through_the_portal() {
    let d = Deployment::start(&["contoso"], "").await;
    let forest_file = d.forest_file("contoso");
    let events = d.dir.path().join("state/events/events.jsonl");
    // The deployment's portal, with the key the agent was onboarded with
    // and the fingerprint `init` printed, serves the web portal.
    let web = WebPortal::start(d.portal).await;
    let mut browser = Browser::new(web.server.addr.to_string());

    // Step 1: the account.
    let page = browser.get("/reset").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("cache-control"), Some("no-store"));
    assert_contains(&page, "id=\"reset-form\"");
    let token = page.field("csrf").expect("csrf token");

    // Without the cookie the same token is refused.
    let forged = browser
        .without_cookies()
        .post(
            "/reset/policy",
            &[("csrf", &token), ("account", "ada@contoso.example")],
        )
        .await;
    assert_eq!(forged.status, 403);

    // Step 2: the policy, before the password fields.
    let page = browser
        .post(
            "/reset/policy",
            &[("csrf", &token), ("account", "ada@contoso.example")],
        )
        .await;
    assert_eq!(page.status, 200);
    assert_contains(&page, "id=\"policy\"");
    assert_contains(&page, "At least 8 characters.");
    assert_contains(&page, "three of these groups");
    assert_contains(&page, "Default Domain Policy");
    let policy_at = page.body.find("id=\"policy\"").unwrap();
    assert!(policy_at < page.body.find("id=\"new-password\"").unwrap());
    let token = page.field("csrf").expect("csrf token");
    let policy = page.field("policy").expect("policy field");
    assert_eq!(
        page.field("account").as_deref(),
        Some("ada@contoso.example")
    );

    // Too short: the exact rule, the account kept, no password echoed.
    let page = browser
        .post(
            "/reset",
            &[
                ("csrf", &token),
                ("account", "ada@contoso.example"),
                ("policy", &policy),
                ("new_password", TOO_SHORT),
                ("confirm_password", TOO_SHORT),
            ],
        )
        .await;
    assert_eq!(page.status, 200);
    assert_contains(&page, "role=\"alert\"");
    assert_contains(&page, "The password must have at least 8 characters.");
    assert_contains(&page, "At least 8 characters.");
    assert!(!page.body.contains(TOO_SHORT), "a password was echoed");

    // A good one: changed, and the directory agrees.
    let page = browser
        .post(
            "/reset",
            &[
                ("csrf", &token),
                ("account", "ada@contoso.example"),
                ("policy", &policy),
                ("new_password", GOOD),
                ("confirm_password", GOOD),
            ],
        )
        .await;
    assert_eq!(page.status, 200);
    assert_contains(&page, "role=\"status\"");
    assert_contains(&page, "Your password was changed.");
    assert!(!page.body.contains(GOOD), "a password was echoed");
    let forest = EmbeddedDirectory::open("contoso", &forest_file).expect("forest");
    assert!(forest.check_password(ADA, &Password::new(GOOD)));

    // A change with a wrong current password is reported as such.
    let page = browser.get("/change").await;
    let token = page.field("csrf").expect("csrf token");
    let page = browser
        .post(
            "/change/policy",
            &[("csrf", &token), ("account", "grace@contoso.example")],
        )
        .await;
    assert_contains(&page, "last 24 passwords");
    let page = browser
        .post(
            "/change",
            &[
                ("csrf", &token),
                ("account", "grace@contoso.example"),
                ("policy", &page.field("policy").expect("policy")),
                ("current_password", WRONG_CURRENT),
                ("new_password", GOOD),
                ("confirm_password", GOOD),
            ],
        )
        .await;
    assert_contains(&page, "The current password is not correct");
    assert!(!page.body.contains(WRONG_CURRENT) && !page.body.contains(GOOD));

    // Unlock, in one step.
    let page = browser
        .post(
            "/unlock",
            &[("csrf", &token), ("account", "barbara@contoso.example")],
        )
        .await;
    assert_contains(&page, "Your account was unlocked.");

    let log = std::fs::read_to_string(&events).expect("event log");
    for password in [TOO_SHORT, GOOD, WRONG_CURRENT] {
        assert!(!log.contains(password), "{password} in the event log");
    }
    web.stop().await;
}

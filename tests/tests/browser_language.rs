//! The reference reset portal in German, in headless Chromium set to German
//! (`Accept-Language: de`): every page says `lang="de"` and speaks German,
//! from the start page to a refusal and a success. Screenshots are saved
//! under target/browser-artifacts/ (`portal-de-*.png`).

use directory::embedded::EmbeddedDirectory;
use envelope::Password;
use tests::browser::Browser;
use tests::deployment::{Deployment, WebPortal};

const ADA: &str = "CN=Ada Lovelace,OU=Staff,OU=Users,DC=contoso,DC=example";
const GOOD: &str = "Browser-Passw0rt-2026";

fn assert_german(html: &str, words: &str) {
    assert!(html.contains("lang=\"de\""), "not German: {html}");
    assert!(html.contains(words), "{words:?} not on the page: {html}");
    for english in [
        "Reset a forgotten password",
        "Your new password needs",
        "Back to the start page",
    ] {
        assert!(
            !html.contains(english),
            "English {english:?} on the page: {html}"
        );
    }
    assert!(!html.contains("DC="), "a DN on the page: {html}");
}

#[tokio::test]
async fn the_portal_speaks_german_to_a_german_browser() {
    let d = Deployment::start(&["contoso"], "").await;
    let forest_file = d.forest_file("contoso");
    let web = WebPortal::start(d.portal).await;
    let base = web.base();
    let browser = Browser::start_in(Some("de")).await;
    let forest = || EmbeddedDirectory::open("contoso", &forest_file).expect("forest");

    browser.goto(&format!("{base}/")).await;
    assert_german(&browser.html().await, "Was möchten Sie tun?");
    browser.check_page("portal-de-home").await;

    // Reset, step 1 and step 2.
    browser.goto(&format!("{base}/reset")).await;
    assert_german(&browser.html().await, "Vergessenes Passwort zurücksetzen");
    browser.check_page("portal-de-reset-account").await;
    browser.fill("account", "ada@contoso.example").await;
    let rules = browser.submit("policy").await;
    assert!(rules.contains("Mindestens 8 Zeichen"), "{rules}");
    let html = browser.html().await;
    assert_german(&html, "Ihr neues Passwort braucht");
    assert!(html.contains("aria-describedby=\"policy-rules\""), "{html}");
    browser.check_page("portal-de-reset-policy").await;

    // A weak password: the rule, in German.
    browser.fill("new-password", "Kurz-1").await;
    browser.fill("confirm-password", "Kurz-1").await;
    let refusal = browser.submit("result").await;
    assert!(refusal.contains("mindestens 8 Zeichen"), "{refusal}");
    assert!(refusal.contains("Supportcode"), "{refusal}");
    assert_german(&browser.html().await, "Supportcode für Ihren Helpdesk");
    browser.check_page("portal-de-reset-refused").await;

    // A good one.
    browser.fill("new-password", GOOD).await;
    browser.fill("confirm-password", GOOD).await;
    let done = browser.submit("result").await;
    assert!(done.contains("Ihr Passwort wurde geändert"), "{done}");
    assert!(forest().check_password(ADA, &Password::new(GOOD)));
    assert_german(&browser.html().await, "Neu beginnen");
    browser.check_page("portal-de-reset-done").await;

    // An unknown account, to an unverified visitor: the one sentence.
    browser.goto(&format!("{base}/unlock")).await;
    assert_german(&browser.html().await, "Konto entsperren");
    browser.fill("account", "nobody@contoso.example").await;
    let unknown = browser.submit("result").await;
    assert!(
        unknown.contains("kann hier nicht entsperrt werden"),
        "{unknown}"
    );
    browser.check_page("portal-de-unlock-refused").await;

    browser.goto(&format!("{base}/no-such-page")).await;
    assert_german(&browser.html().await, "Seite nicht gefunden");
    browser.check_page("portal-de-not-found").await;

    browser.close().await;
    web.stop().await;
}

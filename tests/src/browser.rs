//! Headless Chromium for page tests, driven over WebDriver (ChromeDriver)
//! with fantoccini. `scripts/browser/install` puts Debian's chromium and
//! chromium-driver in place; tests fail, not skip, when they are missing.
//!
//! Every page a test visits can be checked with [`Browser::check_page`]:
//! axe-core's WCAG A/AA rules ([`axe`]), no distinguished name on it
//! ([`dn`]), and a screenshot to look at.

pub mod axe;
pub mod dn;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::wd::Capabilities;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// WebDriver key codes.
pub mod keys {
    pub const TAB: &str = "\u{E004}";
    pub const ENTER: &str = "\u{E007}";
}

/// A ChromeDriver process and one headless Chromium session.
pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

/// Where screenshots go: test artefacts, not committed.
pub fn artifacts_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test-binary> -> target/browser-artifacts
    let dir = exe
        .ancestors()
        .nth(3)
        .expect("target directory")
        .join("browser-artifacts");
    std::fs::create_dir_all(&dir).expect("artefacts directory");
    dir
}

impl Browser {
    pub async fn start() -> Browser {
        Browser::start_in(None).await
    }

    /// With `language` as the browser's language (`intl.accept_languages`,
    /// so every request carries that `Accept-Language`, such as `de`).
    pub async fn start_in(language: Option<&str>) -> Browser {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                std::path::Path::new(bin).exists(),
                "{bin} is missing: run scripts/browser/install (as root)"
            );
        }
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().expect("addr").port()
        };
        let mut driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let mut lines = BufReader::new(driver.stdout.take().expect("stdout")).lines();
        let ready = async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("started successfully") {
                    return true;
                }
            }
            false
        };
        assert!(
            tokio::time::timeout(Duration::from_secs(30), ready)
                .await
                .unwrap_or(false),
            "chromedriver did not start"
        );
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let profile = tempfile::tempdir().expect("profile dir");
        let mut caps = Capabilities::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": CHROMIUM,
                // The machine's network is closed: without the background
                // networking flags Chromium keeps trying to reach Google.
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--window-size=1100,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        if let Some(language) = language {
            caps["goog:chromeOptions"]["prefs"] =
                serde_json::json!({ "intl.accept_languages": language });
        }
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("WebDriver session with headless Chromium");
        Browser {
            client,
            driver,
            _profile: profile,
        }
    }

    /// Tabs to the field with this id, as a keyboard user, and types.
    pub async fn tab_to_and_type(&self, field: &str, text: &str) {
        let mut tabs = 0;
        while self.focused_id().await != field {
            self.press(keys::TAB).await;
            tabs += 1;
            assert!(tabs < 20, "#{field} is not reachable with Tab");
        }
        self.press(text).await;
    }

    /// Starts at the top of the page (focus on the body), as a keyboard user.
    pub async fn from_the_top(&self) {
        self.client
            .execute(
                "document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0);",
                vec![],
            )
            .await
            .expect("reset focus");
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("navigate");
    }

    /// Types into the field with this id.
    pub async fn fill(&self, id: &str, text: &str) {
        self.client
            .find(Locator::Id(id))
            .await
            .unwrap_or_else(|e| panic!("#{id}: {e}"))
            .send_keys(text)
            .await
            .expect("type");
    }

    /// Clicks `#submit`, waits for the next page (the button goes stale),
    /// and returns the text of its element `wait_for` (such as `result`).
    pub async fn submit(&self, wait_for: &str) -> String {
        let button = self
            .client
            .find(Locator::Id("submit"))
            .await
            .expect("#submit");
        button.clone().click().await.expect("click");
        let left = async {
            while button.is_displayed().await.is_ok() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(20), left)
            .await
            .expect("the next page within 20 s");
        self.client
            .wait()
            .for_element(Locator::Id(wait_for))
            .await
            .unwrap_or_else(|e| panic!("#{wait_for}: {e}"))
            .text()
            .await
            .expect("text")
    }

    /// Text of the element with this CSS selector.
    pub async fn text(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
            .text()
            .await
            .expect("element text")
    }

    /// The page's HTML as the browser holds it now.
    pub async fn html(&self) -> String {
        self.client.source().await.expect("page source")
    }

    /// Presses keys on whatever has the focus: keyboard-only use.
    pub async fn press(&self, keys: &str) {
        self.client
            .active_element()
            .await
            .expect("focused element")
            .send_keys(keys)
            .await
            .expect("send keys");
    }

    /// The id of the focused element.
    pub async fn focused_id(&self) -> String {
        self.client
            .active_element()
            .await
            .expect("focused element")
            .attr("id")
            .await
            .expect("id attribute")
            .unwrap_or_default()
    }

    /// Every input, select and textarea has a label: `<label for=id>`,
    /// an enclosing label, or aria-label. Returns the unlabelled ones.
    pub async fn unlabelled_fields(&self) -> Vec<String> {
        let script = r#"
            return Array.from(document.querySelectorAll('input:not([type=hidden]), select, textarea'))
              .filter(el => !(el.labels && el.labels.length > 0) && !el.getAttribute('aria-label'))
              .map(el => el.outerHTML);"#;
        let value = self
            .client
            .execute(script, vec![])
            .await
            .expect("run the label check");
        serde_json::from_value(value).expect("list of strings")
    }

    /// Saves a PNG of the page under [`artifacts_dir`]; returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let path = artifacts_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// The rules axe-core finds broken on the current page.
    pub async fn axe_violations(&self) -> Vec<axe::Violation> {
        axe::violations(&self.client).await
    }

    /// Prints every axe violation on the page; returns the serious and
    /// critical ones, which an accessible page must not have.
    pub async fn accessibility_problems(&self, page_name: &str) -> Vec<axe::Violation> {
        let (blocking, minor): (Vec<_>, Vec<_>) = self
            .axe_violations()
            .await
            .into_iter()
            .partition(axe::Violation::blocks);
        for v in &minor {
            println!("{page_name}: axe (not failing the test): {v}");
        }
        blocking
    }

    /// Fails listing every serious or critical axe violation on the page.
    pub async fn assert_accessible(&self, page_name: &str) {
        let blocking = self.accessibility_problems(page_name).await;
        assert!(
            blocking.is_empty(),
            "{page_name}: {} serious or critical accessibility violations:\n{}",
            blocking.len(),
            blocking.iter().map(ToString::to_string).collect::<String>()
        );
    }

    /// A distinguished name in the page's visible text or HTML, if any.
    pub async fn dn_on_page(&self) -> Option<String> {
        let text = self
            .client
            .find(Locator::Css("body"))
            .await
            .expect("body")
            .text()
            .await
            .expect("body text");
        dn::find(&text).or(dn::find(&self.html().await))
    }

    /// Fails if the page shows a distinguished name.
    pub async fn assert_no_dn(&self, page_name: &str) {
        if let Some(found) = self.dn_on_page().await {
            panic!("{page_name}: a distinguished name is on the page: {found:?}");
        }
    }

    /// What is wrong with the current page, for a test that visits many
    /// and reports them all at once: a DN on it, and the serious and
    /// critical axe violations. Takes the screenshot `page_name` first, so
    /// a failing page can be looked at.
    pub async fn page_problems(&self, page_name: &str) -> Vec<String> {
        let shot = self.screenshot(page_name).await;
        println!("{page_name}: {}", shot.display());
        let mut problems: Vec<String> = self
            .dn_on_page()
            .await
            .map(|dn| format!("{page_name}: a distinguished name is on the page: {dn:?}"))
            .into_iter()
            .collect();
        problems.extend(
            self.accessibility_problems(page_name)
                .await
                .iter()
                .map(|v| format!("{page_name}: {v}")),
        );
        problems
    }

    /// Screenshot, DN scan and axe on the current page; fails on the
    /// first page with a problem.
    pub async fn check_page(&self, page_name: &str) {
        let problems = self.page_problems(page_name).await;
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    /// Resizes the browser's window: 375 wide is a phone, 1280 a laptop.
    pub async fn set_width(&self, width: u32, height: u32) {
        self.client
            .set_window_size(width, height)
            .await
            .expect("resize the window");
    }

    pub async fn close(mut self) {
        let _ = self.client.close().await;
        let _ = self.driver.kill().await;
    }
}

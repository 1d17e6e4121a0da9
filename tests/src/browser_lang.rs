//! Headless Chromium that asks for pages in a given language
//! (`intl.accept_languages`, so every request carries that
//! `Accept-Language`): the portal's translated pages, as a user sees them.
//! A sibling of [`crate::browser::Browser`], whose fields are its own.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::wd::Capabilities;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::browser::{CHROMEDRIVER, CHROMIUM, artifacts_dir};

/// A ChromeDriver process and one headless Chromium session in `language`.
pub struct LangBrowser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl LangBrowser {
    /// `language`: an Accept-Language value, such as `de`.
    pub async fn start(language: &str) -> LangBrowser {
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
                // As in `Browser::start`: the machine's network is closed.
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--window-size=1100,900",
                    format!("--lang={language}"),
                    format!("--user-data-dir={}", profile.path().display()),
                ],
                // Headless Chromium takes its Accept-Language from here.
                "prefs": { "intl.accept_languages": language },
            }),
        );
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("WebDriver session with headless Chromium");
        LangBrowser {
            client,
            driver,
            _profile: profile,
        }
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("navigate");
    }

    pub async fn html(&self) -> String {
        self.client.source().await.expect("page source")
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

    /// Saves a PNG of the page under [`artifacts_dir`]; returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let path = artifacts_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    pub async fn close(mut self) {
        let _ = self.client.close().await;
        let _ = self.driver.kill().await;
    }
}

//! A real OpenID provider for the portal's sign-in tests
//! (`tests/web/provider.mjs`, oidc-provider under Node.js), and portals
//! configured to use it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use portal::oidc::{Oidc, OidcConfig};
use relay_client::sealed::SealedPortal;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

use crate::deployment::WebPortal;

pub const CLIENT_ID: &str = "reset-portal";
const READY_TIMEOUT: Duration = Duration::from_secs(30);

fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("web")
}

/// The provider process; killed when dropped.
pub struct Provider {
    pub issuer: String,
    _child: Child,
}

impl Provider {
    /// Starts the provider for a public client whose callbacks are
    /// `redirect_uris`, and waits for its `ready <issuer>` line.
    pub async fn start(redirect_uris: &[String]) -> Provider {
        let web = web_dir();
        assert!(
            web.join("node_modules/oidc-provider").is_dir(),
            "{} has no node_modules/oidc-provider: run scripts/web/install once",
            web.display()
        );
        let mut child = Command::new("node")
            .arg(web.join("provider.mjs"))
            .env("CLIENT_ID", CLIENT_ID)
            .env("REDIRECT_URIS", redirect_uris.join(","))
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("cannot run node (scripts/web/install installs it)");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let issuer = tokio::time::timeout(READY_TIMEOUT, async {
            while let Some(line) = lines.next_line().await.expect("provider stdout") {
                if let Some(issuer) = line.strip_prefix("ready ") {
                    return issuer.trim().to_owned();
                }
            }
            panic!("the provider exited before it was ready (see its stderr above)")
        })
        .await
        .expect("the provider did not print its ready line within 30 s");
        // Keep reading, so that the provider never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Provider {
            issuer,
            _child: child,
        }
    }
}

/// A listener bound now, so that its callback URL is known before the
/// provider (which must list it) starts.
pub struct Bound {
    pub listener: TcpListener,
    pub base: String,
}

impl Bound {
    pub async fn new() -> Bound {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        Bound { listener, base }
    }

    pub fn callback(&self) -> String {
        format!("{}{}", self.base, portal::oidc::CALLBACK_PATH)
    }
}

/// A session key file with `key` (32 bytes), in `dir`.
pub fn session_key_file(dir: &Path, name: &str, key: [u8; 32]) -> PathBuf {
    let path = dir.join(name);
    let text = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, key);
    std::fs::write(&path, text).expect("write session key");
    path
}

/// The `[oidc]` table for a portal at `bound`, signing in at `issuer`.
pub fn config(issuer: &str, bound: &Bound, key_file: &Path, extra: &str) -> OidcConfig {
    let text = format!(
        "issuer = \"{issuer}\"\nclient_id = \"{CLIENT_ID}\"\nredirect_url = \"{}\"\n\
         session_key_file = \"{}\"\n{extra}",
        bound.callback(),
        key_file.display()
    );
    toml::from_str(&text).expect("oidc table")
}

/// A portal with OpenID Connect sign-in, serving on `bound`, once
/// discovery succeeded.
pub async fn web_portal(sealed: SealedPortal, bound: Bound, oidc: OidcConfig) -> WebPortal {
    let oidc = Arc::new(Oidc::new(oidc).expect("oidc config"));
    oidc.discover().await.expect("discovery");
    let state = portal::AppState::new(
        sealed,
        portal::Settings {
            title: "Contoso password reset".into(),
            request_timeout: Duration::from_secs(20),
        },
    )
    .with_oidc(oidc);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server = portal::serve_on(bound.listener, state, shutdown.clone()).expect("serve");
    WebPortal { server, shutdown }
}

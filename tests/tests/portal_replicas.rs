//! Two reset-portal processes behind one balancer: with the same
//! `csrf_key_file` a form served by one is accepted by the other; with
//! different keys it is refused as expired. Both answer `/healthz` and
//! `/readyz`. No broker runs: what follows the CSRF check fails to reach
//! it, which is fine here.

use std::path::{Path, PathBuf};

use tests::bin;
use tests::http_request::{Response, form_body, send};
use tokio::io::AsyncBufReadExt as _;

/// The refusal page's heading (portal/src/csrf.rs).
const EXPIRED: &str = "This form has expired";

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

fn csrf_key(dir: &Path, name: &str, byte: u8) -> PathBuf {
    let key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [byte; 32]);
    write(dir, name, &format!("{key}\n"))
}

/// A portal configuration in `dir` whose key files exist, with `csrf_key`.
fn portal_config(dir: &Path, csrf_key: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).expect("dir");
    let send = tests::write_key(dir, "send.key", &sas::Key::generate().expect("key"));
    let pair = envelope::KeyPair::generate(&mut envelope::os_rng());
    let encoded = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        pair.private_bytes().as_ref(),
    );
    let portal_key = write(dir, "portal.key", &format!("{encoded}\n"));
    write(
        dir,
        "portal.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\nbroker = \"https://127.0.0.1:1\"\ntenant = \"contoso\"\n\
             send_key_file = {send:?}\nportal_key_file = {portal_key:?}\n\
             csrf_key_file = {csrf_key:?}\n\
             trusted_agent_keys = [\"{}\"]\nidentity_check = \"none\"\n",
            pair.public.fingerprint()
        ),
    )
}

struct Replica {
    addr: String,
    _child: tokio::process::Child,
}

async fn start(dir: &Path, config: &Path) -> Replica {
    let log = dir.join("portal.log");
    let mut child = tokio::process::Command::new(bin("reset-portal"))
        .arg("--config")
        .arg(config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log"))
        .kill_on_drop(true)
        .spawn()
        .expect("spawn reset-portal");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let ready = tests::await_line(&mut child, &mut lines, "reset-portal ready", &log).await;
    let addr = ready.rsplit("http=").next().expect("address").to_owned();
    Replica {
        addr,
        _child: child,
    }
}

/// The form at `/reset` on `from`: its CSRF token and the cookie it set.
async fn form(from: &Replica) -> (String, String) {
    let page = send(&from.addr, "GET", "/reset", &[], "").await;
    assert_eq!(page.status, 200);
    let token = page.field("csrf").expect("csrf token");
    let cookie = page
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .expect("portal_csrf cookie")
        .to_owned();
    assert!(cookie.starts_with("portal_csrf="), "{cookie}");
    (token, cookie)
}

/// The account step posted to `to` with a form from elsewhere.
async fn post_account(to: &Replica, token: &str, cookie: &str) -> Response {
    let body = form_body(&[("csrf", token), ("account", "ada@contoso.example")]);
    send(
        &to.addr,
        "POST",
        "/reset/policy",
        &[
            ("Cookie", cookie),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        &body,
    )
    .await
}

#[tokio::test]
async fn replicas_with_the_same_csrf_key_accept_each_others_forms() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let shared = csrf_key(d, "csrf.key", 1);
    let other = csrf_key(d, "other.key", 2);
    let a = start(&d.join("a"), &portal_config(&d.join("a"), &shared)).await;
    let b = start(&d.join("b"), &portal_config(&d.join("b"), &shared)).await;
    let c = start(&d.join("c"), &portal_config(&d.join("c"), &other)).await;

    for replica in [&a, &b, &c] {
        for path in ["/healthz", "/readyz"] {
            let reply = send(&replica.addr, "GET", path, &[], "").await;
            assert_eq!(reply.status, 200, "{path} on {}", replica.addr);
        }
    }

    // Served by A, posted to B: past the CSRF check (then the broker is
    // unreachable, which is not the refusal).
    let (token, cookie) = form(&a).await;
    let reply = post_account(&b, &token, &cookie).await;
    assert_ne!(reply.status, 403, "{}", reply.body);
    assert!(!reply.body.contains(EXPIRED), "{}", reply.body);
    // And the other way round.
    let (token, cookie) = form(&b).await;
    let reply = post_account(&a, &token, &cookie).await;
    assert_ne!(reply.status, 403, "{}", reply.body);
    assert!(!reply.body.contains(EXPIRED), "{}", reply.body);

    // Posted to C, whose key differs: refused as expired.
    let reply = post_account(&c, &token, &cookie).await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert!(reply.body.contains(EXPIRED), "{}", reply.body);
}

//! `identity_check = "oidc"` with the provider down at start: the binary
//! serves anyway, sends tasks to `/signin`, which says sign-in is
//! unavailable (503), and logs why; `check-config` names a missing session
//! key file.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::Command;

const FINGERPRINT: &str =
    "0123 4567 89ab cdef 0123 4567 89ab cdef 0123 4567 89ab cdef 0123 4567 89ab cdef";

/// Key files as relayctl writes them, and an oidc config naming them and
/// a provider nobody listens for (port 1).
fn write_config(dir: &Path) -> std::path::PathBuf {
    let send = dir.join("send.primary.key");
    std::fs::write(&send, sas::Key::generate().unwrap().to_base64().as_str()).unwrap();
    let pair = envelope::KeyPair::generate(&mut envelope::os_rng());
    let portal = dir.join("portal.key");
    let b64 =
        |bytes: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes);
    std::fs::write(&portal, b64(pair.private_bytes().as_ref())).unwrap();
    let session = dir.join("session.key");
    std::fs::write(&session, b64(&[5u8; 32])).unwrap();
    let config = dir.join("portal.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nbroker = \"https://127.0.0.1:1\"\ntenant = \"contoso\"\n\
             send_key_file = {send:?}\nportal_key_file = {portal:?}\n\
             trusted_agent_keys = [\"{FINGERPRINT}\"]\nidentity_check = \"oidc\"\n\
             [oidc]\nissuer = \"http://127.0.0.1:1\"\nclient_id = \"reset-portal\"\n\
             redirect_url = \"http://127.0.0.1:9/signin/callback\"\nsession_key_file = {session:?}\n"
        ),
    )
    .unwrap();
    config
}

async fn get(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test]
async fn the_portal_serves_and_says_sign_in_is_unavailable_while_the_provider_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let log = dir.path().join("portal.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_reset-portal"))
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("ready in time")
        .unwrap()
        .expect("a ready line");
    let addr = ready
        .strip_prefix("reset-portal ready http=")
        .unwrap_or_else(|| panic!("unexpected first line {ready:?}"))
        .to_owned();

    let page = get(&addr, "/reset").await;
    assert!(
        page.starts_with("HTTP/1.0 303") || page.starts_with("HTTP/1.1 303"),
        "{page}"
    );
    assert!(page.contains("location: /signin?next=/reset"), "{page}");
    let page = get(&addr, "/signin?next=/reset").await;
    assert!(page.contains(" 503 "), "{page}");
    assert!(page.contains("Sign-in is unavailable"), "{page}");
    let home = get(&addr, "/").await;
    assert!(!home.contains("demo-banner"), "{home}");

    // The first discovery attempt fails at once (connection refused).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("unreachable")
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().await.unwrap();
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.contains("ERROR") && log.contains("identity provider unreachable"),
        "{log}"
    );
    assert!(!log.contains("For demos only"), "{log}");
}

#[tokio::test]
async fn check_config_names_a_missing_session_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    std::fs::remove_file(dir.path().join("session.key")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_reset-portal"))
        .arg("check-config")
        .arg("--config")
        .arg(&config)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("session key file") && stderr.contains("session.key"),
        "{stderr}"
    );
}

//! The `reset-portal` binary: configuration from files, the ready line,
//! pages served while the broker is down, graceful exit on SIGTERM, and a
//! configuration that does not say `identity_check` refused.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::Command;

const FINGERPRINT: &str =
    "0123 4567 89ab cdef 0123 4567 89ab cdef 0123 4567 89ab cdef 0123 4567 89ab cdef";

/// Key files as relayctl writes them, and a config naming them.
fn write_config(dir: &Path, identity_check: &str) -> std::path::PathBuf {
    let send = dir.join("send.primary.key");
    std::fs::write(&send, sas::Key::generate().unwrap().to_base64().as_str()).unwrap();
    let pair = envelope::KeyPair::generate(&mut envelope::os_rng());
    let portal = dir.join("portal.key");
    std::fs::write(
        &portal,
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            pair.private_bytes().as_ref(),
        ),
    )
    .unwrap();
    let config = dir.join("portal.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nbroker = \"https://127.0.0.1:1\"\ntenant = \"contoso\"\n\
             send_key_file = {send:?}\nportal_key_file = {portal:?}\n\
             trusted_agent_keys = [\"{FINGERPRINT}\"]\ntitle = \"Contoso IT\"\n{identity_check}\n"
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
async fn the_binary_serves_until_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "identity_check = \"none\"");
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
    assert!(!addr.ends_with(":0"), "{addr}");

    let page = get(&addr, "/reset").await;
    assert!(
        page.starts_with("HTTP/1.0 200") || page.starts_with("HTTP/1.1 200"),
        "{page}"
    );
    assert!(page.contains("id=\"reset-form\""));
    assert!(page.contains("Contoso IT"));

    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().unwrap().to_string())
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert!(exit.success(), "{exit}");
    // Without csrf_key_file the operator is told replicas will not agree.
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.contains("WARN") && log.contains("no csrf_key_file"),
        "{log}"
    );
    // And that identity_check = "none" is for demos only.
    assert!(log.contains("For demos only"), "{log}");
}

#[tokio::test]
async fn a_csrf_key_file_that_is_not_32_bytes_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let csrf = dir.path().join("csrf.key");
    std::fs::write(&csrf, "c2hvcnQ=\n").unwrap();
    let config = write_config(
        dir.path(),
        &format!("identity_check = \"none\"\ncsrf_key_file = {csrf:?}"),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_reset-portal"))
        .arg("--config")
        .arg(&config)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("csrf.key"), "{stderr}");
}

#[tokio::test]
async fn identity_check_must_be_spelled_out() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let out = Command::new(env!("CARGO_BIN_EXE_reset-portal"))
        .arg("--config")
        .arg(&config)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("identity_check"), "{stderr}");
}

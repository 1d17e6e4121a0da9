//! SIGHUP reloads and `check-config` (issue 20): a certificate rotated under
//! a connected agent and a portal in full flow, a broken key refused with
//! the old certificate kept, and each binary's `check-config`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use proto::pb::Operation;
use rcgen::{CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use sas::Right;
use tests::attacks::tls_client;
use tests::{BrokerBuilder, BrokerProcess, EchoAgent, bin};
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_util::sync::CancellationToken;
use writeback_agent::AgentEvent;

const LOG_WAIT: Duration = Duration::from_secs(20);

/// A CA whose key is kept, to sign the server certificates of a rotation.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params
            .distinguished_name
            .push(DnType::CommonName, "reload test CA");
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key"))
            .expect("CA certificate");
        Ca { issuer }
    }

    /// A certificate for 127.0.0.1 expiring on 1 January of `year`; its
    /// PEM certificate and key.
    fn issue(&self, year: i32) -> (String, String) {
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
        params.not_after = rcgen::date_time_ymd(year, 1, 1);
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("certificate");
        (cert.pem(), key.serialize_pem())
    }
}

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("PEM certificate")
        .to_vec()
}

/// The leaf certificate a new TLS connection to the broker is shown.
async fn served_certificate(broker: &BrokerProcess) -> Vec<u8> {
    let tcp = tokio::net::TcpStream::connect(&broker.grpc_addr)
        .await
        .expect("connect");
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let tls = tls_client(broker)
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    tls.get_ref().1.peer_certificates().expect("certificates")[0].to_vec()
}

fn hangup(pid: u32) {
    let status = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .expect("kill -HUP");
    assert!(status.success(), "kill -HUP {pid}");
}

/// Waits until `logs()` holds `needle` at least `times` times. The log is a
/// file another process writes: there is nothing to await but its growth.
async fn await_log(logs: impl Fn() -> String, needle: &str, times: usize) -> String {
    let wait = async {
        loop {
            let text = logs();
            if text.matches(needle).count() >= times {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(LOG_WAIT, wait)
        .await
        .unwrap_or_else(|_| panic!("no {needle:?} (x{times}) in the log:\n{}", logs()))
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// Waits until the portal's flow has had `n` answers.
async fn answered_at_least(count: &mut tokio::sync::watch::Receiver<u32>, n: u32) {
    tokio::time::timeout(LOG_WAIT, count.wait_for(|answered| *answered >= n))
        .await
        .expect("the flow goes on")
        .expect("the flow stopped");
}

fn alive(pid: u32) -> bool {
    Command::new("kill")
        .args(["-0", &pid.to_string()])
        .status()
        .expect("kill -0")
        .success()
}

#[tokio::test]
async fn sighup_rotates_the_certificate_without_dropping_a_session_or_a_call() {
    let ca = Ca::new();
    let pki_dir = tempfile::tempdir().expect("temp dir");
    let files = broker::tls::DevPki {
        ca_cert: pki_dir.path().join("ca.pem"),
        server_cert: pki_dir.path().join("server.pem"),
        server_key: pki_dir.path().join("server.key"),
    };
    let (old_cert, old_key) = ca.issue(2035);
    std::fs::write(&files.ca_cert, ca.issuer.pem()).expect("CA file");
    std::fs::write(&files.server_cert, &old_cert).expect("cert");
    std::fs::write(&files.server_key, &old_key).expect("key");

    let broker = BrokerBuilder::new().pki(files.clone()).start().await;
    let tenant = broker.create_tenant("contoso").await;
    let mut agent = EchoAgent::start(&broker, &tenant, "dc01").await;
    assert_eq!(served_certificate(&broker).await, der(&old_cert));
    let metrics = broker.metrics().await;
    let expiry = "relay_tls_certificate_expiry_timestamp_seconds ";
    assert_eq!(metric(&metrics, expiry), Some(2051222400.0), "{metrics}");

    // A portal submitting without pause across the reload.
    let portal = broker.portal(&tenant, Right::Send).await;
    let portal_of_tenant = portal.clone();
    let stop = CancellationToken::new();
    let connected_since = || async {
        let config = portal_of_tenant
            .configuration()
            .await
            .expect("configuration");
        assert_eq!(config.agents_online.len(), 1);
        config.agents_online[0].connected_since_unix_ms
    };
    let since = connected_since().await;
    let (answered, mut count) = tokio::sync::watch::channel(0u32);
    let flow = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut n = 0;
            while !stop.is_cancelled() {
                n += 1;
                let reply = portal
                    .submit(
                        &format!("r-{n}"),
                        Operation::ResetPassword,
                        "dc01",
                        b"x".to_vec(),
                        None,
                    )
                    .await
                    .unwrap_or_else(|e| panic!("request {n} failed during the reload: {e}"));
                assert_eq!(reply.envelope, b"dc01|x");
                answered.send_replace(n);
            }
        }
    });
    answered_at_least(&mut count, 1).await;

    let (new_cert, new_key) = ca.issue(2036);
    std::fs::write(&files.server_key, &new_key).expect("new key");
    std::fs::write(&files.server_cert, &new_cert).expect("new cert");
    hangup(broker.pid());
    let log = await_log(|| broker.logs(), "configuration reloaded", 1).await;
    assert!(log.contains("changed: certificate"), "{log}");
    assert_eq!(served_certificate(&broker).await, der(&new_cert));

    // The flow goes on over its old connection, and a new client too.
    let at_reload = *count.borrow();
    let fresh = broker.portal(&tenant, Right::Send).await;
    let reply = fresh
        .submit(
            "fresh",
            Operation::ResetPassword,
            "dc01",
            b"y".to_vec(),
            None,
        )
        .await
        .expect("a call over a connection made after the reload");
    assert_eq!(reply.envelope, b"dc01|y");
    answered_at_least(&mut count, at_reload + 2).await;
    stop.cancel();
    flow.await.expect("no request failed");
    assert_eq!(connected_since().await, since, "the agent reconnected");
    let events = agent.events();
    assert!(
        !events.iter().any(|e| matches!(
            e,
            AgentEvent::Disconnected { .. } | AgentEvent::Connected { .. }
        )),
        "the agent's session was cut: {events:?}"
    );
    let metrics = broker.metrics().await;
    assert_eq!(metric(&metrics, expiry), Some(2082758400.0), "{metrics}");

    // A broken key: refused, named, and the new certificate stays.
    std::fs::write(&files.server_key, "not a key\n").expect("broken key");
    hangup(broker.pid());
    let log = await_log(|| broker.logs(), "reload failed", 1).await;
    let line = log
        .lines()
        .find(|l| l.contains("reload failed"))
        .expect("line");
    assert!(
        line.contains("server.key") && line.contains("holds no PEM private key"),
        "{line}"
    );
    assert!(alive(broker.pid()));
    assert_eq!(served_certificate(&broker).await, der(&new_cert));
    let metrics = broker.metrics().await;
    let count = |result| {
        metric(
            &metrics,
            &format!("relay_config_reloads_total{{result=\"{result}\"}} "),
        )
    };
    assert_eq!((count("ok"), count("failed")), (Some(1.0), Some(1.0)));
    assert_eq!(metric(&metrics, expiry), Some(2082758400.0));
    fresh
        .submit(
            "after",
            Operation::ResetPassword,
            "dc01",
            b"z".to_vec(),
            None,
        )
        .await
        .expect("still serving");
}

#[tokio::test]
async fn sighup_with_an_unchanged_file_keeps_running_and_counts_a_reload() {
    let broker = BrokerBuilder::new().start().await;
    hangup(broker.pid());
    let log = await_log(|| broker.logs(), "configuration reloaded", 1).await;
    assert!(log.contains("changed: nothing"), "{log}");
    assert!(alive(broker.pid()));
    let metrics = broker.metrics().await;
    assert_eq!(
        metric(&metrics, "relay_config_reloads_total{result=\"ok\"} "),
        Some(1.0),
        "{metrics}"
    );

    // A live setting and one that needs a restart, then a file that does
    // not parse.
    let config = broker.dir().join("broker.toml");
    let text = std::fs::read_to_string(&config).expect("config");
    let changed = text.replace(
        "listen = \"127.0.0.1:0\"\noperator",
        "listen = \"127.0.0.1:1\"\noperator",
    ) + "max_deadline = \"2m\"\n";
    std::fs::write(&config, changed).expect("write config");
    hangup(broker.pid());
    let log = await_log(|| broker.logs(), "configuration reloaded", 2).await;
    assert!(
        log.contains("changed in the file but needs a restart: listen"),
        "{log}"
    );
    assert!(log.contains("changed: max_deadline"), "{log}");

    std::fs::write(&config, "max_deadline = [").expect("write config");
    hangup(broker.pid());
    let log = await_log(|| broker.logs(), "reload failed", 1).await;
    assert!(log.contains("invalid config file"), "{log}");
    assert!(alive(broker.pid()));
}

/// Runs `binary check-config --config path`: exit success, stdout, stderr.
fn check_config(binary: &str, path: &Path) -> (bool, String, String) {
    let out = Command::new(bin(binary))
        .arg("check-config")
        .arg("--config")
        .arg(path)
        .output()
        .expect("run check-config");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

#[test]
fn broker_check_config_accepts_a_valid_file_and_names_a_bad_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let a = broker::tls::generate_dev_pki(&d.join("a"), &["localhost".into()]).expect("pki");
    let b = broker::tls::generate_dev_pki(&d.join("b"), &["localhost".into()]).expect("pki");
    let data = d.join("data");
    let good = write(
        d,
        "good.toml",
        &format!(
            "listen = \"127.0.0.1:1\"\ndata_dir = {data:?}\ntls_cert = {:?}\ntls_key = {:?}\n",
            a.server_cert, a.server_key
        ),
    );
    let (ok, out, err) = check_config("relay-broker", &good);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), format!("configuration OK: {}", good.display()));
    assert!(
        !data.exists(),
        "check-config must not create the data directory"
    );

    let mismatched = write(
        d,
        "mismatched.toml",
        &format!(
            "data_dir = {data:?}\ntls_cert = {:?}\ntls_key = {:?}\n",
            a.server_cert, b.server_key
        ),
    );
    let (ok, _, err) = check_config("relay-broker", &mismatched);
    assert!(!ok);
    assert!(err.contains("does not match the certificate"), "{err}");

    let invalid = write(
        d,
        "invalid.toml",
        &format!(
            "data_dir = {data:?}\ntls_cert = {:?}\ntls_key = {:?}\ndefault_deadline = \"10m\"\n",
            a.server_cert, a.server_key
        ),
    );
    let (ok, _, err) = check_config("relay-broker", &invalid);
    assert!(!ok);
    assert!(err.contains("default_deadline"), "{err}");
}

#[tokio::test]
async fn sighup_keeps_the_agent_binary_in_its_session() {
    let broker = BrokerBuilder::new().start().await;
    let tenant = broker.create_tenant("contoso").await;
    let mut agent = broker.agent_process(&tenant, "dc01").start().await;
    let portal = broker.portal(&tenant, Right::Send).await;

    hangup(agent.pid());
    let log = await_log(|| agent.logs(), "configuration reloaded", 1).await;
    assert!(
        log.contains("changed (from the next connection): nothing"),
        "{log}"
    );

    // A setting that needs a restart, then a file that does not parse.
    let config = agent.config_path();
    let text = std::fs::read_to_string(&config).expect("agent config");
    std::fs::write(&config, format!("drain_grace = \"5s\"\n{text}")).expect("write");
    hangup(agent.pid());
    let log = await_log(|| agent.logs(), "configuration reloaded", 2).await;
    assert!(log.contains("needs a restart: drain_grace"), "{log}");
    std::fs::write(&config, "broker = [").expect("write");
    hangup(agent.pid());
    let log = await_log(|| agent.logs(), "reload failed", 1).await;
    assert!(log.contains("invalid config file"), "{log}");

    assert!(alive(agent.pid()));
    let pong = portal.ping(None).await.expect("the agent still answers");
    assert_eq!(pong.agent_id, "dc01");
    let printed = agent.printed();
    assert!(
        !printed.iter().any(|l| l.starts_with("disconnected")),
        "the session was cut: {printed:?}"
    );
}

/// A portal configuration whose files exist, for the broker at `broker`.
fn portal_files(dir: &Path, broker: &str, ca: &Path, title: &str) -> PathBuf {
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
            "listen = \"127.0.0.1:0\"\nbroker = {broker:?}\nca_file = {ca:?}\ntenant = \"contoso\"\n\
             send_key_file = {send:?}\nportal_key_file = {portal_key:?}\n\
             trusted_agent_keys = [\"{}\"]\nidentity_check = \"none\"\ntitle = {title:?}\n",
            pair.public.fingerprint()
        ),
    )
}

#[tokio::test]
async fn sighup_reloads_the_portal_binary_which_keeps_serving() {
    use tokio::io::AsyncBufReadExt as _;
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let pki = broker::tls::generate_dev_pki(&d.join("pki"), &["127.0.0.1".into()]).expect("pki");
    // No broker: the portal connects on first use, and pages need none.
    let config = portal_files(d, "https://127.0.0.1:1", &pki.ca_cert, "Reset A");
    let log = d.join("portal.log");
    let mut child = tokio::process::Command::new(bin("reset-portal"))
        .arg("--config")
        .arg(&config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log"))
        .kill_on_drop(true)
        .spawn()
        .expect("spawn reset-portal");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let ready = tests::await_line(&mut child, &mut lines, "reset-portal ready", &log).await;
    let addr = ready.rsplit("http=").next().expect("address").to_owned();
    let pid = child.id().expect("pid");
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    let home = |addr: String| async move { tests::http::get(&addr, "/").await };

    let (status, page) = home(addr.clone()).await;
    assert_eq!(status, 200);
    assert!(page.contains("Reset A"), "{page}");

    let text = std::fs::read_to_string(&config).expect("config");
    let changed = text
        .replace("Reset A", "Reset B")
        .replace("127.0.0.1:0", "127.0.0.1:1");
    std::fs::write(&config, changed).expect("write");
    hangup(pid);
    let text = await_log(logs, "configuration reloaded", 1).await;
    assert!(text.contains("changed: title"), "{text}");
    assert!(text.contains("needs a restart: listen"), "{text}");
    let (status, page) = home(addr.clone()).await;
    assert_eq!(status, 200);
    assert!(page.contains("Reset B"), "{page}");

    std::fs::write(d.join("portal.key"), "not base64!\n").expect("write");
    hangup(pid);
    let text = await_log(logs, "reload failed", 1).await;
    assert!(text.contains("portal.key"), "{text}");
    assert!(alive(pid));
    let (status, page) = home(addr).await;
    assert_eq!(status, 200);
    assert!(page.contains("Reset B"), "{page}");
}

#[test]
fn agent_and_portal_check_config_accept_valid_files_and_name_bad_ones() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let pki = broker::tls::generate_dev_pki(&d.join("pki"), &["127.0.0.1".into()]).expect("pki");

    let key = tests::write_key(d, "listen.key", &sas::Key::generate().expect("key"));
    let agent = d.join("agent.toml");
    tests::agent_toml::AgentToml::new("https://127.0.0.1:1", &pki.ca_cert, "contoso", "dc01", &key)
        .write(&agent);
    let (ok, out, err) = check_config("writeback-agent", &agent);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), format!("configuration OK: {}", agent.display()));
    std::fs::write(&key, "not a key").expect("write");
    let (ok, _, err) = check_config("writeback-agent", &agent);
    assert!(!ok);
    assert!(
        err.contains("listen_key_file") && err.contains("listen.key"),
        "{err}"
    );

    let portal = portal_files(d, "https://127.0.0.1:1", &pki.ca_cert, "Reset");
    let (ok, out, err) = check_config("reset-portal", &portal);
    assert!(ok, "{err}");
    assert_eq!(
        out.trim(),
        format!("configuration OK: {}", portal.display())
    );
    std::fs::write(&pki.ca_cert, "junk").expect("write");
    let (ok, _, err) = check_config("reset-portal", &portal);
    assert!(!ok);
    assert!(
        err.contains("ca.pem") && err.contains("no PEM certificate"),
        "{err}"
    );
}

//! Issue 23, point 1: the agent behind a real forward proxy, configured the
//! standard way. A lab of network namespaces ([`tests::netns`]) holds the
//! broker, tinyproxy ([`tests::tinyproxy`], with Basic credentials) and the
//! agent; the agent's namespace is cut from the broker and from the test's
//! own, so the proxy is the only thing it reaches. With `HTTPS_PROXY` set
//! (no `[proxy]` table) the agent onboards, serves a sealed reset and
//! passes `doctor`, which names the proxy path. A `[proxy]` table wins over
//! the variable (a wrong password in it: tinyproxy's 401, naming the
//! user); `NO_PROXY` naming the broker sends doctor direct, where the
//! broker is unreachable; with tinyproxy gone, doctor fails at the proxy
//! step and names the proxy.
//!
//! Needs root (network namespaces) and tinyproxy (scripts/proxy/install).

use std::path::{Path, PathBuf};
use std::process::Output;

use envelope::body::outcome;
use envelope::{Password, RequestBody};
use proto::pb::Operation;
use relay_client::sealed::SealedPortal;
use sas::{KeySlot, Right};
use tests::agent_toml::AgentToml;
use tests::deployment::{onboard_with, upn};
use tests::nats::Place;
use tests::netns::{HOST, NetLab};
use tests::sealed::SETUP_PASSWORD;
use tests::tinyproxy::Tinyproxy;
use tests::{BrokerBuilder, bin, write_key};

const PROXY_USER: &str = "svc-writeback";
const PROXY_PASSWORD: &str = "Tiny-Proxy-Pass-23";
const HEDY: &str = "CN=Hedy Lamarr,OU=People,DC=fabrikam,DC=example";
const NEW_PASSWORD: &str = "Through-The-Proxy-2026!";
/// Every variable that could pick another path, cleared so that only what
/// the test sets applies.
const PROXY_VARS: [&str; 8] = [
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
    "HTTP_PROXY",
    "http_proxy",
];

/// `writeback-agent` in the agent's namespace with `env` as its only proxy
/// settings.
fn agent_command(lab: &NetLab, program: &Path, env: &[(&str, &str)]) -> std::process::Command {
    let mut command = lab.command("agent", program);
    for var in PROXY_VARS {
        command.env_remove(var);
    }
    command.envs(env.iter().copied());
    command
}

fn doctor(lab: &NetLab, config: &Path, env: &[(&str, &str)]) -> (Output, String) {
    let out = agent_command(lab, &bin("writeback-agent"), env)
        .arg("--config")
        .arg(config)
        .arg("doctor")
        .output()
        .expect("run doctor");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_reaches_the_broker_only_through_tinyproxy_from_https_proxy() {
    let lab = NetLab::new(&["broker", "proxy", "agent"]);
    lab.cut("agent", "broker");
    lab.cut("agent", HOST);
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();

    let broker_ip = lab.ip("broker");
    let pki =
        broker::tls::generate_dev_pki(&d.join("pki"), &[broker_ip.to_string()]).expect("dev pki");
    let broker = BrokerBuilder::new()
        .pki(pki)
        .place(Place {
            netns: lab.namespace("broker"),
            ip: broker_ip,
        })
        .start()
        .await;
    let tenant = broker.create_tenant("contoso").await;
    let mut proxy = Tinyproxy::start(&lab, "proxy", d, PROXY_USER, PROXY_PASSWORD).await;
    let https_proxy = format!("http://{PROXY_USER}:{PROXY_PASSWORD}@{}", proxy.addr);
    let env = [("HTTPS_PROXY", https_proxy.as_str())];

    // The agent: no [proxy] table, fabrikam's sample forest.
    let forest = d.join("forests/fabrikam/fabrikam.json");
    std::fs::create_dir_all(forest.parent().expect("dir")).expect("forest dir");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/forests/fabrikam.json"),
        &forest,
    )
    .expect("copy the sample forest");
    let listen = write_key(
        d,
        "listen.key",
        &tenant.key(Right::Listen, KeySlot::Primary),
    );
    std::fs::write(d.join("setup-password"), SETUP_PASSWORD).expect("setup password");
    let config: PathBuf = d.join("agent.toml");
    AgentToml::new(&broker.url(), &broker.ca_file, "contoso", "dc01", &listen)
        .path("key_file", &d.join("agent.keys"))
        .path("setup_password_file", &d.join("setup-password"))
        .path("state_dir", &d.join("state"))
        .section(format!(
            "[[forests]]\nname = \"fabrikam\"\nkind = \"embedded\"\npath = {forest:?}\n"
        ))
        .write(&config);

    // init and the agent, both through the proxy.
    let onboarded = onboard_with(&config, "contoso", d, |program| {
        tokio::process::Command::from(agent_command(&lab, &program, &env))
    })
    .await;
    let portal = SealedPortal::new(
        broker.portal(&tenant, Right::Send).await,
        onboarded.portal_key.clone(),
        vec![onboarded.fingerprint],
    );
    let reply = portal
        .submit(
            "through-the-proxy",
            Operation::ResetPassword,
            &RequestBody::reset(upn("hedy@fabrikam.example"), Password::new(NEW_PASSWORD)),
            None,
        )
        .await
        .expect("a sealed reset through the proxy")
        .reply;
    assert_eq!(reply.outcome, outcome::SUCCESS, "{reply:?}");
    assert!(
        directory::embedded::EmbeddedDirectory::open("fabrikam", &forest)
            .expect("open forest")
            .check_password(HEDY, &Password::new(NEW_PASSWORD)),
        "the directory holds the new password"
    );
    // tinyproxy carried the tunnels (init's, the session's) to the broker.
    let log = proxy.log();
    let grpc_port = broker.grpc_addr.rsplit(':').next().expect("port");
    assert!(
        log.lines()
            .any(|l| l.contains("CONNECT") && l.contains(&format!("{broker_ip}:{grpc_port}"))),
        "tinyproxy's log shows no tunnel to {}:\n{log}",
        broker.grpc_addr
    );

    // doctor takes the same path and says which.
    let (out, text) = doctor(&lab, &config, &env);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let path_line = format!(
        "[ ok ] broker path: through proxy {} (from HTTPS_PROXY)",
        proxy.url()
    );
    assert!(text.contains(&path_line), "{text}");
    for step in ["proxy DNS", "proxy TCP", "proxy CONNECT"] {
        assert!(text.contains(&format!("[ ok ] {step}: ")), "{step}: {text}");
    }
    assert!(
        text.contains(" 200 Connection established"),
        "the proxy's answer: {text}"
    );
    assert!(!text.contains(PROXY_PASSWORD), "{text}");

    // The [proxy] table wins over the environment: with a wrong password
    // in its file, tinyproxy's refusal (a 401, not the standard 407) is
    // reported naming the user, not the password, and the table as the
    // source.
    let wrong = d.join("wrong.password");
    std::fs::write(&wrong, "not-the-password\n").expect("password file");
    let with_table = d.join("agent-with-table.toml");
    let table = format!(
        "\n[proxy]\nurl = \"{}\"\nusername = \"{PROXY_USER}\"\npassword_file = {wrong:?}\n",
        proxy.url()
    );
    std::fs::write(
        &with_table,
        std::fs::read_to_string(&config).expect("config") + &table,
    )
    .expect("config with [proxy]");
    let (out, text) = doctor(&lab, &with_table, &env);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "[ ok ] broker path: through proxy {} (from [proxy])",
            proxy.url()
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "[FAIL] proxy CONNECT: the proxy at {} (from [proxy]) refused our credentials for user \"{PROXY_USER}\" (it answered \"HTTP/1.0 401 Unauthorized\")",
            proxy.addr
        )),
        "{text}"
    );
    assert!(!text.contains("not-the-password"), "{text}");

    // NO_PROXY naming the broker: the path is direct, and from this
    // namespace there is none.
    let broker_host = broker_ip.to_string();
    let (out, text) = doctor(&lab, &config, &[env[0], ("NO_PROXY", &broker_host)]);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(
            "[ ok ] broker path: direct (the broker's host is in NO_PROXY; HTTPS_PROXY is not used)"
        ),
        "{text}"
    );
    assert!(text.contains("[FAIL] broker TCP: "), "{text}");

    // tinyproxy gone: doctor fails at the proxy step and names the proxy.
    proxy.stop();
    let (out, text) = doctor(&lab, &config, &env);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "[FAIL] proxy TCP: cannot reach the proxy at {} (from HTTPS_PROXY)",
            proxy.addr
        )),
        "{text}"
    );
    assert!(
        !text.contains("broker TLS"),
        "no step past the proxy: {text}"
    );
    assert!(!text.contains(PROXY_PASSWORD), "{text}");

    let mut agent = onboarded.child;
    let _ = agent.start_kill();
    let _ = agent.wait().await;
}

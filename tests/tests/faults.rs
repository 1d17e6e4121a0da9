//! Self-tests of the network harness: the fault-injecting proxy, the test
//! CONNECT proxy, and the agent's connector through a CONNECT proxy to a real
//! broker over real TLS.

use std::net::SocketAddr;
use std::time::Duration;

use relay_client::admin::AdminClient;
use relay_client::credential::Credential;
use relay_client::proxy::ProxyConfig;
use tests::BrokerBuilder;
use tests::connect_proxy::ConnectProxy;
use tests::faults::FaultProxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, timeout};

/// Upper bound for anything that should happen at once.
const PROMPT: Duration = Duration::from_secs(5);
/// How long silence must last to count as "no reply".
const SILENCE: Duration = Duration::from_millis(500);

/// An echo server on a free loopback port.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

async fn round_trip(stream: &mut TcpStream, msg: &[u8]) {
    stream.write_all(msg).await.unwrap();
    let mut buf = vec![0; msg.len()];
    timeout(PROMPT, stream.read_exact(&mut buf))
        .await
        .expect("echo in time")
        .expect("echo");
    assert_eq!(buf, msg);
}

/// Writes a byte and asserts that nothing, not even EOF, comes back.
async fn assert_black_holed(stream: &mut TcpStream) {
    stream
        .write_all(b"x")
        .await
        .expect("write into a black hole");
    let mut buf = [0u8; 1];
    let read = timeout(SILENCE, stream.read(&mut buf)).await;
    assert!(read.is_err(), "a black hole answered: {read:?}");
}

#[tokio::test]
async fn bytes_pass_and_delay_applies_both_ways() {
    let faults = FaultProxy::start(echo_server().await).await;
    let mut client = TcpStream::connect(faults.addr()).await.unwrap();
    round_trip(&mut client, b"hello").await;
    assert_eq!(faults.accepted(), 1);
    assert_eq!(faults.open_connections(), 1);

    faults.set_delay(Duration::from_millis(200));
    let start = Instant::now();
    round_trip(&mut client, b"slow").await;
    // Delayed on the way there and on the way back.
    assert!(
        start.elapsed() >= Duration::from_millis(400),
        "{:?}",
        start.elapsed()
    );

    faults.set_delay(Duration::ZERO);
    round_trip(&mut client, b"fast again").await;
}

#[tokio::test]
async fn cut_closes_cleanly_and_reset_resets() {
    let faults = FaultProxy::start(echo_server().await).await;
    let mut first = TcpStream::connect(faults.addr()).await.unwrap();
    round_trip(&mut first, b"a").await;
    faults.cut();
    let mut buf = [0u8; 1];
    let n = timeout(PROMPT, first.read(&mut buf)).await.unwrap();
    assert_eq!(n.unwrap(), 0, "a cut reads as EOF");

    let mut second = TcpStream::connect(faults.addr()).await.unwrap();
    round_trip(&mut second, b"b").await;
    faults.reset();
    let err = timeout(PROMPT, second.read(&mut buf))
        .await
        .unwrap()
        .expect_err("a reset is an error, not EOF");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
}

#[tokio::test]
async fn black_holes_swallow_current_or_new_connections() {
    let faults = FaultProxy::start(echo_server().await).await;
    let mut held = TcpStream::connect(faults.addr()).await.unwrap();
    round_trip(&mut held, b"before").await;
    faults.black_hole();
    assert_black_holed(&mut held).await;
    assert_eq!(
        faults.open_connections(),
        1,
        "the black hole closes nothing"
    );

    let mut fresh = TcpStream::connect(faults.addr()).await.unwrap();
    round_trip(&mut fresh, b"new connections still work").await;

    faults.black_hole_new(true);
    let mut swallowed = TcpStream::connect(faults.addr()).await.unwrap();
    faults.wait_accepted(3).await;
    assert_black_holed(&mut swallowed).await;
    faults.black_hole_new(false);
    let mut again = TcpStream::connect(faults.addr()).await.unwrap();
    round_trip(&mut again, b"and back").await;

    // A cut still closes black-holed connections.
    faults.cut();
    let mut buf = [0u8; 1];
    let n = timeout(PROMPT, held.read(&mut buf)).await.unwrap();
    assert_eq!(n.unwrap(), 0);
}

#[tokio::test]
async fn refused_connections_close_at_once_and_drop_closes_all() {
    let faults = FaultProxy::start(echo_server().await).await;
    faults.refuse_new(true);
    let mut refused = TcpStream::connect(faults.addr()).await.unwrap();
    let mut buf = [0u8; 1];
    let read = timeout(PROMPT, refused.read(&mut buf)).await.unwrap();
    assert!(
        matches!(read, Ok(0)) || read.is_err(),
        "a refused connection is closed: {read:?}"
    );
    assert_eq!(faults.accepted(), 1);
    assert_eq!(faults.open_connections(), 0);

    faults.refuse_new(false);
    let mut open = TcpStream::connect(faults.addr()).await.unwrap();
    round_trip(&mut open, b"x").await;
    drop(faults);
    let n = timeout(PROMPT, open.read(&mut buf)).await.unwrap();
    assert_eq!(n.unwrap(), 0, "dropping the proxy closes its connections");
}

/// Sends a request head to the proxy and returns the connection and the
/// response head.
async fn request(proxy: &ConnectProxy, head: &str) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let mut byte = [0u8; 1];
    while !response.ends_with(b"\r\n\r\n") {
        let n = timeout(PROMPT, stream.read(&mut byte))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 1, "proxy closed mid-head: {response:?}");
        response.push(byte[0]);
    }
    (stream, String::from_utf8(response).unwrap())
}

fn connect_head(target: &str, auth: Option<&str>) -> String {
    let auth = auth
        .map(|a| format!("Proxy-Authorization: Basic {a}\r\n"))
        .unwrap_or_default();
    format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{auth}\r\n")
}

#[tokio::test]
async fn the_connect_proxy_checks_credentials_method_and_target() {
    use base64::Engine;
    let echo = echo_server().await;
    let proxy = ConnectProxy::start(Some(("user".into(), "pass".into()))).await;
    let good = base64::engine::general_purpose::STANDARD.encode("user:pass");
    let bad = base64::engine::general_purpose::STANDARD.encode("user:wrong");

    let (mut tunnel, head) = request(&proxy, &connect_head(&echo.to_string(), Some(&good))).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    round_trip(&mut tunnel, b"through the tunnel").await;
    assert_eq!(proxy.tunnels(), vec![echo.to_string()]);

    for auth in [None, Some(bad.as_str())] {
        let (_, head) = request(&proxy, &connect_head(&echo.to_string(), auth)).await;
        assert!(head.starts_with("HTTP/1.1 407 "), "{head}");
        assert!(
            head.contains("Proxy-Authenticate: Basic realm=\"test\""),
            "{head}"
        );
    }
    assert_eq!(proxy.refused_auth(), 2);

    for target in ["10.0.0.1:443", "example.com:443"] {
        let (_, head) = request(&proxy, &connect_head(target, Some(&good))).await;
        assert!(head.starts_with("HTTP/1.1 403 "), "{target}: {head}");
    }
    let (_, head) = request(&proxy, "GET http://127.0.0.1/ HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 405 "), "{head}");
    assert_eq!(proxy.tunnels().len(), 1);
}

fn proxy_config(proxy: &ConnectProxy, password_file: &std::path::Path) -> ProxyConfig {
    ProxyConfig {
        url: proxy.url(),
        username: Some("svc-writeback".into()),
        password_file: Some(password_file.to_owned()),
        no_proxy: None,
    }
}

#[tokio::test]
async fn the_agent_reaches_the_broker_through_proxies_with_tls_end_to_end() {
    const PASSWORD: &str = "correct-horse-proxy-7";
    const WRONG: &str = "wrong-battery-proxy-9";
    let broker = BrokerBuilder::new().start().await;
    broker.create_tenant("contoso").await;
    let proxy = ConnectProxy::start(Some(("svc-writeback".into(), PASSWORD.into()))).await;
    let dir = tempfile::tempdir().unwrap();
    let good_file = dir.path().join("proxy.password");
    std::fs::write(&good_file, format!("{PASSWORD}\n")).unwrap();
    let wrong_file = dir.path().join("wrong.password");
    std::fs::write(&wrong_file, WRONG).unwrap();
    let operator = || Credential::operator(broker.operator_key());

    // Through the CONNECT proxy: the tunnel carries the broker's TLS.
    let endpoint = broker
        .endpoint()
        .with_proxy(proxy_config(&proxy, &good_file));
    let admin = AdminClient::connect(&endpoint, operator())
        .await
        .expect("connect through the proxy");
    let tenants = admin.list_tenants().await.expect("call through the tunnel");
    assert!(tenants.iter().any(|t| t.tenant == "contoso"));
    assert_eq!(proxy.tunnels(), vec![broker.grpc_addr.clone()]);

    // Through the fault proxy as well: raw bytes, TLS verified end to end.
    let faults = FaultProxy::start(broker.grpc_addr.parse().unwrap()).await;
    let mut through_faults = broker.endpoint();
    through_faults.url = faults.https_url();
    let admin = AdminClient::connect(&through_faults, operator())
        .await
        .expect("connect through the fault proxy");
    admin
        .list_tenants()
        .await
        .expect("call through the fault proxy");

    // Wrong password: the error says so and never holds a password.
    let wrong = broker
        .endpoint()
        .with_proxy(proxy_config(&proxy, &wrong_file));
    let err = wrong.connect().await.expect_err("wrong proxy password");
    let text = err.to_string();
    assert!(text.contains("refused our credentials"), "{text}");
    assert!(text.contains("407"), "{text}");
    assert_eq!(proxy.refused_auth(), 1);
    for shown in [
        text,
        format!("{err:?}"),
        format!("{wrong:?}"),
        format!("{endpoint:?}"),
    ] {
        assert!(
            !shown.contains(WRONG) && !shown.contains(PASSWORD),
            "{shown}"
        );
    }

    // No credentials at all.
    let mut anonymous = proxy_config(&proxy, &good_file);
    anonymous.username = None;
    anonymous.password_file = None;
    let err = broker
        .endpoint()
        .with_proxy(anonymous)
        .connect()
        .await
        .expect_err("no proxy credentials");
    assert!(err.to_string().contains("requires credentials"), "{err}");

    // A target the proxy will not tunnel to: its status line is quoted.
    let mut elsewhere = broker
        .endpoint()
        .with_proxy(proxy_config(&proxy, &good_file));
    elsewhere.url = "https://192.0.2.1:443".into();
    let err = elsewhere.connect().await.expect_err("forbidden target");
    assert!(
        err.to_string().contains(
            "refused the tunnel to 192.0.2.1:443 with status line \"HTTP/1.1 403 Forbidden\""
        ),
        "{err}"
    );

    // A proxy that is not there.
    let gone = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gone_addr = gone.local_addr().unwrap();
    drop(gone);
    let mut missing = proxy_config(&proxy, &good_file);
    missing.url = format!("http://{gone_addr}");
    let err = broker
        .endpoint()
        .with_proxy(missing)
        .connect()
        .await
        .expect_err("no proxy");
    assert!(
        err.to_string()
            .contains(&format!("cannot reach the proxy at {gone_addr}")),
        "{err}"
    );
}

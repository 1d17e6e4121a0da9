//! The serve loop on loopback: what a slow or greedy peer gets.

use std::sync::Mutex;
use std::time::Instant;

use axum::routing::{get, post};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

const HEADER_TIMEOUT: Duration = Duration::from_millis(300);
/// Far beyond any timeout here: a test that hangs fails instead.
const BOUND: Duration = Duration::from_secs(10);

struct Running {
    addr: SocketAddr,
    cuts: Arc<Mutex<Vec<Cut>>>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

async fn start(max_connections: usize, per_source: usize) -> Running {
    let router = Router::new()
        .route("/", get(|| async { "ok" }))
        .route("/echo", post(|body: String| async move { body }))
        .route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.ip().to_string() }),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cuts = Arc::new(Mutex::new(Vec::new()));
    let on_cut: OnCut = {
        let cuts = Arc::clone(&cuts);
        Arc::new(move |cut| cuts.lock().unwrap().push(cut))
    };
    let limits = Limits {
        header_timeout: HEADER_TIMEOUT,
        body_timeout: HEADER_TIMEOUT,
        max_body_bytes: 1024,
        max_connections,
        max_connections_per_source: per_source,
        unlimited_sources: Vec::new(),
    };
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve(
        listener,
        "test",
        router,
        limits,
        on_cut,
        shutdown.clone(),
    ));
    Running {
        addr,
        cuts,
        shutdown,
        task,
    }
}

/// A connection from 127.0.0.`last`.
async fn connect_from(last: u8, addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::from(([127, 0, 0, last], 0)))
        .unwrap();
    socket.connect(addr).await.unwrap()
}

/// Writes `bytes` and reads until the server closes; returns what it said.
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    exchange_from(1, addr, bytes).await
}

async fn exchange_from(last: u8, addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = connect_from(last, addr).await;
    stream.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(BOUND, stream.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection")
        .unwrap_or_default();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn half_sent_headers_and_idle_connections_are_closed_at_the_header_timeout() {
    let server = start(16, 16).await;
    let started = Instant::now();
    let answer = exchange(server.addr, b"GET / HTTP/1.1\r\nHost: x\r\n").await;
    assert_eq!(answer, "", "no answer to a request never finished");
    assert!(started.elapsed() >= HEADER_TIMEOUT);
    // A finished request is answered; the kept-alive connection then gets
    // the same time for its next request.
    let answer = exchange(server.addr, b"GET /peer HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("127.0.0.1"), "{answer}");
    assert_eq!(
        *server.cuts.lock().unwrap(),
        [Cut::HeaderTimeout, Cut::HeaderTimeout]
    );
    server.shutdown.cancel();
    tokio::time::timeout(BOUND, server.task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn slow_and_large_bodies_are_refused() {
    let server = start(16, 16).await;
    let slow = exchange(
        server.addr,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",
    )
    .await;
    assert!(slow.starts_with("HTTP/1.1 408"), "{slow}");
    assert!(slow.contains("did not arrive within"), "{slow}");
    let mut large = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n".to_vec();
    large.extend([b'a'; 2000]);
    let large = exchange(server.addr, &large).await;
    assert!(large.starts_with("HTTP/1.1 413"), "{large}");
    let fine = exchange(
        server.addr,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc",
    )
    .await;
    assert!(fine.ends_with("\r\n\r\nabc"), "{fine}");
    assert_eq!(
        *server.cuts.lock().unwrap(),
        [Cut::BodyTimeout, Cut::BodyTooLarge]
    );
}

#[tokio::test]
async fn connection_caps_close_the_surplus_and_the_oldest_idle() {
    let server = start(4, 3).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        held.push(s);
    }
    // The fourth from the same address is closed at once.
    let refused = exchange(server.addr, b"GET / HTTP/1.1\r\nHost: x\r\n").await;
    assert_eq!(refused, "");
    // Another address fills the server: the oldest idle connection is
    // closed to keep a place ready, and a third address is answered at
    // once instead of after the header timeout.
    let mut other = connect_from(2, server.addr).await;
    other.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let started = Instant::now();
    let answer = exchange_from(
        3,
        server.addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        started.elapsed() < HEADER_TIMEOUT,
        "{:?}",
        started.elapsed()
    );
    let mut buf = [0u8; 1];
    let closed = tokio::time::timeout(BOUND, held[0].read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
    let cuts = server.cuts.lock().unwrap().clone();
    assert_eq!(cuts[..2], [Cut::SourceFull, Cut::Evicted], "{cuts:?}");
}

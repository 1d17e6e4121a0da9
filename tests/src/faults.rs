//! A loopback TCP proxy that injects network faults between an agent and the
//! broker on command: delay, clean cuts, resets, black holes, refusals. It
//! forwards raw bytes, so TLS runs end to end through it.
//!
//! ```ignore
//! let faults = FaultProxy::start(broker_addr).await;
//! // point the agent at faults.addr(), then:
//! faults.black_hole();
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Bytes read per chunk.
const CHUNK: usize = 16 * 1024;
/// Chunks in flight per direction before the reader waits for the writer.
const PIPELINE: usize = 64;

/// What one connection does now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Forward,
    /// Read and discard both ways; close nothing, not even on EOF, since a
    /// black hole forwards no FIN either.
    BlackHole,
    /// Shut both sides down cleanly (FIN).
    Close,
    /// Close both sides with a TCP RST.
    Reset,
}

struct Connections {
    /// Drop has run: accept no more.
    closed: bool,
    next_id: u64,
    modes: HashMap<u64, watch::Sender<Mode>>,
}

struct Shared {
    target: SocketAddr,
    delay: watch::Sender<Duration>,
    connections: Mutex<Connections>,
    accepted: watch::Sender<u64>,
    black_hole_new: AtomicBool,
    refuse_new: AtomicBool,
}

impl Shared {
    fn set_all(&self, mode: Mode) {
        for tx in self.connections.lock().unwrap().modes.values() {
            tx.send_replace(mode);
        }
    }
}

/// A fault-injecting TCP proxy on `127.0.0.1:0`. Dropping it stops the
/// listener and closes every connection.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_task: JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `target`.
    pub async fn start(target: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fault proxy");
        let addr = listener.local_addr().expect("fault proxy address");
        let shared = Arc::new(Shared {
            target,
            delay: watch::Sender::new(Duration::ZERO),
            connections: Mutex::new(Connections {
                closed: false,
                next_id: 0,
                modes: HashMap::new(),
            }),
            accepted: watch::Sender::new(0),
            black_hole_new: AtomicBool::new(false),
            refuse_new: AtomicBool::new(false),
        });
        let accept_task = tokio::spawn(accept_loop(listener, shared.clone()));
        FaultProxy {
            addr,
            shared,
            accept_task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT`, for a broker URL through this proxy.
    pub fn https_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Every chunk, both directions, existing and new connections, is
    /// forwarded `delay` after it was read, in order. ZERO turns it off.
    pub fn set_delay(&self, delay: Duration) {
        self.shared.delay.send_replace(delay);
    }

    /// Closes every current connection cleanly (FIN both ways).
    pub fn cut(&self) {
        self.shared.set_all(Mode::Close);
    }

    /// Closes every current connection with a TCP RST both ways.
    pub fn reset(&self) {
        self.shared.set_all(Mode::Reset);
    }

    /// Every current connection silently stops forwarding both ways: reads
    /// are discarded, nothing is closed. Later connections are unaffected.
    pub fn black_hole(&self) {
        self.shared.set_all(Mode::BlackHole);
    }

    /// While on, new connections are accepted and black-holed: TCP connect
    /// succeeds, but the broker never answers.
    pub fn black_hole_new(&self, on: bool) {
        self.shared.black_hole_new.store(on, Ordering::SeqCst);
    }

    /// While on, new connections are closed right after accept.
    pub fn refuse_new(&self, on: bool) {
        self.shared.refuse_new.store(on, Ordering::SeqCst);
    }

    /// Connections accepted and not yet closed (refused ones never count).
    pub fn open_connections(&self) -> usize {
        self.shared.connections.lock().unwrap().modes.len()
    }

    /// Connections accepted so far, refused ones included.
    pub fn accepted(&self) -> u64 {
        *self.shared.accepted.borrow()
    }

    /// Returns once `accepted() >= n`.
    pub async fn wait_accepted(&self, n: u64) {
        let mut rx = self.shared.accepted.subscribe();
        rx.wait_for(|&count| count >= n)
            .await
            .expect("the proxy owns the sender");
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
        let mut connections = self.shared.connections.lock().unwrap();
        connections.closed = true;
        // Each connection task sees its mode sender dropped and closes.
        connections.modes.clear();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let _ = client.set_nodelay(true);
        let registered = if shared.refuse_new.load(Ordering::SeqCst) {
            drop(client);
            None
        } else {
            let initial = if shared.black_hole_new.load(Ordering::SeqCst) {
                Mode::BlackHole
            } else {
                Mode::Forward
            };
            let mut connections = shared.connections.lock().unwrap();
            if connections.closed {
                return;
            }
            let id = connections.next_id;
            connections.next_id += 1;
            let (tx, rx) = watch::channel(initial);
            connections.modes.insert(id, tx);
            Some((id, client, rx))
        };
        if let Some((id, client, mode)) = registered {
            let registration = Registration {
                shared: shared.clone(),
                id,
            };
            let delay = shared.delay.subscribe();
            tokio::spawn(async move {
                serve(client, registration.shared.target, mode, delay).await;
                drop(registration);
            });
        }
        // Counted after registration, so a test that waited for it can
        // cut or black-hole this connection.
        shared.accepted.send_modify(|n| *n += 1);
    }
}

/// Removes a connection from the table when its task ends, also when the
/// task is cancelled.
struct Registration {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.shared
            .connections
            .lock()
            .unwrap()
            .modes
            .remove(&self.id);
    }
}

/// How the forwarding phase ended.
enum End {
    /// Both directions finished (or one failed): drop the sockets.
    Done,
    Close,
    Reset,
}

async fn serve(
    mut client: TcpStream,
    target: SocketAddr,
    mut mode: watch::Receiver<Mode>,
    delay: watch::Receiver<Duration>,
) {
    let mut upstream = None;
    if *mode.borrow() == Mode::Forward {
        match TcpStream::connect(target).await {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                upstream = Some(s);
            }
            Err(_) => return,
        }
    }
    let end = run_modes(&mut client, upstream.as_mut(), &mut mode, &delay).await;
    match end {
        End::Done => {}
        End::Close => {
            let _ = client.shutdown().await;
            if let Some(up) = &mut upstream {
                let _ = up.shutdown().await;
            }
        }
        End::Reset => {
            let _ = client.set_zero_linger();
            if let Some(up) = &upstream {
                let _ = up.set_zero_linger();
            }
        }
    }
}

/// Runs the connection in its current mode until the mode says to close
/// or the forwarding ends by itself.
async fn run_modes(
    client: &mut TcpStream,
    upstream: Option<&mut TcpStream>,
    mode: &mut watch::Receiver<Mode>,
    delay: &watch::Receiver<Duration>,
) -> End {
    let (mut cr, mut cw) = client.split();
    let mut up = upstream.map(|s| s.split());
    let mut current = *mode.borrow_and_update();
    loop {
        let changed = match (current, &mut up) {
            (Mode::Close, _) => return End::Close,
            (Mode::Reset, _) => return End::Reset,
            (Mode::Forward, Some((ur, uw))) => {
                // Mode first: bytes that arrive after black_hole() returned
                // must not slip through on a poll that also saw the change.
                tokio::select! {
                    biased;
                    changed = mode.changed() => changed,
                    _ = forward(&mut cr, &mut cw, ur, uw, delay) => return End::Done,
                }
            }
            // Forward without an upstream cannot happen: connections that
            // start black-holed never switch back.
            (Mode::BlackHole | Mode::Forward, up) => {
                let up = up.as_mut().map(|(ur, _)| ur);
                tokio::select! {
                    never = swallow(&mut cr, up) => match never {},
                    changed = mode.changed() => changed,
                }
            }
        };
        // The sender is gone when the proxy was dropped.
        current = match changed {
            Ok(()) => *mode.borrow_and_update(),
            Err(_) => Mode::Close,
        };
    }
}

/// Both directions until both have ended; the first error ends both.
async fn forward(
    cr: &mut ReadHalf<'_>,
    cw: &mut WriteHalf<'_>,
    ur: &mut ReadHalf<'_>,
    uw: &mut WriteHalf<'_>,
    delay: &watch::Receiver<Duration>,
) {
    let _ = tokio::try_join!(pump(cr, uw, delay), pump(ur, cw, delay));
}

/// Copies one direction, each chunk written `delay` after it was read, and
/// passes EOF on as a FIN.
async fn pump(
    from: &mut ReadHalf<'_>,
    to: &mut WriteHalf<'_>,
    delay: &watch::Receiver<Duration>,
) -> std::io::Result<()> {
    let (tx, mut rx) = mpsc::channel::<(Option<Instant>, Vec<u8>)>(PIPELINE);
    let read = async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = from.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            let d = *delay.borrow();
            let due = (!d.is_zero()).then(|| Instant::now() + d);
            if tx.send((due, buf[..n].to_vec())).await.is_err() {
                return Ok(());
            }
        }
    };
    let write = async {
        while let Some((due, chunk)) = rx.recv().await {
            if let Some(due) = due {
                tokio::time::sleep_until(due).await;
            }
            to.write_all(&chunk).await?;
        }
        to.shutdown().await
    };
    tokio::try_join!(read, write).map(|_| ())
}

/// Reads and discards both ways, forever: even an EOF is not passed on.
async fn swallow(
    client: &mut ReadHalf<'_>,
    upstream: Option<&mut ReadHalf<'_>>,
) -> std::convert::Infallible {
    let upstream = async {
        if let Some(up) = upstream {
            drain(up).await;
        }
    };
    tokio::join!(drain(client), upstream);
    std::future::pending().await
}

/// Reads and discards until EOF or error.
async fn drain(from: &mut ReadHalf<'_>) {
    let mut buf = vec![0u8; CHUNK];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            return;
        }
    }
}

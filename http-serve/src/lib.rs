//! Serves an axum [`Router`] over HTTP/1.1 with the bounds `axum::serve`
//! lacks, for the broker's operator port and the reference portal: a peer
//! that opens connections and never finishes a request must not hold
//! descriptors or memory for as long as it likes (issue 17).
//!
//! - A request's headers must all arrive within [`Limits::header_timeout`],
//!   counted from the connection's opening and, on a kept-alive connection,
//!   from the previous answer: the same deadline closes idle connections.
//! - Its body must arrive within [`Limits::body_timeout`] and hold at most
//!   [`Limits::max_body_bytes`]; otherwise 408 or 413, and the connection is
//!   closed.
//! - At most [`Limits::max_connections_per_source`] connections from one IP
//!   address (more are closed as soon as accepted) and
//!   [`Limits::max_connections`] in all: at that cap the oldest connection
//!   not answering a request is closed to make room, and while every one is
//!   answering, accepting pauses. So the server's descriptors stay below the
//!   cap whatever its peers do.
//!
//! Each cut is logged with the peer's address and handed to an [`OnCut`]
//! (the broker counts them in its metrics). Requests reach the router with
//! the peer's address as [`ConnectInfo`] and the body already read.

mod table;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tower::Service;
use tracing::{debug, info, warn};

use crate::table::{Busy, Room, Slot, Table};

/// The most a request line and its headers may take. Hyper's default is
/// ~400 KiB per connection; these servers' requests need a few hundred bytes.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// How long to wait before accepting again after `accept` failed (out of
/// descriptors, most likely): the failure would repeat at once.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The bounds one server keeps.
#[derive(Debug, Clone)]
pub struct Limits {
    /// How long a request's headers may take to arrive in full, counted
    /// from the connection's opening or from the previous answer on it; an
    /// idle kept-alive connection is closed after as long.
    pub header_timeout: Duration,
    /// How long a request's body may take to arrive in full, counted from
    /// the end of its headers.
    pub body_timeout: Duration,
    pub max_body_bytes: usize,
    /// Connections open at once, all sources together.
    pub max_connections: usize,
    /// Connections open at once from one IP address.
    pub max_connections_per_source: usize,
    /// Addresses without a per-source cap (a reverse proxy in front, whose
    /// connections carry every visitor's requests).
    pub unlimited_sources: Vec<IpAddr>,
}

/// Why a connection or a request was cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cut {
    /// A request's headers did not all arrive within the header timeout
    /// (or an idle connection sent none): the connection was closed.
    HeaderTimeout,
    /// A request's body did not arrive within the body timeout: 408.
    BodyTimeout,
    /// A request's body was over the size limit: 413.
    BodyTooLarge,
    /// The source address held its connection cap: closed when accepted.
    SourceFull,
    /// The oldest idle connection, closed to make room for a new one.
    Evicted,
}

impl Cut {
    /// A stable name, for metric labels and log fields.
    pub fn as_str(self) -> &'static str {
        match self {
            Cut::HeaderTimeout => "header_timeout",
            Cut::BodyTimeout => "body_timeout",
            Cut::BodyTooLarge => "body_too_large",
            Cut::SourceFull => "source_full",
            Cut::Evicted => "evicted",
        }
    }
}

/// Told of every cut, after it is logged.
pub type OnCut = Arc<dyn Fn(Cut) + Send + Sync>;

struct Shared {
    /// Names the server in log lines ("operator", "portal").
    name: &'static str,
    router: Router,
    limits: Limits,
    on_cut: OnCut,
}

impl Shared {
    fn cut(&self, cut: Cut, peer: IpAddr) {
        let server = self.name;
        let reason = cut.as_str();
        match cut {
            Cut::HeaderTimeout => {
                info!(server, %peer, reason, timeout = ?self.limits.header_timeout,
                "connection closed: no complete request headers in time")
            }
            Cut::BodyTimeout => info!(server, %peer, reason, timeout = ?self.limits.body_timeout,
                "request refused and connection closed: its body did not arrive in time"),
            Cut::BodyTooLarge => info!(server, %peer, reason, limit = self.limits.max_body_bytes,
                "request refused and connection closed: its body is too large"),
            // Logged by the accept loop, once per burst.
            Cut::SourceFull | Cut::Evicted => {}
        }
        (self.on_cut)(cut);
    }
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then lets
/// each connection finish its request in flight and returns once all are
/// closed (their deadlines still apply).
pub async fn serve(
    listener: TcpListener,
    name: &'static str,
    router: Router,
    limits: Limits,
    on_cut: OnCut,
    shutdown: CancellationToken,
) {
    let table = Arc::new(Table::new(
        limits.max_connections,
        limits.max_connections_per_source,
        limits.unlimited_sources.clone(),
    ));
    let shared = Arc::new(Shared {
        name,
        router,
        limits,
        on_cut,
    });
    let mut full_logged = false;
    'accepting: loop {
        // Room first: while the server is full, new connections wait in the
        // kernel's backlog instead of taking a descriptor here.
        loop {
            let changed = table.changed();
            match table.make_room() {
                Room::Free => break,
                Room::Evicted(peer) => {
                    debug!(server = name, %peer, "oldest idle connection closed to make room");
                    (shared.on_cut)(Cut::Evicted);
                }
                Room::Wait => {}
            }
            if !full_logged {
                full_logged = true;
                warn!(
                    server = name,
                    limit = shared.limits.max_connections,
                    "at the connection cap: closing the oldest idle connections, or pausing accepts while all are answering"
                );
            }
            tokio::select! {
                _ = shutdown.cancelled() => break 'accepting,
                _ = changed => {}
            }
        }
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(server = name, %error, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        if table.len() + 1 < shared.limits.max_connections {
            full_logged = false;
        }
        let slot = match table.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(full) => {
                if full.first {
                    warn!(server = name, peer = %peer.ip(), limit = shared.limits.max_connections_per_source,
                        "refusing connections from this address: it holds its connection cap");
                }
                (shared.on_cut)(Cut::SourceFull);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(
            stream,
            peer,
            slot,
            Arc::clone(&shared),
            shutdown.clone(),
        ));
    }
    drop(listener);
    table.emptied().await;
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    slot: Slot,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let service = {
        let shared = Arc::clone(&shared);
        let busy = Arc::clone(&slot.busy);
        hyper::service::service_fn(move |request| {
            respond(request, peer, Arc::clone(&shared), Busy::enter(&busy))
        })
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(shared.limits.header_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    let mut draining = false;
    let ended = loop {
        tokio::select! {
            ended = conn.as_mut() => break ended,
            _ = shutdown.cancelled(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            // Dropping the connection closes it; it was answering nothing.
            _ = slot.close.cancelled() => return,
        }
    };
    match ended {
        Ok(()) => {}
        Err(e) if e.is_timeout() => shared.cut(Cut::HeaderTimeout, peer.ip()),
        Err(error) => debug!(server = shared.name, %peer, %error, "connection ended"),
    }
}

/// Reads the body within its bounds, then hands the request to the router.
async fn respond(
    request: Request<Incoming>,
    peer: SocketAddr,
    shared: Arc<Shared>,
    _busy: Busy,
) -> Result<Response<Body>, Infallible> {
    let limits = &shared.limits;
    let (mut parts, body) = request.into_parts();
    let read = Limited::new(body, limits.max_body_bytes).collect();
    let body = match tokio::time::timeout(limits.body_timeout, read).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<LengthLimitError>() => {
            shared.cut(Cut::BodyTooLarge, peer.ip());
            let why = format!("the request body is over {} bytes", limits.max_body_bytes);
            return Ok(closing(StatusCode::PAYLOAD_TOO_LARGE, why));
        }
        Ok(Err(error)) => {
            debug!(server = shared.name, %peer, %error, "the request body could not be read");
            let why = "the request body could not be read".to_owned();
            return Ok(closing(StatusCode::BAD_REQUEST, why));
        }
        Err(_) => {
            shared.cut(Cut::BodyTimeout, peer.ip());
            let why = format!(
                "the request body did not arrive within {:?}",
                limits.body_timeout
            );
            return Ok(closing(StatusCode::REQUEST_TIMEOUT, why));
        }
    };
    parts.extensions.insert(ConnectInfo(peer));
    let request = Request::from_parts(parts, Body::from(body));
    let mut router = shared.router.clone();
    let response = router.call(request).await;
    Ok(response.unwrap_or_else(|never| match never {}))
}

/// An answer after which the connection is closed: the rest of the request
/// is not worth reading.
fn closing(status: StatusCode, why: String) -> Response<Body> {
    let mut response = Response::new(Body::from(format!("{why}\n")));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests;

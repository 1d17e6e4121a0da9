//! What a caller can make the gRPC port spend before it has proved a key.
//!
//! - [`connections`]: every connection from accept to close: the
//!   descriptor budget, unauthenticated connections per source address,
//!   eviction, and the deadlines a connection's IO enforces.
//! - this module: a tower layer on the tonic server that sees each call's
//!   headers before anything reads its body. A call that needs a token in
//!   `authorization` is checked here, and refused at once, its body never
//!   read, when the token is missing, malformed, forged, expired, too long
//!   lived or of a right that can never make the call. A unary call's
//!   message must then arrive within `request_receive_timeout`.
//!
//! The services still make every check after decoding (the tenant in the
//! message against the token's, and so on): this stage only decides whether
//! the broker reads the body at all. It looks at no tenant but the one the
//! token names, so it tells a caller nothing about another tenant.

pub mod connections;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::Frame;
use sas::Right;
use tonic::Status;
use tonic::body::Body;
use tonic::transport::server::TcpConnectInfo;
use tower::{Layer, Service};
use tracing::{debug, info};

use crate::error::RelayError;
use crate::state::State;
pub use connections::{CallGuard, CloseReason, Conn, Connections};

/// What tonic puts in each request's extensions for a connection of the
/// gRPC port: its addresses (also inserted as [`TcpConnectInfo`] so that
/// `Request::remote_addr` works) and its state.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub tcp: TcpConnectInfo,
    pub conn: Arc<Conn>,
}

/// How a method proves who calls it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// A token in `authorization` with one of these rights.
    Token(&'static [Right]),
    /// The token is in the session's first frame (Hello): the gateway checks
    /// it within `hello_timeout`, on a message no larger than a frame.
    Hello,
    /// Health checks, and paths no service has (answered UNIMPLEMENTED
    /// without reading the body).
    Open,
}

const ANY_RIGHT: &[Right] = &[Right::Send, Right::Listen, Right::Manage, Right::Operator];
/// Every Admin call, tenant-wide or not, needs one of these; which one is
/// the service's check (a Manage token on DeleteTenant is refused there,
/// after the signature against the addressed tenant, as before).
const ADMIN: &[Right] = &[Right::Manage, Right::Operator];

/// The access of each method, by its gRPC path.
fn access(path: &str) -> Access {
    match path {
        "/relay.v1.Relay/Submit" | "/relay.v1.Relay/GetOutcome" => Access::Token(&[Right::Send]),
        "/relay.v1.Relay/Ping" => Access::Token(&[Right::Send, Right::Manage]),
        "/relay.v1.Relay/GetConfiguration" => Access::Token(ANY_RIGHT),
        "/relay.v1.AgentGateway/RegisterKey" | "/relay.v1.AgentGateway/RetireKey" => {
            Access::Token(&[Right::Listen])
        }
        "/relay.v1.AgentGateway/OpenSession" => Access::Hello,
        p if p.starts_with("/relay.v1.Admin/") => Access::Token(ADMIN),
        // Reflection describes the API to a caller that holds some token;
        // the methods it describes still check theirs.
        p if crate::reflection::PATHS.contains(&p) => Access::Token(ANY_RIGHT),
        _ => Access::Open,
    }
}

/// The largest message of a call that carries names and ids only (a tenant
/// of 63 bytes, a request id of 128, a key id of 16): a few hundred bytes,
/// with room for fields to come. The services' own limits (tonic's, per
/// service) cover the rest: an envelope for Submit, OpenSession and
/// RegisterKey, 4 KiB for Admin, 1 KiB for health.
const SMALL_MESSAGE_LIMIT: usize = 4 * 1024;

/// The message limit of a call tighter than its service's, if any.
fn message_limit(path: &str) -> Option<usize> {
    match path {
        "/relay.v1.Relay/Ping"
        | "/relay.v1.Relay/GetConfiguration"
        | "/relay.v1.Relay/GetOutcome"
        | "/relay.v1.AgentGateway/RetireKey" => Some(SMALL_MESSAGE_LIMIT),
        _ => None,
    }
}

/// Calls on a connection not yet authenticated whose message the broker
/// reads before any token (OpenSession's Hello, health checks): an agent
/// needs one session and perhaps a health check; each such call may make
/// the broker buffer one message until `hello_timeout`.
const UNAUTHENTICATED_CALLS: usize = 4;

/// The gRPC length prefix of a message.
const PREFIX: usize = 5;

/// The layer; see the module documentation.
#[derive(Clone)]
pub struct IngressLayer {
    state: Arc<State>,
}

impl IngressLayer {
    pub fn new(state: Arc<State>) -> IngressLayer {
        IngressLayer { state }
    }
}

impl<S> Layer<S> for IngressLayer {
    type Service = Ingress<S>;

    fn layer(&self, inner: S) -> Ingress<S> {
        Ingress {
            inner,
            state: Arc::clone(&self.state),
        }
    }
}

#[derive(Clone)]
pub struct Ingress<S> {
    inner: S,
    state: Arc<State>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> Service<http::Request<Body>> for Ingress<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<http::Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        // The service that was polled ready serves this call; its clone
        // stays for the next one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);

        let info = request.extensions().get::<ConnInfo>().cloned();
        if let Some(info) = &info {
            request.extensions_mut().insert(info.tcp.clone());
        }
        let call = info.as_ref().map(|i| i.conn.call());
        let path = request.uri().path().to_owned();
        let access = access(&path);
        if let Access::Token(rights) = access {
            // Any path under /relay.v1.Admin/ gets here: the caller's text,
            // so bounded before it is written.
            let rpc = Some(path.trim_start_matches('/'))
                .filter(|p| p.len() <= 64)
                .unwrap_or("relay.v1.Admin/(unknown method)");
            let call = crate::audit::Call {
                rpc,
                peer: info.as_ref().and_then(|i| i.tcp.remote_addr()),
            };
            // Not text: malformed, as the parser then says.
            let token = request
                .headers()
                .get(crate::auth::AUTHORIZATION)
                .map(|v| v.to_str().unwrap_or_default());
            match self
                .state
                .audit
                .authorize(&self.state.authorizer, call, token, None, rights)
            {
                Ok(_) => {
                    if let Some(info) = &info {
                        info.conn.authenticate();
                    }
                }
                Err(e) => {
                    self.state.metrics.request_cut_off("refused_from_headers");
                    debug!(method = %path, peer = ?info.as_ref().map(|i| i.conn.peer()),
                        reason = %e.reason(), "call refused from its headers; body not read");
                    let response = Status::from(e).into_http::<Body>();
                    return Box::pin(async move { Ok(response) });
                }
            }
        }
        if let Some(info) = &info
            && !matches!(access, Access::Token(_))
            && !info.conn.is_authenticated()
            && info.conn.calls() > UNAUTHENTICATED_CALLS
        {
            self.state
                .metrics
                .request_cut_off("unauthenticated_streams");
            debug!(method = %path, peer = %info.conn.peer(), limit = UNAUTHENTICATED_CALLS,
                "call refused: too many calls without a token on an unauthenticated connection");
            let e = RelayError::UnauthenticatedStreams(UNAUTHENTICATED_CALLS as u32);
            let response = Status::from(e).into_http::<Body>();
            return Box::pin(async move { Ok(response) });
        }
        if access != Access::Hello {
            let limit = self.state.config.limits.request_receive_timeout;
            let peer = info.as_ref().map(|i| i.conn.clone());
            request = request.map(|body| {
                Body::new(ReceiveDeadline {
                    inner: body,
                    sleep: Box::pin(tokio::time::sleep(limit)),
                    limit,
                    done: false,
                    received: 0,
                    max_bytes: message_limit(&path).map(|m| m + PREFIX),
                    method: path.clone(),
                    conn: peer,
                    state: Arc::clone(&self.state),
                })
            });
        }
        let welcome = access == Access::Hello;
        let future = inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            Ok(response.map(|body| {
                Body::new(Tracked {
                    inner: body,
                    call,
                    welcome,
                })
            }))
        })
    }
}

/// A request body that must end within `limit` of the call's headers, and
/// hold no more than `max_bytes`.
struct ReceiveDeadline {
    inner: Body,
    sleep: Pin<Box<tokio::time::Sleep>>,
    limit: Duration,
    done: bool,
    /// Body bytes so far, against `max_bytes` (one message and its prefix).
    received: usize,
    max_bytes: Option<usize>,
    method: String,
    conn: Option<Arc<Conn>>,
    state: Arc<State>,
}

impl http_body::Body for ReceiveDeadline {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<bytes::Bytes>, Status>>> {
        let this = &mut *self;
        if this.done {
            return Pin::new(&mut this.inner).poll_frame(cx);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => {}
            Poll::Ready(frame) => {
                if let (Some(Ok(f)), Some(max)) = (&frame, this.max_bytes)
                    && let Some(data) = f.data_ref()
                {
                    this.received += data.len();
                    if this.received > max {
                        this.inner = Body::empty();
                        this.done = true;
                        return Poll::Ready(Some(Err(Status::out_of_range(format!(
                            "the request message of {} is larger than its limit of {} bytes",
                            this.method,
                            max - PREFIX
                        )))));
                    }
                }
                if frame.is_none() || this.inner.is_end_stream() {
                    this.done = true;
                }
                return Poll::Ready(frame);
            }
        }
        if this.sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        // Dropping the stream's body gives its buffered bytes back and lets
        // HTTP/2 reset the stream.
        this.inner = Body::empty();
        this.done = true;
        this.state.metrics.request_cut_off("receive_timeout");
        info!(method = %this.method, peer = ?this.conn.as_ref().map(|c| c.peer()), limit = ?this.limit,
            "call cut off: its request message did not arrive in time");
        Poll::Ready(Some(Err(RelayError::RequestTooSlow(this.limit).into())))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that ends its call when it ends, and marks the
/// connection authenticated when an agent session sends its first frame
/// (the Welcome: a refused Hello ends the stream with no frame).
struct Tracked {
    inner: Body,
    call: Option<CallGuard>,
    welcome: bool,
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<bytes::Bytes>, Status>>> {
        let this = &mut *self;
        let frame = Pin::new(&mut this.inner).poll_frame(cx);
        if this.welcome
            && let Poll::Ready(Some(Ok(f))) = &frame
            && f.is_data()
        {
            this.welcome = false;
            if let Some(call) = &this.call {
                call.conn().authenticate();
            }
        }
        if let Poll::Ready(None) = frame {
            this.call = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_of_the_relay_protocol_has_its_access() {
        assert_eq!(
            access("/relay.v1.Relay/Submit"),
            Access::Token(&[Right::Send])
        );
        assert_eq!(access("/relay.v1.Admin/CreateTenant"), Access::Token(ADMIN));
        assert_eq!(access("/relay.v1.AgentGateway/OpenSession"), Access::Hello);
        assert_eq!(access("/grpc.health.v1.Health/Check"), Access::Open);
        for path in crate::reflection::PATHS {
            assert_eq!(access(path), Access::Token(ANY_RIGHT), "{path}");
        }
        // A method added to a relay.v1 service without an entry here would
        // be open: the generated paths must all be known.
        for path in [
            "/relay.v1.Relay/Ping",
            "/relay.v1.Relay/GetConfiguration",
            "/relay.v1.Relay/GetOutcome",
            "/relay.v1.AgentGateway/RegisterKey",
            "/relay.v1.AgentGateway/RetireKey",
        ] {
            assert!(matches!(access(path), Access::Token(_)), "{path}");
        }
    }
}

//! A broker under the attacker's full control: a real TLS gRPC server that
//! accepts agent sessions and lets the test push any frame to the agent and
//! read every frame back. With it, a test plays the compromised broker:
//! it replays, redirects, relabels and alters at will. It also serves the
//! portal side (relay.v1 `Relay`): it hands each Submit to the test, which
//! answers it with whatever it likes, whether or not it delivered it.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use proto::pb::agent_frame::Frame as AgentFrameKind;
use proto::pb::agent_gateway_server::{AgentGateway, AgentGatewayServer};
use proto::pb::relay_server::{Relay, RelayServer};
use proto::pb::{
    self, AgentFrame, BrokerFrame, EnvelopeRefusal, Operation, agent_reply, broker_frame,
};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_stream::Stream;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

use crate::STARTUP_TIMEOUT;

/// One agent session as the malicious broker holds it.
pub struct HeldSession {
    pub tenant: String,
    pub agent_id: String,
    to_agent: mpsc::Sender<Result<BrokerFrame, Status>>,
    from_agent: Streaming<AgentFrame>,
    next: u64,
}

/// What the agent answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Envelope(Vec<u8>),
    /// An AgentError: its typed refusal (UNSPECIFIED when none or unknown)
    /// and its message.
    Error {
        refusal: EnvelopeRefusal,
        message: String,
    },
}

impl HeldSession {
    /// Pushes a request and waits for the agent's answer to it.
    pub async fn relay(
        &mut self,
        request_id: &str,
        operation: Operation,
        envelope: Vec<u8>,
    ) -> Answer {
        self.next += 1;
        let correlation_id = self.next;
        let frame = BrokerFrame {
            frame: Some(broker_frame::Frame::Request(pb::RelayedRequest {
                correlation_id,
                request_id: request_id.to_owned(),
                operation: operation as i32,
                envelope: envelope.into(),
                timeout_ms: 30_000,
                ..Default::default()
            })),
        };
        self.to_agent
            .send(Ok(frame))
            .await
            .expect("agent session open");
        let wait = async {
            loop {
                let frame = self
                    .from_agent
                    .message()
                    .await
                    .expect("agent stream")
                    .expect("agent still connected");
                if let Some(AgentFrameKind::Reply(reply)) = frame.frame
                    && reply.correlation_id == correlation_id
                {
                    return match reply.result {
                        Some(agent_reply::Result::Envelope(e)) => Answer::Envelope(e),
                        Some(agent_reply::Result::Error(e)) => Answer::Error {
                            refusal: EnvelopeRefusal::try_from(e.refusal)
                                .unwrap_or(EnvelopeRefusal::Unspecified),
                            message: e.message,
                        },
                        None => Answer::Error {
                            refusal: EnvelopeRefusal::Unspecified,
                            message: "empty reply".into(),
                        },
                    };
                }
            }
        };
        tokio::time::timeout(STARTUP_TIMEOUT, wait)
            .await
            .expect("the agent answers")
    }
}

struct Gateway {
    sessions: mpsc::UnboundedSender<HeldSession>,
}

type Frames = Pin<Box<dyn Stream<Item = Result<BrokerFrame, Status>> + Send>>;

#[tonic::async_trait]
impl AgentGateway for Gateway {
    type OpenSessionStream = Frames;

    async fn open_session(
        &self,
        request: Request<Streaming<AgentFrame>>,
    ) -> Result<Response<Frames>, Status> {
        let mut from_agent = request.into_inner();
        let hello = match from_agent.message().await? {
            Some(AgentFrame {
                frame: Some(AgentFrameKind::Hello(h)),
            }) => h,
            _ => return Err(Status::invalid_argument("expected Hello")),
        };
        // This broker accepts anyone: it is the attacker's.
        let (tx, rx) = mpsc::channel(16);
        let welcome = BrokerFrame {
            frame: Some(broker_frame::Frame::Welcome(pb::Welcome {
                session_id: "malicious".into(),
                heartbeat_interval_ms: 60_000,
                max_envelope_bytes: 1 << 20,
                broker_time_unix_ms: 0,
                token_expires_unix_ms: i64::MAX,
                ack_timeout_ms: 10_000,
                max_in_flight: 64,
            })),
        };
        tx.send(Ok(welcome))
            .await
            .map_err(|_| Status::internal("queue"))?;
        let _ = self.sessions.send(HeldSession {
            tenant: hello.tenant,
            agent_id: hello.agent_id,
            to_agent: tx,
            from_agent,
            next: 0,
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn register_key(
        &self,
        _request: Request<pb::RegisterKeyRequest>,
    ) -> Result<Response<pb::RegisterKeyReply>, Status> {
        Ok(Response::new(pb::RegisterKeyReply { keys: Vec::new() }))
    }

    async fn retire_key(
        &self,
        _request: Request<pb::RetireKeyRequest>,
    ) -> Result<Response<pb::RetireKeyReply>, Status> {
        Ok(Response::new(pb::RetireKeyReply { keys: Vec::new() }))
    }
}

/// A portal's Submit as the malicious broker holds it: the test may
/// deliver its envelope (through a [`HeldSession`]) and answers it with
/// anything.
pub struct HeldSubmit {
    pub request: pb::SubmitRequest,
    answer: oneshot::Sender<Result<pb::SubmitReply, Status>>,
}

impl HeldSubmit {
    pub fn answer(self, answer: Result<pb::SubmitReply, Status>) {
        let _ = self.answer.send(answer);
    }
}

/// The portal side: Submit goes to the test, GetConfiguration offers the
/// keys the test set.
struct PortalSide {
    submits: mpsc::UnboundedSender<HeldSubmit>,
    agent_keys: Arc<std::sync::Mutex<Vec<pb::AgentKey>>>,
    agents_online: Arc<std::sync::Mutex<Vec<pb::AgentInfo>>>,
}

#[tonic::async_trait]
impl Relay for PortalSide {
    async fn submit(
        &self,
        request: Request<pb::SubmitRequest>,
    ) -> Result<Response<pb::SubmitReply>, Status> {
        let (tx, rx) = oneshot::channel();
        self.submits
            .send(HeldSubmit {
                request: request.into_inner(),
                answer: tx,
            })
            .map_err(|_| Status::internal("nobody holds submits"))?;
        let reply = rx
            .await
            .map_err(|_| Status::internal("the test dropped the submit"))??;
        Ok(Response::new(reply))
    }

    async fn ping(
        &self,
        _request: Request<pb::PingRequest>,
    ) -> Result<Response<pb::PingReply>, Status> {
        Err(Status::unimplemented("ping"))
    }

    async fn get_configuration(
        &self,
        request: Request<pb::GetConfigurationRequest>,
    ) -> Result<Response<pb::TenantConfiguration>, Status> {
        Ok(Response::new(pb::TenantConfiguration {
            tenant: request.into_inner().tenant,
            writeback_enabled: true,
            agent_keys: self
                .agent_keys
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            agents_online: self
                .agents_online
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            ..Default::default()
        }))
    }

    async fn get_outcome(
        &self,
        _request: Request<pb::GetOutcomeRequest>,
    ) -> Result<Response<pb::SubmitReply>, Status> {
        Err(Status::unimplemented("get_outcome"))
    }
}

/// The running malicious broker.
pub struct MaliciousBroker {
    pub addr: SocketAddr,
    pub ca_file: std::path::PathBuf,
    sessions: Arc<Mutex<mpsc::UnboundedReceiver<HeldSession>>>,
    submits: Arc<Mutex<mpsc::UnboundedReceiver<HeldSubmit>>>,
    agent_keys: Arc<std::sync::Mutex<Vec<pb::AgentKey>>>,
    agents_online: Arc<std::sync::Mutex<Vec<pb::AgentInfo>>>,
    _dir: tempfile::TempDir,
}

impl MaliciousBroker {
    pub async fn start() -> MaliciousBroker {
        let dir = tempfile::tempdir().expect("temp dir");
        let pki =
            broker::tls::generate_dev_pki(dir.path(), &["127.0.0.1".to_owned()]).expect("pki");
        let identity = Identity::from_pem(
            std::fs::read(&pki.server_cert).expect("cert"),
            std::fs::read(&pki.server_key).expect("key"),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = mpsc::unbounded_channel();
        let (submits_tx, submits_rx) = mpsc::unbounded_channel();
        let agent_keys = Arc::new(std::sync::Mutex::new(Vec::new()));
        let agents_online = Arc::new(std::sync::Mutex::new(Vec::new()));
        let server = Server::builder()
            .tls_config(ServerTlsConfig::new().identity(identity))
            .expect("tls")
            .add_service(AgentGatewayServer::new(Gateway { sessions: tx }))
            .add_service(RelayServer::new(PortalSide {
                submits: submits_tx,
                agent_keys: Arc::clone(&agent_keys),
                agents_online: Arc::clone(&agents_online),
            }));
        tokio::spawn(server.serve_with_incoming(TcpListenerStream::new(listener)));
        MaliciousBroker {
            addr,
            ca_file: pki.ca_cert,
            sessions: Arc::new(Mutex::new(rx)),
            submits: Arc::new(Mutex::new(submits_rx)),
            agent_keys,
            agents_online,
            _dir: dir,
        }
    }

    /// The agent keys GetConfiguration offers portals.
    pub fn offer_keys(&self, keys: Vec<pb::AgentKey>) {
        *self.agent_keys.lock().unwrap_or_else(|e| e.into_inner()) = keys;
    }

    /// The agents GetConfiguration lists as online (portals address their
    /// envelopes to one of them).
    pub fn offer_agents(&self, ids: &[&str]) {
        *self.agents_online.lock().unwrap_or_else(|e| e.into_inner()) = ids
            .iter()
            .map(|id| pb::AgentInfo {
                agent_id: (*id).to_owned(),
                ..Default::default()
            })
            .collect();
    }

    /// Waits for the next Submit of a portal.
    pub async fn next_submit(&self) -> HeldSubmit {
        tokio::time::timeout(STARTUP_TIMEOUT, self.submits.lock().await.recv())
            .await
            .expect("a portal submits")
            .expect("server running")
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Waits for the next agent to connect.
    pub async fn next_session(&self) -> HeldSession {
        tokio::time::timeout(STARTUP_TIMEOUT, self.sessions.lock().await.recv())
            .await
            .expect("an agent connects")
            .expect("server running")
    }
}

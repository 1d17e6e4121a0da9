//! Speaking the relay protocol by hand, for tests that send what the real
//! clients never would: raw bytes in place of a message, a second Hello,
//! several agent sessions on one connection.

use crate::agent_toml::AgentToml;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use prost::bytes::BufMut;
use proto::pb::{self, agent_frame, broker_frame};
use sas::{KeySlot, Right};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Request, Status, Streaming};
use writeback_agent::{AgentConfig, AgentEvent, NoOperations};

use crate::{BrokerProcess, STARTUP_TIMEOUT, Tenant, write_key};

pub const SUBMIT: &str = "/relay.v1.Relay/Submit";
pub const OPEN_SESSION: &str = "/relay.v1.AgentGateway/OpenSession";

/// Sends bytes as they are; decodes replies as `U` with prost.
pub struct RawCodec<U>(PhantomData<U>);

impl<U> Default for RawCodec<U> {
    fn default() -> Self {
        RawCodec(PhantomData)
    }
}

impl<U: Message + Default + Send + 'static> Codec for RawCodec<U> {
    type Encode = Vec<u8>;
    type Decode = U;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder<U>;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder<U> {
        RawDecoder(PhantomData)
    }
}

pub struct RawEncoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

pub struct RawDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for RawDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

/// A unary call whose request body is `body`, byte for byte.
pub async fn unary<U: Message + Default + Send + 'static>(
    channel: &Channel,
    path: &'static str,
    body: Vec<u8>,
    authorization: &str,
) -> Result<U, Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let mut request = Request::new(body);
    request
        .metadata_mut()
        .insert("authorization", authorization.parse().expect("metadata"));
    grpc.unary(
        request,
        PathAndQuery::from_static(path),
        RawCodec::default(),
    )
    .await
    .map(tonic::Response::into_inner)
}

/// A valid Hello of `tenant` for `agent_id`.
pub fn hello(tenant: &Tenant, agent_id: &str) -> pb::AgentFrame {
    let token = tenant
        .credential(Right::Listen)
        .mint(Duration::from_secs(600));
    pb::AgentFrame {
        frame: Some(agent_frame::Frame::Hello(pb::Hello {
            tenant: tenant.name.clone(),
            agent_id: agent_id.into(),
            agent_version: "raw".into(),
            token: token.expose().to_owned(),
        })),
    }
}

/// An agent session driven by hand: frames (or any bytes) go out as given.
pub struct RawSession {
    tx: mpsc::Sender<Vec<u8>>,
    inbound: Streaming<pb::BrokerFrame>,
    pub welcome: pb::Welcome,
}

impl RawSession {
    /// Opens a session on `channel` with `hello` and waits for its Welcome;
    /// the broker's refusal otherwise.
    pub async fn open(channel: &Channel, hello: pb::AgentFrame) -> Result<RawSession, Status> {
        let (tx, rx) = mpsc::channel(8);
        tx.send(hello.encode_to_vec()).await.expect("queue Hello");
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let mut inbound = grpc
            .streaming(
                Request::new(ReceiverStream::new(rx)),
                PathAndQuery::from_static(OPEN_SESSION),
                RawCodec::<pb::BrokerFrame>::default(),
            )
            .await?
            .into_inner();
        let first = tokio::time::timeout(STARTUP_TIMEOUT, inbound.message())
            .await
            .expect("no Welcome in time")?;
        match first.and_then(|f| f.frame) {
            Some(broker_frame::Frame::Welcome(welcome)) => Ok(RawSession {
                tx,
                inbound,
                welcome,
            }),
            other => panic!("expected Welcome, got {other:?}"),
        }
    }

    pub async fn send(&self, frame: &pb::AgentFrame) {
        self.send_bytes(frame.encode_to_vec()).await;
    }

    /// Sends `bytes` as the next message, whether or not they decode.
    pub async fn send_bytes(&self, bytes: Vec<u8>) {
        self.tx.send(bytes).await.expect("session stream open");
    }

    /// Sends on this session from another task; a send fails, rather than
    /// panicking, once the session is gone.
    pub fn sender(&self) -> mpsc::Sender<Vec<u8>> {
        self.tx.clone()
    }

    /// Waits for the next request the broker relays (skipping heartbeats).
    pub async fn next_request(&mut self) -> pb::RelayedRequest {
        let wait = async {
            loop {
                match self.inbound.message().await {
                    Ok(Some(pb::BrokerFrame {
                        frame: Some(broker_frame::Frame::Request(request)),
                    })) => return request,
                    Ok(Some(_)) => continue,
                    other => panic!("the session ended before a request: {other:?}"),
                }
            }
        };
        tokio::time::timeout(STARTUP_TIMEOUT, wait)
            .await
            .expect("no request in time")
    }

    /// Waits for the broker's Goodbye (skipping heartbeats and requests),
    /// then for the end of the stream.
    pub async fn goodbye(&mut self) -> pb::Goodbye {
        let wait = async {
            loop {
                match self.inbound.message().await {
                    Ok(Some(pb::BrokerFrame {
                        frame: Some(broker_frame::Frame::Goodbye(goodbye)),
                    })) => return goodbye,
                    Ok(Some(_)) => continue,
                    other => panic!("the session ended without a Goodbye: {other:?}"),
                }
            }
        };
        let goodbye = tokio::time::timeout(STARTUP_TIMEOUT, wait)
            .await
            .expect("no Goodbye in time");
        let end = tokio::time::timeout(STARTUP_TIMEOUT, self.inbound.message())
            .await
            .expect("the stream did not end after the Goodbye");
        assert!(matches!(end, Ok(None)), "frames after the Goodbye: {end:?}");
        goodbye
    }
}

/// Starts an in-process agent (the library's real session loop) and waits
/// until the broker refuses it; the refusal as the agent reports it.
pub async fn refused_agent(broker: &BrokerProcess, tenant: &Tenant, agent_id: &str) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let key_file = write_key(
        dir.path(),
        "listen.key",
        &tenant.key(Right::Listen, KeySlot::Primary),
    );
    let toml = AgentToml::new(
        &broker.url(),
        &broker.ca_file,
        &tenant.name,
        agent_id,
        &key_file,
    );
    let config = AgentConfig::from_toml(&toml.build()).expect("agent config");
    let mut agent = crate::spawn_agent(config, Arc::new(NoOperations));
    let wait = async {
        while let Some(event) = agent.events.recv().await {
            match event {
                AgentEvent::Refused { reason } => return reason,
                AgentEvent::Connected { .. } => panic!("agent {agent_id} was accepted"),
                _ => {}
            }
        }
        panic!("agent {agent_id} stopped");
    };
    let reason = tokio::time::timeout(STARTUP_TIMEOUT, wait)
        .await
        .unwrap_or_else(|_| panic!("agent {agent_id} was never refused"));
    agent.shutdown.cancel();
    let _ = agent.task.await;
    reason
}

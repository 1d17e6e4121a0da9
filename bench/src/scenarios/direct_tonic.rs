//! `direct_tonic`: a tonic unary echo over TLS, server in its own process,
//! the client configured exactly as the portal client is (the same
//! `BrokerEndpoint`): the floor for one gRPC hop.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use relay_client::connect::BrokerEndpoint;
use tonic::transport::{Channel, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

use super::Context;
use crate::echo::EchoMessage;
use crate::echo::echo_client::EchoClient;
use crate::echo::echo_server::{Echo, EchoServer};
use crate::load::{self, Call, Measured};
use crate::payload;
use crate::procs::{Proc, this_binary};

/// `bench echo-server`: serves the echo service on 127.0.0.1, TLS.
#[derive(clap::Args)]
pub struct ServerArgs {
    #[arg(long)]
    cert: PathBuf,
    #[arg(long)]
    key: PathBuf,
}

struct EchoService;

#[tonic::async_trait]
impl Echo for EchoService {
    async fn echo(&self, request: Request<EchoMessage>) -> Result<Response<EchoMessage>, Status> {
        Ok(Response::new(request.into_inner()))
    }
}

/// Runs the echo server; prints `ready addr=ADDR` once it listens.
pub async fn server(args: ServerArgs) -> anyhow::Result<()> {
    let identity = broker::tls::load_identity(&args.cert, &args.key)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr: SocketAddr = listener.local_addr()?;
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    println!("ready addr={addr}");
    Server::builder()
        .tls_config(ServerTlsConfig::new().identity(identity))?
        .add_service(EchoServer::new(EchoService))
        .serve_with_incoming(incoming)
        .await?;
    Ok(())
}

#[derive(Clone)]
struct EchoCall {
    client: EchoClient<Channel>,
    payload: Vec<u8>,
}

impl Call for EchoCall {
    async fn call(&self) -> anyhow::Result<()> {
        let reply = self
            .client
            .clone()
            .echo(EchoMessage {
                payload: self.payload.clone(),
            })
            .await?
            .into_inner();
        anyhow::ensure!(reply.payload.len() == self.payload.len(), "short echo");
        Ok(())
    }
}

pub async fn measure(ctx: &Context) -> anyhow::Result<Measured> {
    let dir = ctx.subdir("direct_tonic")?;
    let mut cmd = this_binary("echo-server")?;
    cmd.arg("--cert")
        .arg(&ctx.pki.server_cert)
        .arg("--key")
        .arg(&ctx.pki.server_key);
    let mut server = Proc::spawn("echo server", cmd, &dir.join("server.log"))?;
    let ready = server.expect_line("ready addr=").await?;
    let addr = ready.trim_start_matches("ready addr=");
    let channel = BrokerEndpoint::new(format!("https://{addr}"), Some(&ctx.pki.ca_cert))
        .connect()
        .await
        .context("connect to the echo server")?;
    let call = EchoCall {
        client: EchoClient::new(channel),
        payload: payload::bytes(),
    };
    let measured = load::measure(call, &ctx.settings.plan, &[("server", server.pid()?)]).await;
    server.kill9().await?;
    measured
}

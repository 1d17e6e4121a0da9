//! The client a reset portal uses to reach its tenant's agents through the
//! broker. It holds the tenant's Send key and mints a short-lived token for
//! every call; the key itself never leaves the process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::pb::relay_client::RelayClient;
use proto::pb::{self, Operation};
use sas::Right;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::connect::BrokerEndpoint;
use crate::credential::{Authorize, Credential};
use crate::error::ClientError;

type Inner = RelayClient<InterceptedService<Channel, Authorize>>;

/// An agent's answer to a submitted request.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub request_id: String,
    pub agent_id: String,
    /// The agent's sealed reply.
    pub envelope: Vec<u8>,
}

/// The result of a connectivity test.
#[derive(Debug, Clone)]
pub struct Pong {
    pub agent_id: String,
    pub agent_version: String,
    /// Broker -> agent -> broker.
    pub broker_agent_rtt: Duration,
    /// This client -> broker -> agent and back.
    pub round_trip: Duration,
}

#[derive(Clone)]
pub struct PortalClient {
    tenant: String,
    inner: Inner,
    /// A W3C `traceparent` sent with Submit and Ping (see
    /// [`PortalClient::with_traceparent`]).
    traceparent: Option<Arc<str>>,
}

impl PortalClient {
    /// Connects with `credential` (Send, or Manage for ping and configuration).
    pub async fn connect(
        endpoint: &BrokerEndpoint,
        tenant: impl Into<String>,
        credential: Credential,
    ) -> Result<PortalClient, ClientError> {
        let channel = endpoint.connect().await?;
        Ok(PortalClient::with_channel(channel, tenant, credential))
    }

    pub fn with_channel(
        channel: Channel,
        tenant: impl Into<String>,
        credential: Credential,
    ) -> PortalClient {
        PortalClient {
            tenant: tenant.into(),
            inner: RelayClient::with_interceptor(channel, Authorize(credential)),
            traceparent: None,
        }
    }

    /// This client (a cheap clone, on the same connection) sending
    /// `traceparent`, a W3C trace context such as
    /// `00-<32 hex trace id>-<16 hex span id>-01`, as the `traceparent`
    /// metadata entry of its Submit and Ping calls, so that the broker's
    /// and the agent's spans join the caller's trace. The SDK itself
    /// records no traces; a value that is not valid metadata is not sent.
    pub fn with_traceparent(&self, traceparent: impl Into<String>) -> PortalClient {
        PortalClient {
            traceparent: Some(traceparent.into().into()),
            ..self.clone()
        }
    }

    /// Adds the caller's trace context, if any, to a call.
    fn traced<T>(&self, request: &mut tonic::Request<T>) {
        if let Some(value) = self
            .traceparent
            .as_deref()
            .and_then(|t| tonic::metadata::MetadataValue::try_from(t).ok())
        {
            request.metadata_mut().insert("traceparent", value);
        }
    }

    /// Convenience: a Send credential for `tenant` from its key.
    pub fn send_credential(tenant: &str, key: sas::Key) -> Credential {
        Credential::new(tenant, Right::Send, key)
    }

    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// Relays a sealed envelope to `agent_id`, the agent it is addressed to,
    /// and returns its sealed reply. `timeout` becomes the call's gRPC
    /// deadline (the broker's default applies when `None`).
    pub async fn submit(
        &self,
        request_id: &str,
        operation: Operation,
        agent_id: &str,
        envelope: Vec<u8>,
        timeout: Option<Duration>,
    ) -> Result<Submitted, ClientError> {
        let mut request = tonic::Request::new(pb::SubmitRequest {
            tenant: self.tenant.clone(),
            request_id: request_id.to_owned(),
            operation: operation as i32,
            envelope: envelope.into(),
            agent_id: agent_id.to_owned(),
        });
        if let Some(t) = timeout {
            request.set_timeout(t);
        }
        self.traced(&mut request);
        let reply = self
            .inner
            .clone()
            .submit(request)
            .await
            .map_err(|status| crate::error::submit_failure(status, request_id))?
            .into_inner();
        Ok(Submitted {
            request_id: reply.request_id,
            agent_id: reply.agent_id,
            envelope: reply.envelope,
        })
    }

    /// The outcome of a request whose submit ended in OUTCOME_UNKNOWN: the
    /// agent's sealed reply once it posted it; OUTCOME_PENDING while the
    /// broker still waits; OUTCOME_NOT_FOUND when the broker knows nothing.
    pub async fn outcome(&self, request_id: &str) -> Result<Submitted, ClientError> {
        let request = || pb::GetOutcomeRequest {
            tenant: self.tenant.clone(),
            request_id: request_id.to_owned(),
        };
        let reply = read_only(|| {
            let (mut client, request) = (self.inner.clone(), request());
            async move { client.get_outcome(request).await }
        })
        .await?
        .into_inner();
        Ok(Submitted {
            request_id: reply.request_id,
            agent_id: reply.agent_id,
            envelope: reply.envelope,
        })
    }

    /// Travels to an agent and back: the first thing to try.
    pub async fn ping(&self, timeout: Option<Duration>) -> Result<Pong, ClientError> {
        let request = || {
            let mut request = tonic::Request::new(pb::PingRequest {
                tenant: self.tenant.clone(),
            });
            if let Some(t) = timeout {
                request.set_timeout(t);
            }
            self.traced(&mut request);
            request
        };
        let started = Instant::now();
        let reply = read_only(|| {
            let (mut client, request) = (self.inner.clone(), request());
            async move { client.ping(request).await }
        })
        .await?
        .into_inner();
        Ok(Pong {
            agent_id: reply.agent_id,
            agent_version: reply.agent_version,
            broker_agent_rtt: Duration::from_micros(reply.broker_agent_rtt_us),
            round_trip: started.elapsed(),
        })
    }

    /// The tenant's write-back configuration and agents online.
    pub async fn configuration(&self) -> Result<pb::TenantConfiguration, ClientError> {
        let request = || pb::GetConfigurationRequest {
            tenant: self.tenant.clone(),
        };
        Ok(read_only(|| {
            let (mut client, request) = (self.inner.clone(), request());
            async move { client.get_configuration(request).await }
        })
        .await?
        .into_inner())
    }
}

/// Runs a call that changes nothing, and runs it again when its connection
/// broke under it with no answer from the broker (three tries in all). The
/// broker closes a connection idle for `limits.idle_timeout` at the socket; a call
/// sent at that very moment meets the close without having been read, and
/// the channel's next call reconnects. A Submit is never retried here: its
/// failure is OUTCOME_UNKNOWN (see [`crate::error`]).
async fn read_only<T, F, Fut>(mut call: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    // Up to two more times: a call retried at once can still be queued on
    // the connection that is closing (the channel has not yet seen it go),
    // and meet the same close; seen once in CI among 30 calls.
    let mut retries = 2;
    loop {
        match call().await {
            Err(status) if retries > 0 && connection_broke(&status) => retries -= 1,
            done => return done,
        }
    }
}

/// A failure of the connection rather than an answer of the broker's: the
/// broker's own errors carry a reason. A connection closed under a call
/// shows as UNAVAILABLE or UNKNOWN ("transport error") when the call was
/// being written, CANCELLED ("operation was canceled") when it was still
/// queued for the connection.
fn connection_broke(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
    ) && proto::reason_of(status).is_none()
}

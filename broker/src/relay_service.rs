//! The portal-facing service: Submit, Ping and GetConfiguration.
//!
//! In cluster mode all three act on this node's copy of the tenant's
//! settings, so they are refused (STATE_UNCONFIRMED) while that copy is not
//! known to be current ([`crate::lease`]); GetOutcome reads the shared
//! outcomes bucket and is not.

use std::sync::Arc;
use std::time::Duration;

use proto::pb::relay_server::Relay;
use proto::pb::{self, Operation};
use sas::Right;
use tokio::time::Instant;
use tonic::{Request, Response, Status};
use tracing::{Instrument, debug, info, info_span};

use crate::error::RelayError;
use crate::metrics::{OperationLabel, RequestLabels};
use crate::outcomes::{OutcomeRecord, Recording, Settled, StoredAnswer};
use crate::routing::{RouteReply, RouteRequest};
use crate::state::State;

pub struct RelayService {
    state: Arc<State>,
}

impl RelayService {
    pub fn new(state: Arc<State>) -> RelayService {
        RelayService { state }
    }

    fn deadline<T>(&self, request: &Request<T>) -> Duration {
        crate::deadline::effective(
            request.metadata(),
            self.state.live().default_deadline,
            self.state.live().max_deadline,
        )
    }

    fn count(&self, outcome: &'static str, operation: &'static str) {
        self.state
            .metrics
            .requests
            .get_or_create(&RequestLabels { operation, outcome })
            .inc();
        self.state.recent.record(outcome, None);
    }

    async fn relay(
        &self,
        request: RouteRequest,
        operation_label: &'static str,
    ) -> Result<RouteReply, RelayError> {
        relay(&self.state, request, operation_label).await
    }
}

/// How long an OUTCOME_UNKNOWN waits for its record before the caller is
/// told anyway.
const RECORD_BEFORE_ANSWER: Duration = Duration::from_millis(250);
/// How long a request waits for its awaited record to be durable before it
/// is relayed anyway (the store is slow or, in cluster mode, unreachable).
const RECORD_BEFORE_RELAY: Duration = Duration::from_millis(500);

/// Routes a request and records its outcome and latency.
async fn relay(
    state: &State,
    request: RouteRequest,
    operation_label: &'static str,
) -> Result<RouteReply, RelayError> {
    let started = Instant::now();
    if state.shutdown.is_cancelled() {
        return Err(RelayError::ShuttingDown);
    }
    // The caller's deadline is within the margin: nothing could be relayed
    // and answered in time, so nothing is sent to an agent.
    if request.budget.is_zero() {
        return Err(RelayError::DeadlineExceeded(request.budget));
    }
    let result = state.router.route(request).await;
    let outcome = match &result {
        Ok(_) => "delivered",
        Err(e) => e.outcome(),
    };
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            operation: operation_label,
            outcome,
        })
        .inc();
    let elapsed = started.elapsed();
    state
        .metrics
        .request_duration
        .get_or_create(&OperationLabel {
            operation: operation_label,
        })
        .observe(elapsed.as_secs_f64());
    state.recent.record(outcome, Some(elapsed));
    result
}

/// Removes a request id from the in-flight set however the request ends.
struct InFlightId {
    state: Arc<State>,
    key: (String, String),
}

impl Drop for InFlightId {
    fn drop(&mut self) {
        self.state.in_flight_ids.remove(&self.key);
        self.state.request_ended.notify_waiters();
    }
}

fn operation_label(op: Operation) -> &'static str {
    match op {
        Operation::Unspecified => "unspecified",
        Operation::Ping => "ping",
        Operation::ResetPassword => "reset_password",
        Operation::ChangePassword => "change_password",
        Operation::UnlockAccount => "unlock_account",
        Operation::GetPasswordPolicy => "get_password_policy",
    }
}

/// The portal's W3C `traceparent` metadata entry, if it sent one.
fn caller_traceparent<T>(request: &Request<T>) -> Option<String> {
    request
        .metadata()
        .get(crate::telemetry::TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[tonic::async_trait]
impl Relay for RelayService {
    async fn submit(
        &self,
        request: Request<pb::SubmitRequest>,
    ) -> Result<Response<pb::SubmitReply>, Status> {
        let budget = self.deadline(&request);
        let deadline = Instant::now() + budget;
        let traceparent = caller_traceparent(&request);
        let state = &self.state;
        let body = request.get_ref();
        state.audit.authorize_request(
            &state.authorizer,
            &request,
            "relay.v1.Relay/Submit",
            Some(&body.tenant),
            &[Right::Send],
        )?;
        // Before any of the tenant's settings are read: they may be stale.
        state.tenants.require_current()?;
        let pb::SubmitRequest {
            tenant,
            request_id,
            operation,
            envelope,
            agent_id,
        } = request.into_inner();
        if !proto::names::is_valid_request_id(&request_id) {
            return Err(RelayError::InvalidRequestId.into());
        }
        let operation = match Operation::try_from(operation) {
            Ok(Operation::Unspecified) | Err(_) => {
                return Err(RelayError::InvalidOperation(format!(
                    "operation {operation} is not a relay.v1 Operation"
                ))
                .into());
            }
            Ok(Operation::Ping) => {
                return Err(
                    RelayError::InvalidOperation("use the Ping call to ping".into()).into(),
                );
            }
            Ok(op) => op,
        };
        // The addressee of a sealed operation: the request goes to that
        // agent only.
        if !proto::names::is_valid_agent_id(&agent_id) {
            return Err(RelayError::InvalidAddressee.into());
        }
        if envelope.len() > state.config.max_envelope_bytes {
            return Err(RelayError::EnvelopeTooLarge {
                size: envelope.len(),
                limit: state.config.max_envelope_bytes,
            }
            .into());
        }
        if !state.tenants.require(&tenant)?.writeback_enabled {
            return Err(RelayError::WritebackDisabled(tenant).into());
        }
        if let Err(retry_after) = state.rate_limit.check(&tenant, Instant::now()) {
            let e = RelayError::RateLimited {
                tenant,
                limit: state.rate_limit.per_minute(),
                retry_after,
            };
            self.count("rate_limited", operation_label(operation));
            info!(reason = %e.reason(), error = %e, "request refused");
            return Err(e.into());
        }
        let key = (tenant.clone(), request_id.clone());
        if !state.in_flight_ids.insert(key.clone()) {
            return Err(RelayError::DuplicateRequestId(request_id).into());
        }
        let id = InFlightId {
            state: Arc::clone(state),
            key,
        };
        // Span fields are exported as attributes: ids and names only.
        let span = info_span!(
            "relay.submit",
            relay.tenant = %tenant,
            relay.request_id = %request_id,
            relay.operation = operation_label(operation),
            relay.outcome = tracing::field::Empty,
            relay.reason = tracing::field::Empty,
        );
        crate::telemetry::continue_trace(&span, traceparent.as_deref());
        // Routed on its own task: a portal that hangs up, or whose deadline
        // fires first, does not cancel a request an agent may already hold.
        // The task owns the request to its end: it answers the caller if
        // still there and records the final state for GetOutcome (a failure
        // before the caller hears of it), and only then releases the id, so
        // GetOutcome sees PENDING until the record.
        let (answer_caller, answered) = tokio::sync::oneshot::channel();
        tokio::spawn(
            {
                let state = Arc::clone(state);
                let request_id = request_id.clone();
                async move {
                    let _id = id;
                    let mut recording = Recording::begin(&state.outcomes, &tenant, &request_id);
                    // Without NATS the record cannot be written at all, and a
                    // node with the agent still serves it: no point waiting.
                    let store_reachable = state.cluster.as_ref().is_none_or(|c| c.is_up());
                    if store_reachable && !recording.opened_within(RECORD_BEFORE_RELAY).await {
                        tracing::warn!(bound = ?RECORD_BEFORE_RELAY, "the request's awaited record is not durable; relaying it anyway: a broker crash now would lose its answer");
                    }
                    let size = envelope.len();
                    let result = relay(
                        &state,
                        RouteRequest {
                            tenant: tenant.clone(),
                            request_id: request_id.clone(),
                            operation,
                            agent_id: Some(agent_id),
                            envelope,
                            deadline,
                            budget,
                            progress: None,
                        },
                        operation_label(operation),
                    )
                    .await;
                    let current = tracing::Span::current();
                    match &result {
                        Ok(_) => current.record("relay.outcome", "answered"),
                        Err(e) => current
                            .record("relay.outcome", "failed")
                            .record("relay.reason", e.reason().as_str()),
                    };
                    match &result {
                        Ok(reply) => info!(agent_id = %reply.agent_id, envelope_bytes = size, reply_bytes = reply.envelope.len(), rtt_us = reply.rtt.as_micros() as u64, "request answered"),
                        Err(e) => info!(reason = %e.reason(), error = %e, "request failed"),
                    }
                    let settled = Settled::of(&result);
                    let unknown = matches!(&result, Err(e) if e.reason() == proto::Reason::OutcomeUnknown);
                    let record = async {
                        if let Err(e) = recording.finish(settled).await {
                            tracing::warn!(error = %e, "cannot record the request's outcome");
                        }
                    };
                    tokio::pin!(record);
                    // OUTCOME_UNKNOWN is recorded before the caller hears of
                    // it (within a bound: a store that cannot be reached must
                    // not hold the answer), so the GetOutcome it asks next
                    // already names the agent and whether it acknowledged.
                    // Anything else goes to the caller first.
                    let recorded = unknown
                        && tokio::time::timeout(RECORD_BEFORE_ANSWER, &mut record)
                            .await
                            .is_ok();
                    let _ = answer_caller.send(result);
                    if !recorded {
                        record.await;
                    }
                }
            }
            .instrument(span),
        );
        let reply = answered
            .await
            .map_err(|_| Status::internal("the routing task failed"))??;
        Ok(Response::new(pb::SubmitReply {
            request_id,
            agent_id: reply.agent_id,
            envelope: reply.envelope,
        }))
    }

    async fn ping(
        &self,
        request: Request<pb::PingRequest>,
    ) -> Result<Response<pb::PingReply>, Status> {
        let budget = self.deadline(&request);
        let deadline = Instant::now() + budget;
        let traceparent = caller_traceparent(&request);
        let tenant = request.get_ref().tenant.clone();
        self.state.audit.authorize_request(
            &self.state.authorizer,
            &request,
            "relay.v1.Relay/Ping",
            Some(&tenant),
            &[Right::Send, Right::Manage],
        )?;
        // A revoked agent must not answer either.
        self.state.tenants.require_current()?;
        let request_id = format!("ping-{:016x}", fastrand::u64(..));
        let span = info_span!(
            "relay.ping",
            relay.tenant = %tenant,
            relay.request_id = %request_id,
            relay.operation = "ping"
        );
        crate::telemetry::continue_trace(&span, traceparent.as_deref());
        async {
            let reply = self
                .relay(
                    RouteRequest {
                        tenant,
                        request_id,
                        operation: Operation::Ping,
                        agent_id: None,
                        envelope: Default::default(),
                        deadline,
                        budget,
                        progress: None,
                    },
                    "ping",
                )
                .await?;
            debug!(agent_id = %reply.agent_id, rtt_us = reply.rtt.as_micros() as u64, "ping answered");
            Ok(Response::new(pb::PingReply {
                agent_id: reply.agent_id,
                agent_version: reply.agent_version,
                broker_agent_rtt_us: reply.rtt.as_micros() as u64,
            }))
        }
        .instrument(span)
        .await
        .map_err(|e: RelayError| e.into())
    }

    async fn get_configuration(
        &self,
        request: Request<pb::GetConfigurationRequest>,
    ) -> Result<Response<pb::TenantConfiguration>, Status> {
        let tenant = &request.get_ref().tenant;
        self.state.audit.authorize_request(
            &self.state.authorizer,
            &request,
            "relay.v1.Relay/GetConfiguration",
            Some(tenant),
            &[Right::Send, Right::Listen, Right::Manage, Right::Operator],
        )?;
        // Stale agent keys or a stale write-back switch would send the
        // portal the wrong way.
        self.state.tenants.require_current()?;
        Ok(Response::new(configuration(&self.state, tenant)?))
    }

    async fn get_outcome(
        &self,
        request: Request<pb::GetOutcomeRequest>,
    ) -> Result<Response<pb::SubmitReply>, Status> {
        let pb::GetOutcomeRequest { tenant, request_id } = request.get_ref().clone();
        self.state.audit.authorize_request(
            &self.state.authorizer,
            &request,
            "relay.v1.Relay/GetOutcome",
            Some(&tenant),
            &[Right::Send],
        )?;
        if !proto::names::is_valid_request_id(&request_id) {
            return Err(RelayError::InvalidRequestId.into());
        }
        self.state.tenants.require(&tenant)?;
        let outcome = self
            .state
            .outcomes
            .get(&tenant, &request_id)
            .await
            .map_err(RelayError::from)?;
        match outcome {
            // Still being routed (the portal gave up first): the answer may
            // come. The in-flight id is released only after an unknown
            // outcome has been recorded, so there is no gap between the two.
            None if self
                .state
                .in_flight_ids
                .contains(&(tenant.clone(), request_id.clone())) =>
            {
                Err(RelayError::OutcomePending {
                    request_id,
                    awaited: None,
                }
                .into())
            }
            None => Err(RelayError::OutcomeNotFound(request_id).into()),
            Some(OutcomeRecord {
                agent_id,
                acknowledged,
                answer: None,
                ..
            }) => Err(RelayError::OutcomePending {
                request_id,
                awaited: Some((agent_id, acknowledged)),
            }
            .into()),
            Some(OutcomeRecord {
                agent_id,
                answer: Some(StoredAnswer::Envelope(envelope)),
                ..
            }) => Ok(Response::new(pb::SubmitReply {
                request_id,
                agent_id,
                envelope,
            })),
            Some(OutcomeRecord {
                agent_id,
                answer:
                    Some(StoredAnswer::Error {
                        code,
                        refusal,
                        message,
                    }),
                ..
            }) => Err(RelayError::from_agent(agent_id, code, refusal, &message).into()),
            Some(OutcomeRecord {
                agent_id,
                answer: Some(StoredAnswer::Failed { refusal, message }),
                ..
            }) => Err(RelayError::AgentError {
                agent_id,
                refusal,
                message,
            }
            .into()),
        }
    }
}

/// The configuration view of a tenant, with the agents this node holds.
pub fn configuration(state: &State, tenant: &str) -> Result<pb::TenantConfiguration, RelayError> {
    let record = state.tenants.require(tenant)?;
    Ok(pb::TenantConfiguration {
        tenant: record.name.clone(),
        connector_name: record.connector_name.clone(),
        writeback_enabled: record.writeback_enabled,
        modified_unix_ms: record.modified_unix_ms,
        agents_online: state.registry.agent_infos(tenant),
        agent_keys: record.agent_keys.iter().map(agent_key_to_pb).collect(),
        broker_time_unix_ms: crate::time::now_unix_ms(),
    })
}

pub fn agent_key_to_pb(k: &crate::store::AgentKeyRecord) -> pb::AgentKey {
    pb::AgentKey {
        key_id: k.key_id.clone(),
        public_key: k.public_key.clone(),
        registered_unix_ms: k.registered_unix_ms,
        endorsements: k
            .endorsements
            .iter()
            .map(|(portal_key_id, endorsement)| pb::KeyEndorsement {
                portal_key_id: portal_key_id.clone(),
                endorsement: endorsement.clone(),
            })
            .collect(),
    }
}

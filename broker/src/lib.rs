//! The relay broker: a multi-tenant gRPC relay between cloud reset portals and
//! on-prem write-back agents, which connect to it outbound and hold sessions.
//!
//! # Layout
//! In the order a request travels:
//! - [`server`]: start-up (store, listeners, TLS) and shutdown of one node.
//! - [`auth`]: shared access signature checks per tenant and right.
//! - [`relay_service`] over [`deadline`]: the portal-facing `Relay` service
//!   (Submit, Ping, GetConfiguration), bounded by the caller's `grpc-timeout`.
//! - [`ratelimit`]: the per-tenant request rate limit.
//! - [`routing`] over [`sessions`]: the [`routing::Router`] that hands a
//!   request to one of the live agent sessions and waits for its Ack and
//!   answer (two-stage delivery).
//! - [`cluster`]: several nodes on NATS (docs/CLUSTER.md): a request for a
//!   tenant whose agent is on another node is forwarded there; tenants and
//!   late outcomes are shared in JetStream.
//! - [`outcomes`]: answers that came after the portal was told
//!   OUTCOME_UNKNOWN, kept sealed for GetOutcome.
//! - [`gateway`]: the agent-facing `AgentGateway` service that authenticates
//!   and drives each session (heartbeats, replies, token renewal, goodbye).
//! - [`answer`]: what an agent answered, as sessions carry it and outcome
//!   records keep it.
//! - [`agent_text`]: text an agent chooses (its version, its error messages)
//!   made printable once, where it enters the broker.
//! - [`reflection`]: gRPC server reflection of the services above, for
//!   grpcurl and other generic clients (it describes; it grants nothing).
//! - [`admin_service`]: tenants, write-back switch, agents, keys.
//! - [`agent_keys`]: the agents' write-back public keys, which portals read
//!   and verify (the broker only stores them).
//! - [`tenants`] over [`store`]: tenants in memory, committed first to the
//!   store behind the persistence traits ([`store::TenantStore`],
//!   [`store::OutcomeStore`]): redb on one node, NATS buckets in a cluster.
//! - [`lease`]: in a cluster, whether this node's copy of the tenants is
//!   known to be current; requests are refused while it is not.
//! - [`operator`], [`metrics`]: /healthz, /readyz, /metrics, served with
//!   request deadlines and connection caps (the `http-serve` crate).
//! - [`backup_route`]: `POST /backup` on the operator port, a consistent
//!   backup of the single node's store while it runs.
//! - [`store_commands`]: the `backup`, `restore` and `storage-key rotate`
//!   commands of `relay-broker`.
//! - [`status_page`] over [`recent`]: the operator's HTML status page
//!   (nodes, tenants, agents, the last 15 minutes' requests).
//! - [`audit`]: the audit trail: admin changes, logins and refused calls,
//!   one JSON line each, in a file of its own.
//! - [`error`]: the one error type and its conversion to gRPC statuses.
//! - [`listener`]: the gRPC socket, its accept loop and TLS handshakes.
//! - [`ingress`]: what a caller can make the gRPC port spend before it
//!   proves a key: connections against the descriptor budget and their
//!   deadlines, tokens checked from the headers before any body is read.
//! - [`state`]: what every service of one node shares.
//! - [`reload`]: SIGHUP (the config file and TLS certificate swapped in
//!   live) and `check-config`.
//! - [`sealing`]: the storage key that seals tenant records at rest, in
//!   redb on one node and in NATS in a cluster.
//! - [`config`], [`tls`], [`telemetry`], [`time`]: the edges.
//!
//! Envelopes are opaque bytes here: the broker never holds a key that can
//! open one.

pub mod admin_service;
pub mod agent_keys;
pub mod agent_text;
pub mod answer;
pub mod audit;
pub mod auth;
pub mod backup_route;
pub mod cluster;
pub mod config;
pub mod deadline;
pub mod error;
pub mod gateway;
pub mod ingress;
pub mod lease;
pub mod listener;
pub mod metrics;
pub mod operator;
pub mod outcomes;
pub mod ratelimit;
pub mod recent;
pub mod reflection;
pub mod relay_service;
pub mod reload;
pub mod routing;
pub mod sealing;
pub mod server;
pub mod sessions;
pub mod state;
pub mod status_page;
pub mod store;
pub mod store_commands;
pub mod telemetry;
pub mod tenants;
pub mod time;
pub mod tls;

pub use config::BrokerConfig;
pub use server::{Broker, BrokerError, start};

#[cfg(test)]
mod boundaries {
    /// The broker must never be able to open an envelope: it does not even
    /// link the code that could.
    #[test]
    fn the_broker_does_not_depend_on_envelope_crypto() {
        let manifest = include_str!("../Cargo.toml");
        for forbidden in ["envelope", "hpke", "chacha20poly1305", "x25519"] {
            assert!(
                !manifest.contains(forbidden),
                "broker/Cargo.toml must not depend on {forbidden}"
            );
        }
    }
}

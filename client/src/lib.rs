//! The client side of the relay, for reset portals and operators: connect
//! to the broker, submit requests (plain or sealed end to end), administer
//! tenants, and the wire vocabulary (outcome names, the enrollment bundle)
//! that portals, `relayctl` and the agent share. It links no directory, no
//! local store and no command line: a portal takes it without the agent's
//! dependencies.
//!
//! # Layout
//! - [`connect`]: TLS connections to the broker (CA file or system roots;
//!   verification cannot be turned off), keepalive.
//! - [`proxy`]: the HTTP CONNECT tunnel for networks that only let
//!   traffic out through a forward proxy.
//! - [`credential`]: keys held locally, tokens minted from them per call.
//! - [`portal_client`]: [`portal_client::PortalClient`], what a reset portal
//!   calls: submit, ping, configuration.
//! - [`sealed`]: [`sealed::SealedPortal`], sealing requests end to end to
//!   trusted agent keys and opening the sealed answers.
//! - [`admin`]: [`admin::AdminClient`], tenant administration.
//! - [`outcome`]: outcome codes by their stable names.
//! - [`enrollment`]: the enrollment bundle that carries a portal's public
//!   keys to the agents.
//! - [`error`]: client errors carrying the broker's stable reasons.

pub mod admin;
pub mod connect;
pub mod credential;
pub mod enrollment;
pub mod error;
pub mod outcome;
pub mod portal_client;
pub mod proxy;
pub mod sealed;

pub use error::{ClientError, EnvelopeRefusal, Reason};

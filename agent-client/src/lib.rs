//! The on-prem write-back agent, and the client library portals and
//! operators use to reach it through the relay broker.
//!
//! # Layout
//! - [`connect`]: TLS connections to the broker (CA file or system roots;
//!   verification cannot be turned off), keepalive.
//! - [`proxy`]: the HTTP CONNECT tunnel for networks that only let
//!   traffic out through a forward proxy.
//! - [`credential`]: keys held locally, tokens minted from them per call.
//! - [`portal`]: [`portal::PortalClient`], what a reset portal calls: submit,
//!   ping, configuration.
//! - [`sealed`]: [`sealed::SealedPortal`], sealing requests end to end to
//!   trusted agent keys and opening the sealed answers.
//! - [`admin`]: [`admin::AdminClient`], tenant administration.
//! - [`agent`]: the agent's session loop, reconnect backoff and the
//!   [`agent::RequestHandler`] seam that the directory operations plug into.
//! - [`directory`]: the directory seam and its backends (embedded, LDAPS to
//!   Active Directory): the operations and their exact refusals.
//! - [`connector`]: the connector space, the agent's index of every forest's
//!   accounts, which resolves the anchor a portal sends to one account.
//! - [`telemetry`]: log output to stderr, text or JSON lines.
//! - [`error`]: client errors carrying the broker's stable reasons.

pub mod admin;
pub mod agent;
pub mod connect;
pub mod connector;
pub mod credential;
pub mod directory;
pub mod error;
pub mod portal;
pub mod proxy;
pub mod sealed;
pub mod telemetry;

pub use error::{ClientError, EnvelopeRefusal, Reason};

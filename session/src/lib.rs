//! The relay's delivery protocol without I/O or clock, in the style of
//! quinn-proto: each state machine takes frames and `now`, and gives frames
//! to send, events for its driver and the next instant it wants to be woken.
//! The tonic and NATS code in the broker and the agent are thin drivers.
//!
//! # Layout
//! - [`agent`]: the agent's end of a session.
//! - [`broker`]: the broker's end of a session.
//! - [`forward`]: a request forwarded from one broker node to another.

pub mod agent;
pub mod broker;
pub mod forward;

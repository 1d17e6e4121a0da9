//! Routing one request over the sessions of this node (PROTOCOL.md
//! "Delivery", points 1-3): after each attempt on a session, whether to try
//! another session or how the request ends. Picking the session is the
//! registry's (it spans sessions); the rules are here.

use std::time::{Duration, Instant};

use super::{Answer, RequestEnd};

/// How a routed request ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Routed {
    /// The agent answered (its reply or its error).
    Answered { answer: Answer, rtt: Duration },
    /// The agent may have it and its answer is lost: OUTCOME_UNKNOWN.
    OutcomeUnknown {
        agent_id: String,
        acknowledged: bool,
    },
    /// The caller's deadline passed while no agent can have it (or it is a
    /// ping, which changes nothing).
    DeadlineExceeded,
    /// No routable session left (for an addressed request: the addressee
    /// has none). Nothing was sent.
    NoAgentOnline,
    /// Sessions exist, each with its most requests in flight.
    AgentsBusy,
}

/// After one attempt: another session, or the end.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Nothing reached the agent: pick another session (not the ones tried).
    TryAnother,
    Done(Routed),
}

/// The routing rules for one request.
#[derive(Debug, Clone)]
pub struct Route {
    addressed: bool,
    ping: bool,
    deadline: Instant,
    /// The last agent whose session took the request but ended without an
    /// Ack: it may have it even so.
    maybe_delivered: Option<String>,
}

impl Route {
    /// `addressed`: the envelope names one agent, so only its sessions are
    /// tried and it is never sent again once it may have arrived. `ping`:
    /// any agent may answer and an unknown outcome changes nothing.
    pub fn new(addressed: bool, ping: bool, deadline: Instant) -> Route {
        Route {
            addressed,
            ping,
            deadline,
            maybe_delivered: None,
        }
    }

    fn unknown(&self, agent_id: String, acknowledged: bool) -> Routed {
        if self.ping {
            Routed::DeadlineExceeded
        } else {
            Routed::OutcomeUnknown {
                agent_id,
                acknowledged,
            }
        }
    }

    /// The registry found no session to try; `busy`: only full ones.
    pub fn nowhere(&mut self, busy: bool) -> Routed {
        match self.maybe_delivered.take() {
            // It may have been applied: "no agent" or "busy" would claim
            // nothing happened.
            Some(agent_id) if !self.ping => Routed::OutcomeUnknown {
                agent_id,
                acknowledged: false,
            },
            _ if busy => Routed::AgentsBusy,
            _ => Routed::NoAgentOnline,
        }
    }

    /// The attempt on a session of `agent_id` ended with `end` at `now`.
    pub fn attempt_ended(&mut self, now: Instant, agent_id: &str, end: RequestEnd) -> Next {
        match end {
            RequestEnd::Answered { answer, rtt } => Next::Done(Routed::Answered { answer, rtt }),
            RequestEnd::Lost { acknowledged: true } => {
                Next::Done(self.unknown(agent_id.to_owned(), true))
            }
            RequestEnd::DeadlineExceeded { sent: false, .. } => {
                Next::Done(Routed::DeadlineExceeded)
            }
            RequestEnd::DeadlineExceeded {
                sent: true,
                acknowledged,
            } => Next::Done(self.unknown(agent_id.to_owned(), acknowledged)),
            // The addressed agent may have it: never sent again, not even
            // to a new session of the same agent (which would refuse it as
            // a replay and hide the outcome).
            RequestEnd::Lost {
                acknowledged: false,
            } if self.addressed => Next::Done(self.unknown(agent_id.to_owned(), false)),
            RequestEnd::Lost {
                acknowledged: false,
            } => {
                self.maybe_delivered = Some(agent_id.to_owned());
                self.retry(now)
            }
            RequestEnd::NotDelivered => self.retry(now),
        }
    }

    fn retry(&mut self, now: Instant) -> Next {
        if now < self.deadline {
            return Next::TryAnother;
        }
        Next::Done(match self.maybe_delivered.take() {
            Some(agent_id) if !self.ping => Routed::OutcomeUnknown {
                agent_id,
                acknowledged: false,
            },
            _ => Routed::DeadlineExceeded,
        })
    }
}

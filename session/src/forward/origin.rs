//! The forwarding node's machine for one forwarded request, over all its
//! attempts (PROTOCOL.md "The forwarding node").
//!
//! An attempt is *taken* once the serving node's Accepted came and this node
//! acknowledged it ([`Event::Confirm`]): the serving node gives the request
//! to an agent only after that go-ahead, so silence before it proves that no
//! agent got the request (NO_AGENT_ONLINE, or another attempt while a live
//! node announces the agent), and only silence after it makes the outcome
//! unknown.

use std::collections::VecDeque;
use std::time::Instant;

use proto::pb::{self, ForwardFailureKind, Operation, forward_event};

use super::{Config, millis};

/// How a forwarded request ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The agent's reply, through the node named in Accepted.
    Answered {
        reply: pb::ForwardReply,
        node: Option<String>,
    },
    /// A definite failure of the serving node (DEADLINE_EXCEEDED,
    /// OUTCOME_UNKNOWN, AGENT_ERROR; INVALID or an unknown kind, which the
    /// portal gets as CLUSTER_UNAVAILABLE), passed on as it is.
    Failed {
        failure: pb::ForwardFailure,
        node: Option<String>,
    },
    /// Nothing reached an agent: no node listens (no responders), no node
    /// took it, or every attempt, or the deadline, ran out while nodes said
    /// so. `last` is the
    /// last node's failure (NO_AGENT_ONLINE, AGENTS_BUSY, SHUTTING_DOWN);
    /// `None` when no node took it: NO_AGENT_ONLINE for the addressee.
    NotDelivered { last: Option<pb::ForwardFailure> },
    /// The serving node went silent after it took the request, so an agent
    /// may have it: the driver looks for the answer in the outcome record
    /// (the serving node keeps there an answer it could not deliver), and
    /// only without one says OUTCOME_UNKNOWN with what the node last
    /// reported.
    Lost {
        node: Option<String>,
        agent_id: Option<String>,
        acknowledged: bool,
    },
    /// A ping whose serving node went silent: it changed nothing.
    DeadlineExceeded,
    /// The cluster could not be reached (nothing was sent by this attempt).
    ClusterUnavailable,
}

/// What the driver must act on.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A serving node gave the request to no agent; another attempt follows
    /// (see [`Forwarding::poll_transmit`]) unless [`Event::Done`] does.
    NotSent(pb::ForwardFailure),
    /// Publish a ForwardAck to the NATS reply subject of the message just
    /// handled: the go-ahead for an Accepted, the receipt of a Reply.
    Confirm,
    /// The request's end. Nothing follows.
    Done(Outcome),
}

#[derive(Debug)]
enum State {
    Waiting {
        heard: Instant,
        node: Option<String>,
        progress: pb::ForwardProgress,
        /// Accepted came and was confirmed: an agent may get it.
        taken: bool,
        /// Who sent the confirmed Accepted (its acknowledgement subject):
        /// messages from anyone else are a twin's, ignored.
        sender: Option<String>,
    },
    /// No node listened, though one announces the addressee (it is
    /// resubscribing after losing its NATS server): publish again then.
    Backoff {
        until: Instant,
    },
    Done,
}

/// One forwarded request on the forwarding node.
#[derive(Debug)]
pub struct Forwarding {
    config: Config,
    request: pb::ForwardedRequest,
    deadline: Instant,
    attempts: u32,
    state: State,
    last: Option<pb::ForwardFailure>,
    transmit: Option<pb::ForwardedRequest>,
    events: VecDeque<Event>,
}

impl Forwarding {
    /// Starts forwarding `request` (its `timeout_ms` is set at each attempt
    /// from `deadline`). The first attempt is ready in
    /// [`Self::poll_transmit`], unless the deadline has passed.
    pub fn new(
        now: Instant,
        config: Config,
        request: pb::ForwardedRequest,
        deadline: Instant,
    ) -> Forwarding {
        let mut f = Forwarding {
            config,
            request,
            deadline,
            attempts: 0,
            state: State::Done,
            last: None,
            transmit: None,
            events: VecDeque::new(),
        };
        f.next_attempt(now);
        f
    }

    /// How long to wait before publishing again to nobody listening.
    fn backoff(&self) -> std::time::Duration {
        self.config.heartbeat / 4
    }

    fn is_ping(&self) -> bool {
        self.request.operation == Operation::Ping as i32
    }

    /// Attempts started so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn next_attempt(&mut self, now: Instant) {
        if self.attempts >= self.config.max_attempts || now >= self.deadline {
            let last = self.last.take();
            return self.done(Outcome::NotDelivered { last });
        }
        self.attempts += 1;
        self.publish(now);
    }

    /// Publishes the request again for the attempt under way.
    fn publish(&mut self, now: Instant) {
        let mut request = self.request.clone();
        request.timeout_ms = millis(self.deadline.saturating_duration_since(now));
        self.transmit = Some(request);
        self.state = State::Waiting {
            heard: now,
            node: None,
            progress: pb::ForwardProgress::default(),
            taken: false,
            sender: None,
        };
    }

    fn done(&mut self, outcome: Outcome) {
        self.state = State::Done;
        self.transmit = None;
        self.events.push_back(Event::Done(outcome));
    }

    /// The request to publish, on a fresh reply inbox, for the next attempt.
    pub fn poll_transmit(&mut self) -> Option<pb::ForwardedRequest> {
        self.transmit.take()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When the serving node's silence is given up on, or the request is
    /// published again after nobody listened.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Waiting { heard, .. } => Some(self.give_up(*heard)),
            State::Backoff { until } => Some(*until),
            State::Done => None,
        }
    }

    fn give_up(&self, heard: Instant) -> Instant {
        let silence = self.config.silence();
        (heard + silence).min(self.deadline + silence.min(self.config.final_word))
    }

    /// One message from the serving node; an event with no kind set (it did
    /// not decode) only proves the node alive.
    pub fn handle_frame(&mut self, now: Instant, event: pb::ForwardEvent) {
        self.handle_frame_from(now, "", event)
    }

    /// One message from the serving node whose acknowledgement subject is
    /// `sender`. NATS may deliver one publication twice across a reconnect:
    /// two serving tasks then answer on one inbox, and only the one whose
    /// Accepted was confirmed may end the attempt (the other, never
    /// confirmed, routes nothing and says NO_AGENT_ONLINE, which must not
    /// send the request to an agent a second time).
    pub fn handle_frame_from(&mut self, now: Instant, sender: &str, event: pb::ForwardEvent) {
        let State::Waiting {
            heard,
            node,
            progress,
            taken,
            sender: confirmed,
        } = &mut self.state
        else {
            return;
        };
        if confirmed.as_deref().is_some_and(|c| c != sender) {
            return;
        }
        *heard = now;
        match event.event {
            None => {}
            Some(forward_event::Event::Accepted(a)) => {
                *node = Some(a.node);
                if !*taken {
                    *taken = true;
                    *confirmed = Some(sender.to_owned());
                    self.events.push_back(Event::Confirm);
                }
            }
            Some(forward_event::Event::Progress(p)) => *progress = p,
            Some(forward_event::Event::Reply(reply)) => {
                let node = node.take();
                self.events.push_back(Event::Confirm);
                self.done(Outcome::Answered { reply, node });
            }
            Some(forward_event::Event::Failure(failure)) => {
                let node = node.take();
                self.failure(now, failure, node);
            }
        }
    }

    fn failure(&mut self, now: Instant, failure: pb::ForwardFailure, node: Option<String>) {
        use ForwardFailureKind as K;
        match K::try_from(failure.kind).unwrap_or(K::Unspecified) {
            // Nothing reached an agent: another node may take it.
            K::NoAgentOnline | K::AgentsBusy | K::ShuttingDown => {
                self.events.push_back(Event::NotSent(failure.clone()));
                self.last = Some(failure);
                self.next_attempt(now);
            }
            _ => self.done(Outcome::Failed { failure, node }),
        }
    }

    /// A message that did not decode: ignored, but the node is alive.
    pub fn undecodable(&mut self, now: Instant) {
        if let State::Waiting { heard, .. } = &mut self.state {
            *heard = now;
        }
    }

    /// NATS answered *no responders*: no node listens for the addressee
    /// (for a ping, any agent of the tenant). `present`: a live node
    /// announces it all the same (it lost its NATS server and is
    /// subscribing again), so the request is published again shortly, until
    /// the deadline or until that node's presence lapses; otherwise nothing
    /// reached an agent and asking again cannot help.
    pub fn no_responders(&mut self, now: Instant, present: bool) {
        if !matches!(self.state, State::Waiting { taken: false, .. }) {
            return;
        }
        let until = now + self.backoff();
        if present && until < self.deadline {
            self.state = State::Backoff { until };
        } else {
            let last = self.last.take();
            self.done(Outcome::NotDelivered { last });
        }
    }

    /// The cluster is down, or the subscribe or publish failed.
    pub fn unavailable(&mut self, _now: Instant) {
        if !self.is_done() {
            self.done(Outcome::ClusterUnavailable);
        }
    }

    /// The reply inbox closed (this node's client is closing): as silence,
    /// with no other attempt.
    pub fn inbox_closed(&mut self, now: Instant) {
        self.silent(now, false);
    }

    /// Gives up on a silent serving node, or publishes again after a
    /// backoff. `present`: a live node announces the addressee now.
    pub fn handle_timeout(&mut self, now: Instant, present: bool) {
        match &self.state {
            State::Waiting { heard, .. } if now >= self.give_up(*heard) => {
                self.silent(now, present)
            }
            State::Backoff { until } if now >= *until => {
                if present && now < self.deadline {
                    self.publish(now);
                } else {
                    let last = self.last.take();
                    self.done(Outcome::NotDelivered { last });
                }
            }
            _ => {}
        }
    }

    /// The serving node said nothing more. Before it took the request no
    /// agent can have it: another attempt while a live node announces the
    /// addressee, else NO_AGENT_ONLINE. After, the outcome is unknown.
    fn silent(&mut self, now: Instant, present: bool) {
        match self.state {
            State::Waiting { taken: false, .. } if present => self.next_attempt(now),
            State::Waiting { taken: false, .. } | State::Backoff { .. } => {
                let last = self.last.take();
                self.done(Outcome::NotDelivered { last });
            }
            _ => self.lost(),
        }
    }

    /// Whatever the serving node did is unknown; a ping changes nothing.
    fn lost(&mut self) {
        let State::Waiting { node, progress, .. } = std::mem::replace(&mut self.state, State::Done)
        else {
            return;
        };
        let outcome = if self.is_ping() {
            Outcome::DeadlineExceeded
        } else {
            Outcome::Lost {
                node,
                agent_id: (!progress.agent_id.is_empty()).then_some(progress.agent_id),
                acknowledged: progress.acknowledged,
            }
        };
        self.done(outcome);
    }
}

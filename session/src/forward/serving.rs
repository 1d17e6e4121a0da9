//! The serving node's machine for one forwarded request (PROTOCOL.md "The
//! serving node"): its checks, Accepted, Progress on every change and every
//! heartbeat, and exactly one end.
//!
//! Two acknowledgements from the forwarding node bracket the work. The
//! request goes to an agent only after the forwarding node acknowledged
//! Accepted: so a forwarding node that heard nothing knows no agent got it,
//! and can say NO_AGENT_ONLINE honestly. An answer whose Reply is not
//! acknowledged in time is handed to the driver to keep in the outcome
//! record, where the forwarding node looks before saying OUTCOME_UNKNOWN.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use proto::pb::{self, ForwardFailureKind, Operation, forward_event};

/// What the driver must act on.
#[derive(Debug, Clone, PartialEq)]
pub enum Served {
    /// Route this request to this node's agents by `deadline`; report with
    /// [`Serving::progress`] and end with [`Serving::finish`].
    Route {
        request: pb::ForwardedRequest,
        operation: Operation,
        deadline: Instant,
    },
    /// Refused before routing (the Failure is queued): for metrics.
    Refused(ForwardFailureKind),
    /// The forwarding node did not acknowledge Accepted within a heartbeat:
    /// no agent got the request; NO_AGENT_ONLINE is queued for it.
    Unconfirmed,
    /// The forwarding node did not acknowledge this Reply within a
    /// heartbeat: keep it in the outcome record (not for a ping).
    Undelivered(pb::ForwardReply),
}

/// One forwarded request on the serving node.
#[derive(Debug)]
pub struct Serving {
    heartbeat: Duration,
    next_beat: Option<Instant>,
    progress: pb::ForwardProgress,
    done: bool,
    /// Until when the go-ahead (the ack of Accepted) is awaited, and the
    /// routing it releases.
    go_by: Option<(Instant, Served)>,
    /// Until when the receipt of the Reply is awaited, and the Reply.
    ack_by: Option<(Instant, pb::ForwardReply)>,
    transmit: VecDeque<pb::ForwardEvent>,
    events: VecDeque<Served>,
}

fn failure(kind: ForwardFailureKind, message: String) -> forward_event::Event {
    forward_event::Event::Failure(pb::ForwardFailure {
        kind: kind as i32,
        message,
        ..Default::default()
    })
}

impl Serving {
    /// Takes a forwarded request that came on `subject_tenant`'s subject
    /// (`None`: its payload did not decode). `draining`: this node is
    /// shutting down. Routing gets `min(timeout_ms, max_deadline)` from now.
    pub fn new(
        now: Instant,
        node: &str,
        heartbeat: Duration,
        max_deadline: Duration,
        subject_tenant: &str,
        request: Option<pb::ForwardedRequest>,
        draining: bool,
    ) -> Serving {
        let mut s = Serving {
            heartbeat,
            next_beat: None,
            progress: pb::ForwardProgress::default(),
            done: false,
            go_by: None,
            ack_by: None,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
        };
        let request = match request {
            Some(r) if r.tenant == subject_tenant => r,
            _ => {
                return s.refuse(
                    ForwardFailureKind::Invalid,
                    "undecodable forwarded request, or one for another tenant than its subject"
                        .into(),
                );
            }
        };
        if draining {
            return s.refuse(ForwardFailureKind::ShuttingDown, String::new());
        }
        let operation = match Operation::try_from(request.operation) {
            Ok(op) if op != Operation::Unspecified => op,
            _ => {
                let message = format!(
                    "forwarded operation {} is not a relay.v1 Operation",
                    request.operation
                );
                return s.refuse(ForwardFailureKind::Invalid, message);
            }
        };
        s.send(forward_event::Event::Accepted(pb::ForwardAccepted {
            node: node.to_owned(),
        }));
        let timeout = Duration::from_millis(request.timeout_ms.into()).min(max_deadline);
        let route = Served::Route {
            request,
            operation,
            deadline: now + timeout,
        };
        s.go_by = Some((now + heartbeat, route));
        s
    }

    /// The forwarding node's ForwardAck: the go-ahead after Accepted (the
    /// routing is released), or the receipt of the Reply.
    pub fn acknowledged(&mut self, now: Instant) {
        if let Some((_, route)) = self.go_by.take() {
            self.next_beat = Some(now + self.heartbeat);
            self.events.push_back(route);
        } else {
            self.ack_by = None;
        }
    }

    /// NATS answered a message published with the acknowledgement subject
    /// as its reply subject with its *no responders* status: nobody listens
    /// on the forwarding node's inbox any more (it gave up on the request,
    /// or lost its NATS server), so the message was dropped and no
    /// acknowledgement will come. Not an acknowledgement: the wait for the
    /// go-ahead or for the Reply's receipt ends now as if it had run out,
    /// so a Reply the forwarding node never had is kept in the outcome
    /// record. (A status left over from an earlier Progress can end the
    /// Reply's wait early: the answer is then kept although the forwarding
    /// node may also have it, which costs one write.)
    pub fn forwarder_unreachable(&mut self, now: Instant) {
        if let Some((by, _)) = &mut self.go_by {
            *by = now;
        }
        if let Some((by, _)) = &mut self.ack_by {
            *by = now;
        }
        self.handle_timeout(now);
    }

    fn refuse(mut self, kind: ForwardFailureKind, message: String) -> Serving {
        self.send(failure(kind, message));
        self.done = true;
        self.events.push_back(Served::Refused(kind));
        self
    }

    fn send(&mut self, event: forward_event::Event) {
        self.transmit
            .push_back(pb::ForwardEvent { event: Some(event) });
    }

    /// Nothing more to send or await.
    pub fn is_done(&self) -> bool {
        self.done && self.go_by.is_none() && self.ack_by.is_none()
    }

    /// The delivery as it stands: `agent_id` once queued to an agent's
    /// session, `acknowledged` once it sent its Ack. Reported on change.
    pub fn progress(&mut self, _now: Instant, agent_id: Option<&str>, acknowledged: bool) {
        let progress = pb::ForwardProgress {
            agent_id: agent_id.unwrap_or_default().to_owned(),
            acknowledged,
        };
        if self.done || self.go_by.is_some() || progress == self.progress {
            return;
        }
        self.progress = progress.clone();
        self.send(forward_event::Event::Progress(progress));
    }

    /// Routing ended: the Reply or Failure goes out, and nothing after it.
    /// A Reply awaits its receipt for a heartbeat.
    pub fn finish(&mut self, now: Instant, end: forward_event::Event) {
        if self.done || self.go_by.is_some() {
            return;
        }
        self.done = true;
        self.next_beat = None;
        if let forward_event::Event::Reply(reply) = &end {
            self.ack_by = Some((now + self.heartbeat, reply.clone()));
        }
        self.send(end);
    }

    /// The events to publish to the reply inbox, in order.
    pub fn poll_transmit(&mut self) -> Option<pb::ForwardEvent> {
        self.transmit.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Served> {
        self.events.pop_front()
    }

    /// The next heartbeat, or the end of a wait for an acknowledgement.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if let Some((by, _)) = &self.go_by {
            return Some(*by);
        }
        if let Some((by, _)) = &self.ack_by {
            return Some(*by);
        }
        self.next_beat.filter(|_| !self.done)
    }

    /// Every heartbeat, the progress again, changed or not: the forwarding
    /// node's proof that this node still works on it.
    /// A missing acknowledgement ends its wait (see [`Served`]).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.go_by.as_ref().is_some_and(|(by, _)| now >= *by) {
            self.go_by = None;
            self.done = true;
            self.send(failure(
                ForwardFailureKind::NoAgentOnline,
                "the forwarding node did not confirm Accepted: no agent got the request".into(),
            ));
            self.events.push_back(Served::Unconfirmed);
            return;
        }
        if let Some((_, reply)) = self.ack_by.take_if(|(by, _)| now >= *by) {
            self.events.push_back(Served::Undelivered(reply));
            return;
        }
        if let Some(at) = self.next_beat.filter(|at| !self.done && now >= *at) {
            let mut next = at;
            while next <= now {
                next += self.heartbeat;
            }
            self.next_beat = Some(next);
            let progress = self.progress.clone();
            self.send(forward_event::Event::Progress(progress));
        }
    }
}

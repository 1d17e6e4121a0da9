//! The serving node's machine for one forwarded request (PROTOCOL.md "The
//! serving node"): its checks, Accepted, Progress on every change and every
//! heartbeat, and exactly one end.

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
}

/// One forwarded request on the serving node.
#[derive(Debug)]
pub struct Serving {
    heartbeat: Duration,
    next_beat: Option<Instant>,
    progress: pb::ForwardProgress,
    done: bool,
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
        s.next_beat = Some(now + heartbeat);
        let timeout = Duration::from_millis(request.timeout_ms.into()).min(max_deadline);
        s.events.push_back(Served::Route {
            request,
            operation,
            deadline: now + timeout,
        });
        s
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

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The delivery as it stands: `agent_id` once queued to an agent's
    /// session, `acknowledged` once it sent its Ack. Reported on change.
    pub fn progress(&mut self, _now: Instant, agent_id: Option<&str>, acknowledged: bool) {
        let progress = pb::ForwardProgress {
            agent_id: agent_id.unwrap_or_default().to_owned(),
            acknowledged,
        };
        if self.done || progress == self.progress {
            return;
        }
        self.progress = progress.clone();
        self.send(forward_event::Event::Progress(progress));
    }

    /// Routing ended: the Reply or Failure goes out, and nothing after it.
    pub fn finish(&mut self, _now: Instant, end: forward_event::Event) {
        if !self.done {
            self.done = true;
            self.next_beat = None;
            self.send(end);
        }
    }

    /// The events to publish to the reply inbox, in order.
    pub fn poll_transmit(&mut self) -> Option<pb::ForwardEvent> {
        self.transmit.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Served> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_beat.filter(|_| !self.done)
    }

    /// Every heartbeat, the progress again, changed or not: the forwarding
    /// node's proof that this node still works on it.
    pub fn handle_timeout(&mut self, now: Instant) {
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

//! What each broker frame means ([`Agent::handle_frame`]): Welcome opens the
//! session, a Receipt confirms a reply, a Goodbye ends the session, a
//! request is acknowledged and handed out once (or refused while
//! draining, or answered at once if a ping).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use proto::pb::{self, GoodbyeReason, agent_frame, agent_reply, broker_frame};

use super::{
    Agent, Cause, Event, MIN_HEARTBEAT, NextStep, Open, Request, Seen, State, Ticket, next_step,
};

impl Agent {
    /// A frame from the broker.
    pub fn handle_frame(&mut self, now: Instant, frame: pb::BrokerFrame) {
        match &mut self.state {
            State::Idle => {}
            State::Hello { .. } => match frame.frame {
                Some(broker_frame::Frame::Welcome(w)) => self.welcomed(now, w),
                other => {
                    let got = match other {
                        Some(f) => frame_name(&f),
                        None => "an empty frame",
                    };
                    self.end(
                        Cause::NoWelcome(format!("expected Welcome, got {got}")),
                        NextStep::Reconnect,
                        now,
                    );
                }
            },
            State::Open(open) => {
                open.last_seen = now;
                match frame.frame {
                    Some(broker_frame::Frame::Request(r)) => self.request(r),
                    Some(broker_frame::Frame::Receipt(r)) => {
                        if self.outbox.confirmed(now, &r.request_id) {
                            self.events.push_back(Event::Confirmed {
                                request_id: r.request_id,
                            });
                        }
                    }
                    Some(broker_frame::Frame::Heartbeat(_)) => {}
                    Some(broker_frame::Frame::Goodbye(g)) => {
                        let reason =
                            GoodbyeReason::try_from(g.reason).unwrap_or(GoodbyeReason::Unspecified);
                        let next = if open.drain_until.is_some() {
                            NextStep::Stop
                        } else {
                            next_step(reason)
                        };
                        let cause = Cause::Goodbye {
                            reason,
                            message: g.message,
                        };
                        self.end(cause, next, now);
                    }
                    Some(broker_frame::Frame::Welcome(_)) => {
                        self.events.push_back(Event::Ignored("a second Welcome"));
                    }
                    None => self.events.push_back(Event::Ignored("an empty frame")),
                }
            }
        }
    }

    pub(super) fn welcomed(&mut self, now: Instant, w: pb::Welcome) {
        let interval = Duration::from_millis(u64::from(w.heartbeat_interval_ms)).max(MIN_HEARTBEAT);
        self.state = State::Open(Box::new(Open {
            welcomed: now,
            interval,
            last_seen: now,
            next_beat: now + interval,
            renew_at: now + self.config.token_lifetime / 2,
            renewing: false,
            seen: HashMap::new(),
            in_flight: 0,
            drain_until: None,
        }));
        self.events.push_back(Event::Welcomed {
            session_id: w.session_id,
            broker_time_unix_ms: w.broker_time_unix_ms,
            heartbeat_interval: interval,
        });
        // Replies of earlier sessions that the broker never confirmed.
        self.post_unconfirmed(now);
    }

    pub(super) fn request(&mut self, r: pb::RelayedRequest) {
        let generation = self.generation;
        let State::Open(open) = &mut self.state else {
            return;
        };
        match open.seen.get(&r.correlation_id) {
            // A duplicate: never applied again. Still in hand: the Ack again
            // (the broker ignores a repeated one). Answered: the answer again.
            Some(Seen::InFlight) => {
                let ack = pb::Ack {
                    correlation_id: r.correlation_id,
                };
                return self.send(agent_frame::Frame::Ack(ack));
            }
            Some(Seen::Answered(id)) => {
                if let Some(kept) = self.outbox.get(id) {
                    let reply = pb::AgentReply {
                        correlation_id: r.correlation_id,
                        ..kept.clone()
                    };
                    self.send(agent_frame::Frame::Reply(reply));
                }
                return;
            }
            Some(Seen::Other) => return,
            None => {}
        }
        let operation = pb::Operation::try_from(r.operation).unwrap_or(pb::Operation::Unspecified);
        if open.drain_until.is_some() {
            // No Ack: nothing was applied, so the broker may route it to
            // another agent.
            open.seen.insert(r.correlation_id, Seen::Other);
            let error = pb::AgentError {
                code: pb::AgentErrorCode::Unavailable as i32,
                message: "the agent is shutting down; the request was not applied".into(),
                refusal: pb::EnvelopeRefusal::Unspecified as i32,
            };
            let reply = pb::AgentReply {
                correlation_id: r.correlation_id,
                request_id: r.request_id.clone(),
                result: Some(agent_reply::Result::Error(error)),
            };
            self.send(agent_frame::Frame::Reply(reply));
            self.events.push_back(Event::RefusedDraining {
                request_id: r.request_id,
            });
            return;
        }
        if operation == pb::Operation::Ping {
            // Answered at once and not kept: a ping changes nothing, and
            // its answer is worthless once its caller has gone.
            open.seen.insert(r.correlation_id, Seen::Other);
            let reply = pb::AgentReply {
                correlation_id: r.correlation_id,
                request_id: r.request_id,
                result: Some(agent_reply::Result::Envelope(Vec::new())),
            };
            return self.send(agent_frame::Frame::Reply(reply));
        }
        // The Ack goes out before any work: from here on the broker gives
        // the request to nobody else.
        open.seen.insert(r.correlation_id, Seen::InFlight);
        open.in_flight += 1;
        self.send(agent_frame::Frame::Ack(pb::Ack {
            correlation_id: r.correlation_id,
        }));
        self.events.push_back(Event::Apply(Request {
            ticket: Ticket {
                generation,
                correlation_id: r.correlation_id,
                request_id: r.request_id.clone(),
            },
            request_id: r.request_id,
            operation,
            envelope: r.envelope.into(),
            timeout: Duration::from_millis(u64::from(r.timeout_ms)),
            traceparent: r.traceparent,
        }));
    }
}

pub(super) fn frame_name(f: &broker_frame::Frame) -> &'static str {
    match f {
        broker_frame::Frame::Welcome(_) => "Welcome",
        broker_frame::Frame::Heartbeat(_) => "Heartbeat",
        broker_frame::Frame::Request(_) => "RelayedRequest",
        broker_frame::Frame::Goodbye(_) => "Goodbye",
        broker_frame::Frame::Receipt(_) => "Receipt",
    }
}

//! What the broker's end does with each agent frame (PROTOCOL.md "The
//! session, frame by frame", the table of agent frames).

use std::time::Instant;

use proto::pb::agent_frame::Frame;
use proto::pb::{self, AgentFrame, GoodbyeReason, agent_reply};

use super::{Answer, BrokerSession, End, Event, Phase, Refusal};

impl BrokerSession {
    /// Takes one frame from the agent.
    pub fn handle_frame(&mut self, now: Instant, frame: AgentFrame) {
        match self.phase {
            Phase::Closed => {}
            Phase::AwaitingHello => match frame.frame {
                Some(Frame::Hello(hello)) => {
                    self.phase = Phase::Authenticating;
                    self.events.push_back(Event::Hello(hello));
                }
                _ => self.end(End::NotOpened(Refusal::ProtocolViolation(
                    "the first frame of a session must be Hello".into(),
                ))),
            },
            // The driver answers a Hello before it reads on.
            Phase::Authenticating => self.end(End::NotOpened(Refusal::ProtocolViolation(
                "a frame before the Welcome".into(),
            ))),
            Phase::Open | Phase::Draining => {
                // Any frame proves the agent alive, even one out of place.
                self.last_heard = self.last_heard.max(now);
                self.open_frame(now, frame);
            }
        }
    }

    fn open_frame(&mut self, now: Instant, frame: AgentFrame) {
        match frame.frame {
            Some(Frame::Heartbeat(_)) => {}
            Some(Frame::Ack(ack)) => {
                if self.requests.acknowledge(ack.correlation_id) {
                    self.events
                        .push_back(Event::Acknowledged(ack.correlation_id));
                }
            }
            Some(Frame::Reply(reply)) => self.reply(now, reply),
            Some(Frame::RenewToken(renew)) => {
                self.events.push_back(Event::RenewToken(renew.token));
            }
            Some(Frame::Drain(_)) => {
                if self.phase == Phase::Open {
                    self.phase = Phase::Draining;
                    self.events.push_back(Event::AgentDraining);
                }
            }
            Some(Frame::Hello(_)) => self.goodbye(
                GoodbyeReason::ProtocolViolation,
                "Hello is only allowed as the first frame",
            ),
            None => self.goodbye(
                GoodbyeReason::ProtocolViolation,
                "empty frame: no frame kind set",
            ),
        }
    }

    fn reply(&mut self, now: Instant, reply: pb::AgentReply) {
        let answer = self.answer_of(reply.result);
        let correlation_id = reply.correlation_id;
        let request_id = reply.request_id;
        match self.requests.answer(now, correlation_id, answer) {
            Ok((_, end)) => {
                // The request's router has the answer now: the agent may
                // forget it.
                self.receipt(correlation_id, request_id.clone());
                self.ended(correlation_id, request_id, end);
                self.maybe_drained();
            }
            Err(answer) => self.events.push_back(Event::LateReply {
                correlation_id,
                request_id,
                answer,
            }),
        }
    }

    fn answer_of(&self, result: Option<agent_reply::Result>) -> Answer {
        let limit = self.config.max_envelope_bytes;
        match result {
            Some(agent_reply::Result::Envelope(envelope)) if envelope.len() > limit => {
                Answer::Error(pb::AgentError {
                    code: pb::AgentErrorCode::Rejected as i32,
                    message: format!(
                        "the agent's reply of {} bytes exceeds the envelope limit of {limit}",
                        envelope.len()
                    ),
                    refusal: 0,
                })
            }
            Some(agent_reply::Result::Envelope(envelope)) => Answer::Envelope(envelope),
            Some(agent_reply::Result::Error(e)) => Answer::Error(e),
            None => Answer::Error(pb::AgentError {
                code: pb::AgentErrorCode::Unspecified as i32,
                message: "the agent's reply carried neither an envelope nor an error".into(),
                refusal: 0,
            }),
        }
    }
}

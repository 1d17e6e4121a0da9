//! The requests outstanding on one session and the two-stage delivery rules
//! that decide how each ends: the Ack, the answer, the ack timeout and the
//! caller's deadline.

use std::collections::BTreeMap;
use std::time::Instant;

use proto::pb;

use super::{Answer, CorrelationId, RequestEnd};

#[derive(Debug)]
struct Pending {
    request_id: String,
    sent_at: Instant,
    deadline: Instant,
    /// When the Ack is overdue; `None` when the caller's deadline comes
    /// first (then the deadline, not the ack timeout, decides).
    ack_by: Option<Instant>,
    transmitted: bool,
    acknowledged: bool,
}

/// Requests by correlation id, which starts at 1 (0 marks a late reply).
#[derive(Debug)]
pub(super) struct Requests {
    next: CorrelationId,
    pending: BTreeMap<CorrelationId, Pending>,
}

impl Default for Requests {
    fn default() -> Self {
        Requests {
            next: 1,
            pending: BTreeMap::new(),
        }
    }
}

impl Requests {
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    pub fn insert(
        &mut self,
        now: Instant,
        request_id: String,
        deadline: Instant,
        ack_by: Instant,
    ) -> CorrelationId {
        let id = self.next;
        self.next += 1;
        self.pending.insert(
            id,
            Pending {
                request_id,
                sent_at: now,
                deadline,
                ack_by: (ack_by < deadline).then_some(ack_by),
                transmitted: false,
                acknowledged: false,
            },
        );
        id
    }

    pub fn transmitted(&mut self, id: CorrelationId) {
        if let Some(p) = self.pending.get_mut(&id) {
            p.transmitted = true;
        }
    }

    /// Notes an Ack; whether it was news (an unknown or repeated one is
    /// ignored).
    pub fn acknowledge(&mut self, id: CorrelationId) -> bool {
        match self.pending.get_mut(&id) {
            Some(p) if !p.acknowledged => {
                p.acknowledged = true;
                true
            }
            _ => false,
        }
    }

    /// Ends the request `id` with the agent's answer, or gives the answer
    /// back when nobody waits for it on this session.
    pub fn answer(
        &mut self,
        now: Instant,
        id: CorrelationId,
        answer: Answer,
    ) -> Result<(String, RequestEnd), Answer> {
        let Some(p) = self.pending.remove(&id) else {
            return Err(answer);
        };
        let unavailable = matches!(&answer, Answer::Error(e)
            if e.code == pb::AgentErrorCode::Unavailable as i32);
        // Refused before any work started: nothing was applied, so the
        // request may go to another session. After an Ack it never may.
        let end = if unavailable && !p.acknowledged {
            RequestEnd::NotDelivered
        } else {
            RequestEnd::Answered {
                answer,
                rtt: now.saturating_duration_since(p.sent_at),
            }
        };
        Ok((p.request_id, end))
    }

    pub fn next_timeout(&self) -> Option<Instant> {
        self.pending
            .values()
            .flat_map(|p| [Some(p.deadline), p.ack_by.filter(|_| !p.acknowledged)])
            .flatten()
            .min()
    }

    /// Ends the requests whose caller's deadline has passed.
    pub fn expire(&mut self, now: Instant) -> Vec<(CorrelationId, String, RequestEnd)> {
        let due: Vec<CorrelationId> = self
            .pending
            .iter()
            .filter(|(_, p)| now >= p.deadline)
            .map(|(id, _)| *id)
            .collect();
        due.into_iter()
            .filter_map(|id| self.pending.remove(&id).map(|p| (id, p)))
            .map(|(id, p)| {
                let end = RequestEnd::DeadlineExceeded {
                    sent: p.transmitted,
                    acknowledged: p.acknowledged,
                };
                (id, p.request_id, end)
            })
            .collect()
    }

    /// Whether a request handed to the agent went without an Ack past the
    /// ack timeout: the session is presumed dead.
    pub fn unacknowledged_past(&self, now: Instant) -> bool {
        self.pending
            .values()
            .any(|p| !p.acknowledged && p.ack_by.is_some_and(|at| now >= at))
    }

    /// The session ended: how each request ends with it.
    pub fn abandon(&mut self) -> Vec<(CorrelationId, String, RequestEnd)> {
        std::mem::take(&mut self.pending)
            .into_iter()
            .map(|(id, p)| {
                let end = if p.transmitted {
                    RequestEnd::Lost {
                        acknowledged: p.acknowledged,
                    }
                } else {
                    RequestEnd::NotDelivered
                };
                (id, p.request_id, end)
            })
            .collect()
    }
}

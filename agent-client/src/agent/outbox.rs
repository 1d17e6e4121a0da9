//! Replies the broker has not confirmed yet.
//!
//! A reply written into a connection that silently died is lost without an
//! error, and a reply finished after its session ended has nowhere to go.
//! Either way the portal was told OUTCOME_UNKNOWN and may ask for the outcome
//! later, so every reply stays here until the broker's Receipt for it, and
//! the ones still here are posted again at the start of the next session.
//! The replies are sealed to the portal: keeping them costs no secrecy.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use proto::pb;

/// Replies kept at most; the oldest goes first beyond this.
pub const MAX_KEPT: usize = 10_000;
/// A reply unconfirmed for this long is dropped: the broker keeps late
/// outcomes for a day by default, so a later post would be refused anyway.
pub const MAX_AGE: Duration = Duration::from_secs(24 * 3600);

#[derive(Default)]
pub struct Outbox {
    replies: Mutex<HashMap<String, (Instant, pb::AgentReply)>>,
}

impl Outbox {
    /// Keeps `reply` until a Receipt names its request id.
    pub fn keep(&self, reply: &pb::AgentReply) {
        let mut replies = self.replies.lock().unwrap_or_else(|e| e.into_inner());
        if replies.len() >= MAX_KEPT {
            let oldest = replies
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(id, _)| id.clone());
            if let Some(id) = oldest {
                replies.remove(&id);
            }
        }
        replies.insert(reply.request_id.clone(), (Instant::now(), reply.clone()));
    }

    /// The broker has the reply for `request_id`.
    pub fn confirmed(&self, request_id: &str) {
        self.replies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(request_id);
    }

    /// The replies to post again on a new session, as late replies
    /// (correlation id 0: the old session's ids mean nothing on a new one).
    pub fn unconfirmed(&self) -> Vec<pb::AgentReply> {
        let mut replies = self.replies.lock().unwrap_or_else(|e| e.into_inner());
        replies.retain(|_, (at, _)| at.elapsed() < MAX_AGE);
        replies
            .values()
            .map(|(_, r)| pb::AgentReply {
                correlation_id: 0,
                ..r.clone()
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.replies.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(id: &str, correlation_id: u64) -> pb::AgentReply {
        pb::AgentReply {
            correlation_id,
            request_id: id.into(),
            result: Some(pb::agent_reply::Result::Envelope(vec![1, 2])),
        }
    }

    #[test]
    fn kept_until_confirmed_and_reposted_as_late() {
        let outbox = Outbox::default();
        outbox.keep(&reply("r1", 7));
        outbox.keep(&reply("r2", 8));
        outbox.confirmed("r1");
        let again = outbox.unconfirmed();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].request_id, "r2");
        assert_eq!(again[0].correlation_id, 0);
        outbox.confirmed("r2");
        assert!(outbox.is_empty());
    }
}

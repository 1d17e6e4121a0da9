//! The agent's replies the broker has not confirmed yet, as pure state.
//!
//! A reply written into a connection that silently died is lost without an
//! error, and a reply finished after its session ended has nowhere to go.
//! Either way the portal was told OUTCOME_UNKNOWN and may ask for the outcome
//! later, so every reply stays here until the broker's Receipt for it (and a
//! few minutes after, in case that broker dies before passing it on), and
//! whatever the current session has not carried is posted on it. The replies
//! are sealed to the portal: keeping them costs no secrecy. Time is passed
//! in; where the replies are stored is the driver's business.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use proto::pb;

/// Replies kept at most; the oldest goes first beyond this.
pub const MAX_KEPT: usize = 10_000;
/// A reply unconfirmed for this long is dropped: the broker keeps late
/// outcomes for a day by default, so a later post would be refused anyway.
pub const MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// A confirmed reply is still posted again on a new session for this long:
/// the broker that confirmed it may have died before passing it on to the
/// portal (which then saw OUTCOME_UNKNOWN). As long as the broker's longest
/// deadline, so every call that could have been cut short is covered.
pub const KEEP_AFTER_RECEIPT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
struct Kept {
    since: Instant,
    reply: pb::AgentReply,
    /// The session (by generation) it was last written to, if any.
    posted_on: Option<u64>,
    /// When a broker confirmed it.
    confirmed: Option<Instant>,
}

/// The replies by request id, and their ids oldest first, so that making
/// room and forgetting what is done cost only the entries removed (a busy
/// agent holds thousands, and keeps one per request).
#[derive(Debug, Clone, Default)]
pub struct Outbox {
    by_id: HashMap<String, Kept>,
    /// (kept since, request id); an id kept again later leaves a stale
    /// entry here, recognised by its time.
    order: VecDeque<(Instant, String)>,
}

impl Outbox {
    /// Keeps `reply` until a Receipt names its request id. `posted_on` is
    /// the session generation it is being written to, or `None` when no
    /// session can carry it now (the next one will).
    pub fn keep(&mut self, now: Instant, reply: &pb::AgentReply, posted_on: Option<u64>) {
        self.trim(now, MAX_KEPT - 1);
        self.order.push_back((now, reply.request_id.clone()));
        self.by_id.insert(
            reply.request_id.clone(),
            Kept {
                since: now,
                reply: reply.clone(),
                posted_on,
                confirmed: None,
            },
        );
    }

    /// The broker has the reply for `request_id`. Returns whether this is
    /// news (a reply kept and not confirmed before).
    pub fn confirmed(&mut self, now: Instant, request_id: &str) -> bool {
        match self.by_id.get_mut(request_id) {
            Some(k) if k.confirmed.is_none() => {
                k.confirmed = Some(now);
                true
            }
            _ => false,
        }
    }

    /// The kept reply for `request_id`, confirmed or not.
    pub fn get(&self, request_id: &str) -> Option<&pb::AgentReply> {
        self.by_id.get(request_id).map(|k| &k.reply)
    }

    /// The replies session `generation` has not carried yet, marked as
    /// carried by it, as late replies (correlation id 0: another session's
    /// ids mean nothing on this one). Oldest first.
    pub fn to_post(&mut self, now: Instant, generation: u64) -> Vec<pb::AgentReply> {
        self.forget_done(now);
        let mut out = Vec::new();
        for (since, id) in &self.order {
            let Some(k) = self.by_id.get_mut(id).filter(|k| k.since == *since) else {
                continue;
            };
            if k.posted_on != Some(generation) {
                k.posted_on = Some(generation);
                out.push(pb::AgentReply {
                    correlation_id: 0,
                    ..k.reply.clone()
                });
            }
        }
        out
    }

    /// Replies no broker has confirmed yet.
    pub fn unconfirmed(&self) -> usize {
        self.by_id
            .values()
            .filter(|k| k.confirmed.is_none())
            .count()
    }

    /// Whether `request_id` is kept and not confirmed.
    pub fn awaits_receipt(&self, request_id: &str) -> bool {
        self.by_id
            .get(request_id)
            .is_some_and(|k| k.confirmed.is_none())
    }

    /// Replies kept, confirmed or not.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Drops what is done with: too old, or confirmed long enough ago.
    fn forget_done(&mut self, now: Instant) {
        self.by_id.retain(|_, k| !done(now, k));
        let by_id = &self.by_id;
        self.order
            .retain(|(since, id)| by_id.get(id).is_some_and(|k| k.since == *since));
    }

    /// Drops, oldest first, the replies that are done with and, beyond
    /// `max`, the oldest of all. Stops at the first one still wanted.
    fn trim(&mut self, now: Instant, max: usize) {
        while let Some((since, id)) = self.order.front() {
            let current = self.by_id.get(id).filter(|k| k.since == *since);
            let drop = match current {
                None => true,
                Some(k) => self.by_id.len() > max || done(now, k),
            };
            if !drop {
                break;
            }
            if current.is_some() {
                self.by_id.remove(id);
            }
            self.order.pop_front();
        }
    }
}

fn done(now: Instant, k: &Kept) -> bool {
    now.saturating_duration_since(k.since) >= MAX_AGE
        || k.confirmed
            .is_some_and(|at| now.saturating_duration_since(at) >= KEEP_AFTER_RECEIPT)
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
    fn kept_until_confirmed_and_posted_once_per_session() {
        let t0 = Instant::now();
        let mut outbox = Outbox::default();
        outbox.keep(t0, &reply("r1", 7), Some(1));
        outbox.keep(t0, &reply("r2", 8), Some(1));
        assert!(outbox.to_post(t0, 1).is_empty());
        assert!(outbox.confirmed(t0, "r1"));
        assert_eq!(outbox.unconfirmed(), 1);
        // A new session carries both, once: r2 was never confirmed, and the
        // broker that confirmed r1 may have died before passing it on.
        let again = outbox.to_post(t0, 2);
        assert_eq!(again.len(), 2);
        assert_eq!(again[1].request_id, "r2");
        assert_eq!(again[1].correlation_id, 0);
        assert!(outbox.to_post(t0, 2).is_empty());
        // Long after its Receipt, a reply is forgotten.
        assert_eq!(outbox.to_post(t0 + KEEP_AFTER_RECEIPT, 3).len(), 1);
        assert_eq!(outbox.len(), 1);
    }

    #[test]
    fn beyond_the_cap_the_oldest_goes_first() {
        let t0 = Instant::now();
        let mut outbox = Outbox::default();
        for i in 0..MAX_KEPT + 5 {
            let at = t0 + Duration::from_millis(i as u64);
            outbox.keep(at, &reply(&format!("r{i}"), i as u64), Some(1));
        }
        // r0..r4 made room; r0, kept again, is now the newest and r5 goes.
        outbox.keep(t0 + Duration::from_secs(60), &reply("r0", 0), Some(1));
        assert_eq!(outbox.len(), MAX_KEPT);
        assert!(outbox.get("r0").is_some());
        for gone in 1..=5 {
            assert!(outbox.get(&format!("r{gone}")).is_none(), "r{gone}");
        }
        assert!(outbox.get("r6").is_some());
    }
}

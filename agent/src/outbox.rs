//! Replies the broker has not confirmed yet.
//!
//! A reply written into a connection that silently died is lost without an
//! error, and a reply finished after its session ended has nowhere to go.
//! Either way the portal was told OUTCOME_UNKNOWN and may ask for the outcome
//! later, so every reply stays here until the broker's Receipt for it (and a
//! few minutes after, in case that broker dies before passing it on), and
//! whatever the current session has not carried is posted on it: at its
//! start, when a reply is orphaned, and at every heartbeat. The replies are
//! sealed to the portal: keeping them costs no secrecy.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use proto::pb;
use tokio::sync::Notify;

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

struct Kept {
    since: Instant,
    reply: pb::AgentReply,
    /// The session it was last written to, if any.
    posted_on: Option<String>,
    /// When a broker confirmed it.
    confirmed: Option<Instant>,
}

#[derive(Default)]
pub struct Outbox {
    replies: Mutex<Replies>,
    orphaned: Notify,
}

/// The replies by request id, and their ids oldest first, so that making
/// room and forgetting what is done cost only the entries removed (a busy
/// agent holds thousands, and keeps one per request).
#[derive(Default)]
struct Replies {
    by_id: HashMap<String, Kept>,
    /// (kept since, request id); an id kept again later leaves a stale
    /// entry here, recognised by its time.
    order: VecDeque<(Instant, String)>,
}

impl Replies {
    /// Drops, oldest first, the replies that are done with (too old, or
    /// confirmed long enough ago) and, beyond `max`, the oldest of all.
    /// Stops at the first one still wanted.
    fn trim(&mut self, max: usize) {
        while let Some((since, id)) = self.order.front() {
            let current = self.by_id.get(id).filter(|k| k.since == *since);
            let drop = match current {
                None => true,
                Some(k) => {
                    self.by_id.len() > max
                        || k.since.elapsed() >= MAX_AGE
                        || k.confirmed
                            .is_some_and(|at| at.elapsed() >= KEEP_AFTER_RECEIPT)
                }
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

impl Outbox {
    /// Keeps `reply`, about to be written to `session_id`, until a Receipt
    /// names its request id.
    pub fn keep(&self, reply: &pb::AgentReply, session_id: &str) {
        let mut replies = self.replies.lock().unwrap_or_else(|e| e.into_inner());
        replies.trim(MAX_KEPT - 1);
        let since = Instant::now();
        replies.order.push_back((since, reply.request_id.clone()));
        replies.by_id.insert(
            reply.request_id.clone(),
            Kept {
                since,
                reply: reply.clone(),
                posted_on: Some(session_id.to_owned()),
                confirmed: None,
            },
        );
    }

    /// The reply could not be written to its session: the next session (or
    /// the current one, if a new one is already up) must carry it.
    pub fn orphaned(&self, request_id: &str) {
        if let Some(k) = self
            .replies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_id
            .get_mut(request_id)
        {
            k.posted_on = None;
        }
        self.orphaned.notify_waiters();
    }

    /// Resolves when a reply was orphaned.
    pub async fn wait_orphaned(&self) {
        self.orphaned.notified().await;
    }

    /// The broker has the reply for `request_id`.
    pub fn confirmed(&self, request_id: &str) {
        if let Some(k) = self
            .replies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_id
            .get_mut(request_id)
        {
            k.confirmed.get_or_insert_with(Instant::now);
        }
    }

    /// The replies `session_id` has not carried yet, marked as carried by
    /// it, as late replies (correlation id 0: another session's ids mean
    /// nothing on this one).
    pub fn to_post(&self, session_id: &str) -> Vec<pb::AgentReply> {
        let mut replies = self.replies.lock().unwrap_or_else(|e| e.into_inner());
        let replies = &mut *replies;
        replies.by_id.retain(|_, k| {
            k.since.elapsed() < MAX_AGE
                && k.confirmed
                    .is_none_or(|at| at.elapsed() < KEEP_AFTER_RECEIPT)
        });
        let by_id = &replies.by_id;
        replies
            .order
            .retain(|(since, id)| by_id.get(id).is_some_and(|k| k.since == *since));
        replies
            .by_id
            .values_mut()
            .filter(|k| k.posted_on.as_deref() != Some(session_id))
            .map(|k| {
                k.posted_on = Some(session_id.to_owned());
                pb::AgentReply {
                    correlation_id: 0,
                    ..k.reply.clone()
                }
            })
            .collect()
    }

    /// Replies no broker has confirmed yet.
    pub fn len(&self) -> usize {
        self.replies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_id
            .values()
            .filter(|k| k.confirmed.is_none())
            .count()
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
    fn kept_until_confirmed_and_posted_once_per_session() {
        let outbox = Outbox::default();
        outbox.keep(&reply("r1", 7), "s1");
        outbox.keep(&reply("r2", 8), "s1");
        // Still on s1: nothing to post again there.
        assert!(outbox.to_post("s1").is_empty());
        outbox.confirmed("r1");
        assert_eq!(outbox.len(), 1);
        // A new session carries both, once: r2 was never confirmed, and the
        // broker that confirmed r1 may have died before passing it on.
        let mut again = outbox.to_post("s2");
        again.sort_by(|a, b| a.request_id.cmp(&b.request_id));
        assert_eq!(again.len(), 2);
        assert_eq!(again[1].request_id, "r2");
        assert_eq!(again[1].correlation_id, 0);
        assert!(outbox.to_post("s2").is_empty());
        outbox.confirmed("r2");
        assert!(outbox.is_empty());
    }

    #[test]
    fn an_orphaned_reply_goes_out_on_the_current_session() {
        let outbox = Outbox::default();
        outbox.keep(&reply("r1", 7), "old");
        outbox.orphaned("r1");
        assert_eq!(outbox.to_post("old").len(), 1);
    }

    #[test]
    fn beyond_the_cap_the_oldest_goes_first() {
        let outbox = Outbox::default();
        for i in 0..MAX_KEPT + 5 {
            outbox.keep(&reply(&format!("r{i}"), i as u64), "s1");
        }
        // r0..r4 made room; r0, kept again, is now the newest and r5 goes.
        outbox.keep(&reply("r0", 0), "s1");
        let kept = outbox.replies.lock().unwrap();
        assert_eq!(kept.by_id.len(), MAX_KEPT);
        assert!(kept.by_id.contains_key("r0"));
        for gone in 1..=5 {
            assert!(!kept.by_id.contains_key(&format!("r{gone}")), "r{gone}");
        }
        assert!(kept.by_id.contains_key("r6"));
    }
}

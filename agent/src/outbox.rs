//! Replies the broker has not confirmed yet, and the session core that keeps
//! them.
//!
//! The rules (every reply stays until the broker's Receipt and a few minutes
//! after, is posted again on each new session, late replies carry
//! correlation id 0) are the pure state of [`::session::agent::Agent`],
//! which spans sessions for this reason. This is the driver's store of it:
//! one core behind a lock, shared by the session loop and the handler tasks,
//! which finish on their own time, possibly after their session ended, and
//! hand their answer to the core here. The lock is never held across an
//! await. The replies are sealed to the portal: keeping them in memory costs
//! no secrecy.

use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use ::session::agent::{Agent, Config, Ticket};
use proto::pb::agent_reply;
use tokio::sync::Notify;
use tracing::warn;

pub use ::session::agent::outbox::{KEEP_AFTER_RECEIPT, MAX_AGE, MAX_KEPT};

/// The agent's session core, shared across sessions.
pub struct Outbox {
    core: Mutex<Agent>,
    /// Wakes the session loop when a handler task gave the core something
    /// to send.
    wake: Notify,
}

impl Outbox {
    pub fn new(config: Config) -> Outbox {
        Outbox {
            core: Mutex::new(Agent::new(config)),
            wake: Notify::new(),
        }
    }

    /// The core, for one synchronous step of the driver.
    pub fn core(&self) -> MutexGuard<'_, Agent> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A handler task's answer: kept until its Receipt, and sent on its
    /// session, or posted late on the next one.
    pub fn reply(&self, ticket: Ticket, result: agent_reply::Result) {
        {
            let mut core = self.core();
            if ticket.generation != core.generation() || !core.is_open() {
                warn!(
                    "the session ended before the answer could be sent; the next session posts it"
                );
            }
            core.reply(Instant::now(), ticket, result);
        }
        // A stored permit if the loop is busy: the wakeup is not lost.
        self.wake.notify_one();
    }

    /// Resolves when a handler task gave the core something to send.
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    /// Replies no broker has confirmed yet.
    pub fn len(&self) -> usize {
        self.core().outbox().unconfirmed()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn an_answer_with_no_session_is_kept_and_wakes_the_loop() {
        let outbox = Outbox::new(Config::default());
        let ticket = Ticket {
            generation: 1,
            correlation_id: 7,
            request_id: "r1".into(),
        };
        outbox.reply(ticket, agent_reply::Result::Envelope(vec![1]));
        assert_eq!(outbox.len(), 1);
        // Nobody waited when it came: the permit is kept, so a session loop
        // that waits later still wakes and posts it.
        tokio::time::timeout(Duration::from_secs(5), outbox.woken())
            .await
            .expect("woken");
    }
}

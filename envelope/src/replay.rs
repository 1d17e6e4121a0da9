//! The replay window: every envelope's enc is remembered until its validity
//! window (plus the skew allowance) has passed, after which the expiry check
//! refuses it anyway. The agent persists the entries so that a restart does
//! not reopen the window.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use crate::error::OpenError;
use crate::keys::KEY_LEN;

#[derive(Debug, Default, Clone)]
pub struct ReplayWindow {
    /// enc -> Unix ms after which the entry may be forgotten.
    seen: HashMap<[u8; KEY_LEN], u64>,
    /// The same entries ordered by that time, soonest first, so pruning
    /// touches only what has expired: a window holds minutes of traffic,
    /// and walking all of it on every request made each request cost more
    /// the longer the agent ran.
    expiries: BinaryHeap<Reverse<(u64, [u8; KEY_LEN])>>,
}

impl ReplayWindow {
    pub fn new() -> ReplayWindow {
        ReplayWindow::default()
    }

    /// Refuses `enc` if it was seen; otherwise remembers it until
    /// `forget_after_ms`. Entries past their time are pruned first.
    pub fn check_and_insert(
        &mut self,
        enc: [u8; KEY_LEN],
        forget_after_ms: u64,
        now_ms: u64,
    ) -> Result<(), OpenError> {
        self.prune(now_ms);
        if self.seen.contains_key(&enc) {
            return Err(OpenError::Replayed);
        }
        self.remember(enc, forget_after_ms);
        Ok(())
    }

    /// Forgets entries whose time has passed. An entry is kept through its
    /// last millisecond, matching open_request, which still accepts an
    /// envelope at exactly expiry + allowance.
    pub fn prune(&mut self, now_ms: u64) {
        while let Some(Reverse((until, enc))) = self.expiries.peek().copied() {
            if until >= now_ms {
                break;
            }
            self.expiries.pop();
            // The map holds the latest time given for this enc; an older
            // heap entry for it must not remove a later one.
            if self.seen.get(&enc) == Some(&until) {
                self.seen.remove(&enc);
            }
        }
    }

    /// Restores an entry read back from storage.
    pub fn restore(&mut self, enc: [u8; KEY_LEN], forget_after_ms: u64) {
        self.remember(enc, forget_after_ms);
    }

    /// Removes an entry, for a request whose recording failed: the same
    /// envelope, retried, is then judged afresh instead of as a replay.
    pub fn forget(&mut self, enc: &[u8; KEY_LEN]) {
        // Its heap entry stays until its time and is skipped then.
        self.seen.remove(enc);
    }

    fn remember(&mut self, enc: [u8; KEY_LEN], forget_after_ms: u64) {
        self.seen.insert(enc, forget_after_ms);
        self.expiries.push(Reverse((forget_after_ms, enc)));
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_sighting_is_refused_until_the_window_passes() {
        let mut w = ReplayWindow::new();
        let enc = [7u8; KEY_LEN];
        w.check_and_insert(enc, 1_000, 0).unwrap();
        assert_eq!(
            w.check_and_insert(enc, 1_000, 500),
            Err(OpenError::Replayed)
        );
        // Past its time the entry goes; the expiry check covers that period.
        w.check_and_insert([8u8; KEY_LEN], 5_000, 1_001).unwrap();
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn pruning_follows_each_entrys_own_time() {
        let mut w = ReplayWindow::new();
        w.check_and_insert([1; KEY_LEN], 3_000, 0).unwrap();
        w.check_and_insert([2; KEY_LEN], 1_000, 0).unwrap();
        w.check_and_insert([3; KEY_LEN], 2_000, 0).unwrap();
        w.prune(1_000);
        assert_eq!(w.len(), 3, "kept through its last millisecond");
        w.prune(2_001);
        assert_eq!(w.len(), 1);
        assert_eq!(
            w.check_and_insert([1; KEY_LEN], 3_000, 2_001),
            Err(OpenError::Replayed)
        );
        w.prune(3_001);
        assert!(w.is_empty());
    }

    #[test]
    fn a_forgotten_entry_is_judged_afresh() {
        let mut w = ReplayWindow::new();
        let enc = [9u8; KEY_LEN];
        w.check_and_insert(enc, 1_000, 0).unwrap();
        w.forget(&enc);
        w.check_and_insert(enc, 5_000, 10).unwrap();
        // The first, stale heap entry must not evict the second sighting.
        w.prune(1_001);
        assert_eq!(
            w.check_and_insert(enc, 5_000, 1_001),
            Err(OpenError::Replayed)
        );
    }
}

//! The replay window: every envelope's enc is remembered until its validity
//! window (plus the skew allowance) has passed, after which the expiry check
//! refuses it anyway. The agent persists the entries so that a restart does
//! not reopen the window.

use std::collections::HashMap;

use crate::error::OpenError;
use crate::keys::KEY_LEN;

#[derive(Debug, Default, Clone)]
pub struct ReplayWindow {
    /// enc -> Unix ms after which the entry may be forgotten.
    seen: HashMap<[u8; KEY_LEN], u64>,
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
        self.seen.insert(enc, forget_after_ms);
        Ok(())
    }

    /// Forgets entries whose time has passed. An entry is kept through its
    /// last millisecond, matching open_request, which still accepts an
    /// envelope at exactly expiry + allowance.
    pub fn prune(&mut self, now_ms: u64) {
        self.seen.retain(|_, until| *until >= now_ms);
    }

    /// Restores an entry read back from storage.
    pub fn restore(&mut self, enc: [u8; KEY_LEN], forget_after_ms: u64) {
        self.seen.insert(enc, forget_after_ms);
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
}

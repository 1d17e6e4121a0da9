//! The domain controllers of a forest: which ones to ask, in which order,
//! and when to give up on one and ask the next.
//!
//! Every DC of a domain holds a writable copy of its accounts (an RODC
//! refers writes elsewhere), so a password operation may go to any of
//! them. The one that answered last is asked first next time: a dead DC
//! then costs one connect timeout once, not on every request.
//!
//! A DC is passed over only when it did not apply the operation: it could
//! not be reached, or it answered with a result that says "not here" (busy,
//! unavailable, unwilling, a referral) — LDAP modifies are atomic, so a
//! result code means nothing was written. A modify that got no answer at
//! all may have been applied: that is never re-sent to another DC.

use std::sync::Mutex;
use std::time::Duration;

use super::LdapFailure;
use crate::Refusal;

/// How long one DC may take to accept a connection and the TLS handshake:
/// a DC on the LAN answers in milliseconds, so a dead one is found quickly
/// enough for the next one to be asked within the operation's deadline.
pub const DC_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a password operation may spend finding a DC that answers; the
/// portal's request timeout (30 s by default) leaves this much room.
pub const OPERATION_DEADLINE: Duration = Duration::from_secs(20);

/// LDAP result codes with which a DC declines an operation it did not
/// perform, and another DC may perform it.
const REFERRAL: u32 = 10;
const BUSY: u32 = 51;
const UNAVAILABLE: u32 = 52;
const UNWILLING_TO_PERFORM: u32 = 53;

/// The extended error of AD's policy refusal: the domain's answer, the same
/// on every DC, not this DC's unwillingness.
const POLICY_CODE: &str = "0000052D";

/// Whether `failure` is this DC declining, so the next one may be asked.
pub fn fails_over(failure: &LdapFailure) -> bool {
    match failure.rc {
        REFERRAL | BUSY | UNAVAILABLE => true,
        UNWILLING_TO_PERFORM => failure.code.as_deref() != Some(POLICY_CODE),
        _ => false,
    }
}

/// The outcome of one attempt on one DC.
#[derive(Debug)]
pub enum Attempt<E> {
    /// The DC answered: this is the operation's outcome.
    Final(E),
    /// The DC did not perform the operation; why, for the log and doctor.
    Elsewhere(String),
}

impl<E> From<E> for Attempt<E> {
    fn from(e: E) -> Attempt<E> {
        Attempt::Final(e)
    }
}

impl From<Attempt<Refusal>> for Refusal {
    /// Where no other DC is asked, a DC that declined is unavailable.
    fn from(a: Attempt<Refusal>) -> Refusal {
        match a {
            Attempt::Final(r) => r,
            Attempt::Elsewhere(why) => Refusal::DirectoryUnavailable(why),
        }
    }
}

/// The configured DCs and the one that answered last.
#[derive(Debug)]
pub struct Controllers {
    last_good: Mutex<Option<String>>,
}

impl Controllers {
    pub fn new() -> Controllers {
        Controllers {
            last_good: Mutex::new(None),
        }
    }

    /// `candidates` in the order to try them now.
    pub fn order(&self, candidates: Vec<String>) -> Vec<String> {
        let last = self.last_good.lock().expect("controllers lock").clone();
        last_good_first(candidates, last.as_deref())
    }

    /// Records that `url` answered.
    pub fn answered(&self, url: &str) {
        *self.last_good.lock().expect("controllers lock") = Some(url.to_owned());
    }

    pub fn last_good(&self) -> Option<String> {
        self.last_good.lock().expect("controllers lock").clone()
    }
}

impl Default for Controllers {
    fn default() -> Self {
        Controllers::new()
    }
}

/// The DC that answered last first, then the others in their given order.
fn last_good_first(mut candidates: Vec<String>, last: Option<&str>) -> Vec<String> {
    if let Some(i) = last.and_then(|l| candidates.iter().position(|c| c == l)) {
        let good = candidates.remove(i);
        candidates.insert(0, good);
    }
    candidates
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_dc_that_answered_last_is_asked_first_then_the_rest_in_order() {
        let dcs = Controllers::new();
        let all = urls(&["ldaps://a", "ldaps://b", "ldaps://c"]);
        assert_eq!(dcs.order(all.clone()), all);
        dcs.answered("ldaps://c");
        assert_eq!(
            dcs.order(all.clone()),
            urls(&["ldaps://c", "ldaps://a", "ldaps://b"])
        );
        // A DC no longer listed (SRV records changed) is simply not asked.
        dcs.answered("ldaps://gone");
        assert_eq!(dcs.order(all.clone()), all);
    }

    #[test]
    fn only_a_dc_declining_the_operation_fails_over() {
        let f = |rc, text: &str| LdapFailure::from_result(rc, text);
        assert!(fails_over(&f(51, "busy")));
        assert!(fails_over(&f(52, "unavailable")));
        assert!(fails_over(&f(10, "0000202B: RefErr: referral")));
        assert!(fails_over(&f(
            53,
            "00002035: LdapErr: DSID-0C090FC2, the DC is not writable"
        )));
        // The domain's policy says the same on every DC.
        assert!(!fails_over(&f(53, "0000052D: SvcErr: policy")));
        // Refusals about the account or the request are final.
        assert!(!fails_over(&f(19, "0000052D: Constraint violation")));
        assert!(!fails_over(&f(50, "00002098: SecErr")));
        assert!(!fails_over(&f(32, "0000208D: NameErr")));
        assert!(!fails_over(&f(49, "80090308: invalid credentials")));
    }
}

//! The eligibility details of a GET_PASSWORD_POLICY reply: whether the
//! account is locked now, and for each operation `ok` or the outcome it
//! would be refused with, so a portal can refuse at its first step instead
//! of after the user typed a new password twice.
//!
//! Each verdict is the operation's own check ([`Eligibility`]) turned into
//! an outcome by [`refusal_reply`], the function that turns the operation's
//! refusal into its reply: the two cannot name different outcomes.

use directory::{Eligibility, Refusal};
use relay_client::outcome::outcome_name;

use super::refusal_reply;

/// The detail keys, in the order they are sent (docs/PROTOCOL.md).
pub const LOCKED: &str = "locked";
pub const RESET: &str = "reset";
pub const CHANGE: &str = "change";
pub const UNLOCK: &str = "unlock";

/// The value of an operation that would go ahead.
pub const OK: &str = "ok";

fn verdict(check: Result<(), Refusal>) -> String {
    match check {
        Ok(()) => OK.to_owned(),
        Err(refusal) => outcome_name(refusal_reply(&refusal).0.outcome).to_owned(),
    }
}

/// The details to add to a successful policy reply. The reset is judged
/// as the reference portal sends it: with the unlock flag, without
/// must-change.
pub fn details(e: &Eligibility) -> Vec<(String, String)> {
    vec![
        (LOCKED.to_owned(), e.locked.to_string()),
        (RESET.to_owned(), verdict(e.reset(true, false))),
        (CHANGE.to_owned(), verdict(e.change())),
        (UNLOCK.to_owned(), verdict(e.unlock())),
    ]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use directory::DirectoryRight;

    use super::*;

    #[test]
    fn verdicts_are_ok_or_the_outcome_name_and_never_a_dn() {
        let e = Eligibility {
            enabled: true,
            locked: true,
            protected: false,
            rights: BTreeSet::from([DirectoryRight::ChangePassword]),
            container: "OU=Secret Place,DC=x".into(),
        };
        let d = details(&e);
        assert_eq!(
            d,
            [
                ("locked", "true"),
                ("reset", "PERMISSION_DENIED"),
                ("change", "ACCOUNT_LOCKED"),
                ("unlock", "PERMISSION_DENIED"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        assert!(d.iter().all(|(_, v)| !v.contains("Secret")));
    }
}

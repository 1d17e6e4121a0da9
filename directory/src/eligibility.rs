//! Whether each password operation could be done on an account right now,
//! for reasons that do not depend on the password typed: the account's
//! state and the service account's rights on it. Lets a portal refuse at
//! its first step instead of after the user typed a new password twice.
//!
//! The checks run in the order the backends' operations run theirs, so a
//! verdict here is the refusal the operation itself would answer (before
//! the password rules and, for a change, the current password).

use std::collections::BTreeSet;

use crate::{DirectoryRight, Refusal};

/// An account's state and the service account's rights on it, read by
/// [`crate::Directory::eligibility`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eligibility {
    pub enabled: bool,
    /// Locked out now (AD's UF_LOCKOUT): lockoutTime is set and the lockout
    /// duration has not passed. An expired lockout is not locked.
    pub locked: bool,
    /// adminCount=1: AdminSDHolder's DACL applies, delegated rights do not.
    pub protected: bool,
    /// The rights the service account holds on the user object as the
    /// directory decides them (for a protected account, AdminSDHolder's).
    pub rights: BTreeSet<DirectoryRight>,
    /// The container holding the account: for a refusal's text in the
    /// event log, never for a reply.
    pub container: String,
}

impl Eligibility {
    fn require(&self, right: DirectoryRight) -> Result<(), Refusal> {
        if self.rights.contains(&right) {
            return Ok(());
        }
        Err(Refusal::PermissionDenied {
            right,
            container: self.container.clone(),
            blocked_at: None,
            denied_at: None,
        })
    }

    /// An administrative reset, as `reset_password(_, _, unlock,
    /// must_change)` decides before the password rules. With `unlock`, the
    /// reset clears a lockout in force, and needs Write lockoutTime only
    /// then: Reset Password alone resets an account that is not locked out.
    pub fn reset(&self, unlock: bool, must_change: bool) -> Result<(), Refusal> {
        if !self.enabled {
            return Err(Refusal::AccountDisabled);
        }
        if self.protected {
            return Err(Refusal::ProtectedAccount);
        }
        self.require(DirectoryRight::ResetPassword)?;
        if unlock && self.locked {
            self.require(DirectoryRight::WriteLockoutTime)?;
        }
        if must_change {
            self.require(DirectoryRight::WritePwdLastSet)?;
        }
        Ok(())
    }

    /// A user's change, as `change_password` decides when the current
    /// password is right, before the minimum age and the password rules. A
    /// protected account is refused only when AdminSDHolder's DACL lacks
    /// Change Password (by default it grants it to Everyone).
    pub fn change(&self) -> Result<(), Refusal> {
        if !self.enabled {
            return Err(Refusal::AccountDisabled);
        }
        if self.locked {
            return Err(Refusal::AccountLocked);
        }
        match self.require(DirectoryRight::ChangePassword) {
            Err(Refusal::PermissionDenied { .. }) if self.protected => {
                Err(Refusal::ProtectedAccount)
            }
            other => other,
        }
    }

    /// An unlock, as `unlock` decides: a disabled account can be unlocked,
    /// a protected one cannot.
    pub fn unlock(&self) -> Result<(), Refusal> {
        if self.protected {
            return Err(Refusal::ProtectedAccount);
        }
        self.require(DirectoryRight::WriteLockoutTime)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ordinary() -> Eligibility {
        Eligibility {
            enabled: true,
            locked: false,
            protected: false,
            rights: DirectoryRight::ALL.into_iter().collect(),
            container: "OU=Staff,DC=x".into(),
        }
    }

    fn denied(right: DirectoryRight) -> Result<(), Refusal> {
        Err(Refusal::PermissionDenied {
            right,
            container: "OU=Staff,DC=x".into(),
            blocked_at: None,
            denied_at: None,
        })
    }

    #[test]
    fn an_ordinary_account_can_have_everything_done() {
        let e = ordinary();
        assert_eq!(e.reset(true, true), Ok(()));
        assert_eq!(e.change(), Ok(()));
        assert_eq!(e.unlock(), Ok(()));
    }

    #[test]
    fn disabled_refuses_reset_and_change_but_not_unlock() {
        let e = Eligibility {
            enabled: false,
            locked: true,
            protected: true,
            ..ordinary()
        };
        assert_eq!(e.reset(true, false), Err(Refusal::AccountDisabled));
        assert_eq!(e.change(), Err(Refusal::AccountDisabled));
        assert_eq!(e.unlock(), Err(Refusal::ProtectedAccount));
        let e = Eligibility {
            enabled: false,
            ..ordinary()
        };
        assert_eq!(e.unlock(), Ok(()));
    }

    #[test]
    fn protected_refuses_reset_and_unlock_and_a_change_only_without_the_right() {
        let mut e = Eligibility {
            protected: true,
            ..ordinary()
        };
        assert_eq!(e.reset(true, false), Err(Refusal::ProtectedAccount));
        assert_eq!(e.unlock(), Err(Refusal::ProtectedAccount));
        assert_eq!(e.change(), Ok(()));
        e.rights.remove(&DirectoryRight::ChangePassword);
        assert_eq!(e.change(), Err(Refusal::ProtectedAccount));
    }

    #[test]
    fn a_lockout_refuses_a_change_only_and_the_unlock_flag_needs_write_lockout_time() {
        let mut e = Eligibility {
            locked: true,
            ..ordinary()
        };
        assert_eq!(e.change(), Err(Refusal::AccountLocked));
        assert_eq!(e.reset(true, false), Ok(()));
        e.rights.remove(&DirectoryRight::WriteLockoutTime);
        assert_eq!(
            e.reset(true, false),
            denied(DirectoryRight::WriteLockoutTime)
        );
        assert_eq!(e.reset(false, false), Ok(()));
        assert_eq!(e.unlock(), denied(DirectoryRight::WriteLockoutTime));
    }

    #[test]
    fn missing_rights_are_named_in_the_operations_order() {
        let mut e = ordinary();
        e.rights.clear();
        assert_eq!(e.reset(true, true), denied(DirectoryRight::ResetPassword));
        assert_eq!(e.change(), denied(DirectoryRight::ChangePassword));
        e.rights.insert(DirectoryRight::ResetPassword);
        // Not locked: the unlock flag needs nothing more.
        assert_eq!(e.reset(true, false), Ok(()));
        assert_eq!(e.reset(true, true), denied(DirectoryRight::WritePwdLastSet));
        e.locked = true;
        assert_eq!(
            e.reset(true, true),
            denied(DirectoryRight::WriteLockoutTime)
        );
    }
}

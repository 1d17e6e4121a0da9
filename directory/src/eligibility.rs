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

/// A password operation the agent performs, with the flags that change
/// what it writes. [`PasswordOperation::rights`] is the one table of the
/// rights each needs: the eligibility verdicts, the backends' permission
/// refusals and doctor's rights check all read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordOperation {
    /// An administrative reset: writes unicodePwd, with `unlock` also
    /// lockoutTime = 0, with `must_change` also pwdLastSet = 0.
    Reset { unlock: bool, must_change: bool },
    /// A user's change: removes the current unicodePwd, adds the new one.
    Change,
    /// Writes lockoutTime = 0.
    Unlock,
}

impl PasswordOperation {
    /// Every operation, with every combination of flags, the agent performs.
    pub const PERFORMED: [PasswordOperation; 6] = [
        PasswordOperation::Reset {
            unlock: false,
            must_change: false,
        },
        PasswordOperation::Reset {
            unlock: true,
            must_change: false,
        },
        PasswordOperation::Reset {
            unlock: false,
            must_change: true,
        },
        PasswordOperation::Reset {
            unlock: true,
            must_change: true,
        },
        PasswordOperation::Change,
        PasswordOperation::Unlock,
    ];

    /// The rights the operation needs on the user object, in the order the
    /// operation is refused for their lack: one per attribute it writes.
    /// Samba 4.17 asks no more (tests/tests/samba/rights.rs: each is
    /// needed, and these alone suffice).
    pub fn rights(self) -> Vec<DirectoryRight> {
        match self {
            PasswordOperation::Reset {
                unlock,
                must_change,
            } => [
                Some(DirectoryRight::ResetPassword),
                unlock.then_some(DirectoryRight::WriteLockoutTime),
                must_change.then_some(DirectoryRight::WritePwdLastSet),
            ]
            .into_iter()
            .flatten()
            .collect(),
            PasswordOperation::Change => vec![DirectoryRight::ChangePassword],
            PasswordOperation::Unlock => vec![DirectoryRight::WriteLockoutTime],
        }
    }

    /// The rights doctor checks: every right some performed operation
    /// needs, in [`DirectoryRight::ALL`]'s order.
    pub fn checked_rights() -> Vec<DirectoryRight> {
        DirectoryRight::ALL
            .into_iter()
            .filter(|r| {
                PasswordOperation::PERFORMED
                    .iter()
                    .any(|op| op.rights().contains(r))
            })
            .collect()
    }
}

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

    /// Every right `op` needs, the first one missing refused.
    fn require_all(&self, op: PasswordOperation) -> Result<(), Refusal> {
        op.rights().into_iter().try_for_each(|r| self.require(r))
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
        // The unlock flag clears only a lockout in force (both backends).
        self.require_all(PasswordOperation::Reset {
            unlock: unlock && self.locked,
            must_change,
        })
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
        match self.require_all(PasswordOperation::Change) {
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
        self.require_all(PasswordOperation::Unlock)
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
    fn doctor_checks_exactly_the_rights_the_operations_need() {
        assert_eq!(
            PasswordOperation::checked_rights(),
            DirectoryRight::ALL.to_vec()
        );
        assert_eq!(
            PasswordOperation::Reset {
                unlock: true,
                must_change: true
            }
            .rights(),
            [
                DirectoryRight::ResetPassword,
                DirectoryRight::WriteLockoutTime,
                DirectoryRight::WritePwdLastSet
            ]
        );
        // Each operation is allowed with its rights alone.
        for op in PasswordOperation::PERFORMED {
            let e = Eligibility {
                rights: op.rights().into_iter().collect(),
                ..ordinary()
            };
            let verdict = match op {
                PasswordOperation::Reset {
                    unlock,
                    must_change,
                } => e.reset(unlock, must_change),
                PasswordOperation::Change => e.change(),
                PasswordOperation::Unlock => e.unlock(),
            };
            assert_eq!(verdict, Ok(()), "{op:?}");
        }
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

//! The password operations on one domain controller's connection: read the
//! account's state, refuse what the DC would refuse anyway, modify, and
//! classify the result. `Attempt::Elsewhere` is returned only where nothing
//! was written (see `controllers.rs`); `LdapDirectory::failover` then asks
//! the next DC.

use envelope::Password;
use ldap3::{Ldap, Mod};

use super::controllers::Attempt;
use super::{LdapDirectory, Modified, set, unexpected, unicode_pwd};
use crate::eligibility::PasswordOperation;
use crate::{Account, DirectoryRight, Refusal};

type Outcome = Result<(), Attempt<Refusal>>;

impl LdapDirectory {
    pub(super) async fn reset_on(
        &self,
        ldap: &mut Ldap,
        account: &Account,
        new: &Password,
        unlock: bool,
        must_change: bool,
    ) -> Outcome {
        let user = self.user_state(ldap, account).await?;
        if user.disabled {
            return Err(Refusal::AccountDisabled.into());
        }
        if user.protected {
            return Err(Refusal::ProtectedAccount.into());
        }
        // Only a lockout in force is cleared: a service account delegated
        // Reset Password alone (a common delegation) can still reset every
        // account that is not locked out.
        let unlock = unlock && user.locked;
        let encoded = unicode_pwd(new.expose());
        let mut mods = vec![Mod::Replace(b"unicodePwd".to_vec(), set(&[&encoded]))];
        if unlock {
            mods.push(Mod::Replace(b"lockoutTime".to_vec(), set(&[b"0"])));
        }
        if must_change {
            mods.push(Mod::Replace(b"pwdLastSet".to_vec(), set(&[b"0"])));
        }
        let needed = PasswordOperation::Reset {
            unlock,
            must_change,
        }
        .rights();
        match self.modify(ldap, &account.object_guid, mods).await {
            Ok(()) => Ok(()),
            Err(Modified::Refused(f)) if f.is_access_denied() => {
                Err(self.denied(ldap, &user.dn, &needed).await.into())
            }
            Err(Modified::Refused(f)) if f.is_policy() => Err(self
                .policy_refusal(ldap, &user.dn, &user, new, false, &f.text)
                .await
                .into()),
            Err(f) => Err(unexpected(&self.name, f)),
        }
    }

    pub(super) async fn change_on(
        &self,
        ldap: &mut Ldap,
        account: &Account,
        current: &Password,
        new: &Password,
    ) -> Outcome {
        let user = self.user_state(ldap, account).await?;
        if user.disabled {
            return Err(Refusal::AccountDisabled.into());
        }
        if user.locked {
            return Err(Refusal::AccountLocked.into());
        }
        let old = unicode_pwd(current.expose());
        let fresh = unicode_pwd(new.expose());
        let mods = vec![
            Mod::Delete(b"unicodePwd".to_vec(), set(&[&old])),
            Mod::Add(b"unicodePwd".to_vec(), set(&[&fresh])),
        ];
        match self.modify(ldap, &account.object_guid, mods).await {
            Ok(()) => Ok(()),
            Err(Modified::Refused(f)) if f.is_wrong_password() => {
                Err(Refusal::WrongCurrentPassword.into())
            }
            Err(Modified::Refused(f)) if f.is_policy() => Err(self
                .policy_refusal(ldap, &user.dn, &user, new, true, &f.text)
                .await
                .into()),
            // Samba refuses a change without the right as a constraint
            // violation with no extended error: the user's DACL says whether
            // that is what happened.
            Err(Modified::Refused(f))
                if f.is_access_denied()
                    || f.code.is_none()
                        && self
                            .holds(ldap, &user.dn, DirectoryRight::ChangePassword)
                            .await
                            == Some(false) =>
            {
                // AdminSDHolder's DACL decided, not a delegation doctor can
                // fix: as the embedded backend answers.
                if user.protected {
                    Err(Refusal::ProtectedAccount.into())
                } else {
                    Err(self
                        .denied(ldap, &user.dn, &PasswordOperation::Change.rights())
                        .await
                        .into())
                }
            }
            Err(f) => Err(unexpected(&self.name, f)),
        }
    }

    pub(super) async fn unlock_on(&self, ldap: &mut Ldap, account: &Account) -> Outcome {
        let user = self.user_state(ldap, account).await?;
        if user.protected {
            return Err(Refusal::ProtectedAccount.into());
        }
        let mods = vec![Mod::Replace(b"lockoutTime".to_vec(), set(&[b"0"]))];
        match self.modify(ldap, &account.object_guid, mods).await {
            Ok(()) => Ok(()),
            Err(Modified::Refused(f)) if f.is_access_denied() => Err(self
                .denied(ldap, &user.dn, &PasswordOperation::Unlock.rights())
                .await
                .into()),
            Err(f) => Err(unexpected(&self.name, f)),
        }
    }
}

//! An embedded directory with Active Directory's semantics, kept in a JSON
//! file. Every change is written back (temporary file in the same
//! directory, fsync, rename, fsync of the directory) before the operation
//! returns, so it survives a restart and a `kill -9`. One process should
//! own a file at a time.
//!
//! # What it models
//!
//! - A forest of one or more domains, each with a tree of OUs and
//!   containers, groups (nesting allowed) and users.
//! - Users with sAMAccountName, userPrincipalName, objectGUID, displayName,
//!   enabled, lockoutTime, pwdLastSet, adminCount, group memberships and
//!   password verifiers (never the plaintext); every change of a user takes
//!   the forest's next USN (uSNChanged), which drives [`Directory::import`].
//! - The Default Domain Policy of each domain, and fine-grained password
//!   policies (PSOs) linked to users or groups: a PSO linked to the user wins
//!   over those linked through groups (nested ones included); among them the
//!   lowest precedence wins (ties: the name sorting first).
//! - Complexity exactly as AD defines it (see [`rules::check_complexity`]):
//!   three of five categories (upper, lower, digits 0-9, AD's listed
//!   symbols, letters without case; a space or `€` counts in none), no
//!   sAMAccountName longer than two characters, no displayName token longer
//!   than two characters (split on `, . - _ #`, tab and space), all
//!   case-insensitive. Lengths are UTF-16 code units, as AD counts them.
//! - Access control: ACEs allowing or denying a right to a trustee (a user,
//!   a group, `Everyone` or `Authenticated Users`), on the domain head, on
//!   OUs and containers, and on user objects; inheritable ones (CI) reach
//!   every descendant below them whose DACL is not protected. Access checks
//!   follow the canonical order of a DACL (explicit ACEs first, then the
//!   parent's, the grandparent's...; deny before allow at each level), see
//!   [`acl::access_check`]. Accounts with adminCount=1 carry the DACL of
//!   AdminSDHolder instead (protected): delegated rights never reach them.
//! - Every operation is evaluated as the forest's service account (and the
//!   groups it is in, and the well-known principals).
//!
//! - Lockout as AD computes it (UF_LOCKOUT of
//!   msDS-User-Account-Control-Computed): an account is locked while
//!   lockoutTime is set and the lockout duration has not passed since. The
//!   duration is the resultant PSO's `lockout_duration_secs`, else the
//!   domain's, each 30 minutes when absent (AD's default); 0 means until an
//!   administrator unlocks. An expired lockout leaves lockoutTime set, as AD
//!   does.
//! - Identity by objectGUID: operations act on the account's objectGUID, so
//!   a user moved or renamed ([`EmbeddedDirectory::move_user`]) is found at
//!   its new DN, and a deleted one ([`EmbeddedDirectory::delete_user`], which
//!   leaves a tombstone an incremental import reports) is `UserNotFound`.
//!
//! Not modelled: lockout counting (bad attempts never lock an account;
//! [`EmbeddedDirectory::lock`] does), password expiry at logon, account
//! expiry (which AD checks at logon, never on a password change or reset),
//! and the "password policy hints" control (administrative resets skip
//! history and minimum age, as AD does without it).
//!
//! # Operations, and the order of their checks
//!
//! - reset: the user (its objectGUID) exists (else `UserNotFound`), is enabled
//!   (`AccountDisabled`), has adminCount=0 (`ProtectedAccount`); the service
//!   account holds Reset Password, and Write lockoutTime when unlocking and
//!   Write pwdLastSet when forcing a change (`PermissionDenied`); then
//!   length and complexity. It sets the password (pushing it to the
//!   history), pwdLastSet (now, or 0 for must-change) and clears lockoutTime
//!   only when asked: a reset without unlock leaves a locked account locked.
//! - change: exists, enabled, not locked now (`AccountLocked`), the current
//!   password matches (`WrongCurrentPassword`), Change Password right
//!   (`PermissionDenied`; for adminCount=1, AdminSDHolder's DACL decides and
//!   a refusal is `ProtectedAccount`), minimum age (`ChangedTooRecently`),
//!   length, complexity, history (`InHistory`: the new password matches one
//!   of the last `history_length` passwords, the current one included).
//! - unlock: exists, adminCount=0, Write lockoutTime.
//! - eligibility: the state and rights the three operations above check
//!   (enabled, locked now, adminCount, each right), from the same access
//!   check; [`crate::Eligibility`] orders them as the operations do.
//! - policy: the resultant policy; import: users changed after a USN;
//!   effective rights: per OU (or container) directly holding users
//!   write-back can act on (enabled, adminCount=0), each user's chain
//!   evaluated, with the protected DACL that blocks a grant and the deny
//!   that decides ([`acl::withheld`]), as the LDAP backend reports them.
//!
//! # File format
//!
//! ```json
//! {
//!   "_comment": "free text (or any JSON value); kept when the file is rewritten",
//!   "service_account": "CN=svc-writeback,OU=Service Accounts,DC=contoso,DC=example",
//!   "highest_usn": 12100,
//!   "domains": [{
//!     "dns_name": "contoso.example",           // its DN: DC=contoso,DC=example
//!     "netbios_name": "CONTOSO",
//!     "policy": {"min_length": 8, "complexity": true, "history_length": 24,
//!                "min_age_secs": 86400, "max_age_secs": 3628800},
//!     "lockout_duration_secs": 1800,           // optional; 0: until unlocked
//!     "aces": [ACE...],                        // on the domain head
//!     "admin_sd_holder": [ACE...],             // the DACL of adminCount=1 accounts
//!     "password_settings": [{"name": "IT Admins PSO", "precedence": 10,
//!                            "settings": {same fields as policy},
//!                            "lockout_duration_secs": 1800,  // optional
//!                            "applies_to": ["CN=IT Admins,OU=Groups,DC=contoso,DC=example"]}]
//!   }],
//!   "ous": [{"dn": "OU=Users,DC=contoso,DC=example", "protected": false, "aces": [ACE...]}],
//!   "groups": [{"dn": "CN=IT Admins,OU=Groups,DC=contoso,DC=example", "member_of": []}],
//!   "users": [{
//!     "dn": "CN=Ada Lovelace,OU=Staff,OU=Users,DC=contoso,DC=example",
//!     "sam_account_name": "ada", "user_principal_name": "ada@contoso.example",
//!     "object_guid": "3b1a4c2e-7d5f-4e8a-9b6c-1d2e3f405162",
//!     "display_name": "Ada Lovelace", "enabled": true,
//!     "lockout_time": 0,                       // Unix ms; 0: never locked
//!     "pwd_last_set": 1767225600000,           // Unix ms; 0: must change; -1: now (at open)
//!     "admin_count": 0,
//!     "member_of": ["CN=...group DN"],
//!     "passwords": ["sha256$<salt b64>$<SHA-256(salt || UTF-8 password) b64>", "...older"],
//!     "usn_changed": 12001,
//!     "protected": false,                      // SE_DACL_PROTECTED on the user
//!     "aces": [ACE...]                         // on the user object
//!   }],
//!   "deleted": [{"object_guid": "...", "usn_changed": 12101}]  // tombstones
//! }
//! ```
//!
//! An ACE is `{"type": "allow" | "deny", "right": R, "trustee": DN or
//! "Everyone" or "Authenticated Users", "inheritable": bool}` where R is
//! `reset-password`, `change-password`, `write-lockout-time`,
//! `write-pwd-last-set` (or the right's GUID), `all-extended-rights`
//! (both extended rights), `write-all-properties` (both properties) or
//! `generic-all`. `_comment` is allowed on every object; any other unknown
//! field is an error. Optional fields (`aces`, `protected`, `member_of`,
//! `lockout_time`, `admin_count`, `password_settings`, `admin_sd_holder`,
//! `lockout_duration_secs`, `deleted`)
//! default to empty/false/0. A `pwd_last_set` of -1 becomes the time the
//! file is opened (and is written as that time with the next change), so a
//! sample user can have "just changed" their password whenever a test runs.
//! `passwords[0]` is the current password, the
//! rest the history, newest first, at most 24. objectGUIDs are in the
//! standard string form; [`Account::object_guid`] holds AD's byte order
//! (whose base64 is the cloud source anchor). Loading checks that every
//! parent, group, trustee and PSO target exists, that sAMAccountNames are
//! unique per domain and userPrincipalNames and objectGUIDs per forest.
//!
//! # Sample forests
//!
//! `examples/forests/contoso.json` and `examples/forests/fabrikam.json`;
//! each file's `_comment` lists its users, their passwords and what each is
//! for.

pub mod acl;
mod model;
mod tree;
pub mod verifier;

#[cfg(test)]
mod tests;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use envelope::Password;

pub use self::acl::{Ace, AceKind, AceRight};
use self::model::{ForestFile, ForestIndex, Parent};
pub use self::model::{Guid, WELL_KNOWN};
use super::{
    Account, ContainerRights, DenyAce, Directory, DirectoryError, DirectoryRight, Eligibility,
    Imported, Policy, Refusal, ResultantPolicy,
};
use crate::rules;

/// Milliseconds since the Unix epoch.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(proto::time::unix_ms)
}

/// A user's state beyond what [`Account`] carries, for tests and tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountState {
    pub account: Account,
    /// Unix ms; 0: never locked or unlocked since. It stays set when the
    /// lockout expires, as in AD: see `locked`.
    pub lockout_time_ms: u64,
    /// Locked out now: lockoutTime is set and the lockout duration has not
    /// passed (AD's UF_LOCKOUT).
    pub locked: bool,
    /// Unix ms; 0: must change at next logon.
    pub pwd_last_set_ms: u64,
    pub admin_count: u32,
    /// The DN of the OU or container holding the account.
    pub ou: String,
    /// Password verifiers kept (the current one and the history).
    pub passwords_kept: usize,
}

/// An embedded forest. Cheap to clone (the clones share the forest).
#[derive(Clone)]
pub struct EmbeddedDirectory {
    forest: String,
    inner: Arc<Inner>,
}

struct Inner {
    forest: String,
    path: PathBuf,
    clock: Clock,
    state: Mutex<State>,
}

struct State {
    file: ForestFile,
    index: ForestIndex,
}

impl std::fmt::Debug for EmbeddedDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedDirectory")
            .field("forest", &self.forest)
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

fn no_object_error(dn: &str) -> DirectoryError {
    DirectoryError(format!("no object {dn} in the directory"))
}

/// The DACL of the object at `dn`: an OU or container, a user, or a domain head.
fn aces_of<'a>(
    f: &'a mut ForestFile,
    ix: &ForestIndex,
    dn: &str,
) -> Result<&'a mut Vec<Ace>, DirectoryError> {
    if let Some(c) = ix.container(dn) {
        Ok(&mut f.ous[c].aces)
    } else if let Some(u) = ix.user(dn) {
        Ok(&mut f.users[u].aces)
    } else if let Some(d) = ix.domain(dn) {
        Ok(&mut f.domains[d].aces)
    } else {
        Err(no_object_error(dn))
    }
}

impl EmbeddedDirectory {
    /// Loads the forest file at `path`; `forest` is the configured name
    /// reported in [`Account::forest`].
    pub fn open(forest: &str, path: impl AsRef<Path>) -> Result<Self, DirectoryError> {
        Self::open_with_clock(forest, path, system_clock())
    }

    /// [`EmbeddedDirectory::open`] with another clock (tests).
    pub fn open_with_clock(
        forest: &str,
        path: impl AsRef<Path>,
        clock: Clock,
    ) -> Result<Self, DirectoryError> {
        let path = path.as_ref().to_path_buf();
        let text = fs::read_to_string(&path)
            .map_err(|e| DirectoryError(format!("forest {forest}: {}: {e}", path.display())))?;
        let (file, index) = parse(&text, clock())
            .map_err(|e| DirectoryError(format!("forest {forest}: {}: {e}", path.display())))?;
        Ok(EmbeddedDirectory {
            forest: forest.to_owned(),
            inner: Arc::new(Inner {
                forest: forest.to_owned(),
                path,
                clock,
                state: Mutex::new(State { file, index }),
            }),
        })
    }

    /// The file the forest is kept in.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The DN of the service account every operation is evaluated as.
    pub fn service_account(&self) -> String {
        self.inner.lock().file.service_account.clone()
    }

    /// A user's state, or `None` if there is no such user.
    pub fn account_state(&self, dn: &str) -> Option<AccountState> {
        let now = (self.inner.clock)();
        let st = self.inner.lock();
        let i = st.index.user(dn)?;
        let u = &st.file.users[i];
        Some(AccountState {
            account: u.account(&self.forest),
            lockout_time_ms: u.lockout_time,
            locked: st.index.locked(&st.file, i, now),
            pwd_last_set_ms: u.pwd_last_set_ms(),
            admin_count: u.admin_count,
            ou: st.index.parent_dn(&st.file, st.index.user_parent(i)),
            passwords_kept: u.passwords.len(),
        })
    }

    /// Whether `password` is the user's current password, as a bind would
    /// check it (regardless of the account being disabled or locked).
    pub fn check_password(&self, dn: &str, password: &Password) -> bool {
        let st = self.inner.lock();
        st.index
            .user(dn)
            .and_then(|i| st.file.users[i].passwords.first())
            .is_some_and(|v| verifier::verify(v, password.expose()))
    }

    /// Adds an ACE to an OU, a container, a domain head or a user object
    /// (nothing changes if an identical ACE is there already). Persisted.
    pub fn add_ace(&self, object_dn: &str, ace: Ace) -> Result<(), DirectoryError> {
        self.inner.modify(|f, ix| {
            if !ix.is_trustee(&ace.trustee) {
                return Err(DirectoryError(format!(
                    "trustee {} is neither a user, a group nor one of {WELL_KNOWN:?}",
                    ace.trustee
                )));
            }
            let aces = aces_of(f, ix, object_dn)?;
            if aces.contains(&ace) {
                return Ok(((), false));
            }
            aces.push(ace);
            f.highest_usn += 1;
            Ok(((), true))
        })
    }

    /// Removes the deny ACEs on `object_dn` (an OU, a container, a domain
    /// head or a user) that take `right` from the service account (itself,
    /// a group of its or a well-known principal): the fix `doctor` prints
    /// for a deny, which no grant can override. Returns how many were
    /// removed. Persisted.
    pub fn remove_denies(
        &self,
        object_dn: &str,
        right: DirectoryRight,
    ) -> Result<usize, DirectoryError> {
        self.inner.modify(|f, ix| {
            let aces = aces_of(f, ix, object_dn)?;
            let before = aces.len();
            aces.retain(|a| {
                !(a.kind == acl::AceKind::Deny && a.right.covers(right) && ix.in_token(&a.trustee))
            });
            let removed = before - aces.len();
            if removed > 0 {
                f.highest_usn += 1;
            }
            Ok((removed, removed > 0))
        })
    }

    /// Grants `right` to `trustee_dn` on `ou_dn` (any object [`add_ace`]
    /// accepts); `inheritable`: also on everything below it whose DACL is
    /// not protected. This is what `doctor`'s fix applies.
    ///
    /// [`add_ace`]: EmbeddedDirectory::add_ace
    pub fn grant(
        &self,
        ou_dn: &str,
        right: DirectoryRight,
        trustee_dn: &str,
        inheritable: bool,
    ) -> Result<(), DirectoryError> {
        self.add_ace(ou_dn, Ace::allow(right, trustee_dn, inheritable))
    }

    /// Sets (`protected` true: inheritance blocked) or clears the protected
    /// flag of an OU's, a container's or a user object's DACL. Persisted.
    pub fn set_inheritance(&self, dn: &str, protected: bool) -> Result<(), DirectoryError> {
        self.inner.modify(|f, ix| {
            let flag = if let Some(c) = ix.container(dn) {
                &mut f.ous[c].protected
            } else if let Some(u) = ix.user(dn) {
                &mut f.users[u].protected
            } else {
                return Err(no_object_error(dn));
            };
            if *flag == protected {
                return Ok(((), false));
            }
            *flag = protected;
            f.highest_usn += 1;
            Ok(((), true))
        })
    }

    /// Locks the account out (lockoutTime = now), as failed logons would.
    pub fn lock(&self, dn: &str) -> Result<(), DirectoryError> {
        let now = (self.inner.clock)().max(1);
        self.inner.modify(|f, ix| {
            let u = ix.user(dn).ok_or_else(|| no_object_error(dn))?;
            f.users[u].lockout_time = now;
            touch(f, u);
            Ok(((), true))
        })
    }

    /// Enables or disables the account.
    pub fn set_enabled(&self, dn: &str, enabled: bool) -> Result<(), DirectoryError> {
        self.inner.modify(|f, ix| {
            let u = ix.user(dn).ok_or_else(|| no_object_error(dn))?;
            if f.users[u].enabled == enabled {
                return Ok(((), false));
            }
            f.users[u].enabled = enabled;
            touch(f, u);
            Ok(((), true))
        })
    }
}

/// Parses and validates a forest file; -1 in pwd_last_set becomes `now_ms`.
fn parse(text: &str, now_ms: u64) -> Result<(ForestFile, ForestIndex), String> {
    let mut file: ForestFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let index = ForestIndex::build(&file)?;
    for u in &mut file.users {
        if u.pwd_last_set == -1 {
            u.pwd_last_set = i64::try_from(now_ms).unwrap_or(i64::MAX);
        }
    }
    Ok((file, index))
}

/// Gives a user the forest's next USN.
fn touch(f: &mut ForestFile, user: usize) {
    f.highest_usn += 1;
    f.users[user].usn_changed = f.highest_usn;
}

/// Where an error while saving goes.
trait SaveFailed {
    fn save_failed(why: String) -> Self;
}

impl SaveFailed for Refusal {
    fn save_failed(why: String) -> Self {
        Refusal::DirectoryUnavailable(why)
    }
}

impl SaveFailed for DirectoryError {
    fn save_failed(why: String) -> Self {
        DirectoryError(why)
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // State is replaced only after a successful save, so it is
        // consistent even if a holder panicked.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `change` on a copy of the forest; if it succeeds and reports a
    /// change, saves the copy and only then makes it current.
    fn modify<R, E: SaveFailed>(
        &self,
        change: impl FnOnce(&mut ForestFile, &ForestIndex) -> Result<(R, bool), E>,
    ) -> Result<R, E> {
        let mut st = self.lock();
        let mut next = st.file.clone();
        let (out, changed) = change(&mut next, &st.index)?;
        if changed {
            save(&self.path, &next).map_err(|e| {
                E::save_failed(format!(
                    "could not save the forest to {}: {e}",
                    self.path.display()
                ))
            })?;
            st.file = next;
        }
        Ok(out)
    }

    /// Refuses unless the service account holds `right` on the user.
    fn require(
        f: &ForestFile,
        ix: &ForestIndex,
        user: usize,
        right: DirectoryRight,
    ) -> Result<(), Refusal> {
        let levels = ix.user_levels(f, user);
        let in_token = |t: &str| ix.in_token(t);
        let Some(w) = acl::withheld(&levels, right, &in_token) else {
            return Ok(());
        };
        let dns = Self::chain_dns(f, ix, user);
        Err(Refusal::PermissionDenied {
            right,
            container: ix.parent_dn(f, ix.user_parent(user)),
            blocked_at: w.blocked_at.and_then(|d| dns.get(d).cloned()),
            denied_at: w.denied_at.and_then(|d| dns.get(d).cloned()),
        })
    }

    /// The DNs of [`ForestIndex::user_levels`]' levels: the user, then its
    /// containers (AdminSDHolder's single level is the user's own).
    fn chain_dns(f: &ForestFile, ix: &ForestIndex, user: usize) -> Vec<String> {
        let mut dns = vec![f.users[user].dn.clone()];
        dns.extend(ix.dns_from(f, ix.user_parent(user)));
        dns
    }

    fn set_password(f: &mut ForestFile, user: usize, new: &Password) {
        let mut salt = [0u8; 16];
        fastrand::fill(&mut salt);
        let u = &mut f.users[user];
        u.passwords
            .insert(0, verifier::make_verifier(new.expose(), &salt));
        u.passwords.truncate(rules::MAX_HISTORY);
    }

    fn reset_password(
        &self,
        guid: &[u8; 16],
        new: &Password,
        unlock: bool,
        must_change: bool,
    ) -> Result<(), Refusal> {
        let now = (self.clock)();
        self.modify(|f, ix| {
            let u = ix.user_by_guid(guid).ok_or(Refusal::UserNotFound)?;
            let user = &f.users[u];
            if !user.enabled {
                return Err(Refusal::AccountDisabled);
            }
            if user.admin_count != 0 {
                return Err(Refusal::ProtectedAccount);
            }
            Self::require(f, ix, u, DirectoryRight::ResetPassword)?;
            // As over LDAP: only a lockout in force is cleared, so Reset
            // Password alone resets every account not locked out.
            let unlock = unlock && ix.locked(f, u, now);
            if unlock {
                Self::require(f, ix, u, DirectoryRight::WriteLockoutTime)?;
            }
            if must_change {
                Self::require(f, ix, u, DirectoryRight::WritePwdLastSet)?;
            }
            let policy = ix.policy(f, u);
            rules::check_new_password(
                &policy,
                new.expose(),
                &user.sam_account_name,
                &user.display_name,
            )?;
            Self::set_password(f, u, new);
            let user = &mut f.users[u];
            user.pwd_last_set = if must_change {
                0
            } else {
                i64::try_from(now).unwrap_or(i64::MAX)
            };
            if unlock {
                user.lockout_time = 0;
            }
            touch(f, u);
            Ok(((), true))
        })
    }

    fn change_password(
        &self,
        guid: &[u8; 16],
        current: &Password,
        new: &Password,
    ) -> Result<(), Refusal> {
        let now = (self.clock)();
        self.modify(|f, ix| {
            let u = ix.user_by_guid(guid).ok_or(Refusal::UserNotFound)?;
            let user = &f.users[u];
            if !user.enabled {
                return Err(Refusal::AccountDisabled);
            }
            if ix.locked(f, u, now) {
                return Err(Refusal::AccountLocked);
            }
            if !user
                .passwords
                .first()
                .is_some_and(|v| verifier::verify(v, current.expose()))
            {
                return Err(Refusal::WrongCurrentPassword);
            }
            match Self::require(f, ix, u, DirectoryRight::ChangePassword) {
                Err(Refusal::PermissionDenied { .. }) if user.admin_count != 0 => {
                    return Err(Refusal::ProtectedAccount);
                }
                other => other?,
            }
            let policy = ix.policy(f, u);
            rules::check_min_age(&policy, user.pwd_last_set_ms(), now)?;
            rules::check_new_password(
                &policy,
                new.expose(),
                &user.sam_account_name,
                &user.display_name,
            )?;
            if user
                .passwords
                .iter()
                .take(policy.history_length as usize)
                .any(|v| verifier::verify(v, new.expose()))
            {
                return Err(Refusal::InHistory {
                    history_length: policy.history_length,
                });
            }
            Self::set_password(f, u, new);
            f.users[u].pwd_last_set = i64::try_from(now).unwrap_or(i64::MAX);
            touch(f, u);
            Ok(((), true))
        })
    }

    fn unlock(&self, guid: &[u8; 16]) -> Result<(), Refusal> {
        self.modify(|f, ix| {
            let u = ix.user_by_guid(guid).ok_or(Refusal::UserNotFound)?;
            if f.users[u].admin_count != 0 {
                return Err(Refusal::ProtectedAccount);
            }
            Self::require(f, ix, u, DirectoryRight::WriteLockoutTime)?;
            if f.users[u].lockout_time == 0 {
                return Ok(((), false));
            }
            f.users[u].lockout_time = 0;
            touch(f, u);
            Ok(((), true))
        })
    }

    /// The state and rights the operations above check, from the same
    /// access check ([`acl::withheld`] over [`ForestIndex::user_levels`]).
    fn eligibility(&self, guid: &[u8; 16]) -> Result<Eligibility, Refusal> {
        let now = (self.clock)();
        let st = self.lock();
        let (f, ix) = (&st.file, &st.index);
        let u = ix.user_by_guid(guid).ok_or(Refusal::UserNotFound)?;
        let levels = ix.user_levels(f, u);
        let in_token = |t: &str| ix.in_token(t);
        Ok(Eligibility {
            enabled: f.users[u].enabled,
            locked: ix.locked(f, u, now),
            protected: f.users[u].admin_count != 0,
            rights: DirectoryRight::ALL
                .into_iter()
                .filter(|r| acl::withheld(&levels, *r, &in_token).is_none())
                .collect(),
            container: ix.parent_dn(f, ix.user_parent(u)),
        })
    }

    fn policy(&self, guid: &[u8; 16]) -> Result<Policy, Refusal> {
        let st = self.lock();
        let u = st.index.user_by_guid(guid).ok_or(Refusal::UserNotFound)?;
        Ok(st.index.policy(&st.file, u))
    }

    fn refresh(&self, guid: &[u8; 16]) -> Option<Account> {
        let st = self.lock();
        let u = st.index.user_by_guid(guid)?;
        Some(st.file.users[u].account(&self.forest))
    }

    fn import(&self, since: Option<u64>) -> Imported {
        let st = self.lock();
        let mut accounts: Vec<Account> = st
            .file
            .users
            .iter()
            .filter(|u| since.is_none_or(|s| u.usn_changed > s))
            .map(|u| u.account(&self.forest))
            .collect();
        accounts.sort_by_key(|a| a.usn_changed);
        let deleted = match since {
            Some(s) => st
                .file
                .deleted
                .iter()
                .filter(|t| t.usn_changed > s)
                .map(|t| t.object_guid.0)
                .collect(),
            None => Vec::new(),
        };
        Imported {
            accounts,
            deleted,
            cursor: st.file.highest_usn,
        }
    }

    fn effective_rights(&self) -> Vec<ContainerRights> {
        let st = self.lock();
        let (f, ix) = (&st.file, &st.index);
        let mut holders: Vec<(Parent, Vec<usize>)> = Vec::new();
        // As over LDAP: only users write-back can act on (enabled, not
        // adminCount=1, which are refused before rights matter).
        for u in (0..f.users.len()).filter(|u| f.users[*u].enabled && f.users[*u].admin_count == 0)
        {
            let p = ix.user_parent(u);
            match holders.iter_mut().find(|(h, _)| *h == p) {
                Some((_, users)) => users.push(u),
                None => holders.push((p, vec![u])),
            }
        }
        // Domain heads first, then containers in file order.
        holders.sort_by_key(|(p, _)| match p {
            Parent::Domain(d) => (0, *d),
            Parent::Container(c) => (1, *c),
        });
        let in_token = |t: &str| ix.in_token(t);
        holders
            .into_iter()
            .map(|(p, users)| {
                let dn = ix.parent_dn(f, p);
                let mut out = ContainerRights {
                    is_ou: dn.get(..3).is_some_and(|s| s.eq_ignore_ascii_case("OU=")),
                    dn,
                    user_count: users.len(),
                    affected: 0,
                    missing: Vec::new(),
                    ungranted: Vec::new(),
                    blocked_at: None,
                    denied_by: Vec::new(),
                };
                let mut lacking = vec![false; users.len()];
                for right in DirectoryRight::ALL {
                    let mut missing = false;
                    for (i, &u) in users.iter().enumerate() {
                        let levels = ix.user_levels(f, u);
                        let Some(w) = acl::withheld(&levels, right, &in_token) else {
                            continue;
                        };
                        missing = true;
                        lacking[i] = true;
                        let dns = Self::chain_dns(f, ix, u);
                        if let Some(at) = w.denied_at.and_then(|d| dns.get(d)) {
                            let deny = DenyAce {
                                right,
                                at: at.clone(),
                                ace: format!("deny {} to the service account", right.as_str()),
                                dacl_without: None,
                            };
                            if !out.denied_by.contains(&deny) {
                                out.denied_by.push(deny);
                            }
                        }
                        if w.ungranted && !out.ungranted.contains(&right) {
                            out.ungranted.push(right);
                        }
                        if out.blocked_at.is_none() {
                            out.blocked_at = w.blocked_at.and_then(|d| dns.get(d).cloned());
                        }
                    }
                    if missing {
                        out.missing.push(right);
                    }
                }
                out.affected = lacking.iter().filter(|l| **l).count();
                out
            })
            .collect()
    }
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes the forest atomically: a temporary file next to `path` (with the
/// same permissions), fsync, rename over `path`, fsync of the directory.
fn save(path: &Path, file: &ForestFile) -> std::io::Result<()> {
    let mut json = serde_json::to_vec_pretty(file)?;
    json.push(b'\n');
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "forest".into());
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        if let Ok(meta) = fs::metadata(path) {
            out.set_permissions(meta.permissions())?;
        }
        out.write_all(&json)?;
        out.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    // The rename is done: the change is committed even if this fails.
    match fs::File::open(&dir).and_then(|d| d.sync_all()) {
        Ok(()) => {}
        Err(e) => tracing::warn!(
            path = %path.display(),
            error = %e,
            "could not fsync the forest's directory"
        ),
    }
    Ok(())
}

/// Runs a blocking directory operation off the async runtime.
async fn blocking<T: Send + 'static, E: SaveFailed + Send + 'static>(
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, E> {
    match tokio::task::spawn_blocking(work).await {
        Ok(out) => out,
        Err(e) => Err(E::save_failed(format!(
            "the directory operation failed: {e}"
        ))),
    }
}

#[async_trait::async_trait]
impl Directory for EmbeddedDirectory {
    fn forest(&self) -> &str {
        &self.forest
    }

    async fn import(&self, since: Option<u64>) -> Result<Imported, DirectoryError> {
        Ok(self.inner.import(since))
    }

    async fn refresh(&self, account: &Account) -> Result<Option<Account>, DirectoryError> {
        Ok(self.inner.refresh(&account.object_guid))
    }

    async fn reset_password(
        &self,
        account: &Account,
        new: &Password,
        unlock: bool,
        must_change: bool,
    ) -> Result<(), Refusal> {
        let (inner, guid, new) = (self.inner.clone(), account.object_guid, new.clone());
        blocking(move || inner.reset_password(&guid, &new, unlock, must_change)).await
    }

    async fn change_password(
        &self,
        account: &Account,
        current: &Password,
        new: &Password,
    ) -> Result<(), Refusal> {
        let (inner, guid) = (self.inner.clone(), account.object_guid);
        let (current, new) = (current.clone(), new.clone());
        blocking(move || inner.change_password(&guid, &current, &new)).await
    }

    async fn unlock(&self, account: &Account) -> Result<(), Refusal> {
        let (inner, guid) = (self.inner.clone(), account.object_guid);
        blocking(move || inner.unlock(&guid)).await
    }

    async fn policy(&self, account: &Account) -> Result<ResultantPolicy, Refusal> {
        // The embedded forest's service account reads every policy.
        self.inner
            .policy(&account.object_guid)
            .map(ResultantPolicy::Known)
    }

    async fn eligibility(&self, account: &Account) -> Result<Eligibility, Refusal> {
        self.inner.eligibility(&account.object_guid)
    }

    async fn effective_rights(&self) -> Result<Vec<ContainerRights>, DirectoryError> {
        Ok(self.inner.effective_rights())
    }
}

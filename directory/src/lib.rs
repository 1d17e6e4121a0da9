//! The directory seam of the write-back agent: what the agent asks of an
//! Active Directory forest, and the exact outcomes it gets back. Its
//! audience is the agent (`writeback-agent`) and the tests and tools that
//! drive a forest directly; it knows nothing of sessions, brokers or
//! envelopes beyond the password type.
//!
//! Every refusal carries the specific reason a user or an administrator
//! needs (the failing rule, the container that lacks a right and where
//! the right is lost), never a generic one.
//!
//! # Layout
//! - [`Directory`], [`Refusal`], [`DirectoryRight`] (this file): the seam,
//!   its operations and their refusals.
//! - [`rules`]: Active Directory's password rules (length, complexity,
//!   history, minimum age, the resultant policy), shared by both backends.
//! - [`sd`], [`sddl`]: security descriptors as AD returns them, and back
//!   to SDDL.
//! - [`effective`]: the service account's effective rights on users, and
//!   where each is lost.
//! - [`eligibility`]: which operations an account's state and those
//!   rights allow now, before a password is typed.
//! - [`ldap`]: the LDAPS backend, against a real domain controller.
//! - [`embedded`]: the embedded backend, Active Directory's semantics over
//!   a JSON file.

pub mod effective;
pub mod eligibility;
pub mod embedded;
pub mod ldap;
pub mod rules;
pub mod sd;
pub mod sddl;

use std::fmt;

use envelope::Password;

pub use eligibility::Eligibility;

/// A user account as the connector space sees it. Its identity is
/// (forest, objectGUID): the DN changes when the account is moved or
/// renamed, the objectGUID never does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The forest (configured name) the account lives in.
    pub forest: String,
    /// The DN when last read: a hint for logs and events, never what a
    /// backend acts on.
    pub dn: String,
    pub sam_account_name: String,
    pub user_principal_name: String,
    /// objectGUID in Active Directory's byte order (the source anchor is its base64).
    pub object_guid: [u8; 16],
    pub display_name: String,
    pub enabled: bool,
    /// A change counter (uSNChanged): imports after a cursor return only
    /// accounts changed since.
    pub usn_changed: u64,
}

/// The five character categories of Active Directory's complexity rule
/// ("Passwords must meet complexity requirements"): a password needs
/// characters from three of them. Characters in none (a space, a currency
/// sign, punctuation outside AD's list) count for nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    Uppercase,
    Lowercase,
    /// 0-9.
    Digit,
    /// One of AD's non-alphanumeric characters: ``~!@#$%^&*_-+=`|\(){}[]:;"'<>,.?/``.
    Symbol,
    /// A Unicode letter that is neither upper nor lower case (as in
    /// Chinese, Japanese or Arabic).
    OtherLetter,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Uppercase => "uppercase letter",
            Category::Lowercase => "lowercase letter",
            Category::Digit => "digit",
            Category::Symbol => "symbol",
            Category::OtherLetter => "letter without case",
        }
    }
}

/// What a password contained that AD's complexity rule forbids: the text
/// that matched, as the directory holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contained {
    /// The sAMAccountName (checked when longer than two characters).
    AccountName(String),
    /// A displayName token (split on AD's delimiters, longer than two).
    DisplayName(String),
}

impl Contained {
    /// The matched text.
    pub fn text(&self) -> &str {
        match self {
            Contained::AccountName(t) | Contained::DisplayName(t) => t,
        }
    }

    /// The stable name of the kind, for the reply's `contains_kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            Contained::AccountName(_) => "account_name",
            Contained::DisplayName(_) => "display_name",
        }
    }
}

impl fmt::Display for Contained {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Contained::AccountName(t) => write!(f, "the account name (\"{t}\")"),
            Contained::DisplayName(t) => write!(f, "part of the display name (\"{t}\")"),
        }
    }
}

/// The password policy that applies to one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// "Default Domain Policy" or the name of the fine-grained policy (PSO).
    pub source: String,
    pub min_length: u32,
    pub complexity: bool,
    pub history_length: u32,
    pub min_age_secs: u64,
    /// 0: passwords never expire (AD's maxPwdAge of 0 or "never").
    pub max_age_secs: u64,
}

/// The policy that applies to an account, as far as the service account
/// can see it. By default it can read *which* fine-grained policy applies
/// (msDS-ResultantPSO) but none of its settings: then the rules are
/// unknown, never zeros.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResultantPolicy {
    Known(Policy),
    /// The PSO named `source` applies; its settings cannot be read.
    Unreadable {
        source: String,
    },
}

impl ResultantPolicy {
    /// The settings, when they could be read.
    pub fn known(self) -> Option<Policy> {
        match self {
            ResultantPolicy::Known(p) => Some(p),
            ResultantPolicy::Unreadable { .. } => None,
        }
    }
}

/// The rights write-back needs on an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DirectoryRight {
    /// Extended right 00299570-246d-11d0-a768-00aa006e0529.
    ResetPassword,
    /// Extended right ab721a53-1e2f-11d0-9819-00aa0040529b.
    ChangePassword,
    /// Write property lockoutTime (28630ebf-41d5-11d1-a9c1-0000f80367c1).
    WriteLockoutTime,
    /// Write property pwdLastSet (bf967a0a-0de6-11d0-a285-00aa003049e2).
    WritePwdLastSet,
}

impl DirectoryRight {
    pub const ALL: [DirectoryRight; 4] = [
        DirectoryRight::ResetPassword,
        DirectoryRight::ChangePassword,
        DirectoryRight::WriteLockoutTime,
        DirectoryRight::WritePwdLastSet,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DirectoryRight::ResetPassword => "Reset Password",
            DirectoryRight::ChangePassword => "Change Password",
            DirectoryRight::WriteLockoutTime => "Write lockoutTime",
            DirectoryRight::WritePwdLastSet => "Write pwdLastSet",
        }
    }

    pub fn guid(self) -> &'static str {
        match self {
            DirectoryRight::ResetPassword => "00299570-246d-11d0-a768-00aa006e0529",
            DirectoryRight::ChangePassword => "ab721a53-1e2f-11d0-9819-00aa0040529b",
            DirectoryRight::WriteLockoutTime => "28630ebf-41d5-11d1-a9c1-0000f80367c1",
            DirectoryRight::WritePwdLastSet => "bf967a0a-0de6-11d0-a285-00aa003049e2",
        }
    }
}

/// Why a password operation did not happen. Each variant maps to one outcome
/// code of `envelope::body::outcome`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    TooShort {
        min_length: u32,
    },
    /// Categories to add from (fewer than three of five present), and/or the
    /// account name or a display-name token found in the password.
    FailsComplexity {
        missing: Vec<Category>,
        contains: Option<Contained>,
    },
    /// Only on a user change, and only when the domain names the history
    /// as the reason (AD does not check history on an administrative reset).
    InHistory {
        history_length: u32,
    },
    /// The domain refused the password for a policy reason the agent
    /// cannot attribute to one rule: a banned-password list, a password
    /// filter, a policy it cannot read, or, on a change, possibly the
    /// history (`history_length` is then the number of passwords kept).
    PolicyRefused {
        history_length: Option<u32>,
    },
    ChangedTooRecently {
        allowed_after_unix_ms: u64,
    },
    WrongCurrentPassword,
    /// The account (its objectGUID) no longer exists in its forest.
    UserNotFound,
    AccountDisabled,
    AccountLocked,
    /// The service account lacks `right` on the account. `container` holds
    /// the account (an OU or not); `blocked_at` is the protected DACL that
    /// stops a grant from above (the container itself or an ancestor);
    /// `denied_at` the object holding an explicit deny that decides (an
    /// ancestor or the account itself). For administrators only: the DNs
    /// must not reach the end user.
    PermissionDenied {
        right: DirectoryRight,
        container: String,
        blocked_at: Option<String>,
        denied_at: Option<String>,
    },
    /// adminCount=1: AdminSDHolder protects the account; delegated rights do not apply.
    ProtectedAccount,
    /// The directory could not be reached, or answered in a way no other
    /// variant describes, before anything was written. The text (DNs, LDAP
    /// codes, server diagnostics) is for administrators, never for users.
    DirectoryUnavailable(String),
    /// The change was sent but no answer came back (the connection failed
    /// after the write): it may or may not have been applied. The text is
    /// for administrators.
    WriteUnconfirmed(String),
}

impl Refusal {
    /// Refused by the password policy's rules (length, complexity, history,
    /// a filter, the minimum age): nothing was written, and nothing was
    /// learnt about the account's secret. Eligibility leaves these to the
    /// operation itself; the agent's per-account limit does not count them.
    pub fn is_policy_rule(&self) -> bool {
        matches!(
            self,
            Refusal::TooShort { .. }
                | Refusal::FailsComplexity { .. }
                | Refusal::InHistory { .. }
                | Refusal::PolicyRefused { .. }
                | Refusal::ChangedTooRecently { .. }
        )
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::TooShort { min_length } => {
                write!(f, "the password must have at least {min_length} characters")
            }
            Refusal::FailsComplexity { missing, contains } => {
                let mut parts = Vec::new();
                if !missing.is_empty() {
                    let names: Vec<_> = missing.iter().map(|c| c.as_str()).collect();
                    parts.push(format!(
                        "it needs characters from three of these groups: uppercase \
                         letters, lowercase letters, digits, symbols, letters without case; \
                         add from: {}",
                        names.join(", ")
                    ));
                }
                if missing.is_empty() && contains.is_none() {
                    parts.push("the domain controller refused it".to_owned());
                }
                if let Some(c) = contains {
                    parts.push(format!("it must not contain {c}"));
                }
                write!(
                    f,
                    "the password does not meet the complexity rules: {}",
                    parts.join("; ")
                )
            }
            Refusal::InHistory { history_length } => write!(
                f,
                "the password was used recently: the last {history_length} passwords cannot be reused"
            ),
            Refusal::PolicyRefused { history_length } => {
                f.write_str(
                    "the domain's password policy or a password filter refused the password",
                )?;
                match history_length {
                    Some(n) if *n > 0 => write!(
                        f,
                        " (it may be one of the last {n} passwords, or a word the domain bans)"
                    ),
                    _ => f.write_str(" (it may contain a word the domain bans)"),
                }
            }
            Refusal::ChangedTooRecently {
                allowed_after_unix_ms,
            } => write!(
                f,
                "the password was changed too recently; it can be changed again after {}",
                humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH
                        + std::time::Duration::from_millis(*allowed_after_unix_ms)
                )
            ),
            Refusal::WrongCurrentPassword => f.write_str("the current password is wrong"),
            Refusal::UserNotFound => f.write_str("the account no longer exists in its forest"),
            Refusal::AccountDisabled => f.write_str("the account is disabled"),
            Refusal::AccountLocked => f.write_str("the account is locked out"),
            Refusal::PermissionDenied {
                right,
                container,
                blocked_at,
                denied_at,
            } => {
                write!(
                    f,
                    "the write-back service account lacks the {} right on {container}",
                    right.as_str()
                )?;
                if let Some(at) = denied_at {
                    write!(f, " (an explicit deny on {at} decides)")?;
                }
                if let Some(at) = blocked_at {
                    write!(f, " (inheritance is blocked at {at})")?;
                }
                Ok(())
            }
            Refusal::ProtectedAccount => f.write_str(
                "the account is protected (adminCount=1) and cannot be reset by write-back",
            ),
            Refusal::DirectoryUnavailable(why) => write!(f, "the directory is unavailable: {why}"),
            Refusal::WriteUnconfirmed(why) => write!(
                f,
                "the change was sent but the directory did not confirm it: {why}"
            ),
        }
    }
}

/// A failure to reach or read the directory at all.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DirectoryError(pub String);

/// An explicit deny that takes a right from the service account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenyAce {
    pub right: DirectoryRight,
    /// The DN whose DACL holds the deny (an ancestor, or a user object).
    pub at: String,
    /// The ACE as the backend writes it: SDDL for Active Directory, e.g.
    /// `(OD;CI;CR;00299570-...;bf967aba-...;S-1-5-...)`.
    pub ace: String,
    /// The explicit part of `at`'s DACL without the denies that take
    /// write-back rights, as SDDL: what removing them writes. None when the
    /// DACL holds ACEs that cannot be rewritten faithfully.
    pub dacl_without: Option<String>,
}

/// The service account's effective rights on the users of one container
/// (OU or not), for `doctor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRights {
    pub dn: String,
    /// An organizational unit (else a container such as CN=Users).
    pub is_ou: bool,
    /// Users directly in this container that write-back can act on.
    pub user_count: usize,
    /// Of those, the users that lack some right (a deny on one user object
    /// affects that user only). Counted over the users whose descriptors
    /// were read: a lower bound where only a sample was.
    pub affected: usize,
    /// Rights the service account lacks on some user here.
    pub missing: Vec<DirectoryRight>,
    /// Of `missing`, those still lacking once the denies are removed: they
    /// need a grant (at `blocked_at` if set, else on this container).
    pub ungranted: Vec<DirectoryRight>,
    /// The protected DACL (here or above) that stops the grant from above.
    pub blocked_at: Option<String>,
    /// The explicit denies that decide.
    pub denied_by: Vec<DenyAce>,
}

/// The service account as fix commands must name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    pub dn: String,
    pub sam_account_name: String,
    pub sid: String,
    /// The domain's NetBIOS name (DOMAIN in DOMAIN\\account).
    pub netbios_domain: String,
}

/// A fine-grained policy (PSO) the service account cannot read, and where
/// the fix grants read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadablePolicy {
    pub dn: String,
    /// The Password Settings Container holding it: read granted there
    /// (inherited) covers PSOs created later too.
    pub container: String,
}

/// What one import read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Imported {
    /// Accounts created or changed (moved and renamed ones included).
    pub accounts: Vec<Account>,
    /// objectGUIDs of accounts deleted since the cursor (always empty for a
    /// full import, and when the service account cannot see tombstones).
    pub deleted: Vec<[u8; 16]>,
    /// The cursor for the next incremental import.
    pub cursor: u64,
}

/// One forest, as the agent uses it. Operations take the account from the
/// connector space and act, as the forest's service account, on the object
/// with its objectGUID (wherever it now is); an object that no longer exists
/// is [`Refusal::UserNotFound`].
#[async_trait::async_trait]
pub trait Directory: Send + Sync + 'static {
    /// The configured forest name.
    fn forest(&self) -> &str;

    /// Accounts changed after `since` (None: all), and the new cursor.
    async fn import(&self, since: Option<u64>) -> Result<Imported, DirectoryError>;

    /// The account as it is now (its current DN, UPN, state), `None` if its
    /// objectGUID no longer exists in the forest.
    async fn refresh(&self, account: &Account) -> Result<Option<Account>, DirectoryError>;

    /// Administrative reset: set `new` without the old password; optionally
    /// clear the lockout and require a change at next logon.
    async fn reset_password(
        &self,
        account: &Account,
        new: &Password,
        unlock: bool,
        must_change: bool,
    ) -> Result<(), Refusal>;

    /// User change: `current` is verified first.
    async fn change_password(
        &self,
        account: &Account,
        current: &Password,
        new: &Password,
    ) -> Result<(), Refusal>;

    /// Clears lockoutTime.
    async fn unlock(&self, account: &Account) -> Result<(), Refusal>;

    /// The policy that applies to the account.
    async fn policy(&self, account: &Account) -> Result<ResultantPolicy, Refusal>;

    /// The account's state and the service account's rights on it, from
    /// which [`Eligibility`] tells what each operation would answer before
    /// a password matters. A backend that cannot tell says it is
    /// unavailable: callers then go without.
    async fn eligibility(&self, account: &Account) -> Result<Eligibility, Refusal> {
        let _ = account;
        Err(Refusal::DirectoryUnavailable(
            "this directory does not report eligibility".into(),
        ))
    }

    /// Fine-grained policies whose settings the service account cannot
    /// read (for `doctor`); none where every policy is readable.
    async fn unreadable_policies(&self) -> Result<Vec<UnreadablePolicy>, DirectoryError> {
        Ok(Vec::new())
    }

    /// The service account's effective rights on every container holding users.
    async fn effective_rights(&self) -> Result<Vec<ContainerRights>, DirectoryError>;

    /// Who the service account is, for fix commands that name it; None
    /// where the backend has no such account (the embedded forest).
    async fn service_account(&self) -> Result<Option<ServiceAccount>, DirectoryError> {
        Ok(None)
    }
}

//! The directory seam: what the agent asks of an Active Directory forest,
//! and the exact outcomes it gets back. The embedded backend ([`embedded`])
//! implements Active Directory's semantics over a file; an LDAPS backend
//! implements the same trait against a real domain controller.
//!
//! Every refusal carries the specific reason a user or an administrator
//! needs (the failing rule, the OU that lacks a right), never a generic one.

pub mod embedded;
pub mod ldap;
pub mod sd;

use std::fmt;

use envelope::Password;

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

/// The character categories of Active Directory's complexity rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    Uppercase,
    Lowercase,
    Digit,
    /// Non-alphanumeric characters (and Unicode letters that are neither upper nor lower case).
    Symbol,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Uppercase => "uppercase letter",
            Category::Lowercase => "lowercase letter",
            Category::Digit => "digit",
            Category::Symbol => "symbol",
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
    pub max_age_secs: u64,
}

/// The rights write-back needs on an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Right {
    /// Extended right 00299570-246d-11d0-a768-00aa006e0529.
    ResetPassword,
    /// Extended right ab721a53-1e2f-11d0-9819-00aa0040529b.
    ChangePassword,
    /// Write property lockoutTime (28630ebf-41d5-11d1-a9c1-0000f80367c1).
    WriteLockoutTime,
    /// Write property pwdLastSet (bf967a0a-0de6-11d0-a285-00aa003049e2).
    WritePwdLastSet,
}

impl Right {
    pub const ALL: [Right; 4] = [
        Right::ResetPassword,
        Right::ChangePassword,
        Right::WriteLockoutTime,
        Right::WritePwdLastSet,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Right::ResetPassword => "Reset Password",
            Right::ChangePassword => "Change Password",
            Right::WriteLockoutTime => "Write lockoutTime",
            Right::WritePwdLastSet => "Write pwdLastSet",
        }
    }

    pub fn guid(self) -> &'static str {
        match self {
            Right::ResetPassword => "00299570-246d-11d0-a768-00aa006e0529",
            Right::ChangePassword => "ab721a53-1e2f-11d0-9819-00aa0040529b",
            Right::WriteLockoutTime => "28630ebf-41d5-11d1-a9c1-0000f80367c1",
            Right::WritePwdLastSet => "bf967a0a-0de6-11d0-a285-00aa003049e2",
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
    /// Categories missing (fewer than three of four present), and/or the
    /// account name or a display-name token found in the password.
    FailsComplexity {
        missing: Vec<Category>,
        contains: Option<String>,
    },
    InHistory {
        history_length: u32,
    },
    ChangedTooRecently {
        allowed_after_unix_ms: u64,
    },
    WrongCurrentPassword,
    /// The account (its objectGUID) no longer exists in its forest.
    UserNotFound,
    AccountDisabled,
    AccountLocked,
    /// The service account lacks `right` on the account: `ou` is the OU
    /// holding it, `inheritance_blocked` whether a protected ACL on that OU
    /// (or above it, up to where the right is granted) stops inheritance.
    PermissionDenied {
        right: Right,
        ou: String,
        inheritance_blocked: bool,
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
                        "it needs characters from three of four categories; add: {}",
                        names.join(", ")
                    ));
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
                ou,
                inheritance_blocked,
            } => write!(
                f,
                "the write-back service account lacks the {} right on {ou}{}",
                right.as_str(),
                if *inheritance_blocked {
                    " (inheritance is blocked there)"
                } else {
                    ""
                }
            ),
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

/// An OU's effective rights for the service account, for `doctor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OuRights {
    pub dn: String,
    /// Users directly in this OU.
    pub user_count: usize,
    /// Rights the service account lacks on users in this OU.
    pub missing: Vec<Right>,
    /// A protected ACL on this OU stops inheritance from above.
    pub inheritance_blocked: bool,
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
#[tonic::async_trait]
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
    async fn policy(&self, account: &Account) -> Result<Policy, Refusal>;

    /// The service account's effective rights on every OU holding users.
    async fn effective_rights(&self) -> Result<Vec<OuRights>, DirectoryError>;
}

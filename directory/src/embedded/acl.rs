//! The embedded forest's access control as AD evaluates it: ACEs on each
//! level of the tree, inheritance, protected DACLs, deny before allow, and
//! where a right is lost. Pure functions over the model's data; the LDAP
//! backend reads real security descriptors instead (`crate::effective`).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::DirectoryRight;

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AceKind {
    Allow,
    Deny,
}

/// What an ACE grants or denies: one of the four rights write-back needs, or
/// one of the broader rights that include some of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AceRight {
    Right(DirectoryRight),
    /// CR with no object type: every extended right (Reset and Change Password).
    AllExtendedRights,
    /// WP with no object type: every property (lockoutTime and pwdLastSet).
    WriteAllProperties,
    /// GA: everything.
    GenericAll,
}

impl AceRight {
    pub fn covers(self, right: DirectoryRight) -> bool {
        match self {
            AceRight::Right(r) => r == right,
            AceRight::AllExtendedRights => {
                matches!(
                    right,
                    DirectoryRight::ResetPassword | DirectoryRight::ChangePassword
                )
            }
            AceRight::WriteAllProperties => {
                matches!(
                    right,
                    DirectoryRight::WriteLockoutTime | DirectoryRight::WritePwdLastSet
                )
            }
            AceRight::GenericAll => true,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            AceRight::Right(DirectoryRight::ResetPassword) => "reset-password",
            AceRight::Right(DirectoryRight::ChangePassword) => "change-password",
            AceRight::Right(DirectoryRight::WriteLockoutTime) => "write-lockout-time",
            AceRight::Right(DirectoryRight::WritePwdLastSet) => "write-pwd-last-set",
            AceRight::AllExtendedRights => "all-extended-rights",
            AceRight::WriteAllProperties => "write-all-properties",
            AceRight::GenericAll => "generic-all",
        }
    }
}

impl fmt::Display for AceRight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for AceRight {
    type Err = String;

    /// A name (`reset-password`, ..., `generic-all`) or, for the four
    /// rights, the GUID of the extended right or attribute.
    fn from_str(s: &str) -> Result<AceRight, String> {
        let s = s.trim();
        for r in DirectoryRight::ALL {
            if s.eq_ignore_ascii_case(r.guid()) {
                return Ok(AceRight::Right(r));
            }
        }
        [
            AceRight::Right(DirectoryRight::ResetPassword),
            AceRight::Right(DirectoryRight::ChangePassword),
            AceRight::Right(DirectoryRight::WriteLockoutTime),
            AceRight::Right(DirectoryRight::WritePwdLastSet),
            AceRight::AllExtendedRights,
            AceRight::WriteAllProperties,
            AceRight::GenericAll,
        ]
        .into_iter()
        .find(|r| r.name().eq_ignore_ascii_case(s))
        .ok_or_else(|| {
            format!(
                "unknown right {s:?}: use reset-password, change-password, write-lockout-time, \
                 write-pwd-last-set, all-extended-rights, write-all-properties, generic-all, \
                 or a right's GUID"
            )
        })
    }
}

impl From<DirectoryRight> for AceRight {
    fn from(r: DirectoryRight) -> AceRight {
        AceRight::Right(r)
    }
}

impl Serialize for AceRight {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for AceRight {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<AceRight, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One access control entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ace {
    #[serde(rename = "type")]
    pub kind: AceKind,
    pub right: AceRight,
    /// The DN of a user or group, or a well-known principal ("Everyone",
    /// "Authenticated Users").
    pub trustee: String,
    /// CONTAINER_INHERIT (CI): also applies to every descendant whose ACL
    /// is not protected.
    #[serde(default)]
    pub inheritable: bool,
}

impl Ace {
    pub fn allow(right: impl Into<AceRight>, trustee: &str, inheritable: bool) -> Ace {
        Ace {
            kind: AceKind::Allow,
            right: right.into(),
            trustee: trustee.to_owned(),
            inheritable,
        }
    }

    pub fn deny(right: impl Into<AceRight>, trustee: &str, inheritable: bool) -> Ace {
        Ace {
            kind: AceKind::Deny,
            right: right.into(),
            trustee: trustee.to_owned(),
            inheritable,
        }
    }
}

/// One object's security descriptor as access checks see it.
#[derive(Debug, Clone, Copy)]
pub struct AclLevel<'a> {
    pub aces: &'a [Ace],
    /// SE_DACL_PROTECTED: nothing is inherited from the parent.
    pub protected: bool,
}

/// The outcome of an access check for one right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Granted,
    /// An applicable Deny ACE came first in canonical order.
    Denied,
    /// No applicable ACE: access is denied by default.
    NotGranted,
}

/// Access check for one right, in the canonical order of a DACL: the
/// object's explicit ACEs (deny before allow), then the inheritable ACEs of
/// its parent (deny before allow), then the grandparent's, and so on, up to
/// the first object whose DACL is protected (its own ACEs still count; those
/// above it do not) or the end of the chain. `chain[0]` is the object,
/// `chain[1]` its parent, and so on to the naming context's head.
/// `in_token` says whether a trustee is the caller or one of its groups.
/// With `honour_protection` false, protected DACLs are ignored: that tells
/// whether blocked inheritance is what withholds a right.
pub fn access_check(
    chain: &[AclLevel<'_>],
    right: DirectoryRight,
    in_token: &dyn Fn(&str) -> bool,
    honour_protection: bool,
) -> Access {
    for (depth, level) in chain.iter().enumerate() {
        let applicable = || {
            level.aces.iter().filter(move |a| {
                (depth == 0 || a.inheritable) && a.right.covers(right) && in_token(&a.trustee)
            })
        };
        if applicable().any(|a| a.kind == AceKind::Deny) {
            return Access::Denied;
        }
        if applicable().any(|a| a.kind == AceKind::Allow) {
            return Access::Granted;
        }
        if honour_protection && level.protected {
            break;
        }
    }
    Access::NotGranted
}

/// Where a withheld right is lost, as depths in the chain of
/// [`access_check`]: for [`crate::Refusal::PermissionDenied`] and `doctor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Withheld {
    /// The level whose deny ACE decides.
    pub denied_at: Option<usize>,
    /// The protected level where the walk stops without a grant (with any
    /// decisive deny set aside): a grant there reaches everything below.
    pub blocked_at: Option<usize>,
    /// Whether a grant is still needed once the denies are removed.
    pub ungranted: bool,
}

/// Why a right is withheld: `None` when it is granted.
pub fn withheld(
    chain: &[AclLevel<'_>],
    right: DirectoryRight,
    in_token: &dyn Fn(&str) -> bool,
) -> Option<Withheld> {
    // The walk of [`access_check`], remembering where it ended.
    let walk = |skip_denies: bool| {
        for (depth, level) in chain.iter().enumerate() {
            let applicable = || {
                level.aces.iter().filter(move |a| {
                    (depth == 0 || a.inheritable) && a.right.covers(right) && in_token(&a.trustee)
                })
            };
            if !skip_denies && applicable().any(|a| a.kind == AceKind::Deny) {
                return (Access::Denied, Some(depth));
            }
            if applicable().any(|a| a.kind == AceKind::Allow) {
                return (Access::Granted, None);
            }
            if level.protected {
                return (Access::NotGranted, Some(depth));
            }
        }
        (Access::NotGranted, None)
    };
    let (access, at) = walk(false);
    let mut out = Withheld {
        denied_at: None,
        blocked_at: None,
        ungranted: true,
    };
    match access {
        Access::Granted => return None,
        Access::NotGranted => out.blocked_at = at,
        Access::Denied => {
            out.denied_at = at;
            let (without, blocked) = walk(true);
            out.ungranted = without != Access::Granted;
            out.blocked_at = blocked.filter(|_| out.ungranted);
        }
    }
    Some(out)
}

// ---------------------------------------------------------------- password verifiers

#[cfg(test)]
mod tests {
    use super::*;

    const SVC: &str = "CN=svc,OU=Service,DC=x";
    const GROUP: &str = "CN=Helpdesk,OU=Groups,DC=x";

    fn token(t: &str) -> bool {
        t.eq_ignore_ascii_case(SVC) || t.eq_ignore_ascii_case(GROUP) || t == "Everyone"
    }

    fn check(chain: &[AclLevel<'_>], right: DirectoryRight) -> Access {
        access_check(chain, right, &token, true)
    }

    fn level(aces: &[Ace], protected: bool) -> AclLevel<'_> {
        AclLevel { aces, protected }
    }

    #[test]
    fn inheritable_grants_flow_down_and_others_do_not() {
        let top = [
            Ace::allow(DirectoryRight::ResetPassword, SVC, true),
            Ace::allow(DirectoryRight::ChangePassword, SVC, false),
        ];
        let chain = [level(&[], false), level(&[], false), level(&top, false)];
        assert_eq!(
            check(&chain, DirectoryRight::ResetPassword),
            Access::Granted
        );
        assert_eq!(
            check(&chain, DirectoryRight::ChangePassword),
            Access::NotGranted
        );
        assert_eq!(
            check(&chain, DirectoryRight::WritePwdLastSet),
            Access::NotGranted
        );
        // Granted to a group the caller is in; others' grants do not count.
        let via_group = [
            Ace::allow(DirectoryRight::WritePwdLastSet, GROUP, true),
            Ace::allow(DirectoryRight::WriteLockoutTime, "CN=Other,DC=x", true),
        ];
        let chain = [level(&[], false), level(&via_group, false)];
        assert_eq!(
            check(&chain, DirectoryRight::WritePwdLastSet),
            Access::Granted
        );
        assert_eq!(
            check(&chain, DirectoryRight::WriteLockoutTime),
            Access::NotGranted
        );
        // Non-inheritable ACEs on the object itself apply to it.
        let own = [Ace::allow(DirectoryRight::ChangePassword, SVC, false)];
        let chain = [level(&own, false)];
        assert_eq!(
            check(&chain, DirectoryRight::ChangePassword),
            Access::Granted
        );
    }

    #[test]
    fn broad_rights_cover_the_specific_ones() {
        let cases = [
            (AceRight::GenericAll, DirectoryRight::ALL.to_vec()),
            (
                AceRight::AllExtendedRights,
                vec![
                    DirectoryRight::ResetPassword,
                    DirectoryRight::ChangePassword,
                ],
            ),
            (
                AceRight::WriteAllProperties,
                vec![
                    DirectoryRight::WriteLockoutTime,
                    DirectoryRight::WritePwdLastSet,
                ],
            ),
        ];
        for (broad, covered) in cases {
            let aces = [Ace::allow(broad, "Everyone", true)];
            for r in DirectoryRight::ALL {
                let expected = if covered.contains(&r) {
                    Access::Granted
                } else {
                    Access::NotGranted
                };
                assert_eq!(
                    check(&[level(&[], false), level(&aces, false)], r),
                    expected
                );
            }
        }
    }

    #[test]
    fn deny_wins_at_the_same_level_and_nearer_levels_win() {
        let both = [
            Ace::allow(AceRight::GenericAll, SVC, true),
            Ace::deny(DirectoryRight::ResetPassword, GROUP, true),
        ];
        let chain = [level(&[], false), level(&both, false)];
        assert_eq!(check(&chain, DirectoryRight::ResetPassword), Access::Denied);
        assert_eq!(
            check(&chain, DirectoryRight::ChangePassword),
            Access::Granted
        );

        // An explicit allow on the object beats an inherited deny.
        let own = [Ace::allow(DirectoryRight::ResetPassword, SVC, false)];
        let deny_above = [Ace::deny(DirectoryRight::ResetPassword, SVC, true)];
        let chain = [level(&own, false), level(&deny_above, false)];
        assert_eq!(
            check(&chain, DirectoryRight::ResetPassword),
            Access::Granted
        );

        // An explicit deny on the object beats an inherited allow.
        let own = [Ace::deny(DirectoryRight::ResetPassword, SVC, false)];
        let allow_above = [Ace::allow(DirectoryRight::ResetPassword, SVC, true)];
        let chain = [level(&own, false), level(&allow_above, false)];
        assert_eq!(check(&chain, DirectoryRight::ResetPassword), Access::Denied);

        // The parent's inherited allow beats the grandparent's inherited deny.
        let chain = [
            level(&[], false),
            level(&allow_above, false),
            level(&deny_above, false),
        ];
        assert_eq!(
            check(&chain, DirectoryRight::ResetPassword),
            Access::Granted
        );
        let chain = [
            level(&[], false),
            level(&deny_above, false),
            level(&allow_above, false),
        ];
        assert_eq!(check(&chain, DirectoryRight::ResetPassword), Access::Denied);
    }

    #[test]
    fn protected_dacls_stop_inheritance_but_keep_their_own_aces() {
        let grant = [Ace::allow(DirectoryRight::ResetPassword, SVC, true)];
        // OU chain: user <- Executives (protected) <- Users (grant).
        let chain = [level(&[], false), level(&[], true), level(&grant, false)];
        assert_eq!(
            check(&chain, DirectoryRight::ResetPassword),
            Access::NotGranted
        );
        assert_eq!(
            access_check(&chain, DirectoryRight::ResetPassword, &token, false),
            Access::Granted
        );
        assert_eq!(
            withheld(&chain, DirectoryRight::ResetPassword, &token),
            Some(Withheld {
                denied_at: None,
                blocked_at: Some(1),
                ungranted: true
            })
        );
        // A grant on the protected OU itself flows to its users.
        let chain = [level(&[], false), level(&grant, true), level(&[], false)];
        assert_eq!(
            check(&chain, DirectoryRight::ResetPassword),
            Access::Granted
        );
        assert_eq!(
            withheld(&chain, DirectoryRight::ResetPassword, &token),
            None
        );
        // A protected user object receives nothing from above.
        let chain = [level(&[], true), level(&grant, false)];
        assert_eq!(
            check(&chain, DirectoryRight::ResetPassword),
            Access::NotGranted
        );
        assert_eq!(
            withheld(&chain, DirectoryRight::ResetPassword, &token).map(|w| w.blocked_at),
            Some(Some(0))
        );
        // A protected OU above the grant does not matter.
        let chain = [level(&[], false), level(&grant, false), level(&[], true)];
        assert_eq!(
            check(&chain, DirectoryRight::ResetPassword),
            Access::Granted
        );
    }

    #[test]
    fn withheld_names_the_deny_or_the_block_where_the_right_is_lost() {
        let w = |denied_at, blocked_at, ungranted| {
            Some(Withheld {
                denied_at,
                blocked_at,
                ungranted,
            })
        };
        // Nothing granted anywhere, nothing protected: grant on the container.
        let chain = [level(&[], false), level(&[], false)];
        assert_eq!(
            withheld(&chain, DirectoryRight::ResetPassword, &token),
            w(None, None, true)
        );
        // Blocked two levels above the user's container.
        let grant = [Ace::allow(DirectoryRight::ResetPassword, SVC, true)];
        let chain = [
            level(&[], false),
            level(&[], false),
            level(&[], false),
            level(&[], true),
            level(&grant, false),
        ];
        assert_eq!(
            withheld(&chain, DirectoryRight::ResetPassword, &token),
            w(None, Some(3), true)
        );
        // Explicitly denied below the grant: removing the deny suffices.
        let deny = [Ace::deny(DirectoryRight::ResetPassword, SVC, true)];
        let chain = [level(&[], false), level(&deny, false), level(&grant, false)];
        assert_eq!(
            withheld(&chain, DirectoryRight::ResetPassword, &token),
            w(Some(1), None, false)
        );
        // Denied on the object with nothing granted above: both are needed.
        let own = [Ace::deny(DirectoryRight::ResetPassword, SVC, false)];
        let chain = [level(&own, false), level(&[], true)];
        assert_eq!(
            withheld(&chain, DirectoryRight::ResetPassword, &token),
            w(Some(0), Some(1), true)
        );
    }

    #[test]
    fn ace_rights_parse_from_names_and_guids() {
        assert_eq!(
            "reset-password".parse::<AceRight>(),
            Ok(AceRight::Right(DirectoryRight::ResetPassword))
        );
        assert_eq!(
            "AB721A53-1E2F-11D0-9819-00AA0040529B".parse::<AceRight>(),
            Ok(AceRight::Right(DirectoryRight::ChangePassword))
        );
        assert_eq!("generic-all".parse::<AceRight>(), Ok(AceRight::GenericAll));
        assert!("write-everything".parse::<AceRight>().is_err());
        for r in DirectoryRight::ALL {
            let a = AceRight::from(r);
            assert_eq!(a.name().parse::<AceRight>(), Ok(a));
        }
        let ace: Ace = serde_json::from_str(
            r#"{"type":"deny","right":"00299570-246d-11d0-a768-00aa006e0529","trustee":"Everyone","inheritable":true}"#,
        )
        .unwrap();
        assert_eq!(
            ace,
            Ace::deny(DirectoryRight::ResetPassword, "Everyone", true)
        );
        assert_eq!(
            serde_json::to_string(&ace).unwrap(),
            r#"{"type":"deny","right":"reset-password","trustee":"Everyone","inheritable":true}"#
        );
    }
}

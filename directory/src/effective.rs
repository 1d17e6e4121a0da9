//! The service account's effective rights on user objects, decided as
//! Active Directory decides them, and where they are lost. Pure: the LDAP
//! backend fetches the descriptors, this module judges them.
//!
//! Two views are combined. A user's own descriptor is the ground truth for
//! that user: AD copies inheritable ACEs into every object (flagged ID), so
//! its stored DACL, in order, is what the access check reads — including
//! the per-object grants of the user class's default descriptor, such as
//! Change Password for Everyone. The ancestor walk — the object's explicit
//! ACEs, then each container's explicit inheritable ACEs, nearest first and
//! deny before allow at each level, up to the first protected DACL — tells
//! *where* a right is lost: the deny that decides, or the protected DACL
//! that stops the grant from above (where a grant also covers sub-OUs
//! created later).

use super::sd::{
    Ace, CONTAINER_INHERIT, INHERIT_ONLY, NO_PROPAGATE_INHERIT, SecurityDescriptor, USER_CLASS,
    grants, is_inherited,
};
use super::{ContainerRights, DenyAce, DirectoryRight, sddl};

/// One object's descriptor and its DN.
#[derive(Debug, Clone, Copy)]
pub struct Held<'a> {
    pub dn: &'a str,
    pub sd: &'a SecurityDescriptor,
}

/// How the walk decides one right for one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Walk {
    Granted,
    /// An explicit deny on `at` (the user or an ancestor) decides.
    Denied {
        at: String,
        ace: Ace,
    },
    /// Nothing grants it before the walk stops; `blocked_at` is the
    /// protected DACL it stopped at (None: it reached the naming context).
    NotGranted {
        blocked_at: Option<String>,
    },
}

fn for_users(a: &Ace) -> bool {
    a.inherited_object_type
        .as_deref()
        .is_none_or(|c| c.eq_ignore_ascii_case(USER_CLASS))
}

fn speaks(a: &Ace, right: DirectoryRight, sids: &[String]) -> bool {
    sids.iter().any(|s| s == &a.sid) && grants(a, right)
}

/// Whether the user's stored DACL grants `right`: the first applicable ACE
/// in stored order decides; inherit-only ACEs are for objects below it.
pub fn stored_grants(user: &SecurityDescriptor, right: DirectoryRight, sids: &[String]) -> bool {
    user.dacl
        .iter()
        .filter(|a| a.flags & INHERIT_ONLY == 0 && for_users(a))
        .find(|a| speaks(a, right, sids))
        .is_some_and(|a| a.allow)
}

/// The walk from the user (if its descriptor is known) through `chain`
/// (`chain[0]` the container holding it, then its parent, ... the naming
/// context). With `skip_denies`, what would decide once denies are gone.
pub fn walk(
    user: Option<Held<'_>>,
    chain: &[Held<'_>],
    right: DirectoryRight,
    sids: &[String],
    skip_denies: bool,
) -> Walk {
    let decide = |dn: &str, aces: Vec<&Ace>| {
        if !skip_denies && let Some(d) = aces.iter().find(|a| !a.allow) {
            return Some(Walk::Denied {
                at: dn.to_owned(),
                ace: (*d).clone(),
            });
        }
        aces.iter().any(|a| a.allow).then_some(Walk::Granted)
    };
    if let Some(u) = user {
        let own =
            u.sd.dacl
                .iter()
                .filter(|a| !is_inherited(a) && a.flags & INHERIT_ONLY == 0)
                .filter(|a| speaks(a, right, sids))
                .collect();
        if let Some(w) = decide(u.dn, own) {
            return w;
        }
        // A protected user object (AdminSDHolder's) gets nothing from its
        // containers; those are refused as protected accounts before any
        // rights matter, so the walk goes on to say what a container gives.
    }
    for (depth, level) in chain.iter().enumerate() {
        let inheritable = level
            .sd
            .dacl
            .iter()
            .filter(|a| !is_inherited(a) && a.flags & CONTAINER_INHERIT != 0)
            // No-propagate ACEs reach the container's children only.
            .filter(|a| depth == 0 || a.flags & NO_PROPAGATE_INHERIT == 0)
            .filter(|a| for_users(a) && speaks(a, right, sids))
            .collect();
        if let Some(w) = decide(level.dn, inheritable) {
            return w;
        }
        if level.sd.protected() {
            return Walk::NotGranted {
                blocked_at: Some(level.dn.to_owned()),
            };
        }
    }
    Walk::NotGranted { blocked_at: None }
}

/// A deny ACE that takes a write-back right from the service account.
fn blocking_deny(a: &Ace, sids: &[String]) -> bool {
    !a.allow
        && !is_inherited(a)
        && for_users(a)
        && DirectoryRight::ALL.iter().any(|r| speaks(a, *r, sids))
}

/// The DACL of `held` without the denies that take write-back rights from
/// the service account, as SDDL of its explicit ACEs (AD recomputes the
/// inherited ones when a DACL is written). None when the descriptor has
/// ACEs this code cannot write back faithfully.
pub fn dacl_without_denies(sd: &SecurityDescriptor, sids: &[String]) -> Option<String> {
    (sd.skipped == 0).then(|| {
        sddl::dacl(
            sd,
            sd.dacl
                .iter()
                .filter(|a| !is_inherited(a) && !blocking_deny(a, sids)),
        )
    })
}

/// The rights on the users of one container. `users` are the descriptors
/// read (all, or a bounded sample); with none, a user with no ACEs of its
/// own stands in. `chain` as for [`walk`].
pub fn container_rights(
    is_ou: bool,
    user_count: usize,
    users: &[Held<'_>],
    chain: &[Held<'_>],
    sids: &[String],
) -> ContainerRights {
    let dn = chain.first().map_or("", |c| c.dn).to_owned();
    let mut out = ContainerRights {
        dn,
        is_ou,
        user_count,
        affected: 0,
        missing: Vec::new(),
        ungranted: Vec::new(),
        blocked_at: None,
        denied_by: Vec::new(),
    };
    let sample: Vec<Option<Held<'_>>> = if users.is_empty() {
        vec![None]
    } else {
        users.iter().copied().map(Some).collect()
    };
    let mut lacking = vec![false; sample.len()];
    // The rights the agent's operations need (one table: eligibility.rs).
    for right in crate::eligibility::PasswordOperation::checked_rights() {
        let mut missing = false;
        let mut ungranted = false;
        for (i, user) in sample.iter().enumerate() {
            let granted = match user {
                Some(u) => stored_grants(u.sd, right, sids),
                None => walk(None, chain, right, sids, false) == Walk::Granted,
            };
            if granted {
                continue;
            }
            missing = true;
            lacking[i] = true;
            let left = match walk(*user, chain, right, sids, false) {
                Walk::Denied { at, ace } => {
                    let holder = chain
                        .iter()
                        .chain(user.iter())
                        .find(|h| h.dn == at)
                        .map(|h| h.sd);
                    let deny = DenyAce {
                        right,
                        ace: sddl::ace(&ace),
                        dacl_without: holder.and_then(|sd| dacl_without_denies(sd, sids)),
                        at,
                    };
                    if !out.denied_by.contains(&deny) {
                        out.denied_by.push(deny);
                    }
                    // What is left once the denies are gone may need a grant too.
                    walk(*user, chain, right, sids, true)
                }
                // The walk grants what the user's own DACL does not (it
                // was changed by hand, or is stale): a grant on the
                // container itself settles it.
                Walk::Granted => Walk::NotGranted { blocked_at: None },
                not_granted => not_granted,
            };
            if let Walk::NotGranted { blocked_at } = left {
                ungranted = true;
                out.blocked_at = out.blocked_at.take().or(blocked_at);
            }
        }
        if missing {
            out.missing.push(right);
        }
        if ungranted {
            out.ungranted.push(right);
        }
    }
    let lacking = lacking.iter().filter(|l| **l).count();
    // A stand-in or a sample in which every user lacks a right speaks for
    // the whole container.
    out.affected = if lacking == sample.len() {
        user_count
    } else {
        lacking
    };
    out
}

#[cfg(test)]
mod tests;

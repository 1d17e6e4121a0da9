use super::*;
use crate::sd::{CONTROL_ACCESS, INHERITED_ACE, SE_DACL_PROTECTED, WRITE_PROPERTY};

const SVC: &str = "S-1-5-21-1-2-3-1105";
const CI_IO: u8 = CONTAINER_INHERIT | INHERIT_ONLY;

fn sids() -> Vec<String> {
    vec![SVC.into(), "S-1-1-0".into(), "S-1-5-11".into()]
}

fn ace(allow: bool, flags: u8, right: DirectoryRight, sid: &str) -> Ace {
    let mask = match right {
        DirectoryRight::ResetPassword | DirectoryRight::ChangePassword => CONTROL_ACCESS,
        _ => WRITE_PROPERTY,
    };
    Ace {
        allow,
        object: true,
        flags,
        mask,
        object_type: Some(right.guid().to_owned()),
        inherited_object_type: (flags & CONTAINER_INHERIT != 0).then(|| USER_CLASS.to_owned()),
        sid: sid.to_owned(),
    }
}

/// The delegation: all four rights, inheritable to users.
fn delegation() -> Vec<Ace> {
    DirectoryRight::ALL
        .iter()
        .map(|r| ace(true, CI_IO, *r, SVC))
        .collect()
}

fn sd(protected: bool, dacl: Vec<Ace>) -> SecurityDescriptor {
    SecurityDescriptor {
        control: 0x0404 | if protected { SE_DACL_PROTECTED } else { 0 },
        dacl,
        skipped: 0,
    }
}

/// What AD stores on a user: the explicit ACEs of the user class's default
/// descriptor (Change Password for Everyone), then the inherited copies.
fn user(inherited: &[Ace]) -> SecurityDescriptor {
    let mut dacl = vec![ace(true, 0, DirectoryRight::ChangePassword, "S-1-1-0")];
    dacl.extend(inherited.iter().map(|a| Ace {
        flags: (a.flags | INHERITED_ACE) & !INHERIT_ONLY,
        ..a.clone()
    }));
    sd(false, dacl)
}

const TEAM_A: &str = "OU=Team-A,OU=Dept-Sales,OU=Region-West,OU=Corp,DC=x";
const SALES: &str = "OU=Dept-Sales,OU=Region-West,OU=Corp,DC=x";
const WEST: &str = "OU=Region-West,OU=Corp,DC=x";
const CORP: &str = "OU=Corp,DC=x";

#[test]
fn a_block_two_levels_up_is_named_and_change_password_comes_from_the_user_object() {
    let (team, sales, west, corp) = (
        sd(false, vec![]),
        sd(false, vec![]),
        sd(true, vec![]),
        sd(false, delegation()),
    );
    let chain = [
        Held {
            dn: TEAM_A,
            sd: &team,
        },
        Held {
            dn: SALES,
            sd: &sales,
        },
        Held {
            dn: WEST,
            sd: &west,
        },
        Held {
            dn: CORP,
            sd: &corp,
        },
    ];
    let u = user(&[]);
    let users = [Held {
        dn: "CN=a1,OU=Team-A",
        sd: &u,
    }];
    let r = container_rights(true, 1, &users, &chain, &sids());
    assert_eq!(r.dn, TEAM_A);
    assert_eq!(
        r.missing,
        vec![
            DirectoryRight::ResetPassword,
            DirectoryRight::WriteLockoutTime,
            DirectoryRight::WritePwdLastSet
        ],
        "Change Password is on every user object"
    );
    assert_eq!(r.ungranted, r.missing);
    assert_eq!(r.blocked_at.as_deref(), Some(WEST));
    assert!(r.denied_by.is_empty());

    // Without Region-West's protection, Corp's grant reaches Team-A; the
    // stored DACL (with the inherited copies) agrees.
    let open = sd(false, vec![]);
    let chain = [
        chain[0],
        chain[1],
        Held {
            dn: WEST,
            sd: &open,
        },
        chain[3],
    ];
    let u = user(&delegation());
    let users = [Held {
        dn: "CN=a1,OU=Team-A",
        sd: &u,
    }];
    let r = container_rights(true, 1, &users, &chain, &sids());
    assert!(r.missing.is_empty(), "{r:?}");
    assert_eq!(r.blocked_at, None);
}

#[test]
fn a_deny_at_an_ancestor_is_named_with_the_dacl_that_removes_it() {
    let deny = ace(false, CONTAINER_INHERIT, DirectoryRight::ResetPassword, SVC);
    let other = ace(true, 0, DirectoryRight::ResetPassword, "S-1-5-21-1-2-3-999");
    let (ou, corp) = (
        sd(false, vec![deny.clone(), other.clone()]),
        sd(false, delegation()),
    );
    let chain = [
        Held {
            dn: "OU=NoReset,OU=Corp,DC=x",
            sd: &ou,
        },
        Held {
            dn: CORP,
            sd: &corp,
        },
    ];
    let mut inherited = vec![deny.clone()];
    inherited.extend(delegation());
    let u = user(&inherited);
    let users = [Held {
        dn: "CN=n1,OU=NoReset",
        sd: &u,
    }];
    let r = container_rights(true, 1, &users, &chain, &sids());
    assert_eq!(r.missing, vec![DirectoryRight::ResetPassword]);
    assert!(
        r.ungranted.is_empty(),
        "Corp grants it once the deny is gone"
    );
    assert_eq!(r.denied_by.len(), 1);
    let d = &r.denied_by[0];
    assert_eq!(d.at, "OU=NoReset,OU=Corp,DC=x");
    assert_eq!(
        d.ace,
        format!(
            "(OD;CI;CR;{};{USER_CLASS};{SVC})",
            DirectoryRight::ResetPassword.guid()
        )
    );
    assert_eq!(
        d.dacl_without.as_deref(),
        Some("D:AI(OA;;CR;00299570-246d-11d0-a768-00aa006e0529;;S-1-5-21-1-2-3-999)")
    );
    // A grant would not help: doctor must not loop on one.
    assert_eq!(
        walk(
            Some(users[0]),
            &chain,
            DirectoryRight::ResetPassword,
            &sids(),
            false
        ),
        Walk::Denied {
            at: "OU=NoReset,OU=Corp,DC=x".into(),
            ace: deny
        }
    );
}

#[test]
fn a_deny_on_the_user_object_is_named_there() {
    let corp = sd(false, delegation());
    let container = sd(false, vec![]);
    let chain = [
        Held {
            dn: "OU=Staff,OU=Corp,DC=x",
            sd: &container,
        },
        Held {
            dn: CORP,
            sd: &corp,
        },
    ];
    let mut u = user(&delegation());
    u.dacl
        .insert(0, ace(false, 0, DirectoryRight::WritePwdLastSet, SVC));
    let other = user(&delegation());
    let users = [
        Held {
            dn: "CN=s1,OU=Staff",
            sd: &u,
        },
        Held {
            dn: "CN=s2,OU=Staff",
            sd: &other,
        },
    ];
    let r = container_rights(true, 2, &users, &chain, &sids());
    assert_eq!(r.missing, vec![DirectoryRight::WritePwdLastSet]);
    assert_eq!(r.denied_by[0].at, "CN=s1,OU=Staff");
    assert!(r.ungranted.is_empty());
    // One user's own deny affects that user, not the container's others.
    assert_eq!((r.user_count, r.affected), (2, 1));
}

#[test]
fn a_protected_container_that_is_not_an_ou_blocks_at_itself() {
    let legacy = sd(true, vec![]);
    let corp = sd(false, delegation());
    let chain = [
        Held {
            dn: "CN=Legacy,DC=x",
            sd: &legacy,
        },
        Held {
            dn: "DC=x",
            sd: &corp,
        },
    ];
    let u = user(&[]);
    let users = [Held {
        dn: "CN=l1,CN=Legacy,DC=x",
        sd: &u,
    }];
    let r = container_rights(false, 1, &users, &chain, &sids());
    assert!(!r.is_ou);
    assert_eq!(r.blocked_at.as_deref(), Some("CN=Legacy,DC=x"));
    assert_eq!(r.missing.len(), 3);
}

#[test]
fn only_inheritable_grants_for_users_and_for_the_service_account_count() {
    let here_only = ace(true, 0, DirectoryRight::ResetPassword, SVC);
    let mut for_groups = ace(true, CI_IO, DirectoryRight::WriteLockoutTime, SVC);
    for_groups.inherited_object_type = Some("bf967a9c-0de6-11d0-a285-00aa003049e2".into());
    let someone_else = ace(
        true,
        CI_IO,
        DirectoryRight::WritePwdLastSet,
        "S-1-5-21-1-2-3-9999",
    );
    let mut grandchildren_miss = ace(true, CI_IO, DirectoryRight::ChangePassword, SVC);
    grandchildren_miss.flags |= NO_PROPAGATE_INHERIT;
    let ou = sd(false, vec![here_only, for_groups, someone_else]);
    let parent = sd(false, vec![grandchildren_miss]);
    let chain = [
        Held {
            dn: "OU=A,OU=P,DC=x",
            sd: &ou,
        },
        Held {
            dn: "OU=P,DC=x",
            sd: &parent,
        },
    ];
    // No user descriptor read: a user with no ACEs of its own stands in.
    let r = container_rights(true, 2, &[], &chain, &sids());
    assert_eq!(r.missing, DirectoryRight::ALL.to_vec());
    assert_eq!(
        r.blocked_at, None,
        "nothing protected: grant on the OU itself"
    );
}

#[test]
fn stored_order_decides_for_the_user() {
    let inherited_deny = Ace {
        flags: INHERITED_ACE,
        ..ace(false, 0, DirectoryRight::ResetPassword, SVC)
    };
    let u = sd(
        false,
        vec![
            inherited_deny,
            ace(true, 0, DirectoryRight::ResetPassword, SVC),
        ],
    );
    assert!(!stored_grants(&u, DirectoryRight::ResetPassword, &sids()));
    let io = Ace {
        flags: INHERIT_ONLY | CONTAINER_INHERIT,
        ..ace(true, 0, DirectoryRight::WriteLockoutTime, SVC)
    };
    assert!(!stored_grants(
        &sd(false, vec![io]),
        DirectoryRight::WriteLockoutTime,
        &sids()
    ));
}

#[test]
fn a_dacl_with_aces_it_cannot_render_is_not_rewritten() {
    let mut s = sd(
        false,
        vec![ace(
            false,
            CONTAINER_INHERIT,
            DirectoryRight::ResetPassword,
            SVC,
        )],
    );
    assert_eq!(dacl_without_denies(&s, &sids()).as_deref(), Some("D:AI"));
    s.skipped = 1;
    assert_eq!(dacl_without_denies(&s, &sids()), None);
}

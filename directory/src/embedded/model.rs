//! The forest file (serde structures), its validation, and the index built
//! over it when it is loaded.

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::acl::{Ace, AclLevel};
use super::verifier;
use crate::rules::{self, PasswordSettings, PsoCandidate};
use crate::{Account, Policy};

/// Well-known principals an ACE may name instead of a DN; every caller is in them.
pub const WELL_KNOWN: [&str; 2] = ["Everyone", "Authenticated Users"];

// ---------------------------------------------------------------- file format

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

/// The whole file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForestFile {
    #[serde(rename = "_comment", default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<serde_json::Value>,
    /// The DN of the user every operation is evaluated as.
    pub service_account: String,
    /// The forest's highest committed USN; every change takes the next one.
    pub highest_usn: u64,
    pub domains: Vec<DomainFile>,
    /// Organizational units and containers (`OU=...` or `CN=...`).
    #[serde(default)]
    pub ous: Vec<ContainerFile>,
    #[serde(default)]
    pub groups: Vec<GroupFile>,
    #[serde(default)]
    pub users: Vec<UserFile>,
    /// Tombstones of deleted users: what an incremental import reports as
    /// deleted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deleted: Vec<TombstoneFile>,
}

/// What remains of a deleted user (AD keeps a tombstone with its objectGUID).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TombstoneFile {
    pub object_guid: Guid,
    /// The USN the deletion took.
    pub usn_changed: u64,
}

/// AD's default lockoutDuration: 30 minutes.
pub const DEFAULT_LOCKOUT_DURATION_SECS: u64 = 30 * 60;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainFile {
    #[serde(rename = "_comment", default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<serde_json::Value>,
    /// e.g. `contoso.example`; the domain's DN is `DC=contoso,DC=example`.
    pub dns_name: String,
    pub netbios_name: String,
    /// The Default Domain Policy's password settings.
    pub policy: PasswordSettings,
    /// The domain's lockoutDuration; absent: 30 minutes (AD's default); 0:
    /// until an administrator unlocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lockout_duration_secs: Option<u64>,
    /// ACEs on the domain head (inheritable ones reach the whole domain).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aces: Vec<Ace>,
    /// The DACL of CN=AdminSDHolder, which SDProp stamps (protected) on
    /// every account with adminCount=1.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub admin_sd_holder: Vec<Ace>,
    /// Fine-grained password policies (PSOs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub password_settings: Vec<PsoFile>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PsoFile {
    #[serde(rename = "_comment", default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<serde_json::Value>,
    pub name: String,
    /// msDS-PasswordSettingsPrecedence: lowest wins; at least 1.
    pub precedence: u32,
    pub settings: PasswordSettings,
    /// msDS-LockoutDuration; absent: 30 minutes; 0: until unlocked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lockout_duration_secs: Option<u64>,
    /// msDS-PSOAppliesTo: DNs of users or groups of the same domain.
    pub applies_to: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerFile {
    #[serde(rename = "_comment", default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<serde_json::Value>,
    pub dn: String,
    /// SE_DACL_PROTECTED: inheritance from the parent is blocked.
    #[serde(default, skip_serializing_if = "is_false")]
    pub protected: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aces: Vec<Ace>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupFile {
    #[serde(rename = "_comment", default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<serde_json::Value>,
    pub dn: String,
    /// Groups this group is nested in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub member_of: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserFile {
    #[serde(rename = "_comment", default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<serde_json::Value>,
    pub dn: String,
    pub sam_account_name: String,
    pub user_principal_name: String,
    /// The standard string form; bytes are kept in AD's (mixed-endian) order.
    pub object_guid: Guid,
    pub display_name: String,
    pub enabled: bool,
    /// Unix ms of the lockout; 0: not locked.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub lockout_time: u64,
    /// Unix ms of the last password set; 0: must change at next logon; in
    /// a file, -1 means "now" (resolved when the file is opened, as AD does
    /// when -1 is written).
    pub pwd_last_set: i64,
    /// 1: protected by AdminSDHolder.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub admin_count: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub member_of: Vec<String>,
    /// Password verifiers, newest first: `passwords[0]` is the current
    /// password; the rest is the history (at most 24 in all).
    pub passwords: Vec<String>,
    pub usn_changed: u64,
    /// SE_DACL_PROTECTED on the user object.
    #[serde(default, skip_serializing_if = "is_false")]
    pub protected: bool,
    /// ACEs on the user object itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aces: Vec<Ace>,
}

impl UserFile {
    pub fn pwd_last_set_ms(&self) -> u64 {
        u64::try_from(self.pwd_last_set).unwrap_or(0)
    }

    pub fn account(&self, forest: &str) -> Account {
        Account {
            forest: forest.to_owned(),
            dn: self.dn.clone(),
            sam_account_name: self.sam_account_name.clone(),
            user_principal_name: self.user_principal_name.clone(),
            object_guid: self.object_guid.0,
            display_name: self.display_name.clone(),
            enabled: self.enabled,
            usn_changed: self.usn_changed,
        }
    }
}

/// An objectGUID: 16 bytes in Active Directory's byte order, written in the
/// standard string form `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (the first
/// three fields little-endian in the bytes, as AD stores them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Guid(pub [u8; 16]);

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-",
            b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9]
        )?;
        for x in &b[10..] {
            write!(f, "{x:02x}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Guid {
    type Err = String;

    fn from_str(s: &str) -> Result<Guid, String> {
        let bad = || format!("{s:?} is not a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)");
        let t = s.trim().trim_start_matches('{').trim_end_matches('}');
        let groups: Vec<&str> = t.split('-').collect();
        let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
        if lens != [8, 4, 4, 4, 12] {
            return Err(bad());
        }
        let hex: String = groups.concat();
        let mut text = [0u8; 16];
        for (i, byte) in text.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
                .map_err(|_| bad())?;
        }
        let order = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
        let mut bytes = [0u8; 16];
        for (i, &from) in order.iter().enumerate() {
            bytes[i] = text[from];
        }
        Ok(Guid(bytes))
    }
}

impl Serialize for Guid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Guid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Guid, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

// ---------------------------------------------------------------- distinguished names

/// Splits a DN into its RDNs, honouring backslash escapes.
fn split_rdns(dn: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in dn.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            ',' => {
                parts.push(&dn[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&dn[start..]);
    parts
}

/// A DN's comparison form: RDNs trimmed, spaces around `=` dropped, lower
/// case (AD compares DNs case-insensitively). Also used for the names of
/// well-known principals.
pub fn normalize(dn: &str) -> String {
    split_rdns(dn.trim())
        .into_iter()
        .map(|rdn| match rdn.split_once('=') {
            Some((t, v)) => format!("{}={}", t.trim(), v.trim()).to_lowercase(),
            None => rdn.trim().to_lowercase(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The normalized DN of the parent, if the DN is well-formed (every RDN
/// `type=value`) and has one.
fn parent_of(normalized: &str) -> Option<String> {
    let rdns = split_rdns(normalized);
    if rdns.len() < 2 || rdns.iter().any(|r| !r.contains('=')) {
        return None;
    }
    Some(rdns[1..].join(","))
}

pub fn domain_dn(dns_name: &str) -> String {
    dns_name
        .split('.')
        .map(|label| format!("DC={label}"))
        .collect::<Vec<_>>()
        .join(",")
}

// ---------------------------------------------------------------- index

/// Where an object hangs in the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parent {
    /// Directly under a domain's head.
    Domain(usize),
    Container(usize),
}

/// Lookups over a validated [`ForestFile`]. Password operations never add,
/// remove or move objects, so indices stay valid across them; moves and
/// deletions (`tree.rs`) build a new index.
#[derive(Debug)]
pub struct ForestIndex {
    domains: HashMap<String, usize>,
    containers: HashMap<String, usize>,
    groups: HashMap<String, usize>,
    users: HashMap<String, usize>,
    users_by_guid: HashMap<[u8; 16], usize>,
    container_parent: Vec<Parent>,
    user_parent: Vec<Parent>,
    user_domain: Vec<usize>,
    /// Per user: normalized DNs of every group it is in, nested ones included.
    user_groups: Vec<HashSet<String>>,
    /// The service account, its groups and the well-known principals (normalized).
    token: HashSet<String>,
}

fn err<T>(msg: impl Into<String>) -> Result<T, String> {
    Err(msg.into())
}

impl ForestIndex {
    /// Validates the file and indexes it.
    pub fn build(f: &ForestFile) -> Result<ForestIndex, String> {
        if f.domains.is_empty() {
            return err("the forest has no domain");
        }
        let mut domains = HashMap::new();
        for (i, d) in f.domains.iter().enumerate() {
            if d.dns_name.is_empty() || d.dns_name.split('.').any(str::is_empty) {
                return err(format!("domain {:?}: not a DNS name", d.dns_name));
            }
            if d.netbios_name.trim().is_empty() {
                return err(format!("domain {}: empty netbios_name", d.dns_name));
            }
            check_settings(&d.dns_name, &d.policy)?;
            if domains
                .insert(normalize(&domain_dn(&d.dns_name)), i)
                .is_some()
            {
                return err(format!("domain {} appears twice", d.dns_name));
            }
        }
        let mut ix = ForestIndex {
            domains,
            containers: HashMap::new(),
            groups: HashMap::new(),
            users: HashMap::new(),
            users_by_guid: HashMap::new(),
            container_parent: Vec::new(),
            user_parent: Vec::new(),
            user_domain: Vec::new(),
            user_groups: Vec::new(),
            token: HashSet::new(),
        };
        let mut seen = HashSet::new();
        let mut unique = |dn: &str| -> Result<String, String> {
            let n = normalize(dn);
            if ix_has_domain(&n, &f.domains) || !seen.insert(n.clone()) {
                return err(format!("{dn}: two objects have this DN"));
            }
            Ok(n)
        };
        let mut containers = HashMap::new();
        for (i, c) in f.ous.iter().enumerate() {
            containers.insert(unique(&c.dn)?, i);
        }
        let mut groups = HashMap::new();
        for (i, g) in f.groups.iter().enumerate() {
            groups.insert(unique(&g.dn)?, i);
        }
        let mut users = HashMap::new();
        for (i, u) in f.users.iter().enumerate() {
            users.insert(unique(&u.dn)?, i);
        }
        ix.containers = containers;
        ix.groups = groups;
        ix.users = users;
        ix.users_by_guid = f
            .users
            .iter()
            .enumerate()
            .map(|(i, u)| (u.object_guid.0, i))
            .collect();

        for c in &f.ous {
            let p = ix.parent(&c.dn)?;
            ix.container_parent.push(p);
        }
        for g in &f.groups {
            ix.parent(&g.dn)?;
            for m in &g.member_of {
                if !ix.groups.contains_key(&normalize(m)) {
                    return err(format!("{}: member of {m}, which is not a group", g.dn));
                }
            }
        }
        let mut sams = HashSet::new();
        let mut upns = HashSet::new();
        let mut guids = HashSet::new();
        for u in &f.users {
            let p = ix.parent(&u.dn)?;
            let d = ix.domain_of(p);
            ix.user_parent.push(p);
            ix.user_domain.push(d);
            if u.sam_account_name.trim().is_empty() {
                return err(format!("{}: empty sam_account_name", u.dn));
            }
            if !sams.insert((d, u.sam_account_name.to_lowercase())) {
                return err(format!(
                    "{}: sAMAccountName {} is not unique in its domain",
                    u.dn, u.sam_account_name
                ));
            }
            if u.user_principal_name.trim().is_empty() {
                return err(format!("{}: empty user_principal_name", u.dn));
            }
            if !upns.insert(u.user_principal_name.to_lowercase()) {
                return err(format!(
                    "{}: userPrincipalName {} is not unique in the forest",
                    u.dn, u.user_principal_name
                ));
            }
            if !guids.insert(u.object_guid)
                || f.deleted.iter().any(|t| t.object_guid == u.object_guid)
            {
                return err(format!(
                    "{}: objectGUID {} is not unique in the forest",
                    u.dn, u.object_guid
                ));
            }
            if u.passwords.is_empty() {
                return err(format!("{}: no password verifier", u.dn));
            }
            if u.passwords.len() > rules::MAX_HISTORY {
                return err(format!(
                    "{}: more than {} password verifiers",
                    u.dn,
                    rules::MAX_HISTORY
                ));
            }
            if let Some(bad) = u.passwords.iter().find(|v| !verifier::verifier_is_valid(v)) {
                let shown: String = bad.chars().take(12).collect();
                return err(format!(
                    "{}: {shown:?}... is not a password verifier (sha256$<salt>$<digest>)",
                    u.dn
                ));
            }
            if u.pwd_last_set < -1 {
                return err(format!("{}: pwd_last_set must be -1, 0 or Unix ms", u.dn));
            }
            if u.admin_count > 1 {
                return err(format!("{}: admin_count must be 0 or 1", u.dn));
            }
            if u.usn_changed > f.highest_usn {
                return err(format!(
                    "{}: usn_changed {} is above the forest's highest_usn {}",
                    u.dn, u.usn_changed, f.highest_usn
                ));
            }
            for m in &u.member_of {
                if !ix.groups.contains_key(&normalize(m)) {
                    return err(format!("{}: member of {m}, which is not a group", u.dn));
                }
            }
        }
        for u in &f.users {
            let groups = ix.closure(f, &u.member_of);
            ix.user_groups.push(groups);
        }
        let service_account = ix.user(&f.service_account).ok_or_else(|| {
            format!(
                "service_account {} is not a user of the forest",
                f.service_account
            )
        })?;
        ix.token = ix.user_groups[service_account].clone();
        ix.token.insert(normalize(&f.service_account));
        ix.token.extend(WELL_KNOWN.iter().map(|w| normalize(w)));

        // ACE trustees and PSO links.
        let known = |t: &str| {
            let n = normalize(t);
            WELL_KNOWN.iter().any(|w| normalize(w) == n)
                || ix.users.contains_key(&n)
                || ix.groups.contains_key(&n)
        };
        let check_aces = |owner: &str, aces: &[Ace]| -> Result<(), String> {
            match aces.iter().find(|a| !known(&a.trustee)) {
                Some(a) => err(format!(
                    "{owner}: ACE trustee {} is neither a user, a group nor one of {WELL_KNOWN:?}",
                    a.trustee
                )),
                None => Ok(()),
            }
        };
        for (di, d) in f.domains.iter().enumerate() {
            check_aces(&domain_dn(&d.dns_name), &d.aces)?;
            check_aces(
                &format!("AdminSDHolder of {}", d.dns_name),
                &d.admin_sd_holder,
            )?;
            let mut names = HashSet::new();
            for p in &d.password_settings {
                if !names.insert(p.name.to_lowercase()) || p.name.trim().is_empty() {
                    return err(format!(
                        "{}: PSO name {:?} is empty or not unique",
                        d.dns_name, p.name
                    ));
                }
                if p.precedence == 0 {
                    return err(format!("PSO {}: precedence must be at least 1", p.name));
                }
                check_settings(&p.name, &p.settings)?;
                for target in &p.applies_to {
                    let n = normalize(target);
                    let domain = if let Some(&u) = ix.users.get(&n) {
                        ix.user_domain[u]
                    } else if ix.groups.contains_key(&n) {
                        ix.domain_of(ix.parent(target)?)
                    } else {
                        return err(format!(
                            "PSO {}: applies to {target}, which is neither a user nor a group",
                            p.name
                        ));
                    };
                    if domain != di {
                        return err(format!(
                            "PSO {}: applies to {target}, which is in another domain",
                            p.name
                        ));
                    }
                }
            }
        }
        for c in &f.ous {
            check_aces(&c.dn, &c.aces)?;
        }
        for u in &f.users {
            check_aces(&u.dn, &u.aces)?;
        }
        Ok(ix)
    }

    /// The parent of a (non-domain) object; it must exist.
    fn parent(&self, dn: &str) -> Result<Parent, String> {
        let p = parent_of(&normalize(dn)).ok_or_else(|| format!("{dn}: not a DN"))?;
        if let Some(&d) = self.domains.get(&p) {
            Ok(Parent::Domain(d))
        } else if let Some(&c) = self.containers.get(&p) {
            Ok(Parent::Container(c))
        } else {
            err(format!(
                "{dn}: its parent is neither a domain nor an OU or container of the file"
            ))
        }
    }

    /// The domain a container or the object under `p` belongs to.
    fn domain_of(&self, mut p: Parent) -> usize {
        loop {
            match p {
                Parent::Domain(d) => return d,
                Parent::Container(c) => p = self.container_parent[c],
            }
        }
    }

    fn closure(&self, f: &ForestFile, direct: &[String]) -> HashSet<String> {
        let mut out = HashSet::new();
        let mut todo: Vec<String> = direct.iter().map(|g| normalize(g)).collect();
        while let Some(g) = todo.pop() {
            if !out.insert(g.clone()) {
                continue;
            }
            if let Some(&i) = self.groups.get(&g) {
                todo.extend(f.groups[i].member_of.iter().map(|m| normalize(m)));
            }
        }
        out
    }

    pub fn user(&self, dn: &str) -> Option<usize> {
        self.users.get(&normalize(dn)).copied()
    }

    /// The user with this objectGUID, wherever it is now.
    pub fn user_by_guid(&self, guid: &[u8; 16]) -> Option<usize> {
        self.users_by_guid.get(guid).copied()
    }

    pub fn container(&self, dn: &str) -> Option<usize> {
        self.containers.get(&normalize(dn)).copied()
    }

    pub fn domain(&self, dn: &str) -> Option<usize> {
        self.domains.get(&normalize(dn)).copied()
    }

    pub fn is_trustee(&self, dn: &str) -> bool {
        let n = normalize(dn);
        WELL_KNOWN.iter().any(|w| normalize(w) == n)
            || self.users.contains_key(&n)
            || self.groups.contains_key(&n)
    }

    pub fn user_parent(&self, user: usize) -> Parent {
        self.user_parent[user]
    }

    /// Whether a trustee is the service account, one of its groups, or a
    /// well-known principal.
    pub fn in_token(&self, trustee: &str) -> bool {
        self.token.contains(&normalize(trustee))
    }

    /// The DN of the container (or domain head) `p`.
    pub fn parent_dn(&self, f: &ForestFile, p: Parent) -> String {
        match p {
            Parent::Domain(d) => domain_dn(&f.domains[d].dns_name),
            Parent::Container(c) => f.ous[c].dn.clone(),
        }
    }

    /// The security descriptors from `p` up to its domain's head.
    pub fn levels_from<'a>(&self, f: &'a ForestFile, mut p: Parent) -> Vec<AclLevel<'a>> {
        let mut out = Vec::new();
        loop {
            match p {
                Parent::Domain(d) => {
                    out.push(AclLevel {
                        aces: &f.domains[d].aces,
                        protected: false,
                    });
                    return out;
                }
                Parent::Container(c) => {
                    out.push(AclLevel {
                        aces: &f.ous[c].aces,
                        protected: f.ous[c].protected,
                    });
                    p = self.container_parent[c];
                }
            }
        }
    }

    /// The DNs of [`ForestIndex::levels_from`]'s levels, in the same order.
    pub fn dns_from(&self, f: &ForestFile, mut p: Parent) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            out.push(self.parent_dn(f, p));
            match p {
                Parent::Domain(_) => return out,
                Parent::Container(c) => p = self.container_parent[c],
            }
        }
    }

    /// The chain an access check on a user walks: the user, then its
    /// containers. Accounts with adminCount=1 carry AdminSDHolder's DACL,
    /// protected.
    pub fn user_levels<'a>(&self, f: &'a ForestFile, user: usize) -> Vec<AclLevel<'a>> {
        let u = &f.users[user];
        if u.admin_count != 0 {
            return vec![AclLevel {
                aces: &f.domains[self.user_domain[user]].admin_sd_holder,
                protected: true,
            }];
        }
        let mut out = vec![AclLevel {
            aces: &u.aces,
            protected: u.protected,
        }];
        out.extend(self.levels_from(f, self.user_parent[user]));
        out
    }

    /// The resultant password policy of a user.
    pub fn policy(&self, f: &ForestFile, user: usize) -> Policy {
        let domain = &f.domains[self.user_domain[user]];
        let own = normalize(&f.users[user].dn);
        let groups = &self.user_groups[user];
        let candidates: Vec<PsoCandidate<'_>> = domain
            .password_settings
            .iter()
            .filter_map(|p| {
                let targets: Vec<String> = p.applies_to.iter().map(|t| normalize(t)).collect();
                let direct = targets.contains(&own);
                (direct || targets.iter().any(|t| groups.contains(t))).then_some(PsoCandidate {
                    name: &p.name,
                    precedence: p.precedence,
                    direct,
                    settings: &p.settings,
                })
            })
            .collect();
        rules::resultant_policy(&domain.policy, &candidates)
    }
}

impl ForestIndex {
    /// The lockout duration that applies to a user in ms (0: until
    /// unlocked): the resultant PSO's, else the domain's.
    pub fn lockout_duration_ms(&self, f: &ForestFile, user: usize) -> u64 {
        let domain = &f.domains[self.user_domain[user]];
        let source = self.policy(f, user).source;
        let secs = domain
            .password_settings
            .iter()
            .find(|p| p.name == source)
            .map_or(domain.lockout_duration_secs, |p| p.lockout_duration_secs)
            .unwrap_or(DEFAULT_LOCKOUT_DURATION_SECS);
        secs.saturating_mul(1000)
    }

    /// Whether the user is locked out at `now_ms`, as AD computes
    /// UF_LOCKOUT: lockoutTime is set and the lockout duration has not
    /// passed since.
    pub fn locked(&self, f: &ForestFile, user: usize, now_ms: u64) -> bool {
        let since = f.users[user].lockout_time;
        if since == 0 {
            return false;
        }
        let duration = self.lockout_duration_ms(f, user);
        duration == 0 || now_ms < since.saturating_add(duration)
    }
}

fn ix_has_domain(normalized: &str, domains: &[DomainFile]) -> bool {
    domains
        .iter()
        .any(|d| normalize(&domain_dn(&d.dns_name)) == normalized)
}

fn check_settings(owner: &str, s: &PasswordSettings) -> Result<(), String> {
    if s.history_length as usize > rules::MAX_HISTORY {
        return err(format!(
            "{owner}: history_length above {}",
            rules::MAX_HISTORY
        ));
    }
    if s.max_age_secs != 0 && s.min_age_secs >= s.max_age_secs {
        return err(format!("{owner}: min_age_secs must be below max_age_secs"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_round_trip_in_ads_byte_order() {
        let g: Guid = "6f9619ff-8b86-d011-b42d-00c04fc964ff".parse().unwrap();
        assert_eq!(
            g.0,
            [
                0xff, 0x19, 0x96, 0x6f, 0x86, 0x8b, 0x11, 0xd0, 0xb4, 0x2d, 0x00, 0xc0, 0x4f, 0xc9,
                0x64, 0xff
            ]
        );
        assert_eq!(g.to_string(), "6f9619ff-8b86-d011-b42d-00c04fc964ff");
        assert_eq!(
            "{6F9619FF-8B86-D011-B42D-00C04FC964FF}".parse::<Guid>(),
            Ok(g)
        );
        assert!("6f9619ff-8b86-d011-b42d".parse::<Guid>().is_err());
        assert!(
            "6f9619ff-8b86-d011-b42d-00c04fc964fg"
                .parse::<Guid>()
                .is_err()
        );
    }

    #[test]
    fn dns_compare_case_insensitively_and_honour_escapes() {
        assert_eq!(
            normalize("CN=Ada Lovelace, OU=Staff,ou = Users,DC=contoso,DC=example"),
            "cn=ada lovelace,ou=staff,ou=users,dc=contoso,dc=example"
        );
        assert_eq!(
            parent_of(&normalize(r"CN=Lovelace\, Ada,OU=Staff,DC=x")).as_deref(),
            Some("ou=staff,dc=x")
        );
        assert_eq!(parent_of("dc=x"), None);
        assert_eq!(parent_of("not a dn,dc=x"), None);
        assert_eq!(
            domain_dn("emea.contoso.example"),
            "DC=emea,DC=contoso,DC=example"
        );
    }
}

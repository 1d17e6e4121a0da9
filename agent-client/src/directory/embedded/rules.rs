//! Active Directory's rules as pure functions: no clock, no I/O, no state.
//! The backend in [`super`] feeds them the forest's data and the time.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::directory::{Category, Contained, Policy, Refusal, Right};

/// The source of a policy that no fine-grained policy overrides.
pub const DEFAULT_POLICY: &str = "Default Domain Policy";

/// Active Directory keeps at most 24 old passwords (msDS-PasswordHistoryLength ≤ 24).
pub const MAX_HISTORY: usize = 24;

// ---------------------------------------------------------------- length and complexity

/// The length Active Directory measures: UTF-16 code units, as the SAM does
/// (and as a browser's `String.length` does, so portals agree).
pub fn password_length(password: &str) -> usize {
    password.encode_utf16().count()
}

/// The non-alphanumeric characters AD's complexity rule counts, exactly
/// as documented ("Password must meet complexity requirements"). A space,
/// currency signs and other punctuation are not among them.
pub const SYMBOLS: &str = "~!@#$%^&*_-+=`|\\(){}[]:;\"'<>,.?/";

/// The complexity category of one character, or `None` for characters AD
/// counts in no category (a space, `€`, `£`, non-ASCII digits...). Letters
/// that are neither upper nor lower case are AD's fifth category.
///
/// Samba (4.17) differs in one place: it counts every non-ASCII character
/// that is not upper or lower case in that fifth category, `€` included.
/// Active Directory is the reference here.
pub fn category(c: char) -> Option<Category> {
    if c.is_uppercase() {
        Some(Category::Uppercase)
    } else if c.is_lowercase() {
        Some(Category::Lowercase)
    } else if c.is_ascii_digit() {
        Some(Category::Digit)
    } else if SYMBOLS.contains(c) {
        Some(Category::Symbol)
    } else if c.is_alphabetic() {
        Some(Category::OtherLetter)
    } else {
        None
    }
}

/// The categories (in [`Category`] order) the password has none of.
pub fn missing_categories(password: &str) -> Vec<Category> {
    let mut present = [false; 5];
    for c in password.chars().filter_map(category) {
        present[category_index(c)] = true;
    }
    ALL_CATEGORIES
        .into_iter()
        .filter(|cat| !present[category_index(*cat)])
        .collect()
}

const ALL_CATEGORIES: [Category; 5] = [
    Category::Uppercase,
    Category::Lowercase,
    Category::Digit,
    Category::Symbol,
    Category::OtherLetter,
];

fn category_index(c: Category) -> usize {
    match c {
        Category::Uppercase => 0,
        Category::Lowercase => 1,
        Category::Digit => 2,
        Category::Symbol => 3,
        Category::OtherLetter => 4,
    }
}

/// The delimiters Active Directory splits displayName on.
pub const DISPLAY_NAME_DELIMITERS: [char; 7] = [',', '.', '-', '_', '#', '\t', ' '];

/// The displayName tokens AD checks: split on [`DISPLAY_NAME_DELIMITERS`],
/// those of three characters or more.
pub fn display_name_tokens(display_name: &str) -> impl Iterator<Item = &str> {
    display_name
        .split(DISPLAY_NAME_DELIMITERS)
        .filter(|t| t.chars().count() > 2)
}

/// Active Directory's complexity rule: characters from at least three of the
/// four categories, and neither the sAMAccountName (when longer than two
/// characters) nor any displayName token (longer than two characters) as a
/// case-insensitive substring. `Ok` when the password passes.
pub fn check_complexity(
    password: &str,
    sam_account_name: &str,
    display_name: &str,
) -> Result<(), Refusal> {
    // Three of five are needed: more than two missing fails. What a user
    // can add is named; letters without case count when present but are
    // not suggested to someone typing a Latin-script password.
    let missing = missing_categories(password);
    let missing = if missing.len() > 2 {
        let suggest: Vec<_> = missing
            .iter()
            .copied()
            .filter(|c| *c != Category::OtherLetter)
            .collect();
        if suggest.is_empty() { missing } else { suggest }
    } else {
        Vec::new()
    };
    let lower = Zeroizing::new(password.to_lowercase());
    let contains = if sam_account_name.chars().count() > 2
        && lower.contains(&sam_account_name.to_lowercase())
    {
        Some(Contained::AccountName(sam_account_name.to_owned()))
    } else {
        display_name_tokens(display_name)
            .find(|t| lower.contains(&t.to_lowercase()))
            .map(|t| Contained::DisplayName(t.to_owned()))
    };
    if missing.is_empty() && contains.is_none() {
        Ok(())
    } else {
        Err(Refusal::FailsComplexity { missing, contains })
    }
}

/// The policy rules of a new password, in AD's order: length, then
/// complexity. History and minimum age are the caller's (they do not apply
/// to administrative resets).
pub fn check_new_password(
    policy: &Policy,
    password: &str,
    sam_account_name: &str,
    display_name: &str,
) -> Result<(), Refusal> {
    if password_length(password) < policy.min_length as usize {
        return Err(Refusal::TooShort {
            min_length: policy.min_length,
        });
    }
    if policy.complexity {
        check_complexity(password, sam_account_name, display_name)?;
    }
    Ok(())
}

/// The minimum-age rule of a user change: `Err` with the time the change
/// becomes allowed. A `pwd_last_set` of 0 (must change at next logon) never
/// blocks.
pub fn check_min_age(policy: &Policy, pwd_last_set_ms: u64, now_ms: u64) -> Result<(), Refusal> {
    if pwd_last_set_ms == 0 || policy.min_age_secs == 0 {
        return Ok(());
    }
    let allowed_after = pwd_last_set_ms.saturating_add(policy.min_age_secs.saturating_mul(1000));
    if now_ms < allowed_after {
        Err(Refusal::ChangedTooRecently {
            allowed_after_unix_ms: allowed_after,
        })
    } else {
        Ok(())
    }
}

// ---------------------------------------------------------------- policies

/// Password settings, as the domain policy and PSOs hold them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordSettings {
    pub min_length: u32,
    pub complexity: bool,
    pub history_length: u32,
    pub min_age_secs: u64,
    /// 0: passwords never expire.
    pub max_age_secs: u64,
}

impl PasswordSettings {
    pub fn to_policy(&self, source: &str) -> Policy {
        Policy {
            source: source.to_owned(),
            min_length: self.min_length,
            complexity: self.complexity,
            history_length: self.history_length,
            min_age_secs: self.min_age_secs,
            max_age_secs: self.max_age_secs,
        }
    }
}

/// A fine-grained password policy (msDS-PasswordSettings), as far as the
/// choice of the resultant policy needs it.
pub struct PsoCandidate<'a> {
    pub name: &'a str,
    pub precedence: u32,
    /// Linked to the user directly (rather than through a group).
    pub direct: bool,
    pub settings: &'a PasswordSettings,
}

/// The resultant policy (msDS-ResultantPSO): among the PSOs that apply to
/// the user, those linked to the user directly win over those linked through
/// groups; among those, the lowest precedence wins (ties: the name sorting
/// first, where AD takes the lowest objectGUID). No PSO: the domain policy.
pub fn resultant_policy(domain: &PasswordSettings, candidates: &[PsoCandidate<'_>]) -> Policy {
    let best = candidates
        .iter()
        .min_by(|a, b| (!a.direct, a.precedence, a.name).cmp(&(!b.direct, b.precedence, b.name)));
    match best {
        Some(pso) => pso.settings.to_policy(pso.name),
        None => domain.to_policy(DEFAULT_POLICY),
    }
}

// ---------------------------------------------------------------- access control

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
    Right(Right),
    /// CR with no object type: every extended right (Reset and Change Password).
    AllExtendedRights,
    /// WP with no object type: every property (lockoutTime and pwdLastSet).
    WriteAllProperties,
    /// GA: everything.
    GenericAll,
}

impl AceRight {
    pub fn covers(self, right: Right) -> bool {
        match self {
            AceRight::Right(r) => r == right,
            AceRight::AllExtendedRights => {
                matches!(right, Right::ResetPassword | Right::ChangePassword)
            }
            AceRight::WriteAllProperties => {
                matches!(right, Right::WriteLockoutTime | Right::WritePwdLastSet)
            }
            AceRight::GenericAll => true,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            AceRight::Right(Right::ResetPassword) => "reset-password",
            AceRight::Right(Right::ChangePassword) => "change-password",
            AceRight::Right(Right::WriteLockoutTime) => "write-lockout-time",
            AceRight::Right(Right::WritePwdLastSet) => "write-pwd-last-set",
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
        for r in Right::ALL {
            if s.eq_ignore_ascii_case(r.guid()) {
                return Ok(AceRight::Right(r));
            }
        }
        [
            AceRight::Right(Right::ResetPassword),
            AceRight::Right(Right::ChangePassword),
            AceRight::Right(Right::WriteLockoutTime),
            AceRight::Right(Right::WritePwdLastSet),
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

impl From<Right> for AceRight {
    fn from(r: Right) -> AceRight {
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
    right: Right,
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
/// [`access_check`]: for [`Refusal::PermissionDenied`] and `doctor`.
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
    right: Right,
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

const VERIFIER_PREFIX: &str = "sha256$";

/// A salted SHA-256 verifier of a password's UTF-8 bytes:
/// `sha256$<salt, base64>$<SHA-256(salt ‖ password), base64>`. (Real AD
/// stores NT hashes; this model only needs something that is never the
/// plaintext.)
pub fn make_verifier(password: &str, salt: &[u8]) -> String {
    let digest = Sha256::new()
        .chain_update(salt)
        .chain_update(password.as_bytes())
        .finalize();
    format!(
        "{VERIFIER_PREFIX}{}${}",
        STANDARD.encode(salt),
        STANDARD.encode(digest.as_slice())
    )
}

/// Whether a verifier string is well-formed.
pub fn verifier_is_valid(verifier: &str) -> bool {
    parse_verifier(verifier).is_some()
}

fn parse_verifier(verifier: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    let rest = verifier.strip_prefix(VERIFIER_PREFIX)?;
    let (salt, digest) = rest.split_once('$')?;
    let salt = STANDARD.decode(salt).ok()?;
    let digest = STANDARD.decode(digest).ok()?;
    (!salt.is_empty() && digest.len() == 32).then_some((salt, digest))
}

/// Whether `password` matches `verifier` (compared in constant time).
pub fn verify(verifier: &str, password: &str) -> bool {
    let Some((salt, expected)) = parse_verifier(verifier) else {
        return false;
    };
    let actual = Sha256::new()
        .chain_update(&salt)
        .chain_update(password.as_bytes())
        .finalize();
    let diff = actual
        .as_slice()
        .iter()
        .zip(&expected)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal_missing(r: Result<(), Refusal>) -> (Vec<Category>, Option<Contained>) {
        match r {
            Err(Refusal::FailsComplexity { missing, contains }) => (missing, contains),
            other => panic!("expected FailsComplexity, got {other:?}"),
        }
    }

    #[test]
    fn categories_are_ads_five_and_some_characters_count_in_none() {
        let c = |ch| category(ch);
        assert_eq!(c('A'), Some(Category::Uppercase));
        assert_eq!(c('É'), Some(Category::Uppercase));
        assert_eq!(c('Ж'), Some(Category::Uppercase));
        assert_eq!(c('a'), Some(Category::Lowercase));
        assert_eq!(c('ß'), Some(Category::Lowercase));
        assert_eq!(c('λ'), Some(Category::Lowercase));
        assert_eq!(c('7'), Some(Category::Digit));
        for symbol in SYMBOLS.chars() {
            assert_eq!(c(symbol), Some(Category::Symbol), "{symbol:?}");
        }
        // Letters without case: AD's fifth category.
        assert_eq!(c('漢'), Some(Category::OtherLetter));
        assert_eq!(c('ا'), Some(Category::OtherLetter));
        assert_eq!(c('ǅ'), Some(Category::OtherLetter));
        // In no category: a space, currency signs, non-ASCII numerals, emoji.
        for none in [' ', '€', '£', '٣', '😀', '\t'] {
            assert_eq!(c(none), None, "{none:?}");
        }
    }

    #[test]
    fn three_of_five_categories_pass_and_what_to_add_is_listed_otherwise() {
        assert_eq!(check_complexity("Abcdef12", "zz", ""), Ok(()));
        assert_eq!(check_complexity("abcdef1!", "zz", ""), Ok(()));
        assert_eq!(check_complexity("ABCDEF1!", "zz", ""), Ok(()));
        assert_eq!(check_complexity("Abcdef!!", "zz", ""), Ok(()));
        assert_eq!(
            refusal_missing(check_complexity("abcdefgh", "zz", "")),
            (
                vec![Category::Uppercase, Category::Digit, Category::Symbol],
                None
            )
        );
        assert_eq!(
            refusal_missing(check_complexity("abcdef12", "zz", "")),
            (vec![Category::Uppercase, Category::Symbol], None)
        );
        // The password the domain refused and the old rules let pass: a
        // space is not a symbol.
        assert_eq!(
            refusal_missing(check_complexity("correct horse battery 9", "zz", "")),
            (vec![Category::Uppercase, Category::Symbol], None)
        );
        // Nor is a currency sign.
        assert_eq!(
            refusal_missing(check_complexity("pounds £££ 12", "zz", "")),
            (vec![Category::Uppercase, Category::Symbol], None)
        );
        assert_eq!(
            refusal_missing(check_complexity("12345678", "zz", "")),
            (
                vec![Category::Uppercase, Category::Lowercase, Category::Symbol],
                None
            )
        );
        assert_eq!(
            refusal_missing(check_complexity("", "zz", "")),
            (
                vec![
                    Category::Uppercase,
                    Category::Lowercase,
                    Category::Digit,
                    Category::Symbol
                ],
                None
            )
        );
    }

    #[test]
    fn unicode_letters_count_in_their_category() {
        // Upper (É), lower (é), a letter without case (漢): three categories.
        assert_eq!(check_complexity("Éé漢Éé漢", "zz", ""), Ok(()));
        // Lower and caseless only: two, so what a user can add is named.
        assert_eq!(
            refusal_missing(check_complexity("ééé漢漢漢", "zz", "")),
            (
                vec![Category::Uppercase, Category::Digit, Category::Symbol],
                None
            )
        );
        // Greek upper, lower and a digit.
        assert_eq!(check_complexity("ΣσΣσ1234", "zz", ""), Ok(()));
    }

    #[test]
    fn account_name_longer_than_two_characters_must_not_appear() {
        assert_eq!(
            refusal_missing(check_complexity("xxADA-2024!", "ada", "")),
            (vec![], Some(Contained::AccountName("ada".into())))
        );
        // Case-insensitive, including non-ASCII case folding.
        assert_eq!(
            refusal_missing(check_complexity("Zz1!ÉMILIE", "émilie", "")),
            (vec![], Some(Contained::AccountName("émilie".into())))
        );
        // Two characters or fewer: not checked.
        assert_eq!(check_complexity("Al-Pass-2024!", "al", ""), Ok(()));
    }

    #[test]
    fn display_name_tokens_are_split_on_ads_delimiters() {
        let tokens: Vec<_> = display_name_tokens("Berners-Lee, Tim.J_X#Yves\tZoë Ab").collect();
        assert_eq!(tokens, ["Berners", "Lee", "Tim", "Yves", "Zoë"]);
        assert_eq!(
            refusal_missing(check_complexity("Ilovelovelace1!", "ada", "Ada Lovelace")),
            (vec![], Some(Contained::DisplayName("Lovelace".into())))
        );
        // "Ada" is three characters: it counts.
        assert_eq!(
            refusal_missing(check_complexity(
                "Canada-2024!",
                "alovelace",
                "Ada Lovelace"
            )),
            (vec![], Some(Contained::DisplayName("Ada".into())))
        );
        // Tokens of two characters are ignored; substrings of tokens are not checked.
        assert_eq!(
            check_complexity("Jo-Love-2024!", "jl", "Jo Lovelace"),
            Ok(())
        );
        // A display name without delimiters is one token.
        assert_eq!(
            refusal_missing(check_complexity("Xmadonna1", "zz", "Madonna")),
            (vec![], Some(Contained::DisplayName("Madonna".into())))
        );
    }

    #[test]
    fn missing_categories_and_contained_names_are_reported_together() {
        assert_eq!(
            refusal_missing(check_complexity("lovelace", "ada", "Ada Lovelace")),
            (
                vec![Category::Uppercase, Category::Digit, Category::Symbol],
                Some(Contained::DisplayName("Lovelace".into()))
            )
        );
    }

    #[test]
    fn length_comes_before_complexity_and_counts_utf16_units() {
        let policy = PasswordSettings {
            min_length: 8,
            complexity: true,
            history_length: 24,
            min_age_secs: 0,
            max_age_secs: 0,
        }
        .to_policy(DEFAULT_POLICY);
        assert_eq!(
            check_new_password(&policy, "abc", "zz", ""),
            Err(Refusal::TooShort { min_length: 8 })
        );
        assert_eq!(password_length("😀😀😀😀"), 8);
        // Six characters, nine UTF-16 units: long enough. (An emoji counts
        // in no complexity category.)
        assert_eq!(check_new_password(&policy, "Aa1😀😀😀", "zz", ""), Ok(()));
        // Four characters, five units: too short.
        assert_eq!(
            check_new_password(&policy, "Aa1😀", "zz", ""),
            Err(Refusal::TooShort { min_length: 8 })
        );
        assert!(matches!(
            check_new_password(&policy, "abcdefgh", "zz", ""),
            Err(Refusal::FailsComplexity { .. })
        ));
        let lax = Policy {
            complexity: false,
            ..policy
        };
        assert_eq!(check_new_password(&lax, "abcdefgh", "zz", ""), Ok(()));
    }

    #[test]
    fn minimum_age_is_measured_from_pwd_last_set() {
        let policy = PasswordSettings {
            min_length: 0,
            complexity: false,
            history_length: 0,
            min_age_secs: 86_400,
            max_age_secs: 0,
        }
        .to_policy(DEFAULT_POLICY);
        let set = 1_700_000_000_000;
        assert_eq!(
            check_min_age(&policy, set, set + 1000),
            Err(Refusal::ChangedTooRecently {
                allowed_after_unix_ms: set + 86_400_000
            })
        );
        assert_eq!(check_min_age(&policy, set, set + 86_400_000), Ok(()));
        assert_eq!(check_min_age(&policy, 0, set), Ok(()));
        let no_age = Policy {
            min_age_secs: 0,
            ..policy
        };
        assert_eq!(check_min_age(&no_age, set, set), Ok(()));
    }

    fn settings(min_length: u32) -> PasswordSettings {
        PasswordSettings {
            min_length,
            complexity: true,
            history_length: 24,
            min_age_secs: 86_400,
            max_age_secs: 0,
        }
    }

    #[test]
    fn resultant_policy_prefers_direct_links_then_lowest_precedence() {
        let domain = settings(7);
        let (a, b, c) = (settings(10), settings(12), settings(14));
        assert_eq!(resultant_policy(&domain, &[]).source, DEFAULT_POLICY);
        assert_eq!(resultant_policy(&domain, &[]).min_length, 7);
        let groups = [
            PsoCandidate {
                name: "B",
                precedence: 20,
                direct: false,
                settings: &b,
            },
            PsoCandidate {
                name: "A",
                precedence: 10,
                direct: false,
                settings: &a,
            },
        ];
        let p = resultant_policy(&domain, &groups);
        assert_eq!((p.source.as_str(), p.min_length), ("A", 10));
        let with_direct = [
            PsoCandidate {
                name: "A",
                precedence: 10,
                direct: false,
                settings: &a,
            },
            PsoCandidate {
                name: "C",
                precedence: 50,
                direct: true,
                settings: &c,
            },
        ];
        let p = resultant_policy(&domain, &with_direct);
        assert_eq!((p.source.as_str(), p.min_length), ("C", 14));
        let tie = [
            PsoCandidate {
                name: "Zeta",
                precedence: 5,
                direct: false,
                settings: &c,
            },
            PsoCandidate {
                name: "Alpha",
                precedence: 5,
                direct: false,
                settings: &b,
            },
        ];
        assert_eq!(resultant_policy(&domain, &tie).source, "Alpha");
    }

    const SVC: &str = "CN=svc,OU=Service,DC=x";
    const GROUP: &str = "CN=Helpdesk,OU=Groups,DC=x";

    fn token(t: &str) -> bool {
        t.eq_ignore_ascii_case(SVC) || t.eq_ignore_ascii_case(GROUP) || t == "Everyone"
    }

    fn check(chain: &[AclLevel<'_>], right: Right) -> Access {
        access_check(chain, right, &token, true)
    }

    fn level(aces: &[Ace], protected: bool) -> AclLevel<'_> {
        AclLevel { aces, protected }
    }

    #[test]
    fn inheritable_grants_flow_down_and_others_do_not() {
        let top = [
            Ace::allow(Right::ResetPassword, SVC, true),
            Ace::allow(Right::ChangePassword, SVC, false),
        ];
        let chain = [level(&[], false), level(&[], false), level(&top, false)];
        assert_eq!(check(&chain, Right::ResetPassword), Access::Granted);
        assert_eq!(check(&chain, Right::ChangePassword), Access::NotGranted);
        assert_eq!(check(&chain, Right::WritePwdLastSet), Access::NotGranted);
        // Granted to a group the caller is in; others' grants do not count.
        let via_group = [
            Ace::allow(Right::WritePwdLastSet, GROUP, true),
            Ace::allow(Right::WriteLockoutTime, "CN=Other,DC=x", true),
        ];
        let chain = [level(&[], false), level(&via_group, false)];
        assert_eq!(check(&chain, Right::WritePwdLastSet), Access::Granted);
        assert_eq!(check(&chain, Right::WriteLockoutTime), Access::NotGranted);
        // Non-inheritable ACEs on the object itself apply to it.
        let own = [Ace::allow(Right::ChangePassword, SVC, false)];
        let chain = [level(&own, false)];
        assert_eq!(check(&chain, Right::ChangePassword), Access::Granted);
    }

    #[test]
    fn broad_rights_cover_the_specific_ones() {
        let cases = [
            (AceRight::GenericAll, Right::ALL.to_vec()),
            (
                AceRight::AllExtendedRights,
                vec![Right::ResetPassword, Right::ChangePassword],
            ),
            (
                AceRight::WriteAllProperties,
                vec![Right::WriteLockoutTime, Right::WritePwdLastSet],
            ),
        ];
        for (broad, covered) in cases {
            let aces = [Ace::allow(broad, "Everyone", true)];
            for r in Right::ALL {
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
            Ace::deny(Right::ResetPassword, GROUP, true),
        ];
        let chain = [level(&[], false), level(&both, false)];
        assert_eq!(check(&chain, Right::ResetPassword), Access::Denied);
        assert_eq!(check(&chain, Right::ChangePassword), Access::Granted);

        // An explicit allow on the object beats an inherited deny.
        let own = [Ace::allow(Right::ResetPassword, SVC, false)];
        let deny_above = [Ace::deny(Right::ResetPassword, SVC, true)];
        let chain = [level(&own, false), level(&deny_above, false)];
        assert_eq!(check(&chain, Right::ResetPassword), Access::Granted);

        // An explicit deny on the object beats an inherited allow.
        let own = [Ace::deny(Right::ResetPassword, SVC, false)];
        let allow_above = [Ace::allow(Right::ResetPassword, SVC, true)];
        let chain = [level(&own, false), level(&allow_above, false)];
        assert_eq!(check(&chain, Right::ResetPassword), Access::Denied);

        // The parent's inherited allow beats the grandparent's inherited deny.
        let chain = [
            level(&[], false),
            level(&allow_above, false),
            level(&deny_above, false),
        ];
        assert_eq!(check(&chain, Right::ResetPassword), Access::Granted);
        let chain = [
            level(&[], false),
            level(&deny_above, false),
            level(&allow_above, false),
        ];
        assert_eq!(check(&chain, Right::ResetPassword), Access::Denied);
    }

    #[test]
    fn protected_dacls_stop_inheritance_but_keep_their_own_aces() {
        let grant = [Ace::allow(Right::ResetPassword, SVC, true)];
        // OU chain: user <- Executives (protected) <- Users (grant).
        let chain = [level(&[], false), level(&[], true), level(&grant, false)];
        assert_eq!(check(&chain, Right::ResetPassword), Access::NotGranted);
        assert_eq!(
            access_check(&chain, Right::ResetPassword, &token, false),
            Access::Granted
        );
        assert_eq!(
            withheld(&chain, Right::ResetPassword, &token),
            Some(Withheld {
                denied_at: None,
                blocked_at: Some(1),
                ungranted: true
            })
        );
        // A grant on the protected OU itself flows to its users.
        let chain = [level(&[], false), level(&grant, true), level(&[], false)];
        assert_eq!(check(&chain, Right::ResetPassword), Access::Granted);
        assert_eq!(withheld(&chain, Right::ResetPassword, &token), None);
        // A protected user object receives nothing from above.
        let chain = [level(&[], true), level(&grant, false)];
        assert_eq!(check(&chain, Right::ResetPassword), Access::NotGranted);
        assert_eq!(
            withheld(&chain, Right::ResetPassword, &token).map(|w| w.blocked_at),
            Some(Some(0))
        );
        // A protected OU above the grant does not matter.
        let chain = [level(&[], false), level(&grant, false), level(&[], true)];
        assert_eq!(check(&chain, Right::ResetPassword), Access::Granted);
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
            withheld(&chain, Right::ResetPassword, &token),
            w(None, None, true)
        );
        // Blocked two levels above the user's container.
        let grant = [Ace::allow(Right::ResetPassword, SVC, true)];
        let chain = [
            level(&[], false),
            level(&[], false),
            level(&[], false),
            level(&[], true),
            level(&grant, false),
        ];
        assert_eq!(
            withheld(&chain, Right::ResetPassword, &token),
            w(None, Some(3), true)
        );
        // Explicitly denied below the grant: removing the deny suffices.
        let deny = [Ace::deny(Right::ResetPassword, SVC, true)];
        let chain = [level(&[], false), level(&deny, false), level(&grant, false)];
        assert_eq!(
            withheld(&chain, Right::ResetPassword, &token),
            w(Some(1), None, false)
        );
        // Denied on the object with nothing granted above: both are needed.
        let own = [Ace::deny(Right::ResetPassword, SVC, false)];
        let chain = [level(&own, false), level(&[], true)];
        assert_eq!(
            withheld(&chain, Right::ResetPassword, &token),
            w(Some(0), Some(1), true)
        );
    }

    #[test]
    fn ace_rights_parse_from_names_and_guids() {
        assert_eq!(
            "reset-password".parse::<AceRight>(),
            Ok(AceRight::Right(Right::ResetPassword))
        );
        assert_eq!(
            "AB721A53-1E2F-11D0-9819-00AA0040529B".parse::<AceRight>(),
            Ok(AceRight::Right(Right::ChangePassword))
        );
        assert_eq!("generic-all".parse::<AceRight>(), Ok(AceRight::GenericAll));
        assert!("write-everything".parse::<AceRight>().is_err());
        for r in Right::ALL {
            let a = AceRight::from(r);
            assert_eq!(a.name().parse::<AceRight>(), Ok(a));
        }
        let ace: Ace = serde_json::from_str(
            r#"{"type":"deny","right":"00299570-246d-11d0-a768-00aa006e0529","trustee":"Everyone","inheritable":true}"#,
        )
        .unwrap();
        assert_eq!(ace, Ace::deny(Right::ResetPassword, "Everyone", true));
        assert_eq!(
            serde_json::to_string(&ace).unwrap(),
            r#"{"type":"deny","right":"reset-password","trustee":"Everyone","inheritable":true}"#
        );
    }

    #[test]
    fn verifiers_are_salted_and_never_the_plaintext() {
        let v = make_verifier("Analytical-Engine-1843", b"0123456789abcdef");
        assert!(!v.contains("Analytical"));
        assert!(verifier_is_valid(&v));
        assert!(verify(&v, "Analytical-Engine-1843"));
        assert!(!verify(&v, "analytical-engine-1843"));
        assert!(!verify(&v, ""));
        let other_salt = make_verifier("Analytical-Engine-1843", b"fedcba9876543210");
        assert_ne!(v, other_salt);
        assert!(verify(&other_salt, "Analytical-Engine-1843"));
        assert!(!verify("sha256$AAAA$short", "x"));
        assert!(!verifier_is_valid("plaintext"));
    }
}

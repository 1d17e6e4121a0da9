//! Active Directory's password rules as pure functions: no clock, no I/O,
//! no state. Both backends check a new password with them before writing
//! (the embedded forest because it is the directory, LDAPS so that a
//! refusal names the rule AD would apply), feeding them the policy and the
//! time.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{Category, Contained, Policy, Refusal};

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
}

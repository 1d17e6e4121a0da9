//! The password policy that applies to an account (its PSO or the
//! domain's), and the reason behind AD's generic policy refusal.
//!
//! AD answers every policy failure with the same `0000052D`. Samba adds
//! the rule in its diagnostic text (`check_password_restrictions: ...`);
//! Windows does not. So the reason is the rule the DC named when it names
//! one, else the rule the agent can check itself (minimum age, length,
//! complexity) from a policy it could read, else [`Refusal::PolicyRefused`]:
//! never a rule that did not fail. History is never guessed: the agent
//! cannot see old passwords.

use envelope::Password;
use ldap3::{Ldap, Scope, SearchEntry};
use proto::time::unix_ms;

use super::{LdapDirectory, UserState, first, first_i64};
use crate::rules::{check_complexity, check_min_age, check_new_password};
use crate::{DirectoryError, Policy, Refusal, ResultantPolicy, UnreadablePolicy};

const PSO_ATTRS: [&str; 6] = [
    "cn",
    "msDS-MinimumPasswordLength",
    "msDS-PasswordComplexityEnabled",
    "msDS-PasswordHistoryLength",
    "msDS-MinimumPasswordAge",
    "msDS-MaximumPasswordAge",
];

/// AD's intervals (minPwdAge, maxPwdAge and the PSO's) are negative counts
/// of 100 ns. 0 and the most negative value both mean "never" for a
/// maximum age; the result is then 0, this crate's "never".
pub fn interval_secs(v: i64) -> u64 {
    if v == i64::MIN {
        return 0;
    }
    v.unsigned_abs() / 10_000_000
}

/// A PSO's settings from its entry, or `None` when the service account
/// cannot read them: AD then returns the entry with none of its settings.
pub fn pso_settings(entry: &SearchEntry) -> Option<Policy> {
    let number = |attr| first(entry, attr).and_then(|v| v.parse::<i64>().ok());
    Some(Policy {
        source: first(entry, "cn").unwrap_or("PSO").to_owned(),
        min_length: u32::try_from(number("msDS-MinimumPasswordLength")?).ok()?,
        complexity: first(entry, "msDS-PasswordComplexityEnabled")?.eq_ignore_ascii_case("TRUE"),
        history_length: u32::try_from(number("msDS-PasswordHistoryLength")?).ok()?,
        min_age_secs: interval_secs(number("msDS-MinimumPasswordAge")?),
        max_age_secs: interval_secs(number("msDS-MaximumPasswordAge")?),
    })
}

/// The first RDN's value, for naming a PSO whose `cn` cannot be read.
fn rdn_value(dn: &str) -> &str {
    let first = dn.split(',').next().unwrap_or(dn);
    first.split_once('=').map_or(first, |(_, v)| v)
}

/// The rule a domain controller named in its diagnostic text, when it
/// named one. Samba's texts (source4/dsdb/samdb/ldb_modules/password_hash.c)
/// are matched; Windows names none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamedRule {
    TooShort(Option<u32>),
    Complexity,
    History,
    TooYoung,
}

pub fn named_rule(diagnostic: &str) -> Option<NamedRule> {
    let text = diagnostic.to_ascii_lowercase();
    if text.contains("the password is too short") {
        let n = text
            .split("longer than ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok());
        Some(NamedRule::TooShort(n))
    } else if text.contains("does not meet the complexity criteria") {
        Some(NamedRule::Complexity)
    } else if text.contains("the password was already used") {
        Some(NamedRule::History)
    } else if text.contains("password is too young to change") {
        Some(NamedRule::TooYoung)
    } else {
        None
    }
}

/// What the agent knows of the account when AD refused a new password.
pub struct Refused<'a> {
    pub diagnostic: &'a str,
    pub policy: &'a ResultantPolicy,
    pub sam: &'a str,
    pub display_name: &'a str,
    pub pwd_last_set_ms: u64,
    pub now_ms: u64,
    /// A user change (history and minimum age apply) rather than a reset.
    pub change: bool,
}

/// The reason for a `0000052D` refusal: pure, so every branch is tested.
pub fn attribute(r: &Refused<'_>, new: &str) -> Refusal {
    let known = match r.policy {
        ResultantPolicy::Known(p) => Some(p),
        ResultantPolicy::Unreadable { .. } => None,
    };
    if let Some(rule) = named_rule(r.diagnostic) {
        match (rule, known) {
            (NamedRule::TooShort(n), _) => {
                if let Some(min_length) = n.or(known.map(|p| p.min_length)) {
                    return Refusal::TooShort { min_length };
                }
            }
            (NamedRule::Complexity, _) => {
                return match check_complexity(new, r.sam, r.display_name) {
                    Err(refusal) => refusal,
                    // The DC counts differently (Samba's fifth category
                    // takes any non-ASCII character): say so, not a rule.
                    Ok(()) => Refusal::FailsComplexity {
                        missing: Vec::new(),
                        contains: None,
                    },
                };
            }
            (NamedRule::History, Some(p)) => {
                return Refusal::InHistory {
                    history_length: p.history_length,
                };
            }
            (NamedRule::TooYoung, Some(p)) => {
                if let Err(refusal) = check_min_age(p, r.pwd_last_set_ms, r.now_ms) {
                    return refusal;
                }
            }
            (NamedRule::History | NamedRule::TooYoung, None) => {}
        }
    }
    let Some(policy) = known else {
        return Refusal::PolicyRefused {
            history_length: None,
        };
    };
    if r.change
        && let Err(refusal) = check_min_age(policy, r.pwd_last_set_ms, r.now_ms)
    {
        return refusal;
    }
    if let Err(refusal) = check_new_password(policy, new, r.sam, r.display_name) {
        return refusal;
    }
    Refusal::PolicyRefused {
        history_length: (r.change && policy.history_length > 0).then_some(policy.history_length),
    }
}

impl LdapDirectory {
    /// The resultant policy: the user's PSO (msDS-ResultantPSO) or the domain's.
    pub(super) async fn resultant_policy(
        &self,
        ldap: &mut Ldap,
        dn: &str,
    ) -> Result<ResultantPolicy, DirectoryError> {
        let user = self.read(ldap, dn, &["msDS-ResultantPSO"]).await?;
        if let Some(pso) = first(&user, "msDS-ResultantPSO") {
            let entry = self.read(ldap, pso, &PSO_ATTRS).await?;
            return Ok(match pso_settings(&entry) {
                Some(policy) => ResultantPolicy::Known(policy),
                None => ResultantPolicy::Unreadable {
                    source: rdn_value(pso).to_owned(),
                },
            });
        }
        let base = self.base_dn(ldap).await?;
        let d = self
            .read(
                ldap,
                &base,
                &[
                    "minPwdLength",
                    "pwdProperties",
                    "pwdHistoryLength",
                    "minPwdAge",
                    "maxPwdAge",
                ],
            )
            .await?;
        Ok(ResultantPolicy::Known(Policy {
            source: "Default Domain Policy".into(),
            min_length: first_i64(&d, "minPwdLength") as u32,
            complexity: first_i64(&d, "pwdProperties") & 1 != 0,
            history_length: first_i64(&d, "pwdHistoryLength") as u32,
            min_age_secs: interval_secs(first_i64(&d, "minPwdAge")),
            max_age_secs: interval_secs(first_i64(&d, "maxPwdAge")),
        }))
    }

    /// The reason behind AD's generic policy failure (`diagnostic` is the
    /// DC's text).
    pub(super) async fn policy_refusal(
        &self,
        ldap: &mut Ldap,
        dn: &str,
        user: &UserState,
        new: &Password,
        change: bool,
        diagnostic: &str,
    ) -> Refusal {
        let policy = match self.resultant_policy(ldap, dn).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(forest = %self.name, error = %e, "the password policy cannot be read");
                ResultantPolicy::Unreadable {
                    source: "unknown".into(),
                }
            }
        };
        attribute(
            &Refused {
                diagnostic,
                policy: &policy,
                sam: &user.sam,
                display_name: &user.display_name,
                pwd_last_set_ms: user.pwd_last_set_ms,
                now_ms: unix_ms(),
                change,
            },
            new.expose(),
        )
    }

    /// Every PSO of the domain whose settings the service account cannot read.
    pub(super) async fn unreadable_psos(&self) -> Result<Vec<UnreadablePolicy>, DirectoryError> {
        let mut ldap = self.connect().await?;
        let base = self.base_dn(&mut ldap).await?;
        let container = format!("CN=Password Settings Container,CN=System,{base}");
        let (entries, result) = ldap
            .search(
                &container,
                Scope::OneLevel,
                // Not (objectClass=msDS-PasswordSettings): an account that
                // cannot read a PSO cannot match on its class either.
                "(objectClass=*)",
                PSO_ATTRS.to_vec(),
            )
            .await
            .map_err(|e| DirectoryError(format!("search {container}: {e}")))?
            .non_error()
            .map_err(|e| DirectoryError(format!("search {container}: {e}")))?;
        let _ = result;
        let _ = ldap.unbind().await;
        Ok(entries
            .into_iter()
            .map(SearchEntry::construct)
            .filter(|e| pso_settings(e).is_none())
            .map(|e| UnreadablePolicy {
                dn: e.dn,
                container: container.clone(),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests;

//! The password policy that applies to an account (its PSO or the
//! domain's), and the rule behind AD's generic policy refusal.

use envelope::Password;
use ldap3::Ldap;

use super::{LdapDirectory, UserState, first, first_i64, interval_secs, now_ms};
use crate::directory::embedded::rules::{check_min_age, check_new_password};
use crate::directory::{DirectoryError, Policy, Refusal};

impl LdapDirectory {
    /// The resultant policy: the user's PSO (msDS-ResultantPSO) or the domain's.
    pub(super) async fn resultant_policy(
        &self,
        ldap: &mut Ldap,
        dn: &str,
    ) -> Result<Policy, DirectoryError> {
        let user = self.read(ldap, dn, &["msDS-ResultantPSO"]).await?;
        if let Some(pso) = first(&user, "msDS-ResultantPSO") {
            let p = self
                .read(
                    ldap,
                    pso,
                    &[
                        "cn",
                        "msDS-MinimumPasswordLength",
                        "msDS-PasswordComplexityEnabled",
                        "msDS-PasswordHistoryLength",
                        "msDS-MinimumPasswordAge",
                        "msDS-MaximumPasswordAge",
                    ],
                )
                .await?;
            return Ok(Policy {
                source: first(&p, "cn").unwrap_or("PSO").to_owned(),
                min_length: first_i64(&p, "msDS-MinimumPasswordLength") as u32,
                complexity: first(&p, "msDS-PasswordComplexityEnabled")
                    .is_some_and(|v| v.eq_ignore_ascii_case("TRUE")),
                history_length: first_i64(&p, "msDS-PasswordHistoryLength") as u32,
                min_age_secs: interval_secs(first_i64(&p, "msDS-MinimumPasswordAge")),
                max_age_secs: interval_secs(first_i64(&p, "msDS-MaximumPasswordAge")),
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
        Ok(Policy {
            source: "Default Domain Policy".into(),
            min_length: first_i64(&d, "minPwdLength") as u32,
            complexity: first_i64(&d, "pwdProperties") & 1 != 0,
            history_length: first_i64(&d, "pwdHistoryLength") as u32,
            min_age_secs: interval_secs(first_i64(&d, "minPwdAge")),
            max_age_secs: interval_secs(first_i64(&d, "maxPwdAge")),
        })
    }

    /// The specific rule behind AD's generic policy failure.
    pub(super) async fn policy_refusal(
        &self,
        ldap: &mut Ldap,
        dn: &str,
        user: &UserState,
        new: &Password,
        change: bool,
    ) -> Refusal {
        let policy = match self.resultant_policy(ldap, dn).await {
            Ok(p) => p,
            Err(e) => {
                return Refusal::DirectoryUnavailable(format!(
                    "the password policy cannot be read: {}",
                    e.0
                ));
            }
        };
        if change && let Err(r) = check_min_age(&policy, user.pwd_last_set_ms, now_ms()) {
            return r;
        }
        if let Err(r) = check_new_password(&policy, new.expose(), &user.sam, &user.display_name) {
            return r;
        }
        Refusal::InHistory {
            history_length: policy.history_length,
        }
    }
}

//! The service account's effective rights: which SIDs it acts with, the
//! security descriptors that decide (the users', and their containers' up
//! to the naming context), and who the account is for fix commands. The
//! judging is [`crate::effective`]'s; this file only fetches.

use std::collections::{BTreeMap, HashMap};

use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::controls::RawControl;
use ldap3::{Ldap, Scope, SearchEntry};

use super::controllers::Attempt;
use super::{LdapDirectory, PAGE_SIZE, SD_FLAGS_DACL, SD_FLAGS_OID, first, parent_dn};
use crate::effective::{Held, Walk, container_rights, stored_grants, walk};
use crate::sd::{SecurityDescriptor, sid_string};
use crate::{
    Account, ContainerRights, DirectoryError, DirectoryRight, Eligibility, Refusal, ServiceAccount,
};

/// Users whose own descriptors are read per container: enough to see the
/// per-object grants and the odd hand-edited user, bounded for large OUs.
const USERS_SAMPLED: usize = 20;

/// Users write-back can act on: enabled, not protected by AdminSDHolder
/// (those are refused before rights matter).
const ACTIONABLE_USERS: &str = "(&(objectCategory=person)(objectClass=user)(!(adminCount=1))(!(userAccountControl:1.2.840.113556.1.4.803:=2)))";

/// Descriptors read once per report, by lower-cased DN.
type Descriptors = HashMap<String, SecurityDescriptor>;

impl LdapDirectory {
    /// The SIDs the service account acts with: its own, its groups', and
    /// the well-known ones every authenticated account has.
    pub(super) async fn service_sids(
        &self,
        ldap: &mut Ldap,
    ) -> Result<Vec<String>, DirectoryError> {
        let e = self
            .read(ldap, &self.settings.bind_dn, &["objectSid", "tokenGroups"])
            .await?;
        let mut sids = vec!["S-1-1-0".to_owned(), "S-1-5-11".to_owned()];
        for attr in ["objectSid", "tokenGroups"] {
            for raw in e.bin_attrs.get(attr).into_iter().flatten() {
                sids.extend(sid_string(raw));
            }
        }
        Ok(sids)
    }

    pub(super) async fn descriptor(
        &self,
        ldap: &mut Ldap,
        dn: &str,
    ) -> Result<SecurityDescriptor, DirectoryError> {
        let control = RawControl {
            ctype: SD_FLAGS_OID.to_owned(),
            crit: true,
            val: Some(SD_FLAGS_DACL.to_vec()),
        };
        let (entries, _) = ldap
            .with_controls(control)
            .search(
                dn,
                Scope::Base,
                "(objectClass=*)",
                vec!["nTSecurityDescriptor"],
            )
            .await
            .map_err(|e| DirectoryError(format!("read the security descriptor of {dn}: {e}")))?
            .success()
            .map_err(|e| DirectoryError(format!("read the security descriptor of {dn}: {e}")))?;
        let entry = entries
            .into_iter()
            .next()
            .map(SearchEntry::construct)
            .ok_or_else(|| DirectoryError(format!("no object {dn}")))?;
        let raw = entry
            .bin_attrs
            .get("nTSecurityDescriptor")
            .and_then(|v| v.first())
            .ok_or_else(|| DirectoryError(format!("{dn} returned no security descriptor")))?;
        SecurityDescriptor::parse(raw).map_err(|e| DirectoryError(format!("{dn}: {e}")))
    }

    /// Reads (once) the descriptors of `container` and its ancestors up to
    /// the naming context `base`; returns their DNs, nearest first.
    async fn chain(
        &self,
        ldap: &mut Ldap,
        container: &str,
        base: &str,
        cache: &mut Descriptors,
    ) -> Result<Vec<String>, DirectoryError> {
        let mut dns = Vec::new();
        let mut dn = container.to_owned();
        while !dn.is_empty() {
            let key = dn.to_ascii_lowercase();
            if !cache.contains_key(&key) {
                let sd = self.descriptor(ldap, &dn).await?;
                cache.insert(key.clone(), sd);
            }
            dns.push(dn.clone());
            if key == base.to_ascii_lowercase() {
                break;
            }
            dn = parent_dn(&dn);
        }
        Ok(dns)
    }

    /// A permission refusal naming the container, where inheritance is
    /// blocked and the deny that decides, from the same evaluation doctor uses.
    pub(super) async fn denied(
        &self,
        ldap: &mut Ldap,
        dn: &str,
        needed: &[DirectoryRight],
    ) -> Refusal {
        let container = parent_dn(dn);
        let plain = Refusal::PermissionDenied {
            right: needed[0],
            container: container.clone(),
            blocked_at: None,
            denied_at: None,
        };
        let mut cache = Descriptors::new();
        let (Ok(base), Ok(sids), Ok(user)) = (
            self.base_dn(ldap).await,
            self.service_sids(ldap).await,
            self.descriptor(ldap, dn).await,
        ) else {
            return plain;
        };
        let Ok(dns) = self.chain(ldap, &container, &base, &mut cache).await else {
            return plain;
        };
        let chain: Vec<Held<'_>> = dns
            .iter()
            .map(|d| Held {
                dn: d,
                sd: &cache[&d.to_ascii_lowercase()],
            })
            .collect();
        let user = Held { dn, sd: &user };
        let right = needed
            .iter()
            .copied()
            .find(|r| !stored_grants(user.sd, *r, &sids))
            .unwrap_or(needed[0]);
        let (mut blocked_at, mut denied_at) = (None, None);
        match walk(Some(user), &chain, right, &sids, false) {
            Walk::Denied { at, .. } => {
                denied_at = Some(at);
                if let Walk::NotGranted { blocked_at: b } =
                    walk(Some(user), &chain, right, &sids, true)
                {
                    blocked_at = b;
                }
            }
            Walk::NotGranted { blocked_at: b } => blocked_at = b,
            Walk::Granted => {}
        }
        Refusal::PermissionDenied {
            right,
            container,
            blocked_at,
            denied_at,
        }
    }

    /// The account's state as the operations read it, and the rights its
    /// stored DACL gives the service account: the DACL the DC's own access
    /// check reads (AdminSDHolder's on a protected account).
    pub(super) async fn user_eligibility(&self, account: &Account) -> Result<Eligibility, Refusal> {
        let mut walk = self.failover().await;
        loop {
            let (url, mut ldap) = self.next_dc(&mut walk).await?;
            let outcome = self.eligibility_on(&mut ldap, account).await;
            if let Some(done) = self.settle(&mut walk, &url, ldap, outcome).await {
                return done;
            }
        }
    }

    async fn eligibility_on(
        &self,
        ldap: &mut Ldap,
        account: &Account,
    ) -> Result<Eligibility, Attempt<Refusal>> {
        let user = self.user_state(ldap, account).await?;
        let unavailable = |e: DirectoryError| Refusal::DirectoryUnavailable(e.0);
        let sids = self.service_sids(ldap).await.map_err(unavailable)?;
        let sd = self.descriptor(ldap, &user.dn).await.map_err(unavailable)?;
        Ok(Eligibility {
            enabled: !user.disabled,
            locked: user.locked,
            protected: user.protected,
            rights: crate::eligibility::PasswordOperation::checked_rights()
                .into_iter()
                .filter(|r| stored_grants(&sd, *r, &sids))
                .collect(),
            container: parent_dn(&user.dn),
        })
    }

    /// Whether the user's stored DACL gives the service account `right`;
    /// None when that cannot be read.
    pub(super) async fn holds(
        &self,
        ldap: &mut Ldap,
        dn: &str,
        right: DirectoryRight,
    ) -> Option<bool> {
        let sids = self.service_sids(ldap).await.ok()?;
        let sd = self.descriptor(ldap, dn).await.ok()?;
        Some(stored_grants(&sd, right, &sids))
    }

    /// Every container (OU or not) holding users write-back can act on,
    /// grouped by the users' parent DN.
    async fn user_containers(
        &self,
        ldap: &mut Ldap,
        base: &str,
    ) -> Result<BTreeMap<String, (String, Vec<String>)>, DirectoryError> {
        let adapters: Vec<Box<dyn Adapter<_, _>>> = vec![
            Box::new(EntriesOnly::new()),
            Box::new(PagedResults::new(PAGE_SIZE)),
        ];
        let failed = |e| DirectoryError(format!("forest {}: search failed: {e}", self.name));
        let mut stream = ldap
            .streaming_search_with(
                adapters,
                base,
                Scope::Subtree,
                ACTIONABLE_USERS,
                vec!["1.1"],
            )
            .await
            .map_err(failed)?;
        // lower-cased parent DN -> (parent DN as read, user DNs)
        let mut by_parent: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
        while let Some(entry) = stream.next().await.map_err(failed)? {
            let dn = SearchEntry::construct(entry).dn;
            if dn.eq_ignore_ascii_case(&self.settings.bind_dn) {
                // The service account is not a write-back target.
                continue;
            }
            let parent = parent_dn(&dn);
            by_parent
                .entry(parent.to_ascii_lowercase())
                .or_insert_with(|| (parent, Vec::new()))
                .1
                .push(dn);
        }
        let result = stream.finish().await;
        if result.rc != 0 {
            return Err(DirectoryError(format!(
                "forest {}: search ended with {} {}",
                self.name, result.rc, result.text
            )));
        }
        Ok(by_parent)
    }

    pub(super) async fn rights_report(&self) -> Result<Vec<ContainerRights>, DirectoryError> {
        let mut ldap = self.connect().await?;
        let base = self.base_dn(&mut ldap).await?;
        let sids = self.service_sids(&mut ldap).await?;
        let containers = self.user_containers(&mut ldap, &base).await?;
        let mut cache = Descriptors::new();
        let mut out = Vec::new();
        for (container, users) in containers.into_values() {
            let dns = self.chain(&mut ldap, &container, &base, &mut cache).await?;
            let mut user_sds = Vec::new();
            for dn in users.iter().take(USERS_SAMPLED) {
                user_sds.push((dn.as_str(), self.descriptor(&mut ldap, dn).await?));
            }
            let is_ou = self
                .read(&mut ldap, &container, &["objectClass"])
                .await?
                .attrs
                .get("objectClass")
                .is_some_and(|c| {
                    c.iter()
                        .any(|v| v.eq_ignore_ascii_case("organizationalUnit"))
                });
            let chain: Vec<Held<'_>> = dns
                .iter()
                .map(|d| Held {
                    dn: d,
                    sd: &cache[&d.to_ascii_lowercase()],
                })
                .collect();
            let held: Vec<Held<'_>> = user_sds.iter().map(|(dn, sd)| Held { dn, sd }).collect();
            out.push(container_rights(is_ou, users.len(), &held, &chain, &sids));
        }
        let _ = ldap.unbind().await;
        Ok(out)
    }

    /// The service account's name, SID and domain, as fix commands need them.
    pub(super) async fn service_account_info(&self) -> Result<ServiceAccount, DirectoryError> {
        let mut ldap = self.connect().await?;
        let base = self.base_dn(&mut ldap).await?;
        let me = self
            .read(
                &mut ldap,
                &self.settings.bind_dn,
                &["sAMAccountName", "objectSid"],
            )
            .await?;
        let sid = me
            .bin_attrs
            .get("objectSid")
            .and_then(|v| v.first())
            .and_then(|raw| sid_string(raw))
            .ok_or_else(|| DirectoryError(format!("{} has no objectSid", self.settings.bind_dn)))?;
        let netbios = self.netbios_name(&mut ldap, &base).await;
        let _ = ldap.unbind().await;
        Ok(ServiceAccount {
            dn: self.settings.bind_dn.clone(),
            sam_account_name: first(&me, "sAMAccountName").unwrap_or_default().to_owned(),
            sid,
            netbios_domain: netbios,
        })
    }

    /// The domain's NetBIOS name from its crossRef in CN=Partitions; when
    /// that cannot be read, the first label of the DNS name, upper-cased
    /// (what dcpromo proposes by default).
    async fn netbios_name(&self, ldap: &mut Ldap, base: &str) -> String {
        let fallback = base
            .split(',')
            .next()
            .and_then(|rdn| rdn.split_once('='))
            .map_or(String::new(), |(_, v)| v.to_ascii_uppercase());
        let Ok(root) = self.read(ldap, "", &["configurationNamingContext"]).await else {
            return fallback;
        };
        let Some(config) = first(&root, "configurationNamingContext") else {
            return fallback;
        };
        let filter = format!(
            "(&(objectClass=crossRef)(nCName={})(nETBIOSName=*))",
            ldap3::ldap_escape(base)
        );
        let found = ldap
            .search(
                &format!("CN=Partitions,{config}"),
                Scope::OneLevel,
                &filter,
                vec!["nETBIOSName"],
            )
            .await
            .ok()
            .and_then(|r| r.success().ok())
            .and_then(|(entries, _)| entries.into_iter().next())
            .map(SearchEntry::construct);
        found
            .as_ref()
            .and_then(|e| first(e, "nETBIOSName"))
            .map_or(fallback, str::to_owned)
    }
}

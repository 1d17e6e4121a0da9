//! Connections to a forest's domain controllers: which DC to ask (see
//! `controllers.rs` for the order and when to pass one over), the bind as
//! the service account, and the walk a password operation makes over them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, StdStream};

use super::controllers::{Attempt, DC_CONNECT_TIMEOUT, OPERATION_DEADLINE, fails_over};
use super::{
    ControllerProbe, Credentials, LdapDirectory, LdapFailure, dns, first, generalized_time_ms,
    kerberos,
};
use crate::{DirectoryError, Refusal};

/// A password operation's walk over the DCs (see `LdapDirectory::failover`).
pub(super) struct Failover {
    candidates: std::vec::IntoIter<String>,
    deadline: Instant,
    passed: Vec<String>,
}

impl LdapDirectory {
    /// The DCs to ask now, in order: those DNS names (when `srv` is set)
    /// and the listed ones, the one that answered last first; with why DNS
    /// named none.
    pub(super) async fn candidates(&self) -> (Vec<String>, Option<String>) {
        let (urls, problem) = self.domain_controllers().await;
        (self.controllers.order(urls), problem)
    }

    /// Every DC: those DNS names (when `srv` is set), then the listed ones.
    async fn domain_controllers(&self) -> (Vec<String>, Option<String>) {
        let mut urls = Vec::new();
        let mut problem = None;
        if let Some(lookup) = &self.settings.srv {
            match dns::discover(lookup).await {
                Ok(found) => {
                    let mut resolved = self.resolved.lock().expect("resolved lock");
                    for dc in found {
                        resolved.insert(dc.url.clone(), dc.addrs);
                        urls.push(dc.url);
                    }
                }
                Err(why) => {
                    tracing::warn!(forest = %self.name, %why, "no domain controllers from DNS");
                    problem = Some(format!("DNS {} (SRV): {why}", lookup.record()));
                }
            }
        }
        for url in &self.settings.urls {
            if !urls.contains(url) {
                urls.push(url.clone());
            }
        }
        (urls, problem)
    }

    /// Starts a password operation's walk over the DCs: call
    /// [`Self::next_dc`] for a connection, run the operation on it, and
    /// [`Self::settle`] its outcome; a DC that cannot be reached, or
    /// declines (see [`controllers`]), is passed over for the next, within
    /// [`OPERATION_DEADLINE`]. Every other outcome, refusals and unconfirmed
    /// writes included, is the operation's. (A loop, not a closure taking
    /// the connection: async closures' futures cannot be shown `Send`.)
    pub(super) async fn failover(&self) -> Failover {
        let deadline = Instant::now() + OPERATION_DEADLINE;
        let (candidates, problem) = self.candidates().await;
        Failover {
            candidates: candidates.into_iter(),
            deadline,
            passed: problem.into_iter().collect(),
        }
    }

    /// The next DC that accepts a bound connection, with its URL.
    pub(super) async fn next_dc(&self, walk: &mut Failover) -> Result<(String, Ldap), Refusal> {
        for url in walk.candidates.by_ref() {
            let left = walk.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                walk.passed
                    .push(format!("{url}: not asked, the operation's deadline passed"));
                continue;
            }
            match self.connect_to(&url, left.min(DC_CONNECT_TIMEOUT)).await {
                Ok(ldap) => return Ok((url, ldap)),
                Err(Attempt::Elsewhere(why)) => walk.passed.push(why),
                Err(Attempt::Final(e)) => return Err(Refusal::DirectoryUnavailable(e.0)),
            }
        }
        Err(Refusal::DirectoryUnavailable(
            self.none_answered(&walk.passed),
        ))
    }

    /// The operation's result when the DC at `url` answered it; `None` when
    /// it declined and the next DC is to be asked.
    pub(super) async fn settle<T>(
        &self,
        walk: &mut Failover,
        url: &str,
        mut ldap: Ldap,
        outcome: Result<T, Attempt<Refusal>>,
    ) -> Option<Result<T, Refusal>> {
        let _ = ldap.unbind().await;
        match outcome {
            Err(Attempt::Elsewhere(why)) => {
                tracing::warn!(forest = %self.name, dc = %url, %why, "domain controller declined; asking the next");
                walk.passed.push(format!("{url}: {why}"));
                None
            }
            Err(Attempt::Final(refusal)) => {
                self.controllers.answered(url);
                Some(Err(refusal))
            }
            Ok(done) => {
                self.controllers.answered(url);
                Some(Ok(done))
            }
        }
    }

    pub(super) fn none_answered(&self, passed: &[String]) -> String {
        format!(
            "forest {}: no domain controller answered: {}",
            self.name,
            passed.join("; ")
        )
    }

    /// A connection bound as the service account, to the first DC that
    /// answers.
    pub(super) async fn connect(&self) -> Result<Ldap, DirectoryError> {
        let (candidates, problem) = self.candidates().await;
        let mut passed: Vec<String> = problem.into_iter().collect();
        for url in candidates {
            match self.connect_to(&url, DC_CONNECT_TIMEOUT).await {
                Ok(ldap) => {
                    self.controllers.answered(&url);
                    return Ok(ldap);
                }
                Err(Attempt::Elsewhere(why)) => passed.push(why),
                Err(Attempt::Final(e)) => return Err(e),
            }
        }
        Err(DirectoryError(self.none_answered(&passed)))
    }

    /// Asks every DC in turn, in the order found and listed, as doctor
    /// shows them: whether it answers and binds, and its host name.
    pub async fn probe_controllers(&self) -> Vec<ControllerProbe> {
        let mut probes = Vec::new();
        let (candidates, problem) = self.domain_controllers().await;
        if let (Some(why), Some(lookup)) = (problem, &self.settings.srv) {
            probes.push(ControllerProbe {
                url: format!("DNS {}", lookup.record()),
                answer: Err(why),
            });
        }
        for url in candidates {
            let answer = match self.connect_to(&url, DC_CONNECT_TIMEOUT).await {
                Ok(mut ldap) => {
                    let name = self.read(&mut ldap, "", &["dnsHostName"]).await;
                    let _ = ldap.unbind().await;
                    name.map(|e| first(&e, "dnsHostName").unwrap_or_default().to_owned())
                        .map_err(|e| e.0)
                }
                Err(Attempt::Elsewhere(why)) => Err(why),
                Err(Attempt::Final(e)) => Err(e.0),
            };
            probes.push(ControllerProbe { url, answer });
        }
        probes
    }

    /// How far this host's clock is behind the first DC that answers, in
    /// ms (negative: ahead), from its rootDSE's currentTime, read without a
    /// bind (a clock too far off is what makes a Kerberos bind fail).
    pub async fn clock_offset(&self) -> Result<(String, i64), DirectoryError> {
        let (candidates, problem) = self.candidates().await;
        let mut passed: Vec<String> = problem.into_iter().collect();
        for url in candidates {
            let started = Instant::now();
            let mut ldap = match self.open(&url, DC_CONNECT_TIMEOUT).await {
                Ok(l) => l,
                Err(why) => {
                    passed.push(why);
                    continue;
                }
            };
            let root = self.read(&mut ldap, "", &["currentTime"]).await;
            let _ = ldap.unbind().await;
            let now = proto::time::unix_ms_i64() - started.elapsed().as_millis() as i64 / 2;
            let time = root?;
            let dc_ms = first(&time, "currentTime")
                .and_then(generalized_time_ms)
                .ok_or_else(|| DirectoryError(format!("{url}: the rootDSE has no currentTime")))?;
            return Ok((url, dc_ms - now));
        }
        Err(DirectoryError(self.none_answered(&passed)))
    }

    /// A connection to `url`, not bound yet.
    async fn open(&self, url: &str, timeout: Duration) -> Result<Ldap, String> {
        let mut settings = LdapConnSettings::new()
            .set_config(Arc::clone(&self.tls))
            .set_conn_timeout(timeout)
            .set_starttls(url.starts_with("ldap://"));
        // A DC found in DNS is reached at the addresses that DNS gave (the
        // host may not resolve them itself); TLS still checks its name.
        let addrs = self
            .resolved
            .lock()
            .expect("resolved lock")
            .get(url)
            .cloned();
        if let Some(addrs) = addrs.filter(|a| !a.is_empty()) {
            let stream = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&addrs[..]))
                .await
                .map_err(|_| format!("{url}: no answer from {addrs:?} within {timeout:?}"))?
                .and_then(|s| s.into_std())
                .map_err(|e| format!("{url}: cannot connect to {addrs:?}: {e}"))?;
            settings = settings.set_std_stream(StdStream::Tcp(stream));
        }
        // The timeout bounds the TCP connect only; a DC that accepts and
        // then stalls in TLS or StartTLS is bounded here.
        let connected = tokio::time::timeout(timeout, LdapConnAsync::with_settings(settings, url))
            .await
            .map_err(|_| format!("{url}: no answer within {timeout:?}"))?;
        let (conn, ldap) = connected.map_err(|e| format!("{url}: cannot connect: {e}"))?;
        ldap3::drive!(conn);
        Ok(ldap)
    }

    /// A connection to `url` bound as the service account. A DC that cannot
    /// be reached or declines the bind is `Elsewhere`; a bind refused for
    /// the account's credentials is final (every DC would say the same).
    async fn connect_to(
        &self,
        url: &str,
        timeout: Duration,
    ) -> Result<Ldap, Attempt<DirectoryError>> {
        let mut ldap = self.open(url, timeout).await.map_err(Attempt::Elsewhere)?;
        ldap.with_timeout(timeout);
        let bound = match &self.settings.credentials {
            Credentials::Password(password) => ldap
                .simple_bind(&self.settings.bind_dn, password)
                .await
                .map_err(|e| Attempt::Elsewhere(format!("{url}: bind failed: {e}")))?,
            Credentials::Kerberos { principal } => {
                kerberos::bind(&mut ldap, url, principal, timeout).await?
            }
        };
        if bound.rc == 0 {
            return Ok(ldap);
        }
        let failure = LdapFailure::from_result(bound.rc, &bound.text);
        let why = format!(
            "{url}: bind as {} failed: result {} {}",
            self.settings.bind_dn, bound.rc, bound.text
        );
        if fails_over(&failure) {
            Err(Attempt::Elsewhere(why))
        } else {
            Err(Attempt::Final(DirectoryError(format!(
                "forest {}: {why}",
                self.name
            ))))
        }
    }
}

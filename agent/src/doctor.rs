//! `writeback-agent doctor`: the pre-flight administrators run first and
//! support asks for. Each check says what it found and, when something is
//! wrong, the exact command that fixes it.

mod controllers;
pub mod fixes;
mod kerberos;
mod path;

use std::time::{Duration, Instant};

use proto::pb::relay_client::RelayClient;
use sas::Right;
use serde::Serialize;

use super::config::{AgentConfig, ForestKind};
use super::forests::open_forests;
use super::keyring::Keyring;
use directory::ContainerRights;
use relay_client::connect::BrokerEndpoint;
use relay_client::credential::{Authorize, Credential};
use relay_client::error::ClientError;
use relay_client::proxy::Route;

/// Skew beyond this is reported as a problem (envelopes allow 60 s).
pub const SKEW_WARNING: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
    /// Commands that fix it, when it is not ok (on Windows for forests).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fix: Vec<String>,
    /// For forests: the same fixes for a Samba DC, run there as root.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub samba_fix: Vec<String>,
    /// For forests: the containers where write-back is denied.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<ContainerReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ContainerReport {
    pub dn: String,
    pub is_ou: bool,
    pub user_count: usize,
    /// The users here that lack a right (see [`ContainerRights::affected`]).
    pub affected: usize,
    pub missing: Vec<&'static str>,
    /// The protected DACL that stops the grant from above.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked_at: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub denied_by: Vec<DenyReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DenyReport {
    pub right: &'static str,
    pub at: String,
    pub ace: String,
}

impl ContainerReport {
    fn from(c: &ContainerRights) -> ContainerReport {
        ContainerReport {
            dn: c.dn.clone(),
            is_ou: c.is_ou,
            user_count: c.user_count,
            affected: c.affected,
            missing: c.missing.iter().map(|r| r.as_str()).collect(),
            blocked_at: c.blocked_at.clone(),
            denied_by: c
                .denied_by
                .iter()
                .map(|d| DenyReport {
                    right: d.right.as_str(),
                    at: d.at.clone(),
                    ace: d.ace.clone(),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub ok: bool,
    pub checks: Vec<Check>,
}

fn check(name: impl Into<String>, ok: bool, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        ok,
        detail: detail.into(),
        fix: Vec::new(),
        samba_fix: Vec::new(),
        containers: Vec::new(),
    }
}

/// Runs every check. `config_hint` is how the printed fix commands pass the
/// configuration (e.g. `--config /etc/writeback-agent/agent.toml `).
pub async fn run(config: &AgentConfig, config_hint: &str) -> Report {
    let mut checks = Vec::new();
    let endpoint = BrokerEndpoint {
        url: config.broker.first(),
        ca_file: config.ca_file.clone(),
        tls_server_name: config.tls_server_name.clone(),
        proxy: config.proxy.clone(),
        // As the session does: HTTPS_PROXY/NO_PROXY when there is no [proxy].
        proxy_from_env: true,
    };
    broker_checks(config, &endpoint, &mut checks).await;
    for forest_check in forest_checks(config, config_hint).await {
        checks.push(forest_check);
    }
    Report {
        ok: checks.iter().all(|c| c.ok),
        checks,
    }
}

async fn broker_checks(config: &AgentConfig, endpoint: &BrokerEndpoint, checks: &mut Vec<Check>) {
    if !path::path_checks(endpoint, checks).await {
        return;
    }
    let channel = match endpoint.connect().await {
        Ok(ch) => {
            checks.push(check(
                "broker TLS and certificate",
                true,
                format!(
                    "verified against {}{}",
                    config
                        .ca_file
                        .as_ref()
                        .map_or("the system roots".to_owned(), |p| p.display().to_string()),
                    // The same connector as the session's: through the
                    // tunnel when there is a proxy.
                    if endpoint.route().is_ok_and(|r| matches!(r, Route::Proxy(_))) {
                        ", end to end through the proxy's tunnel"
                    } else {
                        ""
                    }
                ),
            ));
            ch
        }
        Err(e) => {
            let mut c = check("broker TLS and certificate", false, format!("{e:#}"));
            c.fix.push("set ca_file to the CA that signs the broker's certificate, or fix the broker's certificate name".into());
            checks.push(c);
            return;
        }
    };
    let credential =
        match Credential::from_key_file(&config.tenant, Right::Listen, &config.listen_key_file) {
            Ok(c) => c,
            Err(e) => {
                checks.push(check("credentials", false, e.to_string()));
                return;
            }
        };
    let mut client = RelayClient::with_interceptor(channel, Authorize(credential));
    let started = Instant::now();
    let reply = client
        .get_configuration(proto::pb::GetConfigurationRequest {
            tenant: config.tenant.clone(),
        })
        .await;
    let rtt = started.elapsed();
    let configuration = match reply {
        Ok(r) => {
            checks.push(check(
                "credentials",
                true,
                format!("the Listen key is valid for tenant {}", config.tenant),
            ));
            r.into_inner()
        }
        Err(status) => {
            let err = ClientError::from(status);
            let mut c = check("credentials", false, err.to_string());
            c.fix.push("copy the tenant's current Listen key (relayctl tenant create / keys rotate) to listen_key_file".into());
            checks.push(c);
            return;
        }
    };
    let now = proto::time::unix_ms_i64();
    let skew = configuration.broker_time_unix_ms - (now - rtt.as_millis() as i64 / 2);
    let mut skew_check = check(
        "clock skew",
        skew.unsigned_abs() <= SKEW_WARNING.as_millis() as u64,
        format!(
            "this host's clock is {skew} ms behind the broker's (negative: ahead); round trip {} ms",
            rtt.as_millis()
        ),
    );
    if !skew_check.ok {
        skew_check
            .fix
            .push("synchronise this host's clock (w32tm /resync, or chronyc makestep)".into());
    }
    checks.push(skew_check);
    let mut enabled = check(
        "write-back enabled",
        configuration.writeback_enabled && config.writeback_enabled,
        format!(
            "broker: {}, this agent: {}",
            configuration.writeback_enabled, config.writeback_enabled
        ),
    );
    if !configuration.writeback_enabled {
        enabled.fix.push(format!(
            "relayctl --key-file manage.key writeback {} enable",
            config.tenant
        ));
    }
    if !config.writeback_enabled {
        enabled
            .fix
            .push("set writeback_enabled = true in the agent's configuration".into());
    }
    checks.push(enabled);
    if let (Some(path), Some(password)) = (&config.key_file, config.setup_password()) {
        match Keyring::load(path, &password) {
            Ok(ring) => {
                let id = ring.current().pair.public.key_id().to_hex();
                let registered = configuration.agent_keys.iter().any(|k| k.key_id == id);
                let mut c = check(
                    "write-back key registered",
                    registered,
                    format!(
                        "current key {id} {}",
                        if registered {
                            "is registered"
                        } else {
                            "is not registered with the broker"
                        }
                    ),
                );
                if !registered {
                    c.fix
                        .push("writeback-agent init --enrollment <bundle> (safe to re-run)".into());
                }
                checks.push(c);
            }
            Err(e) => checks.push(check("write-back key registered", false, e.to_string())),
        }
    }
}

async fn forest_checks(config: &AgentConfig, config_hint: &str) -> Vec<Check> {
    let mut checks = Vec::new();
    if config.forests.is_empty() {
        let mut c = check("forests", false, "no forest is configured");
        c.fix
            .push("add a [[forests]] section to the agent's configuration".into());
        checks.push(c);
        return checks;
    }
    let forests = match open_forests(config) {
        Ok(f) => f,
        Err(e) => {
            checks.push(check("forests", false, e.to_string()));
            return checks;
        }
    };
    for (forest, settings) in forests.iter().zip(&config.forests) {
        let name = forest.forest().to_owned();
        checks.extend(controllers::controllers_check(settings).await);
        checks.extend(kerberos::kerberos_checks(settings).await);
        match forest.import(None).await {
            Ok(imported) => checks.push(check(
                format!("forest {name}: bind"),
                true,
                format!("{} accounts readable", imported.accounts.len()),
            )),
            Err(e) => {
                let mut c = check(format!("forest {name}: bind"), false, e.to_string());
                c.fix = kerberos::bind_fixes(settings, &c.detail);
                checks.push(c);
                continue;
            }
        }
        let rights = match forest.effective_rights().await {
            Ok(r) => r,
            Err(e) => {
                checks.push(check(
                    format!("forest {name}: rights"),
                    false,
                    e.to_string(),
                ));
                continue;
            }
        };
        let lacking: Vec<&ContainerRights> =
            rights.iter().filter(|o| !o.missing.is_empty()).collect();
        let users: usize = rights.iter().map(|o| o.user_count).sum();
        let mut c = check(
            format!("forest {name}: service account rights"),
            lacking.is_empty(),
            if lacking.is_empty() {
                format!(
                    "{} on the users of every container ({} containers, {users} users)",
                    checked_rights(),
                    rights.len()
                )
            } else {
                let affected: usize = lacking.iter().map(|o| o.affected).sum();
                format!(
                    "{} containers ({affected} users) lack rights write-back needs",
                    lacking.len()
                )
            },
        );
        c.containers = lacking.iter().map(|o| ContainerReport::from(o)).collect();
        if !lacking.is_empty() {
            if settings.kind == ForestKind::Embedded {
                c.fix = fixes::embedded_fixes(config_hint, &name, &rights);
            } else {
                match forest.service_account().await {
                    Ok(Some(account)) => {
                        let f = fixes::directory_fixes(&rights, &account);
                        c.fix = f.windows;
                        c.samba_fix = f.samba;
                    }
                    Ok(None) => {}
                    Err(e) => c.detail.push_str(&format!(
                        "; no fix commands: the service account could not be read: {e}"
                    )),
                }
            }
        }
        checks.push(c);
        checks.push(policy_check(&name, forest.as_ref()).await);
    }
    checks
}

/// The rights the agent's operations need, as doctor names them.
fn checked_rights() -> String {
    directory::eligibility::PasswordOperation::checked_rights()
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Fine-grained policies whose settings the service account cannot read:
/// their users would be shown no rules and get no specific refusals.
async fn policy_check(name: &str, forest: &dyn directory::Directory) -> Check {
    let title = format!("forest {name}: password policies readable");
    let list = match forest.unreadable_policies().await {
        Ok(list) if list.is_empty() => {
            return check(
                title,
                true,
                "the service account reads the settings of every fine-grained policy",
            );
        }
        Ok(list) => list,
        Err(e) => return check(title, false, e.to_string()),
    };
    let names: Vec<&str> = list.iter().map(|p| p.dn.as_str()).collect();
    let mut c = check(
        title,
        false,
        format!(
            "the service account cannot read the settings of {}: users they apply to are \
             told their rules are unknown, and refusals cannot name the rule",
            names.join("; ")
        ),
    );
    // Granted on the container and inherited, so policies created later
    // are readable too.
    match forest.service_account().await {
        Ok(Some(account)) => {
            let container = &list[0].container;
            c.fix.push(format!(
                "dsacls \"{container}\" /I:T /G \"{}\\{}:GR\"",
                account.netbios_domain, account.sam_account_name
            ));
            c.samba_fix.push(format!(
                "samba-tool dsacl set --objectdn=\"{container}\" --sddl=\"(A;CI;RPLCLORC;;;{})\"",
                account.sid
            ));
        }
        Ok(None) => {}
        Err(e) => c.detail.push_str(&format!(" (no fix: {e})")),
    }
    c
}

/// The report as a person reads it.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    for c in &report.checks {
        out.push_str(&format!(
            "[{}] {}: {}\n",
            if c.ok { " ok " } else { "FAIL" },
            c.name,
            c.detail
        ));
        for ou in &c.containers {
            let affected = if ou.affected < ou.user_count {
                format!(", {} affected", ou.affected)
            } else {
                String::new()
            };
            out.push_str(&format!(
                "       {} ({}{} users{affected}): missing {}",
                ou.dn,
                if ou.is_ou { "" } else { "not an OU, " },
                ou.user_count,
                ou.missing.join(", "),
            ));
            if let Some(at) = &ou.blocked_at {
                if at.eq_ignore_ascii_case(&ou.dn) {
                    out.push_str("; inheritance is blocked here");
                } else {
                    out.push_str(&format!("; inheritance is blocked at {at}"));
                }
            }
            for d in &ou.denied_by {
                out.push_str(&format!("; {} denied by {} on {}", d.right, d.ace, d.at));
            }
            out.push('\n');
        }
        for fix in &c.fix {
            out.push_str(&format!("       fix: {fix}\n"));
        }
        for fix in &c.samba_fix {
            out.push_str(&format!("       fix on a Samba DC: {fix}\n"));
        }
    }
    out.push_str(if report.ok {
        "All checks passed.\n"
    } else {
        "Some checks failed: apply the fixes above and run doctor again.\n"
    });
    out
}

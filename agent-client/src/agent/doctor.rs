//! `writeback-agent doctor`: the pre-flight administrators run first and
//! support asks for. Each check says what it found and, when something is
//! wrong, the exact command that fixes it.

use std::time::{Duration, Instant};

use proto::pb::relay_client::RelayClient;
use sas::Right;
use serde::Serialize;

use super::config::{AgentConfig, ForestKind};
use super::forests::open_forests;
use super::keyring::Keyring;
use crate::connect::BrokerEndpoint;
use crate::credential::{Authorize, Credential};
use crate::directory::{OuRights, Right as DirRight};
use crate::error::ClientError;

/// Skew beyond this is reported as a problem (envelopes allow 60 s).
pub const SKEW_WARNING: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
    /// Commands that fix it, when it is not ok.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fix: Vec<String>,
    /// For forests: the OUs where a right is missing or inheritance blocked.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ous: Vec<OuReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OuReport {
    pub dn: String,
    pub user_count: usize,
    pub missing: Vec<&'static str>,
    pub inheritance_blocked: bool,
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
        ous: Vec::new(),
    }
}

/// The dsacls lines that grant `missing` on users below `ou` to `account`.
pub fn dsacls_fix(ou: &str, account: &str, missing: &[DirRight]) -> Vec<String> {
    missing
        .iter()
        .map(|r| {
            let grant = match r {
                DirRight::ResetPassword => "CA;Reset Password;user",
                DirRight::ChangePassword => "CA;Change Password;user",
                DirRight::WriteLockoutTime => "WP;lockoutTime;user",
                DirRight::WritePwdLastSet => "WP;pwdLastSet;user",
            };
            format!("dsacls \"{ou}\" /I:S /G \"{account}:{grant}\"")
        })
        .collect()
}

fn right_arg(r: DirRight) -> &'static str {
    match r {
        DirRight::ResetPassword => "reset-password",
        DirRight::ChangePassword => "change-password",
        DirRight::WriteLockoutTime => "write-lockout-time",
        DirRight::WritePwdLastSet => "write-pwd-last-set",
    }
}

/// The fix for one OU of an embedded forest, runnable as printed. Granting
/// on the OU itself works whether or not inheritance is blocked there, and
/// keeps whatever reason blocked it.
fn embedded_fix(config_hint: &str, forest: &str, ou: &OuRights) -> String {
    let rights: Vec<_> = ou.missing.iter().map(|r| right_arg(*r)).collect();
    format!(
        "writeback-agent {config_hint}directory grant --forest {forest} --ou \"{}\" --rights {}",
        ou.dn,
        rights.join(",")
    )
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
    let first = config.broker.first();
    let authority = first
        .trim_start_matches("https://")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let with_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.clone()
    } else {
        format!("{authority}:443")
    };
    let addrs: Vec<_> = match tokio::net::lookup_host(&with_port).await {
        Ok(a) => a.collect(),
        Err(e) => {
            checks.push(check("broker DNS", false, format!("{with_port}: {e}")));
            return;
        }
    };
    checks.push(check(
        "broker DNS",
        !addrs.is_empty(),
        format!("{with_port} -> {addrs:?}"),
    ));
    let Some(addr) = addrs.first() else { return };
    match tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    {
        Ok(Ok(_)) => checks.push(check("broker TCP", true, format!("connected to {addr}"))),
        other => {
            let why = match other {
                Ok(Err(e)) => e.to_string(),
                _ => "no answer within 10s".into(),
            };
            let mut c = check("broker TCP", false, format!("{addr}: {why}"));
            c.fix.push("allow outbound TCP to the broker (port 443 by default) in the firewall or set the proxy".into());
            checks.push(c);
            return;
        }
    }
    let channel = match endpoint.connect().await {
        Ok(ch) => {
            checks.push(check(
                "broker TLS and certificate",
                true,
                format!(
                    "verified against {}",
                    config
                        .ca_file
                        .as_ref()
                        .map_or("the system roots".to_owned(), |p| p.display().to_string())
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
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
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
        match forest.import(None).await {
            Ok(imported) => checks.push(check(
                format!("forest {name}: bind"),
                true,
                format!("{} accounts readable", imported.accounts.len()),
            )),
            Err(e) => {
                checks.push(check(format!("forest {name}: bind"), false, e.to_string()));
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
        let lacking: Vec<&OuRights> = rights.iter().filter(|o| !o.missing.is_empty()).collect();
        let users: usize = rights.iter().map(|o| o.user_count).sum();
        let mut c = check(
            format!("forest {name}: service account rights"),
            lacking.is_empty(),
            if lacking.is_empty() {
                format!(
                    "all four rights on every OU holding users ({} OUs, {users} users)",
                    rights.len()
                )
            } else {
                let affected: usize = lacking.iter().map(|o| o.user_count).sum();
                format!(
                    "{} OUs ({affected} users) lack rights write-back needs",
                    lacking.len()
                )
            },
        );
        for ou in &lacking {
            c.ous.push(OuReport {
                dn: ou.dn.clone(),
                user_count: ou.user_count,
                missing: ou.missing.iter().map(|r| r.as_str()).collect(),
                inheritance_blocked: ou.inheritance_blocked,
            });
            if settings.kind == ForestKind::Embedded {
                c.fix.push(embedded_fix(config_hint, &name, ou));
            }
            c.fix.extend(dsacls_fix(
                &ou.dn,
                "<DOMAIN>\\<service account>",
                &ou.missing,
            ));
        }
        checks.push(c);
    }
    checks
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
        for ou in &c.ous {
            out.push_str(&format!(
                "       {} ({} users): missing {}{}\n",
                ou.dn,
                ou.user_count,
                ou.missing.join(", "),
                if ou.inheritance_blocked {
                    "; inheritance is blocked here"
                } else {
                    ""
                }
            ));
        }
        for fix in &c.fix {
            out.push_str(&format!("       fix: {fix}\n"));
        }
    }
    out.push_str(if report.ok {
        "All checks passed.\n"
    } else {
        "Some checks failed: apply the fixes above and run doctor again.\n"
    });
    out
}

//! `writeback-agent status`: what Get-ADSyncAADPasswordResetConfiguration
//! shows (connector, enabled, modified timestamp), plus the broker
//! connection, the agents online, the key ids and the forests.

use proto::pb::relay_client::RelayClient;
use sas::Right;
use serde::Serialize;

use super::config::AgentConfig;
use super::keyring::Keyring;
use relay_client::connect::BrokerEndpoint;
use relay_client::credential::{Authorize, Credential};
use relay_client::error::ClientError;

#[derive(Debug, Clone, Serialize)]
pub struct AgentOnline {
    pub agent_id: String,
    pub version: String,
    pub connected_since_unix_ms: i64,
    pub last_heartbeat_unix_ms: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct KeyState {
    pub key_id: String,
    pub state: &'static str,
    pub registered: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub tenant: String,
    pub connector: Option<String>,
    /// Write-back as the broker has it for the tenant.
    pub enabled: Option<bool>,
    pub modified_unix_ms: Option<i64>,
    /// The on-prem switch in this agent's configuration.
    pub enabled_on_this_agent: bool,
    /// "connected" or why not.
    pub broker: String,
    pub agents_online: Vec<AgentOnline>,
    pub keys: Vec<KeyState>,
    /// Set when the keyring could not be read (no setup password, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keyring: Option<String>,
    pub forests: Vec<String>,
}

pub async fn run(config: &AgentConfig) -> Status {
    let mut status = Status {
        tenant: config.tenant.clone(),
        connector: None,
        enabled: None,
        modified_unix_ms: None,
        enabled_on_this_agent: config.writeback_enabled,
        broker: String::new(),
        agents_online: Vec::new(),
        keys: Vec::new(),
        keyring: None,
        forests: config.forests.iter().map(|f| f.name.clone()).collect(),
    };
    let mut registered_ids = Vec::new();
    match query(config).await {
        Ok(c) => {
            status.broker = "connected".into();
            status.connector = Some(c.connector_name);
            status.enabled = Some(c.writeback_enabled);
            status.modified_unix_ms = Some(c.modified_unix_ms);
            status.agents_online = c
                .agents_online
                .into_iter()
                .map(|a| AgentOnline {
                    agent_id: a.agent_id,
                    version: a.agent_version,
                    connected_since_unix_ms: a.connected_since_unix_ms,
                    last_heartbeat_unix_ms: a.last_heartbeat_unix_ms,
                })
                .collect();
            registered_ids = c.agent_keys.into_iter().map(|k| k.key_id).collect();
        }
        Err(e) => status.broker = format!("not reachable: {e}"),
    }
    match (&config.key_file, config.setup_password()) {
        (None, _) => status.keyring = Some("no key_file configured".into()),
        (Some(_), None) => status.keyring = Some("the setup password is not available".into()),
        (Some(path), Some(password)) => match Keyring::load(path, &password) {
            Ok(ring) => {
                let current = ring.current().pair.public.key_id();
                for k in &ring.keys {
                    let id = k.pair.public.key_id();
                    status.keys.push(KeyState {
                        key_id: id.to_hex(),
                        state: if !k.active {
                            "staged"
                        } else if id == current {
                            "current"
                        } else {
                            "superseded"
                        },
                        registered: registered_ids.contains(&id.to_hex()),
                    });
                }
            }
            Err(e) => status.keyring = Some(e.to_string()),
        },
    }
    status
}

async fn query(config: &AgentConfig) -> Result<proto::pb::TenantConfiguration, ClientError> {
    let endpoint = BrokerEndpoint {
        url: config.broker.first(),
        ca_file: config.ca_file.clone(),
        tls_server_name: config.tls_server_name.clone(),
        proxy: config.proxy.clone(),
        // As the session does: HTTPS_PROXY/NO_PROXY when there is no [proxy].
        proxy_from_env: true,
    };
    let credential =
        Credential::from_key_file(&config.tenant, Right::Listen, &config.listen_key_file)
            .map_err(|e| ClientError::InvalidArgument(e.to_string()))?;
    let channel = endpoint.connect().await?;
    let reply = RelayClient::with_interceptor(channel, Authorize(credential))
        .get_configuration(proto::pb::GetConfigurationRequest {
            tenant: config.tenant.clone(),
        })
        .await?;
    Ok(reply.into_inner())
}

fn time(ms: i64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64),
    )
    .to_string()
}

/// The status as a person reads it, the cmdlet's columns first.
pub fn render(s: &Status) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:<30} {:<8} ModifiedTimestamp\n",
        "Connector", "Enabled"
    ));
    out.push_str(&format!(
        "{:<30} {:<8} -----------------\n",
        "---------", "-------"
    ));
    out.push_str(&format!(
        "{:<30} {:<8} {}\n\n",
        s.connector.as_deref().unwrap_or("(unknown)"),
        match s.enabled {
            Some(true) if s.enabled_on_this_agent => "True",
            Some(_) => "False",
            None => "?",
        },
        s.modified_unix_ms.map_or("?".into(), time)
    ));
    out.push_str(&format!("broker            {}\n", s.broker));
    if !s.enabled_on_this_agent {
        out.push_str("this agent        write-back switched off in its configuration\n");
    }
    out.push_str(&format!("agents online     {}\n", s.agents_online.len()));
    for a in &s.agents_online {
        out.push_str(&format!(
            "  {:<24} version {:<10} since {}  last heartbeat {}\n",
            a.agent_id,
            a.version,
            time(a.connected_since_unix_ms),
            time(a.last_heartbeat_unix_ms)
        ));
    }
    if let Some(why) = &s.keyring {
        out.push_str(&format!("keys              {why}\n"));
    }
    for k in &s.keys {
        out.push_str(&format!(
            "key               {} {}{}\n",
            k.key_id,
            k.state,
            if k.registered {
                ""
            } else {
                " (not registered with the broker)"
            }
        ));
    }
    out.push_str(&format!("forests           {}\n", s.forests.join(", ")));
    out
}

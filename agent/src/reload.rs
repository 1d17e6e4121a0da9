//! SIGHUP: the configuration read again. Where and how to reach the broker
//! (its addresses, the CA file, the name to verify, the proxy) takes effect
//! at the next connection; the session in progress is left alone. The rest
//! (the keyring, forests, identity, limits) keeps its running values and is
//! named in a warning until the agent restarts. A file that does not load
//! keeps everything as it was.
//!
//! Also `check-config`: the configuration and the files it names, checked
//! without connecting anywhere or writing anything.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use relay_client::connect::BrokerEndpoint;
use relay_client::credential::{Credential, CredentialError};
use tokio::signal::unix::Signal;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{AgentConfig, ForestKind};

/// The broker addresses the session loop dials, each with how to reach it;
/// a reload replaces them for the next connection.
#[derive(Debug)]
pub struct LiveEndpoints(RwLock<Arc<Vec<BrokerEndpoint>>>);

impl LiveEndpoints {
    pub fn new(config: &AgentConfig) -> LiveEndpoints {
        LiveEndpoints(RwLock::new(Arc::new(endpoints(config))))
    }

    pub fn current(&self) -> Arc<Vec<BrokerEndpoint>> {
        Arc::clone(&self.0.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn set(&self, config: &AgentConfig) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(endpoints(config));
    }
}

fn endpoints(config: &AgentConfig) -> Vec<BrokerEndpoint> {
    config
        .broker
        .all()
        .into_iter()
        .map(|url| BrokerEndpoint {
            url,
            ca_file: config.ca_file.clone(),
            tls_server_name: config.tls_server_name.clone(),
            proxy: config.proxy.clone(),
            // Without a [proxy] table, HTTPS_PROXY/ALL_PROXY and NO_PROXY apply.
            proxy_from_env: true,
        })
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("cannot read {setting} {path}")]
    Unreadable {
        setting: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{setting} {path} holds no PEM certificate")]
    NotPem {
        setting: &'static str,
        path: PathBuf,
    },
    #[error("listen_key_file")]
    ListenKey(#[from] CredentialError),
    #[error("forest {forest}: {problem}")]
    Forest {
        forest: String,
        problem: &'static str,
    },
}

/// The settings a reload puts in force (at the next connection).
const LIVE: &[&str] = &["broker", "ca_file", "tls_server_name", "proxy"];

/// Reloads on every SIGHUP until `shutdown`. `load` reads the configuration
/// as the agent's start did (the same file and flags).
pub async fn on_hangup<F>(
    live: Arc<LiveEndpoints>,
    mut running: AgentConfig,
    mut hangup: Signal,
    load: F,
    shutdown: CancellationToken,
) where
    F: Fn() -> anyhow::Result<AgentConfig> + Send + 'static,
{
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            received = hangup.recv() => if received.is_none() { return },
        }
        info!("SIGHUP: reloading the configuration");
        let new = match load().and_then(|new| Ok(check(&new).map(|()| new)?)) {
            Ok(new) => new,
            Err(e) => {
                // TOML errors quote the file over several lines.
                let e = format!("{e:#}");
                let e = e.lines().map(str::trim).collect::<Vec<_>>().join(" ");
                error!("reload failed, the previous configuration stays in force: {e}");
                continue;
            }
        };
        let (changed, needs_restart) = split(&running, &new);
        if !needs_restart.is_empty() {
            warn!(
                "changed in the file but needs a restart: {}",
                needs_restart.join(", ")
            );
        }
        running.broker = new.broker;
        running.ca_file = new.ca_file;
        running.tls_server_name = new.tls_server_name;
        running.proxy = new.proxy;
        live.set(&running);
        let changed = if changed.is_empty() {
            "nothing".to_owned()
        } else {
            changed.join(", ")
        };
        info!("configuration reloaded; changed (from the next connection): {changed}");
    }
}

/// The settings that differ: those a reload applies, and those it cannot.
pub fn split(old: &AgentConfig, new: &AgentConfig) -> (Vec<&'static str>, Vec<&'static str>) {
    let mut differ = Vec::new();
    // Debug renderings compare the values without every nested type
    // needing PartialEq; they hold paths and names, never a secret.
    macro_rules! compare {
        ($($field:ident),+ $(,)?) => {
            $(if format!("{:?}", old.$field) != format!("{:?}", new.$field) {
                differ.push(stringify!($field));
            })+
        };
    }
    compare!(
        broker,
        ca_file,
        tls_server_name,
        tenant,
        agent_id,
        listen_key_file,
        token_lifetime,
        reconnect_min,
        reconnect_max,
        key_file,
        setup_password_file,
        state_dir,
        clock_skew_allowance,
        max_envelope_lifetime,
        key_overlap,
        rotate_every,
        forests,
        writeback_enabled,
        event_log_dir,
        event_log_max_bytes,
        events,
        import_interval,
        log_format,
        keepalive_interval,
        keepalive_timeout,
        drain_grace,
        proxy,
        limits,
        telemetry,
    );
    differ.into_iter().partition(|name| LIVE.contains(name))
}

/// `check-config`: the Listen key parses, the CA file holds a PEM
/// certificate, and the keyring, setup password and forest files can be
/// read (the keyring is not opened: that needs the password).
pub fn check(config: &AgentConfig) -> Result<(), CheckError> {
    Credential::from_key_file(
        config.tenant.clone(),
        sas::Right::Listen,
        &config.listen_key_file,
    )?;
    if let Some(ca) = &config.ca_file {
        pem_certificate("ca_file", ca)?;
    }
    if let Some(path) = &config.key_file {
        readable("key_file", path)?;
    }
    if let Some(path) = &config.setup_password_file {
        readable("setup_password_file", path)?;
    }
    for forest in &config.forests {
        let missing = |problem| CheckError::Forest {
            forest: forest.name.clone(),
            problem,
        };
        match forest.kind {
            ForestKind::Embedded => {
                let path = forest.path.as_ref().ok_or_else(|| missing("no path"))?;
                readable("forests.path", path)?;
            }
            ForestKind::Ldap => {
                if let Some(ca) = &forest.ca_file {
                    pem_certificate("forests.ca_file", ca)?;
                }
                if let Some(path) = &forest.bind_password_file {
                    readable("forests.bind_password_file", path)?;
                }
                if let Some(path) = &forest.keytab_file {
                    readable("forests.keytab_file", path)?;
                }
                if let Some(path) = &forest.krb5_conf {
                    readable("forests.krb5_conf", path)?;
                }
            }
        }
    }
    Ok(())
}

fn readable(setting: &'static str, path: &Path) -> Result<Vec<u8>, CheckError> {
    std::fs::read(path).map_err(|source| CheckError::Unreadable {
        setting,
        path: path.to_owned(),
        source,
    })
}

fn pem_certificate(setting: &'static str, path: &Path) -> Result<(), CheckError> {
    let text = readable(setting, path)?;
    if text
        .windows(27)
        .any(|w| w == b"-----BEGIN CERTIFICATE-----")
    {
        Ok(())
    } else {
        Err(CheckError::NotPem {
            setting,
            path: path.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path, extra: &str) -> AgentConfig {
        let key = dir.join("listen.key");
        AgentConfig::from_toml(&format!(
            "broker = \"https://127.0.0.1:1\"\ntenant = \"t\"\nagent_id = \"a\"\nlisten_key_file = {key:?}\n{extra}"
        ))
        .expect("config")
    }

    #[test]
    fn reload_split_names_live_and_restart_settings() {
        let dir = tempfile::tempdir().unwrap();
        let old = config(dir.path(), "");
        let new = AgentConfig {
            broker: crate::config::Brokers::One("https://127.0.0.1:2".into()),
            drain_grace: std::time::Duration::from_secs(1),
            ..old.clone()
        };
        assert_eq!(split(&old, &new), (vec!["broker"], vec!["drain_grace"]));
        let live = LiveEndpoints::new(&old);
        live.set(&new);
        assert_eq!(live.current()[0].url, "https://127.0.0.1:2");
    }

    #[test]
    fn reload_check_names_the_file_at_fault() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path(), "");
        let e = check(&c).unwrap_err().to_string();
        assert!(e.contains("listen_key_file"), "{e}");
        std::fs::write(
            dir.path().join("listen.key"),
            sas::Key::generate().unwrap().to_base64(),
        )
        .unwrap();
        check(&c).unwrap();
        std::fs::write(dir.path().join("ca.pem"), "junk").unwrap();
        let ca = dir.path().join("ca.pem");
        let e = check(&config(dir.path(), &format!("ca_file = {ca:?}")))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ca_file") && e.contains("no PEM certificate"),
            "{e}"
        );
    }
}

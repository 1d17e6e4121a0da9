//! SIGHUP: the configuration read again. What the pages show and how long
//! a call may take (`title`, `request_timeout`) change for the next request;
//! the rest (the listener, the broker, the keys and pins, `csrf_key_file`,
//! the limits) keeps its running values and is named in a warning until the
//! portal restarts.
//! A file that does not load keeps everything as it was.
//!
//! Also `check-config`: the configuration and the files it names, checked
//! without binding, connecting or writing anything.

use std::path::Path;
use std::sync::{Arc, RwLock};

use relay_client::connect::BrokerEndpoint;
use relay_client::credential::read_key_file;
use tokio::signal::unix::Signal;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::Settings;
use crate::config::{ConfigError, PortalConfig, read_csrf_key, read_portal_key};

/// The [`Settings`] requests read; a reload replaces them.
#[derive(Debug)]
pub struct LiveSettings(RwLock<Arc<Settings>>);

impl LiveSettings {
    pub fn new(settings: Settings) -> LiveSettings {
        LiveSettings(RwLock::new(Arc::new(settings)))
    }

    pub fn current(&self) -> Arc<Settings> {
        Arc::clone(&self.0.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn set(&self, settings: Settings) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(settings);
    }
}

/// The settings a reload puts in force.
const LIVE: &[&str] = &["title", "request_timeout"];

/// Reloads `path` on every SIGHUP until `shutdown`.
pub async fn on_hangup(
    live: Arc<LiveSettings>,
    mut running: PortalConfig,
    path: std::path::PathBuf,
    mut hangup: Signal,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            received = hangup.recv() => if received.is_none() { return },
        }
        info!("SIGHUP: reloading the configuration");
        let new = match PortalConfig::load(&path).and_then(|new| check(&new).map(|()| new)) {
            Ok(new) => new,
            Err(e) => {
                error!(
                    "reload failed, the previous configuration stays in force: {}",
                    chain(&e)
                );
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
        running.title = new.title;
        running.request_timeout = new.request_timeout;
        live.set(Settings::from_config(&running));
        let changed = if changed.is_empty() {
            "nothing".to_owned()
        } else {
            changed.join(", ")
        };
        info!("configuration reloaded; changed: {changed}");
    }
}

/// The error and its causes on one line (TOML errors quote the file over
/// several).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The settings that differ: those a reload applies, and those it cannot.
pub fn split(old: &PortalConfig, new: &PortalConfig) -> (Vec<&'static str>, Vec<&'static str>) {
    let mut differ = Vec::new();
    // Debug renderings: paths, names and fingerprints, never a key.
    macro_rules! compare {
        ($($field:ident),+ $(,)?) => {
            $(if format!("{:?}", old.$field) != format!("{:?}", new.$field) {
                differ.push(stringify!($field));
            })+
        };
    }
    compare!(
        listen,
        broker,
        ca_file,
        tenant,
        send_key_file,
        portal_key_file,
        csrf_key_file,
        trusted_agent_keys,
        title,
        request_timeout,
        identity_check,
        limits,
        oidc,
    );
    differ.into_iter().partition(|name| LIVE.contains(name))
}

/// `check-config`: the Send key and the portal key load, the CA file holds
/// a PEM certificate and the broker's address makes a TLS endpoint.
pub fn check(config: &PortalConfig) -> Result<(), ConfigError> {
    read_key_file(&config.send_key_file).map_err(ConfigError::SendKey)?;
    read_portal_key(&config.portal_key_file)?;
    if let Some(path) = &config.csrf_key_file {
        read_csrf_key(path)?;
    }
    if let Some(oidc) = &config.oidc {
        oidc.read_files()?;
    }
    if let Some(ca) = &config.ca_file {
        let text = std::fs::read(ca).map_err(|source| ConfigError::CaFile {
            path: ca.clone(),
            source: Some(source),
        })?;
        if !text
            .windows(27)
            .any(|w| w == b"-----BEGIN CERTIFICATE-----")
        {
            return Err(ConfigError::CaFile {
                path: ca.clone(),
                source: None,
            });
        }
    }
    BrokerEndpoint::new(config.broker.clone(), config.ca_file.as_deref())
        .endpoint()
        .map_err(ConfigError::Broker)?;
    Ok(())
}

/// For `check-config`: `path` loaded and checked.
pub fn check_file(path: &Path) -> Result<(), ConfigError> {
    check(&PortalConfig::load(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_csrf_key_file_needs_a_restart() {
        let text = "broker = \"https://relay.example:443\"\ntenant = \"contoso\"\n\
             send_key_file = \"send.key\"\nportal_key_file = \"portal.key\"\n\
             trusted_agent_keys = [\"0123 4567 89ab cdef 0123 4567 89ab cdef \
             0123 4567 89ab cdef 0123 4567 89ab cdef\"]\nidentity_check = \"none\"\n";
        let old = PortalConfig::from_toml(text).unwrap();
        let new =
            PortalConfig::from_toml(&format!("{text}csrf_key_file = \"csrf.key\"\n")).unwrap();
        assert_eq!(split(&old, &new), (vec![], vec!["csrf_key_file"]));
        let oidc = text.replace("\"none\"", "\"oidc\"")
            + "[oidc]\nissuer = \"https://login.example\"\nclient_id = \"c\"\n\
               redirect_url = \"https://reset.example/signin/callback\"\n\
               session_key_file = \"session.key\"\n";
        let new = PortalConfig::from_toml(&oidc).unwrap();
        assert_eq!(split(&old, &new), (vec![], vec!["identity_check", "oidc"]));
    }
}

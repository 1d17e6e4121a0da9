//! SIGHUP: the configuration file and the TLS certificate read again and
//! swapped in without closing a session or failing a call. Settings read per
//! request or per handshake change at once; the rest (listeners, store,
//! cluster, limits held by connections and sessions) keep their running
//! values and are named in a warning until the node restarts. A file that
//! does not load keeps everything as it was.
//!
//! Also `check-config`: what a start or a reload would read, checked without
//! binding, connecting or writing anything.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::signal::unix::Signal;
use tracing::{error, info, warn};

use crate::config::BrokerConfig;
use crate::metrics::ResultLabel;
use crate::sealing::{StorageKey, StorageKeyError};
use crate::state::State;
use crate::tls::{self, TlsError};

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file or the flags: the message names the file and the problem.
    #[error("{0:#}")]
    Config(anyhow::Error),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    StorageKey(#[from] StorageKeyError),
    #[error("cannot read {setting} {path}")]
    Unreadable {
        setting: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What one successful reload did.
#[derive(Debug, Default, PartialEq)]
pub struct Reloaded {
    /// Settings now in force with their new values.
    pub changed: Vec<&'static str>,
    /// Settings that differ in the file but keep their running values.
    pub needs_restart: Vec<&'static str>,
    /// Whether the certificate presented to new connections changed.
    pub certificate_changed: bool,
}

/// The settings a reload puts in force: each is read per request (the
/// deadlines, the rate limit) or per handshake (the certificate files).
const LIVE: &[&str] = &[
    "tls_cert",
    "tls_key",
    "default_deadline",
    "max_deadline",
    "limits.tenant_requests_per_minute",
];

/// Reloads on every SIGHUP until the node shuts down. `load` reads the
/// configuration as the node's start did (the same file and flags).
pub async fn on_hangup<F>(state: Arc<State>, mut hangup: Signal, load: F)
where
    F: Fn() -> anyhow::Result<BrokerConfig> + Send + 'static,
{
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            received = hangup.recv() => if received.is_none() { return },
        }
        info!("SIGHUP: reloading the configuration and the TLS certificate");
        // First: logrotate renamed the file and waits for nothing else.
        state.audit.reopen();
        let result = match load() {
            Ok(config) => reload(&state, config),
            Err(e) => Err(ReloadError::Config(e)),
        };
        log(&state, result);
    }
}

fn log(state: &State, result: Result<Reloaded, ReloadError>) {
    let label = |result| ResultLabel { result };
    match result {
        Ok(done) => {
            state
                .metrics
                .config_reloads
                .get_or_create(&label("ok"))
                .inc();
            if !done.needs_restart.is_empty() {
                warn!(
                    "changed in the file but needs a restart: {}",
                    done.needs_restart.join(", ")
                );
            }
            let mut changed = done.changed.join(", ");
            if done.certificate_changed {
                changed = if changed.is_empty() {
                    "certificate".to_owned()
                } else {
                    format!("certificate, {changed}")
                };
            }
            if changed.is_empty() {
                changed = "nothing".to_owned();
            }
            info!("configuration reloaded; changed: {changed}");
        }
        Err(e) => {
            state
                .metrics
                .config_reloads
                .get_or_create(&label("failed"))
                .inc();
            error!(
                "reload failed, the previous configuration and certificate stay in force: {}",
                chain(&e)
            );
        }
    }
}

/// The error and its causes on one line (the config file's error already
/// carries its causes in its message).
fn chain(e: &ReloadError) -> String {
    let mut text = e.to_string();
    let mut source = match e {
        ReloadError::Config(_) => None,
        _ => std::error::Error::source(e),
    };
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    one_line(&text)
}

/// TOML errors quote the file over several lines; a log line is one line.
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Puts `new` in force as far as it can be without a restart. The
/// certificate and key it names are checked before anything is swapped.
pub fn reload(state: &State, new: BrokerConfig) -> Result<Reloaded, ReloadError> {
    let identity = tls::load_identity_checked(&new.tls_cert, &new.tls_key)?;
    let running = state.live();
    let differ = differences(&running, &new);
    let (changed, needs_restart): (Vec<_>, Vec<_>) =
        differ.into_iter().partition(|name| LIVE.contains(name));

    let mut live = (*running).clone();
    live.tls_cert = new.tls_cert.clone();
    live.tls_key = new.tls_key.clone();
    live.default_deadline = new.default_deadline;
    live.max_deadline = new.max_deadline;
    live.limits.tenant_requests_per_minute = new.limits.tenant_requests_per_minute;

    let certificate_changed = state.certificate.current().cert != identity.certified.cert;
    state.certificate.set(identity.certified);
    state
        .metrics
        .tls_certificate_expiry
        .set(identity.not_after_unix);
    warn_if_expiring(&new.tls_cert, identity.not_after_unix);
    state
        .rate_limit
        .set_per_minute(live.limits.tenant_requests_per_minute);
    *state.live.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(live);
    Ok(Reloaded {
        changed,
        needs_restart,
        certificate_changed,
    })
}

/// Within this of its expiry, the certificate is worth a warning at every
/// start and reload: an ACME client that stopped renewing is found while
/// there is time.
const EXPIRY_WARNING_SECS: i64 = 14 * 24 * 3600;

/// Warns when the certificate at `path` has expired or soon will.
pub fn warn_if_expiring(path: &Path, not_after_unix: i64) {
    let now = crate::time::now_unix_ms() / 1000;
    if not_after_unix <= now {
        warn!(path = %path.display(), not_after_unix, "the TLS certificate has expired: clients will refuse it");
    } else if not_after_unix - now < EXPIRY_WARNING_SECS {
        let days = (not_after_unix - now) / 86_400;
        warn!(path = %path.display(), not_after_unix, "the TLS certificate expires in {days} days");
    }
}

/// The settings whose values differ, by their names in the file.
fn differences(old: &BrokerConfig, new: &BrokerConfig) -> Vec<&'static str> {
    let mut out = Vec::new();
    macro_rules! compare {
        ($prefix:literal, $old:expr, $new:expr; $($field:ident),+ $(,)?) => {
            $(if $old.$field != $new.$field {
                out.push(concat!($prefix, stringify!($field)));
            })+
        };
    }
    compare!("", old, new; listen, listen_backlog, operator_listen, data_dir,
        tls_cert, tls_key, default_deadline, max_deadline, max_envelope_bytes,
        heartbeat_interval, hello_timeout, max_token_lifetime, keepalive_timeout,
        ack_timeout, outcome_retention, drain_grace, log_format, cluster, audit,
        telemetry);
    compare!("limits.", old.limits, new.limits; tenant_requests_per_minute,
        max_in_flight_per_agent, sessions_per_tenant, sessions_per_source,
        sessions_per_connection, max_concurrent_streams, tls_handshake_timeout,
        max_concurrent_handshakes, operator_header_timeout, operator_body_timeout,
        operator_max_connections, operator_connections_per_source,
        first_request_timeout, unauthenticated_idle_timeout, idle_timeout,
        request_receive_timeout, unauthenticated_connections_per_source,
        reserved_descriptors, max_outcome_bytes_per_tenant,
        max_pending_outcome_writes_per_tenant, unsolicited_replies_per_minute,
        metrics_tenant_labels);
    out
}

/// `check-config`: the files a validated configuration names, read and
/// checked: the certificate and key (PEM, usable, matching), the audit
/// file's directory, the storage
/// key (on one node only when configured: otherwise the broker makes one in
/// its data directory at first start), and in cluster mode the NATS
/// credential and CA files.
pub fn check(config: &BrokerConfig) -> Result<(), ReloadError> {
    tls::load_identity_checked(&config.tls_cert, &config.tls_key)?;
    if config.cluster.is_none()
        && let (path, true) = config.storage_key_path()
    {
        StorageKey::load(&path)?;
    }
    // A configured audit file's directory must exist: the broker creates
    // the file, not the directory (the data directory's default it does).
    if let (Some(_), Some(path)) = (&config.audit.file, config.audit_path())
        && let Some(dir) = path.parent()
    {
        readable("audit.file's directory", dir)?;
    }
    if let Some(cluster) = &config.cluster {
        StorageKey::load(&cluster.storage_key_file)?;
        let files = [
            ("cluster.nats_password_file", &cluster.nats_password_file),
            ("cluster.nats_ca_file", &cluster.nats_ca_file),
            ("cluster.nats_client_cert", &cluster.nats_client_cert),
            ("cluster.nats_client_key", &cluster.nats_client_key),
        ];
        for (setting, path) in files {
            if let Some(path) = path {
                readable(setting, path)?;
            }
        }
    }
    Ok(())
}

fn readable(setting: &'static str, path: &Path) -> Result<(), ReloadError> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|source| ReloadError::Unreadable {
            setting,
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> BrokerConfig {
        BrokerConfig::from_toml(&format!(
            "data_dir = \"/d\"\ntls_cert = \"/c\"\ntls_key = \"/k\"\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn reload_differences_are_named_as_in_the_file() {
        let old = config("");
        let new = config(
            "listen = \"127.0.0.1:1\"\nmax_deadline = \"10m\"\n[limits]\nidle_timeout = \"1s\"\n",
        );
        assert_eq!(
            differences(&old, &new),
            ["listen", "max_deadline", "limits.idle_timeout"]
        );
        assert!(differences(&old, &config("")).is_empty());
    }

    #[test]
    fn reload_errors_are_logged_on_one_line() {
        let e = BrokerConfig::from_toml("listen = 1\nlisten = 2\n").unwrap_err();
        let text = chain(&ReloadError::Config(e.into()));
        assert!(!text.contains('\n') && text.contains("listen"), "{text}");
    }

    #[test]
    fn reload_check_names_the_missing_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config("");
        c.tls_cert = dir.path().join("missing.pem");
        let e = check(&c).unwrap_err().to_string();
        assert!(e.contains("missing.pem"), "{e}");
    }

    #[test]
    fn reload_check_refuses_a_key_of_another_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let a = tls::generate_dev_pki(&dir.path().join("a"), &["localhost".into()]).unwrap();
        let b = tls::generate_dev_pki(&dir.path().join("b"), &["localhost".into()]).unwrap();
        let mut c = config("");
        c.tls_cert = a.server_cert.clone();
        c.tls_key = a.server_key;
        check(&c).unwrap();
        c.tls_key = b.server_key;
        let e = check(&c).unwrap_err().to_string();
        assert!(e.contains("does not match"), "{e}");
    }
}

//! Typed agent configuration, read from TOML with unknown keys refused.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The broker's address, `https://host:port`, or a list of addresses
    /// tried in turn (the next one after every failed or ended session).
    pub broker: Brokers,
    /// PEM CA bundle that signs the broker's certificate; the system roots
    /// when absent.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The name to verify in the broker's certificate, when not the URL's host.
    #[serde(default)]
    pub tls_server_name: Option<String>,
    pub tenant: String,
    /// This installation's id: 1-64 of [A-Za-z0-9._-]. Defaults to the host name.
    #[serde(default)]
    pub agent_id: Option<String>,
    /// File holding the tenant's Listen key (base64), readable by the agent only.
    pub listen_key_file: PathBuf,
    /// Lifetime of the session tokens the agent mints; renewed at half-life.
    #[serde(default = "default_token_lifetime", with = "humantime_serde")]
    pub token_lifetime: Duration,
    /// First reconnect delay ceiling; doubles per failure up to reconnect_max.
    #[serde(default = "default_reconnect_min", with = "humantime_serde")]
    pub reconnect_min: Duration,
    #[serde(default = "default_reconnect_max", with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// The keyring made by `writeback-agent init`: the write-back private
    /// keys and pinned portal keys, sealed under the setup password. Without
    /// it the agent answers pings only.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// A file holding the setup password, so the service can open the
    /// keyring at start (mode 0600; on systemd hosts, supply it with
    /// LoadCredentialEncrypted). The WRITEBACK_AGENT_SETUP_PASSWORD
    /// environment variable is the alternative.
    #[serde(default)]
    pub setup_password_file: Option<PathBuf>,
    /// Where the agent keeps its state (the replay window). Defaults to the
    /// key file's directory, or the Listen key file's without a keyring.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// How far a portal's clock may be off from this agent's.
    #[serde(default = "default_skew", with = "humantime_serde")]
    pub clock_skew_allowance: Duration,
    /// The longest validity window an envelope may claim.
    #[serde(default = "default_max_lifetime", with = "humantime_serde")]
    pub max_envelope_lifetime: Duration,
    /// How long a superseded key is kept after a rotation.
    #[serde(default = "default_key_overlap", with = "humantime_serde")]
    pub key_overlap: Duration,
    /// Rotate the write-back key automatically when it is this old (Entra
    /// rotates every 6 months). Off when absent.
    #[serde(default, with = "humantime_serde")]
    pub rotate_every: Option<Duration>,
    /// The forests this agent writes to, each with its own service account.
    #[serde(default)]
    pub forests: Vec<ForestConfig>,
    /// The on-prem switch: when false, every request is refused as
    /// WRITEBACK_DISABLED without touching a directory.
    #[serde(default = "yes")]
    pub writeback_enabled: bool,
    /// Where the event log (events.jsonl) goes. Defaults to `<state_dir>/events`.
    #[serde(default)]
    pub event_log_dir: Option<PathBuf>,
    /// The event log rotates when a file reaches this size.
    #[serde(default = "default_event_log_max_bytes")]
    pub event_log_max_bytes: u64,
    /// Copies of the event log for journald and syslog (`[events]`).
    #[serde(default)]
    pub events: EventsConfig,
    /// How often the connector space imports changes from the forests.
    #[serde(default = "default_import_interval", with = "humantime_serde")]
    pub import_interval: Duration,
    #[serde(default)]
    pub log_format: LogFormat,
    /// HTTP/2 keepalive PINGs to the broker go out this often; with
    /// keepalive_timeout it bounds how long a silently dead connection
    /// stays open (20 s + 20 s: found within a minute).
    #[serde(default = "default_keepalive", with = "humantime_serde")]
    pub keepalive_interval: Duration,
    #[serde(default = "default_keepalive", with = "humantime_serde")]
    pub keepalive_timeout: Duration,
    /// On SIGTERM, how long acknowledged requests may take to finish before
    /// the agent stops anyway.
    #[serde(default = "default_drain_grace", with = "humantime_serde")]
    pub drain_grace: Duration,
    /// HTTP CONNECT proxy to reach the broker through, for networks whose
    /// only way out is a forward proxy; TLS to the broker stays end to end.
    /// Without this table the agent takes `HTTPS_PROXY`/`ALL_PROXY` and
    /// `NO_PROXY` from its environment (`relay_client::proxy::route`).
    #[serde(default)]
    pub proxy: Option<relay_client::proxy::ProxyConfig>,
    /// Limits the agent enforces itself (`[limits]`).
    #[serde(default)]
    pub limits: AgentLimits,
    /// Traces over OTLP (crate::telemetry); off by default.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
}

/// `[telemetry]`: OpenTelemetry traces over OTLP/gRPC. Off unless
/// `otlp_endpoint` is set.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// The OTLP/gRPC collector, e.g. `http://127.0.0.1:4317`. Unset: no
    /// export and no exporter task.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// The `service.name` resource attribute; defaults to "writeback-agent".
    #[serde(default)]
    pub service_name: Option<String>,
    /// The share of new traces sampled, 0.0 to 1.0; a caller's traceparent
    /// decides for the traces it starts.
    #[serde(default = "full_sampling")]
    pub sample_ratio: f64,
}

fn full_sampling() -> f64 {
    1.0
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_endpoint: None,
            service_name: None,
            sample_ratio: full_sampling(),
        }
    }
}

impl TelemetryConfig {
    /// What serde cannot check: the endpoint's scheme and the ratio's range.
    pub fn problem(&self) -> Option<(&'static str, &'static str)> {
        if let Some(endpoint) = &self.otlp_endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Some((
                "telemetry.otlp_endpoint",
                "must be an http:// or https:// URL",
            ));
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Some(("telemetry.sample_ratio", "must be between 0.0 and 1.0"));
        }
        if self.service_name.as_deref() == Some("") {
            return Some(("telemetry.service_name", "must not be empty"));
        }
        None
    }
}

/// `[events]`: where copies of the event log go besides its file (which
/// `event_log_dir` and `event_log_max_bytes` configure and which is always
/// written).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// Send events to journald. Absent: on when the agent runs as a systemd
    /// service whose output goes to the journal (systemd sets
    /// `$JOURNAL_STREAM` then), off otherwise, so a test run or an admin
    /// command on a workstation does not fill its journal.
    #[serde(default)]
    pub journald: Option<bool>,
    /// journald's native socket.
    #[serde(default = "default_journald_socket")]
    pub journald_socket: PathBuf,
    /// `unix:/dev/log`, `udp:host:port` or `tcp:host:port`; off when absent.
    #[serde(default)]
    pub syslog: Option<crate::eventlog::syslog::SyslogTarget>,
    /// Default `authpriv`: the events name accounts.
    #[serde(default)]
    pub syslog_facility: crate::eventlog::syslog::Facility,
    /// syslog's APP-NAME and journald's SYSLOG_IDENTIFIER (`journalctl -t`).
    #[serde(default = "default_syslog_app_name")]
    pub syslog_app_name: String,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            journald: None,
            journald_socket: default_journald_socket(),
            syslog: None,
            syslog_facility: Default::default(),
            syslog_app_name: default_syslog_app_name(),
        }
    }
}

fn default_journald_socket() -> PathBuf {
    PathBuf::from("/run/systemd/journal/socket")
}

fn default_syslog_app_name() -> String {
    "writeback-agent".to_owned()
}

impl EventsConfig {
    /// The sinks in force, the journald default decided from this
    /// process's environment.
    pub fn sinks(&self) -> crate::eventlog::Sinks {
        let under_systemd = std::env::var_os("JOURNAL_STREAM").is_some_and(|v| !v.is_empty());
        crate::eventlog::Sinks {
            journald: self
                .journald
                .unwrap_or(under_systemd)
                .then(|| self.journald_socket.clone()),
            syslog: self.syslog.clone(),
            facility: self.syslog_facility,
            identifier: self.syslog_app_name.clone(),
        }
    }

    fn problem(&self) -> Option<(&'static str, &'static str)> {
        // RFC 5424's APP-NAME: 1-48 printable US-ASCII characters.
        let name = &self.syslog_app_name;
        if name.is_empty() || name.len() > 48 || !name.bytes().all(|b| b.is_ascii_graphic()) {
            return Some((
                "events.syslog_app_name",
                "must be 1-48 printable ASCII characters without spaces",
            ));
        }
        None
    }
}

/// Limits the agent enforces on the requests it applies.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentLimits {
    /// Password resets, changes and unlocks per account in any hour; 0 is
    /// unlimited. Every attempt that reaches the directory counts, refused
    /// ones too (so guessing through CHANGE_PASSWORD is throttled), except
    /// those the password policy refused; policy queries never count. Over
    /// the limit the agent answers RATE_LIMITED.
    #[serde(default = "default_resets_per_account_per_hour")]
    pub resets_per_account_per_hour: u32,
}

impl Default for AgentLimits {
    fn default() -> Self {
        AgentLimits {
            resets_per_account_per_hour: default_resets_per_account_per_hour(),
        }
    }
}

fn default_resets_per_account_per_hour() -> u32 {
    5
}

/// One forest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForestConfig {
    /// A name for the forest, used in logs, events and doctor's report.
    pub name: String,
    pub kind: ForestKind,
    /// For `embedded`: the forest file (see examples/forests/).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// For `ldap`: one domain controller, `ldaps://dc.example:636`, or
    /// `ldap://...` with StartTLS. Short for a one-element `urls`.
    #[serde(default)]
    pub url: Option<String>,
    /// For `ldap`: the domain's controllers, tried in this order (the one
    /// that answered last first) when one cannot be reached or declines.
    #[serde(default)]
    pub urls: Option<Vec<String>>,
    /// For `ldap`: the domain's DNS name; its DCs are also found through
    /// the `_ldap._tcp.dc._msdcs.<domain>` SRV records, asked before `urls`.
    #[serde(default)]
    pub dns_srv: Option<String>,
    /// With `dns_srv`: the name server to ask (`10.0.0.53:53`), e.g. a DC;
    /// the first of /etc/resolv.conf when absent.
    #[serde(default)]
    pub dns_server: Option<std::net::SocketAddr>,
    /// For `ldap`: the CA that signs the domain controllers' certificates.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// For `ldap`: the service account's DN.
    #[serde(default)]
    pub bind_dn: Option<String>,
    /// For `ldap`: a file (mode 0600) holding the service account's password.
    #[serde(default)]
    pub bind_password_file: Option<PathBuf>,
    /// For `ldap`, instead of `bind_password_file`: a keytab holding the
    /// service account's keys, for a Kerberos (GSSAPI) bind as `principal`.
    /// Needs a build with the `kerberos` feature.
    #[serde(default)]
    pub keytab_file: Option<PathBuf>,
    /// With `keytab_file`: the service account's principal, `svc@REALM`.
    #[serde(default)]
    pub principal: Option<String>,
    /// With `keytab_file`: the krb5.conf naming the realm's KDCs; the
    /// system's (/etc/krb5.conf) when absent.
    #[serde(default)]
    pub krb5_conf: Option<PathBuf>,
    /// For `ldap`: the domain's naming context; read from the rootDSE when absent.
    #[serde(default)]
    pub base_dn: Option<String>,
}

impl ForestConfig {
    /// What is wrong with how an `ldap` forest's service account binds.
    fn credentials_problem(&self) -> Option<&'static str> {
        if self.kind != ForestKind::Ldap {
            return None;
        }
        match (&self.bind_password_file, &self.keytab_file) {
            (Some(_), Some(_)) => Some("set bind_password_file or keytab_file, not both"),
            (None, None) => Some("an ldap forest needs bind_password_file or keytab_file"),
            (None, Some(_)) if self.principal.is_none() => {
                Some("keytab_file needs the principal it holds keys for")
            }
            (None, Some(_)) if !directory::ldap::KERBEROS_BUILT => Some(
                "keytab_file needs a writeback-agent built with Kerberos support (cargo feature kerberos)",
            ),
            (Some(_), None) if self.principal.is_some() || self.krb5_conf.is_some() => {
                Some("principal and krb5_conf go with keytab_file")
            }
            _ => None,
        }
    }

    /// The configured domain controllers, in order: `urls`, or `url` alone.
    pub fn domain_controllers(&self) -> Vec<String> {
        match (&self.urls, &self.url) {
            (Some(urls), _) => urls.clone(),
            (None, Some(url)) => vec![url.clone()],
            (None, None) => Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForestKind {
    /// The embedded directory with Active Directory's semantics.
    Embedded,
    /// Active Directory over LDAPS or StartTLS.
    Ldap,
}

fn yes() -> bool {
    true
}
fn default_keepalive() -> Duration {
    relay_client::connect::KEEPALIVE_INTERVAL
}
fn default_drain_grace() -> Duration {
    Duration::from_secs(30)
}

/// One broker address or several, tried in turn.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Brokers {
    One(String),
    Several(Vec<String>),
}

impl Brokers {
    /// Every address, in the order they are tried.
    pub fn all(&self) -> Vec<String> {
        match self {
            Brokers::One(url) => vec![url.clone()],
            Brokers::Several(urls) => urls.clone(),
        }
    }

    /// The address one-shot commands (init, status, doctor) use.
    pub fn first(&self) -> String {
        match self {
            Brokers::One(url) => url.clone(),
            Brokers::Several(urls) => urls.first().cloned().unwrap_or_default(),
        }
    }
}

impl std::fmt::Display for Brokers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.all().join(", "))
    }
}
fn default_event_log_max_bytes() -> u64 {
    10 * 1024 * 1024
}
fn default_import_interval() -> Duration {
    Duration::from_secs(300)
}

fn default_skew() -> Duration {
    Duration::from_secs(60)
}
fn default_max_lifetime() -> Duration {
    Duration::from_secs(600)
}
fn default_key_overlap() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

fn default_token_lifetime() -> Duration {
    Duration::from_secs(3600)
}
fn default_reconnect_min() -> Duration {
    Duration::from_millis(500)
}
fn default_reconnect_max() -> Duration {
    Duration::from_secs(30)
}

#[derive(Debug, thiserror::Error)]
pub enum AgentConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("invalid setting {setting}: {problem}")]
    Invalid {
        setting: &'static str,
        problem: &'static str,
    },
}

impl AgentConfig {
    pub fn from_file(path: &Path) -> Result<AgentConfig, AgentConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| AgentConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        AgentConfig::from_toml(&text)
    }

    pub fn from_toml(text: &str) -> Result<AgentConfig, AgentConfigError> {
        let config: AgentConfig = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), AgentConfigError> {
        let invalid = |setting, problem| Err(AgentConfigError::Invalid { setting, problem });
        if let Some((setting, problem)) = self.telemetry.problem() {
            return invalid(setting, problem);
        }
        if let Some((setting, problem)) = self.events.problem() {
            return invalid(setting, problem);
        }
        let brokers = self.broker.all();
        if brokers.is_empty() {
            return invalid("broker", "needs at least one address");
        }
        if brokers.iter().any(|b| !b.starts_with("https://")) {
            return invalid("broker", "must be https:// URLs");
        }
        if self.keepalive_interval < Duration::from_millis(100)
            || self.keepalive_timeout < Duration::from_millis(100)
        {
            return invalid(
                "keepalive_interval",
                "keepalive settings must be at least 100ms",
            );
        }
        if !proto::names::is_valid_tenant(&self.tenant) {
            return invalid("tenant", "must be 1-63 of [a-z0-9-]");
        }
        if let Some(id) = &self.agent_id
            && !proto::names::is_valid_agent_id(id)
        {
            return invalid("agent_id", "must be 1-64 of [A-Za-z0-9._-]");
        }
        if self.token_lifetime < Duration::from_secs(60) {
            return invalid("token_lifetime", "must be at least 1m");
        }
        for f in &self.forests {
            if f.kind == ForestKind::Embedded && f.path.is_none() {
                return invalid("forests", "an embedded forest needs a path");
            }
            if f.url.is_some() && f.urls.is_some() {
                return invalid("forests", "set url or urls, not both");
            }
            if f.kind == ForestKind::Ldap
                && f.domain_controllers().is_empty()
                && f.dns_srv.is_none()
            {
                return invalid("forests", "an ldap forest needs url, urls or dns_srv");
            }
            if f.dns_server.is_some() && f.dns_srv.is_none() {
                return invalid("forests", "dns_server goes with dns_srv");
            }
            if f.kind == ForestKind::Ldap && (f.ca_file.is_none() || f.bind_dn.is_none()) {
                return invalid("forests", "an ldap forest needs ca_file and bind_dn");
            }
            if let Some(problem) = f.credentials_problem() {
                return invalid("forests", problem);
            }
        }
        // One process, one Kerberos environment (crate::kerberos).
        let mut kerberos = self.forests.iter().filter(|f| f.keytab_file.is_some());
        if let Some(first) = kerberos.next()
            && kerberos
                .any(|f| f.keytab_file != first.keytab_file || f.krb5_conf != first.krb5_conf)
        {
            return invalid(
                "forests",
                "forests that bind with Kerberos must share one keytab_file and krb5_conf",
            );
        }
        let mut names: Vec<_> = self.forests.iter().map(|f| f.name.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return invalid("forests", "forest names must be unique");
        }
        if let Some(proxy) = &self.proxy
            && let Err(problem) = proxy.validate()
        {
            return invalid("proxy", problem);
        }
        if self.reconnect_min.is_zero() || self.reconnect_max < self.reconnect_min {
            return invalid(
                "reconnect_min",
                "must be positive and at most reconnect_max",
            );
        }
        Ok(())
    }

    /// Where the replay window lives.
    pub fn state_dir(&self) -> PathBuf {
        // Never the working directory: a service's is often `/`, a test's
        // is the source tree.
        self.state_dir.clone().unwrap_or_else(|| {
            self.key_file
                .as_deref()
                .unwrap_or(&self.listen_key_file)
                .parent()
                .map_or_else(|| PathBuf::from("."), Path::to_owned)
        })
    }

    /// Where the event log goes.
    pub fn event_log_dir(&self) -> PathBuf {
        self.event_log_dir
            .clone()
            .unwrap_or_else(|| self.state_dir().join("events"))
    }

    /// The setup password from the configured file or the environment.
    pub fn setup_password(&self) -> Option<zeroize::Zeroizing<String>> {
        if let Some(path) = &self.setup_password_file {
            let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).ok()?);
            return Some(zeroize::Zeroizing::new(
                text.trim_end_matches(['\n', '\r']).to_owned(),
            ));
        }
        std::env::var("WRITEBACK_AGENT_SETUP_PASSWORD")
            .ok()
            .map(zeroize::Zeroizing::new)
    }

    /// The configured agent id, or one derived from the host name.
    pub fn agent_id(&self) -> String {
        if let Some(id) = &self.agent_id {
            return id.clone();
        }
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        let id: String = host
            .trim()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            .take(64)
            .collect();
        if id.is_empty() {
            "agent".to_owned()
        } else {
            id
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses() {
        AgentConfig::from_toml(include_str!("../../examples/agent.toml")).unwrap();
    }

    #[test]
    fn telemetry_is_off_by_default_and_checked_when_on() {
        let base = "broker = \"https://b:443\"\ntenant = \"a\"\nlisten_key_file = \"k\"\n";
        let parse = |extra: &str| AgentConfig::from_toml(&format!("{base}{extra}"));
        assert_eq!(parse("").unwrap().telemetry, TelemetryConfig::default());
        let on =
            parse("[telemetry]\notlp_endpoint = \"http://127.0.0.1:4317\"\nsample_ratio = 0.25\n")
                .unwrap()
                .telemetry;
        assert_eq!(on.otlp_endpoint.as_deref(), Some("http://127.0.0.1:4317"));
        assert_eq!(on.sample_ratio, 0.25);
        assert!(parse("[telemetry]\notlp_endpoint = \"grpc://x\"\n").is_err());
        assert!(parse("[telemetry]\nsample_ratio = -0.1\n").is_err());
    }

    #[test]
    fn events_sinks_are_typed_and_default_to_the_file_only_outside_systemd() {
        use crate::eventlog::syslog::{Facility, SyslogTarget};
        let base = "broker = \"https://b:443\"\ntenant = \"a\"\nlisten_key_file = \"k\"\n";
        let parse = |extra: &str| AgentConfig::from_toml(&format!("{base}{extra}"));
        let default = parse("").unwrap().events;
        assert_eq!(default, EventsConfig::default());
        assert_eq!(default.syslog_facility, Facility::Authpriv);
        let on = parse(
            "[events]\njournald = true\njournald_socket = \"/tmp/j\"\n\
             syslog = \"udp:logs.example:514\"\nsyslog_facility = \"local3\"\n",
        )
        .unwrap()
        .events
        .sinks();
        assert_eq!(on.journald.as_deref(), Some(Path::new("/tmp/j")));
        assert_eq!(
            on.syslog,
            Some(SyslogTarget::Udp("logs.example:514".into()))
        );
        assert_eq!(
            (on.facility.code(), on.identifier.as_str()),
            (19, "writeback-agent")
        );
        let off = parse("[events]\njournald = false\n")
            .unwrap()
            .events
            .sinks();
        assert_eq!((off.journald, off.syslog), (None, None));
        let err = parse("[events]\nsyslog = \"logs.example:514\"\n").unwrap_err();
        assert!(err.to_string().contains("unix:, udp: or tcp:"), "{err}");
        assert!(parse("[events]\nsyslog_facility = \"kern\"\n").is_err());
        assert!(parse("[events]\nsyslog_app_name = \"two words\"\n").is_err());
        assert!(parse("[events]\nfile = \"x\"\n").is_err());
    }

    #[test]
    fn an_ldap_forest_takes_one_url_or_a_list_not_both() {
        let base = "broker = \"https://b:443\"\ntenant = \"a\"\nlisten_key_file = \"k\"\n\
                    [[forests]]\nname = \"f\"\nkind = \"ldap\"\nca_file = \"ca\"\n\
                    bind_dn = \"cn=x\"\nbind_password_file = \"p\"\n";
        let parse = |extra: &str| AgentConfig::from_toml(&format!("{base}{extra}"));
        let one = parse("url = \"ldaps://dc1:636\"\n").unwrap();
        assert_eq!(one.forests[0].domain_controllers(), ["ldaps://dc1:636"]);
        let two = parse("urls = [\"ldaps://dc1:636\", \"ldaps://dc2:636\"]\n").unwrap();
        assert_eq!(
            two.forests[0].domain_controllers(),
            ["ldaps://dc1:636", "ldaps://dc2:636"]
        );
        let both = parse("url = \"ldaps://dc1:636\"\nurls = [\"ldaps://dc2:636\"]\n").unwrap_err();
        assert!(both.to_string().contains("not both"), "{both}");
        let none = parse("urls = []\n").unwrap_err();
        assert!(none.to_string().contains("url, urls or dns_srv"), "{none}");
        let srv = parse("dns_srv = \"contoso.example\"\ndns_server = \"127.0.0.1:53\"\n").unwrap();
        assert_eq!(srv.forests[0].dns_srv.as_deref(), Some("contoso.example"));
        assert!(parse("url = \"ldaps://dc1:636\"\ndns_server = \"127.0.0.1:53\"\n").is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn plain_http_and_unknown_keys_are_refused() {
        let base = "tenant = \"a\"\nlisten_key_file = \"k\"\n";
        let err = AgentConfig::from_toml(&format!("{base}broker = \"http://x\"")).unwrap_err();
        assert!(err.to_string().contains("https"));
        let err = AgentConfig::from_toml(&format!("{base}broker = \"https://x\"\nverify = false"))
            .unwrap_err();
        assert!(err.to_string().contains("verify"));
    }

    #[test]
    fn the_agent_config_takes_a_proxy_table() {
        let base = "broker = \"https://b:443\"\ntenant = \"a\"\nlisten_key_file = \"k\"\n";
        let config = AgentConfig::from_toml(&format!(
            "{base}[proxy]\nurl = \"http://proxy.corp.example:3128\"\nusername = \"svc\"\npassword_file = \"/p\"\n"
        ))
        .unwrap();
        assert_eq!(config.proxy.unwrap().url, "http://proxy.corp.example:3128");
        let config = AgentConfig::from_toml(&format!(
            "{base}[proxy]\nurl = \"http://p:3128\"\nno_proxy = \"localhost, .corp.example\"\n"
        ))
        .unwrap();
        assert_eq!(
            config.proxy.unwrap().no_proxy.as_deref(),
            Some("localhost, .corp.example")
        );
        let err = AgentConfig::from_toml(&format!(
            "{base}[proxy]\nurl = \"https://proxy.corp.example:3128\"\n"
        ))
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("https:// proxies are not supported"),
            "{err}"
        );
        let err = AgentConfig::from_toml(&format!(
            "{base}[proxy]\nurl = \"http://p:1\"\npassword = \"x\"\n"
        ))
        .unwrap_err();
        assert!(err.to_string().contains("password"), "{err}");
    }
}

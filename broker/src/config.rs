//! Typed broker configuration, read from TOML. Unknown keys are errors, so a
//! misspelt setting is reported instead of silently ignored.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Default gRPC port: agents only need outbound 443.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:443";
pub const DEFAULT_OPERATOR_LISTEN: &str = "127.0.0.1:9464";
/// Linux's default `net.core.somaxconn`, which caps it.
pub const DEFAULT_LISTEN_BACKLOG: u32 = 4096;
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_DEADLINE: Duration = Duration::from_secs(300);
pub const DEFAULT_MAX_ENVELOPE_BYTES: usize = 64 * 1024;
/// Within the 20-30 s band that keeps idle-timeout middleboxes from silently
/// cutting sessions, and finds a dead peer within a minute (3 missed beats).
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(20);
pub const DEFAULT_HELLO_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// HTTP/2 PING interval + this timeout bound how long a connection that
/// silently stopped carrying packets stays open: 20 s + 20 s < 1 minute.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// An agent acknowledges a request as soon as it reads it, so a healthy
/// session answers in milliseconds; ten seconds of silence means it is dead.
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_OUTCOME_RETENTION: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_DRAIN_GRACE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Everything the broker needs to run.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// Address of the gRPC listener (agents and portals), TLS only.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Connections the kernel queues on the gRPC listener before the broker
    /// accepts them (`listen(2)` backlog; the kernel caps it at
    /// `net.core.somaxconn`). After a restart every agent dials at once.
    #[serde(default = "default_listen_backlog")]
    pub listen_backlog: u32,
    /// Address of the plain-HTTP operator endpoints (/healthz, /readyz, /metrics).
    #[serde(default = "default_operator_listen")]
    pub operator_listen: SocketAddr,
    /// Directory of the store (`broker.redb`) and the operator key (`operator.key`).
    pub data_dir: PathBuf,
    /// Single node: the storage key (32 random bytes, base64) that seals the
    /// tenant records in `broker.redb`. A relative path is read under
    /// `$CREDENTIALS_DIRECTORY` when that is set (systemd `LoadCredential=`).
    /// Unset, the broker uses `storage.key` in the data directory, created
    /// at first start: it works, but a copy of the data directory then
    /// holds the key beside what it seals. Cluster mode uses
    /// `[cluster] storage_key_file`.
    #[serde(default)]
    pub storage_key_file: Option<PathBuf>,
    /// PEM certificate chain the broker presents.
    pub tls_cert: PathBuf,
    /// PEM private key of that certificate.
    pub tls_key: PathBuf,
    /// Deadline applied to portal calls that carry none.
    #[serde(default = "default_deadline", with = "humantime_serde")]
    pub default_deadline: Duration,
    /// The longest deadline honoured; longer ones are cut to this.
    #[serde(default = "default_max_deadline", with = "humantime_serde")]
    pub max_deadline: Duration,
    /// The largest envelope relayed, in bytes.
    #[serde(default = "default_max_envelope_bytes")]
    pub max_envelope_bytes: usize,
    #[serde(default = "default_heartbeat_interval", with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// How long a new agent session may take to send its Hello.
    #[serde(default = "default_hello_timeout", with = "humantime_serde")]
    pub hello_timeout: Duration,
    /// Tokens whose expiry lies further ahead than this are refused, so a
    /// leaked token cannot serve as a long-lived key.
    #[serde(default = "default_max_token_lifetime", with = "humantime_serde")]
    pub max_token_lifetime: Duration,
    /// How long an HTTP/2 keepalive PING may go unanswered before the
    /// connection is closed (PINGs go out every heartbeat_interval).
    #[serde(default = "default_keepalive_timeout", with = "humantime_serde")]
    pub keepalive_timeout: Duration,
    /// How long a request sent to an agent may wait for its Ack before the
    /// session is declared dead and the request given to another agent.
    #[serde(default = "default_ack_timeout", with = "humantime_serde")]
    pub ack_timeout: Duration,
    /// How long each relayed request's outcome record (the agent's sealed
    /// reply or error, or that one is awaited) is kept for GetOutcome.
    #[serde(default = "default_outcome_retention", with = "humantime_serde")]
    pub outcome_retention: Duration,
    /// On SIGTERM, how long in-flight requests may take to finish.
    #[serde(default = "default_drain_grace", with = "humantime_serde")]
    pub drain_grace: Duration,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub log_format: LogFormat,
    /// Cluster mode: several nodes on a NATS cluster (see docs/CLUSTER.md).
    /// Absent: one node with its embedded store.
    #[serde(default)]
    pub cluster: Option<ClusterConfig>,
    /// The audit trail (crate::audit).
    #[serde(default)]
    pub audit: AuditConfig,
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
    /// The `service.name` resource attribute; defaults to "relay-broker".
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

/// `[audit]`: where the audit trail goes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The JSON-lines file, opened append-only (mode 0600) and reopened on
    /// SIGHUP. Unset: `audit.jsonl` in the data directory; `""`: no trail.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// `false`: no trail, whatever `file` says.
    #[serde(default = "enabled")]
    pub enabled: bool,
}

fn enabled() -> bool {
    true
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            file: None,
            enabled: true,
        }
    }
}

/// How this node joins the others: through NATS, which carries requests for
/// agents held by another node and, in JetStream key-value buckets, the
/// tenants and the late outcomes every node must see.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's name, unique in the cluster: logs, metrics, the status
    /// page and the NATS connection name carry it.
    pub node_name: String,
    /// NATS servers, e.g. `nats://10.0.0.5:4222` or `tls://nats-1:4222`.
    /// The client also learns the rest of the NATS cluster from them.
    pub nats_urls: Vec<String>,
    /// NATS user; its password is read from `nats_password_file`.
    #[serde(default)]
    pub nats_user: Option<String>,
    #[serde(default)]
    pub nats_password_file: Option<PathBuf>,
    /// PEM CA bundle that signs the NATS servers' certificates; set, the
    /// connection must be TLS.
    #[serde(default)]
    pub nats_ca_file: Option<PathBuf>,
    /// A client certificate and key for NATS servers that verify clients.
    #[serde(default)]
    pub nats_client_cert: Option<PathBuf>,
    #[serde(default)]
    pub nats_client_key: Option<PathBuf>,
    /// The key (32 random bytes, base64, like the other key files) that
    /// encrypts tenant records in the key-value bucket, so that NATS and its
    /// disks never hold a tenant's keys in the clear. The same on every node.
    pub storage_key_file: PathBuf,
    /// Copies JetStream keeps of each bucket: 3 survives one NATS node.
    #[serde(default = "default_kv_replicas")]
    pub kv_replicas: usize,
    /// First token of every subject and bucket name, so that several relay
    /// clusters can share one NATS account.
    #[serde(default = "default_subject_prefix")]
    pub subject_prefix: String,
    /// How often a node working on a request forwarded to it tells the
    /// forwarding node it is still alive; three missed beats and the
    /// forwarding node gives the request a definite OUTCOME_UNKNOWN instead
    /// of waiting out its deadline.
    #[serde(default = "default_forward_heartbeat", with = "humantime_serde")]
    pub forward_heartbeat: Duration,
    /// How long this node keeps acting on its copy of the tenants (write-back
    /// enabled, agents not revoked, keys) after it last confirmed with a
    /// JetStream quorum that the copy is current. Past it, the node refuses
    /// the tenants' requests (STATE_UNCONFIRMED) and is not ready until it
    /// has confirmed and caught up again: a revoke or a disabled write-back
    /// is enforced on every node within about this long, split or not.
    #[serde(default = "default_state_lease", with = "humantime_serde")]
    pub state_lease: Duration,
    /// How long connecting to NATS may take at start-up.
    #[serde(default = "default_nats_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
}

fn default_kv_replicas() -> usize {
    3
}
fn default_subject_prefix() -> String {
    "relay".into()
}
fn default_forward_heartbeat() -> Duration {
    Duration::from_secs(1)
}
/// How long a node acts on its copy of the tenants without a confirmation
/// (`[cluster] state_lease`; crate::lease).
pub const DEFAULT_STATE_LEASE: Duration = Duration::from_secs(10);
fn default_state_lease() -> Duration {
    DEFAULT_STATE_LEASE
}
/// A lease shorter than this would lapse between two checks of a healthy
/// cluster (every 200 ms, each waiting up to 500 ms) at the first slow one.
const MIN_STATE_LEASE: Duration = Duration::from_secs(2);
fn default_nats_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

impl ClusterConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |setting, problem: &str| {
            Err(ConfigError::Invalid {
                setting,
                problem: problem.to_owned(),
            })
        };
        let is_token = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !is_token(&self.node_name) {
            return invalid("cluster.node_name", "use 1-64 of [A-Za-z0-9_-]");
        }
        if !is_token(&self.subject_prefix) {
            return invalid("cluster.subject_prefix", "use 1-64 of [A-Za-z0-9_-]");
        }
        if self.nats_urls.is_empty() {
            return invalid("cluster.nats_urls", "name at least one NATS server");
        }
        if self.nats_user.is_some() != self.nats_password_file.is_some() {
            return invalid(
                "cluster.nats_user",
                "set nats_user and nats_password_file together",
            );
        }
        if self.nats_client_cert.is_some() != self.nats_client_key.is_some() {
            return invalid(
                "cluster.nats_client_cert",
                "set nats_client_cert and nats_client_key together",
            );
        }
        if self.kv_replicas == 0 || self.kv_replicas > 5 {
            return invalid("cluster.kv_replicas", "must be between 1 and 5");
        }
        if self.forward_heartbeat < Duration::from_millis(50) {
            return invalid("cluster.forward_heartbeat", "must be at least 50ms");
        }
        if self.state_lease < MIN_STATE_LEASE {
            return invalid("cluster.state_lease", "must be at least 2s");
        }
        if self.connect_timeout.is_zero() {
            return invalid("cluster.connect_timeout", "must be positive");
        }
        Ok(())
    }
}

/// Protection against overload and abuse. Each limit, when hit, is answered
/// with its own reason and touches no other tenant.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Requests (Submit) per tenant per minute, with bursts up to this many;
    /// 0 = unlimited. Password resets are rare; the default leaves room for a
    /// large tenant's morning while stopping a runaway portal.
    pub tenant_requests_per_minute: u32,
    /// Requests outstanding on one agent session at once.
    pub max_in_flight_per_agent: u32,
    /// Agent sessions one tenant may hold on this node.
    pub sessions_per_tenant: u32,
    /// Agent sessions of one tenant from one source IP address: counted
    /// per tenant, so that other tenants' agents behind the same address (a
    /// shared egress NAT) cannot use up a tenant's allowance.
    pub sessions_per_source: u32,
    /// Agent sessions on one connection (one agent = one connection).
    pub sessions_per_connection: u32,
    /// HTTP/2 streams open at once on one connection.
    pub max_concurrent_streams: u32,
    /// How long a new connection may take to complete its TLS handshake,
    /// counted from the moment it is accepted (waiting for a handshake slot
    /// included).
    #[serde(with = "humantime_serde")]
    pub tls_handshake_timeout: Duration,
    /// TLS handshakes past their ClientHello at once; beyond, connections
    /// wait their turn, oldest first (see `listener`). Keeps a reconnect
    /// storm flowing: the handshakes under way finish promptly instead of
    /// all of them crawling together. A handshake that has waited a second
    /// for the client's answer gives up its slot (and goes on).
    pub max_concurrent_handshakes: u32,
    /// Operator port: how long a request's headers may take to arrive,
    /// counted from the connection's opening or the previous answer (so
    /// also how long an idle connection stays open).
    #[serde(with = "humantime_serde")]
    pub operator_header_timeout: Duration,
    /// Operator port: how long a request's body may take to arrive.
    #[serde(with = "humantime_serde")]
    pub operator_body_timeout: Duration,
    /// Operator port: connections open at once. Far below the process's
    /// descriptor limit, so the operator port cannot take the descriptors
    /// agents need; at the cap the oldest idle connection is closed.
    pub operator_max_connections: u32,
    /// Operator port: connections open at once from one IP address.
    pub operator_connections_per_source: u32,
    /// After the TLS handshake, how long a connection may take to send the
    /// HTTP/2 preface and its first request. hyper has no such deadline; a
    /// connection that never speaks would hold its descriptor forever.
    #[serde(with = "humantime_serde")]
    pub first_request_timeout: Duration,
    /// How long a connection that has never carried an authenticated call
    /// (a valid token in `authorization`, or an agent session past its
    /// Welcome) may stay open with no call in progress.
    #[serde(with = "humantime_serde")]
    pub unauthenticated_idle_timeout: Duration,
    /// How long an authenticated connection may stay open with no call in
    /// progress. Clients reconnect on their next call; an agent's session
    /// is a call, so an agent's connection is never idle.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// How long the whole request message of a unary call may take to
    /// arrive, counted from its headers (agent sessions have
    /// `hello_timeout` and heartbeats instead).
    #[serde(with = "humantime_serde")]
    pub request_receive_timeout: Duration,
    /// Connections from one source IP address that have not yet carried an
    /// authenticated call (TLS handshakes included); beyond, new ones are
    /// closed at once. The rest of a reconnect storm from behind one NAT
    /// gets in as the first ones authenticate.
    pub unauthenticated_connections_per_source: u32,
    /// Descriptors kept back from gRPC connections for the store, NATS and
    /// log files. The gRPC port may hold the process limit (raised to the
    /// hard limit at start) minus this many and minus
    /// `operator_max_connections`; at that budget a new connection evicts the oldest one
    /// not yet authenticated, or waits in the kernel's queue.
    pub reserved_descriptors: u32,
    /// Bytes of outcome records one tenant may keep in the store. Past it, a
    /// new record evicts the tenant's records that expire first, as the
    /// 10,000-record bound does: an agent posting big replies cannot grow
    /// the store file beyond it. Sealed replies are a few hundred bytes, so
    /// a tenant's 10,000 ordinary records fit many times over.
    pub max_outcome_bytes_per_tenant: u64,
    /// Late answers of one tenant queued for the store or being written at
    /// once. Beyond, an answer is not taken (and not confirmed: the agent
    /// posts it again at its next heartbeat), so one tenant's agents cannot
    /// fill the store's queue for everyone. As many as an agent can hold.
    pub max_pending_outcome_writes_per_tenant: u32,
    /// Replies for requests a session was never given (or that nobody
    /// awaits any more) one session may post within a minute; past it the
    /// session is closed with Goodbye `UNSOLICITED_REPLIES`. A correct agent
    /// posts none; a few can follow a broker restart that lost its records.
    pub unsolicited_replies_per_minute: u32,
    /// Tenants that get a `tenant` label of their own in /metrics, in the
    /// order they are first seen; the rest are summed under
    /// `tenant="_other"`. Each label is a series in every Prometheus that
    /// scrapes the broker, so their number is bounded like any other
    /// resource a tenant can make the broker spend. 0 puts every tenant
    /// under `_other`.
    pub metrics_tenant_labels: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            tenant_requests_per_minute: 600,
            max_in_flight_per_agent: 64,
            sessions_per_tenant: 64,
            sessions_per_source: 1024,
            sessions_per_connection: 1,
            max_concurrent_streams: 256,
            tls_handshake_timeout: Duration::from_secs(10),
            max_concurrent_handshakes: 1024,
            operator_header_timeout: Duration::from_secs(5),
            operator_body_timeout: Duration::from_secs(10),
            operator_max_connections: 128,
            operator_connections_per_source: 32,
            first_request_timeout: Duration::from_secs(10),
            unauthenticated_idle_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            request_receive_timeout: Duration::from_secs(5),
            unauthenticated_connections_per_source: 128,
            reserved_descriptors: 64,
            max_outcome_bytes_per_tenant: 64 << 20,
            max_pending_outcome_writes_per_tenant: 64,
            unsolicited_replies_per_minute: 16,
            metrics_tenant_labels: 1000,
        }
    }
}

fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN.parse().expect("valid constant")
}
fn default_listen_backlog() -> u32 {
    DEFAULT_LISTEN_BACKLOG
}
fn default_operator_listen() -> SocketAddr {
    DEFAULT_OPERATOR_LISTEN.parse().expect("valid constant")
}
fn default_deadline() -> Duration {
    DEFAULT_DEADLINE
}
fn default_max_deadline() -> Duration {
    DEFAULT_MAX_DEADLINE
}
fn default_max_envelope_bytes() -> usize {
    DEFAULT_MAX_ENVELOPE_BYTES
}
fn default_heartbeat_interval() -> Duration {
    DEFAULT_HEARTBEAT_INTERVAL
}
fn default_hello_timeout() -> Duration {
    DEFAULT_HELLO_TIMEOUT
}
fn default_max_token_lifetime() -> Duration {
    DEFAULT_MAX_TOKEN_LIFETIME
}
fn default_keepalive_timeout() -> Duration {
    DEFAULT_KEEPALIVE_TIMEOUT
}
fn default_ack_timeout() -> Duration {
    DEFAULT_ACK_TIMEOUT
}
fn default_outcome_retention() -> Duration {
    DEFAULT_OUTCOME_RETENTION
}
fn default_drain_grace() -> Duration {
    DEFAULT_DRAIN_GRACE
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config file {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("invalid setting {setting}: {problem}")]
    Invalid {
        setting: &'static str,
        problem: String,
    },
}

impl BrokerConfig {
    /// Reads and validates a TOML file.
    pub fn from_file(path: &Path) -> Result<BrokerConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { source, .. } => ConfigError::Parse {
                path: path.to_owned(),
                source,
            },
            other => other,
        })
    }

    pub fn from_toml(text: &str) -> Result<BrokerConfig, ConfigError> {
        let config: BrokerConfig = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: PathBuf::new(),
            source,
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the relations between settings that serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |setting, problem: &str| {
            Err(ConfigError::Invalid {
                setting,
                problem: problem.to_owned(),
            })
        };
        if let Some((setting, problem)) = self.telemetry.problem() {
            return invalid(setting, problem);
        }
        if self.listen_backlog == 0 {
            return invalid("listen_backlog", "must be at least 1");
        }
        if self.default_deadline.is_zero() || self.default_deadline > self.max_deadline {
            return invalid(
                "default_deadline",
                "must be positive and at most max_deadline",
            );
        }
        if self.max_envelope_bytes == 0 || self.max_envelope_bytes > 16 * 1024 * 1024 {
            return invalid("max_envelope_bytes", "must be between 1 byte and 16 MiB");
        }
        if self.heartbeat_interval < Duration::from_millis(100) {
            return invalid("heartbeat_interval", "must be at least 100ms");
        }
        if self.hello_timeout.is_zero() {
            return invalid("hello_timeout", "must be positive");
        }
        if self.max_token_lifetime < Duration::from_secs(60) {
            return invalid("max_token_lifetime", "must be at least 1m");
        }
        if self.keepalive_timeout < Duration::from_millis(100) {
            return invalid("keepalive_timeout", "must be at least 100ms");
        }
        if self.ack_timeout < Duration::from_millis(100) {
            return invalid("ack_timeout", "must be at least 100ms");
        }
        let l = &self.limits;
        if l.max_in_flight_per_agent == 0 {
            return invalid("limits.max_in_flight_per_agent", "must be at least 1");
        }
        if l.sessions_per_tenant == 0
            || l.sessions_per_source == 0
            || l.sessions_per_connection == 0
        {
            return invalid("limits.sessions_per_*", "must be at least 1");
        }
        if l.max_concurrent_streams < 2 {
            return invalid("limits.max_concurrent_streams", "must be at least 2");
        }
        if l.tls_handshake_timeout.is_zero() {
            return invalid("limits.tls_handshake_timeout", "must be positive");
        }
        if l.max_concurrent_handshakes == 0 {
            return invalid("limits.max_concurrent_handshakes", "must be at least 1");
        }
        if l.operator_header_timeout.is_zero() || l.operator_body_timeout.is_zero() {
            return invalid("limits.operator_*_timeout", "must be positive");
        }
        if l.operator_max_connections == 0
            || l.operator_connections_per_source == 0
            || l.operator_connections_per_source > l.operator_max_connections
        {
            return invalid(
                "limits.operator_connections_per_source",
                "must be at least 1 and at most operator_max_connections",
            );
        }
        for (setting, value) in [
            ("limits.first_request_timeout", l.first_request_timeout),
            (
                "limits.unauthenticated_idle_timeout",
                l.unauthenticated_idle_timeout,
            ),
            ("limits.idle_timeout", l.idle_timeout),
            ("limits.request_receive_timeout", l.request_receive_timeout),
        ] {
            if value < Duration::from_millis(100) {
                return invalid(setting, "must be at least 100ms");
            }
        }
        if l.unauthenticated_connections_per_source == 0 {
            return invalid(
                "limits.unauthenticated_connections_per_source",
                "must be at least 1",
            );
        }
        // Below one full envelope no late answer could ever be kept.
        if l.max_outcome_bytes_per_tenant < self.max_envelope_bytes as u64 {
            return invalid(
                "limits.max_outcome_bytes_per_tenant",
                "must be at least max_envelope_bytes",
            );
        }
        if l.max_pending_outcome_writes_per_tenant == 0 {
            return invalid(
                "limits.max_pending_outcome_writes_per_tenant",
                "must be at least 1",
            );
        }
        if let Some(cluster) = &self.cluster {
            // Two settings for one key would let the nodes of a cluster
            // read different files without a word: one place each mode.
            if self.storage_key_file.is_some() {
                return invalid(
                    "storage_key_file",
                    "is the single node's; a cluster node reads [cluster] storage_key_file",
                );
            }
            cluster.validate()?;
        }
        Ok(())
    }

    pub fn store_path(&self) -> PathBuf {
        self.data_dir.join("broker.redb")
    }

    /// The audit file, or `None` when the trail is off.
    pub fn audit_path(&self) -> Option<PathBuf> {
        match &self.audit.file {
            _ if !self.audit.enabled => None,
            Some(path) if path.as_os_str().is_empty() => None,
            Some(path) => Some(path.clone()),
            None => Some(self.data_dir.join("audit.jsonl")),
        }
    }

    pub fn operator_key_path(&self) -> PathBuf {
        self.data_dir.join("operator.key")
    }

    /// The single node's storage key file, and whether it was configured
    /// (rather than the default in the data directory).
    pub fn storage_key_path(&self) -> (PathBuf, bool) {
        match &self.storage_key_file {
            Some(path) => (
                under_credentials(path, std::env::var_os("CREDENTIALS_DIRECTORY")),
                true,
            ),
            None => (self.data_dir.join("storage.key"), false),
        }
    }
}

/// `path` as systemd hands credentials over: a relative path names a file
/// of `$CREDENTIALS_DIRECTORY` when it is set.
fn under_credentials(path: &Path, credentials: Option<std::ffi::OsString>) -> PathBuf {
    match credentials {
        Some(dir) if path.is_relative() && !dir.is_empty() => Path::new(&dir).join(path),
        _ => path.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telemetry_is_off_by_default_and_checked_when_on() {
        let base = "data_dir = \"/d\"\ntls_cert = \"c\"\ntls_key = \"k\"\n";
        let parse = |extra: &str| BrokerConfig::from_toml(&format!("{base}{extra}"));
        let off = parse("").unwrap().telemetry;
        assert_eq!(off.otlp_endpoint, None);
        assert_eq!(off.sample_ratio, 1.0);
        let on = parse(
            "[telemetry]\notlp_endpoint = \"http://127.0.0.1:4317\"\nservice_name = \"b1\"\n",
        )
        .unwrap()
        .telemetry;
        assert_eq!(on.otlp_endpoint.as_deref(), Some("http://127.0.0.1:4317"));
        assert_eq!(on.service_name.as_deref(), Some("b1"));
        for bad in [
            "otlp_endpoint = \"127.0.0.1:4317\"",
            "sample_ratio = 1.5",
            "service_name = \"\"",
            "otlp_headers = \"x\"",
        ] {
            assert!(parse(&format!("[telemetry]\n{bad}\n")).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_audit_file_defaults_to_the_data_dir_and_can_be_turned_off() {
        let base = "data_dir = \"/d\"\ntls_cert = \"c\"\ntls_key = \"k\"\n";
        let path = |extra: &str| {
            BrokerConfig::from_toml(&format!("{base}{extra}"))
                .unwrap()
                .audit_path()
        };
        assert_eq!(path(""), Some(PathBuf::from("/d/audit.jsonl")));
        assert_eq!(
            path("[audit]\nfile = \"/var/log/a.jsonl\"\n"),
            Some(PathBuf::from("/var/log/a.jsonl"))
        );
        assert_eq!(path("[audit]\nfile = \"\"\n"), None);
        assert_eq!(path("[audit]\nenabled = false\n"), None);
    }

    #[test]
    fn the_storage_key_defaults_to_the_data_dir_and_follows_credentials() {
        let base = "data_dir = \"/d\"\ntls_cert = \"c\"\ntls_key = \"k\"\n";
        let config = BrokerConfig::from_toml(base).unwrap();
        assert_eq!(
            config.storage_key_path(),
            (PathBuf::from("/d/storage.key"), false)
        );
        let config =
            BrokerConfig::from_toml(&format!("{base}storage_key_file = \"s.key\"\n")).unwrap();
        assert!(config.storage_key_path().1);
        let cluster = format!(
            "{base}storage_key_file = \"s.key\"\n[cluster]\nnode_name = \"a\"\n\
             nats_urls = [\"nats://127.0.0.1:4222\"]\nstorage_key_file = \"s.key\"\n"
        );
        let err = BrokerConfig::from_toml(&cluster).unwrap_err().to_string();
        assert!(err.contains("[cluster] storage_key_file"), "{err}");
        let creds = Some(std::ffi::OsString::from("/run/credentials/relay"));
        assert_eq!(
            under_credentials(Path::new("s.key"), creds.clone()),
            PathBuf::from("/run/credentials/relay/s.key")
        );
        assert_eq!(
            under_credentials(Path::new("/etc/s.key"), creds),
            PathBuf::from("/etc/s.key")
        );
        assert_eq!(
            under_credentials(Path::new("s.key"), None),
            PathBuf::from("s.key")
        );
    }

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = BrokerConfig::from_toml(
            r#"data_dir = "/var/lib/relay"
tls_cert = "c.pem"
tls_key = "k.pem""#,
        )
        .unwrap();
        assert_eq!(c.listen.port(), 443);
        assert_eq!(c.default_deadline, Duration::from_secs(30));
        assert_eq!(c.max_envelope_bytes, 65536);
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.listen_backlog, 4096);
        assert_eq!(c.limits.max_concurrent_handshakes, 1024);
        assert_eq!(c.limits.operator_header_timeout, Duration::from_secs(5));
        assert_eq!(c.limits.operator_max_connections, 128);
    }

    #[test]
    fn unknown_keys_and_bad_relations_are_refused() {
        let base = "data_dir = \"d\"\ntls_cert = \"c\"\ntls_key = \"k\"\n";
        let err = BrokerConfig::from_toml(&format!("{base}listn = \"0.0.0.0:1\"")).unwrap_err();
        assert!(
            format!("{:?}", err).contains("listn"),
            "error names the key: {err:?}"
        );
        let err =
            BrokerConfig::from_toml(&format!("{base}default_deadline = \"10m\"")).unwrap_err();
        assert!(err.to_string().contains("default_deadline"));
    }

    #[test]
    fn cluster_settings_are_checked() {
        let base = "data_dir = \"d\"\ntls_cert = \"c\"\ntls_key = \"k\"\n";
        let ok = format!(
            "{base}[cluster]\nnode_name = \"a\"\nnats_urls = [\"nats://127.0.0.1:4222\"]\nstorage_key_file = \"s.key\"\n"
        );
        let c = BrokerConfig::from_toml(&ok).unwrap().cluster.unwrap();
        assert_eq!(c.kv_replicas, 3);
        assert_eq!(c.subject_prefix, "relay");
        assert_eq!(c.forward_heartbeat, Duration::from_secs(1));
        assert_eq!(c.state_lease, Duration::from_secs(10));
        for (change, setting) in [
            ("node_name = \"a.b\"", "cluster.node_name"),
            ("nats_urls = []", "cluster.nats_urls"),
            ("nats_user = \"relay\"", "cluster.nats_user"),
            ("kv_replicas = 0", "cluster.kv_replicas"),
            ("subject_prefix = \"a b\"", "cluster.subject_prefix"),
            ("forward_heartbeat = \"1ms\"", "cluster.forward_heartbeat"),
            ("state_lease = \"1s\"", "cluster.state_lease"),
        ] {
            let key = change.split(' ').next().unwrap();
            let text: String = ok
                .lines()
                .filter(|l| !l.starts_with(&format!("{key} ")))
                .chain([change])
                .map(|l| format!("{l}\n"))
                .collect();
            let err = BrokerConfig::from_toml(&text).unwrap_err();
            assert!(err.to_string().contains(setting), "{change}: {err}");
        }
        let err =
            BrokerConfig::from_toml(&format!("{base}[cluster]\nnode_name = \"a\"\n")).unwrap_err();
        assert!(format!("{err:?}").contains("nats_urls"), "{err:?}");
    }

    #[test]
    fn the_example_config_parses() {
        let text = include_str!("../../examples/broker.toml");
        BrokerConfig::from_toml(text).unwrap();
    }

    #[test]
    fn the_example_cluster_configs_parse() {
        for (name, text) in [
            ("a", include_str!("../../examples/cluster/node-a.toml")),
            ("b", include_str!("../../examples/cluster/node-b.toml")),
            ("c", include_str!("../../examples/cluster/node-c.toml")),
        ] {
            let config =
                BrokerConfig::from_toml(text).unwrap_or_else(|e| panic!("node {name}: {e}"));
            assert_eq!(config.cluster.expect("a [cluster] table").node_name, name);
        }
    }
}

//! `relayctl`: operator and portal command line for the relay broker.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use proto::pb;
use relay_client::admin::AdminClient;
use relay_client::connect::BrokerEndpoint;
use relay_client::credential::{Credential, read_key_file};
use relay_client::outcome::outcome_name;
use relay_client::portal_client::PortalClient;
use sas::{KeySlot, Right};

/// Operator and portal command line for the relay broker.
///
/// Credentials are key files; the keys never leave this process, only
/// short-lived tokens signed with them. Keys that the broker returns
/// (tenant creation, rotation) are written to files with mode 0600, never
/// printed.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Broker address, https://host:port.
    #[arg(long, env = "RELAYCTL_BROKER", default_value = "https://localhost:443")]
    broker: String,
    /// PEM CA bundle that signs the broker's certificate (system roots otherwise).
    #[arg(long, env = "RELAYCTL_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// The operator key file (the broker's data_dir/operator.key).
    #[arg(long, env = "RELAYCTL_OPERATOR_KEY_FILE")]
    operator_key_file: Option<PathBuf>,
    /// A tenant key file, used with --right for tenant-scoped commands.
    #[arg(long, env = "RELAYCTL_KEY_FILE", conflicts_with = "operator_key_file")]
    key_file: Option<PathBuf>,
    /// The right of --key-file.
    #[arg(long, env = "RELAYCTL_RIGHT", value_enum, default_value = "manage")]
    right: RightArg,
    /// Print machine-readable JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Deadline of the call.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum RightArg {
    Listen,
    Send,
    Manage,
}

impl From<RightArg> for Right {
    fn from(r: RightArg) -> Right {
        match r {
            RightArg::Listen => Right::Listen,
            RightArg::Send => Right::Send,
            RightArg::Manage => Right::Manage,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum SlotArg {
    Primary,
    Secondary,
}

impl From<SlotArg> for KeySlot {
    fn from(s: SlotArg) -> KeySlot {
        match s {
            SlotArg::Primary => KeySlot::Primary,
            SlotArg::Secondary => KeySlot::Secondary,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Tenant administration (operator key).
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Connector, write-back enabled, modified timestamp, agents online.
    Config { tenant: String },
    /// Enable or disable password write-back for a tenant.
    Writeback {
        tenant: String,
        #[arg(value_enum)]
        state: OnOff,
    },
    /// Agent sessions of a tenant.
    #[command(subcommand)]
    Agents(AgentsCommand),
    /// Key rotation.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Round trip to an agent of the tenant and back: the first test to run.
    Ping { tenant: String },
    /// End-to-end sealed requests, as a portal makes them.
    #[command(subcommand)]
    Portal(PortalCommand),
    /// Prints an operator token (needs --operator-key-file), to paste into
    /// the broker's status page at http://<operator_listen>/status/login or
    /// send as `Authorization`. It is a bearer credential until it expires.
    OperatorToken {
        /// How long the token is valid; the broker refuses tokens that live
        /// longer than its max_token_lifetime (24 h by default).
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        lifetime: Duration,
    },
}

#[derive(Subcommand)]
enum PortalCommand {
    /// Makes the portal's key pair (private key to --key-out, mode 0600)
    /// and the enrollment bundle to hand to the on-prem administrator.
    Keygen {
        tenant: String,
        #[arg(long)]
        key_out: PathBuf,
        #[arg(long)]
        bundle_out: PathBuf,
    },
    /// Lists the agent keys the broker offers, and which this portal trusts.
    Keys {
        tenant: String,
        #[command(flatten)]
        trust: TrustArgs,
    },
    /// Seals an administrative reset and relays it; prints the agent's outcome.
    Reset {
        tenant: String,
        #[command(flatten)]
        trust: TrustArgs,
        /// The account's userPrincipalName.
        #[arg(long)]
        upn: String,
        /// File holding the new password (never a command-line argument).
        #[arg(long)]
        password_file: PathBuf,
        /// Also clear the account's lockout.
        #[arg(long)]
        unlock: bool,
        /// Require a change at next logon.
        #[arg(long)]
        must_change: bool,
    },
    /// Seals a user change (current password verified) and relays it.
    Change {
        tenant: String,
        #[command(flatten)]
        trust: TrustArgs,
        #[arg(long)]
        upn: String,
        /// File holding the current password.
        #[arg(long)]
        current_password_file: PathBuf,
        /// File holding the new password.
        #[arg(long)]
        password_file: PathBuf,
    },
    /// Asks for the password policy that applies to the account.
    Policy {
        tenant: String,
        #[command(flatten)]
        trust: TrustArgs,
        #[arg(long)]
        upn: String,
    },
    /// Seals an unlock request and relays it.
    Unlock {
        tenant: String,
        #[command(flatten)]
        trust: TrustArgs,
        #[arg(long)]
        upn: String,
    },
}

#[derive(clap::Args, Clone)]
struct TrustArgs {
    /// The portal's private key file (from `portal keygen`).
    #[arg(long)]
    portal_key: PathBuf,
    /// Agent key fingerprints confirmed with the on-prem administrator.
    #[arg(long = "pin")]
    pins: Vec<String>,
}

impl TrustArgs {
    fn load(&self) -> anyhow::Result<(envelope::KeyPair, Vec<envelope::Fingerprint>)> {
        let text = zeroize::Zeroizing::new(
            std::fs::read_to_string(&self.portal_key)
                .with_context(|| format!("cannot read {}", self.portal_key.display()))?,
        );
        let bytes = zeroize::Zeroizing::new(
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, text.trim())
                .context("the portal key file is not base64")?,
        );
        let pair = envelope::KeyPair::from_private_bytes(&bytes)?;
        let pins = self
            .pins
            .iter()
            .map(|p| envelope::Fingerprint::parse(p))
            .collect::<Result<_, _>>()?;
        Ok((pair, pins))
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum OnOff {
    Enable,
    Disable,
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Creates a tenant and writes its six keys into --keys-dir
    /// (listen.primary.key, send.secondary.key, ...), mode 0600.
    Create {
        tenant: String,
        #[arg(long)]
        keys_dir: PathBuf,
        #[arg(long)]
        connector_name: Option<String>,
        /// Create with write-back disabled.
        #[arg(long)]
        disabled: bool,
    },
    Delete {
        tenant: String,
    },
    List,
}

#[derive(Subcommand)]
enum AgentsCommand {
    List {
        tenant: String,
    },
    /// Closes the agent's session and refuses its id until restored.
    Revoke {
        tenant: String,
        agent_id: String,
    },
    Restore {
        tenant: String,
        agent_id: String,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Replaces one key and writes the new one to --out (mode 0600). Sessions
    /// signed with the old key are closed; move clients to the other slot first.
    Rotate {
        tenant: String,
        #[arg(long, value_enum)]
        right: RightArg,
        #[arg(long, value_enum)]
        slot: SlotArg,
        #[arg(long)]
        out: PathBuf,
    },
}

impl Cli {
    fn endpoint(&self) -> BrokerEndpoint {
        BrokerEndpoint::new(self.broker.clone(), self.ca_file.as_deref())
    }

    /// The credential for a call on `tenant` (or on no tenant).
    fn credential(&self, tenant: Option<&str>) -> anyhow::Result<Credential> {
        if let Some(path) = &self.operator_key_file {
            return Ok(Credential::operator(read_key_file(path)?));
        }
        match (&self.key_file, tenant) {
            (Some(path), Some(tenant)) => {
                Ok(Credential::from_key_file(tenant, self.right.into(), path)?)
            }
            (Some(_), None) => bail!("this command needs --operator-key-file"),
            (None, _) => bail!("pass --operator-key-file or --key-file (with --right)"),
        }
    }
}

fn write_secret(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")?;
    Ok(())
}

fn format_ms(ms: i64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64),
    )
    .to_string()
}

fn print_configuration(c: &pb::TenantConfiguration) {
    println!("{:<30} {:<8} ModifiedTimestamp", "Connector", "Enabled");
    println!("{:<30} {:<8} -----------------", "---------", "-------");
    println!(
        "{:<30} {:<8} {}",
        c.connector_name,
        if c.writeback_enabled { "True" } else { "False" },
        format_ms(c.modified_unix_ms)
    );
    println!();
    print_agents(&c.agents_online);
}

fn print_agents(agents: &[pb::AgentInfo]) {
    if agents.is_empty() {
        println!("agents online: none");
        return;
    }
    println!("agents online: {}", agents.len());
    for a in agents {
        println!(
            "  {:<24} version {:<10} connected since {}  last heartbeat {}  in flight {}",
            a.agent_id,
            a.agent_version,
            format_ms(a.connected_since_unix_ms),
            format_ms(a.last_heartbeat_unix_ms),
            a.in_flight
        );
    }
}

fn agents_json(agents: &[pb::AgentInfo]) -> serde_json::Value {
    agents
        .iter()
        .map(|a| {
            serde_json::json!({
                "agent_id": a.agent_id,
                "agent_version": a.agent_version,
                "connected_since_unix_ms": a.connected_since_unix_ms,
                "last_heartbeat_unix_ms": a.last_heartbeat_unix_ms,
                "in_flight": a.in_flight,
            })
        })
        .collect()
}

fn configuration_json(c: &pb::TenantConfiguration) -> serde_json::Value {
    serde_json::json!({
        "tenant": c.tenant,
        "connector": c.connector_name,
        "enabled": c.writeback_enabled,
        "modified_unix_ms": c.modified_unix_ms,
        "agents_online": agents_json(&c.agents_online),
    })
}

/// A password from a file, without its trailing newline.
fn read_password(path: &Path) -> anyhow::Result<zeroize::Zeroizing<String>> {
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?,
    );
    Ok(zeroize::Zeroizing::new(
        text.trim_end_matches(['\n', '\r']).to_owned(),
    ))
}

async fn portal(cli: &Cli, endpoint: &BrokerEndpoint, cmd: &PortalCommand) -> anyhow::Result<()> {
    use envelope::{Anchor, Password, RequestBody};
    use relay_client::sealed::SealedPortal;
    let (tenant, trust, body, operation) = match cmd {
        PortalCommand::Keygen {
            tenant,
            key_out,
            bundle_out,
        } => {
            let pair = envelope::KeyPair::generate(&mut envelope::os_rng());
            let encoded = zeroize::Zeroizing::new(base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                pair.private_bytes().as_ref(),
            ));
            write_secret(key_out, &encoded)?;
            let bundle = relay_client::enrollment::EnrollmentBundle::new(
                tenant,
                std::slice::from_ref(&pair.public),
            );
            std::fs::write(bundle_out, serde_json::to_string_pretty(&bundle)? + "\n")
                .with_context(|| format!("cannot write {}", bundle_out.display()))?;
            println!("portal key id          {}", pair.public.key_id());
            println!("portal key fingerprint {}", pair.public.fingerprint());
            println!(
                "Hand {} to the on-prem administrator and read them the fingerprint.",
                bundle_out.display()
            );
            return Ok(());
        }
        PortalCommand::Keys { tenant, trust } => {
            let (pair, pins) = trust.load()?;
            let client =
                PortalClient::connect(endpoint, tenant, cli.credential(Some(tenant))?).await?;
            let offered = client.configuration().await?.agent_keys;
            let portal = SealedPortal::new(client, pair, pins);
            let chosen = portal.trusted_key(&offered).ok();
            for k in &offered {
                let fp = envelope::PublicKey::from_bytes(&k.public_key)
                    .map(|p| p.fingerprint().to_string())
                    .unwrap_or_else(|_| "(not an X25519 key)".into());
                let mark = if chosen
                    .as_ref()
                    .is_some_and(|c| c.key_id().to_hex() == k.key_id)
                {
                    "seal-to"
                } else {
                    ""
                };
                println!("{:<16} {fp} {mark}", k.key_id);
            }
            if chosen.is_none() {
                anyhow::bail!(
                    "no offered key is trusted: pin the fingerprint the on-prem administrator gave you"
                );
            }
            return Ok(());
        }
        PortalCommand::Reset {
            tenant,
            trust,
            upn,
            password_file,
            unlock,
            must_change,
        } => {
            let mut body = RequestBody::reset(
                Anchor::UserPrincipalName(upn.clone()),
                Password::new(read_password(password_file)?.as_str()),
            );
            body.unlock = *unlock;
            body.must_change = *must_change;
            (
                tenant.clone(),
                trust.clone(),
                body,
                proto::pb::Operation::ResetPassword,
            )
        }
        PortalCommand::Change {
            tenant,
            trust,
            upn,
            current_password_file,
            password_file,
        } => {
            let body = RequestBody::change(
                Anchor::UserPrincipalName(upn.clone()),
                Password::new(read_password(current_password_file)?.as_str()),
                Password::new(read_password(password_file)?.as_str()),
            );
            (
                tenant.clone(),
                trust.clone(),
                body,
                proto::pb::Operation::ChangePassword,
            )
        }
        PortalCommand::Policy { tenant, trust, upn } => {
            let body = RequestBody::without_passwords(Anchor::UserPrincipalName(upn.clone()));
            (
                tenant.clone(),
                trust.clone(),
                body,
                proto::pb::Operation::GetPasswordPolicy,
            )
        }
        PortalCommand::Unlock { tenant, trust, upn } => {
            let body = RequestBody::without_passwords(Anchor::UserPrincipalName(upn.clone()));
            (
                tenant.clone(),
                trust.clone(),
                body,
                proto::pb::Operation::UnlockAccount,
            )
        }
    };
    let (pair, pins) = trust.load()?;
    let client = PortalClient::connect(endpoint, &tenant, cli.credential(Some(&tenant))?).await?;
    let portal = SealedPortal::new(client, pair, pins);
    let request_id = format!("relayctl-{:016x}", fastrand::u64(..));
    let answer = portal
        .submit(&request_id, operation, &body, Some(cli.timeout))
        .await?;
    let details: Vec<String> = answer
        .reply
        .details
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if cli.json {
        println!(
            "{}",
            serde_json::json!({
                "request_id": request_id,
                "agent_id": answer.agent_id,
                "agent_key_id": answer.agent_key_id.to_hex(),
                "outcome": answer.reply.outcome,
                "outcome_name": outcome_name(answer.reply.outcome),
                "message": answer.reply.message,
                "details": answer.reply.details,
            })
        );
    } else {
        println!(
            "request {request_id}: outcome {} {} from agent {} (sealed to key {}): {}{}",
            answer.reply.outcome,
            outcome_name(answer.reply.outcome),
            answer.agent_id,
            answer.agent_key_id,
            answer.reply.message,
            if details.is_empty() {
                String::new()
            } else {
                format!(" [{}]", details.join(", "))
            }
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        eprintln!("relayctl: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let endpoint = cli.endpoint();
    match &cli.command {
        Command::Tenant(cmd) => {
            let admin = AdminClient::connect(&endpoint, cli.credential(None)?).await?;
            match cmd {
                TenantCommand::Create {
                    tenant,
                    keys_dir,
                    connector_name,
                    disabled,
                } => {
                    std::fs::create_dir_all(keys_dir)
                        .with_context(|| format!("cannot create {}", keys_dir.display()))?;
                    let (config, keys) = admin
                        .create_tenant(tenant, connector_name.as_deref(), *disabled)
                        .await?;
                    for ((right, slot), key) in &keys.0 {
                        write_secret(
                            &keys_dir.join(format!("{right}.{slot}.key")),
                            &key.to_base64(),
                        )?;
                    }
                    if cli.json {
                        println!("{}", configuration_json(&config));
                    } else {
                        println!(
                            "created tenant {tenant}; keys written to {}",
                            keys_dir.display()
                        );
                    }
                }
                TenantCommand::Delete { tenant } => {
                    admin.delete_tenant(tenant).await?;
                    println!("deleted tenant {tenant}");
                }
                TenantCommand::List => {
                    let tenants = admin.list_tenants().await?;
                    if cli.json {
                        let all: Vec<_> = tenants.iter().map(configuration_json).collect();
                        println!("{}", serde_json::Value::Array(all));
                    } else {
                        for t in tenants {
                            println!(
                                "{:<24} enabled={:<5} agents={}",
                                t.tenant,
                                t.writeback_enabled,
                                t.agents_online.len()
                            );
                        }
                    }
                }
            }
        }
        Command::Config { tenant } => {
            let portal =
                PortalClient::connect(&endpoint, tenant, cli.credential(Some(tenant))?).await?;
            let config = portal.configuration().await?;
            if cli.json {
                println!("{}", configuration_json(&config));
            } else {
                print_configuration(&config);
            }
        }
        Command::Writeback { tenant, state } => {
            let admin = AdminClient::connect(&endpoint, cli.credential(Some(tenant))?).await?;
            let config = admin
                .set_writeback(tenant, matches!(state, OnOff::Enable))
                .await?;
            if cli.json {
                println!("{}", configuration_json(&config));
            } else {
                print_configuration(&config);
            }
        }
        Command::Agents(cmd) => {
            let tenant = match cmd {
                AgentsCommand::List { tenant }
                | AgentsCommand::Revoke { tenant, .. }
                | AgentsCommand::Restore { tenant, .. } => tenant,
            };
            let admin = AdminClient::connect(&endpoint, cli.credential(Some(tenant))?).await?;
            match cmd {
                AgentsCommand::List { tenant } => {
                    let reply = admin.list_agents(tenant).await?;
                    if cli.json {
                        println!(
                            "{}",
                            serde_json::json!({
                                "agents_online": agents_json(&reply.agents_online),
                                "revoked": reply.revoked_agent_ids,
                            })
                        );
                    } else {
                        print_agents(&reply.agents_online);
                        if !reply.revoked_agent_ids.is_empty() {
                            println!("revoked: {}", reply.revoked_agent_ids.join(", "));
                        }
                    }
                }
                AgentsCommand::Revoke { tenant, agent_id } => {
                    let disconnected = admin.revoke_agent(tenant, agent_id).await?;
                    println!("revoked {agent_id} (session closed: {disconnected})");
                }
                AgentsCommand::Restore { tenant, agent_id } => {
                    admin.restore_agent(tenant, agent_id).await?;
                    println!("restored {agent_id}");
                }
            }
        }
        Command::Keys(KeysCommand::Rotate {
            tenant,
            right,
            slot,
            out,
        }) => {
            let admin = AdminClient::connect(&endpoint, cli.credential(Some(tenant))?).await?;
            let (key, closed) = admin
                .rotate_key(tenant, (*right).into(), (*slot).into())
                .await?;
            write_secret(out, &key.to_base64())?;
            println!(
                "rotated; new key written to {} ({closed} sessions closed)",
                out.display()
            );
        }
        Command::Portal(cmd) => portal(&cli, &endpoint, cmd).await?,
        Command::OperatorToken { lifetime } => {
            let Some(path) = &cli.operator_key_file else {
                bail!("operator-token needs --operator-key-file");
            };
            let token = Credential::operator(read_key_file(path)?).mint(*lifetime);
            println!("{}", token.expose());
        }
        Command::Ping { tenant } => {
            let credential = cli.credential(Some(tenant))?;
            let portal = PortalClient::connect(&endpoint, tenant, credential).await?;
            let pong = portal.ping(Some(cli.timeout)).await?;
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "agent_id": pong.agent_id,
                        "agent_version": pong.agent_version,
                        "broker_agent_rtt_us": pong.broker_agent_rtt.as_micros() as u64,
                        "round_trip_us": pong.round_trip.as_micros() as u64,
                    })
                );
            } else {
                println!(
                    "pong from agent {} (version {}): round trip {:.1} ms, broker-agent {:.1} ms",
                    pong.agent_id,
                    pong.agent_version,
                    pong.round_trip.as_secs_f64() * 1e3,
                    pong.broker_agent_rtt.as_secs_f64() * 1e3
                );
            }
        }
    }
    Ok(())
}

//! `writeback-agent`: the on-prem password write-back agent.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use directory::DirectoryRight;
use directory::embedded::EmbeddedDirectory;
use relay_client::enrollment::EnrollmentBundle;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use writeback_agent::config::LogFormat;
use writeback_agent::keyring::Keyring;
use writeback_agent::onboarding::{self, KeyReport};
use writeback_agent::{self as agent, AgentConfig, AgentEvent};
use zeroize::Zeroizing;

/// On-prem password write-back agent.
///
/// `run` (the default) connects outbound to the relay broker over TLS,
/// authenticates with the tenant's Listen key, and answers the requests
/// relayed to it, reconnecting with jittered backoff for as long as it runs.
/// Logs go to stderr; one line per session event goes to stdout
/// (`connected ...`, `disconnected ...`, `refused ...`).
/// SIGHUP reloads the configuration: the broker addresses and CA file take
/// effect at the next connection; SIGTERM drains and stops.
///
/// Onboarding: the portal administrator gives you an enrollment bundle;
/// `init` makes the write-back key pair (private key sealed under a setup
/// password you choose), pins the portal's key and registers the public key
/// with the broker, then prints the fingerprint to read to the portal
/// administrator.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(clap::Args, Clone)]
struct ConfigArgs {
    /// TOML configuration file (see examples/agent.toml).
    #[arg(long, env = "WRITEBACK_AGENT_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Broker address, https://host:port.
    #[arg(long, env = "WRITEBACK_AGENT_BROKER", global = true)]
    broker: Option<String>,
    /// PEM CA bundle that signs the broker's certificate.
    #[arg(long, env = "WRITEBACK_AGENT_CA_FILE", global = true)]
    ca_file: Option<PathBuf>,
    #[arg(long, env = "WRITEBACK_AGENT_TENANT", global = true)]
    tenant: Option<String>,
    #[arg(long, env = "WRITEBACK_AGENT_ID", global = true)]
    agent_id: Option<String>,
    /// File holding the tenant's Listen key.
    #[arg(long, env = "WRITEBACK_AGENT_LISTEN_KEY_FILE", global = true)]
    listen_key_file: Option<PathBuf>,
    /// The keyring made by `init`.
    #[arg(long, env = "WRITEBACK_AGENT_KEY_FILE", global = true)]
    key_file: Option<PathBuf>,
    /// File holding the setup password (otherwise WRITEBACK_AGENT_SETUP_PASSWORD, or a prompt).
    #[arg(long, env = "WRITEBACK_AGENT_SETUP_PASSWORD_FILE", global = true)]
    setup_password_file: Option<PathBuf>,
    /// Directory for the agent's state (the replay window).
    #[arg(long, env = "WRITEBACK_AGENT_STATE_DIR", global = true)]
    state_dir: Option<PathBuf>,
    #[arg(long, env = "WRITEBACK_AGENT_LOG_FORMAT", value_enum, global = true)]
    log_format: Option<LogFormat>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent (the default).
    Run,
    /// Onboard: make or reopen the keyring, pin the portal keys from the
    /// enrollment bundle, register the public key with the broker. Safe to
    /// run again: it repairs the broker's copy without making new keys.
    Init {
        /// The enrollment bundle (JSON) from the portal administrator.
        #[arg(long)]
        enrollment: PathBuf,
        /// The portal key fingerprint the portal administrator read to you;
        /// init refuses a bundle whose key does not match.
        #[arg(long)]
        expect_portal_fingerprint: Option<String>,
    },
    /// Join as a further agent: copy another agent's keyring (opened with
    /// the setup password) to this agent's key_file.
    Import {
        #[arg(long)]
        from: PathBuf,
    },
    /// Make a new write-back key endorsed by the current one. With --stage
    /// it is only added to the keyring (copy the keyring to the other agents
    /// with `import`, then run `activate-key`); otherwise it is activated now.
    RotateKey {
        #[arg(long)]
        stage: bool,
    },
    /// Register the staged key so portals seal to it; drop keys whose
    /// overlap has passed.
    ActivateKey,
    /// Show the current key id and fingerprint, and the pinned portal keys.
    Fingerprint,
    /// Connector, write-back enabled, modified timestamp (the cmdlet's
    /// columns), broker connection, agents online, key ids, forests.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Pre-flight along the path the agent takes (direct, or through the
    /// proxy of [proxy] or HTTPS_PROXY, named): DNS and TCP to the broker
    /// or the proxy, the proxy's CONNECT, TLS and certificate, clock skew,
    /// credentials, write-back enabled, and for each forest the bind and the
    /// service account's effective rights on the users of every container,
    /// with where each right is lost and the fix, runnable as printed.
    /// Exits non-zero when anything is wrong.
    Doctor {
        #[arg(long)]
        json: bool,
    },
    /// Checks the configuration and the files it names (the Listen key, the
    /// CA file, the keyring, the setup password and forest files are
    /// readable) without connecting: prints `configuration OK: FILE`, or the
    /// problem and exits 1.
    CheckConfig,
    /// Administration of embedded forests (what dsacls does for AD).
    #[command(subcommand)]
    Directory(DirectoryCommand),
}

#[derive(Subcommand)]
enum DirectoryCommand {
    /// Checks a password against an embedded forest's account, as a bind
    /// would; exits non-zero when it does not match.
    Verify {
        #[arg(long)]
        forest: String,
        #[arg(long)]
        dn: String,
        /// File holding the password to check.
        #[arg(long)]
        password_file: PathBuf,
    },
    /// Grants rights on users below an OU to the forest's service account
    /// (inheritable, like `dsacls /I:S /G`).
    Grant {
        #[arg(long)]
        forest: String,
        #[arg(long)]
        ou: String,
        /// Comma-separated: reset-password, change-password,
        /// write-lockout-time, write-pwd-last-set.
        #[arg(long, value_delimiter = ',')]
        rights: Vec<String>,
    },
    /// Removes the deny ACEs on an object that take rights from the
    /// forest's service account (a grant cannot override a deny).
    RemoveDeny {
        #[arg(long)]
        forest: String,
        #[arg(long)]
        dn: String,
        /// Comma-separated, as for grant.
        #[arg(long, value_delimiter = ',')]
        rights: Vec<String>,
    },
}

impl ConfigArgs {
    fn load(&self) -> anyhow::Result<AgentConfig> {
        let mut table = match &self.config {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {}", path.display()))?
                .parse::<toml::Table>()
                .with_context(|| format!("invalid config file {}", path.display()))?,
            None => toml::Table::new(),
        };
        let mut set = |key: &str, value: Option<String>| {
            if let Some(v) = value {
                table.insert(key.to_owned(), toml::Value::String(v));
            }
        };
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        set("broker", self.broker.clone());
        set("ca_file", path(&self.ca_file));
        set("tenant", self.tenant.clone());
        set("agent_id", self.agent_id.clone());
        set("listen_key_file", path(&self.listen_key_file));
        set("key_file", path(&self.key_file));
        set("setup_password_file", path(&self.setup_password_file));
        set("state_dir", path(&self.state_dir));
        set(
            "log_format",
            self.log_format.map(|f| match f {
                LogFormat::Text => "text".to_owned(),
                LogFormat::Json => "json".to_owned(),
            }),
        );
        Ok(AgentConfig::from_toml(&toml::to_string(&table)?)?)
    }
}

/// The setup password from the configuration, the environment, or a prompt
/// (asked twice when `confirm`).
fn setup_password(config: &AgentConfig, confirm: bool) -> anyhow::Result<Zeroizing<String>> {
    if let Some(p) = config.setup_password() {
        return Ok(p);
    }
    let first = Zeroizing::new(
        rpassword::prompt_password("Setup password: ").context("cannot read the setup password")?,
    );
    if confirm {
        let again = Zeroizing::new(rpassword::prompt_password("Setup password again: ")?);
        if *again != *first {
            bail!("the two passwords differ");
        }
    }
    Ok(first)
}

fn print_report(what: &str, r: &KeyReport) {
    println!("{what}");
    println!("  tenant            {}", r.tenant);
    println!("  key id            {}", r.key_id);
    println!("  key fingerprint   {}", r.fingerprint);
    for fp in &r.portal_fingerprints {
        println!("  pinned portal key {fp}");
    }
    for id in &r.dropped {
        println!("  dropped old key   {id}");
    }
}

fn print_event(event: &AgentEvent) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match event {
        AgentEvent::Connected {
            session_id,
            skew_ms,
        } => writeln!(out, "connected session_id={session_id} skew_ms={skew_ms}")?,
        AgentEvent::Disconnected { reason } => writeln!(out, "disconnected reason={reason:?}")?,
        AgentEvent::Refused { reason } => writeln!(out, "refused reason={reason:?}")?,
        AgentEvent::Answered { .. } => return Ok(()),
    }
    out.flush()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::CheckConfig) = cli.command {
        check_config(&cli.config);
    }
    let config = cli.config.load()?;
    // Before any thread of the directory runs: see agent::kerberos.
    agent::kerberos::adopt(&config).context("cannot re-execute with the Kerberos environment")?;
    let command = cli.command.unwrap_or(Command::Run);
    // Traces from the service only: the one-shot commands just log.
    let traced = match command {
        Command::Run => config.telemetry.clone(),
        _ => Default::default(),
    };
    let telemetry = agent::telemetry::init(config.log_format, &traced)?;
    match command {
        Command::Run => {
            let result = run(config, cli.config).await;
            // The one shutdown path: the last spans are flushed here.
            telemetry.shutdown().await;
            result
        }
        Command::CheckConfig => unreachable!("handled above"),
        Command::Init {
            enrollment,
            expect_portal_fingerprint,
        } => {
            let text = std::fs::read_to_string(&enrollment)
                .with_context(|| format!("cannot read {}", enrollment.display()))?;
            let bundle = EnrollmentBundle::parse(&text)?;
            if let Some(expected) = expect_portal_fingerprint {
                let expected = envelope::Fingerprint::parse(&expected)?;
                if !bundle.keys()?.iter().any(|k| k.fingerprint() == expected) {
                    bail!(
                        "no portal key in the bundle has the fingerprint you were given: do not proceed"
                    );
                }
            }
            let password = setup_password(
                &config,
                !config.key_file.as_ref().is_some_and(|p| p.exists()),
            )?;
            let r = onboarding::init(&config, &bundle, &password).await;
            record(&config, "init", r.as_ref().map(|r| key_line("init", r)));
            let r = r?;
            print_report(
                if r.created {
                    "write-back key created and registered"
                } else {
                    "existing keyring kept; registration repaired"
                },
                &r,
            );
            println!("Read the key fingerprint to the portal administrator to pin it.");
            Ok(())
        }
        Command::Import { from } => {
            let password = setup_password(&config, false)?;
            print_report(
                "keyring imported",
                &onboarding::import(&config, &from, &password)?,
            );
            Ok(())
        }
        Command::RotateKey { stage } => {
            let password = setup_password(&config, false)?;
            let r = onboarding::rotate(&config, &password, !stage).await;
            record(
                &config,
                "rotate-key",
                r.as_ref().map(|r| key_line("rotate-key", r)),
            );
            let r = r?;
            print_report(
                if stage {
                    "new key staged (not yet used by portals)"
                } else {
                    "new key active"
                },
                &r,
            );
            Ok(())
        }
        Command::ActivateKey => {
            let password = setup_password(&config, false)?;
            print_report(
                "staged key active",
                &onboarding::activate(&config, &password).await?,
            );
            Ok(())
        }
        Command::Status { json } => {
            let status = agent::status::run(&config).await;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", agent::status::render(&status));
            }
            Ok(())
        }
        Command::Doctor { json } => {
            let hint = cli
                .config
                .config
                .as_ref()
                .map(|p| format!("--config {} ", p.display()))
                .unwrap_or_default();
            let report = agent::doctor::run(&config, &hint).await;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", agent::doctor::render(&report));
            }
            std::process::exit(if report.ok { 0 } else { 1 });
        }
        Command::Directory(DirectoryCommand::Verify {
            forest,
            dn,
            password_file,
        }) => {
            let directory = embedded_forest(&config, &forest)?;
            let text = Zeroizing::new(std::fs::read_to_string(&password_file)?);
            let password = envelope::Password::new(text.trim_end_matches(['\n', '\r']));
            if directory.check_password(&dn, &password) {
                println!("{dn}: the password matches");
                Ok(())
            } else {
                println!("{dn}: the password does not match");
                std::process::exit(1);
            }
        }
        Command::Directory(DirectoryCommand::Grant { forest, ou, rights }) => {
            let granted = (|| {
                let directory = embedded_forest(&config, &forest)?;
                let trustee = directory.service_account();
                let mut done = Vec::new();
                for right in parse_rights(&rights)? {
                    directory.grant(&ou, right, &trustee, true)?;
                    let line = format!(
                        "granted {} on users below {ou} to {trustee} in forest {forest}",
                        right.as_str()
                    );
                    println!("{line}");
                    done.push(line);
                }
                anyhow::Ok(done.join("; "))
            })();
            record(
                &config,
                "directory grant",
                granted.as_ref().map(String::clone),
            );
            granted.map(drop)
        }
        Command::Directory(DirectoryCommand::RemoveDeny { forest, dn, rights }) => {
            let directory = embedded_forest(&config, &forest)?;
            for right in parse_rights(&rights)? {
                let removed = directory.remove_denies(&dn, right)?;
                println!(
                    "removed {removed} deny ACE(s) of {} on {dn}",
                    right.as_str()
                );
            }
            Ok(())
        }
        Command::Fingerprint => {
            let path = config.key_file.clone().context("no key_file configured")?;
            let password = setup_password(&config, false)?;
            let ring = Keyring::load(&path, &password)?;
            for k in &ring.keys {
                let state = match (k.active, k.superseded_unix_ms) {
                    (false, _) => "staged",
                    (true, Some(_)) => "superseded",
                    (true, None) => "current",
                };
                println!(
                    "{:<10} {}  {}",
                    state,
                    k.pair.public.key_id(),
                    k.pair.public.fingerprint()
                );
            }
            for p in &ring.portals {
                println!("{:<10} {}  {}", "portal", p.key_id(), p.fingerprint());
            }
            Ok(())
        }
    }
}

/// A local admin command in the event log, with who ran it.
fn record<E>(config: &AgentConfig, command: &str, done: Result<String, E>) {
    agent::eventlog::record_local_command(
        &config.event_log_dir(),
        config.event_log_max_bytes,
        config.events.sinks(),
        command,
        &config.tenant,
        done.map_err(drop),
    );
}

fn key_line(command: &str, report: &KeyReport) -> String {
    format!(
        "{command}: agent key {} (fingerprint {})",
        report.key_id, report.fingerprint
    )
}

fn parse_rights(names: &[String]) -> anyhow::Result<Vec<DirectoryRight>> {
    names
        .iter()
        .map(|name| {
            Ok(match name.as_str() {
                "reset-password" => DirectoryRight::ResetPassword,
                "change-password" => DirectoryRight::ChangePassword,
                "write-lockout-time" => DirectoryRight::WriteLockoutTime,
                "write-pwd-last-set" => DirectoryRight::WritePwdLastSet,
                other => bail!("unknown right {other:?}"),
            })
        })
        .collect()
}

/// The configured embedded forest named `name`.
fn embedded_forest(config: &AgentConfig, name: &str) -> anyhow::Result<EmbeddedDirectory> {
    let settings = config
        .forests
        .iter()
        .find(|f| f.name == name)
        .with_context(|| format!("no forest named {name} in the configuration"))?;
    let path = settings.path.as_deref().context(
        "only embedded forests can be administered here; doctor prints the commands for Active Directory",
    )?;
    Ok(EmbeddedDirectory::open(name, path)?)
}

/// `check-config`: exits 0 with `configuration OK: FILE` on stdout, or 1
/// with the problem on stderr.
fn check_config(args: &ConfigArgs) -> ! {
    let name = args.config.as_ref().map_or_else(
        || "(flags and environment)".to_owned(),
        |p| p.display().to_string(),
    );
    let result = args
        .load()
        .and_then(|config| Ok(agent::reload::check(&config)?));
    match result {
        Ok(()) => {
            println!("configuration OK: {name}");
            std::process::exit(0)
        }
        Err(e) => {
            eprintln!("configuration invalid: {name}: {e:#}");
            std::process::exit(1)
        }
    }
}

async fn run(config: AgentConfig, args: ConfigArgs) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    // SIGHUP's default action would kill the process: installed before
    // anything can send it.
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let running = config.clone();
    let mut agent = agent::start(config, shutdown.clone()).await?;
    tokio::spawn(agent::reload::on_hangup(
        std::sync::Arc::clone(&agent.endpoints),
        running,
        hangup,
        move || args.load(),
        shutdown.clone(),
    ));
    let mut events = agent.events();
    // Installed now, before anything is printed, so that an early SIGTERM
    // drains instead of killing the process.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            shutdown.cancel();
        }
    });
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(event) => {
                    let _ = print_event(&event);
                }
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => break,
            }
        }
    });
    agent.wait().await?;
    Ok(())
}

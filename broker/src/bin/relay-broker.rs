//! `relay-broker`: runs a broker node, or creates a development PKI.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use broker::config::{BrokerConfig, LogFormat};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

/// Multi-tenant relay broker for password write-back.
///
/// Serves agents and portals over gRPC with TLS, and operator endpoints
/// (/healthz, /readyz, /metrics) over plain HTTP on a separate port. Once
/// ready it prints one line to stdout:
/// `relay-broker ready grpc=ADDR operator=ADDR`. SIGHUP reloads the
/// configuration file and the TLS certificate; SIGTERM drains and stops.
#[derive(Parser)]
#[command(name = "relay-broker", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Writes a throwaway CA (ca.pem) and a server certificate (server.pem,
    /// server.key) for local runs. Not for production.
    DevPki {
        /// Directory to write into.
        #[arg(long)]
        out: PathBuf,
        /// DNS names or IP addresses the certificate is valid for.
        #[arg(long = "name", default_values = ["localhost", "127.0.0.1", "::1"])]
        names: Vec<String>,
    },
    /// Checks a configuration file and the files it names (the TLS
    /// certificate and key; in cluster mode the storage key and NATS files)
    /// without starting: prints `configuration OK: FILE`, or the problem
    /// and exits 1. Binds no port, connects nowhere, writes nothing.
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
    },
    #[command(flatten)]
    Store(StoreCommand),
}

/// The single node's store commands (broker::store_commands).
#[derive(Subcommand)]
enum StoreCommand {
    /// Writes a backup of the store (tenant records sealed, mode 0600). Works
    /// while the broker runs, through its operator port, or while stopped.
    Backup {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// The running broker's operator address, if the config's is not it.
        #[arg(long)]
        operator: Option<SocketAddr>,
    },
    /// Restores a backup as the store; the broker stopped. The storage key
    /// that sealed the backup must be configured.
    Restore {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        from: PathBuf,
        /// Replace a store that holds records.
        #[arg(long)]
        force: bool,
    },
    /// The storage key that seals the store.
    #[command(subcommand)]
    StorageKey(StorageKeyCommand),
    /// The operator key (data_dir/operator.key) that administers tenants.
    #[command(subcommand)]
    OperatorKey(OperatorKeyCommand),
}

#[derive(Subcommand)]
enum OperatorKeyCommand {
    /// Writes a new operator key (mode 0600); the broker stopped. Tokens
    /// signed with the old key are refused from its next start.
    Rotate {
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum StorageKeyCommand {
    /// Re-seals every tenant record under a new key; the broker stopped.
    Rotate {
        #[arg(long)]
        config: PathBuf,
        /// The new key file (`openssl rand -base64 32`, mode 0600).
        #[arg(long)]
        new_key: PathBuf,
    },
}

impl StoreCommand {
    fn run(self) -> anyhow::Result<String> {
        use broker::store_commands as run;
        let load = |path: &PathBuf| {
            BrokerConfig::from_file(path)
                .with_context(|| format!("invalid config file {}", path.display()))
        };
        match self {
            StoreCommand::Backup {
                config,
                out,
                operator,
            } => run::backup(&load(&config)?, &out, operator),
            StoreCommand::Restore {
                config,
                from,
                force,
            } => run::restore(&load(&config)?, &from, force),
            StoreCommand::StorageKey(StorageKeyCommand::Rotate { config, new_key }) => {
                run::rotate(&load(&config)?, &new_key)
            }
            StoreCommand::OperatorKey(OperatorKeyCommand::Rotate { config }) => {
                run::rotate_operator_key(&load(&config)?)
            }
        }
    }
}

/// Every flag overrides the same setting of the config file.
#[derive(clap::Args)]
struct ServeArgs {
    /// TOML configuration file (see examples/broker.toml).
    #[arg(long, env = "RELAY_BROKER_CONFIG")]
    config: Option<PathBuf>,
    /// gRPC listen address [default: 0.0.0.0:443].
    #[arg(long, env = "RELAY_BROKER_LISTEN")]
    listen: Option<SocketAddr>,
    /// Operator HTTP listen address [default: 127.0.0.1:9464].
    #[arg(long, env = "RELAY_BROKER_OPERATOR_LISTEN")]
    operator_listen: Option<SocketAddr>,
    /// Directory of the store and the operator key.
    #[arg(long, env = "RELAY_BROKER_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// PEM certificate chain to present.
    #[arg(long, env = "RELAY_BROKER_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of the certificate.
    #[arg(long, env = "RELAY_BROKER_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Log format.
    #[arg(long, env = "RELAY_BROKER_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
}

impl ServeArgs {
    /// The config file (if any) with the flags laid over it, validated once.
    fn config(&self) -> anyhow::Result<BrokerConfig> {
        let mut table = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                text.parse::<toml::Table>()
                    .with_context(|| format!("invalid config file {}", path.display()))?
            }
            None => toml::Table::new(),
        };
        let mut set = |key: &str, value: Option<String>| {
            if let Some(v) = value {
                table.insert(key.to_owned(), toml::Value::String(v));
            }
        };
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        set("listen", self.listen.map(|a| a.to_string()));
        set(
            "operator_listen",
            self.operator_listen.map(|a| a.to_string()),
        );
        set("data_dir", path(&self.data_dir));
        set("tls_cert", path(&self.tls_cert));
        set("tls_key", path(&self.tls_key));
        set(
            "log_format",
            self.log_format.map(|f| match f {
                LogFormat::Text => "text".to_owned(),
                LogFormat::Json => "json".to_owned(),
            }),
        );
        Ok(BrokerConfig::from_toml(&toml::to_string(&table)?)?)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::DevPki { out, names }) => {
            let pki = broker::tls::generate_dev_pki(&out, &names)?;
            println!(
                "wrote {} {} {}",
                pki.ca_cert.display(),
                pki.server_cert.display(),
                pki.server_key.display()
            );
            return Ok(());
        }
        Some(Command::CheckConfig { config }) => check_config(config),
        Some(Command::Store(command)) => {
            println!("{}", command.run()?);
            return Ok(());
        }
        None => {}
    }
    let serve = cli.serve;
    let config = serve.config()?;
    let telemetry = broker::telemetry::init(config.log_format, &config.telemetry)?;
    let shutdown = CancellationToken::new();
    // Installed before the ready line, so that a SIGTERM right after it
    // drains instead of killing the process.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // Likewise: SIGHUP's default action would kill the process.
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let node = broker::start(config, shutdown.clone()).await?;
    tokio::spawn(broker::reload::on_hangup(
        std::sync::Arc::clone(&node.state),
        hangup,
        move || serve.config(),
    ));
    {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "relay-broker ready grpc={} operator={}",
            node.grpc_addr, node.operator_addr
        )?;
        out.flush()?;
    }
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        shutdown.cancel();
    });
    let result = node.wait().await;
    // The one shutdown path: the last spans are flushed here.
    telemetry.shutdown().await;
    result?;
    Ok(())
}

/// `check-config`: exits 0 with `configuration OK: FILE` on stdout, or 1
/// with the problem on stderr.
fn check_config(path: PathBuf) -> ! {
    let result = BrokerConfig::from_file(&path)
        .map_err(anyhow::Error::from)
        .and_then(|config| Ok(broker::reload::check(&config)?));
    match result {
        Ok(()) => {
            println!("configuration OK: {}", path.display());
            std::process::exit(0)
        }
        Err(e) => {
            eprintln!("configuration invalid: {}: {e:#}", path.display());
            std::process::exit(1)
        }
    }
}

//! One module per scenario. Each `measure` function starts the processes it
//! needs and stops them (they are killed when dropped) before it returns.
//! The helper processes are this binary in a hidden role: `agent`,
//! `echo-server`, `nats-responder`, `simulate`; the others are
//! `relay-broker` and `nats-server`.

pub mod crypto;
pub mod direct_tonic;
pub mod nats_tls;
pub mod routed;
pub mod routed_cross_node;
pub mod sessions;
pub mod simulator;

use std::path::PathBuf;

use broker::tls::DevPki;

use crate::cli::Settings;

/// What every scenario of one run shares.
pub struct Context {
    pub settings: Settings,
    /// The run's working directory: configs, logs, stores.
    pub dir: PathBuf,
    /// A development CA and a certificate for 127.0.0.1, used by every
    /// server (broker, echo server, nats-server).
    pub pki: DevPki,
    /// The release relay-broker, when a scenario needs it.
    pub broker_bin: Option<PathBuf>,
}

impl Context {
    pub fn broker_bin(&self) -> anyhow::Result<&std::path::Path> {
        self.broker_bin
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("relay-broker was not located"))
    }

    /// A fresh subdirectory of the run's directory.
    pub fn subdir(&self, name: &str) -> anyhow::Result<PathBuf> {
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }
}

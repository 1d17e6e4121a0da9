//! The audit trail: one JSON line per admin call (done, failed or refused),
//! agent key registration and retirement, status page login and operator
//! token use, and per refused call of any API, in a file of its own
//! (`[audit] file`, README "Audit trail").
//!
//! A line names who called (the right and key slot a verified token proved,
//! or the operator, and a correlator of the token: an HMAC under a key this
//! process drew at start, so equal tokens correlate within one run and no
//! line can be turned back into a token), from where, on which node, what
//! changed and why a call was refused. No token or key is ever written.
//!
//! Durability: a line is one `write(2)` on a file opened `O_APPEND`. A
//! change (and a failed attempt at one) is `fdatasync`ed before its call
//! returns; every other line (reads, refusals) is synced by [`Audit::tick`]
//! within a second, so a refusal flood cannot turn into one disk flush per
//! call. Refusals are also rate limited per source address (`limiter`);
//! changes never are. A change's sync runs on the calling task's thread
//! (admin changes are rare, and the line must be on disk before the answer).
//! A line that cannot be written is an ERROR in the log; the call itself
//! goes on (an unwritable audit file does not stop the relay).

mod limiter;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use ring::hmac;
use sas::Right;
use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::auth::{Authorizer, Principal, Proven, Refusal};
use crate::error::RelayError;
use crate::metrics::ReasonLabel;

pub use limiter::{Admit, Limiter};

/// Whether a call succeeded, failed after its caller was authenticated, or
/// was refused for its credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Refused,
    Failed,
}

/// Who made a call, as far as the broker knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Actor {
    Operator {
        operator: bool,
        key_id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        token_id: Option<String>,
    },
    Key {
        right: &'static str,
        key_slot: &'static str,
        /// [`crate::auth::key_id`]: which key of the slot, across rotations.
        key_id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        token_id: Option<String>,
    },
    /// A token was presented but proved nothing (a bad signature, a
    /// malformed token): only its correlator.
    Unproven { token_id: String },
}

/// The call a line is about.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// `relay.v1.Admin/SetWriteback`, `status/login`...
    pub rpc: &'a str,
    pub peer: Option<SocketAddr>,
}

/// One line of the file.
#[derive(Debug, Serialize)]
struct Line<'a> {
    time: String,
    rpc: &'a str,
    tenant: Option<&'a str>,
    actor: Option<&'a Actor>,
    peer: Option<String>,
    node: &'a str,
    outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    change: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dropped: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

/// The trail of one node; see the module documentation.
pub struct Audit {
    /// `None`: the trail is off (`[audit] file = ""`).
    path: Option<PathBuf>,
    file: Mutex<Option<File>>,
    node: String,
    correlator: hmac::Key,
    limiter: Mutex<Limiter>,
    /// Lines written since the last sync.
    dirty: AtomicBool,
    /// `relay_audit_dropped_total`, by reason.
    dropped: Family<ReasonLabel, Counter>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot open the audit file {path}")]
pub struct OpenError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl Audit {
    /// Opens (creates, mode 0600) the trail at `path`, or none.
    pub fn open(
        path: Option<PathBuf>,
        node: String,
        dropped: Family<ReasonLabel, Counter>,
    ) -> Result<Audit, OpenError> {
        let file = path.as_deref().map(open_append).transpose()?;
        // Present at 0 from the start, so that an alert on its rate works.
        let _ = dropped.get_or_create(&ReasonLabel {
            reason: "rate_limited",
        });
        let rng = ring::rand::SystemRandom::new();
        let correlator =
            hmac::Key::generate(hmac::HMAC_SHA256, &rng).expect("the system random source works");
        Ok(Audit {
            path,
            file: Mutex::new(file),
            node,
            correlator,
            limiter: Mutex::new(Limiter::default()),
            dirty: AtomicBool::new(false),
            dropped,
        })
    }

    /// A trail that writes nothing (tests of other modules).
    pub fn disabled() -> Audit {
        Audit::open(None, "test".into(), Family::default()).expect("nothing to open")
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The correlator of a token: 16 hex digits of its HMAC.
    pub fn token_id(&self, token: &str) -> String {
        let tag = hmac::sign(&self.correlator, token.trim().as_bytes());
        tag.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The actor a verified token proved.
    pub fn actor(&self, principal: &Principal, token: Option<&str>) -> Actor {
        let key = Proven {
            right: principal.right,
            slot: principal.slot,
            key_id: principal.key_id.clone(),
        };
        proven(key, token.map(|t| self.token_id(t)))
    }

    /// Checks `token` (`None`: none was sent) like
    /// [`Authorizer::authorize`], and writes a refusal line when it is
    /// refused.
    pub fn authorize(
        &self,
        authorizer: &Authorizer,
        call: Call<'_>,
        token: Option<&str>,
        tenant: Option<&str>,
        accepted: &[Right],
    ) -> Result<Principal, RelayError> {
        let now = crate::time::now_unix_secs();
        self.authorize_at(authorizer, call, token, tenant, accepted, now)
    }

    /// [`Self::authorize`] at a given time.
    pub fn authorize_at(
        &self,
        authorizer: &Authorizer,
        call: Call<'_>,
        token: Option<&str>,
        tenant: Option<&str>,
        accepted: &[Right],
        now_unix: u64,
    ) -> Result<Principal, RelayError> {
        let result = match token {
            None => Err(Box::new(Refusal::from(RelayError::MissingCredential))),
            Some(text) => authorizer.check(text, tenant, accepted, now_unix),
        };
        result.map_err(|refusal| {
            let token_id = token.map(|t| self.token_id(t));
            let actor = match (refusal.proven, token_id) {
                (Some(key), id) => Some(proven(key, id)),
                (None, Some(token_id)) => Some(Actor::Unproven { token_id }),
                (None, None) => None,
            };
            // The tenant addressed, or else the one the token names, when
            // it is a tenant name at all (the caller chose it).
            let named = tenant.or(refusal.claimed_tenant.as_deref());
            let named = named.filter(|t| proto::names::is_valid_tenant(t));
            self.refused(call, named, actor.as_ref(), &refusal.error);
            refusal.error
        })
    }

    /// [`Self::authorize`] on a gRPC call's `authorization` entry.
    pub fn authorize_request<T>(
        &self,
        authorizer: &Authorizer,
        request: &tonic::Request<T>,
        rpc: &str,
        tenant: Option<&str>,
        accepted: &[Right],
    ) -> Result<Principal, RelayError> {
        let call = Call {
            rpc,
            peer: request.remote_addr(),
        };
        self.authorize(authorizer, call, token_of(request), tenant, accepted)
    }

    /// A refused call, rate limited per source address.
    pub fn refused(
        &self,
        call: Call<'_>,
        tenant: Option<&str>,
        actor: Option<&Actor>,
        error: &RelayError,
    ) {
        if self.path.is_none() {
            return;
        }
        let source = call.peer.map(|p| p.ip());
        let admit = self
            .limiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(source, Instant::now());
        match admit {
            Admit::Drop => {
                self.dropped
                    .get_or_create(&ReasonLabel {
                        reason: "rate_limited",
                    })
                    .inc();
                return;
            }
            Admit::AfterDrops(n) => self.summary(source, n),
            Admit::Write => {}
        }
        let reason = error.reason().as_str();
        self.write(
            &self.line(call, tenant, actor, Outcome::Refused, Some(reason), None),
            false,
        );
    }

    /// A call made by an authenticated caller: `change` is what it changed
    /// (or tried to); a change is synced to disk before this returns.
    pub fn done<T>(
        &self,
        call: Call<'_>,
        tenant: Option<&str>,
        actor: &Actor,
        change: Option<Value>,
        result: &Result<T, RelayError>,
    ) {
        let (outcome, reason) = match result {
            Ok(_) => (Outcome::Ok, None),
            Err(e) => (Outcome::Failed, Some(e.reason().as_str())),
        };
        let sync = change.is_some();
        self.write(
            &self.line(call, tenant, Some(actor), outcome, reason, change.as_ref()),
            sync,
        );
    }

    fn line(
        &self,
        call: Call<'_>,
        tenant: Option<&str>,
        actor: Option<&Actor>,
        outcome: Outcome,
        reason: Option<&str>,
        change: Option<&Value>,
    ) -> Vec<u8> {
        encode(&Line {
            time: now_rfc3339(),
            rpc: call.rpc,
            tenant,
            actor,
            peer: call.peer.map(|p| p.to_string()),
            node: &self.node,
            outcome,
            reason,
            change,
            dropped: None,
            message: None,
        })
    }

    /// "N refusals from PEER not logged", once a source is written again.
    fn summary(&self, source: Option<IpAddr>, n: u64) {
        let peer = source.map_or_else(|| "other sources".to_owned(), |ip| ip.to_string());
        let line = encode(&Line {
            time: now_rfc3339(),
            rpc: "audit/rate_limited",
            tenant: None,
            actor: None,
            peer: source.map(|ip| ip.to_string()),
            node: &self.node,
            outcome: Outcome::Refused,
            reason: Some("RATE_LIMITED"),
            change: None,
            dropped: Some(n),
            message: Some(format!("{n} refusals from {peer} not logged")),
        });
        self.write(&line, false);
    }

    fn write(&self, line: &[u8], sync: bool) {
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let Some(f) = file.as_mut() else { return };
        // One write call: O_APPEND places the whole line at the end even if
        // another process (a second broker by mistake) appends too.
        let written = f.write_all(line).and_then(|()| {
            if sync {
                f.sync_data()
            } else {
                self.dirty.store(true, Ordering::Release);
                Ok(())
            }
        });
        if let Err(e) = written {
            error!(path = ?self.path, error = %e, "cannot write the audit file");
        }
    }

    /// Once a second: summary lines for the sources that fell quiet, and
    /// one sync of what was written since the last.
    pub fn tick(&self) {
        let quiet = self
            .limiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .recovered(Instant::now());
        for (source, n) in quiet {
            self.summary(source, n);
        }
        if self.dirty.swap(false, Ordering::AcqRel) {
            let file = self.file.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(Err(e)) = file.as_ref().map(File::sync_data) {
                error!(path = ?self.path, error = %e, "cannot sync the audit file");
            }
        }
    }

    /// SIGHUP: the file opened again at its path, for logrotate's
    /// `postrotate kill -HUP`. A file that cannot be opened keeps the old
    /// one in use.
    pub fn reopen(&self) {
        let Some(path) = &self.path else { return };
        match open_append(path) {
            Ok(new) => {
                let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(old) = file.as_ref() {
                    let _ = old.sync_data();
                }
                *file = Some(new);
                info!(path = %path.display(), "audit file reopened");
            }
            Err(e) => {
                error!(error = %e, source = %e.source, "audit file not reopened; still writing the old one")
            }
        }
    }
}

/// Runs [`Audit::tick`] every second until `shutdown`, and once more then.
pub async fn sync_every_second(audit: Arc<Audit>, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = every.tick() => {}
        }
        let audit = Arc::clone(&audit);
        // Syncing blocks; not on a runtime worker.
        let _ = tokio::task::spawn_blocking(move || audit.tick()).await;
    }
    audit.tick();
}

/// The token in a call's `authorization` entry; not text: malformed, as
/// the parser then says.
pub fn token_of<T>(request: &tonic::Request<T>) -> Option<&str> {
    request
        .metadata()
        .get(crate::auth::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or_default())
}

fn proven(key: Proven, token_id: Option<String>) -> Actor {
    match key.right {
        Right::Operator => Actor::Operator {
            operator: true,
            key_id: key.key_id,
            token_id,
        },
        _ => Actor::Key {
            right: key.right.as_str(),
            key_slot: key.slot.as_str(),
            key_id: key.key_id,
            token_id,
        },
    }
}

fn open_append(path: &Path) -> Result<File, OpenError> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| OpenError {
            path: path.to_owned(),
            source,
        })
}

fn encode(line: &Line<'_>) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(line).expect("an audit line serializes");
    bytes.push(b'\n');
    bytes
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// This node's name in a cluster, or else the host's.
pub fn node_name(cluster_node: Option<&str>) -> String {
    if let Some(name) = cluster_node {
        return name.to_owned();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests;
